/* The `ap stress` invariant checker (src/stress_check.c) on constructed
 * views: a consistent one passes, and each invariant fails on a view
 * doctored to break it, and only that invariant. Also the resource rule
 * and the latency summary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ap/stress.h"

#define A "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define B "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define OTHER "0xcccccccccccccccccccccccccccccccccccccccc"

/* A consistent state: A owns t1 and t2, B owns t3; t4 is disabled, m1 a
 * manual task; both operators connected and ready. */
typedef struct fixture {
	ap_stress_task_view tasks[8];
	size_t n_tasks;
	ap_stress_operator_view ops[4];
	size_t n_ops;
	const char *recv_a[4];
	const char *recv_b[4];
	ap_stress_sim_view sims[2];
	ap_stress_verdict v;
} fixture;

static void fixture_init(fixture *f)
{
	memset(f, 0, sizeof *f);
	f->tasks[0] = (ap_stress_task_view){ "t1", "enabled", A, false };
	f->tasks[1] = (ap_stress_task_view){ "t2", "enabled", A, false };
	f->tasks[2] = (ap_stress_task_view){ "t3", "enabled", B, false };
	f->tasks[3] = (ap_stress_task_view){ "t4", "disabled", "", false };
	f->tasks[4] = (ap_stress_task_view){ "m1", "enabled", "", true };
	f->n_tasks = 5;
	f->ops[0] = (ap_stress_operator_view){ A, true, true };
	f->ops[1] = (ap_stress_operator_view){ B, true, true };
	f->n_ops = 2;
	f->recv_a[0] = "t1";
	f->recv_a[1] = "t2";
	f->recv_b[0] = "t3";
	f->sims[0] = (ap_stress_sim_view){ A, 1, true, f->recv_a, 2 };
	f->sims[1] = (ap_stress_sim_view){ B, 1, true, f->recv_b, 1 };
	ap_stress_verdict_init(&f->v);
}

static void run_check(fixture *f)
{
	ap_stress_view view = { f->tasks, f->n_tasks, f->ops, f->n_ops, f->sims, 2 };
	assert_int_equal(ap_stress_check(&view, &f->v), 0);
}

/* Exactly invariant `bad` failed, with `n` violations. */
static void expect_only(const fixture *f, ap_stress_inv bad, uint64_t n)
{
	for (int i = 0; i < AP_STRESS_N_INV; i++) {
		const ap_stress_result *r = &f->v.r[i];
		if (i == (int)bad) {
			if (r->violations != n)
				fail_msg("%s: %llu violations, expected %llu (first: %s)",
					 ap_stress_inv_name(i), (unsigned long long)r->violations,
					 (unsigned long long)n, r->examples[0]);
			assert_true(r->examples[0][0] != '\0');
		} else if (r->violations) {
			fail_msg("%s failed unexpectedly: %s", ap_stress_inv_name(i), r->examples[0]);
		}
	}
}

static void test_consistent_view_passes(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	run_check(&f);
	assert_int_equal(ap_stress_violations(&f.v), 0);
	assert_true(f.v.r[AP_STRESS_INV_SESSIONS].checked);
	assert_true(f.v.r[AP_STRESS_INV_OWNER].checked);
	assert_true(f.v.r[AP_STRESS_INV_RECEIVED].checked);
	assert_true(f.v.r[AP_STRESS_INV_UNIQUE].checked);
	assert_int_equal(f.v.r[AP_STRESS_INV_SESSIONS].items, 2);
	assert_int_equal(f.v.r[AP_STRESS_INV_OWNER].items, 5);
	assert_int_equal(f.v.r[AP_STRESS_INV_UNIQUE].items, 3);
}

static void test_two_sessions_fail_sessions(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.sims[1].sessions = 2;
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_SESSIONS, 1);
}

static void test_not_ready_fails_sessions(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.ops[1].ready = false;
	f.tasks[2].owner = A; /* keep ownership consistent: only B is not ready */
	f.recv_a[2] = "t3";
	f.sims[0].n_received = 3;
	f.sims[1].n_received = 0;
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_SESSIONS, 1);
}

static void test_orphan_fails_owner(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.tasks[2].owner = "";
	f.sims[1].n_received = 0;
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_OWNER, 1);
}

static void test_owner_not_ready_fails_owner(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.tasks[2].owner = OTHER; /* listed, connected, not ready */
	f.ops[2] = (ap_stress_operator_view){ OTHER, true, false };
	f.n_ops = 3;
	f.sims[1].n_received = 0;
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_OWNER, 1);
}

static void test_owned_manual_fails_owner(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.tasks[4].owner = OTHER;
	f.ops[2] = (ap_stress_operator_view){ OTHER, true, true };
	f.n_ops = 3;
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_OWNER, 1);
}

static void test_orphans_allowed_without_ready_operator(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	/* Nobody ready: orphans are fine, the sessions invariant is what fails. */
	f.ops[0].ready = f.ops[1].ready = false;
	f.tasks[0].owner = f.tasks[1].owner = f.tasks[2].owner = "";
	f.sims[0].n_received = f.sims[1].n_received = 0;
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_SESSIONS, 2);
	assert_true(f.v.r[AP_STRESS_INV_OWNER].note[0] != '\0');
}

static void test_missing_task_fails_received(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.sims[0].n_received = 1; /* A owns t1 and t2 but only holds t1 */
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_RECEIVED, 1);
}

static void test_extra_tasks_fail_received(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.recv_b[1] = "t4";      /* disabled */
	f.recv_b[2] = "unknown"; /* not listed at all */
	f.sims[1].n_received = 3;
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_RECEIVED, 2);
}

static void test_manual_received_fails_received(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.recv_a[2] = "m1";
	f.sims[0].n_received = 3;
	run_check(&f);
	expect_only(&f, AP_STRESS_INV_RECEIVED, 1);
}

static void test_task_in_two_sets_fails_unique(void **state)
{
	(void)state;
	fixture f;
	fixture_init(&f);
	f.recv_b[1] = "t1"; /* A owns it; B holds it too */
	f.sims[1].n_received = 2;
	run_check(&f);
	assert_int_equal(f.v.r[AP_STRESS_INV_UNIQUE].violations, 1);
	/* B holding a task it does not own is also a received-set violation. */
	assert_int_equal(f.v.r[AP_STRESS_INV_RECEIVED].violations, 1);
	assert_int_equal(f.v.r[AP_STRESS_INV_SESSIONS].violations, 0);
	assert_int_equal(f.v.r[AP_STRESS_INV_OWNER].violations, 0);
	assert_non_null(strstr(f.v.r[AP_STRESS_INV_UNIQUE].examples[0], "t1"));
}

static void test_resources(void **state)
{
	(void)state;
	ap_stress_verdict v;
	ap_stress_proc base = { 10, 20, 1000, 0, 0 };
	ap_stress_proc ok = { 12, 25, 1500, 0, 0 };
	ap_stress_proc bad = { 13, 29, 1501, 0, 0 };
	/* 30 more fds, but 25 of them are connections the harness holds. */
	ap_stress_proc held = { 12, 50, 1000, 0, 25 };

	ap_stress_verdict_init(&v);
	ap_stress_check_resources("ok", &base, &ok, 2, 8, 500, &v);
	assert_true(v.r[AP_STRESS_INV_RESOURCES].checked);
	assert_int_equal(ap_stress_violations(&v), 0);
	ap_stress_check_resources("held", &base, &held, 2, 8, 500, &v);
	assert_int_equal(ap_stress_violations(&v), 0);
	assert_true(ap_stress_resources_within(&base, &held, 2, 8));
	held.client_conns = 21; /* 29 of the daemon's own: one too many */
	assert_false(ap_stress_resources_within(&base, &held, 2, 8));
	ap_stress_check_resources("bad", &base, &bad, 2, 8, 500, &v);
	assert_int_equal(v.r[AP_STRESS_INV_RESOURCES].violations, 3);
	assert_false(ap_stress_resources_within(&base, &bad, 2, 8));
	ap_stress_verdict_init(&v);
	ap_stress_check_resources("rss off", &base, &bad, 3, 9, -1, &v);
	assert_int_equal(ap_stress_violations(&v), 0);
}

static void test_examples_are_capped(void **state)
{
	(void)state;
	ap_stress_verdict v;
	ap_stress_verdict_init(&v);
	for (int i = 0; i < 3 * AP_STRESS_EXAMPLES; i++)
		ap_stress_violation(&v, AP_STRESS_INV_STATUSES, "violation %d", i);
	assert_int_equal(v.r[AP_STRESS_INV_STATUSES].violations, 3 * AP_STRESS_EXAMPLES);
	assert_string_equal(v.r[AP_STRESS_INV_STATUSES].examples[0], "violation 0");
	assert_string_equal(v.r[AP_STRESS_INV_STATUSES].examples[AP_STRESS_EXAMPLES - 1],
			    "violation 4");
}

static void test_latency_percentiles(void **state)
{
	(void)state;
	int64_t ns[100];
	for (int i = 0; i < 100; i++)
		ns[i] = (int64_t)(100 - i) * 1000000; /* 100 .. 1 ms, unsorted */
	ap_stress_latency l = ap_stress_latency_of(ns, 100);
	assert_int_equal(l.count, 100);
	assert_true(l.p50 == 50.0);
	assert_true(l.p90 == 90.0);
	assert_true(l.p99 == 99.0);
	assert_true(l.max == 100.0);
	l = ap_stress_latency_of(NULL, 0);
	assert_int_equal(l.count, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_consistent_view_passes),
		cmocka_unit_test(test_two_sessions_fail_sessions),
		cmocka_unit_test(test_not_ready_fails_sessions),
		cmocka_unit_test(test_orphan_fails_owner),
		cmocka_unit_test(test_owner_not_ready_fails_owner),
		cmocka_unit_test(test_owned_manual_fails_owner),
		cmocka_unit_test(test_orphans_allowed_without_ready_operator),
		cmocka_unit_test(test_missing_task_fails_received),
		cmocka_unit_test(test_extra_tasks_fail_received),
		cmocka_unit_test(test_manual_received_fails_received),
		cmocka_unit_test(test_task_in_two_sets_fails_unique),
		cmocka_unit_test(test_resources),
		cmocka_unit_test(test_examples_are_capped),
		cmocka_unit_test(test_latency_percentiles),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
