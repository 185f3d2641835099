/* The ticker pool (include/ap/ticker.h).
 *
 * What it owns: a binary min-heap of queued jobs ordered by (due time,
 * sequence number), so jobs fall due in time order and jobs with the same due
 * time in the order they were scheduled; one token reference per queued or
 * running job; and `nthreads` worker threads named "ap-ticker-N".
 *
 * Lock rule: `mu` guards the heap, `next_seq`, `running`, the counters and
 * the started/stopping flags; `cond` (CLOCK_MONOTONIC) wakes workers when a
 * job becomes the earliest one or the pool stops. `mu` is a leaf lock: the
 * run and is_current callbacks are called without it, and token references
 * are dropped only after it is released (the last unref frees the token).
 * ap_ticker_live_jobs reads ap_token_is_cancelled under `mu`; that is a
 * lock-free atomic load, not a call into another module's lock.
 *
 * Threads: a worker sleeps until the earliest due time (or indefinitely on
 * an empty heap), pops the earliest due job, releases `mu`, decides whether
 * the job is stale, runs it, and re-takes `mu` to reschedule it or to count
 * it. A worker that pops a job while more are queued signals another worker,
 * so a due job never waits behind a long-running one while a worker idles.
 * Workers run different jobs concurrently: two jobs of different sessions,
 * or even of the same session, may run at the same time on different
 * workers. The pool does not serialise jobs per address; the owner re-checks
 * the generation under its own lock inside the job (see ticker.h).
 *
 * start/stop/close are the owner's calls and are not made concurrently with
 * each other (a concurrent second stop() returns at once); schedule,
 * live_jobs and get_stats may be called from any thread, jobs included.
 *
 * Capacity: the heap array never shrinks and ap_ticker_schedule keeps it at
 * least `len + running + 1` long, so a worker putting a periodic job back
 * never needs memory and can never fail. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/ticker.h"

#define TICKER_MAX_THREADS 64
#define NS_PER_MS INT64_C(1000000)

struct ticker_entry {
	int64_t due_ns; /* ap_clock_mono_ns() scale */
	uint64_t seq;   /* FIFO among equal due times */
	ap_job job;     /* job.token: a reference owned by the pool */
};

struct ticker_worker {
	pthread_t thread;
	ap_ticker *tk;
	int index;
};

struct ap_ticker {
	ap_ticker_run_fn run;
	ap_ticker_current_fn is_current; /* NULL: only tokens decide */
	void *ctx;                        /* weak: owned by the caller */
	int nthreads;

	pthread_mutex_t mu; /* leaf lock, see the rule at the top */
	pthread_cond_t cond;
	bool have_mu, have_cond; /* for close() on a half-open pool */

	struct ticker_entry *heap; /* guarded by mu */
	size_t len, cap;           /* guarded by mu */
	size_t running;            /* popped, not yet finished; mu */
	uint64_t next_seq;         /* mu */
	bool started;              /* start() was called; mu */
	bool stopping;             /* stop() was called; mu */
	ap_ticker_stats stats;     /* mu (stats.queued derived from len) */

	struct ticker_worker *workers; /* written by start/stop only */
	int nstarted;                  /* workers created, to join */
};

/* ---- heap ------------------------------------------------------------- */

static bool entry_before(const struct ticker_entry *a,
			 const struct ticker_entry *b)
{
	if (a->due_ns != b->due_ns)
		return a->due_ns < b->due_ns;
	return a->seq < b->seq;
}

static void heap_swap(struct ticker_entry *h, size_t i, size_t j)
{
	struct ticker_entry tmp = h[i];
	h[i] = h[j];
	h[j] = tmp;
}

/* Insert into a heap that has room; returns the new entry's final index. */
static size_t heap_push_locked(ap_ticker *tk, const struct ticker_entry *e)
{
	AP_ASSERT(tk->len < tk->cap);
	size_t i = tk->len++;
	tk->heap[i] = *e;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!entry_before(&tk->heap[i], &tk->heap[parent]))
			break;
		heap_swap(tk->heap, i, parent);
		i = parent;
	}
	return i;
}

static struct ticker_entry heap_pop_locked(ap_ticker *tk)
{
	AP_ASSERT(tk->len > 0);
	struct ticker_entry top = tk->heap[0];
	tk->heap[0] = tk->heap[--tk->len];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, min = i;
		if (l < tk->len && entry_before(&tk->heap[l], &tk->heap[min]))
			min = l;
		if (r < tk->len && entry_before(&tk->heap[r], &tk->heap[min]))
			min = r;
		if (min == i)
			break;
		heap_swap(tk->heap, i, min);
		i = min;
	}
	return top;
}

/* `now + ms` without overflowing for absurd delays. */
static int64_t due_after(int64_t now_ns, int64_t delay_ms)
{
	if (delay_ms > (INT64_MAX - now_ns) / NS_PER_MS)
		return INT64_MAX;
	return now_ns + delay_ms * NS_PER_MS;
}

/* ---- workers ------------------------------------------------------------ */

/* A due job is stale when its token is cancelled or its session is no longer
 * current. Called without mu. */
static bool job_is_stale(const ap_ticker *tk, const ap_job *job)
{
	if (job->token && ap_token_is_cancelled(job->token))
		return true;
	if (tk->is_current && job->generation != 0 && job->address[0] != '\0'
	    && !tk->is_current(tk->ctx, job->address, job->generation))
		return true;
	return false;
}

static void *ticker_worker_main(void *arg)
{
	struct ticker_worker *w = arg;
	ap_ticker *tk = w->tk;
	char name[16];
	snprintf(name, sizeof(name), "ap-ticker-%d", w->index);
	pthread_setname_np(pthread_self(), name);

	pthread_mutex_lock(&tk->mu);
	for (;;) {
		/* Sleep until the earliest job is due or the pool stops. */
		while (!tk->stopping) {
			if (tk->len == 0) {
				int rc = pthread_cond_wait(&tk->cond, &tk->mu);
				AP_ASSERT(rc == 0);
				continue;
			}
			int64_t due = tk->heap[0].due_ns;
			if (due <= ap_clock_mono_ns())
				break;
			struct timespec until = ap_clock_ts_from_ns(due);
			int rc = pthread_cond_timedwait(&tk->cond, &tk->mu,
							&until);
			AP_ASSERT(rc == 0 || rc == ETIMEDOUT);
		}
		if (tk->stopping)
			break;

		struct ticker_entry e = heap_pop_locked(tk);
		tk->running++;
		/* Hand the rest of the queue to another worker. */
		if (tk->len > 0)
			pthread_cond_signal(&tk->cond);
		pthread_mutex_unlock(&tk->mu);

		bool stale = job_is_stale(tk, &e.job);
		int64_t again_ms = 0;
		if (!stale)
			again_ms = tk->run(tk->ctx, &e.job);
		/* A job cancelled while it ran is finished, not put back: it
		 * would only be dropped when next due. */
		bool reschedule = !stale && again_ms > 0
				  && !(e.job.token
				       && ap_token_is_cancelled(e.job.token));

		pthread_mutex_lock(&tk->mu);
		tk->running--;
		if (stale)
			tk->stats.dropped_stale++;
		else
			tk->stats.ran++;
		if (reschedule && !tk->stopping) {
			/* Room is guaranteed: see "Capacity" at the top. */
			e.due_ns = due_after(ap_clock_mono_ns(), again_ms);
			e.seq = tk->next_seq++;
			if (heap_push_locked(tk, &e) == 0)
				pthread_cond_signal(&tk->cond);
			continue;
		}
		pthread_mutex_unlock(&tk->mu);
		/* The job is finished: drop the pool's token reference
		 * unlocked, since it may be the last one. */
		ap_token_unref(e.job.token);
		pthread_mutex_lock(&tk->mu);
	}
	pthread_mutex_unlock(&tk->mu);
	return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

int ap_ticker_open(ap_ticker **out, int threads, ap_ticker_run_fn run,
		   ap_ticker_current_fn is_current, void *ctx)
{
	if (!out || !run || threads < 1 || threads > TICKER_MAX_THREADS)
		return AP_EINVAL;
	*out = NULL;
	int rc = AP_ENOMEM;
	ap_ticker *tk = calloc(1, sizeof(*tk));
	if (!tk)
		return AP_ENOMEM;
	tk->run = run;
	tk->is_current = is_current;
	tk->ctx = ctx;
	tk->nthreads = threads;

	if (pthread_mutex_init(&tk->mu, NULL) != 0) {
		rc = AP_EIO;
		goto fail;
	}
	tk->have_mu = true;
	if (ap_clock_cond_init(&tk->cond) != 0) {
		rc = AP_EIO;
		goto fail;
	}
	tk->have_cond = true;
	tk->workers = calloc((size_t)threads, sizeof(*tk->workers));
	if (!tk->workers)
		goto fail;
	tk->cap = 64;
	tk->heap = malloc(tk->cap * sizeof(*tk->heap));
	if (!tk->heap)
		goto fail;
	*out = tk;
	return 0;

fail:
	ap_ticker_close(tk);
	return rc;
}

int ap_ticker_start(ap_ticker *tk)
{
	AP_ASSERT(tk != NULL);
	pthread_mutex_lock(&tk->mu);
	bool can_start = !tk->started && !tk->stopping;
	tk->started = true;
	pthread_mutex_unlock(&tk->mu);
	if (!can_start)
		return AP_ESTATE;

	for (int i = 0; i < tk->nthreads; i++) {
		struct ticker_worker *w = &tk->workers[i];
		w->tk = tk;
		w->index = i;
		if (pthread_create(&w->thread, NULL, ticker_worker_main, w)
		    != 0) {
			/* Join the ones already running; the pool is then
			 * stopped and only good for close(). */
			ap_ticker_stop(tk);
			return AP_EIO;
		}
		tk->nstarted = i + 1;
	}
	return 0;
}

void ap_ticker_stop(ap_ticker *tk)
{
	if (!tk || !tk->have_cond) /* half-open: no thread, no job */
		return;
	pthread_mutex_lock(&tk->mu);
	bool first = !tk->stopping;
	tk->stopping = true;
	if (first)
		pthread_cond_broadcast(&tk->cond);
	pthread_mutex_unlock(&tk->mu);
	/* Only the first call joins and drains; a second (or concurrent)
	 * call returns at once. */
	if (!first)
		return;

	for (int i = 0; i < tk->nstarted; i++) {
		/* A job calling stop() on its own pool would join itself. */
		AP_ASSERT(!pthread_equal(tk->workers[i].thread,
					 pthread_self()));
		pthread_join(tk->workers[i].thread, NULL);
	}
	tk->nstarted = 0;

	/* No worker is left to touch the heap, and schedule() refuses new
	 * jobs once stopping is set: take the queue and release its token
	 * references outside the lock. */
	pthread_mutex_lock(&tk->mu);
	struct ticker_entry *queued = tk->heap;
	size_t n = tk->len;
	tk->heap = NULL;
	tk->len = tk->cap = 0;
	pthread_mutex_unlock(&tk->mu);
	for (size_t i = 0; i < n; i++)
		ap_token_unref(queued[i].job.token);
	free(queued);
}

void ap_ticker_close(ap_ticker *tk)
{
	if (!tk)
		return;
	ap_ticker_stop(tk);
	free(tk->heap); /* only left by an open() that failed */
	free(tk->workers);
	if (tk->have_cond)
		pthread_cond_destroy(&tk->cond);
	if (tk->have_mu)
		pthread_mutex_destroy(&tk->mu);
	free(tk);
}

/* ---- jobs ----------------------------------------------------------------- */

int ap_ticker_schedule(ap_ticker *tk, const ap_job *job, int64_t delay_ms)
{
	AP_ASSERT(tk != NULL);
	if (!job || delay_ms < 0)
		return AP_EINVAL;

	struct ticker_entry e;
	e.job = *job;
	/* The address must be a string even if the caller filled all 43. */
	e.job.address[sizeof(e.job.address) - 1] = '\0';
	if (e.job.token)
		ap_token_ref(e.job.token);

	int rc = 0;
	pthread_mutex_lock(&tk->mu);
	if (tk->stopping) {
		rc = AP_ESTATE;
		goto out_unlock;
	}
	size_t need = tk->len + tk->running + 1;
	if (need > tk->cap) {
		size_t cap = tk->cap ? tk->cap * 2 : 64;
		while (cap < need)
			cap *= 2;
		struct ticker_entry *heap = realloc(tk->heap,
						    cap * sizeof(*heap));
		if (!heap) {
			rc = AP_ENOMEM;
			goto out_unlock;
		}
		tk->heap = heap;
		tk->cap = cap;
	}
	e.due_ns = due_after(ap_clock_mono_ns(), delay_ms);
	e.seq = tk->next_seq++;
	tk->stats.scheduled++;
	/* Only a new earliest job changes what a sleeping worker waits for. */
	if (heap_push_locked(tk, &e) == 0)
		pthread_cond_signal(&tk->cond);

out_unlock:
	pthread_mutex_unlock(&tk->mu);
	if (rc != 0)
		ap_token_unref(e.job.token);
	return rc;
}

size_t ap_ticker_live_jobs(ap_ticker *tk, const char *address)
{
	AP_ASSERT(tk != NULL && address != NULL);
	size_t live = 0;
	pthread_mutex_lock(&tk->mu);
	for (size_t i = 0; i < tk->len; i++) {
		const ap_job *job = &tk->heap[i].job;
		if (strncmp(job->address, address, sizeof(job->address)) != 0)
			continue;
		if (job->token && ap_token_is_cancelled(job->token))
			continue;
		live++;
	}
	pthread_mutex_unlock(&tk->mu);
	return live;
}

void ap_ticker_get_stats(ap_ticker *tk, ap_ticker_stats *out)
{
	AP_ASSERT(tk != NULL && out != NULL);
	pthread_mutex_lock(&tk->mu);
	*out = tk->stats;
	out->queued = tk->len;
	pthread_mutex_unlock(&tk->mu);
}
