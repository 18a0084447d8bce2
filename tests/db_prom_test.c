/* db_prom_test.c — the metrics endpoint's read-only view of the database
 * (coordinator/db_prom.h), read beside a writer as the coordinator does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "db_prom.h"
#include "testutil.h"

typedef struct fixture {
	char path[512];
	sc_db *db;
	sc_db_reader *r;
} fixture;

static int setup(void **state)
{
	static int n;
	fixture *f = calloc(1, sizeof(*f));
	char name[64];
	snprintf(name, sizeof(name), "db_prom_%d.db", n++);
	sc_test_path(f->path, sizeof(f->path), name);
	remove(f->path);
	SC_ASSERT_OK(sc_db_open(&f->db, f->path));
	SC_ASSERT_OK(sc_db_reader_open(&f->r, f->path));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sc_db_reader_close(f->r);
	sc_db_close(f->db);
	free(f);
	return 0;
}

static int64_t add_job(sc_db *db, const char *name)
{
	static const unsigned char spec[] = { 0x0a, 0x01, 'j' };
	sc_db_job j = { .name = name,
			.model_path = "m",
			.data_path = "d",
			.spec = spec,
			.spec_len = sizeof(spec),
			.stages = 3,
			.steps = 10 };
	int64_t id = 0;
	SC_ASSERT_OK(sc_db_job_insert(db, &j, &id));
	return id;
}

static void jobs_with_newest_figures(void **state)
{
	fixture *f = *state;
	sc_db_prom_job *jobs = NULL;
	int n = -1;
	int64_t a = add_job(f->db, "with \"quotes\""), b = add_job(f->db, "no steps yet");
	uint64_t hops1[3] = { 10, 20, 30 }, hops2[3] = { 11, 21, 31 };
	sc_db_metric m1 = {
		.step = 1, .loss = 3.5, .tokens_per_s = 100, .bytes_per_hop = hops1, .n_hops = 3
	};
	sc_db_metric m2 = {
		.step = 2, .loss = 3.25, .tokens_per_s = 120, .bytes_per_hop = hops2, .n_hops = 3
	};

	SC_ASSERT_OK(sc_db_prom_jobs(f->r, &jobs, &n)); /* before any metric */
	assert_int_equal(n, 2);
	assert_true(isnan(jobs[0].last_loss) && isnan(jobs[0].tokens_per_s));
	assert_true(isnan(jobs[0].eval_loss));
	assert_int_equal(jobs[0].n_hops, 0);
	sc_db_prom_jobs_free(jobs, n);

	SC_ASSERT_OK(sc_db_job_set_state(f->db, a, SC_JOB_RUNNING, NULL));
	SC_ASSERT_OK(sc_db_metric_insert(f->db, a, &m1));
	SC_ASSERT_OK(sc_db_metric_eval(f->db, a, 1, 4.0, 64));
	SC_ASSERT_OK(sc_db_metric_insert(f->db, a, &m2));
	SC_ASSERT_OK(sc_db_job_progress(f->db, a, 2, 3.25));
	SC_ASSERT_OK(sc_db_prom_jobs(f->r, &jobs, &n));
	assert_int_equal(n, 2);
	assert_int_equal(jobs[0].id, a);
	assert_string_equal(jobs[0].name, "with \"quotes\"");
	assert_int_equal(jobs[0].state, SC_JOB_RUNNING);
	assert_int_equal(jobs[0].step_done, 2);
	assert_int_equal(jobs[0].steps, 10);
	assert_true(jobs[0].last_loss == 3.25);
	assert_true(jobs[0].tokens_per_s == 120);
	assert_true(jobs[0].eval_loss == 4.0); /* the newest evaluation, from step 1 */
	assert_int_equal(jobs[0].n_hops, 3);
	assert_int_equal(jobs[0].hop_bytes[0], 11);
	assert_int_equal(jobs[0].hop_bytes[2], 31);
	assert_int_equal(jobs[1].id, b);
	assert_int_equal(jobs[1].state, SC_JOB_QUEUED);
	sc_db_prom_jobs_free(jobs, n);
}

static void workers_listed(void **state)
{
	fixture *f = *state;
	sc_db_prom_worker *ws = NULL;
	int n = -1;
	int64_t id = 0;
	sc_db_worker w = { .name = "edge-1",
			   .device = "cpu",
			   .memory_bytes = 8ull << 30,
			   .memory_reserve_bytes = 1ull << 30,
			   .gflops = 50,
			   .control_addr = "tcp://10.0.0.1:7000",
			   .data_addr = "tcp://10.0.0.1:7001",
			   .state = SC_WORKER_IDLE,
			   .job_slots = 2 };
	SC_ASSERT_OK(sc_db_prom_workers(f->r, &ws, &n));
	assert_int_equal(n, 0);
	assert_null(ws);
	SC_ASSERT_OK(sc_db_worker_upsert(f->db, &w, &id));
	SC_ASSERT_OK(sc_db_worker_memory(f->db, id, 12345, NULL, 0));
	SC_ASSERT_OK(sc_db_prom_workers(f->r, &ws, &n));
	assert_int_equal(n, 1);
	assert_string_equal(ws[0].name, "edge-1");
	assert_int_equal(ws[0].state, SC_WORKER_IDLE);
	assert_int_equal(ws[0].memory_bytes, 8ull << 30);
	assert_int_equal(ws[0].memory_reserve_bytes, 1ull << 30);
	assert_int_equal(ws[0].base_bytes, 12345);
	assert_int_equal(ws[0].job_slots, 2);
	sc_db_prom_workers_free(ws, n);
}

static void links_named(void **state)
{
	fixture *f = *state;
	sc_db_prom_link *l = NULL;
	int n = -1;
	int64_t a = 0;
	sc_db_worker w = { .name = "edge-1",
			   .device = "cpu",
			   .memory_bytes = 1ull << 30,
			   .gflops = 5,
			   .control_addr = "tcp://10.0.0.1:7000",
			   .data_addr = "tcp://10.0.0.1:7001",
			   .state = SC_WORKER_IDLE,
			   .job_slots = 1 };
	SC_ASSERT_OK(sc_db_worker_upsert(f->db, &w, &a));
	sc_db_link link = {
		.from_worker = a, .to_worker = 0, .rtt_ms = 0.5, .mbit_s = 800, .measured_ms = 1
	};
	SC_ASSERT_OK(sc_db_link_upsert(f->db, &link));
	SC_ASSERT_OK(sc_db_prom_links(f->r, &l, &n));
	assert_int_equal(n, 1);
	assert_string_equal(l[0].from, "edge-1");
	assert_string_equal(l[0].to, "coordinator");
	assert_true(l[0].rtt_ms == 0.5 && l[0].mbit_s == 800);
	sc_db_prom_links_free(l, n);
}

static void events_counted_once(void **state)
{
	fixture *f = *state;
	uint64_t c[SC_LOG_OFF];
	SC_ASSERT_OK(sc_db_prom_events(f->r, c));
	assert_int_equal(c[SC_LOG_WARN] + c[SC_LOG_ERROR], 0);
	SC_ASSERT_OK(sc_db_event(f->db, 0, 0, SC_LOG_WARN, "t", "one"));
	SC_ASSERT_OK(sc_db_event(f->db, 0, 0, SC_LOG_ERROR, "t", "two"));
	SC_ASSERT_OK(sc_db_event(f->db, 0, 0, SC_LOG_INFO, "t", "three"));
	SC_ASSERT_OK(sc_db_prom_events(f->r, c));
	assert_int_equal(c[SC_LOG_WARN], 1);
	assert_int_equal(c[SC_LOG_ERROR], 1);
	uint64_t info = c[SC_LOG_INFO];
	assert_true(info >= 1);
	SC_ASSERT_OK(sc_db_prom_events(f->r, c)); /* nothing new: the same counts */
	assert_int_equal(c[SC_LOG_WARN], 1);
	assert_int_equal(c[SC_LOG_INFO], info);
	SC_ASSERT_OK(sc_db_event(f->db, 0, 0, SC_LOG_WARN, "t", "four"));
	SC_ASSERT_OK(sc_db_prom_events(f->r, c));
	assert_int_equal(c[SC_LOG_WARN], 2);
}

static void reader_refuses_missing_file(void **state)
{
	char path[512];
	sc_db_reader *r = (sc_db_reader *)1;
	(void)state;
	sc_test_path(path, sizeof(path), "no-such-dir/none.db");
	SC_ASSERT_ERR(sc_db_reader_open(&r, path), SC_EIO);
	assert_null(r);
	sc_db_reader_close(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(jobs_with_newest_figures, setup, teardown),
		cmocka_unit_test_setup_teardown(workers_listed, setup, teardown),
		cmocka_unit_test_setup_teardown(links_named, setup, teardown),
		cmocka_unit_test_setup_teardown(events_counted_once, setup, teardown),
		cmocka_unit_test(reader_refuses_missing_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
