/* sc_quant.h — quantized frozen base weights: int8 with one scale per output
 * channel, NF4 (QLoRA's 4-bit NormalFloat) with one absmax per block of
 * 64 and optional double quantization of those absmax, and bf16 (the
 * weight rounded to bfloat16, no scales). A weight is a
 * row-major (rows, cols) float32 matrix as its file stores it; `row_major_out`
 * says which axis holds the output channels: 1 for nn.Linear (out, in) (the
 * Llama family), 0 for Conv1D (in, out) (GPT-2).
 *
 * Formats (normative). n = rows * cols; "rne" = round to nearest, ties to
 * even; every float operation is one IEEE binary32 operation, in the order
 * written (no FMA contraction: build with -ffp-contract=off, the default of
 * GCC's -std=c11; never with -ffast-math).
 *
 * int8_channel ("int8"): out = row_major_out ? rows : cols channels.
 *   scales  out float32: s_o = absmax_o / 127 (absmax_o = max |w| over
 *           channel o), lowered by an ulp while 127 * s_o overflows.
 *   qweight n int8 (two's complement bytes) in the weight's own layout and
 *           shape: q = s_o > 0 ? clamp(rne(w / s_o), -127, 127) : 0.
 *   w' = (float)q * s_o.
 *
 * nf4: blocks of SC_NF4_BLOCK = 64 consecutive elements of the row-major
 *   storage order (blocks run across rows); the last block is short when n
 *   is not a multiple of 64: nb = ceil(n / 64) blocks.
 *   absmax  nb float32: a_b = max |w| over block b.
 *   indices x = w * inv_b with inv_b = 1.0f / a_b (rounded first, as
 *           bitsandbytes' kQuantizeBlockwise does); the index is the number
 *           of thresholds t_i < x, t_i = (c_i + c_{i+1}) * 0.5f (i = 0..14,
 *           float32, the midpoints of the codebook c,
 *           sc_nf4_codebook in sc_qformat.h): the nearest
 *           codebook value, a tie (x == t_i) going to the LOWER one, as
 *           bitsandbytes' dQuantizeNF4 decision tree does. A block with
 *           a_b = 0, or so small that inv_b overflows (a_b about 2^-128 or
 *           less), gets index 7 (0.0) for every element.
 *   qweight ceil(n / 2) bytes: byte k = idx[2k] << 4 | idx[2k + 1] — the
 *           first element in the HIGH nibble, as bitsandbytes packs; with n
 *           odd the last byte's low nibble is 0.
 *   w' = c[idx] * a_b (a_b replaced by a'_b under double quantization).
 *   Without double quantization the file holds the a_b as `scales`.
 *   Double quantization (QLoRA §3, with linear int8 in place of the
 *   paper's 8-bit float): offset = (float)(S / nb), S the sum of the a_b in
 *   double, added in block order (S / nb in double); r_b = a_b - offset;
 *   groups of SC_NF4_DQ_BLOCK = 256 consecutive blocks (the last group
 *   short: ng = ceil(nb / 256)), each with g_j = max |r_b| / 127 over the
 *   group (lowered by an ulp while 127 * g_j overflows) and
 *   scales_q_b = g_j > 0 ? clamp(rne(r_b / g_j), -127, 127) : 0 (int8);
 *   a'_b = (float)scales_q_b * g_j, then + offset. The indices are chosen
 *   with the exact a_b (as QLoRA does); only w' uses a'_b.
 * bf16: qweight n little-endian uint16 in the weight's own layout and
 *   shape: the high half of w's binary32 after rounding to nearest, ties
 *   to even, on the 16 bits dropped (sc_bf16_from_f32: what torch's
 *   .to(torch.bfloat16) gives for every finite or infinite w). w' = the
 *   bf16 widened (exact). A finite weight that
 *   rounds to infinity (|w| >= 0x1.ffp127) is refused like a non-finite one.
 * Non-finite weights are refused (SC_EINVAL). The functions keep no state:
 * any thread may call them, on distinct output buffers.
 *
 * Tensors of a quantized model file (`splitchain quantize`), for a weight
 * "P.weight" of module P (its name minus ".weight"):
 *   P.qweight       int8: U8 (the int8 bytes), the weight's shape
 *                   nf4:  U8, [ceil(n / 2)]
 *   P.scales        F32 [out] (int8) or [nb] (nf4 without double quant)
 *   P.scales_q      U8 [nb] (int8 bytes)        nf4 with double quant
 *   P.scales_scale  F32 [ng]                    nf4 with double quant
 *   P.scales_offset F32 [1]                     nf4 with double quant
 *   P.shape         I64 [2] = (rows, cols)      nf4 (the packed form has no
 *                                               shape of its own)
 *   P.weight        bf16: BF16, the weight's shape, under the weight's own
 *                   name, so that a Hugging Face checkpoint stored in
 *                   bfloat16 already is a bf16 model (its config.json
 *                   needs no quantization_config: a job asks for bf16)
 * U8 carries the int8 values because the safetensors layer reads no I8.
 * Every other tensor is the input's, unchanged. config.json is the input's
 * plus "quantization_config": {"quant_method": "splitchain", "bits": 8 | 4 |
 * 16, "format": "int8_channel" | "nf4" | "bf16", "block_size": 64 (nf4 only),
 * "double_quant": bool, "double_quant_block_size": 256 (with it),
 * "weight_layout": "out_in" | "in_out", "modules": [the family's
 * projections below a layer, e.g. "self_attn.q_proj"]}.
 */
#ifndef SC_QUANT_H
#define SC_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sc_err.h"
#include "sc_qformat.h"

enum sc_quant_format {
	SC_QUANT_INT8 = SC_QF_INT8,
	SC_QUANT_NF4 = SC_QF_NF4,
	SC_QUANT_BF16 = SC_QF_BF16,
	SC_QUANT_COUNT
};

/* sc_bf16_from_f32 / sc_bf16_to_f32 (bf16 above), SC_NF4_BLOCK,
 * SC_NF4_DQ_BLOCK and sc_nf4_codebook (c above) come from sc_qformat.h. */

/* What is quantized. */
typedef struct sc_quant_spec {
	enum sc_quant_format format;
	size_t rows, cols; /* the weight as stored, row-major */
	int row_major_out; /* 1: rows are the output channels (out, in); 0: columns (in, out) */
	int double_quant;  /* nf4 only: quantize the block absmax too */
} sc_quant_spec;

/* Element counts of the parts (0 for a part the format lacks). */
typedef struct sc_quant_sizes {
	size_t qweight;       /* bytes: n (int8), ceil(n / 2) (nf4), 2n (bf16) */
	size_t scales;        /* floats: out (int8), nb (nf4 without double quant) */
	size_t scales_q;      /* bytes: nb (nf4 with double quant) */
	size_t scales_scale;  /* floats: ng (nf4 with double quant) */
	size_t scales_offset; /* floats: 1 (nf4 with double quant) */
	size_t blocks;        /* nb (nf4), 0 (int8) */
} sc_quant_sizes;

/* The parts of a quantized weight, as quantize writes them. */
typedef struct sc_quant_out {
	uint8_t *qweight;
	float *scales;
	uint8_t *scales_q;
	float *scales_scale;
	float *scales_offset;
} sc_quant_out;

/* The same parts, read only (e.g. into a safetensors mapping; floats
 * 4-byte aligned). Parts the format lacks may be NULL. */
typedef struct sc_quant_view {
	const uint8_t *qweight;
	const float *scales;
	const uint8_t *scales_q;
	const float *scales_scale;
	const float *scales_offset;
} sc_quant_view;

/* "int8", "nf4" or "bf16" (the command line's names); "?" outside the enum. */
const char *sc_quant_name(enum sc_quant_format f);
/* "int8_channel", "nf4" or "bf16" (config.json's quantization_config.format). */
const char *sc_quant_format_name(enum sc_quant_format f);
/* *out = the format called name ("int8", "nf4" or "bf16"); SC_EINVAL naming
 * them for anything else (NULL included). */
sc_err sc_quant_parse(const char *name, enum sc_quant_format *out);

/* *out = the sizes of s's parts. SC_EINVAL, naming the problem, for a
 * format outside the enum, rows or cols 0, double_quant but for nf4, or a
 * size that overflows size_t. */
sc_err sc_quant_size(const sc_quant_spec *s, sc_quant_sizes *out);

/* Quantizes w (rows * cols floats, borrowed) into the parts of *q (caller's
 * buffers, sized by sc_quant_size; parts the format lacks are not touched).
 * SC_EINVAL for a bad spec (as sc_quant_size) or a non-finite weight (its
 * row and column named); SC_ENOMEM (double quantization's nb floats of
 * scratch). On error the parts may be partly written. */
sc_err sc_quant_quantize(const sc_quant_spec *s, const float *w, const sc_quant_out *q);

/* Checks the parts of a quantized weight that came from outside (a file):
 * every scale finite and >= 0 (int8 scales and scales_scale also with
 * 127 * scale finite), the offset finite, every a'_b finite; no int8 -128;
 * an odd n's padding nibble 0; every bf16 finite (qweight read bytewise,
 * at any alignment). SC_EFORMAT naming the part and position. A
 * view that passes dequantizes to finite values. */
sc_err sc_quant_check(const sc_quant_spec *s, const sc_quant_view *q);

/* out ((r1 - r0) * cols floats) = rows [r0, r1) of the dequantized weight,
 * touching only the parts those rows need (what a GEMM path calls per
 * tile). SC_EINVAL for a bad spec, SC_ERANGE unless r0 <= r1 <= rows. */
sc_err sc_quant_dequantize_rows(const sc_quant_spec *s, const sc_quant_view *q, size_t r0,
				size_t r1, float *out);

/* out (rows * cols floats) = the whole dequantized weight. */
sc_err sc_quant_dequantize(const sc_quant_spec *s, const sc_quant_view *q, float *out);

/* *rel = ||W x - W' x|| / ||W x|| over a batch x (n_x, in) row-major (in =
 * cols for row_major_out, else rows), Frobenius norms, accumulated in
 * double; W = w (borrowed), W' the dequantized q, taken a tile of rows at a
 * time. 0 when both norms are 0, +inf when only ||W x|| is. SC_ENOMEM, or
 * the errors of sc_quant_dequantize_rows. */
sc_err sc_quant_rel_error(const sc_quant_spec *s, const float *w, const sc_quant_view *q,
			  const float *x, size_t n_x, double *rel);

#endif
