/* bf16_test.c — a bf16 frozen base (SC_QUANT_BF16 / SC_QW_BF16) on the CPU
 * backend's two paths: the fp32 tiles (the weight widened inside the GEMM
 * path; every CPU) and oneDNN's bf16 x bf16 -> fp32 matmul (CPUs with
 * AVX512-BF16 or AMX; tested where this one has it, said when not).
 *   - gemm_q on the tiles is bit-identical to gemm on the widened weight;
 *   - gemm_q on either path is within fp32 accumulation error of a double
 *     product of the same bf16-rounded inputs (bf16 products are exact in
 *     fp32), both orientations, strided a and c, alpha, beta, a tile too
 *     small for all rows; and every layout: trans_a, trans_b, beta 0, 1,
 *     0.5, alpha != 1, lda > k, ldc > n, one shape called with changing
 *     strides and tiles (a cached oneDNN primitive must fit each call);
 *   - training with a bf16 base: on the tiles the same bits as training
 *     the fp32 model of the widened weights; loaded from BF16 tensors (no
 *     fp32 copy) or rounded from F32 ones as it loads, the same bits; on
 *     oneDNN within the bf16 bound of that fp32 run; 2 stages train the
 *     same bits as 1 on each path; the projections take half their fp32
 *     memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_file.h"
#include "sc_modelgen.h"
#include "sc_quant.h"
#include "sc_segment.h"
#include "sc_train.h"
#include "testutil.h"

static float *rand_floats(size_t n, uint64_t seed, float scale)
{
	float *v = malloc(n * sizeof(float));
	assert_non_null(v);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		v[i] = scale * ((float)(seed >> 40) / (float)(1ull << 24) - 0.5f);
	}
	return v;
}

/* Nonzero when be runs bf16 weights on oneDNN by default. */
static int has_bf16_matmul(sc_backend *be)
{
	return !strncmp(sc_backend_cpu_bf16_kernel(be), "bf16 matmul", 11);
}

enum { R = 70, CC = 301 };

/* The fp32 tiles: gemm_q = gemm on the widened weight, bit for bit unless
 * OpenBLAS runs a narrow tile with another kernel (then fp32 rounding). */
static void tiles_equal_gemm_on_widened(void **state)
{
	sc_backend *be;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	SC_ASSERT_OK(sc_backend_cpu_bf16_tiles(be, 1));
	assert_non_null(strstr(sc_backend_cpu_bf16_kernel(be), "fp32 tiles"));
	float *w = rand_floats((size_t)R * CC, 7, 0.2f), *d = malloc(sizeof(float) * R * CC);
	uint16_t *wb = malloc((size_t)R * CC * sizeof(uint16_t));
	for (size_t i = 0; i < (size_t)R * CC; i++) {
		wb[i] = sc_bf16_from_f32(w[i]);
		d[i] = sc_bf16_to_f32(wb[i]);
	}
	sc_qweight q = { SC_QW_BF16, R, CC, 1, (const uint8_t *)wb, NULL, NULL, NULL, NULL };
	static float tile[CC * 64];
	int exact = 0, total = 0;
	for (int tb = 0; tb < 2; tb++)
		for (int m = 1; m < 40; m += 19) {
			int n = tb ? R : CC, k = tb ? CC : R;
			float *a = rand_floats((size_t)m * k, 11 + m, 1.0f);
			float *c1 = rand_floats((size_t)m * n, 13, 1.0f);
			float *c2 = malloc((size_t)m * n * sizeof(float));
			memcpy(c2, c1, (size_t)m * n * sizeof(float));
			SC_ASSERT_OK(
			    be->ops->gemm(be, 0, tb, m, n, k, 0.5f, a, k, d, CC, 0.25f, c1, n));
			SC_ASSERT_OK(sc_backend_gemm_q(be, 0, tb, m, n, k, 0.5f, a, k, &q, 0.25f,
						       c2, n, tile, (size_t)k * 64));
			for (size_t e = 0; e < (size_t)m * n; e++)
				assert_true(fabsf(c1[e] - c2[e]) <= 1e-5f * (1.0f + fabsf(c1[e])));
			exact += !memcmp(c1, c2, (size_t)m * n * sizeof(float));
			total++;
			free(a);
			free(c1);
			free(c2);
		}
	printf("bf16 tiles: %d of %d products bit-identical to gemm on the widened weight\n", exact,
	       total);
	free(w);
	free(d);
	free(wb);
	sc_backend_free(be);
}

/* One gemm_q call of every shape parameter: op(a) (m, k) from a stored
 * (m, k) rows lda apart or, with ta, (k, m) rows lda apart; c (m, n) rows
 * ldc apart. Checked element by element against the double product of the
 * bf16-rounded inputs (path 1: a rounded too, as oneDNN does), within
 * 2 (k + 2) u sum |terms|; c's padding must be untouched. */
typedef struct gcase {
	int ta, tb, m, lda, ldc;
	float al, bt;
	size_t tile_floats;
} gcase;

static void check_general(sc_backend *be, const sc_qweight *q, const uint16_t *wb, int path,
			  const gcase *g, uint64_t seed, double *worst)
{
	static float tile[130 * CC];
	int n = g->tb ? R : CC, k = g->tb ? CC : R, m = g->m;
	size_t a_n = (size_t)(g->ta ? k : m) * (size_t)g->lda, c_n = (size_t)m * (size_t)g->ldc;
	float *a = rand_floats(a_n, seed, 2.0f), *c = rand_floats(c_n, seed + 1, 1.0f);
	float *c0 = malloc(c_n * sizeof(float));
	assert_non_null(c0);
	memcpy(c0, c, c_n * sizeof(float));
	assert_true(g->tile_floats <= sizeof(tile) / sizeof(float));
	SC_ASSERT_OK(sc_backend_gemm_q(be, g->ta, g->tb, m, n, k, g->al, a, g->lda, q, g->bt, c,
				       g->ldc, tile, g->tile_floats));
	for (int i = 0; i < m; i++) {
		for (int j = 0; j < n; j++) {
			double acc = 0, mag = 0;
			for (int kk = 0; kk < k; kk++) {
				float x =
				    g->ta ? a[(size_t)kk * g->lda + i] : a[(size_t)i * g->lda + kk];
				x = path ? sc_bf16_to_f32(sc_bf16_from_f32(x)) : x;
				double wv = sc_bf16_to_f32(
				    wb[g->tb ? (size_t)j * CC + kk : (size_t)kk * CC + j]);
				acc += (double)x * wv;
				mag += fabs((double)x * wv);
			}
			double cv = c0[(size_t)i * g->ldc + j], got = c[(size_t)i * g->ldc + j];
			double ref = g->al * acc + (g->bt != 0.0f ? g->bt * cv : 0.0),
			       d = fabs(got - ref);
			mag = fabs(g->al) * mag + fabs(g->bt * cv);
			if (!(d <= 2.0 * (k + 2) * 0x1p-24 * mag))
				fail_msg("path %d trans_a %d trans_b %d m %d lda %d ldc %d alpha "
					 "%g beta "
					 "%g: c[%d, %d] = %.9g, double says %.9g",
					 path, g->ta, g->tb, m, g->lda, g->ldc, (double)g->al,
					 (double)g->bt, i, j, got, ref);
			*worst = mag > 0 && d / mag > *worst ? d / mag : *worst;
		}
		for (int j = n; j < g->ldc; j++) /* c's padding is not touched */
			assert_true(c[(size_t)i * g->ldc + j] == c0[(size_t)i * g->ldc + j]);
	}
	free(a);
	free(c);
	free(c0);
}

/* Both paths against double: the products of bf16 values are exact in
 * fp32, so only fp32 accumulation is left, bounded by about (k + 2) u
 * sum |terms| (u = 2^-24); the bound used is twice that. */
static void gemm_q_bf16_against_double(void **state)
{
	static const int ms[] = { 1, 5, 33, 130 };
	static const float ab[][2] = { { 1.0f, 0.0f }, { 0.5f, 0.25f }, { 1.0f, 1.0f } };
	sc_backend *be;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 2));
	float *w = rand_floats((size_t)R * CC, 7, 0.2f);
	uint16_t *wb = malloc((size_t)R * CC * sizeof(uint16_t));
	for (size_t i = 0; i < (size_t)R * CC; i++)
		wb[i] = sc_bf16_from_f32(w[i]);
	sc_qweight q = { SC_QW_BF16, R, CC, 1, (const uint8_t *)wb, NULL, NULL, NULL, NULL };
	int paths = has_bf16_matmul(be) ? 2 : 1;
	printf("bf16: the automatic path here: %s\n", sc_backend_cpu_bf16_kernel(be));
	if (paths == 1)
		printf("bf16: no bf16 matmul on this CPU or build: its path is not tested here\n");
	for (int path = 0; path < paths; path++) { /* 0: fp32 tiles, 1: oneDNN */
		double worst = 0;
		SC_ASSERT_OK(sc_backend_cpu_bf16_tiles(be, path == 0));
		for (int tb = 0; tb < 2; tb++)
			for (size_t mi = 0; mi < 4; mi++)
				for (size_t ai = 0; ai < 3; ai++)
					for (int small = 0; small < 2;
					     small++) { /* 3 rows a time */
						int k = tb ? CC : R;
						gcase g = { .tb = tb,
							    .m = ms[mi],
							    .lda = k + 3,
							    .ldc = (tb ? R : CC) + 5,
							    .al = ab[ai][0],
							    .bt = ab[ai][1],
							    .tile_floats =
								(size_t)k * (small ? 3 : 65) };
						check_general(be, &q, wb, path, &g,
							      11 + (uint64_t)ms[mi], &worst);
					}
		printf("bf16 gemm_q, %s: worst |c - ref| / sum|terms| = %.3g\n",
		       path ? "oneDNN" : "fp32 tiles", worst);
	}
	free(w);
	free(wb);
	sc_backend_free(be);
}

/* Every combination of trans_a, trans_b, beta in {0, 1, 0.5} and alpha
 * in {1, -0.75}, each shape run with a sequence of strides (packed, lda
 * and ldc padded, back to packed, ldc padded differently, lda padded
 * alone), one of them with a tile for 5 rows (oneDNN: 10) so that the rows
 * go in chunks: a primitive cached for one call's strides or rows must not
 * serve another's. */
static void gemm_q_bf16_every_layout(void **state)
{
	static const float betas[] = { 0.0f, 1.0f, 0.5f }, alphas[] = { 1.0f, -0.75f };
	static const int pads[][2] = { { 0, 0 }, { 3, 5 }, { 0, 0 }, { 0, 17 }, { 9, 0 } };
	sc_backend *be;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 2));
	float *w = rand_floats((size_t)R * CC, 9, 0.2f);
	uint16_t *wb = malloc((size_t)R * CC * sizeof(uint16_t));
	assert_non_null(wb);
	for (size_t i = 0; i < (size_t)R * CC; i++)
		wb[i] = sc_bf16_from_f32(w[i]);
	sc_qweight q = { SC_QW_BF16, R, CC, 1, (const uint8_t *)wb, NULL, NULL, NULL, NULL };
	int paths = has_bf16_matmul(be) ? 2 : 1, cases = 0;
	for (int path = 0; path < paths; path++) { /* 0: fp32 tiles, 1: oneDNN */
		double worst = 0;
		uint64_t seed = 100;
		SC_ASSERT_OK(sc_backend_cpu_bf16_tiles(be, path == 0));
		for (int ta = 0; ta < 2; ta++)
			for (int tb = 0; tb < 2; tb++)
				for (size_t bi = 0; bi < 3; bi++)
					for (size_t ai = 0; ai < 2; ai++)
						for (size_t pi = 0; pi < 5; pi++) {
							int m = 37, n = tb ? R : CC,
							    k = tb ? CC : R;
							gcase g = {
								.ta = ta,
								.tb = tb,
								.m = m,
								.lda = (ta ? m : k) + pads[pi][0],
								.ldc = n + pads[pi][1],
								.al = alphas[ai],
								.bt = betas[bi],
								.tile_floats =
								    (size_t)k * (pi == 3 ? 5 : 64)
							};
							check_general(be, &q, wb, path, &g, seed++,
								      &worst);
							cases++;
						}
		printf("bf16 gemm_q every layout, %s: worst |c - ref| / sum|terms| = %.3g\n",
		       path ? "oneDNN" : "fp32 tiles", worst);
	}
	printf("bf16 gemm_q every layout: %d cases\n", cases);
	free(w);
	free(wb);
	sc_backend_free(be);
}

/* src's model (one F32 file) with its projections rounded to bf16: qdir
 * holds them as BF16 under their own names (as `splitchain quantize --to
 * bf16` and a bf16 Hugging Face checkpoint do), fdir as F32 widened; every
 * other tensor copied. Both config.json are src's (a job asks for bf16). */
static void write_bf16_models(const char *src, const sc_model_config *mc, const char *qdir,
			      const char *fdir)
{
	const sc_family *fam = sc_family_of(mc);
	char path[700];
	sc_st_file *f;
	sc_st_writer *wq, *wf;
	void *keep[1024];
	int nkeep = 0;

	snprintf(path, sizeof(path), "%s/model.safetensors", src);
	SC_ASSERT_OK(sc_st_open(&f, path));
	SC_ASSERT_OK(sc_st_writer_new(&wq));
	SC_ASSERT_OK(sc_st_writer_new(&wf));
	for (int i = 0; i < sc_st_count(f); i++) {
		const sc_st_tensor *t = sc_st_at(f, i);
		size_t len = strlen(t->name), n = t->nbytes / 4;
		int proj = 0;
		for (int k = 0; t->ndim == 2 && k < fam->n_targets; k++) {
			char suf[128];
			size_t m =
			    (size_t)snprintf(suf, sizeof(suf), ".%s.weight", fam->targets[k]);
			proj |= len > m && !strcmp(t->name + len - m, suf);
		}
		if (!proj) {
			SC_ASSERT_OK(
			    sc_st_writer_add(wq, t->name, t->dtype, t->ndim, t->shape, t->data));
			SC_ASSERT_OK(
			    sc_st_writer_add(wf, t->name, t->dtype, t->ndim, t->shape, t->data));
			continue;
		}
		assert_int_equal(t->dtype, SC_F32);
		uint16_t *b = malloc(n * sizeof(uint16_t));
		float *wd = malloc(n * sizeof(float));
		assert_true(nkeep + 2 <= 1024);
		for (size_t e = 0; e < n; e++) {
			float v;
			memcpy(&v, (const char *)t->data + 4 * e, 4);
			b[e] = sc_bf16_from_f32(v);
			wd[e] = sc_bf16_to_f32(b[e]);
		}
		SC_ASSERT_OK(sc_st_writer_add(wq, t->name, SC_BF16, 2, t->shape, b));
		SC_ASSERT_OK(sc_st_writer_add(wf, t->name, SC_F32, 2, t->shape, wd));
		keep[nkeep++] = b;
		keep[nkeep++] = wd;
	}
	assert_int_equal(sc_file_mkdir(qdir), 0);
	assert_int_equal(sc_file_mkdir(fdir), 0);
	snprintf(path, sizeof(path), "%s/model.safetensors", qdir);
	SC_ASSERT_OK(sc_st_writer_save(wq, path));
	snprintf(path, sizeof(path), "%s/model.safetensors", fdir);
	SC_ASSERT_OK(sc_st_writer_save(wf, path));
	snprintf(path, sizeof(path), "%s/config.json", qdir);
	SC_ASSERT_OK(sc_config_save(mc, path));
	snprintf(path, sizeof(path), "%s/config.json", fdir);
	SC_ASSERT_OK(sc_config_save(mc, path));
	sc_st_writer_free(wq);
	sc_st_writer_free(wf);
	sc_st_close(f);
	for (int i = 0; i < nkeep; i++)
		free(keep[i]);
}

enum { STEPS = 12 };

typedef struct run {
	double losses[STEPS];
	sc_adapter *ad;
	size_t stage_bytes;
} run;

enum { BASE_FP32, BASE_BF16_TILES, BASE_BF16_AUTO };

/* STEPS steps on the model in dir in nstages, the base as `base` says. */
static void train(run *out, const char *dir, const sc_tokens *tk, int nstages, int base)
{
	char path[700];
	sc_model_config mc;
	sc_lora_config lc = { .rank = 4, .alpha = 8, .seed = 3 };
	sc_train_config tc;
	sc_backend *be;
	sc_weights *wf;
	sc_trainer *tr;
	int first, last, bounds[3];

	snprintf(path, sizeof(path), "%s/config.json", dir);
	SC_ASSERT_OK(sc_config_load(&mc, path));
	if (base != BASE_FP32) { /* what a job's --precision bf16 makes of the config */
		mc.quantized = 1;
		mc.quant_format = SC_QUANT_BF16;
	}
	lc.targets = (1u << sc_family_of(&mc)->n_targets) - 1;
	bounds[0] = 0;
	bounds[1] = mc.n_layer / 2;
	bounds[2] = mc.n_layer;
	SC_ASSERT_OK(sc_weights_open(&wf, dir));
	sc_train_config_defaults(&tc);
	tc.steps = STEPS;
	tc.B = 2;
	tc.T = 32;
	tc.warmup = 2;
	tc.lr = 1e-2f;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 0));
	SC_ASSERT_OK(sc_backend_cpu_bf16_tiles(be, base == BASE_BF16_TILES));
	SC_ASSERT_OK(sc_trainer_new(&tr, be, &mc, &lc, &tc, wf, NULL, tk, nstages,
				    nstages == 1 ? NULL : bounds));
	out->stage_bytes = sc_trainer_stage_memory(tr, 0, &first, &last);
	for (int s = 0; s < STEPS; s++) {
		sc_step_stats st;
		SC_ASSERT_OK(sc_trainer_step(tr, s, &st));
		assert_true(isfinite(st.loss));
		out->losses[s] = st.loss;
	}
	SC_ASSERT_OK(sc_adapter_new(&out->ad, &lc, &mc));
	SC_ASSERT_OK(sc_trainer_get_lora(tr, out->ad));
	sc_trainer_free(tr);
	sc_backend_free(be);
	sc_weights_close(wf);
}

static void same_bits(const run *a, const run *b, const char *what)
{
	if (memcmp(a->losses, b->losses, sizeof(a->losses)) ||
	    memcmp(a->ad->data, b->ad->data, a->ad->n_floats * sizeof(float)))
		fail_msg("%s: not the same bits", what);
}

/* Worst relative loss difference and largest adapter difference. */
static void diff(const run *a, const run *b, double *loss, double *ad)
{
	*loss = *ad = 0;
	for (int s = 0; s < STEPS; s++)
		*loss = fmax(*loss, fabs(a->losses[s] - b->losses[s]) / fabs(b->losses[s]));
	for (size_t k = 0; k < a->ad->n_floats; k++)
		*ad = fmax(*ad, fabs((double)a->ad->data[k] - b->ad->data[k]));
}

static void one_family(const sc_model_config *mc, const char *tag)
{
	static const char text[] = "splitchain trains LoRA adapters on a bf16 base; the frozen "
				   "projections stay sixteen bits in memory. ";
	char src[512], qdir[600], fdir[600], path[600];
	sc_modelgen_opts o = { .seed = 2, .dtype = SC_F32, .random_norms = 1 };
	sc_tokens *tk;
	run f32, t1, t2, tl, d1, d2;
	double dl, da;

	snprintf(path, sizeof(path), "bf16-%s", tag);
	sc_test_path(src, sizeof(src), path);
	SC_ASSERT_OK(sc_modelgen_write(src, mc, &o));
	sc_test_path(path, sizeof(path), "bf16.txt");
	assert_int_equal(sc_test_write_file(path, text, sizeof(text) - 1), 0);
	SC_ASSERT_OK(sc_tokens_load(&tk, path, mc->vocab_size));
	snprintf(qdir, sizeof(qdir), "%s-bf16", src);
	snprintf(fdir, sizeof(fdir), "%s-widened", src);
	write_bf16_models(src, mc, qdir, fdir);

	train(&f32, fdir, tk, 1, BASE_FP32);
	train(&t1, qdir, tk, 1, BASE_BF16_TILES); /* BF16 tensors, no fp32 copy */
	train(&t2, qdir, tk, 2, BASE_BF16_TILES); /* two stages */
	train(&tl, src, tk, 1, BASE_BF16_TILES);  /* F32 tensors rounded as they load */
	diff(&t1, &f32, &dl, &da);
	printf("%s bf16 tiles: losses %.4f -> %.4f; vs fp32 on the widened weights: loss %.3g, "
	       "adapter %.3g; stage bytes %zu (fp32 %zu)\n",
	       tag, t1.losses[0], t1.losses[STEPS - 1], dl, da, t1.stage_bytes, f32.stage_bytes);
	assert_true(dl <= 1e-5 && da <= 1e-4); /* the tile GEMM sums as gemm does */
	same_bits(&t1, &t2, "tiles, 1 vs 2 stages");
	same_bits(&t1, &tl, "tiles, BF16 file vs F32 rounded at load");
	assert_true(t1.losses[STEPS - 1] < t1.losses[0]);
	/* memory: projections at 2 bytes a weight, and the tile scratch */
	const sc_family *fam = sc_family_of(mc);
	double proj = 0;
	for (int t = 0; t < fam->n_targets; t++) {
		int in, out;
		fam->target_dims(mc, t, &in, &out);
		proj += 4.0 * in * out * mc->n_layer;
	}
	double bproj = (double)t1.stage_bytes - ((double)f32.stage_bytes - proj);
	printf("%s bf16: projections %.0f bytes as fp32, %.0f as bf16 (%.3f x)\n", tag, proj, bproj,
	       bproj / proj);
	assert_true(bproj <= 0.6 * proj);

	sc_backend *probe;
	SC_ASSERT_OK(sc_backend_cpu_open(&probe, 0));
	int dnnl = has_bf16_matmul(probe);
	sc_backend_free(probe);
	if (dnnl) {
		train(&d1, qdir, tk, 1, BASE_BF16_AUTO);
		train(&d2, qdir, tk, 2, BASE_BF16_AUTO);
		same_bits(&d1, &d2, "oneDNN, 1 vs 2 stages");
		diff(&d1, &f32, &dl, &da);
		printf("%s bf16 oneDNN (activations bf16 too): losses %.4f -> %.4f; vs fp32 on "
		       "the widened weights: loss %.3g, adapter %.3g\n",
		       tag, d1.losses[0], d1.losses[STEPS - 1], dl, da);
		/* Each frozen GEMM rounds its activation to bf16 (2^-9 relative
		 * per input, averaging out over k): the first loss moves by
		 * ~1e-5; then the two runs' adapters drift apart at lr 1e-2
		 * (measured: 1.4e-2 on llama's losses by step 12). */
		double d0 = fabs(d1.losses[0] - f32.losses[0]) / f32.losses[0];
		printf("%s bf16 oneDNN: first loss %.3g relative from fp32's\n", tag, d0);
		assert_true(d0 <= 1e-3);
		assert_true(dl <= 3e-2);
		assert_true(d1.losses[STEPS - 1] < d1.losses[0]);
		sc_adapter_free(d1.ad);
		sc_adapter_free(d2.ad);
	} else {
		printf("%s bf16: no bf16 matmul here: oneDNN training not run\n", tag);
	}
	sc_adapter_free(f32.ad);
	sc_adapter_free(t1.ad);
	sc_adapter_free(t2.ad);
	sc_adapter_free(tl.ad);
	sc_tokens_free(tk);
}

static void gpt2_trains_on_bf16_base(void **state)
{
	sc_model_config mc;
	sc_gpt2_config(&mc, 4, 4, 128, 256, 64);
	one_family(&mc, "gpt2");
}

static void llama_trains_on_bf16_base(void **state)
{
	sc_model_config mc;
	sc_config_shape sh = { .n_layer = 4,
			       .n_embd = 128,
			       .n_inner = 344,
			       .vocab_size = 256,
			       .n_positions = 64,
			       .tie = -1 };
	SC_ASSERT_OK(sc_config_make(&mc, "llama-tiny", NULL, &sh));
	one_family(&mc, "llama");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tiles_equal_gemm_on_widened),
		cmocka_unit_test(gemm_q_bf16_against_double),
		cmocka_unit_test(gemm_q_bf16_every_layout),
		cmocka_unit_test(gpt2_trains_on_bf16_base),
		cmocka_unit_test(llama_trains_on_bf16_base),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
