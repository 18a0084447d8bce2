/* sc_qformat.h — the element arithmetic of the quantized weight formats,
 * shared by the file layer (common/format/sc_quant.h, which holds the
 * normative format text: quantize, check, dequantize) and the backends'
 * gemm_q (sc_backend.h's sc_qweight), so that both dequantize with the
 * same float operations: bf16 rounding, the NF4 codebook, a block's
 * absmax and the dequantization of a block of a stored weight. */
#ifndef SC_QFORMAT_H
#define SC_QFORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SC_NF4_BLOCK    64  /* elements per absmax */
#define SC_NF4_DQ_BLOCK 256 /* blocks per scales_scale (double quantization) */

/* The formats, numbered as sc_quant_format (defined from these) and
 * sc_backend.h's sc_qw_format (qgemm_cpu.c checks) number them. */
enum sc_qformat { SC_QF_INT8, SC_QF_NF4, SC_QF_BF16 };

/* f rounded to bfloat16: round to nearest, ties to even, on the low 16
 * bits, subnormals included (no flush to zero); infinities kept. A NaN
 * stays a quiet NaN (bit 6 of the result set) with its sign and high
 * payload, as x86's VCVTNEPS2BF16 leaves it (torch gives the one quiet NaN
 * 0x7fc0 for every NaN: also a quiet NaN). Branch-free, so that loops over
 * it vectorize. */
static inline uint16_t sc_bf16_from_f32(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	uint32_t r = (u + 0x7fffu + (u >> 16 & 1u)) >> 16;
	return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? u >> 16 | 0x40 : r);
}

/* The float a bfloat16 stands for (exact). */
static inline float sc_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* The NormalFloat4 codebook of Dettmers et al., "QLoRA: Efficient
 * Finetuning of Quantized LLMs" (NeurIPS 2023), appendix E, as bitsandbytes
 * stores it (float32), ascending: c[0] = -1, c[7] = 0, c[15] = 1. */
extern const float sc_nf4_codebook[16];

/* A stored (rows, cols) weight W in host memory, every pointer borrowed;
 * a part the format lacks may be NULL. */
typedef struct sc_qformat_weight {
	enum sc_qformat format;
	size_t rows, cols;
	int scale_rows;             /* int8: one scale per row (1) or per column (0) */
	const uint8_t *q;           /* bf16: little-endian pairs, any alignment */
	const float *scales;        /* int8: rows or cols; nf4: block absmax (nb) */
	const uint8_t *scales_q;    /* nf4: non-NULL under double quantization (nb) */
	const float *scales_scale;  /* nf4 double quantization: ceil(nb / 256) */
	const float *scales_offset; /* nf4 double quantization: 1 */
} sc_qformat_weight;

/* nf4 block b's absmax as dequantization uses it: scales[b], or under
 * double quantization (float)(int8)scales_q[b] * scales_scale[b / 256]
 * + *scales_offset. */
float sc_qformat_nf4_absmax(const sc_qformat_weight *w, size_t b);

/* out (r1 - r0, c1 - c0), rows ldo apart, = W[r0:r1, c0:c1] dequantized
 * (sc_quant.h's w'), reading only the parts those elements need. The
 * caller checks r0 <= r1 <= rows, c0 <= c1 <= cols. */
void sc_qformat_dequantize_block(const sc_qformat_weight *w, size_t r0, size_t r1, size_t c0,
				 size_t c1, float *out, size_t ldo);

#endif
