/* Simulated operators and admin helpers: see itest.h.
 *
 * Lock rule: it_op.lock guards every field below it in the struct; the
 * reader thread takes it only to record what ap_stream_next returned, never
 * across a call into the client library. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "daemon.h"
#include "itest.h"

struct it_op {
	char address[43];
	ap_client *client;
	ap_stream *stream;
	pthread_t reader;
	bool reader_started;
	int64_t opened_ns;

	pthread_mutex_t lock;
	pthread_cond_t changed;
	char (*set)[65];     /* current task set */
	size_t n_set, cap_set;
	it_msg *log;         /* every message */
	size_t n_log, cap_log;
	bool ended;
	ap_rpc_status status;
};

/* Every it_op not yet freed, so a test's teardown can free what a failed
 * assertion left behind. Main thread only. */
#define MAX_LIVE 1024
static it_op *live[MAX_LIVE];
static size_t n_live;

void it_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

void it_address(int i, char out[43])
{
	snprintf(out, 43, "0x%040x", (unsigned)i + 0xa0000u);
}

Aggregator__SyncMessagesReq it_sync_req(const char *address, int64_t clock)
{
	Aggregator__SyncMessagesReq req = AGGREGATOR__SYNC_MESSAGES_REQ__INIT;
	req.id = "itest";
	req.address = (char *)address;
	req.monotonic_clock = clock;
	return req;
}

static ssize_t set_find(it_op *op, const char *id)
{
	for (size_t i = 0; i < op->n_set; i++)
		if (strcmp(op->set[i], id) == 0)
			return (ssize_t)i;
	return -1;
}

/* Record one message; op->lock held. */
static void record_locked(it_op *op, const Aggregator__SyncMessagesResp *m)
{
	const char *id = m->task_metadata && m->task_metadata->task_id[0]
		? m->task_metadata->task_id : m->id;
	if (op->n_log == op->cap_log) {
		op->cap_log = op->cap_log ? 2 * op->cap_log : 64;
		op->log = realloc(op->log, op->cap_log * sizeof *op->log);
		AP_ASSERT(op->log);
	}
	it_msg *e = &op->log[op->n_log++];
	snprintf(e->msg_id, sizeof e->msg_id, "%s", m->id);
	snprintf(e->task_id, sizeof e->task_id, "%s", id);
	e->op = (int)m->op;
	e->at_ns = ap_clock_mono_ns();

	ssize_t at = set_find(op, e->task_id);
	if (m->op == AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger) {
		if (at >= 0)
			return;
		if (op->n_set == op->cap_set) {
			op->cap_set = op->cap_set ? 2 * op->cap_set : 64;
			op->set = realloc(op->set, op->cap_set * sizeof *op->set);
			AP_ASSERT(op->set);
		}
		snprintf(op->set[op->n_set++], 65, "%s", e->task_id);
	} else if (m->op == AGGREGATOR__MESSAGE_OP__DisableTask ||
		   m->op == AGGREGATOR__MESSAGE_OP__DeleteTask ||
		   m->op == AGGREGATOR__MESSAGE_OP__CompletedTask) {
		if (at >= 0) {
			memmove(op->set[at], op->set[at + 1],
				(op->n_set - (size_t)at - 1) * sizeof *op->set);
			op->n_set--;
		}
	}
}

static void *reader_main(void *arg)
{
	it_op *op = arg;
	pthread_setname_np(pthread_self(), "it-op-reader");
	for (;;) {
		Aggregator__SyncMessagesResp *m = NULL;
		ap_rpc_status st;
		int r = ap_stream_next(op->stream, 100, &m, &st);
		if (r == AP_STREAM_MESSAGE) {
			pthread_mutex_lock(&op->lock);
			record_locked(op, m);
			pthread_cond_broadcast(&op->changed);
			pthread_mutex_unlock(&op->lock);
			ap_client_free(m);
		} else if (r == AP_STREAM_END) {
			pthread_mutex_lock(&op->lock);
			op->ended = true;
			op->status = st;
			pthread_cond_broadcast(&op->changed);
			pthread_mutex_unlock(&op->lock);
			break;
		}
		/* A timeout: loop. it_op_free cancels the stream, so the
		 * end always comes. */
	}
	return NULL;
}

static it_op *op_start(const char *target, const ap_client_options *copts,
		       const Aggregator__SyncMessagesReq *req, const ap_call_options *call,
		       int64_t open_wait_ms)
{
	char err[256];
	it_op *op = calloc(1, sizeof *op);
	assert_non_null(op);
	assert_true(n_live < MAX_LIVE);
	live[n_live++] = op;
	snprintf(op->address, sizeof op->address, "%s", req->address);
	pthread_mutex_init(&op->lock, NULL);
	ap_clock_cond_init(&op->changed);
	int rc = ap_client_open(target, copts, &op->client, err, sizeof err);
	if (rc)
		fail_msg("ap_client_open(%s): %s", target, err);
	op->opened_ns = ap_clock_mono_ns();
	rc = ap_stream_open(op->client, req, call, open_wait_ms, &op->stream);
	if (rc)
		fail_msg("ap_stream_open for %s on %s: %s", req->address, target,
			 ap_strerror(rc));
	assert_int_equal(pthread_create(&op->reader, NULL, reader_main, op), 0);
	op->reader_started = true;
	return op;
}

it_op *it_op_start_req(const char *target, const Aggregator__SyncMessagesReq *req)
{
	return op_start(target, NULL, req, NULL, TD_WAIT_MS);
}

it_op *it_op_start(const char *target, const char *address, int64_t clock)
{
	Aggregator__SyncMessagesReq req = it_sync_req(address, clock);
	return op_start(target, NULL, &req, NULL, TD_WAIT_MS);
}

it_op *it_op_start_nowait(const char *target, const Aggregator__SyncMessagesReq *req)
{
	return op_start(target, NULL, req, NULL, 0);
}

it_op *it_op_start_opts(const char *target, const ap_client_options *copts,
			const Aggregator__SyncMessagesReq *req, const ap_call_options *call,
			bool wait_open)
{
	return op_start(target, copts, req, call, wait_open ? TD_WAIT_MS : 0);
}

int64_t it_op_opened_ns(it_op *op)
{
	return op->opened_ns;
}

const char *it_op_address(it_op *op)
{
	return op->address;
}

/* Wait until pred(op, arg) holds or timeout_ms passes; op->lock taken
 * inside. */
static bool wait_until(it_op *op, bool (*pred)(it_op *, const void *),
		       const void *arg, int64_t timeout_ms)
{
	struct timespec deadline = ap_clock_deadline_ms(timeout_ms);
	bool ok;
	pthread_mutex_lock(&op->lock);
	while (!(ok = pred(op, arg))) {
		if (pthread_cond_timedwait(&op->changed, &op->lock, &deadline) != 0) {
			ok = pred(op, arg);
			break;
		}
	}
	pthread_mutex_unlock(&op->lock);
	return ok;
}

static bool pred_count(it_op *op, const void *arg)
{
	return op->n_set == *(const size_t *)arg;
}

bool it_op_wait_count(it_op *op, size_t n, int64_t timeout_ms)
{
	return wait_until(op, pred_count, &n, timeout_ms);
}

struct task_want {
	const char *id;
	bool present;
};

static bool pred_task(it_op *op, const void *arg)
{
	const struct task_want *w = arg;
	return (set_find(op, w->id) >= 0) == w->present;
}

bool it_op_wait_task(it_op *op, const char *id, bool present, int64_t timeout_ms)
{
	struct task_want w = { id, present };
	return wait_until(op, pred_task, &w, timeout_ms);
}

static bool pred_messages(it_op *op, const void *arg)
{
	return op->n_log >= *(const size_t *)arg;
}

bool it_op_wait_messages(it_op *op, size_t n, int64_t timeout_ms)
{
	return wait_until(op, pred_messages, &n, timeout_ms);
}

static bool pred_ended(it_op *op, const void *arg)
{
	(void)arg;
	return op->ended;
}

bool it_op_wait_end(it_op *op, int64_t timeout_ms, ap_rpc_status *st)
{
	bool ok = wait_until(op, pred_ended, NULL, timeout_ms);
	if (ok && st) {
		pthread_mutex_lock(&op->lock);
		*st = op->status;
		pthread_mutex_unlock(&op->lock);
	}
	return ok;
}

size_t it_op_count(it_op *op)
{
	pthread_mutex_lock(&op->lock);
	size_t n = op->n_set;
	pthread_mutex_unlock(&op->lock);
	return n;
}

bool it_op_has(it_op *op, const char *id)
{
	pthread_mutex_lock(&op->lock);
	bool has = set_find(op, id) >= 0;
	pthread_mutex_unlock(&op->lock);
	return has;
}

size_t it_op_messages(it_op *op)
{
	pthread_mutex_lock(&op->lock);
	size_t n = op->n_log;
	pthread_mutex_unlock(&op->lock);
	return n;
}

bool it_op_message(it_op *op, size_t i, it_msg *out)
{
	pthread_mutex_lock(&op->lock);
	bool ok = i < op->n_log;
	if (ok)
		*out = op->log[i];
	pthread_mutex_unlock(&op->lock);
	return ok;
}

int64_t it_op_task_arrival_ns(it_op *op, const char *id)
{
	int64_t at = 0;
	pthread_mutex_lock(&op->lock);
	for (size_t i = 0; i < op->n_log; i++)
		if (op->log[i].op == AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger &&
		    strcmp(op->log[i].task_id, id) == 0) {
			at = op->log[i].at_ns;
			break;
		}
	pthread_mutex_unlock(&op->lock);
	return at;
}

bool it_op_ended(it_op *op, ap_rpc_status *st)
{
	pthread_mutex_lock(&op->lock);
	bool ended = op->ended;
	if (ended && st)
		*st = op->status;
	pthread_mutex_unlock(&op->lock);
	return ended;
}

void it_op_cancel(it_op *op)
{
	ap_stream_cancel(op->stream);
}

void it_op_free(it_op *op)
{
	if (!op)
		return;
	for (size_t i = 0; i < n_live; i++)
		if (live[i] == op) {
			live[i] = live[--n_live];
			break;
		}
	if (op->reader_started) {
		ap_stream_cancel(op->stream);
		pthread_join(op->reader, NULL);
	}
	ap_stream_close(op->stream);
	ap_client_close(op->client);
	pthread_cond_destroy(&op->changed);
	pthread_mutex_destroy(&op->lock);
	free(op->set);
	free(op->log);
	free(op);
}

void it_op_free_all(void)
{
	while (n_live)
		it_op_free(live[n_live - 1]);
}

/* ---- admin ---------------------------------------------------------------- */

void it_create_tasks(ap_client *admin, const char *prefix, int first, int n)
{
	Aggregator__BlockTrigger__Config cfg = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger block = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__TaskTrigger trigger = AGGREGATOR__TASK_TRIGGER__INIT;
	Aggregator__CreateTasksReq req = AGGREGATOR__CREATE_TASKS_REQ__INIT;
	Aggregator__CreateTasksResp *resp = NULL;
	ap_rpc_status st;

	cfg.interval = 10;
	block.config = &cfg;
	trigger.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	trigger.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	trigger.block = &block;
	trigger.name = "itest-block";

	Aggregator__NewTask *tasks = calloc((size_t)n, sizeof *tasks);
	Aggregator__NewTask **ptrs = calloc((size_t)n, sizeof *ptrs);
	char (*ids)[65] = calloc((size_t)n, sizeof *ids);
	assert_true(tasks && ptrs && ids);
	for (int i = 0; i < n; i++) {
		aggregator__new_task__init(&tasks[i]);
		snprintf(ids[i], sizeof ids[i], "%s-%04d", prefix, first + i);
		tasks[i].id = ids[i];
		tasks[i].name = ids[i];
		tasks[i].trigger = &trigger;
		ptrs[i] = &tasks[i];
	}
	req.n_tasks = (size_t)n;
	req.tasks = ptrs;
	int rc = ap_client_create_tasks(admin, &req, &resp, NULL, &st);
	/* Compare, free, then assert: a failed assertion leaks nothing. */
	bool same = rc == 0 && st.code == AP_RPC_OK && resp->n_ids == (size_t)n;
	for (int i = 0; same && i < n; i++)
		same = strcmp(resp->ids[i], ids[i]) == 0;
	ap_client_free(resp);
	free(ids);
	free(ptrs);
	free(tasks);
	assert_int_equal(rc, 0);
	if (st.code != AP_RPC_OK)
		fail_msg("CreateTasks: %s %s", ap_rpc_code_name(st.code), st.details);
	if (!same)
		fail_msg("CreateTasks answered other ids than those asked for");
}

size_t it_list_tasks(ap_client *admin, it_task **out)
{
	Aggregator__ListTasksReq req = AGGREGATOR__LIST_TASKS_REQ__INIT;
	char after[65] = "";
	size_t n = 0, cap = 0;
	it_task *all = NULL;
	ap_rpc_status st = { 0 };

	for (int page = 0; page < 10000; page++) {
		Aggregator__ListTasksResp *resp = NULL;
		req.after = after;
		int rc = ap_client_list_tasks(admin, &req, &resp, NULL, &st);
		if (rc != 0 || st.code != AP_RPC_OK) {
			free(all);
			fail_msg("ListTasks: %s %s %s", ap_strerror(rc),
				 ap_rpc_code_name(st.code), st.details);
		}
		for (size_t i = 0; i < resp->n_tasks; i++) {
			if (n == cap) {
				cap = cap ? 2 * cap : 64;
				all = realloc(all, cap * sizeof *all);
				assert_non_null(all);
			}
			snprintf(all[n].id, sizeof all[n].id, "%s", resp->tasks[i]->id);
			snprintf(all[n].status, sizeof all[n].status, "%s", resp->tasks[i]->status);
			snprintf(all[n].owner, sizeof all[n].owner, "%s", resp->tasks[i]->owner);
			n++;
		}
		bool last = resp->next_after[0] == '\0';
		snprintf(after, sizeof after, "%s", resp->next_after);
		ap_client_free(resp);
		if (last)
			break;
	}
	*out = all;
	return n;
}

size_t it_owned_by(const it_task *tasks, size_t n, const char *owner)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(tasks[i].owner, owner) == 0)
			k++;
	return k;
}

bool it_operator(ap_client *admin, const char *address, Aggregator__OperatorInfo *out)
{
	Aggregator__ListOperatorsResp *resp = NULL;
	ap_rpc_status st;
	bool found = false;

	assert_int_equal(ap_client_list_operators(admin, &resp, NULL, &st), 0);
	if (st.code != AP_RPC_OK)
		fail_msg("ListOperators: %s %s", ap_rpc_code_name(st.code), st.details);
	for (size_t i = 0; i < resp->n_operators; i++) {
		if (strcmp(resp->operators[i]->address, address) == 0) {
			found = true;
			if (out) {
				*out = *resp->operators[i];
				out->address = NULL; /* not kept past the response */
			}
			break;
		}
	}
	ap_client_free(resp);
	return found;
}

bool it_wait_ready(ap_client *admin, const char *address, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		Aggregator__OperatorInfo info;
		if (it_operator(admin, address, &info) && info.connected && info.ready)
			return true;
		if (ap_clock_mono_ms() > deadline)
			return false;
		it_sleep_ms(10);
	}
}

bool it_wait_owned(ap_client *admin, const char *owner, size_t n, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	for (;;) {
		it_task *tasks = NULL;
		size_t count = it_list_tasks(admin, &tasks);
		size_t owned = it_owned_by(tasks, count, owner);
		free(tasks);
		if (owned == n)
			return true;
		if (ap_clock_mono_ms() > deadline)
			return false;
		it_sleep_ms(10);
	}
}
