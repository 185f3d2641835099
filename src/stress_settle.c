/* Quiescence and the check of `ap stress` (see stress.c for when they
 * run): st_settle waits until every operator holds exactly one accepted
 * session, no stream event has happened for quiet_ms, ListOperators lists
 * every operator connected and ready, and still no event happens for
 * quiet_ms after the snapshot and the admin lists were taken, so that both
 * describe one moment; st_check hands them to the pure checker
 * (stress_check.c). Main thread only. */
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "stress_int.h"

static uint64_t events(st_run *R)
{
	return atomic_load_explicit(&R->c.events, memory_order_relaxed);
}

/* Wait until no stream event happened for quiet_ms (or the deadline, or
 * an interrupt). Returns the event count that held. */
static uint64_t wait_quiet(st_run *R, int64_t deadline_ms)
{
	uint64_t e = events(R);
	int64_t since = ap_clock_mono_ms();
	while (!st_interrupted() && ap_clock_mono_ms() < deadline_ms) {
		st_sleep_ms(25);
		uint64_t now_e = events(R);
		if (now_e != e) {
			e = now_e;
			since = ap_clock_mono_ms();
		} else if (ap_clock_mono_ms() - since >= R->o->quiet_ms) {
			break;
		}
	}
	return e;
}

static const Aggregator__OperatorInfo *listed(const st_run *R, const char *address)
{
	for (size_t i = 0; R->ops && i < R->ops->n_operators; i++)
		if (strcmp(R->ops->operators[i]->address, address) == 0)
			return R->ops->operators[i];
	return NULL;
}

/* Quiescence (see the top of the file). On return *snap and R's admin
 * lists hold the last state seen; returns true when it was quiescent. */
bool st_settle(st_run *R, st_snapshot *snap, double *took_s)
{
	int64_t t0 = ap_clock_mono_ms();
	int64_t deadline = t0 + R->o->settle_timeout_ms;
	bool ok = false;

	while (!ok && !st_interrupted() && ap_clock_mono_ms() < deadline) {
		uint64_t e = wait_quiet(R, deadline);
		st_snapshot_free(snap);
		if (st_fleet_snapshot(R->fleet, snap) != 0)
			break;
		if (snap->with_one_session != snap->n_sims)
			continue;
		if (st_admin_lists(R) != 0)
			break;
		bool ready = true;
		for (size_t i = 0; i < snap->n_sims && ready; i++) {
			const Aggregator__OperatorInfo *oi = listed(R, snap->sims[i].address);
			ready = oi && oi->connected && oi->ready;
		}
		if (!ready || events(R) != e)
			continue;
		/* Still nothing after the lists were taken: one moment. */
		int64_t until = ap_clock_mono_ms() + R->o->quiet_ms;
		while (events(R) == e && ap_clock_mono_ms() < until)
			st_sleep_ms(25);
		ok = events(R) == e;
	}
	if (!R->ops && !snap->sims) {
		st_fleet_snapshot(R->fleet, snap);
		st_admin_lists(R);
	}
	*took_s = (double)(ap_clock_mono_ms() - t0) / 1000.0;
	return ok;
}

/* Build the checker's view from a snapshot and the admin lists, and run
 * it. Also fills the final task counts of the report. */
void st_check(st_run *R, const st_snapshot *snap)
{
	size_t n_tasks = 0;
	for (size_t p = 0; p < R->n_pages; p++)
		n_tasks += R->pages[p]->n_tasks;
	size_t n_ops = R->ops ? R->ops->n_operators : 0;
	ap_stress_task_view *tv = calloc(n_tasks + 1, sizeof *tv);
	ap_stress_operator_view *ov = calloc(n_ops + 1, sizeof *ov);
	if (!tv || !ov) {
		st_run_violation(R, AP_STRESS_INV_QUIESCENCE, "out of memory for the check");
		goto out;
	}
	size_t k = 0;
	ap_stress_report *r = R->r;
	r->final_tasks = r->final_enabled = r->final_owned = 0;
	for (size_t p = 0; p < R->n_pages; p++) {
		for (size_t i = 0; i < R->pages[p]->n_tasks; i++, k++) {
			const Aggregator__TaskInfo *ti = R->pages[p]->tasks[i];
			tv[k].id = ti->id;
			tv[k].status = ti->status;
			tv[k].owner = ti->owner;
			tv[k].manual = ti->trigger_type == AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL;
			r->final_tasks++;
			r->final_enabled += strcmp(ti->status, "enabled") == 0;
			r->final_owned += ti->owner[0] != '\0';
		}
	}
	for (size_t i = 0; i < n_ops; i++) {
		ov[i].address = R->ops->operators[i]->address;
		ov[i].connected = R->ops->operators[i]->connected;
		ov[i].ready = R->ops->operators[i]->ready;
	}
	ap_stress_view v = { tv, n_tasks, ov, n_ops, snap->sims, snap->n_sims };
	pthread_mutex_lock(&R->vlock);
	int rc = ap_stress_check(&v, &r->verdict);
	pthread_mutex_unlock(&R->vlock);
	if (rc)
		st_run_violation(R, AP_STRESS_INV_QUIESCENCE, "the check failed: %s", ap_strerror(rc));
out:
	free(tv);
	free(ov);
}

