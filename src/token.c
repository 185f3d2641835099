/* Cancellation tokens (include/ap/token.h).
 *
 * A token owns its reason string and the list of callbacks registered with
 * ap_token_on_cancel that have not run yet. It owns no thread.
 *
 * The cancelled flag is a C11 atomic so that ap_token_is_cancelled, which
 * every tick, push and send loop calls, is one acquire load and never takes
 * a lock. The flag only ever goes from false to true, and it is stored (with
 * release order) under the token's mutex after the reason has been written,
 * so a reader that sees it set also sees the reason.
 *
 * Lock rule: `mu` guards `reason`'s assignment, `callbacks`, `waiters` and
 * the decision "who cancels first"; `cond` (CLOCK_MONOTONIC) is signalled
 * under it. Nothing is called out while `mu` is held: cancel detaches the
 * callback list under the lock and runs it after unlocking. There is no lock
 * order to respect because a token never takes another lock while holding
 * its own.
 *
 * Lifetime: a waiter and a cancelling thread each hold a reference of their
 * own, so the token cannot be freed under them; freeing a token that still
 * has waiters is an invariant violation and aborts. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/token.h"

/* Used when the reason cannot be copied (out of memory) or none was given:
 * the token is still cancelled, only the detail is lost. */
static const char reason_none[] = "cancelled";
static const char reason_nomem[] = "cancelled (reason lost: out of memory)";

struct ap_token_callback {
	struct ap_token_callback *next;
	void (*fn)(void *arg);
	void *arg;
};

struct ap_token {
	atomic_uint_fast64_t refs;
	uint64_t generation;   /* immutable after ap_token_new */
	atomic_bool cancelled; /* false -> true once, stored under mu */

	pthread_mutex_t mu;
	pthread_cond_t cond;     /* broadcast on cancel; waits on MONOTONIC */
	const char *reason;      /* set once under mu before `cancelled` */
	bool reason_owned;       /* reason was malloc'd by us */
	unsigned waiters;        /* threads inside ap_token_wait */
	struct ap_token_callback *callbacks;      /* registration order */
	struct ap_token_callback **callbacks_tail;
};

ap_token *ap_token_new(uint64_t generation)
{
	ap_token *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	if (pthread_mutex_init(&t->mu, NULL) != 0)
		goto fail_free;
	if (ap_clock_cond_init(&t->cond) != 0)
		goto fail_mutex;
	atomic_init(&t->refs, 1);
	atomic_init(&t->cancelled, false);
	t->generation = generation;
	t->callbacks_tail = &t->callbacks;
	return t;

fail_mutex:
	pthread_mutex_destroy(&t->mu);
fail_free:
	free(t);
	return NULL;
}

ap_token *ap_token_ref(ap_token *t)
{
	AP_ASSERT(t != NULL);
	uint_fast64_t prev = atomic_fetch_add_explicit(&t->refs, 1,
						       memory_order_relaxed);
	/* Taking a reference on a token nobody holds is a use after free. */
	AP_ASSERT(prev > 0);
	return t;
}

static void token_free(ap_token *t)
{
	/* A waiter holds its own reference, so none can be left here. */
	AP_ASSERT(t->waiters == 0);
	struct ap_token_callback *cb = t->callbacks;
	while (cb) {
		/* Never cancelled: the callbacks are dropped unrun. */
		struct ap_token_callback *next = cb->next;
		free(cb);
		cb = next;
	}
	if (t->reason_owned)
		free((char *)t->reason);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

void ap_token_unref(ap_token *t)
{
	if (!t)
		return;
	/* acq_rel: the last unref must see every write made by the other
	 * holders before they dropped their references. */
	uint_fast64_t prev = atomic_fetch_sub_explicit(&t->refs, 1,
						       memory_order_acq_rel);
	AP_ASSERT(prev > 0); /* underflow: one unref too many */
	if (prev == 1)
		token_free(t);
}

uint64_t ap_token_generation(const ap_token *t)
{
	AP_ASSERT(t != NULL);
	return t->generation;
}

bool ap_token_is_cancelled(const ap_token *t)
{
	AP_ASSERT(t != NULL);
	return atomic_load_explicit(&((ap_token *)t)->cancelled,
				    memory_order_acquire);
}

const char *ap_token_reason(const ap_token *t)
{
	/* The acquire load pairs with the release store in ap_token_cancel,
	 * which happens after `reason` was written; `reason` never changes
	 * after that, so it can be read without the lock. */
	if (!ap_token_is_cancelled(t))
		return NULL;
	return t->reason;
}

bool ap_token_cancel(ap_token *t, const char *reason)
{
	AP_ASSERT(t != NULL);
	/* Cheap exit for the common "already cancelled" case. */
	if (ap_token_is_cancelled(t))
		return false;

	/* Copy outside the lock; a loser frees its copy. */
	char *copy = reason ? strdup(reason) : NULL;

	pthread_mutex_lock(&t->mu);
	if (atomic_load_explicit(&t->cancelled, memory_order_relaxed)) {
		pthread_mutex_unlock(&t->mu);
		free(copy);
		return false;
	}
	if (copy) {
		t->reason = copy;
		t->reason_owned = true;
	} else {
		t->reason = reason ? reason_nomem : reason_none;
	}
	atomic_store_explicit(&t->cancelled, true, memory_order_release);
	struct ap_token_callback *callbacks = t->callbacks;
	t->callbacks = NULL;
	t->callbacks_tail = &t->callbacks;
	if (t->waiters > 0)
		pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->mu);

	/* Run the detached callbacks once, in registration order, unlocked.
	 * No new callback can join the list: on_cancel sees `cancelled` and
	 * runs its callback itself. */
	while (callbacks) {
		struct ap_token_callback *next = callbacks->next;
		callbacks->fn(callbacks->arg);
		free(callbacks);
		callbacks = next;
	}
	return true;
}

int ap_token_wait(ap_token *t, int64_t deadline_ns)
{
	AP_ASSERT(t != NULL);
	if (ap_token_is_cancelled(t))
		return AP_ECANCELLED;

	struct timespec until = { 0, 0 };
	if (deadline_ns >= 0)
		until = ap_clock_ts_from_ns(deadline_ns);

	pthread_mutex_lock(&t->mu);
	t->waiters++;
	while (!atomic_load_explicit(&t->cancelled, memory_order_relaxed)) {
		int rc;
		if (deadline_ns < 0) {
			rc = pthread_cond_wait(&t->cond, &t->mu);
		} else {
			rc = pthread_cond_timedwait(&t->cond, &t->mu, &until);
			if (rc == ETIMEDOUT)
				break;
		}
		AP_ASSERT(rc == 0);
	}
	t->waiters--;
	bool cancelled = atomic_load_explicit(&t->cancelled,
					      memory_order_relaxed);
	pthread_mutex_unlock(&t->mu);
	/* Cancelled wins over a deadline that passed at the same moment. */
	return cancelled ? AP_ECANCELLED : AP_ETIMEDOUT;
}

int ap_token_on_cancel(ap_token *t, void (*fn)(void *arg), void *arg)
{
	AP_ASSERT(t != NULL && fn != NULL);
	struct ap_token_callback *cb = malloc(sizeof(*cb));
	if (!cb)
		return AP_ENOMEM;
	cb->next = NULL;
	cb->fn = fn;
	cb->arg = arg;

	pthread_mutex_lock(&t->mu);
	bool cancelled = atomic_load_explicit(&t->cancelled,
					      memory_order_relaxed);
	if (!cancelled) {
		*t->callbacks_tail = cb;
		t->callbacks_tail = &cb->next;
	}
	pthread_mutex_unlock(&t->mu);

	if (cancelled) {
		/* Already cancelled: run it now, in this thread, unlocked. */
		free(cb);
		fn(arg);
	}
	return 0;
}
