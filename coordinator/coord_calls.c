/* coord_calls.c — a runner's calls to all its stages at once, one thread
 * per stage, the first failure aborting the rest. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_run.h"

/* Fails every stage's call in flight, c->mu held (release() reopens the
 * clients). */
void run_abort_locked(runner *r)
{
	if (r->clients_live)
		for (int i = 0; i < r->n; i++)
			sc_rpc_client_abort(r->st[i].cl);
}

void run_abort_calls(runner *r)
{
	pthread_mutex_lock(&r->c->mu);
	run_abort_locked(r);
	pthread_mutex_unlock(&r->c->mu);
}

static void *call_thread(void *p)
{
	stage *s = p;
	s->rep = NULL;
	if (!s->method) {
		s->rc = SC_OK;
		s->status = SC_STATUS_CANCELLED;
		return NULL;
	}
	s->msg[0] = '\0';
	s->rc = sc_rpc_call_pb(s->cl, s->method, s->req, s->desc, s->timeout_ms, &s->status, s->msg,
			       sizeof(s->msg), &s->rep);
	/* The first failure ends the round for every stage: the others may be
	 * waiting on this one's tensors, and would wait out their timeouts. */
	int none = -1;
	if ((s->rc || s->status != SC_STATUS_OK) &&
	    atomic_compare_exchange_strong(&s->run->first_bad, &none, s->index))
		run_abort_calls(s->run);
	return NULL;
}

/* Calls every stage at once (each stage's method/req/desc set by the
 * caller); returns the index of the stage that failed first (the others'
 * calls are then aborted), or -1. */
int run_call_all(runner *r, int timeout_ms)
{
	int bad;
	atomic_store(&r->first_bad, -1);
	for (int i = 0; i < r->n; i++) {
		r->st[i].run = r;
		r->st[i].index = i;
		r->st[i].timeout_ms = timeout_ms;
		r->st[i].threaded = pthread_create(&r->st[i].th, NULL, call_thread, &r->st[i]) == 0;
		if (!r->st[i].threaded)
			call_thread(&r->st[i]); /* no thread to be had: call inline */
	}
	for (int i = 0; i < r->n; i++)
		if (r->st[i].threaded)
			pthread_join(r->st[i].th, NULL);
	if ((bad = atomic_load(&r->first_bad)) >= 0)
		return bad;
	for (int i = 0; i < r->n; i++) /* skipped stages (no method) are not failures */
		if (r->st[i].method && (r->st[i].rc || r->st[i].status != SC_STATUS_OK))
			return i;
	return -1;
}

void run_step_calls(runner *r, Splitchain__StepRequest *req, uint32_t step, const int32_t *tokens,
		    const int32_t *targets, size_t rows)
{
	for (int i = 0; i < r->n; i++) {
		splitchain__step_request__init(&req[i]);
		req[i].job_id = (uint64_t)r->job->id;
		req[i].step = step;
		if (i == 0 && tokens) { /* a ring's owner reads its own */
			req[i].tokens.data = (uint8_t *)tokens;
			req[i].tokens.len = rows * sizeof(*tokens);
		}
		if (i == r->n - 1 && targets) {
			req[i].targets.data = (uint8_t *)targets;
			req[i].targets.len = rows * sizeof(*targets);
		}
		r->st[i].method = "Worker.Step";
		r->st[i].req = &req[i].base;
		r->st[i].desc = &splitchain__step_reply__descriptor;
	}
}

void run_free_replies(runner *r)
{
	for (int i = 0; i < r->n; i++) {
		if (r->st[i].rep)
			protobuf_c_message_free_unpacked(r->st[i].rep, NULL);
		r->st[i].rep = NULL;
	}
}

/* How a failed call ends the run: a worker's refusal of the job itself is
 * final; a lost or slow worker only sends the job back to the queue. */
int run_permanent(const stage *s)
{
	return !s->rc &&
	       (s->status == SC_STATUS_INVALID_ARGUMENT || s->status == SC_STATUS_NOT_FOUND ||
		s->status == SC_STATUS_FAILED_PRECONDITION || s->status == SC_STATUS_OUT_OF_RANGE);
}

void run_describe(const stage *s, int i, char *buf, size_t size)
{
	snprintf(buf, size, "stage %d on worker %lld (%s): %s: %s", i, (long long)s->worker_id,
		 s->name, s->rc ? "local error" : sc_status_name(s->status),
		 s->rc ? sc_err_detail() : s->msg);
}

void coord_owner_data(const Splitchain__SubmitRequest *spec, Splitchain__OwnerData *out)
{
	splitchain__owner_data__init(out);
	out->path = spec->data_path;
	out->eval_path = spec->eval_data_path;
	out->eval_split = spec->eval_split;
	out->eval_batches = spec->eval_batches;
	out->skip_bad_lines = spec->skip_bad_lines;
	out->no_pack = spec->no_pack;
	out->no_cache = spec->no_data_cache;
	out->tokenizer_path = spec->tokenizer_path;
}

void run_lora_msg(const Splitchain__SubmitRequest *spec, Splitchain__LoraConfig *out)
{
	*out = *spec->lora;
}
