/* `ap stress --spawn`: an aggregator of its own in a temp dir, and the
 * /proc sampling used for the resource invariant.
 *
 * The daemon is this very binary (or $AP, or --ap PATH) run as `ap --config
 * DIR/aggregator.conf aggregator --port-file DIR/port`, fork + exec (the
 * notes: harmless next to gRPC, unlike a fork that goes on using it), with
 * PR_SET_PDEATHSIG so that a harness that dies takes its daemon along. Its
 * log goes to DIR/daemon.log at level warn by default (the environment
 * variable AP_STRESS_DAEMON_LOG_LEVEL, e.g. "debug", overrides it when a
 * failure needs the whole story): a storm makes hundreds of connects a
 * second, and info lines for each would cost the daemon more than the
 * storm. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/spawn.h"
#include "stress_int.h"

#define START_TIMEOUT_MS 60000

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int write_config(st_daemon *d, const ap_stress_options *o)
{
	FILE *f = fopen(d->conf_path, "w");
	if (!f)
		return AP_EIO;
	/* max_sessions leaves room for the second sessions of a storm. */
	fprintf(f,
		"# written by ap stress --spawn\n"
		"listen = \"127.0.0.1:0\";\n"
		"admin_listen = \"%s\";\n"
		"storage = { dir = \"%s/db\"; };\n"
		"operators = {\n"
		"  approved = [ \"*\" ];\n"
		"  stabilization_ms = %lld;\n"
		"  reconnect_cooldown_ms = 0;\n"
		"  max_sessions = %d;\n"
		"};\n"
		"auth = { mode = \"%s\"; };\n"
		"metrics_listen = \"\";\n"
		"log = { level = \"%s\"; };\n",
		d->admin_target, d->dir, (long long)o->stabilization_ms,
		o->operators * 4 + 100, o->auth ? "signature" : "none",
		getenv("AP_STRESS_DAEMON_LOG_LEVEL") ? getenv("AP_STRESS_DAEMON_LOG_LEVEL")
						     : "warn");
	return fclose(f) == 0 ? 0 : AP_EIO;
}

static const char *ap_binary(const ap_stress_options *o, char *buf, size_t len)
{
	if (o->ap_path && *o->ap_path)
		return o->ap_path;
	const char *env = getenv("AP");
	if (env && *env)
		return env;
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	if (n <= 0)
		return "ap";
	buf[n] = '\0';
	return buf;
}

static pid_t spawn(st_daemon *d, const char *ap)
{
	int logfd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0)
		return -1;
	char *argv[] = { (char *)ap, "--config", d->conf_path, "aggregator", "--port-file",
			 d->port_path, NULL };
	pid_t pid = ap_spawn(argv, -1, logfd, logfd, -1);
	close(logfd);
	return pid;
}

/* Serving: HealthCheck "OK" on the operator port and a working admin. */
static bool serving(st_daemon *d)
{
	ap_client *node = NULL, *admin = NULL;
	ap_call_options co = { .timeout_ms = 2000, .wait_for_ready = true };
	ap_rpc_status st;
	bool ok = false;
	if (ap_client_open(d->target, NULL, &node, NULL, 0) ||
	    ap_client_open(d->admin_target, NULL, &admin, NULL, 0))
		goto out;
	Aggregator__HealthCheckRequest hreq = AGGREGATOR__HEALTH_CHECK_REQUEST__INIT;
	Aggregator__HealthCheckResponse *hresp = NULL;
	if (ap_client_health_check(node, &hreq, &hresp, &co, &st) == 0 &&
	    st.code == AP_RPC_OK && strcmp(hresp->status, "OK") == 0) {
		Aggregator__ListOperatorsResp *ops = NULL;
		ok = ap_client_list_operators(admin, &ops, &co, &st) == 0 &&
		     st.code == AP_RPC_OK;
		ap_client_free(ops);
	}
	ap_client_free(hresp);
out:
	ap_client_close(node);
	ap_client_close(admin);
	return ok;
}

int st_daemon_start(st_daemon *d, const ap_stress_options *o, char *err, size_t errlen)
{
	char self[PATH_MAX];
	int port = 0, rc;

	memset(d, 0, sizeof *d);
	snprintf(d->dir, sizeof d->dir, "/tmp/ap-stress-XXXXXX");
	if (!mkdtemp(d->dir)) {
		d->dir[0] = '\0';
		set_err(err, errlen, "cannot make a temp dir under /tmp: %s", strerror(errno));
		return AP_EIO;
	}
	snprintf(d->conf_path, sizeof d->conf_path, "%s/aggregator.conf", d->dir);
	snprintf(d->port_path, sizeof d->port_path, "%s/port", d->dir);
	snprintf(d->log_path, sizeof d->log_path, "%s/daemon.log", d->dir);
	snprintf(d->admin_target, sizeof d->admin_target, "unix:%s/admin.sock", d->dir);
	if (write_config(d, o)) {
		set_err(err, errlen, "cannot write %s", d->conf_path);
		return AP_EIO;
	}
	const char *ap = ap_binary(o, self, sizeof self);
	d->pid = spawn(d, ap);
	if (d->pid < 0) {
		d->pid = 0;
		set_err(err, errlen, "cannot start %s: %s", ap, strerror(errno));
		return AP_EIO;
	}
	int64_t deadline = ap_clock_mono_ms() + START_TIMEOUT_MS;
	while ((rc = ap_client_read_port_file(d->port_path, &port)) != 0) {
		if (!st_daemon_alive(d) || ap_clock_mono_ms() > deadline)
			goto failed;
		st_sleep_ms(5);
	}
	snprintf(d->target, sizeof d->target, "127.0.0.1:%d", port);
	while (!serving(d)) {
		if (!st_daemon_alive(d) || ap_clock_mono_ms() > deadline)
			goto failed;
		st_sleep_ms(10);
	}
	return 0;
failed:
	st_daemon_log_tail(d, 40);
	set_err(err, errlen, "%s aggregator did not start serving (log: %s)", ap, d->log_path);
	return d->pid ? AP_ETIMEDOUT : AP_EIO;
}

bool st_daemon_alive(st_daemon *d)
{
	if (d->pid <= 0)
		return false;
	int status;
	if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
		d->pid = 0;
		d->reaped = true;
		d->wait_status = status;
		return false;
	}
	return true;
}

int st_daemon_stop(st_daemon *d, int64_t timeout_ms)
{
	if (d->pid <= 0)
		return d->reaped ? d->wait_status : -1;
	kill(d->pid, SIGTERM);
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	while (st_daemon_alive(d)) {
		if (ap_clock_mono_ms() > deadline) {
			kill(d->pid, SIGKILL);
			while (waitpid(d->pid, NULL, 0) < 0 && errno == EINTR)
				;
			d->pid = 0;
			return -1;
		}
		st_sleep_ms(5);
	}
	return d->wait_status;
}

void st_daemon_log_tail(const st_daemon *d, int lines)
{
	FILE *f = fopen(d->log_path, "r");
	char buf[2048];
	long total = 0;
	if (!f)
		return;
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

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void st_daemon_destroy(st_daemon *d, bool keep)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		while (waitpid(d->pid, NULL, 0) < 0 && errno == EINTR)
			;
		d->pid = 0;
	}
	if (d->dir[0] && !keep)
		nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- /proc ------------------------------------------------------------------ */

int ap_stress_proc_sample(pid_t pid, ap_stress_proc *out)
{
	char path[64], line[512];
	memset(out, 0, sizeof *out);
	out->threads = -1;
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? AP_ENOTFOUND : AP_EIO;
	while (fgets(line, sizeof line, f)) {
		long long v;
		if (sscanf(line, "Threads: %lld", &v) == 1)
			out->threads = (int)v;
		else if (sscanf(line, "VmRSS: %lld kB", &v) == 1)
			out->rss_kb = v;
	}
	fclose(f);

	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *dir = opendir(path);
	if (!dir)
		return AP_EIO;
	struct dirent *e;
	while ((e = readdir(dir)) != NULL)
		if (e->d_name[0] != '.')
			out->fds++;
	closedir(dir);

	/* utime and stime are fields 14 and 15; the command name (field 2)
	 * may hold spaces and parentheses, so count from its last ')'. */
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f) {
		char stat[1024];
		size_t n = fread(stat, 1, sizeof stat - 1, f);
		stat[n] = '\0';
		fclose(f);
		char *p = strrchr(stat, ')');
		unsigned long long ut = 0, stt = 0;
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
				&ut, &stt) == 2) {
			long hz = sysconf(_SC_CLK_TCK);
			out->cpu_ms = (int64_t)((ut + stt) * 1000ULL / (unsigned long long)(hz > 0 ? hz : 100));
		}
	}
	return out->threads >= 0 ? 0 : AP_EIO;
}

/* The inodes of this process's sockets, sorted. */
static size_t own_socket_inodes(unsigned long **out)
{
	size_t n = 0, cap = 0;
	unsigned long *v = NULL;
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *e;
	*out = NULL;
	if (!dir)
		return 0;
	while ((e = readdir(dir)) != NULL) {
		char path[64], link[64];
		unsigned long inode;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/fd/%.32s", e->d_name);
		ssize_t len = readlink(path, link, sizeof link - 1);
		if (len <= 0)
			continue;
		link[len] = '\0';
		if (sscanf(link, "socket:[%lu]", &inode) != 1)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			unsigned long *p = realloc(v, ncap * sizeof *p);
			if (!p)
				break;
			v = p;
			cap = ncap;
		}
		v[n++] = inode;
	}
	closedir(dir);
	*out = v;
	return n;
}

static bool has_inode(const unsigned long *v, size_t n, unsigned long inode)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == inode)
			return true;
	return false;
}

int st_own_connections(const char *target)
{
	const char *colon = target ? strrchr(target, ':') : NULL;
	int port = colon ? atoi(colon + 1) : 0;
	int count = 0;
	if (port <= 0 || strncmp(target, "unix:", 5) == 0)
		return 0;
	unsigned long *inodes;
	size_t n = own_socket_inodes(&inodes);
	const char *tables[] = { "/proc/self/net/tcp", "/proc/self/net/tcp6" };
	for (int t = 0; t < 2 && n; t++) {
		FILE *f = fopen(tables[t], "r");
		char line[512];
		if (!f)
			continue;
		while (fgets(line, sizeof line, f)) {
			char rem[64];
			unsigned state, rport;
			unsigned long inode;
			/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
			if (sscanf(line, " %*s %*s %63s %x %*s %*s %*s %*u %*u %lu", rem, &state,
				   &inode) != 3)
				continue;
			const char *c = strrchr(rem, ':');
			if (!c || sscanf(c + 1, "%x", &rport) != 1 || (int)rport != port)
				continue;
			if (state != 0x06 /* TIME_WAIT */ && inode && has_inode(inodes, n, inode))
				count++;
		}
		fclose(f);
	}
	free(inodes);
	return count;
}
