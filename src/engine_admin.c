/* Admin operations of the engine (SPEC section 2b): create, enable,
 * disable, delete and list tasks; list operators. Task records are written
 * with a synchronous commit before the call returns (SPEC section 4); the
 * assignment follows in its own transaction, so a crash between the two
 * leaves an orphan that the next start places, never a lost task. See
 * src/engine.c for the lock rule. */
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/record.h"
#include "engine_int.h"

void ap_engine_free_ids(char **ids, size_t n)
{
	if (!ids)
		return;
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

typedef struct create_ctx {
	Apstore__TaskRecord **records;
	size_t n;
} create_ctx;

static int put_records(ap_store_txn *txn, void *arg)
{
	create_ctx *c = arg;
	for (size_t i = 0; i < c->n; i++) {
		int rc = engine_put_task(txn, c->records[i]);
		if (rc)
			return rc;
	}
	return 0;
}

static int check_new(const Aggregator__NewTask *nt, size_t i, char *err, size_t errlen)
{
	char why[160];
	if (nt->id[0] && !ap_task_id_valid(nt->id)) {
		snprintf(err, errlen, "task %zu: id must be 1 to 64 characters of [A-Za-z0-9_-]", i);
		return AP_EINVAL;
	}
	if (ap_task_trigger_check(nt->trigger, why, sizeof why) < 0) {
		snprintf(err, errlen, "task %zu: %s", i, why);
		return AP_EINVAL;
	}
	if (nt->max_execution < 0 || nt->start_at < 0 || nt->expired_at < 0) {
		snprintf(err, errlen, "task %zu: max_execution, start_at and expired_at must not be negative", i);
		return AP_EINVAL;
	}
	return 0;
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sets *dup to the first id of the batch that exists already or appears
 * twice in it (NULL when none). Sorting a copy keeps this O(n log n) (a
 * pairwise check was n^2/2 strcmp calls: 50 million for a batch of 10,000).
 * 0 or AP_ENOMEM. Engine lock held. */
static int find_duplicate(ap_engine *e, char **ids, size_t n, const char **dup)
{
	*dup = NULL;
	for (size_t i = 0; i < n; i++)
		if (ap_task_find(e->tasks, ids[i])) {
			*dup = ids[i];
			return 0;
		}
	char **sorted = malloc(n * sizeof *sorted);
	if (!sorted)
		return AP_ENOMEM;
	memcpy(sorted, ids, n * sizeof *sorted);
	qsort(sorted, n, sizeof *sorted, cmp_id);
	for (size_t i = 1; i < n && !*dup; i++)
		if (strcmp(sorted[i - 1], sorted[i]) == 0)
			*dup = sorted[i];
	free(sorted);
	return 0;
}

int ap_engine_create_tasks(ap_engine *e, Aggregator__NewTask *const *tasks, size_t n,
			   char ***ids_out, char *err, size_t errlen)
{
	*ids_out = NULL;
	if (n == 0) {
		snprintf(err, errlen, "no task given");
		return AP_EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		int rc = check_new(tasks[i], i, err, errlen);
		if (rc)
			return rc;
	}
	int rc = AP_ENOMEM;
	char **ids = calloc(n, sizeof *ids);
	Apstore__TaskRecord **records = calloc(n, sizeof *records);
	if (!ids || !records)
		goto out_free;
	int64_t now = ap_clock_wall_ms();
	for (size_t i = 0; i < n; i++) {
		char ulid[27];
		if (!tasks[i]->id[0])
			ap_task_make_ulid(ulid);
		ids[i] = strdup(tasks[i]->id[0] ? tasks[i]->id : ulid);
		if (!ids[i] || !(records[i] = ap_task_record_from_new(tasks[i], ids[i], now)))
			goto out_free;
	}

	pthread_mutex_lock(&e->lock);
	const char *dup;
	rc = find_duplicate(e, ids, n, &dup);
	if (rc)
		goto out_unlock;
	if (dup) {
		snprintf(err, errlen, "task %s already exists", dup);
		rc = AP_EEXIST;
		goto out_unlock;
	}
	create_ctx c = { records, n };
	rc = ap_store_run(e->store, AP_TXN_SYNC, put_records, &c);
	if (rc) {
		snprintf(err, errlen, "storing tasks: %s", ap_strerror(rc));
		goto out_unlock;
	}
	ap_plan plan = { 0 };
	for (size_t i = 0; i < n; i++) {
		ap_task *t = ap_task_insert(e->tasks, ids[i], records[i]);
		if (!t) {
			/* Stored but not in memory: the next start loads it. */
			AP_ERROR("out of memory adding a stored task", AP_F_STR("task_id", ids[i]));
			ap_record_free_task(records[i]);
		}
		records[i] = NULL;
		if (t && ap_task_assignable(t))
			engine_place_locked(e, &plan, t, "", AP_WHY_ROUND_ROBIN);
	}
	engine_commit_locked(e, &plan);
	engine_plan_free(&plan);
	pthread_mutex_unlock(&e->lock);
	AP_INFO("🆕 Tasks created", AP_F_UINT("count", n), AP_F_STR("first_id", ids[0]));
	*ids_out = ids;
	ids = NULL;
	rc = 0;
	goto out_free;
out_unlock:
	pthread_mutex_unlock(&e->lock);
out_free:
	if (rc == AP_ENOMEM)
		snprintf(err, errlen, "out of memory");
	for (size_t i = 0; records && i < n; i++)
		ap_record_free_task(records[i]);
	free(records);
	ap_engine_free_ids(ids, n);
	return rc;
}

typedef struct status_ctx {
	const Apstore__TaskRecord *record;
	const char *clear_assignment; /* task id, or NULL */
	const char *delete_id;        /* task id to delete, or NULL */
} status_ctx;

static int write_status(ap_store_txn *txn, void *arg)
{
	status_ctx *c = arg;
	int rc = 0;
	if (c->delete_id) {
		rc = ap_store_del(txn, AP_DB_TASKS, c->delete_id, strlen(c->delete_id));
		if (rc == AP_ENOTFOUND)
			rc = 0;
	} else {
		rc = engine_put_task(txn, c->record);
	}
	if (rc == 0 && c->clear_assignment)
		rc = ap_assign_persist_clear(txn, c->clear_assignment);
	return rc;
}

int engine_set_status_locked(ap_engine *e, ap_task *t, ap_task_status st, ap_op op)
{
	Apstore__TaskRecord *r = ap_task_record_dup(t->record);
	if (!r)
		return AP_ENOMEM;
	r->status = (Apstore__TaskStatus)st;
	bool was_assignable = ap_task_assignable(t);
	char owner[AP_ADDRESS_LEN + 1] = "";
	ap_assign_owner(e->assign, t->id, owner);
	status_ctx c = { r, was_assignable ? t->id : NULL, NULL };
	int rc = ap_store_run(e->store, AP_TXN_SYNC, write_status, &c);
	if (rc) {
		ap_record_free_task(r);
		return rc;
	}
	ap_record_free_task(t->record);
	t->record = r;
	ap_task_set_status(e->tasks, t, st);
	if (was_assignable && !ap_task_assignable(t)) {
		ap_assign_untrack(e->assign, t->id);
		engine_loads_invalidate(e);
		engine_push_locked(e, owner, t, op);
	} else if (!was_assignable && ap_task_assignable(t)) {
		ap_plan plan = { 0 };
		engine_place_locked(e, &plan, t, "", AP_WHY_ROUND_ROBIN);
		engine_commit_locked(e, &plan);
		engine_plan_free(&plan);
	}
	return 0;
}

int ap_engine_set_enabled(ap_engine *e, const char *id, bool enabled,
			  const char **status_out)
{
	int rc = 0;
	pthread_mutex_lock(&e->lock);
	ap_task *t = ap_task_find(e->tasks, id);
	if (!t) {
		rc = AP_ENOTFOUND;
		goto out;
	}
	ap_task_status want = enabled ? AP_TASK_ENABLED : AP_TASK_DISABLED;
	if (t->status == AP_TASK_COMPLETED || t->status == AP_TASK_FAILED || !t->record)
		rc = AP_ESTATE;
	else if (t->status != want)
		rc = engine_set_status_locked(e, t, want, AP_OP_DISABLE);
	*status_out = ap_task_status_name(t->status);
	if (rc == 0)
		AP_INFO(enabled ? "▶️ Task enabled" : "⏸️ Task disabled", AP_F_STR("task_id", id));
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int ap_engine_delete_task(ap_engine *e, const char *id)
{
	int rc = 0;
	pthread_mutex_lock(&e->lock);
	ap_task *t = ap_task_find(e->tasks, id);
	if (!t) {
		rc = AP_ENOTFOUND;
		goto out;
	}
	char owner[AP_ADDRESS_LEN + 1] = "";
	bool tracked = ap_assign_owner(e->assign, id, owner);
	status_ctx c = { NULL, t->id, t->id };
	rc = ap_store_run(e->store, AP_TXN_SYNC, write_status, &c);
	if (rc)
		goto out;
	if (tracked) {
		ap_assign_untrack(e->assign, id);
		engine_loads_invalidate(e);
	}
	engine_push_locked(e, owner, t, AP_OP_DELETE);
	ap_task_remove(e->tasks, t);
	AP_INFO("🗑️ Task deleted", AP_F_STR("task_id", id));
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

/* ---- listing -------------------------------------------------------- */

typedef struct list_ctx {
	ap_engine *e;
	const char *after;
	uint32_t limit;
	Aggregator__ListTasksResp *resp;
	bool more;
	int rc;
} list_ctx;

static int list_one(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	list_ctx *c = arg;
	(void)val;
	(void)vlen;
	char id[AP_TASK_ID_MAX + 1];
	size_t n = klen < AP_TASK_ID_MAX ? klen : AP_TASK_ID_MAX;
	memcpy(id, key, n);
	id[n] = '\0';
	if (strcmp(id, c->after) == 0)
		return 0;
	ap_task *t = ap_task_find(c->e->tasks, id);
	if (!t)
		return 0; /* stored by a create that has not reached memory yet */
	if (c->resp->n_tasks == c->limit) {
		c->more = true;
		return 1;
	}
	Aggregator__TaskInfo *ti = calloc(1, sizeof *ti);
	char owner[AP_ADDRESS_LEN + 1] = "";
	if (!ti) {
		c->rc = AP_ENOMEM;
		return 1;
	}
	aggregator__task_info__init(ti);
	ap_assign_owner(c->e->assign, id, owner);
	ti->id = strdup(id);
	ti->name = strdup(t->record ? t->record->name : "");
	ti->status = (char *)ap_task_status_name(t->status); /* static */
	ti->owner = strdup(owner);
	ti->trigger_type = (Aggregator__TriggerType)t->trigger_type;
	ti->execution_count = t->record ? t->record->execution_count : 0;
	ti->max_execution = t->record ? t->record->max_execution : 0;
	c->resp->tasks[c->resp->n_tasks++] = ti;
	if (!ti->id || !ti->name || !ti->owner) {
		c->rc = AP_ENOMEM;
		return 1;
	}
	return 0;
}

void ap_engine_free_list(Aggregator__ListTasksResp *resp)
{
	if (!resp)
		return;
	for (size_t i = 0; i < resp->n_tasks; i++) {
		free(resp->tasks[i]->id);
		free(resp->tasks[i]->name);
		free(resp->tasks[i]->owner);
		free(resp->tasks[i]);
	}
	free(resp->tasks);
	if (resp->next_after != protobuf_c_empty_string)
		free(resp->next_after);
	free(resp);
}

int ap_engine_list_tasks(ap_engine *e, const char *after, uint32_t limit,
			 Aggregator__ListTasksResp **out)
{
	*out = NULL;
	if (limit == 0)
		limit = 1000;
	if (limit > 10000)
		limit = 10000;
	Aggregator__ListTasksResp *resp = calloc(1, sizeof *resp);
	if (!resp)
		return AP_ENOMEM;
	aggregator__list_tasks_resp__init(resp);
	resp->tasks = calloc(limit, sizeof *resp->tasks);
	if (!resp->tasks) {
		free(resp);
		return AP_ENOMEM;
	}
	list_ctx c = { e, after ? after : "", limit, resp, false, 0 };
	pthread_mutex_lock(&e->lock);
	int rc = ap_store_scan_from(e->store, AP_DB_TASKS, c.after, strlen(c.after), list_one, &c);
	pthread_mutex_unlock(&e->lock);
	if (rc > 0)
		rc = 0; /* the visitor stopped the scan */
	if (rc == 0)
		rc = c.rc;
	if (rc == 0 && c.more && resp->n_tasks) {
		resp->next_after = strdup(resp->tasks[resp->n_tasks - 1]->id);
		if (!resp->next_after) {
			resp->next_after = (char *)protobuf_c_empty_string;
			rc = AP_ENOMEM;
		}
	}
	if (rc) {
		ap_engine_free_list(resp);
		return rc;
	}
	*out = resp;
	return 0;
}

void ap_engine_free_operators(Aggregator__ListOperatorsResp *resp)
{
	if (!resp)
		return;
	for (size_t i = 0; i < resp->n_operators; i++) {
		if (resp->operators[i]->address != protobuf_c_empty_string)
			free(resp->operators[i]->address);
		free(resp->operators[i]);
	}
	free(resp->operators);
	free(resp);
}

int ap_engine_list_operators(ap_engine *e, Aggregator__ListOperatorsResp **out)
{
	*out = NULL;
	Aggregator__ListOperatorsResp *resp = calloc(1, sizeof *resp);
	if (!resp)
		return AP_ENOMEM;
	aggregator__list_operators_resp__init(resp);
	ap_operator_info *ops;
	size_t n = ap_registry_snapshot(e->reg, &ops);
	resp->operators = n ? calloc(n, sizeof *resp->operators) : NULL;
	int rc = (n && !resp->operators) ? AP_ENOMEM : 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		Aggregator__OperatorInfo *oi = calloc(1, sizeof *oi);
		if (!oi) {
			rc = AP_ENOMEM;
			break;
		}
		aggregator__operator_info__init(oi);
		resp->operators[resp->n_operators++] = oi;
		oi->address = strdup(ops[i].address);
		if (!oi->address) {
			oi->address = (char *)protobuf_c_empty_string;
			rc = AP_ENOMEM;
			break;
		}
		oi->connected = ops[i].connected;
		oi->ready = ops[i].ready;
		oi->generation = ops[i].generation;
		oi->monotonic_clock = ops[i].monotonic_clock;
		oi->owned_tasks = ap_assign_owned_count(e->assign, ops[i].address);
		oi->connected_at_ms = ops[i].connected_at_ms;
		oi->connects = ops[i].connects;
		ap_session *s = ap_registry_current(e->reg, ops[i].address);
		if (s && ap_session_generation(s) == ops[i].generation)
			oi->synced_tasks = (uint32_t)ap_session_synced_count(s);
		ap_session_unref(s);
	}
	free(ops);
	if (rc) {
		ap_engine_free_operators(resp);
		return rc;
	}
	*out = resp;
	return 0;
}
