/* sc_codec.h — the wire codecs: how an activation (forward) or gradient
 * (backward) of (rows, cols) float32 values — rows = B*T tokens, cols = C
 * channels — crosses a hop in the encoding its job chose. The data plane
 * encodes and decodes its payloads with these functions and the in-process
 * trainer calls sc_wire_roundtrip at each stage boundary, so a chain of
 * workers computes bit for bit what one process does.
 *
 * Wire format (normative). Little-endian; a frame is exactly
 * sc_wire_bytes(w, rows, cols) bytes; values row-major.
 *   fp32  rows*cols IEEE binary32 values.
 *   bf16  rows*cols 16-bit values: the upper 16 bits of the binary32 value,
 *         rounded to nearest, ties to even; inf stays inf, a NaN is sent as
 *         a quiet NaN of the same sign.
 *   fp16  rows*cols IEEE binary16 values, rounded to nearest, ties to even:
 *         magnitudes from 65520 up become inf, subnormals are kept, a NaN
 *         is sent as a quiet NaN of the same sign.
 *   int8  rows binary32 scales s[r], then rows*cols int8 values q in
 *         [-127, 127]; x = q * s[r].
 *   int4  rows binary32 scales s[r], then per row (cols + 1) / 2 bytes:
 *         element 2j in the low nibble, 2j+1 in the high nibble, each a two's
 *         complement 4-bit q in [-7, 7]; with odd cols the row's last high
 *         nibble is 0. x = q * s[r].
 *   With qmax = 127 (int8) or 7 (int4), an int frame is valid when every
 *   scale is >= 0 and qmax * s is finite, no value is -128 (int8) or -8
 *   (int4), and every padding nibble is 0. A valid frame decodes to finite
 *   values; fp32 / bf16 / fp16 frames are always valid (NaN and inf are
 *   carried as values).
 *
 * What the encoder sends (a decoder needs none of this):
 *   v = x + residual (x alone when residual is NULL).
 *   fp32, bf16, fp16: v converted as above.
 *   int8, int4: a non-finite v counts as 0, in its row's scale and as its
 *   own value. s[r] = absmax_r / qmax (absmax_r = max |v| over the row),
 *   lowered by an ulp if qmax * s[r] would overflow; a row whose s[r] would
 *   fall below FLT_MIN (all zeros, or all below ~1e-36) is sent as scale 0
 *   and zeros. With y = v * (1 / s[r]): q = y rounded to nearest, ties to
 *   even (rng NULL), or floor(y + u) with u from sc_rng_uniform_fill(rng),
 *   one call per run of up to 256 elements of a row (row-major order, zeros
 *   and scale-0 rows included; a run of n takes ceil(n / 2) 64-bit draws)
 *   (stochastic rounding: E[q * s] = v up to 2^-24 of a step); then q is
 *   clamped to [-qmax, qmax]. The float formats draw nothing from rng.
 *   Error feedback: residual becomes v - decode(encode(v)) element by
 *   element, or 0 where that is not finite (a NaN, an inf, an fp16
 *   overflow is dropped, not carried on), so what rounding lost this time
 *   is sent next time.
 * Results depend on nothing but the inputs: no threads, no state, the same
 * bits at any optimisation level on every machine with IEEE binary32
 * arithmetic, as long as a * b + c is not contracted into an FMA across
 * statements (GCC's default under the build's -std=c11; never build codec.c
 * with -ffast-math or -ffp-contract=fast).
 */
#ifndef SC_CODEC_H
#define SC_CODEC_H

#include <stddef.h>

#include "sc_err.h"
#include "sc_rng.h"

enum sc_wire {
	SC_WIRE_FP32,
	SC_WIRE_BF16,
	SC_WIRE_FP16,
	SC_WIRE_INT8,
	SC_WIRE_INT4,
	SC_WIRE_COUNT
};

/* "fp32", "bf16", "fp16", "int8" or "int4"; "?" for a value outside the
 * enum. Static string. */
const char *sc_wire_name(enum sc_wire w);

/* *out = the encoding named name (exactly as sc_wire_name spells it).
 * SC_EINVAL naming the choices for any other name or NULL. */
sc_err sc_wire_parse(const char *name, enum sc_wire *out);

/* Bytes of the encoded form of a (rows, cols) float32 tensor; SIZE_MAX when
 * w is outside the enum or the tensor or its frame would not fit in memory
 * (rows * cols * sizeof(float) overflows size_t, or the frame size does). */
size_t sc_wire_bytes(enum sc_wire w, size_t rows, size_t cols);

/* Encodes x (rows, cols; borrowed, unchanged) into out (sc_wire_bytes(w,
 * rows, cols) bytes, any alignment, not overlapping x or residual).
 * residual (rows * cols floats, may be NULL): error feedback, updated in
 * place as described above. rng (may be NULL): stochastic rounding for int8
 * and int4, advanced by rows * ceil of each run's length / 2 draws (above); NULL rounds to nearest. w must be
 * a valid encoding and the shape one sc_wire_bytes sizes (a bug otherwise:
 * aborts). Cannot fail. */
void sc_wire_encode(enum sc_wire w, const float *x, size_t rows, size_t cols, float *residual,
		    sc_rng *rng, void *out);

/* Decodes the frame in (len bytes, any alignment; borrowed) into x (rows,
 * cols). Reads nothing outside in[0, len). SC_EINVAL for a w outside the
 * enum; SC_EFORMAT, naming what is wrong, when the shape is too large, len
 * is not sc_wire_bytes(w, rows, cols) or the frame is not valid (a scale
 * negative, not finite or too large; an int8 -128; an int4 -8; a padding
 * nibble not 0). On error x may be partly written. */
sc_err sc_wire_decode(enum sc_wire w, const void *in, size_t len, size_t rows, size_t cols,
		      float *x);

/* x = decode(encode(x)) in place, with residual and rng as for
 * sc_wire_encode, bit for bit what encoding on one side of a hop and
 * decoding on the other gives: what one process does at a stage boundary.
 * scratch: sc_wire_bytes(w, rows, cols) bytes (any alignment), overwritten.
 * Same preconditions as sc_wire_encode; cannot fail. */
void sc_wire_roundtrip(enum sc_wire w, float *x, size_t rows, size_t cols, float *residual,
		       sc_rng *rng, void *scratch);

/* The stochastic rounding stream of one tensor crossing a hop: the one the
 * sender of micro-batch micro_batch of step `step` uses when stage `stage`
 * sends in direction dir (SC_WIRE_FORWARD: activations to stage + 1;
 * SC_WIRE_BACKWARD: gradients to stage - 1), for a job seeded with seed. A
 * chain's worker and the in-process trainer draw the same numbers. */
enum { SC_WIRE_FORWARD = 0, SC_WIRE_BACKWARD = 1 };
void sc_wire_rng(sc_rng *r, uint64_t seed, uint64_t step, uint32_t micro_batch, uint32_t stage,
		 int dir);

#endif
