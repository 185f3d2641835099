/* Tasks (SPEC sections 2b and 3): the in-memory task table and the rules
 * for task ids and triggers.
 *
 * The table maps task id -> ap_task. It belongs to the engine: it is read
 * and written only with the engine lock held (see src/engine.c), so it has
 * no lock of its own. Durable changes are made by the engine: it writes the
 * record through the store first and changes the table after the commit.
 *
 * Status strings are those of SPEC section 3: "enabled", "disabled",
 * "completed", "failed". A task whose stored record cannot be decoded or
 * whose trigger is invalid is loaded as failed and never owned. */
#ifndef AP_TASK_H
#define AP_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uthash.h>

#include "admin.pb-c.h"
#include "ap/session.h"
#include "store.pb-c.h"

typedef enum {
	AP_TASK_ENABLED = 0,
	AP_TASK_DISABLED = 1,
	AP_TASK_COMPLETED = 2,
	AP_TASK_FAILED = 3,
} ap_task_status;

typedef struct ap_task ap_task;
typedef struct ap_task_table ap_task_table;

struct ap_task {
	char id[AP_TASK_ID_MAX + 1];
	ap_task_status status;
	int trigger_type;   /* Aggregator__TriggerType */
	int64_t chain_id;   /* trigger's chain, 0 = any */
	/* The stored record; `record->trigger` is what operators are sent.
	 * Owned by the task. NULL for a failed task that could not be decoded. */
	Apstore__TaskRecord *record;
	UT_hash_handle hh;  /* table internals */
};

const char *ap_task_status_name(ap_task_status st);

/* 1 to 64 characters of [A-Za-z0-9_-]. */
bool ap_task_id_valid(const char *id);
/* A new lower-case ULID (26 characters + NUL) for the current time. */
void ap_task_make_ulid(char out[27]);

/* Check a trigger: a oneof kind must be set, its type must agree with
 * `type` (an unspecified type is inferred), and its config must be usable
 * (fixed_time epochs, cron schedules, block interval > 0, event queries).
 * Writes the detail to err. Returns the trigger type or AP_EINVAL. */
int ap_task_trigger_check(const Aggregator__TaskTrigger *trigger, char *err,
			  size_t errlen);
/* The chain a trigger runs on (block and event configs), 0 otherwise. */
int64_t ap_task_trigger_chain(const Aggregator__TaskTrigger *trigger);

/* A task is "assignable" when it is enabled and not manual: only those are
 * owned, streamed and counted as orphans. */
bool ap_task_assignable(const ap_task *t);

int ap_task_table_open(ap_task_table **out);
/* Frees every task. NULL accepted. */
void ap_task_table_close(ap_task_table *tt);

ap_task *ap_task_find(ap_task_table *tt, const char *id);
size_t ap_task_count(ap_task_table *tt);
/* Tasks in one status (kept up to date by insert, remove and set_status). */
size_t ap_task_count_status(ap_task_table *tt, ap_task_status st);
/* Change a task's status (its record is the caller's to update). */
void ap_task_set_status(ap_task_table *tt, ap_task *t, ap_task_status st);
/* Insert a task built from a decoded record (taking ownership of it) or,
 * when record is NULL, a failed placeholder for an undecodable record.
 * Returns the task or NULL (AP_ENOMEM). The id must be new. */
ap_task *ap_task_insert(ap_task_table *tt, const char *id, Apstore__TaskRecord *record);
/* Remove and free. */
void ap_task_remove(ap_task_table *tt, ap_task *t);
/* Iterate (unordered). fn may not insert or remove. */
void ap_task_each(ap_task_table *tt, void (*fn)(void *arg, ap_task *t), void *arg);

/* Build a record (deep copy of the trigger) from an admin NewTask that has
 * been checked; id and created_at are given. NULL on ENOMEM. */
Apstore__TaskRecord *ap_task_record_from_new(const Aggregator__NewTask *nt,
					     const char *id, int64_t created_at);
/* Deep copy of a record (for a change that may be rolled back). */
Apstore__TaskRecord *ap_task_record_dup(const Apstore__TaskRecord *r);

/* Executions left: -1 when unlimited (max_execution <= 0), else
 * max_execution - execution_count, never below 0 and without overflow for
 * any values a stored record may hold (a negative count, from a damaged
 * record, counts as none). */
int64_t ap_task_record_remaining(const Apstore__TaskRecord *r);

/* Pack the SyncMessagesResp for `op` about task t (MONITOR carries the
 * whole metadata, removals only the id). 0 or AP_ENOMEM. */
int ap_task_pack_message(const ap_task *t, ap_op op, uint8_t **out, size_t *len);
/* The same for a task that no longer exists (DeleteTask). */
int ap_task_pack_removal(const char *task_id, ap_op op, uint8_t **out, size_t *len);

#endif
