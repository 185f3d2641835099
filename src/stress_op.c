/* The simulated operators of `ap stress` (their driver threads are in
 * stress_fleet.c).
 *
 * Operators are spread over `threads` shards. A shard is one thread and
 * one ap_mux (one completion queue): the thread runs the operators'
 * timers (next action, reopen) and dispatches the completions of all
 * their streams, so everything an operator owns (its sessions, their
 * received sets, its channels) is touched by its shard thread only, with
 * no lock. The main thread sees it in two ways: relaxed atomic counters
 * for the progress line, and snapshots taken while every shard is parked
 * (shard.lock and shard.cond: the shard publishes `parked` and waits for
 * `park` to drop, so the main thread's reads happen after the shard's
 * writes and before its next ones).
 *
 * An operator's sessions are its streams not yet ended, newest first.
 * Each keeps the set of task ids it was sent (MonitorTaskTrigger adds,
 * DisableTask, DeleteTask, CompletedTask remove); when the stream ends the
 * set goes with it, since the aggregator re-sends everything to a new
 * session. Actions at the end of a session's hold time, by shares:
 *   clean  cancel the call (the same TCP connection stays), wait for its
 *          end, then reopen;
 *   crash  cancel the call, drop the connection and reopen at once on a
 *          new one, without waiting for anything: the old sessions move to
 *          the operator's dying list, their messages are ignored, and their
 *          channel is closed once their ends have come back (st_chan);
 *   dup    open a second session for the same address on the other
 *          channel (another TCP connection, like a second process), half
 *          the time two at once: the server must supersede all but one.
 * A session that ends without being asked to (superseded, or an error)
 * is replaced after a short backoff when it was the operator's last.
 * Which ends are expected is decided in on_end.
 *
 * The ledger (ledger_lock, a leaf lock: nothing is called while holding
 * it) maps task id -> the operator it was last delivered to and, after a
 * crash of its holder, the crash time: the next delivery to another
 * operator is a "task moved" and a failover latency sample. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/auth.h"
#include "ap/clock.h"
#include "ap/error.h"
#include "stress_fleet.h"

#define INC ST_INC

void st_samples_add(st_samples *s, int64_t v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		int64_t *p = realloc(s->v, cap * sizeof *p);
		if (!p)
			return; /* a lost sample, not a wrong one */
		s->v = p;
		s->cap = cap;
	}
	s->v[s->n++] = v;
}

static void violation(st_fleet *f, ap_stress_inv inv, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void violation(st_fleet *f, ap_stress_inv inv, const char *fmt, ...)
{
	char text[AP_STRESS_EXAMPLE_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(f->cfg.verdict_lock);
	ap_stress_violation(f->cfg.verdict, inv, "%s", text);
	pthread_mutex_unlock(f->cfg.verdict_lock);
	INC(f, violations);
}

/* ---- received sets ------------------------------------------------------ */

static void set_add(st_session *ss, const char *id, bool *had)
{
	set_item *it;
	HASH_FIND_STR(ss->received, id, it);
	*had = it != NULL;
	if (it)
		return;
	size_t len = strlen(id);
	it = malloc(sizeof *it + len + 1);
	if (!it)
		return;
	memcpy(it->id, id, len + 1);
	HASH_ADD_KEYPTR(hh, ss->received, it->id, len, it);
	ss->n_received++;
}

static void set_del(st_session *ss, const char *id)
{
	set_item *it;
	HASH_FIND_STR(ss->received, id, it);
	if (it) {
		HASH_DEL(ss->received, it);
		free(it);
		ss->n_received--;
	}
}

void st_session_free(st_session *ss)
{
	set_item *it, *tmp;
	HASH_ITER(hh, ss->received, it, tmp) {
		HASH_DEL(ss->received, it);
		free(it);
	}
	free(ss);
}

/* Unlink ss from its operator's live list. */
static void session_unlink(st_session *ss)
{
	st_op *op = ss->op;
	st_fleet *f = op->shard->fleet;
	for (st_session **p = &op->sessions; *p; p = &(*p)->next) {
		if (*p == ss) {
			*p = ss->next;
			break;
		}
	}
	op->n_sessions--;
	if (ss->opened && --op->n_opened == 0)
		atomic_fetch_sub_explicit(&f->c->connected, 1, memory_order_relaxed);
}

/* ---- the ledger --------------------------------------------------------- */

static ledger_entry *ledger_get_locked(st_fleet *f, const char *id)
{
	ledger_entry *e;
	HASH_FIND_STR(f->ledger, id, e);
	if (e)
		return e;
	size_t len = strlen(id);
	e = calloc(1, sizeof *e + len + 1);
	if (!e)
		return NULL;
	memcpy(e->id, id, len + 1);
	e->holder = e->killed_by = -1;
	HASH_ADD_KEYPTR(hh, f->ledger, e->id, len, e);
	return e;
}

static void ledger_deliver(st_fleet *f, st_shard *sh, const char *id, int op, int64_t now)
{
	int64_t failover = -1;
	bool moved = false;
	pthread_mutex_lock(&f->ledger_lock);
	ledger_entry *e = ledger_get_locked(f, id);
	if (e) {
		moved = e->holder >= 0 && e->holder != op;
		if (e->kill_ns && e->killed_by != op)
			failover = now - e->kill_ns;
		e->kill_ns = 0;
		e->holder = op;
	}
	pthread_mutex_unlock(&f->ledger_lock);
	if (moved)
		INC(f, tasks_moved);
	if (failover >= 0)
		st_samples_add(&sh->failover, failover);
}

static void ledger_kill(st_fleet *f, st_op *op, int64_t now)
{
	pthread_mutex_lock(&f->ledger_lock);
	for (st_session *ss = op->sessions; ss; ss = ss->next) {
		set_item *it, *tmp;
		HASH_ITER(hh, ss->received, it, tmp) {
			ledger_entry *e = ledger_get_locked(f, it->id);
			if (e) {
				e->kill_ns = now;
				e->killed_by = op->index;
			}
		}
	}
	pthread_mutex_unlock(&f->ledger_lock);
}

void st_fleet_task_gone(st_fleet *f, const char *task_id)
{
	pthread_mutex_lock(&f->ledger_lock);
	ledger_entry *e;
	HASH_FIND_STR(f->ledger, task_id, e);
	if (e)
		e->kill_ns = 0;
	pthread_mutex_unlock(&f->ledger_lock);
}

/* ---- sessions ------------------------------------------------------------- */

static void session_event(ap_mstream *ms, void *user, ap_mstream_event ev,
			  Aggregator__SyncMessagesResp *msg, const ap_rpc_status *st);

static int64_t next_clock(st_shard *sh, st_op *op)
{
	const ap_stress_options *o = sh->fleet->o;
	if (op->opens == 0)
		return op->clock;
	uint64_t total = (uint64_t)o->clock_newer + o->clock_same + o->clock_older;
	uint64_t pick = total ? st_rand(&sh->rng) % total : 0;
	if (pick < o->clock_newer || total == 0) {
		INC(sh->fleet, clock_newer);
		op->clock += st_rand_range(&sh->rng, 1, 1000);
	} else if (pick < (uint64_t)o->clock_newer + o->clock_same) {
		INC(sh->fleet, clock_same);
	} else {
		INC(sh->fleet, clock_older);
		op->clock -= st_rand_range(&sh->rng, 1, op->clock > 1000 ? 1000 : op->clock - 1);
	}
	return op->clock;
}

void st_op_open(st_shard *sh, st_op *op, int channel, int64_t now)
{
	st_fleet *f = sh->fleet;
	char auth[160];
	ap_rpc_metadata md = { "authorization", auth };
	ap_call_options co = { .wait_for_ready = true };

	if (!op->chan[channel] && !(op->chan[channel] = st_chan_open(f)))
		goto retry;
	if (f->o->auth) {
		if (ap_auth_sign(op->key, op->address, ap_clock_wall_ms() / 1000, auth,
				 sizeof auth) != 0)
			goto retry;
		co.metadata = &md;
		co.n_metadata = 1;
	}
	st_session *ss = calloc(1, sizeof *ss);
	if (!ss)
		goto retry;
	Aggregator__SyncMessagesReq req = AGGREGATOR__SYNC_MESSAGES_REQ__INIT;
	req.id = "ap-stress";
	req.address = op->address;
	req.monotonic_clock = ss->clock = next_clock(sh, op);
	ss->op = op;
	ss->channel = channel;
	ss->chan = op->chan[channel];
	ss->phase = sh->phase;
	ss->open_ns = now;
	ss->serial = op->opens + 1;
	if (ap_mstream_open(sh->mux, ss->chan->client, &req, &co, session_event, ss,
			    &ss->ms) != 0) {
		free(ss);
		goto retry;
	}
	ss->chan->streams++;
	op->opens++;
	ss->next = op->sessions;
	op->sessions = ss;
	op->n_sessions++;
	INC(f, sessions_opened);
	INC(f, events);
	if (op->opens > 1)
		INC(f, reconnects);
	return;
retry:
	violation(f, AP_STRESS_INV_STATUSES, "%s: could not open a session locally",
		  op->address);
	if (op->n_sessions == 0)
		op->reopen_ns = now + REOPEN_BACKOFF_NS;
}

void st_op_schedule(st_shard *sh, st_op *op, int64_t now)
{
	const ap_stress_options *o = sh->fleet->o;
	int64_t hold_ms;
	if (o->stabilization_ms > 0 && st_rand(&sh->rng) % 100 < o->early_pct)
		hold_ms = st_rand_range(&sh->rng, 0, o->stabilization_ms - 1);
	else
		hold_ms = st_rand_range(&sh->rng, o->hold_min_ms, o->hold_max_ms);
	op->due_ns = now + hold_ms * 1000000LL;
}

static void on_message(st_shard *sh, st_session *ss, const Aggregator__SyncMessagesResp *m,
		       int64_t now)
{
	st_fleet *f = sh->fleet;
	st_op *op = ss->op;
	const char *id = m->task_metadata && m->task_metadata->task_id &&
			 m->task_metadata->task_id[0] ? m->task_metadata->task_id : m->id;
	bool had;

	INC(f, messages);
	if (ss->crashed || op->index == f->o->debug_drop_operator || !id)
		return;
	/* Only tasks wait for stabilization: the server sends removals
	 * (DisableTask, DeleteTask) to a stabilizing session too, since the
	 * operator may still hold the task from its previous session. */
	if (m->op == AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger && !ss->first_task_ns &&
	    f->stab_ns >= 0 && now - ss->open_ns < f->stab_ns)
		violation(f, AP_STRESS_INV_STABILIZATION,
			  "%s: task %s arrived %lld us after session #%llu (clock %lld, "
			  "%d live) opened", op->address, id,
			  (long long)((now - ss->open_ns) / 1000),
			  (unsigned long long)ss->serial, (long long)ss->clock, op->n_sessions);
	switch (m->op) {
	case AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger:
		if (m->task_metadata && m->task_metadata->trigger &&
		    m->task_metadata->trigger->trigger_type_case ==
			    AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL)
			violation(f, AP_STRESS_INV_STATUSES, "%s: was sent manual task %s",
				  op->address, id);
		set_add(ss, id, &had);
		if (had)
			INC(f, duplicate_deliveries);
		if (!ss->first_task_ns) {
			ss->first_task_ns = now;
			if (ss->phase != ST_PHASE_CONNECT)
				st_samples_add(&sh->first_task, now - ss->open_ns);
		}
		ledger_deliver(f, sh, id, op->index, now);
		break;
	case AGGREGATOR__MESSAGE_OP__DisableTask:
	case AGGREGATOR__MESSAGE_OP__DeleteTask:
	case AGGREGATOR__MESSAGE_OP__CompletedTask:
		set_del(ss, id);
		break;
	default:
		break;
	}
}

static void on_end(st_shard *sh, st_session *ss, const ap_rpc_status *st, int64_t now)
{
	st_fleet *f = sh->fleet;
	st_op *op = ss->op;
	bool superseded = st->code == AP_RPC_ABORTED && strstr(st->details, "superseded");
	st_chan *chan = ss->chan;

	chan->streams--;
	if (ss->crashed) {
		for (st_session **p = &op->dying; *p; p = &(*p)->next) {
			if (*p == ss) {
				*p = ss->next;
				break;
			}
		}
		st_session_free(ss);
		st_chan_release(sh, chan);
		return;
	}
	session_unlink(ss);
	if (superseded)
		INC(f, superseded);
	if (ss->closing) {
		/* We asked for it: any end is fine. */
	} else if (superseded && (op->opens > ss->serial || op->n_sessions > 0)) {
		/* By a session opened after it, or racing it. */
	} else if (superseded && op->unconfirmed_ns &&
		   now - op->unconfirmed_ns < STALE_WINDOW_NS) {
		/* By a session this operator gave up on before the server had
		 * accepted it: the server accepted it late, after this one (the
		 * two used different connections, or the server's threads took
		 * them in the other order). Last accepted wins; the operator
		 * reconnects, as a real one would. */
		INC(f, stale_supersedes);
	} else if (superseded) {
		violation(f, AP_STRESS_INV_STATUSES,
			  "%s: its only session (#%llu) was superseded, but it opened no "
			  "other: %s", op->address, (unsigned long long)ss->serial,
			  st->details);
	} else {
		char what[AP_RPC_DETAILS_MAX + 32];
		snprintf(what, sizeof what, "%s: %s", ap_rpc_code_name(st->code), st->details);
		violation(f, AP_STRESS_INV_STATUSES, "%s: session ended by the server with %s (#%lld)",
			  op->address, what, (long long)ss->serial);
	}
	st_session_free(ss);
	st_chan_release(sh, chan);
	if (sh->phase == ST_PHASE_SETTLE)
		st_op_trim_channels(op);
	if (op->n_sessions > 0 || sh->phase == ST_PHASE_STOP)
		return;
	if (op->reopen_after_close) {
		op->reopen_after_close = false;
		st_op_open(sh, op, 0, now);
		if (sh->phase == ST_PHASE_STORM)
			st_op_schedule(sh, op, now);
	} else {
		op->reopen_ns = now + REOPEN_BACKOFF_NS;
	}
}

static void session_event(ap_mstream *ms, void *user, ap_mstream_event ev,
			  Aggregator__SyncMessagesResp *msg, const ap_rpc_status *st)
{
	st_session *ss = user;
	st_op *op = ss->op;
	st_shard *sh = op->shard;
	int64_t now = ap_clock_mono_ns();
	(void)ms;

	INC(sh->fleet, events);
	switch (ev) {
	case AP_MSTREAM_OPENED:
		ss->opened = true;
		ss->chan->ready = true;
		if (!ss->crashed && op->n_opened++ == 0)
			atomic_fetch_add_explicit(&sh->fleet->c->connected, 1, memory_order_relaxed);
		break;
	case AP_MSTREAM_MESSAGE:
		on_message(sh, ss, msg, now);
		ap_client_free(msg);
		break;
	case AP_MSTREAM_END:
		on_end(sh, ss, st, now);
		break;
	}
}

/* ---- actions -------------------------------------------------------------- */

void st_op_trim_channels(st_op *op)
{
	for (int ch = 0; ch < 2; ch++) {
		bool used = false;
		for (st_session *ss = op->sessions; ss && !used; ss = ss->next)
			used = ss->channel == ch;
		if (!used)
			st_chan_drop(op, ch);
	}
}

void st_op_shutdown(st_op *op)
{
	for (st_session *ss = op->sessions; ss; ss = ss->next) {
		ss->closing = true;
		ap_mstream_cancel(ss->ms);
	}
	op->reopen_ns = op->due_ns = 0;
	st_chan_drop(op, 0);
	st_chan_drop(op, 1);
}

static void op_crash(st_shard *sh, st_op *op, int64_t now)
{
	INC(sh->fleet, crashes);
	ledger_kill(sh->fleet, op, now);
	while (op->sessions) {
		st_session *ss = op->sessions;
		if (!ss->opened)
			op->unconfirmed_ns = now;
		ap_mstream_cancel(ss->ms);
		session_unlink(ss);
		ss->crashed = true;
		ss->next = op->dying;
		op->dying = ss;
	}
	st_chan_drop(op, 0);
	st_chan_drop(op, 1);
	op->reopen_after_close = false;
	st_op_open(sh, op, 0, now);
}

void st_op_act(st_shard *sh, st_op *op, int64_t now)
{
	st_fleet *f = sh->fleet;
	const ap_stress_options *o = f->o;
	op->due_ns = 0;
	if (op->n_sessions == 0)
		return; /* a reopen is pending; it schedules the next action */
	if (op->index == o->debug_drop_operator)
		return; /* keeps its first session, and its tasks, to the end */
	if (o->stabilization_ms > 0 &&
	    now - op->sessions->open_ns < o->stabilization_ms * 1000000LL)
		INC(f, early_closes);
	uint64_t total = (uint64_t)o->share_clean + o->share_crash + o->share_dup;
	uint64_t pick = total ? st_rand(&sh->rng) % total : 0;
	if (op->n_sessions >= MAX_SESSIONS || total == 0 || pick < o->share_clean) {
		INC(f, clean_closes);
		for (st_session *ss = op->sessions; ss; ss = ss->next) {
			if (!ss->opened)
				op->unconfirmed_ns = now;
			ss->closing = true;
			ap_mstream_cancel(ss->ms);
		}
		op->reopen_after_close = true;
		return; /* on_end reopens and schedules */
	}
	if (pick < (uint64_t)o->share_clean + o->share_crash) {
		op_crash(sh, op, now);
	} else {
		int ch = op->sessions->channel ^ 1;
		INC(f, dup_sessions);
		st_op_open(sh, op, ch, now);
		if (st_rand(&sh->rng) & 1) {
			INC(f, dup_sessions);
			st_op_open(sh, op, ch ^ 1, now);
		}
	}
	st_op_schedule(sh, op, now);
}
