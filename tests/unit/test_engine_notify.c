/* NotifyTriggers (SPEC section 2), Ack, Ping, and restarts (SPEC section
 * 4: persisted owners keep their tasks for restart_grace_ms). */
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

static void notify_ok(fx_engine *f, const char *who, const char *id, const char *req,
		      ap_notify_result *res)
{
	assert_int_equal(ap_engine_notify(f->e, who, id, req, res), 0);
}

static void test_notify_rule(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_op a = { 0 }, b = { 0 };
	fx_connect(&f, &a, 0xa, 1);
	fx_wait_ready(&a);
	fx_create(&f, "max2", 1, "block", 0, 2);
	fx_create(&f, "inf", 1, "block", 0, 0);
	fx_drain(&a);
	fx_connect(&f, &b, 0xb, 1);
	fx_wait_ready(&b);
	ap_notify_result res;

	/* Unknown task: not_found, nothing counted. */
	notify_ok(&f, a.address, "missing", "r0", &res);
	assert_string_equal(res.status, "not_found");
	/* Not the owner of an enabled task: denied. */
	assert_int_equal(ap_engine_notify(f.e, b.address, "max2-0", "r1", &res), AP_EDENIED);
	/* Upper-case address of the owner is the owner. */
	char upper[43];
	snprintf(upper, sizeof upper, "0x%040X", 0xa);
	notify_ok(&f, upper, "max2-0", "r1", &res);
	assert_string_equal(res.status, "enabled");
	assert_int_equal(res.remaining_executions, 1);
	assert_true(res.task_still_enabled);
	/* The same request id within the window: deduplicated, not counted. */
	notify_ok(&f, a.address, "max2-0", "r1", &res);
	assert_string_equal(res.status, "deduplicated");
	assert_int_equal(res.remaining_executions, 1);
	/* The one that reaches max: enabled, 0 left, no longer enabled; the
	 * owner is sent CompletedTask. */
	notify_ok(&f, a.address, "max2-0", "r2", &res);
	assert_string_equal(res.status, "enabled");
	assert_int_equal(res.remaining_executions, 0);
	assert_false(res.task_still_enabled);
	fx_drain(&a);
	assert_int_equal(a.completes, 1);
	assert_false(fx_holds(&a, "max2-0"));
	/* Later ones are exhausted, for any approved operator. */
	notify_ok(&f, b.address, "max2-0", "r3", &res);
	assert_string_equal(res.status, "exhausted");
	assert_int_equal(res.remaining_executions, 0);
	assert_false(res.task_still_enabled);
	/* Unlimited: remaining -1. */
	notify_ok(&f, a.address, "inf-0", "x", &res);
	assert_string_equal(res.status, "enabled");
	assert_int_equal(res.remaining_executions, -1);
	/* Disabled: "disabled" to anyone, not counted. */
	const char *st;
	assert_int_equal(ap_engine_set_enabled(f.e, "inf-0", false, &st), 0);
	notify_ok(&f, b.address, "inf-0", "y", &res);
	assert_string_equal(res.status, "disabled");
	assert_false(res.task_still_enabled);
	/* A completed task cannot be enabled again. */
	assert_int_equal(ap_engine_set_enabled(f.e, "max2-0", true, &st), AP_ESTATE);
	assert_string_equal(st, "completed");
	/* Bad caller address. */
	assert_int_equal(ap_engine_notify(f.e, "nobody", "inf-0", "z", &res), AP_EINVAL);

	Aggregator__ListTasksResp *list;
	assert_int_equal(ap_engine_list_tasks(f.e, "", 0, &list), 0);
	assert_int_equal(list->n_tasks, 2);
	assert_string_equal(list->tasks[0]->id, "inf-0");
	assert_int_equal(list->tasks[0]->execution_count, 1);
	assert_string_equal(list->tasks[1]->id, "max2-0");
	assert_string_equal(list->tasks[1]->status, "completed");
	assert_int_equal(list->tasks[1]->execution_count, 2);
	assert_string_equal(list->tasks[1]->owner, "");
	ap_engine_free_list(list);

	fx_disconnect(&f, &a, "end");
	fx_disconnect(&f, &b, "end");
	fx_op_free(&a);
	fx_op_free(&b);
	fx_close(&f);
}

static int64_t fake_now;
static int64_t fake_clock(void) { return fake_now; }

static void test_notify_time_window(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_op a = { 0 };
	fx_connect(&f, &a, 1, 1);
	fx_wait_ready(&a);
	/* A task with start_at/expired_at, created through the engine. */
	fx_cron_task cron;
	fx_cron_task_init(&cron, "win");
	cron.task.start_at = 1000000;
	cron.task.expired_at = 2000000;
	Aggregator__NewTask *list[1] = { &cron.task };
	char **ids;
	char err[128];
	assert_int_equal(ap_engine_create_tasks(f.e, list, 1, &ids, err, sizeof err), 0);
	ap_engine_free_ids(ids, 1);
	fx_drain(&a);
	ap_notify_result res;
	ap_clock_set_wall_hook(fake_clock);
	fake_now = 999999;
	notify_ok(&f, a.address, "win", "1", &res);
	assert_string_equal(res.status, "not_started");
	fake_now = 2000000;
	notify_ok(&f, a.address, "win", "2", &res);
	assert_string_equal(res.status, "expired");
	fake_now = 1500000;
	notify_ok(&f, a.address, "win", "3", &res);
	assert_string_equal(res.status, "enabled");
	/* The dedup window is five minutes. */
	fake_now = 1500000 + 5 * 60 * 1000 - 1;
	notify_ok(&f, a.address, "win", "3", &res);
	assert_string_equal(res.status, "deduplicated");
	fake_now = 1500000 + 5 * 60 * 1000;
	notify_ok(&f, a.address, "win", "3", &res);
	assert_string_equal(res.status, "enabled");
	ap_clock_set_wall_hook(NULL);
	fx_disconnect(&f, &a, "end");
	fx_op_free(&a);
	fx_close(&f);
}

static void test_ack_and_ping(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_op a = { 0 };
	fx_connect(&f, &a, 1, 1);
	fx_wait_ready(&a);
	fx_create(&f, "t", 2, "block", 0, 0);
	fx_drain(&a);
	assert_true(ap_engine_ack(f.e, a.address, "t-0"));
	assert_false(ap_engine_ack(f.e, a.address, "nope"));
	char other[43];
	fx_address(2, other);
	assert_false(ap_engine_ack(f.e, other, "t-0"));
	assert_false(ap_engine_ack(f.e, "bad", "t-0"));

	Aggregator__Checkin c = AGGREGATOR__CHECKIN__INIT;
	c.address = a.address;
	c.version = (char *)"v1.2.3";
	c.block_number = 77;
	int64_t at;
	assert_int_equal(ap_engine_ping(f.e, &c, &at), 0);
	assert_true(at > 0);
	c.address = (char *)"0x12";
	assert_int_equal(ap_engine_ping(f.e, &c, &at), AP_EINVAL);
	fx_disconnect(&f, &a, "end");
	fx_op_free(&a);
	fx_close(&f);
}

/* A restart keeps tasks and owners: the owner that returns within the
 * grace window gets its own tasks back; an owner that does not return
 * loses them when the window ends. */
static void test_restart_grace(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_op a = { 0 }, b = { 0 };
	fx_connect(&f, &a, 0xa, 1);
	fx_connect(&f, &b, 0xb, 1);
	fx_wait_ready(&a);
	fx_wait_ready(&b);
	fx_create(&f, "t", 20, "block", 0, 0);
	fx_drain(&a);
	fx_drain(&b);
	assert_int_equal(fx_held_count(&a), 10);
	assert_int_equal(fx_held_count(&b), 10);
	/* Shutdown: sessions end, owners keep their tasks. */
	ap_engine_stop(f.e);
	fx_disconnect(&f, &a, "shutdown");
	fx_disconnect(&f, &b, "shutdown");
	fx_close_engine(&f);

	f.cfg.operators.restart_grace_ms = 400;
	fx_reopen(&f);
	ap_engine_stats st;
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.tasks, 20);
	assert_int_equal(st.orphans, 0);
	fx_op a2 = { 0 };
	fx_connect(&f, &a2, 0xa, 2);
	fx_wait_ready(&a2);
	fx_drain(&a2);
	/* A returned in time: exactly its own ten, none of B's. */
	assert_int_equal(fx_held_count(&a2), 10);
	for (size_t i = 0; i < 20; i++) {
		char id[16];
		snprintf(id, sizeof id, "t-%zu", i);
		if (fx_holds(&a, id))
			assert_true(fx_holds(&a2, id));
	}
	/* B never returns: after the window its tasks move to A. */
	int64_t deadline = ap_clock_mono_ms() + 5000;
	while (fx_held_count(&a2) < 20 && ap_clock_mono_ms() < deadline) {
		fx_drain(&a2);
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
	assert_int_equal(fx_held_count(&a2), 20);
	char err[256];
	assert_int_equal(ap_engine_check(f.e, true, err, sizeof err), 0);
	fx_disconnect(&f, &a2, "end");
	fx_close_engine(&f);

	/* And after a crash-like close the same holds: reopen finds every task. */
	fx_reopen(&f);
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.tasks, 20);
	fx_op_free(&a);
	fx_op_free(&b);
	fx_op_free(&a2);
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_notify_rule),
		cmocka_unit_test(test_notify_time_window),
		cmocka_unit_test(test_ack_and_ping),
		cmocka_unit_test(test_restart_grace),
	};
	ap_log_set_level(AP_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
