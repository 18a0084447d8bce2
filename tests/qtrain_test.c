/* qtrain_test.c — LoRA training on a quantized frozen base (int8, NF4 with
 * double quantization): the backend's tiled gemm_q is bit-identical to gemm
 * on the dequantized weight; training on a quantized model equals training
 * on its dequantization (bit for bit: the losses and adapters), any split
 * into stages trains the same bits, a float model quantized as it loads (a
 * job's --base-quant) trains the same bits as the model quantized on disk,
 * and a stage holds the projections at their quantized size. */
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

/* The parts of a quantized weight, in one allocation: returned, free it. */
static void *quantize_parts(const sc_quant_spec *s, const float *w, sc_quant_out *o,
			    sc_quant_sizes *z)
{
	SC_ASSERT_OK(sc_quant_size(s, z));
	size_t fl = z->scales + z->scales_scale + z->scales_offset;
	uint8_t *mem = calloc(fl * 4 + z->qweight + z->scales_q + 8, 1);
	assert_non_null(mem);
	float *f = (float *)mem;
	*o = (sc_quant_out){ .scales = z->scales ? f : NULL,
			     .scales_scale = z->scales_scale ? f + z->scales : NULL,
			     .scales_offset =
				 z->scales_offset ? f + z->scales + z->scales_scale : NULL,
			     .qweight = mem + fl * 4 };
	o->scales_q = z->scales_q ? o->qweight + z->qweight : NULL;
	SC_ASSERT_OK(sc_quant_quantize(s, w, o));
	return mem;
}

/* gemm_q on every format and layout, both orientations, one and several
 * rows, tiles that split n unevenly: the same bits as gemm on the
 * dequantized matrix. */
static void gemm_q_equals_gemm_on_dequantized(void **state)
{
	static const struct {
		int format, scale_rows, dq;
	} cases[] = { { SC_QUANT_INT8, 1, 0 },
		      { SC_QUANT_INT8, 0, 0 },
		      { SC_QUANT_NF4, 1, 0 },
		      { SC_QUANT_NF4, 0, 1 } };
	const int R = 70, Cc = 301, ms[] = { 1, 5, 33 };
	sc_backend *be;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	float *w = rand_floats((size_t)R * Cc, 7, 0.2f);
	int exact = 0, total = 0;
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		sc_quant_spec s = { (enum sc_quant_format)cases[ci].format, (size_t)R, (size_t)Cc,
				    cases[ci].scale_rows, cases[ci].dq };
		sc_quant_out o;
		sc_quant_sizes z;
		void *mem = quantize_parts(&s, w, &o, &z);
		float *d = malloc((size_t)R * Cc * sizeof(float));
		sc_quant_view v = { o.qweight, o.scales, o.scales_q, o.scales_scale,
				    o.scales_offset };
		SC_ASSERT_OK(sc_quant_dequantize(&s, &v, d));
		sc_qweight q = { s.format == SC_QUANT_NF4 ? SC_QW_NF4 : SC_QW_INT8,
				 R,
				 Cc,
				 s.row_major_out,
				 o.qweight,
				 o.scales,
				 o.scales_q,
				 o.scales_scale,
				 o.scales_offset,
				 0 };
		for (int tb = 0; tb < 2; tb++) /* trans_b: W (n, k); else W (k, n) */
			for (size_t mi = 0; mi < 3; mi++) {
				int m = ms[mi], n = tb ? R : Cc, k = tb ? Cc : R;
				float *a = rand_floats((size_t)m * k, 11 + mi, 1.0f);
				float *c1 = rand_floats((size_t)m * n, 13, 1.0f);
				float *c2 = malloc((size_t)m * n * sizeof(float));
				static float tile[301 * 64];
				memcpy(c2, c1, (size_t)m * n * sizeof(float));
				SC_ASSERT_OK(be->ops->gemm(be, 0, tb, m, n, k, 0.5f, a, k, d, Cc,
							   0.25f, c1, n));
				SC_ASSERT_OK(sc_backend_gemm_q(be, 0, tb, m, n, k, 0.5f, a, k, &q,
							       0.25f, c2, n, tile, (size_t)k * 64));
				/* each element summed over all of k by one gemm: the
				 * same bits unless the BLAS runs the narrow last tile
				 * with another kernel, then within fp32 rounding */
				for (size_t e = 0; e < (size_t)m * n; e++)
					assert_true(fabsf(c1[e] - c2[e]) <=
						    1e-5f * (1.0f + fabsf(c1[e])));
				exact += !memcmp(c1, c2, (size_t)m * n * sizeof(float));
				total++;
				free(a);
				free(c1);
				free(c2);
			}
		free(d);
		free(mem);
	}
	printf("gemm_q: %d of %d products bit-identical to gemm, the rest within 1e-5\n", exact,
	       total);
	free(w);
	sc_backend_free(be);
}

/* Writes src (make-model's one file) as a quantized model qdir (every
 * projection's parts, config.json with quantization_config) and as its
 * float32 dequantization fdir, the way `splitchain quantize` does. */
static void quantize_model(const char *src, const sc_model_config *mc, int format, int dq,
			   const char *qdir, const char *fdir)
{
	const sc_family *fam = sc_family_of(mc);
	char path[700];
	sc_st_file *f;
	sc_st_writer *wq, *wf;
	sc_model_config qc = *mc;
	void *keep[4096];
	int nkeep = 0;
	static char names[4096][128];
	static int64_t shapes[4096][2];
	int nn = 0;

	snprintf(path, sizeof(path), "%s/model.safetensors", src);
	SC_ASSERT_OK(sc_st_open(&f, path));
	SC_ASSERT_OK(sc_st_writer_new(&wq));
	SC_ASSERT_OK(sc_st_writer_new(&wf));
	for (int i = 0; i < sc_st_count(f); i++) {
		const sc_st_tensor *t = sc_st_at(f, i);
		size_t len = strlen(t->name), numel = t->nbytes / 4;
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
		sc_quant_spec s = { (enum sc_quant_format)format, (size_t)t->shape[0],
				    (size_t)t->shape[1], !fam->fan_in_fan_out, dq };
		sc_quant_out o;
		sc_quant_sizes z;
		float *w = malloc(numel * sizeof(float)), *d = malloc(numel * sizeof(float));
		SC_ASSERT_OK(sc_st_read_f32(w, t, numel));
		keep[nkeep++] = quantize_parts(&s, w, &o, &z);
		sc_quant_view v = { o.qweight, o.scales, o.scales_q, o.scales_scale,
				    o.scales_offset };
		SC_ASSERT_OK(sc_quant_dequantize(&s, &v, d));
		SC_ASSERT_OK(sc_st_writer_add(wf, t->name, SC_F32, 2, t->shape, d));
		free(w);
		keep[nkeep++] = d;
		const void *data[5] = { o.qweight, o.scales, o.scales_q, o.scales_scale,
					o.scales_offset };
		const size_t n[5] = { z.qweight, z.scales, z.scales_q, z.scales_scale,
				      z.scales_offset };
		static const char *const part[5] = { "qweight", "scales", "scales_q",
						     "scales_scale", "scales_offset" };
		for (int k = 0; k < 5; k++) {
			if (!n[k])
				continue;
			snprintf(names[nn], sizeof(names[nn]), "%.*s.%s", (int)(len - 7), t->name,
				 part[k]);
			shapes[nn][0] = (int64_t)n[k];
			if (k == 0 && format == SC_QUANT_INT8)
				SC_ASSERT_OK(
				    sc_st_writer_add(wq, names[nn], SC_U8, 2, t->shape, data[k]));
			else
				SC_ASSERT_OK(sc_st_writer_add(wq, names[nn],
							      k == 0 || k == 2 ? SC_U8 : SC_F32, 1,
							      shapes[nn], data[k]));
			nn++;
		}
		if (format == SC_QUANT_NF4) {
			snprintf(names[nn], sizeof(names[nn]), "%.*s.shape", (int)(len - 7),
				 t->name);
			shapes[nn][0] = t->shape[0];
			shapes[nn][1] = t->shape[1];
			static const int64_t two[1] = { 2 };
			SC_ASSERT_OK(sc_st_writer_add(wq, names[nn], SC_I64, 1, two, shapes[nn]));
			nn++;
		}
	}
	assert_int_equal(sc_file_mkdir(qdir), 0);
	assert_int_equal(sc_file_mkdir(fdir), 0);
	snprintf(path, sizeof(path), "%s/model.safetensors", qdir);
	SC_ASSERT_OK(sc_st_writer_save(wq, path));
	snprintf(path, sizeof(path), "%s/model.safetensors", fdir);
	SC_ASSERT_OK(sc_st_writer_save(wf, path));
	qc.quantized = 1;
	qc.quant_format = format;
	qc.quant_double = dq;
	snprintf(path, sizeof(path), "%s/config.json", qdir);
	SC_ASSERT_OK(sc_config_save(&qc, path));
	snprintf(path, sizeof(path), "%s/config.json", fdir);
	SC_ASSERT_OK(sc_config_save(mc, path));
	sc_st_writer_free(wq);
	sc_st_writer_free(wf);
	sc_st_close(f);
	for (int i = 0; i < nkeep; i++)
		free(keep[i]);
}

enum { STEPS = 20 };

typedef struct run {
	double losses[STEPS];
	sc_adapter *ad;
	size_t stage_bytes;
} run;

/* STEPS steps on the model in dir (its config.json read back) in nstages,
 * the frozen base as base_quant / dq ask (a job's --base-quant). */
static void train(run *out, const char *dir, const sc_tokens *tk, int nstages, int base_quant,
		  int dq)
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
	tc.base_quant = base_quant;
	tc.double_quant = dq;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 0));
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

/* Bytes of float32 projections in layers [0, n) of mc. */
static double projection_bytes(const sc_model_config *mc, int n)
{
	const sc_family *fam = sc_family_of(mc);
	double b = 0;
	for (int t = 0; t < fam->n_targets; t++) {
		int in, o;
		fam->target_dims(mc, t, &in, &o);
		b += 4.0 * in * o * n;
	}
	return b;
}

static void one_family(const sc_model_config *mc, const char *tag)
{
	static const char text[] = "splitchain trains LoRA adapters on a quantized base; the "
				   "frozen projections stay four or eight bits in memory. ";
	static const struct {
		int format, dq;
		const char *name;
	} fmts[] = { { SC_QUANT_INT8, 0, "int8" }, { SC_QUANT_NF4, 1, "nf4-dq" } };
	char src[512], qdir[600], fdir[600], path[600];
	sc_modelgen_opts o = { .seed = 2, .dtype = SC_F32, .random_norms = 1 };
	sc_tokens *tk;
	run base;

	snprintf(path, sizeof(path), "qtrain-%s", tag);
	sc_test_path(src, sizeof(src), path);
	SC_ASSERT_OK(sc_modelgen_write(src, mc, &o));
	sc_test_path(path, sizeof(path), "qtrain.txt");
	assert_int_equal(sc_test_write_file(path, text, sizeof(text) - 1), 0);
	SC_ASSERT_OK(sc_tokens_load(&tk, path, mc->vocab_size));
	train(&base, src, tk, 1, SC_BASE_QUANT_NONE, 0);
	for (size_t i = 0; i < 2; i++) {
		run q, f, q2, lq;
		int bq = fmts[i].format == SC_QUANT_NF4 ? SC_BASE_QUANT_NF4 : SC_BASE_QUANT_INT8;
		snprintf(qdir, sizeof(qdir), "%s-%s", src, fmts[i].name);
		snprintf(fdir, sizeof(fdir), "%s-%s-f32", src, fmts[i].name);
		quantize_model(src, mc, fmts[i].format, fmts[i].dq, qdir, fdir);
		train(&q, qdir, tk, 1, SC_BASE_QUANT_NONE, 0);
		train(&f, fdir, tk, 1, SC_BASE_QUANT_NONE, 0);
		train(&q2, qdir, tk, 2, SC_BASE_QUANT_NONE, 0);
		/* the float model quantized as it loads (a job's --base-quant)
		 * trains the very bits of the model quantized on disk, and
		 * holds the same memory */
		train(&lq, src, tk, 1, bq, fmts[i].dq);
		assert_memory_equal(q.losses, lq.losses, sizeof(q.losses));
		assert_memory_equal(q.ad->data, lq.ad->data, q.ad->n_floats * sizeof(float));
		assert_int_equal(q.stage_bytes, lq.stage_bytes);
		double worst = 0;
		for (int s = 0; s < STEPS; s++)
			worst = fmax(worst, fabs(q.losses[s] - f.losses[s]) / fabs(f.losses[s]));
		double ad = 0;
		for (size_t k = 0; k < q.ad->n_floats; k++)
			ad = fmax(ad, fabs((double)q.ad->data[k] - f.ad->data[k]));
		printf("%s %s: losses %.4f -> %.4f (f32 base %.4f -> %.4f); quantized vs "
		       "dequantized: worst loss rel diff %.3g, adapter max abs diff %.3g; "
		       "stage bytes %zu (f32 base %zu)\n",
		       tag, fmts[i].name, q.losses[0], q.losses[STEPS - 1], base.losses[0],
		       base.losses[STEPS - 1], worst, ad, q.stage_bytes, base.stage_bytes);
		/* the tile GEMM sums as the plain GEMM does: the same bits
		 * here (OpenBLAS 0.3.21); fp32 rounding is what is promised */
		assert_true(worst <= 1e-5);
		assert_true(ad <= 1e-4);
		if (memcmp(q.losses, f.losses, sizeof(q.losses)) ||
		    memcmp(q.ad->data, f.ad->data, q.ad->n_floats * sizeof(float)))
			printf("%s %s: close but not bit-identical\n", tag, fmts[i].name);
		/* stages: the same bits */
		assert_memory_equal(q.losses, q2.losses, sizeof(q.losses));
		assert_memory_equal(q.ad->data, q2.ad->data, q.ad->n_floats * sizeof(float));
		assert_true(q.losses[STEPS - 1] < q.losses[0]);
		/* memory: the projections at their quantized size (tile
		 * scratch included) */
		double proj = projection_bytes(mc, mc->n_layer);
		double qproj = (double)q.stage_bytes - ((double)base.stage_bytes - proj);
		printf("%s %s: projections %.0f bytes as float32, %.0f quantized (%.3f x)\n", tag,
		       fmts[i].name, proj, qproj, qproj / proj);
		assert_true(qproj <= (fmts[i].format == SC_QUANT_NF4 ? 0.35 : 0.40) * proj);
		sc_adapter_free(q.ad);
		sc_adapter_free(f.ad);
		sc_adapter_free(q2.ad);
		sc_adapter_free(lq.ad);
	}
	sc_adapter_free(base.ad);
	sc_tokens_free(tk);
}

static void gpt2_trains_on_quantized_base(void **state)
{
	sc_model_config mc;
	sc_gpt2_config(&mc, 4, 4, 128, 256, 64);
	one_family(&mc, "gpt2");
}

static void llama_trains_on_quantized_base(void **state)
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

/* A backend without gemm_q (a device with no quantized GEMMs) refuses a quantized
 * model when the segment is made, naming the tensor. */
static void backend_without_gemm_q_refuses(void **state)
{
	sc_backend *cpu, fake;
	sc_backend_ops ops;
	sc_segment *seg = NULL;
	sc_segment_spec sp = { .lora = { .rank = 2, .alpha = 4, .targets = SC_GPT2_ALL },
			       .first = 0,
			       .last = 2,
			       .B = 1,
			       .T = 8,
			       .slots = 1 };
	SC_ASSERT_OK(sc_backend_cpu_open(&cpu, 1));
	ops = *cpu->ops;
	ops.gemm_q = NULL;
	fake = *cpu;
	fake.ops = &ops;
	fake.name = "cuda:0";
	sc_gpt2_config(&sp.model, 2, 2, 64, 256, 32);
	sp.model.quantized = 1;
	sp.model.quant_format = SC_QUANT_NF4;
	SC_ASSERT_ERR(sc_segment_new(&seg, &fake, &sp), SC_ENOTSUP);
	assert_non_null(strstr(sc_err_detail(), "need a backend with quantized GEMMs"));
	assert_non_null(strstr(sc_err_detail(), "h.0.attn.c_attn.weight"));
	assert_null(seg);
	SC_ASSERT_OK(sc_segment_new(&seg, cpu, &sp)); /* the CPU backend runs it */
	sc_segment_free(seg);
	sc_backend_free(cpu);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(gemm_q_equals_gemm_on_dequantized),
		cmocka_unit_test(gpt2_trains_on_quantized_base),
		cmocka_unit_test(llama_trains_on_quantized_base),
		cmocka_unit_test(backend_without_gemm_q_refuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
