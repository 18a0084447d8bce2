/* attention_kv_cuda.cu — attention of n new positions against a key/value
 * cache, for generation (sc_backend.h, attention_kv), in fp32. qkv (B,n,QKV)
 * holds the new rows; the caches kc, vc are (B,P,NKV*hs); the new row i sits
 * at position t = pos0 + i and sees the cache positions lo .. t, lo =
 * max(0, t - window + 1) (window 0: lo = 0); query head h reads kv head
 * h / (NH / NKV). Up to three kernels, in order on the backend's stream:
 *
 *   kv_store:   the new rows' k and v heads into the caches at pos0 .. .
 *   kv_attend:  a block per (b, i, h) and key segment s. A row's visible
 *               keys are split into S segments when the B*n*NH rows alone
 *               would leave the GPU idle (decode: n = 1 against up to 32k
 *               cached keys), else S = 1. The block walks its segment in
 *               chunks of KV_CHUNK keys with an online softmax: the scores
 *               of a chunk, then its maximum, the running rescale, the
 *               exponentials and the weighted sum of v. With S = 1 it
 *               writes out; else the unnormalised partial (o, m, l) into
 *               the context's kv_partial.
 *   kv_combine: when S > 1, a block per (b, i, h) merges its S partials in
 *               segment order and writes out.
 *
 * Threads of kv_attend: KV_THREADS = KV_CHUNK, four warps. Scores: warp w
 * takes keys 32w .. 32w + 31 of the chunk, four at a time, a key over
 * KV_LANES = 8 consecutive lanes that hold the dimensions lane, lane + 8,
 * ... of q in registers (width-8 shuffle sums). The chunk's maximum and
 * sum are computed by every warp alike from shared memory. The weighted
 * sum: thread (slice, d) = (tid / HS, tid % HS) sums dimension d over the
 * keys slice, slice + KV_THREADS / HS, ... of each chunk; the slices are
 * added in order at the end.
 *
 * Determinism: S depends on the shape alone (constants, not the device's
 * multiprocessor count); every output is summed in a fixed order; no
 * atomics. Head sizes up to SC_CUDA_ATTN_MAX_HS, as the training kernels. */
#include <limits.h>
#include <math.h>

#include "cuda_impl.h"

enum {
	KV_THREADS = 128,
	KV_CHUNK = KV_THREADS, /* keys per step of the online softmax */
	KV_LANES = 8,          /* lanes per key in the scores */
	KV_MIN_SEGMENT = 2 * KV_CHUNK,
};

/* The sizes every kernel needs (host: kv_dims_of). */
struct kv_dims {
	int B, n, P, pos0, NH, NKV, hs, window;
	int S;       /* key segments per row */
	size_t ld;   /* qkv row: (NH + 2 NKV) hs floats */
	size_t ldc;  /* cache row: NKV hs floats */
	size_t ldo;  /* out row: NH hs floats */
	float scale; /* 1 / sqrt(hs) */
};

/* Sum over the KV_LANES lanes of a key; every lane gets it. */
__device__ inline float kv_key_sum(float v)
{
	for (int o = KV_LANES / 2; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o, KV_LANES);
	return v;
}

/* Grid-stride over (B, n, NKV*hs): kc, vc (B,P,NKV*hs) at position pos0 + i
 * = the k, v heads of qkv row (b, i). */
__global__ void kv_store_kernel(float *kc, float *vc, const float *qkv, kv_dims a)
{
	const size_t total = (size_t)a.B * a.n * a.ldc, koff = (size_t)a.NH * a.hs;
	for (size_t e = sc_thread_index(); e < total; e += sc_grid_stride()) {
		size_t row = e / a.ldc, col = e % a.ldc, b = row / a.n, i = row % a.n;
		size_t dst = (b * a.P + a.pos0 + i) * a.ldc + col;
		const float *src = qkv + row * a.ld + koff + col;
		kc[dst] = src[0];
		vc[dst] = src[a.ldc];
	}
}

/* Grid (B*n*NH, S), KV_THREADS threads: block (r, s), r = (b*n + i)*NH + h,
 * takes segment s of row i's visible keys for query head h. out (B,n,NH*hs)
 * when S = 1; else part (r, s) = o (HS), m, l. */
template <int HS>
__global__ void __launch_bounds__(KV_THREADS)
    kv_attend_kernel(float *out, float *part, const float *kc, const float *vc, const float *qkv,
		     kv_dims a)
{
	static_assert(KV_THREADS % HS == 0 && HS % KV_LANES == 0, "tile shape");
	enum { SLICES = KV_THREADS / HS, KEYS_PER_WARP = KV_CHUNK / (KV_THREADS / 32) };
	__shared__ float sc[KV_CHUNK], ps[KV_CHUNK], red[KV_THREADS];
	const int r = blockIdx.x, h = r % a.NH, i = r / a.NH % a.n, b = r / a.NH / a.n;
	const int kvh = h / (a.NH / a.NKV), t = a.pos0 + i;
	const int lo = a.window > 0 && t - a.window + 1 > 0 ? t - a.window + 1 : 0;
	/* segments of whole chunks; the last ones may be short or empty */
	const int per = (t - lo + 1 + a.S - 1) / a.S;
	const int seg = (per + KV_CHUNK - 1) / KV_CHUNK * KV_CHUNK;
	const int klo = lo + (int)blockIdx.y * seg, khi = klo + seg - 1 < t ? klo + seg - 1 : t;
	const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
	const int e = lane % KV_LANES, g = lane / KV_LANES; /* dimension lane, key of a step */
	const int slice = tid / HS, d = tid % HS;           /* of the weighted sum */
	const size_t cache = (size_t)b * a.P * a.ldc + (size_t)kvh * a.hs;
	const float *kb = kc + cache, *vb = vc + cache;
	const float *q = qkv + ((size_t)b * a.n + i) * a.ld + (size_t)h * a.hs;
	float qr[HS / KV_LANES], m = -INFINITY, l = 0.0f, o = 0.0f;

	SC_UNROLL
	for (int x = 0; x < HS / KV_LANES; x++) {
		int dd = e + KV_LANES * x;
		qr[x] = dd < a.hs ? q[dd] : 0.0f;
	}
	for (int k0 = klo; k0 <= khi; k0 += KV_CHUNK) {
		/* the chunk's scaled scores, -inf past the segment */
		for (int j0 = warp * KEYS_PER_WARP; j0 < (warp + 1) * KEYS_PER_WARP;
		     j0 += 32 / KV_LANES) {
			int j = j0 + g, key = k0 + j;
			float acc = 0.0f;
			if (key <= khi) {
				const float *kr = kb + (size_t)key * a.ldc;
				SC_UNROLL
				for (int x = 0; x < HS / KV_LANES; x++) {
					int dd = e + KV_LANES * x;
					if (dd < a.hs)
						acc = fmaf(qr[x], kr[dd], acc);
				}
			}
			acc = kv_key_sum(acc);
			if (e == 0)
				sc[j] = key <= khi ? acc * a.scale : -INFINITY;
		}
		__syncthreads();
		/* key k0 <= khi is in the chunk, so m_new is finite */
		float mx = -INFINITY;
		for (int j = lane; j < KV_CHUNK; j += 32)
			mx = fmaxf(mx, sc[j]);
		const float m_new = fmaxf(m, sc_warp_max(mx)), alpha = expf(m - m_new);
		ps[tid] = expf(sc[tid] - m_new);
		/* sc is read before this barrier only; ps is next written after the
		 * next chunk's first one */
		__syncthreads();
		float psum = 0.0f;
		for (int j = lane; j < KV_CHUNK; j += 32)
			psum += ps[j];
		l = l * alpha + sc_warp_sum(psum);
		m = m_new;
		o *= alpha;
		if (d < a.hs) {
			const int jn = khi - k0 + 1 < KV_CHUNK ? khi - k0 + 1 : KV_CHUNK;
			const float *vr = vb + (size_t)k0 * a.ldc + d;
			for (int j = slice; j < jn; j += SLICES)
				o = fmaf(ps[j], vr[(size_t)j * a.ldc], o);
		}
	}
	red[tid] = o;
	__syncthreads();
	if (slice == 0 && d < a.hs) {
		float acc = red[d];
		SC_UNROLL
		for (int z = 1; z < SLICES; z++)
			acc += red[z * HS + d];
		if (a.S == 1) {
			out[((size_t)b * a.n + i) * a.ldo + (size_t)h * a.hs + d] = acc / l;
		} else {
			/* an empty segment leaves o = 0, m = -inf, l = 0 */
			float *pp = part + ((size_t)r * a.S + blockIdx.y) * (HS + 2);
			pp[d] = acc;
			if (d == 0) {
				pp[HS] = m;
				pp[HS + 1] = l;
			}
		}
	}
}

/* Grid B*n*NH, HS threads: out row r, head h = the S partials of part r
 * merged in segment order (segment 0 is never empty, so m is finite). */
template <int HS> __global__ void kv_combine_kernel(float *out, const float *part, kv_dims a)
{
	const int r = blockIdx.x, h = r % a.NH, d = threadIdx.x;
	const size_t row = (size_t)r / a.NH; /* b*n + i */
	const float *pp = part + (size_t)r * a.S * (HS + 2);
	float m = -INFINITY, l = 0.0f, o = 0.0f;
	for (int s = 0; s < a.S; s++)
		m = fmaxf(m, pp[(size_t)s * (HS + 2) + HS]);
	for (int s = 0; s < a.S; s++) {
		const float *p = pp + (size_t)s * (HS + 2);
		const float w = expf(p[HS] - m);
		l = fmaf(p[HS + 1], w, l);
		if (d < a.hs)
			o = fmaf(p[d], w, o);
	}
	if (d < a.hs)
		out[row * a.ldo + (size_t)h * a.hs + d] = o / l;
}

/* ---- host side ---- */

static kv_dims kv_dims_of(const sc_attn_shape *s, int pos0, int P)
{
	kv_dims a;
	a.B = s->B;
	a.n = s->T;
	a.P = P;
	a.pos0 = pos0;
	a.NH = s->NH;
	a.NKV = s->NKV;
	a.hs = s->hs;
	a.window = s->window;
	a.ld = (size_t)(s->NH + 2 * s->NKV) * s->hs;
	a.ldc = (size_t)s->NKV * s->hs;
	a.ldo = (size_t)s->NH * s->hs;
	a.scale = (float)(1.0 / sqrt((double)s->hs)); /* as the CPU */
	/* Segments: enough blocks to fill a GPU where the rows are few, none
	 * shorter than KV_MIN_SEGMENT keys, (row, segment) pairs within the
	 * partials' SC_CUDA_KV_PARTS. */
	size_t rows = (size_t)s->B * s->T * s->NH;
	int keys = s->window > 0 && s->window < pos0 + s->T ? s->window : pos0 + s->T;
	int by_keys = (keys + KV_MIN_SEGMENT - 1) / KV_MIN_SEGMENT;
	int by_parts = (int)(SC_CUDA_KV_PARTS / rows);
	a.S = by_keys < by_parts ? by_keys : by_parts > 1 ? by_parts : 1;
	return a;
}

template <int HS>
static sc_err kv_attend(sc_cuda_ctx *c, float *out, const float *kc, const float *vc,
			const float *qkv, const kv_dims &a)
{
	void (*attend)(float *, float *, const float *, const float *, const float *, kv_dims) =
	    kv_attend_kernel<HS>;
	void (*combine)(float *, const float *, kv_dims) = kv_combine_kernel<HS>;
	unsigned rows = (unsigned)((size_t)a.B * a.n * a.NH);
	SC_LAUNCH(attend, dim3(rows, (unsigned)a.S), KV_THREADS, c->stream)
	(out, c->kv_partial, kc, vc, qkv, a);
	SC_LAUNCH_CHECK(kv_attend_kernel);
	if (a.S > 1) {
		SC_LAUNCH(combine, rows, HS, c->stream)(out, c->kv_partial, a);
		SC_LAUNCH_CHECK(kv_combine_kernel);
	}
	return SC_OK;
}

sc_err sc_cuda_attention_kv(sc_backend *be, float *out, float *kc, float *vc, const float *qkv,
			    int pos0, int P, const sc_attn_shape *s)
{
	SC_TRY(sc_cuda_attn_check("attention_kv", s));
	if (pos0 < 0 || s->T < 1 || (long long)pos0 + s->T > P)
		return sc_errf(SC_EINVAL, "attention_kv: positions %d..%d outside the cache's %d",
			       pos0, pos0 + s->T - 1, P);
	if ((size_t)s->B * s->T * s->NH > INT_MAX)
		return sc_errf(SC_ENOTSUP, "attention_kv: %d x %d rows x %d heads: too many blocks",
			       s->B, s->T, s->NH);
	if (!s->B)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	kv_dims a = kv_dims_of(s, pos0, P);
	SC_LAUNCH(kv_store_kernel, sc_cuda_grid((size_t)a.B * a.n * a.ldc, 256), 256, c->stream)
	(kc, vc, qkv, a);
	SC_LAUNCH_CHECK(kv_store_kernel);
	return s->hs <= 32   ? kv_attend<32>(c, out, kc, vc, qkv, a)
	       : s->hs <= 64 ? kv_attend<64>(c, out, kc, vc, qkv, a)
			     : kv_attend<128>(c, out, kc, vc, qkv, a);
}
