/* Tasks: the in-memory table, id and trigger rules, and the messages that
 * carry a task to an operator. See include/ap/task.h: the table has no lock
 * of its own because only the engine touches it, under the engine lock. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/task.h"
#include "node.pb-c.h"

struct ap_task_table {
	ap_task *by_id;
	size_t count;
	size_t by_status[AP_TASK_FAILED + 1];
};

const char *ap_task_status_name(ap_task_status st)
{
	switch (st) {
	case AP_TASK_ENABLED: return "enabled";
	case AP_TASK_DISABLED: return "disabled";
	case AP_TASK_COMPLETED: return "completed";
	case AP_TASK_FAILED: return "failed";
	}
	return "failed";
}

bool ap_task_id_valid(const char *id)
{
	size_t n = 0;
	for (const char *p = id; *p; p++, n++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '-';
		if (!ok || n >= AP_TASK_ID_MAX)
			return false;
	}
	return n > 0;
}

/* The last ULID made, so ids made in the same millisecond stay in creation
 * order (the ULID spec's monotonic mode): the random part is incremented
 * instead of drawn again. Guarded by ulid_lock (a leaf). */
static pthread_mutex_t ulid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t ulid_last_ms;
static uint8_t ulid_last_rand[10];

void ap_task_make_ulid(char out[27])
{
	/* ULID: 48-bit millisecond time then 80 random bits, in Crockford's
	 * base32, lower-cased (SPEC 2b). */
	static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
	uint8_t b[16];
	uint64_t ms = (uint64_t)ap_clock_wall_ms();
	pthread_mutex_lock(&ulid_lock);
	if (ms <= ulid_last_ms) {
		/* Same (or an earlier, if the clock stepped back) millisecond:
		 * the last id plus one. */
		ms = ulid_last_ms;
		for (int i = 9; i >= 0 && ++ulid_last_rand[i] == 0; i--)
			;
	} else {
		size_t got = 0;
		while (got < 10) {
			ssize_t r = getrandom(ulid_last_rand + got, 10 - got, 0);
			if (r > 0)
				got += (size_t)r;
		}
		ulid_last_ms = ms;
	}
	memcpy(b + 6, ulid_last_rand, 10);
	pthread_mutex_unlock(&ulid_lock);
	for (int i = 5; i >= 0; i--, ms >>= 8)
		b[i] = (uint8_t)ms;
	/* 128 bits -> 26 symbols of 5 bits, most significant first (the first
	 * symbol holds only the top 3 bits). */
	for (int i = 0; i < 26; i++) {
		int bit = 128 - 5 * (26 - i); /* position of this symbol's lsb run */
		unsigned v = 0;
		for (int k = 0; k < 5; k++) {
			int pos = bit + k; /* bit index from the most significant */
			if (pos < 0)
				continue;
			v = (v << 1) | ((b[pos / 8] >> (7 - pos % 8)) & 1u);
		}
		out[i] = alphabet[v & 31];
	}
	out[26] = '\0';
}

static int fail(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
	return AP_EINVAL;
}

int ap_task_trigger_check(const Aggregator__TaskTrigger *tr, char *err, size_t errlen)
{
	if (!tr)
		return fail(err, errlen, "trigger is required");
	int type;
	switch (tr->trigger_type_case) {
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL:
		type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL;
		break;
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME:
		type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_FIXED_TIME;
		if (!tr->fixed_time->config || tr->fixed_time->config->n_epochs == 0)
			return fail(err, errlen, "fixed_time trigger needs at least one epoch");
		break;
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON:
		type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON;
		if (!tr->cron->config || tr->cron->config->n_schedules == 0)
			return fail(err, errlen, "cron trigger needs at least one schedule");
		for (size_t i = 0; i < tr->cron->config->n_schedules; i++)
			if (!tr->cron->config->schedules[i][0])
				return fail(err, errlen, "cron schedule is empty");
		break;
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK:
		type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
		if (!tr->block->config || tr->block->config->interval <= 0)
			return fail(err, errlen, "block trigger needs an interval > 0");
		if (tr->block->config->chain_id < 0)
			return fail(err, errlen, "chain_id must not be negative");
		break;
	case AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_EVENT:
		type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT;
		if (!tr->event->config || tr->event->config->n_queries == 0)
			return fail(err, errlen, "event trigger needs at least one query");
		if (tr->event->config->chain_id < 0)
			return fail(err, errlen, "chain_id must not be negative");
		break;
	default:
		return fail(err, errlen, "trigger has no kind (manual, fixed_time, cron, block or event)");
	}
	if (tr->type != AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_UNSPECIFIED &&
	    (int)tr->type != type)
		return fail(err, errlen, "trigger type does not match the trigger kind");
	return type;
}

int64_t ap_task_trigger_chain(const Aggregator__TaskTrigger *tr)
{
	if (!tr)
		return 0;
	if (tr->trigger_type_case == AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK &&
	    tr->block->config)
		return tr->block->config->chain_id;
	if (tr->trigger_type_case == AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_EVENT &&
	    tr->event->config)
		return tr->event->config->chain_id;
	return 0;
}

bool ap_task_assignable(const ap_task *t)
{
	return t->status == AP_TASK_ENABLED &&
	       t->trigger_type != AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL;
}

int ap_task_table_open(ap_task_table **out)
{
	*out = calloc(1, sizeof **out);
	return *out ? 0 : AP_ENOMEM;
}

static void task_free(ap_task *t)
{
	if (t->record)
		apstore__task_record__free_unpacked(t->record, NULL);
	free(t);
}

void ap_task_table_close(ap_task_table *tt)
{
	if (!tt)
		return;
	ap_task *t, *tmp;
	HASH_ITER(hh, tt->by_id, t, tmp) {
		HASH_DEL(tt->by_id, t);
		task_free(t);
	}
	free(tt);
}

ap_task *ap_task_find(ap_task_table *tt, const char *id)
{
	ap_task *t;
	HASH_FIND_STR(tt->by_id, id, t);
	return t;
}

size_t ap_task_count(ap_task_table *tt) { return tt->count; }

size_t ap_task_count_status(ap_task_table *tt, ap_task_status st)
{
	return st <= AP_TASK_FAILED ? tt->by_status[st] : 0;
}

void ap_task_set_status(ap_task_table *tt, ap_task *t, ap_task_status st)
{
	tt->by_status[t->status]--;
	t->status = st;
	tt->by_status[st]++;
}

ap_task *ap_task_insert(ap_task_table *tt, const char *id, Apstore__TaskRecord *r)
{
	ap_task *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	snprintf(t->id, sizeof t->id, "%s", id);
	t->record = r;
	t->status = AP_TASK_FAILED;
	if (r) {
		int type = ap_task_trigger_check(r->trigger, NULL, 0);
		if (type >= 0 && r->status <= APSTORE__TASK_STATUS__TASK_FAILED) {
			t->status = (ap_task_status)r->status;
			t->trigger_type = type;
			t->chain_id = ap_task_trigger_chain(r->trigger);
		}
	}
	HASH_ADD_STR(tt->by_id, id, t);
	tt->count++;
	tt->by_status[t->status]++;
	return t;
}

void ap_task_remove(ap_task_table *tt, ap_task *t)
{
	HASH_DEL(tt->by_id, t);
	tt->count--;
	tt->by_status[t->status]--;
	task_free(t);
}

void ap_task_each(ap_task_table *tt, void (*fn)(void *arg, ap_task *t), void *arg)
{
	ap_task *t, *tmp;
	HASH_ITER(hh, tt->by_id, t, tmp) fn(arg, t);
}

/* Deep copy through pack/unpack: protobuf-c has no copy function, and the
 * result is then freed like any unpacked record. */
static Apstore__TaskRecord *record_copy(const Apstore__TaskRecord *r)
{
	size_t len = apstore__task_record__get_packed_size(r);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return NULL;
	apstore__task_record__pack(r, buf);
	Apstore__TaskRecord *copy = apstore__task_record__unpack(NULL, len, buf);
	free(buf);
	return copy;
}

Apstore__TaskRecord *ap_task_record_from_new(const Aggregator__NewTask *nt,
					     const char *id, int64_t created_at)
{
	Apstore__TaskRecord r = APSTORE__TASK_RECORD__INIT;
	r.id = (char *)id;
	r.name = nt->name;
	r.trigger = nt->trigger;
	r.status = APSTORE__TASK_STATUS__TASK_ENABLED;
	r.max_execution = nt->max_execution;
	r.start_at = nt->start_at;
	r.expired_at = nt->expired_at;
	r.created_at = created_at;
	return record_copy(&r);
}

int64_t ap_task_record_remaining(const Apstore__TaskRecord *r)
{
	if (r->max_execution <= 0)
		return -1;
	int64_t done = r->execution_count > 0 ? r->execution_count : 0;
	return done >= r->max_execution ? 0 : r->max_execution - done;
}

Apstore__TaskRecord *ap_task_record_dup(const Apstore__TaskRecord *r)
{
	return record_copy(r);
}

static int pack_resp(Aggregator__SyncMessagesResp *m, uint8_t **out, size_t *len)
{
	*len = aggregator__sync_messages_resp__get_packed_size(m);
	*out = malloc(*len ? *len : 1);
	if (!*out)
		return AP_ENOMEM;
	aggregator__sync_messages_resp__pack(m, *out);
	return 0;
}

int ap_task_pack_message(const ap_task *t, ap_op op, uint8_t **out, size_t *len)
{
	if (op != AP_OP_MONITOR || !t->record)
		return ap_task_pack_removal(t->id, op, out, len);
	const Apstore__TaskRecord *r = t->record;
	Aggregator__SyncMessagesResp m = AGGREGATOR__SYNC_MESSAGES_RESP__INIT;
	Aggregator__SyncMessagesResp__TaskMetadata md =
		AGGREGATOR__SYNC_MESSAGES_RESP__TASK_METADATA__INIT;
	m.id = (char *)t->id;
	m.op = (Aggregator__MessageOp)op;
	m.task_metadata = &md;
	md.task_id = (char *)t->id;
	md.remain = ap_task_record_remaining(r);
	md.expired_at = r->expired_at;
	md.trigger = r->trigger;
	md.start_at = r->start_at;
	md.chain_id = t->chain_id;
	return pack_resp(&m, out, len);
}

int ap_task_pack_removal(const char *task_id, ap_op op, uint8_t **out, size_t *len)
{
	Aggregator__SyncMessagesResp m = AGGREGATOR__SYNC_MESSAGES_RESP__INIT;
	Aggregator__SyncMessagesResp__TaskMetadata md =
		AGGREGATOR__SYNC_MESSAGES_RESP__TASK_METADATA__INIT;
	m.id = (char *)task_id;
	m.op = (Aggregator__MessageOp)op;
	m.task_metadata = &md;
	md.task_id = (char *)task_id;
	return pack_resp(&m, out, len);
}
