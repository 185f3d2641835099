/* The raw gRPC core client of the baselines: see raw_client.h.
 *
 * Each stream is the client recipe of the notes, with nothing around it:
 * one batch {SEND_INITIAL_METADATA, SEND_MESSAGE, SEND_CLOSE_FROM_CLIENT,
 * RECV_INITIAL_METADATA}, one {RECV_STATUS_ON_CLIENT}, and one
 * RECV_MESSAGE re-armed after each message. Messages are counted, not
 * decoded. Tags name the call and the kind of operation, so one queue can
 * serve any number of calls. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "ap/clock.h"
#include "node.pb-c.h"
#include "raw_client.h"

enum { K_OPEN, K_RECV, K_STATUS, K_N };

typedef struct rcall rcall;
typedef struct rtag {
	rcall *c;
	int kind;
} rtag;

struct rcall {
	grpc_call *call;
	rtag tags[K_N];
	bool pending[K_N];
	grpc_metadata_array init_md, trail_md;
	grpc_byte_buffer *send, *recv;
	grpc_status_code code;
	grpc_slice details;
	bool opened, eof, ended;
	uint64_t received;
	int64_t first_ns, last_ns;
};

static grpc_channel *channel_open(const char *target)
{
	grpc_arg a;
	memset(&a, 0, sizeof a);
	a.type = GRPC_ARG_INTEGER;
	a.key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
	a.value.integer = 1;
	grpc_channel_args args = { 1, &a };
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	grpc_channel *ch = grpc_channel_create(target, creds, &args);
	grpc_channel_credentials_release(creds);
	return ch;
}

/* A packed SyncMessagesReq{id = mode, address, monotonic_clock = count}. */
static grpc_byte_buffer *request(const char *mode, int64_t count, const char *address)
{
	Aggregator__SyncMessagesReq r = AGGREGATOR__SYNC_MESSAGES_REQ__INIT;
	r.id = (char *)mode;
	if (address)
		r.address = (char *)address;
	r.monotonic_clock = count;
	uint8_t buf[128];
	size_t len = aggregator__sync_messages_req__pack(&r, buf);
	grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

static void arm_recv(rcall *c)
{
	grpc_op op;
	memset(&op, 0, sizeof op);
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &c->recv;
	c->pending[K_RECV] = true;
	if (grpc_call_start_batch(c->call, &op, 1, &c->tags[K_RECV], NULL) != GRPC_CALL_OK) {
		c->pending[K_RECV] = false;
		c->eof = true;
	}
}

/* Start a call with request `req` (the call owns it). */
static bool call_start(rcall *c, grpc_channel *ch, grpc_completion_queue *cq, grpc_byte_buffer *req)
{
	memset(c, 0, sizeof *c);
	for (int k = 0; k < K_N; k++)
		c->tags[k] = (rtag){ c, k };
	grpc_metadata_array_init(&c->init_md);
	grpc_metadata_array_init(&c->trail_md);
	c->details = grpc_empty_slice();
	c->send = req;
	grpc_slice method = grpc_slice_from_static_string("/aggregator.Node/SyncMessages");
	c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
					   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	grpc_op ops[4];
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = c->send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->init_md;
	c->pending[K_OPEN] = true;
	if (grpc_call_start_batch(c->call, ops, 4, &c->tags[K_OPEN], NULL) != GRPC_CALL_OK) {
		fprintf(stderr, "raw client: cannot start a call\n");
		c->pending[K_OPEN] = false;
		return false;
	}
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &c->trail_md;
	ops[0].data.recv_status_on_client.status = &c->code;
	ops[0].data.recv_status_on_client.status_details = &c->details;
	c->pending[K_STATUS] = true;
	if (grpc_call_start_batch(c->call, ops, 1, &c->tags[K_STATUS], NULL) != GRPC_CALL_OK)
		c->pending[K_STATUS] = false;
	arm_recv(c);
	return true;
}

static void call_event(rcall *c, int kind, bool success)
{
	c->pending[kind] = false;
	switch (kind) {
	case K_OPEN:
		c->opened = success;
		grpc_byte_buffer_destroy(c->send);
		c->send = NULL;
		break;
	case K_RECV:
		if (!success || !c->recv) {
			c->eof = true;
			break;
		}
		c->last_ns = ap_clock_mono_ns();
		if (!c->received++)
			c->first_ns = c->last_ns;
		grpc_byte_buffer_destroy(c->recv);
		c->recv = NULL;
		arm_recv(c);
		break;
	case K_STATUS:
		c->ended = true;
		break;
	}
}

static bool call_busy(const rcall *c)
{
	return c->pending[K_OPEN] || c->pending[K_RECV] || c->pending[K_STATUS];
}

static void call_free(rcall *c)
{
	if (c->call)
		grpc_call_unref(c->call);
	c->call = NULL;
	if (c->send)
		grpc_byte_buffer_destroy(c->send);
	if (c->recv)
		grpc_byte_buffer_destroy(c->recv);
	grpc_metadata_array_destroy(&c->init_md);
	grpc_metadata_array_destroy(&c->trail_md);
	grpc_slice_unref(c->details);
}

/* One completion from cq, dispatched; false on timeout. */
static bool pump(grpc_completion_queue *cq, int64_t timeout_ms)
{
	gpr_timespec dl = timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
		: gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
	grpc_event ev = grpc_completion_queue_next(cq, dl, NULL);
	if (ev.type != GRPC_OP_COMPLETE)
		return false;
	rtag *t = ev.tag;
	call_event(t->c, t->kind, ev.success != 0);
	return true;
}

static void cq_destroy(grpc_completion_queue *cq)
{
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
}

/* Cancel c and collect its pending operations. */
static void call_finish(rcall *c, grpc_completion_queue *cq)
{
	if (c->call)
		grpc_call_cancel(c->call, NULL);
	while (call_busy(c))
		pump(cq, -1);
	call_free(c);
}

#define WAIT_MS 10000

/* One "one" stream on ch: the time to its first message, or -1. */
static int64_t one_stream(grpc_channel *ch, grpc_completion_queue *cq, int64_t t0)
{
	rcall c;
	int64_t took = -1;
	if (call_start(&c, ch, cq, request("one", 1, NULL))) {
		while (!c.received && !c.eof && pump(cq, WAIT_MS))
			;
		if (c.received)
			took = c.first_ns - t0;
		else
			fprintf(stderr, "raw client: no first message (status %d)\n", (int)c.code);
	}
	call_finish(&c, cq);
	return took;
}

struct raw_conn {
	grpc_completion_queue *cq;
	grpc_channel *ch;
};

raw_conn *raw_conn_open(const char *target)
{
	raw_conn *c = calloc(1, sizeof *c);
	c->cq = grpc_completion_queue_create_for_next(NULL);
	c->ch = channel_open(target);
	return c;
}

int64_t raw_conn_stream(raw_conn *c, int64_t t0)
{
	return one_stream(c->ch, c->cq, t0 ? t0 : ap_clock_mono_ns());
}

void raw_conn_close(raw_conn *c)
{
	if (!c)
		return;
	grpc_channel_destroy(c->ch);
	cq_destroy(c->cq);
	free(c);
}

typedef struct cycles_run {
	const char *target;
	int n;
	atomic_int next;
	atomic_int failed;
} cycles_run;

static void *cycles_main(void *arg)
{
	cycles_run *r = arg;
	grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
	while (atomic_fetch_add(&r->next, 1) < r->n) {
		int64_t t0 = ap_clock_mono_ns();
		grpc_channel *ch = channel_open(r->target);
		int64_t took = one_stream(ch, cq, t0);
		grpc_channel_destroy(ch);
		if (took < 0) {
			atomic_fetch_add(&r->failed, 1);
			break;
		}
	}
	cq_destroy(cq);
	return NULL;
}

double raw_cycles(const char *target, int n, int inflight)
{
	cycles_run r = { .target = target, .n = n };
	atomic_init(&r.next, 0);
	atomic_init(&r.failed, 0);
	pthread_t *t = calloc((size_t)inflight, sizeof *t);
	int64_t t0 = ap_clock_mono_ns();
	int started = 0;
	for (; started < inflight; started++)
		if (pthread_create(&t[started], NULL, cycles_main, &r) != 0)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	double secs = (double)(ap_clock_mono_ns() - t0) / 1e9;
	free(t);
	if (atomic_load(&r.failed) || started == 0)
		return -1;
	return (double)n / secs;
}

double raw_flood(const char *target, int streams, int64_t per_stream)
{
	grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
	grpc_channel **ch = calloc((size_t)streams, sizeof *ch);
	rcall **c = calloc((size_t)streams, sizeof *c);
	/* Connect first (a warm-up message each), so the figure is the
	 * steady rate, not connection setup. */
	for (int i = 0; i < streams; i++) {
		ch[i] = channel_open(target);
		if (one_stream(ch[i], cq, ap_clock_mono_ns()) < 0)
			return -1;
	}
	int64_t t0 = ap_clock_mono_ns();
	for (int i = 0; i < streams; i++) {
		c[i] = malloc(sizeof *c[i]);
		call_start(c[i], ch[i], cq, request("flood", per_stream, NULL));
	}
	for (int done = 0; done < streams;) {
		if (!pump(cq, WAIT_MS)) {
			fprintf(stderr, "raw client: flood stalled\n");
			break;
		}
		done = 0;
		for (int i = 0; i < streams; i++)
			done += !call_busy(c[i]);
	}
	uint64_t total = 0;
	int64_t last = t0;
	for (int i = 0; i < streams; i++) {
		total += c[i]->received;
		if (c[i]->last_ns > last)
			last = c[i]->last_ns;
		call_finish(c[i], cq);
		free(c[i]);
		grpc_channel_destroy(ch[i]);
	}
	free(c);
	free(ch);
	cq_destroy(cq);
	if (total != (uint64_t)streams * (uint64_t)per_stream) {
		fprintf(stderr, "raw client: flood got %llu of %llu messages\n",
			(unsigned long long)total, (unsigned long long)streams * per_stream);
		return -1;
	}
	return (double)total / ((double)(last - t0) / 1e9);
}

/* ---- fleets ---------------------------------------------------------------- */

struct raw_fleet {
	char target[128];
	char mode[16];
	int64_t count;
	unsigned group;
	int max;
	grpc_completion_queue *cq;
	grpc_channel **ch;
	rcall **c;
	int started; /* the fleet thread's */
	pthread_t thread;
	atomic_int want, opened, ended;
	atomic_bool stop;
	atomic_ullong received;
	atomic_llong last_ns;
};

static void fleet_start_one(raw_fleet *f)
{
	int i = f->started++;
	char address[43];
	snprintf(address, sizeof address, "0x%08x%032x", f->group, (unsigned)i);
	f->ch[i] = channel_open(f->target);
	f->c[i] = malloc(sizeof(rcall));
	if (!call_start(f->c[i], f->ch[i], f->cq, request(f->mode, f->count, address)))
		atomic_fetch_add(&f->ended, 1);
}

/* One completion of the fleet's queue, counted. */
static void fleet_event(raw_fleet *f, const grpc_event *ev)
{
	rtag *t = ev->tag;
	rcall *c = t->c;
	uint64_t before = c->received;
	call_event(c, t->kind, ev->success != 0);
	if (t->kind == K_OPEN && c->opened)
		atomic_fetch_add(&f->opened, 1);
	if (c->received > before) {
		atomic_fetch_add(&f->received, 1);
		atomic_store(&f->last_ns, c->last_ns);
	}
	if (t->kind == K_STATUS && !atomic_load(&f->stop))
		atomic_fetch_add(&f->ended, 1);
}

static void *fleet_main(void *arg)
{
	raw_fleet *f = arg;
	pthread_setname_np(pthread_self(), "bench-fleet");
	while (!atomic_load(&f->stop)) {
		int want = atomic_load(&f->want);
		/* At most 256 opening at once, like a fleet of operators starting. */
		while (f->started < want && f->started - atomic_load(&f->opened) < 256)
			fleet_start_one(f);
		gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					       gpr_time_from_millis(5, GPR_TIMESPAN));
		for (int k = 0; k < 4096; k++) {
			grpc_event ev = grpc_completion_queue_next(f->cq, dl, NULL);
			if (ev.type != GRPC_OP_COMPLETE)
				break;
			fleet_event(f, &ev);
			dl = gpr_inf_past(GPR_CLOCK_MONOTONIC);
		}
	}
	for (int i = 0; i < f->started; i++)
		grpc_call_cancel(f->c[i]->call, NULL);
	for (int i = 0; i < f->started; i++)
		while (call_busy(f->c[i]))
			pump(f->cq, -1);
	return NULL;
}

raw_fleet *raw_fleet_open(const char *target, const char *mode, int64_t count, unsigned group,
			  int max)
{
	raw_fleet *f = calloc(1, sizeof *f);
	snprintf(f->target, sizeof f->target, "%s", target);
	snprintf(f->mode, sizeof f->mode, "%s", mode);
	f->count = count;
	f->group = group;
	f->max = max;
	f->ch = calloc((size_t)max, sizeof *f->ch);
	f->c = calloc((size_t)max, sizeof *f->c);
	f->cq = grpc_completion_queue_create_for_next(NULL);
	if (pthread_create(&f->thread, NULL, fleet_main, f) != 0) {
		fprintf(stderr, "raw client: cannot start the fleet thread\n");
		exit(1);
	}
	return f;
}

int raw_fleet_grow(raw_fleet *f, int total, int64_t timeout_ms)
{
	if (total > f->max)
		return -1;
	atomic_store(&f->want, total);
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	while (atomic_load(&f->opened) < total) {
		if (atomic_load(&f->ended)) {
			fprintf(stderr, "raw client: %d fleet streams ended\n", atomic_load(&f->ended));
			return -1;
		}
		if (ap_clock_mono_ms() > deadline) {
			fprintf(stderr, "raw client: %d of %d fleet streams open after %lld ms\n",
				atomic_load(&f->opened), total, (long long)timeout_ms);
			return -1;
		}
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}

uint64_t raw_fleet_received(raw_fleet *f)
{
	return atomic_load(&f->received);
}

int64_t raw_fleet_last_ns(raw_fleet *f)
{
	return atomic_load(&f->last_ns);
}

int raw_fleet_ended(raw_fleet *f)
{
	return atomic_load(&f->ended);
}

void raw_fleet_close(raw_fleet *f, uint64_t *min, uint64_t *max)
{
	atomic_store(&f->stop, true);
	pthread_join(f->thread, NULL);
	uint64_t lo = UINT64_MAX, hi = 0;
	for (int i = 0; i < f->started; i++) {
		uint64_t r = f->c[i]->received;
		lo = r < lo ? r : lo;
		hi = r > hi ? r : hi;
		call_free(f->c[i]);
		free(f->c[i]);
		grpc_channel_destroy(f->ch[i]);
	}
	if (min)
		*min = f->started ? lo : 0;
	if (max)
		*max = hi;
	free(f->c);
	free(f->ch);
	cq_destroy(f->cq);
	free(f);
}

/* ---- single streams ------------------------------------------------------- */

struct raw_stream {
	grpc_completion_queue *cq;
	grpc_channel *ch;
	rcall c;
	uint64_t taken; /* messages handed out by raw_stream_next */
};

raw_stream *raw_stream_open(const char *target, const char *mode)
{
	raw_stream *s = calloc(1, sizeof *s);
	s->cq = grpc_completion_queue_create_for_next(NULL);
	s->ch = channel_open(target);
	if (!call_start(&s->c, s->ch, s->cq, request(mode, 1, NULL))) {
		raw_stream_close(s);
		return NULL;
	}
	/* Back once the server has answered with its initial metadata. */
	while (call_busy(&s->c) && s->c.pending[K_OPEN] && pump(s->cq, WAIT_MS))
		;
	if (!s->c.opened) {
		fprintf(stderr, "raw client: %s stream not opened\n", mode);
		raw_stream_close(s);
		return NULL;
	}
	return s;
}

int64_t raw_stream_next(raw_stream *s, int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	while (s->c.received <= s->taken && !s->c.eof) {
		int64_t left = deadline - ap_clock_mono_ms();
		if (left < 0 || !pump(s->cq, left))
			return -1;
	}
	if (s->c.received <= s->taken)
		return -1;
	s->taken = s->c.received;
	return s->c.last_ns;
}

void raw_stream_cancel(raw_stream *s)
{
	grpc_call_cancel(s->c.call, NULL);
}

void raw_stream_close(raw_stream *s)
{
	if (!s)
		return;
	call_finish(&s->c, s->cq);
	grpc_channel_destroy(s->ch);
	cq_destroy(s->cq);
	free(s);
}
