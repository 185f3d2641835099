/* Integration-test helpers above the client library: simulated operators
 * (one SyncMessages stream and one reader thread each) and admin calls.
 *
 * An it_op records everything its stream delivers: the current task set as
 * an operator would keep it (MonitorTaskTrigger adds, DisableTask,
 * DeleteTask and CompletedTask remove), every message with its arrival
 * time, and the final status. Its reader thread makes no assertions (cmocka
 * assertions belong on the main thread); the it_op_wait_* functions block
 * the main thread on a condition variable with a deadline. */
#ifndef AP_TEST_ITEST_H
#define AP_TEST_ITEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap/client.h"

typedef struct it_op it_op;

/* A message as it arrived. */
typedef struct it_msg {
	char msg_id[80];  /* SyncMessagesResp.id */
	char task_id[65]; /* task_metadata.task_id, else the message id */
	int op;           /* Aggregator__MessageOp */
	int64_t at_ns;    /* monotonic arrival time */
} it_msg;

/* The test address number i: "0x" + 40 lower-case hex digits. */
void it_address(int i, char out[43]);

/* A SyncMessagesReq for address with clock (capabilities absent = all,
 * no chain ids). The strings are borrowed. */
Aggregator__SyncMessagesReq it_sync_req(const char *address, int64_t clock);

/* Open a channel of its own to target, open the stream with req and wait
 * (bounded) for the server's initial metadata, then start the reader.
 * Asserts on failure. */
it_op *it_op_start_req(const char *target, const Aggregator__SyncMessagesReq *req);
it_op *it_op_start(const char *target, const char *address, int64_t clock);
/* The same, but the stream may end at once (for refused operators): no
 * wait for initial metadata. */
it_op *it_op_start_nowait(const char *target, const Aggregator__SyncMessagesReq *req);
/* The general form: the channel gets copts (NULL: defaults; e.g. TLS),
 * the stream call (NULL: none; e.g. "authorization" metadata, copied), and
 * wait_open says whether to wait for initial metadata as it_op_start_req
 * does or not as it_op_start_nowait. */
it_op *it_op_start_opts(const char *target, const ap_client_options *copts,
			const Aggregator__SyncMessagesReq *req, const ap_call_options *call,
			bool wait_open);

/* Monotonic time just before the stream was opened. */
int64_t it_op_opened_ns(it_op *op);
const char *it_op_address(it_op *op);

/* Wait up to timeout_ms until the current task set has exactly n tasks. */
bool it_op_wait_count(it_op *op, size_t n, int64_t timeout_ms);
/* Wait up to timeout_ms until the set holds (present) or lacks (!present)
 * task id. */
bool it_op_wait_task(it_op *op, const char *id, bool present, int64_t timeout_ms);
/* Wait up to timeout_ms until at least n messages arrived in total. */
bool it_op_wait_messages(it_op *op, size_t n, int64_t timeout_ms);
/* Wait up to timeout_ms for the stream to end; *st gets its status. */
bool it_op_wait_end(it_op *op, int64_t timeout_ms, ap_rpc_status *st);

size_t it_op_count(it_op *op);                /* current set size */
bool it_op_has(it_op *op, const char *id);
size_t it_op_messages(it_op *op);             /* messages so far */
/* Copy of message i (0-based). False when there is none. */
bool it_op_message(it_op *op, size_t i, it_msg *out);
/* Monotonic arrival time of the first MonitorTaskTrigger of id, 0 if
 * none yet. */
int64_t it_op_task_arrival_ns(it_op *op, const char *id);
bool it_op_ended(it_op *op, ap_rpc_status *st);

/* Cancel the stream abruptly (as a crash); the reader thread sees the
 * end. Thread-safe. */
void it_op_cancel(it_op *op);
/* Stop the reader (cancelling the stream if it is still open), close the
 * stream and the channel, free. NULL accepted. */
void it_op_free(it_op *op);
/* Free every it_op not yet freed (for teardown). */
void it_op_free_all(void);

/* ---- admin ---------------------------------------------------------------- */

/* Create n enabled block tasks (interval 10, chain 0) named
 * "<prefix>-<i>" for i in [first, first + n). Asserts OK. */
void it_create_tasks(ap_client *admin, const char *prefix, int first, int n);

typedef struct it_task {
	char id[65];
	char status[16];
	char owner[43];
} it_task;
/* Every task (all pages of ListTasks), in id order; *out is malloc'd.
 * Asserts OK. Returns the count. */
size_t it_list_tasks(ap_client *admin, it_task **out);
/* How many listed tasks `owner` owns. */
size_t it_owned_by(const it_task *tasks, size_t n, const char *owner);

/* The ListOperators entry of address; false when it is not listed.
 * Asserts that the call succeeds. */
bool it_operator(ap_client *admin, const char *address,
		 Aggregator__OperatorInfo *out);
/* Wait up to timeout_ms until the operator is listed ready (and
 * connected). */
bool it_wait_ready(ap_client *admin, const char *address, int64_t timeout_ms);
/* Wait up to timeout_ms until `owner` owns exactly n tasks per ListTasks. */
bool it_wait_owned(ap_client *admin, const char *owner, size_t n, int64_t timeout_ms);

void it_sleep_ms(int ms);

#endif
