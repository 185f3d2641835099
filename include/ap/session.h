/* Sessions: one accepted SyncMessages call (SPEC sections 1 and 3), apart
 * from any transport.
 *
 * The engine pushes messages into a session's outbox; the transport drains
 * it on the session's own thread, one message at a time, and reports each
 * send back with ap_session_sent(). The session also keeps the per-task sync
 * state of SPEC section 3: a MonitorTaskTrigger is QUEUED when pushed and
 * SYNCED once its send completed; a removal (disable, delete, completion)
 * forgets the task. A push of a task that is already queued or synced is a
 * no-op, which is what makes the periodic resync cheap and idempotent.
 *
 * A session is refcounted. The registry holds one reference for the current
 * session of an address, the transport thread one, ticker jobs none (they
 * hold the token and look the session up by generation).
 *
 * Lock rule: `lock` (private) guards the outbox queue, the sync map, the
 * wake hook and the counters. It is a leaf: nothing else is locked or
 * called while it is held, except the wake hook, which must not block and
 * must not call back into the session. The identity fields (address,
 * generation, capabilities, chains, token) are immutable after
 * ap_session_new; `ready` is atomic. */
#ifndef AP_SESSION_H
#define AP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap/token.h"

#define AP_ADDRESS_LEN 42 /* "0x" + 40 hex digits */
#define AP_TASK_ID_MAX 64

typedef struct ap_session ap_session;

/* Operator capabilities and chains, as announced in SyncMessagesReq. */
typedef struct ap_hello {
	const char *address;      /* validated, lower-cased by the engine */
	int64_t monotonic_clock;
	bool has_capabilities;    /* absent capabilities mean all */
	bool event_monitoring;
	bool block_monitoring;
	bool time_monitoring;
	const int64_t *chain_ids; /* empty: any chain */
	size_t n_chain_ids;
} ap_hello;

/* Values of SyncMessagesResp.op (MessageOp in node.proto). */
typedef enum {
	AP_OP_MONITOR = 1,
	AP_OP_DISABLE = 2,
	AP_OP_DELETE = 3,
	AP_OP_COMPLETED = 4,
} ap_op;

/* One queued message. The bytes are a packed SyncMessagesResp. */
typedef struct ap_outmsg {
	struct ap_outmsg *next;
	ap_op op;
	char task_id[AP_TASK_ID_MAX + 1];
	uint8_t *bytes;
	size_t len;
} ap_outmsg;

/* A new session with one reference and its own token (generation-stamped).
 * Copies everything from hello. NULL on ENOMEM. */
ap_session *ap_session_new(const ap_hello *hello, uint64_t generation);
ap_session *ap_session_ref(ap_session *s);
/* Drop a reference; the last one cancels the token ("session released")
 * and frees the outbox. NULL accepted. */
void ap_session_unref(ap_session *s);

const char *ap_session_address(const ap_session *s);
uint64_t ap_session_generation(const ap_session *s);
/* The session's token; borrowed (take a ref to keep it). */
ap_token *ap_session_token(const ap_session *s);
int64_t ap_session_opened_ns(const ap_session *s); /* ap_clock_mono_ns scale */
int64_t ap_session_clock(const ap_session *s);
bool ap_session_ready(const ap_session *s);
void ap_session_set_ready(ap_session *s);

/* Eligibility by trigger type (TriggerType values) and chain (0 = any). */
bool ap_session_can_run(const ap_session *s, int trigger_type, int64_t chain_id);

/* Queue a message; takes ownership of `bytes` (freed on failure too).
 * MONITOR of a task already queued or synced frees bytes and returns 1;
 * a removal forgets the task's sync state. Returns 0 when queued,
 * AP_ENOMEM, or AP_ECANCELLED when the session's token is cancelled. */
int ap_session_push(ap_session *s, ap_op op, const char *task_id,
		    uint8_t *bytes, size_t len);

/* Pop the next message, waiting until one arrives, the token is cancelled
 * or `deadline_ns` passes (negative: forever; 0: do not wait). The message
 * is the caller's until passed to ap_session_sent(). Returns 0,
 * AP_ECANCELLED or AP_ETIMEDOUT. */
int ap_session_next(ap_session *s, int64_t deadline_ns, ap_outmsg **out);
/* Report a popped message's send: ok marks a MONITOR synced; a failure
 * leaves the task unsynced. Frees msg. */
void ap_session_sent(ap_session *s, ap_outmsg *msg, bool ok);

/* Set the transport's wake hook, called (with the session lock held) when
 * a message is queued or the token is cancelled, so a thread waiting
 * elsewhere than ap_session_next (a gRPC completion queue) notices. NULL
 * clears it. */
void ap_session_set_wake(ap_session *s, void (*wake)(void *arg), void *arg);

/* Hold the wake hook while a batch of pushes is queued; release calls it
 * once if the outbox is not empty. Holds nest. Thread-safe. */
void ap_session_hold_wake(ap_session *s);
void ap_session_release_wake(ap_session *s);

bool ap_session_is_synced(ap_session *s, const char *task_id);
/* True when the task id was sent to this session (queued or synced): what
 * Ack answers. */
bool ap_session_knows(ap_session *s, const char *task_id);
size_t ap_session_synced_count(ap_session *s);
size_t ap_session_queued_count(ap_session *s);
/* Call fn for every synced task id (under the session lock: fn must not
 * call into the session). */
void ap_session_each_synced(ap_session *s, void (*fn)(void *arg, const char *task_id),
			    void *arg);

/* Sends reported so far: ok and failed; and the monotonic time of the
 * first successful MONITOR send (0 = none yet). */
void ap_session_counters(ap_session *s, uint64_t *ok, uint64_t *failed,
			 int64_t *first_task_ns);

#endif
