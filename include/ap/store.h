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
 * thread that began it. */
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
 * AP_EIO / AP_ENOTFOUND (readonly and no environment) / AP_ENOMEM with
 * detail in err, and *out is NULL. */
int ap_store_open(ap_store **out, const ap_store_options *opt, char *err,
		  size_t errlen);
/* Checkpoint (unless readonly), close databases and environment. Accepts
 * NULL and a half-open store. */
void ap_store_close(ap_store *st);
/* Force a checkpoint; 0 or AP_EIO. */
int ap_store_checkpoint(ap_store *st);
/* True when the previous daemon run did not close the store cleanly
 * (meta "clean_shutdown" was 0 at open). */
bool ap_store_was_unclean(const ap_store *st);
const char *ap_store_dir(const ap_store *st);

int ap_store_txn_begin(ap_store *st, int flags, ap_store_txn **out);
int ap_store_txn_commit(ap_store_txn *txn);
void ap_store_txn_abort(ap_store_txn *txn);

/* Single-record operations inside a transaction. get returns a malloc'd
 * copy in *val (caller frees) or AP_ENOTFOUND; del of a missing key is
 * AP_ENOTFOUND. Any operation may return AP_ERETRY (deadlock) or AP_EIO. */
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
 * value is returned). The key and value are valid only during the call. */
typedef int (*ap_store_visit_fn)(void *arg, const void *key, size_t klen,
				 const void *val, size_t vlen);
int ap_store_scan(ap_store *st, ap_store_db db, ap_store_visit_fn fn,
		  void *arg);

/* Fault seam (tests, issue 7): when set, every write (put, del, commit)
 * first calls hook(arg, db, op); a non-zero return makes that write fail
 * with AP_EIO as ENOSPC would (the transaction is then aborted by the
 * caller). op is "put", "del" or "commit"; db is AP_DB_COUNT for commit.
 * Process-wide; set it before starting threads that write. */
typedef int (*ap_store_fault_fn)(void *arg, ap_store_db db, const char *op);
void ap_store_set_fault_hook(ap_store_fault_fn hook, void *arg);

/* "BerkeleyDB x.y.z" for `ap version`. */
const char *ap_store_version(void);

#endif
