/* dequant_cpu.c — int8 / nf4 / bf16 weights to bf16 (dequant_cpu.h): a
 * scalar loop per row segment, and on x86-64 an AVX-512F one that does 16
 * elements at a time (nf4: 8 bytes split into nibbles, looked up in the
 * codebook with one permute; int8: widened and scaled), the rounding to
 * bf16 done with integer operations as sc_bf16_from_f32 does it (not with
 * VCVTNEPS2BF16, which treats subnormal inputs as zero). */
#include <stdatomic.h>

#include "dequant_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SC_DQ_X86 1
#endif

/* One row's elements [c0, c1) of row r, scalar: out[c - c0]. */
static void row_scalar(const sc_qformat_weight *w, size_t r, size_t c0, size_t c1, uint16_t *o)
{
	size_t e0 = r * w->cols;
	if (w->format == SC_QF_BF16) {
		for (size_t c = c0; c < c1; c++)
			memcpy(&o[c - c0], w->q + 2 * (e0 + c), sizeof(uint16_t));
	} else if (w->format == SC_QF_INT8) {
		const int8_t *q = (const int8_t *)w->q + e0;
		for (size_t c = c0; c < c1; c++) {
			float s = w->scale_rows ? w->scales[r] : w->scales[c];
			o[c - c0] = sc_bf16_from_f32((float)q[c] * s);
		}
	} else {
		for (size_t e = e0 + c0, e1 = e0 + c1; e < e1;) {
			size_t b = e / SC_NF4_BLOCK, end = (b + 1) * SC_NF4_BLOCK;
			float a = sc_qformat_nf4_absmax(w, b);
			end = end < e1 ? end : e1;
			for (; e < end; e++) {
				uint8_t byte = w->q[e / 2];
				o[e - e0 - c0] = sc_bf16_from_f32(
				    sc_nf4_codebook[e % 2 ? byte & 0x0f : byte >> 4] * a);
			}
		}
	}
}

#ifdef SC_DQ_X86
#define AVX512 __attribute__((target("avx512f")))

/* 16 floats rounded to bf16 (sc_bf16_from_f32's rounding) into o. */
AVX512 static inline void store_bf16(uint16_t *o, __m512 v)
{
	__m512i u = _mm512_castps_si512(v);
	__m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
	__m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
	r = _mm512_srli_epi32(r, 16);
	__mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
						_mm512_set1_epi32(0x7f800000));
	__m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
	r = _mm512_mask_mov_epi32(r, nan, quiet);
	_mm256_storeu_si256((__m256i *)(void *)o, _mm512_cvtepi32_epi16(r));
}

AVX512 static void row_avx512(const sc_qformat_weight *w, size_t r, size_t c0, size_t c1,
			      uint16_t *o)
{
	size_t e0 = r * w->cols;
	if (w->format == SC_QF_INT8) {
		const int8_t *q = (const int8_t *)w->q + e0;
		size_t c = c0;
		for (; c + 16 <= c1; c += 16) {
			__m128i b = _mm_loadu_si128((const __m128i *)(const void *)(q + c));
			__m512 x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
			__m512 s = w->scale_rows ? _mm512_set1_ps(w->scales[r])
						 : _mm512_loadu_ps(w->scales + c);
			store_bf16(o + (c - c0), _mm512_mul_ps(x, s));
		}
		if (c < c1)
			row_scalar(w, r, c, c1, o + (c - c0));
		return;
	}
	if (w->format != SC_QF_NF4) {
		row_scalar(w, r, c0, c1, o);
		return;
	}
	const __m512 cb = _mm512_loadu_ps(sc_nf4_codebook);
	const __m128i low4 = _mm_set1_epi8(0x0f);
	for (size_t e = e0 + c0, e1 = e0 + c1; e < e1;) {
		size_t b = e / SC_NF4_BLOCK, end = (b + 1) * SC_NF4_BLOCK;
		end = end < e1 ? end : e1;
		/* up to a multiple of 16 (blocks of 64 start at one) by the
		 * scalar loop, then 16 at a time, then the rest */
		size_t head = (e + 15) / 16 * 16;
		head = head < end ? head : end;
		if (e < head) {
			row_scalar(w, r, e - e0, head - e0, o + (e - e0 - c0));
			e = head;
		}
		if (e + 16 <= end) {
			__m512 a = _mm512_set1_ps(sc_qformat_nf4_absmax(w, b));
			for (; e + 16 <= end; e += 16) {
				__m128i by =
				    _mm_loadl_epi64((const __m128i *)(const void *)(w->q + e / 2));
				__m128i hi = _mm_and_si128(_mm_srli_epi16(by, 4), low4);
				__m128i lo = _mm_and_si128(by, low4);
				/* element 2j is byte j's high nibble, 2j + 1 its low */
				__m512i idx = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
				store_bf16(o + (e - e0 - c0),
					   _mm512_mul_ps(_mm512_permutexvar_ps(idx, cb), a));
			}
		}
		if (e < end) {
			row_scalar(w, r, e - e0, end - e0, o + (e - e0 - c0));
			e = end;
		}
	}
}

static int have_avx512(void)
{
	static atomic_int have = -1; /* every thread that computes it gets the same */
	int h = atomic_load_explicit(&have, memory_order_relaxed);
	if (h < 0) {
		__builtin_cpu_init();
		h = __builtin_cpu_supports("avx512f") ? 1 : 0;
		atomic_store_explicit(&have, h, memory_order_relaxed);
	}
	return h;
}
#endif

void sc_cpu_dequant_bf16(const sc_qformat_weight *w, size_t r0, size_t r1, size_t c0, size_t c1,
			 uint16_t *out, size_t ldo, enum sc_cpu_dq_kind kind)
{
#ifdef SC_DQ_X86
	if (kind == SC_CPU_DQ_AUTO && have_avx512()) {
		for (size_t r = r0; r < r1; r++)
			row_avx512(w, r, c0, c1, out + (r - r0) * ldo);
		return;
	}
#endif
	for (size_t r = r0; r < r1; r++)
		row_scalar(w, r, c0, c1, out + (r - r0) * ldo);
}

const char *sc_cpu_dequant_bf16_kind(void)
{
#ifdef SC_DQ_X86
	if (have_avx512())
		return "avx512";
#endif
	return "scalar";
}
