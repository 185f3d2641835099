/*
 * End to end (issue 5, point 6; SPEC sections 3, 4 and 7): the real daemon
 * and three real `ap operator` processes, tasks made with `ap task create`,
 * checked with ListTasks, the operators' own logs and `ap status --json`.
 *
 *  1. Three operators ready, 300 tasks: 100 each.
 *  2. SIGKILL one operator. Its 100 tasks must be owned by the other two,
 *     which keep their own (no churn), nothing orphaned. The bound printed
 *     is from the kill to the first ListTasks showing no task owned by the
 *     killed operator; the time until both survivors' logs show every
 *     moved task subscribed is printed too.
 *  3. Restart it. Once ready it takes nothing from the others (no churn,
 *     and there are no orphans to reclaim) but, being the least loaded, it
 *     gets the 30 tasks created next, and subscribes to them.
 *  4. SIGKILL the daemon. `ap status --json` on the database left behind
 *     shows all 330 tasks with their owners (kill -9 loses no created task
 *     or committed assignment); restart it on the same directory and port;
 *     the operators reconnect by themselves and, within restart_grace_ms,
 *     each owns and is streamed exactly its tasks of before. `ap status
 *     --json` and ListTasks then agree: every task once, one owner each,
 *     the owners' counts summing to the owned tasks.
 *  5. SIGTERM stops every operator (exit 0) and the daemon (exit 0).
 *
 * Every wait is bounded (TD_WAIT_MS, generous for the sanitizer builds).
 * Operators run with auth.mode "none" (key_file ""); signature auth has
 * its own tests and the demo (tools/demo) uses it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "daemon.h"
#include "itest.h"
#include "proc.h"

#define N_OPS 3
#define N_TASKS 300
#define N_NEW 30

typedef struct e2e {
	td_daemon *d;
	char addr[N_OPS][43];
	char conf[N_OPS][PATH_MAX];
	char log[N_OPS][PATH_MAX];
	pid_t pid[N_OPS];
} e2e;

/* The last `lines` lines of a file, on stderr. */
static void dump_tail(const char *path, int lines)
{
	pr_result r;
	char n[16];
	snprintf(n, sizeof n, "%d", lines);
	char *argv[] = { (char *)"/usr/bin/tail", (char *)"-n", n, (char *)path, NULL };
	pr_run(&r, NULL, 10000, argv);
	fprintf(stderr, "---- last %d lines of %s ----\n%s---- end ----\n", lines, path, r.out);
	pr_free(&r);
}

static int teardown(void **state)
{
	e2e *t = *state;
	if (!t)
		return 0;
	for (int i = 0; i < N_OPS; i++) {
		if (t->pid[i] > 0)
			pr_kill(t->pid[i]);
		if (t->d && !t->d->passed && t->log[i][0])
			dump_tail(t->log[i], 25);
	}
	td_destroy(t->d);
	free(t);
	*state = NULL;
	return 0;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	char *buf = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&buf, &len);
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		fwrite(chunk, 1, n, mem);
	fclose(f);
	fclose(mem);
	return buf;
}

static long file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

/* How many of ids[0..n) the operator's log shows subscribed (the
 * operator's "✅ Created new subscription during update task_id=ID ..."
 * line) after byte `from`. */
static size_t subscribed(const char *log, long from, char (*ids)[65], size_t n)
{
	char *text = read_file(log);
	size_t len = strlen(text), found = 0;
	const char *tail = text + ((size_t)from < len ? (size_t)from : len);
	for (size_t i = 0; i < n; i++) {
		char needle[96];
		snprintf(needle, sizeof needle, "Created new subscription during update task_id=%s ",
			 ids[i]);
		found += strstr(tail, needle) != NULL;
	}
	free(text);
	return found;
}

/* Wait until the log shows all n ids subscribed after `from`. */
static bool wait_subscribed(const char *log, long from, char (*ids)[65], size_t n,
			    int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		size_t got = subscribed(log, from, ids, n);
		if (got == n)
			return true;
		if (ap_clock_mono_ms() > deadline) {
			fprintf(stderr, "%s shows %zu of %zu tasks subscribed\n", log, got, n);
			return false;
		}
		it_sleep_ms(20);
	}
}

/* The ids `owner` owns in a listing, copied into a malloc'd array. */
static size_t ids_of(const it_task *tasks, size_t n, const char *owner, char (**out)[65])
{
	*out = calloc(n ? n : 1, sizeof **out);
	assert_non_null(*out);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(tasks[i].owner, owner) == 0)
			snprintf((*out)[k++], 65, "%s", tasks[i].id);
	return k;
}

static void start_op(e2e *t, int i)
{
	char *argv[] = { (char *)pr_ap_path(), (char *)"--config", t->conf[i], (char *)"operator",
			 NULL };
	assert_int_equal(t->pid[i], 0);
	t->pid[i] = pr_spawn(t->log[i], argv);
	assert_true(t->pid[i] > 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* Pin the daemon's operator port, so that a restart listens where the
 * operators reconnect to. */
static void pin_port(td_daemon *d)
{
	char *conf = read_file(d->conf_path);
	const char *from = "listen = \"127.0.0.1:0\";";
	char *at = strstr(conf, from);
	assert_non_null(at);
	char *out = NULL;
	assert_true(asprintf(&out, "%.*slisten = \"127.0.0.1:%d\";%s", (int)(at - conf), conf,
			     d->port, at + strlen(from)) > 0);
	write_file(d->conf_path, out);
	free(out);
	free(conf);
}

/* A listing's owner of each task, in id order, or asserts. */
static size_t snapshot(td_daemon *d, it_task **out)
{
	size_t n = it_list_tasks(d->admin, out);
	for (size_t i = 1; i < n; i++)
		if (strcmp((*out)[i - 1].id, (*out)[i].id) >= 0)
			fail_msg("ListTasks lists %s after %s: not unique, id order",
				 (*out)[i].id, (*out)[i - 1].id);
	return n;
}

static void check_status(td_daemon *d, long total, const char *when, pr_status *s)
{
	pr_result r;
	pr_ap(&r, "--config", d->conf_path, "status", "--json", NULL);
	if (r.code != 0)
		pr_dump("ap status --json", &r);
	assert_int_equal(r.code, 0);
	assert_true(pr_parse_status(r.out, s));
	pr_free(&r);
	fprintf(stderr, "ap status --json %s: %ld tasks, %ld enabled, %ld orphaned, owners sum %ld\n",
		when, s->total, s->enabled, s->orphaned, s->owned);
	assert_int_equal(s->total, total);
	assert_int_equal(s->enabled, total);
	/* tasks.enabled == owned + orphaned (no manual tasks here): no task
	 * counted for two owners, none lost. */
	assert_int_equal(s->owned + s->orphaned, s->enabled);
}

static void test_end_to_end(void **state)
{
	e2e *t = calloc(1, sizeof *t);
	assert_non_null(t);
	*state = t;
	t->d = td_create(&(td_options){ .restart_grace_ms = 30000 });
	td_daemon *d = t->d;
	pr_result r;
	it_task *tasks = NULL, *before = NULL;
	size_t n;

	td_start(d);
	pin_port(d);
	int port = d->port;

	/* ---- 1. three operators, 300 tasks ---- */
	for (int i = 0; i < N_OPS; i++) {
		char text[1024];
		it_address(500 + i, t->addr[i]);
		snprintf(t->conf[i], sizeof t->conf[i], "%s/op%d.conf", d->dir, i);
		snprintf(t->log[i], sizeof t->log[i], "%s/op%d.log", d->dir, i);
		snprintf(text, sizeof text,
			 "# written by tests/integration/test_e2e.c\n"
			 "aggregator = \"127.0.0.1:%d\";\n"
			 "address = \"%s\";\n"
			 "key_file = \"\";\n"
			 "backoff = { initial_ms = 200; max_ms = 1000; };\n"
			 "log = { level = \"info\"; };\n",
			 port, t->addr[i]);
		write_file(t->conf[i], text);
		start_op(t, i);
	}
	for (int i = 0; i < N_OPS; i++)
		if (!it_wait_ready(d->admin, t->addr[i], TD_WAIT_MS))
			fail_msg("operator %s (pid %d) not ready within %d ms", t->addr[i],
				 (int)t->pid[i], TD_WAIT_MS);
	pr_ap(&r, "--config", d->conf_path, "task", "create", "--block-interval", "10", "--count",
	      "300", "--id", "e2e", "--name", "e2e", "--quiet", NULL);
	if (r.code != 0)
		pr_dump("ap task create --count 300", &r);
	assert_int_equal(r.code, 0);
	assert_string_equal(r.out, "300\n");
	pr_free(&r);
	for (int i = 0; i < N_OPS; i++)
		assert_true(it_wait_owned(d->admin, t->addr[i], N_TASKS / N_OPS, TD_WAIT_MS));
	n = snapshot(d, &before);
	assert_int_equal(n, N_TASKS);
	for (int i = 0; i < N_OPS; i++) {
		char(*mine)[65];
		size_t k = ids_of(before, n, t->addr[i], &mine);
		assert_true(wait_subscribed(t->log[i], 0, mine, k, TD_WAIT_MS));
		free(mine);
	}
	fprintf(stderr, "three operators own and subscribed 100 tasks each\n");

	/* ---- 2. SIGKILL operator 0 ---- */
	char(*moved)[65];
	size_t n_moved = ids_of(before, n, t->addr[0], &moved);
	assert_int_equal(n_moved, 100);
	long log_at[N_OPS];
	for (int i = 0; i < N_OPS; i++)
		log_at[i] = file_size(t->log[i]);
	int64_t t0 = ap_clock_mono_ns();
	kill(t->pid[0], SIGKILL);
	int64_t t_owned = 0;
	int64_t deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	for (;;) {
		size_t m = it_list_tasks(d->admin, &tasks);
		size_t left = it_owned_by(tasks, m, t->addr[0]);
		free(tasks);
		tasks = NULL;
		if (left == 0) {
			t_owned = ap_clock_mono_ns();
			break;
		}
		if (ap_clock_mono_ms() > deadline)
			fail_msg("%zu tasks still owned by the killed operator after %d ms", left,
				 TD_WAIT_MS);
		it_sleep_ms(1);
	}
	pr_kill(t->pid[0]); /* reap */
	t->pid[0] = 0;
	/* The survivors' logs show every moved task subscribed. */
	char(*to1)[65], (*to2)[65];
	n = snapshot(d, &tasks);
	size_t n1 = 0, n2 = 0;
	to1 = calloc(n_moved, sizeof *to1);
	to2 = calloc(n_moved, sizeof *to2);
	assert_true(to1 && to2);
	for (size_t i = 0; i < n_moved; i++) {
		for (size_t j = 0; j < n; j++) {
			if (strcmp(tasks[j].id, moved[i]) != 0)
				continue;
			if (strcmp(tasks[j].owner, t->addr[1]) == 0)
				snprintf(to1[n1++], 65, "%s", moved[i]);
			else if (strcmp(tasks[j].owner, t->addr[2]) == 0)
				snprintf(to2[n2++], 65, "%s", moved[i]);
			else
				fail_msg("task %s of the killed operator is owned by '%s'", moved[i],
					 tasks[j].owner);
		}
	}
	assert_int_equal(n1 + n2, n_moved);
	assert_true(wait_subscribed(t->log[1], log_at[1], to1, n1, TD_WAIT_MS));
	assert_true(wait_subscribed(t->log[2], log_at[2], to2, n2, TD_WAIT_MS));
	int64_t t_streamed = ap_clock_mono_ns();
	fprintf(stderr,
		"failover bound: %.1f ms from SIGKILL of an operator to ListTasks showing none "
		"of its 100 tasks owned by it (%zu and %zu moved to the two others; all "
		"subscribed in their logs within %.1f ms of the kill, polling at 20 ms)\n",
		(double)(t_owned - t0) / 1e6, n1, n2, (double)(t_streamed - t0) / 1e6);
	/* No churn: the survivors kept every task they had; nothing orphaned. */
	for (size_t j = 0; j < n; j++) {
		assert_string_not_equal(tasks[j].owner, "");
		if (strcmp(before[j].owner, t->addr[0]) != 0)
			assert_string_equal(tasks[j].owner, before[j].owner);
	}
	assert_int_equal(it_owned_by(tasks, n, t->addr[1]) + it_owned_by(tasks, n, t->addr[2]),
			 N_TASKS);
	free(before);
	before = tasks;
	tasks = NULL;
	free(to1);
	free(to2);
	free(moved);

	/* ---- 3. restart it: no churn, then the new tasks go to it ---- */
	log_at[0] = file_size(t->log[0]);
	start_op(t, 0);
	assert_true(it_wait_ready(d->admin, t->addr[0], TD_WAIT_MS));
	n = snapshot(d, &tasks);
	assert_int_equal(n, N_TASKS);
	for (size_t j = 0; j < n; j++)
		assert_string_equal(tasks[j].owner, before[j].owner);
	assert_int_equal(it_owned_by(tasks, n, t->addr[0]), 0);
	free(tasks);
	tasks = NULL;
	fprintf(stderr, "the restarted operator is ready and took no task from the others\n");
	pr_ap(&r, "--config", d->conf_path, "task", "create", "--block-interval", "10", "--count",
	      "30", "--id", "new", "--quiet", NULL);
	assert_int_equal(r.code, 0);
	pr_free(&r);
	assert_true(it_wait_owned(d->admin, t->addr[0], N_NEW, TD_WAIT_MS));
	n = snapshot(d, &tasks);
	assert_int_equal(n, N_TASKS + N_NEW);
	char(*fresh)[65];
	size_t n_fresh = ids_of(tasks, n, t->addr[0], &fresh);
	assert_int_equal(n_fresh, N_NEW);
	for (size_t i = 0; i < n_fresh; i++)
		assert_true(strncmp(fresh[i], "new-", 4) == 0);
	assert_true(wait_subscribed(t->log[0], log_at[0], fresh, n_fresh, TD_WAIT_MS));
	free(fresh);
	fprintf(stderr, "the %d new tasks went to the returning operator (least loaded): "
		"%zu / %zu / %zu\n", N_NEW, it_owned_by(tasks, n, t->addr[0]),
		it_owned_by(tasks, n, t->addr[1]), it_owned_by(tasks, n, t->addr[2]));
	free(before);
	before = tasks;
	tasks = NULL;

	/* ---- 4. SIGKILL the daemon, restart it on the same dir and port ---- */
	for (int i = 0; i < N_OPS; i++)
		log_at[i] = file_size(t->log[i]);
	td_kill(d);
	pr_status s;
	check_status(d, N_TASKS + N_NEW, "after kill -9 of the daemon", &s);
	assert_int_equal(s.orphaned, 0);
	for (int i = 0; i < N_OPS; i++)
		assert_int_equal(pr_status_owned(&s, t->addr[i]),
				 (long)it_owned_by(before, N_TASKS + N_NEW, t->addr[i]));
	td_start(d);
	assert_int_equal(d->port, port);
	for (int i = 0; i < N_OPS; i++)
		if (!it_wait_ready(d->admin, t->addr[i], TD_WAIT_MS))
			fail_msg("operator %s did not come back within %d ms", t->addr[i],
				 TD_WAIT_MS);
	/* Persisted owners keep their tasks and are streamed them again. */
	deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	for (;;) {
		n = snapshot(d, &tasks);
		assert_int_equal(n, N_TASKS + N_NEW);
		size_t same = 0;
		for (size_t j = 0; j < n; j++)
			same += strcmp(tasks[j].owner, before[j].owner) == 0;
		free(tasks);
		tasks = NULL;
		if (same == n)
			break;
		if (ap_clock_mono_ms() > deadline)
			fail_msg("after the restart %zu of %zu tasks have another owner than "
				 "before", n - same, n);
		it_sleep_ms(20);
	}
	for (int i = 0; i < N_OPS; i++) {
		char(*mine)[65];
		size_t k = ids_of(before, N_TASKS + N_NEW, t->addr[i], &mine);
		assert_true(wait_subscribed(t->log[i], log_at[i], mine, k, TD_WAIT_MS));
		free(mine);
	}
	check_status(d, N_TASKS + N_NEW, "after the restart", &s);
	assert_int_equal(s.orphaned, 0);
	assert_int_equal(s.owned, N_TASKS + N_NEW);
	assert_int_equal(s.n_owners, N_OPS);
	n = snapshot(d, &tasks);
	for (int i = 0; i < N_OPS; i++)
		assert_int_equal(pr_status_owned(&s, t->addr[i]),
				 (long)it_owned_by(tasks, n, t->addr[i]));
	free(tasks);
	tasks = NULL;
	fprintf(stderr, "after kill -9 and restart: every task once, one owner each, the same "
		"owners as before, re-streamed to each operator\n");

	/* ---- 5. stop everything ---- */
	for (int i = 0; i < N_OPS; i++) {
		int status = pr_stop(t->pid[i], TD_STOP_TIMEOUT_MS);
		t->pid[i] = 0;
		if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			dump_tail(t->log[i], 25);
			fail_msg("operator %d did not exit 0 on SIGTERM (wait status %d)", i, status);
		}
	}
	td_stop_clean(d);
	free(before);
	d->passed = true;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_end_to_end, teardown),
	};
	signal(SIGPIPE, SIG_IGN);
	ap_client_init();
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	ap_client_shutdown();
	return failed;
}
