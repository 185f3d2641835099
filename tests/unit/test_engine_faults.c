/* Storage faults (issue 7, point 8) at the engine: while the store's write
 * path fails (the fault seam, as ENOSPC would), the engine refuses changes
 * it cannot persist, keeps serving what it has, and once the fault clears
 * the periodic repair pass finishes what the failed events could not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/store.h"
#include "engine_fixture.h"

static atomic_int faults;

static int fail_writes(void *arg, ap_store_db db, const char *op)
{
	(void)arg;
	(void)db;
	(void)op;
	atomic_fetch_add(&faults, 1);
	return 1;
}

typedef struct held_ctx {
	fx_op *op;
	size_t want;
} held_ctx;

static bool holds_enough(void *arg)
{
	held_ctx *h = arg;
	fx_drain(h->op);
	return fx_held_count(h->op) >= h->want;
}

static void test_write_faults(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_close_engine(&f);
	f.cfg.operators.resync_interval_ms = 50; /* the repair pass runs this often */
	fx_reopen(&f);
	fx_op a = { 0 }, b = { 0 };
	fx_connect(&f, &a, 0xa, 1);
	fx_wait_ready(&a);
	fx_create(&f, "t", 8, "block", 0, 3);
	fx_drain(&a);
	assert_int_equal(fx_held_count(&a), 8);

	ap_store_set_fault_hook(fail_writes, NULL);
	/* Refused: create, disable, delete, a counted notification. */
	fx_cron_task cron;
	fx_cron_task_init(&cron, "during-fault");
	Aggregator__NewTask *list[1] = { &cron.task };
	char **ids;
	char err[256];
	assert_int_equal(ap_engine_create_tasks(f.e, list, 1, &ids, err, sizeof err), AP_EIO);
	const char *st;
	assert_int_equal(ap_engine_set_enabled(f.e, "t-0", false, &st), AP_EIO);
	assert_string_equal(st, "enabled");
	assert_int_equal(ap_engine_delete_task(f.e, "t-1"), AP_EIO);
	ap_notify_result res;
	assert_int_equal(ap_engine_notify(f.e, a.address, "t-2", "r1", &res), AP_EIO);
	/* Nothing half-done reached the operator. */
	assert_int_equal(fx_drain(&a), 0);
	assert_int_equal(fx_held_count(&a), 8);

	/* Sessions still come and go; A leaves, and its tasks cannot be
	 * moved while writes fail: they stay with A, nothing is lost. */
	fx_connect(&f, &b, 0xb, 1);
	fx_wait_ready(&b);
	fx_disconnect(&f, &a, "killed");
	assert_true(atomic_load(&faults) > 0);
	Aggregator__ListTasksResp *resp;
	assert_int_equal(ap_engine_list_tasks(f.e, "", 0, &resp), 0);
	assert_int_equal(resp->n_tasks, 8); /* during-fault was not created */
	for (size_t i = 0; i < resp->n_tasks; i++) {
		assert_string_equal(resp->tasks[i]->status, "enabled");
		assert_int_equal(resp->tasks[i]->execution_count, 0);
	}
	ap_engine_free_list(resp);

	/* The fault clears: the repair pass hands A's tasks to B. */
	ap_store_set_fault_hook(NULL, NULL);
	held_ctx h = { &b, 8 };
	assert_true(fx_wait(holds_enough, &h));
	assert_int_equal(fx_held_count(&b), 8);
	assert_int_equal(ap_engine_check(f.e, true, err, sizeof err), 0);
	/* And writes work again. */
	assert_int_equal(ap_engine_notify(f.e, b.address, "t-2", "r1", &res), 0);
	assert_string_equal(res.status, "enabled");
	assert_int_equal(res.remaining_executions, 2);

	/* After a restart the database shows exactly the committed state. */
	fx_disconnect(&f, &b, "end");
	fx_close_engine(&f);
	fx_reopen(&f);
	assert_int_equal(ap_engine_list_tasks(f.e, "", 0, &resp), 0);
	assert_int_equal(resp->n_tasks, 8);
	assert_int_equal(resp->tasks[2]->execution_count, 1);
	ap_engine_free_list(resp);
	fx_op_free(&a);
	fx_op_free(&b);
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_faults),
	};
	ap_log_set_level(AP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
