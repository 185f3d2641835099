/*
 * Integration: the unary RPCs of the Node and Admin services through the
 * client library, against the real daemon (SPEC sections 2, 2b and 3).
 *
 *  - HealthCheck, Ping;
 *  - Admin: CreateTasks (server-made ULID ids, duplicates, bad ids, bad
 *    triggers), ListTasks paging in id order, SetTaskEnabled and DeleteTask
 *    with the DisableTask / MonitorTaskTrigger / DeleteTask messages they
 *    cause at the owner, unknown ids, manual tasks never owned or streamed;
 *  - Ack with and without x-operator-address;
 *  - NotifyTriggers: not_found, enabled (unlimited and counted),
 *    deduplicated, not the owner, exhaustion with CompletedTask, disabled,
 *    expired, not_started.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ap/clock.h"
#include "daemon.h"
#include "itest.h"

static int teardown(void **state)
{
	it_op_free_all();
	td_destroy(*state);
	*state = NULL;
	return 0;
}

/* Create one task; returns the status code, the id made in `made`. */
static int create_one(ap_client *admin, const char *id, bool manual,
		      int64_t max_execution, int64_t start_at, int64_t expired_at,
		      char made[65])
{
	Aggregator__BlockTrigger__Config cfg = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger block = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__ManualTrigger__Config mcfg = AGGREGATOR__MANUAL_TRIGGER__CONFIG__INIT;
	Aggregator__ManualTrigger mtrig = AGGREGATOR__MANUAL_TRIGGER__INIT;
	Aggregator__TaskTrigger trigger = AGGREGATOR__TASK_TRIGGER__INIT;
	Aggregator__NewTask task = AGGREGATOR__NEW_TASK__INIT;
	Aggregator__NewTask *tasks[1] = { &task };
	Aggregator__CreateTasksReq req = AGGREGATOR__CREATE_TASKS_REQ__INIT;
	Aggregator__CreateTasksResp *resp = NULL;
	ap_rpc_status st;

	if (manual) {
		mtrig.config = &mcfg;
		trigger.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL;
		trigger.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL;
		trigger.manual = &mtrig;
	} else {
		cfg.interval = 5;
		block.config = &cfg;
		trigger.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
		trigger.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
		trigger.block = &block;
	}
	task.id = (char *)id;
	task.name = "rpc";
	task.trigger = &trigger;
	task.max_execution = max_execution;
	task.start_at = start_at;
	task.expired_at = expired_at;
	req.n_tasks = 1;
	req.tasks = tasks;
	assert_int_equal(ap_client_create_tasks(admin, &req, &resp, NULL, &st), 0);
	if (made)
		made[0] = '\0';
	if (st.code == AP_RPC_OK) {
		assert_int_equal(resp->n_ids, 1);
		if (made)
			snprintf(made, 65, "%s", resp->ids[0]);
	}
	ap_client_free(resp);
	return st.code;
}

static const char *task_status(td_daemon *d, const char *id, char owner[43])
{
	static char status[16];
	it_task *tasks = NULL;
	size_t n = it_list_tasks(d->admin, &tasks);
	status[0] = '\0';
	for (size_t i = 0; i < n; i++)
		if (strcmp(tasks[i].id, id) == 0) {
			snprintf(status, sizeof status, "%s", tasks[i].status);
			if (owner)
				snprintf(owner, 43, "%s", tasks[i].owner);
		}
	free(tasks);
	return status;
}

static void test_node_and_admin(void **state)
{
	td_daemon *d = *state = td_create(&(td_options){ .stabilization_ms = TD_ZERO });
	char a[43], id[65], owner[43];
	ap_rpc_status st;

	td_start(d);
	it_address(30, a);

	/* HealthCheck and Ping. */
	Aggregator__HealthCheckRequest hreq = AGGREGATOR__HEALTH_CHECK_REQUEST__INIT;
	Aggregator__HealthCheckResponse *hresp = NULL;
	hreq.operator_address = a;
	assert_int_equal(ap_client_health_check(d->node, &hreq, &hresp, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_string_equal(hresp->status, "OK");
	int64_t skew = (int64_t)hresp->timestamp - ap_clock_wall_ms();
	assert_true(skew > -60000 && skew < 60000);
	ap_client_free(hresp);

	Aggregator__Checkin checkin = AGGREGATOR__CHECKIN__INIT;
	Aggregator__CheckinResp *pong = NULL;
	checkin.address = a;
	checkin.version = "itest";
	assert_int_equal(ap_client_ping(d->node, &checkin, &pong, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_non_null(pong->updated_at);
	ap_client_free(pong);

	/* CreateTasks: a server-made id is a lower-case ULID. */
	assert_int_equal(create_one(d->admin, "", false, 0, 0, 0, id), AP_RPC_OK);
	assert_int_equal(strlen(id), 26);
	for (const char *p = id; *p; p++)
		assert_true(isdigit((unsigned char)*p) || islower((unsigned char)*p));
	assert_int_equal(create_one(d->admin, id, false, 0, 0, 0, NULL), AP_RPC_ALREADY_EXISTS);
	assert_int_equal(create_one(d->admin, "bad id!", false, 0, 0, 0, NULL),
			 AP_RPC_INVALID_ARGUMENT);
	char long_id[70];
	memset(long_id, 'a', 65);
	long_id[65] = '\0';
	assert_int_equal(create_one(d->admin, long_id, false, 0, 0, 0, NULL),
			 AP_RPC_INVALID_ARGUMENT);
	{
		/* A trigger with no kind set. */
		Aggregator__TaskTrigger empty = AGGREGATOR__TASK_TRIGGER__INIT;
		Aggregator__NewTask task = AGGREGATOR__NEW_TASK__INIT;
		Aggregator__NewTask *tasks[1] = { &task };
		Aggregator__CreateTasksReq req = AGGREGATOR__CREATE_TASKS_REQ__INIT;
		Aggregator__CreateTasksResp *resp = NULL;
		task.id = "no-trigger";
		task.trigger = &empty;
		req.n_tasks = 1;
		req.tasks = tasks;
		assert_int_equal(ap_client_create_tasks(d->admin, &req, &resp, NULL, &st), 0);
		assert_int_equal(st.code, AP_RPC_INVALID_ARGUMENT);
		ap_client_free(resp);
	}

	/* Fixed ids for the rest; ListTasks pages in id order. */
	int64_t now = ap_clock_wall_ms();
	assert_int_equal(create_one(d->admin, "t-unlimited", false, 0, 0, 0, NULL), AP_RPC_OK);
	assert_int_equal(create_one(d->admin, "t-twice", false, 2, 0, 0, NULL), AP_RPC_OK);
	assert_int_equal(create_one(d->admin, "t-expired", false, 0, 0, now - 60000, NULL), AP_RPC_OK);
	assert_int_equal(create_one(d->admin, "t-later", false, 0, now + 3600000, 0, NULL), AP_RPC_OK);
	assert_int_equal(create_one(d->admin, "t-toggle", false, 0, 0, 0, NULL), AP_RPC_OK);
	assert_int_equal(create_one(d->admin, "t-manual", true, 0, 0, 0, NULL), AP_RPC_OK);
	const size_t total = 7; /* with the ULID one */
	{
		Aggregator__ListTasksReq lreq = AGGREGATOR__LIST_TASKS_REQ__INIT;
		char after[65] = "", prev[65] = "";
		size_t seen = 0;
		for (int page = 0; page < 10; page++) {
			Aggregator__ListTasksResp *lresp = NULL;
			lreq.after = after;
			lreq.limit = 2;
			assert_int_equal(ap_client_list_tasks(d->admin, &lreq, &lresp, NULL, &st), 0);
			assert_int_equal(st.code, AP_RPC_OK);
			assert_true(lresp->n_tasks <= 2);
			for (size_t i = 0; i < lresp->n_tasks; i++) {
				assert_true(strcmp(prev, lresp->tasks[i]->id) < 0);
				snprintf(prev, sizeof prev, "%s", lresp->tasks[i]->id);
				seen++;
			}
			bool last = lresp->next_after[0] == '\0';
			snprintf(after, sizeof after, "%s", lresp->next_after);
			ap_client_free(lresp);
			if (last)
				break;
		}
		assert_int_equal(seen, total);
	}

	/* The operator gets every enabled, non-manual task. */
	it_op *op = it_op_start(d->target, a, 1);
	assert_true(it_op_wait_count(op, total - 1, TD_WAIT_MS));
	assert_false(it_op_has(op, "t-manual"));
	assert_string_equal(task_status(d, "t-manual", owner), "enabled");
	assert_string_equal(owner, "");
	assert_string_equal(task_status(d, "t-expired", owner), "enabled");
	assert_string_equal(owner, a);

	/* Ack: only the operator that was sent the message id gets true. */
	it_msg first;
	assert_true(it_op_message(op, 0, &first));
	ap_client *node = d->node;
	bool acked = false;
	char other[43];
	it_address(31, other);
	assert_int_equal(ap_client_ack(node, a, first.msg_id, &acked, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_true(acked);
	assert_int_equal(ap_client_ack(node, other, first.msg_id, &acked, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_false(acked);
	assert_int_equal(ap_client_ack(node, NULL, first.msg_id, &acked, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_false(acked);
	assert_int_equal(ap_client_ack(node, a, "no-such-message", &acked, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_false(acked);

	/* NotifyTriggers. */
	Aggregator__NotifyTriggersReq nreq = AGGREGATOR__NOTIFY_TRIGGERS_REQ__INIT;
	Aggregator__NotifyTriggersResp *nresp = NULL;
	nreq.address = a;
	nreq.trigger_type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
#define NOTIFY(task, request_id, want_code)                                          \
	do {                                                                         \
		ap_client_free(nresp);                                               \
		nresp = NULL;                                                        \
		nreq.task_id = (task);                                               \
		nreq.trigger_request_id = (request_id);                              \
		assert_int_equal(ap_client_notify_triggers(node, &nreq, &nresp, NULL, &st), 0); \
		if (st.code != (want_code))                                          \
			fail_msg("NotifyTriggers %s/%s: %s \"%s\"", (task), (request_id), \
				 ap_rpc_code_name(st.code), st.details);             \
	} while (0)

	NOTIFY("no-such-task", "r1", AP_RPC_OK);
	assert_string_equal(nresp->status, "not_found");
	NOTIFY("t-unlimited", "r1", AP_RPC_OK);
	assert_string_equal(nresp->status, "enabled");
	assert_int_equal(nresp->remaining_executions, -1);
	assert_true(nresp->task_still_enabled);
	NOTIFY("t-unlimited", "r1", AP_RPC_OK);
	assert_string_equal(nresp->status, "deduplicated");
	nreq.address = other; /* approved ("*"), not the owner */
	NOTIFY("t-unlimited", "r2", AP_RPC_PERMISSION_DENIED);
	nreq.address = a;

	NOTIFY("t-twice", "r1", AP_RPC_OK);
	assert_string_equal(nresp->status, "enabled");
	assert_int_equal(nresp->remaining_executions, 1);
	assert_true(nresp->task_still_enabled);
	NOTIFY("t-twice", "r2", AP_RPC_OK);
	assert_string_equal(nresp->status, "enabled");
	assert_int_equal(nresp->remaining_executions, 0);
	assert_false(nresp->task_still_enabled);
	assert_true(it_op_wait_task(op, "t-twice", false, TD_WAIT_MS));
	assert_string_equal(task_status(d, "t-twice", NULL), "completed");
	NOTIFY("t-twice", "r3", AP_RPC_OK);
	assert_string_equal(nresp->status, "exhausted");

	NOTIFY("t-expired", "r1", AP_RPC_OK);
	assert_string_equal(nresp->status, "expired");
	NOTIFY("t-later", "r1", AP_RPC_OK);
	assert_string_equal(nresp->status, "not_started");

	/* Disable, enable, delete, each reaching the owner at once. */
	Aggregator__TaskOpResp *op_resp = NULL;
	assert_int_equal(ap_client_set_task_enabled(d->admin, "t-toggle", false, &op_resp,
						    NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_string_equal(op_resp->id, "t-toggle");
	assert_string_equal(op_resp->status, "disabled");
	ap_client_free(op_resp);
	assert_true(it_op_wait_task(op, "t-toggle", false, TD_WAIT_MS));
	assert_string_equal(task_status(d, "t-toggle", owner), "disabled");
	NOTIFY("t-toggle", "r1", AP_RPC_OK);
	assert_string_equal(nresp->status, "disabled");
	assert_false(nresp->task_still_enabled);
	assert_int_equal(nresp->remaining_executions, 0);

	assert_int_equal(ap_client_set_task_enabled(d->admin, "t-toggle", true, &op_resp,
						    NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_string_equal(op_resp->status, "enabled");
	ap_client_free(op_resp);
	assert_true(it_op_wait_task(op, "t-toggle", true, TD_WAIT_MS));

	assert_int_equal(ap_client_delete_task(d->admin, "t-toggle", &op_resp, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	assert_string_equal(op_resp->status, "deleted");
	ap_client_free(op_resp);
	assert_true(it_op_wait_task(op, "t-toggle", false, TD_WAIT_MS));
	assert_string_equal(task_status(d, "t-toggle", NULL), "");

	/* The messages the owner saw for t-toggle, in order. */
	int ops_seen[8], k = 0;
	for (size_t i = 0; i < it_op_messages(op) && k < 8; i++) {
		it_msg m;
		assert_true(it_op_message(op, i, &m));
		if (strcmp(m.task_id, "t-toggle") == 0)
			ops_seen[k++] = m.op;
	}
	assert_int_equal(k, 4);
	assert_int_equal(ops_seen[0], AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger);
	assert_int_equal(ops_seen[1], AGGREGATOR__MESSAGE_OP__DisableTask);
	assert_int_equal(ops_seen[2], AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger);
	assert_int_equal(ops_seen[3], AGGREGATOR__MESSAGE_OP__DeleteTask);

	/* Unknown ids. */
	assert_int_equal(ap_client_delete_task(d->admin, "t-toggle", &op_resp, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_NOT_FOUND);
	assert_null(op_resp);
	assert_int_equal(ap_client_set_task_enabled(d->admin, "nope", true, &op_resp, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_NOT_FOUND);
	assert_null(op_resp);
	ap_client_free(nresp);
#undef NOTIFY

	it_op_free(op);
	d->passed = true;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_node_and_admin, teardown),
	};
	ap_client_init();
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	ap_client_shutdown();
	return failed;
}
