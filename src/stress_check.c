/* The invariant checker of `ap stress` (SPEC section 8): a pure function
 * of what the Admin service said and what the simulated operators hold,
 * so a unit test can feed it a doctored view (tests/unit/test_stress_check.c).
 *
 * The rules, as include/ap/stress.h states them:
 *   sessions   each simulated operator holds exactly one session, which the
 *              server accepted, and ListOperators lists it connected and
 *              ready;
 *   one_owner  when a simulated operator is ready (each is eligible for
 *              every non-manual task), every enabled non-manual task has an
 *              owner and that owner is listed ready; a manual or a
 *              not-enabled task has no owner;
 *   received   each simulated operator's received set equals the set of
 *              enabled non-manual tasks ListTasks gives it (counted per
 *              task missing or extra);
 *   unique     no task is in two simulated operators' final sets.
 * Lookups go through uthash tables built for the call and freed before it
 * returns. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/error.h"
#include "ap/stress.h"
#include "uthash.h"

static const char *const inv_names[AP_STRESS_N_INV] = {
	[AP_STRESS_INV_SESSIONS] = "sessions",
	[AP_STRESS_INV_OWNER] = "one_owner",
	[AP_STRESS_INV_RECEIVED] = "received_equals_owned",
	[AP_STRESS_INV_UNIQUE] = "no_double_delivery",
	[AP_STRESS_INV_RESOURCES] = "resources",
	[AP_STRESS_INV_STATUSES] = "statuses",
	[AP_STRESS_INV_STABILIZATION] = "stabilization",
	[AP_STRESS_INV_QUIESCENCE] = "quiescence",
	[AP_STRESS_INV_DAEMON] = "daemon",
};

const char *ap_stress_inv_name(ap_stress_inv i)
{
	return (unsigned)i < AP_STRESS_N_INV ? inv_names[i] : "?";
}

void ap_stress_verdict_init(ap_stress_verdict *v)
{
	memset(v, 0, sizeof *v);
}

void ap_stress_violation(ap_stress_verdict *v, ap_stress_inv i, const char *fmt, ...)
{
	AP_ASSERT((unsigned)i < AP_STRESS_N_INV);
	ap_stress_result *r = &v->r[i];
	r->checked = true;
	if (r->violations < AP_STRESS_EXAMPLES) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->examples[r->violations], AP_STRESS_EXAMPLE_LEN, fmt, ap);
		va_end(ap);
	}
	r->violations++;
}

uint64_t ap_stress_violations(const ap_stress_verdict *v)
{
	uint64_t n = 0;
	for (int i = 0; i < AP_STRESS_N_INV; i++)
		n += v->r[i].violations;
	return n;
}

/* One key of a lookup table. `index` is the position in the view's array. */
typedef struct entry {
	const char *key;
	size_t index;
	UT_hash_handle hh;
} entry;

static int table_add(entry **t, const char *key, size_t index)
{
	entry *e;
	HASH_FIND_STR(*t, key, e);
	if (e)
		return 0; /* first one wins */
	e = malloc(sizeof *e);
	if (!e)
		return AP_ENOMEM;
	e->key = key;
	e->index = index;
	HASH_ADD_KEYPTR(hh, *t, key, strlen(key), e);
	return 0;
}

static entry *table_find(entry *t, const char *key)
{
	entry *e;
	HASH_FIND_STR(t, key, e);
	return e;
}

static void table_free(entry **t)
{
	entry *e, *tmp;
	HASH_ITER(hh, *t, e, tmp) {
		HASH_DEL(*t, e);
		free(e);
	}
}

static bool owned_task(const ap_stress_task_view *t)
{
	return !t->manual && strcmp(t->status, "enabled") == 0;
}

static const ap_stress_operator_view *listed(const ap_stress_view *v, entry *ops,
					     const char *address)
{
	entry *e = table_find(ops, address);
	return e ? &v->operators[e->index] : NULL;
}

static void check_sessions(const ap_stress_view *v, entry *ops, ap_stress_verdict *out)
{
	ap_stress_result *r = &out->r[AP_STRESS_INV_SESSIONS];
	r->checked = true;
	for (size_t i = 0; i < v->n_sims; i++) {
		const ap_stress_sim_view *s = &v->sims[i];
		const ap_stress_operator_view *o = listed(v, ops, s->address);
		r->items++;
		if (s->sessions != 1 || !s->opened)
			ap_stress_violation(out, AP_STRESS_INV_SESSIONS,
				"%s holds %u sessions%s, not one accepted session",
				s->address, s->sessions,
				s->sessions && !s->opened ? " (newest not accepted)" : "");
		else if (!o)
			ap_stress_violation(out, AP_STRESS_INV_SESSIONS,
				"%s holds a session but ListOperators does not list it",
				s->address);
		else if (!o->connected || !o->ready)
			ap_stress_violation(out, AP_STRESS_INV_SESSIONS,
				"%s holds a session but ListOperators says connected=%d ready=%d",
				s->address, o->connected, o->ready);
	}
}

static void check_owner(const ap_stress_view *v, entry *ops, ap_stress_verdict *out)
{
	ap_stress_result *r = &out->r[AP_STRESS_INV_OWNER];
	bool eligible_ready = false;
	r->checked = true;
	for (size_t i = 0; i < v->n_sims && !eligible_ready; i++) {
		const ap_stress_operator_view *o = listed(v, ops, v->sims[i].address);
		eligible_ready = o && o->ready;
	}
	if (!eligible_ready)
		snprintf(r->note, sizeof r->note,
			 "no simulated operator ready: ownership of enabled tasks not required");
	for (size_t i = 0; i < v->n_tasks; i++) {
		const ap_stress_task_view *t = &v->tasks[i];
		r->items++;
		if (!owned_task(t)) {
			if (t->owner[0])
				ap_stress_violation(out, AP_STRESS_INV_OWNER,
					"task %s (%s%s) has owner %s", t->id, t->status,
					t->manual ? ", manual" : "", t->owner);
			continue;
		}
		if (!eligible_ready)
			continue;
		if (!t->owner[0]) {
			ap_stress_violation(out, AP_STRESS_INV_OWNER,
				"task %s is orphaned while eligible operators are ready", t->id);
			continue;
		}
		const ap_stress_operator_view *o = listed(v, ops, t->owner);
		if (!o || !o->ready)
			ap_stress_violation(out, AP_STRESS_INV_OWNER,
				"task %s is owned by %s, which is %s", t->id, t->owner,
				!o ? "not listed by ListOperators" : "not ready");
	}
}

/* received and unique. */
static int check_sets(const ap_stress_view *v, entry *tasks, ap_stress_verdict *out)
{
	ap_stress_result *rr = &out->r[AP_STRESS_INV_RECEIVED];
	ap_stress_result *ru = &out->r[AP_STRESS_INV_UNIQUE];
	entry *holder = NULL; /* task id -> first simulated operator holding it */
	entry *mine = NULL;
	int rc = 0;

	rr->checked = ru->checked = true;
	for (size_t i = 0; i < v->n_sims; i++) {
		const ap_stress_sim_view *s = &v->sims[i];
		size_t extra = 0, missing = 0;
		const char *extra_id = NULL, *missing_id = NULL;

		rr->items++;
		table_free(&mine);
		for (size_t k = 0; k < s->n_received; k++) {
			const char *id = s->received[k];
			if ((rc = table_add(&mine, id, k)) != 0)
				goto out;
			entry *h = table_find(holder, id);
			ru->items += h == NULL;
			if (h && h->index != i)
				ap_stress_violation(out, AP_STRESS_INV_UNIQUE,
					"task %s is in the final sets of %s and %s", id,
					v->sims[h->index].address, s->address);
			else if (!h && (rc = table_add(&holder, id, i)) != 0)
				goto out;
			entry *t = table_find(tasks, id);
			const ap_stress_task_view *tv = t ? &v->tasks[t->index] : NULL;
			if (!tv || !owned_task(tv) || strcmp(tv->owner, s->address) != 0) {
				extra++;
				extra_id = extra_id ? extra_id : id;
			}
		}
		for (size_t k = 0; k < v->n_tasks; k++) {
			const ap_stress_task_view *t = &v->tasks[k];
			if (owned_task(t) && strcmp(t->owner, s->address) == 0 &&
			    !table_find(mine, t->id)) {
				missing++;
				missing_id = missing_id ? missing_id : t->id;
			}
		}
		if (extra + missing == 0)
			continue;
		ap_stress_violation(out, AP_STRESS_INV_RECEIVED,
			"%s received %zu tasks: %zu it does not own (e.g. %s), "
			"%zu it owns were not received (e.g. %s)",
			s->address, s->n_received, extra, extra_id ? extra_id : "-",
			missing, missing_id ? missing_id : "-");
		/* Count every task that differs, not just the operator. */
		rr->violations += extra + missing - 1;
	}
out:
	table_free(&mine);
	table_free(&holder);
	return rc;
}

int ap_stress_check(const ap_stress_view *v, ap_stress_verdict *out)
{
	entry *ops = NULL, *tasks = NULL;
	int rc = 0;

	for (size_t i = 0; i < v->n_operators && !rc; i++)
		rc = table_add(&ops, v->operators[i].address, i);
	for (size_t i = 0; i < v->n_tasks && !rc; i++)
		rc = table_add(&tasks, v->tasks[i].id, i);
	if (!rc) {
		check_sessions(v, ops, out);
		check_owner(v, ops, out);
		rc = check_sets(v, tasks, out);
	}
	table_free(&ops);
	table_free(&tasks);
	return rc;
}

bool ap_stress_resources_within(const ap_stress_proc *base, const ap_stress_proc *end,
				int thread_slack, int fd_slack)
{
	return end->threads <= base->threads + thread_slack &&
	       end->fds - end->client_conns <= base->fds - base->client_conns + fd_slack;
}

void ap_stress_check_resources(const char *what, const ap_stress_proc *base,
			       const ap_stress_proc *end, int thread_slack,
			       int fd_slack, int64_t rss_slack_kb,
			       ap_stress_verdict *out)
{
	ap_stress_result *r = &out->r[AP_STRESS_INV_RESOURCES];
	r->checked = true;
	r->items += rss_slack_kb >= 0 ? 3 : 2;
	if (end->threads > base->threads + thread_slack)
		ap_stress_violation(out, AP_STRESS_INV_RESOURCES,
			"%s: %d threads, baseline %d + %d allowed", what,
			end->threads, base->threads, thread_slack);
	if (end->fds - end->client_conns > base->fds - base->client_conns + fd_slack)
		ap_stress_violation(out, AP_STRESS_INV_RESOURCES,
			"%s: %d open fds (%d connections of ours), baseline %d (%d) + %d allowed",
			what, end->fds, end->client_conns, base->fds, base->client_conns,
			fd_slack);
	if (rss_slack_kb >= 0 && end->rss_kb > base->rss_kb + rss_slack_kb)
		ap_stress_violation(out, AP_STRESS_INV_RESOURCES,
			"%s: RSS %lld kB, baseline %lld + %lld kB allowed", what,
			(long long)end->rss_kb, (long long)base->rss_kb,
			(long long)rss_slack_kb);
}
