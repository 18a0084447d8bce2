/* bf16_dnnl.c — bf16 frozen-weight GEMMs through oneDNN's matmul (see
 * bf16_dnnl.h): the activation rounded to bf16 once per call into the
 * caller's scratch, the weight read in place in its stored layout (one
 * bf16 copy serves the forward's X W and the backward's dY W^T), fp32
 * accumulation and output, alpha as an output scale and beta as a sum
 * post-op. Primitives are made once per shape and thread count and kept in
 * a small list; their memory objects are reused with new data handles. */
#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf16_dnnl.h"

/* One cached primitive and the memory objects it runs on. */
typedef struct prim {
	struct prim *next;
	int m, n, k, trans_b, ldc, threads;
	float alpha, beta;
	dnnl_primitive_t p;
	dnnl_memory_t src, wei, dst;
} prim;

struct sc_cpu_dnnl {
	pthread_mutex_t mu; /* guards everything below and every execution */
	dnnl_engine_t eng;  /* NULL until the first call */
	dnnl_stream_t st;
	prim *prims;
};

static int isa_has_bf16(dnnl_cpu_isa_t isa)
{
	/* The ISA values are cumulative bit masks: avx512_core_bf16's bits
	 * are all set in every ISA above it (AMX included). */
	return ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
	       (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

int sc_cpu_dnnl_usable(void)
{
	return isa_has_bf16(dnnl_get_effective_cpu_isa());
}

int sc_cpu_dnnl_has_amx(void)
{
	unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
	return (isa & (unsigned)dnnl_cpu_isa_avx512_core_amx) ==
	       (unsigned)dnnl_cpu_isa_avx512_core_amx;
}

static const char *isa_name(dnnl_cpu_isa_t isa)
{
	switch (isa) {
	case dnnl_cpu_isa_sse41: return "sse41";
	case dnnl_cpu_isa_avx: return "avx";
	case dnnl_cpu_isa_avx2: return "avx2";
	case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
	case dnnl_cpu_isa_avx512_core: return "avx512_core";
	case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
	case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
	case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
	default: return "other";
	}
}

const char *sc_cpu_dnnl_describe(void)
{
	static _Thread_local char buf[128];
	const dnnl_version_t *v = dnnl_version();
	dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
	snprintf(buf, sizeof(buf), "oneDNN %d.%d.%d, %s%s", v->major, v->minor, v->patch,
		 isa_name(isa), isa_has_bf16(isa) ? "" : ": no bf16 instructions");
	return buf;
}

sc_err sc_cpu_dnnl_new(sc_cpu_dnnl **out)
{
	*out = NULL;
	if (!sc_cpu_dnnl_usable())
		return sc_errf(SC_ENOTSUP, "cpu: bf16 GEMMs through %s", sc_cpu_dnnl_describe());
	sc_cpu_dnnl *d = calloc(1, sizeof(*d));
	if (!d)
		return sc_errf(SC_ENOMEM, "cpu: out of memory for the oneDNN state");
	pthread_mutex_init(&d->mu, NULL);
	*out = d;
	return SC_OK;
}

static void prim_free(prim *p)
{
	dnnl_primitive_destroy(p->p);
	dnnl_memory_destroy(p->src);
	dnnl_memory_destroy(p->wei);
	dnnl_memory_destroy(p->dst);
	free(p);
}

void sc_cpu_dnnl_free(sc_cpu_dnnl *d)
{
	if (!d)
		return;
	for (prim *p = d->prims, *nx; p; p = nx) {
		nx = p->next;
		prim_free(p);
	}
	dnnl_stream_destroy(d->st);
	dnnl_engine_destroy(d->eng);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

#define DN(call)                                                                                   \
	do {                                                                                       \
		dnnl_status_t s_ = (call);                                                         \
		if (s_ != dnnl_success) {                                                          \
			rc = sc_errf(SC_EIO, "oneDNN: %s failed (status %d)", #call, (int)s_);     \
			goto fail;                                                                 \
		}                                                                                  \
	} while (0)

/* *out = the primitive for this shape: src (m,k) bf16 packed, weights
 * (k,n) bf16 read from W as stored (trans_b: W (n,k)), dst (m,n) fp32
 * rows ldc apart. Called with d->mu held. */
static sc_err make_prim(sc_cpu_dnnl *d, const prim *key, prim **out)
{
	dnnl_memory_desc_t src_md, wei_md, dst_md;
	dnnl_matmul_desc_t md;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_dims_t sd = { key->m, key->k }, wd = { key->k, key->n }, dd = { key->m, key->n };
	dnnl_dims_t ss = { key->k, 1 }, ds = { key->ldc, 1 };
	dnnl_dims_t ws = { key->trans_b ? 1 : key->n, key->trans_b ? key->k : 1 };
	sc_err rc = SC_OK;
	prim *p = calloc(1, sizeof(*p));
	if (!p)
		return sc_errf(SC_ENOMEM, "oneDNN: out of memory for a primitive");
	*p = *key;
	p->next = NULL;
	DN(dnnl_memory_desc_init_by_strides(&src_md, 2, sd, dnnl_bf16, ss));
	DN(dnnl_memory_desc_init_by_strides(&wei_md, 2, wd, dnnl_bf16, ws));
	DN(dnnl_memory_desc_init_by_strides(&dst_md, 2, dd, dnnl_f32, ds));
	DN(dnnl_matmul_desc_init(&md, &src_md, &wei_md, NULL, &dst_md));
	DN(dnnl_primitive_attr_create(&attr));
	if (key->alpha != 1.0f)
		DN(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha));
	if (key->beta != 0.0f) {
		DN(dnnl_post_ops_create(&po));
		DN(dnnl_post_ops_append_sum(po, key->beta));
		DN(dnnl_primitive_attr_set_post_ops(attr, po));
	}
	DN(dnnl_primitive_desc_create(&pd, &md, attr, d->eng, NULL));
	DN(dnnl_primitive_create(&p->p, pd));
	/* Memory objects with no data yet: each call sets its pointers. */
	DN(dnnl_memory_create(&p->src, &src_md, d->eng, DNNL_MEMORY_NONE));
	DN(dnnl_memory_create(&p->wei, &wei_md, d->eng, DNNL_MEMORY_NONE));
	DN(dnnl_memory_create(&p->dst, &dst_md, d->eng, DNNL_MEMORY_NONE));
	dnnl_primitive_desc_destroy(pd);
	dnnl_post_ops_destroy(po);
	dnnl_primitive_attr_destroy(attr);
	p->next = d->prims;
	d->prims = p;
	*out = p;
	return SC_OK;
fail:
	dnnl_primitive_desc_destroy(pd);
	dnnl_post_ops_destroy(po);
	dnnl_primitive_attr_destroy(attr);
	prim_free(p);
	return sc_err_wrap(rc, "bf16 matmul m=%d n=%d k=%d", key->m, key->n, key->k);
}

/* The cached primitive for key, made if need be. Called with d->mu held. */
static sc_err find_prim(sc_cpu_dnnl *d, const prim *key, prim **out)
{
	sc_err rc = SC_OK;
	if (!d->eng) {
		DN(dnnl_engine_create(&d->eng, dnnl_cpu, 0));
		DN(dnnl_stream_create(&d->st, d->eng, dnnl_stream_default_flags));
	}
	for (prim *p = d->prims; p; p = p->next)
		if (p->m == key->m && p->n == key->n && p->k == key->k &&
		    p->trans_b == key->trans_b && p->ldc == key->ldc &&
		    p->threads == key->threads && p->alpha == key->alpha && p->beta == key->beta) {
			*out = p;
			return SC_OK;
		}
	return make_prim(d, key, out);
fail:
	return rc;
}

/* Runs p on the given buffers. Called with d->mu held. */
static sc_err run_prim(sc_cpu_dnnl *d, prim *p, const uint16_t *src, const uint16_t *w, float *c)
{
	sc_err rc = SC_OK;
	DN(dnnl_memory_set_data_handle(p->src, (void *)src));
	DN(dnnl_memory_set_data_handle(p->wei, (void *)w));
	DN(dnnl_memory_set_data_handle(p->dst, c));
	dnnl_exec_arg_t args[3] = { { DNNL_ARG_SRC, p->src },
				    { DNNL_ARG_WEIGHTS, p->wei },
				    { DNNL_ARG_DST, p->dst } };
	DN(dnnl_primitive_execute(p->p, d->st, 3, args));
	DN(dnnl_stream_wait(d->st));
	return SC_OK;
fail:
	return rc;
}

sc_err sc_cpu_dnnl_gemm(sc_cpu_dnnl *d, int trans_a, int trans_b, int m, int n, int k, float alpha,
			const float *a, int lda, const uint16_t *w, float beta, float *c, int ldc,
			uint16_t *scratch, size_t scratch_elems)
{
	if (m < 0 || n < 0 || k < 1 || ldc < (n > 1 ? n : 1) || lda < (trans_a ? m : k))
		return sc_errf(SC_EINVAL, "bf16 gemm: bad shape m=%d n=%d k=%d lda=%d ldc=%d", m, n,
			       k, lda, ldc);
	if (!scratch || scratch_elems < (size_t)k)
		return sc_errf(SC_EINVAL, "bf16 gemm: %zu bf16 of scratch, fewer than k=%d",
			       scratch ? scratch_elems : 0, k);
	if (m == 0 || n == 0)
		return SC_OK;
	size_t rows_max = scratch_elems / (size_t)k;
	int mc = rows_max < (size_t)m ? (int)rows_max : m;
	sc_err rc = SC_OK;
	for (int m0 = 0; m0 < m && !rc; m0 += mc) {
		int rows = m - m0 < mc ? m - m0 : mc;
		const float *a0 = trans_a ? a + m0 : a + (size_t)m0 * lda;
		sc_cpu_bf16_round(scratch, a0, lda, trans_a, rows, k);
		rc = sc_cpu_dnnl_gemm_bf16(d, trans_b, rows, n, k, alpha, scratch, w, beta,
					   c + (size_t)m0 * ldc, ldc);
	}
	return rc;
}

sc_err sc_cpu_dnnl_gemm_bf16(sc_cpu_dnnl *d, int trans_b, int m, int n, int k, float alpha,
			     const uint16_t *a, const uint16_t *w, float beta, float *c, int ldc)
{
	if (m < 0 || n < 0 || k < 1 || ldc < (n > 1 ? n : 1))
		return sc_errf(SC_EINVAL, "bf16 gemm: bad shape m=%d n=%d k=%d ldc=%d", m, n, k,
			       ldc);
	if (m == 0 || n == 0)
		return SC_OK;
	prim key = { .m = m,
		     .n = n,
		     .k = k,
		     .trans_b = trans_b,
		     .ldc = ldc,
		     .threads = omp_get_max_threads(),
		     .alpha = alpha,
		     .beta = beta };
	prim *p;
	pthread_mutex_lock(&d->mu);
	sc_err rc = find_prim(d, &key, &p);
	if (!rc)
		rc = run_prim(d, p, a, w, c);
	pthread_mutex_unlock(&d->mu);
	return rc;
}
