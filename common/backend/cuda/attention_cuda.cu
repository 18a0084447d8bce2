/* attention_cuda.cu — causal self-attention of the CUDA backend as fused,
 * memory-efficient kernels, in fp32 (the FlashAttention-2 scheme): no T x T
 * matrix is ever stored.
 *
 * Forward: a block takes BR query rows of one head and walks the key tiles
 * of BC keys up to the diagonal, keeping a running maximum m, sum l and
 * output o per row (online softmax); it writes out and the row's log-sum-
 * exp, lse = m + log l — the only state kept for the backward (B,NH,T).
 *
 * Backward, two kernels, so that every output element is summed by one
 * thread in a fixed order (deterministic, no atomics):
 *   dq:  a block per BR query rows: Di = dout_i . out_i (kept in the
 *        scratch for the next kernel), then over the key tiles
 *        p = exp(s - lse), ds = p (dout_i . v_j - Di), dq += ds k.
 *   dkv: a block per BC keys, over the query tiles from the diagonal on:
 *        dv += p dout_i, dk += ds q_i, with p and ds recomputed.
 *
 * Threads: LANES = 8 per row (a row's lanes are 8 consecutive lanes of one
 * warp, so its reductions are width-8 shuffles and __syncwarp orders its
 * shared memory); a thread holds the columns lane, lane + 8, ... of its row.
 * Tiles live in shared memory with one float of padding per row; head
 * dimensions beyond hs and rows beyond T are loaded as zeros. Head sizes up
 * to 128 (GPT-2: 64, Llama: 128) have a tile shape each; larger ones are
 * refused by sc_cuda_attention_sizes. */
#include <math.h>

#include "cuda_impl.h"

enum { LANES = 8, MAX_HS = 128 };

/* dst (rows, HS), row stride HS + 1 = rows t0 .. t0 + rows - 1 of src (ld
 * floats apart), dimensions d < hs; zeros elsewhere. The whole block
 * loads. */
template <int HS>
__device__ inline void load_tile(float *dst, int rows, const float *src, size_t ld, int t0, int T,
				 int hs)
{
	for (int e = threadIdx.x; e < rows * HS; e += blockDim.x) {
		int r = e / HS, d = e % HS, t = t0 + r;
		dst[r * (HS + 1) + d] = t < T && d < hs ? src[(size_t)t * ld + d] : 0.0f;
	}
}

/* Reductions over the 8 lanes of a row; every lane gets the result. */
__device__ inline float row_max(float v)
{
	for (int o = LANES / 2; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o, LANES));
	return v;
}

__device__ inline float row_sum(float v)
{
	for (int o = LANES / 2; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o, LANES);
	return v;
}

/* acc[x] = a . rows[lane + LANES x] over HS dimensions, for x < N: each
 * element of a is read once for the N products (rows: a shared tile, row
 * stride HS + 1). Sums in dimension order. */
template <int HS, int N>
__device__ inline void dots(float *acc, const float *a, const float (*rows)[HS + 1], int lane)
{
	SC_UNROLL
	for (int x = 0; x < N; x++)
		acc[x] = 0.0f;
	for (int d = 0; d < HS; d++) {
		float ad = a[d];
		SC_UNROLL
		for (int x = 0; x < N; x++)
			acc[x] = fmaf(ad, rows[lane + LANES * x][d], acc[x]);
	}
}

/* Grid (B*NH, ceil(T/BR)), BR * LANES threads. out (B,T,C); lse (B,NH,T). */
template <int HS, int BR, int BC>
__global__ void __launch_bounds__(BR *LANES)
    flash_forward_kernel(float *out, float *lse, const float *qkv, int T, int C, int NH,
			 float scale)
{
	__shared__ float qs[BR][HS + 1], ks[BC][HS + 1], vs[BC][HS + 1], ps[BR][BC + 1];
	const int hs = C / NH, bh = blockIdx.x, b = bh / NH, h = bh % NH;
	const int q0 = blockIdx.y * BR, i = threadIdx.x / LANES, lane = threadIdx.x % LANES;
	const int row = q0 + i, kend = q0 + BR < T ? q0 + BR : T;
	const size_t ld = 3 * (size_t)C;
	const float *q = qkv + (size_t)b * T * ld + (size_t)h * hs;
	float m = -INFINITY, l = 0.0f, o[HS / LANES];

	SC_UNROLL
	for (int x = 0; x < HS / LANES; x++)
		o[x] = 0.0f;
	load_tile<HS>(&qs[0][0], BR, q, ld, q0, T, hs);
	for (int k0 = 0; k0 < kend; k0 += BC) {
		__syncthreads(); /* the previous tile's readers are done */
		load_tile<HS>(&ks[0][0], BC, q + C, ld, k0, T, hs);
		load_tile<HS>(&vs[0][0], BC, q + 2 * C, ld, k0, T, hs);
		__syncthreads();

		float s[BC / LANES], mx = -INFINITY;
		dots<HS, BC / LANES>(s, qs[i], ks, lane);
		SC_UNROLL
		for (int x = 0; x < BC / LANES; x++) {
			int j = lane + LANES * x;
			s[x] = row < T && k0 + j <= row ? s[x] * scale : -INFINITY;
			mx = fmaxf(mx, s[x]);
		}
		/* Rows past T see no key at all: keep their exponents finite. */
		float m_new = fmaxf(m, row_max(mx));
		float base = m_new == -INFINITY ? 0.0f : m_new;
		float alpha = expf(m - base), psum = 0.0f;
		SC_UNROLL
		for (int x = 0; x < BC / LANES; x++) {
			float p = expf(s[x] - base);
			ps[i][lane + LANES * x] = p;
			psum += p;
		}
		l = l * alpha + row_sum(psum);
		m = m_new;
		__syncwarp(); /* ps[i] is written and read by row i's lanes only */
		SC_UNROLL
		for (int x = 0; x < HS / LANES; x++)
			o[x] *= alpha;
		for (int j = 0; j < BC;
		     j++) { /* each p read once for the row's HS / LANES outputs */
			float p = ps[i][j];
			SC_UNROLL
			for (int x = 0; x < HS / LANES; x++)
				o[x] = fmaf(p, vs[j][lane + LANES * x], o[x]);
		}
	}
	if (row < T) {
		float inv = 1.0f / l, *y = out + ((size_t)b * T + row) * C + (size_t)h * hs;
		SC_UNROLL
		for (int x = 0; x < HS / LANES; x++) {
			int d = lane + LANES * x;
			if (d < hs)
				y[d] = o[x] * inv;
		}
		if (lane == 0)
			lse[(size_t)bh * T + row] = m + logf(l);
	}
}

/* Grid (B*NH, ceil(T/BR)), BR * LANES threads. Writes the q part of dqkv
 * and dsum (B,NH,T) = dout . out per row. */
template <int HS, int BR, int BC>
__global__ void __launch_bounds__(BR *LANES)
    flash_backward_dq_kernel(float *dqkv, float *dsum, const float *dout, const float *qkv,
			     const float *out, const float *lse, int T, int C, int NH, float scale)
{
	__shared__ float qs[BR][HS + 1], dos[BR][HS + 1], ks[BC][HS + 1], vs[BC][HS + 1];
	__shared__ float dss[BR][BC + 1];
	const int hs = C / NH, bh = blockIdx.x, b = bh / NH, h = bh % NH;
	const int q0 = blockIdx.y * BR, i = threadIdx.x / LANES, lane = threadIdx.x % LANES;
	const int row = q0 + i, kend = q0 + BR < T ? q0 + BR : T;
	const size_t ld = 3 * (size_t)C, head = (size_t)h * hs;
	const float *q = qkv + (size_t)b * T * ld + head;
	const float *dy = dout + (size_t)b * T * C + head, *y = out + (size_t)b * T * C + head;
	float dq[HS / LANES], part = 0.0f;

	load_tile<HS>(&qs[0][0], BR, q, ld, q0, T, hs);
	load_tile<HS>(&dos[0][0], BR, dy, C, q0, T, hs);
	SC_UNROLL
	for (int x = 0; x < HS / LANES; x++) {
		int d = lane + LANES * x;
		dq[x] = 0.0f;
		if (row < T && d < hs)
			part = fmaf(dy[(size_t)row * C + d], y[(size_t)row * C + d], part);
	}
	const float di = row_sum(part);
	const float li = row < T ? lse[(size_t)bh * T + row] : 0.0f;
	if (row < T && lane == 0)
		dsum[(size_t)bh * T + row] = di;

	for (int k0 = 0; k0 < kend; k0 += BC) {
		__syncthreads();
		load_tile<HS>(&ks[0][0], BC, q + C, ld, k0, T, hs);
		load_tile<HS>(&vs[0][0], BC, q + 2 * C, ld, k0, T, hs);
		__syncthreads();
		float s[BC / LANES], dp[BC / LANES];
		dots<HS, BC / LANES>(s, qs[i], ks, lane);
		dots<HS, BC / LANES>(dp, dos[i], vs, lane);
		SC_UNROLL
		for (int x = 0; x < BC / LANES; x++) {
			int j = lane + LANES * x;
			float ds = 0.0f;
			if (row < T && k0 + j <= row)
				ds = expf(s[x] * scale - li) * (dp[x] - di);
			dss[i][j] = ds;
		}
		__syncwarp();
		for (int j = 0; j < BC; j++) {
			float ds = dss[i][j];
			SC_UNROLL
			for (int x = 0; x < HS / LANES; x++)
				dq[x] = fmaf(ds, ks[j][lane + LANES * x], dq[x]);
		}
	}
	if (row < T) {
		float *g = dqkv + ((size_t)b * T + row) * ld + head;
		SC_UNROLL
		for (int x = 0; x < HS / LANES; x++) {
			int d = lane + LANES * x;
			if (d < hs)
				g[d] = dq[x] * scale;
		}
	}
}

/* Grid (B*NH, ceil(T/BC)), BC * LANES threads: thread row j is key k0 + j.
 * Writes the k and v parts of dqkv. */
template <int HS, int BR, int BC>
__global__ void __launch_bounds__(BC *LANES)
    flash_backward_dkv_kernel(float *dqkv, const float *dout, const float *qkv, const float *lse,
			      const float *dsum, int T, int C, int NH, float scale)
{
	__shared__ float ks[BC][HS + 1], vs[BC][HS + 1], qs[BR][HS + 1], dos[BR][HS + 1];
	__shared__ float ps[BC][BR + 1], dss[BC][BR + 1], ls[BR], dd[BR];
	const int hs = C / NH, bh = blockIdx.x, b = bh / NH, h = bh % NH;
	const int k0 = blockIdx.y * BC, j = threadIdx.x / LANES, lane = threadIdx.x % LANES;
	const int key = k0 + j;
	const size_t ld = 3 * (size_t)C, head = (size_t)h * hs;
	const float *q = qkv + (size_t)b * T * ld + head, *dy = dout + (size_t)b * T * C + head;
	float dk[HS / LANES], dv[HS / LANES];

	SC_UNROLL
	for (int x = 0; x < HS / LANES; x++)
		dk[x] = dv[x] = 0.0f;
	load_tile<HS>(&ks[0][0], BC, q + C, ld, k0, T, hs);
	load_tile<HS>(&vs[0][0], BC, q + 2 * C, ld, k0, T, hs);
	for (int q0 = k0 / BR * BR; q0 < T; q0 += BR) {
		__syncthreads();
		load_tile<HS>(&qs[0][0], BR, q, ld, q0, T, hs);
		load_tile<HS>(&dos[0][0], BR, dy, C, q0, T, hs);
		for (int r = threadIdx.x; r < BR; r += blockDim.x) {
			int t = q0 + r;
			ls[r] = t < T ? lse[(size_t)bh * T + t] : 0.0f;
			dd[r] = t < T ? dsum[(size_t)bh * T + t] : 0.0f;
		}
		__syncthreads();
		float s[BR / LANES], dp[BR / LANES];
		dots<HS, BR / LANES>(s, ks[j], qs, lane);
		dots<HS, BR / LANES>(dp, vs[j], dos, lane);
		SC_UNROLL
		for (int x = 0; x < BR / LANES; x++) {
			int ii = lane + LANES * x, row = q0 + ii;
			float p = 0.0f, ds = 0.0f;
			if (key < T && row < T && key <= row) {
				p = expf(s[x] * scale - ls[ii]);
				ds = p * (dp[x] - dd[ii]);
			}
			ps[j][ii] = p;
			dss[j][ii] = ds;
		}
		__syncwarp();
		for (int ii = 0; ii < BR; ii++) {
			float p = ps[j][ii], ds = dss[j][ii];
			SC_UNROLL
			for (int x = 0; x < HS / LANES; x++) {
				dv[x] = fmaf(p, dos[ii][lane + LANES * x], dv[x]);
				dk[x] = fmaf(ds, qs[ii][lane + LANES * x], dk[x]);
			}
		}
	}
	if (key < T) {
		float *g = dqkv + ((size_t)b * T + key) * ld + head;
		SC_UNROLL
		for (int x = 0; x < HS / LANES; x++) {
			int d = lane + LANES * x;
			if (d < hs) {
				g[C + d] = dk[x] * scale;
				g[2 * C + d] = dv[x];
			}
		}
	}
}

/* ---- host side ---- */

static sc_err check_shape(const char *op, int B, int T, int C, int NH)
{
	if (B < 0 || T < 0 || C <= 0 || NH <= 0 || C % NH != 0)
		return sc_errf(SC_EINVAL,
			       "%s: bad shape B=%d T=%d C=%d NH=%d (C must divide by NH)", op, B, T,
			       C, NH);
	if (C / NH > MAX_HS)
		return sc_errf(SC_ENOTSUP,
			       "%s: head size %d: the CUDA attention kernels take head sizes up "
			       "to %d",
			       op, C / NH, MAX_HS);
	return SC_OK;
}

static float attention_scale(int hs)
{
	return (float)(1.0 / sqrt((double)hs)); /* as the CPU */
}

template <int HS, int BR, int BC>
static sc_err forward_tiles(sc_cuda_ctx *c, float *out, float *lse, const float *qkv, int B, int T,
			    int C, int NH)
{
	void (*flash_forward)(float *, float *, const float *, int, int, int, float) =
	    flash_forward_kernel<HS, BR, BC>;
	dim3 grid((unsigned)(B * NH), (unsigned)((T + BR - 1) / BR));
	SC_LAUNCH(flash_forward, grid, BR * LANES, c->stream)
	(out, lse, qkv, T, C, NH, attention_scale(C / NH));
	SC_LAUNCH_CHECK(flash_forward_kernel);
	return SC_OK;
}

template <int HS, int BR, int BC>
static sc_err backward_tiles(sc_cuda_ctx *c, float *dqkv, float *dsum, const float *dout,
			     const float *qkv, const float *out, const float *lse, int B, int T,
			     int C, int NH)
{
	float scale = attention_scale(C / NH);
	void (*flash_dq)(float *, float *, const float *, const float *, const float *,
			 const float *, int, int, int, float) =
	    flash_backward_dq_kernel<HS, BR, BC>;
	void (*flash_dkv)(float *, const float *, const float *, const float *, const float *, int,
			  int, int, float) = flash_backward_dkv_kernel<HS, BR, BC>;
	dim3 grid_q((unsigned)(B * NH), (unsigned)((T + BR - 1) / BR));
	dim3 grid_k((unsigned)(B * NH), (unsigned)((T + BC - 1) / BC));
	SC_LAUNCH(flash_dq, grid_q, BR * LANES, c->stream)
	(dqkv, dsum, dout, qkv, out, lse, T, C, NH, scale);
	SC_LAUNCH_CHECK(flash_backward_dq_kernel);
	/* after dq on the same stream: it reads the dsum dq wrote */
	SC_LAUNCH(flash_dkv, grid_k, BC * LANES, c->stream)
	(dqkv, dout, qkv, lse, dsum, T, C, NH, scale);
	SC_LAUNCH_CHECK(flash_backward_dkv_kernel);
	return SC_OK;
}

/* Tile shapes by head size: 32 x 32 tiles up to 64, 16 x 16 up to 128
 * (within 48 KiB of static shared memory per block). */
#define SC_ATTN_DISPATCH(fn, hs, ...)                                                              \
	((hs) <= 32   ? fn<32, 32, 32>(__VA_ARGS__)                                                \
	 : (hs) <= 64 ? fn<64, 32, 32>(__VA_ARGS__)                                                \
		      : fn<128, 16, 16>(__VA_ARGS__))

sc_err sc_cuda_attention_sizes(sc_backend *be, int B, int T, int C, int NH, size_t *state,
			       size_t *scratch)
{
	*state = *scratch = 0;
	SC_TRY(check_shape("attention", B, T, C, NH));
	*state = *scratch = (size_t)B * NH * T;
	return SC_OK;
}

sc_err sc_cuda_attention_forward(sc_backend *be, float *out, float *lse, const float *qkv, int B,
				 int T, int C, int NH)
{
	SC_TRY(check_shape("attention_forward", B, T, C, NH));
	if (!B || !T)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	return SC_ATTN_DISPATCH(forward_tiles, C / NH, c, out, lse, qkv, B, T, C, NH);
}

sc_err sc_cuda_attention_backward(sc_backend *be, float *dqkv, float *dsum, const float *dout,
				  const float *qkv, const float *out, const float *lse, int B,
				  int T, int C, int NH)
{
	SC_TRY(check_shape("attention_backward", B, T, C, NH));
	if (!B || !T)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	return SC_ATTN_DISPATCH(backward_tiles, C / NH, c, dqkv, dsum, dout, qkv, out, lse, B, T, C,
				NH);
}
