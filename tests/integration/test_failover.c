/*
 * Integration: failover and restart against the real daemon (issue 4,
 * point 6; SPEC sections 3 and 4).
 *
 *  - failover, cancelled stream: two operators split ten tasks five and
 *    five; one operator's stream is cancelled abruptly (RST_STREAM, as a
 *    crashing client's library would); its five tasks must reach the other
 *    operator. The latency from the cancel to the last of them arriving is
 *    printed.
 *  - failover, killed process: the same with the first operator running in
 *    a child process (this binary re-executed with --child-operator) that
 *    is SIGKILLed, so the kernel closes its connection with no gRPC
 *    goodbye at all.
 *  - restart: with both operators connected, SIGTERM the daemon (streams end
 *    with UNAVAILABLE "aggregator shutting down", exit 0), start it again on
 *    the same database: the same tasks with the same owners, and each
 *    operator, coming back within restart_grace_ms, is streamed exactly its
 *    own tasks again. Then the same after kill -9, with tasks created just
 *    before the kill (no created task or committed assignment is lost).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "daemon.h"
#include "itest.h"

static int teardown(void **state)
{
	it_op_free_all();
	td_destroy(*state);
	*state = NULL;
	return 0;
}

/* Both operators ready, then ten tasks: five each (fewest owned first). */
static void split_ten(td_daemon *d, it_op *a, it_op *b, const char *prefix)
{
	assert_true(it_wait_ready(d->admin, it_op_address(a), TD_WAIT_MS));
	assert_true(it_wait_ready(d->admin, it_op_address(b), TD_WAIT_MS));
	it_create_tasks(d->admin, prefix, 0, 10);
	assert_true(it_op_wait_count(a, 5, TD_WAIT_MS));
	assert_true(it_op_wait_count(b, 5, TD_WAIT_MS));
}

static void test_failover_cancel(void **state)
{
	td_daemon *d = *state = td_create(&(td_options){ .restart_grace_ms = TD_ZERO });
	char a[43], b[43];
	it_task *tasks = NULL;

	td_start(d);
	it_address(10, a);
	it_address(11, b);
	it_op *opa = it_op_start(d->target, a, 1);
	it_op *opb = it_op_start(d->target, b, 1);
	split_ten(d, opa, opb, "fo");

	size_t n = it_list_tasks(d->admin, &tasks);
	assert_int_equal(n, 10);
	assert_int_equal(it_owned_by(tasks, n, a), 5);
	assert_int_equal(it_owned_by(tasks, n, b), 5);

	int64_t t0 = ap_clock_mono_ns();
	it_op_cancel(opa);
	if (!it_op_wait_count(opb, 10, TD_WAIT_MS))
		fail_msg("after %s's stream was cancelled, %s has %zu of 10 tasks", a, b,
			 it_op_count(opb));
	int64_t last = 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(tasks[i].owner, a) != 0)
			continue;
		int64_t at = it_op_task_arrival_ns(opb, tasks[i].id);
		assert_true(at > t0);
		if (at > last)
			last = at;
	}
	fprintf(stderr, "failover latency (stream cancelled): %.2f ms from the cancel "
		"to the last of 5 tasks at the other operator\n", (double)(last - t0) / 1e6);
	free(tasks);

	assert_true(it_wait_owned(d->admin, b, 10, TD_WAIT_MS));
	ap_rpc_status st;
	assert_true(it_op_wait_end(opa, TD_WAIT_MS, &st));
	assert_int_equal(st.code, AP_RPC_CANCELLED);
	/* The departed operator is no longer connected nor ready. */
	Aggregator__OperatorInfo info;
	assert_true(it_operator(d->admin, a, &info));
	assert_false(info.connected);
	assert_int_equal(info.owned_tasks, 0);
	it_op_free(opa);
	it_op_free(opb);
	d->passed = true;
}

/* ---- the child operator process ------------------------------------------ */

/* argv: --child-operator TARGET ADDRESS. Prints "open" once the stream is
 * open, then "task ID" for every MonitorTaskTrigger; runs until killed or
 * until the stream ends. */
static int child_operator(const char *target, const char *address)
{
	ap_client *c = NULL;
	ap_stream *s = NULL;
	char err[256];

	setvbuf(stdout, NULL, _IONBF, 0);
	ap_client_init();
	if (ap_client_open(target, NULL, &c, err, sizeof err) != 0)
		return 1;
	Aggregator__SyncMessagesReq req = it_sync_req(address, 1);
	if (ap_stream_open(c, &req, NULL, TD_WAIT_MS, &s) != 0)
		return 1;
	printf("open\n");
	for (;;) {
		Aggregator__SyncMessagesResp *m = NULL;
		ap_rpc_status st;
		int r = ap_stream_next(s, -1, &m, &st);
		if (r == AP_STREAM_END) {
			printf("end %s\n", ap_rpc_code_name(st.code));
			break;
		}
		if (r == AP_STREAM_MESSAGE) {
			if (m->op == AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger)
				printf("task %s\n", m->id);
			ap_client_free(m);
		}
	}
	ap_stream_close(s);
	ap_client_close(c);
	ap_client_shutdown();
	return 0;
}

typedef struct child {
	pid_t pid;
	int out; /* read end of its stdout */
	char buf[8192];
	size_t len;
} child;

static void child_start(child *ch, const char *target, const char *address)
{
	int fds[2];
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	assert_true(n > 0);
	self[n] = '\0';
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid_t parent = getpid();
	ch->pid = fork();
	assert_true(ch->pid >= 0);
	if (ch->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(fds[1], 1);
		execl(self, self, "--child-operator", target, address, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	ch->out = fds[0];
	ch->len = 0;
}

/* Read lines from the child until `want` lines starting with `prefix` were
 * seen in total or timeout_ms passes. Returns how many were seen. */
static int child_wait_lines(child *ch, const char *prefix, int want, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		int seen = 0;
		char *p = ch->buf, *end = ch->buf + ch->len;
		while (p < end) {
			char *nl = memchr(p, '\n', (size_t)(end - p));
			if (!nl)
				break;
			if (strncmp(p, prefix, strlen(prefix)) == 0)
				seen++;
			p = nl + 1;
		}
		if (seen >= want)
			return seen;
		int64_t left = deadline - ap_clock_mono_ms();
		if (left <= 0 || ch->len >= sizeof ch->buf - 1)
			return seen;
		struct pollfd pfd = { .fd = ch->out, .events = POLLIN };
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		ssize_t r = read(ch->out, ch->buf + ch->len, sizeof ch->buf - 1 - ch->len);
		if (r <= 0)
			return seen;
		ch->len += (size_t)r;
	}
}

static void child_kill(child *ch)
{
	if (ch->pid > 0) {
		kill(ch->pid, SIGKILL);
		while (waitpid(ch->pid, NULL, 0) < 0 && errno == EINTR)
			;
		ch->pid = 0;
	}
	if (ch->out >= 0)
		close(ch->out);
	ch->out = -1;
}

static child the_child = { .pid = 0, .out = -1 };

static int teardown_child(void **state)
{
	child_kill(&the_child);
	return teardown(state);
}

static void test_failover_kill(void **state)
{
	td_daemon *d = *state = td_create(&(td_options){ .restart_grace_ms = TD_ZERO });
	char a[43], b[43];

	td_start(d);
	it_address(12, a);
	it_address(13, b);
	child_start(&the_child, d->target, a);
	assert_int_equal(child_wait_lines(&the_child, "open", 1, TD_WAIT_MS), 1);
	it_op *opb = it_op_start(d->target, b, 1);
	assert_true(it_wait_ready(d->admin, a, TD_WAIT_MS));
	assert_true(it_wait_ready(d->admin, b, TD_WAIT_MS));
	it_create_tasks(d->admin, "kill", 0, 10);
	assert_true(it_op_wait_count(opb, 5, TD_WAIT_MS));
	assert_int_equal(child_wait_lines(&the_child, "task ", 5, TD_WAIT_MS), 5);
	assert_true(it_wait_owned(d->admin, a, 5, TD_WAIT_MS));

	int64_t t0 = ap_clock_mono_ns();
	kill(the_child.pid, SIGKILL);
	if (!it_op_wait_count(opb, 10, TD_WAIT_MS))
		fail_msg("after the SIGKILL of %s's process, %s has %zu of 10 tasks", a, b,
			 it_op_count(opb));
	size_t msgs = it_op_messages(opb);
	it_msg last;
	assert_true(it_op_message(opb, msgs - 1, &last));
	fprintf(stderr, "failover latency (operator process SIGKILLed): %.2f ms from "
		"the kill to the last of 5 tasks at the other operator\n",
		(double)(last.at_ns - t0) / 1e6);
	child_kill(&the_child);
	assert_true(it_wait_owned(d->admin, b, 10, TD_WAIT_MS));
	it_op_free(opb);
	d->passed = true;
}

/* ---- restart -------------------------------------------------------------- */

/* The owner of every task, by id order. */
static size_t snapshot(td_daemon *d, it_task **out)
{
	size_t n = it_list_tasks(d->admin, out);
	for (size_t i = 0; i < n; i++)
		assert_string_equal((*out)[i].status, "enabled");
	return n;
}

static void assert_same_owners(td_daemon *d, const it_task *before, size_t n)
{
	it_task *now = NULL;
	size_t m = it_list_tasks(d->admin, &now);
	if (m != n)
		fail_msg("%zu tasks after the restart, %zu before", m, n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(now[i].id, before[i].id);
		assert_string_equal(now[i].status, before[i].status);
		if (strcmp(now[i].owner, before[i].owner) != 0)
			fail_msg("task %s: owner \"%s\" after the restart, \"%s\" before",
				 now[i].id, now[i].owner, before[i].owner);
	}
	free(now);
}

/* Operator `op` holds exactly the tasks `before` says it owns. */
static void assert_holds_own(it_op *op, const it_task *before, size_t n)
{
	size_t own = it_owned_by(before, n, it_op_address(op));
	if (!it_op_wait_count(op, own, TD_WAIT_MS))
		fail_msg("%s holds %zu tasks, owned %zu before the restart",
			 it_op_address(op), it_op_count(op), own);
	for (size_t i = 0; i < n; i++)
		if (strcmp(before[i].owner, it_op_address(op)) == 0)
			assert_true(it_op_has(op, before[i].id));
}

static void test_restart(void **state)
{
	td_daemon *d = *state = td_create(&(td_options){
		.restart_grace_ms = 60000, .shutdown_timeout_ms = 5000 });
	char a[43], b[43];
	it_task *before = NULL;
	ap_rpc_status st;

	td_start(d);
	it_address(14, a);
	it_address(15, b);
	it_op *opa = it_op_start(d->target, a, 1);
	it_op *opb = it_op_start(d->target, b, 1);
	split_ten(d, opa, opb, "rs");
	size_t n = snapshot(d, &before);
	assert_int_equal(n, 10);

	/* SIGTERM with both operators connected. */
	td_stop_clean(d);
	assert_true(it_op_wait_end(opa, TD_WAIT_MS, &st));
	if (st.code != AP_RPC_UNAVAILABLE || strcmp(st.details, "aggregator shutting down") != 0)
		fail_msg("stream at shutdown ended with %s \"%s\", want UNAVAILABLE "
			 "\"aggregator shutting down\"", ap_rpc_code_name(st.code), st.details);
	assert_true(it_op_wait_end(opb, TD_WAIT_MS, &st));
	assert_int_equal(st.code, AP_RPC_UNAVAILABLE);
	it_op_free(opa);
	it_op_free(opb);

	/* Same database: same tasks, same owners, before and after the
	 * operators come back. */
	td_start(d);
	assert_same_owners(d, before, n);
	assert_true(td_log_count(d, "Engine started successfully") >= 2);
	opa = it_op_start(d->target, a, 2);
	assert_holds_own(opa, before, n);
	opb = it_op_start(d->target, b, 2);
	assert_holds_own(opb, before, n);
	assert_same_owners(d, before, n);
	free(before);
	before = NULL;

	/* kill -9: two more tasks (one each), then the kill as soon as both
	 * operators hold them. */
	it_create_tasks(d->admin, "rs", 10, 2);
	assert_true(it_op_wait_count(opa, 6, TD_WAIT_MS));
	assert_true(it_op_wait_count(opb, 6, TD_WAIT_MS));
	n = snapshot(d, &before);
	assert_int_equal(n, 12);
	td_kill(d);
	assert_true(it_op_wait_end(opa, TD_WAIT_MS, NULL));
	assert_true(it_op_wait_end(opb, TD_WAIT_MS, NULL));
	it_op_free(opa);
	it_op_free(opb);

	td_start(d);
	assert_same_owners(d, before, n);
	opa = it_op_start(d->target, a, 3);
	opb = it_op_start(d->target, b, 3);
	assert_holds_own(opa, before, n);
	assert_holds_own(opb, before, n);
	assert_same_owners(d, before, n);
	it_op_free(opa);
	it_op_free(opb);
	free(before);
	td_stop_clean(d);
	d->passed = true;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--child-operator") == 0)
		return child_operator(argv[2], argv[3]);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_failover_cancel, teardown),
		cmocka_unit_test_teardown(test_failover_kill, teardown_child),
		cmocka_unit_test_teardown(test_restart, teardown),
	};
	/* A child that dies must not kill this process through a pipe. */
	signal(SIGPIPE, SIG_IGN);
	ap_client_init();
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	ap_client_shutdown();
	return failed;
}
