/* Task rules: ids, ULIDs (lower case, ordered even within a millisecond),
 * and trigger checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/task.h"

static int64_t fixed_ms;
static int64_t fixed_clock(void) { return fixed_ms; }

static void test_ulid_format_and_order(void **state)
{
	(void)state;
	char prev[27] = "", id[27];
	/* First ULID of the process: the time prefix is 10 symbols of the
	 * 48-bit millisecond clock (the ULID spec's example: 01ARYZ6S41). */
	ap_clock_set_wall_hook(fixed_clock);
	fixed_ms = 1469918176385;
	ap_task_make_ulid(id);
	assert_memory_equal(id, "01aryz6s41", 10);
	ap_clock_set_wall_hook(NULL);
	for (int i = 0; i < 20000; i++) {
		ap_task_make_ulid(id);
		assert_int_equal(strlen(id), 26);
		assert_true(strspn(id, "0123456789abcdefghjkmnpqrstvwxyz") == 26);
		assert_true(ap_task_id_valid(id));
		/* Strictly increasing: creation order is id order. */
		assert_true(strcmp(prev, id) < 0);
		memcpy(prev, id, sizeof id);
	}
	/* A clock that steps back still yields increasing ids. */
	ap_clock_set_wall_hook(fixed_clock);
	fixed_ms = 1469918176385;
	ap_task_make_ulid(id);
	assert_true(strcmp(prev, id) < 0);
	ap_clock_set_wall_hook(NULL);
}

static void test_id_rules(void **state)
{
	(void)state;
	char long_id[70];
	memset(long_id, 'a', 64);
	long_id[64] = '\0';
	assert_true(ap_task_id_valid("a"));
	assert_true(ap_task_id_valid("Task_1-x"));
	assert_true(ap_task_id_valid(long_id));
	long_id[64] = 'a';
	long_id[65] = '\0';
	assert_false(ap_task_id_valid(long_id));
	assert_false(ap_task_id_valid(""));
	assert_false(ap_task_id_valid("a b"));
	assert_false(ap_task_id_valid("a/b"));
	assert_false(ap_task_id_valid("é"));
}

static void test_trigger_check(void **state)
{
	(void)state;
	char err[160];
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	assert_int_equal(ap_task_trigger_check(NULL, err, sizeof err), AP_EINVAL);
	assert_int_equal(ap_task_trigger_check(&tr, err, sizeof err), AP_EINVAL);
	Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger bt = AGGREGATOR__BLOCK_TRIGGER__INIT;
	bt.config = &bc;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	tr.block = &bt;
	assert_int_equal(ap_task_trigger_check(&tr, err, sizeof err), AP_EINVAL); /* interval 0 */
	bc.interval = 5;
	bc.chain_id = 7;
	assert_int_equal(ap_task_trigger_check(&tr, err, sizeof err),
			 AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK);
	assert_int_equal(ap_task_trigger_chain(&tr), 7);
	tr.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON; /* disagrees with the kind */
	assert_int_equal(ap_task_trigger_check(&tr, err, sizeof err), AP_EINVAL);
	assert_non_null(strstr(err, "does not match"));
}

/* Executions left, for any value a (possibly damaged) stored record holds:
 * never negative, never an overflow (UBSan fails this test otherwise). */
static void test_record_remaining(void **state)
{
	(void)state;
	Apstore__TaskRecord r = APSTORE__TASK_RECORD__INIT;
	r.max_execution = 0;
	assert_int_equal(ap_task_record_remaining(&r), -1);
	r.max_execution = 5;
	r.execution_count = 2;
	assert_int_equal(ap_task_record_remaining(&r), 3);
	r.execution_count = 7;
	assert_int_equal(ap_task_record_remaining(&r), 0);
	r.max_execution = INT64_MAX;
	r.execution_count = INT64_MIN;
	assert_int_equal(ap_task_record_remaining(&r), INT64_MAX);
	r.max_execution = 3;
	r.execution_count = INT64_MAX;
	assert_int_equal(ap_task_record_remaining(&r), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ulid_format_and_order),
		cmocka_unit_test(test_id_rules),
		cmocka_unit_test(test_trigger_check),
		cmocka_unit_test(test_record_remaining),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
