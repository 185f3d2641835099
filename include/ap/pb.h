/* Decoding protobuf-c messages from untrusted bytes.
 *
 * protobuf-c 1.4 accepts a field number 0 written as a multi-byte tag
 * (e.g. 85 00), keeps it as an unknown field and re-encodes it as a
 * one-byte tag that its own decoder then rejects. Such a message would
 * decode, then fail every later pack/unpack round trip (a stored record
 * that can never be rewritten, a trigger that operators cannot decode).
 * Field number 0 is invalid in protobuf, so every decode of outside bytes
 * goes through ap_pb_unpack, which refuses it at any depth. Found by the
 * fuzz targets (tests/fuzz). Thread-safe. */
#ifndef AP_PB_H
#define AP_PB_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* protobuf_c_message_unpack, plus the check above. NULL when the bytes are
 * not a valid message of `desc`. Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *ap_pb_unpack(const ProtobufCMessageDescriptor *desc, size_t len,
			       const uint8_t *data);
/* True when m or a message inside it carries an unknown field number 0. */
bool ap_pb_has_field_zero(const ProtobufCMessage *m);

#endif
