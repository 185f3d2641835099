/* bench/bench_grpc (issue 6, points 5-8): ap's operator-facing figures as
 * ratios against a raw gRPC core baseline measured in the same run.
 *
 *   bench/bench_grpc [--latency N] [--cycles N] [--messages N]
 *                    [--failover N] [--tasks N] [--operators N]
 *                    [--batch N] [--idle N,N,...] [--only LIST]
 *                    [--storm-seconds N] [--storm-rate N] [--storm-operators N]
 *                    [--samples DIR] [--ap PATH] [--raw-server PATH]
 *
 * It starts bench/raw_server (the baseline: gRPC core, one thread per
 * stream, no engine) and `ap aggregator` (auth "none", stabilization_ms 0,
 * restart_grace_ms 0, storage.durability write_nosync, info logging, the
 * database in a temp dir under /tmp) as child processes on 127.0.0.1 port 0,
 * a fresh one for each section, and stops every one of them. Sections
 * (--only takes a comma-separated subset):
 *
 *   latency        open stream -> first message, raw; reconnect -> first
 *                  task, ap: an operator owning one task cancels its stream,
 *                  the daemon sees it go, the operator opens a new stream
 *                  and the clock runs until the task arrives. On one
 *                  connection, and on a new connection per stream.
 *   cycles         new connection, stream, first message, close: raw, one
 *                  at a time and 16 in flight.
 *   messages       messages per second on one stream and on 100 streams
 *                  (100 connections), raw.
 *   failover       an owner goes away (its stream cancelled in this
 *                  process, or the operator process SIGKILLed) and the
 *                  clock runs until the other operator has the task; raw:
 *                  an "owner" stream ends and the server's thread for a
 *                  "watch" stream sends it a message.
 *   dissemination  100,000 tasks created by CreateTasks (batches of
 *                  10,000) reach 100 connected operators: from the first
 *                  CreateTasks to the last task received.
 *   memory         RSS, threads and fds of the server with 1,000, 5,000 and
 *                  10,000 idle streams (operators), each on its own
 *                  connection, driven from a few threads here.
 *   storm          `ap stress --target --json` against a daemon of its own
 *                  (200 operators flapping every 5-20 ms, at most
 *                  --storm-rate actions/s, stabilization_ms 0, log level
 *                  warn) for --storm-seconds, beside the raw
 *                  connect-stream-close rate with 16 in flight measured just
 *                  before: reconnects/s and the invariants it checks. With
 *                  two CPUs or more the server (raw_server, then ap) runs on
 *                  CPU 1 and the client (this process, then ap stress) on
 *                  CPU 0, as if on two machines: sharing two cores, a
 *                  harness that opens connections faster than the server's
 *                  share of the CPU can set them up starves it
 *                  (bench/README.md). --storm-pin off lets them share.
 *
 * Then a summary with the ratios and the targets, each printed PASS
 * or MISS with its figure: never a timed assertion (make check does not run
 * this). --samples DIR writes every latency sample set as DIR/NAME.dat
 * ("milliseconds quantile" lines, sorted) for bench/latency.gp.
 *
 * Latency and failover: ap through the project's client library
 * (include/ap/client.h), the raw server through a raw core client
 * (bench/raw_client.c) and, to show what the library itself costs, through
 * the library too; raw and ap samples alternate, one of each in turn, so
 * both see the same machine (these machines are shared and their load comes
 * and goes). Operators that get SIGKILLed are this program run again as
 * `--child-operator ap|raw TARGET ADDRESS`. Dissemination and memory drive
 * their streams with the raw core client's fleet (one thread, one
 * completion queue, every stream on its own connection) against either
 * server, so the client side is the same code for both. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sched.h>

#include "ap/client.h"
#include "ap/clock.h"
#include "ap/error.h"
#include "ap/spawn.h"
#include "raw_client.h"

/* ---- options and results ------------------------------------------------ */

#define MAX_IDLE_STEPS 4

static struct {
	int latency;        /* samples per latency figure */
	int cycles;         /* connect-stream-close cycles per figure */
	int messages;       /* messages per throughput figure */
	int failover;       /* failover rounds */
	int tasks, operators, batch; /* dissemination */
	int idle[MAX_IDLE_STEPS];
	int storm_seconds, storm_rate, storm_operators;
	bool storm_pin;
	int n_idle;
	char only[256];
	const char *samples_dir;
	char ap_path[PATH_MAX];
	char raw_path[PATH_MAX];
	char self_path[PATH_MAX];
} opt = {
	.latency = 1000,
	.cycles = 3000,
	.messages = 300000,
	.failover = 200,
	.tasks = 100000,
	.operators = 100,
	.batch = 10000,
	.idle = { 1000, 5000, 10000 },
	.n_idle = 3,
	.storm_seconds = 70,
	.storm_pin = true,
	.storm_rate = 3000,
	.storm_operators = 200,
};

typedef struct lat {
	bool have;
	int n;
	double p50, p90, p99, max; /* ms */
} lat;

typedef struct mem {
	bool have;
	int streams;
	long rss_kb, threads, fds;
} mem;

static struct {
	lat raw_same, raw_new, raw_lib, ap_same, ap_new;
	double raw_cycles_1, raw_cycles_16, raw_msgs_1, raw_msgs_100;
	lat raw_fail_cancel, raw_fail_kill, ap_fail_cancel, ap_fail_kill;
	double ap_dissem, ap_dissem_create_s, ap_dissem_s, ap_create_only;
	int ap_dissem_min, ap_dissem_max;
	mem raw_base, ap_base, raw_mem[MAX_IDLE_STEPS], ap_mem[MAX_IDLE_STEPS];
	bool have_cycles, have_msgs, have_dissem;
	/* storm */
	bool have_storm, storm_passed;
	double storm_raw_cycles, storm_rate, storm_s;
	unsigned long long storm_reconnects, storm_violations;
	char storm_failed[512]; /* names of the invariants that failed */
} R;

static bool section(const char *name)
{
	if (!opt.only[0])
		return true;
	char list[sizeof opt.only + 2];
	snprintf(list, sizeof list, ",%s,", opt.only);
	char key[64];
	snprintf(key, sizeof key, ",%s,", name);
	return strstr(list, key) != NULL;
}

/* ---- processes we started ------------------------------------------------- */

#define MAX_CHILDREN 8
static pid_t children[MAX_CHILDREN];
static char tempdirs[MAX_CHILDREN][64];

static void track_child(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (!children[i]) {
			children[i] = pid;
			return;
		}
}

static void untrack_child(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rmtree(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void track_dir(const char *dir)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (!tempdirs[i][0]) {
			snprintf(tempdirs[i], sizeof tempdirs[i], "%s", dir);
			return;
		}
}

static void untrack_dir(const char *dir)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (strcmp(tempdirs[i], dir) == 0)
			tempdirs[i][0] = '\0';
}

/* Every process we started is stopped, every temp dir removed. */
static void cleanup(void)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
			children[i] = 0;
		}
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (tempdirs[i][0]) {
			rmtree(tempdirs[i]);
			tempdirs[i][0] = '\0';
		}
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench_grpc: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	cleanup();
	exit(1);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* The CPU a spawned child is pinned to (-1: none) and the log level of
 * the daemons ap_start writes a config for; the storm section sets both. */
static int spawn_cpu = -1;
static const char *ap_log_level = "info";

static void cpu_only(cpu_set_t *set, int cpu)
{
	CPU_ZERO(set);
	if (cpu >= 0) {
		CPU_SET(cpu, set);
		return;
	}
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	for (long i = 0; i < n && i < CPU_SETSIZE; i++)
		CPU_SET(i, set);
}

/* Every thread of this process (gRPC's included) on `cpu`, or on all
 * CPUs when cpu is -1. Threads started later inherit it. */
static void pin_self(int cpu)
{
	cpu_set_t set;
	cpu_only(&set, cpu);
	DIR *d = opendir("/proc/self/task");
	if (!d)
		die("opendir /proc/self/task: %s", strerror(errno));
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		if (e->d_name[0] != '.')
			sched_setaffinity((pid_t)atoi(e->d_name), sizeof set, &set);
	closedir(d);
}

/* ap_spawn with stdout to out_fd (or the log), stderr to the log, pinned
 * to spawn_cpu; the child is tracked for cleanup(). */
static pid_t spawn(char *const argv[], const char *log_path, int out_fd)
{
	int logfd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
			 0644);
	if (logfd < 0)
		die("cannot open %s: %s", log_path, strerror(errno));
	pid_t pid = ap_spawn(argv, -1, out_fd >= 0 ? out_fd : logfd, logfd, spawn_cpu);
	if (pid < 0)
		die("fork: %s", strerror(errno));
	close(logfd);
	track_child(pid);
	return pid;
}

/* SIGTERM, then SIGKILL after timeout_ms. Returns the wait status or -1. */
static int stop_child(pid_t pid, int64_t timeout_ms)
{
	int status = -1;
	kill(pid, SIGTERM);
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (ap_clock_mono_ms() > deadline) {
			fprintf(stderr, "bench_grpc: pid %d ignored SIGTERM: SIGKILL\n", (int)pid);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			status = -1;
			break;
		}
		sleep_ms(5);
	}
	untrack_child(pid);
	return status;
}

static void make_tempdir(char *dir, size_t size, const char *what)
{
	snprintf(dir, size, "/tmp/ap-bench-%s-XXXXXX", what);
	if (!mkdtemp(dir))
		die("mkdtemp: %s", strerror(errno));
	track_dir(dir);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		die("cannot write %s", path);
}

static int wait_port_file(const char *path, pid_t pid)
{
	int64_t deadline = ap_clock_mono_ms() + 60000;
	int port;
	while (ap_client_read_port_file(path, &port) != 0) {
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			untrack_child(pid);
			die("pid %d exited before writing %s", (int)pid, path);
		}
		if (ap_clock_mono_ms() > deadline)
			die("no port in %s after 60 s", path);
		sleep_ms(5);
	}
	return port;
}

/* /proc/PID: threads, RSS, open fds. */
static mem proc_sample(pid_t pid, int streams)
{
	mem m = { .have = true, .streams = streams };
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot read %s", path);
	while (fgets(line, sizeof line, f)) {
		sscanf(line, "Threads: %ld", &m.threads);
		sscanf(line, "VmRSS: %ld", &m.rss_kb);
	}
	fclose(f);
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL)
			m.fds += e->d_name[0] != '.';
		closedir(d);
	}
	return m;
}

/* ---- the raw server ----------------------------------------------------- */

typedef struct server {
	pid_t pid;
	char dir[64];
	char target[64];
	char admin_target[PATH_MAX];
	char log_path[PATH_MAX];
	ap_client *admin;
} server;

static void raw_start(server *s)
{
	char port_path[PATH_MAX];
	memset(s, 0, sizeof *s);
	make_tempdir(s->dir, sizeof s->dir, "raw");
	snprintf(port_path, sizeof port_path, "%s/port", s->dir);
	snprintf(s->log_path, sizeof s->log_path, "%s/raw.log", s->dir);
	char *argv[] = { opt.raw_path, "--port-file", port_path, NULL };
	s->pid = spawn(argv, s->log_path, -1);
	snprintf(s->target, sizeof s->target, "127.0.0.1:%d", wait_port_file(port_path, s->pid));
}

static void server_stop(server *s)
{
	ap_client_close(s->admin);
	s->admin = NULL;
	int status = stop_child(s->pid, 30000);
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench_grpc: %s did not exit cleanly (status 0x%x; log kept in %s)\n",
			s->admin_target[0] ? "ap aggregator" : "raw_server", (unsigned)status, s->dir);
		untrack_dir(s->dir); /* kept: cleanup() would remove it */
	} else {
		rmtree(s->dir);
		untrack_dir(s->dir);
	}
}

/* ---- the daemon ------------------------------------------------------------ */

static void ap_start(server *s)
{
	char conf_path[PATH_MAX], port_path[PATH_MAX], conf[2 * PATH_MAX + 1024];
	memset(s, 0, sizeof *s);
	make_tempdir(s->dir, sizeof s->dir, "ap");
	snprintf(conf_path, sizeof conf_path, "%s/aggregator.conf", s->dir);
	snprintf(port_path, sizeof port_path, "%s/port", s->dir);
	snprintf(s->log_path, sizeof s->log_path, "%s/daemon.log", s->dir);
	snprintf(s->admin_target, sizeof s->admin_target, "unix:%s/admin.sock", s->dir);
	snprintf(conf, sizeof conf,
		 "# written by bench/bench_grpc\n"
		 "listen = \"127.0.0.1:0\";\n"
		 "admin_listen = \"%s\";\n"
		 "storage = { dir = \"%s/db\"; durability = \"write_nosync\"; };\n"
		 "operators = {\n"
		 "  approved = [ \"*\" ];\n"
		 "  stabilization_ms = 0;\n"
		 "  restart_grace_ms = 0;\n"
		 "  max_sessions = 20000;\n"
		 "};\n"
		 "auth = { mode = \"none\"; };\n"
		 "metrics_listen = \"\";\n"
		 "log = { level = \"%s\"; };\n",
		 s->admin_target, s->dir, ap_log_level);
	write_file(conf_path, conf);
	char *argv[] = { opt.ap_path, "--config", conf_path, "aggregator", "--port-file", port_path,
			 NULL };
	s->pid = spawn(argv, s->log_path, -1);
	snprintf(s->target, sizeof s->target, "127.0.0.1:%d", wait_port_file(port_path, s->pid));

	char err[256];
	if (ap_client_open(s->admin_target, NULL, &s->admin, err, sizeof err))
		die("admin client: %s", err);
	int64_t deadline = ap_clock_mono_ms() + 60000;
	for (;;) {
		ap_call_options co = { .timeout_ms = 2000, .wait_for_ready = true };
		Aggregator__ListOperatorsResp *ops = NULL;
		ap_rpc_status st;
		bool ok = ap_client_list_operators(s->admin, &ops, &co, &st) == 0 && st.code == AP_RPC_OK;
		ap_client_free(ops);
		if (ok)
			break;
		if (ap_clock_mono_ms() > deadline)
			die("the daemon's admin service does not answer (log: %s)", s->log_path);
		sleep_ms(10);
	}
}

static Aggregator__ListOperatorsResp *list_operators(server *s)
{
	Aggregator__ListOperatorsResp *ops = NULL;
	ap_rpc_status st;
	ap_call_options co = { .timeout_ms = 30000 };
	if (ap_client_list_operators(s->admin, &ops, &co, &st) != 0 || st.code != AP_RPC_OK)
		die("ListOperators failed: %s %s", ap_rpc_code_name(st.code), st.details);
	return ops;
}

/* Wait until `address` has a connected, ready session newer than
 * min_generation; returns its generation. */
static uint64_t wait_ready(server *s, const char *address, uint64_t min_generation)
{
	int64_t deadline = ap_clock_mono_ms() + 20000;
	for (;;) {
		Aggregator__ListOperatorsResp *ops = list_operators(s);
		uint64_t gen = 0;
		for (size_t i = 0; i < ops->n_operators; i++) {
			const Aggregator__OperatorInfo *o = ops->operators[i];
			if (strcmp(o->address, address) == 0 && o->connected && o->ready &&
			    o->generation > min_generation)
				gen = o->generation;
		}
		ap_client_free(ops);
		if (gen)
			return gen;
		if (ap_clock_mono_ms() > deadline)
			die("operator %s not ready within 20 s (log: %s)", address, s->log_path);
		sleep_ms(1);
	}
}

static void wait_disconnected(server *s, const char *address)
{
	int64_t deadline = ap_clock_mono_ms() + 20000;
	for (;;) {
		Aggregator__ListOperatorsResp *ops = list_operators(s);
		bool connected = false;
		for (size_t i = 0; i < ops->n_operators; i++)
			if (strcmp(ops->operators[i]->address, address) == 0)
				connected = ops->operators[i]->connected;
		ap_client_free(ops);
		if (!connected)
			return;
		if (ap_clock_mono_ms() > deadline)
			die("operator %s still connected after 20 s", address);
		sleep_ms(1);
	}
}

/* Wait until `n` operators are connected and ready. */
static void wait_all_ready(server *s, int n, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		Aggregator__ListOperatorsResp *ops = list_operators(s);
		int ready = 0;
		for (size_t i = 0; i < ops->n_operators; i++)
			ready += ops->operators[i]->connected && ops->operators[i]->ready;
		ap_client_free(ops);
		if (ready >= n)
			return;
		if (ap_clock_mono_ms() > deadline)
			die("%d of %d operators ready after %lld ms (log: %s)", ready, n,
			    (long long)timeout_ms, s->log_path);
		sleep_ms(50);
	}
}

/* Create tasks PREFIX-%09d for i in [from, from + n): block triggers with
 * a name, so ap's message is about the size of the raw server's. */
static void create_tasks(server *s, const char *prefix, int from, int n)
{
	Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger bt = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	bc.interval = 10;
	bt.config = &bc;
	tr.name = "bench block task";
	tr.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	tr.block = &bt;
	Aggregator__NewTask *nts = calloc((size_t)n, sizeof *nts);
	Aggregator__NewTask **list = calloc((size_t)n, sizeof *list);
	char (*ids)[64] = calloc((size_t)n, 64);
	if (!nts || !list || !ids)
		die("out of memory");
	for (int i = 0; i < n; i++) {
		aggregator__new_task__init(&nts[i]);
		snprintf(ids[i], 64, "%s-%09d", prefix, from + i);
		nts[i].id = ids[i];
		nts[i].name = "bench task";
		nts[i].trigger = &tr;
		list[i] = &nts[i];
	}
	Aggregator__CreateTasksReq req = AGGREGATOR__CREATE_TASKS_REQ__INIT;
	req.n_tasks = (size_t)n;
	req.tasks = list;
	Aggregator__CreateTasksResp *resp = NULL;
	ap_rpc_status st;
	ap_call_options co = { .timeout_ms = 120000 };
	if (ap_client_create_tasks(s->admin, &req, &resp, &co, &st) != 0 || st.code != AP_RPC_OK)
		die("CreateTasks failed: %s %s", ap_rpc_code_name(st.code), st.details);
	ap_client_free(resp);
	free(nts);
	free(list);
	free(ids);
}

static void address_of(char out[43], unsigned group, unsigned i)
{
	snprintf(out, 43, "0x%08x%032x", group, i);
}

/* ---- statistics and samples --------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(const int64_t *sorted, int n, double p)
{
	int i = (int)(p / 100.0 * n + 0.5) - 1;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return (double)sorted[i] / 1e6;
}

/* Summarise (sorting in place) and write DIR/name.dat. */
static lat summarise(const char *name, int64_t *ns, int n)
{
	lat l = { .have = n > 0, .n = n };
	if (n <= 0)
		return l;
	qsort(ns, (size_t)n, sizeof *ns, cmp_i64);
	l.p50 = pct(ns, n, 50);
	l.p90 = pct(ns, n, 90);
	l.p99 = pct(ns, n, 99);
	l.max = (double)ns[n - 1] / 1e6;
	if (opt.samples_dir) {
		char path[PATH_MAX];
		mkdir(opt.samples_dir, 0755);
		snprintf(path, sizeof path, "%s/%s.dat", opt.samples_dir, name);
		FILE *f = fopen(path, "w");
		if (!f)
			die("cannot write %s", path);
		fprintf(f, "# %s: latency_ms quantile (%d samples)\n", name, n);
		for (int i = 0; i < n; i++)
			fprintf(f, "%.4f %.5f\n", (double)ns[i] / 1e6, (double)(i + 1) / n);
		fclose(f);
	}
	return l;
}

static void print_lat(const char *what, const lat *l)
{
	if (!l->have)
		return;
	printf("  %-58s p50 %7.3f ms  p90 %7.3f  p99 %7.3f  max %7.3f  (n=%d)\n", what, l->p50,
	       l->p90, l->p99, l->max, l->n);
	fflush(stdout);
}

/* ---- latency ---------------------------------------------------------------- */

/* One stream of `address` through the client library: opened (the clock
 * starts at t0, before the client when `c` is NULL: a new connection),
 * its first message awaited (the clock stops), cancelled, closed. With a
 * daemon `s`, then wait until it has seen the operator go, so the next
 * stream is a reconnect of a departed operator (not a supersede). */
static int64_t lib_stream(ap_client *c, const char *target, server *s, const char *mode,
			  const char *address, int64_t clock)
{
	char err[256];
	Aggregator__SyncMessagesReq req = AGGREGATOR__SYNC_MESSAGES_REQ__INIT;
	req.id = (char *)mode;
	req.address = (char *)address;
	req.monotonic_clock = clock;
	int64_t t0 = ap_clock_mono_ns();
	ap_client *own = NULL;
	if (!c && ap_client_open(target, NULL, &own, err, sizeof err))
		die("client: %s", err);
	ap_stream *st;
	if (ap_stream_open(c ? c : own, &req, NULL, 0, &st) != 0)
		die("stream open failed");
	Aggregator__SyncMessagesResp *msg = NULL;
	ap_rpc_status rs;
	int rc = ap_stream_next(st, 10000, &msg, &rs);
	int64_t t1 = ap_clock_mono_ns();
	if (rc != AP_STREAM_MESSAGE)
		die("no first message on %s (%s %s)", target,
		    rc == AP_STREAM_END ? ap_rpc_code_name(rs.code) : ap_strerror(rc),
		    rc == AP_STREAM_END ? rs.details : "");
	if (msg->op != AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger)
		die("first message is op %d, not MonitorTaskTrigger", (int)msg->op);
	ap_client_free(msg);
	ap_stream_cancel(st);
	ap_stream_close(st);
	ap_client_close(own);
	if (s)
		wait_disconnected(s, address);
	return t1 - t0;
}

/* Raw and ap samples alternate, one of each in turn, so that both see the
 * same machine (the machines are shared: load comes and goes). */
static void run_latency(void)
{
	int n = opt.latency;
	const int warm = 20;
	int64_t *raw_same = calloc((size_t)n, sizeof(int64_t));
	int64_t *raw_lib = calloc((size_t)n, sizeof(int64_t));
	int64_t *ap_same = calloc((size_t)n, sizeof(int64_t));
	int64_t *raw_new = calloc((size_t)n, sizeof(int64_t));
	int64_t *ap_new = calloc((size_t)n, sizeof(int64_t));
	server raw, d;
	char address[43], err[256];

	printf("\n== latency: open stream -> first message (%d streams each, one at a time, "
	       "raw and ap alternating) ==\n", n);
	raw_start(&raw);
	ap_start(&d);
	address_of(address, 0x5ec0, 1);
	create_tasks(&d, "reconnect", 0, 1);
	raw_conn *rc = raw_conn_open(raw.target);
	ap_client *lib_raw, *lib_ap;
	if (ap_client_open(raw.target, NULL, &lib_raw, err, sizeof err) ||
	    ap_client_open(d.target, NULL, &lib_ap, err, sizeof err))
		die("client: %s", err);
	int64_t clock = 1000;
	for (int i = -warm; i < n; i++) {
		int64_t r = raw_conn_stream(rc, 0);
		int64_t l = lib_stream(lib_raw, raw.target, NULL, "one", "", 1);
		int64_t a = lib_stream(lib_ap, d.target, &d, "", address, clock++);
		if (r < 0)
			die("raw stream failed");
		if (i >= 0) {
			raw_same[i] = r;
			raw_lib[i] = l;
			ap_same[i] = a;
		}
	}
	raw_conn_close(rc);
	ap_client_close(lib_raw);
	ap_client_close(lib_ap);
	for (int i = -warm; i < n; i++) {
		int64_t t0 = ap_clock_mono_ns();
		raw_conn *nc = raw_conn_open(raw.target);
		int64_t r = raw_conn_stream(nc, t0);
		raw_conn_close(nc);
		int64_t a = lib_stream(NULL, d.target, &d, "", address, clock++);
		if (r < 0)
			die("raw stream failed");
		if (i >= 0) {
			raw_new[i] = r;
			ap_new[i] = a;
		}
	}
	server_stop(&d);
	server_stop(&raw);
	R.raw_same = summarise("raw_reconnect", raw_same, n);
	R.raw_lib = summarise("raw_reconnect_lib", raw_lib, n);
	R.ap_same = summarise("ap_reconnect", ap_same, n);
	R.raw_new = summarise("raw_reconnect_newconn", raw_new, n);
	R.ap_new = summarise("ap_reconnect_newconn", ap_new, n);
	print_lat("raw server, raw client, one connection", &R.raw_same);
	print_lat("raw server, ap client library, one connection", &R.raw_lib);
	print_lat("ap reconnect -> first task, one connection", &R.ap_same);
	print_lat("raw server, raw client, new connection each", &R.raw_new);
	print_lat("ap reconnect -> first task, new connection each", &R.ap_new);
	free(raw_same);
	free(raw_lib);
	free(ap_same);
	free(raw_new);
	free(ap_new);
}

/* ---- raw cycles and messages ------------------------------------------------ */

static void run_cycles(void)
{
	server s;
	printf("\n== connect-stream-close cycles (raw, %d cycles each) ==\n", opt.cycles);
	raw_start(&s);
	R.raw_cycles_1 = raw_cycles(s.target, opt.cycles, 1);
	R.raw_cycles_16 = raw_cycles(s.target, opt.cycles * 2, 16);
	if (R.raw_cycles_1 < 0 || R.raw_cycles_16 < 0)
		die("raw cycles failed");
	R.have_cycles = true;
	printf("  %-58s %9.0f cycles/s\n", "sequential", R.raw_cycles_1);
	printf("  %-58s %9.0f cycles/s\n", "16 in flight", R.raw_cycles_16);
	server_stop(&s);
}

static void run_messages(void)
{
	server s;
	printf("\n== messages per second (raw, %d messages each) ==\n", opt.messages);
	raw_start(&s);
	R.raw_msgs_1 = raw_flood(s.target, 1, opt.messages);
	R.raw_msgs_100 = raw_flood(s.target, 100, opt.messages / 100);
	if (R.raw_msgs_1 < 0 || R.raw_msgs_100 < 0)
		die("raw flood failed");
	R.have_msgs = true;
	printf("  %-58s %9.0f msg/s\n", "one stream", R.raw_msgs_1);
	printf("  %-58s %9.0f msg/s\n", "100 streams, 100 connections", R.raw_msgs_100);
	server_stop(&s);
}

/* ---- failover ------------------------------------------------------------- */

typedef struct child_op {
	pid_t pid;
	int fd; /* its stdout */
	char buf[512];
	size_t len;
} child_op;

static void child_start(child_op *c, const char *kind, const char *target, const char *address,
			const char *log_path)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		die("pipe: %s", strerror(errno));
	char *argv[] = { opt.self_path, "--child-operator", (char *)kind, (char *)target,
			 (char *)address, NULL };
	memset(c, 0, sizeof *c);
	c->pid = spawn(argv, log_path, p[1]);
	close(p[1]);
	c->fd = p[0];
}

/* The next "M <mono_ns> ..." line of the child: its ns, or dies. */
static int64_t child_message(child_op *c, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			*nl = '\0';
			long long ns = 0;
			if (sscanf(c->buf, "M %lld", &ns) != 1)
				die("child operator said '%s'", c->buf);
			size_t used = (size_t)(nl - c->buf) + 1;
			memmove(c->buf, c->buf + used, c->len - used);
			c->len -= used;
			return ns;
		}
		int64_t left = deadline - ap_clock_mono_ms();
		struct pollfd pfd = { c->fd, POLLIN, 0 };
		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			die("child operator %d sent no message within %lld ms", (int)c->pid,
			    (long long)timeout_ms);
		ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
		if (r <= 0)
			die("child operator %d ended", (int)c->pid);
		c->len += (size_t)r;
	}
}

static void child_kill(child_op *c)
{
	kill(c->pid, SIGKILL);
	waitpid(c->pid, NULL, 0);
	untrack_child(c->pid);
	close(c->fd);
}

/* The failover state of each side between rounds. */
typedef struct raw_failover {
	server s;
	char log_path[PATH_MAX];
	raw_stream *watcher;
} raw_failover;

typedef struct ap_failover {
	server s;
	char log_path[PATH_MAX];
	char b_addr[43], c_addr[43];
	ap_client *bc;
	ap_stream *b;
	Aggregator__SyncMessagesReq req;
	uint64_t b_gen, c_gen;
} ap_failover;

/* Raw: a "watch" stream gets a message whenever an "owner" stream ends:
 * an owner cancelled here, then one in a child process SIGKILLed. */
static void raw_failover_round(raw_failover *f, int64_t *cancel_ns, int64_t *kill_ns)
{
	raw_stream *o = raw_stream_open(f->s.target, "owner");
	if (!o || raw_stream_next(o, 10000) < 0)
		die("raw owner stream failed");
	int64_t t0 = ap_clock_mono_ns();
	raw_stream_cancel(o);
	int64_t t1 = raw_stream_next(f->watcher, 10000);
	if (t1 < 0)
		die("raw watcher got nothing after a cancel");
	*cancel_ns = t1 - t0;
	raw_stream_close(o);

	child_op c;
	child_start(&c, "raw", f->s.target, "", f->log_path);
	child_message(&c, 20000); /* it has its first message: it is live */
	t0 = ap_clock_mono_ns();
	kill(c.pid, SIGKILL);
	t1 = raw_stream_next(f->watcher, 10000);
	if (t1 < 0)
		die("raw watcher got nothing after a kill");
	*kill_ns = t1 - t0;
	child_kill(&c);
}

/* ap: operator B (here) owns T; C (a child process, new each round)
 * connects and is ready; B's stream is cancelled -> C has T; B reconnects
 * (ready, owns nothing: no churn); C is SIGKILLed -> B has T again. */
static void ap_failover_round(ap_failover *f, int64_t *cancel_ns, int64_t *kill_ns)
{
	child_op c;
	child_start(&c, "ap", f->s.target, f->c_addr, f->log_path);
	f->c_gen = wait_ready(&f->s, f->c_addr, f->c_gen);

	int64_t t0 = ap_clock_mono_ns();
	ap_stream_cancel(f->b);
	*cancel_ns = child_message(&c, 10000) - t0;
	ap_stream_close(f->b);

	f->req.monotonic_clock++;
	if (ap_stream_open(f->bc, &f->req, NULL, 5000, &f->b) != 0)
		die("B: stream open failed");
	f->b_gen = wait_ready(&f->s, f->b_addr, f->b_gen);

	Aggregator__SyncMessagesResp *msg;
	ap_rpc_status rs;
	t0 = ap_clock_mono_ns();
	kill(c.pid, SIGKILL);
	int rc = ap_stream_next(f->b, 10000, &msg, &rs);
	int64_t t1 = ap_clock_mono_ns();
	if (rc != AP_STREAM_MESSAGE)
		die("B did not get the task back after C was killed (log: %s)", f->s.log_path);
	if (msg->op != AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger)
		die("B got op %d", (int)msg->op);
	ap_client_free(msg);
	*kill_ns = t1 - t0;
	child_kill(&c);
}

static void run_failover(void)
{
	int n = opt.failover;
	int64_t *raw_cancel = calloc((size_t)n, sizeof(int64_t));
	int64_t *raw_kill = calloc((size_t)n, sizeof(int64_t));
	int64_t *ap_cancel = calloc((size_t)n, sizeof(int64_t));
	int64_t *ap_kill = calloc((size_t)n, sizeof(int64_t));
	raw_failover rf;
	ap_failover af;
	char err[256];

	printf("\n== failover: owner gone -> the other one has the task (%d rounds, raw and ap "
	       "alternating) ==\n", n);
	raw_start(&rf.s);
	snprintf(rf.log_path, sizeof rf.log_path, "%s/child.log", rf.s.dir);
	if (!(rf.watcher = raw_stream_open(rf.s.target, "watch")))
		die("raw watch stream failed");

	memset(&af, 0, sizeof af);
	ap_start(&af.s);
	snprintf(af.log_path, sizeof af.log_path, "%s/child.log", af.s.dir);
	address_of(af.b_addr, 0xfa11, 0xb);
	address_of(af.c_addr, 0xfa11, 0xc);
	if (ap_client_open(af.s.target, NULL, &af.bc, err, sizeof err))
		die("client: %s", err);
	aggregator__sync_messages_req__init(&af.req);
	af.req.address = af.b_addr;
	af.req.monotonic_clock = 1;
	if (ap_stream_open(af.bc, &af.req, NULL, 5000, &af.b) != 0)
		die("B: stream open failed");
	af.b_gen = wait_ready(&af.s, af.b_addr, 0);
	create_tasks(&af.s, "failover", 0, 1);
	Aggregator__SyncMessagesResp *msg;
	ap_rpc_status rs;
	if (ap_stream_next(af.b, 10000, &msg, &rs) != AP_STREAM_MESSAGE)
		die("B did not get the task");
	ap_client_free(msg);

	for (int i = 0; i < n; i++) {
		raw_failover_round(&rf, &raw_cancel[i], &raw_kill[i]);
		ap_failover_round(&af, &ap_cancel[i], &ap_kill[i]);
	}

	raw_stream_close(rf.watcher);
	server_stop(&rf.s);
	ap_stream_cancel(af.b);
	ap_stream_close(af.b);
	ap_client_close(af.bc);
	server_stop(&af.s);
	R.raw_fail_cancel = summarise("raw_failover_cancel", raw_cancel, n);
	R.raw_fail_kill = summarise("raw_failover_kill", raw_kill, n);
	R.ap_fail_cancel = summarise("ap_failover_cancel", ap_cancel, n);
	R.ap_fail_kill = summarise("ap_failover_kill", ap_kill, n);
	print_lat("raw: owner stream cancelled -> watcher message", &R.raw_fail_cancel);
	print_lat("raw: owner process SIGKILLed -> watcher message", &R.raw_fail_kill);
	print_lat("ap: owner's stream cancelled -> other operator has the task", &R.ap_fail_cancel);
	print_lat("ap: owner process SIGKILLed -> other operator has the task", &R.ap_fail_kill);
	free(raw_cancel);
	free(raw_kill);
	free(ap_cancel);
	free(ap_kill);
}

/* The failover rounds' operator process: prints "M <mono_ns> <id>" for
 * every message until its stream ends or it is killed. */
static int child_operator(const char *kind, const char *target, const char *address)
{
	if (strcmp(kind, "raw") == 0) {
		raw_stream *s = raw_stream_open(target, "owner");
		if (!s)
			return 1;
		int64_t t;
		while ((t = raw_stream_next(s, 3600 * 1000)) >= 0) {
			printf("M %lld\n", (long long)t);
			fflush(stdout);
		}
		raw_stream_close(s);
		return 0;
	}
	char err[256];
	ap_client *c;
	if (ap_client_open(target, NULL, &c, err, sizeof err)) {
		fprintf(stderr, "child: %s\n", err);
		return 1;
	}
	Aggregator__SyncMessagesReq req = AGGREGATOR__SYNC_MESSAGES_REQ__INIT;
	req.address = (char *)address;
	req.monotonic_clock = ap_clock_wall_ms();
	ap_stream *s;
	if (ap_stream_open(c, &req, NULL, 5000, &s) != 0)
		return 1;
	for (;;) {
		Aggregator__SyncMessagesResp *msg;
		ap_rpc_status st;
		int rc = ap_stream_next(s, -1, &msg, &st);
		int64_t t = ap_clock_mono_ns();
		if (rc != AP_STREAM_MESSAGE) {
			fprintf(stderr, "child: stream ended: %s %s\n",
				rc == AP_STREAM_END ? ap_rpc_code_name(st.code) : ap_strerror(rc),
				rc == AP_STREAM_END ? st.details : "");
			break;
		}
		printf("M %lld %s\n", (long long)t, msg->id);
		fflush(stdout);
		ap_client_free(msg);
	}
	ap_stream_close(s);
	ap_client_close(c);
	return 0;
}

/* ---- dissemination --------------------------------------------------------- */

static void create_all(server *s)
{
	for (int done = 0; done < opt.tasks; done += opt.batch)
		create_tasks(s, "d", done, opt.tasks - done < opt.batch ? opt.tasks - done : opt.batch);
}

static void run_dissemination(void)
{
	server s;
	printf("\n== dissemination: %d tasks to %d operators (CreateTasks batches of %d, write_nosync) ==\n",
	       opt.tasks, opt.operators, opt.batch);
	ap_start(&s);
	raw_fleet *f = raw_fleet_open(s.target, "", 1, 0xd155, opt.operators);
	if (raw_fleet_grow(f, opt.operators, 60000) != 0)
		die("operators did not connect");
	wait_all_ready(&s, opt.operators, 60000);
	int64_t t0 = ap_clock_mono_ns();
	create_all(&s);
	int64_t created = ap_clock_mono_ns();
	int64_t deadline = ap_clock_mono_ms() + 300000;
	while (raw_fleet_received(f) < (uint64_t)opt.tasks) {
		if (raw_fleet_ended(f))
			die("an operator stream ended (log: %s)", s.log_path);
		if (ap_clock_mono_ms() > deadline)
			die("%llu of %d tasks received after 300 s",
			    (unsigned long long)raw_fleet_received(f), opt.tasks);
		sleep_ms(1);
	}
	int64_t last = raw_fleet_last_ns(f);
	sleep_ms(200); /* anything more would be a duplicate */
	uint64_t got = raw_fleet_received(f), lo, hi;
	raw_fleet_close(f, &lo, &hi);
	server_stop(&s);
	if (got != (uint64_t)opt.tasks)
		die("%llu messages for %d tasks", (unsigned long long)got, opt.tasks);
	R.ap_dissem_min = (int)lo;
	R.ap_dissem_max = (int)hi;
	R.ap_dissem_s = (double)(last - t0) / 1e9;
	R.ap_dissem_create_s = (double)(created - t0) / 1e9;
	R.ap_dissem = opt.tasks / R.ap_dissem_s;
	R.have_dissem = true;
	printf("  %-58s %9.0f tasks/s\n", "ap: first CreateTasks -> last task received", R.ap_dissem);
	printf("  %-58s %9.2f s (CreateTasks calls %.2f s); per operator %d..%d tasks\n",
	       "elapsed", R.ap_dissem_s, R.ap_dissem_create_s, R.ap_dissem_min, R.ap_dissem_max);

	/* The same CreateTasks calls with nobody connected: the create path
	 * alone (store, index, orphan bookkeeping), no assignment, no push. */
	ap_start(&s);
	t0 = ap_clock_mono_ns();
	create_all(&s);
	R.ap_create_only = opt.tasks / ((double)(ap_clock_mono_ns() - t0) / 1e9);
	server_stop(&s);
	printf("  %-58s %9.0f tasks/s\n", "ap: CreateTasks alone, no operator connected",
	       R.ap_create_only);
}

/* ---- memory -------------------------------------------------------------- */

static void print_mem(const char *who, const mem *base, const mem *m)
{
	printf("  %-8s %6d streams: RSS %8.1f MB (+%6.1f kB/stream)  threads %6ld  fds %6ld\n", who,
	       m->streams, m->rss_kb / 1024.0,
	       m->streams ? (double)(m->rss_kb - base->rss_kb) / m->streams : 0.0, m->threads, m->fds);
	fflush(stdout);
}

/* Idle streams by the thousand, each on its own connection, from one
 * client thread: RSS, threads and fds of the server at each step. */
static void memory_steps(server *s, const char *who, const char *mode, mem *base, mem *steps)
{
	int max = opt.idle[opt.n_idle - 1];
	sleep_ms(300);
	*base = proc_sample(s->pid, 0);
	print_mem(who, base, base);
	raw_fleet *f = raw_fleet_open(s->target, mode, 0, 0x1d1e, max);
	for (int i = 0; i < opt.n_idle; i++) {
		if (raw_fleet_grow(f, opt.idle[i], 300000) != 0)
			die("%s: %d idle streams did not open (log: %s)", who, opt.idle[i], s->log_path);
		if (s->admin)
			wait_all_ready(s, opt.idle[i], 60000);
		sleep_ms(1000);
		steps[i] = proc_sample(s->pid, opt.idle[i]);
		print_mem(who, base, &steps[i]);
	}
	raw_fleet_close(f, NULL, NULL);
}

static void run_memory(void)
{
	server s;
	printf("\n== memory: idle streams (operators), each on its own connection ==\n");
	raw_start(&s);
	memory_steps(&s, "raw", "idle", &R.raw_base, R.raw_mem);
	server_stop(&s);
	ap_start(&s);
	memory_steps(&s, "ap", "", &R.ap_base, R.ap_mem);
	server_stop(&s);
}

/* ---- storm: ap stress ----------------------------------------------------- */

/* The number after "KEY": in a JSON text (the first occurrence from p). */
static bool json_number(const char *p, const char *key, double *out)
{
	char pat[96];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *at = strstr(p, pat);
	if (!at)
		return false;
	*out = strtod(at + strlen(pat), NULL);
	return true;
}

static void run_storm(void)
{
	server raw, ap;
	char dir[64], out_path[PATH_MAX], log_path[PATH_MAX];
	char seconds[16], rate[16], operators[16], pid[16];
	bool pin = opt.storm_pin && sysconf(_SC_NPROCESSORS_ONLN) >= 2;

	printf("\n== storm: ap stress, %d operators, %d s, at most %d actions/s ==\n",
	       opt.storm_operators, opt.storm_seconds, opt.storm_rate);
	if (pin) {
		printf("  servers on CPU 1, clients on CPU 0\n");
		pin_self(0);
		spawn_cpu = 1;
	}
	raw_start(&raw);
	R.storm_raw_cycles = raw_cycles(raw.target, opt.cycles * 2, 16);
	server_stop(&raw);
	if (R.storm_raw_cycles < 0)
		die("raw cycles failed");
	printf("  %-58s %9.0f cycles/s\n", "raw connect-stream-close, 16 in flight", R.storm_raw_cycles);

	/* The daemon logs at warn, as ap stress --spawn configures it: at
	 * info every reconnect is a line. */
	ap_log_level = "warn";
	ap_start(&ap);
	ap_log_level = "info";
	make_tempdir(dir, sizeof dir, "storm");
	snprintf(out_path, sizeof out_path, "%s/stress.json", dir);
	snprintf(log_path, sizeof log_path, "%s/stress.log", dir);
	snprintf(seconds, sizeof seconds, "%d", opt.storm_seconds);
	snprintf(rate, sizeof rate, "%d", opt.storm_rate);
	snprintf(operators, sizeof operators, "%d", opt.storm_operators);
	snprintf(pid, sizeof pid, "%d", (int)ap.pid);
	int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("cannot write %s", out_path);
	char *argv[] = { opt.ap_path, "stress", "--target", ap.target, "--admin", ap.admin_target,
			 "--daemon-pid", pid, "--operators", operators, "--duration", seconds,
			 "--stabilization-ms", "0", "--hold-min-ms", "5", "--hold-max-ms", "20",
			 "--max-rate", rate, "--json", "--no-progress", NULL };
	spawn_cpu = pin ? 0 : -1;
	pid_t stress = spawn(argv, log_path, fd);
	spawn_cpu = -1;
	close(fd);
	int status;
	int64_t deadline = ap_clock_mono_ms() + (opt.storm_seconds + 600) * 1000LL;
	while (waitpid(stress, &status, WNOHANG) != stress) {
		if (ap_clock_mono_ms() > deadline) {
			kill(stress, SIGKILL);
			waitpid(stress, &status, 0);
			untrack_child(stress);
			die("ap stress did not finish (output in %s)", dir);
		}
		sleep_ms(100);
	}
	untrack_child(stress);
	server_stop(&ap);
	if (pin)
		pin_self(-1);

	FILE *f = fopen(out_path, "r");
	static char json[1 << 20];
	size_t n = f ? fread(json, 1, sizeof json - 1, f) : 0;
	if (f)
		fclose(f);
	json[n] = '\0';
	double reconnects, per_s, storm_s;
	if (!json_number(json, "reconnects", &reconnects) ||
	    !json_number(json, "reconnects_per_s", &per_s) ||
	    !json_number(json, "storm_s", &storm_s))
		die("ap stress gave no report (exit status %d; see %s)",
		    WIFEXITED(status) ? WEXITSTATUS(status) : -1, dir);
	/* The total is the last "violations" (after the invariants). */
	const char *last = NULL;
	for (const char *p = json; (p = strstr(p, "\"violations\":")) != NULL; p++)
		last = p;
	R.storm_violations = last ? strtoull(last + 13, NULL, 10) : 1;
	R.storm_passed = strstr(json, "\"passed\":true") != NULL &&
			 WIFEXITED(status) && WEXITSTATUS(status) == 0;
	/* Which invariants failed: "NAME":{"checked":true,"items":N,"violations":V */
	R.storm_failed[0] = '\0';
	const char *inv = strstr(json, "\"invariants\":{");
	for (const char *p = inv; p && (p = strstr(p, "\":{\"checked\":")) != NULL; p++) {
		const char *name = p;
		while (name > inv && name[-1] != '"')
			name--;
		double v = 0;
		if (json_number(p, "violations", &v) && v > 0) {
			size_t len = strlen(R.storm_failed);
			snprintf(R.storm_failed + len, sizeof R.storm_failed - len, "%s%.*s=%.0f",
				 len ? ", " : "", (int)(p - name), name, v);
		}
	}
	R.storm_reconnects = (unsigned long long)reconnects;
	R.storm_rate = per_s;
	R.storm_s = storm_s;
	R.have_storm = true;
	printf("  %-58s %9.0f reconnects/s (%llu in %.1f s)\n", "ap stress", per_s,
	       R.storm_reconnects, storm_s);
	printf("  %-58s %s, %llu violations%s%s\n", "invariants",
	       R.storm_passed ? "all hold" : "FAILED", R.storm_violations,
	       R.storm_failed[0] ? ": " : "", R.storm_failed);
	if (R.storm_passed) {
		rmtree(dir);
		untrack_dir(dir);
	} else {
		untrack_dir(dir); /* kept for a look */
		printf("  report and log kept in %s\n", dir);
	}
}

/* ---- summary ----------------------------------------------------------- */

static void verdict(bool pass, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void verdict(bool pass, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("  %s  ", pass ? "PASS" : "MISS");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
}

static void ratio_line(const char *what, const lat *ap, const lat *raw)
{
	if (!ap->have || !raw->have)
		return;
	printf("  %-46s p50 %6.3f / %6.3f ms = %5.2fx   p99 %6.3f / %6.3f ms = %5.2fx\n", what,
	       ap->p50, raw->p50, ap->p50 / raw->p50, ap->p99, raw->p99, ap->p99 / raw->p99);
}

static void summary(void)
{
	printf("\n== ap / raw, same run ==\n");
	ratio_line("reconnect -> first task, one connection", &R.ap_same, &R.raw_same);
	ratio_line("reconnect -> first task, new connection", &R.ap_new, &R.raw_new);
	ratio_line("failover, stream cancelled", &R.ap_fail_cancel, &R.raw_fail_cancel);
	ratio_line("failover, process SIGKILLed", &R.ap_fail_kill, &R.raw_fail_kill);
	if (R.raw_same.have && R.raw_lib.have)
		printf("  %-46s p50 %6.3f / %6.3f ms = %5.2fx   (client library vs raw client)\n",
		       "raw server, ap library / raw client", R.raw_lib.p50, R.raw_same.p50,
		       R.raw_lib.p50 / R.raw_same.p50);
	if (R.have_storm)
		printf("  %-46s %9.0f reconnects/s / %9.0f cycles/s = %5.2fx\n",
		       "storm / raw cycles (16 in flight)", R.storm_rate, R.storm_raw_cycles,
		       R.storm_rate / R.storm_raw_cycles);
	if (R.have_dissem && R.have_msgs)
		printf("  %-46s %9.0f tasks/s / %9.0f msg/s = %5.2fx\n",
		       "dissemination / raw 100-stream messages", R.ap_dissem, R.raw_msgs_100,
		       R.ap_dissem / R.raw_msgs_100);
	for (int i = 0; i < opt.n_idle; i++) {
		const mem *a = &R.ap_mem[i], *r = &R.raw_mem[i];
		if (!a->have || !r->have)
			continue;
		double ak = (double)(a->rss_kb - R.ap_base.rss_kb) / a->streams;
		double rk = (double)(r->rss_kb - R.raw_base.rss_kb) / r->streams;
		char label[64];
		snprintf(label, sizeof label, "RSS per idle stream, %d streams", a->streams);
		printf("  %-46s %6.1f / %6.1f kB = %5.2fx   threads %ld / %ld\n", label, ak, rk,
		       ak / rk, a->threads, r->threads);
	}

	printf("\n== targets (issue 6, point 7) ==\n");
	if (R.ap_same.have && R.raw_same.have) {
		double bound = 2 * R.raw_same.p99 + 1;
		verdict(R.ap_same.p99 <= bound,
			"reconnect -> first task p99 %.3f ms <= 2 x raw p99 %.3f ms + 1 ms = %.3f ms",
			R.ap_same.p99, R.raw_same.p99, bound);
	}
	if (R.ap_fail_cancel.have) {
		verdict(R.ap_fail_cancel.p99 < 50, "failover (stream cancelled) p99 %.3f ms < 50 ms",
			R.ap_fail_cancel.p99);
		verdict(R.ap_fail_kill.p99 < 50, "failover (process SIGKILLed) p99 %.3f ms < 50 ms",
			R.ap_fail_kill.p99);
	}
	if (R.have_storm)
		verdict(R.storm_passed && R.storm_violations == 0 && R.storm_reconnects >= 100000 &&
			R.storm_rate >= 0.5 * R.storm_raw_cycles,
			"storm %.0f reconnects/s >= 0.5 x raw %.0f cycles/s = %.0f, %llu reconnects "
			">= 100,000, %llu violations",
			R.storm_rate, R.storm_raw_cycles, 0.5 * R.storm_raw_cycles,
			R.storm_reconnects, R.storm_violations);
	if (R.have_dissem)
		verdict(R.ap_dissem >= 50000, "dissemination %.0f tasks/s >= 50,000 tasks/s (write_nosync)",
			R.ap_dissem);
	for (int i = 0; i < opt.n_idle; i++)
		if (R.ap_mem[i].have && R.ap_mem[i].streams == 10000)
			verdict(R.ap_mem[i].rss_kb < 1024L * 1024,
				"10,000 operators: daemon RSS %.1f MB < 1024 MB",
				R.ap_mem[i].rss_kb / 1024.0);
}

/* ---- main --------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_grpc [--latency N] [--cycles N] [--messages N] [--failover N]\n"
		"                  [--tasks N] [--operators N] [--batch N] [--idle N,N,...]\n"
		"                  [--only latency,cycles,messages,failover,dissemination,memory,storm]\n"
		"                  [--storm-seconds N] [--storm-rate N] [--storm-operators N]\n"
		"                  [--storm-pin on|off]\n"
		"                  [--samples DIR] [--ap PATH] [--raw-server PATH]\n");
	exit(2);
}

static int int_arg(const char *v)
{
	char *end;
	long n = strtol(v, &end, 10);
	if (*end || n <= 0 || n > 10000000)
		usage();
	return (int)n;
}

/* RLIMIT_NOFILE up to 65536: 10,000 connections on loopback are 20,000
 * fds between us and the server, plus gRPC's own. Children inherit it. */
static void raise_nofile(void)
{
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	struct rlimit want = { 65536, rl.rlim_max > 65536 ? rl.rlim_max : 65536 };
	if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
		/* No CAP_SYS_RESOURCE: as far as the hard limit goes. */
		rl.rlim_cur = rl.rlim_max < want.rlim_cur ? rl.rlim_max : want.rlim_cur;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	printf("RLIMIT_NOFILE %llu\n", (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 5 && strcmp(argv[1], "--child-operator") == 0) {
		ap_client_init();
		int rc = child_operator(argv[2], argv[3], argv[4]);
		ap_client_shutdown();
		return rc;
	}
	ssize_t n = readlink("/proc/self/exe", opt.self_path, sizeof opt.self_path - 1);
	if (n <= 0)
		die("readlink /proc/self/exe: %s", strerror(errno));
	opt.self_path[n] = '\0';
	char dir[PATH_MAX - 16];
	const char *slash = strrchr(opt.self_path, '/');
	size_t len = slash ? (size_t)(slash - opt.self_path) : 0;
	if (len >= sizeof dir)
		die("path too long: %s", opt.self_path);
	memcpy(dir, opt.self_path, len);
	dir[len] = '\0';
	snprintf(opt.raw_path, sizeof opt.raw_path, "%s/raw_server", dir);
	snprintf(opt.ap_path, sizeof opt.ap_path, "%s/../ap", dir);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		i++;
		if (strcmp(a, "--latency") == 0)
			opt.latency = int_arg(v);
		else if (strcmp(a, "--cycles") == 0)
			opt.cycles = int_arg(v);
		else if (strcmp(a, "--messages") == 0)
			opt.messages = int_arg(v);
		else if (strcmp(a, "--failover") == 0)
			opt.failover = int_arg(v);
		else if (strcmp(a, "--tasks") == 0)
			opt.tasks = int_arg(v);
		else if (strcmp(a, "--operators") == 0)
			opt.operators = int_arg(v);
		else if (strcmp(a, "--storm-seconds") == 0)
			opt.storm_seconds = int_arg(v);
		else if (strcmp(a, "--storm-rate") == 0)
			opt.storm_rate = int_arg(v);
		else if (strcmp(a, "--storm-pin") == 0 && (strcmp(v, "on") == 0 || strcmp(v, "off") == 0))
			opt.storm_pin = strcmp(v, "on") == 0;
		else if (strcmp(a, "--storm-operators") == 0)
			opt.storm_operators = int_arg(v);
		else if (strcmp(a, "--batch") == 0)
			opt.batch = int_arg(v);
		else if (strcmp(a, "--only") == 0)
			snprintf(opt.only, sizeof opt.only, "%s", v);
		else if (strcmp(a, "--samples") == 0)
			opt.samples_dir = v;
		else if (strcmp(a, "--ap") == 0)
			snprintf(opt.ap_path, sizeof opt.ap_path, "%s", v);
		else if (strcmp(a, "--raw-server") == 0)
			snprintf(opt.raw_path, sizeof opt.raw_path, "%s", v);
		else if (strcmp(a, "--idle") == 0) {
			char list[256];
			snprintf(list, sizeof list, "%s", v);
			opt.n_idle = 0;
			for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
				if (opt.n_idle == MAX_IDLE_STEPS)
					usage();
				opt.idle[opt.n_idle++] = int_arg(tok);
			}
			if (!opt.n_idle)
				usage();
		} else
			usage();
	}
	if (access(opt.ap_path, X_OK) != 0 || access(opt.raw_path, X_OK) != 0)
		die("need %s and %s (make && make bench)", opt.ap_path, opt.raw_path);
	raise_nofile();
	ap_client_init();
	int64_t t0 = ap_clock_mono_ms();
	if (section("latency"))
		run_latency();
	if (section("cycles"))
		run_cycles();
	if (section("messages"))
		run_messages();
	if (section("failover"))
		run_failover();
	if (section("dissemination"))
		run_dissemination();
	if (section("memory"))
		run_memory();
	if (section("storm"))
		run_storm();
	summary();
	printf("\nelapsed %.1f s\n", (ap_clock_mono_ms() - t0) / 1000.0);
	ap_client_shutdown();
	cleanup();
	return 0;
}
