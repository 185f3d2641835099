/* Decoding protobuf-c messages from untrusted bytes: see include/ap/pb.h. */
#include "ap/pb.h"

bool ap_pb_has_field_zero(const ProtobufCMessage *m)
{
	if (!m)
		return false;
	for (unsigned i = 0; i < m->n_unknown_fields; i++)
		if (m->unknown_fields[i].tag == 0)
			return true;
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	for (unsigned f = 0; f < d->n_fields; f++) {
		const ProtobufCFieldDescriptor *fd = &d->fields[f];
		if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + fd->quantifier_offset);
			ProtobufCMessage *const *v =
				*(ProtobufCMessage *const *const *)(base + fd->offset);
			for (size_t k = 0; k < n; k++)
				if (ap_pb_has_field_zero(v[k]))
					return true;
			continue;
		}
		/* A oneof member is only there when the case says so. */
		if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + fd->quantifier_offset) != fd->id)
			continue;
		if (ap_pb_has_field_zero(*(ProtobufCMessage *const *)(base + fd->offset)))
			return true;
	}
	return false;
}

ProtobufCMessage *ap_pb_unpack(const ProtobufCMessageDescriptor *desc, size_t len,
			       const uint8_t *data)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
	if (m && ap_pb_has_field_zero(m)) {
		protobuf_c_message_free_unpacked(m, NULL);
		return NULL;
	}
	return m;
}
