/* cuda_absent.c — the CUDA entry points of a build without the CUDA toolkit. */
#include "sc_backend.h"

sc_err sc_backend_cuda_open(sc_backend **out, int device)
{
	*out = NULL;
	return sc_errf(SC_ENODEV,
		       "cuda:%d requested, but this build has no CUDA backend "
		       "(rebuild with the CUDA toolkit installed)",
		       device);
}

int sc_backend_has_cuda(void)
{
	return 0;
}
