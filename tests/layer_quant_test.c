/* layer_quant_test.c — per-layer base formats (sc_layer_quant.h): the SPEC
 * parser on good and bad input (every refusal names what is wrong), the
 * canonical form, dropping layers already in the job's format; segments
 * whose layers hold different formats (the prediction equals what is
 * allocated and counts each layer in its own format; a mixed segment
 * computes what a chain of its layers computes, bit for bit); and the
 * calibration (sc_calib.h) on a model whose layer 1 has outlier weights:
 * its errors are the larger, nf4's above int8's. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sc_calib.h"
#include "sc_family.h"
#include "sc_layer_quant.h"
#include "sc_modelgen.h"
#include "sc_quant.h"
#include "sc_segment.h"
#include "sc_weights.h"
#include "testutil.h"

#define I8 (SC_QUANT_INT8 + 1)
#define N4 (SC_QUANT_NF4 + 1)

static void parse_good(void **state)
{
	unsigned char lq[SC_LAYER_QUANT_MAX];
	char text[256];
	(void)state;
	SC_ASSERT_OK(sc_layer_quant_parse("0-3:nf4,4-7:int8", 10, lq));
	for (int l = 0; l < 10; l++)
		assert_int_equal(lq[l], l < 4 ? N4 : l < 8 ? I8 : 0);
	SC_ASSERT_OK(sc_layer_quant_format(lq, 0, 10, text, sizeof(text)));
	assert_string_equal(text, "0-3:nf4,4-7:int8");
	/* Items in any order, single layers; the canonical form merges runs. */
	SC_ASSERT_OK(sc_layer_quant_parse("5:int8,2:nf4,3-4:int8,9:nf4", 10, lq));
	SC_ASSERT_OK(sc_layer_quant_format(lq, 0, 10, text, sizeof(text)));
	assert_string_equal(text, "2:nf4,3-5:int8,9:nf4");
	/* A stage's part: its layers only. */
	SC_ASSERT_OK(sc_layer_quant_format(lq, 3, 9, text, sizeof(text)));
	assert_string_equal(text, "3-5:int8");
	SC_ASSERT_OK(sc_layer_quant_format(lq, 6, 9, text, sizeof(text)));
	assert_string_equal(text, "");
	/* Too small a buffer is refused, not cut. */
	SC_ASSERT_ERR(sc_layer_quant_format(lq, 0, 10, text, 8), SC_ERANGE);
}

static void parse_bad(void **state)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ NULL, "empty" },
		{ "", "empty" },
		{ "0-3", "expected LAYERS:FORMAT" },
		{ "x:int8", "expected a layer number at 'x:int8'" },
		{ "-1:int8", "expected a layer number" },
		{ "0-:int8", "expected a layer number at ':int8'" },
		{ "3-1:int8", "the range 3-1 runs backwards" },
		{ "0-8:int8", "layer 8 is outside the model's 8 layers (0-7)" },
		{ "99999999999999999999:nf4", "is too large" },
		{ "0-3x:int8", "expected ':' after the layers, not 'x'" },
		{ "1:int8,0-2:nf4", "layer 1 is named twice" },
		{ "0:int4", "format 'int4': choose int8 or nf4" },
		{ "0:bf16", "format 'bf16': choose int8 or nf4" },
		{ "0:", "format '': choose int8 or nf4" },
		{ "0:int8,", "an empty item" },
		{ ",0:int8", "an empty item" },
		{ "0:int8,,1:nf4", "an empty item" },
	};
	unsigned char lq[SC_LAYER_QUANT_MAX];
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(lq, 7, sizeof(lq));
		SC_ASSERT_ERR(sc_layer_quant_parse(cases[i].text, 8, lq), SC_EINVAL);
		if (!strstr(sc_err_detail(), cases[i].want))
			fail_msg("'%s': '%s' does not say '%s'",
				 cases[i].text ? cases[i].text : "NULL", sc_err_detail(),
				 cases[i].want);
		for (int l = 0; l < SC_LAYER_QUANT_MAX; l++)
			assert_int_equal(lq[l], 0); /* nothing half-parsed */
	}
}

static void apply_drops_the_base(void **state)
{
	sc_model_config mc;
	(void)state;
	sc_gpt2_config(&mc, 4, 2, 32, 64, 16);
	SC_ASSERT_OK(sc_layer_quant_apply(&mc, NULL)); /* nothing asked: nothing changes */
	assert_int_equal(sc_layer_quant_count(&mc, 0, 4), 0);
	assert_int_equal(sc_layer_quant_of(&mc, 2), -1);
	mc.quantized = 1; /* a job with --base-quant nf4 */
	mc.quant_format = SC_QUANT_NF4;
	SC_ASSERT_OK(sc_layer_quant_apply(&mc, "0:nf4,1-2:int8"));
	assert_int_equal(mc.layer_quant[0], 0);
	assert_int_equal(mc.layer_quant[1], I8);
	assert_int_equal(sc_layer_quant_of(&mc, 0), SC_QUANT_NF4);
	assert_int_equal(sc_layer_quant_of(&mc, 2), SC_QUANT_INT8);
	assert_int_equal(sc_layer_quant_of(&mc, 3), SC_QUANT_NF4);
	assert_int_equal(sc_layer_quant_count(&mc, 0, 4), 2);
	assert_int_equal(sc_layer_quant_count(&mc, 2, 4), 1);
	/* A bad SPEC leaves mc as it was. */
	SC_ASSERT_ERR(sc_layer_quant_apply(&mc, "0-9:int8"), SC_EINVAL);
	assert_int_equal(mc.layer_quant[1], I8);
}

/* A small GPT-2 written to the test directory as name. */
static void small_model(sc_model_config *mc, char *dir, size_t size, const char *name)
{
	sc_modelgen_opts o = { .seed = 11, .dtype = SC_F32, .random_norms = 1 };
	sc_gpt2_config(mc, 3, 2, 64, 96, 32);
	sc_test_path(dir, size, name);
	SC_ASSERT_OK(sc_modelgen_write(dir, mc, &o));
}

static void segments_hold_each_layer_in_its_format(void **state)
{
	enum { B = 2, T = 8 };
	sc_model_config mc;
	char dir[512];
	sc_weights *w = NULL;
	sc_backend *be = NULL;
	sc_segment *whole = NULL, *a = NULL, *b = NULL, *flt = NULL;
	sc_segment_bytes pf, pm;
	int32_t tokens[B * T];
	float y[B * T * 64], ya[B * T * 64], yb[B * T * 64], yf[B * T * 64];
	(void)state;

	small_model(&mc, dir, sizeof(dir), "lqmodel");
	SC_ASSERT_OK(sc_weights_open(&w, dir));
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	for (int i = 0; i < B * T; i++)
		tokens[i] = (i * 37 + 5) % 96;
	sc_segment_spec sp = { .model = mc,
			       .lora = { .rank = 2, .alpha = 4, .targets = SC_GPT2_ALL, .seed = 1 },
			       .first = 0,
			       .last = 2,
			       .B = B,
			       .T = T,
			       .slots = 1,
			       .kv_positions = T };
	SC_ASSERT_OK(sc_segment_predict(&sp, "cpu", &pf));
	SC_ASSERT_OK(sc_segment_new(&flt, be, &sp));
	SC_ASSERT_OK(sc_segment_load_weights(flt, w));
	SC_ASSERT_OK(sc_layer_quant_apply(&sp.model, "0:nf4,1:int8"));
	SC_ASSERT_OK(sc_segment_predict(&sp, "cpu", &pm));
	SC_ASSERT_OK(sc_segment_new(&whole, be, &sp));
	assert_int_equal(sc_segment_device_bytes(whole), pm.total);
	/* Each layer's projections (C 3C + C C + C 4C + 4C C floats) in its
	 * format: nf4 about 1/8 of fp32 (+ a scale per 64), int8 1/4 (+ a
	 * scale per channel); the rest stays. */
	size_t C = 64, proj = C * 3 * C + C * C + 2 * C * 4 * C;
	size_t want = pf.base - 2 * proj * 4 + (proj / 2 + proj / 64 * 4) + (proj + 13 * C * 4);
	if (pm.base > want + 4096 || pm.base + 4096 < want)
		fail_msg("base %zu bytes with layers 0 nf4, 1 int8; want about %zu (fp32: %zu)",
			 pm.base, want, pf.base);
	assert_true(pm.scratch > pf.scratch); /* gemm_q's tile */
	/* Mixed formats in one segment = a chain of one segment per layer. */
	SC_ASSERT_OK(sc_segment_load_weights(whole, w));
	SC_ASSERT_OK(sc_segment_infer(whole, 0, T, tokens, y));
	sp.last = 1;
	SC_ASSERT_OK(sc_segment_new(&a, be, &sp));
	SC_ASSERT_OK(sc_segment_load_weights(a, w));
	sp.first = 1;
	sp.last = 2;
	SC_ASSERT_OK(sc_segment_new(&b, be, &sp));
	SC_ASSERT_OK(sc_segment_load_weights(b, w));
	SC_ASSERT_OK(sc_segment_infer(a, 0, T, tokens, ya));
	SC_ASSERT_OK(sc_segment_infer(b, 0, T, ya, yb));
	assert_memory_equal(y, yb, sizeof(y));
	/* ... and not what the float layers compute. */
	SC_ASSERT_OK(sc_segment_infer(flt, 0, T, tokens, yf));
	assert_memory_not_equal(y, yf, sizeof(y));
	sc_segment_free(whole);
	sc_segment_free(a);
	sc_segment_free(b);
	sc_segment_free(flt);
	sc_backend_free(be);
	sc_weights_close(w);
}

/* Multiplies every 61st element of the tensor called name in the model
 * file at path by k: outliers that coarsen the quantization grid. */
static void add_outliers(const char *path, const char *name, float k)
{
	sc_st_file *f;
	SC_ASSERT_OK(sc_st_open(&f, path));
	const sc_st_tensor *t = sc_st_find(f, name);
	assert_non_null(t);
	assert_int_equal(t->dtype, SC_F32);
	size_t off = sc_st_file_offset(f, t), n = t->nbytes / 4;
	float *x = malloc(t->nbytes);
	memcpy(x, t->data, t->nbytes);
	sc_st_close(f);
	for (size_t i = 0; i < n; i += 61)
		x[i] *= k;
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, x, n * 4, (off_t)off), (ssize_t)(n * 4));
	close(fd);
	free(x);
}

static void calibration_finds_the_sensitive_layer(void **state)
{
	sc_model_config mc;
	char dir[512], path[600];
	static const char *const proj[] = { "attn.c_attn", "attn.c_proj", "mlp.c_fc",
					    "mlp.c_proj" };
	double e8[3], e4[3], again8[3], again4[3];
	sc_weights *w = NULL;
	sc_backend *be = NULL;
	(void)state;

	small_model(&mc, dir, sizeof(dir), "calibmodel");
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	for (int p = 0; p < 4; p++) {
		char name[128];
		snprintf(name, sizeof(name), "transformer.h.1.%s.weight", proj[p]);
		add_outliers(path, name, 40.0f);
	}
	SC_ASSERT_OK(sc_weights_open(&w, dir));
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	SC_ASSERT_OK(sc_calib_layer_errors(be, &mc, w, 2, 16, 18, e8, e4));
	for (int l = 0; l < 3; l++) {
		print_message("layer %d: relative output error int8 %.3g, nf4 %.3g\n", l, e8[l],
			      e4[l]);
		assert_true(e8[l] > 0 && e8[l] < e4[l] && e4[l] < 1);
	}
	assert_true(e8[1] > 2 * e8[0] && e8[1] > 2 * e8[2]);
	assert_true(e4[1] > 2 * e4[0] && e4[1] > 2 * e4[2]);
	/* The same batch gives the same figures. */
	SC_ASSERT_OK(sc_calib_layer_errors(be, &mc, w, 2, 16, 18, again8, again4));
	assert_memory_equal(e8, again8, sizeof(e8));
	assert_memory_equal(e4, again4, sizeof(e4));
	/* Bad input. */
	SC_ASSERT_ERR(sc_calib_layer_errors(be, &mc, w, 0, 16, 18, e8, e4), SC_EINVAL);
	SC_ASSERT_ERR(sc_calib_layer_errors(be, &mc, w, 2, 33, 18, e8, e4), SC_EINVAL);
	mc.quantized = 1;
	mc.quant_format = SC_QUANT_INT8;
	SC_ASSERT_ERR(sc_calib_layer_errors(be, &mc, w, 2, 16, 18, e8, e4), SC_EINVAL);
	assert_non_null(strstr(sc_err_detail(), "stored quantized (int8)"));
	sc_backend_free(be);
	sc_weights_close(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_good),
		cmocka_unit_test(parse_bad),
		cmocka_unit_test(apply_drops_the_base),
		cmocka_unit_test(segments_hold_each_layer_in_its_format),
		cmocka_unit_test(calibration_finds_the_sensitive_layer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
