/* bf16_dnnl_absent.c — bf16_dnnl.h in a build without oneDNN: bf16 frozen
 * weights always take qgemm_cpu.c's fp32-tile path. */
#include "bf16_dnnl.h"

int sc_cpu_dnnl_usable(void)
{
	return 0;
}

int sc_cpu_dnnl_has_amx(void)
{
	return 0;
}

const char *sc_cpu_dnnl_describe(void)
{
	return "built without oneDNN";
}

sc_err sc_cpu_dnnl_new(sc_cpu_dnnl **out)
{
	*out = NULL;
	return sc_errf(SC_ENOTSUP, "cpu: bf16 GEMMs through oneDNN: this build has no oneDNN "
				   "(install libdnnl-dev and rebuild)");
}

void sc_cpu_dnnl_free(sc_cpu_dnnl *d)
{
}

sc_err sc_cpu_dnnl_gemm(sc_cpu_dnnl *d, int trans_a, int trans_b, int m, int n, int k, float alpha,
			const float *a, int lda, const uint16_t *w, float beta, float *c, int ldc,
			uint16_t *scratch, size_t scratch_elems)
{
	return sc_errf(SC_ENOTSUP, "cpu: this build has no oneDNN");
}

sc_err sc_cpu_dnnl_gemm_bf16(sc_cpu_dnnl *d, int trans_b, int m, int n, int k, float alpha,
			     const uint16_t *a, const uint16_t *w, float beta, float *c, int ldc)
{
	return sc_errf(SC_ENOTSUP, "cpu: this build has no oneDNN");
}
