/* The driver threads of `ap stress`, each one ap_mux and its share of the
 * simulated operators (see stress_op.c for the operators themselves), and
 * the fleet around them: start, phases, snapshots, stop.
 *
 * A shard's loop: leave the loop in ST_PHASE_STOP; park when asked (the
 * main thread takes a snapshot); act on a phase change; run the timers
 * that are due (actions in the storm, reopens); then wait in the mux for
 * completions until the next timer, at most LOOP_WAIT_MS, so that parking
 * and phase changes are seen within that. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/auth.h"
#include "ap/clock.h"
#include "ap/error.h"
#include "stress_fleet.h"

/* ---- channels ----------------------------------------------------------- */

st_chan *st_chan_open(st_fleet *f)
{
	st_chan *c = calloc(1, sizeof *c);
	if (c && ap_client_open(f->cfg.target, &f->copt, &c->client, NULL, 0) != 0) {
		free(c);
		c = NULL;
	}
	return c;
}

/* Close a dropped channel with no stream left. One that never carried an
 * accepted stream may still have a connection attempt in flight: it goes
 * to the shard's graveyard and is closed CONNECT_MIN_NS later, once
 * ap_client_connecting says the attempt is over, or CONNECT_MAX_NS later
 * at the latest. (The channel's state alone is not enough: measured, one
 * crash in a hundred still left a connection behind when only it was
 * checked; the delay alone was not enough under AddressSanitizer.) */
static void chan_close_or_bury(st_shard *sh, st_chan *c, int64_t now)
{
	if (c->ready || now >= c->close_max_ns ||
	    (now >= c->close_min_ns && !ap_client_connecting(c->client))) {
		ap_client_close(c->client);
		free(c);
		return;
	}
	c->next = sh->graveyard;
	sh->graveyard = c;
	int64_t check = now < c->close_min_ns ? c->close_min_ns : now + GRAVEYARD_POLL_NS;
	if (!sh->graveyard_next_ns || check < sh->graveyard_next_ns)
		sh->graveyard_next_ns = check;
}

void st_chan_release(st_shard *sh, st_chan *c)
{
	if (!c->dropped || c->streams > 0)
		return;
	int64_t now = ap_clock_mono_ns();
	c->close_min_ns = now + CONNECT_MIN_NS;
	c->close_max_ns = now + CONNECT_MAX_NS;
	chan_close_or_bury(sh, c, now);
}

void st_shard_graveyard(st_shard *sh, int64_t now, bool all)
{
	st_chan *list = sh->graveyard;
	sh->graveyard = NULL;
	sh->graveyard_next_ns = 0;
	while (list) {
		st_chan *c = list;
		list = c->next;
		if (all)
			c->close_max_ns = now;
		chan_close_or_bury(sh, c, now);
	}
}

void st_chan_drop(st_op *op, int i)
{
	st_chan *c = op->chan[i];
	op->chan[i] = NULL;
	if (c) {
		c->dropped = true;
		st_chan_release(op->shard, c);
	}
}

/* ---- the driver threads ------------------------------------------------- */

/* The shard enters phase p. */
static void shard_phase(st_shard *sh, int p, int64_t now)
{
	sh->phase = p;
	for (size_t i = 0; i < sh->n_ops; i++) {
		st_op *op = sh->ops[i];
		if (p == ST_PHASE_STORM && op->n_sessions > 0)
			st_op_schedule(sh, op, now);
		if (p == ST_PHASE_SETTLE) {
			op->due_ns = 0;
			st_op_trim_channels(op);
			if (op->n_sessions == 0 && !op->reopen_after_close && !op->reopen_ns)
				op->reopen_ns = now;
		}
	}
}

/* The --max-rate token bucket of this shard (its share of the rate, a
 * tenth of a second of burst). True when an action may run now. */
static bool shard_token(st_shard *sh, int64_t now)
{
	if (!sh->token_ns)
		return true; /* no cap */
	int64_t burst = sh->token_ns * (sh->tokens_burst > 0 ? sh->tokens_burst : 1);
	if (sh->token_time < now - burst)
		sh->token_time = now - burst;
	if (sh->token_time + sh->token_ns > now)
		return false;
	sh->token_time += sh->token_ns;
	return true;
}

/* Run due timers; returns the next due time. */
static int64_t shard_timers(st_shard *sh, int64_t now)
{
	int64_t next = now + LOOP_WAIT_MS * 1000000LL;
	if (sh->graveyard_next_ns && now >= sh->graveyard_next_ns) {
		sh->graveyard_next_ns = 0;
		st_shard_graveyard(sh, now, false);
	}
	if (sh->graveyard_next_ns && sh->graveyard_next_ns < next)
		next = sh->graveyard_next_ns;
	for (size_t i = 0; i < sh->n_ops; i++) {
		st_op *op = sh->ops[i];
		if (op->due_ns && now >= op->due_ns && sh->phase == ST_PHASE_STORM) {
			if (shard_token(sh, now)) {
				op->deferred = false;
				st_op_act(sh, op, now);
			} else {
				/* Over the cap, an operator's turn comes about once
				 * per n_ops tokens: wait somewhere up to that. */
				if (!op->deferred)
					ST_INC(sh->fleet, rate_deferred);
				op->deferred = true;
				op->due_ns = now + st_rand_range(&sh->rng, 1, (int64_t)sh->n_ops) *
							   sh->token_ns;
			}
		}
		if (op->reopen_ns && now >= op->reopen_ns) {
			op->reopen_ns = 0;
			if (op->n_sessions == 0) {
				st_op_open(sh, op, 0, now);
				if (sh->phase == ST_PHASE_STORM)
					st_op_schedule(sh, op, now);
			}
		}
		if (op->due_ns && op->due_ns < next)
			next = op->due_ns;
		if (op->reopen_ns && op->reopen_ns < next)
			next = op->reopen_ns;
	}
	return next;
}

static void shard_park_point(st_shard *sh)
{
	if (!atomic_load_explicit(&sh->park_req, memory_order_acquire))
		return;
	pthread_mutex_lock(&sh->lock);
	if (sh->park) {
		sh->parked = true;
		pthread_cond_broadcast(&sh->cond);
		while (sh->park)
			pthread_cond_wait(&sh->cond, &sh->lock);
		sh->parked = false;
	}
	pthread_mutex_unlock(&sh->lock);
}

static void *shard_main(void *arg)
{
	st_shard *sh = arg;
	st_fleet *f = sh->fleet;
	char name[16];
	snprintf(name, sizeof name, "stress-%d", sh->index);
	pthread_setname_np(pthread_self(), name);

	int64_t now = ap_clock_mono_ns();
	/* Spread the first connects over up to half a second. */
	for (size_t i = 0; i < sh->n_ops; i++)
		sh->ops[i]->reopen_ns = now + (int64_t)(sh->ops[i]->index % 500) * 1000000LL;
	for (;;) {
		shard_park_point(sh);
		now = ap_clock_mono_ns();
		int p = atomic_load(&f->phase);
		if (p == ST_PHASE_STOP)
			break;
		if (p != sh->phase)
			shard_phase(sh, p, now);
		int64_t next = shard_timers(sh, now);
		int64_t wait_ms = (next - ap_clock_mono_ns()) / 1000000LL;
		ap_mux_run(sh->mux, wait_ms < 0 ? 0 : wait_ms < LOOP_WAIT_MS ? wait_ms : LOOP_WAIT_MS, 256);
	}
	/* Cancel everything and let the ENDs close the channels. */
	sh->phase = ST_PHASE_STOP;
	for (size_t i = 0; i < sh->n_ops; i++)
		st_op_shutdown(sh->ops[i]);
	int64_t deadline = ap_clock_mono_ms() + STOP_DRAIN_MS;
	while (ap_mux_streams(sh->mux) > 0 && ap_clock_mono_ms() < deadline)
		ap_mux_run(sh->mux, LOOP_WAIT_MS, 0);
	/* The graveyard's channels had a connect in flight: let it finish
	 * before closing them, so none of their connections is left open. */
	while (sh->graveyard && ap_clock_mono_ms() < deadline) {
		st_shard_graveyard(sh, ap_clock_mono_ns(), false);
		st_sleep_ms(LOOP_WAIT_MS);
	}
	st_shard_graveyard(sh, ap_clock_mono_ns(), true);
	return NULL;
}

/* ---- the fleet -------------------------------------------------------------- */

int st_fleet_start(const st_fleet_config *cfg, st_fleet **out, char *err, size_t errlen)
{
	const ap_stress_options *o = cfg->o;
	*out = NULL;
	st_fleet *f = calloc(1, sizeof *f);
	if (!f)
		return AP_ENOMEM;
	f->cfg = *cfg;
	f->o = o;
	f->c = cfg->counters;
	f->stab_ns = o->stabilization_ms >= 0 ? o->stabilization_ms * 1000000LL : -1;
	f->copt.reconnect_backoff_ms = 100;
	f->copt.max_reconnect_backoff_ms = 1000;
	atomic_init(&f->phase, ST_PHASE_CONNECT);
	pthread_mutex_init(&f->ledger_lock, NULL);
	f->n_ops = o->operators;
	f->n_shards = o->threads < o->operators ? o->threads : o->operators;
	f->ops = calloc((size_t)f->n_ops, sizeof *f->ops);
	f->shards = calloc((size_t)f->n_shards, sizeof *f->shards);
	if (!f->ops || !f->shards)
		goto nomem;
	for (int s = 0; s < f->n_shards; s++) {
		pthread_mutex_init(&f->shards[s].lock, NULL);
		ap_clock_cond_init(&f->shards[s].cond);
		atomic_init(&f->shards[s].park_req, false);
	}
	uint64_t tag = o->seed * 0x9E3779B97F4A7C15ULL;
	for (int i = 0; i < f->n_ops; i++) {
		st_op *op = &f->ops[i];
		op->index = i;
		op->clock = ap_clock_wall_ms() + i;
		if (o->auth) {
			if (ap_auth_key_generate(op->key) || ap_auth_address(op->key, op->address)) {
				snprintf(err, errlen, "cannot generate operator keys");
				st_fleet_stop(f, NULL, NULL);
				return AP_EIO;
			}
		} else {
			/* "0x5757" + 12 digits of the seed + 24 of the index: runs
			 * with different seeds use different operators. */
			snprintf(op->address, sizeof op->address, "0x5757%012llx%024x",
				 (unsigned long long)(tag >> 16), (unsigned)i);
		}
	}
	for (int s = 0; s < f->n_shards; s++) {
		st_shard *sh = &f->shards[s];
		sh->fleet = f;
		sh->index = s;
		sh->rng = (o->seed + 1) * 0x9E3779B97F4A7C15ULL + (uint64_t)s * 7919 + 1;
		if (o->max_rate > 0) {
			double per_shard = o->max_rate / f->n_shards;
			sh->token_ns = (int64_t)(1e9 / per_shard);
			sh->tokens_burst = (int)(per_shard / 10);
			if (sh->token_ns < 1)
				sh->token_ns = 1;
		}
		sh->ops = calloc((size_t)f->n_ops / f->n_shards + 1, sizeof *sh->ops);
		if (!sh->ops || ap_mux_open(&sh->mux) != 0)
			goto nomem;
	}
	for (int i = 0; i < f->n_ops; i++) {
		st_shard *sh = &f->shards[i % f->n_shards];
		f->ops[i].shard = sh;
		sh->ops[sh->n_ops++] = &f->ops[i];
	}
	for (int s = 0; s < f->n_shards; s++) {
		if (pthread_create(&f->shards[s].thread, NULL, shard_main, &f->shards[s]) != 0) {
			snprintf(err, errlen, "cannot start a driver thread");
			st_fleet_stop(f, NULL, NULL);
			return AP_EIO;
		}
		f->shards[s].started = true;
	}
	*out = f;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	st_fleet_stop(f, NULL, NULL);
	return AP_ENOMEM;
}

void st_fleet_set_phase(st_fleet *f, st_phase p)
{
	atomic_store(&f->phase, (int)p);
}

static void park_all(st_fleet *f, bool park)
{
	for (int s = 0; s < f->n_shards; s++) {
		st_shard *sh = &f->shards[s];
		pthread_mutex_lock(&sh->lock);
		sh->park = park;
		atomic_store_explicit(&sh->park_req, park, memory_order_release);
		pthread_cond_broadcast(&sh->cond);
		pthread_mutex_unlock(&sh->lock);
	}
	if (!park)
		return;
	for (int s = 0; s < f->n_shards; s++) {
		st_shard *sh = &f->shards[s];
		pthread_mutex_lock(&sh->lock);
		while (!sh->parked)
			pthread_cond_wait(&sh->cond, &sh->lock);
		pthread_mutex_unlock(&sh->lock);
	}
}

int st_fleet_snapshot(st_fleet *f, st_snapshot *out)
{
	size_t n_ids = 0;
	memset(out, 0, sizeof *out);
	park_all(f, true);
	for (int i = 0; i < f->n_ops; i++)
		if (f->ops[i].sessions)
			n_ids += f->ops[i].sessions->n_received;
	size_t n_ops = f->n_ops > 0 ? (size_t)f->n_ops : 0;
	out->sims = calloc(n_ops + 1, sizeof *out->sims);
	out->ids = calloc(n_ids + 1, sizeof *out->ids);
	int rc = out->sims && out->ids ? 0 : AP_ENOMEM;
	for (int i = 0; i < f->n_ops && rc == 0; i++) {
		st_op *op = &f->ops[i];
		ap_stress_sim_view *v = &out->sims[i];
		st_session *ss = op->sessions; /* the newest */
		v->address = op->address;
		v->sessions = (unsigned)op->n_sessions;
		v->opened = ss && ss->opened;
		out->with_one_session += op->n_sessions == 1 && v->opened;
		v->received = (const char *const *)&out->ids[out->n_ids];
		if (!ss)
			continue;
		set_item *it, *tmp;
		HASH_ITER(hh, ss->received, it, tmp) {
			if (!(out->ids[out->n_ids] = strdup(it->id))) {
				rc = AP_ENOMEM;
				break;
			}
			out->n_ids++;
			v->n_received++;
		}
	}
	out->n_sims = n_ops;
	park_all(f, false);
	if (rc)
		st_snapshot_free(out);
	return rc;
}

void st_snapshot_free(st_snapshot *s)
{
	for (size_t i = 0; i < s->n_ids; i++)
		free(s->ids[i]);
	free(s->ids);
	free(s->sims);
	memset(s, 0, sizeof *s);
}

void st_fleet_stop(st_fleet *f, ap_stress_latency *first_task, ap_stress_latency *failover)
{
	st_samples ft = { 0 }, fo = { 0 };
	if (!f)
		return;
	atomic_store(&f->phase, ST_PHASE_STOP);
	for (int s = 0; f->shards && s < f->n_shards; s++) {
		st_shard *sh = &f->shards[s];
		if (sh->started)
			pthread_join(sh->thread, NULL);
		ap_mux_close(sh->mux); /* abandons every stream left */
		for (size_t k = 0; k < sh->first_task.n; k++)
			st_samples_add(&ft, sh->first_task.v[k]);
		for (size_t k = 0; k < sh->failover.n; k++)
			st_samples_add(&fo, sh->failover.v[k]);
		free(sh->first_task.v);
		free(sh->failover.v);
		free(sh->ops);
		pthread_mutex_destroy(&sh->lock);
		pthread_cond_destroy(&sh->cond);
	}
	/* Normally nothing is left: every stream ended in the drain above.
	 * What a stuck stream leaves (mux_close abandoned it) is freed here,
	 * its channel included. */
	for (int i = 0; f->ops && i < f->n_ops; i++) {
		st_op *op = &f->ops[i];
		for (int list = 0; list < 2; list++) {
			st_session **head = list ? &op->dying : &op->sessions;
			while (*head) {
				st_session *ss = *head;
				*head = ss->next;
				if (--ss->chan->streams == 0 && ss->chan->dropped) {
					ap_client_close(ss->chan->client);
					free(ss->chan);
				}
				st_session_free(ss);
			}
		}
		for (int c = 0; c < 2; c++) {
			if (op->chan[c] && op->chan[c]->streams == 0) {
				ap_client_close(op->chan[c]->client);
				free(op->chan[c]);
			}
		}
	}
	if (first_task)
		*first_task = ap_stress_latency_of(ft.v, ft.n);
	if (failover)
		*failover = ap_stress_latency_of(fo.v, fo.n);
	free(ft.v);
	free(fo.v);
	ledger_entry *e, *tmp;
	HASH_ITER(hh, f->ledger, e, tmp) {
		HASH_DEL(f->ledger, e);
		free(e);
	}
	pthread_mutex_destroy(&f->ledger_lock);
	free(f->shards);
	free(f->ops);
	free(f);
}
