/* dequant_cpu.h — private to the CPU backend: int8 / nf4 / bf16 frozen
 * weights dequantized to bf16 for bf16 x bf16 products (sc_qweight's
 * bf16_compute): each element dequantized to fp32 with the float
 * operations of sc_qformat_dequantize_block (one multiply: codebook value
 * or int8 times its scale), then rounded to bf16 as sc_bf16_from_f32
 * rounds (to nearest, ties to even; NaN kept quiet). The AVX-512 kernel
 * (chosen at run time where the CPU and the OS have AVX-512F) and the
 * scalar one give the same bits. */
#ifndef SC_DEQUANT_CPU_H
#define SC_DEQUANT_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "sc_qformat.h"

enum sc_cpu_dq_kind {
	SC_CPU_DQ_AUTO,   /* AVX-512 where the CPU has it, else scalar */
	SC_CPU_DQ_SCALAR, /* plain C, every CPU */
};

/* out (r1 - r0, c1 - c0) bf16, rows ldo apart, = bf16(W[r0:r1, c0:c1]),
 * reading only the parts of w those elements need; on the calling thread.
 * The caller checks r0 <= r1 <= rows, c0 <= c1 <= cols. Borrows w. */
void sc_cpu_dequant_bf16(const sc_qformat_weight *w, size_t r0, size_t r1, size_t c0, size_t c1,
			 uint16_t *out, size_t ldo, enum sc_cpu_dq_kind kind);

/* "avx512" or "scalar": what SC_CPU_DQ_AUTO runs on this CPU. Static. */
const char *sc_cpu_dequant_bf16_kind(void);

#endif
