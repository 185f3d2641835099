/* Status of a database (SPEC sections 3, 4 and 8): what `ap status` shows,
 * computed from the stored records alone, so it works whether the daemon
 * runs or not. `ap stress` and the torture tests use the same collector to
 * check their invariants.
 *
 * The rules are the daemon's (src/task.c, src/engine_open.c), applied to
 * what is stored:
 *   - A task's status is its record's status; a record that does not
 *     decode, whose status is unknown or whose trigger is invalid counts as
 *     "failed", as the daemon loads it.
 *   - Only enabled, non-manual tasks are owned. An assignment record counts
 *     when its task is such a task and its owner is an address (0x + 40
 *     hex). Any other assignment (a task that is gone, disabled, manual or
 *     failed; an undecodable record) is stale: the daemon drops those at
 *     its next start, so it is ignored here without comment.
 *   - orphaned = enabled, non-manual tasks without a counted assignment.
 *     Manual tasks are never owned nor orphaned, so
 *     tasks.enabled == manual + owned + orphaned always holds.
 *   - Operators come from the operators database; an undecodable record or
 *     one whose address is not an address is skipped, as the daemon does.
 *     `connected` is the stored flag: the daemon clears it at disconnect
 *     and at its start, so after a kill -9 it says what was true when the
 *     daemon died.
 *
 * Consistency: the three databases are read one after another in short
 * read-committed batches (ap_store_scan), never in one long transaction,
 * so a reader never holds up the daemon for longer than a batch. Every
 * record read is committed, but under load the counts may mix moments a
 * few milliseconds apart (a task created after the tasks were read is not
 * counted, and its assignment is then ignored as stale). A scan also
 * visits keys inserted behind its position, and new ULID task ids sort
 * last, so a writer appending tasks faster than the reader reads them
 * (hundreds of thousands a second; the daemon commits each create
 * synchronously) would keep a read going: it ends when creation slows.
 *
 * Ownership: a report owns everything it points to; ap_status_free
 * releases it. Nothing here keeps global state: thread-safe as long as
 * each thread uses its own report. */
#ifndef AP_STATUS_H
#define AP_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ap/store.h"
#include "store.pb-c.h"

#define AP_STATUS_ADDRESS_LEN 42 /* "0x" + 40 hex digits */

/* An operator owning at least one task. */
typedef struct ap_status_owner {
	char address[AP_STATUS_ADDRESS_LEN + 1]; /* lower-case */
	size_t tasks;                            /* > 0 */
	bool known; /* has a record in the operators database */
} ap_status_owner;

/* One record of the operators database. */
typedef struct ap_status_operator {
	char address[AP_STATUS_ADDRESS_LEN + 1]; /* lower-case */
	bool connected;
	int64_t last_connect_ms;    /* ms since the epoch; 0 = never */
	int64_t last_disconnect_ms; /* ms since the epoch; 0 = never */
	size_t owned_tasks;
} ap_status_operator;

/* One task, with AP_STATUS_TASKS only. */
typedef struct ap_status_task {
	char *id;                  /* the stored key, NUL-terminated */
	Apstore__TaskStatus status; /* as the daemon sees it (see above) */
	bool manual;               /* a manual trigger */
	char owner[AP_STATUS_ADDRESS_LEN + 1]; /* "" = no owner */
} ap_status_task;

typedef struct ap_status_report {
	char *database; /* the environment directory that was read */
	struct {
		size_t total, enabled, disabled, completed, failed;
	} tasks;
	size_t manual;   /* enabled manual tasks: neither owned nor orphaned */
	size_t owned;    /* enabled, non-manual tasks with an owner */
	size_t orphaned; /* enabled, non-manual tasks without one */
	size_t stale_assignments; /* assignment records ignored (see above) */
	ap_status_owner *owners; /* by address; every owner of a task */
	size_t n_owners;
	ap_status_operator *operators; /* by address; the operators database */
	size_t n_operators;
	size_t connected; /* operators whose connected flag is set */
	ap_status_task *task_list; /* by id; only with AP_STATUS_TASKS */
	size_t n_task_list;
} ap_status_report;

/* Flags of ap_status_collect_store. */
enum { AP_STATUS_TASKS = 1 }; /* also fill task_list (memory: O(tasks)) */

/* Open the environment at `dir` read-only (creating nothing, see
 * ap_store_open), read it and close it. Returns 0 with *out filled, or
 * AP_ENOTFOUND (no database there; nothing was created), AP_EIO,
 * AP_EVERSION or AP_ENOMEM with the detail in err; on error *out is empty
 * (zeroed) and ap_status_free on it is harmless. */
int ap_status_collect(const char *dir, ap_status_report *out, char *err,
		      size_t errlen);

/* The same from a store the caller opened (readonly or not; the store is
 * only read). flags: 0 or AP_STATUS_TASKS. Must not be called from inside
 * a transaction of the caller that wrote to the store (see
 * ap_store_scan). */
int ap_status_collect_store(ap_store *st, unsigned flags,
			    ap_status_report *out, char *err, size_t errlen);

/* Release what the report holds and zero it; NULL is fine. */
void ap_status_free(ap_status_report *r);

/* The one-line health verdict, in this order of precedence:
 *   AP_STATUS_NO_OPERATORS  no operator is connected and there are enabled,
 *                           non-manual tasks ("NO OPERATORS");
 *   AP_STATUS_DEGRADED      some of those tasks are orphaned
 *                           ("DEGRADED: N orphaned tasks", "task" for 1);
 *   AP_STATUS_OK            otherwise ("OK").
 * Writes the text to buf when buf is not NULL. */
typedef enum {
	AP_STATUS_OK = 0,
	AP_STATUS_DEGRADED = 1,
	AP_STATUS_NO_OPERATORS = 2,
} ap_status_health;

ap_status_health ap_status_verdict(const ap_status_report *r, char *buf,
				   size_t len);

/* The `ap status` outputs. Text: the verdict on the first line, then a
 * table readable in 80 columns. JSON: exactly one object on one line (the
 * keys of SPEC section 8) and a newline. Both return 0, or AP_EIO when
 * writing to `out` failed. */
int ap_status_print_text(FILE *out, const ap_status_report *r);
int ap_status_print_json(FILE *out, const ap_status_report *r);

#endif
