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
 * The call's operations themselves are the ap_client_sync_* functions at
 * the end of this file, which client_multi.c's streams share.
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

/* A completion-queue tag names its stream and its kind of operation. */
typedef struct stream_tag {
	ap_stream *stream;
	int kind;
} stream_tag;

struct ap_stream {
	grpc_completion_queue *cq;
	ap_client_sync sync; /* the call; sync.call is what cancel reads */
	stream_tag tags[AP_SYNC_N_OPS];

	bool opened;  /* the server's initial metadata arrived */
	bool ended;   /* the final status arrived */
	Aggregator__SyncMessagesResp *ready; /* decoded, not yet handed out */
	ap_rpc_status status;                /* valid once ended */
};

static void stream_on_event(ap_stream *s, int kind, bool success)
{
	AP_ASSERT(s->sync.pending[kind]);
	s->sync.pending[kind] = false;
	switch (kind) {
	case AP_SYNC_OPEN:
		s->opened = success;
		/* The request has been handed to the transport; gRPC holds its
		 * own references from here. */
		break;
	case AP_SYNC_RECV:
		if (!success || !s->sync.recv) {
			s->sync.eof = true;
			break;
		}
		s->ready = ap_client_sync_take(&s->sync);
		break;
	case AP_SYNC_STATUS:
		s->ended = true;
		ap_client_status_set(&s->status, s->sync.code, &s->sync.details);
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
	ap_client_sync_init(&s->sync);
	s->sync.send = send;
	for (int k = 0; k < AP_SYNC_N_OPS; k++)
		s->tags[k] = (stream_tag){ s, k };
	s->cq = grpc_completion_queue_create_for_next(NULL);

	int rc = ap_client_md_build(o ? o->metadata : NULL, o ? o->n_metadata : 0,
				    NULL, 0, &s->sync.md, &s->sync.n_md);
	if (rc)
		goto fail;
	rc = ap_client_sync_start(&s->sync, c, s->cq, o, &s->tags[AP_SYNC_OPEN],
				  &s->tags[AP_SYNC_STATUS]);
	if (rc)
		goto fail;

	if (open_wait_ms != 0) {
		gpr_timespec until = ap_client_deadline(open_wait_ms);
		while (s->sync.pending[AP_SYNC_OPEN]) {
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
		if (s->sync.eof && s->ended) {
			*st = s->status;
			return AP_STREAM_END;
		}
		if (!s->sync.eof && !s->sync.pending[AP_SYNC_RECV])
			ap_client_sync_arm_recv(&s->sync, &s->tags[AP_SYNC_RECV]);
		if (ap_client_sync_busy(&s->sync)) {
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
	if (s && s->sync.call)
		grpc_call_cancel(s->sync.call, NULL);
}

void ap_stream_close(ap_stream *s)
{
	if (!s)
		return;
	if (s->sync.call) {
		if (!s->ended)
			grpc_call_cancel(s->sync.call, NULL);
		gpr_timespec forever = gpr_inf_future(GPR_CLOCK_MONOTONIC);
		while (ap_client_sync_busy(&s->sync))
			stream_wait(s, forever);
	}
	ap_client_sync_release(&s->sync);
	ap_client_free(s->ready);
	grpc_completion_queue_shutdown(s->cq);
	while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
					  NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(s->cq);
	free(s);
	grpc_shutdown();
}

/* ---- one SyncMessages call, shared with client_multi.c (client_int.h) --- */

void ap_client_sync_init(ap_client_sync *x)
{
	grpc_metadata_array_init(&x->initial_md);
	grpc_metadata_array_init(&x->trailing_md);
	x->details = grpc_empty_slice();
}

int ap_client_sync_start(ap_client_sync *x, ap_client *c,
			 grpc_completion_queue *cq, const ap_call_options *o,
			 void *open_tag, void *status_tag)
{
	gpr_timespec deadline = o && o->timeout_ms > 0
		? ap_client_deadline(o->timeout_ms)
		: gpr_inf_future(GPR_CLOCK_MONOTONIC);
	grpc_slice method = grpc_slice_from_static_string(AP_RPC_NODE_SYNC_MESSAGES);
	x->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
					   cq, method, NULL, deadline, NULL);

	grpc_op ops[4];
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].flags = ap_client_md_flags(o);
	ops[0].data.send_initial_metadata.count = x->n_md;
	ops[0].data.send_initial_metadata.metadata = x->md;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = x->send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &x->initial_md;
	x->pending[AP_SYNC_OPEN] = true;
	if (grpc_call_start_batch(x->call, ops, 4, open_tag, NULL) != GRPC_CALL_OK) {
		x->pending[AP_SYNC_OPEN] = false;
		return AP_EINVAL; /* a metadata key gRPC refuses, usually */
	}

	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &x->trailing_md;
	ops[0].data.recv_status_on_client.status = &x->code;
	ops[0].data.recv_status_on_client.status_details = &x->details;
	x->pending[AP_SYNC_STATUS] = true;
	AP_ASSERT(grpc_call_start_batch(x->call, ops, 1, status_tag, NULL) == GRPC_CALL_OK);
	return 0;
}

void ap_client_sync_arm_recv(ap_client_sync *x, void *tag)
{
	grpc_op op;
	memset(&op, 0, sizeof op);
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &x->recv;
	x->pending[AP_SYNC_RECV] = true;
	if (grpc_call_start_batch(x->call, &op, 1, tag, NULL) != GRPC_CALL_OK) {
		x->pending[AP_SYNC_RECV] = false;
		x->eof = true;
	}
}

Aggregator__SyncMessagesResp *ap_client_sync_take(ap_client_sync *x)
{
	Aggregator__SyncMessagesResp *msg = (Aggregator__SyncMessagesResp *)
		ap_client_buffer_unpack(x->recv, &aggregator__sync_messages_resp__descriptor);
	grpc_byte_buffer_destroy(x->recv);
	x->recv = NULL;
	if (!msg) {
		/* A peer that sends garbage gets no further trust: end the
		 * call with a status that says why. */
		grpc_call_cancel_with_status(x->call, GRPC_STATUS_INTERNAL,
			"client: cannot decode aggregator.SyncMessagesResp", NULL);
		x->eof = true;
	}
	return msg;
}

bool ap_client_sync_busy(const ap_client_sync *x)
{
	return x->pending[AP_SYNC_OPEN] || x->pending[AP_SYNC_RECV] ||
	       x->pending[AP_SYNC_STATUS];
}

void ap_client_sync_release(ap_client_sync *x)
{
	AP_ASSERT(!ap_client_sync_busy(x));
	if (x->call)
		grpc_call_unref(x->call);
	x->call = NULL;
	if (x->recv)
		grpc_byte_buffer_destroy(x->recv);
	x->recv = NULL;
	if (x->send)
		grpc_byte_buffer_destroy(x->send);
	x->send = NULL;
	ap_client_md_free(x->md, x->n_md);
	x->md = NULL;
	x->n_md = 0;
	grpc_metadata_array_destroy(&x->initial_md);
	grpc_metadata_array_destroy(&x->trailing_md);
	grpc_slice_unref(x->details);
}
