/* attention_cuda.cu — causal self-attention of the CUDA backend as fused,
 * memory-efficient kernels, in fp32 (the FlashAttention-2 scheme): no T x T
 * matrix is ever stored. Shapes as sc_attn_shape: qkv (B,T,QKV) with QKV =
 * (NH + 2 NKV) hs, q heads | k heads | v heads; query head h reads kv head
 * h / (NH / NKV) (grouped-query attention); query t sees the keys
 * max(0, t - window + 1) .. t (window 0: 0 .. t).
 *
 * Forward: a block takes BR query rows of one query head and walks the key
 * tiles of BC keys that hold a visible key, keeping a running maximum m, sum
 * l and output o per row (online softmax); it writes out and the row's log-
 * sum-exp, lse = m + log l — the only state kept for the backward (B,NH,T).
 *
 * Backward, two kernels, so that every output element is summed by one
 * thread in a fixed order (deterministic, no atomics):
 *   dq:  a block per BR query rows of one query head: Di = dout_i . out_i
 *        (kept in the scratch for the next kernel), then over the key tiles
 *        p = exp(s - lse), ds = p (dout_i . v_j - Di), dq += ds k.
 *   dkv: a block per BC keys of one kv head, over the query heads of its
 *        group in order and, for each, the query tiles that can see the
 *        keys: dv += p dout_i, dk += ds q_i, with p and ds recomputed. The
 *        group's sum thus stays in one thread's registers.
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

enum { LANES = 8 };

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

/* The sizes every kernel needs (host: attn_dims_of). */
struct attn_dims {
	int T, NH, NKV, hs, window;
	size_t ld;   /* qkv row: (NH + 2 NKV) hs floats */
	size_t ldo;  /* out and dout row: NH hs floats */
	float scale; /* 1 / sqrt(hs) */
};

/* Whether query row sees key (both < T). */
__device__ inline bool visible(int row, int key, int window)
{
	return key <= row && (window == 0 || row - key < window);
}

/* The first key tile (BC keys, aligned) holding a key that query q0 or a
 * later query sees. */
__device__ inline int first_key_tile(int q0, int window, int BC)
{
	int k = window == 0 || q0 < window ? 0 : q0 - window + 1;
	return k / BC * BC;
}

/* Grid (B*NH, ceil(T/BR)), BR * LANES threads: block (bh, y) takes query
 * rows y*BR .. y*BR + BR - 1 of query head h = bh % NH, thread row i =
 * threadIdx.x / LANES. out (B,T,NH*hs); lse (B,NH,T). */
template <int HS, int BR, int BC>
__global__ void __launch_bounds__(BR *LANES)
    flash_forward_kernel(float *out, float *lse, const float *qkv, attn_dims a)
{
	__shared__ float qs[BR][HS + 1], ks[BC][HS + 1], vs[BC][HS + 1], ps[BR][BC + 1];
	const int T = a.T, hs = a.hs, bh = blockIdx.x, b = bh / a.NH, h = bh % a.NH;
	const int kvh = h / (a.NH / a.NKV);
	const int q0 = blockIdx.y * BR, i = threadIdx.x / LANES, lane = threadIdx.x % LANES;
	const int row = q0 + i, kend = q0 + BR < T ? q0 + BR : T;
	const float *base = qkv + (size_t)b * T * a.ld;
	const float *q = base + (size_t)h * hs, *k = base + (size_t)(a.NH + kvh) * hs;
	const float *v = base + (size_t)(a.NH + a.NKV + kvh) * hs;
	float m = -INFINITY, l = 0.0f, o[HS / LANES];

	SC_UNROLL
	for (int x = 0; x < HS / LANES; x++)
		o[x] = 0.0f;
	load_tile<HS>(&qs[0][0], BR, q, a.ld, q0, T, hs);
	for (int k0 = first_key_tile(q0, a.window, BC); k0 < kend; k0 += BC) {
		__syncthreads(); /* the previous tile's readers are done */
		load_tile<HS>(&ks[0][0], BC, k, a.ld, k0, T, hs);
		load_tile<HS>(&vs[0][0], BC, v, a.ld, k0, T, hs);
		__syncthreads();

		float s[BC / LANES], mx = -INFINITY;
		dots<HS, BC / LANES>(s, qs[i], ks, lane);
		SC_UNROLL
		for (int x = 0; x < BC / LANES; x++) {
			int j = lane + LANES * x;
			s[x] =
			    row < T && visible(row, k0 + j, a.window) ? s[x] * a.scale : -INFINITY;
			mx = fmaxf(mx, s[x]);
		}
		/* A row that sees no key yet (past T, or before its window):
		 * keep its exponents finite. */
		float m_new = fmaxf(m, row_max(mx));
		float base_m = m_new == -INFINITY ? 0.0f : m_new;
		float alpha = expf(m - base_m), psum = 0.0f;
		SC_UNROLL
		for (int x = 0; x < BC / LANES; x++) {
			float p = expf(s[x] - base_m);
			ps[i][lane + LANES * x] = p;
			psum += p;
		}
		l = l * alpha + row_sum(psum);
		m = m_new;
		__syncwarp(); /* ps[i] is written and read by row i's lanes only */
		SC_UNROLL
		for (int x = 0; x < HS / LANES; x++)
			o[x] *= alpha;
		/* each p read once for the row's HS / LANES outputs */
		for (int j = 0; j < BC; j++) {
			float p = ps[i][j];
			SC_UNROLL
			for (int x = 0; x < HS / LANES; x++)
				o[x] = fmaf(p, vs[j][lane + LANES * x], o[x]);
		}
	}
	if (row < T) {
		float inv = 1.0f / l, *y = out + ((size_t)b * T + row) * a.ldo + (size_t)h * hs;
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

/* Grid (B*NH, ceil(T/BR)), BR * LANES threads, as the forward. Writes the q
 * heads of dqkv and dsum (B,NH,T) = dout . out per row. */
template <int HS, int BR, int BC>
__global__ void __launch_bounds__(BR *LANES)
    flash_backward_dq_kernel(float *dqkv, float *dsum, const float *dout, const float *qkv,
			     const float *out, const float *lse, attn_dims a)
{
	__shared__ float qs[BR][HS + 1], dos[BR][HS + 1], ks[BC][HS + 1], vs[BC][HS + 1];
	__shared__ float dss[BR][BC + 1];
	const int T = a.T, hs = a.hs, bh = blockIdx.x, b = bh / a.NH, h = bh % a.NH;
	const int kvh = h / (a.NH / a.NKV);
	const int q0 = blockIdx.y * BR, i = threadIdx.x / LANES, lane = threadIdx.x % LANES;
	const int row = q0 + i, kend = q0 + BR < T ? q0 + BR : T;
	const size_t head = (size_t)h * hs;
	const float *base = qkv + (size_t)b * T * a.ld;
	const float *q = base + head, *k = base + (size_t)(a.NH + kvh) * hs;
	const float *v = base + (size_t)(a.NH + a.NKV + kvh) * hs;
	const float *dy = dout + (size_t)b * T * a.ldo + head;
	const float *y = out + (size_t)b * T * a.ldo + head;
	float dq[HS / LANES], part = 0.0f;

	load_tile<HS>(&qs[0][0], BR, q, a.ld, q0, T, hs);
	load_tile<HS>(&dos[0][0], BR, dy, a.ldo, q0, T, hs);
	SC_UNROLL
	for (int x = 0; x < HS / LANES; x++) {
		int d = lane + LANES * x;
		dq[x] = 0.0f;
		if (row < T && d < hs)
			part = fmaf(dy[(size_t)row * a.ldo + d], y[(size_t)row * a.ldo + d], part);
	}
	const float di = row_sum(part);
	const float li = row < T ? lse[(size_t)bh * T + row] : 0.0f;
	if (row < T && lane == 0)
		dsum[(size_t)bh * T + row] = di;

	for (int k0 = first_key_tile(q0, a.window, BC); k0 < kend; k0 += BC) {
		__syncthreads();
		load_tile<HS>(&ks[0][0], BC, k, a.ld, k0, T, hs);
		load_tile<HS>(&vs[0][0], BC, v, a.ld, k0, T, hs);
		__syncthreads();
		float s[BC / LANES], dp[BC / LANES];
		dots<HS, BC / LANES>(s, qs[i], ks, lane);
		dots<HS, BC / LANES>(dp, dos[i], vs, lane);
		SC_UNROLL
		for (int x = 0; x < BC / LANES; x++) {
			int j = lane + LANES * x;
			float ds = 0.0f;
			if (row < T && visible(row, k0 + j, a.window))
				ds = expf(s[x] * a.scale - li) * (dp[x] - di);
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
		float *g = dqkv + ((size_t)b * T + row) * a.ld + head;
		SC_UNROLL
		for (int x = 0; x < HS / LANES; x++) {
			int d = lane + LANES * x;
			if (d < hs)
				g[d] = dq[x] * a.scale;
		}
	}
}

/* Grid (B*NKV, ceil(T/BC)), BC * LANES threads: block (bkv, y) takes keys
 * k0 = y*BC .. k0 + BC - 1 of kv head kvh = bkv % NKV, thread row j = key
 * k0 + j; it runs the query heads kvh*G .. kvh*G + G - 1 (G = NH / NKV) in
 * order, each over the query tiles that see a key of the block. Writes the
 * k and v heads of dqkv. */
template <int HS, int BR, int BC>
__global__ void __launch_bounds__(BC *LANES)
    flash_backward_dkv_kernel(float *dqkv, const float *dout, const float *qkv, const float *lse,
			      const float *dsum, attn_dims a)
{
	__shared__ float ks[BC][HS + 1], vs[BC][HS + 1], qs[BR][HS + 1], dos[BR][HS + 1];
	__shared__ float ps[BC][BR + 1], dss[BC][BR + 1], ls[BR], dd[BR];
	const int T = a.T, hs = a.hs, G = a.NH / a.NKV;
	const int b = blockIdx.x / a.NKV, kvh = blockIdx.x % a.NKV;
	const int k0 = blockIdx.y * BC, j = threadIdx.x / LANES, lane = threadIdx.x % LANES;
	const int key = k0 + j;
	/* the last query that sees key k0 + BC - 1 is k0 + BC - 2 + window */
	const int qend =
	    a.window == 0 || T - (k0 + BC - 1) <= a.window ? T : k0 + BC - 1 + a.window;
	const float *base = qkv + (size_t)b * T * a.ld;
	const size_t khead = (size_t)(a.NH + kvh) * hs, vhead = (size_t)(a.NH + a.NKV + kvh) * hs;
	float dk[HS / LANES], dv[HS / LANES];

	SC_UNROLL
	for (int x = 0; x < HS / LANES; x++)
		dk[x] = dv[x] = 0.0f;
	load_tile<HS>(&ks[0][0], BC, base + khead, a.ld, k0, T, hs);
	load_tile<HS>(&vs[0][0], BC, base + vhead, a.ld, k0, T, hs);
	for (int h = kvh * G; h < (kvh + 1) * G; h++) {
		const size_t bh = (size_t)b * a.NH + h;
		const float *q = base + (size_t)h * hs;
		const float *dy = dout + (size_t)b * T * a.ldo + (size_t)h * hs;
		for (int q0 = k0 / BR * BR; q0 < qend; q0 += BR) {
			__syncthreads(); /* the previous tile's readers are done */
			load_tile<HS>(&qs[0][0], BR, q, a.ld, q0, T, hs);
			load_tile<HS>(&dos[0][0], BR, dy, a.ldo, q0, T, hs);
			for (int r = threadIdx.x; r < BR; r += blockDim.x) {
				int t = q0 + r;
				ls[r] = t < T ? lse[bh * T + t] : 0.0f;
				dd[r] = t < T ? dsum[bh * T + t] : 0.0f;
			}
			__syncthreads();
			float s[BR / LANES], dp[BR / LANES];
			dots<HS, BR / LANES>(s, ks[j], qs, lane);
			dots<HS, BR / LANES>(dp, vs[j], dos, lane);
			SC_UNROLL
			for (int x = 0; x < BR / LANES; x++) {
				int ii = lane + LANES * x, row = q0 + ii;
				float p = 0.0f, ds = 0.0f;
				if (key < T && row < T && visible(row, key, a.window)) {
					p = expf(s[x] * a.scale - ls[ii]);
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
	}
	if (key < T) {
		float *g = dqkv + ((size_t)b * T + key) * a.ld;
		SC_UNROLL
		for (int x = 0; x < HS / LANES; x++) {
			int d = lane + LANES * x;
			if (d < hs) {
				g[khead + d] = dk[x] * a.scale;
				g[vhead + d] = dv[x];
			}
		}
	}
}

/* ---- host side ---- */

sc_err sc_cuda_attn_check(const char *op, const sc_attn_shape *s)
{
	if (s->B < 0 || s->T < 0 || s->NH <= 0 || s->NKV <= 0 || s->NH % s->NKV != 0 ||
	    s->hs <= 0 || s->window < 0)
		return sc_errf(SC_EINVAL,
			       "%s: bad shape B=%d T=%d NH=%d NKV=%d hs=%d window=%d (NH must "
			       "divide by NKV)",
			       op, s->B, s->T, s->NH, s->NKV, s->hs, s->window);
	if (s->hs > SC_CUDA_ATTN_MAX_HS)
		return sc_errf(SC_ENOTSUP,
			       "%s: head size %d: the CUDA attention kernels take head sizes up "
			       "to %d",
			       op, s->hs, (int)SC_CUDA_ATTN_MAX_HS);
	return SC_OK;
}

static attn_dims attn_dims_of(const sc_attn_shape *s)
{
	attn_dims a;
	a.T = s->T;
	a.NH = s->NH;
	a.NKV = s->NKV;
	a.hs = s->hs;
	a.window = s->window;
	a.ld = (size_t)(s->NH + 2 * s->NKV) * s->hs;
	a.ldo = (size_t)s->NH * s->hs;
	a.scale = (float)(1.0 / sqrt((double)s->hs)); /* as the CPU */
	return a;
}

template <int HS, int BR, int BC>
static sc_err forward_tiles(sc_cuda_ctx *c, float *out, float *lse, const float *qkv,
			    const sc_attn_shape *s)
{
	void (*flash_forward)(float *, float *, const float *, attn_dims) =
	    flash_forward_kernel<HS, BR, BC>;
	dim3 grid((unsigned)(s->B * s->NH), (unsigned)((s->T + BR - 1) / BR));
	SC_LAUNCH(flash_forward, grid, BR * LANES, c->stream)(out, lse, qkv, attn_dims_of(s));
	SC_LAUNCH_CHECK(flash_forward_kernel);
	return SC_OK;
}

template <int HS, int BR, int BC>
static sc_err backward_tiles(sc_cuda_ctx *c, float *dqkv, float *dsum, const float *dout,
			     const float *qkv, const float *out, const float *lse,
			     const sc_attn_shape *s)
{
	attn_dims a = attn_dims_of(s);
	void (*flash_dq)(float *, float *, const float *, const float *, const float *,
			 const float *, attn_dims) = flash_backward_dq_kernel<HS, BR, BC>;
	void (*flash_dkv)(float *, const float *, const float *, const float *, const float *,
			  attn_dims) = flash_backward_dkv_kernel<HS, BR, BC>;
	dim3 grid_q((unsigned)(s->B * s->NH), (unsigned)((s->T + BR - 1) / BR));
	dim3 grid_k((unsigned)(s->B * s->NKV), (unsigned)((s->T + BC - 1) / BC));
	SC_LAUNCH(flash_dq, grid_q, BR * LANES, c->stream)(dqkv, dsum, dout, qkv, out, lse, a);
	SC_LAUNCH_CHECK(flash_backward_dq_kernel);
	/* after dq on the same stream: it reads the dsum dq wrote */
	SC_LAUNCH(flash_dkv, grid_k, BC * LANES, c->stream)(dqkv, dout, qkv, lse, dsum, a);
	SC_LAUNCH_CHECK(flash_backward_dkv_kernel);
	return SC_OK;
}

/* Tile shapes by head size: 32 x 32 tiles up to 64, 16 x 16 up to 128
 * (within 48 KiB of static shared memory per block). */
#define SC_ATTN_DISPATCH(fn, hs, ...)                                                              \
	((hs) <= 32   ? fn<32, 32, 32>(__VA_ARGS__)                                                \
	 : (hs) <= 64 ? fn<64, 32, 32>(__VA_ARGS__)                                                \
		      : fn<128, 16, 16>(__VA_ARGS__))

sc_err sc_cuda_attention_sizes(sc_backend *be, const sc_attn_shape *s, size_t *state,
			       size_t *scratch)
{
	*state = *scratch = 0;
	SC_TRY(sc_cuda_attn_check("attention", s));
	return sc_backend_attention_sizes_of("cuda", s, state, scratch); /* one formula */
}

sc_err sc_cuda_attention_forward(sc_backend *be, float *out, float *lse, const float *qkv,
				 const sc_attn_shape *s)
{
	SC_TRY(sc_cuda_attn_check("attention_forward", s));
	if (!s->B || !s->T)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	return SC_ATTN_DISPATCH(forward_tiles, s->hs, c, out, lse, qkv, s);
}

sc_err sc_cuda_attention_backward(sc_backend *be, float *dqkv, float *dsum, const float *dout,
				  const float *qkv, const float *out, const float *lse,
				  const sc_attn_shape *s)
{
	SC_TRY(sc_cuda_attn_check("attention_backward", s));
	if (!s->B || !s->T)
		return SC_OK;
	SC_CUDA_ENTER(be, c);
	return SC_ATTN_DISPATCH(backward_tiles, s->hs, c, dqkv, dsum, dout, qkv, out, lse, s);
}
