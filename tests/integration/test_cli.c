/*
 * Integration: `ap task` and `ap status` as a user runs them, against the
 * real daemon (issue 5, point 5; SPEC sections 2b and 8). Every command is
 * the built ap run as a child process; its exit code, stdout and stderr
 * are checked, JSON output is parsed by python3's json module.
 *
 *  - task create and list: every trigger kind, --count with --id prefixes
 *    and server ids, --quiet; the table (owner, "(orphaned)", "-", type,
 *    count/max, summary line) before and after an operator takes the tasks;
 *    list --json (exact keys, values agree with ListTasks); --limit.
 *  - disable, enable, delete: "ID STATUS" lines, the operator's stream
 *    following; an unknown id exits 1 with the server's message and does
 *    not stop the ids after it; a duplicate create exits 1.
 *  - usage errors exit 2 (without touching the network), --help exits 0.
 *  - an admin address nobody listens on (unix socket and TCP) exits 1 with
 *    a message naming the address.
 *  - ap status under load: one thread creates tasks, another connects and
 *    disconnects operators through the client library, while the main
 *    thread runs `ap status --json` again and again: each run exits 0 and
 *    parses, the totals never decrease, and when the load stops the totals
 *    equal what ListTasks shows. --max-orphans exits 3 over the bound.
 *  - ap status on a database that does not exist exits 1 and creates
 *    nothing (neither the directory nor a file in an empty one).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "daemon.h"
#include "itest.h"
#include "proc.h"

static int teardown(void **state)
{
	it_op_free_all();
	td_destroy(*state);
	*state = NULL;
	return 0;
}

/* Fail with the command's output when its exit code is not `want`. */
#define EXPECT_CODE(r, want, what)                                            \
	do {                                                                  \
		if ((r)->code != (want)) {                                    \
			pr_dump(what, r);                                     \
			fail_msg("%s: exit %d, expected %d", what, (r)->code, want); \
		}                                                             \
	} while (0)

static void expect_contains(const pr_result *r, const char *text, const char *needle,
			    const char *what)
{
	if (!strstr(text, needle)) {
		pr_dump(what, r);
		fail_msg("%s: the output lacks \"%s\"", what, needle);
	}
}

/* ---- JSON, read by python3 ---------------------------------------------- */

/* Checks a `task list --json` array: exact keys and types. Prints one
 * line per task "ID STATUS OWNER|- ORPHANED TYPE COUNT MAX". */
static const char list_check[] =
	"import json, sys\n"
	"a = json.load(sys.stdin)\n"
	"assert isinstance(a, list), 'not an array'\n"
	"keys = {'id', 'name', 'status', 'owner', 'orphaned', 'trigger_type',\n"
	"        'execution_count', 'max_execution'}\n"
	"for t in a:\n"
	"    assert set(t) == keys, sorted(t)\n"
	"    assert isinstance(t['orphaned'], bool)\n"
	"    assert all(isinstance(t[k], int) for k in ('execution_count', 'max_execution'))\n"
	"    assert all(isinstance(t[k], str) for k in ('id', 'name', 'status', 'owner'))\n"
	"    print(t['id'], t['status'], t['owner'] or '-', int(t['orphaned']),\n"
	"          t['trigger_type'], t['execution_count'], t['max_execution'])\n";

/* Run `task list --json` and return python's per-task lines (malloc'd). */
static char *list_json(const td_daemon *d)
{
	pr_result r, py;
	pr_ap(&r, "--config", d->conf_path, "task", "list", "--json", NULL);
	EXPECT_CODE(&r, 0, "ap task list --json");
	char *argv[] = { (char *)pr_python(), (char *)"-c", (char *)list_check, NULL };
	pr_run(&py, r.out, PR_CMD_TIMEOUT_MS, argv);
	if (py.code != 0) {
		pr_dump("ap task list --json", &r);
		pr_dump("python list check", &py);
		fail_msg("task list --json is not the expected JSON array");
	}
	pr_free(&r);
	char *lines = py.out;
	py.out = NULL;
	pr_free(&py);
	return lines;
}

/* The line of `lines` starting with "ID " (copied into out); false if none. */
static bool find_line(const char *lines, const char *id, char *out, size_t size)
{
	size_t n = strlen(id);
	for (const char *p = lines; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len > n && strncmp(p, id, n) == 0 && p[n] == ' ') {
			snprintf(out, size, "%.*s", (int)len, p);
			return true;
		}
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

/* ---- task create and list ----------------------------------------------- */

static void test_task_create_list(void **state)
{
	td_daemon *d = *state = td_create(NULL);
	const char *conf;
	pr_result r;
	char addr[43], line[512];

	td_start(d);
	conf = d->conf_path;

	/* 25 block tasks with ids blk-0 .. blk-24, in batches of 10. */
	pr_ap(&r, "--config", conf, "task", "create", "--block-interval", "5", "--count", "25",
	      "--id", "blk", "--name", "n", "--batch", "10", NULL);
	EXPECT_CODE(&r, 0, "task create --count 25");
	assert_int_equal(pr_count_lines(r.out, ""), 25);
	assert_true(strncmp(r.out, "blk-0\nblk-1\n", 12) == 0);
	assert_non_null(strstr(r.out, "\nblk-24\n"));
	pr_free(&r);

	/* No operator yet: every task orphaned. */
	pr_ap(&r, "--config", conf, "task", "list", NULL);
	EXPECT_CODE(&r, 0, "task list");
	assert_int_equal(pr_count_lines(r.out, ""), 1 + 25 + 1);
	assert_true(strncmp(r.out, "ID ", 3) == 0);
	expect_contains(&r, r.out, "NAME", "task list header");
	expect_contains(&r, r.out, "EXECUTIONS", "task list header");
	assert_int_equal(pr_count_lines(r.out, "(orphaned)"), 25);
	expect_contains(&r, r.out, "\n25 tasks, 25 orphaned\n", "task list summary");
	pr_free(&r);

	/* An operator takes them all. */
	it_address(1, addr);
	it_op *op = it_op_start(d->target, addr, 1);
	assert_true(it_wait_ready(d->admin, addr, TD_WAIT_MS));
	assert_true(it_op_wait_count(op, 25, TD_WAIT_MS));
	assert_true(it_wait_owned(d->admin, addr, 25, TD_WAIT_MS));
	pr_ap(&r, "--config", conf, "task", "list", NULL);
	EXPECT_CODE(&r, 0, "task list (owned)");
	assert_int_equal(pr_count_lines(r.out, addr), 25);
	assert_int_equal(pr_count_lines(r.out, "(orphaned)"), 0);
	expect_contains(&r, r.out, "\n25 tasks, 0 orphaned\n", "task list summary");
	/* Columns: ID NAME STATUS OWNER TYPE EXECUTIONS. */
	char id[80], name[80], status[80], owner[80], type[80], execs[80];
	const char *row = strstr(r.out, "\nblk-0 ");
	assert_non_null(row);
	assert_int_equal(sscanf(row + 1, "%79s %79s %79s %79s %79s %79s", id, name, status, owner,
				type, execs), 6);
	assert_string_equal(id, "blk-0");
	assert_string_equal(name, "n-0");
	assert_string_equal(status, "enabled");
	assert_string_equal(owner, addr);
	assert_string_equal(type, "block");
	assert_string_equal(execs, "0");
	pr_free(&r);

	/* Every other trigger kind, one task each. */
	struct {
		const char *id;
		const char *args[8];
	} kinds[] = {
		{ "c1", { "--cron", "*/5 * * * *", "--cron", "0 1 * * *", NULL } },
		{ "f1", { "--at", "1900000000000", "--at", "1900000060000", NULL } },
		{ "e1", { "--event-address", "0x1111111111111111111111111111111111111111",
			  "--event-topic", "0xddf252ad", "--chain-id", "7", NULL } },
		{ "m1", { "--manual", NULL } },
		{ "x1", { "--block-interval", "3", "--chain-id", "1", "--max-execution", "3",
			  NULL } },
	};
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		char *argv[24];
		int n = 0;
		argv[n++] = (char *)pr_ap_path();
		argv[n++] = (char *)"--config";
		argv[n++] = (char *)conf;
		argv[n++] = (char *)"task";
		argv[n++] = (char *)"create";
		argv[n++] = (char *)"--id";
		argv[n++] = (char *)kinds[k].id;
		for (int j = 0; kinds[k].args[j]; j++)
			argv[n++] = (char *)kinds[k].args[j];
		argv[n] = NULL;
		pr_run(&r, NULL, PR_CMD_TIMEOUT_MS, argv);
		EXPECT_CODE(&r, 0, kinds[k].id);
		snprintf(line, sizeof line, "%s\n", kinds[k].id);
		assert_string_equal(r.out, line);
		pr_free(&r);
	}
	/* Three with server-made ids; --quiet prints only the count. */
	pr_ap(&r, "--config", conf, "task", "create", "--block-interval", "9", "--count", "3",
	      "--quiet", NULL);
	EXPECT_CODE(&r, 0, "task create --quiet");
	assert_string_equal(r.out, "3\n");
	pr_free(&r);

	/* 25 + 5 + 3 tasks; the non-manual ones all go to the operator. */
	assert_true(it_wait_owned(d->admin, addr, 25 + 4 + 3, TD_WAIT_MS));
	char *lines = list_json(d);
	assert_int_equal(pr_count_lines(lines, ""), 33);
	/* Server-made ids are lower-case ULIDs (26 characters). */
	it_task *tasks = NULL;
	size_t n = it_list_tasks(d->admin, &tasks);
	assert_int_equal(n, 33);
	size_t ulids = 0;
	for (size_t i = 0; i < n; i++) {
		assert_true(find_line(lines, tasks[i].id, line, sizeof line));
		if (strlen(tasks[i].id) == 26)
			ulids++;
	}
	free(tasks);
	assert_int_equal(ulids, 3);
	struct {
		const char *id, *want;
	} rows[] = {
		{ "c1", "enabled OWNER 0 cron 0 0" },
		{ "f1", "enabled OWNER 0 fixed_time 0 0" },
		{ "e1", "enabled OWNER 0 event 0 0" },
		{ "m1", "enabled - 0 manual 0 0" },
		{ "x1", "enabled OWNER 0 block 0 3" },
		{ "blk-7", "enabled OWNER 0 block 0 0" },
	};
	for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
		char want[256], *o;
		snprintf(want, sizeof want, "%s %s", rows[k].id, rows[k].want);
		if ((o = strstr(want, "OWNER")) != NULL) {
			char tail[128];
			snprintf(tail, sizeof tail, "%s", o + 5);
			snprintf(o, sizeof want - (size_t)(o - want), "%s%s", addr, tail);
		}
		assert_true(find_line(lines, rows[k].id, line, sizeof line));
		assert_string_equal(line, want);
	}
	free(lines);

	/* The table: a manual task's owner is "-", max 3 shows as 0/3. */
	pr_ap(&r, "--config", conf, "task", "list", NULL);
	EXPECT_CODE(&r, 0, "task list (kinds)");
	row = strstr(r.out, "\nm1 ");
	assert_non_null(row);
	assert_int_equal(sscanf(row + 1, "%79s %79s %79s %79s %79s %79s", id, name, status, owner,
				type, execs), 6);
	assert_string_equal(name, "-");
	assert_string_equal(owner, "-");
	assert_string_equal(type, "manual");
	row = strstr(r.out, "\nx1 ");
	assert_non_null(row);
	assert_int_equal(sscanf(row + 1, "%79s %79s %79s %79s %79s %79s", id, name, status, owner,
				type, execs), 6);
	assert_string_equal(execs, "0/3");
	expect_contains(&r, r.out, "\n33 tasks, 0 orphaned\n", "task list summary");
	pr_free(&r);

	/* --limit: the first N in id order. */
	pr_ap(&r, "--config", conf, "task", "list", "--limit", "5", NULL);
	EXPECT_CODE(&r, 0, "task list --limit 5");
	assert_int_equal(pr_count_lines(r.out, ""), 1 + 5 + 1);
	expect_contains(&r, r.out, "\n5 tasks, 0 orphaned\n", "task list --limit summary");
	pr_free(&r);
	pr_ap(&r, "--config", conf, "task", "list", "--json", "--limit", "0", NULL);
	EXPECT_CODE(&r, 0, "task list --json --limit 0");
	assert_string_equal(r.out, "[]\n");
	pr_free(&r);

	it_op_free(op);
	td_stop_clean(d);
	d->passed = true;
}

/* ---- disable, enable, delete, and refusals -------------------------------- */

static void test_task_state_ops(void **state)
{
	td_daemon *d = *state = td_create(NULL);
	const char *conf;
	pr_result r;
	char addr[43], line[512];

	td_start(d);
	conf = d->conf_path;
	it_address(2, addr);
	it_op *op = it_op_start(d->target, addr, 1);
	assert_true(it_wait_ready(d->admin, addr, TD_WAIT_MS));
	pr_ap(&r, "--config", conf, "task", "create", "--block-interval", "1", "--count", "5",
	      "--id", "s", NULL);
	EXPECT_CODE(&r, 0, "task create");
	pr_free(&r);
	assert_true(it_op_wait_count(op, 5, TD_WAIT_MS));

	/* disable: DisableTask reaches the owner; the task keeps no owner. */
	pr_ap(&r, "--config", conf, "task", "disable", "s-0", NULL);
	EXPECT_CODE(&r, 0, "task disable s-0");
	assert_string_equal(r.out, "s-0 disabled\n");
	assert_string_equal(r.err, "");
	pr_free(&r);
	assert_true(it_op_wait_task(op, "s-0", false, TD_WAIT_MS));
	char *lines = list_json(d);
	assert_true(find_line(lines, "s-0", line, sizeof line));
	assert_string_equal(line, "s-0 disabled - 0 block 0 0");
	free(lines);

	/* enable: back to the operator. */
	pr_ap(&r, "--config", conf, "task", "enable", "s-0", NULL);
	EXPECT_CODE(&r, 0, "task enable s-0");
	assert_string_equal(r.out, "s-0 enabled\n");
	pr_free(&r);
	assert_true(it_op_wait_task(op, "s-0", true, TD_WAIT_MS));

	/* delete: gone from the operator and from ListTasks. */
	pr_ap(&r, "--config", conf, "task", "delete", "s-1", NULL);
	EXPECT_CODE(&r, 0, "task delete s-1");
	assert_string_equal(r.out, "s-1 deleted\n");
	pr_free(&r);
	assert_true(it_op_wait_task(op, "s-1", false, TD_WAIT_MS));
	lines = list_json(d);
	assert_false(find_line(lines, "s-1", line, sizeof line));
	assert_int_equal(pr_count_lines(lines, ""), 4);
	free(lines);

	/* An unknown id: exit 1, the server's message, nothing on stdout. */
	pr_ap(&r, "--config", conf, "task", "disable", "nope", NULL);
	EXPECT_CODE(&r, 1, "task disable nope");
	assert_string_equal(r.out, "");
	expect_contains(&r, r.err, "task nope not found", "task disable nope");
	pr_free(&r);
	pr_ap(&r, "--config", conf, "task", "delete", "s-1", NULL);
	EXPECT_CODE(&r, 1, "task delete s-1 again");
	expect_contains(&r, r.err, "task s-1 not found", "task delete s-1 again");
	pr_free(&r);
	/* ...and the ids after it are still done. */
	pr_ap(&r, "--config", conf, "task", "disable", "s-2", "nope", "s-3", NULL);
	EXPECT_CODE(&r, 1, "task disable s-2 nope s-3");
	assert_string_equal(r.out, "s-2 disabled\ns-3 disabled\n");
	expect_contains(&r, r.err, "task nope not found", "task disable s-2 nope s-3");
	pr_free(&r);
	assert_true(it_op_wait_count(op, 2, TD_WAIT_MS));

	/* A duplicate id: exit 1 with the server's message; with --count the
	 * refused batch creates none of its tasks. */
	pr_ap(&r, "--config", conf, "task", "create", "--manual", "--id", "s-4", NULL);
	EXPECT_CODE(&r, 1, "task create duplicate");
	expect_contains(&r, r.err, "already exists", "task create duplicate");
	pr_free(&r);
	pr_ap(&r, "--config", conf, "task", "create", "--manual", "--id", "s", "--count", "7",
	      NULL);
	EXPECT_CODE(&r, 1, "task create --count duplicate");
	expect_contains(&r, r.err, "already exists", "task create --count duplicate");
	pr_free(&r);
	lines = list_json(d);
	assert_int_equal(pr_count_lines(lines, ""), 4);
	free(lines);
	/* A batch that commits before a refused one stays created, and the
	 * command says how many were: u-5 exists, so of u-0 .. u-8 in
	 * batches of 5 the first batch is created and the second refused. */
	pr_ap(&r, "--config", conf, "task", "create", "--manual", "--id", "u-5", NULL);
	EXPECT_CODE(&r, 0, "task create u-5");
	pr_free(&r);
	pr_ap(&r, "--config", conf, "task", "create", "--manual", "--id", "u", "--count", "9",
	      "--batch", "5", NULL);
	EXPECT_CODE(&r, 1, "task create u --count 9 --batch 5");
	assert_string_equal(r.out, "u-0\nu-1\nu-2\nu-3\nu-4\n");
	expect_contains(&r, r.err, "task u-5 already exists", "task create u --count 9");
	expect_contains(&r, r.err, "5 of 9 tasks were created", "task create u --count 9");
	pr_free(&r);
	lines = list_json(d);
	assert_int_equal(pr_count_lines(lines, ""), 4 + 1 + 5);
	assert_false(find_line(lines, "u-6", line, sizeof line));
	free(lines);

	it_op_free(op);
	td_stop_clean(d);
	d->passed = true;
}

/* ---- usage errors and an unreachable daemon -------------------------------- */

static void test_task_usage(void **state)
{
	(void)state;
	/* A socket nobody listens on: a usage error must be reported before
	 * any connection is tried, so these all exit 2, not 1. */
	const char *admin = "unix:/nonexistent-ap-test/admin.sock";
	const char *cases[][8] = {
		{ "task", NULL },
		{ "task", "frob", NULL },
		{ "task", "create", NULL },
		{ "task", "create", "--block-interval", "x", NULL },
		{ "task", "create", "--block-interval", "0", NULL },
		{ "task", "create", "--block-interval", NULL },
		{ "task", "create", "--cron", "* * * * *", "--manual", NULL },
		{ "task", "create", "--manual", "--chain-id", "1", NULL },
		{ "task", "create", "--manual", "--id", "bad id", NULL },
		{ "task", "create", "--manual", "--count", "0", NULL },
		{ "task", "create", "--at", "soon", NULL },
		{ "task", "create", "--manual", "extra", NULL },
		{ "task", "list", "--bogus", NULL },
		{ "task", "list", "--limit", "-1", NULL },
		{ "task", "disable", NULL },
		{ "task", "delete", "bad/id", NULL },
		{ "task", "enable", "--what", NULL },
		{ "task", "--admin", NULL },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *argv[16];
		char what[256] = "ap";
		int n = 0;
		argv[n++] = (char *)pr_ap_path();
		argv[n++] = (char *)cases[i][0];
		argv[n++] = (char *)"--admin";
		argv[n++] = (char *)admin;
		for (int j = 1; cases[i][j]; j++)
			argv[n++] = (char *)cases[i][j];
		argv[n] = NULL;
		for (int j = 1; j < n; j++)
			snprintf(what + strlen(what), sizeof what - strlen(what), " %s", argv[j]);
		pr_result r;
		pr_run(&r, NULL, PR_CMD_TIMEOUT_MS, argv);
		EXPECT_CODE(&r, 2, what);
		assert_string_equal(r.out, "");
		assert_true(strlen(r.err) > 0);
		assert_null(strstr(r.err, "cannot reach"));
		pr_free(&r);
	}

	pr_result r;
	pr_ap(&r, "task", "--help", NULL);
	EXPECT_CODE(&r, 0, "ap task --help");
	expect_contains(&r, r.out, "--block-interval", "ap task --help");
	expect_contains(&r, r.out, "--count", "ap task --help");
	pr_free(&r);
	pr_ap(&r, "help", "task", NULL);
	EXPECT_CODE(&r, 0, "ap help task");
	expect_contains(&r, r.out, "disable", "ap help task");
	pr_free(&r);
	pr_ap(&r, "task", "create", "--help", NULL);
	EXPECT_CODE(&r, 0, "ap task create --help");
	pr_free(&r);
}

static void test_task_unreachable(void **state)
{
	td_daemon *d = *state = td_create(NULL);
	pr_result r;

	/* Configured but not started: the admin socket does not exist. */
	const char *cmds[][4] = {
		{ "list", NULL },
		{ "list", "--json", NULL },
		{ "create", "--manual", NULL },
		{ "disable", "x", NULL },
		{ "delete", "x", "y", NULL },
	};
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		char *argv[12];
		int n = 0;
		argv[n++] = (char *)pr_ap_path();
		argv[n++] = (char *)"--config";
		argv[n++] = d->conf_path;
		argv[n++] = (char *)"task";
		for (int j = 0; cmds[i][j]; j++)
			argv[n++] = (char *)cmds[i][j];
		argv[n] = NULL;
		pr_run(&r, NULL, PR_CMD_TIMEOUT_MS, argv);
		EXPECT_CODE(&r, 1, cmds[i][0]);
		assert_string_equal(r.out, "");
		expect_contains(&r, r.err, d->admin_target, cmds[i][0]);
		expect_contains(&r, r.err, "cannot reach", cmds[i][0]);
		/* One message, even for several ids. */
		assert_int_equal(pr_count_lines(r.err, ""), 1);
		pr_free(&r);
	}
	/* A TCP port that refuses connections. */
	pr_ap(&r, "--config", d->conf_path, "task", "--admin", "127.0.0.1:1", "list", NULL);
	EXPECT_CODE(&r, 1, "task --admin 127.0.0.1:1 list");
	expect_contains(&r, r.err, "127.0.0.1:1", "task --admin 127.0.0.1:1 list");
	pr_free(&r);

	/* Running, then stopped: reachable, then not. */
	td_start(d);
	pr_ap(&r, "--config", d->conf_path, "task", "list", NULL);
	EXPECT_CODE(&r, 0, "task list (running)");
	assert_string_equal(r.out, "no tasks\n");
	pr_free(&r);
	pr_ap(&r, "--config", d->conf_path, "task", "--admin", d->admin_target, "list", "--json",
	      NULL);
	EXPECT_CODE(&r, 0, "task --admin list --json (running)");
	assert_string_equal(r.out, "[]\n");
	pr_free(&r);
	td_stop_clean(d);
	pr_ap(&r, "--config", d->conf_path, "task", "list", NULL);
	EXPECT_CODE(&r, 1, "task list (stopped)");
	expect_contains(&r, r.err, d->admin_target, "task list (stopped)");
	pr_free(&r);
	d->passed = true;
}

/* ---- ap status while the daemon is under load ----------------------------- */

#define LOAD_BATCH 20
#define LOAD_MAX 4000
#define LOAD_OPERATORS 6

typedef struct load {
	const td_daemon *d;
	atomic_bool stop;
	atomic_long created;  /* tasks the loader created */
	atomic_long connects; /* operator sessions opened */
	atomic_int errors;
	char error[256];
} load;

static void load_error(load *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void load_error(load *l, const char *fmt, ...)
{
	if (atomic_fetch_add(&l->errors, 1) == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(l->error, sizeof l->error, fmt, ap);
		va_end(ap);
	}
}

/* Creates LOAD_BATCH block tasks per call until stopped. No cmocka calls
 * off the main thread: failures are counted and reported by the test. */
static void *loader_main(void *arg)
{
	load *l = arg;
	ap_client *c = NULL;
	char err[256];
	if (ap_client_open(l->d->admin_target, NULL, &c, err, sizeof err) != 0) {
		load_error(l, "loader: open: %s", err);
		return NULL;
	}
	Aggregator__BlockTrigger__Config cfg = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger block = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__TaskTrigger trigger = AGGREGATOR__TASK_TRIGGER__INIT;
	cfg.interval = 2;
	block.config = &cfg;
	trigger.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	trigger.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	trigger.block = &block;
	Aggregator__NewTask tasks[LOAD_BATCH], *ptrs[LOAD_BATCH];
	char ids[LOAD_BATCH][32];
	while (!atomic_load(&l->stop) && atomic_load(&l->created) < LOAD_MAX) {
		long first = atomic_load(&l->created);
		for (int i = 0; i < LOAD_BATCH; i++) {
			aggregator__new_task__init(&tasks[i]);
			snprintf(ids[i], sizeof ids[i], "load-%06ld", first + i);
			tasks[i].id = ids[i];
			tasks[i].trigger = &trigger;
			ptrs[i] = &tasks[i];
		}
		Aggregator__CreateTasksReq req = AGGREGATOR__CREATE_TASKS_REQ__INIT;
		Aggregator__CreateTasksResp *resp = NULL;
		ap_rpc_status st = { 0 };
		req.n_tasks = LOAD_BATCH;
		req.tasks = ptrs;
		int rc = ap_client_create_tasks(c, &req, &resp, NULL, &st);
		ap_client_free(resp);
		if (rc != 0 || st.code != AP_RPC_OK) {
			load_error(l, "loader: CreateTasks: %s %s %s", ap_strerror(rc),
				   ap_rpc_code_name(st.code), st.details);
			break;
		}
		atomic_fetch_add(&l->created, LOAD_BATCH);
		it_sleep_ms(5);
	}
	ap_client_close(c);
	return NULL;
}

/* Operators connecting, taking tasks for a moment, and leaving: each
 * cycle opens a channel and a stream for the next of LOAD_OPERATORS
 * addresses, reads for ~100 ms and cancels (as a crash would). Two are
 * kept open at any time so that tasks keep moving between owners. */
static void *flapper_main(void *arg)
{
	load *l = arg;
	ap_client *clients[2] = { 0 };
	ap_stream *streams[2] = { 0 };
	int64_t clock = 1;
	for (long i = 0; !atomic_load(&l->stop); i++) {
		int slot = (int)(i % 2);
		ap_stream_close(streams[slot]);
		ap_client_close(clients[slot]);
		streams[slot] = NULL;
		clients[slot] = NULL;
		char addr[43], err[256];
		it_address(100 + (int)(i % LOAD_OPERATORS), addr);
		if (ap_client_open(l->d->target, NULL, &clients[slot], err, sizeof err) != 0) {
			load_error(l, "flapper: open: %s", err);
			break;
		}
		Aggregator__SyncMessagesReq req = it_sync_req(addr, clock++);
		if (ap_stream_open(clients[slot], &req, NULL, TD_WAIT_MS, &streams[slot]) != 0) {
			load_error(l, "flapper: the stream of %s did not open", addr);
			break;
		}
		atomic_fetch_add(&l->connects, 1);
		int64_t until = ap_clock_mono_ms() + 100;
		while (ap_clock_mono_ms() < until) {
			Aggregator__SyncMessagesResp *m = NULL;
			ap_rpc_status st;
			int r = ap_stream_next(streams[slot], 20, &m, &st);
			ap_client_free(m);
			if (r == AP_STREAM_END)
				break;
		}
	}
	for (int s = 0; s < 2; s++) {
		ap_stream_close(streams[s]);
		ap_client_close(clients[s]);
	}
	return NULL;
}

static void test_status_under_load(void **state)
{
	td_daemon *d = *state = td_create(&(td_options){ .stabilization_ms = 50 });
	pthread_t loader, flapper;
	load l = { .d = d };
	pr_status prev = { 0 }, s;
	pr_result r;

	td_start(d);
	assert_int_equal(pthread_create(&loader, NULL, loader_main, &l), 0);
	assert_int_equal(pthread_create(&flapper, NULL, flapper_main, &l), 0);
	int64_t deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	while ((atomic_load(&l.created) < 100 || atomic_load(&l.connects) < 2) &&
	       ap_clock_mono_ms() < deadline && !atomic_load(&l.errors))
		it_sleep_ms(5);

	long created_before = atomic_load(&l.created);
	long connects_before = atomic_load(&l.connects);
	int runs = 8;
	for (int i = 0; i < runs; i++) {
		pr_ap(&r, "--config", d->conf_path, "status", "--json", NULL);
		EXPECT_CODE(&r, 0, "ap status --json under load");
		if (!pr_parse_status(r.out, &s))
			fail_msg("run %d: ap status --json did not parse", i);
		fprintf(stderr, "status run %d (%lld ms): total %ld, orphaned %ld, owned %ld, "
			"%ld operators; the loader had created %ld\n",
			i, (long long)r.ms, s.total, s.orphaned, s.owned, s.operators,
			atomic_load(&l.created));
		pr_free(&r);
		assert_true(s.total >= prev.total);
		/* The loader counts a batch after its call returns. */
		assert_true(s.total <= atomic_load(&l.created) + LOAD_BATCH);
		assert_int_equal(s.disabled, 0);
		assert_true(s.operators >= prev.operators);
		prev = s;
	}
	pr_ap(&r, "--config", d->conf_path, "status", NULL);
	EXPECT_CODE(&r, 0, "ap status under load");
	pr_free(&r);
	long created_during = atomic_load(&l.created) - created_before;
	long connects_during = atomic_load(&l.connects) - connects_before;

	atomic_store(&l.stop, true);
	pthread_join(loader, NULL);
	pthread_join(flapper, NULL);
	if (atomic_load(&l.errors))
		fail_msg("the load failed: %s", l.error);
	fprintf(stderr, "during the status runs: %ld tasks created, %ld operator sessions\n",
		created_during, connects_during);
	/* The runs overlapped the load (unless the loader had finished). */
	assert_true(created_during > 0 || atomic_load(&l.created) >= LOAD_MAX);
	assert_true(connects_during > 0);

	/* Quiet again: with every operator gone, all the tasks end orphaned,
	 * and status agrees with ListTasks. */
	long total = atomic_load(&l.created);
	it_task *tasks = NULL;
	deadline = ap_clock_mono_ms() + TD_WAIT_MS;
	for (;;) {
		size_t n = it_list_tasks(d->admin, &tasks), owned = 0;
		for (size_t i = 0; i < n; i++)
			owned += tasks[i].owner[0] != '\0';
		free(tasks);
		assert_int_equal(n, (size_t)total);
		if (owned == 0)
			break;
		if (ap_clock_mono_ms() > deadline)
			fail_msg("%zu tasks still owned after every operator left", owned);
		it_sleep_ms(20);
	}
	pr_ap(&r, "--config", d->conf_path, "status", "--json", NULL);
	EXPECT_CODE(&r, 0, "ap status --json after the load");
	assert_true(pr_parse_status(r.out, &s));
	pr_free(&r);
	assert_int_equal(s.total, total);
	assert_int_equal(s.enabled, total);
	assert_int_equal(s.orphaned, total);
	assert_int_equal(s.owned, 0);
	long connects = atomic_load(&l.connects);
	assert_int_equal(s.operators, connects < LOAD_OPERATORS ? connects : LOAD_OPERATORS);

	/* --max-orphans: 3 over the bound (the report is printed anyway), 0 at it. */
	char bound[32];
	pr_ap(&r, "--config", d->conf_path, "status", "--max-orphans", "0", NULL);
	EXPECT_CODE(&r, 3, "ap status --max-orphans 0");
	assert_true(strlen(r.out) > 0);
	pr_free(&r);
	snprintf(bound, sizeof bound, "%ld", total);
	pr_ap(&r, "--config", d->conf_path, "status", "--json", "--max-orphans", bound, NULL);
	EXPECT_CODE(&r, 0, "ap status --max-orphans TOTAL");
	pr_free(&r);
	pr_ap(&r, "--config", d->conf_path, "status", "--frob", NULL);
	EXPECT_CODE(&r, 2, "ap status --frob");
	pr_free(&r);

	td_stop_clean(d);
	/* And with the daemon stopped, the same totals. */
	pr_ap(&r, "--config", d->conf_path, "status", "--json", NULL);
	EXPECT_CODE(&r, 0, "ap status --json, daemon stopped");
	assert_true(pr_parse_status(r.out, &s));
	pr_free(&r);
	assert_int_equal(s.total, total);
	d->passed = true;
}

/* ---- ap status on a database that does not exist -------------------------- */

static size_t dir_entries(const char *path)
{
	DIR *dir = opendir(path);
	struct dirent *e;
	size_t n = 0;
	assert_non_null(dir);
	while ((e = readdir(dir)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(dir);
	return n;
}

static void test_status_missing_db(void **state)
{
	(void)state;
	char dir[] = "/tmp/ap-it-status-XXXXXX", missing[128], empty[128], conf[128];
	struct stat sb;
	pr_result r;

	assert_non_null(mkdtemp(dir));
	snprintf(missing, sizeof missing, "%s/nodb", dir);
	snprintf(empty, sizeof empty, "%s/empty", dir);
	snprintf(conf, sizeof conf, "%s/aggregator.conf", dir);

	/* --db naming nothing: exit 1, a message naming it, nothing made. */
	pr_ap(&r, "status", "--db", missing, NULL);
	EXPECT_CODE(&r, 1, "ap status --db MISSING");
	assert_string_equal(r.out, "");
	expect_contains(&r, r.err, missing, "ap status --db MISSING");
	pr_free(&r);
	pr_ap(&r, "status", "--json", "--db", missing, NULL);
	EXPECT_CODE(&r, 1, "ap status --json --db MISSING");
	assert_string_equal(r.out, "");
	pr_free(&r);
	assert_int_equal(stat(missing, &sb), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(dir_entries(dir), 0);

	/* An empty directory is no database either, and stays empty. */
	assert_int_equal(mkdir(empty, 0700), 0);
	pr_ap(&r, "status", "--db", empty, NULL);
	EXPECT_CODE(&r, 1, "ap status --db EMPTY");
	pr_free(&r);
	assert_int_equal(dir_entries(empty), 0);

	/* The database named by the config's storage.dir. */
	FILE *f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f, "storage = { dir = \"%s\"; };\n", missing);
	assert_int_equal(fclose(f), 0);
	pr_ap(&r, "--config", conf, "status", NULL);
	EXPECT_CODE(&r, 1, "ap status (config's storage.dir missing)");
	expect_contains(&r, r.err, missing, "ap status (config's storage.dir missing)");
	pr_free(&r);
	assert_int_equal(stat(missing, &sb), -1);
	assert_int_equal(dir_entries(dir), 2); /* empty/ and the conf */

	td_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_task_create_list, teardown),
		cmocka_unit_test_teardown(test_task_state_ops, teardown),
		cmocka_unit_test(test_task_usage),
		cmocka_unit_test_teardown(test_task_unreachable, teardown),
		cmocka_unit_test_teardown(test_status_under_load, teardown),
		cmocka_unit_test(test_status_missing_db),
	};
	signal(SIGPIPE, SIG_IGN);
	ap_client_init();
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	ap_client_shutdown();
	return failed;
}
