/* Concurrency test (issue 3, point 13): 8 threads do 20,000 random
 * connects, disconnects, reconnects, creates, disables, enables and deletes
 * over 50 addresses; then, at quiescence, the invariants of SPEC section 8
 * that the engine can see must hold and no stale job may have acted. Run it
 * under ThreadSanitizer and AddressSanitizer (CI does). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "engine_fixture.h"

#define THREADS 8
#define OPS_PER_THREAD 2500
#define ADDRESSES 50
#define TASK_IDS 400

typedef struct worker {
	fx_engine *f;
	int index;
	unsigned seed;
	fx_op ops[ADDRESSES]; /* this thread's view: its own sessions */
	unsigned long done[8];
} worker;

static unsigned rnd(worker *w, unsigned n)
{
	return (unsigned)rand_r(&w->seed) % n;
}

static void create_one(worker *w)
{
	char id[32];
	snprintf(id, sizeof id, "c%u", rnd(w, TASK_IDS));
	/* fx_create asserts success; a duplicate is a normal outcome here, so
	 * go through the engine directly. */
	Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger bt = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	Aggregator__NewTask nt = AGGREGATOR__NEW_TASK__INIT;
	bc.interval = 5;
	bc.chain_id = rnd(w, 3); /* chains 0 (any), 1, 2 */
	bt.config = &bc;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	tr.block = &bt;
	nt.id = id;
	nt.trigger = &tr;
	Aggregator__NewTask *list[1] = { &nt };
	char **ids;
	char err[256];
	int rc = ap_engine_create_tasks(w->f->e, list, 1, &ids, err, sizeof err);
	if (rc == 0)
		ap_engine_free_ids(ids, 1);
	else if (rc != AP_EEXIST)
		fail_msg("create: %s", err);
}

static void *run(void *arg)
{
	worker *w = arg;
	for (int i = 0; i < OPS_PER_THREAD; i++) {
		unsigned a = rnd(w, ADDRESSES);
		fx_op *op = &w->ops[a];
		unsigned what = rnd(w, 8);
		w->done[what]++;
		switch (what) {
		case 0:
		case 1: { /* connect or reconnect, chains vary per address */
			char address[43];
			fx_address((int)a + 1, address);
			int64_t chains[1] = { (int64_t)(a % 3) };
			ap_hello h = { .address = address, .monotonic_clock = (int64_t)rnd(w, 1000),
				       .chain_ids = chains, .n_chain_ids = chains[0] ? 1 : 0 };
			ap_session *old = op->s;
			assert_int_equal(fx_connect_hello(w->f, op, &h), 0);
			if (old) /* this thread's older session: its transport closes it */
				ap_engine_session_close(w->f->e, old, "reconnected");
			break;
		}
		case 2: /* disconnect */
			if (op->s)
				fx_disconnect(w->f, op, "closed");
			break;
		case 3: /* drain: the transport sends what is queued */
			if (op->s) {
				fx_drain(op);
				/* Superseded by another thread: end like the transport. */
				if (ap_token_is_cancelled(ap_session_token(op->s)))
					fx_disconnect(w->f, op, "superseded");
			}
			break;
		case 4:
		case 5:
			create_one(w);
			break;
		case 6: { /* disable or enable */
			char id[32];
			const char *st;
			snprintf(id, sizeof id, "c%u", rnd(w, TASK_IDS));
			int rc = ap_engine_set_enabled(w->f->e, id, rnd(w, 2), &st);
			assert_true(rc == 0 || rc == AP_ENOTFOUND);
			break;
		}
		case 7: { /* delete */
			char id[32];
			snprintf(id, sizeof id, "c%u", rnd(w, TASK_IDS));
			int rc = ap_engine_delete_task(w->f->e, id);
			assert_true(rc == 0 || rc == AP_ENOTFOUND);
			break;
		}
		}
	}
	return NULL;
}

static bool all_ready(void *arg)
{
	worker *ws = arg;
	for (int t = 0; t < THREADS; t++)
		for (int a = 0; a < ADDRESSES; a++)
			if (ws[t].ops[a].s && !ap_session_ready(ws[t].ops[a].s))
				return false;
	return true;
}

static void test_random_storm(void **state)
{
	(void)state;
	static fx_engine f;
	static worker ws[THREADS];
	memset(ws, 0, sizeof ws);
	fx_open(&f, 2, 0); /* a short stabilization: sessions race their own readiness */
	pthread_t th[THREADS];
	for (int t = 0; t < THREADS; t++) {
		ws[t].f = &f;
		ws[t].index = t;
		ws[t].seed = 0x5eed + (unsigned)t;
		assert_int_equal(pthread_create(&th[t], NULL, run, &ws[t]), 0);
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);

	/* Quiesce: sessions superseded by another thread end like a transport
	 * would end them; the survivors become ready and drain. */
	for (int t = 0; t < THREADS; t++)
		for (int a = 0; a < ADDRESSES; a++) {
			fx_op *op = &ws[t].ops[a];
			if (op->s && ap_token_is_cancelled(ap_session_token(op->s)))
				fx_disconnect(&f, op, "superseded");
		}
	assert_true(fx_wait(all_ready, ws));
	for (int t = 0; t < THREADS; t++)
		for (int a = 0; a < ADDRESSES; a++)
			if (ws[t].ops[a].s)
				fx_drain(&ws[t].ops[a]);

	char err[256] = "";
	int rc = ap_engine_check(f.e, true, err, sizeof err);
	if (rc)
		fail_msg("invariant after storm: %s", err);
	ap_engine_stats st;
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.stale_job_runs, 0);
	/* Every live session holds exactly what it owns: its received set
	 * equals the owner's tasks (and so no task is held twice). */
	size_t held_total = 0;
	for (int t = 0; t < THREADS; t++)
		for (int a = 0; a < ADDRESSES; a++) {
			fx_op *op = &ws[t].ops[a];
			if (!op->s)
				continue;
			assert_int_equal(fx_held_count(op), fx_owned(&f, op->address));
			held_total += fx_held_count(op);
		}
	Aggregator__ListOperatorsResp *ops;
	assert_int_equal(ap_engine_list_operators(f.e, &ops), 0);
	size_t owned_total = 0;
	for (size_t i = 0; i < ops->n_operators; i++)
		owned_total += ops->operators[i]->owned_tasks;
	ap_engine_free_operators(ops);
	assert_int_equal(held_total, owned_total);
	printf("storm: %llu connects, %llu superseded, %llu disconnects, %llu stale skips, "
	       "%zu tasks, %zu orphans, %zu ready\n",
	       (unsigned long long)st.connects, (unsigned long long)st.superseded,
	       (unsigned long long)st.disconnects, (unsigned long long)st.stale_skips,
	       st.tasks, st.orphans, st.ready);
	assert_true(st.connects > 1000);
	assert_true(st.superseded > 0);

	for (int t = 0; t < THREADS; t++)
		for (int a = 0; a < ADDRESSES; a++) {
			if (ws[t].ops[a].s)
				fx_disconnect(&f, &ws[t].ops[a], "end");
			fx_op_free(&ws[t].ops[a]);
		}
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_storm),
	};
	ap_log_set_level(AP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
