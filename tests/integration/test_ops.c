/* Operations (issue 8): the daemon under a simulated systemd (sd_notify
 * READY/WATCHDOG/STOPPING on $NOTIFY_SOCKET), its Prometheus endpoint
 * scraped while operators come and go (the counters move as they should),
 * log.file reopened on SIGHUP after a logrotate-style rename, and every line
 * of a JSON-format run parsed by a JSON parser. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "ap/clock.h"
#include "daemon.h"
#include "itest.h"

typedef struct fixture {
	td_daemon *d;
	int notify_fd;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	f->notify_fd = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	it_op_free_all();
	td_destroy(f->d);
	if (f->notify_fd >= 0)
		close(f->notify_fd);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	free(f);
	return 0;
}

/* Wait up to timeout_ms for a notify datagram containing `want`. */
static bool notify_wait(int fd, const char *want, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	while (ap_clock_mono_ms() < deadline) {
		struct timeval tv = { 0, 50000 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		char buf[512];
		ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		if (strstr(buf, want))
			return true;
	}
	return false;
}

static char *http_get(int port, const char *path)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	char req[128];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
	assert_int_equal(write(fd, req, (size_t)n), n);
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	ssize_t r;
	while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
		len += (size_t)r;
		if (len + 1 == cap)
			buf = realloc(buf, cap *= 2);
	}
	buf[len] = '\0';
	close(fd);
	assert_non_null(strstr(buf, " 200 "));
	return buf;
}

static double sample(const char *text, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = text; p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	}
	fail_msg("no sample %s", name);
	return -1;
}

/* The metrics port from the JSON log line "📈 Metrics served". */
static int metrics_port(const td_daemon *d)
{
	int64_t deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	while (ap_clock_mono_ms() < deadline) {
		FILE *fp = fopen(d->json_log_path, "r");
		char line[4096];
		while (fp && fgets(line, sizeof line, fp)) {
			char *p = strstr(line, "Metrics served");
			if (p && (p = strstr(p, "\"port\":"))) {
				fclose(fp);
				return atoi(p + 7);
			}
		}
		if (fp)
			fclose(fp);
		it_sleep_ms(10);
	}
	fail_msg("no 'Metrics served' line in %s", d->json_log_path);
	return -1;
}

/* Every line of path is a JSON object with ts, level and msg; at least
 * min_lines of them. */
static void check_json_lines(const char *path, int min_lines)
{
	char cmd[4096];
	snprintf(cmd, sizeof cmd,
		 "%s -c 'import json,sys\n"
		 "n=0\n"
		 "for line in open(sys.argv[1], encoding=\"utf-8\"):\n"
		 "    o=json.loads(line)\n"
		 "    assert {\"ts\",\"level\",\"msg\"} <= o.keys(), line\n"
		 "    n+=1\n"
		 "assert n>=%d, n\n' '%s'",
		 getenv("PYTHON_PROTO") ? getenv("PYTHON_PROTO") : "/usr/bin/python3", min_lines, path);
	assert_int_equal(system(cmd), 0);
}

static void test_systemd_metrics_logs(void **state)
{
	fixture *f = *state;
	td_options o = { .stabilization_ms = 100, .metrics_listen = "127.0.0.1:0",
			 .json_log = true };
	f->d = td_create(&o);
	td_daemon *d = f->d;

	/* A simulated systemd: a datagram socket the daemon notifies. */
	char sock[PATH_MAX];
	snprintf(sock, sizeof sock, "%s/notify.sock", d->dir);
	f->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	assert_true(strlen(sock) < sizeof sun.sun_path);
	memcpy(sun.sun_path, sock, strlen(sock) + 1);
	assert_int_equal(bind(f->notify_fd, (struct sockaddr *)&sun, sizeof sun), 0);
	setenv("NOTIFY_SOCKET", sock, 1);
	setenv("WATCHDOG_USEC", "200000", 1);
	td_start(d);
	assert_true(notify_wait(f->notify_fd, "READY=1", TD_WAIT_MS));
	assert_true(notify_wait(f->notify_fd, "WATCHDOG=1", 5000));
	assert_true(notify_wait(f->notify_fd, "WATCHDOG=1", 5000));

	int port = metrics_port(d);
	char *m = http_get(port, "/metrics");
	assert_true(sample(m, "ap_operators_connected") == 0);
	assert_true(sample(m, "ap_operator_connects_total") == 0);
	free(m);

	/* Two operators, ten tasks, one reconnects, one leaves. */
	char a1[43], a2[43];
	it_address(1, a1);
	it_address(2, a2);
	it_op *op1 = it_op_start(d->target, a1, 1);
	it_op *op2 = it_op_start(d->target, a2, 1);
	assert_true(it_wait_ready(d->admin, a1, TD_WAIT_MS));
	assert_true(it_wait_ready(d->admin, a2, TD_WAIT_MS));
	it_create_tasks(d->admin, "t", 0, 10);
	assert_true(it_op_wait_count(op1, 5, TD_WAIT_MS));
	assert_true(it_op_wait_count(op2, 5, TD_WAIT_MS));
	it_op *op1b = it_op_start(d->target, a1, 2); /* supersedes op1 */
	assert_true(it_op_wait_end(op1, TD_WAIT_MS, &(ap_rpc_status){ 0 }));
	assert_true(it_op_wait_count(op1b, 5, TD_WAIT_MS));
	it_op_cancel(op2); /* a crash: its five go to op1b */
	assert_true(it_op_wait_count(op1b, 10, TD_WAIT_MS));

	m = http_get(port, "/metrics");
	assert_true(sample(m, "ap_operator_connects_total") == 3);
	assert_true(sample(m, "ap_operator_reconnects_total") == 1);
	assert_true(sample(m, "ap_sessions_superseded_total") == 1);
	assert_true(sample(m, "ap_operator_disconnects_total") == 1);
	assert_true(sample(m, "ap_operators_connected") == 1);
	assert_true(sample(m, "ap_tasks{status=\"enabled\"}") == 10);
	assert_true(sample(m, "ap_tasks_orphaned") == 0);
	assert_true(sample(m, "ap_assignments_total{reason=\"round_robin\"}") == 10);
	assert_true(sample(m, "ap_assignments_total{reason=\"reassign\"}") == 5);
	/* 5 + 5 first sends, 5 re-sent to the new session, 5 moved to it. */
	assert_true(sample(m, "ap_task_sends_total{result=\"ok\"}") >= 20);
	assert_true(sample(m, "ap_send_duration_seconds_count") >= 20);
	assert_true(sample(m, "ap_reconnect_to_first_task_seconds_count") == 3);
	free(m);

	td_stop_clean(d);
	assert_true(notify_wait(f->notify_fd, "STOPPING=1", TD_WAIT_MS));
	it_op_free(op1);
	it_op_free(op1b);
	it_op_free(op2);

	/* logrotate: rename the file, SIGHUP, new lines land in a new file. */
	td_start(d);
	char rotated[PATH_MAX + 8];
	snprintf(rotated, sizeof rotated, "%s.1", d->json_log_path);
	assert_int_equal(rename(d->json_log_path, rotated), 0);
	assert_int_equal(kill(d->pid, SIGHUP), 0);
	int64_t deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	while (access(d->json_log_path, F_OK) != 0 && ap_clock_mono_ms() < deadline)
		it_sleep_ms(10);
	assert_int_equal(access(d->json_log_path, F_OK), 0);
	td_stop_clean(d);

	/* Every line either file holds is one JSON object with ts/level/msg. */
	check_json_lines(rotated, 20);
	check_json_lines(d->json_log_path, 2); /* at least the reopen and the stop */
	d->passed = true;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_systemd_metrics_logs, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
