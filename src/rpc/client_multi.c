/* Many SyncMessages streams on one completion queue: see
 * include/ap/client_multi.h.
 *
 * Each stream is the same three operations as ap_stream (client_stream.c),
 * started on the mux's shared queue with tags that name the stream and the
 * kind of operation. stream_event() is the whole state machine; it runs on
 * the mux thread only, so no field needs a lock. A stream is freed when no
 * operation of it is pending any more: after its END callback, or silently
 * when it was abandoned. The mux keeps a list of its streams so that close
 * can abandon what is left and wait for it.
 *
 * Callbacks may open, cancel and abandon streams (their own included):
 * stream_event() looks at `abandoned` again after each callback and frees
 * the stream only as its very last step. */
#include <stdlib.h>
#include <string.h>

#include "ap/client_multi.h"
#include "ap/error.h"
#include "ap/grpc_runtime.h"
#include "client_int.h"

enum { TAG_OPEN, TAG_RECV, TAG_STATUS, N_TAGS };

typedef struct mstream_tag {
	ap_mstream *stream;
	int kind;
} mstream_tag;

struct ap_mux {
	grpc_completion_queue *cq;
	ap_mstream *streams; /* every stream not yet freed */
	size_t n_streams;
};

struct ap_mstream {
	ap_mux *mux;
	ap_mstream *prev, *next; /* the mux's list */
	grpc_call *call;
	mstream_tag tags[N_TAGS];
	bool pending[N_TAGS];

	/* Kept alive until the open batch completes. */
	grpc_metadata *md;
	size_t n_md;
	grpc_byte_buffer *send;

	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_byte_buffer *recv;
	grpc_status_code code;
	grpc_slice details;

	ap_mstream_fn fn;
	void *user;
	bool eof;       /* no more messages will come */
	bool ended;     /* the final status arrived */
	bool abandoned; /* no more callbacks */
	bool in_end;    /* the END callback is running */
};

int ap_mux_open(ap_mux **out)
{
	*out = NULL;
	ap_mux *m = calloc(1, sizeof *m);
	if (!m)
		return AP_ENOMEM;
	ap_grpc_init();
	m->cq = grpc_completion_queue_create_for_next(NULL);
	*out = m;
	return 0;
}

size_t ap_mux_streams(const ap_mux *m)
{
	return m->n_streams;
}

static void stream_free(ap_mstream *s)
{
	ap_mux *m = s->mux;
	if (s->prev)
		s->prev->next = s->next;
	else
		m->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	m->n_streams--;
	if (s->call)
		grpc_call_unref(s->call);
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

static bool stream_busy(const ap_mstream *s)
{
	return s->pending[TAG_OPEN] || s->pending[TAG_RECV] || s->pending[TAG_STATUS];
}

static void stream_arm_recv(ap_mstream *s)
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

/* One completion of stream s. */
static void stream_event(ap_mstream *s, int kind, bool success)
{
	AP_ASSERT(s->pending[kind]);
	s->pending[kind] = false;
	switch (kind) {
	case TAG_OPEN:
		/* gRPC has taken what it needs of the request. */
		grpc_byte_buffer_destroy(s->send);
		s->send = NULL;
		ap_client_md_free(s->md, s->n_md);
		s->md = NULL;
		s->n_md = 0;
		if (success && !s->abandoned)
			s->fn(s, s->user, AP_MSTREAM_OPENED, NULL, NULL);
		break;
	case TAG_RECV: {
		if (!success || !s->recv) {
			s->eof = true;
			break;
		}
		Aggregator__SyncMessagesResp *msg = (Aggregator__SyncMessagesResp *)
			ap_client_buffer_unpack(s->recv, &aggregator__sync_messages_resp__descriptor);
		grpc_byte_buffer_destroy(s->recv);
		s->recv = NULL;
		if (!msg) {
			grpc_call_cancel_with_status(s->call, GRPC_STATUS_INTERNAL,
				"client: cannot decode aggregator.SyncMessagesResp", NULL);
			s->eof = true;
			break;
		}
		if (s->abandoned)
			ap_client_free(msg);
		else
			s->fn(s, s->user, AP_MSTREAM_MESSAGE, msg, NULL);
		if (!s->abandoned && !s->eof)
			stream_arm_recv(s);
		break;
	}
	case TAG_STATUS:
		s->ended = true;
		break;
	default:
		AP_ASSERT(!"unknown stream tag");
	}
	if (stream_busy(s))
		return;
	if (!s->abandoned) {
		ap_rpc_status st;
		ap_client_status_set(&st, s->code, &s->details);
		s->in_end = true;
		s->fn(s, s->user, AP_MSTREAM_END, NULL, &st);
	}
	stream_free(s);
}

int ap_mux_run(ap_mux *m, int64_t timeout_ms, int max_events)
{
	gpr_timespec deadline = timeout_ms == 0 ? gpr_inf_past(GPR_CLOCK_MONOTONIC)
						: ap_client_deadline(timeout_ms);
	int n = 0;
	while (max_events <= 0 || n < max_events) {
		grpc_event ev = grpc_completion_queue_next(m->cq, deadline, NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			break;
		mstream_tag *tag = ev.tag;
		AP_ASSERT(tag->stream->mux == m);
		stream_event(tag->stream, tag->kind, ev.success != 0);
		n++;
		deadline = gpr_inf_past(GPR_CLOCK_MONOTONIC);
	}
	return n;
}

void ap_mux_close(ap_mux *m)
{
	if (!m)
		return;
	for (ap_mstream *s = m->streams; s; s = s->next)
		if (!s->abandoned)
			ap_mstream_abandon(s);
	while (m->n_streams)
		ap_mux_run(m, -1, 0);
	grpc_completion_queue_shutdown(m->cq);
	while (grpc_completion_queue_next(m->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
					  NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(m->cq);
	free(m);
	grpc_shutdown();
}

int ap_mstream_open(ap_mux *m, ap_client *c, const Aggregator__SyncMessagesReq *req,
		    const ap_call_options *o, ap_mstream_fn fn, void *user,
		    ap_mstream **out)
{
	*out = NULL;
	if (!m || !c || !req || !fn)
		return AP_EINVAL;
	ap_mstream *s = calloc(1, sizeof *s);
	if (!s)
		return AP_ENOMEM;
	s->send = ap_client_buffer_pack(&req->base);
	if (!s->send) {
		free(s);
		return AP_ENOMEM;
	}
	int rc = ap_client_md_build(o ? o->metadata : NULL, o ? o->n_metadata : 0,
				    NULL, 0, &s->md, &s->n_md);
	if (rc) {
		grpc_byte_buffer_destroy(s->send);
		free(s);
		return rc;
	}
	ap_grpc_init();
	s->mux = m;
	s->fn = fn;
	s->user = user;
	for (int k = 0; k < N_TAGS; k++)
		s->tags[k] = (mstream_tag){ s, k };
	grpc_metadata_array_init(&s->initial_md);
	grpc_metadata_array_init(&s->trailing_md);
	s->details = grpc_empty_slice();
	s->next = m->streams;
	if (m->streams)
		m->streams->prev = s;
	m->streams = s;
	m->n_streams++;

	gpr_timespec deadline = o && o->timeout_ms > 0
		? ap_client_deadline(o->timeout_ms)
		: gpr_inf_future(GPR_CLOCK_MONOTONIC);
	grpc_slice method = grpc_slice_from_static_string(AP_RPC_NODE_SYNC_MESSAGES);
	s->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
					   m->cq, method, NULL, deadline, NULL);

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
		/* Nothing was started: a metadata key gRPC refuses, usually. */
		s->pending[TAG_OPEN] = false;
		stream_free(s);
		return AP_EINVAL;
	}
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
	ops[0].data.recv_status_on_client.status = &s->code;
	ops[0].data.recv_status_on_client.status_details = &s->details;
	s->pending[TAG_STATUS] = true;
	AP_ASSERT(grpc_call_start_batch(s->call, ops, 1, &s->tags[TAG_STATUS], NULL) == GRPC_CALL_OK);
	stream_arm_recv(s);
	*out = s;
	return 0;
}

void ap_mstream_cancel(ap_mstream *s)
{
	if (s && s->call)
		grpc_call_cancel(s->call, NULL);
}

void ap_mstream_abandon(ap_mstream *s)
{
	if (!s || s->in_end || s->abandoned)
		return;
	s->abandoned = true;
	grpc_call_cancel(s->call, NULL);
}

void *ap_mstream_user(const ap_mstream *s)
{
	return s->user;
}

bool ap_client_connecting(ap_client *c)
{
	return grpc_channel_check_connectivity_state(c->channel, 0) == GRPC_CHANNEL_CONNECTING;
}
