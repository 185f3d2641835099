/* The ticker pool (SPEC section 1): a fixed set of threads sharing one timer
 * queue for every session's stabilization deadline and periodic resync tick.
 * There is no thread per operator.
 *
 * Each job is stamped with (address, generation, token reference). When a
 * job falls due, the pool drops it without running it if its token is
 * cancelled or if the owner's `is_current(address, generation)` says the
 * generation is no longer current; the drop is counted. A job that ran may
 * reschedule itself by returning a positive delay (the periodic tick).
 *
 * The owner (the engine) re-checks the generation under its own lock inside
 * the job, because a session may be superseded between the pool's check and
 * the run.
 *
 * Jobs fall due in due-time order, FIFO among equal due times. Workers run
 * jobs concurrently and the pool does not serialise them per address: two
 * workers may run jobs of different sessions (or of the same one) at once.
 * Worker threads are named "ap-ticker-0" .. "ap-ticker-<threads-1>".
 *
 * Lock rule: one mutex guards the heap, the counters and the stopping flag;
 * one CLOCK_MONOTONIC condvar wakes the workers. Job callbacks and
 * is_current are always called without the mutex held. */
#ifndef AP_TICKER_H
#define AP_TICKER_H

#include <stddef.h>
#include <stdint.h>

#include "ap/token.h"

typedef struct ap_ticker ap_ticker;

typedef enum {
	AP_JOB_STABILIZE = 1, /* the session becomes ready */
	AP_JOB_RESYNC = 2,    /* periodic re-send of owned, unsynced tasks */
	AP_JOB_GRACE = 3,     /* end of the restart grace window (no session) */
	AP_JOB_REPAIR = 4,    /* periodic engine-wide repair pass (no session) */
} ap_job_kind;

typedef struct ap_job {
	ap_job_kind kind;
	char address[43];    /* "" for jobs that belong to no session */
	uint64_t generation; /* 0 for jobs that belong to no session */
	ap_token *token;     /* reference held by the job; NULL allowed */
} ap_job;

/* Run a due job. Return > 0 to run it again that many ms later (same stamp),
 * 0 to finish it. Called on a pool thread without any pool lock. */
typedef int64_t (*ap_ticker_run_fn)(void *ctx, const ap_job *job);
/* True while `generation` is the current session of `address`. */
typedef bool (*ap_ticker_current_fn)(void *ctx, const char *address,
				     uint64_t generation);

typedef struct ap_ticker_stats {
	uint64_t scheduled;     /* ap_ticker_schedule calls that queued a job */
	uint64_t ran;           /* runs; a periodic job counts once per run */
	uint64_t dropped_stale; /* cancelled token or generation not current */
	size_t queued;          /* jobs in the queue now */
	/* Jobs discarded by ap_ticker_stop are in none of these counters. A
	 * periodic job whose token was cancelled while it ran is finished
	 * (counted in `ran`), not put back. */
} ap_ticker_stats;

/* Create a pool of `threads` workers (not started). Returns 0 or AP_ENOMEM /
 * AP_EINVAL. */
int ap_ticker_open(ap_ticker **out, int threads, ap_ticker_run_fn run,
		   ap_ticker_current_fn is_current, void *ctx);
/* Start the workers. Returns 0, AP_ESTATE if already started or stopped,
 * or AP_EIO if a thread could not be created (the pool is then stopped). */
int ap_ticker_start(ap_ticker *tk);
/* Stop and join the workers; queued jobs are dropped (their token
 * references released). A job running at that moment finishes first and is
 * not put back. Idempotent: a second (or concurrent) call returns at once.
 * Must not be called from a job (it would join its own thread: aborts). */
void ap_ticker_stop(ap_ticker *tk);
/* Stops if needed and frees; NULL accepted. */
void ap_ticker_close(ap_ticker *tk);

/* Queue `job` to run `delay_ms` from now (jobs may be queued before start).
 * The pool takes its own reference on job->token; the caller keeps its own.
 * Thread-safe, and callable from a job. Returns 0, AP_EINVAL (negative
 * delay), AP_ENOMEM, or AP_ESTATE once stopped. */
int ap_ticker_schedule(ap_ticker *tk, const ap_job *job, int64_t delay_ms);

/* Jobs queued for `address` whose token is live (not cancelled), as of now.
 * A job that a worker is running at this moment is not queued and is not
 * counted (a periodic job counts again once it is put back); a job with no
 * token counts as live; a job whose generation is no longer current still
 * counts until it falls due. For tests and introspection. Thread-safe. */
size_t ap_ticker_live_jobs(ap_ticker *tk, const char *address);
void ap_ticker_get_stats(ap_ticker *tk, ap_ticker_stats *out);

#endif
