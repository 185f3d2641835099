/* Cancellation tokens: the refcounted, generation-stamped replacement for
 * Go's context.Context (SPEC section 1).
 *
 * A token is created for one session (or one job) and carries the session's
 * generation. Whoever keeps a pointer to a token holds a reference
 * (ap_token_ref/ap_token_unref, C11 atomics; unref of the last reference
 * frees it; unref(NULL) is a no-op; an underflow aborts).
 *
 * ap_token_cancel(reason) is idempotent and thread-safe: the first call wins,
 * records the reason, wakes every waiter and runs the cancel callbacks (in
 * the cancelling thread, after the token's lock is released); later calls
 * return false and change nothing. ap_token_is_cancelled is one atomic load.
 * ap_token_wait blocks until the token is cancelled or a CLOCK_MONOTONIC
 * deadline passes.
 *
 * Lock rule: each token has one private mutex + condvar guarding its waiter
 * count and callback list; the cancelled flag is atomic. Callbacks are never
 * run while the mutex is held. */
#ifndef AP_TOKEN_H
#define AP_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ap_token ap_token;

/* A new, live token with one reference held by the caller; NULL on ENOMEM. */
ap_token *ap_token_new(uint64_t generation);
/* Take another reference; returns `t`. */
ap_token *ap_token_ref(ap_token *t);
/* Drop a reference; NULL is accepted. */
void ap_token_unref(ap_token *t);

uint64_t ap_token_generation(const ap_token *t);

/* Cancel with a static or caller-kept reason string (copied; NULL records
 * "cancelled"). Returns true for the call that cancelled, false when already
 * cancelled. Thread-safe. */
bool ap_token_cancel(ap_token *t, const char *reason);
bool ap_token_is_cancelled(const ap_token *t);
/* The reason given to the winning cancel, or NULL while live. The string
 * lives as long as the token. */
const char *ap_token_reason(const ap_token *t);

/* Block until cancelled or until `deadline_ns` (ap_clock_mono_ns() scale;
 * a negative deadline waits forever). Returns AP_ECANCELLED or
 * AP_ETIMEDOUT. */
int ap_token_wait(ap_token *t, int64_t deadline_ns);

/* Run fn(arg) once when the token is cancelled (at once, in this thread,
 * if it already is). Used to wake a thread blocked elsewhere, e.g. to cancel
 * a gRPC call or signal an outbox. Returns 0 or AP_ENOMEM. The callback must
 * not unref the token. */
int ap_token_on_cancel(ap_token *t, void (*fn)(void *arg), void *arg);

#endif
