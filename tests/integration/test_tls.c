/* TLS and mutual TLS on the operator port (SPEC section 7, issue 7 point 3),
 * against the real daemon, with certificates this test makes at run time
 * with the openssl command in a temp dir of its own:
 *
 *   ca      a CA; server.pem (SAN IP:127.0.0.1 and DNS:localhost) and
 *           client.pem (clientAuth) are signed by it;
 *   other   a second CA nobody configures; rogue.pem (a client cert) is
 *           signed by it.
 *
 * TLS (tls.cert_file/key_file): a client trusting ca gets HealthCheck "OK"
 * and a stream that receives a created task, whether it checks the server
 * by the target's IP or by an overriding name; a plaintext client, a
 * client trusting only `other` and one expecting a name the certificate
 * does not carry all fail with UNAVAILABLE, and their refused streams
 * never reach the engine (ListOperators does not know them).
 * Mutual TLS (tls.client_ca_file = ca): no client certificate and rogue's
 * are refused (UNAVAILABLE), client.pem works; `ap operator` configured
 * with operator.conf's tls keys connects over it, and one without a client
 * certificate never reaches the engine. The client library's own checks of
 * its TLS options (missing file, not PEM, cert without key) are covered
 * too. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "daemon.h"
#include "itest.h"
#include "proc.h"

/* Certificates for the whole group, made once. */
static char cert_dir[64];

typedef struct fixture {
	td_daemon *d;
	pid_t op_pid, op2_pid; /* `ap operator` children, 0 when none */
} fixture;

static void cert_path(char *out, size_t size, const char *name)
{
	snprintf(out, size, "%s/%s", cert_dir, name);
}

static int group_setup(void **state)
{
	(void)state;
	if (system("command -v openssl >/dev/null 2>&1") != 0) {
		fprintf(stderr, "test_tls: the openssl command is missing: install the "
				"Debian package openssl (listed in .ci/run and README.md)\n");
		return -1;
	}
	snprintf(cert_dir, sizeof cert_dir, "/tmp/ap-tls-XXXXXX");
	if (!mkdtemp(cert_dir)) {
		perror("mkdtemp");
		return -1;
	}
	/* P-256 keys (fast to make); every leaf is signed with explicit
	 * extensions: the server's SANs name both ways a client may check it. */
	char cmd[4096];
	snprintf(cmd, sizeof cmd,
		 "set -e; cd '%s'\n"
		 "ca() {\n"
		 "  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\\n"
		 "    -keyout $1.key -out $1.pem -days 2 -subj \"/CN=ap test CA $1\" \\\n"
		 "    -addext basicConstraints=critical,CA:TRUE \\\n"
		 "    -addext keyUsage=critical,keyCertSign,cRLSign\n"
		 "}\n"
		 "leaf() {\n"
		 "  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\\n"
		 "    -keyout $1.key -out $1.csr -subj \"/CN=ap test $1\"\n"
		 "  printf '%%s\\n' \"$3\" \"$4\" > $1.ext\n"
		 "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial \\\n"
		 "    -days 2 -extfile $1.ext -out $1.pem\n"
		 "}\n"
		 "ca ca; ca other\n"
		 "leaf server ca subjectAltName=IP:127.0.0.1,DNS:localhost extendedKeyUsage=serverAuth\n"
		 "leaf client ca keyUsage=digitalSignature extendedKeyUsage=clientAuth\n"
		 "leaf rogue other keyUsage=digitalSignature extendedKeyUsage=clientAuth\n"
		 "echo 'not a certificate' > garbage.pem\n",
		 cert_dir);
	char full[4200];
	snprintf(full, sizeof full, "(%s) >'%s/openssl.log' 2>&1", cmd, cert_dir);
	if (system(full) != 0) {
		snprintf(full, sizeof full, "cat '%s/openssl.log' >&2", cert_dir);
		if (system(full) != 0)
			fprintf(stderr, "test_tls: cannot show openssl.log\n");
		fprintf(stderr, "test_tls: making the test certificates failed\n");
		td_rmtree(cert_dir);
		return -1;
	}
	ap_client_init();
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	ap_client_shutdown();
	if (cert_dir[0])
		td_rmtree(cert_dir);
	return 0;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (f->op_pid > 0)
		pr_kill(f->op_pid);
	if (f->op2_pid > 0)
		pr_kill(f->op2_pid);
	it_op_free_all();
	td_destroy(f->d);
	free(f);
	return 0;
}

/* Client options built from file names in cert_dir (NULL: unset). */
typedef struct tls_opts {
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	ap_client_options o;
} tls_opts;

static void tls_opts_make(tls_opts *t, const char *ca, const char *cert, const char *key,
			  const char *server_name)
{
	memset(t, 0, sizeof *t);
	if (ca) {
		cert_path(t->ca, sizeof t->ca, ca);
		t->o.tls_ca_file = t->ca;
	}
	if (cert) {
		cert_path(t->cert, sizeof t->cert, cert);
		t->o.tls_cert_file = t->cert;
	}
	if (key) {
		cert_path(t->key, sizeof t->key, key);
		t->o.tls_key_file = t->key;
	}
	t->o.tls_server_name = server_name;
}

/* A daemon with TLS; mutual when `mutual`. node_options is what td_start
 * checks it with. */
static td_daemon *tls_daemon(bool mutual, const ap_client_options *node_options)
{
	char extra[3 * PATH_MAX + 128], server_pem[PATH_MAX], server_key[PATH_MAX], ca_pem[PATH_MAX];
	cert_path(server_pem, sizeof server_pem, "server.pem");
	cert_path(server_key, sizeof server_key, "server.key");
	cert_path(ca_pem, sizeof ca_pem, "ca.pem");
	snprintf(extra, sizeof extra,
		 "tls = { cert_file = \"%s\"; key_file = \"%s\"; client_ca_file = \"%s\"; };",
		 server_pem, server_key, mutual ? ca_pem : "");
	td_options o = { .stabilization_ms = 100, .extra = extra,
			 .node_options = node_options };
	td_daemon *d = td_create(&o);
	td_start(d);
	return d;
}

/* HealthCheck over a new channel with these options; returns the status
 * code (the status text must be "OK" when the call succeeds). */
static int health(const char *target, const ap_client_options *o)
{
	char err[256];
	ap_client *c = NULL;
	if (ap_client_open(target, o, &c, err, sizeof err) != 0)
		fail_msg("ap_client_open(%s): %s", target, err);
	Aggregator__HealthCheckRequest req = AGGREGATOR__HEALTH_CHECK_REQUEST__INIT;
	Aggregator__HealthCheckResponse *resp = NULL;
	ap_rpc_status st = { 0 };
	ap_call_options co = { .timeout_ms = 5000 };
	assert_int_equal(ap_client_health_check(c, &req, &resp, &co, &st), 0);
	if (st.code == AP_RPC_OK)
		assert_string_equal(resp->status, "OK");
	else
		fprintf(stderr, "HealthCheck refused as expected: %s %s\n",
			ap_rpc_code_name(st.code), st.details);
	ap_client_free(resp);
	ap_client_close(c);
	return st.code;
}

/* A stream with these channel options is refused by the transport: it
 * ends with UNAVAILABLE without one message. */
static void stream_refused(const char *target, const ap_client_options *o, const char *address)
{
	Aggregator__SyncMessagesReq req = it_sync_req(address, 1);
	it_op *op = it_op_start_opts(target, o, &req, NULL, false);
	ap_rpc_status st = { 0 };
	assert_true(it_op_wait_end(op, TD_WAIT_MS, &st));
	assert_int_equal(st.code, AP_RPC_UNAVAILABLE);
	assert_int_equal(it_op_messages(op), 0);
	it_op_free(op);
}

/* A stream with these channel options is served: it receives the task
 * created after its operator is ready (and any orphan left by an earlier
 * one). */
static void stream_served(td_daemon *d, const ap_client_options *o, const char *address,
			  const char *task_prefix)
{
	Aggregator__SyncMessagesReq req = it_sync_req(address, 1);
	it_op *op = it_op_start_opts(d->target, o, &req, NULL, true);
	assert_true(it_wait_ready(d->admin, address, TD_WAIT_MS));
	it_create_tasks(d->admin, task_prefix, 0, 1);
	char id[80];
	snprintf(id, sizeof id, "%s-0000", task_prefix); /* it_create_tasks' naming */
	assert_true(it_op_wait_task(op, id, true, TD_WAIT_MS));
	assert_false(it_op_ended(op, &(ap_rpc_status){ 0 }));
	it_op_free(op);
}

static void test_tls(void **state)
{
	fixture *f = *state;
	tls_opts good, named, plain, other, wrong_name;
	tls_opts_make(&good, "ca.pem", NULL, NULL, NULL);
	tls_opts_make(&named, "ca.pem", NULL, NULL, "localhost");
	tls_opts_make(&plain, NULL, NULL, NULL, NULL);
	tls_opts_make(&other, "other.pem", NULL, NULL, NULL);
	tls_opts_make(&wrong_name, "ca.pem", NULL, NULL, "wrong.example");
	f->d = tls_daemon(false, &good.o);
	td_daemon *d = f->d;
	assert_int_equal(td_log_count(d, "\"tls\":true") + td_log_count(d, "tls=true"), 1);

	/* Trusting the CA: by the IP SAN, and by a name given instead. */
	assert_int_equal(health(d->target, &good.o), AP_RPC_OK);
	assert_int_equal(health(d->target, &named.o), AP_RPC_OK);
	char a1[43], a2[43], bad[43];
	it_address(1, a1);
	it_address(2, a2);
	it_address(9, bad);
	stream_served(d, &good.o, a1, "tls-ip");
	stream_served(d, &named.o, a2, "tls-name");

	/* Not speaking TLS, trusting another CA, expecting another name. */
	assert_int_equal(health(d->target, &plain.o), AP_RPC_UNAVAILABLE);
	assert_int_equal(health(d->target, &other.o), AP_RPC_UNAVAILABLE);
	assert_int_equal(health(d->target, &wrong_name.o), AP_RPC_UNAVAILABLE);
	stream_refused(d->target, &plain.o, bad);
	stream_refused(d->target, &other.o, bad);
	stream_refused(d->target, &wrong_name.o, bad);
	/* None of them got as far as the engine. */
	Aggregator__OperatorInfo info;
	assert_false(it_operator(d->admin, bad, &info));

	td_stop_clean(d);
	d->passed = true;
}

static void test_mutual_tls(void **state)
{
	fixture *f = *state;
	tls_opts client, no_cert, rogue, plain;
	tls_opts_make(&client, "ca.pem", "client.pem", "client.key", NULL);
	tls_opts_make(&no_cert, "ca.pem", NULL, NULL, NULL);
	tls_opts_make(&rogue, "ca.pem", "rogue.pem", "rogue.key", NULL);
	tls_opts_make(&plain, NULL, NULL, NULL, NULL);
	f->d = tls_daemon(true, &client.o);
	td_daemon *d = f->d;
	assert_int_equal(td_log_count(d, "\"mutual_tls\":true") + td_log_count(d, "mutual_tls=true"),
			 1);

	char a1[43], bad[43];
	it_address(1, a1);
	it_address(9, bad);
	assert_int_equal(health(d->target, &client.o), AP_RPC_OK);
	stream_served(d, &client.o, a1, "mtls");

	/* No client certificate, or one from a CA the daemon does not trust. */
	assert_int_equal(health(d->target, &no_cert.o), AP_RPC_UNAVAILABLE);
	assert_int_equal(health(d->target, &rogue.o), AP_RPC_UNAVAILABLE);
	assert_int_equal(health(d->target, &plain.o), AP_RPC_UNAVAILABLE);
	stream_refused(d->target, &no_cert.o, bad);
	stream_refused(d->target, &rogue.o, bad);
	Aggregator__OperatorInfo info;
	assert_false(it_operator(d->admin, bad, &info));

	/* The good client still works after the refusals. */
	assert_int_equal(health(d->target, &client.o), AP_RPC_OK);
	td_stop_clean(d);
	d->passed = true;
}

/* Write an operator.conf for `ap operator` against d: address, no key
 * (the daemon runs auth.mode "none"), fast reconnects, and the tls group
 * from ca/cert/key (names in cert_dir, NULL: "") and server_name. */
static void operator_conf(const td_daemon *d, const char *path, const char *address,
			  const char *ca, const char *cert, const char *key,
			  const char *server_name)
{
	char ca_pem[PATH_MAX] = "", cert_pem[PATH_MAX] = "", key_pem[PATH_MAX] = "";
	if (ca)
		cert_path(ca_pem, sizeof ca_pem, ca);
	if (cert)
		cert_path(cert_pem, sizeof cert_pem, cert);
	if (key)
		cert_path(key_pem, sizeof key_pem, key);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp,
		"aggregator = \"%s\";\n"
		"address = \"%s\";\n"
		"key_file = \"\";\n"
		"backoff = { initial_ms = 100; max_ms = 500; };\n"
		"tls = { ca_file = \"%s\"; cert_file = \"%s\"; key_file = \"%s\";\n"
		"  server_name = \"%s\"; };\n"
		"log = { level = \"debug\"; };\n",
		d->target, address, ca_pem, cert_pem, key_pem, server_name ? server_name : "");
	assert_int_equal(fclose(fp), 0);
}

/* Count the lines of a file that contain needle. */
static int file_count(const char *path, const char *needle)
{
	FILE *fp = fopen(path, "r");
	char line[4096];
	int n = 0;
	while (fp && fgets(line, sizeof line, fp))
		if (strstr(line, needle))
			n++;
	if (fp)
		fclose(fp);
	return n;
}

/* `ap operator` with operator.conf's tls keys against a mutual-TLS
 * daemon: with its client certificate (and the CA checked by the name
 * "localhost") it connects and gets its task; without one it is refused
 * at every attempt and the daemon never hears of it. */
static void test_operator_mutual_tls(void **state)
{
	fixture *f = *state;
	tls_opts client;
	tls_opts_make(&client, "ca.pem", "client.pem", "client.key", NULL);
	f->d = tls_daemon(true, &client.o);
	td_daemon *d = f->d;
	char good[43], refused[43];
	it_address(3, good);
	it_address(4, refused);
	char conf[PATH_MAX], log[PATH_MAX], conf2[PATH_MAX], log2[PATH_MAX];
	snprintf(conf, sizeof conf, "%s/operator.conf", d->dir);
	snprintf(log, sizeof log, "%s/operator.log", d->dir);
	snprintf(conf2, sizeof conf2, "%s/operator-nocert.conf", d->dir);
	snprintf(log2, sizeof log2, "%s/operator-nocert.log", d->dir);
	operator_conf(d, conf, good, "ca.pem", "client.pem", "client.key", "localhost");
	operator_conf(d, conf2, refused, "ca.pem", NULL, NULL, NULL);

	const char *ap = pr_ap_path();
	assert_non_null(ap);
	char *argv[] = { (char *)ap, "--config", conf, "operator", NULL };
	char *argv2[] = { (char *)ap, "--config", conf2, "operator", NULL };
	f->op_pid = pr_spawn(log, argv);
	f->op2_pid = pr_spawn(log2, argv2);
	assert_true(f->op_pid > 0 && f->op2_pid > 0);

	if (!it_wait_ready(d->admin, good, TD_WAIT_MS)) {
		fprintf(stderr, "---- %s ----\n", log);
		char cmd[PATH_MAX + 32];
		snprintf(cmd, sizeof cmd, "tail -n 40 '%s' >&2", log);
		if (system(cmd) != 0)
			fprintf(stderr, "(cannot show it)\n");
		fail_msg("ap operator over mutual TLS never became ready");
	}
	it_create_tasks(d->admin, "op-mtls", 0, 1);
	assert_true(it_wait_owned(d->admin, good, 1, TD_WAIT_MS));

	/* The one without a certificate has failed a few times by now, or
	 * does so soon; the daemon never saw it. */
	int64_t deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	while (file_count(log2, "health check failed") < 2 && ap_clock_mono_ms() < deadline)
		it_sleep_ms(50);
	assert_true(file_count(log2, "health check failed") >= 2);
	Aggregator__OperatorInfo info;
	assert_false(it_operator(d->admin, refused, &info));
	assert_int_equal(file_count(log2, "Connected to aggregator"), 0);

	int status = pr_stop(f->op_pid, TD_STOP_TIMEOUT_MS);
	f->op_pid = 0;
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	status = pr_stop(f->op2_pid, TD_STOP_TIMEOUT_MS);
	f->op2_pid = 0;
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	td_stop_clean(d);
	d->passed = true;
}

/* ap_client_open refuses unusable TLS options at once, with a reason. */
static void test_client_options(void **state)
{
	(void)state;
	char err[512];
	ap_client *c = NULL;
	tls_opts t;

	tls_opts_make(&t, "missing.pem", NULL, NULL, NULL);
	assert_int_equal(ap_client_open("127.0.0.1:1", &t.o, &c, err, sizeof err), AP_EINVAL);
	assert_null(c);
	assert_non_null(strstr(err, "missing.pem"));

	tls_opts_make(&t, "garbage.pem", NULL, NULL, NULL);
	assert_int_equal(ap_client_open("127.0.0.1:1", &t.o, &c, err, sizeof err), AP_EINVAL);
	assert_non_null(strstr(err, "no PEM"));

	tls_opts_make(&t, "ca.pem", "client.pem", NULL, NULL);
	assert_int_equal(ap_client_open("127.0.0.1:1", &t.o, &c, err, sizeof err), AP_EINVAL);
	tls_opts_make(&t, NULL, "client.pem", "client.key", NULL);
	assert_int_equal(ap_client_open("127.0.0.1:1", &t.o, &c, err, sizeof err), AP_EINVAL);
	tls_opts_make(&t, NULL, NULL, NULL, "localhost");
	assert_int_equal(ap_client_open("127.0.0.1:1", &t.o, &c, err, sizeof err), AP_EINVAL);
	tls_opts_make(&t, "ca.pem", "client.pem", "missing.key", NULL);
	assert_int_equal(ap_client_open("127.0.0.1:1", &t.o, &c, err, sizeof err), AP_EINVAL);
	assert_non_null(strstr(err, "missing.key"));
	assert_null(c);

	tls_opts_make(&t, "ca.pem", "client.pem", "client.key", "localhost");
	assert_int_equal(ap_client_open("127.0.0.1:1", &t.o, &c, err, sizeof err), 0);
	ap_client_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_options),
		cmocka_unit_test_setup_teardown(test_tls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mutual_tls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_operator_mutual_tls, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
