/* Engine introspection: counters and the invariant check used by the tests
 * and by `ap stress` (SPEC section 8). */
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/record.h"
#include "engine_int.h"

/* ---- introspection -------------------------------------------------- */

void ap_engine_get_stats(ap_engine *e, ap_engine_stats *out)
{
	pthread_mutex_lock(&e->lock);
	*out = e->stats;
	out->tasks = ap_task_count(e->tasks);
	out->orphans = ap_assign_orphan_count(e->assign);
	out->ready = e->n_ready;
	out->connected = ap_registry_connected(e->reg);
	for (int st = AP_TASK_ENABLED; st <= AP_TASK_FAILED; st++)
		out->tasks_by_status[st] = ap_task_count_status(e->tasks, (ap_task_status)st);
	pthread_mutex_unlock(&e->lock);
}

size_t ap_engine_live_jobs(ap_engine *e, const char *address)
{
	return ap_ticker_live_jobs(e->ticker, address);
}

void ap_engine_ticker_stats(ap_engine *e, uint64_t *ran, uint64_t *dropped)
{
	ap_ticker_stats st;
	ap_ticker_get_stats(e->ticker, &st);
	*ran = st.ran;
	*dropped = st.dropped_stale;
}

typedef struct check_ctx {
	ap_engine *e;
	bool quiescent;
	char *err;
	size_t errlen;
	int rc;
	size_t owned_total;
} check_ctx;

static void check_task(void *arg, ap_task *t)
{
	check_ctx *c = arg;
	if (c->rc)
		return;
	char owner[AP_ADDRESS_LEN + 1];
	bool tracked = ap_assign_owner(c->e->assign, t->id, owner);
	if (!ap_task_assignable(t)) {
		if (tracked) {
			snprintf(c->err, c->errlen, "task %s is %s but tracked (owner '%s')",
				 t->id, ap_task_status_name(t->status), owner);
			c->rc = AP_ESTATE;
		}
		return;
	}
	if (!tracked) {
		snprintf(c->err, c->errlen, "assignable task %s is not tracked", t->id);
		c->rc = AP_ESTATE;
		return;
	}
	if (owner[0])
		c->owned_total++;
	if (!c->quiescent)
		return;
	bool someone = false;
	for (size_t i = 0; i < c->e->n_ready && !someone; i++)
		someone = ap_session_can_run(c->e->ready[i], t->trigger_type, t->chain_id);
	if (someone && !owner[0]) {
		snprintf(c->err, c->errlen, "task %s is orphaned with an eligible ready operator", t->id);
		c->rc = AP_ESTATE;
	} else if (owner[0] && !engine_ready_find_locked(c->e, owner)) {
		snprintf(c->err, c->errlen, "task %s is owned by %s, which is not ready", t->id, owner);
		c->rc = AP_ESTATE;
	}
}

typedef struct synced_ctx {
	ap_engine *e;
	const char *owner;
	const char *bad;
} synced_ctx;

static void check_synced(void *arg, const char *task_id)
{
	synced_ctx *c = arg;
	char owner[AP_ADDRESS_LEN + 1];
	if (!c->bad && (!ap_assign_owner(c->e->assign, task_id, owner) || strcmp(owner, c->owner)))
		c->bad = task_id;
}

int ap_engine_check(ap_engine *e, bool quiescent, char *err, size_t errlen)
{
	pthread_mutex_lock(&e->lock);
	check_ctx c = { e, quiescent && !e->grace_active, err, errlen, 0, 0 };
	ap_task_each(e->tasks, check_task, &c);
	size_t tracked = ap_assign_tracked_count(e->assign);
	size_t orphans = ap_assign_orphan_count(e->assign);
	if (c.rc == 0 && tracked - orphans != c.owned_total) {
		snprintf(err, errlen, "owner counts say %zu owned tasks, tasks say %zu",
			 tracked - orphans, c.owned_total);
		c.rc = AP_ESTATE;
	}
	for (size_t i = 0; c.rc == 0 && i < e->n_ready; i++) {
		synced_ctx sc = { e, ap_session_address(e->ready[i]), NULL };
		ap_session_each_synced(e->ready[i], check_synced, &sc);
		if (sc.bad) {
			snprintf(err, errlen, "operator %s has task %s synced but does not own it",
				 sc.owner, sc.bad);
			c.rc = AP_ESTATE;
		}
	}
	pthread_mutex_unlock(&e->lock);
	return c.rc;
}
