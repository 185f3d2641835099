/* Internals shared by src/rpc/client.c (channels, unary calls),
 * client_calls.c (the typed calls), client_stream.c (SyncMessages streams)
 * and client_multi.c (many streams on one queue). Not an interface: only
 * these files include it. */
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

/* ---- one SyncMessages call (client_stream.c) -------------------------------
 *
 * ap_stream (one call on its own queue, pulled by its consumer) and
 * ap_mstream (many calls on a mux's queue, pushed to a callback) start the
 * same three operations on the same buffers; they differ only in who waits
 * for the completions and what becomes of a message. This is the part they
 * share. Each owner keeps its own completion-queue tags, which must lead
 * back to the owner, and calls these from the one thread that handles the
 * call's completions. */

/* The operations of the call, each at most once in flight:
 *   OPEN   {SEND_INITIAL_METADATA, SEND_MESSAGE, SEND_CLOSE_FROM_CLIENT,
 *           RECV_INITIAL_METADATA};
 *   RECV   {RECV_MESSAGE}: a NULL buffer or a failed batch means no more
 *           messages;
 *   STATUS {RECV_STATUS_ON_CLIENT}: completes when the call ends for any
 *           reason. */
enum { AP_SYNC_OPEN, AP_SYNC_RECV, AP_SYNC_STATUS, AP_SYNC_N_OPS };

typedef struct ap_client_sync {
	grpc_call *call;
	bool pending[AP_SYNC_N_OPS]; /* started, completion not yet seen */

	/* The request; gRPC reads them until the open batch completes. */
	grpc_metadata *md;
	size_t n_md;
	grpc_byte_buffer *send;

	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_byte_buffer *recv; /* filled by the recv operation */
	grpc_status_code code;  /* filled by the status operation */
	grpc_slice details;
	bool eof;               /* no more messages will come */
} ap_client_sync;

/* Set up x's metadata arrays and details slice; the rest of x starts
 * zeroed (calloc). Call it before ap_client_sync_start and before any path
 * that can reach ap_client_sync_release. */
void ap_client_sync_init(ap_client_sync *x);

/* Create the call on cq, with o's deadline (none when o->timeout_ms is not
 * positive), and start its open and status operations with the given
 * tags; x->send and x->md must be set. Returns 0, or AP_EINVAL when gRPC
 * refuses the open batch (then nothing is pending, but x->call exists). */
int ap_client_sync_start(ap_client_sync *x, ap_client *c,
			 grpc_completion_queue *cq, const ap_call_options *o,
			 void *open_tag, void *status_tag);

/* Start the recv operation with `tag`; when gRPC refuses it, set eof
 * instead. */
void ap_client_sync_arm_recv(ap_client_sync *x, void *tag);

/* Decode and free the buffer a successful recv filled in. The caller owns
 * the message (ap_client_free). NULL when it does not decode: then the call
 * has been cancelled with a status that says why, and eof is set. */
Aggregator__SyncMessagesResp *ap_client_sync_take(ap_client_sync *x);

/* Whether any operation is still pending. */
bool ap_client_sync_busy(const ap_client_sync *x);

/* Release the call and everything x holds. Only once nothing is pending. */
void ap_client_sync_release(ap_client_sync *x);

#endif
