/* Internals of `ap stress` shared by src/stress*.c. Not an interface. */
#ifndef AP_STRESS_INT_H
#define AP_STRESS_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

#include "ap/client.h"
#include "ap/client_multi.h"
#include "ap/stress.h"

/* ---- a spawned aggregator (stress_daemon.c) ------------------------------- */

typedef struct st_daemon {
	char dir[64];               /* mkdtemp'd: config, database, log, socket */
	char conf_path[PATH_MAX];
	char port_path[PATH_MAX];
	char log_path[PATH_MAX];
	char admin_target[PATH_MAX]; /* "unix:DIR/admin.sock" */
	char target[64];            /* "127.0.0.1:PORT" once serving */
	pid_t pid;                  /* 0 when not running */
	int wait_status;            /* once reaped */
	bool reaped;
} st_daemon;

/* Make the temp dir, write the config (operators.approved ["*"],
 * stabilization_ms, auth none or signature, log level warn) and start
 * `ap aggregator`; wait until it serves (port file, HealthCheck OK, admin
 * ListOperators OK). 0, or AP_EIO / AP_ETIMEDOUT with the detail in err
 * (the daemon's log tail goes to stderr). */
int st_daemon_start(st_daemon *d, const ap_stress_options *o, char *err, size_t errlen);
/* True while the child runs (reaps it when it has exited). */
bool st_daemon_alive(st_daemon *d);
/* SIGTERM and wait up to timeout_ms (then SIGKILL). Returns the wait
 * status, or -1 when it had to be killed. */
int st_daemon_stop(st_daemon *d, int64_t timeout_ms);
/* Kill a daemon still running and remove the temp dir unless keep. */
void st_daemon_destroy(st_daemon *d, bool keep);
/* Print the last `lines` lines of the daemon's log to stderr. */
void st_daemon_log_tail(const st_daemon *d, int lines);
/* The TCP connections this process holds to target's port (the port after
 * the last ':'; 0 for a unix target or when /proc cannot tell): sockets
 * of ours in /proc/self/net/tcp{,6} whose remote port it is, any state
 * but TIME_WAIT, so fds the daemon keeps for our connections are not
 * counted against it. */
int st_own_connections(const char *target);

/* ---- the simulated operators (stress_op.c) --------------------------------- */

typedef enum {
	ST_PHASE_CONNECT = 0, /* every operator opens one session */
	ST_PHASE_STORM,       /* flap */
	ST_PHASE_SETTLE,      /* stop flapping, hold exactly one session */
	ST_PHASE_STOP,        /* driver threads return */
} st_phase;

/* Counters the progress line and the report read while the storm runs
 * (relaxed atomics; exact once the driver threads are parked or joined). */
typedef struct st_counters {
	atomic_uint_fast64_t events;      /* any message, open or end: quiescence */
	atomic_uint_fast64_t sessions_opened, reconnects;
	atomic_uint_fast64_t clean_closes, crashes, dup_sessions, early_closes, rate_deferred;
	atomic_uint_fast64_t clock_newer, clock_same, clock_older;
	atomic_uint_fast64_t superseded, stale_supersedes, tasks_moved, messages, duplicate_deliveries;
	atomic_int connected;             /* operators with an accepted session */
	atomic_uint_fast64_t violations;  /* found online so far */
} st_counters;

typedef struct st_fleet st_fleet;

/* What the operators hold at one moment (taken with the drivers parked).
 * Everything is owned by the snapshot. */
typedef struct st_snapshot {
	ap_stress_sim_view *sims;
	size_t n_sims;
	size_t with_one_session; /* operators holding exactly one accepted session */
	char **ids;              /* backing store of the sims' received arrays */
	size_t n_ids;
} st_snapshot;

typedef struct st_fleet_config {
	const ap_stress_options *o;
	const char *target;
	st_counters *counters;
	/* Online violations go here, under verdict_lock (the drivers share it
	 * with the main thread). */
	ap_stress_verdict *verdict;
	pthread_mutex_t *verdict_lock;
} st_fleet_config;

/* Make the operators (addresses, keys, channels are opened lazily) and
 * start the driver threads in ST_PHASE_CONNECT. 0, AP_ENOMEM, AP_EIO. */
int st_fleet_start(const st_fleet_config *cfg, st_fleet **out, char *err, size_t errlen);
void st_fleet_set_phase(st_fleet *f, st_phase p);
/* Take a snapshot: park every driver thread, copy, release them. */
int st_fleet_snapshot(st_fleet *f, st_snapshot *out);
void st_snapshot_free(st_snapshot *s);
/* A task was disabled or deleted by the admin churn: forget its pending
 * failover measurement. Thread-safe. */
void st_fleet_task_gone(st_fleet *f, const char *task_id);
/* Stop and join the drivers, abandon every stream, close every channel
 * (the daemon sees every session end), then hand over the latency samples
 * and free. NULL accepted. */
void st_fleet_stop(st_fleet *f, ap_stress_latency *first_task,
		   ap_stress_latency *failover);

/* ---- one run (stress.c, stress_admin.c) ------------------------------------ */

/* A task this run created, as the churn last left it. */
typedef struct st_mine {
	char id[65];
	bool enabled;
} st_mine;

/* Everything a run holds. Main thread only, except counters (atomics),
 * verdict (under vlock, shared with the drivers) and fleet. */
typedef struct st_run {
	const ap_stress_options *o;
	ap_stress_report *r;
	st_daemon daemon;
	bool spawned;
	const char *target, *admin_target;
	pid_t pid;                 /* sampled daemon, 0: none */
	ap_client *admin;
	ap_call_options aco;       /* admin calls: timeout, bearer token */
	ap_rpc_metadata amd;
	char bearer[512];
	st_counters c;
	pthread_mutex_t vlock;
	st_fleet *fleet;
	uint64_t rng;
	st_mine *mine;
	size_t n_mine, cap_mine;
	uint64_t created;          /* tasks created (picks their trigger kinds) */
	int connected_at_start;    /* operators listed connected before ours */
	/* The admin lists of the last settle attempt. */
	Aggregator__ListTasksResp **pages;
	size_t n_pages;
	Aggregator__ListOperatorsResp *ops;
} st_run;

/* Create n tasks (ids chosen by the server; one in twenty manual). 0 or
 * the failure, with the detail in err. */
int st_create_tasks(st_run *R, int n, char *err, size_t errlen);
/* One admin operation of the churn (create, disable, enable, delete). */
void st_churn_one(st_run *R);
/* Replace R->pages and R->ops with fresh ListTasks (every page) and
 * ListOperators answers. 0, or the failure (a statuses violation). */
int st_admin_lists(st_run *R);
void st_admin_lists_free(st_run *R);
/* Delete every task this run created and still has (target mode). */
void st_delete_mine(st_run *R);
/* stress_settle.c: wait for quiescence (bounded by settle_timeout_ms);
 * *snap and R's admin lists then hold the last state seen. True when it
 * was quiescent. */
bool st_settle(st_run *R, st_snapshot *snap, double *took_s);
/* Run the checker on a snapshot and R's admin lists; fills the final task
 * counts of the report. */
void st_check(st_run *R, const st_snapshot *snap);
/* True once SIGINT or SIGTERM asked the run to stop early. */
bool st_interrupted(void);
/* True when the daemon under test is known to be gone: the spawned one
 * exited, or the process of --daemon-pid no longer exists. Everything
 * after the storm that needs the daemon is skipped then, so a run against
 * a dead daemon ends in seconds instead of timing out call after call. */
bool st_daemon_gone(st_run *R);
/* Record a violation of `inv` from the main thread. */
void st_run_violation(st_run *R, ap_stress_inv inv, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- small helpers (stress.c) ---------------------------------------------- */

/* A xorshift64* generator; state must not be 0. */
static inline uint64_t st_rand(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [lo, hi]. */
static inline int64_t st_rand_range(uint64_t *state, int64_t lo, int64_t hi)
{
	if (hi <= lo)
		return lo;
	return lo + (int64_t)(st_rand(state) % (uint64_t)(hi - lo + 1));
}

void st_sleep_ms(int64_t ms);

#endif
