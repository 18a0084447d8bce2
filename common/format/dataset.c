/* dataset.c — token files, plain text and JSONL (text, or prompt /
 * completion with the loss masked to the completion) as one packed token
 * stream with its target mask. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sc_dataset.h"
#include "sc_file.h"

#define MAX_DATA_BYTES ((size_t)1 << 34)

/* A growing token stream with its mask. */
typedef struct stream {
	int32_t *ids;
	uint8_t *mask;
	size_t n, cap;
	int masked;   /* some token is not a target */
	size_t *docs; /* where each document starts */
	size_t ndocs, dcap;
} stream;

/* Starts a document at the end of the stream. */
static sc_err begin_doc(stream *s)
{
	if (s->ndocs == s->dcap) {
		size_t cap = s->dcap ? 2 * s->dcap : 256;
		size_t *nd = realloc(s->docs, cap * sizeof(size_t));
		if (!nd)
			return sc_errf(SC_ENOMEM, "out of memory for %zu documents", cap);
		s->docs = nd;
		s->dcap = cap;
	}
	s->docs[s->ndocs++] = s->n;
	return SC_OK;
}

static sc_err push(stream *s, const int32_t *ids, size_t n, uint8_t target)
{
	if (!n) /* ids may be NULL */
		return SC_OK;
	if (s->n + n > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap < s->n + n)
			cap *= 2;
		int32_t *ni = realloc(s->ids, cap * sizeof(int32_t));
		if (ni)
			s->ids = ni;
		uint8_t *nm = realloc(s->mask, cap);
		if (nm)
			s->mask = nm;
		if (!ni || !nm)
			return sc_errf(SC_ENOMEM, "out of memory for %zu tokens", s->n + n);
		s->cap = cap;
	}
	memcpy(s->ids + s->n, ids, n * sizeof(int32_t));
	memset(s->mask + s->n, target, n);
	s->masked |= !target && n;
	s->n += n;
	return SC_OK;
}

/* Tokenizes len bytes of text (BOS etc. when special) and appends them. */
static sc_err push_text(stream *s, const sc_tokenizer *tok, const char *text, size_t len,
			int special, uint8_t target)
{
	if (!tok) {
		int32_t buf[1024];
		for (size_t i = 0; i < len;) {
			size_t k = 0;
			for (; k < 1024 && i < len; k++, i++)
				buf[k] = (unsigned char)text[i];
			SC_TRY(push(s, buf, k, target));
		}
		return SC_OK;
	}
	int32_t *ids = NULL;
	size_t n = 0;
	SC_TRY(sc_tokenizer_encode(tok, text, len, special, &ids, &n));
	sc_err rc = push(s, ids, n, target);
	free(ids);
	return rc;
}

static sc_err push_eos(stream *s, const sc_dataset_opts *o)
{
	int32_t eos = o->eos_id;
	return eos >= 0 ? push(s, &eos, 1, 1) : SC_OK;
}

/* One JSONL line: appends its document; SC_EFORMAT says what is wrong. */
static sc_err jsonl_line(stream *s, const sc_tokenizer *tok, const char *line, size_t len,
			 const sc_dataset_opts *o, int *kind)
{
	cJSON *root = cJSON_ParseWithLength(line, len);
	sc_err rc = SC_OK;
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return sc_errf(SC_EFORMAT, "not a JSON object");
	}
	const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
	const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
	const cJSON *completion = cJSON_GetObjectItemCaseSensitive(root, "completion");
	if (cJSON_GetObjectItemCaseSensitive(root, "messages")) {
		rc =
		    sc_errf(SC_ENOTSUP, "chat data (\"messages\") needs the model's chat template, "
					"which splitchain does not apply: convert it to "
					"{\"prompt\", \"completion\"}");
	} else if (cJSON_IsString(text) && !prompt && !completion) {
		*kind = 2;
		rc = push_text(s, tok, text->valuestring, strlen(text->valuestring), 1, 1);
		if (!rc)
			rc = push_eos(s, o);
	} else if (cJSON_IsString(prompt) && cJSON_IsString(completion) && !text) {
		*kind = 3;
		rc = push_text(s, tok, prompt->valuestring, strlen(prompt->valuestring), 1, 0);
		if (!rc)
			rc = push_text(s, tok, completion->valuestring,
				       strlen(completion->valuestring), 0, 1);
		if (!rc)
			rc = push_eos(s, o);
	} else {
		rc = sc_errf(SC_EFORMAT, "expected {\"text\": string} or {\"prompt\": string, "
					 "\"completion\": string}");
	}
	cJSON_Delete(root);
	return rc;
}

static sc_err load_jsonl(stream *s, const char *path, const char *data, size_t len,
			 const sc_tokenizer *tok, const sc_dataset_opts *o, sc_dataset_stats *st)
{
	size_t line_no = 0;
	for (size_t i = 0; i < len;) {
		size_t end = i;
		while (end < len && data[end] != '\n')
			end++;
		line_no++;
		size_t a = i, b = end;
		while (a < b && (data[a] == ' ' || data[a] == '\t' || data[a] == '\r'))
			a++;
		if (a < b) {
			int kind = 0;
			size_t n0 = s->n;
			sc_err rc = begin_doc(s);
			if (!rc)
				rc = jsonl_line(s, tok, data + a, b - a, o, &kind);
			if (rc == SC_EFORMAT && o->skip_bad_lines) {
				s->n = n0; /* nothing of a bad line stays */
				s->ndocs--;
				st->bad_lines++;
			} else if (rc) {
				return sc_err_wrap(rc, "%s:%zu", path, line_no);
			} else {
				st->documents++;
				if (kind > st->format)
					st->format = kind;
			}
		}
		i = end + 1;
	}
	return SC_OK;
}

sc_err sc_dataset_load(sc_tokens **out, const char *path, const sc_tokenizer *tok, int vocab_size,
		       const sc_dataset_opts *o, sc_dataset_stats *st)
{
	sc_dataset_stats dummy;
	stream s = { 0 };
	char *data = NULL;
	size_t len = 0;
	sc_err rc;

	*out = NULL;
	if (!st)
		st = &dummy;
	memset(st, 0, sizeof(*st));
	if (!path || !o)
		return sc_errf(SC_EINVAL, "sc_dataset_load: NULL argument");
	SC_TRY(sc_file_read(path, MAX_DATA_BYTES, &data, &len));
	if (len >= 12) { /* a token file: its own reader and checks */
		int32_t magic;
		memcpy(&magic, data, 4);
		if (magic == SC_TOKENS_MAGIC) {
			free(data);
			SC_TRY(sc_tokens_load(out, path, vocab_size));
			st->documents = 1;
			st->target_tokens = (*out)->n;
			return SC_OK;
		}
	}
	size_t first = 0;
	while (first < len && strchr(" \t\r\n", data[first]))
		first++;
	if (first < len && data[first] == '{') {
		rc = load_jsonl(&s, path, data, len, tok, o, st);
	} else {
		st->format = 1;
		st->documents = 1;
		rc = begin_doc(&s);
		if (!rc)
			rc = push_text(&s, tok, data, len, 1, 1);
		if (!rc && tok)
			rc = push_eos(&s, o);
	}
	free(data);
	if (!rc && !s.n)
		rc = sc_errf(SC_EINVAL, "%s: no tokens (an empty dataset)", path);
	for (size_t i = 0; !rc && i < s.n; i++)
		if (s.ids[i] < 0 || s.ids[i] >= vocab_size)
			rc = sc_errf(SC_ERANGE,
				     "%s: token id %d at position %zu is outside the model's "
				     "vocabulary [0, %d)",
				     path, s.ids[i], i, vocab_size);
	sc_tokens *tk = rc ? NULL : calloc(1, sizeof(*tk));
	if (!rc && !tk)
		rc = sc_errf(SC_ENOMEM, "out of memory");
	if (rc) {
		free(s.ids);
		free(s.mask);
		free(s.docs);
		return rc;
	}
	for (size_t i = 0; i < s.n; i++)
		st->target_tokens += s.mask[i];
	tk->ids = s.ids;
	tk->n = s.n;
	tk->docs = s.docs;
	tk->ndocs = s.ndocs;
	if (s.masked) {
		tk->mask = s.mask;
	} else {
		free(s.mask);
	}
	*out = tk;
	return SC_OK;
}

sc_err sc_dataset_tokenizer(sc_tokenizer **out, const char *model_dir, const char *tokenizer_path)
{
	char path[4096];
	*out = NULL;
	if (tokenizer_path && *tokenizer_path)
		return sc_tokenizer_load(out, tokenizer_path);
	if (!model_dir)
		return SC_OK;
	snprintf(path, sizeof(path), "%s/tokenizer.json", model_dir);
	FILE *f = fopen(path, "rb");
	if (!f)
		return SC_OK; /* no tokenizer: bytes */
	fclose(f);
	return sc_tokenizer_load(out, path);
}

sc_err sc_dataset_load_for(sc_tokens **out, const char *path, const sc_tokenizer *tok,
			   int vocab_size, int model_eos, int skip_bad_lines, sc_dataset_stats *st)
{
	/* a post-processor that appends EOS already ends every document */
	int eos = !tok || sc_tokenizer_eos_id(tok) >= 0 ? -1 : model_eos;
	sc_dataset_opts o = { .eos_id = eos, .skip_bad_lines = skip_bad_lines };
	return sc_dataset_load(out, path, tok, vocab_size, &o, st);
}
