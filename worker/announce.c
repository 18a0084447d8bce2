/* announce.c — telling the coordinator the worker exists: Coordinator.Register
 * (retried every second until the coordinator answers), then
 * Coordinator.Heartbeat every heartbeat_ms. A heartbeat answered NOT_FOUND
 * (a coordinator that restarted, or forgot us) registers again; an
 * unreachable coordinator is retried for as long as the worker runs. A
 * device that reports a lasting failure ends the heartbeats and the
 * process (exit status 3). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "sc_log.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"
#include "worker.h"

#define REGISTER_TIMEOUT_MS 5000
#define LOG_EVERY           30 /* failed attempts between two log lines while waiting */

int worker_sleep(worker *w, int ms)
{
	struct timespec ts;
	int stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->stop_mu);
	while (!(stop = atomic_load(&w->stop)))
		if (pthread_cond_timedwait(&w->stop_cv, &w->stop_mu, &ts) == ETIMEDOUT)
			break;
	stop = atomic_load(&w->stop);
	pthread_mutex_unlock(&w->stop_mu);
	return stop;
}

/* One Register call. 0 and *id / *hb_ms set when the coordinator accepted
 * us; else the status and its message in msg. */
static int register_once(worker *w, uint64_t *id, int *hb_ms, int *status, char *msg, size_t size)
{
	Splitchain__RegisterRequest req = SPLITCHAIN__REGISTER_REQUEST__INIT;
	Splitchain__RegisterReply *rep = NULL;

	req.name = w->name;
	req.device = (char *)w->be->name;
	req.memory_bytes = w->memory_bytes;
	req.gflops = w->gflops;
	req.control_addr = w->control_addr;
	req.data_addr = w->data_addr;
	msg[0] = '\0';
	if (sc_rpc_call_pb(w->coord, "Coordinator.Register", &req.base,
			   &splitchain__register_reply__descriptor, REGISTER_TIMEOUT_MS, status,
			   msg, size, (ProtobufCMessage **)&rep)) {
		*status = SC_STATUS_RESOURCE_EXHAUSTED;
		snprintf(msg, size, "%s", sc_err_detail());
		return 1;
	}
	if (*status != SC_STATUS_OK)
		return 1;
	*id = rep->worker_id;
	*hb_ms = rep->heartbeat_ms ? (int)rep->heartbeat_ms : 1000;
	if (*hb_ms < 10)
		*hb_ms = 10;
	if (*hb_ms > 600000)
		*hb_ms = 600000;
	protobuf_c_message_free_unpacked(&rep->base, NULL);
	return 0;
}

static int heartbeat_once(worker *w, uint64_t id, int hb_ms, char *msg, size_t size)
{
	Splitchain__HeartbeatRequest req = SPLITCHAIN__HEARTBEAT_REQUEST__INIT;
	ProtobufCMessage *rep = NULL;
	int status = SC_STATUS_OK, timeout = hb_ms < 2000 ? 2000 : hb_ms;

	req.worker_id = id;
	req.state = atomic_load(&w->busy) ? "busy" : "idle";
	msg[0] = '\0';
	if (sc_rpc_call_pb(w->coord, "Coordinator.Heartbeat", &req.base,
			   &splitchain__heartbeat_reply__descriptor, timeout, &status, msg, size,
			   &rep)) {
		snprintf(msg, size, "%s", sc_err_detail());
		return SC_STATUS_RESOURCE_EXHAUSTED;
	}
	if (rep)
		protobuf_c_message_free_unpacked(rep, NULL);
	return status;
}

void *worker_announce_main(void *arg)
{
	worker *w = arg;
	char msg[512];
	uint64_t id = 0;
	int hb_ms = 1000, registered = 0, failures = 0, status;

	while (!atomic_load(&w->stop)) {
		/* A device that cannot work again (the call that hit it has
		 * answered the coordinator): no more heartbeats, so no more
		 * work; stop the process so that its supervisor starts a fresh
		 * one. */
		const char *why = w->be->ops->failure(w->be);
		if (why) {
			sc_error("worker",
				 "device %s failed and cannot recover in this process: %s; "
				 "stopping (exit status 3)",
				 w->be->name, why);
			atomic_store(&w->device_failed, 1);
			kill(getpid(), SIGTERM); /* main's sigwait takes it */
			break;
		}
		if (!registered) {
			if (register_once(w, &id, &hb_ms, &status, msg, sizeof(msg)) == 0) {
				registered = 1;
				failures = 0;
				sc_info("worker",
					"registered with %s as worker %" PRIu64
					" (heartbeat every %d ms)",
					w->o.coordinator, id, hb_ms);
				continue;
			}
			if (failures++ % LOG_EVERY == 0)
				sc_warn("worker",
					"waiting for the coordinator at %s: %s%s%s; retrying "
					"every second",
					w->o.coordinator, sc_status_name(status),
					msg[0] ? ": " : "", msg);
			worker_sleep(w, 1000);
			continue;
		}
		status = heartbeat_once(w, id, hb_ms, msg, sizeof(msg));
		if (status == SC_STATUS_NOT_FOUND) {
			sc_warn("worker",
				"the coordinator does not know worker %" PRIu64
				" (%s): registering again",
				id, msg);
			registered = 0;
			continue;
		}
		if (status != SC_STATUS_OK) {
			if (failures++ % LOG_EVERY == 0)
				sc_warn("worker", "heartbeat to %s: %s%s%s; still trying",
					w->o.coordinator, sc_status_name(status),
					msg[0] ? ": " : "", msg);
		} else if (failures) {
			sc_info("worker", "the coordinator answers heartbeats again");
			failures = 0;
		}
		worker_sleep(w, hb_ms);
	}
	return NULL;
}
