/* The real daemon as a child process: see daemon.h. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <dirent.h>

#include "ap/clock.h"
#include "ap/spawn.h"
#include "ap/error.h"
#include "daemon.h"

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/* An option's value: 0 means `dflt`, TD_ZERO means 0. */
static int64_t opt_value(int64_t v, int64_t dflt)
{
	return v == TD_ZERO ? 0 : v ? v : dflt;
}

/* Append "key = value;" for an option that is set; returns the length. */
static int opt_line(char *buf, size_t size, const char *key, int64_t v)
{
	if (!v)
		return 0;
	return snprintf(buf, size, "%s = %lld;\n", key, (long long)opt_value(v, 0));
}

/* Remove the temp dirs of test processes that died without their
 * teardown (a sanitizer abort, a SIGKILL): each dir names its owner in
 * owner.pid, and their daemons died with them (PR_SET_PDEATHSIG). */
static void remove_orphaned_dirs(void)
{
	DIR *tmp = opendir("/tmp");
	struct dirent *e;
	if (!tmp)
		return;
	while ((e = readdir(tmp)) != NULL) {
		char path[PATH_MAX], owner[PATH_MAX + 16];
		int pid = 0;
		if (strncmp(e->d_name, "ap-it-", 6) != 0)
			continue;
		snprintf(path, sizeof path, "/tmp/%s", e->d_name);
		snprintf(owner, sizeof owner, "%s/owner.pid", path);
		FILE *f = fopen(owner, "r");
		if (!f)
			continue; /* being created, or not ours */
		if (fscanf(f, "%d", &pid) == 1 && pid > 0 && kill(pid, 0) != 0 &&
		    errno == ESRCH)
			td_rmtree(path);
		fclose(f);
	}
	closedir(tmp);
}

td_daemon *td_create(const td_options *o)
{
	static const td_options defaults = { 0 };
	char conf[4096];
	char approved[2048];
	char operators[3072];
	int n;

	if (!o)
		o = &defaults;
	td_daemon *d = calloc(1, sizeof *d);
	assert_non_null(d);
	remove_orphaned_dirs();
	snprintf(d->dir, sizeof d->dir, "/tmp/ap-it-XXXXXX");
	assert_non_null(mkdtemp(d->dir));
	char owner[PATH_MAX], pid[32];
	snprintf(owner, sizeof owner, "%s/owner.pid", d->dir);
	snprintf(pid, sizeof pid, "%d\n", (int)getpid());
	write_file(owner, pid);
	snprintf(d->conf_path, sizeof d->conf_path, "%s/aggregator.conf", d->dir);
	snprintf(d->port_path, sizeof d->port_path, "%s/port", d->dir);
	snprintf(d->log_path, sizeof d->log_path, "%s/daemon.log", d->dir);
	snprintf(d->db_path, sizeof d->db_path, "%s/db", d->dir);
	snprintf(d->admin_target, sizeof d->admin_target, "unix:%s/admin.sock", d->dir);
	if (o->node_options)
		d->node_options = *o->node_options;

	snprintf(approved, sizeof approved, "%s", o->approved ? o->approved : "\"*\"");
	n = snprintf(operators, sizeof operators,
		     "operators = {\n  approved = [ %s ];\n  stabilization_ms = %lld;\n",
		     approved, (long long)opt_value(o->stabilization_ms, 300));
	n += opt_line(operators + n, sizeof operators - n, "  restart_grace_ms",
		      o->restart_grace_ms);
	n += opt_line(operators + n, sizeof operators - n, "  resync_interval_ms",
		      o->resync_interval_ms);
	n += opt_line(operators + n, sizeof operators - n, "  reconnect_cooldown_ms",
		      o->reconnect_cooldown_ms);
	n += snprintf(operators + n, sizeof operators - n, "};\n");
	assert_true(n < (int)sizeof operators);

	char log_group[PATH_MAX + 96] = "log = { level = \"debug\"; };";
	snprintf(d->json_log_path, sizeof d->json_log_path, "%s/daemon.jsonl", d->dir);
	if (o->json_log)
		snprintf(log_group, sizeof log_group,
			 "log = { level = \"debug\"; format = \"json\"; file = \"%s\"; };",
			 d->json_log_path);
	n = snprintf(conf, sizeof conf,
		     "# written by tests/integration/daemon.c\n"
		     "listen = \"127.0.0.1:0\";\n"
		     "admin_listen = \"%s\";\n"
		     "storage = { dir = \"%s\"; };\n"
		     "%s"
		     "auth = { %s };\n"
		     "metrics_listen = \"%s\";\n"
		     "%s\n",
		     d->admin_target, d->db_path, operators,
		     o->auth ? o->auth : "mode = \"none\";",
		     o->metrics_listen ? o->metrics_listen : "", log_group);
	n += opt_line(conf + n, sizeof conf - n, "max_message_bytes", o->max_message_bytes);
	n += opt_line(conf + n, sizeof conf - n, "shutdown_timeout_ms", o->shutdown_timeout_ms);
	if (o->extra)
		n += snprintf(conf + n, sizeof conf - n, "%s\n", o->extra);
	assert_true(n < (int)sizeof conf);
	write_file(d->conf_path, conf);
	return d;
}

/* fork + exec (the notes: harmless after grpc_init, unlike a fork that
 * goes on using gRPC). Only async-signal-safe calls in the child. */
static pid_t spawn_daemon(td_daemon *d, const char *ap_path)
{
	int logfd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	assert_true(logfd >= 0);
	char *argv[] = { (char *)ap_path, "--config", d->conf_path, "aggregator", "--port-file",
			 d->port_path, NULL };
	pid_t pid = ap_spawn(argv, -1, logfd, logfd, -1);
	assert_true(pid >= 0);
	close(logfd);
	return pid;
}

bool td_alive(td_daemon *d)
{
	if (d->pid <= 0)
		return false;
	int status;
	pid_t r = waitpid(d->pid, &status, WNOHANG);
	if (r == d->pid) {
		fprintf(stderr, "daemon %d exited: %s %d\n", (int)d->pid,
			WIFEXITED(status) ? "status" : "signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		d->pid = 0;
		return false;
	}
	return true;
}

static void close_channels(td_daemon *d)
{
	ap_client_close(d->admin);
	ap_client_close(d->node);
	d->admin = NULL;
	d->node = NULL;
}

void td_start(td_daemon *d)
{
	const char *builddir = getenv("AP_BUILDDIR");
	char ap_path[PATH_MAX];
	char err[256];

	if (!builddir || !*builddir) {
		fail_msg("AP_BUILDDIR is not set: run the integration tests through "
			 "`make check` (it sets AP_BUILDDIR to the build directory)");
	}
	snprintf(ap_path, sizeof ap_path, "%s/ap", builddir);
	if (access(ap_path, X_OK) != 0)
		fail_msg("%s is not an executable: build it first (make ap)", ap_path);
	assert_int_equal(d->pid, 0);
	unlink(d->port_path);

	FILE *log = fopen(d->log_path, "a");
	if (log) {
		fprintf(log, "==== test: start %d ====\n", d->starts + 1);
		fclose(log);
	}
	d->pid = spawn_daemon(d, ap_path);
	d->starts++;

	int64_t deadline = ap_clock_mono_ms() + TD_START_TIMEOUT_MS;
	int rc;
	while ((rc = ap_client_read_port_file(d->port_path, &d->port)) != 0) {
		if (!td_alive(d)) {
			td_dump_log(d, 60);
			fail_msg("the daemon exited before writing its port file");
		}
		if (ap_clock_mono_ms() > deadline) {
			td_dump_log(d, 60);
			fail_msg("no port file %s after %d ms (last: %s)", d->port_path,
				 TD_START_TIMEOUT_MS, ap_strerror(rc));
		}
		sleep_ms(5);
	}
	snprintf(d->target, sizeof d->target, "127.0.0.1:%d", d->port);
	close_channels(d);
	if (ap_client_open(d->target, &d->node_options, &d->node, err, sizeof err) != 0)
		fail_msg("ap_client_open(%s): %s", d->target, err);
	assert_int_equal(ap_client_open(d->admin_target, NULL, &d->admin, err, sizeof err), 0);

	/* Serving means HealthCheck "OK" on the operator port and a working
	 * admin service. */
	ap_rpc_status st = { 0 };
	ap_call_options co = { .timeout_ms = 2000, .wait_for_ready = true };
	for (;;) {
		Aggregator__HealthCheckRequest hreq = AGGREGATOR__HEALTH_CHECK_REQUEST__INIT;
		Aggregator__HealthCheckResponse *hresp = NULL;
		Aggregator__ListOperatorsResp *ops = NULL;
		bool ok = false;
		if (ap_client_health_check(d->node, &hreq, &hresp, &co, &st) == 0 &&
		    st.code == AP_RPC_OK && strcmp(hresp->status, "OK") == 0) {
			ap_rpc_status ast;
			ok = ap_client_list_operators(d->admin, &ops, &co, &ast) == 0 &&
			     ast.code == AP_RPC_OK;
			if (!ok)
				st = ast;
		}
		ap_client_free(hresp);
		ap_client_free(ops);
		if (ok)
			break;
		if (!td_alive(d)) {
			td_dump_log(d, 60);
			fail_msg("the daemon exited before serving");
		}
		if (ap_clock_mono_ms() > deadline) {
			td_dump_log(d, 60);
			fail_msg("daemon on %s not serving within %d ms (last: %s %s)",
				 d->target, TD_START_TIMEOUT_MS,
				 ap_rpc_code_name(st.code), st.details);
		}
		sleep_ms(10);
	}
}

/* Wait for the child up to timeout_ms. Returns its wait status, or -1. */
static int reap(td_daemon *d, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	int status;
	for (;;) {
		pid_t r = waitpid(d->pid, &status, WNOHANG);
		if (r == d->pid) {
			d->pid = 0;
			return status;
		}
		if (r < 0 && errno != EINTR) {
			d->pid = 0;
			return -1;
		}
		if (ap_clock_mono_ms() > deadline)
			return -1;
		sleep_ms(2);
	}
}

int td_stop(td_daemon *d)
{
	close_channels(d);
	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	int status = reap(d, TD_STOP_TIMEOUT_MS);
	if (status == -1 && d->pid > 0) {
		fprintf(stderr, "daemon %d ignored SIGTERM for %d ms: SIGKILL\n",
			(int)d->pid, TD_STOP_TIMEOUT_MS);
		td_kill(d);
		return -1;
	}
	return status;
}

void td_stop_clean(td_daemon *d)
{
	int64_t t0 = ap_clock_mono_ms();
	int status = td_stop(d);
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		td_dump_log(d, 60);
		if (status == -1)
			fail_msg("the daemon did not exit within %d ms of SIGTERM",
				 TD_STOP_TIMEOUT_MS);
		fail_msg("the daemon did not exit cleanly on SIGTERM: %s %d",
			 WIFEXITED(status) ? "exit status" : "signal",
			 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	}
	fprintf(stderr, "daemon stopped by SIGTERM in %lld ms, exit 0\n",
		(long long)(ap_clock_mono_ms() - t0));
}

void td_kill(td_daemon *d)
{
	close_channels(d);
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	int status;
	while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR)
		;
	d->pid = 0;
}

int td_threads(const td_daemon *d)
{
	char path[64], line[256];
	int threads = -1;
	snprintf(path, sizeof path, "/proc/%d/status", (int)d->pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Threads: %d", &threads) == 1)
			break;
	fclose(f);
	return threads;
}

int td_wait_threads(const td_daemon *d, int want, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	int n;
	while ((n = td_threads(d)) > want && ap_clock_mono_ms() < deadline)
		sleep_ms(10);
	return n;
}

/* Calls fn with the name (/proc/PID/task/TID/comm) of each of the
 * daemon's threads. Returns how many it saw, -1 when the daemon is gone. */
static int for_each_thread(const td_daemon *d, void (*fn)(const char *name, void *arg), void *arg)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", (int)d->pid);
	DIR *dir = opendir(path);
	if (!dir)
		return -1;
	int n = 0;
	for (struct dirent *e; (e = readdir(dir)) != NULL;) {
		if (e->d_name[0] == '.')
			continue;
		char comm_path[64 + 256 + 8], name[20] = "?";
		snprintf(comm_path, sizeof comm_path, "%s/%s/comm", path, e->d_name);
		FILE *f = fopen(comm_path, "r");
		if (f) {
			if (fgets(name, sizeof name, f))
				name[strcspn(name, "\n")] = '\0';
			fclose(f);
		}
		fn(name, arg);
		n++;
	}
	closedir(dir);
	return n;
}

typedef struct {
	const char *prefix;
	int n;
} named_count;

static void count_named(const char *name, void *arg)
{
	named_count *c = arg;
	c->n += strncmp(name, c->prefix, strlen(c->prefix)) == 0;
}

int td_threads_named(const td_daemon *d, const char *prefix)
{
	named_count c = { prefix, 0 };
	return for_each_thread(d, count_named, &c) < 0 ? -1 : c.n;
}

int td_wait_threads_named(const td_daemon *d, const char *prefix, int want, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	int n;
	while ((n = td_threads_named(d, prefix)) > want && ap_clock_mono_ms() < deadline)
		sleep_ms(10);
	return n;
}

enum { MAX_NAMES = 64 };
typedef struct {
	char names[MAX_NAMES][20];
	int counts[MAX_NAMES], n;
} name_tally;

static void tally(const char *name, void *arg)
{
	name_tally *t = arg;
	int i = 0;
	while (i < t->n && strcmp(t->names[i], name) != 0)
		i++;
	if (i == t->n) {
		if (t->n == MAX_NAMES)
			return;
		snprintf(t->names[t->n], sizeof t->names[t->n], "%s", name);
		t->counts[t->n++] = 0;
	}
	t->counts[i]++;
}

void td_print_threads(const td_daemon *d)
{
	name_tally t = { .n = 0 };
	if (for_each_thread(d, tally, &t) < 0)
		return;
	fprintf(stderr, "daemon threads by name:");
	for (int i = 0; i < t.n; i++)
		fprintf(stderr, " %s x%d", t.names[i], t.counts[i]);
	fputc('\n', stderr);
}

void td_dump_log(const td_daemon *d, int lines)
{
	FILE *f = fopen(d->log_path, "r");
	if (!f)
		return;
	/* Two passes: count lines, then print the last ones. */
	char buf[4096];
	long total = 0;
	while (fgets(buf, sizeof buf, f))
		total++;
	rewind(f);
	long skip = total > lines ? total - lines : 0;
	fprintf(stderr, "---- last %ld lines of %s ----\n", total - skip, d->log_path);
	for (long i = 0; fgets(buf, sizeof buf, f); i++)
		if (i >= skip)
			fputs(buf, stderr);
	fprintf(stderr, "---- end of daemon log ----\n");
	fclose(f);
}

int td_log_count(const td_daemon *d, const char *needle)
{
	FILE *f = fopen(d->log_path, "r");
	char buf[4096];
	int n = 0;
	if (!f)
		return 0;
	while (fgets(buf, sizeof buf, f))
		if (strstr(buf, needle))
			n++;
	fclose(f);
	return n;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int td_rmtree(const char *dir)
{
	return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void td_destroy(td_daemon *d)
{
	if (!d)
		return;
	if (d->pid > 0)
		td_kill(d);
	close_channels(d);
	if (!d->passed)
		td_dump_log(d, 80);
	if (d->dir[0])
		td_rmtree(d->dir);
	free(d);
}
