/* cuda_bf16.h — the CUDA emulator's stand-in for CUDA's bfloat16 header (see
 * cuda_runtime.h): the type and the two conversions the backend uses.
 * __float2bfloat16_rn rounds to nearest, ties to even, as the GPU's
 * cvt.rn.bf16.f32 does; a NaN becomes the canonical quiet NaN 0x7fff. */
#ifndef SC_CUDA_EMU_BF16_H
#define SC_CUDA_EMU_BF16_H

#include <stdint.h>
#include <string.h>

struct __nv_bfloat16 {
	uint16_t x;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
	uint32_t u;
	__nv_bfloat16 h;
	memcpy(&u, &f, sizeof(u));
	if ((u & 0x7fffffffu) > 0x7f800000u)
		h.x = 0x7fff;
	else
		h.x = (uint16_t)((u + 0x7fffu + (u >> 16 & 1u)) >> 16);
	return h;
}

inline float __bfloat162float(__nv_bfloat16 h)
{
	uint32_t u = (uint32_t)h.x << 16;
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

#endif
