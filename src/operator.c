/* The operator client: see include/ap/operator.h for what it does and its
 * threads.
 *
 * State and locks:
 *  - stream_lock guards `stream`, the SyncMessages call the conn thread is
 *    reading, and nothing else. Its only job is to keep ap_stream_cancel
 *    (from the stop token's callback) and ap_stream_close (conn thread)
 *    apart, as the client library asks; ap_stream_cancel, which only asks
 *    gRPC to cancel the call and never blocks or calls back, is the one
 *    call made while holding it.
 *  - lock guards the subscription table `subs`, the fired-firings memory
 *    `done`, `sub_seq` and `retries`; `changed` (CLOCK_MONOTONIC) wakes the
 *    scheduler when the table changes or the operator stops. No call out
 *    (gRPC, logging) is made while holding it: what to log is collected
 *    under the lock and written after.
 *  The two locks are never held together.
 *
 * Firing rules (the why of the fields of `sub`):
 *  - A subscription has at most one firing in progress: cursor_ms, the
 *    scheduled time of its next firing. A notification that fails in
 *    transit (UNAVAILABLE, a deadline, ...) is retried for the same
 *    cursor with a growing delay while it is less than AP_OPERATOR_LATE_MS
 *    late; the trigger_request_id stays the same, so the aggregator counts
 *    it once however many tries reach it.
 *  - `done` remembers, per task id and across reconnects, the latest
 *    firing the aggregator answered. A subscription that comes back after a
 *    reconnect (the table starts empty on every stream) resumes after it,
 *    so an epoch is not fired twice even when the aggregator restarted and
 *    lost its deduplication memory. Entries older than the late window no
 *    longer change anything and are pruned; DeleteTask forgets one.
 *  - A replaced or removed subscription (new `seq`) ignores the answer of
 *    a notification started for its predecessor, except for `done`. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "ap/auth.h"
#include "ap/client.h"
#include "ap/clock.h"
#include "ap/cron.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/operator.h"
#include "ap/token.h"
#include "config.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

#define NS_PER_MS INT64_C(1000000)
#define ADDRESS_BUF 43 /* "0x" + 40 hex digits + NUL */
/* HTTP/2 keepalive of the channel: notices an aggregator that vanished
 * without closing the connection (the server permits pings every 1 s). */
#define KEEPALIVE_TIME_MS 10000
#define KEEPALIVE_TIMEOUT_MS 5000
/* How often the conn thread looks up from a quiet stream: often until the
 * server's initial metadata says the stream is open (the stream itself is
 * cancelled by the stop token, not found by polling), and the longest
 * scheduler sleep (so a wall-clock jump is noticed). */
#define OPEN_POLL_MS 50
#define STREAM_POLL_MS 1000
#define SCHED_MAX_SLEEP_MS 1000
#define RETRY_MAX_MS 30000
#define PRUNE_EVERY_MS 60000

static void fmt(char *buf, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t len, const char *f, ...)
{
	if (!buf || !len)
		return;
	va_list ap;
	va_start(ap, f);
	vsnprintf(buf, len, f, ap);
	va_end(ap);
}

/* ---- backoff ------------------------------------------------------------- */

void ap_backoff_init(ap_backoff *b, int64_t initial_ms, double factor, int64_t max_ms,
		     double jitter, int64_t reset_after_ms)
{
	b->initial_ms = initial_ms < 1 ? 1 : initial_ms;
	b->factor = factor < 1.0 ? 1.0 : factor;
	b->max_ms = max_ms < b->initial_ms ? b->initial_ms : max_ms;
	b->jitter = jitter < 0.0 ? 0.0 : jitter > 1.0 ? 1.0 : jitter;
	b->reset_after_ms = reset_after_ms < 0 ? 0 : reset_after_ms;
	ap_backoff_reset(b);
}

void ap_backoff_reset(ap_backoff *b)
{
	b->base_ms = (double)b->initial_ms;
	b->attempts = 0;
}

int64_t ap_backoff_next(ap_backoff *b, double u)
{
	if (!(u >= 0.0))
		u = 0.0;
	if (u >= 1.0)
		u = 1.0;
	double base = b->base_ms < (double)b->max_ms ? b->base_ms : (double)b->max_ms;
	double wait = base * (1.0 + b->jitter * (2.0 * u - 1.0));
	int64_t ms = (int64_t)(wait + 0.5);
	if (ms < 1)
		ms = 1;
	b->base_ms = base * b->factor;
	if (b->base_ms > (double)b->max_ms)
		b->base_ms = (double)b->max_ms;
	b->attempts++;
	return ms;
}

bool ap_backoff_connected(ap_backoff *b, int64_t up_ms)
{
	if (up_ms < b->reset_after_ms)
		return false;
	ap_backoff_reset(b);
	return true;
}

/* ---- trigger schedule -------------------------------------------------- */

struct ap_time_plan {
	int type;  /* Aggregator__TriggerType */
	int kind;  /* Aggregator__TaskTrigger__TriggerTypeCase: what fires */
	int64_t start_at, expired_at;
	int64_t *epochs; /* fixed time: sorted, without duplicates */
	size_t n_epochs;
	ap_cron *crons;  /* cron: the schedules that parsed */
	char **schedules;
	size_t n_crons;
};

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int type_of_kind(int kind)
{
	switch (kind) {
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL:
		return AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL;
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME:
		return AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_FIXED_TIME;
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON:
		return AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON;
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK:
		return AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_EVENT:
		return AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT;
	default:
		return AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_UNSPECIFIED;
	}
}

void ap_time_plan_free(ap_time_plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_crons; i++)
		free(p->schedules[i]);
	free(p->schedules);
	free(p->crons);
	free(p->epochs);
	free(p);
}

int ap_time_plan_new(const Aggregator__TaskTrigger *trigger, int64_t start_at,
		     int64_t expired_at, ap_time_plan **out, char *warning, size_t warnlen)
{
	fmt(warning, warnlen, "%s", "");
	*out = NULL;
	ap_time_plan *p = calloc(1, sizeof *p);
	if (!p)
		return AP_ENOMEM;
	p->start_at = start_at;
	p->expired_at = expired_at;
	if (trigger) {
		p->kind = (int)trigger->trigger_type_case;
		p->type = p->kind ? type_of_kind(p->kind) : (int)trigger->type;
	}
	if (p->kind == AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME &&
	    trigger->fixed_time && trigger->fixed_time->config &&
	    trigger->fixed_time->config->n_epochs) {
		const Aggregator__FixedTimeTrigger__Config *c = trigger->fixed_time->config;
		p->epochs = malloc(c->n_epochs * sizeof *p->epochs);
		if (!p->epochs)
			goto nomem;
		memcpy(p->epochs, c->epochs, c->n_epochs * sizeof *p->epochs);
		qsort(p->epochs, c->n_epochs, sizeof *p->epochs, cmp_i64);
		for (size_t i = 0; i < c->n_epochs; i++)
			if (p->n_epochs == 0 || p->epochs[p->n_epochs - 1] != p->epochs[i])
				p->epochs[p->n_epochs++] = p->epochs[i];
	}
	if (p->kind == AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON && trigger->cron &&
	    trigger->cron->config && trigger->cron->config->n_schedules) {
		const Aggregator__CronTrigger__Config *c = trigger->cron->config;
		p->crons = calloc(c->n_schedules, sizeof *p->crons);
		p->schedules = calloc(c->n_schedules, sizeof *p->schedules);
		if (!p->crons || !p->schedules)
			goto nomem;
		for (size_t i = 0; i < c->n_schedules; i++) {
			char why[160];
			if (ap_cron_parse(c->schedules[i], &p->crons[p->n_crons], why, sizeof why)) {
				if (warning && !warning[0])
					fmt(warning, warnlen, "schedule \"%.100s\": %s", c->schedules[i],
					    why);
				continue;
			}
			if (!(p->schedules[p->n_crons] = strdup(c->schedules[i])))
				goto nomem;
			p->n_crons++;
		}
	}
	*out = p;
	return 0;
nomem:
	ap_time_plan_free(p);
	return AP_ENOMEM;
}

int ap_time_plan_type(const ap_time_plan *p)
{
	return p->type;
}

bool ap_time_plan_fires(const ap_time_plan *p)
{
	return p->n_epochs > 0 || p->n_crons > 0;
}

int64_t ap_time_plan_next(const ap_time_plan *p, int64_t after_ms, const char **schedule)
{
	int64_t lo = after_ms, best = -1;
	const char *which = NULL;
	if (schedule)
		*schedule = NULL;
	if (p->start_at > 0 && lo < p->start_at - 1)
		lo = p->start_at - 1;
	if (p->n_epochs) {
		/* First epoch > lo: binary search over the sorted epochs. */
		size_t a = 0, b = p->n_epochs;
		while (a < b) {
			size_t m = a + (b - a) / 2;
			if (p->epochs[m] <= lo)
				a = m + 1;
			else
				b = m;
		}
		if (a < p->n_epochs)
			best = p->epochs[a];
	}
	for (size_t i = 0; i < p->n_crons; i++) {
		int64_t t = ap_cron_next(&p->crons[i], lo < -1 ? -1 : lo);
		if (t >= 0 && (best < 0 || t < best)) {
			best = t;
			which = p->schedules[i];
		}
	}
	if (best >= 0 && p->expired_at > 0 && best >= p->expired_at)
		return -1;
	if (schedule && best >= 0)
		*schedule = which;
	return best;
}

int ap_operator_request_id(const char *task_id, int64_t scheduled_ms, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s:%" PRId64, task_id, scheduled_ms);
	return n < 0 || (size_t)n >= outlen ? AP_ELIMIT : 0;
}

/* ---- the running client ---------------------------------------------------- */

typedef struct sub {
	char *task_id;
	uint64_t seq;           /* unique per subscription ever made */
	ap_time_plan *plan;
	int64_t chain_id;
	int64_t cursor_ms;      /* next firing; -1 none */
	const char *cursor_schedule; /* cron: the schedule of cursor_ms (plan's) */
	int attempts;           /* failed notifications of cursor_ms */
	int64_t retry_at_ms;    /* when attempts > 0 */
	bool in_flight;         /* the scheduler is notifying cursor_ms */
	UT_hash_handle hh;
} sub;

typedef struct done_mark {
	char *task_id;
	int64_t upto_ms; /* latest firing answered by the aggregator */
	UT_hash_handle hh;
} done_mark;

struct ap_operator {
	/* Read-only after open. */
	char *target;
	char address[ADDRESS_BUF];
	bool has_key;
	uint8_t key[32];
	bool tls;
	bool event_monitoring, block_monitoring, time_monitoring;
	int64_t *chain_ids;
	size_t n_chain_ids;
	int64_t ping_interval_ms;
	int64_t started_mono_ms;
	ap_client *client;
	ap_token *stop;

	/* conn thread only. */
	ap_backoff backoff;
	uint64_t rng;

	pthread_mutex_t stream_lock; /* see the top comment */
	ap_stream *stream;

	pthread_mutex_t lock;        /* see the top comment */
	pthread_cond_t changed;
	sub *subs;
	done_mark *done;
	uint64_t sub_seq;
	size_t retries;              /* subscriptions waiting to retry */

	atomic_bool connected;       /* a stream is open */
	atomic_bool stopping;
	pthread_t conn_th, ping_th, sched_th;
	bool conn_started, ping_started, sched_started;
};

static const char *type_name(int type)
{
	switch (type) {
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL:
		return "manual";
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_FIXED_TIME:
		return "fixed_time";
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON:
		return "cron";
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK:
		return "block";
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT:
		return "event";
	default:
		return "unspecified";
	}
}

static const char *op_name(int op)
{
	switch (op) {
	case AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger:
		return "MonitorTaskTrigger";
	case AGGREGATOR__MESSAGE_OP__DisableTask:
		return "DisableTask";
	case AGGREGATOR__MESSAGE_OP__DeleteTask:
		return "DeleteTask";
	case AGGREGATOR__MESSAGE_OP__CompletedTask:
		return "CompletedTask";
	case AGGREGATOR__MESSAGE_OP__ImmediateTrigger:
		return "ImmediateTrigger";
	default:
		return "Unset";
	}
}

/* xorshift64*: jitter needs no more than this. conn thread only. */
static double rand_unit(ap_operator *op)
{
	uint64_t x = op->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	op->rng = x;
	return (double)((x * UINT64_C(2685821657736338717)) >> 11) * 0x1.0p-53;
}

/* The authorization metadata of one call, signed now (a fresh epoch per
 * call). Without a key, no metadata. */
static void sign_call(ap_operator *op, char token[160], ap_rpc_metadata *md, ap_call_options *co)
{
	if (!op->has_key)
		return;
	if (ap_auth_sign(op->key, op->address, ap_clock_wall_ms() / 1000, token, 160) != 0)
		return; /* cannot happen with a checked key and address */
	md->key = "authorization";
	md->value = token;
	co->metadata = md;
	co->n_metadata = 1;
}

static void sub_free(sub *s)
{
	if (!s)
		return;
	ap_time_plan_free(s->plan);
	free(s->task_id);
	free(s);
}

static void sub_remove_locked(ap_operator *op, sub *s)
{
	if (s->attempts > 0 && op->retries)
		op->retries--;
	HASH_DEL(op->subs, s);
	sub_free(s);
}

static void clear_subs_locked(ap_operator *op)
{
	sub *s, *tmp;
	HASH_ITER(hh, op->subs, s, tmp)
		sub_remove_locked(op, s);
	op->retries = 0;
}

static void forget_done_locked(ap_operator *op, const char *task_id)
{
	done_mark *d;
	HASH_FIND_STR(op->done, task_id, d);
	if (d) {
		HASH_DEL(op->done, d);
		free(d->task_id);
		free(d);
	}
}

static void mark_done_locked(ap_operator *op, const char *task_id, int64_t at_ms)
{
	done_mark *d;
	HASH_FIND_STR(op->done, task_id, d);
	if (!d) {
		d = calloc(1, sizeof *d);
		if (!d || !(d->task_id = strdup(task_id))) {
			free(d);
			return; /* only costs a possible repeat, which is deduplicated */
		}
		d->upto_ms = at_ms;
		HASH_ADD_KEYPTR(hh, op->done, d->task_id, strlen(d->task_id), d);
	} else if (at_ms > d->upto_ms) {
		d->upto_ms = at_ms;
	}
}

static void prune_done_locked(ap_operator *op, int64_t now)
{
	done_mark *d, *tmp;
	HASH_ITER(hh, op->done, d, tmp) {
		if (d->upto_ms < now - AP_OPERATOR_LATE_MS - PRUNE_EVERY_MS) {
			HASH_DEL(op->done, d);
			free(d->task_id);
			free(d);
		}
	}
}

/* Move s to its first firing after after_ms that is still worth firing:
 * a fixed-time epoch up to AP_OPERATOR_LATE_MS late, a cron minute from
 * now on. */
static void sub_advance_locked(ap_operator *op, sub *s, int64_t after_ms, int64_t now)
{
	int64_t floor_ms = s->plan->kind == AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME
				   ? now - AP_OPERATOR_LATE_MS - 1
				   : now - 1;
	if (after_ms < floor_ms)
		after_ms = floor_ms;
	if (s->attempts > 0 && op->retries)
		op->retries--;
	s->attempts = 0;
	s->retry_at_ms = 0;
	s->cursor_ms = ap_time_plan_next(s->plan, after_ms, &s->cursor_schedule);
}

/* ---- the stream -------------------------------------------------------------- */

static void handle_monitor(ap_operator *op, const char *task_id,
			   const Aggregator__SyncMessagesResp__TaskMetadata *md)
{
	char warning[256];
	ap_time_plan *plan = NULL;
	int rc = ap_time_plan_new(md->trigger, md->start_at, md->expired_at, &plan, warning,
				  sizeof warning);
	sub *s = rc ? NULL : calloc(1, sizeof *s);
	if (!s || !(s->task_id = strdup(task_id))) {
		AP_ERROR("❌ Out of memory: subscription not created", AP_F_STR("task_id", task_id));
		free(s);
		ap_time_plan_free(plan);
		return;
	}
	s->plan = plan;
	s->chain_id = md->chain_id;
	int64_t now = ap_clock_wall_ms();

	pthread_mutex_lock(&op->lock);
	sub *old;
	HASH_FIND_STR(op->subs, task_id, old);
	bool replaced = old != NULL;
	if (old)
		sub_remove_locked(op, old);
	s->seq = ++op->sub_seq;
	done_mark *d;
	HASH_FIND_STR(op->done, task_id, d);
	sub_advance_locked(op, s, d ? d->upto_ms : -1, now);
	int64_t next = s->cursor_ms;
	HASH_ADD_KEYPTR(hh, op->subs, s->task_id, strlen(s->task_id), s);
	size_t total = HASH_COUNT(op->subs);
	pthread_cond_broadcast(&op->changed);
	pthread_mutex_unlock(&op->lock);

	int type = ap_time_plan_type(plan);
	bool fires = ap_time_plan_fires(plan);
	const char *watch = fires ? (next >= 0 ? "scheduled" : "no future firing")
			    : type == AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK ||
					      type == AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT
				    ? "not watched: block and event triggers need a chain connection"
				    : "not watched: nothing to fire";
	AP_INFO("✅ Created new subscription during update", AP_F_STR("task_id", task_id),
		AP_F_STR("trigger_type", type_name(type)), AP_F_BOOL("replaced", replaced),
		AP_F_INT("next_trigger_ms", next), AP_F_STR("watch", watch),
		AP_F_UINT("subscriptions", total));
	if (warning[0])
		AP_WARN("⚠️ Cron schedule ignored", AP_F_STR("task_id", task_id),
			AP_F_STR("error", warning));
}

static void handle_removal(ap_operator *op, const char *task_id, int opcode)
{
	pthread_mutex_lock(&op->lock);
	sub *s;
	HASH_FIND_STR(op->subs, task_id, s);
	bool found = s != NULL;
	if (s)
		sub_remove_locked(op, s);
	if (opcode == AGGREGATOR__MESSAGE_OP__DeleteTask)
		forget_done_locked(op, task_id);
	size_t total = HASH_COUNT(op->subs);
	pthread_cond_broadcast(&op->changed);
	pthread_mutex_unlock(&op->lock);
	AP_INFO("removing task from all triggers", AP_F_STR("task_id", task_id),
		AP_F_STR("op", op_name(opcode)), AP_F_BOOL("found", found),
		AP_F_UINT("subscriptions", total));
}

static void handle_message(ap_operator *op, const Aggregator__SyncMessagesResp *m)
{
	const Aggregator__SyncMessagesResp__TaskMetadata *md = m->task_metadata;
	const char *task_id = md && md->task_id && md->task_id[0] ? md->task_id : m->id;
	if (!task_id || !task_id[0]) {
		AP_WARN("⚠️ Message without a task id ignored", AP_F_STR("op", op_name(m->op)));
		return;
	}
	switch (m->op) {
	case AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger:
		if (!md) {
			AP_WARN("⚠️ MonitorTaskTrigger without task metadata ignored",
				AP_F_STR("task_id", task_id));
			return;
		}
		handle_monitor(op, task_id, md);
		return;
	case AGGREGATOR__MESSAGE_OP__DisableTask:
	case AGGREGATOR__MESSAGE_OP__DeleteTask:
	case AGGREGATOR__MESSAGE_OP__CompletedTask:
		handle_removal(op, task_id, m->op);
		return;
	default:
		/* ImmediateTrigger and anything newer: the aggregator of SPEC
		 * section 3 sends neither. */
		AP_WARN("⚠️ Unsupported message op ignored", AP_F_STR("task_id", task_id),
			AP_F_STR("op", op_name(m->op)), AP_F_INT("op_value", m->op));
		return;
	}
}

static void publish_stream(ap_operator *op, ap_stream *s)
{
	pthread_mutex_lock(&op->stream_lock);
	op->stream = s;
	/* A stop that came before the stream was published found nothing to
	 * cancel: cancel it here. */
	if (s && ap_token_is_cancelled(op->stop))
		ap_stream_cancel(s);
	pthread_mutex_unlock(&op->stream_lock);
}

/* HealthCheck once. True when the aggregator answers "OK"; else why not in
 * reason. */
static bool health_check(ap_operator *op, char *reason, size_t rlen)
{
	Aggregator__HealthCheckRequest req = AGGREGATOR__HEALTH_CHECK_REQUEST__INIT;
	Aggregator__HealthCheckResponse *resp = NULL;
	ap_call_options co = { .timeout_ms = AP_OPERATOR_CALL_TIMEOUT_MS };
	ap_rpc_status st = { 0 };
	req.operator_address = op->address;
	int rc = ap_client_health_check(op->client, &req, &resp, &co, &st);
	bool ok = false;
	if (rc)
		fmt(reason, rlen, "health check not sent: %s", ap_strerror(rc));
	else if (st.code != AP_RPC_OK)
		fmt(reason, rlen, "health check: %s %s", ap_rpc_code_name(st.code), st.details);
	else if (strcmp(resp->status, "OK") != 0)
		fmt(reason, rlen, "health check: aggregator is %s (%s)", resp->status, resp->message);
	else
		ok = true;
	ap_client_free(resp);
	if (!ok && !ap_token_is_cancelled(op->stop))
		AP_WARN("⚠️ Aggregator health check failed", AP_F_STR("aggregator", op->target),
			AP_F_STR("reason", reason));
	return ok;
}

/* One SyncMessages stream, from open to end. Returns how long it was open
 * (ms), or -1 when it never opened; reason says how it ended. */
static int64_t run_stream(ap_operator *op, char *reason, size_t rlen)
{
	Aggregator__SyncMessagesReq req = AGGREGATOR__SYNC_MESSAGES_REQ__INIT;
	Aggregator__SyncMessagesReq__Capabilities caps =
		AGGREGATOR__SYNC_MESSAGES_REQ__CAPABILITIES__INIT;
	caps.event_monitoring = op->event_monitoring;
	caps.block_monitoring = op->block_monitoring;
	caps.time_monitoring = op->time_monitoring;
	req.id = op->address;
	req.address = op->address;
	req.monotonic_clock = ap_clock_wall_ns();
	req.capabilities = &caps;
	req.n_supported_chain_ids = op->n_chain_ids;
	req.supported_chain_ids = op->chain_ids;
	char token[160];
	ap_rpc_metadata md;
	ap_call_options co = { 0 };
	sign_call(op, token, &md, &co);

	ap_stream *s = NULL;
	int rc = ap_stream_open(op->client, &req, &co, 0, &s);
	if (rc) {
		fmt(reason, rlen, "stream not opened: %s", ap_strerror(rc));
		AP_WARN("📡 Stream closed by aggregator - will reconnect", AP_F_STR("reason", reason));
		return -1;
	}
	publish_stream(op, s);

	/* A new stream: the aggregator sends every task this session owns. */
	pthread_mutex_lock(&op->lock);
	size_t dropped = HASH_COUNT(op->subs);
	clear_subs_locked(op);
	pthread_cond_broadcast(&op->changed);
	pthread_mutex_unlock(&op->lock);
	AP_DEBUG("SyncMessages sent, subscription table reset", AP_F_INT("monotonic_clock",
		 req.monotonic_clock), AP_F_UINT("dropped_subscriptions", dropped));

	bool opened = false;
	int64_t opened_ms = 0;
	ap_rpc_status st = { 0 };
	for (;;) {
		Aggregator__SyncMessagesResp *msg = NULL;
		rc = ap_stream_next(s, opened ? STREAM_POLL_MS : OPEN_POLL_MS, &msg, &st);
		if (!opened && ap_stream_opened(s)) {
			opened = true;
			opened_ms = ap_clock_mono_ms();
			atomic_store(&op->connected, true);
			AP_INFO("🔗 Connected to aggregator, stream open",
				AP_F_STR("aggregator", op->target), AP_F_STR("operator", op->address),
				AP_F_INT("monotonic_clock", req.monotonic_clock));
		}
		if (rc == AP_ETIMEDOUT)
			continue;
		if (rc == AP_STREAM_MESSAGE) {
			handle_message(op, msg);
			ap_client_free(msg);
			continue;
		}
		if (rc != AP_STREAM_END) {
			st.code = AP_RPC_INTERNAL;
			fmt(st.details, sizeof st.details, "stream: %s", ap_strerror(rc));
		}
		break;
	}
	publish_stream(op, NULL);
	ap_stream_close(s);
	atomic_store(&op->connected, false);
	int64_t up = opened ? ap_clock_mono_ms() - opened_ms : -1;
	fmt(reason, rlen, "stream closed: %s %s", ap_rpc_code_name(st.code), st.details);
	if (ap_token_is_cancelled(op->stop))
		AP_INFO("🛑 Stream closed: operator stopping", AP_F_INT("connected_ms", up));
	else
		AP_WARN("📡 Stream closed by aggregator - will reconnect",
			AP_F_STR("code", ap_rpc_code_name(st.code)), AP_F_STR("details", st.details),
			AP_F_INT("connected_ms", up));
	return up;
}

static void *conn_main(void *arg)
{
	ap_operator *op = arg;
	pthread_setname_np(pthread_self(), "ap-op-conn");
	char reason[AP_RPC_DETAILS_MAX + 96];
	while (!ap_token_is_cancelled(op->stop)) {
		int64_t up = -1;
		if (health_check(op, reason, sizeof reason))
			up = run_stream(op, reason, sizeof reason);
		if (ap_token_is_cancelled(op->stop))
			break;
		bool reset = up >= 0 && ap_backoff_connected(&op->backoff, up);
		unsigned attempt = op->backoff.attempts + 1;
		int64_t delay = ap_backoff_next(&op->backoff, rand_unit(op));
		AP_INFO("⏳ Reconnecting to aggregator after backoff", AP_F_STR("reason", reason),
			AP_F_INT("delay_ms", delay), AP_F_UINT("attempt", attempt),
			AP_F_BOOL("backoff_reset", reset));
		ap_token_wait(op->stop, ap_clock_mono_ns() + delay * NS_PER_MS);
	}
	return NULL;
}

/* ---- ping --------------------------------------------------------------- */

static void *ping_main(void *arg)
{
	ap_operator *op = arg;
	pthread_setname_np(pthread_self(), "ap-op-ping");
	int64_t next = ap_clock_mono_ms() + op->ping_interval_ms;
	while (ap_token_wait(op->stop, next * NS_PER_MS) != AP_ECANCELLED) {
		int64_t now = ap_clock_mono_ms();
		next += op->ping_interval_ms;
		if (next <= now)
			next = now + op->ping_interval_ms;
		if (!atomic_load(&op->connected))
			continue;
		pthread_mutex_lock(&op->lock);
		int64_t queue = (int64_t)op->retries;
		pthread_mutex_unlock(&op->lock);

		int64_t wall = ap_clock_wall_ms();
		Google__Protobuf__Timestamp hb = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
		hb.seconds = wall / 1000;
		hb.nanos = (int32_t)(wall % 1000) * 1000000;
		Aggregator__Checkin__Status status = AGGREGATOR__CHECKIN__STATUS__INIT;
		status.uptime = (now - op->started_mono_ms) / 1000;
		status.queuedepth = queue;
		status.last_heartbeat = &hb;
		Aggregator__Checkin c = AGGREGATOR__CHECKIN__INIT;
		c.id = op->address;
		c.address = op->address;
		c.version = (char *)PACKAGE_VERSION;
		c.status = &status;
		c.n_supported_chain_ids = op->n_chain_ids;
		c.supported_chain_ids = op->chain_ids;
		char token[160];
		ap_rpc_metadata md;
		ap_call_options co = { .timeout_ms = AP_OPERATOR_CALL_TIMEOUT_MS };
		sign_call(op, token, &md, &co);
		Aggregator__CheckinResp *resp = NULL;
		ap_rpc_status st = { 0 };
		int rc = ap_client_ping(op->client, &c, &resp, &co, &st);
		if (rc)
			AP_WARN("⚠️ Ping not sent", AP_F_STR("error", ap_strerror(rc)));
		else if (st.code != AP_RPC_OK)
			AP_WARN("⚠️ Ping failed", AP_F_STR("code", ap_rpc_code_name(st.code)),
				AP_F_STR("details", st.details));
		else
			AP_DEBUG("Ping", AP_F_INT("uptime_s", status.uptime));
		ap_client_free(resp);
	}
	return NULL;
}

/* ---- the scheduler -------------------------------------------------------- */

/* One firing, copied out of its subscription so the call runs unlocked. */
typedef struct firing {
	char *task_id;
	uint64_t seq;
	int64_t scheduled_ms;
	char *schedule; /* cron, or NULL */
	int type;
	int kind;
	int64_t chain_id;
	int attempt;    /* 1 for the first try */
} firing;

static bool transient(int code)
{
	switch (code) {
	case AP_RPC_CANCELLED:
	case AP_RPC_UNKNOWN:
	case AP_RPC_DEADLINE_EXCEEDED:
	case AP_RPC_RESOURCE_EXHAUSTED:
	case AP_RPC_ABORTED:
	case AP_RPC_INTERNAL:
	case AP_RPC_UNAVAILABLE:
		return true;
	default:
		return false;
	}
}

static void iso_time(int64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (ms < 0 || !gmtime_r(&t, &tm)) {
		snprintf(out, 32, "%s", "");
		return;
	}
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

/* NotifyTriggers for f. The output's data is a Struct:
 * {"timestamp": scheduled ms, "timestamp_iso": "...Z"[, "schedule": cron]}. */
static int notify(ap_operator *op, const firing *f, const char *request_id,
		  Aggregator__NotifyTriggersResp **resp, ap_rpc_status *st)
{
	char iso[32];
	iso_time(f->scheduled_ms, iso);
	Google__Protobuf__Value v_ts = GOOGLE__PROTOBUF__VALUE__INIT;
	v_ts.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
	v_ts.number_value = (double)f->scheduled_ms;
	Google__Protobuf__Value v_iso = GOOGLE__PROTOBUF__VALUE__INIT;
	v_iso.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v_iso.string_value = iso;
	Google__Protobuf__Value v_sched = GOOGLE__PROTOBUF__VALUE__INIT;
	v_sched.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v_sched.string_value = f->schedule ? f->schedule : (char *)"";
	Google__Protobuf__Struct__FieldsEntry e_ts = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
					      e_iso = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
					      e_sched = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	e_ts.key = "timestamp";
	e_ts.value = &v_ts;
	e_iso.key = "timestamp_iso";
	e_iso.value = &v_iso;
	e_sched.key = "schedule";
	e_sched.value = &v_sched;
	Google__Protobuf__Struct__FieldsEntry *entries[] = { &e_ts, &e_iso, &e_sched };
	Google__Protobuf__Struct data_struct = GOOGLE__PROTOBUF__STRUCT__INIT;
	data_struct.fields = entries;
	data_struct.n_fields = f->schedule ? 3 : 2;
	Google__Protobuf__Value data = GOOGLE__PROTOBUF__VALUE__INIT;
	data.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
	data.struct_value = &data_struct;

	Aggregator__FixedTimeTrigger__Output fixed = AGGREGATOR__FIXED_TIME_TRIGGER__OUTPUT__INIT;
	Aggregator__CronTrigger__Output cron = AGGREGATOR__CRON_TRIGGER__OUTPUT__INIT;
	Aggregator__NotifyTriggersReq req = AGGREGATOR__NOTIFY_TRIGGERS_REQ__INIT;
	req.address = op->address;
	req.task_id = f->task_id;
	req.trigger_type = (Aggregator__TriggerType)f->type;
	req.trigger_request_id = (char *)request_id;
	req.chain_id = f->chain_id;
	if (f->kind == AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON) {
		cron.data = &data;
		req.trigger_output_case = AGGREGATOR__NOTIFY_TRIGGERS_REQ__TRIGGER_OUTPUT_CRON_TRIGGER;
		req.cron_trigger = &cron;
	} else {
		fixed.data = &data;
		req.trigger_output_case =
			AGGREGATOR__NOTIFY_TRIGGERS_REQ__TRIGGER_OUTPUT_FIXED_TIME_TRIGGER;
		req.fixed_time_trigger = &fixed;
	}
	char token[160];
	ap_rpc_metadata md;
	ap_call_options co = { .timeout_ms = AP_OPERATOR_CALL_TIMEOUT_MS };
	sign_call(op, token, &md, &co);
	return ap_client_notify_triggers(op->client, &req, resp, &co, st);
}

/* What became of one notification, for the log line written unlocked. */
typedef enum { OUT_ANSWERED, OUT_RETRY, OUT_GAVE_UP, OUT_REFUSED } outcome_kind;

static void fire(ap_operator *op, firing *f)
{
	char request_id[160];
	if (ap_operator_request_id(f->task_id, f->scheduled_ms, request_id, sizeof request_id))
		snprintf(request_id, sizeof request_id, "%.100s:%" PRId64, f->task_id,
			 f->scheduled_ms);
	Aggregator__NotifyTriggersResp *resp = NULL;
	ap_rpc_status st = { 0 };
	int rc = notify(op, f, request_id, &resp, &st);
	if (rc) {
		st.code = AP_RPC_UNAVAILABLE;
		fmt(st.details, sizeof st.details, "not sent: %s", ap_strerror(rc));
	} else if (st.code == AP_RPC_OK && !resp) {
		st.code = AP_RPC_INTERNAL;
		fmt(st.details, sizeof st.details, "%s", "empty NotifyTriggers answer");
	}
	int64_t now = ap_clock_wall_ms();
	outcome_kind out;
	int64_t retry_in = 0;
	bool removed = false;

	pthread_mutex_lock(&op->lock);
	sub *s;
	HASH_FIND_STR(op->subs, f->task_id, s);
	if (s && s->seq != f->seq)
		s = NULL; /* replaced: the new subscription has its own cursor */
	if (s)
		s->in_flight = false;
	if (st.code == AP_RPC_OK) {
		out = OUT_ANSWERED;
		mark_done_locked(op, f->task_id, f->scheduled_ms);
		if (s && !resp->task_still_enabled) {
			sub_remove_locked(op, s);
			removed = true;
		} else if (s) {
			sub_advance_locked(op, s, f->scheduled_ms, now);
		}
	} else if (transient(st.code) && now - f->scheduled_ms < AP_OPERATOR_LATE_MS) {
		out = OUT_RETRY;
		retry_in = (int64_t)1000 << (f->attempt - 1 < 5 ? f->attempt - 1 : 5);
		if (retry_in > RETRY_MAX_MS)
			retry_in = RETRY_MAX_MS;
		if (s) {
			if (s->attempts == 0)
				op->retries++;
			s->attempts = f->attempt;
			s->retry_at_ms = now + retry_in;
		}
	} else {
		out = transient(st.code) ? OUT_GAVE_UP : OUT_REFUSED;
		mark_done_locked(op, f->task_id, f->scheduled_ms);
		if (s)
			sub_advance_locked(op, s, f->scheduled_ms, now);
	}
	size_t total = HASH_COUNT(op->subs);
	pthread_mutex_unlock(&op->lock);

	int64_t late = now - f->scheduled_ms;
	switch (out) {
	case OUT_ANSWERED:
		AP_INFO("🔔 Trigger notified", AP_F_STR("task_id", f->task_id),
			AP_F_STR("trigger_type", type_name(f->type)),
			AP_F_STR("trigger_request_id", request_id), AP_F_STR("status", resp->status),
			AP_F_INT("remaining_executions", resp->remaining_executions),
			AP_F_BOOL("task_still_enabled", resp->task_still_enabled),
			AP_F_INT("late_ms", late));
		if (removed)
			AP_INFO("removing task from all triggers", AP_F_STR("task_id", f->task_id),
				AP_F_STR("op", "NotifyTriggers"), AP_F_STR("status", resp->status),
				AP_F_UINT("subscriptions", total));
		break;
	case OUT_RETRY:
		AP_WARN("⚠️ NotifyTriggers failed - will retry", AP_F_STR("task_id", f->task_id),
			AP_F_STR("trigger_request_id", request_id),
			AP_F_STR("code", ap_rpc_code_name(st.code)), AP_F_STR("details", st.details),
			AP_F_INT("attempt", f->attempt), AP_F_INT("retry_in_ms", retry_in));
		break;
	case OUT_GAVE_UP:
		AP_ERROR("❌ Trigger dropped: NotifyTriggers kept failing",
			 AP_F_STR("task_id", f->task_id), AP_F_STR("trigger_request_id", request_id),
			 AP_F_STR("code", ap_rpc_code_name(st.code)), AP_F_STR("details", st.details),
			 AP_F_INT("attempts", f->attempt), AP_F_INT("late_ms", late));
		break;
	case OUT_REFUSED:
		AP_WARN("⚠️ NotifyTriggers refused", AP_F_STR("task_id", f->task_id),
			AP_F_STR("trigger_request_id", request_id),
			AP_F_STR("code", ap_rpc_code_name(st.code)), AP_F_STR("details", st.details));
		break;
	}
	ap_client_free(resp);
}

static void *sched_main(void *arg)
{
	ap_operator *op = arg;
	pthread_setname_np(pthread_self(), "ap-op-sched");
	int64_t last_prune = ap_clock_mono_ms();
	pthread_mutex_lock(&op->lock);
	while (!ap_token_is_cancelled(op->stop)) {
		int64_t now = ap_clock_wall_ms();
		if (ap_clock_mono_ms() - last_prune >= PRUNE_EVERY_MS) {
			prune_done_locked(op, now);
			last_prune = ap_clock_mono_ms();
		}
		sub *next = NULL, *s, *tmp;
		int64_t due_min = 0;
		HASH_ITER(hh, op->subs, s, tmp) {
			int64_t due = s->attempts ? s->retry_at_ms : s->cursor_ms;
			if (s->in_flight || due < 0)
				continue;
			if (!next || due < due_min) {
				next = s;
				due_min = due;
			}
		}
		if (next && due_min <= now) {
			firing f = { 0 };
			f.task_id = strdup(next->task_id);
			f.schedule = next->cursor_schedule ? strdup(next->cursor_schedule) : NULL;
			if (!f.task_id || (next->cursor_schedule && !f.schedule)) {
				free(f.task_id);
				free(f.schedule);
				/* Try again shortly rather than spin. */
				struct timespec ts = ap_clock_deadline_ms(100);
				pthread_cond_timedwait(&op->changed, &op->lock, &ts);
				continue;
			}
			f.seq = next->seq;
			f.scheduled_ms = next->cursor_ms;
			f.type = ap_time_plan_type(next->plan);
			f.kind = next->plan->kind;
			f.chain_id = next->chain_id;
			f.attempt = next->attempts + 1;
			next->in_flight = true;
			pthread_mutex_unlock(&op->lock);
			fire(op, &f);
			free(f.task_id);
			free(f.schedule);
			pthread_mutex_lock(&op->lock);
			continue;
		}
		int64_t wait_ms = next ? due_min - now : SCHED_MAX_SLEEP_MS;
		if (wait_ms > SCHED_MAX_SLEEP_MS)
			wait_ms = SCHED_MAX_SLEEP_MS;
		struct timespec ts = ap_clock_deadline_ms(wait_ms);
		pthread_cond_timedwait(&op->changed, &op->lock, &ts);
	}
	pthread_mutex_unlock(&op->lock);
	return NULL;
}

/* ---- open, start, stop, close ------------------------------------------------ */

/* The stop token's callback (runs in the stopping thread): cancel the
 * stream and wake the scheduler. ap_token_wait wakes by itself. */
static void wake(void *arg)
{
	ap_operator *op = arg;
	pthread_mutex_lock(&op->stream_lock);
	if (op->stream)
		ap_stream_cancel(op->stream);
	pthread_mutex_unlock(&op->stream_lock);
	pthread_mutex_lock(&op->lock);
	pthread_cond_broadcast(&op->changed);
	pthread_mutex_unlock(&op->lock);
}

int ap_operator_open(ap_operator **out, const ap_operator_config *cfg,
		     const ap_operator_overrides *ov, char *err, size_t errlen)
{
	static const ap_operator_overrides none = { 0 };
	if (!ov)
		ov = &none;
	*out = NULL;
	ap_operator *op = calloc(1, sizeof *op);
	if (!op)
		return AP_ENOMEM;
	pthread_mutex_init(&op->stream_lock, NULL);
	pthread_mutex_init(&op->lock, NULL);
	ap_clock_cond_init(&op->changed);
	atomic_init(&op->connected, false);
	atomic_init(&op->stopping, false);
	op->started_mono_ms = ap_clock_mono_ms();
	int rc = AP_ECONFIG;

	const char *target = ov->aggregator ? ov->aggregator : cfg->aggregator;
	const char *address = ov->address ? ov->address : cfg->address;
	const char *key_file = ov->key_file ? ov->key_file : cfg->key_file;
	if (!target || !target[0]) {
		fmt(err, errlen, "%s", "aggregator address is empty");
		goto fail;
	}
	if (!address || !ap_config_is_address(address)) {
		fmt(err, errlen, "operator address '%.60s' is not 0x followed by 40 hex digits",
		    address ? address : "");
		goto fail;
	}
	for (size_t i = 0; i < ADDRESS_BUF - 1; i++)
		op->address[i] = (address[i] >= 'A' && address[i] <= 'Z') ? (char)(address[i] + 32)
									  : address[i];
	op->address[ADDRESS_BUF - 1] = '\0';
	if (key_file && key_file[0]) {
		char why[256] = "", key_address[ADDRESS_BUF];
		int krc = ap_auth_key_load(key_file, op->key, why, sizeof why);
		if (krc) {
			fmt(err, errlen, "key_file %.500s: %s", key_file, why[0] ? why : ap_strerror(krc));
			goto fail;
		}
		if (ap_auth_address(op->key, key_address) != 0) {
			fmt(err, errlen, "key_file %.500s does not hold a valid secp256k1 key", key_file);
			goto fail;
		}
		if (strcmp(key_address, op->address) != 0) {
			fmt(err, errlen,
			    "key_file %.500s is the key of %s, not of the configured address %s "
			    "(set address to the key's, or use the key `ap keygen` made for it)",
			    key_file, key_address, op->address);
			goto fail;
		}
		op->has_key = true;
	}
	op->event_monitoring = cfg->capabilities.event_monitoring;
	op->block_monitoring = cfg->capabilities.block_monitoring;
	op->time_monitoring = cfg->capabilities.time_monitoring;
	rc = AP_ENOMEM;
	if (cfg->n_chain_ids) {
		op->chain_ids = malloc(cfg->n_chain_ids * sizeof *op->chain_ids);
		if (!op->chain_ids)
			goto fail;
		memcpy(op->chain_ids, cfg->chain_ids, cfg->n_chain_ids * sizeof *op->chain_ids);
		op->n_chain_ids = cfg->n_chain_ids;
	}
	op->ping_interval_ms = cfg->ping_interval_ms > 0 ? cfg->ping_interval_ms : 5000;
	ap_backoff_init(&op->backoff, cfg->backoff.initial_ms, cfg->backoff.factor,
			cfg->backoff.max_ms, cfg->backoff.jitter, cfg->backoff.reset_after_ms);
	if (getrandom(&op->rng, sizeof op->rng, 0) != (ssize_t)sizeof op->rng || !op->rng)
		op->rng = (uint64_t)ap_clock_wall_ns() ^ ((uint64_t)getpid() << 32) ^ 1;
	if (!(op->target = strdup(target)) || !(op->stop = ap_token_new(0)) ||
	    ap_token_on_cancel(op->stop, wake, op) != 0)
		goto fail;

	/* The channel reconnects at least as eagerly as the backoff asks
	 * (never slower than once a second), so an attempt after the wait
	 * is a real attempt, not a fast failure of a channel still in gRPC's
	 * own backoff. */
	int64_t channel_backoff = op->backoff.initial_ms > 1000 ? op->backoff.initial_ms : 1000;
	ap_client_options co = {
		.keepalive_time_ms = KEEPALIVE_TIME_MS,
		.keepalive_timeout_ms = KEEPALIVE_TIMEOUT_MS,
		.reconnect_backoff_ms = channel_backoff,
		.max_reconnect_backoff_ms = channel_backoff,
		.tls_ca_file = cfg->tls.ca_file,
		.tls_cert_file = cfg->tls.cert_file,
		.tls_key_file = cfg->tls.key_file,
		.tls_server_name = cfg->tls.server_name,
	};
	char why[512] = "";
	rc = ap_client_open(op->target, &co, &op->client, why, sizeof why);
	if (rc == AP_EINVAL) {
		/* A TLS file that cannot be read, or a target gRPC refuses. */
		fmt(err, errlen, "cannot open the channel to %.200s: %s", op->target, why);
		rc = AP_ECONFIG;
		goto fail;
	}
	if (rc)
		goto fail;
	op->tls = cfg->tls.ca_file && cfg->tls.ca_file[0];
	if (!op->has_key)
		AP_WARN("⚠️ No key_file: sending no authorization, which only an aggregator with "
			"auth.mode \"none\" accepts", AP_F_STR("operator", op->address));
	*out = op;
	return 0;
fail:
	if (rc == AP_ENOMEM)
		fmt(err, errlen, "%s", "out of memory");
	ap_operator_close(op);
	return rc;
}

int ap_operator_start(ap_operator *op)
{
	AP_INFO("🚀 Operator starting", AP_F_STR("operator", op->address),
		AP_F_STR("aggregator", op->target), AP_F_STR("version", PACKAGE_VERSION),
		AP_F_STR("auth", op->has_key ? "signature" : "none"),
		AP_F_STR("transport", op->tls ? "tls" : "plaintext"),
		AP_F_BOOL("event_monitoring", op->event_monitoring),
		AP_F_BOOL("block_monitoring", op->block_monitoring),
		AP_F_BOOL("time_monitoring", op->time_monitoring),
		AP_F_UINT("chain_ids", op->n_chain_ids),
		AP_F_INT("ping_interval_ms", op->ping_interval_ms));
	if (pthread_create(&op->sched_th, NULL, sched_main, op) != 0)
		goto fail;
	op->sched_started = true;
	if (pthread_create(&op->ping_th, NULL, ping_main, op) != 0)
		goto fail;
	op->ping_started = true;
	if (pthread_create(&op->conn_th, NULL, conn_main, op) != 0)
		goto fail;
	op->conn_started = true;
	return 0;
fail:
	AP_ERROR("❌ Cannot start the operator's threads");
	ap_operator_stop(op);
	return AP_EIO;
}

void ap_operator_stop(ap_operator *op)
{
	if (!op || atomic_exchange(&op->stopping, true))
		return;
	if (op->stop)
		ap_token_cancel(op->stop, "operator stopping");
	if (op->conn_started)
		pthread_join(op->conn_th, NULL);
	if (op->ping_started)
		pthread_join(op->ping_th, NULL);
	if (op->sched_started)
		pthread_join(op->sched_th, NULL);
	op->conn_started = op->ping_started = op->sched_started = false;
}

void ap_operator_close(ap_operator *op)
{
	if (!op)
		return;
	ap_operator_stop(op);
	ap_client_close(op->client);
	clear_subs_locked(op);
	done_mark *d, *tmp;
	HASH_ITER(hh, op->done, d, tmp) {
		HASH_DEL(op->done, d);
		free(d->task_id);
		free(d);
	}
	ap_token_unref(op->stop);
	free(op->chain_ids);
	free(op->target);
	pthread_cond_destroy(&op->changed);
	pthread_mutex_destroy(&op->lock);
	pthread_mutex_destroy(&op->stream_lock);
	free(op);
}

size_t ap_operator_subscriptions(ap_operator *op)
{
	pthread_mutex_lock(&op->lock);
	size_t n = HASH_COUNT(op->subs);
	pthread_mutex_unlock(&op->lock);
	return n;
}
