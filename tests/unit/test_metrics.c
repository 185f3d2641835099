/* Metrics (SPEC section 6b): the text format and the HTTP endpoint, with
 * engine figures that move as the engine says they should. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "ap/error.h"
#include "ap/log.h"
#include "ap/metrics.h"
#include "engine_fixture.h"

/* The value of one sample line "NAME VALUE" (NAME with its labels). */
static double sample(const char *text, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	}
	fail_msg("no sample %s in:\n%s", name, text);
	return -1;
}

static void test_render_counters_and_histograms(void **state)
{
	(void)state;
	ap_metrics_reset();
	ap_metrics_send(AP_SEND_OK, 0.0004);
	ap_metrics_send(AP_SEND_OK, 0.003);
	ap_metrics_send(AP_SEND_TIMEOUT, 2.0);
	ap_metrics_send(AP_SEND_ERROR, 0.001);
	ap_metrics_first_task(0.02);
	ap_metrics_auth_failure("expired");
	ap_metrics_auth_failure("expired");
	ap_metrics_auth_failure("something new");
	char *text;
	size_t len;
	assert_int_equal(ap_metrics_render(NULL, &text, &len), 0);
	assert_int_equal(strlen(text), len);
	assert_true(sample(text, "ap_task_sends_total{result=\"ok\"}") == 2);
	assert_true(sample(text, "ap_task_sends_total{result=\"timeout\"}") == 1);
	assert_true(sample(text, "ap_task_sends_total{result=\"error\"}") == 1);
	/* Cumulative buckets: 0.0005 holds one, 0.001 two, 0.005 three. */
	assert_true(sample(text, "ap_send_duration_seconds_bucket{le=\"0.0005\"}") == 1);
	assert_true(sample(text, "ap_send_duration_seconds_bucket{le=\"0.001\"}") == 2);
	assert_true(sample(text, "ap_send_duration_seconds_bucket{le=\"0.005\"}") == 3);
	assert_true(sample(text, "ap_send_duration_seconds_bucket{le=\"2.5\"}") == 4);
	assert_true(sample(text, "ap_send_duration_seconds_bucket{le=\"+Inf\"}") == 4);
	assert_true(sample(text, "ap_send_duration_seconds_count") == 4);
	double sum = sample(text, "ap_send_duration_seconds_sum");
	assert_true(sum > 2.0043 && sum < 2.0045);
	assert_true(sample(text, "ap_reconnect_to_first_task_seconds_count") == 1);
	assert_true(sample(text, "ap_auth_failures_total{reason=\"expired\"}") == 2);
	assert_true(sample(text, "ap_auth_failures_total{reason=\"other\"}") == 1);
	/* Every metric has HELP and TYPE lines. */
	assert_non_null(strstr(text, "# TYPE ap_send_duration_seconds histogram\n"));
	assert_non_null(strstr(text, "# TYPE ap_task_sends_total counter\n"));
	assert_null(strstr(text, "ap_operators_connected")); /* no engine given */
	free(text);
}

static char *http_get(int port, const char *path, int *status)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	char req[256];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
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
	assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", status), 1);
	return buf;
}

static void test_http_endpoint_with_engine(void **state)
{
	(void)state;
	ap_metrics_reset();
	fx_engine f;
	fx_open(&f, 0, 0);
	ap_metrics_server *ms;
	char err[256];
	assert_int_equal(ap_metrics_server_start(&ms, "127.0.0.1:0", f.e, err, sizeof err), 0);
	int port = ap_metrics_server_port(ms);
	assert_true(port > 0);

	int status;
	char *body = http_get(port, "/metrics", &status);
	assert_int_equal(status, 200);
	assert_true(sample(strstr(body, "\r\n\r\n"), "ap_operators_connected") == 0);
	free(body);

	/* Move the engine: two operators, tasks, one leaves. */
	fx_op a = { 0 }, b = { 0 };
	fx_connect(&f, &a, 0xa, 1);
	fx_connect(&f, &b, 0xb, 1);
	fx_wait_ready(&a);
	fx_wait_ready(&b);
	fx_create(&f, "t", 6, "block", 0, 0);
	fx_create(&f, "m", 2, "manual", 0, 0);
	const char *st;
	assert_int_equal(ap_engine_set_enabled(f.e, "t-5", false, &st), 0);
	fx_drain(&a);
	fx_drain(&b);
	fx_disconnect(&f, &a, "gone");
	fx_connect(&f, &a, 0xb, 2); /* b reconnects: supersedes its session */
	body = http_get(port, "/metrics", &status);
	assert_int_equal(status, 200);
	const char *text = strstr(body, "\r\n\r\n");
	assert_true(sample(text, "ap_operator_connects_total") == 3);
	assert_true(sample(text, "ap_operator_reconnects_total") == 1);
	assert_true(sample(text, "ap_operator_disconnects_total") == 1);
	assert_true(sample(text, "ap_sessions_superseded_total") == 1);
	assert_true(sample(text, "ap_operators_connected") == 1);
	assert_true(sample(text, "ap_tasks{status=\"enabled\"}") == 7);
	assert_true(sample(text, "ap_tasks{status=\"disabled\"}") == 1);
	assert_true(sample(text, "ap_assignments_total{reason=\"round_robin\"}") == 6);
	assert_true(sample(text, "ap_assignments_total{reason=\"reassign\"}") >= 2);
	/* The two operators got their first tasks: observed by the session. */
	assert_true(sample(text, "ap_reconnect_to_first_task_seconds_count") == 2);
	free(body);
	body = http_get(port, "/nope", &status);
	assert_int_equal(status, 404);
	free(body);

	fx_disconnect(&f, &a, "end");
	fx_disconnect(&f, &b, "end");
	ap_metrics_server_stop(ms);
	fx_op_free(&a);
	fx_op_free(&b);
	fx_close(&f);
}

static void test_bad_listen(void **state)
{
	(void)state;
	ap_metrics_server *ms;
	char err[256];
	assert_int_equal(ap_metrics_server_start(&ms, "nonsense", NULL, err, sizeof err), AP_EINVAL);
	assert_int_equal(ap_metrics_server_start(&ms, "1.2.3:80", NULL, err, sizeof err), AP_EINVAL);
	assert_null(ms);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_counters_and_histograms),
		cmocka_unit_test(test_http_endpoint_with_engine),
		cmocka_unit_test(test_bad_listen),
	};
	ap_log_set_level(AP_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
