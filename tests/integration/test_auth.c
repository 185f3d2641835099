/* Operator signature authentication at the wire (SPEC sections 2, 6b and
 * 7; issue 7 point 4), against the real daemon in auth.mode "signature"
 * with max_skew_s 2 and two approved operators whose keys the test makes.
 *
 * Two approved operators connect with good tokens and get their tasks.
 * While they stay connected, SyncMessages, Ping, NotifyTriggers and Ack are
 * called with every kind of bad token, and each gets its SPEC status:
 *   missing token (= approved but unsigned), an empty one  UNAUTHENTICATED
 *   malformed (scheme, epoch, length, v)                   UNAUTHENTICATED
 *   an r that is no curve point (bad signature)            UNAUTHENTICATED
 *   signed by another key for the claimed address          UNAUTHENTICATED
 *   epoch older / newer than max_skew_s                    UNAUTHENTICATED
 *   a good token replayed after max_skew_s                 UNAUTHENTICATED
 *   signed but not approved                                PERMISSION_DENIED
 * (the token is checked before approval, so an unapproved operator without
 * a token is UNAUTHENTICATED). No refused stream receives a message, no
 * refused call supersedes the real session of the address it claims, and
 * a refused NotifyTriggers counts no execution. HealthCheck needs no token.
 * Finally ap_auth_failures_total{reason} on /metrics equals, reason by
 * reason, the refusals this test caused. */
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

#include "ap/auth.h"
#include "ap/clock.h"
#include "daemon.h"
#include "itest.h"

#define MAX_SKEW_S 2

/* The reasons of ap_auth_failures_total, in src/metrics.c's order. */
enum { R_MISSING, R_MALFORMED, R_BAD_SIGNATURE, R_WRONG_SIGNER, R_EXPIRED, R_FUTURE,
       R_UNAPPROVED, R_OTHER, N_REASONS };
static const char *const reason_names[N_REASONS] = {
	"missing", "malformed", "bad_signature", "wrong_signer",
	"expired", "future", "unapproved", "other",
};

typedef struct operator_key {
	uint8_t priv[32];
	char address[43];
} operator_key;

typedef struct fixture {
	td_daemon *d;
	operator_key k1, k2, k3; /* k1, k2 approved; k3 not */
	unsigned expected[N_REASONS]; /* refusals caused so far, by reason */
	it_op *refused[64];           /* every refused stream, kept to the end */
	size_t n_refused;
} fixture;

static void make_key(operator_key *k)
{
	assert_int_equal(ap_auth_key_generate(k->priv), 0);
	assert_int_equal(ap_auth_address(k->priv, k->address), 0);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	make_key(&f->k1);
	make_key(&f->k2);
	make_key(&f->k3);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	it_op_free_all();
	td_destroy(f->d);
	free(f);
	return 0;
}

static int64_t now_s(void)
{
	return ap_clock_wall_ms() / 1000;
}

/* "Bearer <epoch>.<sig>" by key for address. */
static void sign(const operator_key *key, const char *address, int64_t epoch, char out[160])
{
	assert_int_equal(ap_auth_sign(key->priv, address, epoch, out, 160), 0);
}

/* Call options carrying authz (NULL: no authorization metadata). */
typedef struct call_md {
	ap_rpc_metadata md[2];
	ap_call_options co;
} call_md;

static const ap_call_options *with_token(call_md *c, const char *authz)
{
	memset(c, 0, sizeof *c);
	c->co.timeout_ms = TD_WAIT_MS;
	if (authz) {
		c->md[0] = (ap_rpc_metadata){ "authorization", authz };
		c->co.metadata = c->md;
		c->co.n_metadata = 1;
	}
	return &c->co;
}

/* ---- calls --------------------------------------------------------------- */

/* A stream for address with authz that the daemon refuses with `code`
 * (counted under `reason`) before sending anything. */
static void sync_refused(fixture *f, const char *address, const char *authz, int code,
			 int reason)
{
	call_md c;
	Aggregator__SyncMessagesReq req = it_sync_req(address, 1);
	it_op *op = it_op_start_opts(f->d->target, NULL, &req, with_token(&c, authz), false);
	ap_rpc_status st = { 0 };
	assert_true(it_op_wait_end(op, TD_WAIT_MS, &st));
	if (st.code != code)
		fail_msg("SyncMessages for %s with '%s': %s %s, expected %s", address,
			 authz ? authz : "(none)", ap_rpc_code_name(st.code), st.details,
			 ap_rpc_code_name(code));
	if (code == AP_RPC_UNAUTHENTICATED)
		assert_non_null(strstr(st.details, reason_names[reason]));
	assert_int_equal(it_op_messages(op), 0);
	assert_true(f->n_refused < sizeof f->refused / sizeof f->refused[0]);
	f->refused[f->n_refused++] = op;
	f->expected[reason]++;
}

/* A stream for address with a good token, receiving tasks. */
static it_op *sync_good(fixture *f, const char *address, const char *authz)
{
	call_md c;
	Aggregator__SyncMessagesReq req = it_sync_req(address, 1);
	return it_op_start_opts(f->d->target, NULL, &req, with_token(&c, authz), true);
}

static int ping(fixture *f, const char *address, const char *authz)
{
	call_md c;
	Aggregator__Checkin req = AGGREGATOR__CHECKIN__INIT;
	req.id = "test_auth";
	req.address = (char *)address;
	Aggregator__CheckinResp *resp = NULL;
	ap_rpc_status st = { 0 };
	assert_int_equal(ap_client_ping(f->d->node, &req, &resp, with_token(&c, authz), &st), 0);
	if (st.code == AP_RPC_OK)
		assert_non_null(resp->updated_at);
	ap_client_free(resp);
	return st.code;
}

/* NotifyTriggers for task_id; *status gets the answer's status on OK. */
static int notify(fixture *f, const char *address, const char *authz, const char *task_id,
		  char status[32])
{
	call_md c;
	Aggregator__NotifyTriggersReq req = AGGREGATOR__NOTIFY_TRIGGERS_REQ__INIT;
	req.address = (char *)address;
	req.task_id = (char *)task_id;
	req.trigger_type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	req.trigger_request_id = "test_auth-1";
	Aggregator__NotifyTriggersResp *resp = NULL;
	ap_rpc_status st = { 0 };
	assert_int_equal(ap_client_notify_triggers(f->d->node, &req, &resp,
						   with_token(&c, authz), &st), 0);
	if (status)
		snprintf(status, 32, "%s", st.code == AP_RPC_OK ? resp->status : "");
	ap_client_free(resp);
	return st.code;
}

static int ack(fixture *f, const char *address, const char *authz)
{
	call_md c;
	bool acked = true;
	ap_rpc_status st = { 0 };
	assert_int_equal(ap_client_ack(f->d->node, address, "no-such-message", &acked,
				       with_token(&c, authz), &st), 0);
	if (st.code == AP_RPC_OK)
		assert_false(acked);
	return st.code;
}

/* A unary refusal: check the code and count the reason. */
static void unary_refused(fixture *f, const char *what, int got, int want, int reason)
{
	if (got != want)
		fail_msg("%s: %s, expected %s", what, ap_rpc_code_name(got), ap_rpc_code_name(want));
	f->expected[reason]++;
}

static int health(fixture *f, const char *authz)
{
	call_md c;
	Aggregator__HealthCheckRequest req = AGGREGATOR__HEALTH_CHECK_REQUEST__INIT;
	Aggregator__HealthCheckResponse *resp = NULL;
	ap_rpc_status st = { 0 };
	assert_int_equal(ap_client_health_check(f->d->node, &req, &resp, with_token(&c, authz),
						&st), 0);
	if (st.code == AP_RPC_OK)
		assert_string_equal(resp->status, "OK");
	ap_client_free(resp);
	return st.code;
}

/* execution_count of one task per ListTasks. */
static int64_t executions(fixture *f, const char *task_id)
{
	Aggregator__ListTasksReq req = AGGREGATOR__LIST_TASKS_REQ__INIT;
	Aggregator__ListTasksResp *resp = NULL;
	ap_rpc_status st = { 0 };
	assert_int_equal(ap_client_list_tasks(f->d->admin, &req, &resp, NULL, &st), 0);
	assert_int_equal(st.code, AP_RPC_OK);
	int64_t n = -1;
	for (size_t i = 0; i < resp->n_tasks; i++)
		if (strcmp(resp->tasks[i]->id, task_id) == 0)
			n = resp->tasks[i]->execution_count;
	ap_client_free(resp);
	assert_true(n >= 0);
	return n;
}

/* ---- metrics ------------------------------------------------------------- */

/* The metrics port from the daemon's text log line "📈 Metrics served". */
static int metrics_port(const td_daemon *d)
{
	FILE *fp = fopen(d->log_path, "r");
	char line[4096];
	int port = -1;
	assert_non_null(fp);
	while (fgets(line, sizeof line, fp)) {
		char *p = strstr(line, "Metrics served");
		if (p && (p = strstr(p, " port=")))
			port = atoi(p + 6);
	}
	fclose(fp);
	if (port <= 0)
		fail_msg("no 'Metrics served ... port=' line in %s", d->log_path);
	return port;
}

static char *http_get(int port, const char *path)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct timeval tv = { 10, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	char req[128];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
	assert_int_equal(write(fd, req, (size_t)n), n);
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	ssize_t r;
	while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
		len += (size_t)r;
		if (len + 1 == cap) {
			buf = realloc(buf, cap *= 2);
			assert_non_null(buf);
		}
	}
	buf[len] = '\0';
	close(fd);
	assert_non_null(strstr(buf, " 200 "));
	return buf;
}

/* The value of the sample line "NAME VALUE". */
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

/* ---- the test ------------------------------------------------------------ */

static void test_auth_at_the_wire(void **state)
{
	fixture *f = *state;
	char approved[128], auth_group[64];
	snprintf(approved, sizeof approved, "\"%s\", \"%s\"", f->k1.address, f->k2.address);
	snprintf(auth_group, sizeof auth_group, "mode = \"signature\"; max_skew_s = %d;",
		 MAX_SKEW_S);
	td_options o = { .stabilization_ms = 100, .approved = approved, .auth = auth_group,
			 .metrics_listen = "127.0.0.1:0" };
	f->d = td_create(&o);
	td_daemon *d = f->d;
	td_start(d); /* its readiness check is a HealthCheck without a token */
	const char *a1 = f->k1.address, *a2 = f->k2.address, *u = f->k3.address;
	char tok[160], tok2[160], replay[160];

	/* HealthCheck needs no token, and ignores one it does not need. */
	assert_int_equal(health(f, NULL), AP_RPC_OK);
	assert_int_equal(health(f, "Bearer nonsense"), AP_RPC_OK);

	/* ---- the two approved operators, with good tokens ---- */
	int64_t replay_epoch = now_s();
	sign(&f->k1, a1, replay_epoch, replay); /* kept for the replay below */
	it_op *op1 = sync_good(f, a1, replay);
	sign(&f->k2, a2, now_s(), tok);
	it_op *op2 = sync_good(f, a2, tok);
	assert_true(it_wait_ready(d->admin, a1, TD_WAIT_MS));
	assert_true(it_wait_ready(d->admin, a2, TD_WAIT_MS));
	it_create_tasks(d->admin, "auth", 0, 4);
	assert_true(it_op_wait_count(op1, 2, TD_WAIT_MS));
	assert_true(it_op_wait_count(op2, 2, TD_WAIT_MS));
	it_msg first;
	assert_true(it_op_message(op1, 0, &first));
	const char *task1 = first.task_id; /* a task op1 owns */
	Aggregator__OperatorInfo info1, info2;
	assert_true(it_operator(d->admin, a1, &info1));
	assert_true(it_operator(d->admin, a2, &info2));

	/* Good tokens work on the unary calls too. */
	sign(&f->k1, a1, now_s(), tok);
	assert_int_equal(ping(f, a1, tok), AP_RPC_OK);
	char status[32];
	assert_int_equal(notify(f, a1, tok, task1, status), AP_RPC_OK);
	assert_string_equal(status, "enabled");
	assert_int_equal(executions(f, task1), 1);
	assert_int_equal(ack(f, a1, tok), AP_RPC_OK);

	/* ---- missing: approved but unsigned, and an empty value ---- */
	sync_refused(f, a1, NULL, AP_RPC_UNAUTHENTICATED, R_MISSING);
	sync_refused(f, a2, "", AP_RPC_UNAUTHENTICATED, R_MISSING);
	unary_refused(f, "Ping without a token", ping(f, a1, NULL), AP_RPC_UNAUTHENTICATED,
		      R_MISSING);
	unary_refused(f, "NotifyTriggers without a token", notify(f, a1, NULL, task1, NULL),
		      AP_RPC_UNAUTHENTICATED, R_MISSING);
	unary_refused(f, "Ack without a token", ack(f, a1, NULL), AP_RPC_UNAUTHENTICATED,
		      R_MISSING);
	/* The token comes before approval: unapproved and unsigned is
	 * UNAUTHENTICATED, not PERMISSION_DENIED. */
	sync_refused(f, u, NULL, AP_RPC_UNAUTHENTICATED, R_MISSING);

	/* ---- malformed ---- */
	sign(&f->k1, a1, now_s(), tok);
	const char *sig = strchr(tok, '.') + 1; /* 130 hex digits */
	char bad[200];
	static const char *const malformed[] = {
		"Bearer", "Basic dXNlcjpwYXNz", "Bearer 12345", "Bearer .", "bearer x.y",
	};
	for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
		sync_refused(f, a1, malformed[i], AP_RPC_UNAUTHENTICATED, R_MALFORMED);
	snprintf(bad, sizeof bad, "bearer %s", tok + 7); /* the scheme is case-sensitive */
	sync_refused(f, a1, bad, AP_RPC_UNAUTHENTICATED, R_MALFORMED);
	snprintf(bad, sizeof bad, "Bearer -%lld.%s", (long long)now_s(), sig); /* a sign */
	sync_refused(f, a1, bad, AP_RPC_UNAUTHENTICATED, R_MALFORMED);
	snprintf(bad, sizeof bad, "Bearer %lld.%.128s", (long long)now_s(), sig); /* short */
	sync_refused(f, a1, bad, AP_RPC_UNAUTHENTICATED, R_MALFORMED);
	snprintf(bad, sizeof bad, "%s00", tok); /* trailing bytes */
	sync_refused(f, a1, bad, AP_RPC_UNAUTHENTICATED, R_MALFORMED);
	snprintf(bad, sizeof bad, "%s", tok);
	memcpy(bad + strlen(bad) - 2, "01", 2); /* v 1: a raw recovery id */
	sync_refused(f, a1, bad, AP_RPC_UNAUTHENTICATED, R_MALFORMED);
	unary_refused(f, "Ping, malformed", ping(f, a1, "Bearer 1.zz"), AP_RPC_UNAUTHENTICATED,
		      R_MALFORMED);
	unary_refused(f, "NotifyTriggers, malformed", notify(f, a1, "Bearer 1.zz", task1, NULL),
		      AP_RPC_UNAUTHENTICATED, R_MALFORMED);

	/* ---- bad signature: r is not below the group order ---- */
	snprintf(bad, sizeof bad, "Bearer %lld.%0128d1b", (long long)now_s(), 0);
	memset(bad + strlen(bad) - 130, 'f', 64);
	sync_refused(f, a1, bad, AP_RPC_UNAUTHENTICATED, R_BAD_SIGNATURE);

	/* ---- wrong signer: k2 signs for a1's address, k1 for u's ---- */
	sign(&f->k2, a1, now_s(), tok);
	sync_refused(f, a1, tok, AP_RPC_UNAUTHENTICATED, R_WRONG_SIGNER);
	unary_refused(f, "Ping, wrong signer", ping(f, a1, tok), AP_RPC_UNAUTHENTICATED,
		      R_WRONG_SIGNER);
	unary_refused(f, "NotifyTriggers, wrong signer", notify(f, a1, tok, task1, NULL),
		      AP_RPC_UNAUTHENTICATED, R_WRONG_SIGNER);
	sign(&f->k1, u, now_s(), tok);
	sync_refused(f, u, tok, AP_RPC_UNAUTHENTICATED, R_WRONG_SIGNER);
	/* a token made for another address does not transfer */
	sign(&f->k1, a1, now_s(), tok);
	unary_refused(f, "Ping with a1's token claiming a2", ping(f, a2, tok),
		      AP_RPC_UNAUTHENTICATED, R_WRONG_SIGNER);

	/* ---- expired and future epochs ---- */
	sign(&f->k1, a1, now_s() - MAX_SKEW_S - 30, tok);
	sign(&f->k1, a1, now_s() + MAX_SKEW_S + 30, tok2);
	sync_refused(f, a1, tok, AP_RPC_UNAUTHENTICATED, R_EXPIRED);
	sync_refused(f, a1, tok2, AP_RPC_UNAUTHENTICATED, R_FUTURE);
	unary_refused(f, "Ping, expired", ping(f, a1, tok), AP_RPC_UNAUTHENTICATED, R_EXPIRED);
	unary_refused(f, "Ping, future", ping(f, a1, tok2), AP_RPC_UNAUTHENTICATED, R_FUTURE);
	unary_refused(f, "NotifyTriggers, expired", notify(f, a1, tok, task1, NULL),
		      AP_RPC_UNAUTHENTICATED, R_EXPIRED);
	unary_refused(f, "NotifyTriggers, future", notify(f, a1, tok2, task1, NULL),
		      AP_RPC_UNAUTHENTICATED, R_FUTURE);

	/* ---- signed but not approved ---- */
	sign(&f->k3, u, now_s(), tok);
	sync_refused(f, u, tok, AP_RPC_PERMISSION_DENIED, R_UNAPPROVED);
	unary_refused(f, "Ping, unapproved", ping(f, u, tok), AP_RPC_PERMISSION_DENIED,
		      R_UNAPPROVED);
	unary_refused(f, "NotifyTriggers, unapproved", notify(f, u, tok, task1, NULL),
		      AP_RPC_PERMISSION_DENIED, R_UNAPPROVED);
	unary_refused(f, "Ack, unapproved", ack(f, u, tok), AP_RPC_PERMISSION_DENIED,
		      R_UNAPPROVED);

	/* ---- replay: op1's own token, once the window has passed ----
	 * Inside the window a token can be used again (there is no nonce,
	 * as with the upstream operator); after it, it is expired. */
	int64_t deadline = ap_clock_mono_ms() + (MAX_SKEW_S + 5) * 1000;
	while (now_s() <= replay_epoch + MAX_SKEW_S && ap_clock_mono_ms() < deadline)
		it_sleep_ms(50);
	assert_true(now_s() > replay_epoch + MAX_SKEW_S);
	sync_refused(f, a1, replay, AP_RPC_UNAUTHENTICATED, R_EXPIRED);
	unary_refused(f, "Ping, replayed", ping(f, a1, replay), AP_RPC_UNAUTHENTICATED,
		      R_EXPIRED);
	unary_refused(f, "NotifyTriggers, replayed", notify(f, a1, replay, task1, NULL),
		      AP_RPC_UNAUTHENTICATED, R_EXPIRED);

	/* ---- nothing leaked through ---- */
	/* HealthCheck still answers without a token, and counted nothing. */
	assert_int_equal(health(f, NULL), AP_RPC_OK);
	/* No refused NotifyTriggers counted an execution. */
	assert_int_equal(executions(f, task1), 1);
	/* No refused stream got a message; the real sessions of a1 and a2
	 * were never superseded and still hold their tasks. */
	for (size_t i = 0; i < f->n_refused; i++)
		assert_int_equal(it_op_messages(f->refused[i]), 0);
	assert_false(it_op_ended(op1, &(ap_rpc_status){ 0 }));
	assert_false(it_op_ended(op2, &(ap_rpc_status){ 0 }));
	assert_int_equal(it_op_count(op1), 2);
	assert_int_equal(it_op_count(op2), 2);
	Aggregator__OperatorInfo now1, now2, unknown;
	assert_true(it_operator(d->admin, a1, &now1));
	assert_true(it_operator(d->admin, a2, &now2));
	assert_true(now1.connected && now2.connected);
	assert_int_equal(now1.generation, info1.generation);
	assert_int_equal(now2.generation, info2.generation);
	assert_int_equal(now1.connects, 1);
	assert_int_equal(now2.connects, 1);
	assert_false(it_operator(d->admin, u, &unknown));

	/* ---- the counters, reason by reason ---- */
	char *m = http_get(metrics_port(d), "/metrics");
	unsigned total = 0;
	for (int r = 0; r < N_REASONS; r++) {
		char name[96];
		snprintf(name, sizeof name, "ap_auth_failures_total{reason=\"%s\"}",
			 reason_names[r]);
		double got = sample(m, name);
		fprintf(stderr, "%s %.0f (expected %u)\n", name, got, f->expected[r]);
		if (got != (double)f->expected[r])
			fail_msg("%s is %.0f, the test caused %u", name, got, f->expected[r]);
		total += f->expected[r];
	}
	free(m);
	assert_true(f->expected[R_MISSING] > 0 && f->expected[R_MALFORMED] > 0 &&
		    f->expected[R_WRONG_SIGNER] > 0 && f->expected[R_EXPIRED] > 0 &&
		    f->expected[R_FUTURE] > 0 && f->expected[R_UNAPPROVED] > 0);
	fprintf(stderr, "%u refusals, %zu of them streams\n", total, f->n_refused);

	it_op_free(op1);
	it_op_free(op2);
	td_stop_clean(d);
	d->passed = true;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_auth_at_the_wire, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
