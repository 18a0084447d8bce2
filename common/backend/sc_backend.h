/* sc_backend.h — the compute backend interface: a table of operations plus an
 * opaque context. The CPU backend (OpenBLAS + plain C) is the numerical ground
 * truth; the CUDA backend implements the same table on a GPU. Nothing above
 * this interface knows which one it runs on.
 *
 * Dimension legend, used on every tensor argument below and in the model:
 *   B  micro-batch size            T  sequence length
 *   C  channels (hidden size)      NH query heads, hs the head size
 *   NKV key/value heads (NH % NKV == 0; GPT-2: NKV = NH, hs = C / NH)
 *   QKV (NH + 2 NKV) * hs: a row of q heads | k heads | v heads
 *   F  MLP width (intermediate)    L  layers      V  vocabulary size
 *   r  LoRA rank                   N  rows = B * T
 *
 * Memory: every float / int32 pointer passed to an operation is *device*
 * memory of that backend, from ops.alloc (for the CPU backend that is host
 * memory). Row-major throughout. Arguments go outputs, inputs, sizes; the
 * backward of an op is the d-prefixed mirror of its forward.
 *
 * Errors: every operation returns sc_err. An operation may be asynchronous
 * (CUDA: queued on the backend's one stream); its failure may then surface at
 * the next ops.sync or ops.download, which every caller of results performs.
 *
 * Optional entries (NULL when a backend lacks them), checked for NULL in the
 * sc_backend_* helpers only: gemm_q, encoder_forward_q.
 */
#ifndef SC_BACKEND_H
#define SC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"

typedef struct sc_backend sc_backend;

/* The shape of one causal self-attention call. Each query position t sees
 * key positions max(0, t - window + 1) .. t (window 0: all of 0 .. t);
 * query head h reads key/value head h / (NH / NKV). Scale 1 / sqrt(hs). */
typedef struct sc_attn_shape {
	int B, T;
	int NH, NKV, hs;
	int window; /* 0: full causal */
} sc_attn_shape;

/* A frozen weight kept quantized in device memory: the formats of
 * common/format/sc_quant.h (normative there), restated so that a backend
 * needs no file layer. W is the (rows, cols) row-major float32 matrix it
 * dequantizes to, every element with the same float operations as
 * sc_quant_dequantize_rows:
 *   SC_QW_BF16  q: rows * cols bfloat16 (uint16, 2-byte aligned), W's
 *               layout; w = the bf16 widened to float (exact). No scales.
 *               gemm_q may round op(a) to bf16 too (bf16 x bf16 -> fp32
 *               on hardware that has it: the CPU with oneDNN and
 *               AVX512-BF16/AMX, and CUDA) into tile: with m * k / 2
 *               floats of tile all of op(a) goes in one product, with
 *               fewer a few rows at a time.
 *   SC_QW_INT8  q: rows * cols int8 bytes; w = (float)q * s, s = scales[r]
 *               when scale_rows (nn.Linear (out, in)), else scales[c]
 *               (Conv1D (in, out)).
 *   SC_QW_NF4   element e = r * cols + c is nibble e of q (the first of a
 *               byte in its high nibble), in blocks of 64 elements:
 *               w = codebook[nibble] * a_b, b = e / 64, a_b = scales[b], or
 *               with scales_q (double quantization)
 *               a_b = (float)(int8)scales_q[b] * scales_scale[b / 256]
 *               + *scales_offset.
 * Every pointer is device memory of the backend; a part the format lacks is
 * NULL. The descriptor itself is host memory. */
enum sc_qw_format { SC_QW_INT8, SC_QW_NF4, SC_QW_BF16 };

typedef struct sc_qweight {
	int format;     /* enum sc_qw_format */
	int rows, cols; /* W as stored */
	int scale_rows; /* int8: one scale per row (1) or per column (0) */
	const uint8_t *q;
	const float *scales;        /* int8: (rows or cols); nf4: block absmax (nb) */
	const uint8_t *scales_q;    /* nf4 double quantization: (nb) int8 bytes */
	const float *scales_scale;  /* (ceil(nb / 256)) */
	const float *scales_offset; /* (1) */
	/* int8 / nf4: nonzero asks for bf16 products (a job's --precision
	 * bf16) where the backend has them (the CPU with oneDNN and
	 * AVX512-BF16/AMX, and CUDA): W dequantized to fp32 as above, then rounded to
	 * bf16 (to nearest, ties to even: sc_bf16_from_f32), op(a) rounded
	 * to bf16, the products summed in fp32. tile (bf16 there) then holds
	 * op(a)'s rows (all of them with m * k / 2 floats more than the
	 * columns' k / 2 each) and a panel of W's bf16 columns. Elsewhere,
	 * and for bf16 weights (which always take the bf16 path they can),
	 * it changes nothing. */
	int bf16_compute;
} sc_qweight;

typedef struct sc_backend_ops {
	/* ---- memory ---- */
	/* *out = new zero-filled device buffer of bytes bytes; free with free_buf. */
	sc_err (*alloc)(sc_backend *be, void **out, size_t bytes);
	/* Releases a buffer from alloc. Accepts NULL. */
	void (*free_buf)(sc_backend *be, void *p);
	/* *out = host memory of bytes bytes that upload and download move at
	 * the device's full speed (CUDA: page-locked, so copies are DMA with no
	 * staging; CPU: aligned memory). For buffers that cross between the
	 * data plane and the device on every micro-batch; free with
	 * host_free, which accepts NULL. Not zero-filled. */
	sc_err (*host_alloc)(sc_backend *be, void **out, size_t bytes);
	void (*host_free)(sc_backend *be, void *p);
	/* Host -> device and device -> host copies; download waits for all
	 * queued work, so its data (and any earlier error) is final. */
	sc_err (*upload)(sc_backend *be, void *dst_dev, const void *src_host, size_t bytes);
	sc_err (*download)(sc_backend *be, void *dst_host, const void *src_dev, size_t bytes);
	/* upload, queued: src_host must stay unchanged until the next download
	 * or sync returns (the CPU backend copies at once). The copy then runs
	 * while the host queues the kernels that use it; from host_alloc memory
	 * it is a DMA that does not stall the host at all. */
	sc_err (*upload_async)(sc_backend *be, void *dst_dev, const void *src_host, size_t bytes);
	/* Device -> device copy. */
	sc_err (*copy)(sc_backend *be, void *dst_dev, const void *src_dev, size_t bytes);
	sc_err (*zero)(sc_backend *be, void *dst_dev, size_t bytes);
	/* Waits for all queued work; returns the first error it raised. */
	sc_err (*sync)(sc_backend *be);

	/* ---- dense algebra ---- */
	/* c (m,n) = alpha * op(a) (m,k) @ op(b) (k,n) + beta * c, row-major;
	 * op(x) = x^T when trans_x is nonzero. lda/ldb/ldc are row strides of
	 * the matrices as stored. */
	sc_err (*gemm)(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
		       const float *a, int lda, const float *b, int ldb, float beta, float *c,
		       int ldc);

	/* OPTIONAL. c (m,n) = alpha * op(a) (m,k) @ op(W) (k,n) + beta * c
	 * with W the weight b dequantizes to: op(W) = W^T when trans_b (b
	 * stored (n, k)), else W (b stored (k, n)). The backend dequantizes
	 * a tile of output columns at a time into tile (tile_floats floats of
	 * device memory, the caller's, at least k) and runs gemm on it, so
	 * each element of c is summed over all of k by one gemm call, as gemm
	 * on the whole dequantized W sums it (the same bits when the BLAS runs
	 * a tile with the same kernel as the whole; else within fp32
	 * rounding). No copy of all of W is made. */
	sc_err (*gemm_q)(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
			 const float *a, int lda, const sc_qweight *b, float beta, float *c,
			 int ldc, float *tile, size_t tile_floats);

	/* ---- network operations (families compose these) ---- */
	/* out (B,T,C) = wte[tokens] + wpe[t], or wte[tokens] alone when wpe is
	 * NULL; tokens (B,T) must be < V (checked by the caller on the host). */
	sc_err (*encoder_forward)(sc_backend *be, float *out, const int32_t *tokens,
				  const float *wte, const float *wpe, int B, int T, int C);
	/* OPTIONAL. encoder_forward with the token embedding a quantized
	 * frozen weight wte (V,C) (a bf16 base keeps it SC_QW_BF16): each row
	 * read is dequantized (bf16: widened, exact) with the float operations
	 * gemm_q uses, so out = encoder_forward on the dequantized wte, bit for
	 * bit. No dequantized copy of wte is made. A backend may implement
	 * only some formats (SC_ENOTSUP for the others). */
	sc_err (*encoder_forward_q)(sc_backend *be, float *out, const int32_t *tokens,
				    const sc_qweight *wte, const float *wpe, int B, int T, int C);
	/* out (N,C), mean (N), rstd (N) = LayerNorm(inp (N,C)) * w (C) + b (C). */
	sc_err (*layernorm_forward)(sc_backend *be, float *out, float *mean, float *rstd,
				    const float *inp, const float *w, const float *b, int N, int C,
				    float eps);
	/* dinp (N,C) += dLayerNorm given dout (N,C). No weight gradients: the
	 * norm's weights are frozen. */
	sc_err (*layernorm_backward)(sc_backend *be, float *dinp, const float *dout,
				     const float *inp, const float *w, const float *mean,
				     const float *rstd, int N, int C);
	/* out (N,C), rstd (N) = inp * w / sqrt(mean(inp^2) + eps): RMSNorm. */
	sc_err (*rmsnorm_forward)(sc_backend *be, float *out, float *rstd, const float *inp,
				  const float *w, int N, int C, float eps);
	/* dinp (N,C) += dRMSNorm given dout (N,C) (frozen weights). */
	sc_err (*rmsnorm_backward)(sc_backend *be, float *dinp, const float *dout, const float *inp,
				   const float *w, const float *rstd, int N, int C);
	/* Rotary position embedding, in place on the q and k heads of qkv
	 * (B,T,QKV) (v untouched), Hugging Face's half-split convention: with
	 * x1 = x[0 : hs/2], x2 = x[hs/2 : hs] of a head at position t,
	 *   x1' = x1 cos - x2 sin,  x2' = x2 cos + x1 sin   (cos, sin (T, hs/2)).
	 * inverse != 0 rotates the other way (the backward: applied to dqkv it
	 * turns the gradient of the rotated q, k into that of the unrotated). */
	sc_err (*rope)(sc_backend *be, float *qkv, const float *cos, const float *sin, int B, int T,
		       int NH, int NKV, int hs, int inverse);
	/* The floats of the state attention_forward keeps for the backward and
	 * of the scratch attention_backward needs, for this shape. Backend-
	 * defined: the CPU keeps the probabilities (B,NH,T,T) and needs as much
	 * scratch; the CUDA backend keeps one log-sum-exp per row (B,NH,T) and
	 * needs (B,NH,T) of scratch, so no T x T matrix exists on a GPU. Fails
	 * (SC_EINVAL, SC_ENOTSUP) for a shape the backend cannot run, so that a
	 * segment is refused when it is made, not at its first step. */
	sc_err (*attention_sizes)(sc_backend *be, const sc_attn_shape *s, size_t *state,
				  size_t *scratch);
	/* Causal self-attention (sc_attn_shape). qkv (B,T,QKV) holds the q, k
	 * and v heads of each position. out (B,T,NH*hs); state (attention_sizes)
	 * kept for the backward — on the CPU the softmaxed scores, zero outside
	 * each row's visible keys. */
	sc_err (*attention_forward)(sc_backend *be, float *out, float *state, const float *qkv,
				    const sc_attn_shape *s);
	/* dqkv (B,T,QKV) = dAttention (overwritten, not accumulated; a k/v
	 * head's gradient sums over the query heads that read it), given dout
	 * (B,T,NH*hs) and the forward's qkv, out and state; scratch as
	 * attention_sizes says. */
	sc_err (*attention_backward)(sc_backend *be, float *dqkv, float *scratch, const float *dout,
				     const float *qkv, const float *out, const float *state,
				     const sc_attn_shape *s);
	/* out (n) = GELU(inp), the tanh approximation ("gelu_new"). */
	sc_err (*gelu_forward)(sc_backend *be, float *out, const float *inp, size_t n);
	/* dinp (n) = dout * GELU'(inp) (overwritten). dinp may alias dout. */
	sc_err (*gelu_backward)(sc_backend *be, float *dinp, const float *inp, const float *dout,
				size_t n);
	/* Attention of n new positions against a key/value cache, for
	 * generation. qkv (B,n,QKV) holds the new positions' q, k and v heads
	 * (q and k already rotated); their k and v are first written into the
	 * caches kc, vc (B,P,NKV*hs) at positions pos0 .. pos0+n-1 (pos0 + n <=
	 * P), then each new query at position pos0+i attends to cache positions
	 * max(0, pos0+i-window+1) .. pos0+i. out (B,n,NH*hs). s->T is n;
	 * nothing is kept for a backward. */
	sc_err (*attention_kv)(sc_backend *be, float *out, float *kc, float *vc, const float *qkv,
			       int pos0, int P, const sc_attn_shape *s);
	/* out (N,F) = silu(gate) * up, gu (N,2F) = gate | up per row (SwiGLU). */
	sc_err (*swiglu_forward)(sc_backend *be, float *out, const float *gu, int N, int F);
	/* dgu (N,2F) = the gradient of gate | up (overwritten), given dout (N,F). */
	sc_err (*swiglu_backward)(sc_backend *be, float *dgu, const float *dout, const float *gu,
				  int N, int F);
	/* out (n) = a + b; out may alias a or b. */
	sc_err (*add)(sc_backend *be, float *out, const float *a, const float *b, size_t n);
	/* out (N,OC) += bias (OC) broadcast over rows, which lie ldo >= OC
	 * floats apart (a column block of a wider matrix when ldo > OC). */
	sc_err (*add_bias)(sc_backend *be, float *out, const float *bias, int N, int OC, int ldo);
	/* Fused softmax + cross-entropy over logits (N,V), in place: losses (N)
	 * gets -log p[target] per row, and logits becomes dlogits = (p - onehot) *
	 * dscale. Rows with target < 0 are ignored: loss 0, gradient 0. Targets
	 * must be < V (checked by the caller on the host). */
	sc_err (*crossentropy)(sc_backend *be, float *losses, float *logits, const int32_t *targets,
			       int N, int V, float dscale);

	/* ---- optimizer ---- */
	/* AdamW on n parameters (torch.optim.AdamW's formula, decoupled weight
	 * decay): g = grad * grad_scale; m, v updated; param updated. t is the
	 * 1-based step count for bias correction. */
	sc_err (*adamw)(sc_backend *be, float *param, float *m, float *v, const float *grad,
			size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
			float grad_scale, int t);
	/* *out_host = sum of x[i]^2 over n floats, accumulated in double in a
	 * fixed order (the result is a function of x alone). Synchronous. */
	sc_err (*sumsq)(sc_backend *be, double *out_host, const float *x, size_t n);

	/* Lets gemm use TF32 tensor cores (on) or not (off, the default): a
	 * job's choice, set before its first step. CPU: no effect, GEMMs stay
	 * fp32. */
	sc_err (*set_tf32)(sc_backend *be, int on);

	/* ---- lifetime ---- */
	/* The bytes of memory the device holds (CPU: the machine's RAM; CUDA:
	 * the GPU's), as a worker reports it; 0 if unknown. */
	uint64_t (*memory_bytes)(sc_backend *be);
	/* NULL while the device works; else why it cannot work again in this
	 * process (CUDA: a sticky error such as an illegal address: every later
	 * call fails the same way, and only a new process gets a working
	 * context). Borrowed string. A worker exits when it sees one. */
	const char *(*failure)(sc_backend *be);
	/* Releases the backend and its context. */
	void (*destroy)(sc_backend *be);
} sc_backend_ops;

struct sc_backend {
	const sc_backend_ops *ops;
	const char *name; /* "cpu", "cuda:0" */
	void *ctx;        /* backend-private */
};

/* Creates the backend named by device: "cpu" or "cuda[:N]". threads is the
 * number of CPU threads for the CPU backend (0 = leave the default).
 * *out = new backend; free with sc_backend_free. A CUDA device asked for in
 * a build without CUDA, or absent at run time, gives SC_ENODEV. */
sc_err sc_backend_open(sc_backend **out, const char *device, int threads);

/* The attention_sizes of a backend of kind device ("cpu", "cuda[:N]"),
 * without opening one (for planning memory); the shape is not checked. */
sc_err sc_backend_attention_sizes_of(const char *device, const sc_attn_shape *s, size_t *state,
				     size_t *scratch);

/* Releases be. Accepts NULL. */
void sc_backend_free(sc_backend *be);

/* The CPU backend; *out = new backend, free with sc_backend_free. */
sc_err sc_backend_cpu_open(sc_backend **out, int threads);

/* The CUDA backend on GPU ordinal device, fp32 GEMMs until set_tf32
 * (defined in the CUDA target; in a build without CUDA it returns
 * SC_ENODEV). */
sc_err sc_backend_cuda_open(sc_backend **out, int device);

/* Nonzero when this build contains the CUDA backend. */
int sc_backend_has_cuda(void);

/* Nonzero when be implements gemm_q (quantized frozen weights). */
int sc_backend_has_gemm_q(const sc_backend *be);

/* be's gemm_q; SC_ENOTSUP naming the backend when it has none. */
sc_err sc_backend_gemm_q(sc_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
			 const float *a, int lda, const sc_qweight *b, float beta, float *c,
			 int ldc, float *tile, size_t tile_floats);

/* Nonzero when be implements encoder_forward_q. */
int sc_backend_has_encoder_q(const sc_backend *be);

/* be's encoder_forward_q; SC_ENOTSUP naming the backend when it has none. */
sc_err sc_backend_encoder_forward_q(sc_backend *be, float *out, const int32_t *tokens,
				    const sc_qweight *wte, const float *wpe, int B, int T, int C);

/* Describes the BLAS in use, e.g. "OpenBLAS 0.3.21 (Haswell, 2 threads)".
 * Borrowed static string. */
const char *sc_backend_cpu_describe(void);

/* How the CPU backend be runs gemm_q on SC_QW_BF16 weights (and int8 /
 * nf4 weights with bf16 products): "bf16 matmul (oneDNN 2.6.3,
 * avx512_core_amx)" or "fp32 tiles (why)". Borrowed string, valid until
 * this thread's next call. */
const char *sc_backend_cpu_bf16_kernel(sc_backend *be);

/* Nonzero when the CPU backend be multiplies bf16 weights on oneDNN's bf16
 * matmul now (sc_backend_cpu_bf16_kernel's "bf16 matmul"); 0 on the fp32
 * tiles or for a backend that is not the CPU's. */
int sc_backend_cpu_bf16_on_matmul(sc_backend *be);

/* out (r1 - r0, c1 - c0) bf16, rows ldo apart, = W[r0:r1, c0:c1] of the
 * CPU backend's quantized weight w dequantized to fp32 (sc_qweight) and
 * rounded to bf16 (to nearest, ties to even), as gemm_q's bf16 products
 * see W: with scalar, by the plain C loop; else by the kernel the CPU
 * runs (sc_backend_cpu_dequant_kind). For tests and benchmarks. Borrows w,
 * whose parts are host memory. SC_EINVAL for a range outside W or an
 * unknown format. */
sc_err sc_backend_cpu_dequant_bf16(const sc_qweight *w, int r0, int r1, int c0, int c1,
				   uint16_t *out, size_t ldo, int scalar);
/* "avx512" or "scalar": the CPU's dequantization to bf16. Static string. */
const char *sc_backend_cpu_dequant_kind(void);

/* The CPU backend's two ways to multiply by bf16 weights: oneDNN's bf16
 * matmul (activation rounded to bf16, bf16 x bf16 products summed in fp32)
 * or the fp32 tiles (weights widened to fp32 a tile at a time, OpenBLAS's
 * sgemm; the activation stays fp32). */
typedef enum sc_cpu_bf16_path {
	/* the matmul where it runs faster than the tiles on this CPU
	 * (sc_backend_cpu_bf16_matmul_pays), else the tiles: the default */
	SC_CPU_BF16_AUTO,
	SC_CPU_BF16_MATMUL, /* the matmul wherever the CPU and build have it */
	SC_CPU_BF16_TILES,  /* the tiles always */
} sc_cpu_bf16_path;

/* The automatic choice's rule, for a CPU that multiplies bf16 (has_bf16:
 * AVX512-BF16 in oneDNN's effective ISA), has AMX-BF16 (has_amx) and is
 * AMD's (amd): nonzero where oneDNN's bf16 matmul beat the fp32 tiles when
 * measured (docs/benchmarks.md): with AMX (1.8-3x our fp32 step), and on
 * AMD's AVX512-BF16 (Zen 4: 1.7-2.2x); not on an Intel core with
 * AVX512-BF16 and no AMX (a Cooper Lake, or a Sapphire Rapids whose
 * hypervisor hides AMX), whose bf16 matmul ran at 0.69-0.85x our fp32
 * step and the tiles at 0.92-0.95x. */
int sc_backend_cpu_bf16_matmul_pays(int has_bf16, int has_amx, int amd);

/* Sets how be multiplies bf16 weights. sc_backend_cpu_open starts from
 * the environment's SC_CPU_BF16 (auto, matmul or tiles; unset: auto).
 * SC_CPU_BF16_MATMUL where the build or CPU has no bf16 matmul leaves the
 * tiles (sc_backend_cpu_bf16_kernel says why). For tests and benchmarks:
 * set it before the first step. SC_EINVAL when be is not a CPU backend or
 * path is none of the three. */
sc_err sc_backend_cpu_bf16_path(sc_backend *be, sc_cpu_bf16_path path);

#endif
