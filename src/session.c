/* Sessions: outbox and sync state of one SyncMessages call. See
 * include/ap/session.h for the ownership and lock rules. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/metrics.h"
#include "ap/session.h"

enum sync_state { SYNC_QUEUED = 1, SYNC_SYNCED = 2 };

typedef struct sync_entry {
	char task_id[AP_TASK_ID_MAX + 1];
	enum sync_state state;
	UT_hash_handle hh;
} sync_entry;

struct ap_session {
	atomic_int refs;
	char address[AP_ADDRESS_LEN + 1];
	uint64_t generation;
	ap_token *token;
	int64_t opened_ns;
	int64_t monotonic_clock;
	bool has_capabilities, event_monitoring, block_monitoring, time_monitoring;
	int64_t *chain_ids;
	size_t n_chain_ids;
	atomic_bool ready;

	pthread_mutex_t lock; /* leaf: see the header */
	pthread_cond_t cond;  /* CLOCK_MONOTONIC; signalled on push and cancel */
	ap_outmsg *head, *tail;
	size_t queued;
	sync_entry *sync;
	size_t synced;
	void (*wake)(void *arg);
	void *wake_arg;
	unsigned wake_holds; /* > 0: pushes do not wake (ap_session_hold_wake) */
	uint64_t sent_ok, sent_failed;
	int64_t first_task_ns;
};

static void on_token_cancel(void *arg)
{
	ap_session *s = arg;
	pthread_mutex_lock(&s->lock);
	pthread_cond_broadcast(&s->cond);
	if (s->wake)
		s->wake(s->wake_arg);
	pthread_mutex_unlock(&s->lock);
}

ap_session *ap_session_new(const ap_hello *h, uint64_t generation)
{
	ap_session *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	atomic_init(&s->refs, 1);
	snprintf(s->address, sizeof s->address, "%s", h->address);
	s->generation = generation;
	s->opened_ns = ap_clock_mono_ns();
	s->monotonic_clock = h->monotonic_clock;
	s->has_capabilities = h->has_capabilities;
	s->event_monitoring = h->event_monitoring;
	s->block_monitoring = h->block_monitoring;
	s->time_monitoring = h->time_monitoring;
	atomic_init(&s->ready, false);
	pthread_mutex_init(&s->lock, NULL);
	ap_clock_cond_init(&s->cond);
	if (h->n_chain_ids) {
		s->chain_ids = malloc(h->n_chain_ids * sizeof *s->chain_ids);
		if (!s->chain_ids)
			goto fail;
		memcpy(s->chain_ids, h->chain_ids, h->n_chain_ids * sizeof *s->chain_ids);
		s->n_chain_ids = h->n_chain_ids;
	}
	s->token = ap_token_new(generation);
	if (!s->token || ap_token_on_cancel(s->token, on_token_cancel, s) != 0)
		goto fail;
	return s;
fail:
	ap_session_unref(s);
	return NULL;
}

ap_session *ap_session_ref(ap_session *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

static void free_outmsg(ap_outmsg *m)
{
	if (m) {
		free(m->bytes);
		free(m);
	}
}

void ap_session_unref(ap_session *s)
{
	if (!s)
		return;
	int old = atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel);
	AP_ASSERT(old > 0);
	if (old != 1)
		return;
	/* Cancelling runs on_token_cancel while the session still exists, so a
	 * job or waiter holding only the token never sees a freed session. */
	if (s->token) {
		ap_token_cancel(s->token, "session released");
		ap_token_unref(s->token);
	}
	for (ap_outmsg *m = s->head, *n; m; m = n) {
		n = m->next;
		free_outmsg(m);
	}
	sync_entry *e, *tmp;
	HASH_ITER(hh, s->sync, e, tmp) {
		HASH_DEL(s->sync, e);
		free(e);
	}
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s->chain_ids);
	free(s);
}

const char *ap_session_address(const ap_session *s) { return s->address; }
uint64_t ap_session_generation(const ap_session *s) { return s->generation; }
ap_token *ap_session_token(const ap_session *s) { return s->token; }
int64_t ap_session_opened_ns(const ap_session *s) { return s->opened_ns; }
int64_t ap_session_clock(const ap_session *s) { return s->monotonic_clock; }
bool ap_session_ready(const ap_session *s) { return atomic_load(&s->ready); }
void ap_session_set_ready(ap_session *s) { atomic_store(&s->ready, true); }

bool ap_session_can_run(const ap_session *s, int trigger_type, int64_t chain_id)
{
	if (s->has_capabilities) {
		bool ok;
		switch (trigger_type) {
		case 5: ok = s->event_monitoring; break; /* TRIGGER_TYPE_EVENT */
		case 4: ok = s->block_monitoring; break; /* TRIGGER_TYPE_BLOCK */
		case 2: /* FIXED_TIME */
		case 3: ok = s->time_monitoring; break;  /* CRON */
		default: ok = false; break;              /* manual: never owned */
		}
		if (!ok)
			return false;
	}
	if (chain_id == 0 || s->n_chain_ids == 0)
		return true;
	for (size_t i = 0; i < s->n_chain_ids; i++)
		if (s->chain_ids[i] == chain_id)
			return true;
	return false;
}

static void forget_locked(ap_session *s, const char *task_id)
{
	sync_entry *e;
	HASH_FIND_STR(s->sync, task_id, e);
	if (!e)
		return;
	if (e->state == SYNC_SYNCED)
		s->synced--;
	HASH_DEL(s->sync, e);
	free(e);
}

int ap_session_push(ap_session *s, ap_op op, const char *task_id,
		    uint8_t *bytes, size_t len)
{
	if (ap_token_is_cancelled(s->token)) {
		free(bytes);
		return AP_ECANCELLED;
	}
	ap_outmsg *m = calloc(1, sizeof *m);
	if (!m) {
		free(bytes);
		return AP_ENOMEM;
	}
	m->op = op;
	snprintf(m->task_id, sizeof m->task_id, "%s", task_id);
	m->bytes = bytes;
	m->len = len;

	pthread_mutex_lock(&s->lock);
	sync_entry *e;
	HASH_FIND_STR(s->sync, task_id, e);
	if (op == AP_OP_MONITOR) {
		if (e) {
			pthread_mutex_unlock(&s->lock);
			free_outmsg(m);
			return 1;
		}
		e = calloc(1, sizeof *e);
		if (!e) {
			pthread_mutex_unlock(&s->lock);
			free_outmsg(m);
			return AP_ENOMEM;
		}
		snprintf(e->task_id, sizeof e->task_id, "%s", task_id);
		e->state = SYNC_QUEUED;
		HASH_ADD_STR(s->sync, task_id, e);
	} else {
		forget_locked(s, task_id);
	}
	/* The transport is woken only when the outbox goes from empty to
	 * non-empty: a consumer that has a message in hand or in flight takes
	 * the next one when it is done, without a wake. One wake per task used
	 * to cost two context switches per task (bench/README.md). */
	bool was_empty = s->head == NULL;
	if (s->tail)
		s->tail->next = m;
	else
		s->head = m;
	s->tail = m;
	s->queued++;
	pthread_cond_signal(&s->cond);
	if (s->wake && was_empty && s->wake_holds == 0)
		s->wake(s->wake_arg);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int ap_session_next(ap_session *s, int64_t deadline_ns, ap_outmsg **out)
{
	int rc = 0;
	*out = NULL;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		if (ap_token_is_cancelled(s->token)) {
			rc = AP_ECANCELLED;
			break;
		}
		if (s->head) {
			ap_outmsg *m = s->head;
			s->head = m->next;
			if (!s->head)
				s->tail = NULL;
			s->queued--;
			m->next = NULL;
			*out = m;
			break;
		}
		if (deadline_ns == 0 ||
		    (deadline_ns > 0 && ap_clock_mono_ns() >= deadline_ns)) {
			rc = AP_ETIMEDOUT;
			break;
		}
		if (deadline_ns < 0) {
			pthread_cond_wait(&s->cond, &s->lock);
		} else {
			struct timespec ts = ap_clock_ts_from_ns(deadline_ns);
			pthread_cond_timedwait(&s->cond, &s->lock, &ts);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void ap_session_sent(ap_session *s, ap_outmsg *msg, bool ok)
{
	pthread_mutex_lock(&s->lock);
	if (ok)
		s->sent_ok++;
	else
		s->sent_failed++;
	if (msg->op == AP_OP_MONITOR) {
		sync_entry *e;
		HASH_FIND_STR(s->sync, msg->task_id, e);
		/* The entry may be gone (a removal overtook it) or re-queued; only
		 * the QUEUED state this message created becomes SYNCED. */
		if (e && e->state == SYNC_QUEUED) {
			if (ok) {
				e->state = SYNC_SYNCED;
				s->synced++;
				if (s->first_task_ns == 0) {
					s->first_task_ns = ap_clock_mono_ns();
					ap_metrics_first_task((double)(s->first_task_ns - s->opened_ns) / 1e9);
				}
			} else {
				HASH_DEL(s->sync, e);
				free(e);
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	free_outmsg(msg);
}

void ap_session_set_wake(ap_session *s, void (*wake)(void *arg), void *arg)
{
	pthread_mutex_lock(&s->lock);
	s->wake = wake;
	s->wake_arg = arg;
	pthread_mutex_unlock(&s->lock);
}

void ap_session_hold_wake(ap_session *s)
{
	pthread_mutex_lock(&s->lock);
	s->wake_holds++;
	pthread_mutex_unlock(&s->lock);
}

void ap_session_release_wake(ap_session *s)
{
	pthread_mutex_lock(&s->lock);
	AP_ASSERT(s->wake_holds > 0);
	if (--s->wake_holds == 0 && s->head && s->wake)
		s->wake(s->wake_arg);
	pthread_mutex_unlock(&s->lock);
}

static int sync_state(ap_session *s, const char *task_id)
{
	sync_entry *e;
	pthread_mutex_lock(&s->lock);
	HASH_FIND_STR(s->sync, task_id, e);
	int st = e ? (int)e->state : 0;
	pthread_mutex_unlock(&s->lock);
	return st;
}

bool ap_session_is_synced(ap_session *s, const char *task_id)
{
	return sync_state(s, task_id) == SYNC_SYNCED;
}

bool ap_session_knows(ap_session *s, const char *task_id)
{
	return sync_state(s, task_id) != 0;
}

size_t ap_session_synced_count(ap_session *s)
{
	pthread_mutex_lock(&s->lock);
	size_t n = s->synced;
	pthread_mutex_unlock(&s->lock);
	return n;
}

size_t ap_session_queued_count(ap_session *s)
{
	pthread_mutex_lock(&s->lock);
	size_t n = s->queued;
	pthread_mutex_unlock(&s->lock);
	return n;
}

void ap_session_each_synced(ap_session *s, void (*fn)(void *arg, const char *task_id),
			    void *arg)
{
	pthread_mutex_lock(&s->lock);
	sync_entry *e, *tmp;
	HASH_ITER(hh, s->sync, e, tmp) {
		if (e->state == SYNC_SYNCED)
			fn(arg, e->task_id);
	}
	pthread_mutex_unlock(&s->lock);
}

void ap_session_counters(ap_session *s, uint64_t *ok, uint64_t *failed,
			 int64_t *first_task_ns)
{
	pthread_mutex_lock(&s->lock);
	if (ok)
		*ok = s->sent_ok;
	if (failed)
		*failed = s->sent_failed;
	if (first_task_ns)
		*first_task_ns = s->first_task_ns;
	pthread_mutex_unlock(&s->lock);
}
