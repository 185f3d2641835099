/* The `ap` command line (SPEC section 8).
 *
 * `ap [--config FILE] COMMAND ...`. One table in src/cli/cli.c lists the
 * commands; each lives in its own src/cli/<name>.c. Exit codes: 0 success,
 * 1 runtime failure, 2 usage error. */
#ifndef AP_CLI_H
#define AP_CLI_H

#include <signal.h>
#include <stdio.h>

enum {
	AP_EXIT_OK = 0,
	AP_EXIT_FAIL = 1,
	AP_EXIT_USAGE = 2,
	AP_EXIT_ORPHANS = 3,
};

typedef struct ap_cli_global {
	const char *config_path; /* --config, NULL when not given */
} ap_cli_global;

/* A command gets its own argv (argv[0] is the command name). */
typedef int (*ap_cli_fn)(int argc, char **argv, const ap_cli_global *g);

typedef struct ap_command {
	const char *name;
	const char *summary;
	const char *usage; /* full help text printed by `ap NAME --help` */
	ap_cli_fn run;     /* NULL: not available yet */
	const char *pending_issue; /* which issue brings it, when run is NULL */
} ap_command;

/* Entry point used by main(). */
int ap_cli_main(int argc, char **argv);

/* The configuration file a command reads: --config when given, else
 * conf/NAME in the current directory when it exists (a source tree), else
 * $(sysconfdir)/ap/NAME when it exists (an installed ap), else NULL (the
 * built-in defaults). NAME is "aggregator.conf" or "operator.conf". The
 * result is static or g's; not thread-safe (called once at start). */
const char *ap_cli_config_file(const ap_cli_global *g, const char *name);

/* For a long-running command, before gRPC or anything else starts a
 * thread: block SIGINT, SIGTERM and SIGHUP (every later thread inherits
 * the mask, so they reach only the main thread's sigwaitinfo on *set) and
 * ignore SIGPIPE. */
void ap_cli_block_signals(sigset_t *set);

/* Raises the soft RLIMIT_NOFILE to the hard limit: every operator stream
 * is a descriptor, and the usual soft default of 1,024 is far below
 * operators.max_sessions. Returns the soft limit now in force. */
unsigned long ap_cli_raise_fd_limit(void);

/* True when argv holds -h or --help before a "--". */
int ap_cli_wants_help(int argc, char **argv);

int ap_cmd_version(int argc, char **argv, const ap_cli_global *g);
int ap_cmd_config(int argc, char **argv, const ap_cli_global *g);
int ap_cmd_aggregator(int argc, char **argv, const ap_cli_global *g);
int ap_cmd_keygen(int argc, char **argv, const ap_cli_global *g);
int ap_cmd_status(int argc, char **argv, const ap_cli_global *g);
int ap_cmd_stress(int argc, char **argv, const ap_cli_global *g);
int ap_cmd_operator(int argc, char **argv, const ap_cli_global *g);
int ap_cmd_task(int argc, char **argv, const ap_cli_global *g);

#endif
