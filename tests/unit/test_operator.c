/* Unit tests for the operator client's pure parts: the cron matcher
 * (src/cron.c), the reconnect backoff, the trigger schedule of a task and
 * the trigger_request_id (src/operator.c). The running client (threads,
 * gRPC) is covered by tests/integration/test_operator.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "ap/cron.h"
#include "ap/error.h"
#include "ap/operator.h"

#define MIN_MS INT64_C(60000)

/* Milliseconds since the epoch of a UTC date and time. */
static int64_t utc(int year, int mon, int mday, int hour, int min)
{
	struct tm tm = { 0 };
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = mday;
	tm.tm_hour = hour;
	tm.tm_min = min;
	return (int64_t)timegm(&tm) * 1000;
}

static ap_cron parse_ok(const char *expr)
{
	ap_cron c;
	char err[160] = "";
	int rc = ap_cron_parse(expr, &c, err, sizeof err);
	if (rc)
		fail_msg("'%s' did not parse: %s", expr, err);
	return c;
}

static void parse_bad(const char *expr, const char *why)
{
	ap_cron c;
	char err[160] = "";
	assert_int_equal(ap_cron_parse(expr, &c, err, sizeof err), AP_EINVAL);
	if (!strstr(err, why))
		fail_msg("'%s': error '%s' does not mention '%s'", expr, err, why);
}

/* ---- cron: parsing --------------------------------------------------------- */

static void test_cron_parse_fields(void **state)
{
	(void)state;
	ap_cron c = parse_ok("* * * * *");
	assert_true(c.minutes == (UINT64_C(1) << 60) - 1);
	assert_true(c.hours == (UINT32_C(1) << 24) - 1);
	assert_true(c.mdays == ((UINT32_C(1) << 31) - 1) << 1);
	assert_true(c.months == ((1u << 12) - 1) << 1);
	assert_int_equal(c.wdays, 0x7f);
	assert_true(c.mday_star && c.wday_star);

	c = parse_ok("0,30 9-17/2 1,15 */3 1-5");
	assert_true(c.minutes == ((UINT64_C(1) << 0) | (UINT64_C(1) << 30)));
	assert_true(c.hours == ((1u << 9) | (1u << 11) | (1u << 13) | (1u << 15) | (1u << 17)));
	assert_true(c.mdays == ((1u << 1) | (1u << 15)));
	assert_true(c.months == ((1u << 1) | (1u << 4) | (1u << 7) | (1u << 10)));
	assert_int_equal(c.wdays, 0x3e);
	assert_false(c.mday_star);
	assert_false(c.wday_star);

	/* "a/n" is "a-MAX/n". */
	c = parse_ok("5/15 * * * *");
	assert_true(c.minutes == ((UINT64_C(1) << 5) | (UINT64_C(1) << 20) |
				  (UINT64_C(1) << 35) | (UINT64_C(1) << 50)));
	/* Surrounding and repeated whitespace, tabs. */
	c = parse_ok("  1\t2   3 4 5  ");
	assert_true(c.minutes == UINT64_C(1) << 1);
	assert_int_equal(c.wdays, 1 << 5);
}

static void test_cron_parse_names_and_sunday(void **state)
{
	(void)state;
	ap_cron c = parse_ok("0 0 * jan-MAR,Dec mon-fri");
	assert_true(c.months == ((1u << 1) | (1u << 2) | (1u << 3) | (1u << 12)));
	assert_int_equal(c.wdays, 0x3e);
	/* 7 is Sunday, like 0; a range may end at 7. */
	assert_int_equal(parse_ok("0 0 * * 7").wdays, 1);
	assert_int_equal(parse_ok("0 0 * * 5-7").wdays, (1 << 5) | (1 << 6) | 1);
	assert_int_equal(parse_ok("0 0 * * SUN").wdays, 1);
	assert_int_equal(parse_ok("0 0 * * sat,sun").wdays, (1 << 6) | 1);
}

static void test_cron_parse_macros(void **state)
{
	(void)state;
	ap_cron a = parse_ok("@daily"), b = parse_ok("0 0 * * *");
	assert_memory_equal(&a, &b, sizeof a);
	a = parse_ok("@hourly");
	b = parse_ok("0 * * * *");
	assert_memory_equal(&a, &b, sizeof a);
	a = parse_ok("@WEEKLY");
	b = parse_ok("0 0 * * 0");
	assert_memory_equal(&a, &b, sizeof a);
	a = parse_ok("@annually");
	b = parse_ok("@yearly");
	assert_memory_equal(&a, &b, sizeof a);
	a = parse_ok("@monthly");
	b = parse_ok("0 0 1 * *");
	assert_memory_equal(&a, &b, sizeof a);
	parse_bad("@reboot", "unknown macro");
	parse_bad("@daily 5", "nothing after");
}

static void test_cron_parse_errors(void **state)
{
	(void)state;
	parse_bad("", "0 fields");
	parse_bad("* * * *", "4 fields");
	parse_bad("* * * * * *", "more than 5 fields");
	parse_bad("0 * * * * 2026", "more than 5 fields");
	parse_bad("60 * * * *", "field 1 (minute): value out of range 0-59");
	parse_bad("* 24 * * *", "field 2 (hour)");
	parse_bad("* * 0 * *", "field 3 (day-of-month)");
	parse_bad("* * 32 * *", "field 3");
	parse_bad("* * * 13 *", "field 4 (month)");
	parse_bad("* * * * 8", "field 5 (day-of-week)");
	parse_bad("5-1 * * * *", "goes backwards");
	parse_bad("*/0 * * * *", "step must be");
	parse_bad("*/61 * * * *", "step must be");
	parse_bad("*/ * * * *", "needs a step");
	parse_bad("1,,2 * * * *", "empty list item");
	parse_bad("1, * * * *", "empty list item");
	parse_bad("a * * * *", "expected a number");
	parse_bad("* * * foo *", "unknown name");
	parse_bad("* * * * mon-xyz", "unknown name");
	parse_bad("*-5 * * * *", "unexpected '-'");
	parse_bad("1x * * * *", "unexpected 'x'");
	parse_bad("99999999999999999999 * * * *", "out of range");
	ap_cron c;
	assert_int_equal(ap_cron_parse(NULL, &c, NULL, 0), AP_EINVAL);
}

/* ---- cron: matching and the next firing ------------------------------------ */

static void test_cron_next_basic(void **state)
{
	(void)state;
	ap_cron every = parse_ok("* * * * *");
	int64_t t = utc(2026, 11, 28, 4, 17) + 24123; /* 04:17:24.123 */
	assert_int_equal(ap_cron_next(&every, t), utc(2026, 11, 28, 4, 18));
	/* Strictly after: a minute start itself is not "after" itself. */
	assert_int_equal(ap_cron_next(&every, utc(2026, 11, 28, 4, 18)), utc(2026, 11, 28, 4, 19));
	assert_int_equal(ap_cron_next(&every, utc(2026, 11, 28, 4, 18) - 1),
			 utc(2026, 11, 28, 4, 18));
	assert_int_equal(ap_cron_next(&every, -1), 0);

	ap_cron q = parse_ok("*/15 * * * *");
	assert_int_equal(ap_cron_next(&q, t), utc(2026, 11, 28, 4, 30));
	assert_int_equal(ap_cron_next(&q, utc(2026, 11, 28, 23, 50)), utc(2026, 11, 29, 0, 0));

	/* New year, across the year boundary. */
	ap_cron ny = parse_ok("0 0 1 1 *");
	assert_int_equal(ap_cron_next(&ny, t), utc(2027, 1, 1, 0, 0));

	/* Working days at 09:30: 2026-11-28 is a Saturday. */
	ap_cron wd = parse_ok("30 9 * * mon-fri");
	assert_int_equal(ap_cron_next(&wd, t), utc(2026, 11, 30, 9, 30));
	assert_true(ap_cron_matches(&wd, utc(2026, 11, 30, 9, 30) + 59999));
	assert_false(ap_cron_matches(&wd, utc(2026, 11, 30, 9, 31)));
	assert_false(ap_cron_matches(&wd, utc(2026, 11, 28, 9, 30)));

	/* Last minute of the year. */
	ap_cron last = parse_ok("59 23 31 12 *");
	assert_int_equal(ap_cron_next(&last, t), utc(2026, 12, 31, 23, 59));
}

static void test_cron_day_rules(void **state)
{
	(void)state;
	/* Both day fields restricted: either matches (Vixie cron). Friday
	 * the 13th rule: 2026-12-04 is a Friday, the 13th comes later. */
	ap_cron either = parse_ok("0 0 13 * 5");
	int64_t from = utc(2026, 11, 28, 0, 0);
	assert_int_equal(ap_cron_next(&either, from), utc(2026, 12, 4, 0, 0));
	assert_true(ap_cron_matches(&either, utc(2026, 12, 13, 0, 0))); /* a Sunday */

	/* One of them starting with '*' (even with a step): both must match.
	 * Odd days that are Fridays: 2026-12-11 (the 4th is even). */
	ap_cron both = parse_ok("0 0 */2 * 5");
	assert_int_equal(ap_cron_next(&both, from), utc(2026, 12, 11, 0, 0));
	assert_false(ap_cron_matches(&both, utc(2026, 12, 4, 0, 0)));

	/* Only the day of month restricted. */
	ap_cron fifteenth = parse_ok("0 12 15 * *");
	assert_int_equal(ap_cron_next(&fifteenth, from), utc(2026, 12, 15, 12, 0));

	/* February 29th: the next leap year. */
	ap_cron leap = parse_ok("0 0 29 2 *");
	assert_int_equal(ap_cron_next(&leap, from), utc(2028, 2, 29, 0, 0));

	/* A day that never comes: "never", not a hang. */
	ap_cron never = parse_ok("0 0 30 2 *");
	assert_int_equal(ap_cron_next(&never, from), -1);
	ap_cron never31 = parse_ok("0 0 31 4,6,9,11 *");
	assert_int_equal(ap_cron_next(&never31, from), -1);
}

static void test_cron_matches_against_next(void **state)
{
	(void)state;
	/* Over two days minute by minute, next() must land exactly on the
	 * minutes matches() accepts, for a few mixed schedules. */
	const char *exprs[] = { "*/7 1-3,22 * * *", "0,45 */5 * * sun,wed", "15 10 28-30 11 *",
				"5/20 * 29 11 6" };
	int64_t start = utc(2026, 11, 28, 0, 0);
	for (size_t k = 0; k < sizeof exprs / sizeof exprs[0]; k++) {
		ap_cron c = parse_ok(exprs[k]);
		int64_t expect = -1;
		for (int64_t t = start + 2 * 24 * 60 * MIN_MS; t > start; t -= MIN_MS)
			if (ap_cron_matches(&c, t))
				expect = t;
		assert_true(expect > 0);
		assert_int_equal(ap_cron_next(&c, start), expect);
		int64_t prev = start;
		int hits = 0;
		for (int64_t t = ap_cron_next(&c, start); t > 0 && t < start + 2 * 24 * 60 * MIN_MS;
		     t = ap_cron_next(&c, t)) {
			assert_true(ap_cron_matches(&c, t));
			for (int64_t u = prev + MIN_MS; u < t; u += MIN_MS)
				assert_false(ap_cron_matches(&c, u));
			prev = t;
			hits++;
		}
		assert_true(hits > 0);
	}
}

/* ---- backoff ------------------------------------------------------------------ */

static void test_backoff_growth_and_cap(void **state)
{
	(void)state;
	ap_backoff b;
	ap_backoff_init(&b, 1000, 2.0, 60000, 0.25, 120000);
	/* u = 0.5 is the middle of the jitter range: the bare base. */
	const int64_t expect[] = { 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000 };
	for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
		assert_int_equal(ap_backoff_next(&b, 0.5), expect[i]);
	assert_int_equal(b.attempts, 9);
	ap_backoff_reset(&b);
	assert_int_equal(ap_backoff_next(&b, 0.5), 1000);
	assert_int_equal(ap_backoff_next(&b, 0.5), 2000);
}

static void test_backoff_jitter_bounds(void **state)
{
	(void)state;
	ap_backoff b;
	ap_backoff_init(&b, 1000, 2.0, 60000, 0.25, 120000);
	/* The extremes of u give -25 % and (almost) +25 %. */
	assert_int_equal(ap_backoff_next(&b, 0.0), 750);
	assert_int_equal(ap_backoff_next(&b, 0.999999999), 2500);
	/* At the cap, jitter still applies around max_ms. */
	for (int i = 0; i < 10; i++)
		ap_backoff_next(&b, 0.5);
	assert_int_equal(ap_backoff_next(&b, 0.0), 45000);
	assert_int_equal(ap_backoff_next(&b, 0.999999999), 75000);
	/* Out-of-range draws are clamped, not trusted. */
	assert_int_equal(ap_backoff_next(&b, -3.0), 45000);
	assert_int_equal(ap_backoff_next(&b, 7.0), 75000);
	/* Every draw of a sweep lands within +/- 25 % of its base. */
	ap_backoff_init(&b, 1000, 2.0, 60000, 0.25, 120000);
	double base = 1000;
	for (int i = 0; i < 40; i++) {
		double u = (double)((i * 7919) % 1000) / 1000.0;
		int64_t w = ap_backoff_next(&b, u);
		assert_true(w >= (int64_t)(base * 0.75) && w <= (int64_t)(base * 1.25) + 1);
		base = base * 2 > 60000 ? 60000 : base * 2;
	}
}

static void test_backoff_reset_after_connected(void **state)
{
	(void)state;
	ap_backoff b;
	ap_backoff_init(&b, 1000, 2.0, 60000, 0.25, 120000);
	for (int i = 0; i < 4; i++)
		ap_backoff_next(&b, 0.5);
	/* A short-lived stream does not reset the backoff. */
	assert_false(ap_backoff_connected(&b, 119999));
	assert_int_equal(ap_backoff_next(&b, 0.5), 16000);
	/* One that stayed up reset_after_ms does. */
	assert_true(ap_backoff_connected(&b, 120000));
	assert_int_equal(b.attempts, 0);
	assert_int_equal(ap_backoff_next(&b, 0.5), 1000);
}

static void test_backoff_edges(void **state)
{
	(void)state;
	ap_backoff b;
	/* factor 1: constant; no jitter: exact. */
	ap_backoff_init(&b, 300, 1.0, 60000, 0.0, 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(ap_backoff_next(&b, 0.9), 300);
	/* reset_after 0: any stream that opened resets. */
	assert_true(ap_backoff_connected(&b, 0));
	/* Nonsense is clamped: max below initial, factor below 1, jitter
	 * above 1; a wait is never below 1 ms. */
	ap_backoff_init(&b, 0, 0.5, -5, 3.0, -1);
	assert_int_equal(b.initial_ms, 1);
	assert_int_equal(b.max_ms, 1);
	assert_true(b.factor == 1.0 && b.jitter == 1.0);
	assert_int_equal(ap_backoff_next(&b, 0.0), 1);
	assert_int_equal(ap_backoff_next(&b, 0.999), 2);
}

/* ---- trigger schedule --------------------------------------------------------- */

static void test_plan_fixed_time(void **state)
{
	(void)state;
	int64_t epochs[] = { 5000, 1000, 3000, 3000, 9000 };
	Aggregator__FixedTimeTrigger__Config cfg = AGGREGATOR__FIXED_TIME_TRIGGER__CONFIG__INIT;
	Aggregator__FixedTimeTrigger ft = AGGREGATOR__FIXED_TIME_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	cfg.epochs = epochs;
	cfg.n_epochs = 5;
	ft.config = &cfg;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME;
	tr.fixed_time = &ft;

	ap_time_plan *p = NULL;
	char warn[128];
	assert_int_equal(ap_time_plan_new(&tr, 0, 0, &p, warn, sizeof warn), 0);
	assert_string_equal(warn, "");
	/* The type comes from the oneof when the type field is unset. */
	assert_int_equal(ap_time_plan_type(p), AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_FIXED_TIME);
	assert_true(ap_time_plan_fires(p));
	const char *sched = "x";
	assert_int_equal(ap_time_plan_next(p, -1, &sched), 1000);
	assert_null(sched);
	assert_int_equal(ap_time_plan_next(p, 1000, NULL), 3000); /* strictly after */
	assert_int_equal(ap_time_plan_next(p, 3000, NULL), 5000); /* duplicate once */
	assert_int_equal(ap_time_plan_next(p, 8999, NULL), 9000);
	assert_int_equal(ap_time_plan_next(p, 9000, NULL), -1);
	ap_time_plan_free(p);

	/* start_at and expired_at bound it: [3000, 9000). */
	assert_int_equal(ap_time_plan_new(&tr, 3000, 9000, &p, NULL, 0), 0);
	assert_int_equal(ap_time_plan_next(p, 0, NULL), 3000);
	assert_int_equal(ap_time_plan_next(p, 3000, NULL), 5000);
	assert_int_equal(ap_time_plan_next(p, 5000, NULL), -1);
	ap_time_plan_free(p);
}

static void test_plan_cron(void **state)
{
	(void)state;
	char *schedules[] = { "0 * * * *", "not a schedule", "30 12 * * *" };
	Aggregator__CronTrigger__Config cfg = AGGREGATOR__CRON_TRIGGER__CONFIG__INIT;
	Aggregator__CronTrigger cron = AGGREGATOR__CRON_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	cfg.schedules = schedules;
	cfg.n_schedules = 3;
	cron.config = &cfg;
	tr.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON;
	tr.cron = &cron;

	ap_time_plan *p = NULL;
	char warn[128];
	int64_t day = utc(2026, 11, 28, 0, 0);
	assert_int_equal(ap_time_plan_new(&tr, 0, day + 13 * 60 * MIN_MS, &p, warn, sizeof warn), 0);
	/* The bad schedule is named and left out; the others fire. */
	assert_non_null(strstr(warn, "not a schedule"));
	assert_true(ap_time_plan_fires(p));
	assert_int_equal(ap_time_plan_type(p), AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON);
	const char *which = NULL;
	assert_int_equal(ap_time_plan_next(p, day + 12 * 60 * MIN_MS, &which),
			 day + 12 * 60 * MIN_MS + 30 * MIN_MS);
	assert_string_equal(which, "30 12 * * *");
	/* 13:00 would be next, but expired_at is 13:00: nothing more. */
	assert_int_equal(ap_time_plan_next(p, day + 12 * 60 * MIN_MS + 30 * MIN_MS, &which), -1);
	assert_int_equal(ap_time_plan_next(p, day + 5 * MIN_MS, &which), day + 60 * MIN_MS);
	assert_string_equal(which, "0 * * * *");
	ap_time_plan_free(p);

	/* Only bad schedules: a plan that never fires. */
	cfg.schedules = schedules + 1;
	cfg.n_schedules = 1;
	assert_int_equal(ap_time_plan_new(&tr, 0, 0, &p, warn, sizeof warn), 0);
	assert_false(ap_time_plan_fires(p));
	assert_int_equal(ap_time_plan_next(p, 0, NULL), -1);
	ap_time_plan_free(p);

	/* start_at: the first matching minute at or after it. */
	cfg.schedules = schedules;
	cfg.n_schedules = 1;
	assert_int_equal(ap_time_plan_new(&tr, day + 3 * 60 * MIN_MS, 0, &p, NULL, 0), 0);
	assert_int_equal(ap_time_plan_next(p, day, NULL), day + 3 * 60 * MIN_MS);
	ap_time_plan_free(p);
}

static void test_plan_unwatched(void **state)
{
	(void)state;
	Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger block = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	bc.interval = 10;
	block.config = &bc;
	tr.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	tr.block = &block;
	ap_time_plan *p = NULL;
	assert_int_equal(ap_time_plan_new(&tr, 0, 0, &p, NULL, 0), 0);
	assert_int_equal(ap_time_plan_type(p), AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK);
	assert_false(ap_time_plan_fires(p));
	assert_int_equal(ap_time_plan_next(p, 0, NULL), -1);
	ap_time_plan_free(p);

	/* No trigger at all, and a type field without a oneof. */
	assert_int_equal(ap_time_plan_new(NULL, 0, 0, &p, NULL, 0), 0);
	assert_int_equal(ap_time_plan_type(p), AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_UNSPECIFIED);
	assert_false(ap_time_plan_fires(p));
	ap_time_plan_free(p);
	Aggregator__TaskTrigger bare = AGGREGATOR__TASK_TRIGGER__INIT;
	bare.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT;
	assert_int_equal(ap_time_plan_new(&bare, 0, 0, &p, NULL, 0), 0);
	assert_int_equal(ap_time_plan_type(p), AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT);
	ap_time_plan_free(p);
	ap_time_plan_free(NULL);
}

static void test_request_id(void **state)
{
	(void)state;
	char buf[80];
	assert_int_equal(ap_operator_request_id("task-1", 1764303444123, buf, sizeof buf), 0);
	assert_string_equal(buf, "task-1:1764303444123");
	/* Same firing, same id; another firing, another id. */
	char again[80];
	assert_int_equal(ap_operator_request_id("task-1", 1764303444123, again, sizeof again), 0);
	assert_string_equal(buf, again);
	assert_int_equal(ap_operator_request_id("task-1", 1764303444124, again, sizeof again), 0);
	assert_string_not_equal(buf, again);
	assert_int_equal(ap_operator_request_id("task-1", 5, buf, 8), AP_ELIMIT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cron_parse_fields),
		cmocka_unit_test(test_cron_parse_names_and_sunday),
		cmocka_unit_test(test_cron_parse_macros),
		cmocka_unit_test(test_cron_parse_errors),
		cmocka_unit_test(test_cron_next_basic),
		cmocka_unit_test(test_cron_day_rules),
		cmocka_unit_test(test_cron_matches_against_next),
		cmocka_unit_test(test_backoff_growth_and_cap),
		cmocka_unit_test(test_backoff_jitter_bounds),
		cmocka_unit_test(test_backoff_reset_after_connected),
		cmocka_unit_test(test_backoff_edges),
		cmocka_unit_test(test_plan_fixed_time),
		cmocka_unit_test(test_plan_cron),
		cmocka_unit_test(test_plan_unwatched),
		cmocka_unit_test(test_request_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
