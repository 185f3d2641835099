/* Integration-test helper: the real `ap aggregator` as a child process.
 *
 * td_create makes a temp dir (mkdtemp under /tmp, short enough for a unix
 * socket path) holding the generated config, the database and the daemon's
 * log; td_start runs "$AP_BUILDDIR/ap --config DIR/aggregator.conf
 * aggregator --port-file DIR/port" and waits, polling with a deadline, for
 * the port file and a HealthCheck answering "OK". The daemon listens on
 * 127.0.0.1:0 (operators) and unix:DIR/admin.sock (admin), with
 * auth.mode "none" and no metrics listener unless the options say
 * otherwise.
 *
 * Failure handling: the helpers use cmocka assertions, so call them from
 * the test's main thread only. td_destroy (call it from the cmocka
 * teardown, which also runs after a failed assertion) SIGKILLs and reaps a
 * daemon still running, prints the end of its log unless the test set
 * d->passed, and removes the temp dir. The child also gets
 * PR_SET_PDEATHSIG=SIGKILL, so a test process that crashes does not leave
 * a daemon behind; its temp dir (which names its owner in owner.pid) is
 * removed by the next td_create that finds the owner gone. */
#ifndef AP_TEST_DAEMON_H
#define AP_TEST_DAEMON_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ap/client.h"

/* Bounds for conditions that normally take milliseconds; generous because
 * the sanitizer builds run the daemon many times slower. They cost nothing
 * when the condition comes true early. */
#define TD_START_TIMEOUT_MS 60000
#define TD_STOP_TIMEOUT_MS 30000
#define TD_WAIT_MS 20000

/* Integer options: 0 keeps the default (the helper's for stabilization_ms,
 * 300; the config's for the others); TD_ZERO asks for a real 0. */
#define TD_ZERO (-1)
typedef struct td_options {
	int64_t stabilization_ms;
	int64_t restart_grace_ms;
	int64_t resync_interval_ms;
	int64_t max_message_bytes;
	int64_t shutdown_timeout_ms;
	int64_t reconnect_cooldown_ms;
	/* Items of operators.approved, libconfig syntax, e.g.
	 * "\"0xabc...\", \"0xdef...\""; NULL: "\"*\"". */
	const char *approved;
	const char *extra; /* more top-level config lines, or NULL */
	/* metrics_listen's value (NULL: "" = off). */
	const char *metrics_listen;
	/* Log in JSON to DIR/daemon.jsonl (log.file) instead of text on
	 * stderr (the daemon's stderr still goes to log_path). */
	bool json_log;
	/* The body of the auth group, e.g. "mode = \"signature\";
	 * max_skew_s = 2;" (NULL: "mode = \"none\";"). */
	const char *auth;
	/* Options of d->node, the channel td_start checks the operator port
	 * with (NULL: plaintext): TLS settings for a daemon whose extra lines
	 * set tls. Copied; its strings must outlive the td_daemon. */
	const ap_client_options *node_options;
} td_options;

typedef struct td_daemon {
	char dir[64];            /* the temp dir */
	char conf_path[PATH_MAX];
	char port_path[PATH_MAX];
	char log_path[PATH_MAX];
	char json_log_path[PATH_MAX]; /* DIR/daemon.jsonl (json_log) */
	char db_path[PATH_MAX];
	char admin_target[PATH_MAX]; /* "unix:DIR/admin.sock" */
	char target[64];         /* "127.0.0.1:PORT" while running */
	int port;
	pid_t pid;               /* 0 when not running */
	int starts;              /* how many times td_start ran */
	bool passed;             /* set at the end of a test: no log dump */
	ap_client *admin;        /* admin channel while running */
	ap_client *node;         /* operator-port channel while running */
	ap_client_options node_options; /* td_options.node_options */
} td_daemon;

/* Make the temp dir and write the config. Asserts on failure. */
td_daemon *td_create(const td_options *o);
/* Start the daemon and wait until it serves (port file, HealthCheck OK,
 * admin ListOperators OK). Asserts on failure. */
void td_start(td_daemon *d);
/* SIGTERM; wait up to TD_STOP_TIMEOUT_MS. Returns the wait status (or -1
 * when it did not exit in time: then it was SIGKILLed and reaped). */
int td_stop(td_daemon *d);
/* SIGTERM and assert a clean exit (status 0) within the bound. */
void td_stop_clean(td_daemon *d);
/* SIGKILL and reap. */
void td_kill(td_daemon *d);
/* True while the child has not exited (reaps it when it has). */
bool td_alive(td_daemon *d);
/* The daemon's thread count (/proc/PID/status "Threads:"), -1 on error. */
int td_threads(const td_daemon *d);
/* Poll td_threads until it is <= want, up to timeout_ms. Returns the last
 * count seen. */
int td_wait_threads(const td_daemon *d, int want, int64_t timeout_ms);
/* How many of the daemon's threads have a name starting with prefix
 * ("ap" counts ap's own: main, ap-stream, ap-rpc-worker, ap-ticker-N...,
 * not gRPC's pools), -1 on error; and the polling wait for it. */
int td_threads_named(const td_daemon *d, const char *prefix);
int td_wait_threads_named(const td_daemon *d, const char *prefix, int want, int64_t timeout_ms);
/* Print the daemon's thread names (/proc/PID/task/TID/comm), counted, to
 * stderr: what a thread-count check failed on. */
void td_print_threads(const td_daemon *d);
/* Print the last `lines` lines of the daemon's log to stderr. */
void td_dump_log(const td_daemon *d, int lines);
/* Count lines of the log containing `needle`. */
int td_log_count(const td_daemon *d, const char *needle);
/* Kill, reap, close channels, remove the temp dir. NULL accepted. */
void td_destroy(td_daemon *d);

/* Remove a directory tree (nftw). 0 or -1. */
int td_rmtree(const char *dir);

#endif
