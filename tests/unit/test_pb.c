/* ap_pb_unpack: a field number 0 hidden in a two-byte tag is refused at
 * any depth (the fuzzers' finding), in requests and in stored records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin.pb-c.h"
#include "ap/error.h"
#include "ap/pb.h"
#include "ap/record.h"

/* CreateTasksReq{tasks: NewTask{id "x", trigger{block{config{interval 10,
 * <field 0, fixed32>}}}}} */
static const uint8_t create_with_zero[] = { 0x0a, 0x11, 0x0a, 0x01, 0x78, 0x1a, 0x0c,
					    0x2a, 0x04, 0x0a, 0x02, 0x08, 0x0a, 0x85,
					    0x00, 0x01, 0x02, 0x03, 0x04 };

static void test_nested_field_zero_refused(void **state)
{
	(void)state;
	/* protobuf-c alone accepts it... */
	ProtobufCMessage *m = protobuf_c_message_unpack(&aggregator__create_tasks_req__descriptor,
							NULL, sizeof create_with_zero,
							create_with_zero);
	assert_non_null(m);
	assert_true(ap_pb_has_field_zero(m));
	protobuf_c_message_free_unpacked(m, NULL);
	/* ...ap_pb_unpack does not. */
	assert_null(ap_pb_unpack(&aggregator__create_tasks_req__descriptor,
				 sizeof create_with_zero, create_with_zero));
}

static void test_valid_message_passes(void **state)
{
	(void)state;
	/* The same request without the bad field (lengths adjusted). */
	static const uint8_t ok[] = { 0x0a, 0x0d, 0x0a, 0x01, 0x78, 0x1a, 0x08, 0x2a,
				      0x04, 0x0a, 0x02, 0x08, 0x0a, 0x40, 0x04 };
	Aggregator__CreateTasksReq *r = (Aggregator__CreateTasksReq *)ap_pb_unpack(
		&aggregator__create_tasks_req__descriptor, sizeof ok, ok);
	assert_non_null(r);
	assert_int_equal(r->n_tasks, 1);
	assert_string_equal(r->tasks[0]->id, "x");
	assert_int_equal(r->tasks[0]->trigger->block->config->interval, 10);
	assert_false(ap_pb_has_field_zero(&r->base));
	protobuf_c_message_free_unpacked(&r->base, NULL);
	/* Unknown fields with a real number stay allowed (proto3). */
	static const uint8_t unknown[] = { 0x0a, 0x01, 0x78, 0xa8, 0x06, 0x01 };
	Aggregator__TaskIdReq *t = (Aggregator__TaskIdReq *)ap_pb_unpack(
		&aggregator__task_id_req__descriptor, sizeof unknown, unknown);
	assert_non_null(t);
	assert_string_equal(t->id, "x");
	protobuf_c_message_free_unpacked(&t->base, NULL);
}

static void test_record_with_field_zero(void **state)
{
	(void)state;
	static const uint8_t rec[] = { AP_RECORD_VERSION, 0x85, 0x00, 0x1a, 0x02, 0x1a, 0x00 };
	Apstore__TaskRecord *r = NULL;
	assert_int_equal(ap_record_unpack_task(rec, sizeof rec, &r), AP_EINVAL);
	assert_null(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nested_field_zero_refused),
		cmocka_unit_test(test_valid_message_passes),
		cmocka_unit_test(test_record_with_field_zero),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
