/* Engine internals shared by src/engine*.c. Not an interface: only the
 * engine's own files include it. */
#ifndef AP_ENGINE_INT_H
#define AP_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "ap/assign.h"
#include "ap/engine.h"
#include "ap/registry.h"
#include "ap/store.h"
#include "ap/task.h"
#include "ap/ticker.h"

typedef enum {
	AP_WHY_ROUND_ROBIN = 0, /* a new or enabled task */
	AP_WHY_RECLAIM = 1,     /* an orphan taken when an operator became ready */
	AP_WHY_REASSIGN = 2,    /* its owner left */
} ap_assign_why;

/* One planned owner change, persisted and applied by engine_commit_locked. */
typedef struct ap_change {
	char task_id[AP_TASK_ID_MAX + 1];
	char owner[AP_ADDRESS_LEN + 1]; /* "" = orphan */
	char from[AP_ADDRESS_LEN + 1];  /* previous owner, or previous_assignment */
	uint64_t generation;
	ap_assign_why why;
} ap_change;

typedef struct ap_plan {
	ap_change *v;
	size_t n, cap;
} ap_plan;

typedef struct dedup_entry dedup_entry;

struct ap_engine {
	/* Immutable after open. */
	int64_t stabilization_ms, resync_ms, grace_ms, cooldown_ms;
	int64_t max_sessions;
	char **approved;
	size_t n_approved;
	bool approve_any;
	int64_t store_opened_ms; /* monotonic, for the restart grace window */

	ap_store *store;
	ap_ticker *ticker;
	ap_registry *reg; /* own lock; mutated only under `lock` */
	ap_assign *assign; /* own rwlock; mutated only under `lock` */

	/* The engine lock. Lock order: lock -> {registry lock, assign rwlock,
	 * session lock, ticker lock} (leaves, never nested with each other).
	 * BerkeleyDB is called with it held: the assignment map must change
	 * together with its transaction (SPEC section 1), and BerkeleyDB never
	 * calls back into ap. Tokens are cancelled only after it is released,
	 * since a cancel runs callbacks. */
	pthread_mutex_t lock;
	ap_task_table *tasks;
	ap_session **ready; /* ready sessions (references), by address */
	uint32_t *planned;  /* per ready session: changes planned, not committed */
	/* Per ready session: its owned-task count when loads_valid. Filled by
	 * the first choice of a pass (one hash lookup per operator instead of
	 * one per operator per task); invalidated by every change of owners
	 * (engine_loads_invalidate) and of the ready list. */
	uint32_t *loads;
	bool loads_valid;
	size_t n_ready, cap_ready;
	char rr_last[AP_ADDRESS_LEN + 1]; /* round-robin tie cursor */
	size_t rr_after; /* first ready slot after rr_last (valid with loads) */
	bool grace_active;
	bool stopping;
	bool started;
	dedup_entry *dedup;      /* (task, trigger_request_id) seen, by key */
	dedup_entry *dedup_fifo; /* the same entries, oldest first */
	ap_engine_stats stats;   /* the counters part; sizes filled on read */

	atomic_uint_fast64_t next_generation;
};

/* engine.c */
void engine_plan_free(ap_plan *p);
int engine_plan_add(ap_plan *p, const char *task_id, const char *owner,
		    const char *from, uint64_t generation, ap_assign_why why);
/* Pick the least-loaded eligible ready operator for t (round-robin ties),
 * counting what the current pass planned. NULL when none is eligible. The
 * pick is counted as planned: add it to the plan. */
ap_session *engine_choose_locked(ap_engine *e, const ap_task *t);
/* Choose an owner for t and add the change to p (owner "" when nobody is
 * eligible: an orphan). 0 or AP_ENOMEM. */
int engine_place_locked(ap_engine *e, ap_plan *p, const ap_task *t, const char *from,
			ap_assign_why why);
/* Persist `p` (in chunks), apply it to the map, push the tasks to their new
 * owners and log each change. The plan is emptied. */
int engine_commit_locked(ap_engine *e, ap_plan *p);
/* Forget the cached owned counts (after any change of owners). */
void engine_loads_invalidate(ap_engine *e);
/* The ready session of an address (borrowed) or NULL. */
ap_session *engine_ready_find_locked(ap_engine *e, const char *address);
/* Push one message about t to the current session of `owner` if any. */
void engine_push_locked(ap_engine *e, const char *owner, const ap_task *t, ap_op op);
/* Write a task record (version byte + protobuf) into txn. */
int engine_put_task(ap_store_txn *txn, const Apstore__TaskRecord *r);

bool engine_is_address(const char *s);
void engine_lower_address(const char *in, char out[AP_ADDRESS_LEN + 1]);
/* Read-modify-write of one operators-database record inside txn: fill
 * sets the fields it owns on a copy of the stored record. */
int engine_update_operator(ap_store_txn *txn, const char *address,
			   void (*fill)(Apstore__OperatorRecord *r, void *arg), void *arg);
/* Record the registry's view of an operator (and its hello at connect). */
void engine_save_operator_locked(ap_engine *e, const char *address, const ap_hello *hello);
void engine_ready_remove_locked(ap_engine *e, const char *address);
/* Ticker callbacks. */
int64_t engine_run_job(void *ctx, const ap_job *job);
bool engine_job_is_current(void *ctx, const char *address, uint64_t generation);

/* engine_admin.c: change a task's status durably (synchronous commit),
 * untracking it and sending `op` to its owner when it stops being
 * assignable, placing it when it becomes assignable. */
int engine_set_status_locked(ap_engine *e, ap_task *t, ap_task_status st, ap_op op);

/* engine_notify.c */
void engine_dedup_free(ap_engine *e);

#endif
