/* gemv_test.c — the CPU backend's one-row products (common/backend/cpu/
 * gemv_cpu.c): gemm with m == 1, through the backend's operation table,
 * against a double-precision reference and against the same row computed
 * by the m > 1 path (OpenBLAS), on every kernel this CPU can run. Odd sizes
 * (tails of every vector width), padded leading dimensions (padding NaN, so
 * reading it shows), a^T's strided column, beta 0 over NaN, beta 1 and
 * other alphas and betas; sizes on both sides of the split over threads and
 * of the in_out column block. Results must be bit-identical at 1 and 2
 * threads. Then attention over a key/value cache, which runs on the same
 * kernels, against a double-precision reference.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/gemv_cpu.h"
#include "sc_backend.h"
#include "testutil.h"

typedef struct gemv_case {
	const char *name;
	int ta, tb, n, k;
	int apad, bpad; /* lda = (ta ? 1 : k) + apad; ldb = row length + bpad */
	float alpha, beta;
} gemv_case;

static const gemv_case cases[] = {
	{ "linear tiny", 0, 1, 1, 1, 0, 0, 1.0f, 0.0f },
	{ "linear tails", 0, 1, 37, 19, 0, 3, 1.0f, 0.0f },
	{ "linear k 63 beta 1", 0, 1, 29, 63, 0, 1, 0.5f, 1.0f },
	{ "linear k 129", 0, 1, 45, 129, 5, 7, -1.25f, 0.75f },
	{ "linear split", 0, 1, 301, 517, 0, 3, 1.0f, 0.0f },
	{ "linear split beta 1", 0, 1, 1001, 83, 0, 0, 0.25f, 1.0f },
	{ "linear a^T", 1, 1, 53, 71, 2, 1, 1.0f, 0.0f },
	{ "conv1d tiny", 0, 0, 1, 1, 0, 0, 1.0f, 0.0f },
	{ "conv1d tails", 0, 0, 37, 19, 0, 3, 1.0f, 0.0f },
	{ "conv1d k < split", 0, 0, 10000, 7, 0, 1, 1.0f, 1.0f },
	{ "conv1d beta 1", 0, 0, 129, 63, 0, 5, -0.5f, 1.0f },
	{ "conv1d split", 0, 0, 517, 301, 0, 3, 1.0f, 0.0f },
	{ "conv1d split wide", 0, 0, 4133, 67, 0, 9, 0.75f, -0.5f },
	{ "conv1d serial wide", 0, 0, 4211, 9, 0, 2, 1.0f, 0.0f },
	{ "conv1d a^T", 1, 0, 71, 53, 4, 0, 1.0f, 1.0f },
	{ "k 0 keeps beta c", 0, 1, 17, 0, 1, 1, 1.0f, 0.5f },
	{ "alpha 0 reads no b", 0, 1, 33, 21, 0, 0, 0.0f, 0.5f },
	{ "alpha 0 conv1d", 0, 0, 33, 21, 0, 0, 0.0f, 0.0f },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static float *alloc_floats(size_t n)
{
	float *p = malloc((n ? n : 1) * sizeof(float));
	assert_non_null(p);
	return p;
}

/* A case's operands, padding NaN; c0 the initial c (NaN when beta is 0). */
typedef struct operands {
	int lda, ldb, arows, brows, bcols;
	float *a, *b, *c0;
	double *want, *bound; /* the exact result, and a rounding bound on it */
} operands;

static void operands_init(operands *o, const gemv_case *t, uint64_t seed)
{
	int acols = t->ta ? 1 : t->k;
	o->arows = t->ta ? t->k : 1;
	o->lda = acols + t->apad;
	o->brows = t->tb ? t->n : t->k;
	o->bcols = t->tb ? t->k : t->n;
	o->ldb = o->bcols + t->bpad;
	o->a = alloc_floats((size_t)o->arows * o->lda);
	o->b = alloc_floats((size_t)o->brows * o->ldb);
	o->c0 = alloc_floats((size_t)t->n);
	sc_test_fill_normal(o->a, (size_t)o->arows * o->lda, seed, 1.0f);
	sc_test_fill_normal(o->b, (size_t)o->brows * o->ldb, seed + 1, 1.0f);
	sc_test_fill_normal(o->c0, (size_t)t->n, seed + 2, 1.0f);
	for (int i = 0; i < o->arows; i++)
		for (int j = acols; j < o->lda; j++)
			o->a[(size_t)i * o->lda + j] = NAN;
	for (int i = 0; i < o->brows; i++)
		for (int j = o->bcols; j < o->ldb; j++)
			o->b[(size_t)i * o->ldb + j] = NAN;
	if (t->beta == 0.0f)
		for (int j = 0; j < t->n; j++)
			o->c0[j] = NAN;
	if (t->alpha == 0.0f && t->k > 0)
		o->b[0] = INFINITY; /* alpha 0: b must not be read */
	o->want = malloc((size_t)t->n * sizeof(double));
	o->bound = malloc((size_t)t->n * sizeof(double));
	assert_non_null(o->want);
	assert_non_null(o->bound);
	/* |error| <= (k + 2) u (|alpha| sum |a b| + |beta c|), u = 2^-24: the
	 * textbook bound for a sum of k products in any order, plus the scaling. */
	for (int j = 0; j < t->n; j++) {
		double s = 0.0, sa = 0.0;
		for (int p = 0; p < t->k && t->alpha != 0.0f; p++) {
			double av = t->ta ? o->a[(size_t)p * o->lda] : o->a[p];
			double bv =
			    t->tb ? o->b[(size_t)j * o->ldb + p] : o->b[(size_t)p * o->ldb + j];
			s += av * bv;
			sa += fabs(av * bv);
		}
		double c = t->beta == 0.0f ? 0.0 : (double)t->beta * o->c0[j];
		o->want[j] = t->alpha * s + c;
		o->bound[j] =
		    (t->k + 2) * (FLT_EPSILON / 2) * (fabs(t->alpha) * sa + fabs(c)) + 1e-30;
	}
}

static void operands_free(operands *o)
{
	free(o->a);
	free(o->b);
	free(o->c0);
	free(o->want);
	free(o->bound);
}

/* c (n) after gemm with m == 1 on be; new, free with free(). */
static float *run_row(sc_backend *be, const gemv_case *t, const operands *o)
{
	float *c = alloc_floats((size_t)t->n);
	memcpy(c, o->c0, (size_t)t->n * sizeof(float));
	SC_ASSERT_OK(be->ops->gemm(be, t->ta, t->tb, 1, t->n, t->k, t->alpha, o->a, o->lda, o->b,
				   o->ldb, t->beta, c, t->n));
	return c;
}

/* The same row as row 0 of an m = 2 gemm (OpenBLAS's sgemm); new. */
static float *run_two_rows(sc_backend *be, const gemv_case *t, const operands *o)
{
	/* a with a second row (a^T: a second column) of zeros */
	int lda2 = t->ta ? 2 : o->lda, arows2 = t->ta ? t->k : 2;
	float *a2 = calloc((size_t)arows2 * lda2 + 1, sizeof(float));
	float *c2 = alloc_floats(2 * (size_t)t->n);
	assert_non_null(a2);
	for (int p = 0; p < t->k; p++) {
		if (t->ta)
			a2[(size_t)p * lda2] = o->a[(size_t)p * o->lda];
		else
			a2[p] = o->a[p];
	}
	memcpy(c2, o->c0, (size_t)t->n * sizeof(float));
	memcpy(c2 + t->n, o->c0, (size_t)t->n * sizeof(float));
	SC_ASSERT_OK(be->ops->gemm(be, t->ta, t->tb, 2, t->n, t->k, t->alpha, a2, lda2, o->b,
				   o->ldb, t->beta, c2, t->n));
	free(a2);
	return c2;
}

static void expect_within(const char *what, const gemv_case *t, const char *kind, const float *got,
			  const operands *o)
{
	for (int j = 0; j < t->n; j++) {
		double err = fabs(got[j] - o->want[j]);
		if (!(err <= o->bound[j]))
			fail_msg("%s, %s (%s kernel): c[%d] = %.9g, want %.9g (bound %.3g)",
				 t->name, what, kind, j, (double)got[j], o->want[j], o->bound[j]);
	}
}

/* Every case on every kernel this CPU has, at 1 and 2 threads. */
static void gemm_one_row(void **state)
{
	sc_backend *be1 = NULL, *be2 = NULL;
	SC_ASSERT_OK(sc_backend_cpu_open(&be1, 1));
	SC_ASSERT_OK(sc_backend_cpu_open(&be2, 2));
	int ran = 0;
	for (int kind = SC_CPU_GEMV_C; kind < SC_CPU_GEMV_KINDS; kind++) {
		if (!sc_cpu_gemv_supported((sc_cpu_gemv_kind)kind)) {
			SC_ASSERT_ERR(sc_cpu_gemv_force((sc_cpu_gemv_kind)kind), SC_ENOTSUP);
			print_message("gemv: no %s kernel on this CPU\n",
				      sc_cpu_gemv_name((sc_cpu_gemv_kind)kind));
			continue;
		}
		SC_ASSERT_OK(sc_cpu_gemv_force((sc_cpu_gemv_kind)kind));
		assert_int_equal(sc_cpu_gemv_kind_now(), kind);
		const char *name = sc_cpu_gemv_name((sc_cpu_gemv_kind)kind);
		for (size_t ci = 0; ci < NCASES; ci++) {
			const gemv_case *t = &cases[ci];
			operands o;
			operands_init(&o, t, 100 + 10 * ci);
			float *c1 = run_row(be1, t, &o), *c2 = run_row(be2, t, &o);
			float *two = run_two_rows(be2, t, &o);
			expect_within("m = 1", t, name, c1, &o);
			/* OpenBLAS's small-matrix sgemm reads b even at alpha 0 */
			if (t->alpha != 0.0f)
				expect_within("m = 2, row 0", t, name, two, &o);
			if (memcmp(c1, c2, (size_t)t->n * sizeof(float)) != 0)
				fail_msg("%s (%s kernel): 1 and 2 threads differ", t->name, name);
			free(c1);
			free(c2);
			free(two);
			operands_free(&o);
		}
		ran++;
	}
	SC_ASSERT_OK(sc_cpu_gemv_force(SC_CPU_GEMV_AUTO));
	assert_true(ran >= 1);
	sc_backend_free(be1);
	sc_backend_free(be2);
}

/* Shapes gemm must still refuse with m == 1, and a kernel that is no kernel. */
static void gemm_one_row_rejects(void **state)
{
	sc_backend *be = NULL;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 1));
	float a[8] = { 0 }, b[64] = { 0 }, c[8] = { 0 };
	SC_ASSERT_ERR(be->ops->gemm(be, 0, 1, 1, 4, 8, 1.0f, a, 8, b, 7, 0.0f, c, 4), SC_EINVAL);
	SC_ASSERT_ERR(be->ops->gemm(be, 0, 0, 1, 8, 4, 1.0f, a, 4, b, 7, 0.0f, c, 8), SC_EINVAL);
	SC_ASSERT_ERR(be->ops->gemm(be, 1, 0, 1, 8, 4, 1.0f, a, 0, b, 8, 0.0f, c, 8), SC_EINVAL);
	SC_ASSERT_ERR(sc_cpu_gemv_force(SC_CPU_GEMV_KINDS), SC_EINVAL);
	SC_ASSERT_ERR(sc_cpu_gemv(1, 4, 8, 1.0f, b, 7, a, 0.0f, c), SC_EINVAL);
	sc_backend_free(be);
}

/* attention_kv for one new position after pos0 cached ones, every kernel:
 * out = softmax(q k^T / sqrt(hs)) v per head against a double reference. */
static void attention_kv_decode(void **state)
{
	const sc_attn_shape shapes[] = {
		{ .B = 1, .T = 1, .NH = 9, .NKV = 3, .hs = 64, .window = 0 },
		{ .B = 2, .T = 1, .NH = 4, .NKV = 4, .hs = 24, .window = 0 },
		{ .B = 1, .T = 3, .NH = 6, .NKV = 2, .hs = 40, .window = 50 },
	};
	const int pos0s[] = { 200, 37, 121 };
	sc_backend *be = NULL;
	SC_ASSERT_OK(sc_backend_cpu_open(&be, 2));
	for (int kind = SC_CPU_GEMV_C; kind < SC_CPU_GEMV_KINDS; kind++) {
		if (!sc_cpu_gemv_supported((sc_cpu_gemv_kind)kind))
			continue;
		SC_ASSERT_OK(sc_cpu_gemv_force((sc_cpu_gemv_kind)kind));
		for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
			const sc_attn_shape *s = &shapes[si];
			int pos0 = pos0s[si], n = s->T, P = pos0 + n + 5, hs = s->hs;
			int ld = (s->NH + 2 * s->NKV) * hs, ldc = s->NKV * hs, ldo = s->NH * hs;
			size_t nq = (size_t)s->B * n * ld, nc = (size_t)s->B * P * ldc;
			float *qkv = alloc_floats(nq), *kc = alloc_floats(nc),
			      *vc = alloc_floats(nc);
			float *out = alloc_floats((size_t)s->B * n * ldo);
			sc_test_fill_normal(qkv, nq, 500 + si, 1.0f);
			sc_test_fill_normal(kc, nc, 600 + si, 1.0f);
			sc_test_fill_normal(vc, nc, 700 + si, 1.0f);
			SC_ASSERT_OK(be->ops->attention_kv(be, out, kc, vc, qkv, pos0, P, s));
			double *p = malloc((size_t)P * sizeof(double));
			assert_non_null(p);
			double scale = 1.0 / sqrt((double)hs);
			for (int b = 0; b < s->B; b++)
				for (int i = 0; i < n; i++)
					for (int h = 0; h < s->NH; h++) {
						int t = pos0 + i, g = h / (s->NH / s->NKV);
						int lo = s->window && t - s->window + 1 > 0
							     ? t - s->window + 1
							     : 0;
						const float *q =
						    qkv + ((size_t)b * n + i) * ld + h * hs;
						const float *kb = kc + (size_t)b * P * ldc + g * hs;
						const float *vb = vc + (size_t)b * P * ldc + g * hs;
						double mx = -INFINITY, sum = 0.0;
						for (int j = lo; j <= t; j++) {
							double d = 0.0;
							for (int e = 0; e < hs; e++)
								d += (double)q[e] *
								     kb[(size_t)j * ldc + e];
							p[j] = d * scale;
							mx = p[j] > mx ? p[j] : mx;
						}
						for (int j = lo; j <= t; j++)
							sum += p[j] = exp(p[j] - mx);
						const float *o =
						    out + ((size_t)b * n + i) * ldo + h * hs;
						for (int e = 0; e < hs; e++) {
							double want = 0.0;
							for (int j = lo; j <= t; j++)
								want += p[j] / sum *
									vb[(size_t)j * ldc + e];
							if (!(fabs(o[e] - want) <= 1e-5))
								fail_msg(
								    "attention_kv shape %zu (%s): "
								    "b %d row %d head %d [%d] = "
								    "%.9g, want %.9g",
								    si,
								    sc_cpu_gemv_name(
									(sc_cpu_gemv_kind)kind),
								    b, i, h, e, (double)o[e], want);
						}
					}
			free(p);
			free(qkv);
			free(kc);
			free(vc);
			free(out);
		}
	}
	SC_ASSERT_OK(sc_cpu_gemv_force(SC_CPU_GEMV_AUTO));
	sc_backend_free(be);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(gemm_one_row),
		cmocka_unit_test(gemm_one_row_rejects),
		cmocka_unit_test(attention_kv_decode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
