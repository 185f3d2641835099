/* Child processes for the integration tests: see proc.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ap/clock.h"
#include "ap/spawn.h"
#include "proc.h"

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

const char *pr_ap_path(void)
{
	static char path[4096];
	const char *dir = getenv("AP_BUILDDIR");
	if (!dir || !*dir)
		return NULL;
	snprintf(path, sizeof path, "%s/ap", dir);
	return path;
}

const char *pr_python(void)
{
	const char *p = getenv("PYTHON_PROTO");
	return p && *p ? p : "/usr/bin/python3";
}

/* The whole content of fd (from offset 0), NUL-terminated. */
static char *slurp(int fd)
{
	struct stat sb;
	if (fstat(fd, &sb) != 0)
		return strdup("");
	size_t n = (size_t)sb.st_size;
	char *buf = malloc(n + 1);
	if (!buf)
		return NULL;
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			break;
		}
		got += (size_t)r;
	}
	buf[got] = '\0';
	return buf;
}

/* The child side of a fork: only async-signal-safe calls. */
static int decode_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

int pr_run(pr_result *r, const char *input, int64_t timeout_ms, char *const argv[])
{
	memset(r, 0, sizeof *r);
	r->code = -1;
	int in = -1;
	int out = memfd_create("pr-out", MFD_CLOEXEC);
	int err = memfd_create("pr-err", MFD_CLOEXEC);
	if (input) {
		in = memfd_create("pr-in", MFD_CLOEXEC);
		size_t len = strlen(input), done = 0;
		while (in >= 0 && done < len) {
			ssize_t w = write(in, input + done, len - done);
			if (w <= 0)
				break;
			done += (size_t)w;
		}
		if (in >= 0)
			lseek(in, 0, SEEK_SET);
	} else {
		in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	int64_t t0 = ap_clock_mono_ms();
	pid_t pid = out >= 0 && err >= 0 && in >= 0 ? ap_spawn(argv, in, out, err, -1) : -1;
	if (pid > 0) {
		int status = pr_wait(pid, timeout_ms);
		if (status == -1) {
			pr_kill(pid);
			r->code = -1;
		} else {
			r->code = decode_status(status);
		}
	}
	r->ms = ap_clock_mono_ms() - t0;
	r->out = out >= 0 ? slurp(out) : strdup("");
	r->err = err >= 0 ? slurp(err) : strdup("");
	if (pid < 0 && r->err) {
		free(r->err);
		r->err = strdup("pr_run: could not start the command\n");
	}
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (err >= 0)
		close(err);
	return r->code;
}

int pr_ap(pr_result *r, const char *arg, ...)
{
	char *argv[64];
	int n = 0;
	const char *ap = pr_ap_path();
	va_list ap_args;

	memset(r, 0, sizeof *r);
	r->code = -1;
	if (!ap) {
		r->out = strdup("");
		r->err = strdup("AP_BUILDDIR is not set: run the tests through make check\n");
		return -1;
	}
	argv[n++] = (char *)ap;
	va_start(ap_args, arg);
	for (const char *a = arg; a && n < 63; a = va_arg(ap_args, const char *))
		argv[n++] = (char *)a;
	va_end(ap_args);
	argv[n] = NULL;
	return pr_run(r, NULL, PR_CMD_TIMEOUT_MS, argv);
}

void pr_free(pr_result *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

void pr_dump(const char *what, const pr_result *r)
{
	fprintf(stderr, "---- %s: exit %d after %lld ms ----\n--- stdout:\n%s--- stderr:\n%s----\n",
		what, r->code, (long long)r->ms, r->out ? r->out : "", r->err ? r->err : "");
}

pid_t pr_spawn(const char *log_path, char *const argv[])
{
	int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (logfd < 0 || in < 0) {
		if (logfd >= 0)
			close(logfd);
		if (in >= 0)
			close(in);
		return -1;
	}
	pid_t pid = ap_spawn(argv, in, logfd, logfd, -1);
	close(logfd);
	close(in);
	return pid;
}

int pr_wait(pid_t pid, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	int status;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1;
		if (ap_clock_mono_ms() > deadline)
			return -1;
		sleep_ms(2);
	}
}

void pr_kill(pid_t pid)
{
	int status;
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
}

int pr_stop(pid_t pid, int64_t timeout_ms)
{
	if (pid <= 0)
		return -1;
	kill(pid, SIGTERM);
	int status = pr_wait(pid, timeout_ms);
	if (status == -1)
		pr_kill(pid);
	return status;
}

size_t pr_count_lines(const char *text, const char *needle)
{
	size_t n = 0;
	const char *p = text;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char line[4096];
		snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
		if (strstr(line, needle))
			n++;
		p = nl ? nl + 1 : NULL;
	}
	return n;
}

/* Prints "TOTAL ENABLED DISABLED COMPLETED FAILED ORPHANED OWNED_SUM
 * OPERATORS" and then one "ADDRESS COUNT" line per owner. */
static const char status_check[] =
	"import json, sys\n"
	"raw = sys.stdin.read()\n"
	"assert raw.count('\\n') == 1 and raw.endswith('\\n'), 'not one line'\n"
	"d = json.loads(raw)\n"
	"assert set(d) == {'database', 'tasks', 'orphaned', 'owners', 'operators'}, sorted(d)\n"
	"t = d['tasks']\n"
	"assert set(t) == {'total', 'enabled', 'disabled', 'completed', 'failed'}, sorted(t)\n"
	"assert t['total'] == t['enabled'] + t['disabled'] + t['completed'] + t['failed']\n"
	"for a, n in d['owners'].items():\n"
	"    assert a.startswith('0x') and len(a) == 42 and isinstance(n, int) and n > 0, (a, n)\n"
	"for o in d['operators']:\n"
	"    assert set(o) == {'address', 'connected', 'last_connect_ms',\n"
	"                      'last_disconnect_ms', 'owned_tasks'}, sorted(o)\n"
	"    assert isinstance(o['connected'], bool)\n"
	"print(t['total'], t['enabled'], t['disabled'], t['completed'], t['failed'],\n"
	"      d['orphaned'], sum(d['owners'].values()), len(d['operators']))\n"
	"for a, n in sorted(d['owners'].items()):\n"
	"    print(a, n)\n";

bool pr_parse_status(const char *json, pr_status *s)
{
	pr_result py;
	char *argv[] = { (char *)pr_python(), (char *)"-c", (char *)status_check, NULL };
	memset(s, 0, sizeof *s);
	pr_run(&py, json, PR_CMD_TIMEOUT_MS, argv);
	bool ok = py.code == 0 &&
		  sscanf(py.out, "%ld %ld %ld %ld %ld %ld %ld %ld", &s->total, &s->enabled,
			 &s->disabled, &s->completed, &s->failed, &s->orphaned, &s->owned,
			 &s->operators) == 8;
	const char *line = ok ? strchr(py.out, '\n') : NULL;
	while (ok && line && line[1] && s->n_owners < PR_MAX_OWNERS) {
		line++;
		if (sscanf(line, "%42s %ld", s->owners[s->n_owners].address,
			   &s->owners[s->n_owners].tasks) != 2) {
			ok = false;
			break;
		}
		s->n_owners++;
		line = strchr(line, '\n');
	}
	if (!ok) {
		fprintf(stderr, "ap status --json output that did not pass:\n%s\n", json);
		pr_dump("python status check", &py);
	}
	pr_free(&py);
	return ok;
}

long pr_status_owned(const pr_status *s, const char *address)
{
	for (size_t i = 0; i < s->n_owners; i++)
		if (strcmp(s->owners[i].address, address) == 0)
			return s->owners[i].tasks;
	return 0;
}
