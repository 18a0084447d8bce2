/* emu.cc — the CUDA emulator's engine (see cuda_runtime.h): blocks of
 * coroutine threads with real barriers, a synchronous runtime and cuBLAS on
 * OpenBLAS.
 *
 * Scheduling: a block's threads run one at a time, each until it reaches a
 * barrier (__syncthreads, a shuffle, __syncwarp) or returns; then the
 * barriers are resolved and the next round starts. Each round runs the
 * ready threads in a fresh pseudo-random order (SC_EMU_ORDER=forward or
 * reverse to fix it), so a kernel that reads shared memory another thread
 * writes in the same round — a missing barrier — gives order-dependent,
 * wrong results instead of passing by luck.
 *
 * SC_EMU_STATS=1 prints, at exit, launches, blocks, threads and seconds per
 * kernel. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <cblas.h>

#include "cublas_v2.h"
#include "cuda_runtime.h"

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

/* A stream: the work queued on it, run in order when it is waited for. */
struct sc_emu_stream {
	unsigned flags;
	std::mutex mu; /* held while its work runs */
	std::deque<std::function<void(void)>> work;
};
struct sc_emu_event {
	unsigned flags;
	cudaStream_t stream; /* where it was last recorded */
};

namespace
{
sc_emu_stream null_stream;
std::mutex streams_mu;
std::set<sc_emu_stream *> streams{ &null_stream };

sc_emu_stream *stream_of(cudaStream_t s)
{
	return s ? s : &null_stream;
}

void enqueue(cudaStream_t s, std::function<void(void)> f)
{
	sc_emu_stream *st = stream_of(s);
	std::lock_guard<std::mutex> lock(st->mu);
	st->work.push_back(std::move(f));
}

/* Runs everything queued on s, in order. */
void flush(cudaStream_t s)
{
	sc_emu_stream *st = stream_of(s);
	std::lock_guard<std::mutex> lock(st->mu);
	while (!st->work.empty()) {
		std::function<void(void)> f = std::move(st->work.front());
		st->work.pop_front();
		f();
	}
}

void flush_all(void)
{
	std::vector<sc_emu_stream *> all;
	{
		std::lock_guard<std::mutex> lock(streams_mu);
		all.assign(streams.begin(), streams.end());
	}
	for (sc_emu_stream *st : all)
		flush(st);
}
} /* namespace */

namespace
{

[[noreturn]] void emu_die(const char *kernel, const char *fmt, const char *detail)
{
	fprintf(stderr, "cuda emulator: kernel %s: ", kernel ? kernel : "(none)");
	fprintf(stderr, fmt, detail);
	fputc('\n', stderr);
	abort();
}

enum thread_state { T_READY, T_SYNC, T_WARP, T_DONE };

/* A coroutine's saved context. On x86-64 a stack pointer: the callee-saved
 * registers are pushed on the coroutine's own stack by coro_swap, which is
 * a few instructions, where swapcontext makes two system calls (it saves
 * the signal mask) and would dominate the emulator's time. Elsewhere,
 * ucontext. */
struct coro {
#if defined(__x86_64__)
	void *sp;
#else
	ucontext_t uc;
#endif
};

struct emu_thread {
	coro ctx;
	thread_state state;
	uint3 idx;
	/* the pending warp operation, and its result */
	unsigned mask;
	uint64_t bits, result;
	int op, arg, width;
};

enum { STACK_BYTES = 256 << 10, MAX_THREADS = 1024, WARP = 32 };

struct emu_block {
	const char *kernel;
	const std::function<void(void)> *body;
	std::vector<emu_thread> threads;
	std::vector<unsigned> order;
	coro sched;
	unsigned cur;
	char *stacks; /* MAX_THREADS stacks, each above a guard page */
	size_t page;
	uint64_t rng;
	int order_mode; /* 0 random, 1 forward, 2 reverse */
};

thread_local emu_block *blk;
thread_local cudaError_t last_error = cudaSuccess;
/* The sticky error that SC_EMU_FAIL caused, for every thread of the process:
 * a GPU's context is per process. */
std::atomic<int> sticky{ cudaSuccess };

/* SC_EMU_FAIL=KERNEL[:N]: whether this launch of kernel is the one to fail. */
bool injected_fault(const char *kernel)
{
	static std::atomic<long> count{ 0 };
	static const char *spec = getenv("SC_EMU_FAIL");
	if (!spec || !*spec)
		return false;
	const char *colon = strchr(spec, ':');
	size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
	long nth = colon ? atol(colon + 1) : 1;
	if (strlen(kernel) != len || strncmp(kernel, spec, len))
		return false;
	return count.fetch_add(1) + 1 == nth;
}

emu_block *block_state(void)
{
	if (!blk) {
		blk = new emu_block();
		blk->page = (size_t)sysconf(_SC_PAGESIZE);
		size_t slot = STACK_BYTES + blk->page;
		void *p = mmap(NULL, slot * MAX_THREADS, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			emu_die(NULL, "%s", "cannot map thread stacks");
		blk->stacks = (char *)p;
		for (unsigned i = 0; i < MAX_THREADS; i++)
			mprotect(blk->stacks + i * slot, blk->page, PROT_NONE);
		const char *o = getenv("SC_EMU_ORDER");
		blk->order_mode = o && !strcmp(o, "forward")   ? 1
				  : o && !strcmp(o, "reverse") ? 2
							       : 0;
		blk->rng = 0x9e3779b97f4a7c15ull;
	}
	return blk;
}

emu_thread &self(const char *what)
{
	if (!blk || !blk->kernel)
		emu_die(NULL, "%s called outside a kernel", what);
	return blk->threads[blk->cur];
}

#if defined(__x86_64__)
/* coro_swap(save, load): pushes the callee-saved registers, stores the stack
 * pointer in *save, switches to load's stack and pops its registers; ret
 * then resumes wherever load's coroutine called coro_swap (or, the first
 * time, its entry function). */
extern "C" void sc_emu_coro_swap(void **save, void *load);
asm(".text\n"
    ".globl sc_emu_coro_swap\n"
    ".type sc_emu_coro_swap, @function\n"
    "sc_emu_coro_swap:\n"
    "\tpushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n"
    "\tmovq %rsp, (%rdi)\n"
    "\tmovq %rsi, %rsp\n"
    "\tpopq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n"
    "\tret\n"
    ".size sc_emu_coro_swap, .-sc_emu_coro_swap\n");

void thread_main(void)
{
	(*blk->body)();
	blk->threads[blk->cur].state = T_DONE;
	sc_emu_coro_swap(&blk->threads[blk->cur].ctx.sp, blk->sched.sp);
	abort(); /* a finished coroutine is never resumed */
}

/* A coroutine that starts in thread_main on the stack [lo, lo + size): six
 * zero registers for coro_swap to pop, then thread_main as the return
 * address, placed so that thread_main starts with the stack aligned as
 * after a call. */
void coro_init(coro *c, char *lo, size_t size)
{
	uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
	void **sp = (void **)(top - 16);
	*sp = (void *)thread_main;
	for (int r = 0; r < 6; r++)
		*--sp = NULL;
	c->sp = sp;
}

/* scheduler -> coroutine t, back when t yields */
void coro_enter(emu_block *b, coro *t)
{
	sc_emu_coro_swap(&b->sched.sp, t->sp);
}

/* coroutine t -> scheduler */
void coro_yield(emu_block *b, coro *t)
{
	sc_emu_coro_swap(&t->sp, b->sched.sp);
}
#else
void thread_main(void)
{
	(*blk->body)();
	blk->threads[blk->cur].state = T_DONE;
	/* returning resumes the scheduler through uc_link */
}

void coro_init(coro *c, char *lo, size_t size)
{
	getcontext(&c->uc);
	c->uc.uc_stack.ss_sp = lo;
	c->uc.uc_stack.ss_size = size;
	c->uc.uc_link = &blk->sched.uc;
	makecontext(&c->uc, thread_main, 0);
}

void coro_enter(emu_block *b, coro *t)
{
	swapcontext(&b->sched.uc, &t->uc);
}

void coro_yield(emu_block *b, coro *t)
{
	swapcontext(&t->uc, &b->sched.uc);
}
#endif

uint64_t next_rand(void)
{
	uint64_t x = blk->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return blk->rng = x;
}

void shuffle_order(unsigned n)
{
	blk->order.resize(n);
	for (unsigned i = 0; i < n; i++)
		blk->order[i] = blk->order_mode == 2 ? n - 1 - i : i;
	if (blk->order_mode == 0)
		for (unsigned i = n - 1; i > 0; i--) {
			unsigned j = (unsigned)(next_rand() % (i + 1));
			unsigned t = blk->order[i];
			blk->order[i] = blk->order[j];
			blk->order[j] = t;
		}
}

/* Resolves the warp operations every live lane of a warp is waiting at.
 * Returns whether any warp moved. */
bool resolve_warps(unsigned n)
{
	bool moved = false;
	for (unsigned base = 0; base < n; base += WARP) {
		unsigned end = base + WARP < n ? base + WARP : n;
		unsigned waiting = 0, live = 0;
		for (unsigned i = base; i < end; i++) {
			if (blk->threads[i].state != T_DONE)
				live++;
			if (blk->threads[i].state == T_WARP)
				waiting++;
		}
		if (!waiting)
			continue;
		if (waiting != live)
			emu_die(blk->kernel, "%s",
				"a warp shuffle or __syncwarp that not every live lane of the "
				"warp reached (divergent lanes, or lanes at __syncthreads)");
		for (unsigned i = base; i < end; i++) {
			emu_thread &t = blk->threads[i];
			unsigned lane = i - base;
			if (t.state != T_WARP)
				emu_die(blk->kernel, "%s",
					"a lane returned while the others of its warp shuffle");
			if (!(t.mask >> lane & 1u))
				emu_die(blk->kernel, "%s", "a lane shuffles outside its own mask");
			int w = t.width;
			if (w <= 0 || w > WARP || (w & (w - 1)))
				emu_die(blk->kernel, "%s",
					"shuffle width not a power of two <= 32");
			unsigned seg = lane & ~(unsigned)(w - 1), src = lane;
			switch (t.op) {
			case SC_EMU_SHFL_IDX:
				src = seg + ((unsigned)t.arg & (unsigned)(w - 1));
				break;
			case SC_EMU_SHFL_XOR:
				src = lane ^ (unsigned)t.arg;
				if (src >= seg + (unsigned)w || src < seg)
					src = lane;
				break;
			case SC_EMU_SHFL_DOWN:
				src = lane + (unsigned)t.arg;
				if (src >= seg + (unsigned)w)
					src = lane;
				break;
			case SC_EMU_SHFL_UP:
				src = lane >= seg + (unsigned)t.arg ? lane - (unsigned)t.arg : lane;
				break;
			default: break; /* __syncwarp */
			}
			if (base + src >= end || blk->threads[base + src].state != T_WARP ||
			    !(t.mask >> src & 1u))
				emu_die(blk->kernel, "%s",
					"a shuffle reads a lane that is not taking part");
			t.result = blk->threads[base + src].bits;
		}
		for (unsigned i = base; i < end; i++)
			blk->threads[i].state = T_READY;
		moved = true;
	}
	return moved;
}

void run_block(unsigned n)
{
	emu_block *b = blk;
	size_t slot = STACK_BYTES + b->page;
	for (unsigned i = 0; i < n; i++) {
		emu_thread &t = b->threads[i];
		t.state = T_READY;
		t.idx.x = i % blockDim.x;
		t.idx.y = i / blockDim.x % blockDim.y;
		t.idx.z = i / (blockDim.x * blockDim.y);
		coro_init(&t.ctx, b->stacks + i * slot + b->page, STACK_BYTES);
	}
	for (;;) {
		shuffle_order(n);
		for (unsigned k = 0; k < n; k++) {
			unsigned i = b->order[k];
			if (b->threads[i].state != T_READY)
				continue;
			b->cur = i;
			threadIdx = b->threads[i].idx;
			coro_enter(b, &b->threads[i].ctx);
		}
		if (resolve_warps(n))
			continue;
		unsigned done = 0, sync = 0;
		for (unsigned i = 0; i < n; i++) {
			done += b->threads[i].state == T_DONE;
			sync += b->threads[i].state == T_SYNC;
		}
		if (done == n)
			return;
		if (done)
			emu_die(b->kernel, "%s",
				"__syncthreads reached by some threads after others returned");
		for (unsigned i = 0; i < n; i++)
			b->threads[i].state = T_READY;
	}
}

} /* namespace */

void __syncthreads(void)
{
	emu_thread &t = self("__syncthreads");
	t.state = T_SYNC;
	coro_yield(blk, &t.ctx);
}

uint64_t sc_emu_shfl(unsigned mask, uint64_t bits, enum sc_emu_shfl op, int arg, int width)
{
	emu_thread &t = self("a warp shuffle");
	t.state = T_WARP;
	t.mask = mask;
	t.bits = bits;
	t.op = op;
	t.arg = arg;
	t.width = width;
	coro_yield(blk, &t.ctx);
	return blk->threads[blk->cur].result;
}

void __syncwarp(unsigned mask)
{
	(void)sc_emu_shfl(mask, 0, (enum sc_emu_shfl) - 1, 0, WARP);
}

namespace
{
struct kernel_stats {
	unsigned long long launches, blocks, threads;
	double seconds;
};
std::map<std::string, kernel_stats> *stats;

double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void print_stats(void)
{
	fprintf(stderr, "%-36s %9s %10s %12s %9s\n", "cuda emulator: kernel", "launches", "blocks",
		"threads", "seconds");
	for (auto &kv : *stats)
		fprintf(stderr, "%-36s %9llu %10llu %12llu %9.2f\n", kv.first.c_str(),
			kv.second.launches, kv.second.blocks, kv.second.threads, kv.second.seconds);
}
} /* namespace */

/* Runs a launch that its stream has reached. */
static void run_grid(const char *kernel, dim3 grid, dim3 block,
		     const std::function<void(void)> &body)
{
	static const bool want_stats = getenv("SC_EMU_STATS") && *getenv("SC_EMU_STATS") == '1';
	double t0 = want_stats ? now() : 0.0;
	unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
	if (sticky.load() != cudaSuccess || injected_fault(kernel)) {
		int none = cudaSuccess;
		sticky.compare_exchange_strong(none, cudaErrorLaunchFailure);
		last_error = (cudaError_t)sticky.load();
		return;
	}
	emu_block *b = block_state();
	if (b->kernel)
		emu_die(kernel, "%s", "launched from inside another kernel");
	b->kernel = kernel;
	b->body = &body;
	b->threads.resize((size_t)threads);
	blockDim = block;
	gridDim = grid;
	for (unsigned z = 0; z < grid.z; z++)
		for (unsigned y = 0; y < grid.y; y++)
			for (unsigned x = 0; x < grid.x; x++) {
				blockIdx.x = x;
				blockIdx.y = y;
				blockIdx.z = z;
				run_block((unsigned)threads);
			}
	b->kernel = NULL;
	if (want_stats) {
		if (!stats) {
			stats = new std::map<std::string, kernel_stats>();
			atexit(print_stats);
		}
		kernel_stats &k = (*stats)[kernel];
		k.launches++;
		k.blocks += (unsigned long long)grid.x * grid.y * grid.z;
		k.threads += threads * grid.x * grid.y * grid.z;
		k.seconds += now() - t0;
	}
}

void sc_emu_run(const char *kernel, dim3 grid, dim3 block, cudaStream_t s,
		std::function<void(void)> body)
{
	unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
	/* A bad launch shape fails at once, as on a GPU; the kernel itself runs
	 * when its stream is waited for. */
	if (!threads || threads > MAX_THREADS || block.z > 64 || !grid.x || !grid.y || !grid.z ||
	    grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) {
		last_error = cudaErrorInvalidConfiguration;
		return;
	}
	if (sticky.load() != cudaSuccess) {
		last_error = (cudaError_t)sticky.load();
		return;
	}
	enqueue(s, [=]() { run_grid(kernel, grid, block, body); });
}

/* ---- runtime ---- */

namespace
{
/* Device and page-locked host allocations: start -> bytes. */
std::mutex blocks_mu;
std::map<uintptr_t, size_t> device_blocks, host_blocks;
size_t device_bytes;

/* Whether [p, p + bytes) lies inside one allocation of blocks. */
bool inside(const std::map<uintptr_t, size_t> &blocks, const void *p, size_t bytes)
{
	std::lock_guard<std::mutex> lock(blocks_mu);
	uintptr_t a = (uintptr_t)p;
	auto it = blocks.upper_bound(a);
	if (it == blocks.begin())
		return false;
	--it;
	return a - it->first <= it->second && bytes <= it->second - (a - it->first);
}
const size_t DEVICE_TOTAL = (size_t)80 << 30;
int current_device;

cudaError_t fail(cudaError_t e)
{
	last_error = e;
	return e;
}

/* After a sticky error every device call returns it. */
#define STICKY_GUARD()                                                                             \
	do {                                                                                       \
		if (sticky.load() != cudaSuccess)                                                  \
			return fail((cudaError_t)sticky.load());                                   \
	} while (0)
} /* namespace */

const char *cudaGetErrorString(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "no error";
	case cudaErrorInvalidValue: return "invalid argument";
	case cudaErrorMemoryAllocation: return "out of memory";
	case cudaErrorInvalidConfiguration: return "invalid configuration argument";
	case cudaErrorInvalidDevice: return "invalid device ordinal";
	case cudaErrorNoDevice: return "no CUDA-capable device is detected";
	case cudaErrorLaunchFailure: return "unspecified launch failure";
	case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
	default: break;
	}
	return "unknown error";
}

cudaError_t cudaGetLastError(void)
{
	if (sticky.load() != cudaSuccess)
		return (cudaError_t)sticky.load(); /* does not clear */
	cudaError_t e = last_error;
	last_error = cudaSuccess;
	return e;
}

cudaError_t cudaPeekAtLastError(void)
{
	if (sticky.load() != cudaSuccess)
		return (cudaError_t)sticky.load();
	return last_error;
}

cudaError_t cudaGetDeviceCount(int *count)
{
	*count = 1;
	return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
	if (device != 0)
		return fail(cudaErrorInvalidDevice);
	current_device = device;
	return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
	*device = current_device;
	return cudaSuccess;
}

/* New device memory holds garbage (all-ones bytes: NaN as floats), as
 * cudaMalloc's may. */
cudaError_t cudaMalloc(void **p, size_t bytes)
{
	STICKY_GUARD();
	*p = NULL;
	std::lock_guard<std::mutex> lock(blocks_mu);
	if (bytes > DEVICE_TOTAL - device_bytes)
		return fail(cudaErrorMemoryAllocation);
	void *q = malloc(bytes ? bytes : 1);
	if (!q)
		return fail(cudaErrorMemoryAllocation);
	memset(q, 0xff, bytes);
	device_blocks[(uintptr_t)q] = bytes;
	device_bytes += bytes;
	*p = q;
	return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
	flush_all(); /* cudaFree waits for the device */
	STICKY_GUARD();
	if (!p)
		return cudaSuccess;
	std::lock_guard<std::mutex> lock(blocks_mu);
	auto it = device_blocks.find((uintptr_t)p);
	if (it == device_blocks.end())
		return fail(cudaErrorInvalidValue);
	device_bytes -= it->second;
	device_blocks.erase(it);
	free(p);
	return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes)
{
	*p = malloc(bytes ? bytes : 1);
	if (!*p)
		return fail(cudaErrorMemoryAllocation);
	std::lock_guard<std::mutex> lock(blocks_mu);
	host_blocks[(uintptr_t)*p] = bytes;
	return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags)
{
	(void)flags;
	return cudaMallocHost(p, bytes);
}

cudaError_t cudaFreeHost(void *p)
{
	flush_all(); /* as cudaFree */
	if (!p)
		return cudaSuccess;
	std::lock_guard<std::mutex> lock(blocks_mu);
	if (!host_blocks.erase((uintptr_t)p))
		return fail(cudaErrorInvalidValue);
	free(p);
	return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
	std::lock_guard<std::mutex> lock(blocks_mu);
	*total_bytes = DEVICE_TOTAL;
	*free_bytes = DEVICE_TOTAL - device_bytes;
	return cudaSuccess;
}

void sc_emu_check_pointer(const char *kernel, int index, const void *p)
{
	if (p && !inside(device_blocks, p, 1)) {
		char what[96];
		snprintf(what, sizeof(what), "argument %d is not device memory (a host pointer?)",
			 index);
		emu_die(kernel, "%s", what);
	}
}

/* A copy whose pointers do not match its kind (a host pointer given as
 * device memory, a range past an allocation's end) is undefined on a GPU:
 * here it stops the process. */
void check_copy(const void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
	bool dst_dev = inside(device_blocks, dst, bytes),
	     src_dev = inside(device_blocks, src, bytes);
	bool dst_any = inside(device_blocks, dst, 1), src_any = inside(device_blocks, src, 1);
	bool ok = true;
	switch (kind) {
	case cudaMemcpyHostToDevice: ok = dst_dev && !src_any; break;
	case cudaMemcpyDeviceToHost: ok = src_dev && !dst_any; break;
	case cudaMemcpyDeviceToDevice: ok = src_dev && dst_dev; break;
	case cudaMemcpyHostToHost: ok = !src_any && !dst_any; break;
	default: ok = (dst_dev || !dst_any) && (src_dev || !src_any); break;
	}
	if (!ok)
		emu_die(NULL, "%s",
			"cudaMemcpy: a pointer is not memory of the kind the copy names, or "
			"the range runs past its allocation");
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
	flush_all();
	STICKY_GUARD();
	if (bytes && (!dst || !src))
		return fail(cudaErrorInvalidValue);
	if (bytes)
		check_copy(dst, src, bytes, kind);
	memmove(dst, src, bytes);
	return cudaSuccess;
}

/* Queued on s. Host memory that is not page-locked behaves as on a GPU: a
 * source is read at once (the runtime stages it), a destination is written
 * at once after s's earlier work (the call waits). */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
			    cudaStream_t s)
{
	STICKY_GUARD();
	if (bytes && (!dst || !src))
		return fail(cudaErrorInvalidValue);
	if (!bytes)
		return cudaSuccess;
	check_copy(dst, src, bytes, kind);
	bool src_dev = inside(device_blocks, src, 1), dst_dev = inside(device_blocks, dst, 1);
	if (!dst_dev && !inside(host_blocks, dst, bytes)) { /* into pageable memory */
		flush(s);
		STICKY_GUARD();
		memmove(dst, src, bytes);
		return cudaSuccess;
	}
	if (!src_dev && !inside(host_blocks, src, bytes)) { /* from pageable memory */
		auto staged = std::make_shared<std::vector<char>>((const char *)src,
								  (const char *)src + bytes);
		enqueue(s, [=]() { memcpy(dst, staged->data(), bytes); });
		return cudaSuccess;
	}
	enqueue(s, [=]() { memmove(dst, src, bytes); });
	return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s)
{
	STICKY_GUARD();
	if (bytes && !p)
		return fail(cudaErrorInvalidValue);
	if (bytes && !inside(device_blocks, p, bytes))
		emu_die(NULL, "%s", "cudaMemsetAsync: not device memory, or past its allocation");
	enqueue(s, [=]() { memset(p, value, bytes); });
	return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
	STICKY_GUARD();
	*s = new sc_emu_stream();
	(*s)->flags = flags;
	std::lock_guard<std::mutex> lock(streams_mu);
	streams.insert(*s);
	return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	if (!s)
		return fail(cudaErrorInvalidValue);
	flush(s); /* its queued work still completes */
	{
		std::lock_guard<std::mutex> lock(streams_mu);
		streams.erase(s);
	}
	delete s;
	return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
	flush(s);
	STICKY_GUARD(); /* a fault in the work just run surfaces here */
	return cudaSuccess;
}

/* Runs the event's stream at once: earlier than a GPU would, never later. */
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags)
{
	(void)s;
	(void)flags;
	if (!e)
		return fail(cudaErrorInvalidValue);
	flush(e->stream);
	return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
	*e = new sc_emu_event{ flags, NULL };
	return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
	delete e;
	return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
	if (!e)
		return fail(cudaErrorInvalidValue);
	e->stream = s;
	return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
	if (!e)
		return fail(cudaErrorInvalidValue);
	flush(e->stream);
	STICKY_GUARD();
	return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
	flush_all();
	STICKY_GUARD();
	return cudaSuccess;
}

/* ---- cuBLAS ---- */

struct sc_emu_cublas {
	cublasMath_t mode;
	cudaStream_t stream; /* where its calls are queued */
};

const char *cublasGetStatusString(cublasStatus_t s)
{
	switch (s) {
	case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
	case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
	case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
	case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
	case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
	case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
	}
	return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
	*h = new sc_emu_cublas{ CUBLAS_DEFAULT_MATH, NULL };
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h)
{
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
	if (!h)
		return CUBLAS_STATUS_NOT_INITIALIZED;
	h->stream = s;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
	if (!h)
		return CUBLAS_STATUS_NOT_INITIALIZED;
	h->mode = mode;
	return CUBLAS_STATUS_SUCCESS;
}

namespace
{

/* x rounded to TF32: 10 explicit mantissa bits, to nearest (ties away). */
float to_tf32(float x)
{
	uint32_t u;
	memcpy(&u, &x, sizeof(u));
	if ((u & 0x7f800000u) != 0x7f800000u) {
		u += 0x1000u;
		u &= ~0x1fffu;
	}
	memcpy(&x, &u, sizeof(u));
	return x;
}

/* The column-major matrix of rows x cols at p, stride ld, rounded to TF32
 * into tmp (same layout); returns tmp's data. */
const float *tf32_copy(std::vector<float> &tmp, const float *p, int rows, int cols, int ld)
{
	size_t n = cols ? (size_t)ld * (cols - 1) + rows : 0;
	tmp.assign(p, p + n);
	for (float &v : tmp)
		v = to_tf32(v);
	return tmp.data();
}

/* The column-major rows x cols matrix at p, stride ld, elements of elem
 * bytes, must be device memory: cuBLAS given a host pointer or a short
 * buffer faults on a GPU. */
void check_matrix(const char *what, const void *p, int rows, int cols, int ld,
		  size_t elem = sizeof(float), const char *call = "cublasSgemm")
{
	size_t n = rows && cols ? (size_t)ld * (cols - 1) + rows : 0;
	if (n && !inside(device_blocks, p, n * elem))
		emu_die(call, "%s is not device memory of the size the call implies", what);
}

/* At the call: the operands must be device memory of the sizes implied. */
void gemm_operands(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *a,
		   int lda, const float *b, int ldb, const float *c, int ldc)
{
	if (k > 0) {
		check_matrix("A", a, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda);
		check_matrix("B", b, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb);
	}
	check_matrix("C", c, m, n, ldc);
}

/* When the stream reaches it: the product, with the math mode of the call. */
void gemm_run(cublasMath_t mode, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
	      float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c,
	      int ldc)
{
	if (sticky.load() != cudaSuccess)
		return;
	std::vector<float> ta32, tb32;
	if (mode == CUBLAS_TF32_TENSOR_OP_MATH && k > 0) {
		a = tf32_copy(ta32, a, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda);
		b = tf32_copy(tb32, b, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb);
	}
	if (k == 0) { /* C = beta C; beta 0 overwrites whatever C held */
		for (int j = 0; j < n; j++)
			for (int i = 0; i < m; i++) {
				float *p = c + (size_t)j * ldc + i;
				*p = beta == 0.0f ? 0.0f : beta * *p;
			}
		return;
	}
	cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
		    tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, a, lda, b, ldb,
		    beta, c, ldc);
	return;
}

cublasStatus_t gemm_check(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
			  int n, int k, int lda, int ldb, int ldc)
{
	int a_rows = ta == CUBLAS_OP_N ? m : k, b_rows = tb == CUBLAS_OP_N ? k : n;
	if (!h)
		return CUBLAS_STATUS_NOT_INITIALIZED;
	if (sticky.load() != cudaSuccess)
		return CUBLAS_STATUS_EXECUTION_FAILED;
	if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) ||
	    ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1))
		return CUBLAS_STATUS_INVALID_VALUE;
	return CUBLAS_STATUS_SUCCESS;
}

} /* namespace */

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
			   int n, int k, const float *alpha, const float *a, int lda,
			   const float *b, int ldb, const float *beta, float *c, int ldc)
{
	cublasStatus_t s = gemm_check(h, ta, tb, m, n, k, lda, ldb, ldc);
	if (s != CUBLAS_STATUS_SUCCESS || !m || !n)
		return s;
	gemm_operands(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
	cublasMath_t mode = h->mode;
	float al = *alpha, be = *beta; /* host pointer mode: read at the call */
	enqueue(h->stream,
		[=]() { gemm_run(mode, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc); });
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
					 cublasOperation_t tb, int m, int n, int k,
					 const float *alpha, const float *a, int lda,
					 long long stride_a, const float *b, int ldb,
					 long long stride_b, const float *beta, float *c, int ldc,
					 long long stride_c, int batch)
{
	cublasStatus_t s = gemm_check(h, ta, tb, m, n, k, lda, ldb, ldc);
	if (s == CUBLAS_STATUS_SUCCESS && batch < 0)
		s = CUBLAS_STATUS_INVALID_VALUE;
	if (s != CUBLAS_STATUS_SUCCESS || !m || !n)
		return s;
	cublasMath_t mode = h->mode;
	float al = *alpha, be = *beta;
	for (int i = 0; i < batch; i++)
		gemm_operands(ta, tb, m, n, k, a + i * stride_a, lda, b + i * stride_b, ldb,
			      c + i * stride_c, ldc);
	enqueue(h->stream, [=]() {
		for (int i = 0; i < batch; i++)
			gemm_run(mode, ta, tb, m, n, k, al, a + i * stride_a, lda, b + i * stride_b,
				 ldb, be, c + i * stride_c, ldc);
	});
	return CUBLAS_STATUS_SUCCESS;
}

namespace
{

size_t type_bytes(cudaDataType t)
{
	return t == CUDA_R_16BF ? 2 : 4;
}

/* The column-major rows x cols matrix at p (stride ld, type t) as fp32 in
 * tmp, same layout; bf16 widens exactly. */
const float *widen(std::vector<float> &tmp, const void *p, cudaDataType t, int rows, int cols,
		   int ld)
{
	size_t n = rows && cols ? (size_t)ld * (cols - 1) + rows : 0;
	if (t == CUDA_R_32F)
		return (const float *)p;
	tmp.resize(n);
	const uint16_t *h = (const uint16_t *)p;
	for (size_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)h[i] << 16;
		memcpy(&tmp[i], &u, sizeof(u));
	}
	return tmp.data();
}

} /* namespace */

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
			    int n, int k, const void *alpha, const void *a, cudaDataType a_type,
			    int lda, const void *b, cudaDataType b_type, int ldb, const void *beta,
			    void *c, cudaDataType c_type, int ldc, cublasComputeType_t compute,
			    cublasGemmAlgo_t algo)
{
	cublasStatus_t s = gemm_check(h, ta, tb, m, n, k, lda, ldb, ldc);
	if (s != CUBLAS_STATUS_SUCCESS)
		return s;
	if (c_type != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F || a_type != b_type ||
	    (a_type != CUDA_R_32F && a_type != CUDA_R_16BF) || algo != CUBLAS_GEMM_DEFAULT)
		return CUBLAS_STATUS_NOT_SUPPORTED;
	if (!m || !n)
		return s;
	int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
	int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
	if (k > 0) {
		check_matrix("A", a, a_rows, a_cols, lda, type_bytes(a_type), "cublasGemmEx");
		check_matrix("B", b, b_rows, b_cols, ldb, type_bytes(b_type), "cublasGemmEx");
	}
	check_matrix("C", c, m, n, ldc, sizeof(float), "cublasGemmEx");
	float al = *(const float *)alpha, be = *(const float *)beta;
	cublasMath_t mode = h->mode;
	enqueue(h->stream, [=]() {
		std::vector<float> wa, wb;
		const float *fa = k ? widen(wa, a, a_type, a_rows, a_cols, lda) : NULL;
		const float *fb = k ? widen(wb, b, b_type, b_rows, b_cols, ldb) : NULL;
		gemm_run(mode, ta, tb, m, n, k, al, fa, lda, fb, ldb, be, (float *)c, ldc);
	});
	return CUBLAS_STATUS_SUCCESS;
}
