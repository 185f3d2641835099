/* Many SyncMessages streams on one completion queue: see
 * include/ap/client_multi.h.
 *
 * Each stream is the same three operations as ap_stream (client_stream.c),
 * through the same ap_client_sync_* functions (client_int.h), started on
 * the mux's shared queue with tags that name the stream and the kind of
 * operation. stream_event() is the whole state machine; it runs on
 * the mux thread only, so no field needs a lock. A stream is freed when no
 * operation of it is pending any more: after its END callback, or silently
 * when it was abandoned. The mux keeps a list of its streams so that close
 * can abandon what is left and wait for it.
 *
 * Callbacks may open, cancel and abandon streams (their own included):
 * stream_event() looks at `abandoned` again after each callback and frees
 * the stream only as its very last step. */
#include <stdlib.h>

#include "ap/client_multi.h"
#include "ap/error.h"
#include "ap/grpc_runtime.h"
#include "client_int.h"

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
	ap_client_sync sync; /* the call */
	mstream_tag tags[AP_SYNC_N_OPS];

	ap_mstream_fn fn;
	void *user;
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
	ap_client_sync_release(&s->sync);
	free(s);
	grpc_shutdown();
}

/* One completion of stream s. */
static void stream_event(ap_mstream *s, int kind, bool success)
{
	AP_ASSERT(s->sync.pending[kind]);
	s->sync.pending[kind] = false;
	switch (kind) {
	case AP_SYNC_OPEN:
		/* gRPC has taken what it needs of the request. */
		grpc_byte_buffer_destroy(s->sync.send);
		s->sync.send = NULL;
		ap_client_md_free(s->sync.md, s->sync.n_md);
		s->sync.md = NULL;
		s->sync.n_md = 0;
		if (success && !s->abandoned)
			s->fn(s, s->user, AP_MSTREAM_OPENED, NULL, NULL);
		break;
	case AP_SYNC_RECV: {
		if (!success || !s->sync.recv) {
			s->sync.eof = true;
			break;
		}
		Aggregator__SyncMessagesResp *msg = ap_client_sync_take(&s->sync);
		if (!msg)
			break;
		if (s->abandoned)
			ap_client_free(msg);
		else
			s->fn(s, s->user, AP_MSTREAM_MESSAGE, msg, NULL);
		if (!s->abandoned && !s->sync.eof)
			ap_client_sync_arm_recv(&s->sync, &s->tags[AP_SYNC_RECV]);
		break;
	}
	case AP_SYNC_STATUS:
		s->ended = true;
		break;
	default:
		AP_ASSERT(!"unknown stream tag");
	}
	if (ap_client_sync_busy(&s->sync))
		return;
	if (!s->abandoned) {
		ap_rpc_status st;
		ap_client_status_set(&st, s->sync.code, &s->sync.details);
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
	s->sync.send = ap_client_buffer_pack(&req->base);
	if (!s->sync.send) {
		free(s);
		return AP_ENOMEM;
	}
	int rc = ap_client_md_build(o ? o->metadata : NULL, o ? o->n_metadata : 0,
				    NULL, 0, &s->sync.md, &s->sync.n_md);
	if (rc) {
		grpc_byte_buffer_destroy(s->sync.send);
		free(s);
		return rc;
	}
	ap_grpc_init();
	s->mux = m;
	s->fn = fn;
	s->user = user;
	for (int k = 0; k < AP_SYNC_N_OPS; k++)
		s->tags[k] = (mstream_tag){ s, k };
	ap_client_sync_init(&s->sync);
	s->next = m->streams;
	if (m->streams)
		m->streams->prev = s;
	m->streams = s;
	m->n_streams++;

	if (ap_client_sync_start(&s->sync, c, m->cq, o, &s->tags[AP_SYNC_OPEN],
				 &s->tags[AP_SYNC_STATUS]) != 0) {
		/* Nothing was started: a metadata key gRPC refuses, usually. */
		stream_free(s);
		return AP_EINVAL;
	}
	ap_client_sync_arm_recv(&s->sync, &s->tags[AP_SYNC_RECV]);
	*out = s;
	return 0;
}

void ap_mstream_cancel(ap_mstream *s)
{
	if (s && s->sync.call)
		grpc_call_cancel(s->sync.call, NULL);
}

void ap_mstream_abandon(ap_mstream *s)
{
	if (!s || s->in_end || s->abandoned)
		return;
	s->abandoned = true;
	grpc_call_cancel(s->sync.call, NULL);
}

void *ap_mstream_user(const ap_mstream *s)
{
	return s->user;
}

bool ap_client_connecting(ap_client *c)
{
	return grpc_channel_check_connectivity_state(c->channel, 0) == GRPC_CHANNEL_CONNECTING;
}
