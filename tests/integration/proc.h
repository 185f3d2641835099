/* Integration-test helper: run the built `ap` (and python3) as child
 * processes, capture what they print, and keep background children
 * (`ap operator`) under control.
 *
 * Nothing here uses cmocka assertions, so any thread may call it: the
 * status-under-load test runs `ap status` from the main thread while other
 * threads load the daemon. fork + exec only (with async-signal-safe calls
 * in between), which is safe in a process that runs gRPC threads. Every
 * child gets PR_SET_PDEATHSIG=SIGKILL, so a test that crashes leaves no
 * process behind. */
#ifndef AP_TEST_PROC_H
#define AP_TEST_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Bound for one short command (`ap task list`, `ap status`); generous for
 * the sanitizer builds. */
#define PR_CMD_TIMEOUT_MS 60000

typedef struct pr_result {
	int code;  /* exit status; 128 + N when killed by signal N; -1 when
		    * it did not finish in time (it was SIGKILLed) or could
		    * not be started */
	char *out; /* everything written to stdout, NUL-terminated (malloc'd) */
	char *err; /* everything written to stderr */
	int64_t ms; /* how long it ran */
} pr_result;

/* "$AP_BUILDDIR/ap", or NULL when AP_BUILDDIR is unset. Static. */
const char *pr_ap_path(void);
/* The python with the json module: $PYTHON_PROTO, else /usr/bin/python3. */
const char *pr_python(void);

/* Run argv (argv[0] is a path; NULL-terminated), feeding `input` (may be
 * NULL: /dev/null) on stdin, and wait up to timeout_ms. Returns r->code;
 * free the result with pr_free. */
int pr_run(pr_result *r, const char *input, int64_t timeout_ms, char *const argv[]);
/* Run "$AP_BUILDDIR/ap" followed by the NULL-terminated arguments. */
int pr_ap(pr_result *r, const char *arg, ...) __attribute__((sentinel));
void pr_free(pr_result *r);
/* Print a result (command, exit code, output) to stderr, for a failure. */
void pr_dump(const char *what, const pr_result *r);

/* Start argv in the background with stdout and stderr appended to
 * log_path. Returns the pid, or -1. */
pid_t pr_spawn(const char *log_path, char *const argv[]);
/* Wait up to timeout_ms for pid to exit. Returns its wait status, or -1
 * when it is still running. */
int pr_wait(pid_t pid, int64_t timeout_ms);
/* SIGTERM, wait up to timeout_ms, then SIGKILL. Returns the wait status of
 * the exit (-1 if it had to be killed). */
int pr_stop(pid_t pid, int64_t timeout_ms);
/* SIGKILL and reap. */
void pr_kill(pid_t pid);

/* `ap status --json` as checked by python3's json module: SPEC section
 * 8's exact key sets, one line, total = enabled + disabled + completed +
 * failed. */
#define PR_MAX_OWNERS 32
typedef struct pr_status {
	long total, enabled, disabled, completed, failed;
	long orphaned;
	long owned;     /* the sum of "owners" */
	long operators; /* entries of "operators" */
	size_t n_owners;
	struct {
		char address[43];
		long tasks;
	} owners[PR_MAX_OWNERS];
} pr_status;
/* Parse `json`; false (after printing the text and python's complaint on
 * stderr) when it does not pass the checks. Any thread. */
bool pr_parse_status(const char *json, pr_status *s);
/* The tasks `address` owns per s->owners, 0 when it is not listed. */
long pr_status_owned(const pr_status *s, const char *address);

/* Count the lines of `text` that contain needle ("" counts every line). */
size_t pr_count_lines(const char *text, const char *needle);

#endif
