/*
 * Integration: `ap operator` as a child process against the real daemon
 * (issue 5, points 1 and 5; SPEC sections 2, 3, 6, 7 and 8).
 *
 *  - lifecycle (auth.mode "none"): the operator connects; a block, a cron
 *    and a fixed-time task are each subscribed ("✅ Created new
 *    subscription during update"); disabling and deleting log "removing
 *    task from all triggers"; the fixed-time task, due ~1.5 s after
 *    creation, fires and the aggregator counts it (ListTasks
 *    execution_count 1). The daemon is SIGKILLed and restarted on the same
 *    port: the operator logs "📡 Stream closed by aggregator - will
 *    reconnect", reconnects and is sent its tasks again, without firing
 *    the fixed-time epoch a second time; a task with max_execution 1 fires,
 *    completes and is dropped. SIGTERM: exit 0 within a bound, and the
 *    daemon lists the operator as disconnected.
 *  - signature (auth.mode "signature", the operator approved by address):
 *    without a key the stream is refused with UNAUTHENTICATED (logged, and
 *    retried); with a key from ap_auth_key_generate/save every call is
 *    signed: the stream opens, a fixed-time task fires and is counted.
 *  - mutual TLS (tls.client_ca_file): an operator trusting the CA but
 *    without a client certificate fails its HealthCheck and never
 *    connects; with the certificate from its tls group it connects and a
 *    trigger is counted. Certificates are made with openssl at run time.
 *  - command line: --help exits 0; a bad option exits 2; a config error
 *    exits 1 naming FILE:LINE; a key of another address, an unreadable key
 *    or an unreadable TLS CA file exits 1 naming it, before anything is
 *    sent.
 *
 * The operator's stdout and stderr go to a file in the daemon's temp dir,
 * polled with deadlines. Every operator process is SIGKILLed and reaped by
 * the teardown when a test fails half-way (and has PR_SET_PDEATHSIG).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/auth.h"
#include "ap/clock.h"
#include "ap/error.h"
#include "daemon.h"
#include "proc.h"
#include "itest.h"

/* Bound on SIGTERM -> exit of the operator: the stream is cancelled at
 * once; a unary call in flight ends within its 3 s deadline. */
#define OP_STOP_BOUND_MS 15000

#define MSG_SUBSCRIBED "✅ Created new subscription during update"
#define MSG_REMOVED "removing task from all triggers"
#define MSG_CLOSED "📡 Stream closed by aggregator - will reconnect"
#define MSG_CONNECTED "🔗 Connected to aggregator"
#define MSG_NOTIFIED "🔔 Trigger notified"

typedef struct op_proc {
	char conf[PATH_MAX];
	char log[PATH_MAX];
	pid_t pid;
	bool passed;
} op_proc;

/* Every operator started and not yet reaped, for the teardown. */
#define MAX_OPS 8
static op_proc *ops[MAX_OPS];
static size_t n_ops;

static const char *ap_binary(void)
{
	static char path[PATH_MAX];
	const char *builddir = getenv("AP_BUILDDIR");
	if (!builddir || !*builddir)
		fail_msg("AP_BUILDDIR is not set: run the integration tests through `make check`");
	snprintf(path, sizeof path, "%s/ap", builddir);
	if (access(path, X_OK) != 0)
		fail_msg("%s is not an executable: build it first (make ap)", path);
	return path;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len - 1 == 0) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
	}
	buf[len] = '\0';
	fclose(f);
	return buf;
}

/* An operator.conf for the daemon at 127.0.0.1:port: fast pings and a
 * short backoff, so reconnects take well under a second. extra: more
 * lines (the tls group), or NULL. */
static void write_op_conf(const char *path, int port, const char *address, const char *key_file,
			  const char *extra)
{
	char text[16384];
	int n = snprintf(text, sizeof text,
		 "# written by tests/integration/test_operator.c\n"
		 "aggregator = \"127.0.0.1:%d\";\n"
		 "address = \"%s\";\n"
		 "key_file = \"%s\";\n"
		 "ping_interval_ms = 300;\n"
		 "backoff = { initial_ms = 100; factor = 2.0; max_ms = 1000; jitter = 0.25;\n"
		 "            reset_after_ms = 120000; };\n"
		 "log = { level = \"debug\"; };\n%s",
		 port, address, key_file, extra ? extra : "");
	assert_true(n > 0 && (size_t)n < sizeof text);
	write_file(path, text);
}

/* `ap --config CONF operator ARGS...` with its output in log (pr_spawn). */
static pid_t spawn(const char *conf, const char *log, const char *const *args)
{
	const char *argv[16];
	size_t n = 0;
	argv[n++] = ap_binary();
	if (conf) {
		argv[n++] = "--config";
		argv[n++] = conf;
	}
	argv[n++] = "operator";
	for (size_t i = 0; args && args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid_t pid = pr_spawn(log, (char *const *)argv);
	assert_true(pid > 0);
	return pid;
}

static op_proc *op_start(const td_daemon *d, const char *name, const char *address,
			 const char *key_file, const char *extra, const char *const *args)
{
	assert_true(n_ops < MAX_OPS);
	op_proc *op = calloc(1, sizeof *op);
	assert_non_null(op);
	snprintf(op->conf, sizeof op->conf, "%s/%s.conf", d->dir, name);
	snprintf(op->log, sizeof op->log, "%s/%s.log", d->dir, name);
	write_op_conf(op->conf, d->port, address, key_file, extra);
	op->pid = spawn(op->conf, op->log, args);
	ops[n_ops++] = op;
	return op;
}

static void op_dump(const op_proc *op)
{
	char *text = read_file(op->log);
	fprintf(stderr, "---- %s ----\n%s---- end of operator log ----\n", op->log,
		text ? text : "(none)\n");
	free(text);
}

/* Lines of the operator's log containing every non-NULL needle. */
static int op_count(const op_proc *op, const char *a, const char *b, const char *c)
{
	FILE *f = fopen(op->log, "r");
	char line[8192];
	int n = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (strstr(line, a) && (!b || strstr(line, b)) && (!c || strstr(line, c)))
			n++;
	fclose(f);
	return n;
}

/* Wait until at least `want` lines hold the needles; fail (with the log)
 * when the operator exits or the deadline passes. */
static void op_wait(op_proc *op, int want, const char *a, const char *b, const char *c)
{
	int64_t deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	for (;;) {
		if (op_count(op, a, b, c) >= want)
			return;
		int status;
		if (op->pid > 0 && waitpid(op->pid, &status, WNOHANG) == op->pid) {
			op->pid = 0;
			op_dump(op);
			fail_msg("the operator exited (status 0x%x) while waiting for '%s' %s %s",
				 status, a, b ? b : "", c ? c : "");
		}
		if (ap_clock_mono_ms() > deadline) {
			op_dump(op);
			fail_msg("no %d line(s) with '%s' %s %s in the operator's log within %d ms",
				 want, a, b ? b : "", c ? c : "", TD_WAIT_MS);
		}
		it_sleep_ms(20);
	}
}

/* Wait up to timeout_ms for the child to exit; its wait status, or -1. */
static int reap(pid_t pid, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1;
		if (ap_clock_mono_ms() > deadline)
			return -1;
		it_sleep_ms(5);
	}
}

/* SIGTERM; assert exit 0 within OP_STOP_BOUND_MS; returns the time taken. */
static int64_t op_stop_clean(op_proc *op)
{
	assert_true(op->pid > 0);
	int64_t t0 = ap_clock_mono_ms();
	kill(op->pid, SIGTERM);
	int status = reap(op->pid, OP_STOP_BOUND_MS);
	int64_t took = ap_clock_mono_ms() - t0;
	if (status == -1) {
		kill(op->pid, SIGKILL);
		reap(op->pid, TD_STOP_TIMEOUT_MS);
		op->pid = 0;
		op_dump(op);
		fail_msg("the operator did not exit within %d ms of SIGTERM", OP_STOP_BOUND_MS);
	}
	op->pid = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		op_dump(op);
		fail_msg("the operator did not exit cleanly on SIGTERM: %s %d",
			 WIFEXITED(status) ? "exit status" : "signal",
			 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	}
	fprintf(stderr, "operator stopped by SIGTERM in %lld ms, exit 0\n", (long long)took);
	return took;
}

static void ops_free_all(void)
{
	for (size_t i = 0; i < n_ops; i++) {
		op_proc *op = ops[i];
		if (op->pid > 0) {
			kill(op->pid, SIGKILL);
			reap(op->pid, TD_STOP_TIMEOUT_MS);
			op->pid = 0;
		}
		if (!op->passed)
			op_dump(op);
		free(op);
	}
	n_ops = 0;
}

static int teardown(void **state)
{
	ops_free_all();
	it_op_free_all();
	td_destroy(*state);
	*state = NULL;
	return 0;
}

static void mark_passed(td_daemon *d)
{
	d->passed = true;
	for (size_t i = 0; i < n_ops; i++)
		ops[i]->passed = true;
}

/* ---- admin helpers --------------------------------------------------------- */

static void create_task(ap_client *admin, const char *id, Aggregator__TaskTrigger *trigger,
			int64_t max_execution)
{
	Aggregator__NewTask t = AGGREGATOR__NEW_TASK__INIT;
	Aggregator__NewTask *tp = &t;
	Aggregator__CreateTasksReq req = AGGREGATOR__CREATE_TASKS_REQ__INIT;
	Aggregator__CreateTasksResp *resp = NULL;
	ap_rpc_status st;
	t.id = (char *)id;
	t.name = (char *)id;
	t.trigger = trigger;
	t.max_execution = max_execution;
	req.n_tasks = 1;
	req.tasks = &tp;
	int rc = ap_client_create_tasks(admin, &req, &resp, NULL, &st);
	ap_client_free(resp);
	assert_int_equal(rc, 0);
	if (st.code != AP_RPC_OK)
		fail_msg("CreateTasks %s: %s %s", id, ap_rpc_code_name(st.code), st.details);
}

static void create_fixed(ap_client *admin, const char *id, int64_t epoch, int64_t max_execution)
{
	Aggregator__FixedTimeTrigger__Config cfg = AGGREGATOR__FIXED_TIME_TRIGGER__CONFIG__INIT;
	Aggregator__FixedTimeTrigger ft = AGGREGATOR__FIXED_TIME_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	cfg.n_epochs = 1;
	cfg.epochs = &epoch;
	ft.config = &cfg;
	tr.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_FIXED_TIME;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME;
	tr.fixed_time = &ft;
	tr.name = (char *)id;
	create_task(admin, id, &tr, max_execution);
}

static void create_cron(ap_client *admin, const char *id, const char *schedule)
{
	char *schedules[] = { (char *)schedule };
	Aggregator__CronTrigger__Config cfg = AGGREGATOR__CRON_TRIGGER__CONFIG__INIT;
	Aggregator__CronTrigger cron = AGGREGATOR__CRON_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	cfg.n_schedules = 1;
	cfg.schedules = schedules;
	cron.config = &cfg;
	tr.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON;
	tr.cron = &cron;
	tr.name = (char *)id;
	create_task(admin, id, &tr, 0);
}

static void create_block(ap_client *admin, const char *id)
{
	Aggregator__BlockTrigger__Config cfg = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger block = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	cfg.interval = 10;
	block.config = &cfg;
	tr.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	tr.block = &block;
	tr.name = (char *)id;
	create_task(admin, id, &tr, 0);
}

/* ListTasks entry of id: execution count and status. False if absent. */
static bool task_info(ap_client *admin, const char *id, int64_t *count, char status[16])
{
	Aggregator__ListTasksReq req = AGGREGATOR__LIST_TASKS_REQ__INIT;
	Aggregator__ListTasksResp *resp = NULL;
	ap_rpc_status st;
	bool found = false;
	assert_int_equal(ap_client_list_tasks(admin, &req, &resp, NULL, &st), 0);
	if (st.code != AP_RPC_OK)
		fail_msg("ListTasks: %s %s", ap_rpc_code_name(st.code), st.details);
	for (size_t i = 0; i < resp->n_tasks; i++) {
		if (strcmp(resp->tasks[i]->id, id) == 0) {
			found = true;
			*count = resp->tasks[i]->execution_count;
			snprintf(status, 16, "%s", resp->tasks[i]->status);
		}
	}
	ap_client_free(resp);
	return found;
}

static void wait_count(ap_client *admin, const char *id, int64_t want, const char *want_status)
{
	int64_t deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	int64_t count = -1;
	char status[16] = "";
	for (;;) {
		bool found = task_info(admin, id, &count, status);
		if (found && count == want && (!want_status || strcmp(status, want_status) == 0))
			return;
		if (ap_clock_mono_ms() > deadline)
			fail_msg("task %s: execution_count %lld status %s, want %lld %s", id,
				 (long long)count, status, (long long)want,
				 want_status ? want_status : "");
		it_sleep_ms(20);
	}
}

static void set_enabled(ap_client *admin, const char *id, bool enabled)
{
	Aggregator__TaskOpResp *resp = NULL;
	ap_rpc_status st;
	assert_int_equal(ap_client_set_task_enabled(admin, id, enabled, &resp, NULL, &st), 0);
	ap_client_free(resp);
	assert_int_equal(st.code, AP_RPC_OK);
}

static void delete_task(ap_client *admin, const char *id)
{
	Aggregator__TaskOpResp *resp = NULL;
	ap_rpc_status st;
	assert_int_equal(ap_client_delete_task(admin, id, &resp, NULL, &st), 0);
	ap_client_free(resp);
	assert_int_equal(st.code, AP_RPC_OK);
}

static void wait_disconnected(ap_client *admin, const char *address)
{
	int64_t deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	for (;;) {
		Aggregator__OperatorInfo info;
		assert_true(it_operator(admin, address, &info));
		if (!info.connected)
			return;
		if (ap_clock_mono_ms() > deadline)
			fail_msg("the daemon still lists %s as connected", address);
		it_sleep_ms(10);
	}
}

/* Rewrite one line of the daemon's config (its listen line). */
static void conf_replace(td_daemon *d, const char *from, const char *to)
{
	char *text = read_file(d->conf_path);
	assert_non_null(text);
	char *at = strstr(text, from);
	assert_non_null(at);
	size_t size = strlen(text) - strlen(from) + strlen(to) + 1;
	char *out = malloc(size);
	assert_non_null(out);
	snprintf(out, size, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
	write_file(d->conf_path, out);
	free(out);
	free(text);
}

/* ---- the tests -------------------------------------------------------------- */

static void test_lifecycle(void **state)
{
	td_options o = { .stabilization_ms = 300 };
	td_daemon *d = td_create(&o);
	*state = d;
	td_start(d);
	char address[43];
	it_address(1, address);

	op_proc *op = op_start(d, "op", address, "", NULL, NULL);
	op_wait(op, 1, MSG_CONNECTED, NULL, NULL);
	assert_true(it_wait_ready(d->admin, address, TD_WAIT_MS));

	/* Each kind is subscribed. The cron schedule fires once a year, so it
	 * never fires during the test. */
	create_block(d->admin, "blk-1");
	create_cron(d->admin, "cron-1", "0 0 1 1 *");
	int64_t epoch = ap_clock_wall_ms() + 1500;
	create_fixed(d->admin, "fix-1", epoch, 0);
	op_wait(op, 1, MSG_SUBSCRIBED, "task_id=blk-1 ", "trigger_type=block");
	op_wait(op, 1, MSG_SUBSCRIBED, "task_id=cron-1 ", "trigger_type=cron");
	op_wait(op, 1, MSG_SUBSCRIBED, "task_id=fix-1 ", "trigger_type=fixed_time");
	assert_int_equal(op_count(op, MSG_SUBSCRIBED, "task_id=blk-1 ", "not watched"), 1);

	/* The fixed-time task fires once, with the firing's request id, and
	 * the aggregator counts it. */
	char rid[96];
	snprintf(rid, sizeof rid, "trigger_request_id=fix-1:%lld ", (long long)epoch);
	op_wait(op, 1, MSG_NOTIFIED, rid, "status=enabled");
	wait_count(d->admin, "fix-1", 1, "enabled");
	int64_t fired_at = ap_clock_wall_ms();
	assert_true(fired_at >= epoch);

	/* Disable and delete reach the subscription table. */
	set_enabled(d->admin, "blk-1", false);
	op_wait(op, 1, MSG_REMOVED, "task_id=blk-1 ", "op=DisableTask");
	delete_task(d->admin, "cron-1");
	op_wait(op, 1, MSG_REMOVED, "task_id=cron-1 ", "op=DeleteTask");

	/* SIGKILL the daemon, restart it on the same port: the operator sees
	 * the stream end, reconnects, and gets its tasks again. */
	int port = d->port;
	td_kill(d);
	op_wait(op, 1, MSG_CLOSED, NULL, NULL);
	char listen[64];
	snprintf(listen, sizeof listen, "listen = \"127.0.0.1:%d\";", port);
	conf_replace(d, "listen = \"127.0.0.1:0\";", listen);
	td_start(d);
	assert_int_equal(d->port, port);
	op_wait(op, 2, MSG_CONNECTED, NULL, NULL);
	op_wait(op, 2, MSG_SUBSCRIBED, "task_id=fix-1 ", NULL);
	assert_true(it_wait_ready(d->admin, address, TD_WAIT_MS));
	/* Disabled and deleted tasks do not come back. */
	assert_int_equal(op_count(op, MSG_SUBSCRIBED, "task_id=blk-1 ", NULL), 1);
	assert_int_equal(op_count(op, MSG_SUBSCRIBED, "task_id=cron-1 ", NULL), 1);

	/* A task that may run once: it fires, the answer says it is done,
	 * and the subscription goes. The scheduler fires in due order, so
	 * by the time this fired, a repeat of fix-1's past epoch would have
	 * fired too: there is none, and the count stays 1. */
	create_fixed(d->admin, "once-1", ap_clock_wall_ms() + 1000, 1);
	op_wait(op, 1, MSG_NOTIFIED, "task_id=once-1 ", "task_still_enabled=false");
	op_wait(op, 1, MSG_REMOVED, "task_id=once-1 ", NULL);
	wait_count(d->admin, "once-1", 1, "completed");
	assert_int_equal(op_count(op, MSG_NOTIFIED, "task_id=fix-1 ", NULL), 1);
	wait_count(d->admin, "fix-1", 1, "enabled");

	/* SIGTERM: exit 0 quickly; the daemon sees the operator go. */
	op_stop_clean(op);
	wait_disconnected(d->admin, address);
	assert_true(op_count(op, "🛑 Stream closed: operator stopping", NULL, NULL) == 1);
	td_stop_clean(d);
	mark_passed(d);
}

static void test_signature(void **state)
{
	uint8_t key[32];
	char address[43], approved[64];
	assert_int_equal(ap_auth_key_generate(key), 0);
	assert_int_equal(ap_auth_address(key, address), 0);
	snprintf(approved, sizeof approved, "\"%s\"", address);
	td_options o = { .stabilization_ms = 300, .approved = approved,
			 .auth = "mode = \"signature\"; max_skew_s = 30;" };
	td_daemon *d = td_create(&o);
	*state = d;
	char key_path[PATH_MAX], err[256];
	snprintf(key_path, sizeof key_path, "%s/operator.key", d->dir);
	assert_int_equal(ap_auth_key_save(key_path, key, err, sizeof err), 0);
	td_start(d);

	/* Without a key: HealthCheck passes (it needs no token), the stream is
	 * refused, and the operator keeps retrying. */
	const char *no_key[] = { "--key-file", "", NULL };
	op_proc *anon = op_start(d, "anon", address, key_path, NULL, no_key);
	op_wait(anon, 1, "No key_file", NULL, NULL);
	op_wait(anon, 2, MSG_CLOSED, "code=UNAUTHENTICATED", NULL);
	op_wait(anon, 1, "Reconnecting to aggregator after backoff", NULL, NULL);
	op_stop_clean(anon);
	assert_true(td_log_count(d, "authentication failed") >= 2);
	int failures = td_log_count(d, "authentication failed");

	/* With its key: signed stream, ping and notification. */
	op_proc *op = op_start(d, "op", address, key_path, NULL, NULL);
	op_wait(op, 1, MSG_CONNECTED, NULL, NULL);
	assert_true(it_wait_ready(d->admin, address, TD_WAIT_MS));
	int64_t epoch = ap_clock_wall_ms() + 1000;
	create_fixed(d->admin, "sig-1", epoch, 0);
	op_wait(op, 1, MSG_SUBSCRIBED, "task_id=sig-1 ", NULL);
	op_wait(op, 1, MSG_NOTIFIED, "task_id=sig-1 ", "status=enabled");
	wait_count(d->admin, "sig-1", 1, "enabled");
	op_wait(op, 1, "DEBUG Ping", NULL, NULL); /* a Ping that succeeded */
	assert_int_equal(op_count(op, "Ping failed", NULL, NULL), 0);
	assert_int_equal(op_count(op, "auth=signature", NULL, NULL), 1);
	/* Not one call of the keyed operator was refused. */
	assert_int_equal(td_log_count(d, "authentication failed"), failures);

	op_stop_clean(op);
	wait_disconnected(d->admin, address);
	td_stop_clean(d);
	mark_passed(d);
}

/* Mutual TLS certificates made with the openssl command in dir: ca.pem,
 * server.pem/.key (SAN IP:127.0.0.1) and client.pem/.key (clientAuth),
 * P-256 keys (fast to make). */
static void make_certs(const char *dir)
{
	char cmd[4096];
	snprintf(cmd, sizeof cmd,
		 "(set -e; cd '%s'\n"
		 "openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\\n"
		 "  -keyout ca.key -out ca.pem -days 2 -subj '/CN=ap operator test CA' \\\n"
		 "  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign\n"
		 "leaf() {\n"
		 "  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\\n"
		 "    -keyout $1.key -out $1.csr -subj \"/CN=ap operator test $1\"\n"
		 "  printf '%%s\\n' \"$2\" \"$3\" > $1.ext\n"
		 "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial \\\n"
		 "    -days 2 -extfile $1.ext -out $1.pem\n"
		 "}\n"
		 "leaf server subjectAltName=IP:127.0.0.1 extendedKeyUsage=serverAuth\n"
		 "leaf client keyUsage=digitalSignature extendedKeyUsage=clientAuth\n"
		 ") >'%s/openssl.log' 2>&1",
		 dir, dir);
	if (system("command -v openssl >/dev/null 2>&1") != 0)
		fail_msg("the openssl command is missing: install the Debian package openssl");
	if (system(cmd) != 0) {
		snprintf(cmd, sizeof cmd, "cat '%s/openssl.log' >&2", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot show openssl.log\n");
		fail_msg("making the test certificates failed");
	}
}

static void test_mutual_tls(void **state)
{
	/* Paths in the daemon's dir; static: td_daemon keeps pointers to
	 * the node_options strings. */
	static char ca[PATH_MAX], server[PATH_MAX], server_key[PATH_MAX], client[PATH_MAX],
		client_key[PATH_MAX];
	td_options o = { .stabilization_ms = 300 };
	td_daemon *d = td_create(&o);
	*state = d;
	make_certs(d->dir);
	snprintf(ca, sizeof ca, "%s/ca.pem", d->dir);
	snprintf(server, sizeof server, "%s/server.pem", d->dir);
	snprintf(server_key, sizeof server_key, "%s/server.key", d->dir);
	snprintf(client, sizeof client, "%s/client.pem", d->dir);
	snprintf(client_key, sizeof client_key, "%s/client.key", d->dir);
	char line[4 * PATH_MAX];
	snprintf(line, sizeof line,
		 "listen = \"127.0.0.1:0\";\ntls = { cert_file = \"%s\"; key_file = \"%s\"; "
		 "client_ca_file = \"%s\"; };", server, server_key, ca);
	conf_replace(d, "listen = \"127.0.0.1:0\";", line);
	d->node_options.tls_ca_file = ca;
	d->node_options.tls_cert_file = client;
	d->node_options.tls_key_file = client_key;
	td_start(d);
	char address[43];
	it_address(3, address);

	/* Trusting the CA but without a client certificate: refused. */
	char extra[4 * PATH_MAX];
	snprintf(extra, sizeof extra, "tls = { ca_file = \"%s\"; };\n", ca);
	op_proc *anon = op_start(d, "anon", address, "", extra, NULL);
	op_wait(anon, 2, "Aggregator health check failed", "UNAVAILABLE", NULL);
	assert_int_equal(op_count(anon, MSG_CONNECTED, NULL, NULL), 0);
	op_stop_clean(anon);

	/* With its certificate: the stream opens and a trigger is counted. */
	snprintf(extra, sizeof extra,
		 "tls = { ca_file = \"%s\"; cert_file = \"%s\"; key_file = \"%s\"; };\n", ca,
		 client, client_key);
	op_proc *op = op_start(d, "op", address, "", extra, NULL);
	op_wait(op, 1, MSG_CONNECTED, NULL, NULL);
	assert_int_equal(op_count(op, "transport=tls", NULL, NULL), 1);
	assert_true(it_wait_ready(d->admin, address, TD_WAIT_MS));
	create_fixed(d->admin, "tls-1", ap_clock_wall_ms() + 1000, 0);
	op_wait(op, 1, MSG_NOTIFIED, "task_id=tls-1 ", "status=enabled");
	wait_count(d->admin, "tls-1", 1, "enabled");
	op_stop_clean(op);
	wait_disconnected(d->admin, address);
	td_stop_clean(d);
	mark_passed(d);
}

/* Run `ap [--config conf] operator args...` to completion (bounded);
 * returns its exit status, its output in *out (malloc'd). */
static int run_to_exit(const char *conf, const char *log, const char *const *args, char **out)
{
	unlink(log);
	pid_t pid = spawn(conf, log, args);
	int status = reap(pid, OP_STOP_BOUND_MS);
	if (status == -1) {
		kill(pid, SIGKILL);
		reap(pid, TD_STOP_TIMEOUT_MS);
		fail_msg("`ap operator` did not exit by itself");
	}
	*out = read_file(log);
	assert_non_null(*out);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_command_line(void **state)
{
	/* A daemon's temp dir, not a daemon: no operator here gets as far as
	 * connecting. */
	td_daemon *d = td_create(NULL);
	*state = d;
	char conf[PATH_MAX], log[PATH_MAX], key_path[PATH_MAX], err[256];
	snprintf(conf, sizeof conf, "%s/op.conf", d->dir);
	snprintf(log, sizeof log, "%s/out.log", d->dir);
	snprintf(key_path, sizeof key_path, "%s/other.key", d->dir);
	char *out = NULL;

	const char *help[] = { "--help", NULL };
	assert_int_equal(run_to_exit(NULL, log, help, &out), 0);
	assert_non_null(strstr(out, "usage: ap [--config FILE] operator"));
	assert_non_null(strstr(out, "--aggregator HOST:PORT"));
	free(out);

	const char *bad[] = { "--frobnicate", NULL };
	assert_int_equal(run_to_exit(NULL, log, bad, &out), 2);
	assert_non_null(strstr(out, "unknown argument '--frobnicate'"));
	free(out);
	const char *missing[] = { "--aggregator", NULL };
	assert_int_equal(run_to_exit(NULL, log, missing, &out), 2);
	free(out);
	const char *bad_address[] = { "--address", "0x123", NULL };
	assert_int_equal(run_to_exit(NULL, log, bad_address, &out), 2);
	assert_non_null(strstr(out, "40 hex digits"));
	free(out);

	/* A config error: exit 1, FILE:LINE. */
	write_file(conf, "aggregator = \"127.0.0.1:1\";\nping_every = 5;\n");
	assert_int_equal(run_to_exit(conf, log, NULL, &out), 1);
	char where[PATH_MAX + 8];
	snprintf(where, sizeof where, "%s:2", conf);
	if (!strstr(out, where))
		fail_msg("no %s in: %s", where, out);
	free(out);

	/* A key that is not the configured address's: exit 1, naming both. */
	uint8_t key[32];
	char key_address[43], address[43];
	assert_int_equal(ap_auth_key_generate(key), 0);
	assert_int_equal(ap_auth_address(key, key_address), 0);
	assert_int_equal(ap_auth_key_save(key_path, key, err, sizeof err), 0);
	it_address(7, address);
	write_op_conf(conf, 1, address, key_path, NULL);
	assert_int_equal(run_to_exit(conf, log, NULL, &out), 1);
	if (!strstr(out, key_address) || !strstr(out, address))
		fail_msg("the key mismatch message names neither address: %s", out);
	free(out);
	/* An unreadable key file: exit 1. */
	const char *nokey[] = { "--key-file", "/nonexistent/op.key", NULL };
	assert_int_equal(run_to_exit(conf, log, nokey, &out), 1);
	assert_non_null(strstr(out, "/nonexistent/op.key"));
	free(out);
	/* The tls group reaches the channel: an unreadable CA file, exit 1. */
	char text[1024];
	snprintf(text, sizeof text,
		 "aggregator = \"127.0.0.1:1\";\naddress = \"%s\";\nkey_file = \"\";\n"
		 "tls = { ca_file = \"/nonexistent/ca.pem\"; };\n", address);
	write_file(conf, text);
	assert_int_equal(run_to_exit(conf, log, NULL, &out), 1);
	if (!strstr(out, "/nonexistent/ca.pem"))
		fail_msg("the TLS error does not name the CA file: %s", out);
	free(out);
	mark_passed(d);
}

int main(void)
{
	/* A SIGTERM the test sends goes to one child; the test itself must not
	 * die of a SIGPIPE from a closed log either. */
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_command_line, teardown),
		cmocka_unit_test_teardown(test_lifecycle, teardown),
		cmocka_unit_test_teardown(test_signature, teardown),
		cmocka_unit_test_teardown(test_mutual_tls, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
