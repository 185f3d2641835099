/* The Admin side of `ap stress`: the tasks it creates, the churn of
 * creates, disables, enables and deletes during the storm, and the
 * ListTasks / ListOperators answers the checker reads. Main thread only
 * (the fleet is told about disabled and deleted tasks through
 * st_fleet_task_gone, which is thread-safe). An admin call that does not
 * answer OK is a violation of the statuses invariant: the churn only asks
 * for what must succeed (it tracks which of its tasks are enabled). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "stress_int.h"

#define CREATE_BATCH 500
#define LIST_PAGE 1000

static void admin_violation(st_run *R, const char *what, const char *id, int rc,
			    const ap_rpc_status *st)
{
	if (rc)
		st_run_violation(R, AP_STRESS_INV_STATUSES, "admin %s %s failed locally: %s",
				 what, id, ap_strerror(rc));
	else
		st_run_violation(R, AP_STRESS_INV_STATUSES, "admin %s %s answered %s: %s",
				 what, id, ap_rpc_code_name(st->code), st->details);
}

/* ---- tasks ------------------------------------------------------------------ */

/* The trigger of the n-th task: mostly block, some cron and fixed_time,
 * one in twenty manual (never owned, never streamed). */
typedef struct trigger_buf {
	Aggregator__TaskTrigger tr;
	Aggregator__BlockTrigger block;
	Aggregator__BlockTrigger__Config block_cfg;
	Aggregator__CronTrigger cron;
	Aggregator__CronTrigger__Config cron_cfg;
	Aggregator__FixedTimeTrigger fixed;
	Aggregator__FixedTimeTrigger__Config fixed_cfg;
	Aggregator__ManualTrigger manual;
	char *schedule;
	int64_t epoch;
} trigger_buf;

static void trigger_make(trigger_buf *b, uint64_t n)
{
	static char every5[] = "*/5 * * * *";
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	b->tr = tr;
	b->tr.name = "stress";
	switch (n % 20) {
	case 0:
		b->manual = (Aggregator__ManualTrigger)AGGREGATOR__MANUAL_TRIGGER__INIT;
		b->tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL;
		b->tr.manual = &b->manual;
		break;
	case 1:
	case 2:
		b->cron_cfg = (Aggregator__CronTrigger__Config)AGGREGATOR__CRON_TRIGGER__CONFIG__INIT;
		b->schedule = every5;
		b->cron_cfg.n_schedules = 1;
		b->cron_cfg.schedules = &b->schedule;
		b->cron = (Aggregator__CronTrigger)AGGREGATOR__CRON_TRIGGER__INIT;
		b->cron.config = &b->cron_cfg;
		b->tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON;
		b->tr.cron = &b->cron;
		break;
	case 3:
	case 4:
		b->fixed_cfg = (Aggregator__FixedTimeTrigger__Config)
			AGGREGATOR__FIXED_TIME_TRIGGER__CONFIG__INIT;
		b->epoch = ap_clock_wall_ms() + 86400000;
		b->fixed_cfg.n_epochs = 1;
		b->fixed_cfg.epochs = &b->epoch;
		b->fixed = (Aggregator__FixedTimeTrigger)AGGREGATOR__FIXED_TIME_TRIGGER__INIT;
		b->fixed.config = &b->fixed_cfg;
		b->tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME;
		b->tr.fixed_time = &b->fixed;
		break;
	default:
		b->block_cfg = (Aggregator__BlockTrigger__Config)AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
		b->block_cfg.interval = 10;
		b->block = (Aggregator__BlockTrigger)AGGREGATOR__BLOCK_TRIGGER__INIT;
		b->block.config = &b->block_cfg;
		b->tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
		b->tr.block = &b->block;
		break;
	}
}

static int mine_add(st_run *R, const char *id)
{
	if (R->n_mine == R->cap_mine) {
		size_t cap = R->cap_mine ? R->cap_mine * 2 : 1024;
		st_mine *p = realloc(R->mine, cap * sizeof *p);
		if (!p)
			return AP_ENOMEM;
		R->mine = p;
		R->cap_mine = cap;
	}
	snprintf(R->mine[R->n_mine].id, sizeof R->mine[R->n_mine].id, "%s", id);
	R->mine[R->n_mine++].enabled = true;
	return 0;
}

/* Create n tasks (ids chosen by the server). Returns 0 or a failure. */
int st_create_tasks(st_run *R, int n, char *err, size_t errlen)
{
	while (n > 0) {
		int k = n < CREATE_BATCH ? n : CREATE_BATCH;
		trigger_buf *tb = calloc((size_t)k, sizeof *tb);
		Aggregator__NewTask *nt = calloc((size_t)k, sizeof *nt);
		Aggregator__NewTask **ptrs = calloc((size_t)k, sizeof *ptrs);
		Aggregator__CreateTasksResp *resp = NULL;
		ap_rpc_status st = { 0 };
		int rc = AP_ENOMEM;
		if (!tb || !nt || !ptrs)
			goto next;
		for (int i = 0; i < k; i++) {
			trigger_make(&tb[i], R->created++);
			nt[i] = (Aggregator__NewTask)AGGREGATOR__NEW_TASK__INIT;
			nt[i].name = "ap-stress";
			nt[i].trigger = &tb[i].tr;
			ptrs[i] = &nt[i];
		}
		Aggregator__CreateTasksReq req = AGGREGATOR__CREATE_TASKS_REQ__INIT;
		req.n_tasks = (size_t)k;
		req.tasks = ptrs;
		rc = ap_client_create_tasks(R->admin, &req, &resp, &R->aco, &st);
		if (rc == 0 && st.code != AP_RPC_OK)
			rc = AP_EIO;
		for (size_t i = 0; rc == 0 && i < resp->n_ids; i++)
			rc = mine_add(R, resp->ids[i]);
	next:
		ap_client_free(resp);
		free(tb);
		free(nt);
		free(ptrs);
		if (rc) {
			snprintf(err, errlen, "CreateTasks failed: %s%s%s",
				 rc == AP_EIO ? ap_rpc_code_name(st.code) : ap_strerror(rc),
				 rc == AP_EIO ? " " : "", rc == AP_EIO ? st.details : "");
			return rc;
		}
		n -= k;
	}
	return 0;
}

/* A random task of mine in the wanted state, or -1. */
static ssize_t pick_mine(st_run *R, bool enabled)
{
	for (int tries = 0; tries < 16 && R->n_mine; tries++) {
		size_t i = st_rand(&R->rng) % R->n_mine;
		if (R->mine[i].enabled == enabled)
			return (ssize_t)i;
	}
	return -1;
}

/* One admin operation of the churn: create, disable, enable or delete. */
void st_churn_one(st_run *R)
{
	uint64_t pick = st_rand(&R->rng) % 100;
	ap_rpc_status st = { 0 };
	Aggregator__TaskOpResp *resp = NULL;
	ssize_t i = -1;
	int rc;

	if (pick >= 30 && pick < 55)
		i = pick_mine(R, true);
	else if (pick >= 55 && pick < 75)
		i = pick_mine(R, false);
	else if (pick >= 75 && R->n_mine)
		i = (ssize_t)(st_rand(&R->rng) % R->n_mine);
	if (i < 0) {
		char err[256];
		if (st_create_tasks(R, 1, err, sizeof err) != 0)
			st_run_violation(R, AP_STRESS_INV_STATUSES, "admin %s", err);
		else
			R->r->admin_created++;
		return;
	}
	st_mine *t = &R->mine[i];
	if (pick >= 75) {
		st_fleet_task_gone(R->fleet, t->id);
		rc = ap_client_delete_task(R->admin, t->id, &resp, &R->aco, &st);
		if (rc || st.code != AP_RPC_OK)
			admin_violation(R, "DeleteTask", t->id, rc, &st);
		else
			R->r->admin_deleted++;
		R->mine[i] = R->mine[--R->n_mine];
	} else {
		bool enable = !t->enabled;
		if (!enable)
			st_fleet_task_gone(R->fleet, t->id);
		rc = ap_client_set_task_enabled(R->admin, t->id, enable, &resp, &R->aco, &st);
		if (rc || st.code != AP_RPC_OK) {
			admin_violation(R, enable ? "enable" : "disable", t->id, rc, &st);
		} else {
			t->enabled = enable;
			if (enable)
				R->r->admin_enabled++;
			else
				R->r->admin_disabled++;
		}
	}
	ap_client_free(resp);
}

int st_admin_lists(st_run *R)
{
	ap_rpc_status st = { 0 };
	char after[80] = "";
	int rc;

	st_admin_lists_free(R);
	for (;;) {
		Aggregator__ListTasksReq req = AGGREGATOR__LIST_TASKS_REQ__INIT;
		Aggregator__ListTasksResp *resp = NULL;
		req.after = after;
		req.limit = LIST_PAGE;
		rc = ap_client_list_tasks(R->admin, &req, &resp, &R->aco, &st);
		if (rc || st.code != AP_RPC_OK) {
			admin_violation(R, "ListTasks after", after, rc, &st);
			return rc ? rc : AP_EIO;
		}
		Aggregator__ListTasksResp **p = realloc(R->pages, (R->n_pages + 1) * sizeof *p);
		if (!p) {
			ap_client_free(resp);
			return AP_ENOMEM;
		}
		R->pages = p;
		R->pages[R->n_pages++] = resp;
		if (!resp->next_after || !resp->next_after[0] || resp->n_tasks == 0)
			break;
		snprintf(after, sizeof after, "%s", resp->next_after);
	}
	rc = ap_client_list_operators(R->admin, &R->ops, &R->aco, &st);
	if (rc || st.code != AP_RPC_OK) {
		admin_violation(R, "ListOperators", "", rc, &st);
		return rc ? rc : AP_EIO;
	}
	return 0;
}

void st_admin_lists_free(st_run *R)
{
	for (size_t i = 0; i < R->n_pages; i++)
		ap_client_free(R->pages[i]);
	free(R->pages);
	R->pages = NULL;
	R->n_pages = 0;
	ap_client_free(R->ops);
	R->ops = NULL;
}

void st_delete_mine(st_run *R)
{
	for (size_t i = 0; i < R->n_mine && !st_interrupted(); i++) {
		Aggregator__TaskOpResp *resp = NULL;
		ap_rpc_status st = { 0 };
		int rc = ap_client_delete_task(R->admin, R->mine[i].id, &resp, &R->aco, &st);
		ap_client_free(resp);
		/* An unreachable daemon would cost ADMIN_TIMEOUT_MS per task. */
		if (rc != 0 || st.code == AP_RPC_UNAVAILABLE || st.code == AP_RPC_DEADLINE_EXCEEDED) {
			fprintf(stderr, "ap stress: cannot delete the tasks it created (%zu left): %s\n",
				R->n_mine - i, rc ? ap_strerror(rc) : ap_rpc_code_name(st.code));
			break;
		}
	}
	R->n_mine = 0;
}
