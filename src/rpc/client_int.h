/* Internals shared by src/rpc/client.c (channels, unary calls),
 * client_calls.c (the typed calls) and client_stream.c (SyncMessages
 * streams). Not an interface: only these files include it. */
#ifndef AP_RPC_CLIENT_INT_H
#define AP_RPC_CLIENT_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "ap/client.h"

struct ap_client {
	grpc_channel *channel;
	char *target;
};

/* The absolute monotonic deadline `timeout_ms` from now; a negative value
 * means none (infinite future). */
gpr_timespec ap_client_deadline(int64_t timeout_ms);

/* Build a grpc_metadata array from two lists of key/value pairs (either
 * may be empty). Each slice is a copy; free with ap_client_md_free. Returns 0,
 * AP_EINVAL (NULL key or value) or AP_ENOMEM. *out is NULL when there is
 * nothing to send. */
int ap_client_md_build(const ap_rpc_metadata *a, size_t na,
		    const ap_rpc_metadata *b, size_t nb,
		    grpc_metadata **out, size_t *n_out);
void ap_client_md_free(grpc_metadata *md, size_t n);

/* The flags of a SEND_INITIAL_METADATA op for these options. */
uint32_t ap_client_md_flags(const ap_call_options *o);

/* A byte buffer holding a copy of len bytes. NULL on allocation failure. */
grpc_byte_buffer *ap_client_buffer_from(const void *data, size_t len);
/* A byte buffer holding a protobuf-c message. NULL on allocation failure. */
grpc_byte_buffer *ap_client_buffer_pack(const ProtobufCMessage *m);
/* Decode a received buffer (not freed here); NULL when it does not
 * decode. */
ProtobufCMessage *ap_client_buffer_unpack(grpc_byte_buffer *bb,
				       const ProtobufCMessageDescriptor *d);

/* A unary call with protobuf-c messages in and out plus extra metadata
 * after o->metadata (for Ack's x-operator-address); see ap_client_call. */
int ap_client_call_message(ap_client *c, const char *method,
			   const ProtobufCMessage *req,
			   const ProtobufCMessageDescriptor *resp_descriptor,
			   ProtobufCMessage **resp, const ap_rpc_metadata *extra,
			   size_t n_extra, const ap_call_options *o,
			   ap_rpc_status *st);

/* Copy a status and its details slice into st (details truncated). */
void ap_client_status_set(ap_rpc_status *st, grpc_status_code code,
		       const grpc_slice *details);
/* Set a status made up by this side (e.g. an undecodable response). */
void ap_client_status_local(ap_rpc_status *st, int code, const char *details);

#endif
