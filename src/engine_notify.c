/* Operator calls other than SyncMessages: the NotifyTriggers rule (SPEC
 * section 2), Ack and Ping. See src/engine.c for the lock rule; the dedup
 * window below is guarded by the engine lock too. */
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/record.h"
#include "engine_int.h"

#define DEDUP_WINDOW_MS (5 * 60 * 1000)

/* A (task id, trigger_request_id) pair seen within the window. Entries sit
 * in a hash (lookup) and a list in arrival order (expiry from the front). */
struct dedup_entry {
	char *key; /* task id, '\x1f', request id */
	int64_t seen_ms;
	struct dedup_entry *prev, *next;
	UT_hash_handle hh;
};

static void dedup_drop(ap_engine *e, dedup_entry *d)
{
	HASH_DEL(e->dedup, d);
	DL_DELETE(e->dedup_fifo, d);
	free(d->key);
	free(d);
}

void engine_dedup_free(ap_engine *e)
{
	while (e->dedup_fifo)
		dedup_drop(e, e->dedup_fifo);
}

static void dedup_expire_locked(ap_engine *e, int64_t now)
{
	while (e->dedup_fifo && now - e->dedup_fifo->seen_ms >= DEDUP_WINDOW_MS)
		dedup_drop(e, e->dedup_fifo);
}

static char *dedup_key(const char *task_id, const char *req)
{
	size_t a = strlen(task_id), b = strlen(req);
	char *k = malloc(a + b + 2);
	if (k) {
		memcpy(k, task_id, a);
		k[a] = '\x1f';
		memcpy(k + a + 1, req, b + 1);
	}
	return k;
}

static void answer(ap_notify_result *res, const char *status, int64_t remaining,
		   bool enabled, const char *message)
{
	res->status = status;
	res->remaining_executions = remaining;
	res->task_still_enabled = enabled;
	snprintf(res->message, sizeof res->message, "%s", message);
}

static int put_task_fn(ap_store_txn *txn, void *arg)
{
	return engine_put_task(txn, arg);
}

static int count_execution_locked(ap_engine *e, ap_task *t, ap_notify_result *res)
{
	Apstore__TaskRecord *r = ap_task_record_dup(t->record);
	if (!r)
		return AP_ENOMEM;
	/* Saturates: a damaged record's INT64_MAX must not overflow. */
	if (r->execution_count < INT64_MAX)
		r->execution_count++;
	bool last = r->max_execution > 0 && r->execution_count >= r->max_execution;
	if (last) {
		/* The notification that reaches max_execution completes the task:
		 * a status change, so it commits synchronously and sends
		 * CompletedTask to the owner. */
		ap_record_free_task(t->record);
		t->record = r;
		int rc = engine_set_status_locked(e, t, AP_TASK_COMPLETED, AP_OP_COMPLETED);
		if (rc) {
			t->record->execution_count--;
			return rc;
		}
		/* engine_set_status_locked replaced t->record (r is freed). */
		AP_INFO("🏁 Task reached its maximum executions", AP_F_STR("task_id", t->id),
			AP_F_INT("executions", t->record->execution_count));
		answer(res, "enabled", 0, false, "task completed");
		return 0;
	}
	int rc = ap_store_run(e->store, 0, put_task_fn, r);
	if (rc) {
		ap_record_free_task(r);
		return rc;
	}
	ap_record_free_task(t->record);
	t->record = r;
	answer(res, "enabled", ap_task_record_remaining(r), true, "");
	return 0;
}

int ap_engine_notify(ap_engine *e, const char *address_in, const char *task_id,
		     const char *trigger_request_id, ap_notify_result *res)
{
	memset(res, 0, sizeof *res);
	if (!engine_is_address(address_in) || !task_id)
		return AP_EINVAL;
	char address[AP_ADDRESS_LEN + 1];
	engine_lower_address(address_in, address);
	int rc = 0;
	int64_t now = ap_clock_wall_ms();
	pthread_mutex_lock(&e->lock);
	ap_task *t = ap_task_find(e->tasks, task_id);
	if (!t || !t->record) {
		answer(res, "not_found", 0, false, "unknown task id");
		goto out;
	}
	const Apstore__TaskRecord *r = t->record;
	if (t->status == AP_TASK_COMPLETED) {
		answer(res, "exhausted", 0, false, "task reached its maximum executions");
		goto out;
	}
	if (t->status == AP_TASK_DISABLED || t->status == AP_TASK_FAILED) {
		answer(res, "disabled", 0, false, "task is not enabled");
		goto out;
	}
	char owner[AP_ADDRESS_LEN + 1];
	if (!ap_assign_owner(e->assign, task_id, owner) || strcmp(owner, address) != 0) {
		rc = AP_EDENIED;
		goto out;
	}
	if (r->expired_at > 0 && now >= r->expired_at) {
		answer(res, "expired", 0, true, "task expired");
		goto out;
	}
	if (r->start_at > 0 && now < r->start_at) {
		answer(res, "not_started", ap_task_record_remaining(r), true, "task has not started");
		goto out;
	}
	/* Without a trigger_request_id there is nothing to deduplicate on. */
	char *key = NULL;
	if (trigger_request_id && trigger_request_id[0]) {
		dedup_expire_locked(e, now);
		key = dedup_key(task_id, trigger_request_id);
		if (!key) {
			rc = AP_ENOMEM;
			goto out;
		}
		dedup_entry *d;
		HASH_FIND_STR(e->dedup, key, d);
		if (d) {
			free(key);
			answer(res, "deduplicated", ap_task_record_remaining(r), true, "trigger already recorded");
			goto out;
		}
	}
	rc = count_execution_locked(e, t, res);
	if (rc == 0 && key) {
		dedup_entry *d = calloc(1, sizeof *d);
		if (d) {
			d->key = key;
			key = NULL;
			d->seen_ms = now;
			HASH_ADD_KEYPTR(hh, e->dedup, d->key, strlen(d->key), d);
			DL_APPEND(e->dedup_fifo, d);
		}
	}
	free(key);
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

bool ap_engine_ack(ap_engine *e, const char *address_in, const char *id)
{
	if (!engine_is_address(address_in) || !id)
		return false;
	char address[AP_ADDRESS_LEN + 1];
	engine_lower_address(address_in, address);
	ap_session *s = ap_registry_current(e->reg, address);
	bool known = s && ap_session_knows(s, id);
	ap_session_unref(s);
	return known;
}

typedef struct ping_ctx {
	const Aggregator__Checkin *c;
	const char *address;
	int64_t now;
} ping_ctx;

static void fill_ping_fields(Apstore__OperatorRecord *r, void *arg)
{
	ping_ctx *p = arg;
	const Aggregator__Checkin *c = p->c;
	r->last_ping_ms = p->now;
	r->version = c->version;
	r->block_number = c->block_number;
	r->event_count = c->event_count;
	r->metrics_port = c->metricsport;
	r->remote_ip = c->remoteip;
	if (c->status) {
		r->uptime = c->status->uptime;
		r->queue_depth = c->status->queuedepth;
	}
	if (c->n_supported_chain_ids) {
		r->n_chain_ids = c->n_supported_chain_ids;
		r->chain_ids = c->supported_chain_ids;
	}
}

static int write_ping(ap_store_txn *txn, void *arg)
{
	ping_ctx *p = arg;
	return engine_update_operator(txn, p->address, fill_ping_fields, p);
}

int ap_engine_ping(ap_engine *e, const Aggregator__Checkin *checkin, int64_t *updated_at_ms)
{
	if (!engine_is_address(checkin->address))
		return AP_EINVAL;
	char address[AP_ADDRESS_LEN + 1];
	engine_lower_address(checkin->address, address);
	ping_ctx p = { checkin, address, ap_clock_wall_ms() };
	/* The operators database is written under the engine lock, like every
	 * other writer of it, so a Ping and a connect never interleave. */
	pthread_mutex_lock(&e->lock);
	int rc = ap_store_run(e->store, 0, write_ping, &p);
	pthread_mutex_unlock(&e->lock);
	*updated_at_ms = p.now;
	return rc;
}
