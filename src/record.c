/* Stored record encoding: one version byte, then a packed store.proto
 * message (see include/ap/record.h).
 *
 * The version byte lets a later build tell an old record from a new one
 * without guessing from the protobuf body; this build knows version
 * AP_RECORD_VERSION only and refuses anything else with AP_EVERSION rather
 * than misreading it. Bodies are decoded by protobuf-c, which checks every
 * length against the buffer, so no input can make us read out of bounds;
 * a body it rejects is AP_EINVAL. Nothing here keeps state: thread-safe. */
#include <protobuf-c/protobuf-c.h>
#include <stdint.h>
#include <stdlib.h>

#include "ap/error.h"
#include "ap/pb.h"
#include "ap/record.h"

int ap_record_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *len)
{
	if (out != NULL)
		*out = NULL;
	if (len != NULL)
		*len = 0;
	if (msg == NULL || out == NULL || len == NULL)
		return AP_EINVAL;
	size_t body = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(1 + body);
	if (buf == NULL)
		return AP_ENOMEM;
	buf[0] = AP_RECORD_VERSION;
	size_t packed = protobuf_c_message_pack(msg, buf + 1);
	AP_ASSERT(packed == body);
	*out = buf;
	*len = 1 + body;
	return 0;
}

/* Check the version byte and unpack the body as `desc`. */
static int record_unpack(const ProtobufCMessageDescriptor *desc,
			 const void *buf, size_t len, ProtobufCMessage **out)
{
	*out = NULL;
	if (buf == NULL || len < 1)
		return AP_EINVAL;
	const uint8_t *p = buf;
	if (p[0] != AP_RECORD_VERSION)
		return AP_EVERSION;
	/* protobuf-c cannot tell out-of-memory from a malformed body; both
	 * mean the record cannot be used. */
	ProtobufCMessage *msg = ap_pb_unpack(desc, len - 1, p + 1);
	if (msg == NULL)
		return AP_EINVAL;
	*out = msg;
	return 0;
}

int ap_record_unpack_task(const void *buf, size_t len,
			  Apstore__TaskRecord **out)
{
	if (out == NULL)
		return AP_EINVAL;
	ProtobufCMessage *msg;
	int rc = record_unpack(&apstore__task_record__descriptor, buf, len,
			       &msg);
	*out = (Apstore__TaskRecord *)msg;
	return rc;
}

int ap_record_unpack_assignment(const void *buf, size_t len,
				Apstore__AssignmentRecord **out)
{
	if (out == NULL)
		return AP_EINVAL;
	ProtobufCMessage *msg;
	int rc = record_unpack(&apstore__assignment_record__descriptor, buf,
			       len, &msg);
	*out = (Apstore__AssignmentRecord *)msg;
	return rc;
}

int ap_record_unpack_operator(const void *buf, size_t len,
			      Apstore__OperatorRecord **out)
{
	if (out == NULL)
		return AP_EINVAL;
	ProtobufCMessage *msg;
	int rc = record_unpack(&apstore__operator_record__descriptor, buf, len,
			       &msg);
	*out = (Apstore__OperatorRecord *)msg;
	return rc;
}

void ap_record_free_task(Apstore__TaskRecord *r)
{
	if (r != NULL)
		apstore__task_record__free_unpacked(r, NULL);
}

void ap_record_free_assignment(Apstore__AssignmentRecord *r)
{
	if (r != NULL)
		apstore__assignment_record__free_unpacked(r, NULL);
}

void ap_record_free_operator(Apstore__OperatorRecord *r)
{
	if (r != NULL)
		apstore__operator_record__free_unpacked(r, NULL);
}
