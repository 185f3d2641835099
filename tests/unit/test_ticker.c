/* Unit tests for the ticker pool (src/ticker.c).
 *
 * Timing-sensitive tests hold every worker inside a "gate" job (a job that
 * blocks until the test opens the gate) while they queue and cancel jobs, so
 * nothing can fall due behind the test's back; results are then awaited
 * with a bounded poll and a deadline, never a fixed sleep. Token leaks are
 * caught by the address,undefined build, races by the thread build.
 *
 * cmocka assertions are made on the main thread only; worker and helper
 * threads record what they saw and the main thread checks it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <time.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/ticker.h"
#include "ap/token.h"

#define NS_PER_MS INT64_C(1000000)
#define WAIT_MS 30000 /* generous: sanitizer builds on a busy machine */

static const char ADDR[] = "0x997e5d40a32c44a3d93e59fc55c4fd20b7d2d49d";
static const char ADDR2[] = "0x00000000000000000000000000000000000000aa";
static const char GATE[] = "gate";

/* ---- fixture -------------------------------------------------------------- */

#define MAX_RUNS 256

struct run_record {
	ap_job_kind kind;
	uint64_t generation;
	char address[43];
	ap_token *token; /* compared, never dereferenced after the run */
};

struct fx {
	pthread_mutex_t mu; /* guards everything below but the atomics */
	pthread_cond_t cond;
	bool gate_open;
	int gate_blocked;
	struct run_record runs[MAX_RUNS];
	size_t nruns;
	bool overflow;

	/* periodic behaviour for AP_JOB_RESYNC jobs */
	int64_t periodic_ms;  /* > 0: reschedule after this delay */
	int periodic_limit;   /* ... until this many runs (0: forever) */
	int cancel_on_run;    /* cancel the job's token on this run (0: no) */
	int resync_runs;

	_Atomic uint64_t current_gen; /* is_current: generation == this */
	atomic_int is_current_calls;
};

static struct fx *fx_new(void)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(pthread_mutex_init(&f->mu, NULL), 0);
	assert_int_equal(ap_clock_cond_init(&f->cond), 0);
	atomic_init(&f->current_gen, 0);
	atomic_init(&f->is_current_calls, 0);
	return f;
}

static void fx_free(struct fx *f)
{
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

static int64_t fx_run(void *ctx, const ap_job *job)
{
	struct fx *f = ctx;
	int64_t again = 0;
	pthread_mutex_lock(&f->mu);
	if (strcmp(job->address, GATE) == 0) {
		f->gate_blocked++;
		pthread_cond_broadcast(&f->cond);
		while (!f->gate_open)
			pthread_cond_wait(&f->cond, &f->mu);
		f->gate_blocked--;
		pthread_mutex_unlock(&f->mu);
		return 0;
	}
	if (f->nruns < MAX_RUNS) {
		struct run_record *r = &f->runs[f->nruns++];
		r->kind = job->kind;
		r->generation = job->generation;
		memcpy(r->address, job->address, sizeof(r->address));
		r->token = job->token;
	} else {
		f->overflow = true;
	}
	bool cancel = false;
	if (job->kind == AP_JOB_RESYNC && f->periodic_ms > 0) {
		int n = ++f->resync_runs;
		if (f->periodic_limit == 0 || n < f->periodic_limit)
			again = f->periodic_ms;
		cancel = f->cancel_on_run == n;
	}
	pthread_mutex_unlock(&f->mu);
	/* Called out of our lock, as the engine would. */
	if (cancel)
		ap_token_cancel(job->token, "cancelled by the job");
	return again;
}

static bool fx_is_current(void *ctx, const char *address, uint64_t gen)
{
	struct fx *f = ctx;
	atomic_fetch_add(&f->is_current_calls, 1);
	(void)address;
	return gen == atomic_load(&f->current_gen);
}

static size_t fx_nruns(struct fx *f)
{
	pthread_mutex_lock(&f->mu);
	size_t n = f->nruns;
	pthread_mutex_unlock(&f->mu);
	return n;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { 0, ms * NS_PER_MS };
	nanosleep(&ts, NULL);
}

/* Poll (1 ms) until every scheduled job has been run or dropped and the
 * queue is empty, or the deadline passes. Returns the final stats. */
static bool wait_all_done(ap_ticker *tk, uint64_t scheduled,
			  ap_ticker_stats *st)
{
	int64_t deadline = ap_clock_mono_ms() + WAIT_MS;
	for (;;) {
		ap_ticker_get_stats(tk, st);
		if (st->scheduled == scheduled && st->queued == 0
		    && st->ran + st->dropped_stale == scheduled)
			return true;
		if (ap_clock_mono_ms() > deadline)
			return false;
		sleep_ms(1);
	}
}

/* Occupy all `n` workers with gate jobs and wait until they are inside. */
static void gate_close_and_block(struct fx *f, ap_ticker *tk, int n)
{
	pthread_mutex_lock(&f->mu);
	f->gate_open = false;
	pthread_mutex_unlock(&f->mu);
	ap_job gate = { .kind = AP_JOB_GRACE };
	strcpy(gate.address, GATE);
	for (int i = 0; i < n; i++)
		assert_int_equal(ap_ticker_schedule(tk, &gate, 0), 0);

	struct timespec until = ap_clock_deadline_ms(WAIT_MS);
	pthread_mutex_lock(&f->mu);
	int rc = 0;
	while (f->gate_blocked < n && rc == 0)
		rc = pthread_cond_timedwait(&f->cond, &f->mu, &until);
	int blocked = f->gate_blocked;
	pthread_mutex_unlock(&f->mu);
	assert_int_equal(blocked, n);
}

static void gate_open(struct fx *f)
{
	pthread_mutex_lock(&f->mu);
	f->gate_open = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
}

static ap_job make_job(ap_job_kind kind, const char *address, uint64_t gen,
		       ap_token *token)
{
	ap_job job;
	memset(&job, 0, sizeof(job));
	job.kind = kind;
	snprintf(job.address, sizeof(job.address), "%s", address);
	job.generation = gen;
	job.token = token;
	return job;
}

/* ---- lifecycle ------------------------------------------------------------- */

static void test_open_invalid_and_close_null(void **state)
{
	(void)state;
	ap_ticker *tk = NULL;
	assert_int_equal(ap_ticker_open(&tk, 0, fx_run, NULL, NULL),
			 AP_EINVAL);
	assert_int_equal(ap_ticker_open(&tk, 2, NULL, NULL, NULL), AP_EINVAL);
	assert_int_equal(ap_ticker_open(NULL, 2, fx_run, NULL, NULL),
			 AP_EINVAL);
	ap_ticker_close(NULL);
	ap_ticker_stop(NULL);

	/* Open and close without ever starting. */
	assert_int_equal(ap_ticker_open(&tk, 2, fx_run, NULL, NULL), 0);
	assert_non_null(tk);
	ap_job job = make_job(AP_JOB_GRACE, "", 0, NULL);
	assert_int_equal(ap_ticker_schedule(tk, &job, -1), AP_EINVAL);
	ap_ticker_close(tk);
}

/* ---- ordering -------------------------------------------------------------- */

static void test_due_order(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	ap_ticker *tk;
	/* One worker, so runs are serial and their order is the pop order. */
	assert_int_equal(ap_ticker_open(&tk, 1, fx_run, fx_is_current, f), 0);
	assert_int_equal(ap_ticker_start(tk), 0);
	assert_int_equal(ap_ticker_start(tk), AP_ESTATE);
	gate_close_and_block(f, tk, 1);

	/* id (carried in `generation`; no address, so is_current is not
	 * asked) and delay; gaps of 50 ms keep the expected order independent
	 * of how long the scheduling itself takes. */
	static const struct { uint64_t id; int64_t delay_ms; } plan[] = {
		{ 1, 150 }, { 2, 50 }, { 3, 100 }, { 4, 50 },
		{ 5, 0 },   { 6, 0 },  { 7, 100 }, { 8, 0 },
	};
	static const uint64_t expect[] = { 5, 6, 8, 2, 4, 3, 7, 1 };
	size_t n = sizeof(plan) / sizeof(plan[0]);
	for (size_t i = 0; i < n; i++) {
		ap_job job = make_job(AP_JOB_GRACE, "", plan[i].id, NULL);
		assert_int_equal(ap_ticker_schedule(tk, &job,
						    plan[i].delay_ms), 0);
	}
	gate_open(f);

	ap_ticker_stats st;
	assert_true(wait_all_done(tk, n + 1, &st));
	assert_int_equal(st.ran, n + 1);
	assert_int_equal(st.dropped_stale, 0);
	assert_int_equal(fx_nruns(f), n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(f->runs[i].generation, expect[i]);
	/* Jobs without an address never consult is_current. */
	assert_int_equal(atomic_load(&f->is_current_calls), 0);
	ap_ticker_close(tk);
	fx_free(f);
}

/* ---- drops ------------------------------------------------------------------ */

static void test_cancelled_token_dropped(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	atomic_store(&f->current_gen, 1);
	ap_ticker *tk;
	assert_int_equal(ap_ticker_open(&tk, 2, fx_run, fx_is_current, f), 0);
	assert_int_equal(ap_ticker_start(tk), 0);
	gate_close_and_block(f, tk, 2);

	ap_token *dead = ap_token_new(1);
	ap_token *live = ap_token_new(1);
	assert_non_null(dead);
	assert_non_null(live);
	ap_job a = make_job(AP_JOB_STABILIZE, ADDR, 1, dead);
	ap_job b = make_job(AP_JOB_RESYNC, ADDR, 1, live);
	assert_int_equal(ap_ticker_schedule(tk, &a, 20), 0);
	assert_int_equal(ap_ticker_schedule(tk, &b, 20), 0);
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 2);
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR2), 0);

	/* Cancelled before it is due: no longer live, and never run. */
	assert_true(ap_token_cancel(dead, "superseded"));
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 1);
	/* The pool holds its own references: drop ours now. */
	ap_token_unref(dead);
	ap_token_unref(live);
	gate_open(f);

	ap_ticker_stats st;
	assert_true(wait_all_done(tk, 4, &st));
	assert_int_equal(st.dropped_stale, 1);
	assert_int_equal(st.ran, 3); /* two gates and b */
	assert_int_equal(fx_nruns(f), 1);
	assert_int_equal(f->runs[0].kind, AP_JOB_RESYNC);
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 0);
	ap_ticker_close(tk);
	fx_free(f);
}

static void test_not_current_dropped(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	atomic_store(&f->current_gen, 2);
	ap_ticker *tk;
	assert_int_equal(ap_ticker_open(&tk, 2, fx_run, fx_is_current, f), 0);
	/* Jobs may be queued before start. */
	ap_token *t1 = ap_token_new(1), *t2 = ap_token_new(2);
	assert_non_null(t1);
	assert_non_null(t2);
	ap_job old = make_job(AP_JOB_STABILIZE, ADDR, 1, t1);   /* stale */
	ap_job cur = make_job(AP_JOB_STABILIZE, ADDR, 2, t2);   /* runs */
	ap_job nogen = make_job(AP_JOB_GRACE, ADDR, 0, NULL);   /* no check */
	ap_job noaddr = make_job(AP_JOB_GRACE, "", 1, NULL);    /* no check */
	assert_int_equal(ap_ticker_schedule(tk, &old, 0), 0);
	assert_int_equal(ap_ticker_schedule(tk, &cur, 0), 0);
	assert_int_equal(ap_ticker_schedule(tk, &nogen, 0), 0);
	assert_int_equal(ap_ticker_schedule(tk, &noaddr, 0), 0);
	/* Liveness is about tokens only: the stale generation still counts
	 * until it falls due, as do token-less jobs. */
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 3);
	ap_token_unref(t1);
	ap_token_unref(t2);
	assert_int_equal(ap_ticker_start(tk), 0);

	ap_ticker_stats st;
	assert_true(wait_all_done(tk, 4, &st));
	assert_int_equal(st.dropped_stale, 1);
	assert_int_equal(st.ran, 3);
	assert_int_equal(fx_nruns(f), 3);
	for (size_t i = 0; i < 3; i++)
		assert_false(f->runs[i].generation == 1
			     && strcmp(f->runs[i].address, ADDR) == 0);
	/* Asked exactly for the two jobs with an address and a generation. */
	assert_int_equal(atomic_load(&f->is_current_calls), 2);
	ap_ticker_close(tk);
	fx_free(f);
}

/* ---- periodic --------------------------------------------------------------- */

static void test_periodic_until_zero(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	f->periodic_ms = 5;
	f->periodic_limit = 5;
	atomic_store(&f->current_gen, 9);
	ap_ticker *tk;
	assert_int_equal(ap_ticker_open(&tk, 2, fx_run, fx_is_current, f), 0);
	assert_int_equal(ap_ticker_start(tk), 0);
	ap_token *t = ap_token_new(9);
	assert_non_null(t);
	ap_job job = make_job(AP_JOB_RESYNC, ADDR, 9, t);
	assert_int_equal(ap_ticker_schedule(tk, &job, 0), 0);

	/* One schedule() call, five runs: wait for the runs, then for the
	 * queue to be empty (the fifth run returned 0). */
	int64_t deadline = ap_clock_mono_ms() + WAIT_MS;
	ap_ticker_stats st;
	for (;;) {
		ap_ticker_get_stats(tk, &st);
		if (st.ran >= 5 && st.queued == 0)
			break;
		assert_true(ap_clock_mono_ms() < deadline);
		sleep_ms(1);
	}
	assert_int_equal(st.scheduled, 1);
	assert_int_equal(st.ran, 5);
	assert_int_equal(st.dropped_stale, 0);
	assert_int_equal(fx_nruns(f), 5);
	/* Same stamp every time. */
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(f->runs[i].kind, AP_JOB_RESYNC);
		assert_int_equal(f->runs[i].generation, 9);
		assert_string_equal(f->runs[i].address, ADDR);
		assert_ptr_equal(f->runs[i].token, t);
	}
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 0);
	ap_ticker_close(tk);
	ap_token_unref(t);
	fx_free(f);
}

static void test_periodic_stops_when_cancelled(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	f->periodic_ms = 2;
	f->periodic_limit = 0; /* forever ... */
	f->cancel_on_run = 3;  /* ... until the job cancels its own token */
	atomic_store(&f->current_gen, 4);
	ap_ticker *tk;
	assert_int_equal(ap_ticker_open(&tk, 2, fx_run, fx_is_current, f), 0);
	assert_int_equal(ap_ticker_start(tk), 0);
	ap_token *t = ap_token_new(4);
	assert_non_null(t);
	ap_job job = make_job(AP_JOB_RESYNC, ADDR, 4, t);
	assert_int_equal(ap_ticker_schedule(tk, &job, 0), 0);
	ap_token_unref(t); /* only the pool holds it now */

	/* Cancelled during its third run: finished, not put back, not
	 * counted as a drop. */
	ap_ticker_stats st;
	int64_t deadline = ap_clock_mono_ms() + WAIT_MS;
	for (;;) {
		ap_ticker_get_stats(tk, &st);
		if (st.ran >= 3 && st.queued == 0)
			break;
		assert_true(ap_clock_mono_ms() < deadline);
		sleep_ms(1);
	}
	assert_int_equal(st.ran, 3);
	assert_int_equal(st.dropped_stale, 0);
	assert_int_equal(fx_nruns(f), 3);
	ap_ticker_close(tk);
	fx_free(f);
}

/* ---- the ticker race (SPEC failure 1) ------------------------------------ */

#define RECONNECTS 100

static void test_reconnect_race(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	ap_ticker *tk;
	assert_int_equal(ap_ticker_open(&tk, 2, fx_run, fx_is_current, f), 0);
	assert_int_equal(ap_ticker_start(tk), 0);
	gate_close_and_block(f, tk, 2);

	/* 100 reconnects of one operator, as the engine does them: cancel
	 * the previous session's token, make the new generation current,
	 * queue the new session's stabilization deadline and resync tick. */
	ap_token *prev = NULL;
	for (uint64_t g = 1; g <= RECONNECTS; g++) {
		if (prev) {
			assert_true(ap_token_cancel(prev, "superseded"));
			ap_token_unref(prev);
		}
		ap_token *t = ap_token_new(g);
		assert_non_null(t);
		atomic_store(&f->current_gen, g);
		ap_job stab = make_job(AP_JOB_STABILIZE, ADDR, g, t);
		ap_job resync = make_job(AP_JOB_RESYNC, ADDR, g, t);
		assert_int_equal(ap_ticker_schedule(tk, &stab, 50), 0);
		assert_int_equal(ap_ticker_schedule(tk, &resync, 60), 0);
		/* Never more than one live pair for the address. */
		assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 2);
		prev = t;
	}
	ap_ticker_stats st;
	ap_ticker_get_stats(tk, &st);
	assert_int_equal(st.queued, 2 * RECONNECTS);
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 2);

	gate_open(f);
	uint64_t scheduled = 2 * RECONNECTS + 2;
	assert_true(wait_all_done(tk, scheduled, &st));
	assert_int_equal(st.dropped_stale, 2 * (RECONNECTS - 1));
	assert_int_equal(st.ran, 2 + 2);
	/* Only the last generation's pair ran, once each. */
	assert_int_equal(fx_nruns(f), 2);
	int stabilized = 0, resynced = 0;
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(f->runs[i].generation, RECONNECTS);
		assert_ptr_equal(f->runs[i].token, prev);
		stabilized += f->runs[i].kind == AP_JOB_STABILIZE;
		resynced += f->runs[i].kind == AP_JOB_RESYNC;
	}
	assert_int_equal(stabilized, 1);
	assert_int_equal(resynced, 1);
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 0);
	ap_token_unref(prev);
	ap_ticker_close(tk);
	fx_free(f);
}

/* ---- stop ---------------------------------------------------------------------- */

static void test_stop_releases_queued(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	f->periodic_ms = 1; /* a fast periodic job keeps a worker busy */
	atomic_store(&f->current_gen, 1);
	ap_ticker *tk;
	assert_int_equal(ap_ticker_open(&tk, 3, fx_run, fx_is_current, f), 0);
	assert_int_equal(ap_ticker_start(tk), 0);

	ap_token *busy = ap_token_new(1);
	assert_non_null(busy);
	ap_job tick = make_job(AP_JOB_RESYNC, ADDR2, 1, busy);
	assert_int_equal(ap_ticker_schedule(tk, &tick, 0), 0);
	ap_token_unref(busy);
	/* 50 far-future jobs, each holding the only reference to its token:
	 * if stop() did not release them the leak checker would fail. */
	for (int i = 0; i < 50; i++) {
		ap_token *t = ap_token_new(1);
		assert_non_null(t);
		ap_job job = make_job(AP_JOB_STABILIZE, ADDR, 1, t);
		assert_int_equal(ap_ticker_schedule(tk, &job, 60000), 0);
		ap_token_unref(t);
	}
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 50);

	/* Let the periodic job run a few times so stop() meets it busy. */
	int64_t deadline = ap_clock_mono_ms() + WAIT_MS;
	while (fx_nruns(f) < 3) {
		assert_true(ap_clock_mono_ms() < deadline);
		sleep_ms(1);
	}

	int64_t t0 = ap_clock_mono_ms();
	ap_ticker_stop(tk);
	/* Woke idle workers rather than waiting for a 60 s job. */
	assert_true(ap_clock_mono_ms() - t0 < 2000);

	ap_ticker_stats st;
	ap_ticker_get_stats(tk, &st);
	assert_int_equal(st.queued, 0);
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR), 0);
	assert_int_equal(ap_ticker_live_jobs(tk, ADDR2), 0);
	/* Nothing runs after stop() returned (workers are joined). */
	size_t runs = fx_nruns(f);
	assert_true(runs >= 3);
	for (size_t i = 0; i < runs; i++)
		assert_int_equal(f->runs[i].kind, AP_JOB_RESYNC);

	ap_job late = make_job(AP_JOB_GRACE, "", 0, NULL);
	assert_int_equal(ap_ticker_schedule(tk, &late, 0), AP_ESTATE);
	ap_token *t = ap_token_new(1);
	assert_non_null(t);
	late.token = t;
	/* A refused job does not keep the reference it would have taken. */
	assert_int_equal(ap_ticker_schedule(tk, &late, 0), AP_ESTATE);
	ap_token_unref(t);

	ap_ticker_stop(tk); /* idempotent */
	assert_int_equal(ap_ticker_start(tk), AP_ESTATE);
	ap_ticker_close(tk);
	assert_int_equal(fx_nruns(f), runs);
	fx_free(f);
}

static void test_close_unstarted_releases_queued(void **state)
{
	(void)state;
	struct fx *f = fx_new();
	ap_ticker *tk;
	assert_int_equal(ap_ticker_open(&tk, 2, fx_run, fx_is_current, f), 0);
	for (int i = 0; i < 300; i++) { /* enough to grow the heap */
		ap_token *t = ap_token_new(1);
		assert_non_null(t);
		ap_job job = make_job(AP_JOB_STABILIZE, ADDR, 1, t);
		assert_int_equal(ap_ticker_schedule(tk, &job, i), 0);
		ap_token_unref(t);
	}
	ap_ticker_stats st;
	ap_ticker_get_stats(tk, &st);
	assert_int_equal(st.queued, 300);
	ap_ticker_close(tk); /* never started: stop + free, leak-checked */
	assert_int_equal(fx_nruns(f), 0);
	fx_free(f);
}

/* ---- threads ---------------------------------------------------------------- */

/* Count this process's threads whose name starts with "ap-ticker-", and
 * note which indexes were seen. -1 when /proc is not available. */
static int count_ticker_threads(unsigned *seen_mask)
{
	DIR *dir = opendir("/proc/self/task");
	if (!dir)
		return -1;
	int n = 0;
	*seen_mask = 0;
	struct dirent *de;
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char path[300], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 de->d_name);
		FILE *fp = fopen(path, "r");
		if (!fp)
			continue; /* the thread just exited */
		if (!fgets(comm, sizeof(comm), fp))
			comm[0] = '\0';
		fclose(fp);
		int index;
		if (sscanf(comm, "ap-ticker-%d", &index) == 1) {
			n++;
			if (index >= 0 && index < 32)
				*seen_mask |= 1u << index;
		}
	}
	closedir(dir);
	return n;
}

static void test_threads_named_and_joined(void **state)
{
	(void)state;
	unsigned mask;
	if (count_ticker_threads(&mask) < 0)
		skip();
	assert_int_equal(count_ticker_threads(&mask), 0);
	struct fx *f = fx_new();
	ap_ticker *tk;
	assert_int_equal(ap_ticker_open(&tk, 3, fx_run, fx_is_current, f), 0);
	assert_int_equal(ap_ticker_start(tk), 0);
	/* Each worker names itself when it starts: wait for all three. */
	int64_t deadline = ap_clock_mono_ms() + WAIT_MS;
	while (count_ticker_threads(&mask) != 3) {
		assert_true(ap_clock_mono_ms() < deadline);
		sleep_ms(1);
	}
	assert_int_equal(mask, 0x7); /* ap-ticker-0, -1 and -2 */
	ap_ticker_stop(tk);
	/* Joined: no ticker thread is left once stop() returns. */
	assert_int_equal(count_ticker_threads(&mask), 0);
	ap_ticker_close(tk);
	fx_free(f);
}

/* ---- stress -------------------------------------------------------------------- */

#define STRESS_THREADS 4
#define STRESS_PER_THREAD 2500

struct stress {
	ap_ticker *tk;
	atomic_int runs;
	atomic_int failures;
	atomic_int must_run;  /* jobs that cannot be stale */
	atomic_int must_drop; /* jobs that are stale from the start */
};

struct stress_arg {
	struct stress *s;
	unsigned seed;
};

static int64_t stress_run(void *ctx, const ap_job *job)
{
	struct stress *s = ctx;
	atomic_fetch_add(&s->runs, 1);
	/* A job that runs was never stale when it was checked. */
	if (job->token && job->generation % 2 == 1
	    && strcmp(job->address, ADDR) == 0)
		atomic_fetch_add(&s->failures, 1);
	return 0;
}

static bool stress_is_current(void *ctx, const char *address, uint64_t gen)
{
	(void)ctx;
	(void)address;
	return gen % 2 == 0; /* odd generations are superseded */
}

static void *stress_thread(void *p)
{
	struct stress_arg *a = p;
	struct stress *s = a->s;
	unsigned seed = a->seed;
	for (int i = 0; i < STRESS_PER_THREAD; i++) {
		int64_t delay = rand_r(&seed) % 4;
		ap_token *t = NULL;
		ap_job job;
		int category = i % 5;
		switch (category) {
		case 0: /* live token, current generation: runs */
			t = ap_token_new(2);
			job = make_job(AP_JOB_RESYNC, ADDR2, 2, t);
			atomic_fetch_add(&s->must_run, 1);
			break;
		case 1: /* cancelled before scheduling: dropped */
			t = ap_token_new(2);
			if (t)
				ap_token_cancel(t, "gone");
			job = make_job(AP_JOB_STABILIZE, ADDR2, 2, t);
			atomic_fetch_add(&s->must_drop, 1);
			break;
		case 2: /* superseded generation: dropped */
			t = ap_token_new(3);
			job = make_job(AP_JOB_STABILIZE, ADDR, 3, t);
			atomic_fetch_add(&s->must_drop, 1);
			break;
		case 3: /* no session at all: runs */
			job = make_job(AP_JOB_GRACE, "", 0, NULL);
			atomic_fetch_add(&s->must_run, 1);
			break;
		default: /* cancelled while queued: either outcome */
			t = ap_token_new(2);
			job = make_job(AP_JOB_RESYNC, ADDR2, 2, t);
			break;
		}
		if (category != 3 && !t) {
			atomic_fetch_add(&s->failures, 1);
			continue;
		}
		if (ap_ticker_schedule(s->tk, &job, delay) != 0)
			atomic_fetch_add(&s->failures, 1);
		if (category == 4)
			ap_token_cancel(t, "raced");
		ap_token_unref(t);
	}
	return NULL;
}

static void run_stress(int workers)
{
	struct stress s;
	memset(&s, 0, sizeof(s));
	atomic_init(&s.runs, 0);
	atomic_init(&s.failures, 0);
	atomic_init(&s.must_run, 0);
	atomic_init(&s.must_drop, 0);
	assert_int_equal(ap_ticker_open(&s.tk, workers, stress_run,
					stress_is_current, &s), 0);
	assert_int_equal(ap_ticker_start(s.tk), 0);

	pthread_t th[STRESS_THREADS];
	struct stress_arg args[STRESS_THREADS];
	for (int i = 0; i < STRESS_THREADS; i++) {
		args[i].s = &s;
		args[i].seed = (unsigned)(i * 7919 + workers);
		assert_int_equal(pthread_create(&th[i], NULL, stress_thread,
						&args[i]), 0);
	}
	for (int i = 0; i < STRESS_THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);

	const uint64_t total = STRESS_THREADS * STRESS_PER_THREAD;
	ap_ticker_stats st;
	assert_true(wait_all_done(s.tk, total, &st));
	assert_int_equal(atomic_load(&s.failures), 0);
	assert_int_equal(st.scheduled, total);
	assert_int_equal(st.ran + st.dropped_stale, total);
	assert_int_equal(st.ran, (uint64_t)atomic_load(&s.runs));
	assert_true(st.ran >= (uint64_t)atomic_load(&s.must_run));
	assert_true(st.dropped_stale >= (uint64_t)atomic_load(&s.must_drop));
	assert_true(st.ran <= total - (uint64_t)atomic_load(&s.must_drop));
	ap_ticker_close(s.tk);
}

static void test_stress_2_workers(void **state)
{
	(void)state;
	run_stress(2);
}

static void test_stress_4_workers(void **state)
{
	(void)state;
	run_stress(4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_invalid_and_close_null),
		cmocka_unit_test(test_due_order),
		cmocka_unit_test(test_cancelled_token_dropped),
		cmocka_unit_test(test_not_current_dropped),
		cmocka_unit_test(test_periodic_until_zero),
		cmocka_unit_test(test_periodic_stops_when_cancelled),
		cmocka_unit_test(test_reconnect_race),
		cmocka_unit_test(test_stop_releases_queued),
		cmocka_unit_test(test_close_unstarted_releases_queued),
		cmocka_unit_test(test_threads_named_and_joined),
		cmocka_unit_test(test_stress_2_workers),
		cmocka_unit_test(test_stress_4_workers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
