/*
 * Integration: bad input against the real daemon (issue 4, point 6; SPEC
 * sections 2 and 7). One approved operator stays connected throughout;
 * meanwhile the test sends:
 *
 *  - an unapproved address -> PERMISSION_DENIED (stream and NotifyTriggers);
 *  - malformed addresses, a negative MonotonicClock, a missing address,
 *    undecodable protobuf bytes -> INVALID_ARGUMENT;
 *  - requests larger than max_message_bytes (a stream, a unary call, an
 *    admin call) -> RESOURCE_EXHAUSTED;
 *  - an unknown method -> UNIMPLEMENTED (not a hang);
 *  - garbage bytes, an HTTP/1.1 request and a broken HTTP/2 connection
 *    written to the TCP port with raw sockets.
 *
 * Afterwards the connected operator still has its stream (same generation,
 * ready), gets a task created after all that, and its Ping works; the
 * refused operators own nothing and are not listed as connected.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/clock.h"
#include "daemon.h"
#include "itest.h"

#define MAX_MESSAGE (64 * 1024)

static int teardown(void **state)
{
	it_op_free_all();
	td_destroy(*state);
	*state = NULL;
	return 0;
}

/* Open a stream with req and expect it to end at once with `code`. */
static void expect_refused(td_daemon *d, const Aggregator__SyncMessagesReq *req,
			   int code, const char *what)
{
	ap_rpc_status st;
	it_op *op = it_op_start_nowait(d->target, req);
	if (!it_op_wait_end(op, TD_WAIT_MS, &st))
		fail_msg("%s: the stream was not refused within %d ms", what, TD_WAIT_MS);
	if (st.code != code)
		fail_msg("%s: %s \"%s\", want %s", what, ap_rpc_code_name(st.code),
			 st.details, ap_rpc_code_name(code));
	assert_int_equal(it_op_messages(op), 0);
	fprintf(stderr, "%-34s -> %s \"%s\"\n", what, ap_rpc_code_name(st.code), st.details);
	it_op_free(op);
}

static void expect_raw_stream(td_daemon *d, const void *bytes, size_t len, int code,
			      const char *what)
{
	ap_client *c = NULL;
	ap_stream *s = NULL;
	ap_rpc_status st;
	char err[256];
	Aggregator__SyncMessagesResp *m = NULL;

	assert_int_equal(ap_client_open(d->target, NULL, &c, err, sizeof err), 0);
	assert_int_equal(ap_stream_open_raw(c, bytes, len, NULL, 0, &s), 0);
	int r = ap_stream_next(s, TD_WAIT_MS, &m, &st);
	ap_client_free(m);
	ap_stream_close(s);
	ap_client_close(c);
	if (r != AP_STREAM_END)
		fail_msg("%s: the stream was not refused (%d)", what, r);
	if (st.code != code)
		fail_msg("%s: %s \"%s\", want %s", what, ap_rpc_code_name(st.code),
			 st.details, ap_rpc_code_name(code));
	fprintf(stderr, "%-34s -> %s \"%s\"\n", what, ap_rpc_code_name(st.code), st.details);
}

static void expect_raw_unary(ap_client *c, const char *method, const void *bytes,
			     size_t len, int code, const char *what)
{
	ap_rpc_status st;
	assert_int_equal(ap_client_call_raw(c, method, bytes, len, NULL, NULL, NULL, &st), 0);
	if (st.code != code)
		fail_msg("%s: %s \"%s\", want %s", what, ap_rpc_code_name(st.code),
			 st.details, ap_rpc_code_name(code));
	fprintf(stderr, "%-34s -> %s \"%s\"\n", what, ap_rpc_code_name(st.code), st.details);
}

/* Connect to the operator port, write `len` bytes, then read whatever comes
 * back until the server closes or timeout_ms passes. Returns the number of
 * bytes read back. */
static size_t raw_write(int port, const void *bytes, size_t len, int64_t timeout_ms)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	size_t off = 0;
	while (off < len) {
		ssize_t w = send(fd, (const char *)bytes + off, len - off, MSG_NOSIGNAL);
		if (w <= 0)
			break; /* the server may hang up mid-way: fine */
		off += (size_t)w;
	}
	size_t got = 0;
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		int64_t left = deadline - ap_clock_mono_ms();
		if (left <= 0)
			break;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, (int)left) <= 0)
			break;
		char buf[4096];
		ssize_t r = recv(fd, buf, sizeof buf, 0);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	return got;
}

static void test_bad_input(void **state)
{
	char a[43], b[43], c[43];
	char approved[256];
	it_address(20, a);
	it_address(21, b);
	it_address(22, c); /* not approved */
	snprintf(approved, sizeof approved, "\"%s\", \"%s\"", a, b);
	td_daemon *d = *state = td_create(&(td_options){
		.approved = approved, .max_message_bytes = MAX_MESSAGE });
	Aggregator__OperatorInfo info;
	ap_rpc_status st;

	td_start(d);
	it_create_tasks(d->admin, "bad", 0, 3);
	it_op *good = it_op_start(d->target, a, 1);
	assert_true(it_op_wait_count(good, 3, TD_WAIT_MS));
	assert_true(it_wait_ready(d->admin, a, TD_WAIT_MS));
	assert_true(it_operator(d->admin, a, &info));
	uint64_t generation = info.generation;

	/* Refused streams. */
	Aggregator__SyncMessagesReq req = it_sync_req(c, 1);
	expect_refused(d, &req, AP_RPC_PERMISSION_DENIED, "unapproved address");
	req = it_sync_req("0x1234", 1);
	expect_refused(d, &req, AP_RPC_INVALID_ARGUMENT, "short address");
	req = it_sync_req("0xzz00000000000000000000000000000000000000", 1);
	expect_refused(d, &req, AP_RPC_INVALID_ARGUMENT, "non-hex address");
	req = it_sync_req("not an address", 1);
	expect_refused(d, &req, AP_RPC_INVALID_ARGUMENT, "not an address");
	req = it_sync_req(b, -5);
	expect_refused(d, &req, AP_RPC_INVALID_ARGUMENT, "negative MonotonicClock");
	req = it_sync_req("", 1);
	expect_refused(d, &req, AP_RPC_INVALID_ARGUMENT, "missing address");
	static const unsigned char garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99 };
	expect_raw_stream(d, garbage, sizeof garbage, AP_RPC_INVALID_ARGUMENT,
			  "undecodable SyncMessagesReq");

	/* Oversized requests. */
	size_t big_len = 2 * MAX_MESSAGE;
	char *big = malloc(big_len + 1);
	assert_non_null(big);
	memset(big, 'x', big_len);
	big[big_len] = '\0';
	req = it_sync_req(b, 1);
	req.id = big;
	expect_refused(d, &req, AP_RPC_RESOURCE_EXHAUSTED, "oversized SyncMessagesReq");

	Aggregator__Checkin checkin = AGGREGATOR__CHECKIN__INIT;
	Aggregator__CheckinResp *pong = NULL;
	checkin.address = b;
	checkin.version = big;
	assert_int_equal(ap_client_ping(d->node, &checkin, &pong, NULL, &st), 0);
	ap_client_free(pong);
	if (st.code != AP_RPC_RESOURCE_EXHAUSTED)
		fail_msg("oversized Ping: %s \"%s\"", ap_rpc_code_name(st.code), st.details);
	fprintf(stderr, "%-34s -> %s \"%s\"\n", "oversized Ping", ap_rpc_code_name(st.code),
		st.details);
	expect_raw_unary(d->admin, AP_RPC_ADMIN_CREATE_TASKS, big, big_len,
			 AP_RPC_RESOURCE_EXHAUSTED, "oversized CreateTasks");
	free(big);

	/* Undecodable unary requests, an unknown method. */
	expect_raw_unary(d->node, AP_RPC_NODE_PING, garbage, sizeof garbage,
			 AP_RPC_INVALID_ARGUMENT, "undecodable Checkin");
	expect_raw_unary(d->admin, AP_RPC_ADMIN_CREATE_TASKS, garbage, sizeof garbage,
			 AP_RPC_INVALID_ARGUMENT, "undecodable CreateTasksReq");
	expect_raw_unary(d->node, "/aggregator.Node/NoSuchMethod", "", 0,
			 AP_RPC_UNIMPLEMENTED, "unknown method");

	/* NotifyTriggers from an unapproved operator. */
	Aggregator__NotifyTriggersReq nreq = AGGREGATOR__NOTIFY_TRIGGERS_REQ__INIT;
	Aggregator__NotifyTriggersResp *nresp = NULL;
	nreq.address = c;
	nreq.task_id = "bad-0000";
	nreq.trigger_type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	nreq.trigger_request_id = "r1";
	assert_int_equal(ap_client_notify_triggers(d->node, &nreq, &nresp, NULL, &st), 0);
	ap_client_free(nresp);
	if (st.code != AP_RPC_PERMISSION_DENIED)
		fail_msg("NotifyTriggers from an unapproved operator: %s \"%s\"",
			 ap_rpc_code_name(st.code), st.details);

	/* Garbage on the TCP port. */
	unsigned char noise[64 * 1024];
	uint32_t x = 2463534242u;
	for (size_t i = 0; i < sizeof noise; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		noise[i] = (unsigned char)x;
	}
	size_t back = raw_write(d->port, noise, sizeof noise, 3000);
	fprintf(stderr, "%-34s -> %zu bytes back, connection closed or timed out\n",
		"64 KiB of random bytes", back);
	static const char http1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	raw_write(d->port, http1, sizeof http1 - 1, 3000);
	/* A valid HTTP/2 preface, then a frame header announcing a 16 MiB
	 * HEADERS frame on stream 1 followed by junk. */
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
		"\x00\x00\x00\x04\x00\x00\x00\x00\x00" /* empty SETTINGS */
		"\xff\xff\xff\x01\x05\x00\x00\x00\x01junkjunkjunk";
	raw_write(d->port, preface, sizeof preface - 1, 3000);
	/* Half a preface, then silence: the server must not wait on it
	 * forever to serve others (checked below by the operator still being
	 * served while this socket is open). */
	int idle = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)d->port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(idle, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_true(send(idle, "PRI * HTTP/2", 12, MSG_NOSIGNAL) == 12);

	/* The connected operator was not disturbed. */
	assert_true(td_alive(d));
	assert_false(it_op_ended(good, &st));
	assert_true(it_operator(d->admin, a, &info));
	assert_true(info.connected);
	assert_true(info.ready);
	assert_int_equal(info.generation, generation);
	it_create_tasks(d->admin, "bad", 3, 1);
	assert_true(it_op_wait_task(good, "bad-0003", true, TD_WAIT_MS));
	assert_int_equal(it_op_count(good), 4);
	checkin.address = a;
	checkin.version = "itest";
	assert_int_equal(ap_client_ping(d->node, &checkin, &pong, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	ap_client_free(pong);
	close(idle);

	/* Nobody else got anything. */
	it_task *tasks = NULL;
	size_t n = it_list_tasks(d->admin, &tasks);
	assert_int_equal(n, 4);
	assert_int_equal(it_owned_by(tasks, n, a), 4);
	free(tasks);
	if (it_operator(d->admin, c, &info))
		assert_false(info.connected);
	if (it_operator(d->admin, b, &info))
		assert_false(info.connected);
	assert_false(it_op_ended(good, NULL));
	it_op_free(good);
	d->passed = true;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_bad_input, teardown),
	};
	ap_client_init();
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	ap_client_shutdown();
	return failed;
}
