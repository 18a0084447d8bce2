/* tokenizer.c — loading a tokenizer: tokenizer.json (model, added tokens,
 * normalizer, pre-tokenizer, post-processor, decoder) or GPT-2's legacy
 * vocab.json + merges.txt. Encoding and decoding are in tok_encode.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sc_file.h"
#include "sc_sha256.h"
#include "tok_internal_tk.h"

/* The largest token id a file may use: 2^24 - 1, 64 times the largest
 * vocabulary in use (256 k). Tables are sized by the largest id, so a file
 * naming id 2^31 - 2 would otherwise ask for tens of GB (tests/fuzz). */
#define MAX_TOKEN_ID ((1 << 24) - 1)

static sc_err parse_vocab(tok_bpe *m, const cJSON *vocab)
{
	const cJSON *it;
	size_t count = 0;
	double max = -1;

	if (!cJSON_IsObject(vocab))
		return sc_errf(SC_EFORMAT, "the BPE model has no \"vocab\" object");
	cJSON_ArrayForEach(it, vocab)
	{
		if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > MAX_TOKEN_ID)
			return sc_errf(SC_EFORMAT, "vocab entry '%.100s' has no valid id (0..%d)",
				       it->string, MAX_TOKEN_ID);
		max = it->valuedouble > max ? it->valuedouble : max;
		count++;
	}
	SC_TRY(tok_vocab_init(&m->vocab, (int32_t)max + 1, count));
	cJSON_ArrayForEach(it, vocab) SC_TRY(
	    tok_vocab_set(&m->vocab, (int32_t)it->valuedouble, it->string, strlen(it->string)));
	return SC_OK;
}

static sc_err opt_str(char **out, const cJSON *j)
{
	*out = NULL;
	if (!cJSON_IsString(j))
		return SC_OK;
	if (!(*out = strdup(j->valuestring)))
		return sc_errf(SC_ENOMEM, "out of memory");
	return SC_OK;
}

sc_err tok_bpe_parse(tok_bpe *m, const cJSON *model)
{
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
	const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
	const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
	const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token"), *it;
	int32_t rank = 0;

	m->unk_id = -1;
	if (!cJSON_IsObject(model))
		return sc_errf(SC_EFORMAT, "tokenizer.json has no \"model\" object");
	if (cJSON_IsString(type) && strcmp(type->valuestring, "BPE"))
		return sc_errf(SC_ENOTSUP, "model type \"%s\" is not supported (only BPE)",
			       type->valuestring);
	if (!cJSON_IsString(type) && !merges)
		return sc_errf(SC_ENOTSUP,
			       "a model without \"type\" or \"merges\" is not supported "
			       "(only BPE)");
	if (cJSON_IsNumber(drop) && drop->valuedouble > 0)
		return sc_errf(SC_ENOTSUP, "BPE dropout is not supported");
	if (!cJSON_IsArray(merges))
		return sc_errf(SC_EFORMAT, "the BPE model has no \"merges\" array");
	SC_TRY(opt_str(&m->prefix,
		       cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix")));
	SC_TRY(opt_str(&m->suffix, cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix")));
	m->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
	m->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
	m->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
	SC_TRY(parse_vocab(m, cJSON_GetObjectItemCaseSensitive(model, "vocab")));
	if (cJSON_IsString(unk))
		m->unk_id = tok_vocab_find(&m->vocab, unk->valuestring, strlen(unk->valuestring));
	SC_TRY(tok_bpe_merges_init(m, (size_t)cJSON_GetArraySize(merges)));
	cJSON_ArrayForEach(it, merges)
	{
		const char *a, *b;
		size_t na, nb;
		if (cJSON_IsString(it)) {
			const char *sp = strchr(it->valuestring, ' ');
			if (!sp || strchr(sp + 1, ' '))
				return sc_errf(SC_EFORMAT, "merge %d '%s' is not two tokens", rank,
					       it->valuestring);
			a = it->valuestring;
			na = (size_t)(sp - a);
			b = sp + 1;
			nb = strlen(b);
		} else if (cJSON_GetArraySize(it) == 2 &&
			   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
			   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
			a = cJSON_GetArrayItem(it, 0)->valuestring;
			b = cJSON_GetArrayItem(it, 1)->valuestring;
			na = strlen(a);
			nb = strlen(b);
		} else {
			return sc_errf(SC_EFORMAT, "merge %d is neither \"a b\" nor [a, b]", rank);
		}
		SC_TRY(tok_bpe_add_merge(m, rank++, a, na, b, nb));
	}
	return tok_bpe_finish(m);
}

static int cmp_len_desc(const void *x, const void *y, void *ctx)
{
	const tok_added *ad = ctx;
	size_t a = ad[*(const int32_t *)x].plen, b = ad[*(const int32_t *)y].plen;
	return a < b ? 1 : a > b ? -1 : 0;
}

static sc_err build_set(sc_tokenizer *t, tok_match_set *set, int normalized)
{
	if (!(set->idx = malloc((t->n_added + 1) * sizeof(*set->idx))))
		return sc_errf(SC_ENOMEM, "out of memory");
	for (size_t i = 0; i < t->n_added; i++)
		if (t->added[i].normalized == normalized && t->added[i].plen) {
			set->idx[set->n++] = (int32_t)i;
			set->first[(unsigned char)t->added[i].pattern[0]] = 1;
		}
	qsort_r(set->idx, set->n, sizeof(*set->idx), cmp_len_desc, t->added);
	return SC_OK;
}

static sc_err add_token(sc_tokenizer *t, int32_t id, const char *content, int special,
			int normalized, int lstrip, int rstrip, int single_word)
{
	tok_added *a = &t->added[t->n_added];
	memset(a, 0, sizeof(*a));
	a->id = id;
	a->special = special;
	a->normalized = normalized;
	a->lstrip = lstrip;
	a->rstrip = rstrip;
	a->single_word = single_word;
	if (!(a->content = strdup(content)))
		return sc_errf(SC_ENOMEM, "out of memory");
	a->len = strlen(content);
	t->n_added++;
	if (normalized && t->norm) {
		tok_buf b = { 0 };
		SC_TRY(tok_buf_put(&b, "", 0));
		sc_err rc = tok_norm_apply(t->norm, content, a->len, &b);
		a->pattern = b.p;
		a->plen = b.len;
		return rc;
	}
	if (!(a->pattern = strdup(content)))
		return sc_errf(SC_ENOMEM, "out of memory");
	a->plen = a->len;
	return SC_OK;
}

static sc_err parse_added(sc_tokenizer *t, const cJSON *list)
{
	const cJSON *it;
	if (!list || cJSON_IsNull(list))
		return SC_OK;
	if (!cJSON_IsArray(list))
		return sc_errf(SC_EFORMAT, "\"added_tokens\" is not an array");
	if (!(t->added = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof(*t->added))))
		return sc_errf(SC_ENOMEM, "out of memory");
	cJSON_ArrayForEach(it, list)
	{
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
		const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
		const cJSON *nz = cJSON_GetObjectItemCaseSensitive(it, "normalized");
		int special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
		if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > MAX_TOKEN_ID ||
		    !cJSON_IsString(c))
			return sc_errf(SC_EFORMAT,
				       "an added token without an \"id\" (0..%d) or \"content\"",
				       MAX_TOKEN_ID);
		SC_TRY(
		    add_token(t, (int32_t)id->valuedouble, c->valuestring, special,
			      cJSON_IsBool(nz) ? cJSON_IsTrue(nz) : !special,
			      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "lstrip")),
			      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "rstrip")),
			      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "single_word"))));
	}
	return SC_OK;
}

static sc_err ids_add(int32_t **v, size_t *n, int32_t id)
{
	int32_t *p = realloc(*v, (*n + 1) * sizeof(*p));
	if (!p)
		return sc_errf(SC_ENOMEM, "out of memory");
	p[(*n)++] = id;
	*v = p;
	return SC_OK;
}

/* A [token, id] pair of RobertaProcessing / BertProcessing. */
/* A post-processor's token id: a whole number in [0, MAX_TOKEN_ID]. */
static sc_err post_id(const cJSON *v, const char *what, int32_t *id)
{
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > MAX_TOKEN_ID ||
	    v->valuedouble != (double)(int32_t)v->valuedouble)
		return sc_errf(SC_EFORMAT, "post-processor: the id of %s is not a token id (0..%d)",
			       what, MAX_TOKEN_ID);
	*id = (int32_t)v->valuedouble;
	return SC_OK;
}

static sc_err pair_id(const cJSON *j, const char *name, int32_t *id)
{
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, name);
	const cJSON *v = cJSON_GetArrayItem(p, 1);
	if (!v)
		return sc_errf(SC_EFORMAT, "post-processor without a valid \"%s\"", name);
	return post_id(v, name, id);
}

static sc_err parse_post(sc_tokenizer *t, const cJSON *j)
{
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type"), *it;
	const char *ty = cJSON_IsString(type) ? type->valuestring : NULL;
	int32_t *pre = NULL, *post = NULL, id = -1;
	size_t npre = 0, npost = 0;
	sc_err rc = SC_OK;

	if (!j || cJSON_IsNull(j))
		return SC_OK;
	if (!ty)
		return sc_errf(SC_EFORMAT, "post-processor without a \"type\"");
	if (!strcmp(ty, "Sequence")) {
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "processors"))
		    SC_TRY(parse_post(t, it));
		return SC_OK;
	}
	if (!strcmp(ty, "ByteLevel"))
		return SC_OK;
	if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
		if ((rc = pair_id(j, "cls", &id)) || (rc = ids_add(&pre, &npre, id)) ||
		    (rc = pair_id(j, "sep", &id)) || (rc = ids_add(&post, &npost, id)))
			goto done;
	} else if (!strcmp(ty, "TemplateProcessing")) {
		const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
		int seen = 0;
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "single"))
		{
			const cJSON *s = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
			const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "id"), *x;
			if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
				if (seen++) {
					rc = sc_errf(SC_ENOTSUP, "TemplateProcessing with the "
								 "sequence twice in \"single\"");
					goto done;
				}
				continue;
			}
			if (!cJSON_IsString(name) ||
			    !(s = cJSON_GetObjectItemCaseSensitive(sp, name->valuestring))) {
				rc = sc_errf(SC_EFORMAT,
					     "TemplateProcessing: unknown special token");
				goto done;
			}
			cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(s, "ids"))
			{
				if ((rc = post_id(x, name->valuestring, &id)) ||
				    (rc = ids_add(seen ? &post : &pre, seen ? &npost : &npre, id)))
					goto done;
			}
		}
	} else {
		return sc_errf(SC_ENOTSUP, "post-processor type \"%s\" is not supported", ty);
	}
	/* processors apply in order: a later one wraps what the earlier made */
	for (size_t i = 0; !rc && i < t->n_pre; i++)
		rc = ids_add(&pre, &npre, t->pre_ids[i]);
	for (size_t i = 0; !rc && i < npost; i++)
		rc = ids_add(&t->post_ids, &t->n_post, post[i]);
	if (!rc) {
		free(t->pre_ids);
		t->pre_ids = pre;
		t->n_pre = npre;
		pre = NULL;
	}
done:
	free(pre);
	free(post);
	return rc;
}

static sc_err finish(sc_tokenizer *t)
{
	int vs = t->bpe.vocab.n_ids;
	for (size_t i = 0; i < t->n_added; i++)
		vs = t->added[i].id + 1 > vs ? t->added[i].id + 1 : vs;
	t->vocab_size = vs;
	for (size_t i = 0; i < t->n_pre + t->n_post; i++) {
		int32_t id = i < t->n_pre ? t->pre_ids[i] : t->post_ids[i - t->n_pre];
		if (id >= vs)
			return sc_errf(SC_EFORMAT,
				       "post-processor: token id %d is outside the vocabulary (%d)",
				       (int)id, vs);
	}
	if (!(t->added_of = malloc(((size_t)vs + 1) * sizeof(*t->added_of))))
		return sc_errf(SC_ENOMEM, "out of memory");
	for (int i = 0; i < vs; i++)
		t->added_of[i] = -1;
	for (size_t i = 0; i < t->n_added; i++)
		t->added_of[t->added[i].id] = (int32_t)i;
	SC_TRY(build_set(t, &t->raw_set, 0));
	return build_set(t, &t->norm_set, 1);
}

static sc_err load_json(sc_tokenizer *t, const char *path)
{
	char *text = NULL;
	size_t len;
	cJSON *j;
	sc_err rc;

	SC_TRY(sc_file_read(path, SIZE_MAX, &text, &len));
	sc_sha256(text, len, t->digest);
	j = cJSON_ParseWithLength(text, len);
	free(text);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return sc_errf(SC_EFORMAT, "%s: not a JSON object", path);
	}
	if ((rc = tok_bpe_parse(&t->bpe, cJSON_GetObjectItemCaseSensitive(j, "model"))) ||
	    (rc = tok_norm_parse(&t->norm, cJSON_GetObjectItemCaseSensitive(j, "normalizer"))) ||
	    (rc =
		 tok_pretok_parse(&t->pre, cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"))) ||
	    (rc = tok_decoder_parse(&t->dec, cJSON_GetObjectItemCaseSensitive(j, "decoder"))) ||
	    (rc = parse_post(t, cJSON_GetObjectItemCaseSensitive(j, "post_processor"))) ||
	    (rc = parse_added(t, cJSON_GetObjectItemCaseSensitive(j, "added_tokens"))))
		sc_err_wrap(rc, "%s", path);
	cJSON_Delete(j);
	return rc;
}

/* GPT-2's vocab.json + merges.txt in dir. */
static sc_err load_legacy(sc_tokenizer *t, const char *vocab_path, const char *merges_path)
{
	char *text = NULL, *line, *save = NULL;
	size_t len, count = 1;
	int32_t rank = 0, eot;
	cJSON *j, *pre, *dec;
	sc_err rc;

	uint8_t both[2 * SC_SHA256_BYTES]; /* digest = SHA-256(vocab's || merges') */

	SC_TRY(sc_file_read(vocab_path, SIZE_MAX, &text, &len));
	sc_sha256(text, len, both);
	j = cJSON_ParseWithLength(text, len);
	free(text);
	t->bpe.unk_id = -1;
	rc = parse_vocab(&t->bpe, j);
	cJSON_Delete(j);
	if (rc)
		return sc_err_wrap(rc, "%s", vocab_path);
	SC_TRY(sc_file_read(merges_path, SIZE_MAX, &text, &len));
	sc_sha256(text, len, both + SC_SHA256_BYTES);
	sc_sha256(both, sizeof(both), t->digest);
	for (size_t i = 0; i < len; i++)
		count += text[i] == '\n';
	if ((rc = tok_bpe_merges_init(&t->bpe, count)))
		goto done;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *sp;
		size_t n = strlen(line);
		if (n && line[n - 1] == '\r')
			line[--n] = '\0';
		if (!strncmp(line, "#version", 8) || !n)
			continue;
		if (!(sp = strchr(line, ' ')) || strchr(sp + 1, ' ')) {
			rc = sc_errf(SC_EFORMAT, "%s: merge '%s' is not two tokens", merges_path,
				     line);
			goto done;
		}
		if ((rc = tok_bpe_add_merge(&t->bpe, rank++, line, (size_t)(sp - line), sp + 1,
					    strlen(sp + 1))))
			goto done;
	}
	if ((rc = tok_bpe_finish(&t->bpe)))
		goto done;
	pre = cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false}");
	dec = cJSON_Parse("{\"type\":\"ByteLevel\"}");
	rc = tok_pretok_parse(&t->pre, pre);
	if (!rc)
		rc = tok_decoder_parse(&t->dec, dec);
	cJSON_Delete(pre);
	cJSON_Delete(dec);
	eot = tok_vocab_find(&t->bpe.vocab, "<|endoftext|>", 13);
	if (!rc && eot >= 0 && (t->added = calloc(1, sizeof(*t->added))))
		rc = add_token(t, eot, "<|endoftext|>", 1, 0, 0, 0, 0);
done:
	free(text);
	return rc ? sc_err_wrap(rc, "%s", merges_path) : SC_OK;
}

sc_err sc_tokenizer_load(sc_tokenizer **out, const char *path)
{
	struct stat st;
	sc_tokenizer *t;
	char *a = NULL, *b = NULL;
	sc_err rc;

	*out = NULL;
	if (stat(path, &st))
		return sc_errf(SC_ENOENT, "%s: no such tokenizer file or directory", path);
	if (!(t = calloc(1, sizeof(*t))))
		return sc_errf(SC_ENOMEM, "out of memory");
	if (!S_ISDIR(st.st_mode)) {
		rc = load_json(t, path);
	} else if (asprintf(&a, "%s/tokenizer.json", path) < 0 ||
		   asprintf(&b, "%s/vocab.json", path) < 0) {
		rc = sc_errf(SC_ENOMEM, "out of memory");
	} else if (!stat(a, &st)) {
		rc = load_json(t, a);
	} else if (!stat(b, &st)) {
		free(a);
		a = NULL;
		rc = asprintf(&a, "%s/merges.txt", path) < 0 ? sc_errf(SC_ENOMEM, "out of memory")
							     : load_legacy(t, b, a);
	} else {
		rc = sc_errf(SC_ENOENT, "%s: neither tokenizer.json nor vocab.json + merges.txt",
			     path);
	}
	free(a);
	free(b);
	if (!rc)
		rc = finish(t);
	if (rc) {
		sc_tokenizer_free(t);
		return rc;
	}
	*out = t;
	return SC_OK;
}

void sc_tokenizer_free(sc_tokenizer *t)
{
	if (!t)
		return;
	tok_bpe_free(&t->bpe);
	tok_norm_free(t->norm);
	tok_pretok_free(t->pre);
	tok_decoder_free(t->dec);
	for (size_t i = 0; i < t->n_added; i++) {
		free(t->added[i].content);
		free(t->added[i].pattern);
	}
	free(t->added);
	free(t->raw_set.idx);
	free(t->norm_set.idx);
	free(t->added_of);
	free(t->pre_ids);
	free(t->post_ids);
	free(t);
}

void sc_tokenizer_digest(const sc_tokenizer *t, uint8_t out[32])
{
	memcpy(out, t->digest, sizeof(t->digest));
}
