/* Engine tests (issue 3): the session lifecycle of SPEC section 3 driven
 * directly, without a network. One regression test per failure the Go
 * original shipped with, then the scenarios of its integration tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "engine_fixture.h"

static void check_ok(fx_engine *f, bool quiescent)
{
	char err[256] = "";
	int rc = ap_engine_check(f->e, quiescent, err, sizeof err);
	if (rc)
		fail_msg("invariant: %s", err);
}

/* Go bug 1, the ticker race: 100 rapid reconnects of one address leave one
 * current session and one live ticker job, and the 99 stale cleanups change
 * nothing. */
static void test_ticker_race(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_op a = { 0 };
	fx_connect(&f, &a, 1, 1);
	fx_wait_ready(&a);
	fx_create(&f, "t", 20, "block", 0, 0);
	fx_drain(&a);
	assert_int_equal(fx_held_count(&a), 20);

	/* Restart (owners persist), then a reconnect storm with a long
	 * stabilization so the jobs stay queued. */
	ap_engine_stop(f.e);
	fx_disconnect(&f, &a, "shutdown");
	fx_close_engine(&f);
	f.cfg.operators.stabilization_ms = 60000;
	f.cfg.operators.restart_grace_ms = 60000;
	fx_reopen(&f);
	static fx_op ops[100];
	memset(ops, 0, sizeof ops);
	for (int i = 0; i < 100; i++)
		fx_connect(&f, &ops[i], 1, 1 + i);
	/* The transport of every superseded session sees its token cancelled
	 * and closes: those cleanups are stale. */
	for (int i = 0; i < 99; i++) {
		assert_true(ap_token_is_cancelled(ap_session_token(ops[i].s)));
		assert_string_equal(ap_token_reason(ap_session_token(ops[i].s)),
				    AP_REASON_SUPERSEDED);
		fx_disconnect(&f, &ops[i], "superseded");
	}
	assert_false(ap_token_is_cancelled(ap_session_token(ops[99].s)));
	char address[43];
	fx_address(1, address);
	assert_int_equal(ap_engine_live_jobs(f.e, address), 1);
	ap_engine_stats st;
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.connected, 1);
	assert_int_equal(st.disconnects, 0);
	assert_true(st.stale_skips >= 99);
	assert_int_equal(fx_owned(&f, address), 20); /* nothing moved */
	assert_int_equal(st.stale_job_runs, 0);
	fx_disconnect(&f, &ops[99], "test end");
	for (int i = 0; i < 100; i++)
		fx_op_free(&ops[i]);
	fx_op_free(&a);
	fx_close(&f);
}

/* Go bug 2, stale tracking: same and older clocks get every task again. */
static void test_same_and_older_clock_resend(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_create(&f, "t", 30, "cron", 0, 0);
	fx_op a = { 0 };
	int64_t clocks[] = { 1000, 1000, 500, 2000 };
	for (int round = 0; round < 4; round++) {
		fx_op next = { 0 };
		fx_connect(&f, &next, 7, clocks[round]);
		if (a.s)
			fx_disconnect(&f, &a, "superseded");
		fx_op_free(&a);
		a = next;
		fx_wait_ready(&a);
		fx_drain(&a);
		assert_int_equal(fx_held_count(&a), 30);
	}
	char address[43];
	fx_address(7, address);
	Aggregator__ListOperatorsResp *resp;
	assert_int_equal(ap_engine_list_operators(f.e, &resp), 0);
	assert_int_equal(resp->n_operators, 1);
	assert_int_equal(resp->operators[0]->monotonic_clock, 2000); /* the largest */
	assert_int_equal(resp->operators[0]->synced_tasks, 30);
	ap_engine_free_operators(resp);
	check_ok(&f, true);
	fx_disconnect(&f, &a, "end");
	fx_op_free(&a);
	fx_close(&f);
}

/* Go bug 3, orphaned tasks: a departed operator's tasks stay as orphans
 * when nobody is left and are reclaimed, with previous_assignment logged. */
static void test_orphan_reclaim_logged(void **state)
{
	(void)state;
	char logpath[300];
	fx_engine f;
	fx_open(&f, 0, 0);
	snprintf(logpath, sizeof logpath, "%s/log", f.dir);
	char err[128];
	assert_int_equal(ap_log_open(AP_LOG_INFO, AP_LOG_TEXT, logpath, err, sizeof err), 0);

	fx_op a = { 0 }, b = { 0 };
	fx_connect(&f, &a, 0xa, 1);
	fx_wait_ready(&a);
	fx_create(&f, "t", 10, "block", 0, 0);
	fx_drain(&a);
	assert_int_equal(fx_held_count(&a), 10);
	fx_disconnect(&f, &a, "gone");
	ap_engine_stats st;
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.orphans, 10);

	fx_connect(&f, &b, 0xb, 1);
	fx_wait_ready(&b);
	fx_drain(&b);
	assert_int_equal(fx_held_count(&b), 10);
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.orphans, 0);
	assert_int_equal(st.assign_reclaim, 10);
	ap_log_close();
	ap_log_set_level(AP_LOG_WARN);

	FILE *fp = fopen(logpath, "r");
	assert_non_null(fp);
	char line[1024];
	int reclaimed = 0;
	char a_addr[43];
	fx_address(0xa, a_addr);
	while (fgets(line, sizeof line, fp))
		if (strstr(line, "Reclaimed orphaned task for operator") &&
		    strstr(line, "previous_assignment=") && strstr(line, a_addr))
			reclaimed++;
	fclose(fp);
	assert_int_equal(reclaimed, 10);
	fx_disconnect(&f, &b, "end");
	fx_op_free(&a);
	fx_op_free(&b);
	fx_close(&f);
}

/* Go bug 4, override: tasks reclaimed by a returning operator are not
 * moved to another ready operator afterwards. B can only run block tasks,
 * so the event tasks are orphans until A returns. */
static void test_reclaim_not_overridden(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	char bad[43];
	fx_address(0xb, bad);
	fx_op b = { 0 }, a = { 0 };
	ap_hello hb = { .address = bad, .has_capabilities = true, .block_monitoring = true };
	assert_int_equal(fx_connect_hello(&f, &b, &hb), 0);
	fx_wait_ready(&b);
	fx_create(&f, "ev", 12, "event", 0, 0);
	fx_create(&f, "bl", 4, "block", 0, 0);
	fx_drain(&b);
	assert_int_equal(fx_held_count(&b), 4);
	ap_engine_stats st;
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.orphans, 12);

	fx_connect(&f, &a, 0xa, 1);
	fx_wait_ready(&a);
	fx_drain(&a);
	fx_drain(&b);
	/* A (4 fewer tasks than nobody: all of them) took the 12 event tasks;
	 * B still has exactly its 4 block tasks, the reclaim was not undone. */
	assert_int_equal(fx_held_count(&a), 12);
	assert_int_equal(fx_held_count(&b), 4);
	for (int i = 0; i < 12; i++) {
		char id[16], owner[43];
		snprintf(id, sizeof id, "ev-%d", i);
		fx_owner(&f, id, owner);
		assert_string_equal(owner, a.address);
		assert_true(fx_holds(&a, id));
	}
	check_ok(&f, true);
	fx_disconnect(&f, &a, "end");
	fx_disconnect(&f, &b, "end");
	fx_op_free(&a);
	fx_op_free(&b);
	fx_close(&f);
}

/* Reconnection flow: connect, tasks, disconnect, reconnect, tasks again. */
static void test_reconnection_flow(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_create(&f, "t", 25, "fixed", 0, 0);
	fx_op a = { 0 };
	for (int round = 0; round < 3; round++) {
		fx_connect(&f, &a, 3, 100 + round);
		fx_wait_ready(&a);
		fx_drain(&a);
		assert_int_equal(fx_held_count(&a), 25);
		check_ok(&f, true);
		fx_disconnect(&f, &a, "closed");
		ap_engine_stats st;
		ap_engine_get_stats(f.e, &st);
		assert_int_equal(st.orphans, 25);
	}
	fx_op_free(&a);
	fx_close(&f);
}

/* Stabilization: nothing is sent before the period, everything right after. */
static void test_stabilization(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 300, 0);
	fx_create(&f, "t", 10, "block", 0, 0);
	fx_op a = { 0 };
	fx_connect(&f, &a, 5, 1);
	int64_t opened = ap_session_opened_ns(a.s);
	/* Nothing reaches the outbox before the period ends. The engine
	 * queues the initial tasks and then flags the session ready, so a
	 * drain between the two may already find them: what must hold is
	 * that whatever a drain finds came after the period. */
	for (;;) {
		bool ready = ap_session_ready(a.s);
		if (fx_drain(&a) > 0)
			assert_true(ap_clock_mono_ns() - opened >= 300 * 1000000LL);
		if (ready)
			break;
		assert_true(ap_clock_mono_ns() - opened < 5000000000LL);
		usleep(2000);
	}
	assert_true(ap_clock_mono_ns() - opened >= 300 * 1000000LL);
	fx_drain(&a);
	assert_int_equal(fx_held_count(&a), 10);
	fx_disconnect(&f, &a, "end");
	fx_op_free(&a);
	fx_close(&f);
}

/* Orphan reclamation across three connections: A, B and C come and go;
 * every task always ends with exactly one ready owner. */
static void test_orphans_three_connections(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_op a = { 0 }, b = { 0 }, c = { 0 };
	fx_connect(&f, &a, 0xa, 1);
	fx_wait_ready(&a);
	fx_create(&f, "t", 30, "block", 0, 0);
	fx_drain(&a);
	assert_int_equal(fx_held_count(&a), 30);
	fx_connect(&f, &b, 0xb, 1);
	fx_wait_ready(&b);
	fx_create(&f, "u", 10, "block", 0, 0); /* new tasks go to the least loaded: B */
	fx_drain(&b);
	assert_int_equal(fx_held_count(&b), 10);
	fx_disconnect(&f, &a, "killed"); /* A's 30 go to B at once */
	fx_drain(&b);
	assert_int_equal(fx_held_count(&b), 40);
	fx_disconnect(&f, &b, "killed"); /* nobody left: 40 orphans */
	ap_engine_stats st;
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.orphans, 40);
	fx_connect(&f, &c, 0xc, 1);
	fx_wait_ready(&c);
	fx_drain(&c);
	assert_int_equal(fx_held_count(&c), 40);
	check_ok(&f, true);
	fx_disconnect(&f, &c, "end");
	fx_op_free(&a);
	fx_op_free(&b);
	fx_op_free(&c);
	fx_close(&f);
}

/* Disable/enable and delete reach the owner. */
static void test_disable_enable_delete(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	fx_op a = { 0 };
	fx_connect(&f, &a, 1, 1);
	fx_wait_ready(&a);
	fx_create(&f, "t", 3, "block", 0, 0);
	fx_drain(&a);
	const char *st;
	assert_int_equal(ap_engine_set_enabled(f.e, "t-1", false, &st), 0);
	assert_string_equal(st, "disabled");
	fx_drain(&a);
	assert_int_equal(a.disables, 1);
	assert_false(fx_holds(&a, "t-1"));
	assert_int_equal(ap_engine_set_enabled(f.e, "t-1", false, &st), 0); /* idempotent */
	assert_int_equal(fx_drain(&a), 0);
	assert_int_equal(ap_engine_set_enabled(f.e, "t-1", true, &st), 0);
	assert_string_equal(st, "enabled");
	fx_drain(&a);
	assert_true(fx_holds(&a, "t-1"));
	assert_int_equal(ap_engine_delete_task(f.e, "t-2"), 0);
	fx_drain(&a);
	assert_int_equal(a.deletes, 1);
	assert_false(fx_holds(&a, "t-2"));
	assert_int_equal(ap_engine_delete_task(f.e, "t-2"), AP_ENOTFOUND);
	assert_int_equal(ap_engine_set_enabled(f.e, "nope", true, &st), AP_ENOTFOUND);
	assert_int_equal(fx_held_count(&a), 2);
	check_ok(&f, true);
	fx_disconnect(&f, &a, "end");
	fx_op_free(&a);
	fx_close(&f);
}

/* Failover: the remaining operator gets the tasks without waiting for a
 * tick (resync is 10 minutes in the fixture); filters are respected; a
 * manual task is never streamed nor counted as an orphan. */
static void test_failover_and_filters(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	char ab[43], cb[43];
	fx_address(0xa, ab);
	fx_address(0xc, cb);
	int64_t chain1[] = { 1 };
	ap_hello ha = { .address = ab };
	ap_hello hc = { .address = cb, .has_capabilities = true, .block_monitoring = true,
			.chain_ids = chain1, .n_chain_ids = 1 };
	fx_op a = { 0 }, c = { 0 };
	assert_int_equal(fx_connect_hello(&f, &a, &ha), 0);
	assert_int_equal(fx_connect_hello(&f, &c, &hc), 0);
	fx_wait_ready(&a);
	fx_wait_ready(&c);
	fx_create(&f, "b1", 6, "block", 1, 0);
	fx_create(&f, "b2", 4, "block", 2, 0);
	fx_create(&f, "ev", 4, "event", 1, 0);
	fx_create(&f, "cr", 4, "cron", 0, 0);
	fx_create(&f, "man", 3, "manual", 0, 0);
	fx_drain(&a);
	fx_drain(&c);
	/* C may only hold block tasks on chain 1. */
	for (int i = 0; i < 4; i++) {
		char id[16];
		snprintf(id, sizeof id, "b2-%d", i);
		assert_false(fx_holds(&c, id));
		snprintf(id, sizeof id, "ev-%d", i);
		assert_false(fx_holds(&c, id));
		snprintf(id, sizeof id, "cr-%d", i);
		assert_false(fx_holds(&c, id));
	}
	assert_int_equal(fx_held_count(&a) + fx_held_count(&c), 18);
	fx_disconnect(&f, &a, "killed");
	fx_drain(&c);
	/* Only the six chain-1 block tasks can go to C; the rest are orphans. */
	assert_int_equal(fx_held_count(&c), 6);
	ap_engine_stats st;
	ap_engine_get_stats(f.e, &st);
	assert_int_equal(st.orphans, 12); /* the manual ones are not orphans */
	for (int i = 0; i < 3; i++) {
		char id[16], owner[43];
		snprintf(id, sizeof id, "man-%d", i);
		fx_owner(&f, id, owner);
		assert_string_equal(owner, "");
		assert_false(fx_holds(&c, id));
	}
	check_ok(&f, true);
	fx_disconnect(&f, &c, "end");
	fx_op_free(&a);
	fx_op_free(&c);
	fx_close(&f);
}

/* Bad input at accept: malformed address, negative clock, unapproved. */
static void test_session_open_rejects(void **state)
{
	(void)state;
	fx_engine f;
	fx_open(&f, 0, 0);
	char err[256];
	ap_session *s = NULL;
	ap_hello h = { .address = "0x1234", .monotonic_clock = 1 };
	assert_int_equal(ap_engine_session_open(f.e, &h, &s, err, sizeof err), AP_EINVAL);
	h.address = "0xZZ00000000000000000000000000000000000000";
	assert_int_equal(ap_engine_session_open(f.e, &h, &s, err, sizeof err), AP_EINVAL);
	h.address = "0x00000000000000000000000000000000000000AA";
	h.monotonic_clock = -1;
	assert_int_equal(ap_engine_session_open(f.e, &h, &s, err, sizeof err), AP_EINVAL);
	assert_null(s);
	fx_close(&f);

	/* An approved list without "*": others are denied. */
	fx_open(&f, 0, 0);
	ap_engine_close(f.e);
	free(f.cfg.operators.approved[0]);
	f.cfg.operators.approved[0] = strdup("0x00000000000000000000000000000000000000AA");
	fx_reopen(&f);
	h.monotonic_clock = 1;
	h.address = "0x00000000000000000000000000000000000000bb";
	assert_int_equal(ap_engine_session_open(f.e, &h, &s, err, sizeof err), AP_EDENIED);
	assert_non_null(strstr(err, "not approved"));
	h.address = "0x00000000000000000000000000000000000000aa"; /* case-insensitive */
	assert_int_equal(ap_engine_session_open(f.e, &h, &s, err, sizeof err), 0);
	ap_engine_session_close(f.e, s, "end");
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ticker_race),
		cmocka_unit_test(test_same_and_older_clock_resend),
		cmocka_unit_test(test_orphan_reclaim_logged),
		cmocka_unit_test(test_reclaim_not_overridden),
		cmocka_unit_test(test_reconnection_flow),
		cmocka_unit_test(test_stabilization),
		cmocka_unit_test(test_orphans_three_connections),
		cmocka_unit_test(test_disable_enable_delete),
		cmocka_unit_test(test_failover_and_filters),
		cmocka_unit_test(test_session_open_rejects),
	};
	ap_log_set_level(AP_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
