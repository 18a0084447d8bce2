/* coord_prom.h — the coordinator's Prometheus metrics (--metrics-listen):
 * its jobs (step, loss, eval loss, tokens/s, bytes per hop), its workers
 * (heartbeat age, memory, job slots, up), and its warning and error
 * events. docs/deploy.md lists every metric.
 *
 * Where each figure comes from: the live registry (heartbeats, slots,
 * running jobs' step and loss) is copied under c->mu, which is held only
 * for that copy; everything else is read after it is released, through a
 * read-only database connection of the endpoint's own (db_prom.h), so a
 * scrape never waits on the coordinator's lock while it does slow work
 * and never touches the database with that lock held.
 */
#ifndef SC_COORD_PROM_H
#define SC_COORD_PROM_H

#include "coord.h"

typedef struct coord_prom coord_prom;

/* Serves c's metrics on hostport (sc_http_metrics.h), reading the database
 * at dbpath (borrowed for the call). c is borrowed and must outlive the
 * endpoint. *out = new endpoint; stop with coord_prom_stop. */
sc_err coord_prom_start(coord_prom **out, coord *c, const char *dbpath, const char *hostport);
/* Where it serves ("http://127.0.0.1:9400/metrics"); borrowed. */
const char *coord_prom_where(const coord_prom *p);
/* Stops serving and frees p. Accepts NULL. */
void coord_prom_stop(coord_prom *p);

#endif
