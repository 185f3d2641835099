/* Unit tests for the status collector (src/status.c) and `ap status`
 * (src/cli/status.c).
 *
 * Each test gets its own mkdtemp directory; the BerkeleyDB home is the
 * subdirectory "db", written with the store API directly (as the daemon
 * would leave it): tasks in every status, manual ones, undecodable ones,
 * assignments including stale ones, operators connected, disconnected and
 * never connected. The collector's counts are checked one by one; the
 * built binary ($AP_BUILDDIR/ap, which `make check` builds) is run for the
 * human output, --json (parsed by /usr/bin/python3 with exact key sets and
 * value types), the exit codes and the missing database. A forked writer
 * process holds the store open and commits while the reader reads.
 * Children never use cmocka asserts: they report through their exit
 * status and pipes. A watchdog alarm turns a hang into a failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ap/cli.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/record.h"
#include "ap/status.h"
#include "ap/store.h"
#include "tmpdir.h"
#include "watchdog.h"

#define WATCHDOG_S 180
#define PYTHON "/usr/bin/python3"

#define OP_A "0x1111111111111111111111111111111111111111"
#define OP_B_STORED "0xBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
#define OP_B "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define OP_C "0xcccccccccccccccccccccccccccccccccccccccc" /* no record */
#define OP_D "0xdddddddddddddddddddddddddddddddddddddddd" /* never connected */

typedef struct fixture {
	char dir[64];       /* mkdtemp directory */
	char home[128];     /* dir/db */
	char ap[PATH_MAX];  /* the built binary, "" when not there */
} fixture;

static int setup(void **state)
{
	fixture *fx = calloc(1, sizeof *fx);
	if (fx == NULL)
		return -1;
	/* /tmp, not $TMPDIR: the paths the tests build from fx->dir are
	 * sized for a short directory name. */
	if (tmpdir_create(fx->dir, sizeof fx->dir, "/tmp", "status") != 0) {
		free(fx);
		return -1;
	}
	snprintf(fx->home, sizeof fx->home, "%s/db", fx->dir);
	const char *b = getenv("AP_BUILDDIR");
	snprintf(fx->ap, sizeof fx->ap, "%s/ap", b && b[0] ? b : ".");
	if (access(fx->ap, X_OK) != 0)
		fx->ap[0] = '\0';
	ap_log_set_level(AP_LOG_WARN);
	watchdog_arm("test_status", WATCHDOG_S);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture *fx = *state;
	watchdog_disarm();
	ap_log_set_level(AP_LOG_INFO);
	int rc = tmpdir_remove(fx->dir);
	free(fx);
	return rc;
}

/* ---- building a database ------------------------------------------------ */

typedef struct put_arg {
	ap_store_db db;
	const char *key;
	const void *val;
	size_t len;
} put_arg;

static int put_fn(ap_store_txn *txn, void *arg)
{
	const put_arg *p = arg;
	return ap_store_put(txn, p->db, p->key, strlen(p->key), p->val, p->len);
}

static int put_raw(ap_store *st, ap_store_db db, const char *key,
		   const void *val, size_t len)
{
	put_arg p = { db, key, val, len };
	return ap_store_run(st, 0, put_fn, &p);
}

static int put_msg(ap_store *st, ap_store_db db, const char *key,
		   const ProtobufCMessage *m)
{
	uint8_t *buf;
	size_t len;
	int rc = ap_record_pack(m, &buf, &len);
	if (rc != 0)
		return rc;
	rc = put_raw(st, db, key, buf, len);
	free(buf);
	return rc;
}

typedef enum { K_NONE, K_MANUAL, K_FIXED, K_CRON, K_BLOCK, K_EVENT } kind;

/* Pack a task record with a valid trigger of the given kind (K_NONE: no
 * kind at all, an invalid trigger). No asserts: children use it too. */
static int put_task(ap_store *st, const char *id, int status, kind k)
{
	Aggregator__ManualTrigger manual = AGGREGATOR__MANUAL_TRIGGER__INIT;
	Aggregator__FixedTimeTrigger__Config fc =
		AGGREGATOR__FIXED_TIME_TRIGGER__CONFIG__INIT;
	Aggregator__FixedTimeTrigger fixed = AGGREGATOR__FIXED_TIME_TRIGGER__INIT;
	Aggregator__CronTrigger__Config cc = AGGREGATOR__CRON_TRIGGER__CONFIG__INIT;
	Aggregator__CronTrigger cron = AGGREGATOR__CRON_TRIGGER__INIT;
	Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger block = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__EventTrigger__Query q = AGGREGATOR__EVENT_TRIGGER__QUERY__INIT;
	Aggregator__EventTrigger__Query *qs[1] = { &q };
	Aggregator__EventTrigger__Config ec = AGGREGATOR__EVENT_TRIGGER__CONFIG__INIT;
	Aggregator__EventTrigger event = AGGREGATOR__EVENT_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	int64_t epochs[1] = { 1700000000000 };
	char *schedules[1] = { (char *)"*/5 * * * *" };

	tr.name = (char *)id;
	switch (k) {
	case K_NONE:
		break;
	case K_MANUAL:
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL;
		tr.manual = &manual;
		break;
	case K_FIXED:
		fc.n_epochs = 1;
		fc.epochs = epochs;
		fixed.config = &fc;
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME;
		tr.fixed_time = &fixed;
		break;
	case K_CRON:
		cc.n_schedules = 1;
		cc.schedules = schedules;
		cron.config = &cc;
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON;
		tr.cron = &cron;
		break;
	case K_BLOCK:
		bc.interval = 10;
		bc.chain_id = 1;
		block.config = &bc;
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
		tr.block = &block;
		break;
	case K_EVENT:
		ec.n_queries = 1;
		ec.queries = qs;
		event.config = &ec;
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_EVENT;
		tr.event = &event;
		break;
	}
	Apstore__TaskRecord r = APSTORE__TASK_RECORD__INIT;
	r.id = (char *)id;
	r.name = (char *)id;
	r.trigger = &tr;
	r.status = (Apstore__TaskStatus)status;
	r.created_at = 1700000000000;
	return put_msg(st, AP_DB_TASKS, id, &r.base);
}

static int put_assignment(ap_store *st, const char *id, const char *owner)
{
	Apstore__AssignmentRecord r = APSTORE__ASSIGNMENT_RECORD__INIT;
	r.owner = (char *)owner;
	r.generation = 7;
	r.assigned_at = 1700000000000;
	return put_msg(st, AP_DB_ASSIGNMENTS, id, &r.base);
}

static int put_operator(ap_store *st, const char *address, bool connected,
			int64_t last_connect, int64_t last_disconnect)
{
	Apstore__OperatorRecord r = APSTORE__OPERATOR_RECORD__INIT;
	r.address = (char *)address;
	r.connected = connected;
	r.last_connect_ms = last_connect;
	r.last_disconnect_ms = last_disconnect;
	r.connects = 3;
	return put_msg(st, AP_DB_OPERATORS, address, &r.base);
}

static ap_store *open_writer(const char *home)
{
	ap_store_options opt = { .dir = home,
				 .durability = AP_DURABILITY_WRITE_NOSYNC };
	ap_store *st = NULL;
	char err[256] = "";
	int rc = ap_store_open(&st, &opt, err, sizeof err);
	if (rc != 0)
		print_error("ap_store_open(%s): %s: %s\n", home, ap_strerror(rc),
			    err);
	assert_int_equal(rc, 0);
	return st;
}

/* The fixture database; the expected numbers are spelled out in
 * check_fixture_report. */
static void build_fixture(const char *home)
{
	ap_store *st = open_writer(home);
	enum { EN = APSTORE__TASK_STATUS__TASK_ENABLED,
	       DIS = APSTORE__TASK_STATUS__TASK_DISABLED,
	       DONE = APSTORE__TASK_STATUS__TASK_COMPLETED,
	       FAIL = APSTORE__TASK_STATUS__TASK_FAILED };
	/* 8 enabled: 7 assignable + 1 manual */
	assert_int_equal(put_task(st, "t-en-1", EN, K_BLOCK), 0);
	assert_int_equal(put_task(st, "t-en-2", EN, K_CRON), 0);
	assert_int_equal(put_task(st, "t-en-3", EN, K_EVENT), 0);
	assert_int_equal(put_task(st, "t-en-4", EN, K_FIXED), 0);
	assert_int_equal(put_task(st, "t-en-5", EN, K_BLOCK), 0);
	assert_int_equal(put_task(st, "t-en-6", EN, K_BLOCK), 0);
	assert_int_equal(put_task(st, "t-en-7", EN, K_CRON), 0);
	assert_int_equal(put_task(st, "t-man", EN, K_MANUAL), 0);
	/* 2 disabled, 1 completed */
	assert_int_equal(put_task(st, "t-man-off", DIS, K_MANUAL), 0);
	assert_int_equal(put_task(st, "t-dis", DIS, K_BLOCK), 0);
	assert_int_equal(put_task(st, "t-done", DONE, K_CRON), 0);
	/* 5 failed: stored as failed, undecodable body, unknown record
	 * version, invalid trigger, unknown status value */
	assert_int_equal(put_task(st, "t-fail", FAIL, K_BLOCK), 0);
	assert_int_equal(put_raw(st, AP_DB_TASKS, "t-bad",
				 "\x01\xff\xff\xff\xff", 5), 0);
	assert_int_equal(put_raw(st, AP_DB_TASKS, "t-ver", "\x09\x0a\x01x", 4),
			 0);
	assert_int_equal(put_task(st, "t-badtrig", EN, K_NONE), 0);
	assert_int_equal(put_task(st, "t-badstatus", 7, K_BLOCK), 0);

	/* Counted: A owns t-en-1 and t-en-7, B (stored upper-case) t-en-2,
	 * C (no operator record) t-en-6. */
	assert_int_equal(put_assignment(st, "t-en-1", OP_A), 0);
	assert_int_equal(put_assignment(st, "t-en-7", OP_A), 0);
	assert_int_equal(put_assignment(st, "t-en-2", OP_B_STORED), 0);
	assert_int_equal(put_assignment(st, "t-en-6", OP_C), 0);
	/* Stale, ignored: an undecodable record and an owner that is no
	 * address (those tasks stay orphaned), a manual task, a disabled
	 * task, a failed task, a task that is gone. t-en-3 has none. */
	assert_int_equal(put_raw(st, AP_DB_ASSIGNMENTS, "t-en-4", "\x01\xff", 2),
			 0);
	assert_int_equal(put_assignment(st, "t-en-5", "not-an-address"), 0);
	assert_int_equal(put_assignment(st, "t-man", OP_A), 0);
	assert_int_equal(put_assignment(st, "t-dis", OP_A), 0);
	assert_int_equal(put_assignment(st, "t-bad", OP_A), 0);
	assert_int_equal(put_assignment(st, "t-gone", OP_D), 0);

	/* Operators: A connected (reconnected after a disconnect), B
	 * disconnected, D never connected; two unusable records skipped. */
	assert_int_equal(put_operator(st, OP_A, true, 1700000123456,
				      1700000000999), 0);
	assert_int_equal(put_operator(st, OP_B_STORED, false, 1690000000000,
				      1700000000000), 0);
	assert_int_equal(put_operator(st, OP_D, false, 0, 0), 0);
	assert_int_equal(put_raw(st, AP_DB_OPERATORS,
				 "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
				 "\x01\xff\xff", 3), 0);
	assert_int_equal(put_operator(st, "junk", true, 1, 1), 0);
	ap_store_close(st);
}

static void check_fixture_report(const ap_status_report *r, const char *home)
{
	assert_string_equal(r->database, home);
	assert_int_equal(r->tasks.total, 16);
	assert_int_equal(r->tasks.enabled, 8);
	assert_int_equal(r->tasks.disabled, 2);
	assert_int_equal(r->tasks.completed, 1);
	assert_int_equal(r->tasks.failed, 5);
	assert_int_equal(r->manual, 1);
	assert_int_equal(r->owned, 4);
	assert_int_equal(r->orphaned, 3);
	assert_int_equal(r->stale_assignments, 6);
	assert_int_equal(r->tasks.enabled, r->manual + r->owned + r->orphaned);

	assert_int_equal(r->n_owners, 3);
	assert_string_equal(r->owners[0].address, OP_A);
	assert_int_equal(r->owners[0].tasks, 2);
	assert_true(r->owners[0].known);
	assert_string_equal(r->owners[1].address, OP_B);
	assert_int_equal(r->owners[1].tasks, 1);
	assert_true(r->owners[1].known);
	assert_string_equal(r->owners[2].address, OP_C);
	assert_int_equal(r->owners[2].tasks, 1);
	assert_false(r->owners[2].known);

	assert_int_equal(r->n_operators, 3);
	assert_int_equal(r->connected, 1);
	const ap_status_operator *a = &r->operators[0], *b = &r->operators[1],
				 *d = &r->operators[2];
	assert_string_equal(a->address, OP_A);
	assert_true(a->connected);
	assert_int_equal(a->last_connect_ms, 1700000123456);
	assert_int_equal(a->last_disconnect_ms, 1700000000999);
	assert_int_equal(a->owned_tasks, 2);
	assert_string_equal(b->address, OP_B);
	assert_false(b->connected);
	assert_int_equal(b->last_connect_ms, 1690000000000);
	assert_int_equal(b->last_disconnect_ms, 1700000000000);
	assert_int_equal(b->owned_tasks, 1);
	assert_string_equal(d->address, OP_D);
	assert_false(d->connected);
	assert_int_equal(d->last_connect_ms, 0);
	assert_int_equal(d->last_disconnect_ms, 0);
	assert_int_equal(d->owned_tasks, 0);
	assert_null(r->task_list);
	assert_int_equal(r->n_task_list, 0);
}

/* ---- running programs --------------------------------------------------- */

/* Run argv (argv[0] is the program) in `cwd` (NULL: here), stdout and
 * stderr into out and err. Returns the exit status. */
static int run(fixture *fx, const char *cwd, char *const argv[], char *out,
	       size_t outlen, char *err, size_t errlen)
{
	char out_path[128], err_path[128];
	snprintf(out_path, sizeof out_path, "%s/run.out", fx->dir);
	snprintf(err_path, sizeof err_path, "%s/run.err", fx->dir);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(out_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
		int e = open(err_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(127);
		if (cwd != NULL && chdir(cwd) != 0)
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	assert_true(WIFEXITED(status));
	if (out != NULL)
		tmpdir_read(out_path, out, outlen);
	if (err != NULL)
		tmpdir_read(err_path, err, errlen);
	return WEXITSTATUS(status);
}

#define OUT_MAX (64 * 1024)
static char out[OUT_MAX], errs[OUT_MAX];

/* `ap ARGS...` (NULL-terminated) in cwd. */
static int run_ap(fixture *fx, const char *cwd, ...)
{
	char *argv[16];
	int n = 0;
	argv[n++] = fx->ap;
	va_list ap;
	va_start(ap, cwd);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL) {
		assert_true(n < 15);
		argv[n++] = (char *)a;
	}
	va_end(ap);
	argv[n] = NULL;
	return run(fx, cwd, argv, out, sizeof out, errs, sizeof errs);
}

static bool need_binary(fixture *fx)
{
	if (fx->ap[0] != '\0' && access(PYTHON, X_OK) == 0)
		return true;
	print_message("skipped: no ap binary or %s (run through make check)\n",
		      PYTHON);
	return false;
}

/* Checks `json_path` holds exactly one JSON object on one line with the
 * keys and value types of SPEC section 8 and equal to `expected` (JSON
 * text). Python's == would take true for 1, hence the type checks. */
static const char json_check[] =
	"import json, sys\n"
	"raw = open(sys.argv[1], encoding='utf-8').read()\n"
	"assert raw.endswith('\\n') and raw.count('\\n') == 1, repr(raw)\n"
	"d = json.loads(raw)\n"
	"e = json.loads(sys.argv[2])\n"
	"assert type(d) is dict\n"
	"assert set(d) == {'database', 'tasks', 'orphaned', 'owners', 'operators'}, d.keys()\n"
	"assert set(d['tasks']) == {'total', 'enabled', 'disabled', 'completed', 'failed'}\n"
	"for v in list(d['tasks'].values()) + list(d['owners'].values()) + [d['orphaned']]:\n"
	"    assert type(v) is int and v >= 0, v\n"
	"assert type(d['database']) is str and type(d['operators']) is list\n"
	"for o in d['operators']:\n"
	"    assert set(o) == {'address', 'connected', 'last_connect_ms', 'last_disconnect_ms', 'owned_tasks'}, o\n"
	"    assert type(o['address']) is str and type(o['connected']) is bool\n"
	"    for k in ('last_connect_ms', 'last_disconnect_ms', 'owned_tasks'):\n"
	"        assert type(o[k]) is int and o[k] >= 0, o\n"
	"assert d == e, '\\n%r\\n!=\\n%r' % (d, e)\n";

static int check_json(fixture *fx, const char *text, const char *expected)
{
	char path[128];
	snprintf(path, sizeof path, "%s/status.json", fx->dir);
	tmpdir_write(path, text, 0666);
	char *argv[] = { (char *)PYTHON, (char *)"-c", (char *)json_check, path,
			 (char *)expected, NULL };
	char pout[4096], perr[8192];
	int rc = run(fx, NULL, argv, pout, sizeof pout, perr, sizeof perr);
	if (rc != 0)
		print_error("json check failed: %s\n%s\n", perr, text);
	return rc;
}

/* The fixture's report as JSON, for python's comparison; the database
 * string comes from the caller (already JSON-escaped). */
static void fixture_json(char *buf, size_t len, const char *db_json)
{
	snprintf(buf, len,
		 "{\"database\": %s,"
		 " \"tasks\": {\"total\": 16, \"enabled\": 8, \"disabled\": 2,"
		 " \"completed\": 1, \"failed\": 5},"
		 " \"orphaned\": 3,"
		 " \"owners\": {\"" OP_A "\": 2, \"" OP_B "\": 1, \"" OP_C "\": 1},"
		 " \"operators\": ["
		 "{\"address\": \"" OP_A "\", \"connected\": true,"
		 " \"last_connect_ms\": 1700000123456,"
		 " \"last_disconnect_ms\": 1700000000999, \"owned_tasks\": 2},"
		 "{\"address\": \"" OP_B "\", \"connected\": false,"
		 " \"last_connect_ms\": 1690000000000,"
		 " \"last_disconnect_ms\": 1700000000000, \"owned_tasks\": 1},"
		 "{\"address\": \"" OP_D "\", \"connected\": false,"
		 " \"last_connect_ms\": 0, \"last_disconnect_ms\": 0,"
		 " \"owned_tasks\": 0}]}",
		 db_json);
}

static const char fixture_table[] =
	"tasks      16 total: 8 enabled, 2 disabled, 1 completed, 5 failed\n"
	"owned      4 tasks by 3 operators\n"
	"orphaned   3\n"
	"manual     1 enabled (never owned)\n"
	"operators  3 known, 1 connected\n"
	"\n"
	"ADDRESS                                     CONN    TASKS  LAST CONNECT (UTC)\n"
	"                                                           LAST DISCONNECT\n"
	OP_A "  yes         2  2023-11-14T22:15:23Z\n"
	"                                                           2023-11-14T22:13:20Z\n"
	OP_B "  no          1  2023-07-22T04:26:40Z\n"
	"                                                           2023-11-14T22:13:20Z\n"
	OP_D "  no          0  -\n"
	"                                                           -\n"
	OP_C "  ?           1  -\n"
	"                                                           -\n";

static char *print_to_string(int (*print)(FILE *, const ap_status_report *),
			     const ap_status_report *r)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(print(f, r), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* ---- the collector ------------------------------------------------------ */

static void test_collect_counts(void **state)
{
	fixture *fx = *state;
	build_fixture(fx->home);
	ap_status_report r;
	char err[512] = "";
	int rc = ap_status_collect(fx->home, &r, err, sizeof err);
	if (rc != 0)
		print_error("collect: %s: %s\n", ap_strerror(rc), err);
	assert_int_equal(rc, 0);
	check_fixture_report(&r, fx->home);
	ap_status_free(&r);
	assert_null(r.database);
	assert_int_equal(r.n_operators, 0);
	ap_status_free(&r); /* twice is harmless */
	ap_status_free(NULL);
}

static const ap_status_task *find_task(const ap_status_report *r,
				       const char *id)
{
	for (size_t i = 0; i < r->n_task_list; i++)
		if (strcmp(r->task_list[i].id, id) == 0)
			return &r->task_list[i];
	fail_msg("task %s not in the list", id);
	return NULL;
}

static void test_collect_task_list(void **state)
{
	fixture *fx = *state;
	build_fixture(fx->home);
	ap_store_options opt = { .dir = fx->home, .readonly = true };
	ap_store *st = NULL;
	char err[512] = "";
	assert_int_equal(ap_store_open(&st, &opt, err, sizeof err), 0);
	ap_status_report r;
	assert_int_equal(ap_status_collect_store(st, AP_STATUS_TASKS, &r, err,
						 sizeof err), 0);
	ap_store_close(st);

	assert_int_equal(r.n_task_list, 16);
	for (size_t i = 1; i < r.n_task_list; i++)
		assert_true(strcmp(r.task_list[i - 1].id, r.task_list[i].id) < 0);
	const ap_status_task *t = find_task(&r, "t-en-1");
	assert_int_equal(t->status, APSTORE__TASK_STATUS__TASK_ENABLED);
	assert_false(t->manual);
	assert_string_equal(t->owner, OP_A);
	assert_string_equal(find_task(&r, "t-en-2")->owner, OP_B);
	assert_string_equal(find_task(&r, "t-en-3")->owner, "");
	assert_string_equal(find_task(&r, "t-en-4")->owner, "");
	assert_string_equal(find_task(&r, "t-en-5")->owner, "");
	assert_string_equal(find_task(&r, "t-en-6")->owner, OP_C);
	t = find_task(&r, "t-man");
	assert_true(t->manual);
	assert_int_equal(t->status, APSTORE__TASK_STATUS__TASK_ENABLED);
	assert_string_equal(t->owner, "");
	t = find_task(&r, "t-dis");
	assert_int_equal(t->status, APSTORE__TASK_STATUS__TASK_DISABLED);
	assert_string_equal(t->owner, "");
	assert_int_equal(find_task(&r, "t-done")->status,
			 APSTORE__TASK_STATUS__TASK_COMPLETED);
	const char *failed[] = { "t-fail", "t-bad", "t-ver", "t-badtrig",
				 "t-badstatus" };
	for (size_t i = 0; i < 5; i++) {
		t = find_task(&r, failed[i]);
		assert_int_equal(t->status, APSTORE__TASK_STATUS__TASK_FAILED);
		assert_string_equal(t->owner, "");
	}
	/* The counts are the same as without the list. */
	ap_status_task *list = r.task_list;
	size_t n = r.n_task_list;
	r.task_list = NULL;
	r.n_task_list = 0;
	check_fixture_report(&r, fx->home);
	r.task_list = list;
	r.n_task_list = n;
	ap_status_free(&r);
}

static void test_collect_missing(void **state)
{
	fixture *fx = *state;
	ap_status_report r;
	char err[512] = "";
	/* No directory: not found, not created. */
	assert_int_equal(ap_status_collect(fx->home, &r, err, sizeof err),
			 AP_ENOTFOUND);
	assert_null(r.database);
	struct stat sb;
	assert_int_equal(stat(fx->home, &sb), -1);
	/* An empty directory: not found, stays empty. */
	assert_int_equal(mkdir(fx->home, 0700), 0);
	assert_int_equal(ap_status_collect(fx->home, &r, err, sizeof err),
			 AP_ENOTFOUND);
	assert_int_equal(rmdir(fx->home), 0); /* fails unless empty */
	ap_status_free(&r);
}

static void test_collect_empty_database(void **state)
{
	fixture *fx = *state;
	ap_store_close(open_writer(fx->home));
	ap_status_report r;
	char err[512] = "";
	assert_int_equal(ap_status_collect(fx->home, &r, err, sizeof err), 0);
	assert_int_equal(r.tasks.total, 0);
	assert_int_equal(r.orphaned, 0);
	assert_int_equal(r.n_owners, 0);
	assert_int_equal(r.n_operators, 0);
	char v[64];
	assert_int_equal(ap_status_verdict(&r, v, sizeof v), AP_STATUS_OK);
	assert_string_equal(v, "OK");
	char *text = print_to_string(ap_status_print_text, &r);
	char expected[1024];
	snprintf(expected, sizeof expected,
		 "OK\n"
		 "database   %s\n"
		 "tasks      0 total: 0 enabled, 0 disabled, 0 completed, 0 failed\n"
		 "owned      0 tasks by 0 operators\n"
		 "orphaned   0\n"
		 "manual     0 enabled (never owned)\n"
		 "operators  0 known, 0 connected\n",
		 fx->home);
	assert_string_equal(text, expected);
	free(text);
	char *json = print_to_string(ap_status_print_json, &r);
	snprintf(expected, sizeof expected,
		 "{\"database\":\"%s\",\"tasks\":{\"total\":0,\"enabled\":0,"
		 "\"disabled\":0,\"completed\":0,\"failed\":0},\"orphaned\":0,"
		 "\"owners\":{},\"operators\":[]}\n",
		 fx->home);
	assert_string_equal(json, expected);
	free(json);
	ap_status_free(&r);
}

/* ---- verdict and printers ----------------------------------------------- */

static void test_verdict(void **state)
{
	(void)state;
	ap_status_report r = { 0 };
	char v[64];
	/* Nothing to own, nobody connected: fine. */
	r.tasks.total = r.tasks.enabled = r.manual = 2;
	assert_int_equal(ap_status_verdict(&r, v, sizeof v), AP_STATUS_OK);
	assert_string_equal(v, "OK");
	/* Tasks to own and nobody connected, owners or not. */
	r.owned = 3;
	assert_int_equal(ap_status_verdict(&r, v, sizeof v),
			 AP_STATUS_NO_OPERATORS);
	assert_string_equal(v, "NO OPERATORS");
	r.orphaned = 4;
	assert_int_equal(ap_status_verdict(&r, v, sizeof v),
			 AP_STATUS_NO_OPERATORS);
	assert_string_equal(v, "NO OPERATORS");
	/* Someone connected: orphans degrade. */
	r.connected = 1;
	assert_int_equal(ap_status_verdict(&r, v, sizeof v), AP_STATUS_DEGRADED);
	assert_string_equal(v, "DEGRADED: 4 orphaned tasks");
	r.orphaned = 1;
	assert_int_equal(ap_status_verdict(&r, NULL, 0), AP_STATUS_DEGRADED);
	ap_status_verdict(&r, v, sizeof v);
	assert_string_equal(v, "DEGRADED: 1 orphaned task");
	r.orphaned = 0;
	assert_int_equal(ap_status_verdict(&r, v, sizeof v), AP_STATUS_OK);
	assert_string_equal(v, "OK");
	/* Only orphans, nobody connected. */
	r.owned = 0;
	r.orphaned = 5;
	r.connected = 0;
	assert_int_equal(ap_status_verdict(&r, v, sizeof v),
			 AP_STATUS_NO_OPERATORS);
}

static void test_print_text_fixture(void **state)
{
	fixture *fx = *state;
	build_fixture(fx->home);
	ap_status_report r;
	char err[512] = "";
	assert_int_equal(ap_status_collect(fx->home, &r, err, sizeof err), 0);
	char *text = print_to_string(ap_status_print_text, &r);
	char expected[8192];
	snprintf(expected, sizeof expected,
		 "DEGRADED: 3 orphaned tasks\ndatabase   %s\n%s", fx->home,
		 fixture_table);
	assert_string_equal(text, expected);
	/* Readable in 80 columns. */
	for (char *line = text, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		assert_non_null(nl);
		if (strncmp(line, "database", 8) != 0)
			assert_true(nl - line <= 80);
	}
	free(text);
	ap_status_free(&r);
}

static void test_print_json_escaping(void **state)
{
	(void)state;
	ap_status_report r = { 0 };
	/* quote, backslash, newline, tab, a control byte, DEL, valid UTF-8
	 * (é, €, 😀), then bytes that are not UTF-8, one U+FFFD each: a
	 * lone continuation (1), a truncated sequence (2), an overlong '/'
	 * (2), a surrogate (3). */
	r.database = strdup("a\"b\\c\nd\te\x01" "f\x7f"
			    "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
			    "\x80" "\xe2\x82" "\xc0\xaf" "\xed\xa0\x80" "z");
	assert_non_null(r.database);
	char *json = print_to_string(ap_status_print_json, &r);
	const char *want =
		"{\"database\":\"a\\\"b\\\\c\\nd\\te\\u0001f\x7f"
		"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
		"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffdz\","
		"\"tasks\":{\"total\":0,\"enabled\":0,\"disabled\":0,"
		"\"completed\":0,\"failed\":0},\"orphaned\":0,\"owners\":{},"
		"\"operators\":[]}\n";
	assert_string_equal(json, want);
	free(json);
	ap_status_free(&r);
}

/* ---- the binary ---------------------------------------------------------- */

static void test_binary_outputs(void **state)
{
	fixture *fx = *state;
	if (!need_binary(fx))
		skip();
	build_fixture(fx->home);

	/* Human output: exactly what the printer writes, exit 0. */
	assert_int_equal(run_ap(fx, NULL, "status", "--db", fx->home, NULL), 0);
	char expected[8192];
	snprintf(expected, sizeof expected,
		 "DEGRADED: 3 orphaned tasks\ndatabase   %s\n%s", fx->home,
		 fixture_table);
	assert_string_equal(out, expected);
	assert_string_equal(errs, "");

	/* --json: one object, exact keys, types and values. */
	assert_int_equal(run_ap(fx, NULL, "status", "--json", "--db", fx->home,
				NULL), 0);
	assert_string_equal(errs, "");
	char db_json[256], want[4096];
	snprintf(db_json, sizeof db_json, "\"%s\"", fx->home);
	fixture_json(want, sizeof want, db_json);
	assert_int_equal(check_json(fx, out, want), 0);
	/* Option order and the --opt=value form do not matter. */
	char db_opt[256];
	snprintf(db_opt, sizeof db_opt, "--db=%s", fx->home);
	assert_int_equal(run_ap(fx, NULL, "status", db_opt, "--json", NULL), 0);
	assert_int_equal(check_json(fx, out, want), 0);

	/* The database read through the config (--config, then
	 * conf/aggregator.conf in the working directory). */
	char conf[256], cwd[128];
	snprintf(cwd, sizeof cwd, "%s/work", fx->dir);
	assert_int_equal(mkdir(cwd, 0700), 0);
	snprintf(conf, sizeof conf, "%s/conf", cwd);
	assert_int_equal(mkdir(conf, 0700), 0);
	snprintf(conf, sizeof conf, "%s/conf/aggregator.conf", cwd);
	FILE *f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f, "storage = { dir = \"%s\"; };\n", fx->home);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(run_ap(fx, NULL, "--config", conf, "status", "--json",
				NULL), 0);
	assert_int_equal(check_json(fx, out, want), 0);
	assert_int_equal(run_ap(fx, cwd, "status", "--json", NULL), 0);
	assert_int_equal(check_json(fx, out, want), 0);
	/* --db wins over the config. */
	assert_int_equal(run_ap(fx, cwd, "status", "--json", "--db", "nowhere",
				NULL), 1);
	assert_non_null(strstr(errs, "no database at nowhere"));
}

static void test_binary_database_name_escaped(void **state)
{
	fixture *fx = *state;
	if (!need_binary(fx))
		skip();
	char home[256];
	snprintf(home, sizeof home, "%s/we\"ird\\na\tme\n\xc3\xa9", fx->dir);
	ap_store_close(open_writer(home));
	assert_int_equal(run_ap(fx, NULL, "status", "--json", "--db", home,
				NULL), 0);
	/* Python decodes the string back to the very name. */
	char path[128];
	snprintf(path, sizeof path, "%s/status.json", fx->dir);
	tmpdir_write(path, out, 0666);
	static const char script[] =
		"import json, sys\n"
		"d = json.loads(open(sys.argv[1], encoding='utf-8').read())\n"
		"assert d['database'] == sys.argv[2], (d['database'], sys.argv[2])\n";
	char *argv[] = { (char *)PYTHON, (char *)"-c", (char *)script, path,
			 home, NULL };
	char pout[1024], perr[4096];
	int rc = run(fx, NULL, argv, pout, sizeof pout, perr, sizeof perr);
	if (rc != 0)
		print_error("%s\n%s\n", perr, out);
	assert_int_equal(rc, 0);
	/* The text output prints the name as it is. */
	assert_int_equal(run_ap(fx, NULL, "status", "--db", home, NULL), 0);
	assert_non_null(strstr(out, home));
}

static void test_binary_exit_codes(void **state)
{
	fixture *fx = *state;
	if (!need_binary(fx))
		skip();
	build_fixture(fx->home); /* 3 orphans */
	const char *h = fx->home;

	/* --max-orphans boundaries: exit 3 only when orphans exceed N. */
	assert_int_equal(run_ap(fx, NULL, "status", "--db", h, "--max-orphans",
				"3", NULL), 0);
	assert_int_equal(run_ap(fx, NULL, "status", "--db", h, "--max-orphans",
				"4", NULL), 0);
	assert_int_equal(run_ap(fx, NULL, "status", "--db", h,
				"--max-orphans=18446744073709551615", NULL), 0);
	assert_int_equal(run_ap(fx, NULL, "status", "--db", h, "--max-orphans",
				"2", NULL), 3);
	assert_non_null(strstr(errs, "3 orphaned tasks, more than --max-orphans 2"));
	assert_true(strncmp(out, "DEGRADED: 3 orphaned tasks\n", 27) == 0);
	assert_int_equal(run_ap(fx, NULL, "status", "--db", h,
				"--max-orphans=0", NULL), 3);
	/* The report is still printed, and still valid JSON. */
	assert_int_equal(run_ap(fx, NULL, "status", "--json", "--max-orphans",
				"0", "--db", h, NULL), 3);
	char db_json[256], want[4096];
	snprintf(db_json, sizeof db_json, "\"%s\"", h);
	fixture_json(want, sizeof want, db_json);
	assert_int_equal(check_json(fx, out, want), 0);

	/* Usage errors: exit 2, nothing on stdout. */
	const char *bad_counts[] = { "-1", "+1", " 1", "1x", "", "0x10", "1.0",
				     "18446744073709551616",
				     "99999999999999999999999" };
	for (size_t i = 0; i < sizeof bad_counts / sizeof *bad_counts; i++) {
		assert_int_equal(run_ap(fx, NULL, "status", "--db", h,
					"--max-orphans", bad_counts[i], NULL),
				 2);
		assert_string_equal(out, "");
		assert_non_null(strstr(errs, "usage: ap"));
	}
	assert_int_equal(run_ap(fx, NULL, "status", "--db", h, "--max-orphans",
				NULL), 2);
	assert_int_equal(run_ap(fx, NULL, "status", "--db", NULL), 2);
	assert_int_equal(run_ap(fx, NULL, "status", "--db=", NULL), 2);
	assert_int_equal(run_ap(fx, NULL, "status", "--db", h, "--bogus", NULL),
			 2);
	assert_non_null(strstr(errs, "unknown option '--bogus'"));
	assert_int_equal(run_ap(fx, NULL, "status", "--db", h, "extra", NULL), 2);
	assert_int_equal(run_ap(fx, NULL, "status", "--jsonx", NULL), 2);
	assert_string_equal(out, "");

	/* Help. */
	assert_int_equal(run_ap(fx, NULL, "status", "--help", NULL), 0);
	assert_non_null(strstr(out, "usage: ap [--config FILE] status"));

	/* No operator connected while tasks wait: NO OPERATORS, which is not
	 * an exit code of its own; no orphans here, so --max-orphans 0
	 * passes. */
	char home2[128];
	snprintf(home2, sizeof home2, "%s/db2", fx->dir);
	ap_store *st = open_writer(home2);
	assert_int_equal(put_task(st, "t1", APSTORE__TASK_STATUS__TASK_ENABLED,
				  K_BLOCK), 0);
	assert_int_equal(put_assignment(st, "t1", OP_A), 0);
	assert_int_equal(put_operator(st, OP_A, false, 1700000000000,
				      1700000123456), 0);
	ap_store_close(st);
	assert_int_equal(run_ap(fx, NULL, "status", "--db", home2,
				"--max-orphans", "0", NULL), 0);
	assert_true(strncmp(out, "NO OPERATORS\n", 13) == 0);
	assert_non_null(strstr(out, OP_A "  no          1  2023-11-14T22:13:20Z\n"
					 "                                    "
					 "                       2023-11-14T22:15:23Z\n"));
	assert_int_equal(run_ap(fx, NULL, "status", "--json", "--db", home2,
				NULL), 0);
	snprintf(db_json, sizeof db_json, "\"%s\"", home2);
	snprintf(want, sizeof want,
		 "{\"database\": %s, \"tasks\": {\"total\": 1, \"enabled\": 1,"
		 " \"disabled\": 0, \"completed\": 0, \"failed\": 0},"
		 " \"orphaned\": 0, \"owners\": {\"" OP_A "\": 1},"
		 " \"operators\": [{\"address\": \"" OP_A "\","
		 " \"connected\": false, \"last_connect_ms\": 1700000000000,"
		 " \"last_disconnect_ms\": 1700000123456, \"owned_tasks\": 1}]}",
		 db_json);
	assert_int_equal(check_json(fx, out, want), 0);

	/* A bad config named with --config: a runtime failure. */
	char conf[128];
	snprintf(conf, sizeof conf, "%s/bad.conf", fx->dir);
	tmpdir_write(conf, "storage = { dir = 5; };\n", 0666);
	assert_int_equal(run_ap(fx, NULL, "--config", conf, "status", NULL), 1);
	assert_non_null(strstr(errs, "bad.conf:1"));
}

#define NO_DB_MSG "ap: no database at %s (is storage.dir right? " \
		  "the daemon creates it on first start)\n"

static void test_binary_missing_database(void **state)
{
	fixture *fx = *state;
	if (!need_binary(fx))
		skip();
	struct stat sb;
	char msg[512];

	/* --db naming nothing: exit 1, the directory is not created. */
	for (int json = 0; json < 2; json++) {
		assert_int_equal(run_ap(fx, NULL, "status", "--db", fx->home,
					json ? "--json" : "--max-orphans",
					json ? NULL : "5", NULL), 1);
		snprintf(msg, sizeof msg, NO_DB_MSG, fx->home);
		assert_string_equal(errs, msg);
		assert_string_equal(out, "");
		assert_int_equal(stat(fx->home, &sb), -1);
		assert_int_equal(errno, ENOENT);
	}
	/* An empty directory: exit 1, still empty afterwards. */
	assert_int_equal(mkdir(fx->home, 0700), 0);
	assert_int_equal(run_ap(fx, NULL, "status", "--db", fx->home, NULL), 1);
	assert_string_equal(errs, msg);
	assert_int_equal(rmdir(fx->home), 0);

	/* No config anywhere: the default ./data, not created either. */
	char cwd[128], data[256];
	snprintf(cwd, sizeof cwd, "%s/empty-cwd", fx->dir);
	assert_int_equal(mkdir(cwd, 0700), 0);
	assert_int_equal(run_ap(fx, cwd, "status", NULL), 1);
	snprintf(msg, sizeof msg, NO_DB_MSG, "./data");
	assert_string_equal(errs, msg);
	snprintf(data, sizeof data, "%s/data", cwd);
	assert_int_equal(stat(data, &sb), -1);

	/* A config naming a directory that is not there. */
	char conf[128], missing[128];
	snprintf(missing, sizeof missing, "%s/not/there", fx->dir);
	snprintf(conf, sizeof conf, "%s/ap.conf", fx->dir);
	FILE *f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f, "storage = { dir = \"%s\"; };\n", missing);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(run_ap(fx, NULL, "--config", conf, "status", "--json",
				NULL), 1);
	snprintf(msg, sizeof msg, NO_DB_MSG, missing);
	assert_string_equal(errs, msg);
	snprintf(data, sizeof data, "%s/not", fx->dir);
	assert_int_equal(stat(data, &sb), -1);

	/* Not a directory: unreadable, exit 1 with the reason. */
	assert_int_equal(run_ap(fx, NULL, "status", "--db", conf, NULL), 1);
	assert_non_null(strstr(errs, "not a directory"));
	assert_string_equal(out, "");
}

/* ---- a reader while a writer runs ---------------------------------------- */

typedef struct batch_arg {
	int first, count;
	bool assign; /* give every task an owner in the same transaction */
} batch_arg;

static int batch_fn(ap_store_txn *txn, void *arg)
{
	const batch_arg *b = arg;
	for (int i = b->first; i < b->first + b->count; i++) {
		char id[32];
		snprintf(id, sizeof id, "w%07d", i);
		Aggregator__BlockTrigger__Config bc =
			AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
		Aggregator__BlockTrigger block = AGGREGATOR__BLOCK_TRIGGER__INIT;
		Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
		bc.interval = 5;
		block.config = &bc;
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
		tr.block = &block;
		Apstore__TaskRecord r = APSTORE__TASK_RECORD__INIT;
		r.id = id;
		r.trigger = &tr;
		uint8_t *buf;
		size_t len;
		int rc = ap_record_pack(&r.base, &buf, &len);
		if (rc == 0) {
			rc = ap_store_put(txn, AP_DB_TASKS, id, strlen(id), buf,
					  len);
			free(buf);
		}
		if (rc == 0 && b->assign) {
			Apstore__AssignmentRecord a =
				APSTORE__ASSIGNMENT_RECORD__INIT;
			a.owner = (char *)OP_A;
			if ((rc = ap_record_pack(&a.base, &buf, &len)) == 0) {
				rc = ap_store_put(txn, AP_DB_ASSIGNMENTS, id,
						  strlen(id), buf, len);
				free(buf);
			}
		}
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* The writer child ("the daemon"): keeps the store open. Commands on
 * `cmd`: 'M' commit 10 tasks (5 owned by A, 5 orphans); 'C' commit owned
 * tasks one transaction at a time until the next command arrives, then
 * report how many on `ack` (an int) before handling it; 'Q' close cleanly
 * and exit. Every command is acknowledged with 'R'. */
static void writer_child(const char *home, int cmd, int ack)
{
	ap_store_options opt = { .dir = home,
				 .durability = AP_DURABILITY_WRITE_NOSYNC };
	ap_store *st = NULL;
	char err[256];
	if (ap_store_open(&st, &opt, err, sizeof err) != 0)
		_exit(10);
	if (put_operator(st, OP_A, true, 1700000000000, 0) != 0)
		_exit(11);
	int next = 0;
	char c = 0;
	if (write(ack, "R", 1) != 1)
		_exit(12);
	for (;;) {
		if (read(cmd, &c, 1) != 1)
			_exit(13);
		if (c == 'M') {
			batch_arg own = { next, 5, true }, orphan = { next + 5, 5, false };
			if (ap_store_run(st, 0, batch_fn, &own) != 0 ||
			    ap_store_run(st, 0, batch_fn, &orphan) != 0)
				_exit(14);
			next += 10;
		} else if (c == 'C') {
			if (write(ack, "R", 1) != 1)
				_exit(15);
			int n = 0;
			struct pollfd p = { .fd = cmd, .events = POLLIN };
			/* About 3000 tasks a second, more than the daemon
			 * creates (each create commits synchronously). A
			 * writer that appends keys faster than a scan reads
			 * them keeps the scan going, since the scan visits
			 * keys inserted after its position. */
			while (poll(&p, 1, 1) == 0) {
				batch_arg one = { next, 3, true };
				if (ap_store_run(st, 0, batch_fn, &one) != 0)
					_exit(16);
				next += 3;
				n += 3;
			}
			if (write(ack, &n, sizeof n) != (ssize_t)sizeof n)
				_exit(17);
			continue; /* the command that stopped us is next */
		} else if (c == 'Q') {
			ap_store_close(st);
			_exit(0);
		} else {
			_exit(18);
		}
		if (write(ack, "R", 1) != 1)
			_exit(19);
	}
}

static void expect_ack(int fd)
{
	char c = 0;
	assert_int_equal(read(fd, &c, 1), 1);
	assert_int_equal(c, 'R');
}

static void collect_ok(const char *home, ap_status_report *r)
{
	char err[512] = "";
	int rc = ap_status_collect(home, r, err, sizeof err);
	if (rc != 0)
		print_error("collect: %s: %s\n", ap_strerror(rc), err);
	assert_int_equal(rc, 0);
	assert_int_equal(r->tasks.enabled, r->manual + r->owned + r->orphaned);
}

static void test_reader_with_running_writer(void **state)
{
	fixture *fx = *state;
	int cmd[2], ack[2];
	assert_int_equal(pipe(cmd), 0);
	assert_int_equal(pipe(ack), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(cmd[1]);
		close(ack[0]);
		writer_child(fx->home, cmd[0], ack[1]);
	}
	close(cmd[0]);
	close(ack[1]);
	expect_ack(ack[0]);

	ap_status_report r;
	collect_ok(fx->home, &r);
	assert_int_equal(r.tasks.total, 0);
	assert_int_equal(r.n_operators, 1);
	assert_int_equal(r.connected, 1);
	ap_status_free(&r);

	/* Commits by the running writer are seen. */
	assert_int_equal(write(cmd[1], "M", 1), 1);
	expect_ack(ack[0]);
	collect_ok(fx->home, &r);
	assert_int_equal(r.tasks.total, 10);
	assert_int_equal(r.owned, 5);
	assert_int_equal(r.orphaned, 5);
	assert_int_equal(r.operators[0].owned_tasks, 5);
	ap_status_free(&r);
	assert_int_equal(write(cmd[1], "M", 1), 1);
	expect_ack(ack[0]);
	collect_ok(fx->home, &r);
	assert_int_equal(r.tasks.total, 20);
	assert_int_equal(r.orphaned, 10);
	ap_status_free(&r);
	if (fx->ap[0]) {
		assert_int_equal(run_ap(fx, NULL, "status", "--db", fx->home,
					"--max-orphans", "9", NULL), 3);
		assert_true(strncmp(out, "DEGRADED: 10 orphaned tasks\n", 28) == 0);
	}

	/* The writer commits continuously: every read succeeds, sees a
	 * growing number of tasks, and never counts an owned task as an
	 * orphan (a task and its owner commit together; a task that appears
	 * between the two scans only makes its assignment stale). */
	assert_int_equal(write(cmd[1], "C", 1), 1);
	expect_ack(ack[0]);
	size_t last = 20;
	for (int i = 0; i < 25; i++) {
		collect_ok(fx->home, &r);
		assert_true(r.tasks.total >= last);
		last = r.tasks.total;
		assert_int_equal(r.orphaned, 10);
		assert_int_equal(r.owned, r.tasks.total - 10);
		assert_int_equal(r.operators[0].owned_tasks, r.owned);
		ap_status_free(&r);
		if (fx->ap[0] && i % 5 == 0) {
			assert_int_equal(run_ap(fx, NULL, "status", "--json",
						"--db", fx->home, NULL), 0);
			assert_non_null(strstr(out, "\"orphaned\":10,"));
		}
		usleep(20000);
	}
	assert_true(last > 20); /* the reads did overlap the writes */
	assert_int_equal(write(cmd[1], "Q", 1), 1);
	int n = 0;
	assert_int_equal(read(ack[0], &n, sizeof n), (ssize_t)sizeof n);
	assert_true(n > 0);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(cmd[1]);
	close(ack[0]);
	assert_true(last <= (size_t)(20 + n));

	/* After the writer is gone: everything it committed. */
	collect_ok(fx->home, &r);
	assert_int_equal(r.tasks.total, (size_t)(20 + n));
	assert_int_equal(r.orphaned, 10);
	assert_int_equal(r.stale_assignments, 0);
	ap_status_free(&r);

	/* The reader left the environment as it was: a daemon reopening it
	 * sees a clean shutdown. */
	ap_store *st = open_writer(fx->home);
	assert_false(ap_store_was_unclean(st));
	ap_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_collect_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_collect_task_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_collect_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_collect_empty_database, setup, teardown),
		cmocka_unit_test(test_verdict),
		cmocka_unit_test_setup_teardown(test_print_text_fixture, setup, teardown),
		cmocka_unit_test(test_print_json_escaping),
		cmocka_unit_test_setup_teardown(test_binary_outputs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_binary_database_name_escaped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_binary_exit_codes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_binary_missing_database, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_with_running_writer, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
