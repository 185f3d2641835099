/*
 * Tests of the wire protocol: proto/node.proto, avs.proto, admin.proto and
 * store.proto as compiled by protoc-c into <builddir>/proto/.
 *
 * Four independent checks, each catching what the others cannot:
 *
 *  - The descriptors protoc-c generated are compared with a table transcribed
 *    from SPEC sections 2 and 2b (field names, numbers, types, repeated,
 *    oneof groups, enum values, service method paths). Both encoders below
 *    read the same .proto files, so only this table catches a field number
 *    that is wrong in the .proto itself.
 *  - Every message (all variants of the fill rule below) round-trips through
 *    protobuf-c pack/unpack and is compared field by field by a comparer
 *    that walks ProtobufCMessageDescriptor, so it needs no per-message code
 *    and also trips over a descriptor whose offsets or quantifiers are wrong.
 *  - tests/fixtures/encode_fixtures.py encodes the same messages with Google's
 *    python3-protobuf (an encoder that shares no code with protobuf-c); this
 *    test decodes each fixture, checks every field against the value the
 *    fill rule says it must have, and checks that protobuf-c encodes the
 *    same message to the same bytes. It also encodes EventTrigger.Config
 *    from avs.proto with upstream's proto3 `optional` restored, to prove the
 *    single-field oneofs in avs.proto are the same on the wire.
 *  - Unknown fields are skipped (proto3) and garbage fails to decode
 *    without crashing (run under the sanitizers in CI).
 *
 * The script runs in a mkdtemp directory that the test removes; it writes
 * nowhere else, so the test also works from the read-only srcdir of
 * `make distcheck`. A missing python3-protobuf or protoc fails the test with
 * a message naming the Debian package; it is never skipped.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "admin.pb-c.h"
#include "avs.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "node.pb-c.h"
#include "store.pb-c.h"

extern char **environ;

/* Every message type the test knows, nested ones included (map entries are
 * reached through their map field). encode_fixtures.py writes a manifest of
 * the messages it finds in the .proto files, and the fixture test fails if
 * the two lists differ, so a message added to a .proto is not left out. */
static const ProtobufCMessageDescriptor *const all_messages[] = {
	&aggregator__manual_trigger__descriptor,
	&aggregator__manual_trigger__config__descriptor,
	&aggregator__manual_trigger__output__descriptor,
	&aggregator__fixed_time_trigger__descriptor,
	&aggregator__fixed_time_trigger__config__descriptor,
	&aggregator__fixed_time_trigger__output__descriptor,
	&aggregator__cron_trigger__descriptor,
	&aggregator__cron_trigger__config__descriptor,
	&aggregator__cron_trigger__output__descriptor,
	&aggregator__block_trigger__descriptor,
	&aggregator__block_trigger__config__descriptor,
	&aggregator__block_trigger__output__descriptor,
	&aggregator__event_trigger__descriptor,
	&aggregator__event_trigger__query__descriptor,
	&aggregator__event_trigger__config__descriptor,
	&aggregator__event_trigger__output__descriptor,
	&aggregator__task_trigger__descriptor,
	&aggregator__checkin__descriptor,
	&aggregator__checkin__status__descriptor,
	&aggregator__checkin_resp__descriptor,
	&aggregator__sync_messages_req__descriptor,
	&aggregator__sync_messages_req__capabilities__descriptor,
	&aggregator__sync_messages_resp__descriptor,
	&aggregator__sync_messages_resp__task_metadata__descriptor,
	&aggregator__ack_message_req__descriptor,
	&aggregator__notify_triggers_req__descriptor,
	&aggregator__notify_triggers_resp__descriptor,
	&aggregator__health_check_request__descriptor,
	&aggregator__health_check_response__descriptor,
	&aggregator__new_task__descriptor,
	&aggregator__create_tasks_req__descriptor,
	&aggregator__create_tasks_resp__descriptor,
	&aggregator__set_task_enabled_req__descriptor,
	&aggregator__task_id_req__descriptor,
	&aggregator__task_op_resp__descriptor,
	&aggregator__list_tasks_req__descriptor,
	&aggregator__task_info__descriptor,
	&aggregator__list_tasks_resp__descriptor,
	&aggregator__list_operators_req__descriptor,
	&aggregator__operator_info__descriptor,
	&aggregator__list_operators_resp__descriptor,
	&apstore__task_record__descriptor,
	&apstore__assignment_record__descriptor,
	&apstore__operator_record__descriptor,
	&google__protobuf__bool_value__descriptor,
	&google__protobuf__timestamp__descriptor,
	&google__protobuf__value__descriptor,
	&google__protobuf__struct__descriptor,
	&google__protobuf__list_value__descriptor,
};
#define N_MESSAGES (sizeof all_messages / sizeof all_messages[0])

/* ---- SPEC sections 2 and 2b, transcribed ----------------------------------
 * One string per message: "[*]name=number:type[@oneof]" separated by spaces;
 * `*` marks a repeated field, a dotted type names a message or enum, @NAME
 * the oneof the field belongs to. The message must have exactly these
 * fields. */
static const struct spec_message {
	const ProtobufCMessageDescriptor *desc;
	const char *fields;
} spec_messages[] = {
	{ &aggregator__health_check_request__descriptor, "operator_address=1:string" },
	{ &aggregator__health_check_response__descriptor,
	  "status=1:string message=2:string timestamp=3:uint64" },
	{ &aggregator__checkin__descriptor,
	  "id=1:string address=2:string signature=3:string status=4:aggregator.Checkin.Status "
	  "version=5:string metricsPort=6:int32 remoteIP=7:string block_number=8:int64 "
	  "event_count=9:int64 *supported_chain_ids=10:int64" },
	{ &aggregator__checkin__status__descriptor,
	  "uptime=1:int64 queueDepth=2:int64 last_heartbeat=3:google.protobuf.Timestamp" },
	{ &aggregator__checkin_resp__descriptor, "updated_at=1:google.protobuf.Timestamp" },
	{ &aggregator__sync_messages_req__descriptor,
	  "id=1:string address=2:string signature=3:bytes monotonic_clock=4:int64 "
	  "capabilities=5:aggregator.SyncMessagesReq.Capabilities *supported_chain_ids=6:int64" },
	{ &aggregator__sync_messages_req__capabilities__descriptor,
	  "event_monitoring=1:bool block_monitoring=2:bool time_monitoring=3:bool" },
	{ &aggregator__sync_messages_resp__descriptor,
	  "id=1:string op=2:aggregator.MessageOp "
	  "task_metadata=3:aggregator.SyncMessagesResp.TaskMetadata" },
	{ &aggregator__sync_messages_resp__task_metadata__descriptor,
	  "task_id=1:string remain=2:int64 expired_at=3:int64 trigger=4:aggregator.TaskTrigger "
	  "start_at=5:int64 chain_id=6:int64" },
	{ &aggregator__ack_message_req__descriptor, "id=1:string" },
	{ &aggregator__notify_triggers_req__descriptor,
	  "address=1:string signature=2:string task_id=3:string trigger_type=4:aggregator.TriggerType "
	  "block_trigger=5:aggregator.BlockTrigger.Output@trigger_output "
	  "fixed_time_trigger=6:aggregator.FixedTimeTrigger.Output@trigger_output "
	  "cron_trigger=7:aggregator.CronTrigger.Output@trigger_output "
	  "event_trigger=8:aggregator.EventTrigger.Output@trigger_output "
	  "manual_trigger=9:aggregator.ManualTrigger.Output@trigger_output "
	  "trigger_request_id=10:string chain_id=11:int64" },
	{ &aggregator__notify_triggers_resp__descriptor,
	  "updated_at=1:google.protobuf.Timestamp remaining_executions=2:int64 "
	  "task_still_enabled=3:bool status=4:string message=5:string" },
	{ &aggregator__task_trigger__descriptor,
	  "name=1:string type=8:aggregator.TriggerType id=7:string "
	  "manual=2:aggregator.ManualTrigger@trigger_type "
	  "fixed_time=3:aggregator.FixedTimeTrigger@trigger_type "
	  "cron=4:aggregator.CronTrigger@trigger_type block=5:aggregator.BlockTrigger@trigger_type "
	  "event=6:aggregator.EventTrigger@trigger_type" },
	{ &aggregator__fixed_time_trigger__descriptor, "config=1:aggregator.FixedTimeTrigger.Config" },
	{ &aggregator__fixed_time_trigger__config__descriptor, "*epochs=1:int64" },
	{ &aggregator__cron_trigger__descriptor, "config=1:aggregator.CronTrigger.Config" },
	{ &aggregator__cron_trigger__config__descriptor, "*schedules=1:string" },
	{ &aggregator__block_trigger__descriptor, "config=1:aggregator.BlockTrigger.Config" },
	{ &aggregator__block_trigger__config__descriptor, "interval=1:int64 chain_id=2:int64" },
	{ &aggregator__event_trigger__descriptor, "config=1:aggregator.EventTrigger.Config" },
	{ &aggregator__event_trigger__config__descriptor,
	  "*queries=1:aggregator.EventTrigger.Query cooldown_seconds=2:uint32@_cooldown_seconds "
	  "chain_id=3:int64" },
	{ &aggregator__event_trigger__query__descriptor,
	  "*addresses=1:string *topics=2:string "
	  "max_events_per_block=3:uint32@_max_events_per_block" },
	{ &aggregator__manual_trigger__descriptor, "config=1:aggregator.ManualTrigger.Config" },
	{ &aggregator__manual_trigger__config__descriptor, "data=1:google.protobuf.Value" },
	{ &aggregator__manual_trigger__output__descriptor, "data=1:google.protobuf.Value" },
	{ &aggregator__fixed_time_trigger__output__descriptor, "data=1:google.protobuf.Value" },
	{ &aggregator__cron_trigger__output__descriptor, "data=1:google.protobuf.Value" },
	{ &aggregator__block_trigger__output__descriptor, "data=1:google.protobuf.Value" },
	{ &aggregator__event_trigger__output__descriptor, "data=1:google.protobuf.Value" },
	/* Section 2b */
	{ &aggregator__create_tasks_req__descriptor, "*tasks=1:aggregator.NewTask" },
	{ &aggregator__create_tasks_resp__descriptor, "*ids=1:string" },
	{ &aggregator__new_task__descriptor,
	  "id=1:string name=2:string trigger=3:aggregator.TaskTrigger max_execution=4:int64 "
	  "start_at=5:int64 expired_at=6:int64" },
	{ &aggregator__set_task_enabled_req__descriptor, "id=1:string enabled=2:bool" },
	{ &aggregator__task_op_resp__descriptor, "id=1:string status=2:string" },
	{ &aggregator__task_id_req__descriptor, "id=1:string" },
	{ &aggregator__list_tasks_req__descriptor, "after=1:string limit=2:uint32" },
	{ &aggregator__list_tasks_resp__descriptor,
	  "*tasks=1:aggregator.TaskInfo next_after=2:string" },
	{ &aggregator__task_info__descriptor,
	  "id=1:string name=2:string status=3:string owner=4:string "
	  "trigger_type=5:aggregator.TriggerType execution_count=6:int64 max_execution=7:int64" },
	{ &aggregator__list_operators_req__descriptor, "" },
	{ &aggregator__list_operators_resp__descriptor, "*operators=1:aggregator.OperatorInfo" },
	{ &aggregator__operator_info__descriptor,
	  "address=1:string connected=2:bool ready=3:bool generation=4:uint64 "
	  "monotonic_clock=5:int64 owned_tasks=6:uint32 synced_tasks=7:uint32 "
	  "connected_at_ms=8:int64 connects=9:uint64" },
};

static const struct spec_enum {
	const ProtobufCEnumDescriptor *desc;
	const char *values; /* "NAME=number ..." */
} spec_enums[] = {
	{ &aggregator__message_op__descriptor,
	  "Unset=0 MonitorTaskTrigger=1 DisableTask=2 DeleteTask=3 CompletedTask=4 "
	  "ImmediateTrigger=5" },
	{ &aggregator__trigger_type__descriptor,
	  "TRIGGER_TYPE_UNSPECIFIED=0 TRIGGER_TYPE_MANUAL=1 TRIGGER_TYPE_FIXED_TIME=2 "
	  "TRIGGER_TYPE_CRON=3 TRIGGER_TYPE_BLOCK=4 TRIGGER_TYPE_EVENT=5" },
};

static const struct spec_method {
	const ProtobufCServiceDescriptor *service;
	const char *path;
	const ProtobufCMessageDescriptor *input, *output;
} spec_methods[] = {
	{ &aggregator__node__descriptor, "/aggregator.Node/HealthCheck",
	  &aggregator__health_check_request__descriptor,
	  &aggregator__health_check_response__descriptor },
	{ &aggregator__node__descriptor, "/aggregator.Node/Ping",
	  &aggregator__checkin__descriptor, &aggregator__checkin_resp__descriptor },
	{ &aggregator__node__descriptor, "/aggregator.Node/SyncMessages",
	  &aggregator__sync_messages_req__descriptor, &aggregator__sync_messages_resp__descriptor },
	{ &aggregator__node__descriptor, "/aggregator.Node/Ack",
	  &aggregator__ack_message_req__descriptor, &google__protobuf__bool_value__descriptor },
	{ &aggregator__node__descriptor, "/aggregator.Node/NotifyTriggers",
	  &aggregator__notify_triggers_req__descriptor,
	  &aggregator__notify_triggers_resp__descriptor },
	{ &aggregator__admin__descriptor, "/aggregator.Admin/CreateTasks",
	  &aggregator__create_tasks_req__descriptor, &aggregator__create_tasks_resp__descriptor },
	{ &aggregator__admin__descriptor, "/aggregator.Admin/SetTaskEnabled",
	  &aggregator__set_task_enabled_req__descriptor, &aggregator__task_op_resp__descriptor },
	{ &aggregator__admin__descriptor, "/aggregator.Admin/DeleteTask",
	  &aggregator__task_id_req__descriptor, &aggregator__task_op_resp__descriptor },
	{ &aggregator__admin__descriptor, "/aggregator.Admin/ListTasks",
	  &aggregator__list_tasks_req__descriptor, &aggregator__list_tasks_resp__descriptor },
	{ &aggregator__admin__descriptor, "/aggregator.Admin/ListOperators",
	  &aggregator__list_operators_req__descriptor,
	  &aggregator__list_operators_resp__descriptor },
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- The fill rule ---------------------------------------------------------
 * Mirrors encode_fixtures.py (its docstring has the table): every field's
 * value is a function of its path, so the expected message for any fixture
 * can be rebuilt here. Variants rotate which oneof member is set and how
 * many elements repeated fields get; variant 0 sets every bool to true, so
 * in variant 0 no field holds its default value. */
enum { VARIANTS = 6, MAX_DEPTH = 6, PATH_MAX_LEN = 512 };

#define FIELD_PTR(msg, off) ((void *)((char *)(msg) + (off)))
#define CFIELD_PTR(msg, off) ((const void *)((const char *)(msg) + (off)))

static uint32_t fnv1a(const char *s)
{
	uint32_t h = 0x811c9dc5u;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x01000193u;
	}
	return h;
}

static void path_join(char *out, const char *parent, const char *name, long index)
{
	int n = index < 0 ? snprintf(out, PATH_MAX_LEN, "%s.%s", parent, name)
			  : snprintf(out, PATH_MAX_LEN, "%s.%s[%ld]", parent, name, index);

	assert_true(n > 0 && n < PATH_MAX_LEN);
}

static size_t type_size(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_ENUM:
		return 4;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
	}
	fail_msg("unknown protobuf-c type %d", (int)type);
	return 0;
}

static bool is_map(const ProtobufCFieldDescriptor *f)
{
	const ProtobufCMessageDescriptor *d = f->descriptor;
	size_t len;

	if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED)
		return false;
	len = strlen(d->short_name);
	return len > 5 && strcmp(d->short_name + len - 5, "Entry") == 0 && d->n_fields == 2 &&
	       strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

/* The id of the member of f's oneof that this variant sets (0: none). */
static uint32_t oneof_choice(const ProtobufCMessageDescriptor *desc,
			     const ProtobufCFieldDescriptor *f, int variant, int depth)
{
	const ProtobufCFieldDescriptor *eligible[16];
	unsigned n = 0;

	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *m = &desc->fields[i];

		if (!(m->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
		    m->quantifier_offset != f->quantifier_offset)
			continue;
		if (depth >= MAX_DEPTH && m->type == PROTOBUF_C_TYPE_MESSAGE)
			continue;
		assert_true(n < N_ELEMS(eligible));
		eligible[n++] = m;
	}
	return n ? eligible[variant % n]->id : 0;
}

static void fill_scalar(const ProtobufCFieldDescriptor *f, const char *path, int variant,
			void *dst)
{
	uint32_t key = fnv1a(path);
	bool neg = key & 1;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32: {
		int32_t v = (int32_t)(key % 100000) + 1;
		*(int32_t *)dst = neg ? -v : v;
		break;
	}
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64: {
		int64_t v = ((int64_t)key << 20) + 1;
		*(int64_t *)dst = neg ? -v : v;
		break;
	}
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		*(uint32_t *)dst = key | 1;
		break;
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		*(uint64_t *)dst = ((uint64_t)key << 32) | 1;
		break;
	case PROTOBUF_C_TYPE_BOOL:
		*(protobuf_c_boolean *)dst = variant == 0 ? 1 : (key >> 7) & 1;
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *e = f->descriptor;
		int nonzero[64];
		unsigned n = 0;

		/* protobuf-c keeps enum values sorted by number. */
		for (unsigned i = 0; i < e->n_values; i++)
			if (e->values[i].value != 0) {
				assert_true(n < N_ELEMS(nonzero));
				nonzero[n++] = e->values[i].value;
			}
		*(int *)dst = n ? nonzero[key % n] : 0;
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		char buf[PATH_MAX_LEN];

		snprintf(buf, sizeof buf, "%s-%08" PRIx32 "%s", f->name, key,
			 (key & 2) ? "-\xc3\xa9" : "");
		*(char **)dst = strdup(buf);
		assert_non_null(*(char **)dst);
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData *b = dst;
		uint8_t *data = malloc(6);

		assert_non_null(data);
		data[0] = 0x00;
		data[1] = 0xff;
		data[2] = key >> 24;
		data[3] = key >> 16;
		data[4] = key >> 8;
		data[5] = key;
		b->len = 6;
		b->data = data;
		break;
	}
	case PROTOBUF_C_TYPE_DOUBLE: {
		double v = key / 8.0 + 0.25;
		*(double *)dst = neg ? -v : v;
		break;
	}
	case PROTOBUF_C_TYPE_FLOAT:
		*(float *)dst = (float)((key % 1000) / 4.0 + 0.5);
		break;
	case PROTOBUF_C_TYPE_MESSAGE:
		fail_msg("%s: fill_scalar on a message", path);
	}
}

static ProtobufCMessage *new_message(const ProtobufCMessageDescriptor *desc)
{
	ProtobufCMessage *msg = malloc(desc->sizeof_message);

	assert_non_null(msg);
	protobuf_c_message_init(desc, msg);
	return msg;
}

/* Set msg's fields by the fill rule. Everything is malloc()ed, so the result
 * is freed with protobuf_c_message_free_unpacked(msg, NULL). */
static void fill(ProtobufCMessage *msg, const char *path, int variant, int depth)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;

	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		char fpath[PATH_MAX_LEN];

		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (oneof_choice(desc, f, variant, depth) != f->id)
				continue;
			*(uint32_t *)FIELD_PTR(msg, f->quantifier_offset) = f->id;
		}
		if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth + 1 > MAX_DEPTH)
			continue;
		if (is_map(f) && depth + 2 > MAX_DEPTH)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = is_map(f) ? 1 : 2 + variant % 2;
			size_t size = type_size(f->type);
			char *array = calloc(n, size);

			assert_non_null(array);
			*(size_t *)FIELD_PTR(msg, f->quantifier_offset) = n;
			*(void **)FIELD_PTR(msg, f->offset) = array;
			for (size_t j = 0; j < n; j++) {
				path_join(fpath, path, f->name, (long)j);
				if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
					ProtobufCMessage *sub = new_message(f->descriptor);

					fill(sub, fpath, variant, depth + 1);
					((ProtobufCMessage **)array)[j] = sub;
				} else {
					fill_scalar(f, fpath, variant, array + j * size);
				}
			}
			continue;
		}
		path_join(fpath, path, f->name, -1);
		if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
			ProtobufCMessage *sub = new_message(f->descriptor);

			fill(sub, fpath, variant, depth + 1);
			*(ProtobufCMessage **)FIELD_PTR(msg, f->offset) = sub;
			continue;
		}
		/* A string set over the default must not be freed by anyone. */
		fill_scalar(f, fpath, variant, FIELD_PTR(msg, f->offset));
		if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
		    !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
			*(protobuf_c_boolean *)FIELD_PTR(msg, f->quantifier_offset) = 1;
	}
}

static ProtobufCMessage *make_filled(const ProtobufCMessageDescriptor *desc, int variant)
{
	ProtobufCMessage *msg = new_message(desc);
	char root[PATH_MAX_LEN];

	snprintf(root, sizeof root, "%s#%d", desc->name, variant);
	fill(msg, root, variant, 0);
	return msg;
}

/* ---- The generic comparer ---------------------------------------------- */

static bool compare_message(const ProtobufCMessage *a, const ProtobufCMessage *b,
			    const char *path, char *err, size_t errlen);

static bool compare_value(const ProtobufCFieldDescriptor *f, const void *pa, const void *pb,
			  const char *path, char *err, size_t errlen)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		if (*(const int32_t *)pa == *(const int32_t *)pb)
			return true;
		snprintf(err, errlen, "%s: %" PRId32 " != %" PRId32, path, *(const int32_t *)pa,
			 *(const int32_t *)pb);
		return false;
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		if (*(const uint32_t *)pa == *(const uint32_t *)pb)
			return true;
		snprintf(err, errlen, "%s: %" PRIu32 " != %" PRIu32, path, *(const uint32_t *)pa,
			 *(const uint32_t *)pb);
		return false;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
		if (*(const int64_t *)pa == *(const int64_t *)pb)
			return true;
		snprintf(err, errlen, "%s: %" PRId64 " != %" PRId64, path, *(const int64_t *)pa,
			 *(const int64_t *)pb);
		return false;
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		if (*(const uint64_t *)pa == *(const uint64_t *)pb)
			return true;
		snprintf(err, errlen, "%s: %" PRIu64 " != %" PRIu64, path, *(const uint64_t *)pa,
			 *(const uint64_t *)pb);
		return false;
	case PROTOBUF_C_TYPE_FLOAT:
		if (memcmp(pa, pb, sizeof(float)) == 0)
			return true;
		snprintf(err, errlen, "%s: %g != %g", path, *(const float *)pa, *(const float *)pb);
		return false;
	case PROTOBUF_C_TYPE_DOUBLE:
		if (memcmp(pa, pb, sizeof(double)) == 0)
			return true;
		snprintf(err, errlen, "%s: %.17g != %.17g", path, *(const double *)pa,
			 *(const double *)pb);
		return false;
	case PROTOBUF_C_TYPE_BOOL:
		if (!*(const protobuf_c_boolean *)pa == !*(const protobuf_c_boolean *)pb)
			return true;
		snprintf(err, errlen, "%s: bool %d != %d", path, *(const protobuf_c_boolean *)pa,
			 *(const protobuf_c_boolean *)pb);
		return false;
	case PROTOBUF_C_TYPE_STRING: {
		const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;

		if (strcmp(sa ? sa : "", sb ? sb : "") == 0)
			return true;
		snprintf(err, errlen, "%s: \"%s\" != \"%s\"", path, sa ? sa : "(null)",
			 sb ? sb : "(null)");
		return false;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *ba = pa, *bb = pb;

		if (ba->len == bb->len && (ba->len == 0 || memcmp(ba->data, bb->data, ba->len) == 0))
			return true;
		snprintf(err, errlen, "%s: bytes differ (length %zu and %zu)", path, ba->len,
			 bb->len);
		return false;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *ma = *(ProtobufCMessage *const *)pa;
		const ProtobufCMessage *mb = *(ProtobufCMessage *const *)pb;

		if (!ma && !mb)
			return true;
		if (!ma || !mb) {
			snprintf(err, errlen, "%s: message %s on one side only", path,
				 ma ? "set" : "unset");
			return false;
		}
		return compare_message(ma, mb, path, err, errlen);
	}
	}
	snprintf(err, errlen, "%s: unknown type %d", path, (int)f->type);
	return false;
}

/* True when a and b hold the same known fields; err names the first
 * difference by path. Unknown fields are not compared. */
static bool compare_message(const ProtobufCMessage *a, const ProtobufCMessage *b,
			    const char *path, char *err, size_t errlen)
{
	const ProtobufCMessageDescriptor *desc = a->descriptor;

	if (a->descriptor != b->descriptor) {
		snprintf(err, errlen, "%s: descriptors %s and %s", path, a->descriptor->name,
			 b->descriptor->name);
		return false;
	}
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		char fpath[PATH_MAX_LEN];

		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t ca = *(const uint32_t *)CFIELD_PTR(a, f->quantifier_offset);
			uint32_t cb = *(const uint32_t *)CFIELD_PTR(b, f->quantifier_offset);

			if (ca != cb) {
				snprintf(err, errlen, "%s: oneof of %s holds field %u and %u", path,
					 f->name, ca, cb);
				return false;
			}
			if (ca != f->id)
				continue;
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t na = *(const size_t *)CFIELD_PTR(a, f->quantifier_offset);
			size_t nb = *(const size_t *)CFIELD_PTR(b, f->quantifier_offset);
			const char *arr_a = *(char *const *)CFIELD_PTR(a, f->offset);
			const char *arr_b = *(char *const *)CFIELD_PTR(b, f->offset);
			size_t size = type_size(f->type);

			if (na != nb) {
				path_join(fpath, path, f->name, -1);
				snprintf(err, errlen, "%s: %zu elements != %zu", fpath, na, nb);
				return false;
			}
			for (size_t j = 0; j < na; j++) {
				path_join(fpath, path, f->name, (long)j);
				if (!compare_value(f, arr_a + j * size, arr_b + j * size, fpath, err,
						   errlen))
					return false;
			}
			continue;
		}
		path_join(fpath, path, f->name, -1);
		if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
		    f->type != PROTOBUF_C_TYPE_MESSAGE && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) {
			protobuf_c_boolean ha = *(const protobuf_c_boolean *)CFIELD_PTR(a, f->quantifier_offset);
			protobuf_c_boolean hb = *(const protobuf_c_boolean *)CFIELD_PTR(b, f->quantifier_offset);

			if (!ha != !hb) {
				snprintf(err, errlen, "%s: present on one side only", fpath);
				return false;
			}
			if (!ha)
				continue;
		}
		if (!compare_value(f, CFIELD_PTR(a, f->offset), CFIELD_PTR(b, f->offset), fpath, err,
				   errlen))
			return false;
	}
	return true;
}

static void assert_messages_equal(const ProtobufCMessage *expected, const ProtobufCMessage *got,
				  const char *what)
{
	char err[1024] = "";

	if (!compare_message(expected, got, expected->descriptor->name, err, sizeof err))
		fail_msg("%s: %s (expected != got)", what, err);
}

/* Pack msg into a malloc()ed buffer; checks get_packed_size agrees. */
static uint8_t *pack(const ProtobufCMessage *msg, size_t *len)
{
	size_t size = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(size + 1);

	assert_non_null(buf);
	assert_int_equal(protobuf_c_message_pack(msg, buf), size);
	*len = size;
	return buf;
}

static const ProtobufCMessageDescriptor *message_by_name(const char *name)
{
	for (size_t i = 0; i < N_MESSAGES; i++)
		if (strcmp(all_messages[i]->name, name) == 0)
			return all_messages[i];
	return NULL;
}

/* ---- Descriptors against the SPEC --------------------------------------- */

static const struct { const char *name; ProtobufCType type; } scalar_types[] = {
	{ "string", PROTOBUF_C_TYPE_STRING }, { "bytes", PROTOBUF_C_TYPE_BYTES },
	{ "bool", PROTOBUF_C_TYPE_BOOL },     { "int32", PROTOBUF_C_TYPE_INT32 },
	{ "int64", PROTOBUF_C_TYPE_INT64 },   { "uint32", PROTOBUF_C_TYPE_UINT32 },
	{ "uint64", PROTOBUF_C_TYPE_UINT64 }, { "double", PROTOBUF_C_TYPE_DOUBLE },
};

static const char *type_name(ProtobufCType type)
{
	for (size_t i = 0; i < N_ELEMS(scalar_types); i++)
		if (scalar_types[i].type == type)
			return scalar_types[i].name;
	return type == PROTOBUF_C_TYPE_MESSAGE ? "message"
	       : type == PROTOBUF_C_TYPE_ENUM  ? "enum"
					       : "another scalar type";
}

static void test_descriptors_match_spec(void **state)
{
	for (size_t m = 0; m < N_ELEMS(spec_messages); m++) {
		const ProtobufCMessageDescriptor *desc = spec_messages[m].desc;
		char *copy = strdup(spec_messages[m].fields), *save = NULL;
		char oneof_of[32][64] = { { 0 } }; /* oneof name by field index */
		unsigned n_spec = 0;

		assert_non_null(copy);
		for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
			bool repeated = tok[0] == '*';
			char *name = tok + repeated, *eq = strchr(name, '='), *colon = strchr(name, ':');
			char *type, *at;
			const ProtobufCFieldDescriptor *f;

			assert_non_null(eq);
			assert_non_null(colon);
			*eq = *colon = '\0';
			type = colon + 1;
			at = strchr(type, '@');
			if (at)
				*at++ = '\0';
			f = protobuf_c_message_descriptor_get_field_by_name(desc, name);
			if (!f)
				fail_msg("%s: field %s of the SPEC is missing", desc->name, name);
			if (f->id != (uint32_t)atoi(eq + 1))
				fail_msg("%s.%s: field number %u, SPEC says %s", desc->name, name, f->id,
					 eq + 1);
			if ((f->label == PROTOBUF_C_LABEL_REPEATED) != repeated)
				fail_msg("%s.%s: repeated is %d, SPEC says %d", desc->name, name,
					 f->label == PROTOBUF_C_LABEL_REPEATED, repeated);
			if (strchr(type, '.')) {
				const char *actual = f->type == PROTOBUF_C_TYPE_MESSAGE
					? ((const ProtobufCMessageDescriptor *)f->descriptor)->name
					: f->type == PROTOBUF_C_TYPE_ENUM
					? ((const ProtobufCEnumDescriptor *)f->descriptor)->name
					: "(scalar)";
				if (strcmp(actual, type) != 0)
					fail_msg("%s.%s: type %s, SPEC says %s", desc->name, name, actual,
						 type);
			} else if (strcmp(type_name(f->type), type) != 0) {
				fail_msg("%s.%s: type %s, SPEC says %s", desc->name, name,
					 type_name(f->type), type);
			}
			if (!!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != !!at)
				fail_msg("%s.%s: oneof membership differs from the SPEC", desc->name,
					 name);
			if (at) {
				unsigned idx = (unsigned)(f - desc->fields);

				assert_true(idx < 32 && strlen(at) < 64);
				strcpy(oneof_of[idx], at);
			}
			n_spec++;
		}
		free(copy);
		if (desc->n_fields != n_spec)
			fail_msg("%s: %u fields, the SPEC lists %u", desc->name, desc->n_fields, n_spec);
		/* Fields share a oneof exactly when the SPEC puts them in one. */
		for (unsigned i = 0; i < desc->n_fields; i++)
			for (unsigned j = 0; j < desc->n_fields; j++) {
				bool same_spec = oneof_of[i][0] && strcmp(oneof_of[i], oneof_of[j]) == 0;
				bool same_c = oneof_of[i][0] && oneof_of[j][0] &&
					      desc->fields[i].quantifier_offset ==
						      desc->fields[j].quantifier_offset;
				if (same_spec != same_c)
					fail_msg("%s: fields %s and %s: oneof grouping differs from the SPEC",
						 desc->name, desc->fields[i].name, desc->fields[j].name);
			}
	}

	for (size_t e = 0; e < N_ELEMS(spec_enums); e++) {
		const ProtobufCEnumDescriptor *desc = spec_enums[e].desc;
		char *copy = strdup(spec_enums[e].values), *save = NULL;
		unsigned n_spec = 0;

		assert_non_null(copy);
		for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
			char *eq = strchr(tok, '=');
			const ProtobufCEnumValue *v;

			assert_non_null(eq);
			*eq = '\0';
			v = protobuf_c_enum_descriptor_get_value_by_name(desc, tok);
			if (!v || v->value != atoi(eq + 1))
				fail_msg("%s.%s: %s, SPEC says %s", desc->name, tok,
					 v ? "wrong number" : "missing", eq + 1);
			n_spec++;
		}
		free(copy);
		assert_int_equal(desc->n_values, n_spec);
	}
}

static void test_service_method_paths(void **state)
{
	const ProtobufCServiceDescriptor *services[] = { &aggregator__node__descriptor,
							  &aggregator__admin__descriptor };

	assert_string_equal(aggregator__node__descriptor.name, "aggregator.Node");
	assert_string_equal(aggregator__admin__descriptor.name, "aggregator.Admin");
	for (size_t i = 0; i < N_ELEMS(spec_methods); i++) {
		const struct spec_method *sm = &spec_methods[i];
		const char *method = strrchr(sm->path, '/') + 1;
		const ProtobufCMethodDescriptor *md =
			protobuf_c_service_descriptor_get_method_by_name(sm->service, method);
		char path[256];

		if (!md)
			fail_msg("%s: no method %s in service %s", sm->path, method, sm->service->name);
		/* gRPC's method path is "/<package>.<Service>/<Method>". */
		snprintf(path, sizeof path, "/%s/%s", sm->service->name, md->name);
		assert_string_equal(path, sm->path);
		assert_ptr_equal(md->input, sm->input);
		assert_ptr_equal(md->output, sm->output);
	}
	/* ...and the services have no methods the SPEC does not list. */
	for (size_t s = 0; s < N_ELEMS(services); s++) {
		unsigned listed = 0;

		for (size_t i = 0; i < N_ELEMS(spec_methods); i++)
			listed += spec_methods[i].service == services[s];
		assert_int_equal(services[s]->n_methods, listed);
	}
}

/* ---- Round trip through protobuf-c ------------------------------------- */

static void test_round_trip(void **state)
{
	for (size_t m = 0; m < N_MESSAGES; m++) {
		const ProtobufCMessageDescriptor *desc = all_messages[m];
		ProtobufCMessage *empty = new_message(desc), *back;
		uint8_t *buf, *again;
		size_t len, len2;

		/* A message with every field at its default encodes to nothing. */
		buf = pack(empty, &len);
		assert_int_equal(len, 0);
		back = protobuf_c_message_unpack(desc, NULL, len, buf);
		assert_non_null(back);
		assert_messages_equal(empty, back, desc->name);
		protobuf_c_message_free_unpacked(back, NULL);
		protobuf_c_message_free_unpacked(empty, NULL);
		free(buf);

		for (int variant = 0; variant < VARIANTS; variant++) {
			ProtobufCMessage *msg = make_filled(desc, variant);
			char what[256];

			snprintf(what, sizeof what, "%s variant %d", desc->name, variant);
			buf = pack(msg, &len);
			if (variant == 0 && desc->n_fields > 0)
				assert_true(len > 0); /* nothing at its default */
			back = protobuf_c_message_unpack(desc, NULL, len, buf);
			if (!back)
				fail_msg("%s: protobuf-c cannot unpack what it packed", what);
			assert_int_equal(back->n_unknown_fields, 0);
			assert_messages_equal(msg, back, what);
			again = pack(back, &len2);
			assert_int_equal(len2, len);
			assert_memory_equal(again, buf, len);
			protobuf_c_message_free_unpacked(back, NULL);
			protobuf_c_message_free_unpacked(msg, NULL);
			free(again);
			free(buf);
		}
	}
}

/* The generated API the rest of ap uses for the upstream `optional` fields:
 * presence survives even when the value is 0. */
static void test_single_field_oneof_presence(void **state)
{
	Aggregator__EventTrigger__Query q0 = AGGREGATOR__EVENT_TRIGGER__QUERY__INIT;
	Aggregator__EventTrigger__Query q1 = AGGREGATOR__EVENT_TRIGGER__QUERY__INIT;
	Aggregator__EventTrigger__Query *queries[] = { &q0, &q1 };
	Aggregator__EventTrigger__Config cfg = AGGREGATOR__EVENT_TRIGGER__CONFIG__INIT;
	Aggregator__EventTrigger__Config *back;
	uint8_t buf[64];
	size_t len;

	q0._max_events_per_block_case =
		AGGREGATOR__EVENT_TRIGGER__QUERY___MAX_EVENTS_PER_BLOCK_MAX_EVENTS_PER_BLOCK;
	q0.max_events_per_block = 0;
	cfg.n_queries = 2;
	cfg.queries = queries;
	cfg._cooldown_seconds_case =
		AGGREGATOR__EVENT_TRIGGER__CONFIG___COOLDOWN_SECONDS_COOLDOWN_SECONDS;
	cfg.cooldown_seconds = 0;
	/* protoc-c writes no pack/unpack helpers for nested messages. */
	assert_true(protobuf_c_message_get_packed_size(&cfg.base) <= sizeof buf);
	len = protobuf_c_message_pack(&cfg.base, buf);
	back = (Aggregator__EventTrigger__Config *)protobuf_c_message_unpack(
		&aggregator__event_trigger__config__descriptor, NULL, len, buf);
	assert_non_null(back);
	assert_int_equal(back->n_queries, 2);
	assert_int_equal(back->queries[0]->_max_events_per_block_case,
			 AGGREGATOR__EVENT_TRIGGER__QUERY___MAX_EVENTS_PER_BLOCK_MAX_EVENTS_PER_BLOCK);
	assert_int_equal(back->queries[0]->max_events_per_block, 0);
	assert_int_equal(back->queries[1]->_max_events_per_block_case,
			 AGGREGATOR__EVENT_TRIGGER__QUERY___MAX_EVENTS_PER_BLOCK__NOT_SET);
	assert_int_equal(back->_cooldown_seconds_case,
			 AGGREGATOR__EVENT_TRIGGER__CONFIG___COOLDOWN_SECONDS_COOLDOWN_SECONDS);
	assert_int_equal(back->cooldown_seconds, 0);
	protobuf_c_message_free_unpacked(&back->base, NULL);
}

/* ---- Unknown fields and garbage ------------------------------------------ */

static void test_unknown_fields_ignored(void **state)
{
	/* Field 100 varint 150, 101 fixed64, 102 length-delimited "xyz",
	 * 103 fixed32: none of them exists in any ap message. */
	static const uint8_t unknown[] = {
		0xa0, 0x06, 0x96, 0x01,
		0xa9, 0x06, 1, 2, 3, 4, 5, 6, 7, 8,
		0xb2, 0x06, 3, 'x', 'y', 'z',
		0xbd, 0x06, 1, 2, 3, 4,
	};
	static const ProtobufCMessageDescriptor *const descs[] = {
		&aggregator__checkin__descriptor, &aggregator__sync_messages_req__descriptor,
		&aggregator__notify_triggers_req__descriptor, &aggregator__create_tasks_req__descriptor,
	};

	for (size_t d = 0; d < N_ELEMS(descs); d++) {
		ProtobufCMessage *msg = make_filled(descs[d], 0), *back;
		size_t len;
		uint8_t *packed = pack(msg, &len);
		uint8_t *buf = malloc(len + 2 * sizeof unknown);

		/* Unknown fields before, between (after the first known field is
		 * irrelevant to the decoder) and after the known ones. */
		assert_non_null(buf);
		memcpy(buf, unknown, sizeof unknown);
		memcpy(buf + sizeof unknown, packed, len);
		memcpy(buf + sizeof unknown + len, unknown, sizeof unknown);
		back = protobuf_c_message_unpack(descs[d], NULL, len + 2 * sizeof unknown, buf);
		if (!back)
			fail_msg("%s: unknown fields made the decode fail", descs[d]->name);
		assert_messages_equal(msg, back, descs[d]->name);
		assert_int_equal(back->n_unknown_fields, 8);
		protobuf_c_message_free_unpacked(back, NULL);
		protobuf_c_message_free_unpacked(msg, NULL);
		free(packed);
		free(buf);
	}
}

static uint32_t xorshift32(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void test_garbage_rejected(void **state)
{
	static const struct { const char *what; uint8_t bytes[12]; size_t len; } bad[] = {
		{ "length past the end", { 0x0a, 0x05, 'a' }, 3 },
		{ "tag without a value", { 0x08 }, 1 },
		{ "varint longer than 10 bytes",
		  { 0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 }, 12 },
		{ "wire type 7", { 0x0f, 0x00 }, 2 },
		{ "field number 0", { 0x00, 0x01 }, 2 },
		{ "truncated fixed64", { 0xa9, 0x06, 1, 2, 3 }, 5 },
		{ "length-delimited where a varint belongs", { 0x22, 0x01, 0x01 }, 3 },
	};
	uint32_t seed = 0x2545f491u;

	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		ProtobufCMessage *m = protobuf_c_message_unpack(&aggregator__checkin__descriptor, NULL,
								bad[i].len, bad[i].bytes);
		if (m) {
			protobuf_c_message_free_unpacked(m, NULL);
			fail_msg("Checkin decoded garbage: %s", bad[i].what);
		}
	}

	/* Every strict prefix of a valid encoding: no crash, and cutting the
	 * last byte always cuts a field in half. Then random bit flips and
	 * random bytes: decoding may succeed or fail, but must not crash or
	 * leak (the sanitizer builds check). */
	for (size_t m = 0; m < N_MESSAGES; m++) {
		const ProtobufCMessageDescriptor *desc = all_messages[m];
		ProtobufCMessage *msg = make_filled(desc, 1), *back;
		size_t len;
		uint8_t *buf = pack(msg, &len);

		for (size_t cut = 0; cut < len; cut++) {
			back = protobuf_c_message_unpack(desc, NULL, cut, buf);
			if (cut == len - 1 && back)
				fail_msg("%s: decoded with its last byte cut off", desc->name);
			if (back)
				protobuf_c_message_free_unpacked(back, NULL);
		}
		for (int flip = 0; flip < 200 && len > 0; flip++) {
			uint8_t *copy = malloc(len);
			uint32_t r = xorshift32(&seed);

			assert_non_null(copy);
			memcpy(copy, buf, len);
			copy[r % len] ^= (uint8_t)(1u << ((r >> 16) % 8));
			back = protobuf_c_message_unpack(desc, NULL, len, copy);
			if (back)
				protobuf_c_message_free_unpacked(back, NULL);
			free(copy);
		}
		for (int round = 0; round < 50; round++) {
			size_t rlen = xorshift32(&seed) % 48;
			uint8_t *random = malloc(rlen + 1);

			assert_non_null(random);
			for (size_t k = 0; k < rlen; k++)
				random[k] = (uint8_t)xorshift32(&seed);
			back = protobuf_c_message_unpack(desc, NULL, rlen, random);
			if (back)
				protobuf_c_message_free_unpacked(back, NULL);
			free(random);
		}
		protobuf_c_message_free_unpacked(msg, NULL);
		free(buf);
	}
}

/* ---- Fixtures from the independent encoder ------------------------------ */

/* One temp dir for the whole run, made by the group setup and removed by
 * the group teardown; the encoder runs once, for the first test that needs
 * it, and its result is remembered for the others. */
static char fixture_dir[256];
static int encoder_result; /* 0: not run yet, 1: ok, -1: failed */

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path);
}

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(fixture_dir, sizeof fixture_dir, "%s/ap-test-proto-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(fixture_dir)) {
		fprintf(stderr, "mkdtemp %s: %s\n", fixture_dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	if (fixture_dir[0] && nftw(fixture_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "removing %s: %s\n", fixture_dir, strerror(errno));
	return 0;
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);

	return v && *v ? v : fallback;
}

/* Run encode_fixtures.py into dir; fails the test if it cannot. */
static void run_encoder(const char *dir)
{
	const char *python = env_or("PYTHON_PROTO", "/usr/bin/python3");
	const char *srcdir = env_or("AP_SRCDIR", AP_TEST_SRCDIR);
	const char *include = env_or("PROTO_INCLUDE", "/usr/include");
	char script[1024], proto_dir[1024];
	char *argv[10];
	pid_t pid;
	int rc, status;

	snprintf(script, sizeof script, "%s/tests/fixtures/encode_fixtures.py", srcdir);
	snprintf(proto_dir, sizeof proto_dir, "%s/proto", srcdir);
	if (access(python, X_OK) != 0)
		fail_msg("%s: %s. The protocol fixtures need Python 3 with Google's protobuf "
			 "module: install the Debian packages python3 and python3-protobuf "
			 "(apt-get install -y python3-protobuf protobuf-compiler), or point "
			 "PYTHON_PROTO at such an interpreter.", python, strerror(errno));
	argv[0] = (char *)python;
	argv[1] = (char *)"-B";
	argv[2] = script;
	argv[3] = (char *)"--proto-dir";
	argv[4] = proto_dir;
	argv[5] = (char *)"--include";
	argv[6] = (char *)include;
	argv[7] = (char *)"--out";
	argv[8] = (char *)dir;
	argv[9] = NULL;
	fflush(NULL);
	rc = posix_spawn(&pid, python, NULL, NULL, argv, environ);
	if (rc != 0)
		fail_msg("cannot run %s: %s", python, strerror(rc));
	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("%s %s failed (%s %d; its message is above). It needs the Debian "
			 "packages python3-protobuf and protobuf-compiler "
			 "(apt-get install -y python3-protobuf protobuf-compiler).",
			 python, script, WIFEXITED(status) ? "exit status" : "signal",
			 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* Make sure the fixtures exist in fixture_dir. */
static void need_fixtures(void)
{
	if (encoder_result == 1)
		return;
	if (encoder_result == -1)
		fail_msg("encode_fixtures.py failed in an earlier test (see above)");
	encoder_result = -1;
	run_encoder(fixture_dir);
	encoder_result = 1;
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (!f)
		fail_msg("%s: %s", path, strerror(errno));
	do {
		if (n == cap) {
			cap = cap ? 2 * cap : 4096;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	assert_int_equal(ferror(f), 0);
	fclose(f);
	*len = n;
	return buf;
}

static void check_fixture(const char *dir, const ProtobufCMessageDescriptor *desc, int variant)
{
	char file[1024], what[256];
	size_t len, clen;
	uint8_t *bytes, *cbytes;
	ProtobufCMessage *expected, *got;

	snprintf(file, sizeof file, "%s/%s.%d.bin", dir, desc->name, variant);
	snprintf(what, sizeof what, "python-encoded %s variant %d", desc->name, variant);
	bytes = read_file(file, &len);
	got = protobuf_c_message_unpack(desc, NULL, len, bytes);
	if (!got)
		fail_msg("%s: protobuf-c cannot decode it", what);
	assert_int_equal(got->n_unknown_fields, 0);
	expected = make_filled(desc, variant);
	assert_messages_equal(expected, got, what);
	/* Both encoders write known fields in field-number order and pack
	 * repeated scalars, so protobuf-c must produce the very same bytes. */
	cbytes = pack(expected, &clen);
	if (clen != len || memcmp(cbytes, bytes, len) != 0)
		fail_msg("%s: protobuf-c encodes it differently (%zu bytes, python %zu)", what, clen,
			 len);
	protobuf_c_message_free_unpacked(got, NULL);
	protobuf_c_message_free_unpacked(expected, NULL);
	free(cbytes);
	free(bytes);
}

static void test_python_fixtures(void **state)
{
	char manifest_path[1024], line[256];
	bool seen[N_MESSAGES] = { false };
	unsigned n_seen = 0;
	FILE *manifest;

	need_fixtures();
	snprintf(manifest_path, sizeof manifest_path, "%s/manifest.txt", fixture_dir);
	manifest = fopen(manifest_path, "r");
	if (!manifest)
		fail_msg("%s: %s", manifest_path, strerror(errno));
	while (fgets(line, sizeof line, manifest)) {
		const ProtobufCMessageDescriptor *desc;

		line[strcspn(line, "\n")] = '\0';
		desc = message_by_name(line);
		if (!desc)
			fail_msg("message %s is in the .proto files but not in all_messages[] of "
				 "test_proto.c: add it", line);
		for (int variant = 0; variant < VARIANTS; variant++)
			check_fixture(fixture_dir, desc, variant);
		for (size_t i = 0; i < N_MESSAGES; i++)
			if (all_messages[i] == desc && !seen[i]) {
				seen[i] = true;
				n_seen++;
			}
	}
	fclose(manifest);
	for (size_t i = 0; i < N_MESSAGES; i++)
		if (!seen[i])
			fail_msg("%s: no fixture from encode_fixtures.py", all_messages[i]->name);
	assert_int_equal(n_seen, N_MESSAGES);
}

/* EventTrigger.Config encoded from avs.proto with upstream's `optional`
 * restored (encode_fixtures.py, encode_upstream_optional). */
static void test_upstream_optional_compatible(void **state)
{
	char path[1024];
	size_t len;
	uint8_t *bytes;
	Aggregator__EventTrigger__Config *cfg;

	need_fixtures();
	snprintf(path, sizeof path, "%s/upstream_optional.bin", fixture_dir);
	bytes = read_file(path, &len);
	cfg = (Aggregator__EventTrigger__Config *)protobuf_c_message_unpack(
		&aggregator__event_trigger__config__descriptor, NULL, len, bytes);
	assert_non_null(cfg);
	assert_int_equal(cfg->base.n_unknown_fields, 0);
	assert_int_equal(cfg->n_queries, 2);
	assert_int_equal(cfg->queries[0]->n_addresses, 1);
	assert_string_equal(cfg->queries[0]->addresses[0], "0xabc");
	assert_int_equal(cfg->queries[0]->_max_events_per_block_case,
			 AGGREGATOR__EVENT_TRIGGER__QUERY___MAX_EVENTS_PER_BLOCK_MAX_EVENTS_PER_BLOCK);
	assert_int_equal(cfg->queries[0]->max_events_per_block, 0);
	assert_int_equal(cfg->queries[1]->n_topics, 1);
	assert_string_equal(cfg->queries[1]->topics[0], "0xdef");
	assert_int_equal(cfg->queries[1]->_max_events_per_block_case,
			 AGGREGATOR__EVENT_TRIGGER__QUERY___MAX_EVENTS_PER_BLOCK__NOT_SET);
	assert_int_equal(cfg->_cooldown_seconds_case,
			 AGGREGATOR__EVENT_TRIGGER__CONFIG___COOLDOWN_SECONDS_COOLDOWN_SECONDS);
	assert_int_equal(cfg->cooldown_seconds, 0);
	assert_int_equal(cfg->chain_id, 7);
	protobuf_c_message_free_unpacked(&cfg->base, NULL);
	free(bytes);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_descriptors_match_spec),
		cmocka_unit_test(test_service_method_paths),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_single_field_oneof_presence),
		cmocka_unit_test(test_unknown_fields_ignored),
		cmocka_unit_test(test_garbage_rejected),
		cmocka_unit_test(test_python_fixtures),
		cmocka_unit_test(test_upstream_optional_compatible),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
