/* The engine: session lifecycle, assignment choice and the ticker jobs
 * (SPEC sections 1, 3 and 4). Admin operations are in engine_admin.c, the
 * operator calls in engine_notify.c.
 *
 * Every change of state (registry, ready list, assignments, tasks) happens
 * with the engine lock held, in this order: decide, write the BerkeleyDB
 * transaction, commit, apply to memory, push to outboxes. So a change is
 * either durable and visible or neither, and two changes never interleave.
 * Generation stamping makes stale work harmless: a cleanup, tick or
 * stabilization carries its session's generation and acts only while the
 * registry still says that generation is current, checked under the lock.
 *
 * Threads: callers' threads (transport, admin) and the ticker pool. The
 * engine starts no thread of its own. */
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/record.h"
#include "engine_int.h"

#define PLAN_CHUNK 2000 /* changes per transaction when committing a plan */

/* ---- plans ---------------------------------------------------------- */

void engine_plan_free(ap_plan *p)
{
	free(p->v);
	p->v = NULL;
	p->n = p->cap = 0;
}

int engine_plan_add(ap_plan *p, const char *task_id, const char *owner,
		    const char *from, uint64_t generation, ap_assign_why why)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		ap_change *v = realloc(p->v, cap * sizeof *v);
		if (!v)
			return AP_ENOMEM;
		p->v = v;
		p->cap = cap;
	}
	ap_change *c = &p->v[p->n++];
	snprintf(c->task_id, sizeof c->task_id, "%s", task_id);
	snprintf(c->owner, sizeof c->owner, "%s", owner);
	snprintf(c->from, sizeof c->from, "%s", from ? from : "");
	c->generation = generation;
	c->why = why;
	return 0;
}

/* ---- the ready list ------------------------------------------------- */

static size_t ready_pos_locked(ap_engine *e, const char *address, bool *found)
{
	size_t lo = 0, hi = e->n_ready;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(ap_session_address(e->ready[mid]), address);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

ap_session *engine_ready_find_locked(ap_engine *e, const char *address)
{
	bool found;
	size_t i = ready_pos_locked(e, address, &found);
	return found ? e->ready[i] : NULL;
}

static int ready_add_locked(ap_engine *e, ap_session *s)
{
	bool found;
	size_t i = ready_pos_locked(e, ap_session_address(s), &found);
	if (found) { /* an older session of the address: replace it */
		ap_session_unref(e->ready[i]);
		e->ready[i] = ap_session_ref(s);
		return 0;
	}
	if (e->n_ready == e->cap_ready) {
		size_t cap = e->cap_ready ? e->cap_ready * 2 : 16;
		ap_session **v = realloc(e->ready, cap * sizeof *v);
		if (!v)
			return AP_ENOMEM;
		e->ready = v;
		uint32_t *pl = realloc(e->planned, cap * sizeof *pl);
		if (!pl)
			return AP_ENOMEM;
		e->planned = pl;
		uint32_t *ld = realloc(e->loads, cap * sizeof *ld);
		if (!ld)
			return AP_ENOMEM;
		e->loads = ld;
		e->cap_ready = cap;
	}
	memmove(e->ready + i + 1, e->ready + i, (e->n_ready - i) * sizeof *e->ready);
	e->ready[i] = ap_session_ref(s);
	e->n_ready++;
	if (e->n_ready)
		memset(e->planned, 0, e->n_ready * sizeof *e->planned);
	e->loads_valid = false;
	return 0;
}

void engine_ready_remove_locked(ap_engine *e, const char *address)
{
	bool found;
	size_t i = ready_pos_locked(e, address, &found);
	if (!found)
		return;
	ap_session_unref(e->ready[i]);
	memmove(e->ready + i, e->ready + i + 1, (e->n_ready - i - 1) * sizeof *e->ready);
	e->n_ready--;
	if (e->n_ready)
		memset(e->planned, 0, e->n_ready * sizeof *e->planned);
	e->loads_valid = false;
}

/* ---- assignment choice ---------------------------------------------- */

void engine_loads_invalidate(ap_engine *e)
{
	e->loads_valid = false;
}

ap_session *engine_choose_locked(ap_engine *e, const ap_task *t)
{
	if (!e->loads_valid) {
		for (size_t i = 0; i < e->n_ready; i++)
			e->loads[i] = ap_assign_owned_count_locked(e->assign,
								   ap_session_address(e->ready[i]));
		/* The tie cursor as an index: the first ready slot after the
		 * last operator chosen (ready is in address order). */
		bool found;
		size_t pos = ready_pos_locked(e, e->rr_last, &found);
		e->rr_after = found ? pos + 1 : pos;
		e->loads_valid = true;
	}
	/* Least-loaded among eligible ready operators in address order; ties go
	 * round-robin: to the first tied operator after the last one chosen.
	 * The load counts what a pass has planned but not yet committed
	 * (e->planned, parallel to e->ready). */
	ssize_t best = -1, best_after = -1;
	uint64_t best_load = UINT64_MAX, best_after_load = UINT64_MAX;
	for (size_t i = 0; i < e->n_ready; i++) {
		ap_session *s = e->ready[i];
		if (!ap_session_can_run(s, t->trigger_type, t->chain_id))
			continue;
		uint64_t load = (uint64_t)e->loads[i] + e->planned[i];
		if (load < best_load) {
			best_load = load;
			best = (ssize_t)i;
		}
		if (i >= e->rr_after && load < best_after_load) {
			best_after_load = load;
			best_after = (ssize_t)i;
		}
	}
	ssize_t pick = (best_after >= 0 && best_after_load == best_load) ? best_after : best;
	if (pick < 0)
		return NULL;
	e->planned[pick]++;
	snprintf(e->rr_last, sizeof e->rr_last, "%s", ap_session_address(e->ready[pick]));
	e->rr_after = (size_t)pick + 1;
	return e->ready[pick];
}

int engine_place_locked(ap_engine *e, ap_plan *p, const ap_task *t, const char *from,
			ap_assign_why why)
{
	ap_session *s = engine_choose_locked(e, t);
	if (!s)
		return engine_plan_add(p, t->id, "", from, 0, why);
	return engine_plan_add(p, t->id, ap_session_address(s), from,
			       ap_session_generation(s), why);
}

/* ---- persistence helpers -------------------------------------------- */

int engine_put_task(ap_store_txn *txn, const Apstore__TaskRecord *r)
{
	uint8_t *buf;
	size_t len;
	int rc = ap_record_pack(&r->base, &buf, &len);
	if (rc)
		return rc;
	rc = ap_store_put(txn, AP_DB_TASKS, r->id, strlen(r->id), buf, len);
	free(buf);
	return rc;
}

typedef struct chunk_arg {
	const ap_change *v;
	size_t n;
	int64_t now_ms;
} chunk_arg;

static int persist_chunk(ap_store_txn *txn, void *arg)
{
	chunk_arg *c = arg;
	for (size_t i = 0; i < c->n; i++) {
		int rc = ap_assign_persist_set(txn, c->v[i].task_id, c->v[i].owner,
					       c->v[i].generation, c->now_ms);
		if (rc)
			return rc;
	}
	return 0;
}

void engine_push_locked(ap_engine *e, const char *owner, const ap_task *t, ap_op op)
{
	if (!owner[0])
		return;
	/* Tasks go to ready sessions only (nothing before stabilization);
	 * removals go to the current session even while it stabilizes, since
	 * the operator may still hold the task from its previous session. */
	ap_session *s;
	if (op == AP_OP_MONITOR) {
		s = engine_ready_find_locked(e, owner);
		if (s)
			ap_session_ref(s);
	} else {
		s = ap_registry_current(e->reg, owner);
	}
	if (!s)
		return;
	uint8_t *buf;
	size_t len;
	if (ap_task_pack_message(t, op, &buf, &len) == 0)
		ap_session_push(s, op, t->id, buf, len);
	ap_session_unref(s);
}

static const char *why_log(ap_assign_why why)
{
	switch (why) {
	case AP_WHY_RECLAIM: return "🔄 Reclaimed orphaned task for operator";
	case AP_WHY_REASSIGN: return "🔄 Reassigned task to operator";
	default: return "🔄 Assigned task to operator";
	}
}

int engine_commit_locked(ap_engine *e, ap_plan *p)
{
	int rc = 0;
	/* Pushes of a commit wake each transport once, at the end, rather than
	 * once per task (bench/README.md: dissemination). */
	for (size_t i = 0; i < e->n_ready; i++)
		ap_session_hold_wake(e->ready[i]);
	int64_t now = ap_clock_wall_ms();
	for (size_t off = 0; off < p->n && rc == 0; off += PLAN_CHUNK) {
		chunk_arg c = { p->v + off, p->n - off < PLAN_CHUNK ? p->n - off : PLAN_CHUNK, now };
		rc = ap_store_run(e->store, 0, persist_chunk, &c);
		if (rc) {
			AP_ERROR("⚠️ Failed to persist task assignments, keeping the previous owners",
				 AP_F_STR("error", ap_strerror(rc)), AP_F_UINT("changes", c.n));
			break;
		}
		for (size_t i = 0; i < c.n; i++) {
			const ap_change *ch = &c.v[i];
			ap_task *t = ap_task_find(e->tasks, ch->task_id);
			ap_assign_set(e->assign, ch->task_id, ch->owner, ch->generation, now);
			if (!ch->owner[0])
				continue;
			if (ch->why == AP_WHY_RECLAIM) {
				e->stats.assign_reclaim++;
				AP_INFO(why_log(ch->why), AP_F_STR("task_id", ch->task_id),
					AP_F_STR("operator", ch->owner),
					AP_F_STR("previous_assignment", ch->from));
			} else {
				if (ch->why == AP_WHY_REASSIGN)
					e->stats.assign_reassign++;
				else
					e->stats.assign_round_robin++;
				AP_DEBUG(why_log(ch->why), AP_F_STR("task_id", ch->task_id),
					 AP_F_STR("operator", ch->owner), AP_F_STR("from", ch->from));
			}
			if (t)
				engine_push_locked(e, ch->owner, t, AP_OP_MONITOR);
		}
	}
	p->n = 0;
	if (e->n_ready)
		memset(e->planned, 0, e->n_ready * sizeof *e->planned);
	e->loads_valid = false;
	for (size_t i = 0; i < e->n_ready; i++)
		ap_session_release_wake(e->ready[i]);
	return rc;
}

/* ---- operators database --------------------------------------------- */

typedef struct op_write {
	const ap_hello *hello;        /* at connect; NULL otherwise */
	const ap_operator_info *info; /* registry state to record */
} op_write;

int engine_update_operator(ap_store_txn *txn, const char *address,
			   void (*fill)(Apstore__OperatorRecord *r, void *arg), void *arg)
{
	Apstore__OperatorRecord *old = NULL;
	void *val;
	size_t vlen;
	int rc = ap_store_get(txn, AP_DB_OPERATORS, address, strlen(address), &val, &vlen);
	if (rc == 0) {
		if (ap_record_unpack_operator(val, vlen, &old) != 0)
			old = NULL; /* an unreadable record is replaced */
		free(val);
	} else if (rc != AP_ENOTFOUND) {
		return rc;
	}
	/* Start from the stored record so fields the caller does not set (the
	 * Ping fields at connect, the session fields at Ping) survive. The
	 * copy borrows old's strings and arrays until it is packed. */
	Apstore__OperatorRecord r = APSTORE__OPERATOR_RECORD__INIT;
	if (old)
		r = *old;
	r.address = (char *)address;
	fill(&r, arg);
	uint8_t *buf;
	size_t len;
	rc = ap_record_pack(&r.base, &buf, &len);
	if (rc == 0) {
		rc = ap_store_put(txn, AP_DB_OPERATORS, address, strlen(address), buf, len);
		free(buf);
	}
	ap_record_free_operator(old);
	return rc;
}

static void fill_session_fields(Apstore__OperatorRecord *r, void *arg)
{
	op_write *w = arg;
	const ap_operator_info *i = w->info;
	r->monotonic_clock = i->monotonic_clock;
	r->last_connect_ms = i->connected_at_ms;
	r->last_disconnect_ms = i->disconnected_at_ms;
	r->connected = i->connected;
	r->connects = i->total_connects;
	r->disconnects = i->disconnects;
	if (w->hello) {
		r->has_capabilities = w->hello->has_capabilities;
		r->event_monitoring = w->hello->event_monitoring;
		r->block_monitoring = w->hello->block_monitoring;
		r->time_monitoring = w->hello->time_monitoring;
		r->n_chain_ids = w->hello->n_chain_ids;
		r->chain_ids = (int64_t *)w->hello->chain_ids;
	}
}

static int persist_operator(ap_store_txn *txn, void *arg)
{
	op_write *w = arg;
	return engine_update_operator(txn, w->info->address, fill_session_fields, w);
}

void engine_save_operator_locked(ap_engine *e, const char *address, const ap_hello *hello)
{
	ap_operator_info info;
	if (!ap_registry_get(e->reg, address, &info))
		return;
	op_write w = { hello, &info };
	int rc = ap_store_run(e->store, 0, persist_operator, &w);
	if (rc)
		AP_WARN("⚠️ Failed to record operator state", AP_F_STR("operator", address),
			AP_F_STR("error", ap_strerror(rc)));
}

/* ---- ticker jobs ---------------------------------------------------- */

bool engine_job_is_current(void *ctx, const char *address, uint64_t generation)
{
	ap_engine *e = ctx;
	return ap_registry_is_current(e->reg, address, generation);
}

/* The session a job acts for, when its generation is still current (a
 * reference), else NULL after logging the skip. Engine lock held. */
static ap_session *job_session_locked(ap_engine *e, const ap_job *job)
{
	ap_session *s = ap_registry_current(e->reg, job->address);
	if (s && ap_session_generation(s) == job->generation)
		return s;
	ap_session_unref(s);
	e->stats.stale_skips++;
	AP_DEBUG("⏭️ Skipping stale job - newer connection exists",
		 AP_F_STR("operator", job->address), AP_F_UINT("generation", job->generation),
		 AP_F_INT("kind", job->kind));
	return NULL;
}

/* Queue MonitorTaskTrigger for every task the session's operator owns and
 * has not been sent yet. Returns how many were newly queued; *ok counts
 * the owned tasks now queued or already sent, *failed those that could not
 * be queued (no memory, or the session ended meanwhile). */
static size_t stream_owned_locked(ap_engine *e, ap_session *s, size_t *total,
				  size_t *ok, size_t *failed)
{
	ap_task_ref *ids;
	size_t n = ap_assign_list_locked(e->assign, ap_session_address(s), &ids, NULL);
	size_t queued = 0, good = 0, bad = 0;
	for (size_t i = 0; i < n; i++) {
		ap_task *t = ap_task_find(e->tasks, ids[i].id);
		if (!t || !ap_task_assignable(t))
			continue;
		uint8_t *buf;
		size_t len;
		int rc = ap_task_pack_message(t, AP_OP_MONITOR, &buf, &len);
		if (rc == 0)
			rc = ap_session_push(s, AP_OP_MONITOR, t->id, buf, len);
		if (rc == 0)
			queued++;
		if (rc >= 0)
			good++;
		else
			bad++;
	}
	free(ids);
	if (total)
		*total = n;
	if (ok)
		*ok = good;
	if (failed)
		*failed = bad;
	return queued;
}

static void become_ready_locked(ap_engine *e, ap_session *s)
{
	const char *address = ap_session_address(s);
	AP_INFO("✅ Connection stabilized, proceeding with task assignment",
		AP_F_STR("operator", address), AP_F_UINT("generation", ap_session_generation(s)));
	if (ready_add_locked(e, s) != 0) {
		AP_ERROR("out of memory making operator ready", AP_F_STR("operator", address));
		return;
	}

	/* Reclaim: every orphan this operator could run is placed by the normal
	 * choice among all ready operators (this one included). Each orphan is
	 * visited once, so nothing placed in this pass is moved again in it. */
	ap_task_ref *orphans;
	size_t n = ap_assign_list_locked(e->assign, "", &orphans, NULL);
	ap_plan plan = { 0 };
	for (size_t i = 0; i < n; i++) {
		ap_task *t = ap_task_find(e->tasks, orphans[i].id);
		if (!t || !ap_task_assignable(t) ||
		    !ap_session_can_run(s, t->trigger_type, t->chain_id))
			continue;
		const char *prev = ap_assign_previous_locked(e->assign, t->id);
		if (engine_place_locked(e, &plan, t, prev, AP_WHY_RECLAIM) != 0)
			break;
	}
	free(orphans);
	engine_commit_locked(e, &plan);
	engine_plan_free(&plan);

	AP_INFO("🔄 Task assignments for operator", AP_F_STR("operator", address),
		AP_F_UINT("owned_tasks", ap_assign_owned_count_locked(e->assign, address)));
	size_t total, ok, failed;
	stream_owned_locked(e, s, &total, &ok, &failed);
	/* "successful" counts tasks handed to the session's outbox; the sends
	 * themselves are counted by the transport as they complete. */
	AP_INFO("📤 Streamed tasks to operator", AP_F_STR("operator", address),
		AP_F_UINT("total_tasks", total), AP_F_UINT("successful", ok),
		AP_F_UINT("failed", failed));
	/* Flagged last, so whoever sees the session ready also sees its
	 * initial tasks queued. */
	ap_registry_set_ready(e->reg, address, ap_session_generation(s));
	ap_session_set_ready(s);
}

/* Reassign the tasks of `owner` (no longer ready) to the ready operators,
 * orphaning those nobody can take. Engine lock held. */
static void reassign_owner_locked(ap_engine *e, const char *owner)
{
	ap_task_ref *ids;
	size_t n = ap_assign_list_locked(e->assign, owner, &ids, NULL);
	if (n == 0)
		return;
	ap_plan plan = { 0 };
	size_t orphaned = 0;
	for (size_t i = 0; i < n; i++) {
		ap_task *t = ap_task_find(e->tasks, ids[i].id);
		if (!t)
			continue;
		if (engine_place_locked(e, &plan, t, owner, AP_WHY_REASSIGN) != 0)
			break;
		if (!plan.v[plan.n - 1].owner[0])
			orphaned++;
	}
	free(ids);
	if (e->n_ready == 0)
		AP_INFO("⏸️ No active operators available - orphaned tasks will be reclaimed on operator reconnection",
			AP_F_STR("operator", owner), AP_F_UINT("orphaned_count", n));
	else
		AP_INFO("🔄 Reassigning orphaned tasks", AP_F_STR("operator", owner),
			AP_F_UINT("orphaned_count", n), AP_F_UINT("active_operators", e->n_ready),
			AP_F_UINT("left_orphaned", orphaned));
	engine_commit_locked(e, &plan);
	engine_plan_free(&plan);
}

typedef struct absent_owners {
	ap_engine *e;
	char (*v)[AP_ADDRESS_LEN + 1];
	size_t n, cap;
} absent_owners;

/* Collects owners that have no ready session (for grace_end_locked). */
static void collect_absent(void *arg, const char *owner, uint32_t count)
{
	absent_owners *acc = arg;
	(void)count;
	if (engine_ready_find_locked(acc->e, owner))
		return;
	if (acc->n == acc->cap) {
		size_t cap = acc->cap ? acc->cap * 2 : 16;
		char (*v)[AP_ADDRESS_LEN + 1] = realloc(acc->v, cap * sizeof *v);
		if (!v)
			return;
		acc->v = v;
		acc->cap = cap;
	}
	snprintf(acc->v[acc->n++], AP_ADDRESS_LEN + 1, "%s", owner);
}

static void grace_end_locked(ap_engine *e)
{
	/* Owners persisted from before the restart that are not ready now lose
	 * their tasks, as if they had disconnected. */
	e->grace_active = false;
	absent_owners acc = { .e = e };
	ap_assign_each_owner_locked(e->assign, collect_absent, &acc);
	for (size_t i = 0; i < acc.n; i++)
		reassign_owner_locked(e, acc.v[i]);
	free(acc.v);
	AP_INFO("⏰ Restart grace period over", AP_F_UINT("absent_owners", acc.n));
}

/* The safety net behind the event-driven path: an assignment change that
 * could not be persisted (a storage fault) left the map as it was, so a
 * departed owner may still hold tasks, or an orphan may have an eligible
 * ready operator. Every resync interval this pass moves the former and
 * places the latter, the same way the events would have. Owners that are
 * connected but still stabilizing keep their tasks (a reconnect), and
 * nothing moves during the restart grace window. */
static void repair_locked(ap_engine *e)
{
	if (e->grace_active)
		return;
	absent_owners acc = { .e = e };
	ap_assign_each_owner_locked(e->assign, collect_absent, &acc);
	for (size_t i = 0; i < acc.n; i++) {
		ap_session *s = ap_registry_current(e->reg, acc.v[i]);
		if (!s) {
			AP_WARN("🩹 Repair: moving tasks of a departed operator",
				AP_F_STR("operator", acc.v[i]));
			reassign_owner_locked(e, acc.v[i]);
		}
		ap_session_unref(s);
	}
	free(acc.v);
	if (e->n_ready == 0)
		return;
	ap_task_ref *orphans;
	size_t n = ap_assign_list_locked(e->assign, "", &orphans, NULL);
	ap_plan plan = { 0 };
	for (size_t i = 0; i < n; i++) {
		ap_task *t = ap_task_find(e->tasks, orphans[i].id);
		if (!t || !ap_task_assignable(t))
			continue;
		if (engine_place_locked(e, &plan, t, ap_assign_previous_locked(e->assign, t->id),
					AP_WHY_RECLAIM) != 0)
			break;
		if (!plan.v[plan.n - 1].owner[0])
			plan.n--; /* still nobody eligible: stays an orphan */
	}
	free(orphans);
	if (plan.n)
		AP_WARN("🩹 Repair: placing orphaned tasks", AP_F_UINT("tasks", plan.n));
	engine_commit_locked(e, &plan);
	engine_plan_free(&plan);
}

int64_t engine_run_job(void *ctx, const ap_job *job)
{
	ap_engine *e = ctx;
	int64_t again = 0;
	pthread_mutex_lock(&e->lock);
	if (e->stopping)
		goto out;
	if (job->kind == AP_JOB_GRACE) {
		if (e->grace_active)
			grace_end_locked(e);
		goto out;
	}
	if (job->kind == AP_JOB_REPAIR) {
		repair_locked(e);
		again = e->resync_ms;
		goto out;
	}
	ap_session *s = job_session_locked(e, job);
	if (!s)
		goto out;
	if (job->kind == AP_JOB_STABILIZE) {
		become_ready_locked(e, s);
		ap_job resync = *job;
		resync.kind = AP_JOB_RESYNC;
		ap_ticker_schedule(e->ticker, &resync, e->resync_ms);
	} else if (job->kind == AP_JOB_RESYNC && ap_session_ready(s)) {
		size_t queued = stream_owned_locked(e, s, NULL, NULL, NULL);
		if (queued)
			AP_INFO("🔁 Resync re-sent unsynced tasks",
				AP_F_STR("operator", job->address), AP_F_UINT("tasks", queued));
		again = e->resync_ms;
	}
	/* Everything above ran under the lock that guards the registry's
	 * changes, so the generation cannot have moved; count it if it did. */
	if (!ap_registry_is_current(e->reg, job->address, job->generation))
		e->stats.stale_job_runs++;
	ap_session_unref(s);
out:
	pthread_mutex_unlock(&e->lock);
	return again;
}

/* ---- sessions ------------------------------------------------------- */

bool engine_is_address(const char *s)
{
	if (!s || strlen(s) != AP_ADDRESS_LEN || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
		return false;
	for (int i = 2; i < AP_ADDRESS_LEN; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return false;
	}
	return true;
}

void engine_lower_address(const char *in, char out[AP_ADDRESS_LEN + 1])
{
	for (int i = 0; i <= AP_ADDRESS_LEN; i++)
		out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
	out[1] = 'x';
}

bool ap_engine_approved(ap_engine *e, const char *address)
{
	if (e->approve_any)
		return true;
	for (size_t i = 0; i < e->n_approved; i++)
		if (strcmp(e->approved[i], address) == 0)
			return true;
	return false;
}

int ap_engine_session_open(ap_engine *e, const ap_hello *hello_in, ap_session **out,
			   char *err, size_t errlen)
{
	*out = NULL;
	if (!engine_is_address(hello_in->address)) {
		snprintf(err, errlen, "address must be 0x followed by 40 hex digits");
		return AP_EINVAL;
	}
	if (hello_in->monotonic_clock < 0) {
		snprintf(err, errlen, "monotonic_clock must not be negative");
		return AP_EINVAL;
	}
	char address[AP_ADDRESS_LEN + 1];
	engine_lower_address(hello_in->address, address);
	ap_hello hello = *hello_in;
	hello.address = address;
	if (!ap_engine_approved(e, address)) {
		snprintf(err, errlen, "operator %s is not approved", address);
		return AP_EDENIED;
	}

	int rc = 0;
	ap_attach_result res = { 0 };
	ap_session *s = NULL;
	int64_t now = ap_clock_wall_ms();
	pthread_mutex_lock(&e->lock);
	if (e->stopping) {
		snprintf(err, errlen, "aggregator shutting down");
		rc = AP_ESTATE;
		goto out;
	}
	ap_operator_info before;
	bool known = ap_registry_get(e->reg, address, &before);
	if (e->cooldown_ms > 0 && known && before.connects > 0 &&
	    now - before.connected_at_ms < e->cooldown_ms) {
		snprintf(err, errlen, "reconnect cooldown: retry in %lld ms",
			 (long long)(e->cooldown_ms - (now - before.connected_at_ms)));
		rc = AP_ELIMIT;
		goto out;
	}
	if (!(known && before.connected) &&
	    (int64_t)ap_registry_connected(e->reg) >= e->max_sessions) {
		snprintf(err, errlen, "session limit reached (%lld)", (long long)e->max_sessions);
		rc = AP_ELIMIT;
		goto out;
	}
	uint64_t gen = atomic_fetch_add(&e->next_generation, 1);
	s = ap_session_new(&hello, gen);
	if (!s || ap_registry_attach(e->reg, s, now, &res) != 0) {
		snprintf(err, errlen, "out of memory");
		rc = AP_ENOMEM;
		goto out;
	}
	e->stats.connects++;
	if (!res.known) {
		AP_INFO("🔗 New operator connected with capabilities", AP_F_STR("operator", address),
			AP_F_UINT("generation", gen), AP_F_BOOL("event_monitoring", !hello.has_capabilities || hello.event_monitoring),
			AP_F_BOOL("block_monitoring", !hello.has_capabilities || hello.block_monitoring),
			AP_F_BOOL("time_monitoring", !hello.has_capabilities || hello.time_monitoring),
			AP_F_UINT("chains", hello.n_chain_ids));
	} else {
		e->stats.reconnects++;
		/* Every reconnection starts with an empty synced set, whatever the
		 * clock says (the Go original skipped same/older clocks). */
		if (hello.monotonic_clock > res.previous_clock)
			AP_INFO("🔄 Operator reconnected with newer MonotonicClock - resetting task tracking",
				AP_F_STR("operator", address), AP_F_INT("old_clock", res.previous_clock),
				AP_F_INT("new_clock", hello.monotonic_clock), AP_F_UINT("generation", gen));
		else
			AP_INFO("🔧 Force-resetting task tracking for reconnected operator",
				AP_F_STR("operator", address), AP_F_INT("old_clock", res.previous_clock),
				AP_F_INT("new_clock", hello.monotonic_clock), AP_F_UINT("generation", gen));
	}
	if (res.replaced) {
		e->stats.superseded++;
		AP_INFO("🔄 Canceling old ticker for reconnected operator", AP_F_STR("operator", address),
			AP_F_UINT("old_generation", ap_session_generation(res.replaced)),
			AP_F_UINT("generation", gen));
		engine_ready_remove_locked(e, address);
	}
	engine_save_operator_locked(e, address, &hello);
	ap_job job = { .kind = AP_JOB_STABILIZE, .generation = gen, .token = ap_session_token(s) };
	snprintf(job.address, sizeof job.address, "%s", address);
	if (e->stabilization_ms > 0)
		AP_INFO("⏳ Waiting for connection to stabilize before sending tasks",
			AP_F_STR("operator", address), AP_F_INT("stabilization_ms", e->stabilization_ms));
	ap_ticker_schedule(e->ticker, &job, e->stabilization_ms);
	*out = ap_session_ref(s);
out:
	pthread_mutex_unlock(&e->lock);
	/* Cancelling runs callbacks (the old transport's wake): never under the
	 * engine lock. The old session then ends with ABORTED and its cleanup
	 * finds a newer generation and changes nothing. */
	if (res.replaced) {
		ap_token_cancel(ap_session_token(res.replaced), AP_REASON_SUPERSEDED);
		ap_session_unref(res.replaced);
	}
	ap_session_unref(s);
	return rc;
}

void ap_engine_session_close(ap_engine *e, ap_session *s, const char *why)
{
	if (!s)
		return;
	const char *address = ap_session_address(s);
	uint64_t gen = ap_session_generation(s);
	pthread_mutex_lock(&e->lock);
	if (ap_registry_detach(e->reg, address, gen, ap_clock_wall_ms())) {
		e->stats.disconnects++;
		AP_INFO("🔌 Operator disconnecting, cleaning up state", AP_F_STR("operator", address),
			AP_F_UINT("generation", gen), AP_F_STR("reason", why ? why : ""));
		engine_ready_remove_locked(e, address);
		engine_save_operator_locked(e, address, NULL);
		/* At shutdown owners keep their tasks: the restart grace window
		 * gives them back without a reshuffle. */
		if (!e->stopping)
			reassign_owner_locked(e, address);
		AP_INFO("✅ Operator cleanup completed", AP_F_STR("operator", address),
			AP_F_UINT("generation", gen));
	} else {
		e->stats.stale_skips++;
		AP_INFO("🔄 Skipping stale cleanup - newer connection exists",
			AP_F_STR("operator", address), AP_F_UINT("generation", gen),
			AP_F_STR("reason", why ? why : ""));
	}
	pthread_mutex_unlock(&e->lock);
	/* Dropping the token's jobs: a cancelled token makes them stale. */
	if (ap_token_cancel(ap_session_token(s), AP_REASON_CLOSED))
		AP_DEBUG("🛑 Ticker context canceled, stopping ticker loop",
			 AP_F_STR("operator", address), AP_F_UINT("generation", gen));
	ap_session_unref(s);
}

