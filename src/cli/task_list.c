/* `ap task list [--json] [--limit N]`: every task, in id order, paging
 * through ListTasks until next_after comes back empty.
 *
 * The table has one row per task: ID, NAME, STATUS, OWNER, TYPE,
 * EXECUTIONS, then one summary line ("N tasks, M orphaned"). OWNER is the
 * owning operator's address, "(orphaned)" for an enabled, non-manual task
 * with no owner (SPEC section 3), "-" for a task nobody owns by design (a
 * manual, disabled, completed or failed one). EXECUTIONS is count/max, or
 * the count alone when the task has no maximum. Rows are printed page by
 * page as they arrive, so a million tasks need no more memory than a page;
 * the column widths come from the first page (a longer value later just
 * pushes its row out of line), and names longer than NAME_MAX_WIDTH are
 * cut.
 *
 * --json prints one JSON array of objects with the keys id, name, status,
 * owner ("" = none), orphaned, trigger_type ("block", "event", "cron",
 * "fixed_time", "manual"), execution_count and max_execution. Strings are
 * escaped and made valid UTF-8 (an invalid byte becomes U+FFFD).
 *
 * --limit N stops after N tasks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/error.h"
#include "task_int.h"

#define PAGE_SIZE 1000
#define NAME_MAX_WIDTH 32

static const char list_usage[] = "usage: ap task list [--json] [--limit N]\n";

static const char *type_name(int type)
{
	switch (type) {
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL:
		return "manual";
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_FIXED_TIME:
		return "fixed_time";
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON:
		return "cron";
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK:
		return "block";
	case AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT:
		return "event";
	default:
		return "unspecified";
	}
}

static bool is_orphaned(const Aggregator__TaskInfo *t)
{
	return strcmp(t->status, "enabled") == 0 && !t->owner[0] &&
	       t->trigger_type != AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL;
}

static const char *owner_text(const Aggregator__TaskInfo *t)
{
	return t->owner[0] ? t->owner : is_orphaned(t) ? "(orphaned)" : "-";
}

/* Length of the valid UTF-8 sequence at s (1..4), 0 when invalid. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n;
	unsigned int c = s[0];
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	/* Overlong forms, surrogates and values above U+10FFFF. */
	if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) ||
	    (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
		return 0;
	return n;
}

static void json_string(FILE *out, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	fputc('"', out);
	while (*s) {
		size_t n = utf8_len(s);
		if (n == 0) {
			fputs("\\ufffd", out);
			s++;
		} else if (n > 1) {
			fwrite(s, 1, n, out);
			s += n;
		} else {
			if (*s == '"' || *s == '\\')
				fprintf(out, "\\%c", *s);
			else if (*s < 0x20 || *s == 0x7f)
				fprintf(out, "\\u%04x", *s);
			else
				fputc(*s, out);
			s++;
		}
	}
	fputc('"', out);
}

/* A name for the table: control characters become '?', and a name wider
 * than width is cut to width - 3 and "...". */
static void table_name(char *out, size_t size, const char *name, size_t width)
{
	size_t n = 0, len = strlen(name);
	bool cut = len > width && width > 3;
	size_t keep = cut ? width - 3 : len;
	for (size_t i = 0; i < keep && n + 1 < size; i++) {
		unsigned char c = (unsigned char)name[i];
		out[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	out[n] = '\0';
	if (cut)
		snprintf(out + n, size - n, "...");
	if (!out[0])
		snprintf(out, size, "-");
}

typedef struct widths {
	int id, name, status, owner, type;
} widths;

static widths measure(const Aggregator__ListTasksResp *page)
{
	widths w = { 2, 4, 6, 5, 4 };
	for (size_t i = 0; i < page->n_tasks; i++) {
		const Aggregator__TaskInfo *t = page->tasks[i];
		int n;
#define WIDEN(field, len)                                                     \
	do {                                                                  \
		n = (int)(len);                                               \
		if (n > w.field)                                              \
			w.field = n;                                          \
	} while (0)
		WIDEN(id, strlen(t->id));
		WIDEN(name, strlen(t->name) > NAME_MAX_WIDTH ? NAME_MAX_WIDTH : strlen(t->name));
		WIDEN(status, strlen(t->status));
		WIDEN(owner, strlen(owner_text(t)));
		WIDEN(type, strlen(type_name(t->trigger_type)));
#undef WIDEN
	}
	return w;
}

static void print_row(const widths *w, const Aggregator__TaskInfo *t)
{
	char name[NAME_MAX_WIDTH * 4 + 4], execs[48];
	table_name(name, sizeof name, t->name, NAME_MAX_WIDTH);
	if (t->max_execution > 0)
		snprintf(execs, sizeof execs, "%lld/%lld", (long long)t->execution_count,
			 (long long)t->max_execution);
	else
		snprintf(execs, sizeof execs, "%lld", (long long)t->execution_count);
	printf("%-*s  %-*s  %-*s  %-*s  %-*s  %s\n", w->id, t->id, w->name, name, w->status,
	       t->status, w->owner, owner_text(t), w->type, type_name(t->trigger_type),
	       execs);
}

static void print_json(bool first, const Aggregator__TaskInfo *t)
{
	fputs(first ? "\n  {\"id\": " : ",\n  {\"id\": ", stdout);
	json_string(stdout, t->id);
	fputs(", \"name\": ", stdout);
	json_string(stdout, t->name);
	fputs(", \"status\": ", stdout);
	json_string(stdout, t->status);
	fputs(", \"owner\": ", stdout);
	json_string(stdout, t->owner);
	printf(", \"orphaned\": %s, \"trigger_type\": \"%s\", \"execution_count\": %lld, "
	       "\"max_execution\": %lld}",
	       is_orphaned(t) ? "true" : "false", type_name(t->trigger_type),
	       (long long)t->execution_count, (long long)t->max_execution);
}

int task_list(int argc, char **argv, const task_ctx *ctx)
{
	bool json = false;
	int64_t limit = -1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		bool missing = false;
		if (strcmp(a, "--json") == 0) {
			json = true;
		} else if ((v = task_option_value(argc, argv, &i, "--limit", &missing)) ||
			   missing) {
			if (missing || !task_parse_int(v, 0, INT64_MAX, &limit)) {
				fprintf(stderr, "%s: --limit needs a number of tasks (0 or "
						"more)\n%s",
					ctx->cmd, list_usage);
				return AP_EXIT_USAGE;
			}
		} else {
			fprintf(stderr, "%s: %s '%s'\n%s", ctx->cmd,
				a[0] == '-' ? "unknown option" : "unexpected argument", a,
				list_usage);
			return AP_EXIT_USAGE;
		}
	}

	task_admin a;
	int code = task_admin_open(&a, ctx);
	if (code != AP_EXIT_OK)
		return code;
	ap_call_options co = task_call_options(&a, TASK_CALL_TIMEOUT_MS);
	char after[128] = "";
	int64_t shown = 0, orphaned = 0;
	widths w = { 0 };
	bool started = false;

	while (limit < 0 || shown < limit) {
		Aggregator__ListTasksReq req = AGGREGATOR__LIST_TASKS_REQ__INIT;
		Aggregator__ListTasksResp *page = NULL;
		ap_rpc_status st = { 0 };
		int64_t want = limit < 0 || limit - shown > PAGE_SIZE ? PAGE_SIZE : limit - shown;
		req.after = after;
		req.limit = (uint32_t)want;
		int rc = ap_client_list_tasks(a.client, &req, &page, &co, &st);
		if (rc != 0 || st.code != AP_RPC_OK) {
			code = task_call_failed(&a, "listing tasks", rc, &st);
			break;
		}
		if (!started) {
			started = true;
			if (json) {
				fputs("[", stdout);
			} else if (page->n_tasks > 0) {
				w = measure(page);
				printf("%-*s  %-*s  %-*s  %-*s  %-*s  %s\n", w.id, "ID", w.name,
				       "NAME", w.status, "STATUS", w.owner, "OWNER", w.type,
				       "TYPE", "EXECUTIONS");
			}
		}
		for (size_t i = 0; i < page->n_tasks && (limit < 0 || shown < limit); i++) {
			const Aggregator__TaskInfo *t = page->tasks[i];
			if (json)
				print_json(shown == 0, t);
			else
				print_row(&w, t);
			shown++;
			orphaned += is_orphaned(t);
		}
		/* The last page has an empty next_after; one that does not move
		 * forward would loop for ever, so it ends the listing too. */
		bool last = !page->next_after[0] || strcmp(page->next_after, after) <= 0 ||
			    page->n_tasks == 0;
		if (!last && strlen(page->next_after) >= sizeof after) {
			fprintf(stderr, "%s: the server sent an over-long next_after\n", ctx->cmd);
			code = AP_EXIT_FAIL;
			last = true;
		}
		if (!last)
			snprintf(after, sizeof after, "%s", page->next_after);
		ap_client_free(page);
		if (last)
			break;
	}
	task_admin_close(&a);
	if (code == AP_EXIT_OK) {
		if (json)
			fputs(!started ? "[]\n" : shown ? "\n]\n" : "]\n", stdout);
		else if (shown == 0)
			printf("no tasks\n");
		else
			printf("%lld task%s, %lld orphaned\n", (long long)shown,
			       shown == 1 ? "" : "s", (long long)orphaned);
	}
	if (fflush(stdout) != 0) {
		perror("ap task list: stdout");
		code = AP_EXIT_FAIL;
	}
	return code;
}
