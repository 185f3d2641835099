/* The assignment map (SPEC sections 1, 3 and 4): task id -> owner address.
 *
 * Only assignable tasks (enabled, not manual) have an entry; an entry whose
 * owner is "" is an orphan. A per-owner index (owner -> its entries and
 * their count) makes "tasks of operator X" and "least-loaded operator"
 * cheap; orphans are the index entry of "".
 *
 * Lock rule: `rwlock` (a pthread_rwlock_t) guards the map and the index.
 * Writers hold the engine lock AND take the write lock for the in-memory
 * change only, after the BerkeleyDB transaction that persists the change
 * has committed (ap_assign_persist_* write into that transaction), so the
 * map never shows an owner the database does not have and the rwlock is
 * never held across I/O. Readers outside the engine lock (NotifyTriggers'
 * owner check, ListTasks) take the read lock. Code holding the engine lock
 * may read without the rwlock (the _locked functions): no writer can run.
 * The rwlock is a leaf: nothing is called while it is held. */
#ifndef AP_ASSIGN_H
#define AP_ASSIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap/session.h"
#include "ap/store.h"

typedef struct ap_assign ap_assign;

/* A task id, by value, for lists that outlive map changes. */
typedef struct ap_task_ref {
	char id[AP_TASK_ID_MAX + 1];
} ap_task_ref;

int ap_assign_open(ap_assign **out);
void ap_assign_close(ap_assign *a);

/* -- readers (any thread; take the read lock) -- */
/* True when the task is tracked; owner_out gets its owner ("" = orphan). */
bool ap_assign_owner(ap_assign *a, const char *task_id,
		     char owner_out[AP_ADDRESS_LEN + 1]);
uint32_t ap_assign_owned_count(ap_assign *a, const char *owner);
size_t ap_assign_orphan_count(ap_assign *a);
size_t ap_assign_tracked_count(ap_assign *a);

/* -- readers holding the engine lock (no rwlock) -- */
uint32_t ap_assign_owned_count_locked(ap_assign *a, const char *owner);
/* Copy the ids owned by `owner` ("" = orphans) into a malloc'd array.
 * Returns the count; *out is NULL when there are none or on ENOMEM
 * (then returns 0 and *oom is set when oom != NULL). */
size_t ap_assign_list_locked(ap_assign *a, const char *owner, ap_task_ref **out,
			     bool *oom);
/* The owner the task had before it was orphaned ("" when unknown). */
const char *ap_assign_previous_locked(ap_assign *a, const char *task_id);
/* Every owner with at least one task: calls fn(arg, owner, count). */
void ap_assign_each_owner_locked(ap_assign *a,
				 void (*fn)(void *arg, const char *owner, uint32_t n),
				 void *arg);

/* -- persistence, inside the caller's transaction -- */
int ap_assign_persist_set(ap_store_txn *txn, const char *task_id,
			  const char *owner, uint64_t generation, int64_t at_ms);
/* Delete the record (orphan or untracked); a missing record is fine. */
int ap_assign_persist_clear(ap_store_txn *txn, const char *task_id);

/* -- writers: engine lock held, after the commit (take the write lock) -- */
/* Give the task to `owner` ("" = orphan), tracking it if new. */
int ap_assign_set(ap_assign *a, const char *task_id, const char *owner,
		  uint64_t generation, int64_t at_ms);
/* Stop tracking the task (disabled, deleted, completed). */
void ap_assign_untrack(ap_assign *a, const char *task_id);

#endif
