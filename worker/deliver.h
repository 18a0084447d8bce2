/* deliver.h — a registered model on a worker (deliver.c): its manifest from
 * the coordinator (Coordinator.ModelShow), and its tensors from the
 * worker's cache (tcache.h), each fetched on first use when the cache lacks
 * it — exactly the tensors a segment asks for, in chunks of
 * DELIVER_CHUNK bytes with DELIVER_WINDOW requests outstanding
 * (Coordinator.FetchTensor), its sha256 checked before use. A transfer that
 * breaks resumes at the chunks that are missing (the next assignment, or
 * after a restart). A tensor whose bytes hash wrong is fetched once more,
 * then refused with an error naming it; it is never used.
 *
 * SPLITCHAIN_TEST_FETCH_DELAY_MS (tests only) delays every chunk request.
 *
 * Threads: one worker_model is used by one thread at a time (the Assign
 * handler, under worker.mu); the fetch threads it starts are its own.
 */
#ifndef SC_DELIVER_H
#define SC_DELIVER_H

#include <stdint.h>

#include "sc_config.h"
#include "sc_rpc.h"
#include "sc_weights.h"
#include "tcache.h"

#define DELIVER_CHUNK     (4u << 20)
#define DELIVER_WINDOW    4
#define DELIVER_MAX_PEERS 4           /* peers tried for one tensor before the coordinator */
#define DELIVER_MAX_REPLY (16u << 20) /* the largest range Worker.FetchTensor returns */

typedef struct worker_model worker_model;

/* Fetches the manifest of the registered model called name from the
 * coordinator over cl (borrowed) and parses its configuration into *mc.
 * With self_id (our worker id; 0: none) a tensor the cache lacks is asked
 * first of the peers that cache it over a faster link than the
 * coordinator's (Coordinator.TensorSources, Worker.FetchTensor), each
 * checked like any other.
 * digest (may be empty) is the one the job was submitted with: another is
 * an error (the model was registered again since). Tensors go through
 * cache (borrowed; both outlive the model). bulk (NULL or ""): the
 * coordinator's address for tensor chunks (RegisterReply.fetch_addr),
 * dialed on a connection of the model's own so that chunks never queue
 * ahead of the worker's heartbeats; else the chunks come over cl. *out =
 * new, close with worker_model_close. */
sc_err worker_model_open(sc_rpc_client *cl, const char *bulk, sc_tcache *cache, uint64_t self_id,
			 const char *name, const char *digest, sc_model_config *mc,
			 worker_model **out);

/* Where m fetches from the coordinator: its tensor listener's address, or
 * "the RPC connection". */
const char *worker_model_bulk(const worker_model *m);

/* *out = weights whose tensors come from m (new; close with
 * sc_weights_close before worker_model_close). */
sc_err worker_model_weights(worker_model *m, sc_weights **out);

/* What m did: tensors found in the cache, tensors fetched and their bytes,
 * and of those the tensors and bytes that came from peers. */
void worker_model_stats(const worker_model *m, int *cached, int *fetched, uint64_t *bytes,
			int *from_peers, uint64_t *peer_bytes);

/* Worker.FetchTensor (arg: the worker): a byte range of a tensor in this
 * worker's cache, for a peer (which checks its hash); NOT_FOUND when it is
 * not cached (or the worker has no cache). */
void worker_fetch_tensor(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep);

/* Tells the coordinator what cache holds now (Coordinator.ReportCache), as
 * worker self_id, over cl; failures are logged. */
void worker_report_cache(sc_rpc_client *cl, sc_tcache *cache, uint64_t self_id);

/* 1 when a transfer of m broke (the coordinator unreachable, a chunk that
 * did not come): the kept chunks make another try resume, so the caller
 * answers UNAVAILABLE (the coordinator assigns again) rather than failing
 * the job. 0 otherwise, and for NULL. */
int worker_model_broken(const worker_model *m);

/* Releases every tensor m handed out and frees m. Accepts NULL. */
void worker_model_close(worker_model *m);

#endif
