/* Unit tests for the cancellation token (src/token.c).
 *
 * Leaks and double frees are caught by the address,undefined build; data
 * races by the thread build. No test sleeps for a fixed time: waits are
 * bounded by deadlines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/token.h"

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)

static void test_ref_unref(void **state)
{
	(void)state;
	ap_token *t = ap_token_new(7);
	assert_non_null(t);
	/* ref returns the same token; two references, two unrefs. */
	assert_ptr_equal(ap_token_ref(t), t);
	ap_token_unref(t);
	/* Still alive: the second reference keeps it. */
	assert_false(ap_token_is_cancelled(t));
	assert_int_equal(ap_token_generation(t), 7);
	ap_token_unref(t);
	/* NULL is accepted. */
	ap_token_unref(NULL);
}

static void test_generation(void **state)
{
	(void)state;
	ap_token *t = ap_token_new(UINT64_MAX);
	assert_non_null(t);
	assert_true(ap_token_generation(t) == UINT64_MAX);
	ap_token *u = ap_token_new(0);
	assert_non_null(u);
	assert_true(ap_token_generation(u) == 0);
	/* Cancelling does not change the generation. */
	assert_true(ap_token_cancel(t, "x"));
	assert_true(ap_token_generation(t) == UINT64_MAX);
	ap_token_unref(t);
	ap_token_unref(u);
}

static void test_cancel_idempotent(void **state)
{
	(void)state;
	ap_token *t = ap_token_new(1);
	assert_non_null(t);
	assert_false(ap_token_is_cancelled(t));
	assert_null(ap_token_reason(t));

	/* The reason is copied: the caller's buffer may change or go away. */
	char buf[32];
	strcpy(buf, "superseded");
	assert_true(ap_token_cancel(t, buf));
	memset(buf, 'Z', sizeof(buf) - 1);
	assert_true(ap_token_is_cancelled(t));
	assert_string_equal(ap_token_reason(t), "superseded");

	/* A second cancel loses and leaves the reason alone. */
	assert_false(ap_token_cancel(t, "shutdown"));
	assert_true(ap_token_is_cancelled(t));
	assert_string_equal(ap_token_reason(t), "superseded");
	ap_token_unref(t);

	/* A NULL reason still cancels and reports some reason. */
	t = ap_token_new(2);
	assert_non_null(t);
	assert_true(ap_token_cancel(t, NULL));
	assert_non_null(ap_token_reason(t));
	assert_false(ap_token_cancel(t, "late"));
	ap_token_unref(t);
}

/* ---- concurrent cancel ------------------------------------------------- */

#define CANCEL_THREADS 8

struct cancel_race {
	ap_token *token;
	atomic_int ready;
	atomic_bool go;
	atomic_int winners;
	char reasons[CANCEL_THREADS][16];
	int won[CANCEL_THREADS];
};

struct cancel_arg {
	struct cancel_race *race;
	int index;
};

static void *cancel_thread(void *p)
{
	struct cancel_arg *a = p;
	struct cancel_race *r = a->race;
	atomic_fetch_add(&r->ready, 1);
	while (!atomic_load(&r->go))
		sched_yield(); /* all threads cancel at nearly the same time */
	bool won = ap_token_cancel(r->token, r->reasons[a->index]);
	r->won[a->index] = won;
	if (won)
		atomic_fetch_add(&r->winners, 1);
	return NULL;
}

static void test_concurrent_cancel(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		struct cancel_race r;
		memset(&r, 0, sizeof(r));
		r.token = ap_token_new((uint64_t)round + 1);
		assert_non_null(r.token);
		atomic_init(&r.ready, 0);
		atomic_init(&r.go, false);
		atomic_init(&r.winners, 0);

		pthread_t th[CANCEL_THREADS];
		struct cancel_arg args[CANCEL_THREADS];
		for (int i = 0; i < CANCEL_THREADS; i++) {
			snprintf(r.reasons[i], sizeof(r.reasons[i]),
				 "thread-%d", i);
			args[i].race = &r;
			args[i].index = i;
			assert_int_equal(pthread_create(&th[i], NULL,
							cancel_thread,
							&args[i]), 0);
		}
		while (atomic_load(&r.ready) < CANCEL_THREADS)
			sched_yield();
		atomic_store(&r.go, true);
		for (int i = 0; i < CANCEL_THREADS; i++)
			assert_int_equal(pthread_join(th[i], NULL), 0);

		assert_int_equal(atomic_load(&r.winners), 1);
		/* The reason kept is the winner's. */
		int winner = -1;
		for (int i = 0; i < CANCEL_THREADS; i++)
			if (r.won[i])
				winner = i;
		assert_true(winner >= 0);
		assert_string_equal(ap_token_reason(r.token),
				    r.reasons[winner]);
		ap_token_unref(r.token);
	}
}

/* ---- wait ---------------------------------------------------------------- */

static void test_wait_timeout(void **state)
{
	(void)state;
	ap_token *t = ap_token_new(1);
	assert_non_null(t);
	int64_t start = ap_clock_mono_ns();
	int64_t deadline = start + 20 * NS_PER_MS;
	assert_int_equal(ap_token_wait(t, deadline), AP_ETIMEDOUT);
	/* It did wait for the deadline (not earlier). */
	assert_true(ap_clock_mono_ns() >= deadline);
	/* A deadline already in the past times out at once. */
	assert_int_equal(ap_token_wait(t, 0), AP_ETIMEDOUT);
	assert_false(ap_token_is_cancelled(t));
	ap_token_unref(t);
}

static void test_wait_already_cancelled(void **state)
{
	(void)state;
	ap_token *t = ap_token_new(1);
	assert_non_null(t);
	assert_true(ap_token_cancel(t, "done"));
	/* Cancelled beats a deadline in the past and a forever wait. */
	assert_int_equal(ap_token_wait(t, 0), AP_ECANCELLED);
	assert_int_equal(ap_token_wait(t, -1), AP_ECANCELLED);
	ap_token_unref(t);
}

struct waiter {
	ap_token *token;
	int64_t deadline;
	atomic_bool waiting;
	int result;
	int64_t returned_ns;
};

static void *wait_thread(void *p)
{
	struct waiter *w = p;
	atomic_store(&w->waiting, true);
	w->result = ap_token_wait(w->token, w->deadline);
	w->returned_ns = ap_clock_mono_ns();
	ap_token_unref(w->token); /* the waiter's own reference */
	return NULL;
}

static void run_cancel_wakes_waiter(int64_t deadline)
{
	ap_token *t = ap_token_new(3);
	assert_non_null(t);
	struct waiter w = { .token = ap_token_ref(t), .deadline = deadline };
	atomic_init(&w.waiting, false);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, wait_thread, &w), 0);
	int64_t limit = ap_clock_mono_ns() + 10 * NS_PER_S;
	while (!atomic_load(&w.waiting)) {
		assert_true(ap_clock_mono_ns() < limit);
		sched_yield();
	}

	int64_t cancelled_at = ap_clock_mono_ns();
	assert_true(ap_token_cancel(t, "wake up"));
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(w.result, AP_ECANCELLED);
	/* Prompt, loosely: well before the 60 s deadline. */
	assert_true(w.returned_ns - cancelled_at < 2 * NS_PER_S);
	ap_token_unref(t);
}

static void test_wait_cancelled_by_other_thread(void **state)
{
	(void)state;
	/* With a far deadline and with none at all. */
	run_cancel_wakes_waiter(ap_clock_mono_ns() + 60 * NS_PER_S);
	run_cancel_wakes_waiter(-1);
}

/* ---- on_cancel ------------------------------------------------------------ */

struct counter {
	atomic_int calls;
	atomic_int order[4];
	atomic_int next;
};

static void count_call(void *arg)
{
	struct counter *c = arg;
	atomic_fetch_add(&c->calls, 1);
}

struct ordered {
	struct counter *c;
	int id;
};

static void record_order(void *arg)
{
	struct ordered *o = arg;
	int slot = atomic_fetch_add(&o->c->next, 1);
	if (slot < 4)
		atomic_store(&o->c->order[slot], o->id);
}

/* A callback may inspect the token: it is already marked cancelled. */
static void check_cancelled(void *arg)
{
	ap_token *t = arg;
	assert_true(ap_token_is_cancelled(t));
	assert_string_equal(ap_token_reason(t), "bye");
}

static void test_on_cancel_once(void **state)
{
	(void)state;
	struct counter c;
	memset(&c, 0, sizeof(c));
	ap_token *t = ap_token_new(1);
	assert_non_null(t);
	assert_int_equal(ap_token_on_cancel(t, count_call, &c), 0);
	assert_int_equal(ap_token_on_cancel(t, check_cancelled, t), 0);
	struct ordered o1 = { &c, 1 }, o2 = { &c, 2 };
	assert_int_equal(ap_token_on_cancel(t, record_order, &o1), 0);
	assert_int_equal(ap_token_on_cancel(t, record_order, &o2), 0);
	/* Not yet. */
	assert_int_equal(atomic_load(&c.calls), 0);

	assert_true(ap_token_cancel(t, "bye"));
	assert_int_equal(atomic_load(&c.calls), 1);
	/* Registration order. */
	assert_int_equal(atomic_load(&c.next), 2);
	assert_int_equal(atomic_load(&c.order[0]), 1);
	assert_int_equal(atomic_load(&c.order[1]), 2);

	/* A second cancel runs nothing again. */
	assert_false(ap_token_cancel(t, "again"));
	assert_int_equal(atomic_load(&c.calls), 1);
	assert_int_equal(atomic_load(&c.next), 2);

	/* Registering on a cancelled token runs the callback at once. */
	assert_int_equal(ap_token_on_cancel(t, count_call, &c), 0);
	assert_int_equal(atomic_load(&c.calls), 2);
	assert_false(ap_token_cancel(t, "and again"));
	assert_int_equal(atomic_load(&c.calls), 2);
	ap_token_unref(t);
}

static void test_on_cancel_never_cancelled(void **state)
{
	(void)state;
	struct counter c;
	memset(&c, 0, sizeof(c));
	ap_token *t = ap_token_new(1);
	assert_non_null(t);
	assert_int_equal(ap_token_on_cancel(t, count_call, &c), 0);
	/* Freed without cancel: the callback is dropped unrun (and its
	 * record freed, which the leak checker verifies). */
	ap_token_unref(t);
	assert_int_equal(atomic_load(&c.calls), 0);
}

/* Callbacks registered concurrently with the cancel each run exactly once:
 * either from the cancelling thread or from on_cancel itself. */
#define REG_THREADS 4
#define REG_PER_THREAD 200

struct reg_arg {
	ap_token *token;
	struct counter *c;
	atomic_bool *go;
	atomic_int *failures; /* cmocka asserts only on the main thread */
};

static void *register_thread(void *p)
{
	struct reg_arg *a = p;
	while (!atomic_load(a->go))
		sched_yield();
	for (int i = 0; i < REG_PER_THREAD; i++)
		if (ap_token_on_cancel(a->token, count_call, a->c) != 0)
			atomic_fetch_add(a->failures, 1);
	return NULL;
}

static void test_on_cancel_concurrent(void **state)
{
	(void)state;
	struct counter c;
	memset(&c, 0, sizeof(c));
	atomic_bool go;
	atomic_init(&go, false);
	atomic_int failures;
	atomic_init(&failures, 0);
	ap_token *t = ap_token_new(5);
	assert_non_null(t);
	pthread_t th[REG_THREADS];
	struct reg_arg a = { t, &c, &go, &failures };
	for (int i = 0; i < REG_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, register_thread,
						&a), 0);
	atomic_store(&go, true);
	assert_true(ap_token_cancel(t, "mid-registration"));
	for (int i = 0; i < REG_THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	assert_int_equal(atomic_load(&failures), 0);
	assert_int_equal(atomic_load(&c.calls), REG_THREADS * REG_PER_THREAD);
	ap_token_unref(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ref_unref),
		cmocka_unit_test(test_generation),
		cmocka_unit_test(test_cancel_idempotent),
		cmocka_unit_test(test_concurrent_cancel),
		cmocka_unit_test(test_wait_timeout),
		cmocka_unit_test(test_wait_already_cancelled),
		cmocka_unit_test(test_wait_cancelled_by_other_thread),
		cmocka_unit_test(test_on_cancel_once),
		cmocka_unit_test(test_on_cancel_never_cancelled),
		cmocka_unit_test(test_on_cancel_concurrent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
