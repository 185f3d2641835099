/* libFuzzer target: the stored record decoders (include/ap/record.h) and
 * what the engine does with a decoded record when it loads the database
 * (src/engine_open.c) and later rewrites it (SPEC section 4).
 *
 * Input: byte 0 chooses the database (byte % 3), the rest is the stored
 * value, version byte included:
 *
 *   0 tasks        ap_record_unpack_task; ap_task_insert into a task table
 *                  (a failed placeholder when it does not decode, as
 *                  load_task does); every SyncMessagesResp the engine
 *                  would send about it (ap_task_pack_message), decoded as
 *                  an operator would; the copy the engine rewrites
 *                  (ap_task_record_dup, ap_record_pack) decoded again
 *   1 assignments  ap_record_unpack_assignment; engine_is_address on the
 *                  owner; ap_assign_set / ap_assign_owner / untrack
 *   2 operators    ap_record_unpack_operator; engine_is_address;
 *                  ap_registry_load into a fresh registry; the rewrite a
 *                  Ping makes (ap_record_pack of a changed copy)
 *
 * Besides the sanitizers, the target checks record.h's contract (0,
 * AP_EINVAL or AP_EVERSION; a message exactly when 0; never a
 * half-decoded record) and that whatever the engine packs from a decoded
 * record decodes again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/assign.h"
#include "ap/record.h"
#include "ap/registry.h"
#include "ap/session.h"
#include "ap/task.h"
#include "engine_int.h"
#include "fuzz.h"
#include "node.pb-c.h"

#define RECORD_ID "fz-record"

static ap_task_table *tasks;
static ap_assign *assign;
static ap_session *any_session;   /* no capabilities announced, any chain */
static ap_session *block_session; /* block monitoring only, chains 1 and 5 */

static void release(void)
{
	ap_session_unref(any_session);
	ap_session_unref(block_session);
	ap_assign_close(assign);
	ap_task_table_close(tasks);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet_log();
	FZ_CHECK(ap_task_table_open(&tasks) == 0);
	FZ_CHECK(ap_assign_open(&assign) == 0);
	ap_hello any = { .address = FZ_OWNER };
	static const int64_t chains[] = { 1, 5 };
	ap_hello block = { .address = FZ_OTHER, .has_capabilities = true,
			   .block_monitoring = true, .chain_ids = chains, .n_chain_ids = 2 };
	any_session = ap_session_new(&any, 1);
	block_session = ap_session_new(&block, 2);
	FZ_CHECK(any_session && block_session);
	atexit(release);
	return 0;
}

/* record.h: 0, AP_EINVAL or AP_EVERSION, a message exactly on success,
 * AP_EVERSION exactly when the version byte is wrong. */
static void check_unpack(int rc, const void *msg, const uint8_t *data, size_t size)
{
	FZ_CHECK(rc == 0 || rc == AP_EINVAL || rc == AP_EVERSION);
	FZ_CHECK((rc == 0) == (msg != NULL));
	FZ_CHECK((rc == AP_EVERSION) == (size >= 1 && data[0] != AP_RECORD_VERSION));
}

/* Pack m as the store would and check that it decodes again as desc. */
static void check_repack(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *desc)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	FZ_CHECK(ap_record_pack(m, &buf, &len) == 0);
	FZ_CHECK(len >= 1 && buf[0] == AP_RECORD_VERSION);
	ProtobufCMessage *again = protobuf_c_message_unpack(desc, NULL, len - 1, buf + 1);
	if (!again && fz_known_tag0(m)) {
		free(buf);
		return;
	}
	FZ_CHECK(again != NULL);
	/* protobuf-c packs canonically: a second round gives the same bytes. */
	size_t len2 = protobuf_c_message_get_packed_size(again);
	FZ_CHECK(len2 == len - 1);
	uint8_t *buf2 = malloc(len2 ? len2 : 1);
	FZ_CHECK(buf2 != NULL);
	FZ_CHECK(protobuf_c_message_pack(again, buf2) == len2);
	FZ_CHECK(memcmp(buf + 1, buf2, len2) == 0);
	free(buf2);
	protobuf_c_message_free_unpacked(again, NULL);
	free(buf);
}

static void task_record(const uint8_t *data, size_t size)
{
	Apstore__TaskRecord *r = NULL;
	int rc = ap_record_unpack_task(data, size, &r);
	check_unpack(rc, r, data, size);
	ap_task *t = ap_task_insert(tasks, RECORD_ID, r); /* takes r */
	FZ_CHECK(t != NULL && ap_task_find(tasks, RECORD_ID) == t);
	FZ_CHECK(ap_task_count(tasks) == 1);
	if (t->status != AP_TASK_FAILED) {
		/* Loaded as usable: its trigger passed the same check as a new task. */
		FZ_CHECK(r != NULL);
		FZ_CHECK(ap_task_trigger_check(r->trigger, NULL, 0) == t->trigger_type);
		FZ_CHECK(t->chain_id == ap_task_trigger_chain(r->trigger));
		FZ_CHECK((int)r->status == (int)t->status);
	} else {
		FZ_CHECK(!ap_task_assignable(t));
	}
	if (ap_task_assignable(t)) {
		(void)ap_session_can_run(any_session, t->trigger_type, t->chain_id);
		(void)ap_session_can_run(block_session, t->trigger_type, t->chain_id);
	}
	(void)ap_task_status_name(t->status);

	static const ap_op ops[] = { AP_OP_MONITOR, AP_OP_DISABLE, AP_OP_DELETE, AP_OP_COMPLETED };
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		uint8_t *buf = NULL;
		size_t len = 0;
		FZ_CHECK(ap_task_pack_message(t, ops[i], &buf, &len) == 0);
		Aggregator__SyncMessagesResp *m = aggregator__sync_messages_resp__unpack(NULL, len, buf);
		if (!m && fz_known_tag0(&r->base)) {
			free(buf);
			continue;
		}
		FZ_CHECK(m != NULL);
		FZ_CHECK(strcmp(m->id, RECORD_ID) == 0 && (int)m->op == (int)ops[i]);
		FZ_CHECK(m->task_metadata && strcmp(m->task_metadata->task_id, RECORD_ID) == 0);
		if (ops[i] == AP_OP_MONITOR && r)
			FZ_CHECK((m->task_metadata->trigger != NULL) == (r->trigger != NULL));
		aggregator__sync_messages_resp__free_unpacked(m, NULL);
		free(buf);
	}
	if (r) {
		/* A status change or a counted execution rewrites a copy. */
		Apstore__TaskRecord *copy = ap_task_record_dup(r);
		FZ_CHECK(copy != NULL || fz_known_tag0(&r->base));
		if (copy) {
			if (copy->execution_count < INT64_MAX) /* as the engine counts */
				copy->execution_count++;
			check_repack(&copy->base, &apstore__task_record__descriptor);
			ap_record_free_task(copy);
		}
		check_repack(&r->base, &apstore__task_record__descriptor);
	}
	ap_task_remove(tasks, t);
	FZ_CHECK(ap_task_count(tasks) == 0);
}

static void assignment_record(const uint8_t *data, size_t size)
{
	Apstore__AssignmentRecord *r = NULL;
	int rc = ap_record_unpack_assignment(data, size, &r);
	check_unpack(rc, r, data, size);
	if (r && engine_is_address(r->owner)) {
		FZ_CHECK(ap_assign_set(assign, RECORD_ID, r->owner, r->generation, r->assigned_at) == 0);
		char owner[AP_ADDRESS_LEN + 1];
		FZ_CHECK(ap_assign_owner(assign, RECORD_ID, owner));
		FZ_CHECK(strcmp(owner, r->owner) == 0);
		FZ_CHECK(ap_assign_owned_count(assign, r->owner) == 1);
		FZ_CHECK(ap_assign_orphan_count(assign) == 0);
		ap_assign_untrack(assign, RECORD_ID);
		FZ_CHECK(ap_assign_tracked_count(assign) == 0);
	}
	if (r)
		check_repack(&r->base, &apstore__assignment_record__descriptor);
	ap_record_free_assignment(r);
}

static void operator_record(const uint8_t *data, size_t size)
{
	Apstore__OperatorRecord *r = NULL;
	int rc = ap_record_unpack_operator(data, size, &r);
	check_unpack(rc, r, data, size);
	if (!r)
		return;
	if (engine_is_address(r->address)) {
		ap_registry *reg = NULL;
		FZ_CHECK(ap_registry_open(&reg) == 0);
		FZ_CHECK(ap_registry_load(reg, r) == 0);
		ap_operator_info info;
		FZ_CHECK(ap_registry_get(reg, r->address, &info));
		FZ_CHECK(!info.connected && strcmp(info.address, r->address) == 0);
		FZ_CHECK(info.n_chain_ids == (r->n_chain_ids < 16 ? r->n_chain_ids : 16));
		ap_operator_info *all = NULL;
		FZ_CHECK(ap_registry_snapshot(reg, &all) == 1);
		free(all);
		ap_registry_close(reg);
	}
	/* A Ping rewrites the record from a changed shallow copy. */
	Apstore__OperatorRecord copy = *r;
	copy.last_ping_ms = 1700000000000;
	copy.version = (char *)"fuzz";
	check_repack(&copy.base, &apstore__operator_record__descriptor);
	ap_record_free_operator(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned kind = data[0] % 3;
	data++;
	size--;
	switch (kind) {
	case 0: task_record(data, size); break;
	case 1: assignment_record(data, size); break;
	default: operator_record(data, size); break;
	}
	return 0;
}
