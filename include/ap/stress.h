/* `ap stress`: the rapid-reconnect harness (SPEC section 8, issue 6).
 *
 * Simulated operators, all in this process, connect to an aggregator and
 * flap for a while: clean closes and reopens, abrupt cancels (a crash:
 * the call is cancelled and the TCP connection dropped), reconnects with a
 * newer, the same or an older MonotonicClock, a second concurrent session
 * for the same address, sessions ended before the stabilization period is
 * over, while tasks are created, disabled, enabled and deleted through the
 * Admin service. Then every operator holds one session, the harness waits
 * for quiescence and checks the invariants below through the Admin
 * service, and compares the daemon's threads, file descriptors and RSS
 * with baselines taken before the storm.
 *
 * Every simulated operator records what it was sent (MonitorTaskTrigger
 * adds a task, DisableTask, DeleteTask and CompletedTask remove it) per
 * session; a session that ends takes its record with it, because the
 * aggregator re-sends everything to every new session (SPEC section 3).
 *
 * Threads: the operators are spread over `threads` driver threads, each
 * running one completion queue (include/ap/client_multi.h) for its share
 * of the streams plus the operators' timers; the calling thread runs the
 * admin churn, the progress line and the checks. No thread per stream.
 *
 * The pieces:
 *   src/stress.c        ap_stress_run: the phases, baselines, the storm
 *   src/stress_settle.c quiescence, and the check at the end
 *   src/stress_admin.c  the tasks and the admin churn
 *   src/stress_op.c     the simulated operators
 *   src/stress_fleet.c  their driver threads, channels and snapshots
 *   src/stress_daemon.c a spawned aggregator, /proc sampling
 *   src/stress_check.c  the invariant checker (pure: unit-tested)
 *   src/stress_report.c the table and the JSON object
 *   src/cli/stress.c    the command line
 *   src/rpc/client_multi.c  many streams on one completion queue */
#ifndef AP_STRESS_H
#define AP_STRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- options ---------------------------------------------------------- */

typedef struct ap_stress_options {
	/* Where: a running aggregator (target and admin), or spawn one. */
	const char *target;      /* "HOST:PORT" of the operator service */
	const char *admin;       /* its admin address ("unix:PATH", "HOST:PORT") */
	const char *admin_token; /* for a TCP admin listener, or NULL */
	bool spawn;              /* start `ap aggregator` in a temp dir */
	const char *ap_path;     /* spawn: the binary (NULL: $AP, else this one) */
	bool keep;               /* keep the temp dir (spawn) or the tasks (target) */
	pid_t daemon_pid;        /* sample its /proc (spawn: the child); 0: none */
	bool auth;               /* signature mode: generated keys, signed tokens */

	/* The storm. */
	int operators;
	int64_t duration_ms;
	int threads;             /* driver threads */
	int tasks;               /* created before the storm; -1: 10 per operator */
	int64_t stabilization_ms; /* spawn: configured; target: what the daemon
				   * uses (-1: unknown, the early-send check is off) */
	int64_t hold_min_ms, hold_max_ms; /* session lifetime before its action */
	unsigned share_clean, share_crash, share_dup; /* end-of-session actions */
	unsigned early_pct;      /* % of sessions ended before stabilization */
	unsigned clock_newer, clock_same, clock_older; /* shares of reconnect clocks */
	double task_ops_per_s;   /* admin create/disable/enable/delete rate */
	double max_rate;         /* actions per second, all operators (0: no cap) */
	uint64_t seed;

	/* The end. */
	int64_t quiet_ms;        /* no stream event for this long = quiescent */
	int64_t settle_timeout_ms;
	int thread_slack;        /* resource bounds, see ap_stress_check_resources */
	int fd_slack;
	int64_t rss_slack_kb;    /* negative: RSS is reported, not checked */

	bool json;               /* print the JSON object instead of the table */
	bool progress;           /* a live line on stderr (when it is a tty) */
	int debug_drop_operator; /* this operator (-1: none) keeps its first
				  * session through the storm and ignores what
				  * it is sent: the checker must fail (tests) */
} ap_stress_options;

/* The defaults (documented in `ap stress --help`). */
void ap_stress_options_init(ap_stress_options *o);

/* ---- invariants and their checker ---------------------------------------- */

typedef enum {
	AP_STRESS_INV_SESSIONS = 0, /* each operator: one session, connected, ready */
	AP_STRESS_INV_OWNER,        /* every enabled non-manual task: one ready owner */
	AP_STRESS_INV_RECEIVED,     /* received set == set ListTasks says it owns */
	AP_STRESS_INV_UNIQUE,       /* no task in two operators' final sets */
	AP_STRESS_INV_RESOURCES,    /* daemon threads, fds, RSS back within bounds */
	AP_STRESS_INV_STATUSES,     /* streams and admin calls end only as expected */
	AP_STRESS_INV_STABILIZATION, /* no task before stabilization_ms */
	AP_STRESS_INV_QUIESCENCE,   /* quiescence reached within the bound */
	AP_STRESS_INV_DAEMON,       /* a spawned daemon stayed up, exited 0 */
	AP_STRESS_N_INV
} ap_stress_inv;

/* "sessions", "one_owner", ...: the JSON key and table label. Static. */
const char *ap_stress_inv_name(ap_stress_inv i);

#define AP_STRESS_EXAMPLES 5
#define AP_STRESS_EXAMPLE_LEN 200
typedef struct ap_stress_result {
	bool checked;         /* false: not applicable in this run */
	uint64_t items;       /* what was checked (tasks, operators, ...) */
	uint64_t violations;
	char examples[AP_STRESS_EXAMPLES][AP_STRESS_EXAMPLE_LEN]; /* the first ones */
	char note[AP_STRESS_EXAMPLE_LEN]; /* e.g. the bound applied */
} ap_stress_result;

typedef struct ap_stress_verdict {
	ap_stress_result r[AP_STRESS_N_INV];
} ap_stress_verdict;

void ap_stress_verdict_init(ap_stress_verdict *v);
/* Record one violation of invariant i (marks it checked); the message is
 * kept when it is among the first AP_STRESS_EXAMPLES. Not thread-safe. */
void ap_stress_violation(ap_stress_verdict *v, ap_stress_inv i, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
uint64_t ap_stress_violations(const ap_stress_verdict *v);

/* What the Admin service says, and what the operators hold, at
 * quiescence. Strings are borrowed. */
typedef struct ap_stress_task_view {
	const char *id;
	const char *status; /* "enabled", "disabled", ... */
	const char *owner;  /* "" = none */
	bool manual;
} ap_stress_task_view;

typedef struct ap_stress_operator_view { /* one ListOperators entry */
	const char *address;
	bool connected;
	bool ready;
} ap_stress_operator_view;

typedef struct ap_stress_sim_view { /* one simulated operator */
	const char *address;
	unsigned sessions;       /* streams not yet ended */
	bool opened;             /* the newest one got the server's metadata */
	const char *const *received; /* its final set (the one session's) */
	size_t n_received;
} ap_stress_sim_view;

typedef struct ap_stress_view {
	const ap_stress_task_view *tasks;
	size_t n_tasks;
	const ap_stress_operator_view *operators;
	size_t n_operators;
	const ap_stress_sim_view *sims;
	size_t n_sims;
} ap_stress_view;

/* Check sessions, one_owner, received and unique (SPEC section 8) on v
 * and add what fails to *out. Simulated operators declare no capabilities
 * and no chain ids, so each is eligible for every non-manual task: the
 * ownership rule applies as soon as one of them is ready. An owner that
 * is not a simulated operator (another operator of a running aggregator)
 * must be listed ready. Returns 0 or AP_ENOMEM. Thread-safe (no state). */
int ap_stress_check(const ap_stress_view *v, ap_stress_verdict *out);

/* A sample of a process: /proc/PID/status Threads and VmRSS, and the
 * entries of /proc/PID/fd; cpu_ms is utime + stime of /proc/PID/stat.
 * client_conns is filled by the harness: the TCP connections it holds to
 * the daemon's port at that moment, each of which is an fd of the daemon
 * too (ap_stress_proc_sample leaves it 0). */
typedef struct ap_stress_proc {
	int threads;
	int fds;
	int64_t rss_kb;
	int64_t cpu_ms;
	int client_conns;
} ap_stress_proc;
/* 0, or AP_ENOTFOUND (no such process) / AP_EIO (unreadable). */
int ap_stress_proc_sample(pid_t pid, ap_stress_proc *out);

/* The resource rule, for two comparable states (the same number of live
 * sessions): end.threads <= base.threads + thread_slack, end.fds -
 * end.client_conns <= base.fds - base.client_conns + fd_slack (the
 * daemon's fds apart from the connections the harness holds), and
 * (rss_slack_kb >= 0) end.rss_kb <= base.rss_kb + rss_slack_kb. `what`
 * names the pair in messages. */
bool ap_stress_resources_within(const ap_stress_proc *base, const ap_stress_proc *end,
				int thread_slack, int fd_slack);
void ap_stress_check_resources(const char *what, const ap_stress_proc *base,
			       const ap_stress_proc *end, int thread_slack,
			       int fd_slack, int64_t rss_slack_kb,
			       ap_stress_verdict *out);

/* ---- the run and its report ------------------------------------------------ */

typedef struct ap_stress_latency { /* milliseconds */
	uint64_t count;
	double p50, p90, p99, max;
} ap_stress_latency;

/* Latency summary of n samples in nanoseconds (sorted in place). */
ap_stress_latency ap_stress_latency_of(int64_t *ns, size_t n);

typedef struct ap_stress_report {
	/* What ran. */
	char target[128];
	bool spawned;
	char daemon_dir[128]; /* spawn with --keep, or a failed run: kept */
	int operators, threads, tasks_initial;
	int64_t duration_ms, stabilization_ms;
	double max_rate;
	uint64_t seed;

	/* The storm. */
	double storm_s;
	uint64_t sessions_opened, reconnects;
	double reconnects_per_s;
	uint64_t clean_closes, crashes, dup_sessions, early_closes;
	uint64_t rate_deferred;  /* actions put off by max_rate */
	uint64_t clock_newer, clock_same, clock_older;
	uint64_t superseded;     /* sessions the server ended as superseded */
	uint64_t stale_supersedes; /* ... by a session given up before it was accepted */
	uint64_t tasks_moved;    /* deliveries to another operator than the last */
	uint64_t messages, duplicate_deliveries;
	uint64_t admin_created, admin_disabled, admin_enabled, admin_deleted;
	ap_stress_latency first_task; /* session open -> its first task */
	ap_stress_latency failover;   /* crash -> task at its new owner */
	double settle_s;
	size_t final_tasks, final_enabled, final_owned;

	/* Resources. have_daemon: the daemon was sampled. */
	bool have_daemon;
	ap_stress_proc before_connect, connected_before, connected_after, after_close;
	int64_t daemon_cpu_ms;      /* during the storm */
	int64_t harness_rss_kb;     /* peak */
	int64_t harness_cpu_ms;     /* whole run */

	ap_stress_verdict verdict;
} ap_stress_report;

/* Run the whole thing. Returns 0 when the run completed (the verdict
 * says whether the invariants held), or a negative AP_E... code when it
 * could not (no daemon, no admin service, ...) with the detail in err.
 * Blocks for about duration_ms plus setup and settling. */
int ap_stress_run(const ap_stress_options *o, ap_stress_report *out,
		  char *err, size_t errlen);

/* The end-of-run table (80 columns) and the JSON object (one line). 0 or
 * AP_EIO. */
int ap_stress_print_table(FILE *f, const ap_stress_report *r);
int ap_stress_print_json(FILE *f, const ap_stress_report *r);

#endif
