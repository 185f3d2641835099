/* Internal interface of `ap task` (src/cli/task*.c): the admin connection
 * every subcommand uses and the small option parsers they share.
 *
 * task.c      dispatch, the admin connection, disable/enable/delete
 * task_create.c  create (one task, or --count N in batches)
 * task_list.c    list (table or --json), paging through ListTasks
 *
 * Each subcommand parses its whole command line before it connects, so a
 * usage error (exit 2) never waits on the network. Not thread-safe: one
 * command runs on the main thread. */
#ifndef AP_CLI_TASK_INT_H
#define AP_CLI_TASK_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "ap/cli.h"
#include "ap/client.h"

/* How long one admin call may take. CreateTasks commits a whole batch
 * synchronously, so it gets longer than the others. */
#define TASK_CALL_TIMEOUT_MS 15000
#define TASK_CREATE_TIMEOUT_MS 60000

/* What a subcommand needs to reach the admin service. */
typedef struct task_ctx {
	const ap_cli_global *g;
	const char *admin_override; /* --admin ADDR, or NULL */
	const char *cmd;            /* "ap task create", for messages */
} task_ctx;

/* An open admin connection. */
typedef struct task_admin {
	ap_client *client;
	char target[1024];  /* what we connect to, for messages */
	char bearer[1024];  /* "Bearer TOKEN" on TCP; "" on a unix socket */
	ap_rpc_metadata md; /* authorization, when bearer is set */
	const char *cmd;
} task_admin;

/* Resolve the admin address (--admin, else the config's admin_listen) and
 * the token (the config's admin.token, sent only on TCP), then open the
 * channel. The connection itself is made by the first call. Returns
 * AP_EXIT_OK, or AP_EXIT_FAIL after printing why (a config that does not
 * load, a bad target). */
int task_admin_open(task_admin *a, const task_ctx *ctx);
void task_admin_close(task_admin *a);
/* Call options carrying the token, with a deadline of timeout_ms. */
ap_call_options task_call_options(const task_admin *a, int64_t timeout_ms);
/* Print why a call failed on stderr, one line naming what was being done:
 * the daemon not answering names the admin address; a status from the
 * server prints the server's message. `what` ("listing tasks") prefixes
 * the line unless NULL or "". rc is ap_client_*'s return, st the status
 * (used when rc is 0). Always returns AP_EXIT_FAIL. */
int task_call_failed(const task_admin *a, const char *what, int rc,
		     const ap_rpc_status *st);
/* True when the failure means the admin service could not be reached at
 * all (so trying the next id is pointless). */
bool task_unreachable(int rc, const ap_rpc_status *st);

/* "--name VALUE" or "--name=VALUE" at argv[*i]: returns the value (and
 * advances *i past a separate value), NULL when argv[*i] is another
 * option. A missing value sets *missing and returns NULL. */
const char *task_option_value(int argc, char **argv, int *i, const char *name,
			      bool *missing);
/* A decimal integer in [min, max], nothing else. */
bool task_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);
/* A task id as the admin service accepts it: 1 to 64 of [A-Za-z0-9_-]. */
bool task_id_ok(const char *id);

int task_create(int argc, char **argv, const task_ctx *ctx);
int task_list(int argc, char **argv, const task_ctx *ctx);

#endif
