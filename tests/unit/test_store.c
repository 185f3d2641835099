/* Unit tests for the store (src/store.c) and the record encoding
 * (src/record.c).
 *
 * Every test gets its own mkdtemp directory; the BerkeleyDB home is the
 * not-yet-existing subdirectory "db" inside it, so the tests also see what
 * the store creates. Crash tests fork a child that writes and then _exits
 * in the middle of a transaction without closing anything, which is what a
 * kill -9 leaves behind; the parent recovers and checks the data. Children
 * never use cmocka asserts: they report through their exit status and a
 * pipe. A watchdog alarm turns a hang into a failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/record.h"
#include "ap/store.h"
#include "tmpdir.h"
#include "watchdog.h"

#define WATCHDOG_S 120

typedef struct fixture {
	char dir[64];  /* mkdtemp directory */
	char home[96]; /* dir/db: the BerkeleyDB home */
} fixture;

static int setup(void **state)
{
	fixture *fx = calloc(1, sizeof *fx);
	if (fx == NULL)
		return -1;
	/* /tmp, not $TMPDIR: the paths the tests build from fx->dir are
	 * sized for a short directory name. */
	if (tmpdir_create(fx->dir, sizeof fx->dir, "/tmp", "store") != 0) {
		free(fx);
		return -1;
	}
	snprintf(fx->home, sizeof fx->home, "%s/db", fx->dir);
	ap_log_set_level(AP_LOG_WARN);
	watchdog_arm("test_store", WATCHDOG_S);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture *fx = *state;
	watchdog_disarm();
	ap_store_set_fault_hook(NULL, NULL);
	ap_log_set_level(AP_LOG_INFO);
	int rc = tmpdir_remove(fx->dir);
	free(fx);
	return rc;
}

/* ---- helpers ------------------------------------------------------------ */

static ap_store *open_store(const char *home, ap_durability d)
{
	ap_store_options opt = { .dir = home, .durability = d };
	ap_store *st = NULL;
	char err[256];
	int rc = ap_store_open(&st, &opt, err, sizeof err);
	if (rc != 0)
		print_error("ap_store_open(%s): %s: %s\n", home, ap_strerror(rc),
			    err);
	assert_int_equal(rc, 0);
	assert_non_null(st);
	return st;
}

static int open_readonly(const char *home, ap_store **st, char *err,
			 size_t errlen)
{
	ap_store_options opt = { .dir = home, .readonly = true };
	return ap_store_open(st, &opt, err, errlen);
}

typedef struct kv {
	ap_store_db db;
	const char *key;
	const char *val; /* NULL: delete */
} kv;

static int put_fn(ap_store_txn *txn, void *arg)
{
	const kv *x = arg;
	if (x->val == NULL)
		return ap_store_del(txn, x->db, x->key, strlen(x->key));
	return ap_store_put(txn, x->db, x->key, strlen(x->key), x->val,
			    strlen(x->val));
}

static int put1(ap_store *st, ap_store_db db, const char *key,
		const char *val)
{
	kv x = { db, key, val };
	return ap_store_run(st, 0, put_fn, &x);
}

/* Get key as a NUL-terminated string (caller frees); NULL plus *rcp on
 * error. */
static char *get1(ap_store *st, ap_store_db db, const char *key, int *rcp)
{
	ap_store_txn *txn;
	int rc = ap_store_txn_begin(st, 0, &txn);
	assert_int_equal(rc, 0);
	void *val = NULL;
	size_t len = 0;
	rc = ap_store_get(txn, db, key, strlen(key), &val, &len);
	ap_store_txn_abort(txn);
	if (rcp != NULL)
		*rcp = rc;
	if (rc != 0) {
		assert_null(val);
		return NULL;
	}
	char *s = malloc(len + 1);
	assert_non_null(s);
	memcpy(s, val, len);
	s[len] = '\0';
	free(val);
	return s;
}

static void assert_value(ap_store *st, ap_store_db db, const char *key,
			 const char *want)
{
	int rc;
	char *got = get1(st, db, key, &rc);
	if (want == NULL) {
		assert_int_equal(rc, AP_ENOTFOUND);
		assert_null(got);
		return;
	}
	assert_int_equal(rc, 0);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

/* Collects a scan into a list of "key=value" lines. */
typedef struct collect {
	char **lines;
	size_t n, cap;
	int stop_after; /* 0: never; n: return 42 after n records */
} collect;

static int collect_fn(void *arg, const void *key, size_t klen,
		      const void *val, size_t vlen)
{
	collect *c = arg;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->lines = realloc(c->lines, c->cap * sizeof *c->lines);
		assert_non_null(c->lines);
	}
	char *line = malloc(klen + vlen + 2);
	assert_non_null(line);
	memcpy(line, key, klen);
	line[klen] = '=';
	memcpy(line + klen + 1, val, vlen);
	line[klen + 1 + vlen] = '\0';
	c->lines[c->n++] = line;
	if (c->stop_after > 0 && (int)c->n == c->stop_after)
		return 42;
	return 0;
}

static void collect_free(collect *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->lines[i]);
	free(c->lines);
	memset(c, 0, sizeof *c);
}

static size_t count_records(ap_store *st, ap_store_db db)
{
	collect c = { 0 };
	assert_int_equal(ap_store_scan(st, db, collect_fn, &c), 0);
	size_t n = c.n;
	collect_free(&c);
	return n;
}

static bool dir_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int dir_entries(const char *path)
{
	DIR *d = opendir(path);
	if (d == NULL)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static const ap_store_db all_dbs[] = { AP_DB_TASKS, AP_DB_ASSIGNMENTS,
				       AP_DB_OPERATORS, AP_DB_META };

/* ---- basic operations --------------------------------------------------- */

static void test_put_get_del_each_db(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	/* The home was created, mode 0700. */
	struct stat sb;
	assert_int_equal(stat(fx->home, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_string_equal(ap_store_dir(st), fx->home);
	assert_false(ap_store_was_unclean(st)); /* fresh */

	for (size_t i = 0; i < sizeof all_dbs / sizeof all_dbs[0]; i++) {
		ap_store_db db = all_dbs[i];
		char val[32];
		snprintf(val, sizeof val, "value-%zu", i);
		assert_value(st, db, "k", NULL);
		assert_int_equal(put1(st, db, "k", val), 0);
		assert_value(st, db, "k", val);
		/* Overwrite. */
		assert_int_equal(put1(st, db, "k", "second"), 0);
		assert_value(st, db, "k", "second");
		/* Delete, then delete again: not found. */
		assert_int_equal(put1(st, db, "k", NULL), 0);
		assert_value(st, db, "k", NULL);
		assert_int_equal(put1(st, db, "k", NULL), AP_ENOTFOUND);
	}
	/* The databases are separate: a key in one is not in another. */
	assert_int_equal(put1(st, AP_DB_TASKS, "only-tasks", "x"), 0);
	assert_value(st, AP_DB_ASSIGNMENTS, "only-tasks", NULL);
	assert_value(st, AP_DB_OPERATORS, "only-tasks", NULL);

	/* An empty value round-trips as a free()able zero-length buffer. */
	ap_store_txn *txn;
	assert_int_equal(ap_store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(ap_store_put(txn, AP_DB_OPERATORS, "e", 1, "", 0), 0);
	void *val = NULL;
	size_t len = 99;
	assert_int_equal(ap_store_get(txn, AP_DB_OPERATORS, "e", 1, &val, &len), 0);
	assert_non_null(val);
	assert_int_equal(len, 0);
	free(val);
	/* Bad arguments. */
	assert_int_equal(ap_store_put(txn, AP_DB_COUNT, "e", 1, "x", 1), AP_EINVAL);
	assert_int_equal(ap_store_get(txn, AP_DB_TASKS, NULL, 1, &val, &len),
			 AP_EINVAL);
	assert_int_equal(ap_store_txn_commit(txn), 0);

	/* Data survives a clean close and reopen. */
	ap_store_close(st);
	st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	assert_false(ap_store_was_unclean(st));
	assert_value(st, AP_DB_TASKS, "only-tasks", "x");
	ap_store_close(st);
	ap_store_close(NULL); /* accepted */
}

static void test_abort_discards(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_NOSYNC);
	assert_int_equal(put1(st, AP_DB_TASKS, "keep", "1"), 0);

	ap_store_txn *txn;
	assert_int_equal(ap_store_txn_begin(st, 0, &txn), 0);
	assert_int_equal(ap_store_put(txn, AP_DB_TASKS, "gone", 4, "x", 1), 0);
	assert_int_equal(ap_store_del(txn, AP_DB_TASKS, "keep", 4), 0);
	/* Inside the transaction its own changes are visible. */
	void *val = NULL;
	size_t len = 0;
	assert_int_equal(ap_store_get(txn, AP_DB_TASKS, "gone", 4, &val, &len), 0);
	free(val);
	assert_int_equal(ap_store_get(txn, AP_DB_TASKS, "keep", 4, &val, &len),
			 AP_ENOTFOUND);
	ap_store_txn_abort(txn);
	ap_store_txn_abort(NULL);
	assert_value(st, AP_DB_TASKS, "gone", NULL);
	assert_value(st, AP_DB_TASKS, "keep", "1");
	ap_store_close(st);
}

/* A transaction function that writes and then fails. */
static int write_then_fail(ap_store_txn *txn, void *arg)
{
	int *calls = arg;
	(*calls)++;
	int rc = ap_store_put(txn, AP_DB_ASSIGNMENTS, "t1", 2, "owner", 5);
	if (rc != 0)
		return rc;
	return AP_ESTALE;
}

static void test_run_failure_discards(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	int calls = 0;
	/* The function's own error comes back unchanged, run once, and
	 * nothing it wrote stays. */
	assert_int_equal(ap_store_run(st, 0, write_then_fail, &calls), AP_ESTALE);
	assert_int_equal(calls, 1);
	assert_value(st, AP_DB_ASSIGNMENTS, "t1", NULL);
	assert_int_equal(ap_store_run(st, 0, NULL, NULL), AP_EINVAL);
	assert_int_equal(ap_store_retries(st), 0);
	ap_store_close(st);
}

/* ---- scans -------------------------------------------------------------- */

static void test_scan_key_order(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_NOSYNC);
	enum { N = 1000 }; /* several scan batches */
	/* Insert in a scrambled order, in a few transactions. */
	for (size_t d = 0; d < 3; d++) {
		ap_store_txn *txn;
		assert_int_equal(ap_store_txn_begin(st, 0, &txn), 0);
		for (unsigned i = 0; i < N; i++) {
			unsigned k = (i * 7919u) % N;
			char key[16], val[16];
			snprintf(key, sizeof key, "key%04u", k);
			snprintf(val, sizeof val, "v%u.%zu", k, d);
			assert_int_equal(ap_store_put(txn, all_dbs[d], key,
						      strlen(key), val,
						      strlen(val)), 0);
		}
		assert_int_equal(ap_store_txn_commit(txn), 0);
	}
	for (size_t d = 0; d < 3; d++) {
		collect c = { 0 };
		assert_int_equal(ap_store_scan(st, all_dbs[d], collect_fn, &c), 0);
		assert_int_equal(c.n, N);
		for (unsigned i = 0; i < N; i++) {
			char want[40];
			snprintf(want, sizeof want, "key%04u=v%u.%zu", i, i, d);
			assert_string_equal(c.lines[i], want);
		}
		collect_free(&c);
	}
	/* meta holds the store's own two keys, in key order. */
	collect m = { 0 };
	assert_int_equal(ap_store_scan(st, AP_DB_META, collect_fn, &m), 0);
	assert_int_equal(m.n, 2);
	assert_string_equal(m.lines[0], "clean_shutdown=0");
	assert_string_equal(m.lines[1], "schema_version=1");
	collect_free(&m);

	/* A visitor's non-zero return stops the scan and is returned, also
	 * past a batch boundary. */
	collect s = { .stop_after = 300 };
	assert_int_equal(ap_store_scan(st, AP_DB_TASKS, collect_fn, &s), 42);
	assert_int_equal(s.n, 300);
	assert_string_equal(s.lines[299], "key0299=v299.0");
	collect_free(&s);

	assert_int_equal(ap_store_scan(st, AP_DB_COUNT, collect_fn, &s), AP_EINVAL);

	/* Paging: from an existing key (inclusive), from between two keys,
	 * past the end, and from the start (klen 0). */
	collect p = { 0 };
	assert_int_equal(ap_store_scan_from(st, AP_DB_TASKS, "key0500", 7,
					    collect_fn, &p), 0);
	assert_int_equal(p.n, 500);
	assert_string_equal(p.lines[0], "key0500=v500.0");
	assert_string_equal(p.lines[499], "key0999=v999.0");
	collect_free(&p);
	assert_int_equal(ap_store_scan_from(st, AP_DB_TASKS, "key0500x", 8,
					    collect_fn, &p), 0);
	assert_int_equal(p.n, 499);
	assert_string_equal(p.lines[0], "key0501=v501.0");
	collect_free(&p);
	assert_int_equal(ap_store_scan_from(st, AP_DB_TASKS, "zzz", 3,
					    collect_fn, &p), 0);
	assert_int_equal(p.n, 0);
	assert_int_equal(ap_store_scan_from(st, AP_DB_TASKS, "", 0, collect_fn,
					    &p), 0);
	assert_int_equal(p.n, N);
	assert_string_equal(p.lines[0], "key0000=v0.0");
	collect_free(&p);
	p.stop_after = 10;
	assert_int_equal(ap_store_scan_from(st, AP_DB_ASSIGNMENTS, "key0990", 7,
					    collect_fn, &p), 42);
	assert_int_equal(p.n, 10);
	assert_string_equal(p.lines[9], "key0999=v999.1");
	collect_free(&p);
	assert_int_equal(ap_store_scan_from(st, AP_DB_TASKS, NULL, 3,
					    collect_fn, &p), AP_EINVAL);
	ap_store_close(st);
}

static void test_scan_empty_and_large(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_NOSYNC);
	assert_int_equal(count_records(st, AP_DB_OPERATORS), 0);

	/* Values larger than a scan batch's byte budget. */
	enum { BIG = 300 * 1024 };
	char *big = malloc(BIG + 1);
	assert_non_null(big);
	for (int i = 0; i < 5; i++) {
		memset(big, 'a' + i, BIG);
		big[BIG] = '\0';
		char key[8];
		snprintf(key, sizeof key, "big%d", i);
		assert_int_equal(put1(st, AP_DB_OPERATORS, key, big), 0);
	}
	collect c = { 0 };
	assert_int_equal(ap_store_scan(st, AP_DB_OPERATORS, collect_fn, &c), 0);
	assert_int_equal(c.n, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(strlen(c.lines[i]), 5 + BIG);
		assert_int_equal(c.lines[i][3], '0' + i);
		assert_int_equal(c.lines[i][5 + BIG - 1], 'a' + i);
	}
	collect_free(&c);
	free(big);
	ap_store_close(st);
}

/* A visitor that deletes every record it visits, in its own transaction,
 * from the database being scanned. Would hang if the scan held a page
 * lock while calling it. */
typedef struct scan_delete {
	ap_store *st;
	size_t visited;
	int last_rc;
} scan_delete;

static int del_fn(ap_store_txn *txn, void *arg)
{
	const char *key = arg;
	return ap_store_del(txn, AP_DB_TASKS, key, strlen(key));
}

static int delete_visitor(void *arg, const void *key, size_t klen,
			  const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	scan_delete *sd = arg;
	char k[32];
	if (klen >= sizeof k)
		return -1;
	memcpy(k, key, klen);
	k[klen] = '\0';
	sd->visited++;
	sd->last_rc = ap_store_run(sd->st, 0, del_fn, k);
	return sd->last_rc;
}

static void test_scan_visitor_writes(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_NOSYNC);
	enum { N = 700 };
	for (int i = 0; i < N; i++) {
		char key[16];
		snprintf(key, sizeof key, "t%05d", i);
		assert_int_equal(put1(st, AP_DB_TASKS, key, "x"), 0);
	}
	scan_delete sd = { .st = st };
	assert_int_equal(ap_store_scan(st, AP_DB_TASKS, delete_visitor, &sd), 0);
	assert_int_equal(sd.last_rc, 0);
	assert_int_equal(sd.visited, N);
	assert_int_equal(count_records(st, AP_DB_TASKS), 0);
	ap_store_close(st);
}

/* ---- durability and crash safety ---------------------------------------- */

static void test_durability_modes(void **state)
{
	fixture *fx = *state;
	const ap_durability modes[] = { AP_DURABILITY_SYNC,
					AP_DURABILITY_WRITE_NOSYNC,
					AP_DURABILITY_NOSYNC };
	for (size_t m = 0; m < 3; m++) {
		ap_store *st = open_store(fx->home, modes[m]);
		char key[16];
		snprintf(key, sizeof key, "mode%zu", m);
		assert_int_equal(put1(st, AP_DB_TASKS, key, "default"), 0);
		kv x = { AP_DB_ASSIGNMENTS, key, "sync" };
		assert_int_equal(ap_store_run(st, AP_TXN_SYNC, put_fn, &x), 0);
		ap_store_close(st);
	}
	ap_store *st = open_store(fx->home, AP_DURABILITY_SYNC);
	for (size_t m = 0; m < 3; m++) {
		char key[16];
		snprintf(key, sizeof key, "mode%zu", m);
		assert_value(st, AP_DB_TASKS, key, "default");
		assert_value(st, AP_DB_ASSIGNMENTS, key, "sync");
	}
	ap_store_close(st);

	/* An unknown durability is refused before anything is created. */
	ap_store_options opt = { .dir = fx->home, .durability = (ap_durability)7 };
	char other[128];
	snprintf(other, sizeof other, "%s/other", fx->dir);
	opt.dir = other;
	char err[128];
	st = (ap_store *)&err; /* must be reset to NULL */
	assert_int_equal(ap_store_open(&st, &opt, err, sizeof err), AP_EINVAL);
	assert_null(st);
	assert_false(dir_exists(other));
}

/* The crash child: open, commit `n` transactions of 10 records each,
 * report the count after every commit, then leave in the middle of an
 * uncommitted transaction. With `flush_uncommitted` that transaction is big
 * and a checkpoint forces its pages (and the whole log) to disk, so
 * recovery has to undo it; without, nothing is flushed after the last
 * commit, so only what the commits themselves wrote can save them.
 * Returns only through _exit. */
static void crash_child(const char *home, ap_durability d, int n, int fd,
			bool flush_uncommitted)
{
	ap_store_options opt = { .dir = home, .durability = d };
	ap_store *st = NULL;
	char err[256];
	if (ap_store_open(&st, &opt, err, sizeof err) != 0)
		_exit(10);
	for (int i = 0; i < n; i++) {
		ap_store_txn *txn;
		if (ap_store_txn_begin(st, 0, &txn) != 0)
			_exit(11);
		for (int j = 0; j < 10; j++) {
			char key[32];
			snprintf(key, sizeof key, "c%04d-%d", i, j);
			if (ap_store_put(txn, AP_DB_TASKS, key, strlen(key), "ok",
					 2) != 0)
				_exit(12);
		}
		if (ap_store_put(txn, AP_DB_ASSIGNMENTS, "last", 4, &i,
				 sizeof i) != 0)
			_exit(13);
		if (ap_store_txn_commit(txn) != 0)
			_exit(14);
		int committed = i + 1;
		if (write(fd, &committed, sizeof committed) != sizeof committed)
			_exit(15);
	}
	ap_store_txn *txn;
	if (ap_store_txn_begin(st, 0, &txn) != 0)
		_exit(16);
	for (int j = 0; j < (flush_uncommitted ? 2000 : 3); j++) {
		char key[32];
		snprintf(key, sizeof key, "u%05d", j);
		if (ap_store_put(txn, AP_DB_TASKS, key, strlen(key),
				 "uncommitted", 11) != 0)
			_exit(17);
	}
	if (ap_store_put(txn, AP_DB_TASKS, "c0000-0", 7, "overwritten", 11) != 0)
		_exit(18);
	if (flush_uncommitted && ap_store_checkpoint(st) != 0)
		_exit(19);
	_exit(0); /* no commit, no close: a crash */
}

static void crash_and_recover(const char *home, ap_durability d,
			      bool flush_uncommitted)
{
	enum { N = 25 };
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		crash_child(home, d, N, fds[1], flush_uncommitted);
	}
	close(fds[1]);
	int committed = 0, v;
	ssize_t got;
	while ((got = read(fds[0], &v, sizeof v)) == sizeof v) {
		assert_int_equal(v, committed + 1);
		committed = v;
	}
	assert_int_equal(got, 0);
	close(fds[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(committed, N);

	/* Recovery: every committed record, none of the uncommitted. */
	ap_store *st = open_store(home, d);
	assert_true(ap_store_was_unclean(st));
	assert_int_equal(count_records(st, AP_DB_TASKS), (size_t)committed * 10);
	for (int i = 0; i < committed; i++) {
		for (int j = 0; j < 10; j++) {
			char key[32];
			snprintf(key, sizeof key, "c%04d-%d", i, j);
			assert_value(st, AP_DB_TASKS, key, "ok");
		}
	}
	assert_value(st, AP_DB_TASKS, "u00000", NULL);
	assert_value(st, AP_DB_TASKS, "u01999", NULL);
	ap_store_txn *txn;
	assert_int_equal(ap_store_txn_begin(st, 0, &txn), 0);
	void *val = NULL;
	size_t len = 0;
	assert_int_equal(ap_store_get(txn, AP_DB_ASSIGNMENTS, "last", 4, &val,
				      &len), 0);
	assert_int_equal(len, sizeof(int));
	memcpy(&v, val, sizeof v);
	assert_int_equal(v, committed - 1);
	free(val);
	ap_store_txn_abort(txn);
	ap_store_close(st);

	/* A clean close is remembered. */
	st = open_store(home, d);
	assert_false(ap_store_was_unclean(st));
	assert_int_equal(count_records(st, AP_DB_TASKS), (size_t)committed * 10);
	ap_store_close(st);
}

static void crash_tests(fixture *fx, ap_durability d)
{
	char home2[128];
	snprintf(home2, sizeof home2, "%s/db2", fx->dir);
	crash_and_recover(fx->home, d, true);
	crash_and_recover(home2, d, false);
}

static void test_crash_write_nosync(void **state)
{
	crash_tests(*state, AP_DURABILITY_WRITE_NOSYNC);
}

static void test_crash_sync(void **state)
{
	crash_tests(*state, AP_DURABILITY_SYNC);
}

/* ---- schema version ----------------------------------------------------- */

static void test_schema_mismatch(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	assert_value(st, AP_DB_META, "schema_version", "1");
	assert_int_equal(put1(st, AP_DB_META, "schema_version", "2"), 0);
	ap_store_close(st);

	ap_store_options opt = { .dir = fx->home,
				 .durability = AP_DURABILITY_WRITE_NOSYNC };
	char err[256] = "";
	st = NULL;
	assert_int_equal(ap_store_open(&st, &opt, err, sizeof err), AP_EVERSION);
	assert_null(st);
	assert_non_null(strstr(err, "schema version '2'"));
	/* A reader refuses it too. */
	err[0] = '\0';
	assert_int_equal(open_readonly(fx->home, &st, err, sizeof err),
			 AP_EVERSION);
	assert_null(st);
	assert_non_null(strstr(err, "schema version"));
}

/* ---- readers ------------------------------------------------------------ */

static void test_readonly_missing(void **state)
{
	fixture *fx = *state;
	ap_store *st = (ap_store *)fx; /* must be reset to NULL */
	char err[256] = "";
	/* No directory: not found, and it is not created. */
	assert_int_equal(open_readonly(fx->home, &st, err, sizeof err),
			 AP_ENOTFOUND);
	assert_null(st);
	assert_true(err[0] != '\0');
	assert_false(dir_exists(fx->home));

	/* An empty directory: not found, and nothing appears in it. */
	assert_int_equal(mkdir(fx->home, 0700), 0);
	err[0] = '\0';
	assert_int_equal(open_readonly(fx->home, &st, err, sizeof err),
			 AP_ENOTFOUND);
	assert_null(st);
	assert_true(err[0] != '\0');
	assert_int_equal(dir_entries(fx->home), 0);
}

/* Writer child for the reader test. Commands on `cmd`: 'M' commit ten
 * more records, 'Q' close cleanly and exit. Acknowledges with 'R'. */
static void writer_child(const char *home, int cmd, int ack)
{
	ap_store_options opt = { .dir = home,
				 .durability = AP_DURABILITY_WRITE_NOSYNC };
	ap_store *st = NULL;
	char err[256];
	if (ap_store_open(&st, &opt, err, sizeof err) != 0)
		_exit(10);
	int next = 0;
	char c = 'M';
	for (;;) {
		if (c == 'M') {
			ap_store_txn *txn;
			if (ap_store_txn_begin(st, 0, &txn) != 0)
				_exit(11);
			for (int i = 0; i < 10; i++, next++) {
				char key[16];
				snprintf(key, sizeof key, "w%03d", next);
				if (ap_store_put(txn, AP_DB_TASKS, key,
						 strlen(key), "v", 1) != 0)
					_exit(12);
			}
			if (ap_store_txn_commit(txn) != 0)
				_exit(13);
		} else if (c == 'Q') {
			ap_store_close(st);
			_exit(0);
		} else {
			_exit(14);
		}
		if (write(ack, "R", 1) != 1)
			_exit(15);
		if (read(cmd, &c, 1) != 1)
			_exit(16);
	}
}

static void test_readonly_with_running_writer(void **state)
{
	fixture *fx = *state;
	int cmd[2], ack[2];
	assert_int_equal(pipe(cmd), 0);
	assert_int_equal(pipe(ack), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(cmd[1]);
		close(ack[0]);
		writer_child(fx->home, cmd[0], ack[1]);
	}
	close(cmd[0]);
	close(ack[1]);
	char c = 0;
	assert_int_equal(read(ack[0], &c, 1), 1);
	assert_int_equal(c, 'R');

	/* The writer keeps the environment open; the reader joins it. */
	ap_store *ro = NULL;
	char err[256] = "";
	int rc = open_readonly(fx->home, &ro, err, sizeof err);
	if (rc != 0)
		print_error("readonly open: %s: %s\n", ap_strerror(rc), err);
	assert_int_equal(rc, 0);
	assert_false(ap_store_was_unclean(ro));
	assert_int_equal(count_records(ro, AP_DB_TASKS), 10);
	assert_value(ro, AP_DB_TASKS, "w005", "v");
	assert_value(ro, AP_DB_TASKS, "w015", NULL);
	/* Writes are refused; a checkpoint is a no-op. */
	assert_int_equal(put1(ro, AP_DB_TASKS, "nope", "x"), AP_EINVAL);
	assert_int_equal(put1(ro, AP_DB_TASKS, "w001", NULL), AP_EINVAL);
	assert_int_equal(ap_store_checkpoint(ro), 0);

	/* More commits by the writer are visible without reopening. */
	assert_int_equal(write(cmd[1], "M", 1), 1);
	assert_int_equal(read(ack[0], &c, 1), 1);
	assert_int_equal(c, 'R');
	assert_int_equal(count_records(ro, AP_DB_TASKS), 20);
	assert_value(ro, AP_DB_TASKS, "w015", "v");
	ap_store_close(ro);

	assert_int_equal(write(cmd[1], "Q", 1), 1);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(cmd[1]);
	close(ack[0]);

	/* The reader left the environment as it was: the daemon reopens it
	 * and sees a clean shutdown. */
	ap_store *st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	assert_false(ap_store_was_unclean(st));
	assert_int_equal(count_records(st, AP_DB_TASKS), 20);
	ap_store_close(st);
}

/* A daemon killed inside a transaction leaves its page locks in the shared
 * lock region until the next daemon start recovers. A reader must fail in
 * bounded time instead of waiting for ever. */
static void test_readonly_dead_writer(void **state)
{
	fixture *fx = *state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		ap_store_options opt = { .dir = fx->home,
					 .durability = AP_DURABILITY_WRITE_NOSYNC };
		ap_store *st = NULL;
		char err[256];
		if (ap_store_open(&st, &opt, err, sizeof err) != 0)
			_exit(10);
		kv x = { AP_DB_TASKS, "committed", "yes" };
		if (ap_store_run(st, 0, put_fn, &x) != 0)
			_exit(11);
		ap_store_txn *txn;
		if (ap_store_txn_begin(st, 0, &txn) != 0 ||
		    ap_store_put(txn, AP_DB_TASKS, "pending", 7, "no", 2) != 0)
			_exit(12);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	ap_store *ro = NULL;
	char err[256] = "";
	int rc = open_readonly(fx->home, &ro, err, sizeof err);
	if (rc == 0) {
		int64_t t0 = ap_clock_mono_ms();
		collect c = { 0 };
		assert_int_equal(ap_store_scan(ro, AP_DB_TASKS, collect_fn, &c),
				 AP_EIO);
		collect_free(&c);
		assert_true(ap_store_retries(ro) > 0);
		assert_true(ap_clock_mono_ms() - t0 < 60000);
		/* Other databases are not locked. */
		assert_value(ro, AP_DB_META, "schema_version", "1");
		ap_store_close(ro);
	} else {
		/* Refusing to open is acceptable too, as long as it is quick
		 * and says why. */
		assert_int_equal(rc, AP_EIO);
		assert_true(err[0] != '\0');
	}

	/* The daemon recovers: committed stays, pending is gone. */
	ap_store *st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	assert_true(ap_store_was_unclean(st));
	assert_value(st, AP_DB_TASKS, "committed", "yes");
	assert_value(st, AP_DB_TASKS, "pending", NULL);
	ap_store_close(st);

	/* ...after which a reader works again. */
	assert_int_equal(open_readonly(fx->home, &ro, err, sizeof err), 0);
	assert_int_equal(count_records(ro, AP_DB_TASKS), 1);
	ap_store_close(ro);
}

/* ---- deadlocks ---------------------------------------------------------- */

typedef struct dl_shared {
	ap_store *st;
	pthread_barrier_t barrier;
	atomic_int failures;
	atomic_int successes;
} dl_shared;

typedef struct dl_thread {
	dl_shared *sh;
	bool reverse;
	bool first;     /* first call of the first transaction */
	int iterations;
} dl_thread;

static int incr(ap_store_txn *txn, ap_store_db db, const char *key)
{
	void *val = NULL;
	size_t len = 0;
	uint64_t n = 0;
	int rc = ap_store_get(txn, db, key, strlen(key), &val, &len);
	if (rc == 0) {
		if (len != sizeof n) {
			free(val);
			return AP_EINVAL;
		}
		memcpy(&n, val, sizeof n);
		free(val);
	} else if (rc != AP_ENOTFOUND) {
		return rc;
	}
	n++;
	return ap_store_put(txn, db, key, strlen(key), &n, sizeof n);
}

/* Increment two counters in two databases, in an order that depends on
 * the thread. The very first call waits on a barrier between the two, so
 * both threads hold one lock each and want the other's: a certain
 * deadlock, resolved by the detector and a retry. */
static int dl_fn(ap_store_txn *txn, void *arg)
{
	dl_thread *t = arg;
	ap_store_db a = t->reverse ? AP_DB_OPERATORS : AP_DB_TASKS;
	ap_store_db b = t->reverse ? AP_DB_TASKS : AP_DB_OPERATORS;
	const char *ka = t->reverse ? "y" : "x";
	const char *kb = t->reverse ? "x" : "y";
	int rc = incr(txn, a, ka);
	if (rc != 0)
		return rc;
	if (t->first) {
		t->first = false;
		pthread_barrier_wait(&t->sh->barrier);
	} else {
		sched_yield();
	}
	return incr(txn, b, kb);
}

static void *dl_main(void *arg)
{
	dl_thread *t = arg;
	for (int i = 0; i < t->iterations; i++) {
		int rc = ap_store_run(t->sh->st, 0, dl_fn, t);
		if (rc == 0)
			atomic_fetch_add(&t->sh->successes, 1);
		else
			atomic_fetch_add(&t->sh->failures, 1);
	}
	return NULL;
}

static uint64_t get_counter(ap_store *st, ap_store_db db, const char *key)
{
	ap_store_txn *txn;
	assert_int_equal(ap_store_txn_begin(st, 0, &txn), 0);
	void *val = NULL;
	size_t len = 0;
	uint64_t n = 0;
	assert_int_equal(ap_store_get(txn, db, key, strlen(key), &val, &len), 0);
	assert_int_equal(len, sizeof n);
	memcpy(&n, val, sizeof n);
	free(val);
	ap_store_txn_abort(txn);
	return n;
}

static void test_deadlock_retry(void **state)
{
	fixture *fx = *state;
	enum { ITER = 300 };
	ap_store *st = open_store(fx->home, AP_DURABILITY_NOSYNC);
	dl_shared sh = { .st = st };
	atomic_init(&sh.failures, 0);
	atomic_init(&sh.successes, 0);
	assert_int_equal(pthread_barrier_init(&sh.barrier, NULL, 2), 0);
	dl_thread t[2] = {
		{ .sh = &sh, .reverse = false, .first = true, .iterations = ITER },
		{ .sh = &sh, .reverse = true, .first = true, .iterations = ITER },
	};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, dl_main, &t[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&sh.barrier);

	assert_int_equal(atomic_load(&sh.failures), 0);
	assert_int_equal(atomic_load(&sh.successes), 2 * ITER);
	/* Every committed transaction incremented both counters exactly once:
	 * a retried function left no trace of its aborted attempts. */
	assert_int_equal(get_counter(st, AP_DB_TASKS, "x"), 2 * ITER);
	assert_int_equal(get_counter(st, AP_DB_OPERATORS, "y"), 2 * ITER);
	/* The forced deadlock happened and was retried. */
	assert_true(ap_store_retries(st) >= 1);
	ap_store_close(st);
}

/* ---- fault hook --------------------------------------------------------- */

typedef struct fault_state {
	const char *fail_op;
	ap_store_db fail_db;
	int calls, failed;
	bool saw_commit;
} fault_state;

static int fault_hook(void *arg, ap_store_db db, const char *op)
{
	fault_state *f = arg;
	f->calls++;
	if (strcmp(op, "commit") == 0) {
		f->saw_commit = true;
		if (db != AP_DB_COUNT)
			return 0; /* would make the test fail below */
	}
	if (strcmp(op, f->fail_op) == 0 && db == f->fail_db) {
		f->failed++;
		return 1;
	}
	return 0;
}

static int two_puts(ap_store_txn *txn, void *arg)
{
	int *calls = arg;
	(*calls)++;
	int rc = ap_store_put(txn, AP_DB_OPERATORS, "op", 2, "1", 1);
	if (rc == 0)
		rc = ap_store_put(txn, AP_DB_TASKS, "task", 4, "1", 1);
	return rc;
}

static void test_fault_hook(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	int calls = 0;

	/* A failing put: AP_EIO, not retried, nothing written. */
	fault_state f = { .fail_op = "put", .fail_db = AP_DB_TASKS };
	ap_store_set_fault_hook(fault_hook, &f);
	assert_int_equal(ap_store_run(st, 0, two_puts, &calls), AP_EIO);
	assert_int_equal(calls, 1);
	assert_int_equal(f.failed, 1);
	assert_true(f.calls >= 2);
	assert_false(f.saw_commit); /* aborted, never committed */
	ap_store_set_fault_hook(NULL, NULL);
	assert_int_equal(count_records(st, AP_DB_OPERATORS), 0);
	assert_int_equal(count_records(st, AP_DB_TASKS), 0);

	/* A failing commit: AP_EIO and nothing written either. */
	fault_state g = { .fail_op = "commit", .fail_db = AP_DB_COUNT };
	ap_store_set_fault_hook(fault_hook, &g);
	calls = 0;
	assert_int_equal(ap_store_run(st, AP_TXN_SYNC, two_puts, &calls), AP_EIO);
	assert_int_equal(calls, 1);
	assert_int_equal(g.failed, 1);
	assert_true(g.saw_commit);
	ap_store_set_fault_hook(NULL, NULL);
	assert_int_equal(count_records(st, AP_DB_OPERATORS), 0);

	/* A failing delete. */
	assert_int_equal(put1(st, AP_DB_ASSIGNMENTS, "a", "owner"), 0);
	fault_state h = { .fail_op = "del", .fail_db = AP_DB_ASSIGNMENTS };
	ap_store_set_fault_hook(fault_hook, &h);
	assert_int_equal(put1(st, AP_DB_ASSIGNMENTS, "a", NULL), AP_EIO);
	assert_int_equal(h.failed, 1);

	/* Cleared: writes succeed again. */
	ap_store_set_fault_hook(NULL, NULL);
	calls = 0;
	assert_int_equal(ap_store_run(st, 0, two_puts, &calls), 0);
	assert_value(st, AP_DB_OPERATORS, "op", "1");
	assert_value(st, AP_DB_TASKS, "task", "1");
	assert_value(st, AP_DB_ASSIGNMENTS, "a", "owner");
	assert_int_equal(h.failed, 1); /* the cleared hook was not called */
	ap_store_close(st);
}

/* ---- records ------------------------------------------------------------ */

static void test_record_round_trip(void **state)
{
	(void)state;
	uint8_t *buf = NULL;
	size_t len = 0;

	/* Task, with a trigger. */
	Aggregator__BlockTrigger__Config bcfg = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	bcfg.interval = 12;
	bcfg.chain_id = 11155111;
	Aggregator__BlockTrigger block = AGGREGATOR__BLOCK_TRIGGER__INIT;
	block.config = &bcfg;
	Aggregator__TaskTrigger trig = AGGREGATOR__TASK_TRIGGER__INIT;
	trig.name = "every-12";
	trig.id = "trig-1";
	trig.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	trig.block = &block;
	Apstore__TaskRecord task = APSTORE__TASK_RECORD__INIT;
	task.id = "01JTASK";
	task.name = "watch blocks";
	task.trigger = &trig;
	task.status = APSTORE__TASK_STATUS__TASK_DISABLED;
	task.max_execution = 5;
	task.execution_count = 2;
	task.start_at = 1700000000000;
	task.expired_at = -1;
	task.created_at = 1795839444123;
	assert_int_equal(ap_record_pack(&task.base, &buf, &len), 0);
	assert_non_null(buf);
	assert_true(len > 1);
	assert_int_equal(buf[0], AP_RECORD_VERSION);
	Apstore__TaskRecord *t = NULL;
	assert_int_equal(ap_record_unpack_task(buf, len, &t), 0);
	assert_non_null(t);
	assert_string_equal(t->id, "01JTASK");
	assert_string_equal(t->name, "watch blocks");
	assert_int_equal(t->status, APSTORE__TASK_STATUS__TASK_DISABLED);
	assert_int_equal(t->max_execution, 5);
	assert_int_equal(t->execution_count, 2);
	assert_true(t->start_at == 1700000000000);
	assert_true(t->expired_at == -1);
	assert_true(t->created_at == 1795839444123);
	assert_non_null(t->trigger);
	assert_string_equal(t->trigger->id, "trig-1");
	assert_int_equal(t->trigger->trigger_type_case,
			 AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK);
	assert_non_null(t->trigger->block);
	assert_non_null(t->trigger->block->config);
	assert_int_equal(t->trigger->block->config->interval, 12);
	assert_int_equal(t->trigger->block->config->chain_id, 11155111);
	ap_record_free_task(t);
	free(buf);

	/* Assignment. */
	Apstore__AssignmentRecord as = APSTORE__ASSIGNMENT_RECORD__INIT;
	as.owner = "0x00000000000000000000000000000000000000aa";
	as.generation = UINT64_MAX;
	as.assigned_at = 42;
	assert_int_equal(ap_record_pack(&as.base, &buf, &len), 0);
	Apstore__AssignmentRecord *a = NULL;
	assert_int_equal(ap_record_unpack_assignment(buf, len, &a), 0);
	assert_non_null(a);
	assert_string_equal(a->owner, as.owner);
	assert_true(a->generation == UINT64_MAX);
	assert_int_equal(a->assigned_at, 42);
	ap_record_free_assignment(a);
	free(buf);

	/* Operator, with a repeated field. */
	int64_t chains[] = { 1, 11155111, -5 };
	Apstore__OperatorRecord op = APSTORE__OPERATOR_RECORD__INIT;
	op.address = "0x00000000000000000000000000000000000000bb";
	op.monotonic_clock = 77;
	op.has_capabilities = true;
	op.block_monitoring = true;
	op.n_chain_ids = 3;
	op.chain_ids = chains;
	op.connected = true;
	op.connects = 9;
	op.version = "v1.9.6";
	op.metrics_port = 9090;
	assert_int_equal(ap_record_pack(&op.base, &buf, &len), 0);
	Apstore__OperatorRecord *o = NULL;
	assert_int_equal(ap_record_unpack_operator(buf, len, &o), 0);
	assert_non_null(o);
	assert_string_equal(o->address, op.address);
	assert_int_equal(o->monotonic_clock, 77);
	assert_true(o->has_capabilities);
	assert_true(o->block_monitoring);
	assert_false(o->event_monitoring);
	assert_int_equal(o->n_chain_ids, 3);
	assert_int_equal(o->chain_ids[1], 11155111);
	assert_int_equal(o->chain_ids[2], -5);
	assert_true(o->connected);
	assert_int_equal(o->connects, 9);
	assert_string_equal(o->version, "v1.9.6");
	assert_int_equal(o->metrics_port, 9090);
	ap_record_free_operator(o);

	/* And through the store. */
	ap_record_free_operator(NULL);
	ap_record_free_task(NULL);
	ap_record_free_assignment(NULL);
	free(buf);

	/* An empty message packs to the version byte alone and decodes. */
	Apstore__AssignmentRecord empty = APSTORE__ASSIGNMENT_RECORD__INIT;
	assert_int_equal(ap_record_pack(&empty.base, &buf, &len), 0);
	assert_int_equal(len, 1);
	assert_int_equal(ap_record_unpack_assignment(buf, len, &a), 0);
	assert_string_equal(a->owner, "");
	ap_record_free_assignment(a);
	free(buf);

	assert_int_equal(ap_record_pack(NULL, &buf, &len), AP_EINVAL);
	assert_null(buf);
}

static void test_record_bad_input(void **state)
{
	(void)state;
	Apstore__AssignmentRecord as = APSTORE__ASSIGNMENT_RECORD__INIT;
	as.owner = "0xabc";
	as.generation = 3;
	uint8_t *buf = NULL;
	size_t len = 0;
	assert_int_equal(ap_record_pack(&as.base, &buf, &len), 0);

	Apstore__AssignmentRecord *a = (Apstore__AssignmentRecord *)&as;
	/* Version byte 2 (and 0): AP_EVERSION, even with a good body. */
	buf[0] = 2;
	assert_int_equal(ap_record_unpack_assignment(buf, len, &a), AP_EVERSION);
	assert_null(a);
	buf[0] = 0;
	Apstore__TaskRecord *t = (Apstore__TaskRecord *)&as;
	assert_int_equal(ap_record_unpack_task(buf, len, &t), AP_EVERSION);
	assert_null(t);
	buf[0] = AP_RECORD_VERSION;

	/* Empty input. */
	a = (Apstore__AssignmentRecord *)&as;
	assert_int_equal(ap_record_unpack_assignment(buf, 0, &a), AP_EINVAL);
	assert_null(a);
	assert_int_equal(ap_record_unpack_assignment(NULL, 5, &a), AP_EINVAL);
	assert_int_equal(ap_record_unpack_assignment(buf, len, NULL), AP_EINVAL);

	/* Truncated: the owner string's length runs past the end. */
	for (size_t cut = 2; cut < len; cut++) {
		int rc = ap_record_unpack_assignment(buf, cut, &a);
		if (rc == 0) {
			ap_record_free_assignment(a); /* a cut between fields */
		} else {
			assert_int_equal(rc, AP_EINVAL);
			assert_null(a);
		}
	}
	assert_int_equal(ap_record_unpack_assignment(buf, 3, &a), AP_EINVAL);
	free(buf);

	/* Garbage bodies. */
	const uint8_t bad_wiretype[] = { AP_RECORD_VERSION, 0x0f, 0x01 };
	const uint8_t bad_varint[] = { AP_RECORD_VERSION, 0x10, 0xff, 0xff, 0xff,
				       0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
				       0xff };
	const uint8_t bad_len[] = { AP_RECORD_VERSION, 0x0a, 0x7f, 'x' };
	Apstore__OperatorRecord *o = NULL;
	assert_int_equal(ap_record_unpack_operator(bad_wiretype,
						   sizeof bad_wiretype, &o),
			 AP_EINVAL);
	assert_null(o);
	assert_int_equal(ap_record_unpack_operator(bad_varint, sizeof bad_varint,
						   &o), AP_EINVAL);
	assert_int_equal(ap_record_unpack_task(bad_len, sizeof bad_len, &t),
			 AP_EINVAL);
	assert_null(t);

	/* Random input never crashes and never half-decodes. */
	uint64_t x = 0x1234567887654321ull;
	uint8_t rnd[64];
	int bad = 0;
	for (int i = 0; i < 20000; i++) {
		size_t n = (size_t)(i % (int)sizeof rnd);
		for (size_t j = 0; j < n; j++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			rnd[j] = (uint8_t)x;
		}
		if (n > 0 && (i & 1))
			rnd[0] = AP_RECORD_VERSION;
		int rc;
		switch (i % 3) {
		case 0:
			rc = ap_record_unpack_task(rnd, n, &t);
			assert_true(rc == 0 ? t != NULL : t == NULL);
			ap_record_free_task(t);
			break;
		case 1:
			rc = ap_record_unpack_assignment(rnd, n, &a);
			assert_true(rc == 0 ? a != NULL : a == NULL);
			ap_record_free_assignment(a);
			break;
		default:
			rc = ap_record_unpack_operator(rnd, n, &o);
			assert_true(rc == 0 ? o != NULL : o == NULL);
			ap_record_free_operator(o);
			break;
		}
		assert_true(rc == 0 || rc == AP_EINVAL || rc == AP_EVERSION);
		if (rc != 0)
			bad++;
	}
	assert_true(bad > 0);
}

/* A record stored and read back through the store. */
static void test_record_in_store(void **state)
{
	fixture *fx = *state;
	ap_store *st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	Apstore__AssignmentRecord as = APSTORE__ASSIGNMENT_RECORD__INIT;
	as.owner = "0x00000000000000000000000000000000000000cc";
	as.generation = 17;
	uint8_t *buf;
	size_t len;
	assert_int_equal(ap_record_pack(&as.base, &buf, &len), 0);
	ap_store_txn *txn;
	assert_int_equal(ap_store_txn_begin(st, AP_TXN_SYNC, &txn), 0);
	assert_int_equal(ap_store_put(txn, AP_DB_ASSIGNMENTS, "task-1", 6, buf,
				      len), 0);
	assert_int_equal(ap_store_txn_commit(txn), 0);
	free(buf);
	ap_store_close(st);

	st = open_store(fx->home, AP_DURABILITY_WRITE_NOSYNC);
	assert_int_equal(ap_store_txn_begin(st, 0, &txn), 0);
	void *val;
	assert_int_equal(ap_store_get(txn, AP_DB_ASSIGNMENTS, "task-1", 6, &val,
				      &len), 0);
	ap_store_txn_abort(txn);
	Apstore__AssignmentRecord *a = NULL;
	assert_int_equal(ap_record_unpack_assignment(val, len, &a), 0);
	assert_string_equal(a->owner, as.owner);
	assert_int_equal(a->generation, 17);
	ap_record_free_assignment(a);
	free(val);
	ap_store_close(st);
}

static void test_version_string(void **state)
{
	(void)state;
	const char *v = ap_store_version();
	assert_non_null(v);
	assert_int_equal(strncmp(v, "BerkeleyDB 5.", 13), 0);
	assert_ptr_equal(v, ap_store_version());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_del_each_db, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_discards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_failure_discards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_key_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_empty_and_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_visitor_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_durability_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_write_nosync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_schema_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_with_running_writer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_dead_writer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deadlock_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_hook, setup, teardown),
		cmocka_unit_test(test_record_round_trip),
		cmocka_unit_test(test_record_bad_input),
		cmocka_unit_test_setup_teardown(test_record_in_store, setup, teardown),
		cmocka_unit_test(test_version_string),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
