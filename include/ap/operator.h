/* The operator client behind `ap operator` (SPEC sections 2, 3, 5, 6 and 7;
 * issue 5 point 1).
 *
 * An ap_operator keeps one SyncMessages stream open to an aggregator and a
 * local table of "subscriptions" (task id -> what the stream said about the
 * task): MonitorTaskTrigger adds or replaces one ("✅ Created new
 * subscription during update"); DisableTask, DeleteTask and CompletedTask
 * remove it ("removing task from all triggers"). Every new stream starts
 * from an empty table, because the aggregator re-sends every task a
 * session owns (SPEC section 3).
 *
 * What it watches: fixed-time and cron triggers fire on this machine's
 * clock and are reported with NotifyTriggers. Block and event triggers
 * would need a chain connection, which this client does not have: their
 * subscriptions are kept and logged, and never fire. Manual triggers are
 * never streamed by the aggregator.
 *
 * Threads (all started by ap_operator_start, joined by ap_operator_stop):
 *  - "ap-op-conn": HealthCheck until "OK", then the stream, then on any
 *    end of the stream the reconnect backoff, in a loop. It alone reads
 *    the stream and writes the subscription table's entries from it.
 *  - "ap-op-ping": Ping (Checkin) every ping_interval_ms while a stream is
 *    open, on the same channel.
 *  - "ap-op-sched": fires due time triggers (NotifyTriggers), retries a
 *    notification that failed in transit, and drops a subscription the
 *    aggregator says is no longer enabled.
 * Every wait is a wait on the stop token or on a condition variable that
 * the stop token's cancel callback signals, so ap_operator_stop returns
 * within the longest unary call timeout (AP_OPERATOR_CALL_TIMEOUT_MS). The
 * stream itself is cancelled at once, which the aggregator sees as the
 * client going away.
 *
 * Signals are not this module's business: the caller blocks them before
 * ap_operator_open (which starts gRPC's threads) and calls
 * ap_operator_stop from the thread that waits for them (src/cli/operator.c).
 *
 * The backoff and the trigger schedule are plain values with no threads,
 * exported here so that the unit tests can drive them. */
#ifndef AP_OPERATOR_H
#define AP_OPERATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap/config.h"
#include "avs.pb-c.h"

/* ---- reconnect backoff ---------------------------------------------------
 * The wait before reconnect attempt n (n = 0, 1, ...) is
 *     base_n * (1 + jitter * (2u - 1)),   base_n = min(initial * factor^n, max)
 * with u uniform in [0, 1): base_n is capped at max, the jitter applies on
 * top (gRPC's connection-backoff rule; conf/operator.conf says the same),
 * and a wait is never below 1 ms. A stream that stayed open for
 * reset_after_ms or longer resets n to 0. An ap_backoff is a plain value
 * with no lock: one thread uses it (the conn thread, for a running
 * operator). */
typedef struct ap_backoff {
	int64_t initial_ms;
	double factor;
	int64_t max_ms;
	double jitter;
	int64_t reset_after_ms;
	double base_ms;    /* base of the next wait */
	unsigned attempts; /* waits handed out since the last reset */
} ap_backoff;

void ap_backoff_init(ap_backoff *b, int64_t initial_ms, double factor, int64_t max_ms,
		     double jitter, int64_t reset_after_ms);
/* The next wait in ms for the random draw u in [0, 1), then grow. */
int64_t ap_backoff_next(ap_backoff *b, double u);
/* Back to initial_ms. */
void ap_backoff_reset(ap_backoff *b);
/* A stream ended after being open up_ms: reset when up_ms >=
 * reset_after_ms. Returns true when it reset. */
bool ap_backoff_connected(ap_backoff *b, int64_t up_ms);

/* ---- trigger schedule ----------------------------------------------------
 * When a task's time trigger fires: the fixed-time epochs or the minutes
 * its cron schedules match, limited to [start_at, expired_at) when those are
 * set (> 0; milliseconds since the Unix epoch, like the epochs). A
 * schedule that does not parse is left out and named in *warning (the
 * aggregator does not check cron syntax); a plan may thus have no time at
 * all. Block, event and manual triggers give a plan that never fires. */
typedef struct ap_time_plan ap_time_plan;

/* Returns 0 or AP_ENOMEM. *warning (may be NULL) gets the first bad
 * schedule and its reason, "" when none. trigger may be NULL. */
int ap_time_plan_new(const Aggregator__TaskTrigger *trigger, int64_t start_at,
		     int64_t expired_at, ap_time_plan **out, char *warning, size_t warnlen);
void ap_time_plan_free(ap_time_plan *p);
/* The trigger type (Aggregator__TriggerType): the trigger's own type field,
 * or the kind of its oneof when that field is unset. */
int ap_time_plan_type(const ap_time_plan *p);
/* True for fixed-time and cron plans, which this client fires. */
bool ap_time_plan_fires(const ap_time_plan *p);
/* The first firing time strictly after after_ms, or -1 when there is none.
 * For a cron plan, *schedule (may be NULL) gets the schedule that fires
 * then (owned by the plan), else NULL. Thread-safe on a plan not being
 * freed. */
int64_t ap_time_plan_next(const ap_time_plan *p, int64_t after_ms, const char **schedule);

/* The trigger_request_id of one firing: "<task_id>:<scheduled time in
 * ms>". It names the firing, not the attempt or the operator, so a retry,
 * or the same firing by another operator after a reassignment, is
 * deduplicated by the aggregator (SPEC section 2). Returns 0 or AP_ELIMIT. */
int ap_operator_request_id(const char *task_id, int64_t scheduled_ms, char *out,
			   size_t outlen);

/* How late a fixed-time epoch may still fire: an epoch missed while the
 * stream was down fires when the task comes back within this window (the
 * aggregator's deduplication window, so a repeat is harmless); older ones
 * are skipped. Cron minutes missed are not caught up. */
#define AP_OPERATOR_LATE_MS (5 * 60 * 1000)
/* Deadline of every unary call (HealthCheck, Ping, NotifyTriggers): also
 * the bound on how long ap_operator_stop can take. */
#define AP_OPERATOR_CALL_TIMEOUT_MS 3000

/* ---- the running client ----------------------------------------------- */
typedef struct ap_operator ap_operator;

/* Command-line overrides of operator.conf keys; NULL fields keep the
 * config's value. */
typedef struct ap_operator_overrides {
	const char *aggregator; /* HOST:PORT */
	const char *address;    /* 0x + 40 hex digits */
	const char *key_file;   /* "" = no key */
} ap_operator_overrides;

/* Check the configuration, load the key (key_file, whose address must be
 * the configured one; "" sends no authorization, which only an aggregator
 * in auth.mode "none" accepts, and logs a warning) and open the channel
 * (TLS per the config's tls group, whose files are read here).
 * Nothing is sent yet. cfg is only read during the call. Returns 0,
 * AP_ECONFIG (a bad override, an unreadable key, a key of another address,
 * an unreadable TLS file: detail in err) or AP_ENOMEM. Starts gRPC's
 * threads: block signals before. */
int ap_operator_open(ap_operator **out, const ap_operator_config *cfg,
		     const ap_operator_overrides *ov, char *err, size_t errlen);
/* Start the three threads. 0, or AP_EIO when a thread cannot be started
 * (then nothing runs). Once per operator. */
int ap_operator_start(ap_operator *op);
/* Cancel the stream, wake every wait, join the threads. Idempotent;
 * thread-safe; not async-signal-safe. */
void ap_operator_stop(ap_operator *op);
/* Stop if running, close the channel, free. NULL accepted. */
void ap_operator_close(ap_operator *op);

/* The number of subscriptions right now (for tests). Thread-safe. */
size_t ap_operator_subscriptions(ap_operator *op);

#endif
