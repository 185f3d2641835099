/* Helpers for the engine tests: see engine_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <uthash.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "engine_fixture.h"
#include "node.pb-c.h"

typedef struct fx_held {
	char id[AP_TASK_ID_MAX + 1];
	UT_hash_handle hh;
} fx_held;

static void set_str(char **slot, const char *v)
{
	free(*slot);
	*slot = strdup(v);
	assert_non_null(*slot);
}

void fx_open(fx_engine *f, int64_t stabilization_ms, int64_t grace_ms)
{
	char err[256];
	snprintf(f->dir, sizeof f->dir, "%s/ap-engine-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(ap_config_defaults(&f->cfg), 0);
	char db[300];
	snprintf(db, sizeof db, "%s/db", f->dir);
	set_str(&f->cfg.storage.dir, db);
	for (size_t i = 0; i < f->cfg.operators.n_approved; i++)
		free(f->cfg.operators.approved[i]);
	f->cfg.operators.approved[0] = strdup("*");
	f->cfg.operators.n_approved = 1;
	f->cfg.operators.stabilization_ms = stabilization_ms;
	f->cfg.operators.resync_interval_ms = 600000;
	f->cfg.operators.restart_grace_ms = grace_ms;
	int rc = ap_engine_open(&f->e, &f->cfg, err, sizeof err);
	if (rc)
		fail_msg("engine open: %s", err);
	assert_int_equal(ap_engine_start(f->e), 0);
}

void fx_reopen(fx_engine *f)
{
	char err[256];
	int rc = ap_engine_open(&f->e, &f->cfg, err, sizeof err);
	if (rc)
		fail_msg("engine reopen: %s", err);
	assert_int_equal(ap_engine_start(f->e), 0);
}

void fx_close_engine(fx_engine *f)
{
	ap_engine_close(f->e);
	f->e = NULL;
}

void fx_close(fx_engine *f)
{
	fx_close_engine(f);
	ap_config_free(&f->cfg);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
}

void fx_cron_task_init(fx_cron_task *t, const char *id)
{
	*t = (fx_cron_task){
		.schedules = { (char *)"* * * * *" },
		.config = AGGREGATOR__CRON_TRIGGER__CONFIG__INIT,
		.cron = AGGREGATOR__CRON_TRIGGER__INIT,
		.trigger = AGGREGATOR__TASK_TRIGGER__INIT,
		.task = AGGREGATOR__NEW_TASK__INIT,
	};
	t->config.n_schedules = 1;
	t->config.schedules = t->schedules;
	t->cron.config = &t->config;
	t->trigger.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON;
	t->trigger.cron = &t->cron;
	t->task.id = (char *)id;
	t->task.trigger = &t->trigger;
}

void fx_address(int n, char out[43])
{
	snprintf(out, 43, "0x%040x", n);
}

int fx_connect_hello(fx_engine *f, fx_op *op, const ap_hello *h)
{
	char err[256];
	snprintf(op->address, sizeof op->address, "%s", h->address);
	/* A reconnect starts from an empty local table, as the ap operator
	 * does: whatever it held is re-sent. */
	fx_held *x, *tmp;
	HASH_ITER(hh, op->held, x, tmp) {
		HASH_DEL(op->held, x);
		free(x);
	}
	op->s = NULL;
	return ap_engine_session_open(f->e, h, &op->s, err, sizeof err);
}

void fx_connect(fx_engine *f, fx_op *op, int n, int64_t clock)
{
	char address[43];
	fx_address(n, address);
	ap_hello h = { .address = address, .monotonic_clock = clock };
	assert_int_equal(fx_connect_hello(f, op, &h), 0);
	assert_non_null(op->s);
}

void fx_disconnect(fx_engine *f, fx_op *op, const char *why)
{
	ap_engine_session_close(f->e, op->s, why);
	op->s = NULL;
}

static bool session_ready(void *arg)
{
	return ap_session_ready(arg);
}

void fx_wait_ready(fx_op *op)
{
	assert_true(fx_wait(session_ready, op->s));
}

size_t fx_drain(fx_op *op)
{
	size_t n = 0;
	ap_outmsg *m;
	while (op->s && ap_session_next(op->s, 0, &m) == 0) {
		fx_held *x;
		HASH_FIND_STR(op->held, m->task_id, x);
		Aggregator__SyncMessagesResp *r =
			aggregator__sync_messages_resp__unpack(NULL, m->len, m->bytes);
		assert_non_null(r);
		assert_string_equal(r->id, m->task_id);
		assert_int_equal((int)r->op, (int)m->op);
		if (m->op == AP_OP_MONITOR) {
			assert_non_null(r->task_metadata);
			assert_non_null(r->task_metadata->trigger);
			op->monitors++;
			if (!x) {
				x = calloc(1, sizeof *x);
				assert_non_null(x);
				snprintf(x->id, sizeof x->id, "%s", m->task_id);
				HASH_ADD_STR(op->held, id, x);
			}
		} else {
			if (m->op == AP_OP_DISABLE)
				op->disables++;
			else if (m->op == AP_OP_DELETE)
				op->deletes++;
			else
				op->completes++;
			if (x) {
				HASH_DEL(op->held, x);
				free(x);
			}
		}
		aggregator__sync_messages_resp__free_unpacked(r, NULL);
		ap_session_sent(op->s, m, true);
		n++;
	}
	return n;
}

bool fx_holds(fx_op *op, const char *task_id)
{
	fx_held *x;
	HASH_FIND_STR(op->held, task_id, x);
	return x != NULL;
}

size_t fx_held_count(fx_op *op)
{
	return HASH_COUNT(op->held);
}

void fx_op_free(fx_op *op)
{
	fx_held *x, *tmp;
	HASH_ITER(hh, op->held, x, tmp) {
		HASH_DEL(op->held, x);
		free(x);
	}
}

void fx_create(fx_engine *f, const char *prefix, int n, const char *kind, int64_t chain,
	       int64_t max_execution)
{
	Aggregator__NewTask **tasks = calloc((size_t)n, sizeof *tasks);
	assert_non_null(tasks);
	for (int i = 0; i < n; i++) {
		Aggregator__NewTask *nt = calloc(1, sizeof *nt);
		Aggregator__TaskTrigger *tr = calloc(1, sizeof *tr);
		assert_non_null(nt);
		assert_non_null(tr);
		aggregator__new_task__init(nt);
		aggregator__task_trigger__init(tr);
		char *id = malloc(80);
		assert_non_null(id);
		snprintf(id, 80, "%s-%d", prefix, i);
		nt->id = id;
		nt->name = (char *)"test task";
		nt->trigger = tr;
		nt->max_execution = max_execution;
		if (strcmp(kind, "block") == 0) {
			static Aggregator__BlockTrigger bt = AGGREGATOR__BLOCK_TRIGGER__INIT;
			static Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
			tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
			Aggregator__BlockTrigger *b = malloc(sizeof *b);
			Aggregator__BlockTrigger__Config *c = malloc(sizeof *c);
			*b = bt;
			*c = bc;
			c->interval = 10;
			c->chain_id = chain;
			b->config = c;
			tr->block = b;
		} else if (strcmp(kind, "event") == 0) {
			static Aggregator__EventTrigger et = AGGREGATOR__EVENT_TRIGGER__INIT;
			static Aggregator__EventTrigger__Config ec = AGGREGATOR__EVENT_TRIGGER__CONFIG__INIT;
			static Aggregator__EventTrigger__Query eq = AGGREGATOR__EVENT_TRIGGER__QUERY__INIT;
			static Aggregator__EventTrigger__Query *qs[1] = { &eq };
			tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_EVENT;
			Aggregator__EventTrigger *ev = malloc(sizeof *ev);
			Aggregator__EventTrigger__Config *c = malloc(sizeof *c);
			*ev = et;
			*c = ec;
			c->n_queries = 1;
			c->queries = qs;
			c->chain_id = chain;
			ev->config = c;
			tr->event = ev;
		} else if (strcmp(kind, "cron") == 0) {
			static Aggregator__CronTrigger ct = AGGREGATOR__CRON_TRIGGER__INIT;
			static Aggregator__CronTrigger__Config cc = AGGREGATOR__CRON_TRIGGER__CONFIG__INIT;
			static char *sched[1] = { (char *)"*/5 * * * *" };
			tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON;
			Aggregator__CronTrigger *ct2 = malloc(sizeof *ct2);
			Aggregator__CronTrigger__Config *c = malloc(sizeof *c);
			*ct2 = ct;
			*c = cc;
			c->n_schedules = 1;
			c->schedules = sched;
			ct2->config = c;
			tr->cron = ct2;
		} else if (strcmp(kind, "fixed") == 0) {
			static Aggregator__FixedTimeTrigger ft = AGGREGATOR__FIXED_TIME_TRIGGER__INIT;
			static Aggregator__FixedTimeTrigger__Config fc =
				AGGREGATOR__FIXED_TIME_TRIGGER__CONFIG__INIT;
			static int64_t epochs[2] = { 1700000000000, 1800000000000 };
			tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME;
			Aggregator__FixedTimeTrigger *f2 = malloc(sizeof *f2);
			Aggregator__FixedTimeTrigger__Config *c = malloc(sizeof *c);
			*f2 = ft;
			*c = fc;
			c->n_epochs = 2;
			c->epochs = epochs;
			f2->config = c;
			tr->fixed_time = f2;
		} else if (strcmp(kind, "manual") == 0) {
			static Aggregator__ManualTrigger mt = AGGREGATOR__MANUAL_TRIGGER__INIT;
			tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL;
			Aggregator__ManualTrigger *m = malloc(sizeof *m);
			*m = mt;
			tr->manual = m;
		} else {
			fail_msg("unknown kind %s", kind);
		}
		tasks[i] = nt;
	}
	char **ids;
	char err[256];
	int rc = ap_engine_create_tasks(f->e, tasks, (size_t)n, &ids, err, sizeof err);
	if (rc)
		fail_msg("create: %s", err);
	for (int i = 0; i < n; i++) {
		assert_string_equal(ids[i], tasks[i]->id);
		Aggregator__TaskTrigger *tr = tasks[i]->trigger;
		switch (tr->trigger_type_case) {
		case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK:
			free(tr->block->config);
			free(tr->block);
			break;
		case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_EVENT:
			free(tr->event->config);
			free(tr->event);
			break;
		case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON:
			free(tr->cron->config);
			free(tr->cron);
			break;
		case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME:
			free(tr->fixed_time->config);
			free(tr->fixed_time);
			break;
		default:
			free(tr->manual);
			break;
		}
		free(tr);
		free(tasks[i]->id);
		free(tasks[i]);
	}
	ap_engine_free_ids(ids, (size_t)n);
	free(tasks);
}

void fx_owner(fx_engine *f, const char *task_id, char owner[43])
{
	Aggregator__ListTasksResp *resp;
	owner[0] = '\0';
	/* ListTasks pages strictly after `after`: ask from just before the id
	 * by listing one page from the start of the id's range. */
	char after[80];
	snprintf(after, sizeof after, "%s", task_id);
	after[strlen(after) - 1]--; /* a key sorting just before task_id */
	assert_int_equal(ap_engine_list_tasks(f->e, after, 5, &resp), 0);
	for (size_t i = 0; i < resp->n_tasks; i++)
		if (strcmp(resp->tasks[i]->id, task_id) == 0)
			snprintf(owner, 43, "%s", resp->tasks[i]->owner);
	ap_engine_free_list(resp);
}

uint32_t fx_owned(fx_engine *f, const char *address)
{
	Aggregator__ListOperatorsResp *resp;
	uint32_t n = 0;
	assert_int_equal(ap_engine_list_operators(f->e, &resp), 0);
	for (size_t i = 0; i < resp->n_operators; i++)
		if (strcmp(resp->operators[i]->address, address) == 0)
			n = resp->operators[i]->owned_tasks;
	ap_engine_free_operators(resp);
	return n;
}

bool fx_wait(bool (*cond)(void *arg), void *arg)
{
	int64_t deadline = ap_clock_mono_ns() + 5000000000LL;
	while (!cond(arg)) {
		if (ap_clock_mono_ns() > deadline)
			return false;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return true;
}
