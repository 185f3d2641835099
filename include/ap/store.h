/* The store (SPEC section 4): one transactional BerkeleyDB environment with
 * four B-tree databases. src/store.c is the only file that includes <db.h>;
 * everything above sees opaque handles and byte strings. Record encoding
 * lives in record.c.
 *
 * The daemon opens the environment with DB_CREATE and DB_RECOVER (recovery
 * at every start). A reader (`ap status`) opens it with `readonly`: it joins
 * the existing environment, never creates files, never runs recovery, opens
 * the databases read-only and reads with read-committed cursors, so it
 * never holds a lock for longer than one page visit.
 *
 * Durability (storage.durability) is the environment's default for commits:
 * sync = fsync at commit; write_nosync = written to the OS at commit
 * (survives a process crash); nosync = neither. A transaction begun with
 * AP_TXN_SYNC always commits synchronously (task create/delete/state).
 *
 * Deadlocks: BerkeleyDB's deadlock detector picks a victim; that
 * transaction's operations return AP_ERETRY. ap_store_run() aborts and
 * retries the whole transaction function with bounded, randomised
 * exponential backoff (back-bdb's bdb_trans_backoff), up to a fixed number
 * of attempts, then returns AP_EIO.
 *
 * Errors from BerkeleyDB are logged through ap/log.h with the operation and
 * db_strerror text.
 *
 * Thread safety: the environment and database handles are opened with
 * DB_THREAD and may be used from any thread; a transaction belongs to the
 * thread that began it.
 *
 * Threads: a store owns one thread, started by ap_store_open and joined by
 * ap_store_close. In daemon mode it is "ap-store-ckpt", which checkpoints
 * every 30 s when at least 1 MiB of log was written (or 5 minutes passed),
 * so that recovery stays short and old log files are removed
 * automatically. In readonly mode it is "ap-store-expire", which makes the
 * reader's lock waits time out (see ap_store_txn_begin), so a reader never
 * hangs on a lock left behind by a killed daemon.
 *
 * The meta database keys "schema_version" and "clean_shutdown" belong to
 * the store itself; other modules may keep their own keys next to them. */
#ifndef AP_STORE_H
#define AP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap/config.h"

typedef struct ap_store ap_store;
typedef struct ap_store_txn ap_store_txn;

typedef enum {
	AP_DB_TASKS = 0,
	AP_DB_ASSIGNMENTS = 1,
	AP_DB_OPERATORS = 2,
	AP_DB_META = 3,
	AP_DB_COUNT = 4,
} ap_store_db;

enum { AP_ERETRY = -100 }; /* deadlock victim: abort and retry */

typedef struct ap_store_options {
	const char *dir;          /* environment home */
	ap_durability durability; /* default commit mode */
	bool readonly;            /* join an existing environment; create nothing */
} ap_store_options;

enum { AP_TXN_SYNC = 1 };

/* Open (creating and recovering unless readonly). On failure returns
 * AP_EIO / AP_ENOTFOUND (readonly and no environment) / AP_ENOMEM /
 * AP_EVERSION (the stored schema version is not this build's) with
 * detail in err, and *out is NULL. A readonly open of a missing directory
 * or environment creates nothing. The daemon creates a missing directory
 * (and its missing parents) with mode 0700. */
int ap_store_open(ap_store **out, const ap_store_options *opt, char *err,
		  size_t errlen);
/* Mark the store cleanly closed and checkpoint (unless readonly), close
 * databases and environment. Accepts NULL and a half-open store. */
void ap_store_close(ap_store *st);
/* Force a checkpoint; 0 or AP_EIO (a no-op returning 0 when readonly). */
int ap_store_checkpoint(ap_store *st);
/* True when the previous daemon run did not close the store cleanly
 * (meta "clean_shutdown" was 0 or missing at open of an existing store).
 * Always false for a freshly created store and for a readonly store. */
bool ap_store_was_unclean(const ap_store *st);
const char *ap_store_dir(const ap_store *st);

/* Begin a transaction (flags: 0 or AP_TXN_SYNC). On a readonly store the
 * transaction reads committed data and waits at most about 1 s for a lock
 * (AP_ERETRY after that; ap_store_run then gives up after 3 attempts with
 * AP_EIO). The returned handle is freed by exactly one of commit or
 * abort. */
int ap_store_txn_begin(ap_store *st, int flags, ap_store_txn **out);
/* Commit and free txn, whatever the result (as DB_TXN->commit does): on
 * failure (AP_EIO, AP_ERETRY) the transaction's changes are discarded. */
int ap_store_txn_commit(ap_store_txn *txn);
/* Discard the changes and free txn; accepts NULL. */
void ap_store_txn_abort(ap_store_txn *txn);

/* Single-record operations inside a transaction. get returns a malloc'd
 * copy in *val (caller frees) or AP_ENOTFOUND; del of a missing key is
 * AP_ENOTFOUND. Any operation may return AP_ERETRY (deadlock) or AP_EIO.
 * put and del on a readonly store return AP_EINVAL. Keys and values are
 * limited to 4 GiB - 1 bytes (AP_EINVAL beyond). On a daemon store get
 * write-locks the record's page (DB_RMW), as the read of a
 * read-modify-write should, so concurrent updates of one record queue
 * instead of deadlocking. */
int ap_store_put(ap_store_txn *txn, ap_store_db db, const void *key,
		 size_t klen, const void *val, size_t vlen);
int ap_store_get(ap_store_txn *txn, ap_store_db db, const void *key,
		 size_t klen, void **val, size_t *vlen);
int ap_store_del(ap_store_txn *txn, ap_store_db db, const void *key,
		 size_t klen);

/* Run fn inside a transaction, committing when it returns 0, aborting
 * otherwise; retried on AP_ERETRY. fn may run more than once, so it must
 * not change anything outside the transaction. */
typedef int (*ap_store_txn_fn)(ap_store_txn *txn, void *arg);
int ap_store_run(ap_store *st, int flags, ap_store_txn_fn fn, void *arg);

/* Visit every record of `db` in key order with a read-committed cursor
 * outside any transaction. fn returns 0 to go on, non-zero to stop (that
 * value is returned). The key and value are valid only during the call.
 * Records are copied out in batches (256 records or 256 KiB) and the
 * cursor is closed before fn runs, so no lock is held while fn runs and fn
 * may itself write to `db`; a record inserted or deleted during the scan
 * after the current key may or may not be visited. Returns AP_EIO when
 * locks kept conflicting (e.g. a reader against a dead daemon's lock). On
 * a readonly store each batch is read inside a short read-committed
 * transaction, for the lock timeout (see ap_store_txn_begin). The scan is
 * not part of any transaction of the caller: do not call it from inside a
 * transaction function that has written to `db` (the scan would wait for
 * that transaction's locks, which no detector can see, for ever). */
typedef int (*ap_store_visit_fn)(void *arg, const void *key, size_t klen,
				 const void *val, size_t vlen);
int ap_store_scan(ap_store *st, ap_store_db db, ap_store_visit_fn fn,
		  void *arg);

/* Like ap_store_scan, starting at the first key >= start (klen 0: the
 * first key). Used for paging in key order. */
int ap_store_scan_from(ap_store *st, ap_store_db db, const void *start,
		       size_t klen, ap_store_visit_fn fn, void *arg);

/* Fault seam (tests, issue 7): when set, every write (put, del, commit)
 * first calls hook(arg, db, op); a non-zero return makes that write fail
 * with AP_EIO as ENOSPC would (the transaction is then aborted by the
 * caller). op is "put", "del" or "commit"; db is AP_DB_COUNT for commit.
 * Process-wide; set it before starting threads that write. */
typedef int (*ap_store_fault_fn)(void *arg, ap_store_db db, const char *op);
void ap_store_set_fault_hook(ap_store_fault_fn hook, void *arg);

/* Transactions (and scan batches) rerun after a deadlock or lock timeout
 * since open, for metrics and tests. Thread-safe. */
uint64_t ap_store_retries(const ap_store *st);

/* "BerkeleyDB x.y.z" for `ap version`. */
const char *ap_store_version(void);

#endif
