/* bench_profile.h — a timing backend for the benchmarks: wraps another
 * backend's table of operations, forwards every call and adds its wall time
 * to a per-operation total, and for gemm to a per-shape total (trans_a,
 * trans_b, m, n, k), so that `sc_bench_step --profile` can say where a
 * step's time goes without touching the engine. Operations are timed as
 * the caller sees them: for an asynchronous backend that is the time to
 * queue, so profile the CPU backend only.
 */
#ifndef SC_BENCH_PROFILE_H
#define SC_BENCH_PROFILE_H

#include <stdio.h>

#include "sc_backend.h"

/* *out = a backend that forwards to inner and times each call; takes
 * ownership of inner on success (sc_backend_free(*out) frees both), the
 * caller keeps it on error. SC_EINVAL when sc_backend_ops has gained an
 * entry that bench_profile.c does not forward yet. */
sc_err bench_profile_wrap(sc_backend **out, sc_backend *inner);

/* An experiment, not the engine's behaviour: from now on, gemm calls of
 * fewer than flops floating-point operations (2 m n k) bypass the inner
 * backend and run as one cblas_sgemm on a single thread (the CPU backend's
 * gemm is that call on all its threads), to measure what serial small
 * products (the LoRA adapters' rank-r GEMMs) would gain. 0: off. */
void bench_profile_serial_below(sc_backend *be, double flops);

/* Forgets the totals so far (call after the warm-up step). */
void bench_profile_reset(sc_backend *be);

/* Prints the totals of be (from bench_profile_wrap) to f, per step over
 * `steps` steps of step_s seconds each: one line per operation, and the
 * gemm shapes by time with their GFLOP/s; the rest of step_s is "outside
 * the backend" (the trainer's own host work). */
void bench_profile_report(sc_backend *be, FILE *f, int steps, double step_s);

#endif
