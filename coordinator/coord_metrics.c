/* coord_metrics.c — Coordinator.Metrics: a job's training and held-out
 * loss curve from the metrics table, for `splitchain watch`. */
#include <stdlib.h>

#include "coord.h"
#include "sc_rpc_pb.h"
#include "splitchain.pb-c.h"

#define MAX_POINTS 10000

void coord_m_metrics(void *arg, const uint8_t *req, size_t len, sc_rpc_reply *rep)
{
	coord *c = arg;
	Splitchain__MetricsRequest *r;
	Splitchain__MetricsReply out = SPLITCHAIN__METRICS_REPLY__INIT;
	Splitchain__MetricPoint *pt = NULL, **pp = NULL;
	sc_db_point *p = NULL;
	sc_db_job *job = NULL;
	size_t n = 0;
	sc_err rc;

	if (sc_rpc_unpack(&splitchain__metrics_request__descriptor, req, len,
			  (ProtobufCMessage **)&r, rep))
		return;
	if ((rc = sc_db_job_get(c->db, (int64_t)r->job_id, &job)) == SC_ENOENT) {
		sc_rpc_reply_err(rep, SC_STATUS_NOT_FOUND, "no job %llu (see 'splitchain jobs')",
				 (unsigned long long)r->job_id);
		goto out;
	}
	if (!rc && !coord_auth_job(c->auth, job->id, job->owner_id, rep))
		goto out;
	if (rc || (rc = sc_db_metric_curve(c->db, job->id, r->after_step, MAX_POINTS, &p, &n))) {
		sc_rpc_reply_err(rep, SC_STATUS_INTERNAL, "database: %s", sc_err_detail());
		goto out;
	}
	pt = calloc(n ? n : 1, sizeof(*pt));
	pp = calloc(n ? n : 1, sizeof(*pp));
	if (!pt || !pp) {
		sc_rpc_reply_err(rep, SC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		splitchain__metric_point__init(&pt[i]);
		pt[i].step = p[i].step;
		pt[i].loss = p[i].loss;
		pt[i].has_eval = p[i].has_eval;
		pt[i].eval_loss = p[i].eval_loss;
		pp[i] = &pt[i];
	}
	out.n_points = n;
	out.points = pp;
	sc_rpc_reply_pb(rep, &out.base);
out:
	free(pt);
	free(pp);
	free(p);
	free(job);
	splitchain__metrics_request__free_unpacked(r, NULL);
}
