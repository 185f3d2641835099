/* The SyncMessages stream on the client side.
 *
 * One grpc_call with its own NEXT completion queue and three kinds of
 * operation, each at most once in flight (the notes' recipe):
 *   open   {SEND_INITIAL_METADATA, SEND_MESSAGE, SEND_CLOSE_FROM_CLIENT,
 *           RECV_INITIAL_METADATA}, started by ap_stream_open;
 *   status {RECV_STATUS_ON_CLIENT}, started by ap_stream_open; it completes
 *           when the call ends for any reason;
 *   recv   {RECV_MESSAGE}, re-armed by ap_stream_next after each message;
 *           a NULL buffer or a failed batch means no more messages.
 * The stream is over for the consumer once both the status has arrived
 * and the message flow has ended, so every message the server sent before
 * its status is handed out first.
 *
 * stream_on_event() is the whole state machine: it only reacts to one
 * completion. The waiting around it (ap_stream_next, close) is separate,
 * so a harness driving many streams from one shared queue can reuse it.
 *
 * Threads: the consumer thread does everything except ap_stream_cancel,
 * which only calls grpc_call_cancel (thread-safe in gRPC) on a call pointer
 * that is set before the stream is handed out and released only by close.
 * No locks are needed. Each stream holds a grpc_init reference, so it may
 * outlive the client it was opened on. */
#include <stdlib.h>
#include <string.h>

#include "ap/error.h"
#include "ap/grpc_runtime.h"
#include "client_int.h"

enum { TAG_OPEN, TAG_RECV, TAG_STATUS, N_TAGS };

/* A completion-queue tag names its stream and its kind of operation. */
typedef struct stream_tag {
	ap_stream *stream;
	int kind;
} stream_tag;

struct ap_stream {
	grpc_completion_queue *cq;
	grpc_call *call;
	stream_tag tags[N_TAGS];
	bool pending[N_TAGS];     /* started, completion not yet seen */

	/* Kept alive until the open batch completes. */
	grpc_metadata *md;
	size_t n_md;
	grpc_byte_buffer *send;

	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_byte_buffer *recv;    /* filled by the recv operation */
	grpc_status_code code;     /* filled by the status operation */
	grpc_slice details;

	bool opened;  /* the server's initial metadata arrived */
	bool eof;     /* no more messages will come */
	bool ended;   /* the final status arrived */
	Aggregator__SyncMessagesResp *ready; /* decoded, not yet handed out */
	ap_rpc_status status;                /* valid once ended */
};

static void stream_on_event(ap_stream *s, int kind, bool success)
{
	AP_ASSERT(s->pending[kind]);
	s->pending[kind] = false;
	switch (kind) {
	case TAG_OPEN:
		s->opened = success;
		/* The request has been handed to the transport; gRPC holds its
		 * own references from here. */
		break;
	case TAG_RECV:
		if (!success || !s->recv) {
			s->eof = true;
			break;
		}
		s->ready = (Aggregator__SyncMessagesResp *)ap_client_buffer_unpack(
			s->recv, &aggregator__sync_messages_resp__descriptor);
		grpc_byte_buffer_destroy(s->recv);
		s->recv = NULL;
		if (!s->ready) {
			/* A peer that sends garbage gets no further trust: end the
			 * call with a status that says why. */
			grpc_call_cancel_with_status(s->call, GRPC_STATUS_INTERNAL,
				"client: cannot decode aggregator.SyncMessagesResp", NULL);
			s->eof = true;
		}
		break;
	case TAG_STATUS:
		s->ended = true;
		ap_client_status_set(&s->status, s->code, &s->details);
		break;
	default:
		AP_ASSERT(!"unknown stream tag");
	}
}

/* Wait for one completion until deadline. Returns false on timeout. */
static bool stream_wait(ap_stream *s, gpr_timespec deadline)
{
	grpc_event ev = grpc_completion_queue_next(s->cq, deadline, NULL);
	if (ev.type == GRPC_QUEUE_TIMEOUT)
		return false;
	AP_ASSERT(ev.type == GRPC_OP_COMPLETE);
	stream_tag *tag = ev.tag;
	AP_ASSERT(tag->stream == s);
	stream_on_event(s, tag->kind, ev.success != 0);
	return true;
}

static void stream_arm_recv(ap_stream *s)
{
	grpc_op op;
	memset(&op, 0, sizeof op);
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &s->recv;
	s->pending[TAG_RECV] = true;
	if (grpc_call_start_batch(s->call, &op, 1, &s->tags[TAG_RECV], NULL) != GRPC_CALL_OK) {
		s->pending[TAG_RECV] = false;
		s->eof = true;
	}
}

static int stream_start(ap_client *c, grpc_byte_buffer *send,
			const ap_call_options *o, int64_t open_wait_ms,
			ap_stream **out)
{
	*out = NULL;
	ap_stream *s = calloc(1, sizeof *s);
	if (!s) {
		grpc_byte_buffer_destroy(send);
		return AP_ENOMEM;
	}
	ap_grpc_init();
	s->send = send;
	for (int k = 0; k < N_TAGS; k++)
		s->tags[k] = (stream_tag){ s, k };
	grpc_metadata_array_init(&s->initial_md);
	grpc_metadata_array_init(&s->trailing_md);
	s->details = grpc_empty_slice();
	s->cq = grpc_completion_queue_create_for_next(NULL);

	int rc = ap_client_md_build(o ? o->metadata : NULL, o ? o->n_metadata : 0,
				    NULL, 0, &s->md, &s->n_md);
	if (rc)
		goto fail;

	gpr_timespec deadline = o && o->timeout_ms > 0
		? ap_client_deadline(o->timeout_ms)
		: gpr_inf_future(GPR_CLOCK_MONOTONIC);
	grpc_slice method = grpc_slice_from_static_string(AP_RPC_NODE_SYNC_MESSAGES);
	s->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
					   s->cq, method, NULL, deadline, NULL);

	grpc_op ops[4];
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].flags = ap_client_md_flags(o);
	ops[0].data.send_initial_metadata.count = s->n_md;
	ops[0].data.send_initial_metadata.metadata = s->md;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = s->send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
	s->pending[TAG_OPEN] = true;
	if (grpc_call_start_batch(s->call, ops, 4, &s->tags[TAG_OPEN], NULL) != GRPC_CALL_OK) {
		s->pending[TAG_OPEN] = false;
		rc = AP_EINVAL; /* a metadata key gRPC refuses, usually */
		goto fail;
	}

	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
	ops[0].data.recv_status_on_client.status = &s->code;
	ops[0].data.recv_status_on_client.status_details = &s->details;
	s->pending[TAG_STATUS] = true;
	AP_ASSERT(grpc_call_start_batch(s->call, ops, 1, &s->tags[TAG_STATUS], NULL) == GRPC_CALL_OK);

	if (open_wait_ms != 0) {
		gpr_timespec until = ap_client_deadline(open_wait_ms);
		while (s->pending[TAG_OPEN]) {
			if (!stream_wait(s, until)) {
				rc = AP_ETIMEDOUT;
				goto fail;
			}
		}
	}
	*out = s;
	return 0;
fail:
	ap_stream_close(s);
	return rc;
}

int ap_stream_open(ap_client *c, const Aggregator__SyncMessagesReq *req,
		   const ap_call_options *o, int64_t open_wait_ms,
		   ap_stream **out)
{
	*out = NULL;
	if (!c || !req)
		return AP_EINVAL;
	grpc_byte_buffer *send = ap_client_buffer_pack(&req->base);
	if (!send)
		return AP_ENOMEM;
	return stream_start(c, send, o, open_wait_ms, out);
}

int ap_stream_open_raw(ap_client *c, const void *req, size_t req_len,
		       const ap_call_options *o, int64_t open_wait_ms,
		       ap_stream **out)
{
	*out = NULL;
	if (!c || (!req && req_len))
		return AP_EINVAL;
	grpc_byte_buffer *send = ap_client_buffer_from(req, req_len);
	if (!send)
		return AP_ENOMEM;
	return stream_start(c, send, o, open_wait_ms, out);
}

int ap_stream_next(ap_stream *s, int64_t timeout_ms,
		   Aggregator__SyncMessagesResp **msg, ap_rpc_status *st)
{
	gpr_timespec deadline = ap_client_deadline(timeout_ms);

	*msg = NULL;
	for (;;) {
		if (s->ready) {
			*msg = s->ready;
			s->ready = NULL;
			return AP_STREAM_MESSAGE;
		}
		if (s->eof && s->ended) {
			*st = s->status;
			return AP_STREAM_END;
		}
		if (!s->eof && !s->pending[TAG_RECV])
			stream_arm_recv(s);
		if (s->pending[TAG_OPEN] || s->pending[TAG_RECV] || s->pending[TAG_STATUS]) {
			if (!stream_wait(s, deadline))
				return AP_ETIMEDOUT;
		}
	}
}

bool ap_stream_opened(const ap_stream *s)
{
	return s->opened;
}

void ap_stream_cancel(ap_stream *s)
{
	if (s && s->call)
		grpc_call_cancel(s->call, NULL);
}

void ap_stream_close(ap_stream *s)
{
	if (!s)
		return;
	if (s->call) {
		if (!s->ended)
			grpc_call_cancel(s->call, NULL);
		gpr_timespec forever = gpr_inf_future(GPR_CLOCK_MONOTONIC);
		while (s->pending[TAG_OPEN] || s->pending[TAG_RECV] || s->pending[TAG_STATUS])
			stream_wait(s, forever);
		grpc_call_unref(s->call);
		s->call = NULL;
	}
	ap_client_free(s->ready);
	grpc_completion_queue_shutdown(s->cq);
	while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
					  NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(s->cq);
	if (s->recv)
		grpc_byte_buffer_destroy(s->recv);
	if (s->send)
		grpc_byte_buffer_destroy(s->send);
	ap_client_md_free(s->md, s->n_md);
	grpc_metadata_array_destroy(&s->initial_md);
	grpc_metadata_array_destroy(&s->trailing_md);
	grpc_slice_unref(s->details);
	free(s);
	grpc_shutdown();
}
