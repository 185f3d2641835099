/* `ap task create|list|disable|enable|delete`: task management through the
 * aggregator's Admin service (SPEC sections 2b and 8).
 *
 * The admin address is --admin ADDR (accepted anywhere after `task`), else
 * the config's admin_listen, the config being found as every command finds
 * it (ap_cli_config_file: --config, conf/aggregator.conf, the installed
 * one, the defaults). On a TCP address the config's admin.token goes with
 * every call as "authorization: Bearer TOKEN"; a unix socket needs none
 * (its 0600 mode is the guard).
 *
 * Exit codes: 0 every operation succeeded; 1 a runtime failure (the daemon
 * cannot be reached, which names the admin address; or the server refused
 * something, and its message is printed); 2 a usage error. disable, enable
 * and delete go on with the next id after a refused one (NOT_FOUND, ...),
 * print "ID STATUS" for each success, and exit 1 if any failed; they stop
 * at once when the daemon cannot be reached.
 *
 * This file holds the dispatch, the admin connection and the three id
 * operations; create and list are in task_create.c and task_list.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/config.h"
#include "ap/error.h"
#include "ap/log.h"
#include "task_int.h"

static const char usage_text[] =
	"usage: ap [--config FILE] task [--admin ADDR] create TRIGGER [OPTIONS]\n"
	"       ap [--config FILE] task [--admin ADDR] list [--json] [--limit N]\n"
	"       ap [--config FILE] task [--admin ADDR] disable|enable|delete ID...\n"
	"(`ap task --help` describes every option)\n";

static int usage(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fputs(usage_text, stderr);
	return AP_EXIT_USAGE;
}

/* ---- shared helpers ------------------------------------------------------ */

const char *task_option_value(int argc, char **argv, int *i, const char *name,
			      bool *missing)
{
	size_t n = strlen(name);
	const char *a = argv[*i];
	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

bool task_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	const char *p = s;
	if (!s || !*s)
		return false;
	if (*p == '-')
		p++;
	if (!*p)
		return false;
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	errno = 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool task_id_ok(const char *id)
{
	size_t n = strlen(id);
	if (n < 1 || n > 64)
		return false;
	for (const char *p = id; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* ---- the admin connection ------------------------------------------------ */

int task_admin_open(task_admin *a, const task_ctx *ctx)
{
	char err[1024] = "";
	const char *target = ctx->admin_override;
	bool tcp;
	int rc;

	memset(a, 0, sizeof *a);
	a->cmd = ctx->cmd;
	/* The config is read unless --admin names a unix socket: a TCP admin
	 * listener still needs the token from it. */
	if (!target || strncmp(target, "unix:", 5) != 0) {
		const char *path = ap_cli_config_file(ctx->g, "aggregator.conf");
		ap_config cfg;
		rc = ap_config_load(&cfg, path, err, sizeof err);
		if (rc != 0) {
			fprintf(stderr, "%s: %s\n", ctx->cmd, err[0] ? err : ap_strerror(rc));
			ap_config_free(&cfg);
			return AP_EXIT_FAIL;
		}
		snprintf(a->target, sizeof a->target, "%s", target ? target : cfg.admin_listen);
		tcp = strncmp(a->target, "unix:", 5) != 0;
		if (tcp && cfg.admin.token && cfg.admin.token[0])
			snprintf(a->bearer, sizeof a->bearer, "Bearer %s", cfg.admin.token);
		ap_config_free(&cfg);
	} else {
		snprintf(a->target, sizeof a->target, "%s", target);
	}
	if (a->bearer[0]) {
		a->md.key = "authorization";
		a->md.value = a->bearer;
	}
	rc = ap_client_open(a->target, NULL, &a->client, err, sizeof err);
	if (rc != 0) {
		fprintf(stderr, "%s: cannot use admin address '%s': %s\n", ctx->cmd,
			a->target, err[0] ? err : ap_strerror(rc));
		return AP_EXIT_FAIL;
	}
	return AP_EXIT_OK;
}

void task_admin_close(task_admin *a)
{
	ap_client_close(a->client);
	a->client = NULL;
}

ap_call_options task_call_options(const task_admin *a, int64_t timeout_ms)
{
	ap_call_options o = { .timeout_ms = timeout_ms };
	if (a->bearer[0]) {
		o.metadata = &a->md;
		o.n_metadata = 1;
	}
	return o;
}

bool task_unreachable(int rc, const ap_rpc_status *st)
{
	if (rc == AP_ETIMEDOUT)
		return true;
	if (rc != 0)
		return false;
	return st->code == AP_RPC_UNAVAILABLE || st->code == AP_RPC_DEADLINE_EXCEEDED;
}

int task_call_failed(const task_admin *a, const char *what, int rc,
		     const ap_rpc_status *st)
{
	char prefix[256];
	snprintf(prefix, sizeof prefix, "%s: %s%s", a->cmd, what ? what : "",
		 what && what[0] ? ": " : "");
	if (rc != 0 && rc != AP_ETIMEDOUT) {
		fprintf(stderr, "%s%s\n", prefix, ap_strerror(rc));
	} else if (rc == AP_ETIMEDOUT || st->code == AP_RPC_DEADLINE_EXCEEDED) {
		fprintf(stderr, "%sno answer from the admin service at %s in time "
				"(is the aggregator overloaded or stuck?)\n",
			prefix, a->target);
	} else if (st->code == AP_RPC_UNAVAILABLE) {
		fprintf(stderr, "%scannot reach the aggregator's admin service at %s: %s "
				"(is `ap aggregator` running, with this admin_listen?)\n",
			prefix, a->target, st->details[0] ? st->details : "unavailable");
	} else if (st->code == AP_RPC_UNAUTHENTICATED) {
		fprintf(stderr, "%sthe admin service at %s refused the admin token: %s "
				"(admin.token must match the daemon's)\n",
			prefix, a->target, st->details);
	} else {
		fprintf(stderr, "%s%s (%s)\n", prefix,
			st->details[0] ? st->details : "failed", ap_rpc_code_name(st->code));
	}
	return AP_EXIT_FAIL;
}

/* ---- disable, enable, delete ------------------------------------------- */

enum task_op { OP_DISABLE, OP_ENABLE, OP_DELETE };

static int task_ids(int argc, char **argv, const task_ctx *ctx, enum task_op op)
{
	/* Ids may start with '-' (it is an id character): such an id goes
	 * after "--", as with any command. */
	const char **ids = calloc((size_t)argc, sizeof *ids);
	size_t n_ids = 0;
	bool rest = false;
	if (!ids) {
		fprintf(stderr, "%s: out of memory\n", ctx->cmd);
		return AP_EXIT_FAIL;
	}
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (!rest && strcmp(arg, "--") == 0) {
			rest = true;
			continue;
		}
		if (!rest && arg[0] == '-') {
			free(ids);
			return usage(ctx->cmd, "unknown option '%s'", arg);
		}
		if (!task_id_ok(arg)) {
			free(ids);
			return usage(ctx->cmd, "'%s' is not a task id (1 to 64 of A-Z a-z 0-9 _ -)",
				     arg);
		}
		ids[n_ids++] = arg;
	}
	if (n_ids == 0) {
		free(ids);
		return usage(ctx->cmd, "%s", "which task? give one or more ids");
	}

	task_admin a;
	int code = task_admin_open(&a, ctx);
	if (code != AP_EXIT_OK) {
		free(ids);
		return code;
	}
	ap_call_options o = task_call_options(&a, TASK_CALL_TIMEOUT_MS);
	for (size_t i = 0; i < n_ids; i++) {
		Aggregator__TaskOpResp *resp = NULL;
		ap_rpc_status st = { 0 };
		const char *id = ids[i];
		int rc = op == OP_DELETE
				 ? ap_client_delete_task(a.client, id, &resp, &o, &st)
				 : ap_client_set_task_enabled(a.client, id, op == OP_ENABLE,
							      &resp, &o, &st);
		if (rc == 0 && st.code == AP_RPC_OK) {
			printf("%s %s\n", resp->id[0] ? resp->id : id, resp->status);
			ap_client_free(resp);
			continue;
		}
		/* The server's messages name the id ("task X not found"); say
		 * which id only when it does not. */
		char what[128];
		snprintf(what, sizeof what, "task %s", id);
		if (rc == 0 && st.code != AP_RPC_OK && strstr(st.details, id))
			what[0] = '\0';
		code = task_call_failed(&a, what, rc, &st);
		if (task_unreachable(rc, &st))
			break;
	}
	task_admin_close(&a);
	free(ids);
	if (fflush(stdout) != 0) {
		perror("ap task: stdout");
		code = AP_EXIT_FAIL;
	}
	return code;
}

/* ---- dispatch ------------------------------------------------------------- */

int ap_cmd_task(int argc, char **argv, const ap_cli_global *g)
{
	task_ctx ctx = { .g = g, .cmd = "ap task" };
	char cmd[64];
	int code;

	ap_log_set_level(AP_LOG_ERROR);
	/* Take --admin out wherever it is (before a "--"), so the
	 * subcommands see only their own arguments. */
	char **args = calloc((size_t)argc + 1, sizeof *args);
	if (!args) {
		fprintf(stderr, "ap task: out of memory\n");
		return AP_EXIT_FAIL;
	}
	int n = 0;
	bool rest = false;
	for (int i = 0; i < argc; i++) {
		bool missing = false;
		const char *v = NULL;
		if (i > 0 && !rest &&
		    ((v = task_option_value(argc, argv, &i, "--admin", &missing)) || missing)) {
			if (missing || !*v) {
				free(args);
				return usage("ap task", "%s", "--admin needs an address "
							       "(unix:PATH or HOST:PORT)");
			}
			ctx.admin_override = v;
			continue;
		}
		if (strcmp(argv[i], "--") == 0)
			rest = true;
		args[n++] = argv[i];
	}

	if (n < 2) {
		code = usage("ap task", "%s", "no subcommand given");
		goto out;
	}
	const char *sub = args[1];
	snprintf(cmd, sizeof cmd, "ap task %.40s", sub);
	ctx.cmd = cmd;
	if (strcmp(sub, "create") == 0)
		code = task_create(n - 1, args + 1, &ctx);
	else if (strcmp(sub, "list") == 0)
		code = task_list(n - 1, args + 1, &ctx);
	else if (strcmp(sub, "disable") == 0)
		code = task_ids(n - 1, args + 1, &ctx, OP_DISABLE);
	else if (strcmp(sub, "enable") == 0)
		code = task_ids(n - 1, args + 1, &ctx, OP_ENABLE);
	else if (strcmp(sub, "delete") == 0)
		code = task_ids(n - 1, args + 1, &ctx, OP_DELETE);
	else
		code = usage("ap task", "unknown subcommand '%s'", sub);
out:
	free(args);
	return code;
}
