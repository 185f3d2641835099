/* Shared helpers for the engine tests: a temp-dir engine, operators that
 * record what they were sent (the "recording outbox" of issue 3), and
 * bounded waits. */
#ifndef AP_TEST_ENGINE_FIXTURE_H
#define AP_TEST_ENGINE_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap/config.h"
#include "ap/engine.h"
#include "ap/session.h"
#include "node.pb-c.h"

typedef struct fx_engine {
	char dir[256];
	ap_config cfg;
	ap_engine *e;
} fx_engine;

/* Create a temp dir and an engine with approved = "*", the given
 * stabilization, a long resync (so tests see event-driven pushes, not
 * ticks) and the given restart grace. Asserts on failure. */
void fx_open(fx_engine *f, int64_t stabilization_ms, int64_t grace_ms);
/* Open the engine again on the same dir (a restart). */
void fx_reopen(fx_engine *f);
/* Close the engine (all fx_op sessions must be closed first). */
void fx_close_engine(fx_engine *f);
/* Close the engine and remove the dir. */
void fx_close(fx_engine *f);

/* An operator as a transport would drive it: its session, and the set of
 * task ids it holds after applying every message it was sent. */
typedef struct fx_op {
	char address[43];
	ap_session *s;
	struct fx_held *held; /* uthash set */
	size_t monitors, disables, deletes, completes;
} fx_op;

/* "0x" + 40 hex digits made from n. */
void fx_address(int n, char out[43]);
/* Connect with all capabilities; asserts success. */
void fx_connect(fx_engine *f, fx_op *op, int n, int64_t clock);
int fx_connect_hello(fx_engine *f, fx_op *op, const ap_hello *h);
/* Close the session (the transport's end of stream). */
void fx_disconnect(fx_engine *f, fx_op *op, const char *why);
/* Wait (bounded, 5 s) until the session is ready. */
void fx_wait_ready(fx_op *op);
/* Apply every queued message, reporting each as sent. Returns the number
 * of messages applied. */
size_t fx_drain(fx_op *op);
bool fx_holds(fx_op *op, const char *task_id);
size_t fx_held_count(fx_op *op);
void fx_op_free(fx_op *op);

/* Create `n` tasks of a kind ("block", "event", "cron", "fixed", "manual")
 * on `chain`, with ids prefix-0..n-1. Asserts success. */
void fx_create(fx_engine *f, const char *prefix, int n, const char *kind, int64_t chain,
	       int64_t max_execution);
/* One cron task (schedule "* * * * *"), for a test that passes its own
 * NewTask to ap_engine_create_tasks. Every message lives inside the struct
 * and points into it, so it must stay where fx_cron_task_init built it. */
typedef struct fx_cron_task {
	char *schedules[1];
	Aggregator__CronTrigger__Config config;
	Aggregator__CronTrigger cron;
	Aggregator__TaskTrigger trigger;
	Aggregator__NewTask task; /* what to pass; set start_at etc. here */
} fx_cron_task;
/* `id` is borrowed, not copied. */
void fx_cron_task_init(fx_cron_task *t, const char *id);

/* The owner of a task ("" = orphan or untracked). */
void fx_owner(fx_engine *f, const char *task_id, char owner[43]);
/* Owned-task count of an operator per ListOperators. */
uint32_t fx_owned(fx_engine *f, const char *address);

/* Poll `cond(arg)` every millisecond until true or 5 s pass. */
bool fx_wait(bool (*cond)(void *arg), void *arg);

#endif
