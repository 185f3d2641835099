/* The store: one transactional BerkeleyDB environment (SPEC section 4).
 *
 * What it owns. An ap_store owns the DB_ENV handle, the four DB handles
 * (tasks.db, assignments.db, operators.db, meta.db, one B-tree per file)
 * and one housekeeping thread: the checkpointer in daemon mode, the
 * lock-expiry runner in readonly mode (see Readers). This is the only file
 * in the tree that includes <db.h>; everything above it sees ap_store,
 * ap_store_txn and byte strings.
 *
 * How the environment is driven (after OpenLDAP back-bdb). The daemon opens
 * with DB_CREATE | DB_RECOVER and every subsystem, so each start replays the
 * log and a kill -9 loses nothing that was committed. Commits use the
 * configured durability as the environment default; AP_TXN_SYNC forces
 * DB_TXN_SYNC for one transaction. Deadlocks are found by BerkeleyDB's own
 * detector on every lock conflict (set_lk_detect(DB_LOCK_DEFAULT)); the
 * victim's operations return DB_LOCK_DEADLOCK, which we surface as
 * AP_ERETRY, and ap_store_run() aborts and reruns the whole transaction
 * function after a randomised, exponentially growing sleep, as back-bdb's
 * bdb_trans_backoff does. Log files are removed automatically once a
 * checkpoint no longer needs them, so the directory does not grow for ever
 * (the price: no catastrophic recovery from archived logs, which nobody
 * keeps for this daemon anyway).
 *
 * Sizing. A 64 MiB cache holds the working set of about a million small
 * records. The lock table allows 100000 locks and lock objects and 10000
 * lockers: BerkeleyDB locks pages, not records, so even one transaction
 * rewriting every record of a million-record database touches only a few
 * tens of thousands of leaf pages, and each thread, transaction and
 * DB_THREAD handle needs a locker. Up to 1024 transactions may be active
 * at once. The lock region costs about 14 MiB of shared memory for this.
 *
 * Readers. A readonly store (`ap status`) joins the existing environment
 * without DB_CREATE or DB_RECOVER, opens the databases DB_RDONLY and
 * creates nothing: a missing directory or environment is AP_ENOTFOUND.
 * A daemon that was killed may have left a transaction's locks in the
 * shared lock region, and recovery only clears them when the daemon starts
 * again; so every read of a reader (database opens, gets, scan batches)
 * runs in a read-committed transaction whose lock waits time out after a
 * second, and a reader fails with AP_EIO after a few such timeouts instead
 * of hanging on a dead writer's lock. BerkeleyDB checks lock timeouts only
 * when its detector runs, so the reader's thread runs it every 100 ms in
 * DB_LOCK_EXPIRE mode, which expires timed-out requests and nothing else
 * (the daemon's requests have no timeout). A blocked reader still queues
 * behind a live daemon's lock and gets it at the daemon's commit.
 *
 * Scans copy a batch of records with a read-committed cursor, close the
 * cursor, and only then call the visitor; the next batch repositions after
 * the last key seen. No page lock is held while the visitor runs, so a
 * visitor may write to the database it is scanning, and a reader never
 * holds up the daemon for longer than one batch.
 *
 * Locks and threads. BerkeleyDB handles are opened with DB_THREAD and are
 * shared by all threads; BerkeleyDB does its own locking. `bg_lock`
 * guards only `bg_stop` and is held around the condition wait, never
 * around a BerkeleyDB call. The fault hook is a pair of atomics, set before
 * writer threads start (see store.h). No lock of this module is held while
 * calling out (visitor, transaction function, fault hook, logger). */
#include <db.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/store.h"

/* Environment sizing (see the comment at the top). */
#define STORE_CACHE_BYTES (64u * 1024u * 1024u)
#define STORE_MAX_LOCKS 100000u
#define STORE_MAX_LOCK_OBJECTS 100000u
#define STORE_MAX_LOCKERS 10000u
#define STORE_MAX_TXNS 1024u

/* Deadlock retry: at most this many attempts of one transaction; before
 * attempt n+1 sleep a random time in [cap/2, cap] with
 * cap = min(1 ms << n, 100 ms). Worst case about 330 ms of sleeping.
 * A reader gives up sooner: its lock waits already lasted a second each,
 * and a lock held that long most likely belongs to a dead daemon. */
#define STORE_MAX_ATTEMPTS 10
#define STORE_READER_MAX_ATTEMPTS 3
#define STORE_BACKOFF_MIN_US 1000
#define STORE_BACKOFF_MAX_US 100000

/* A reader waits at most this long for one lock (a dead daemon's lock is
 * never released), in microseconds. BerkeleyDB only notices an expired
 * lock wait when its deadlock detector runs, so a reader runs it, in
 * DB_LOCK_EXPIRE mode (expire timed-out requests, nothing else), this
 * often. Only the reader's own requests carry a timeout, so this never
 * touches the daemon's. */
#define STORE_READER_LOCK_TIMEOUT_US 1000000u
#define STORE_EXPIRE_INTERVAL_MS 100

/* The checkpointer wakes this often and checkpoints when at least
 * STORE_CKPT_KBYTES of log were written or STORE_CKPT_MINUTES passed. */
#define STORE_CKPT_INTERVAL_MS 30000
#define STORE_CKPT_KBYTES 1024u
#define STORE_CKPT_MINUTES 5u

/* A scan batch ends after this many records or bytes (at least one). */
#define STORE_SCAN_BATCH_RECORDS 256
#define STORE_SCAN_BATCH_BYTES (256u * 1024u)

#define STORE_SCHEMA_VERSION "1"
#define STORE_META_SCHEMA "schema_version"
#define STORE_META_CLEAN "clean_shutdown"

static const char *const store_db_files[AP_DB_COUNT] = {
	[AP_DB_TASKS] = "tasks.db",
	[AP_DB_ASSIGNMENTS] = "assignments.db",
	[AP_DB_OPERATORS] = "operators.db",
	[AP_DB_META] = "meta.db",
};

struct ap_store {
	DB_ENV *env;            /* created; see env_open for whether opened */
	DB *dbs[AP_DB_COUNT];   /* NULL until created */
	char *dir;
	bool readonly;
	bool env_open;          /* DB_ENV->open succeeded */
	bool marked_running;    /* we wrote clean_shutdown = "0" */
	bool unclean;           /* previous run did not close cleanly */
	atomic_uint_least64_t retries; /* transactions rerun after a deadlock */

	/* The housekeeping thread: the checkpointer of a daemon store, the
	 * lock-expiry runner of a reader. bg_lock guards bg_stop only. */
	pthread_t bg_thread;
	bool bg_started;
	bool bg_sync_init;
	pthread_mutex_t bg_lock;
	pthread_cond_t bg_cond;
	bool bg_stop;
};

struct ap_store_txn {
	ap_store *st;
	DB_TXN *tid;
	int flags;
};

/* The fault seam. The argument is stored before the hook (release), and
 * read after it (acquire). */
static _Atomic(ap_store_fault_fn) store_fault_hook;
static _Atomic(void *) store_fault_arg;

void ap_store_set_fault_hook(ap_store_fault_fn hook, void *arg)
{
	atomic_store_explicit(&store_fault_hook, NULL, memory_order_release);
	atomic_store_explicit(&store_fault_arg, arg, memory_order_release);
	atomic_store_explicit(&store_fault_hook, hook, memory_order_release);
}

static const char *store_db_name(ap_store_db db)
{
	switch (db) {
	case AP_DB_TASKS: return "tasks";
	case AP_DB_ASSIGNMENTS: return "assignments";
	case AP_DB_OPERATORS: return "operators";
	case AP_DB_META: return "meta";
	case AP_DB_COUNT: break;
	}
	return "-";
}

/* True when the fault hook asks this write to fail. */
static bool store_fault(ap_store *st, ap_store_db db, const char *op)
{
	ap_store_fault_fn hook =
		atomic_load_explicit(&store_fault_hook, memory_order_acquire);
	if (hook == NULL)
		return false;
	void *arg = atomic_load_explicit(&store_fault_arg, memory_order_acquire);
	if (hook(arg, db, op) == 0)
		return false;
	AP_ERROR("BerkeleyDB operation failed", AP_F_STR("op", op),
		 AP_F_STR("db", store_db_name(db)),
		 AP_F_STR("dir", st->dir),
		 AP_F_STR("detail", "injected fault"));
	return true;
}

/* Map a BerkeleyDB return code onto AP_E... and log what is worth it. */
static int store_rc(const ap_store *st, int ret, const char *op,
		    ap_store_db db)
{
	switch (ret) {
	case 0:
		return 0;
	case DB_NOTFOUND:
	case DB_KEYEMPTY:
		return AP_ENOTFOUND;
	case DB_LOCK_DEADLOCK:
	case DB_LOCK_NOTGRANTED:
		AP_DEBUG("BerkeleyDB lock conflict, transaction will be retried",
			 AP_F_STR("op", op), AP_F_STR("db", store_db_name(db)),
			 AP_F_STR("detail", db_strerror(ret)));
		return AP_ERETRY;
	default:
		AP_ERROR("BerkeleyDB operation failed", AP_F_STR("op", op),
			 AP_F_STR("db", store_db_name(db)),
			 AP_F_STR("dir", st->dir),
			 AP_F_STR("detail", db_strerror(ret)));
		return AP_EIO;
	}
}

static void store_errcall(const DB_ENV *env, const char *pfx, const char *msg)
{
	(void)env;
	AP_ERROR("BerkeleyDB error", AP_F_STR("detail", msg),
		 AP_F_STR("dir", pfx ? pfx : ""));
}

static void store_msgcall(const DB_ENV *env, const char *msg)
{
	(void)env;
	AP_INFO("BerkeleyDB message", AP_F_STR("detail", msg));
}

static void store_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void store_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (err == NULL || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- backoff ------------------------------------------------------------ */

static _Thread_local uint64_t store_rand_state;

static uint64_t store_rand(void)
{
	uint64_t x = store_rand_state;
	if (x == 0) {
		x = (uint64_t)ap_clock_mono_ns() ^
		    (uint64_t)(uintptr_t)&store_rand_state ^
		    0x9e3779b97f4a7c15ull;
		if (x == 0)
			x = 1;
	}
	/* xorshift64* */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	store_rand_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Sleep before attempt `attempt + 1` (attempt counts from 0). */
static void store_backoff(int attempt)
{
	int64_t cap = STORE_BACKOFF_MIN_US;
	for (int i = 0; i < attempt && cap < STORE_BACKOFF_MAX_US; i++)
		cap *= 2;
	if (cap > STORE_BACKOFF_MAX_US)
		cap = STORE_BACKOFF_MAX_US;
	int64_t us = cap / 2 + (int64_t)(store_rand() % (uint64_t)(cap / 2 + 1));
	struct timespec ts = { .tv_sec = us / 1000000,
			       .tv_nsec = (long)(us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- housekeeping thread ------------------------------------------------ */

static void store_housekeep(ap_store *st)
{
	int ret;
	if (st->readonly) {
		ret = st->env->lock_detect(st->env, 0, DB_LOCK_EXPIRE, NULL);
		if (ret != 0)
			(void)store_rc(st, ret, "lock_detect", AP_DB_COUNT);
	} else {
		ret = st->env->txn_checkpoint(st->env, STORE_CKPT_KBYTES,
					      STORE_CKPT_MINUTES, 0);
		if (ret != 0)
			(void)store_rc(st, ret, "checkpoint", AP_DB_COUNT);
	}
}

static void *store_bg_main(void *arg)
{
	ap_store *st = arg;
	int64_t period = st->readonly ? STORE_EXPIRE_INTERVAL_MS
				      : STORE_CKPT_INTERVAL_MS;
	pthread_setname_np(pthread_self(),
			   st->readonly ? "ap-store-expire" : "ap-store-ckpt");
	pthread_mutex_lock(&st->bg_lock);
	while (!st->bg_stop) {
		struct timespec deadline = ap_clock_deadline_ms(period);
		int rc = 0;
		while (!st->bg_stop && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&st->bg_cond, &st->bg_lock,
						    &deadline);
		if (st->bg_stop)
			break;
		pthread_mutex_unlock(&st->bg_lock);
		store_housekeep(st);
		pthread_mutex_lock(&st->bg_lock);
	}
	pthread_mutex_unlock(&st->bg_lock);
	return NULL;
}

static void store_bg_stop(ap_store *st)
{
	if (st->bg_started) {
		pthread_mutex_lock(&st->bg_lock);
		st->bg_stop = true;
		pthread_cond_signal(&st->bg_cond);
		pthread_mutex_unlock(&st->bg_lock);
		pthread_join(st->bg_thread, NULL);
		st->bg_started = false;
	}
	if (st->bg_sync_init) {
		pthread_cond_destroy(&st->bg_cond);
		pthread_mutex_destroy(&st->bg_lock);
		st->bg_sync_init = false;
	}
}

static int store_bg_start(ap_store *st, char *err, size_t errlen)
{
	if (pthread_mutex_init(&st->bg_lock, NULL) != 0)
		goto fail;
	if (ap_clock_cond_init(&st->bg_cond) != 0) {
		pthread_mutex_destroy(&st->bg_lock);
		goto fail;
	}
	st->bg_sync_init = true;
	if (pthread_create(&st->bg_thread, NULL, store_bg_main, st) != 0)
		goto fail;
	st->bg_started = true;
	return 0;
fail:
	store_err(err, errlen, "cannot start the store housekeeping thread");
	return AP_ENOMEM;
}

/* ---- transactions ------------------------------------------------------- */

int ap_store_txn_begin(ap_store *st, int flags, ap_store_txn **out)
{
	if (out == NULL)
		return AP_EINVAL;
	*out = NULL;
	if (st == NULL || st->env == NULL || !st->env_open)
		return AP_EINVAL;
	ap_store_txn *txn = calloc(1, sizeof *txn);
	if (txn == NULL)
		return AP_ENOMEM;
	txn->st = st;
	txn->flags = flags;
	/* A reader reads committed data only and never waits long for a lock
	 * (a dead daemon's locks are never released). */
	u_int32_t bflags = st->readonly ? DB_READ_COMMITTED : 0;
	int ret = st->env->txn_begin(st->env, NULL, &txn->tid, bflags);
	if (ret != 0) {
		free(txn);
		return store_rc(st, ret, "txn_begin", AP_DB_COUNT);
	}
	if (st->readonly) {
		ret = txn->tid->set_timeout(txn->tid, STORE_READER_LOCK_TIMEOUT_US,
					    DB_SET_LOCK_TIMEOUT);
		if (ret != 0) {
			txn->tid->abort(txn->tid);
			free(txn);
			return store_rc(st, ret, "txn_set_timeout", AP_DB_COUNT);
		}
	}
	*out = txn;
	return 0;
}

/* Commit consumes the transaction whatever the outcome, as DB_TXN->commit
 * does: on failure the changes are gone. */
int ap_store_txn_commit(ap_store_txn *txn)
{
	if (txn == NULL)
		return AP_EINVAL;
	ap_store *st = txn->st;
	DB_TXN *tid = txn->tid;
	int flags = txn->flags;
	free(txn);
	if (!st->readonly && store_fault(st, AP_DB_COUNT, "commit")) {
		tid->abort(tid);
		return AP_EIO;
	}
	int ret = tid->commit(tid, (flags & AP_TXN_SYNC) ? DB_TXN_SYNC : 0);
	return store_rc(st, ret, "commit", AP_DB_COUNT);
}

void ap_store_txn_abort(ap_store_txn *txn)
{
	if (txn == NULL)
		return;
	int ret = txn->tid->abort(txn->tid);
	if (ret != 0)
		(void)store_rc(txn->st, ret, "abort", AP_DB_COUNT);
	free(txn);
}

static int store_args(const ap_store_txn *txn, ap_store_db db,
		      const void *key, size_t klen)
{
	if (txn == NULL || (unsigned)db >= AP_DB_COUNT || key == NULL ||
	    klen > UINT32_MAX)
		return AP_EINVAL;
	if (txn->st->dbs[db] == NULL)
		return AP_EINVAL;
	return 0;
}

int ap_store_put(ap_store_txn *txn, ap_store_db db, const void *key,
		 size_t klen, const void *val, size_t vlen)
{
	int rc = store_args(txn, db, key, klen);
	if (rc != 0)
		return rc;
	if ((val == NULL && vlen > 0) || vlen > UINT32_MAX)
		return AP_EINVAL;
	ap_store *st = txn->st;
	if (st->readonly)
		return AP_EINVAL;
	if (store_fault(st, db, "put"))
		return AP_EIO;
	DBT k = { .data = (void *)key, .size = (u_int32_t)klen };
	DBT v = { .data = (void *)val, .size = (u_int32_t)vlen };
	int ret = st->dbs[db]->put(st->dbs[db], txn->tid, &k, &v, 0);
	return store_rc(st, ret, "put", db);
}

int ap_store_get(ap_store_txn *txn, ap_store_db db, const void *key,
		 size_t klen, void **val, size_t *vlen)
{
	if (val != NULL)
		*val = NULL;
	if (vlen != NULL)
		*vlen = 0;
	int rc = store_args(txn, db, key, klen);
	if (rc != 0)
		return rc;
	if (val == NULL || vlen == NULL)
		return AP_EINVAL;
	ap_store *st = txn->st;
	DBT k = { .data = (void *)key, .size = (u_int32_t)klen };
	DBT v = { .flags = DB_DBT_MALLOC };
	/* In the daemon a get is nearly always the read of a read-modify-
	 * write; DB_RMW takes the write lock at once, so two such transactions
	 * on one page queue behind each other instead of both taking a read
	 * lock and deadlocking on the upgrade. Readers never write. */
	u_int32_t gflags = st->readonly ? 0 : DB_RMW;
	int ret = st->dbs[db]->get(st->dbs[db], txn->tid, &k, &v, gflags);
	rc = store_rc(st, ret, "get", db);
	if (rc != 0) {
		free(v.data);
		return rc;
	}
	if (v.data == NULL) {
		/* An empty value: still hand back something free()able. */
		v.data = malloc(1);
		if (v.data == NULL)
			return AP_ENOMEM;
	}
	*val = v.data;
	*vlen = v.size;
	return 0;
}

int ap_store_del(ap_store_txn *txn, ap_store_db db, const void *key,
		 size_t klen)
{
	int rc = store_args(txn, db, key, klen);
	if (rc != 0)
		return rc;
	ap_store *st = txn->st;
	if (st->readonly)
		return AP_EINVAL;
	if (store_fault(st, db, "del"))
		return AP_EIO;
	DBT k = { .data = (void *)key, .size = (u_int32_t)klen };
	int ret = st->dbs[db]->del(st->dbs[db], txn->tid, &k, 0);
	return store_rc(st, ret, "del", db);
}

int ap_store_run(ap_store *st, int flags, ap_store_txn_fn fn, void *arg)
{
	if (st == NULL || fn == NULL)
		return AP_EINVAL;
	int max = st->readonly ? STORE_READER_MAX_ATTEMPTS : STORE_MAX_ATTEMPTS;
	for (int attempt = 0; attempt < max; attempt++) {
		if (attempt > 0) {
			atomic_fetch_add(&st->retries, 1);
			store_backoff(attempt - 1);
		}
		ap_store_txn *txn;
		int rc = ap_store_txn_begin(st, flags, &txn);
		if (rc == AP_ERETRY)
			continue;
		if (rc != 0)
			return rc;
		rc = fn(txn, arg);
		if (rc == 0)
			rc = ap_store_txn_commit(txn);
		else
			ap_store_txn_abort(txn);
		if (rc != AP_ERETRY)
			return rc;
	}
	AP_ERROR("BerkeleyDB transaction kept deadlocking, giving up",
		 AP_F_STR("dir", st->dir), AP_F_INT("attempts", max));
	return AP_EIO;
}

/* ---- scans -------------------------------------------------------------- */

/* A batch of copied records: [u32 klen][u32 vlen][key][value] ... */
typedef struct store_batch {
	uint8_t *buf;
	size_t len, cap;
	size_t count;
} store_batch;

static int batch_add(store_batch *b, const DBT *k, const DBT *v)
{
	size_t need = 8 + (size_t)k->size + (size_t)v->size;
	if (b->cap - b->len < need) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap - b->len < need)
			cap *= 2;
		uint8_t *p = realloc(b->buf, cap);
		if (p == NULL)
			return AP_ENOMEM;
		b->buf = p;
		b->cap = cap;
	}
	uint32_t sizes[2] = { k->size, v->size };
	memcpy(b->buf + b->len, sizes, sizeof sizes);
	b->len += 8;
	if (k->size)
		memcpy(b->buf + b->len, k->data, k->size);
	b->len += k->size;
	if (v->size)
		memcpy(b->buf + b->len, v->data, v->size);
	b->len += v->size;
	b->count++;
	return 0;
}

/* Copy the next batch of `db` into b: the records from key `last` on
 * (inclusive), or after it (!inclusive), or from the first key when last
 * is NULL. *done is set when the cursor ran off the end. */
static int store_scan_fill(ap_store *st, ap_store_db db, const void *last,
			   size_t lastlen, bool inclusive, store_batch *b,
			   bool *done)
{
	DB *dbp = st->dbs[db];
	DB_TXN *tid = NULL;
	DBC *dbc = NULL;
	DBT k = { .flags = DB_DBT_REALLOC };
	DBT v = { .flags = DB_DBT_REALLOC };
	int ret, rc;

	b->len = 0;
	b->count = 0;
	*done = false;
	if (st->readonly) {
		/* See the top comment: a reader's locks must time out. */
		ret = st->env->txn_begin(st->env, NULL, &tid, DB_READ_COMMITTED);
		if (ret == 0)
			ret = tid->set_timeout(tid, STORE_READER_LOCK_TIMEOUT_US,
					       DB_SET_LOCK_TIMEOUT);
		if (ret != 0) {
			rc = store_rc(st, ret, "scan_txn", db);
			goto out;
		}
	}
	ret = dbp->cursor(dbp, tid, &dbc, DB_READ_COMMITTED);
	if (ret != 0) {
		rc = store_rc(st, ret, "cursor", db);
		goto out;
	}
	if (last != NULL) {
		k.data = malloc(lastlen ? lastlen : 1);
		if (k.data == NULL) {
			rc = AP_ENOMEM;
			goto out;
		}
		memcpy(k.data, last, lastlen);
		k.size = (u_int32_t)lastlen;
		ret = dbc->get(dbc, &k, &v, DB_SET_RANGE);
		if (ret == 0 && !inclusive && k.size == lastlen &&
		    memcmp(k.data, last, lastlen) == 0)
			ret = dbc->get(dbc, &k, &v, DB_NEXT);
	} else {
		ret = dbc->get(dbc, &k, &v, DB_FIRST);
	}
	while (ret == 0) {
		rc = batch_add(b, &k, &v);
		if (rc != 0)
			goto out;
		if (b->count >= STORE_SCAN_BATCH_RECORDS ||
		    b->len >= STORE_SCAN_BATCH_BYTES)
			break;
		ret = dbc->get(dbc, &k, &v, DB_NEXT);
	}
	if (ret == DB_NOTFOUND) {
		*done = true;
		ret = 0;
	}
	rc = store_rc(st, ret, "scan", db);
out:
	if (dbc != NULL) {
		ret = dbc->close(dbc);
		if (ret != 0 && rc == 0)
			rc = store_rc(st, ret, "cursor_close", db);
	}
	if (tid != NULL) {
		/* Nothing was written: abort and commit are equivalent. */
		ret = tid->abort(tid);
		if (ret != 0 && rc == 0)
			rc = store_rc(st, ret, "scan_txn_end", db);
	}
	free(k.data);
	free(v.data);
	return rc;
}

int ap_store_scan(ap_store *st, ap_store_db db, ap_store_visit_fn fn,
		  void *arg)
{
	return ap_store_scan_from(st, db, NULL, 0, fn, arg);
}

int ap_store_scan_from(ap_store *st, ap_store_db db, const void *start,
		       size_t klen, ap_store_visit_fn fn, void *arg)
{
	if (st == NULL || fn == NULL || (unsigned)db >= AP_DB_COUNT ||
	    st->dbs[db] == NULL || (start == NULL && klen > 0) ||
	    klen > UINT32_MAX)
		return AP_EINVAL;
	store_batch b = { 0 };
	uint8_t *last = NULL;
	size_t lastlen = 0;
	/* `last` is where the next batch starts: at the caller's start key
	 * (inclusive) for the first batch, after the last key seen later. */
	bool have_last = false, inclusive = false, done = false;
	int attempt = 0, rc = 0;
	if (klen > 0) {
		last = malloc(klen);
		if (last == NULL)
			return AP_ENOMEM;
		memcpy(last, start, klen);
		lastlen = klen;
		have_last = inclusive = true;
	}
	int max = st->readonly ? STORE_READER_MAX_ATTEMPTS : STORE_MAX_ATTEMPTS;

	while (!done) {
		rc = store_scan_fill(st, db, have_last ? last : NULL, lastlen,
				     inclusive, &b, &done);
		if (rc == AP_ERETRY) {
			if (++attempt >= max) {
				AP_ERROR("BerkeleyDB scan kept hitting locks, giving up",
					 AP_F_STR("db", store_db_name(db)),
					 AP_F_STR("dir", st->dir),
					 AP_F_INT("attempts", attempt));
				rc = AP_EIO;
				goto out;
			}
			atomic_fetch_add(&st->retries, 1);
			store_backoff(attempt - 1);
			done = false;
			continue;
		}
		if (rc != 0)
			goto out;
		attempt = 0;
		size_t off = 0;
		const uint8_t *lk = NULL;
		size_t lklen = 0;
		for (size_t i = 0; i < b.count; i++) {
			uint32_t sizes[2];
			memcpy(sizes, b.buf + off, sizeof sizes);
			off += 8;
			const uint8_t *key = b.buf + off;
			const uint8_t *val = key + sizes[0];
			off += (size_t)sizes[0] + sizes[1];
			rc = fn(arg, key, sizes[0], val, sizes[1]);
			if (rc != 0)
				goto out;
			lk = key;
			lklen = sizes[0];
		}
		if (lk != NULL) {
			uint8_t *p = realloc(last, lklen ? lklen : 1);
			if (p == NULL) {
				rc = AP_ENOMEM;
				goto out;
			}
			last = p;
			memcpy(last, lk, lklen);
			lastlen = lklen;
			have_last = true;
			inclusive = false;
		}
	}
	rc = 0;
out:
	free(b.buf);
	free(last);
	return rc;
}

/* ---- open / close ------------------------------------------------------- */

/* mkdir -p with mode 0700 for every directory we create. */
static int store_mkdirs(const char *dir, char *err, size_t errlen)
{
	char *path = strdup(dir);
	if (path == NULL)
		return AP_ENOMEM;
	int rc = 0;
	for (char *p = path + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			store_err(err, errlen, "cannot create directory %s: %s",
				  path, strerror(errno));
			rc = AP_EIO;
			break;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	free(path);
	return rc;
}

/* The transaction run at daemon open: check or write the schema version,
 * read the clean-shutdown flag of the previous run, mark this one running. */
typedef struct store_meta_open {
	bool fresh, unclean;
	char found[32]; /* printable copy of a foreign schema version */
} store_meta_open;

static bool meta_is(const void *val, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(val, want, len) == 0;
}

static void meta_printable(char *dst, size_t dstlen, const void *val,
			   size_t len)
{
	const unsigned char *s = val;
	size_t j = 0;
	for (size_t i = 0; i < len && j + 1 < dstlen; i++)
		dst[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
	dst[j] = '\0';
}

static int store_meta_open_txn(ap_store_txn *txn, void *arg)
{
	store_meta_open *m = arg;
	void *val = NULL;
	size_t len = 0;
	m->fresh = m->unclean = false;
	m->found[0] = '\0';

	int rc = ap_store_get(txn, AP_DB_META, STORE_META_SCHEMA,
			      strlen(STORE_META_SCHEMA), &val, &len);
	if (rc == AP_ENOTFOUND) {
		m->fresh = true;
		rc = ap_store_put(txn, AP_DB_META, STORE_META_SCHEMA,
				  strlen(STORE_META_SCHEMA), STORE_SCHEMA_VERSION,
				  strlen(STORE_SCHEMA_VERSION));
	} else if (rc == 0 && !meta_is(val, len, STORE_SCHEMA_VERSION)) {
		meta_printable(m->found, sizeof m->found, val, len);
		rc = AP_EVERSION;
	}
	free(val);
	val = NULL;
	if (rc != 0)
		return rc;

	rc = ap_store_get(txn, AP_DB_META, STORE_META_CLEAN,
			  strlen(STORE_META_CLEAN), &val, &len);
	if (rc == 0)
		m->unclean = !meta_is(val, len, "1");
	else if (rc == AP_ENOTFOUND)
		m->unclean = !m->fresh;
	free(val);
	if (rc != 0 && rc != AP_ENOTFOUND)
		return rc;
	return ap_store_put(txn, AP_DB_META, STORE_META_CLEAN,
			    strlen(STORE_META_CLEAN), "0", 1);
}

static int store_meta_close_txn(ap_store_txn *txn, void *arg)
{
	(void)arg;
	return ap_store_put(txn, AP_DB_META, STORE_META_CLEAN,
			    strlen(STORE_META_CLEAN), "1", 1);
}

/* A reader checks the schema version (when there is one yet). */
static int store_meta_read_txn(ap_store_txn *txn, void *arg)
{
	store_meta_open *m = arg;
	void *val = NULL;
	size_t len = 0;
	m->found[0] = '\0';
	int rc = ap_store_get(txn, AP_DB_META, STORE_META_SCHEMA,
			      strlen(STORE_META_SCHEMA), &val, &len);
	if (rc == 0 && !meta_is(val, len, STORE_SCHEMA_VERSION)) {
		meta_printable(m->found, sizeof m->found, val, len);
		rc = AP_EVERSION;
	} else if (rc == AP_ENOTFOUND) {
		rc = 0;
	}
	free(val);
	return rc;
}

static int store_env_configure(ap_store *st, ap_durability durability)
{
	DB_ENV *env = st->env;
	int ret;
	if ((ret = env->set_cachesize(env, 0, STORE_CACHE_BYTES, 1)) != 0 ||
	    (ret = env->set_lk_detect(env, DB_LOCK_DEFAULT)) != 0 ||
	    (ret = env->set_lk_max_locks(env, STORE_MAX_LOCKS)) != 0 ||
	    (ret = env->set_lk_max_objects(env, STORE_MAX_LOCK_OBJECTS)) != 0 ||
	    (ret = env->set_lk_max_lockers(env, STORE_MAX_LOCKERS)) != 0 ||
	    (ret = env->set_tx_max(env, STORE_MAX_TXNS)) != 0 ||
	    (ret = env->log_set_config(env, DB_LOG_AUTO_REMOVE, 1)) != 0)
		return ret;
	switch (durability) {
	case AP_DURABILITY_SYNC:
		break;
	case AP_DURABILITY_WRITE_NOSYNC:
		ret = env->set_flags(env, DB_TXN_WRITE_NOSYNC, 1);
		break;
	case AP_DURABILITY_NOSYNC:
		ret = env->set_flags(env, DB_TXN_NOSYNC, 1);
		break;
	default:
		ret = EINVAL;
		break;
	}
	return ret;
}

/* Open one database. A reader opens inside a short transaction whose lock
 * wait is bounded; the daemon opens (and creates) with DB_AUTO_COMMIT. */
static int store_db_open(ap_store *st, ap_store_db db, char *err,
			 size_t errlen)
{
	DB *dbp;
	int ret = db_create(&dbp, st->env, 0);
	if (ret != 0) {
		store_err(err, errlen, "cannot create a handle for %s: %s",
			  store_db_files[db], db_strerror(ret));
		return ret == ENOMEM ? AP_ENOMEM : AP_EIO;
	}
	st->dbs[db] = dbp; /* closed by ap_store_close even if open fails */
	if (st->readonly) {
		ap_store_txn *txn;
		int rc = ap_store_txn_begin(st, 0, &txn);
		if (rc != 0) {
			store_err(err, errlen, "cannot open %s/%s: %s", st->dir,
				  store_db_files[db], ap_strerror(rc));
			return rc == AP_ERETRY ? AP_EIO : rc;
		}
		ret = dbp->open(dbp, txn->tid, store_db_files[db], NULL, DB_BTREE,
				DB_RDONLY | DB_THREAD, 0);
		if (ret == 0) {
			rc = ap_store_txn_commit(txn);
			if (rc != 0) {
				store_err(err, errlen, "cannot open %s/%s: %s",
					  st->dir, store_db_files[db],
					  ap_strerror(rc));
				return rc == AP_ERETRY ? AP_EIO : rc;
			}
			return 0;
		}
		ap_store_txn_abort(txn);
	} else {
		ret = dbp->open(dbp, NULL, store_db_files[db], NULL, DB_BTREE,
				DB_AUTO_COMMIT | DB_CREATE | DB_THREAD, 0600);
		if (ret == 0)
			return 0;
	}
	store_err(err, errlen, "cannot open %s/%s: %s", st->dir,
		  store_db_files[db], db_strerror(ret));
	return (st->readonly && ret == ENOENT) ? AP_ENOTFOUND : AP_EIO;
}

int ap_store_open(ap_store **out, const ap_store_options *opt, char *err,
		  size_t errlen)
{
	int rc, ret;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out == NULL)
		return AP_EINVAL;
	*out = NULL;
	if (opt == NULL || opt->dir == NULL || opt->dir[0] == '\0') {
		store_err(err, errlen, "no storage directory given");
		return AP_EINVAL;
	}
	if (!opt->readonly && opt->durability != AP_DURABILITY_SYNC &&
	    opt->durability != AP_DURABILITY_WRITE_NOSYNC &&
	    opt->durability != AP_DURABILITY_NOSYNC) {
		store_err(err, errlen, "unknown storage durability %d",
			  (int)opt->durability);
		return AP_EINVAL;
	}
	ap_store *st = calloc(1, sizeof *st);
	if (st == NULL || (st->dir = strdup(opt->dir)) == NULL) {
		free(st);
		store_err(err, errlen, "out of memory");
		return AP_ENOMEM;
	}
	st->readonly = opt->readonly;
	atomic_init(&st->retries, 0);

	struct stat sb;
	if (stat(st->dir, &sb) != 0) {
		if (errno != ENOENT) {
			store_err(err, errlen, "cannot access %s: %s", st->dir,
				  strerror(errno));
			rc = AP_EIO;
			goto fail;
		}
		if (st->readonly) {
			store_err(err, errlen, "no database at %s", st->dir);
			rc = AP_ENOTFOUND;
			goto fail;
		}
		if ((rc = store_mkdirs(st->dir, err, errlen)) != 0)
			goto fail;
	} else if (!S_ISDIR(sb.st_mode)) {
		store_err(err, errlen, "%s is not a directory", st->dir);
		rc = AP_EIO;
		goto fail;
	}

	if ((ret = db_env_create(&st->env, 0)) != 0) {
		st->env = NULL;
		store_err(err, errlen, "cannot create a BerkeleyDB environment "
			  "handle: %s", db_strerror(ret));
		rc = ret == ENOMEM ? AP_ENOMEM : AP_EIO;
		goto fail;
	}
	st->env->set_errcall(st->env, store_errcall);
	st->env->set_errpfx(st->env, st->dir);
	st->env->set_msgcall(st->env, store_msgcall);

	u_int32_t flags = DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG |
			  DB_INIT_MPOOL | DB_THREAD;
	if (!st->readonly) {
		if ((ret = store_env_configure(st, opt->durability)) != 0) {
			store_err(err, errlen, "cannot configure the BerkeleyDB "
				  "environment: %s", db_strerror(ret));
			rc = AP_EIO;
			goto fail;
		}
		flags |= DB_CREATE | DB_RECOVER;
	}
	ret = st->env->open(st->env, st->dir, flags, 0600);
	if (ret != 0) {
		if (st->readonly && ret == ENOENT) {
			store_err(err, errlen, "no database environment at %s",
				  st->dir);
			rc = AP_ENOTFOUND;
		} else {
			store_err(err, errlen, "cannot open the BerkeleyDB "
				  "environment at %s: %s", st->dir,
				  db_strerror(ret));
			rc = AP_EIO;
		}
		goto fail;
	}
	st->env_open = true;
	/* A reader's lock waits expire only while this thread runs. */
	if (st->readonly && (rc = store_bg_start(st, err, errlen)) != 0)
		goto fail;

	for (int db = 0; db < AP_DB_COUNT; db++)
		if ((rc = store_db_open(st, (ap_store_db)db, err, errlen)) != 0)
			goto fail;

	store_meta_open m = { 0 };
	if (st->readonly) {
		rc = ap_store_run(st, 0, store_meta_read_txn, &m);
	} else {
		rc = ap_store_run(st, AP_TXN_SYNC, store_meta_open_txn, &m);
		if (rc == 0) {
			st->marked_running = true;
			st->unclean = m.unclean;
		}
	}
	if (rc == AP_EVERSION) {
		store_err(err, errlen, "the database at %s has schema version "
			  "'%s'; this build of ap reads schema version %s only",
			  st->dir, m.found, STORE_SCHEMA_VERSION);
		goto fail;
	}
	if (rc != 0) {
		store_err(err, errlen, "cannot read the store metadata at %s: %s",
			  st->dir, ap_strerror(rc));
		goto fail;
	}
	if (!st->readonly && (rc = store_bg_start(st, err, errlen)) != 0)
		goto fail;

	if (!st->readonly)
		AP_INFO("Store opened", AP_F_STR("dir", st->dir),
			AP_F_BOOL("fresh", m.fresh),
			AP_F_BOOL("unclean_shutdown", st->unclean));
	*out = st;
	return 0;
fail:
	ap_store_close(st);
	return rc;
}

void ap_store_close(ap_store *st)
{
	if (st == NULL)
		return;
	store_bg_stop(st);
	if (st->marked_running) {
		int rc = ap_store_run(st, AP_TXN_SYNC, store_meta_close_txn, NULL);
		if (rc != 0)
			AP_ERROR("Cannot mark the store cleanly closed",
				 AP_F_STR("dir", st->dir),
				 AP_F_STR("error", ap_strerror(rc)));
		st->marked_running = false;
	}
	if (st->env_open && !st->readonly) {
		int ret = st->env->txn_checkpoint(st->env, 0, 0, DB_FORCE);
		if (ret != 0)
			(void)store_rc(st, ret, "checkpoint", AP_DB_COUNT);
	}
	for (int db = 0; db < AP_DB_COUNT; db++) {
		if (st->dbs[db] != NULL) {
			int ret = st->dbs[db]->close(st->dbs[db], 0);
			if (ret != 0)
				(void)store_rc(st, ret, "close", (ap_store_db)db);
			st->dbs[db] = NULL;
		}
	}
	if (st->env != NULL) {
		int ret = st->env->close(st->env, 0);
		if (ret != 0 && st->env_open)
			(void)store_rc(st, ret, "env_close", AP_DB_COUNT);
		st->env = NULL;
	}
	free(st->dir);
	free(st);
}

int ap_store_checkpoint(ap_store *st)
{
	if (st == NULL || !st->env_open)
		return AP_EINVAL;
	if (st->readonly)
		return 0;
	int ret = st->env->txn_checkpoint(st->env, 0, 0, DB_FORCE);
	if (ret == 0)
		return 0;
	(void)store_rc(st, ret, "checkpoint", AP_DB_COUNT);
	return AP_EIO;
}

bool ap_store_was_unclean(const ap_store *st)
{
	return st != NULL && st->unclean;
}

const char *ap_store_dir(const ap_store *st)
{
	return st != NULL ? st->dir : NULL;
}

uint64_t ap_store_retries(const ap_store *st)
{
	return st != NULL ? atomic_load(&((ap_store *)st)->retries) : 0;
}

static pthread_once_t store_version_once = PTHREAD_ONCE_INIT;
static char store_version_str[64];

static void store_version_init(void)
{
	int major, minor, patch;
	(void)db_version(&major, &minor, &patch);
	snprintf(store_version_str, sizeof store_version_str,
		 "BerkeleyDB %d.%d.%d", major, minor, patch);
}

const char *ap_store_version(void)
{
	pthread_once(&store_version_once, store_version_init);
	return store_version_str;
}
