/* The engine: SPEC sections 1, 3 and 4 without any network.
 *
 * It owns the store, the task table, the assignment map, the operator
 * registry, the ready list and the ticker pool, and implements the session
 * lifecycle (accept, stabilization, ready/reclaim, running, disconnect), the
 * admin operations and the NotifyTriggers rule. A transport (src/rpc/)
 * calls it with decoded requests; tests call it directly and drain session
 * outboxes themselves.
 *
 * Threads: the caller's (transport session threads, admin handlers) and the
 * ticker pool's. Every state change takes the engine lock; see the lock
 * order in src/engine.c.
 *
 * Reasons given to a session's token, which the transport maps to a gRPC
 * status: AP_REASON_SUPERSEDED -> ABORTED, AP_REASON_SHUTDOWN ->
 * UNAVAILABLE. */
#ifndef AP_ENGINE_H
#define AP_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin.pb-c.h"
#include "ap/config.h"
#include "ap/registry.h"
#include "ap/session.h"
#include "node.pb-c.h"

#define AP_REASON_SUPERSEDED "superseded by a newer connection"
#define AP_REASON_SHUTDOWN "aggregator shutting down"
#define AP_REASON_CLOSED "session closed"

typedef struct ap_engine ap_engine;

/* Open the store (with recovery), load tasks, assignments and operators,
 * and create the ticker pool (not started). Returns 0 or an AP_E code with
 * detail in err. */
int ap_engine_open(ap_engine **out, const ap_config *cfg, char *err, size_t errlen);
/* Start the ticker pool and the restart grace timer; logs
 * "🚀 Engine started successfully". */
int ap_engine_start(ap_engine *e);
/* End every session (token reason AP_REASON_SHUTDOWN), refuse new ones,
 * stop and join the ticker. Idempotent. */
void ap_engine_stop(ap_engine *e);
/* Stop if needed, checkpoint and close the store, free everything. NULL
 * accepted. Every session reference obtained from the engine must have been
 * released (ap_engine_session_close) before. */
void ap_engine_close(ap_engine *e);

/* -- sessions ------------------------------------------------------------ */

/* Accept a SyncMessages request: validate, check approval and limits,
 * register a new generation (cancelling the previous session of the address
 * with AP_REASON_SUPERSEDED) and schedule stabilization. On success *out is
 * a session reference for the caller (the transport), who must call
 * ap_engine_session_close exactly once. Errors: AP_EINVAL (malformed),
 * AP_EDENIED (not approved), AP_ELIMIT (cooldown or max_sessions),
 * AP_ESTATE (shutting down); detail in err. */
int ap_engine_session_open(ap_engine *e, const ap_hello *hello, ap_session **out,
			   char *err, size_t errlen);
/* The session's stream ended (client gone, send failed, superseded,
 * shutdown). Runs the disconnect cleanup only when the session is still
 * current; releases the caller's reference. `why` is logged. */
void ap_engine_session_close(ap_engine *e, ap_session *s, const char *why);

/* -- admin ----------------------------------------------------------------- */

/* Create tasks (all or nothing). ids_out receives a malloc'd array of n
 * malloc'd ids (free with ap_engine_free_ids). AP_EINVAL (detail in err),
 * AP_EEXIST, AP_EIO. */
int ap_engine_create_tasks(ap_engine *e, Aggregator__NewTask *const *tasks, size_t n,
			   char ***ids_out, char *err, size_t errlen);
void ap_engine_free_ids(char **ids, size_t n);
/* Enable or disable; *status_out is the resulting status name (static).
 * AP_ENOTFOUND, AP_ESTATE (completed or failed task), AP_EIO. */
int ap_engine_set_enabled(ap_engine *e, const char *id, bool enabled,
			  const char **status_out);
/* Delete; AP_ENOTFOUND, AP_EIO. */
int ap_engine_delete_task(ap_engine *e, const char *id);
/* A page of tasks in id order after `after` (exclusive). The response is
 * the caller's (free with aggregator__list_tasks_resp__free_unpacked-like
 * ap_engine_free_list). */
int ap_engine_list_tasks(ap_engine *e, const char *after, uint32_t limit,
			 Aggregator__ListTasksResp **out);
void ap_engine_free_list(Aggregator__ListTasksResp *resp);
int ap_engine_list_operators(ap_engine *e, Aggregator__ListOperatorsResp **out);
void ap_engine_free_operators(Aggregator__ListOperatorsResp *resp);

/* -- operator calls -------------------------------------------------------- */

typedef struct ap_notify_result {
	const char *status; /* "enabled", "deduplicated", "exhausted", ... */
	int64_t remaining_executions;
	bool task_still_enabled;
	char message[128];
} ap_notify_result;

/* The NotifyTriggers rule (SPEC section 2) for an authenticated, approved
 * caller. Returns 0 with *res filled, AP_EDENIED when the caller is not the
 * owner of an enabled task, AP_EINVAL for a malformed request, AP_EIO. */
int ap_engine_notify(ap_engine *e, const char *address, const char *task_id,
		     const char *trigger_request_id, ap_notify_result *res);
/* Ack: true when `id` was sent to the current session of `address`. */
bool ap_engine_ack(ap_engine *e, const char *address, const char *id);
/* Ping: record the Checkin fields in the operators database. */
int ap_engine_ping(ap_engine *e, const Aggregator__Checkin *checkin,
		   int64_t *updated_at_ms);
/* True when the address is approved (lower-case input). */
bool ap_engine_approved(ap_engine *e, const char *address);

/* -- introspection and tests ---------------------------------------------- */

typedef struct ap_engine_stats {
	uint64_t connects, reconnects, disconnects, superseded;
	uint64_t assign_round_robin, assign_reclaim, assign_reassign;
	uint64_t stale_skips;      /* cleanups and jobs skipped as stale */
	uint64_t stale_job_runs;   /* jobs that acted for a stale generation: must stay 0 */
	size_t tasks, orphans, ready, connected;
	size_t tasks_by_status[4]; /* indexed by ap_task_status */
} ap_engine_stats;
void ap_engine_get_stats(ap_engine *e, ap_engine_stats *out);

/* Check the invariants of SPEC section 8 that the engine alone can see:
 * every assignable task with an eligible ready operator has an owner and
 * the owner is ready (only when no session is stabilizing, i.e. at
 * quiescence, pass quiescent=true); every owner count matches; each ready
 * session's synced set is a subset of what it owns. Returns 0 or AP_ESTATE
 * with the first violation in err. */
int ap_engine_check(ap_engine *e, bool quiescent, char *err, size_t errlen);

/* Live ticker jobs of an address (tests). */
size_t ap_engine_live_jobs(ap_engine *e, const char *address);
/* The ticker's counters (tests). */
void ap_engine_ticker_stats(ap_engine *e, uint64_t *ran, uint64_t *dropped);

#endif
