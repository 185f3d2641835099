/* The assignment map: see include/ap/assign.h for the lock rule.
 *
 * Each entry sits in one owner bucket's doubly linked list, so moving a task
 * between owners, counting an owner's tasks and listing them are O(1) per
 * task. Buckets are kept (with count 0) once created; there are as many as
 * operators ever seen, which is small next to the tasks. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

#include "ap/assign.h"
#include "ap/error.h"
#include "ap/record.h"

typedef struct entry {
	char task_id[AP_TASK_ID_MAX + 1];
	char previous[AP_ADDRESS_LEN + 1]; /* owner before it became an orphan */
	uint64_t generation;
	int64_t assigned_at;
	struct bucket *bucket;
	struct entry *prev, *next; /* in bucket->entries */
	UT_hash_handle hh;
} entry;

typedef struct bucket {
	char owner[AP_ADDRESS_LEN + 1]; /* "" = orphans */
	uint32_t count;
	entry *entries;
	UT_hash_handle hh;
} bucket;

struct ap_assign {
	pthread_rwlock_t rwlock;
	entry *by_task;
	bucket *by_owner;
	size_t tracked;
};

int ap_assign_open(ap_assign **out)
{
	ap_assign *a = calloc(1, sizeof *a);
	if (!a)
		return AP_ENOMEM;
	pthread_rwlock_init(&a->rwlock, NULL);
	*out = a;
	return 0;
}

void ap_assign_close(ap_assign *a)
{
	if (!a)
		return;
	entry *e, *et;
	HASH_ITER(hh, a->by_task, e, et) {
		HASH_DEL(a->by_task, e);
		free(e);
	}
	bucket *b, *bt;
	HASH_ITER(hh, a->by_owner, b, bt) {
		HASH_DEL(a->by_owner, b);
		free(b);
	}
	pthread_rwlock_destroy(&a->rwlock);
	free(a);
}

static bucket *find_bucket(ap_assign *a, const char *owner)
{
	bucket *b;
	HASH_FIND_STR(a->by_owner, owner, b);
	return b;
}

bool ap_assign_owner(ap_assign *a, const char *task_id, char owner_out[AP_ADDRESS_LEN + 1])
{
	entry *e;
	pthread_rwlock_rdlock(&a->rwlock);
	HASH_FIND_STR(a->by_task, task_id, e);
	if (e)
		memcpy(owner_out, e->bucket->owner, AP_ADDRESS_LEN + 1);
	else
		owner_out[0] = '\0';
	pthread_rwlock_unlock(&a->rwlock);
	return e != NULL;
}

uint32_t ap_assign_owned_count_locked(ap_assign *a, const char *owner)
{
	bucket *b = find_bucket(a, owner);
	return b ? b->count : 0;
}

uint32_t ap_assign_owned_count(ap_assign *a, const char *owner)
{
	pthread_rwlock_rdlock(&a->rwlock);
	uint32_t n = ap_assign_owned_count_locked(a, owner);
	pthread_rwlock_unlock(&a->rwlock);
	return n;
}

size_t ap_assign_orphan_count(ap_assign *a)
{
	return ap_assign_owned_count(a, "");
}

size_t ap_assign_tracked_count(ap_assign *a)
{
	pthread_rwlock_rdlock(&a->rwlock);
	size_t n = a->tracked;
	pthread_rwlock_unlock(&a->rwlock);
	return n;
}

size_t ap_assign_list_locked(ap_assign *a, const char *owner, ap_task_ref **out,
			     bool *oom)
{
	*out = NULL;
	if (oom)
		*oom = false;
	bucket *b = find_bucket(a, owner);
	if (!b || b->count == 0)
		return 0;
	ap_task_ref *ids = malloc(b->count * sizeof *ids);
	if (!ids) {
		if (oom)
			*oom = true;
		return 0;
	}
	size_t n = 0;
	entry *e;
	DL_FOREACH(b->entries, e) memcpy(ids[n++].id, e->task_id, sizeof ids[0].id);
	*out = ids;
	return n;
}

const char *ap_assign_previous_locked(ap_assign *a, const char *task_id)
{
	entry *e;
	HASH_FIND_STR(a->by_task, task_id, e);
	return e ? e->previous : "";
}

void ap_assign_each_owner_locked(ap_assign *a,
				 void (*fn)(void *arg, const char *owner, uint32_t n),
				 void *arg)
{
	bucket *b, *bt;
	HASH_ITER(hh, a->by_owner, b, bt) {
		if (b->owner[0] && b->count)
			fn(arg, b->owner, b->count);
	}
}

int ap_assign_persist_set(ap_store_txn *txn, const char *task_id,
			  const char *owner, uint64_t generation, int64_t at_ms)
{
	if (!owner[0])
		return ap_assign_persist_clear(txn, task_id);
	Apstore__AssignmentRecord r = APSTORE__ASSIGNMENT_RECORD__INIT;
	r.owner = (char *)owner;
	r.generation = generation;
	r.assigned_at = at_ms;
	uint8_t *buf;
	size_t len;
	int rc = ap_record_pack(&r.base, &buf, &len);
	if (rc)
		return rc;
	rc = ap_store_put(txn, AP_DB_ASSIGNMENTS, task_id, strlen(task_id), buf, len);
	free(buf);
	return rc;
}

int ap_assign_persist_clear(ap_store_txn *txn, const char *task_id)
{
	int rc = ap_store_del(txn, AP_DB_ASSIGNMENTS, task_id, strlen(task_id));
	return rc == AP_ENOTFOUND ? 0 : rc;
}

static bucket *get_bucket(ap_assign *a, const char *owner)
{
	bucket *b = find_bucket(a, owner);
	if (b)
		return b;
	b = calloc(1, sizeof *b);
	if (!b)
		return NULL;
	snprintf(b->owner, sizeof b->owner, "%s", owner);
	HASH_ADD_STR(a->by_owner, owner, b);
	return b;
}

static void unlink_entry(entry *e)
{
	DL_DELETE(e->bucket->entries, e);
	e->bucket->count--;
	e->bucket = NULL;
}

int ap_assign_set(ap_assign *a, const char *task_id, const char *owner,
		  uint64_t generation, int64_t at_ms)
{
	int rc = 0;
	pthread_rwlock_wrlock(&a->rwlock);
	bucket *b = get_bucket(a, owner);
	entry *e;
	HASH_FIND_STR(a->by_task, task_id, e);
	if (!b) {
		rc = AP_ENOMEM;
		goto out;
	}
	if (!e) {
		e = calloc(1, sizeof *e);
		if (!e) {
			rc = AP_ENOMEM;
			goto out;
		}
		snprintf(e->task_id, sizeof e->task_id, "%s", task_id);
		HASH_ADD_STR(a->by_task, task_id, e);
		a->tracked++;
	} else {
		if (!owner[0] && e->bucket->owner[0])
			memcpy(e->previous, e->bucket->owner, sizeof e->previous);
		unlink_entry(e);
	}
	e->generation = generation;
	e->assigned_at = at_ms;
	e->bucket = b;
	DL_APPEND(b->entries, e);
	b->count++;
out:
	pthread_rwlock_unlock(&a->rwlock);
	return rc;
}

void ap_assign_untrack(ap_assign *a, const char *task_id)
{
	pthread_rwlock_wrlock(&a->rwlock);
	entry *e;
	HASH_FIND_STR(a->by_task, task_id, e);
	if (e) {
		unlink_entry(e);
		HASH_DEL(a->by_task, e);
		a->tracked--;
		free(e);
	}
	pthread_rwlock_unlock(&a->rwlock);
}
