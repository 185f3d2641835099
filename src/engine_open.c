/* Engine life cycle: open the store and load it (SPEC section 4), start the
 * ticker and the restart grace window, stop, close. See src/engine.c for
 * the lock rule. */
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/record.h"
#include "engine_int.h"

/* ---- open, load, start, stop, close --------------------------------- */

typedef struct load_ctx {
	ap_engine *e;
	size_t failed;
	ap_task_ref *stale; /* assignment records to delete */
	size_t n_stale, cap_stale;
	char (*was_connected)[AP_ADDRESS_LEN + 1];
	size_t n_connected, cap_connected;
	int rc;
} load_ctx;

static void key_to_id(const void *key, size_t klen, char out[AP_TASK_ID_MAX + 1])
{
	size_t n = klen < AP_TASK_ID_MAX ? klen : AP_TASK_ID_MAX;
	memcpy(out, key, n);
	out[n] = '\0';
}

static int load_task(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	load_ctx *lc = arg;
	char id[AP_TASK_ID_MAX + 1];
	key_to_id(key, klen, id);
	Apstore__TaskRecord *r = NULL;
	int rc = ap_record_unpack_task(val, vlen, &r);
	ap_task *t = ap_task_insert(lc->e->tasks, id, rc == 0 ? r : NULL);
	if (!t) {
		ap_record_free_task(r);
		lc->rc = AP_ENOMEM;
		return 1;
	}
	if (t->status == AP_TASK_FAILED) {
		lc->failed++;
		AP_WARN("⚠️ Stored task cannot be used, marked failed", AP_F_STR("task_id", id),
			AP_F_STR("error", rc ? ap_strerror(rc) : "invalid trigger"));
	}
	return 0;
}

static int load_assignment(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	load_ctx *lc = arg;
	char id[AP_TASK_ID_MAX + 1];
	key_to_id(key, klen, id);
	Apstore__AssignmentRecord *r = NULL;
	ap_task *t = ap_task_find(lc->e->tasks, id);
	int rc = ap_record_unpack_assignment(val, vlen, &r);
	if (rc == 0 && t && ap_task_assignable(t) && engine_is_address(r->owner)) {
		if (ap_assign_set(lc->e->assign, id, r->owner, r->generation, r->assigned_at)) {
			lc->rc = AP_ENOMEM;
			ap_record_free_assignment(r);
			return 1;
		}
	} else {
		/* An assignment of a task that is gone or not assignable, or an
		 * unreadable one: removed after the scan. */
		if (lc->n_stale == lc->cap_stale) {
			size_t cap = lc->cap_stale ? lc->cap_stale * 2 : 16;
			ap_task_ref *v = realloc(lc->stale, cap * sizeof *v);
			if (v) {
				lc->stale = v;
				lc->cap_stale = cap;
			}
		}
		if (lc->n_stale < lc->cap_stale)
			memcpy(lc->stale[lc->n_stale++].id, id, sizeof id);
	}
	ap_record_free_assignment(r);
	return 0;
}

static int load_operator(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	load_ctx *lc = arg;
	(void)key;
	(void)klen;
	Apstore__OperatorRecord *r = NULL;
	if (ap_record_unpack_operator(val, vlen, &r) != 0 || !engine_is_address(r->address)) {
		ap_record_free_operator(r);
		return 0;
	}
	ap_registry_load(lc->e->reg, r);
	if (r->connected) {
		if (lc->n_connected == lc->cap_connected) {
			size_t cap = lc->cap_connected ? lc->cap_connected * 2 : 16;
			void *v = realloc(lc->was_connected, cap * sizeof *lc->was_connected);
			if (v) {
				lc->was_connected = v;
				lc->cap_connected = cap;
			}
		}
		if (lc->n_connected < lc->cap_connected)
			snprintf(lc->was_connected[lc->n_connected++], AP_ADDRESS_LEN + 1, "%s",
				 r->address);
	}
	ap_record_free_operator(r);
	return 0;
}

static void track_orphan(void *arg, ap_task *t)
{
	load_ctx *lc = arg;
	char owner[AP_ADDRESS_LEN + 1];
	if (ap_task_assignable(t) && !ap_assign_owner(lc->e->assign, t->id, owner))
		if (ap_assign_set(lc->e->assign, t->id, "", 0, 0))
			lc->rc = AP_ENOMEM;
}

static int delete_stale(ap_store_txn *txn, void *arg)
{
	load_ctx *lc = arg;
	for (size_t i = 0; i < lc->n_stale; i++) {
		int rc = ap_assign_persist_clear(txn, lc->stale[i].id);
		if (rc)
			return rc;
	}
	return 0;
}

static int engine_load(ap_engine *e, char *err, size_t errlen)
{
	load_ctx lc = { .e = e };
	int rc = ap_store_scan(e->store, AP_DB_TASKS, load_task, &lc);
	if (rc == 0 && lc.rc == 0)
		rc = ap_store_scan(e->store, AP_DB_ASSIGNMENTS, load_assignment, &lc);
	if (rc == 0 && lc.rc == 0)
		rc = ap_store_scan(e->store, AP_DB_OPERATORS, load_operator, &lc);
	if (rc == 0 && lc.rc == 0)
		ap_task_each(e->tasks, track_orphan, &lc);
	if (rc == 0)
		rc = lc.rc;
	if (rc == 0 && lc.n_stale)
		rc = ap_store_run(e->store, 0, delete_stale, &lc);
	/* On start every operator is disconnected (SPEC section 4). */
	for (size_t i = 0; rc == 0 && i < lc.n_connected; i++)
		engine_save_operator_locked(e, lc.was_connected[i], NULL);
	free(lc.stale);
	free(lc.was_connected);
	if (rc)
		snprintf(err, errlen, "loading the database: %s", ap_strerror(rc));
	return rc;
}

int ap_engine_open(ap_engine **out, const ap_config *cfg, char *err, size_t errlen)
{
	*out = NULL;
	ap_engine *e = calloc(1, sizeof *e);
	if (!e) {
		snprintf(err, errlen, "out of memory");
		return AP_ENOMEM;
	}
	pthread_mutex_init(&e->lock, NULL);
	atomic_init(&e->next_generation, 1);
	e->stabilization_ms = cfg->operators.stabilization_ms;
	e->resync_ms = cfg->operators.resync_interval_ms;
	e->grace_ms = cfg->operators.restart_grace_ms;
	e->cooldown_ms = cfg->operators.reconnect_cooldown_ms;
	e->max_sessions = cfg->operators.max_sessions;
	int rc = AP_ENOMEM;
	if (cfg->operators.n_approved) {
		e->approved = calloc(cfg->operators.n_approved, sizeof *e->approved);
		if (!e->approved)
			goto fail;
		for (size_t i = 0; i < cfg->operators.n_approved; i++) {
			const char *a = cfg->operators.approved[i];
			if (strcmp(a, "*") == 0) {
				e->approve_any = true;
				continue;
			}
			if (!(e->approved[e->n_approved] = strdup(a)))
				goto fail;
			engine_lower_address(a, e->approved[e->n_approved]);
			e->n_approved++;
		}
	}
	if (ap_task_table_open(&e->tasks) || ap_assign_open(&e->assign) ||
	    ap_registry_open(&e->reg))
		goto fail;
	rc = ap_ticker_open(&e->ticker, (int)cfg->ticker.threads, engine_run_job, engine_job_is_current, e);
	if (rc)
		goto fail;
	ap_store_options so = { .dir = cfg->storage.dir, .durability = cfg->storage.durability };
	rc = ap_store_open(&e->store, &so, err, errlen);
	if (rc)
		goto fail_quiet;
	e->store_opened_ms = ap_clock_mono_ms();
	rc = engine_load(e, err, errlen);
	if (rc)
		goto fail_quiet;
	*out = e;
	return 0;
fail:
	snprintf(err, errlen, "%s", ap_strerror(rc));
fail_quiet:
	ap_engine_close(e);
	return rc;
}

int ap_engine_start(ap_engine *e)
{
	int rc = ap_ticker_start(e->ticker);
	if (rc)
		return rc;
	pthread_mutex_lock(&e->lock);
	e->started = true;
	size_t owned = ap_assign_tracked_count(e->assign) - ap_assign_orphan_count(e->assign);
	if (owned > 0) {
		/* Persisted owners keep their tasks for restart_grace_ms from the
		 * store's opening; then absent owners' tasks move. */
		e->grace_active = true;
		int64_t left = e->grace_ms - (ap_clock_mono_ms() - e->store_opened_ms);
		ap_job job = { .kind = AP_JOB_GRACE };
		ap_ticker_schedule(e->ticker, &job, left > 0 ? left : 0);
	}
	ap_job repair = { .kind = AP_JOB_REPAIR };
	ap_ticker_schedule(e->ticker, &repair, e->resync_ms);
	size_t n = ap_task_count(e->tasks);
	size_t orphans = ap_assign_orphan_count(e->assign);
	pthread_mutex_unlock(&e->lock);
	AP_INFO("🚀 Engine started successfully", AP_F_UINT("active_tasks_loaded", n),
		AP_F_UINT("owned_tasks", owned), AP_F_UINT("orphaned_tasks", orphans),
		AP_F_INT("restart_grace_ms", owned ? e->grace_ms : 0));
	return 0;
}

void ap_engine_stop(ap_engine *e)
{
	pthread_mutex_lock(&e->lock);
	bool was = e->stopping;
	e->stopping = true;
	pthread_mutex_unlock(&e->lock);
	if (was)
		return;
	ap_session **sessions;
	size_t n = ap_registry_sessions(e->reg, &sessions);
	for (size_t i = 0; i < n; i++) {
		ap_token_cancel(ap_session_token(sessions[i]), AP_REASON_SHUTDOWN);
		ap_session_unref(sessions[i]);
	}
	free(sessions);
	ap_ticker_stop(e->ticker);
}

void ap_engine_close(ap_engine *e)
{
	if (!e)
		return;
	if (e->ticker)
		ap_engine_stop(e);
	ap_ticker_close(e->ticker);
	for (size_t i = 0; i < e->n_ready; i++)
		ap_session_unref(e->ready[i]);
	free(e->ready);
	free(e->planned);
	free(e->loads);
	ap_registry_close(e->reg);
	ap_assign_close(e->assign);
	ap_task_table_close(e->tasks);
	engine_dedup_free(e);
	ap_store_close(e->store);
	for (size_t i = 0; i < e->n_approved; i++)
		free(e->approved[i]);
	free(e->approved);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

