/* cuda_runtime.h — the CUDA emulator's stand-in for the CUDA runtime header.
 *
 * tests/cuda_emu compiles the CUDA backend's own sources (the .cu files of common/backend/cuda)
 * as C++ against this header and cublas_v2.h, so that every kernel runs on
 * the CPU: each CUDA thread is a coroutine, __syncthreads() and the warp
 * shuffles are real barriers between them, __shared__ arrays are shared by
 * the threads of one block and nothing else. The operations and the tests
 * that hold them to the CPU backend (cuda_test, segment_cuda_test) then run
 * in CI on machines without a GPU. What it cannot show — true parallel
 * races, the GPU's resource limits, its libm's last bits, cuBLAS itself — is
 * left to the same tests on a real GPU (tests/gpu).
 *
 * Only what the backend uses is here. Device memory is host memory. Streams
 * are real queues: a launch, an asynchronous copy or memset and a cuBLAS
 * call run only when something waits for their stream (a stream or event
 * synchronisation, cudaFree, a copy into pageable memory), as late as a GPU
 * may run them; a copy from page-locked memory reads it then. So a result
 * read on the host before its wait is stale here, as it can be on a GPU. A kernel
 * that breaks CUDA's rules in a way the emulator can see (a barrier not all
 * threads reach, a shuffle a lane skips, a bad launch shape) stops the
 * process with a message naming the kernel; so does a kernel, copy, memset
 * or cuBLAS call given a host pointer where device memory belongs, or a
 * range past an allocation's end (on a GPU: a fault or silent corruption).
 *
 * Faults: SC_EMU_FAIL=KERNEL[:N] makes the N-th launch (default the first)
 * of the kernel named KERNEL (as its SC_LAUNCH names it) fail with
 * cudaErrorLaunchFailure, which then sticks as on a GPU: every later
 * runtime call returns it and cuBLAS answers CUBLAS_STATUS_EXECUTION_FAILED.
 *
 * Limits: memory is sequentially consistent, so a warp shuffle also orders
 * the shared-memory writes made before it (a GPU promises that only for
 * __syncwarp and __syncthreads): a missing __syncwarp right after a shuffle
 * goes unseen. Shared arrays keep their contents from one block to the next
 * (a GPU's start undefined). Math functions are the host's libm.
 */
#ifndef SC_CUDA_EMU_RUNTIME_H
#define SC_CUDA_EMU_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

/* ---- language ---- */

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* One copy per host thread; the threads of a block all run on it, one
 * block at a time. */
#define __shared__ static thread_local

struct uint3 {
	unsigned x, y, z;
};

struct dim3 {
	unsigned x, y, z;
	dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_)
	{
	}
};

extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

void __syncthreads(void);
void __syncwarp(unsigned mask = 0xffffffffu);

/* Warp shuffles: every live lane of the warp must make the same call. */
enum sc_emu_shfl { SC_EMU_SHFL_IDX, SC_EMU_SHFL_XOR, SC_EMU_SHFL_DOWN, SC_EMU_SHFL_UP };
uint64_t sc_emu_shfl(unsigned mask, uint64_t bits, enum sc_emu_shfl op, int arg, int width);

template <typename V>
inline V sc_emu_shfl_t(unsigned mask, V v, enum sc_emu_shfl op, int arg, int width)
{
	static_assert(sizeof(V) <= sizeof(uint64_t), "shuffle of at most 8 bytes");
	uint64_t bits = 0;
	memcpy(&bits, &v, sizeof(V));
	bits = sc_emu_shfl(mask, bits, op, arg, width);
	memcpy(&v, &bits, sizeof(V));
	return v;
}

template <typename V> inline V __shfl_sync(unsigned mask, V v, int src, int width = 32)
{
	return sc_emu_shfl_t(mask, v, SC_EMU_SHFL_IDX, src, width);
}
template <typename V> inline V __shfl_xor_sync(unsigned mask, V v, int lane_mask, int width = 32)
{
	return sc_emu_shfl_t(mask, v, SC_EMU_SHFL_XOR, lane_mask, width);
}
template <typename V> inline V __shfl_down_sync(unsigned mask, V v, unsigned d, int width = 32)
{
	return sc_emu_shfl_t(mask, v, SC_EMU_SHFL_DOWN, (int)d, width);
}
template <typename V> inline V __shfl_up_sync(unsigned mask, V v, unsigned d, int width = 32)
{
	return sc_emu_shfl_t(mask, v, SC_EMU_SHFL_UP, (int)d, width);
}

/* Round-to-nearest intrinsics: the host's IEEE operations (the emulator is
 * built with -ffp-contract=off, so nothing is fused behind their back). */
inline float __fadd_rn(float a, float b)
{
	return a + b;
}
inline float __fsub_rn(float a, float b)
{
	return a - b;
}
inline float __fmul_rn(float a, float b)
{
	return a * b;
}
inline float __fdiv_rn(float a, float b)
{
	return a / b;
}
inline float __fsqrt_rn(float a)
{
	return sqrtf(a);
}
inline double __dadd_rn(double a, double b)
{
	return a + b;
}
inline double __dmul_rn(double a, double b)
{
	return a * b;
}
template <typename V> inline V __ldg(const V *p)
{
	return *p;
}

/* ---- runtime API ---- */

typedef enum cudaError {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorInvalidConfiguration = 9,
	cudaErrorInvalidDevice = 101,
	cudaErrorNoDevice = 100,
	cudaErrorECCUncorrectable = 214,
	cudaErrorIllegalAddress = 700,
	cudaErrorLaunchTimeout = 702,
	cudaErrorAssert = 710,
	cudaErrorHardwareStackError = 714,
	cudaErrorIllegalInstruction = 715,
	cudaErrorMisalignedAddress = 716,
	cudaErrorInvalidAddressSpace = 717,
	cudaErrorInvalidPc = 718,
	cudaErrorLaunchFailure = 719,
} cudaError_t;

typedef enum cudaMemcpyKind {
	cudaMemcpyHostToHost = 0,
	cudaMemcpyHostToDevice = 1,
	cudaMemcpyDeviceToHost = 2,
	cudaMemcpyDeviceToDevice = 3,
	cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef struct sc_emu_stream *cudaStream_t;
typedef struct sc_emu_event *cudaEvent_t;

enum {
	cudaStreamDefault = 0,
	cudaStreamNonBlocking = 1,
	cudaEventDefault = 0,
	cudaEventDisableTiming = 2,
	cudaHostAllocDefault = 0,
};

const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
			    cudaStream_t s);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaDeviceSynchronize(void);

/* ---- launches ---- */

/* Stops the process unless p is NULL or device memory: a kernel given a
 * host pointer would fault on a GPU. Index counts the kernel's arguments. */
void sc_emu_check_pointer(const char *kernel, int index, const void *p);
template <class T> inline void sc_emu_check_arg(const char *kernel, int index, T *p)
{
	sc_emu_check_pointer(kernel, index, (const void *)p);
}
template <class T> inline void sc_emu_check_arg(const char *, int, const T &)
{
}

/* Runs body as every thread of a grid x block launch, block after block. */
void sc_emu_run(const char *kernel, dim3 grid, dim3 block, cudaStream_t s,
		std::function<void(void)> body);

template <class K> struct sc_emu_launcher {
	const char *name;
	dim3 grid, block;
	cudaStream_t stream;
	K kernel;
	template <class... A> void operator()(A... args) const
	{
		int index = 0;
		(sc_emu_check_arg(name, index++, args), ...);
		K k = kernel;
		sc_emu_run(name, grid, block, stream, [=]() { k(args...); });
	}
};

template <class K>
sc_emu_launcher<K> sc_emu_launch(const char *name, dim3 grid, dim3 block, cudaStream_t s, K k)
{
	return sc_emu_launcher<K>{ name, grid, block, s, k };
}

/* The backend's one launch form (cuda_impl.h): SC_LAUNCH(k, grid, block,
 * stream)(args...). */
#define SC_UNROLL
#define SC_LAUNCH(kernel, grid, block, stream)                                                     \
	sc_emu_launch(#kernel, dim3(grid), dim3(block), (stream), kernel)

#endif
