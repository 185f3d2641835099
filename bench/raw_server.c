/* bench/raw_server: the baseline server of bench/bench_grpc (issue 6,
 * point 5). A SyncMessages-like streaming server on the gRPC core C API
 * that does no engine work: what any server built the way ap's transport is
 * built (src/rpc/) costs, so that ap's figures can be read as ratios.
 *
 *   bench/raw_server [--listen HOST:PORT] [--port-file FILE]
 *
 * It listens on 127.0.0.1:0 by default, writes the bound port to the port
 * file once it serves, and runs until SIGTERM or SIGINT.
 *
 * Built like ap's transport, minus the engine: one acceptor thread keeps 16
 * requests outstanding on "/aggregator.Node/SyncMessages", each with its
 * own NEXT completion queue bound to the call; every accepted call gets a
 * pthread with a 64 KiB stack that waits on that queue alone, starts
 * RECV_CLOSE_ON_SERVER at once (the disconnect signal), sends at most one
 * message at a time, and is woken by other threads through an empty batch
 * on its call (the "wake" tag). The same channel arguments as ap (keepalive
 * 10 s / 5 s). The request is decoded as an aggregator.SyncMessagesReq
 * (as ap does) whose `id` names the mode and `monotonic_clock` a count:
 *
 *   "one"    initial metadata and one fixed message in one batch, then idle
 *            until the client goes: open stream + first message;
 *   "flood"  initial metadata, then `monotonic_clock` messages back to back
 *            (one in flight at a time), then status OK: messages per second;
 *   "idle"   initial metadata only: memory per idle stream;
 *   "watch"  initial metadata; one message each time an "owner" stream
 *            ends (the failover baseline: disconnect seen -> another
 *            stream's thread woken -> it sends);
 *   "owner"  as "one"; its end wakes the watcher.
 *
 * The message is a fixed, pre-packed aggregator.SyncMessagesResp of the
 * shape ap sends for a block task (about 100 bytes), so ap's client library
 * can read it too.
 *
 * Only bench/ and src/rpc/ include <grpc/grpc.h>: this program is the
 * measuring stick for src/rpc/, not a part of ap. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "ap/grpc_runtime.h"
#include "node.pb-c.h"

#define RAW_METHOD "/aggregator.Node/SyncMessages"
#define RAW_BACKLOG 16
#define RAW_STACK (64 * 1024)

typedef struct raw_stream {
	grpc_call *call;
	grpc_completion_queue *cq;
	grpc_metadata_array md;
	gpr_timespec deadline;
	grpc_byte_buffer *payload;

	pthread_mutex_t lock; /* serialises batches on the call; guards wake_* */
	bool wake_pending;

	/* Owned by the stream thread. */
	bool closed, send_busy, md_pending, status_pending;
	int cancelled;
	char tag_close, tag_md, tag_send, tag_wake, tag_status;
} raw_stream;

static grpc_server *server;
static grpc_completion_queue *server_cq;
static grpc_slice message; /* the fixed message */
static void *method_handle;
static char shutdown_tag;

static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t streams_cond = PTHREAD_COND_INITIALIZER;
static long live_streams;
static raw_stream *watcher; /* under streams_lock */
static atomic_bool stopping;

static void die(const char *what)
{
	fprintf(stderr, "raw_server: %s\n", what);
	exit(1);
}

static gpr_timespec after_ms(int64_t ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static grpc_call_error start(raw_stream *st, const grpc_op *ops, size_t n, void *tag)
{
	pthread_mutex_lock(&st->lock);
	grpc_call_error e = grpc_call_start_batch(st->call, ops, n, tag, NULL);
	pthread_mutex_unlock(&st->lock);
	return e;
}

static void wake(raw_stream *st)
{
	pthread_mutex_lock(&st->lock);
	if (!st->wake_pending &&
	    grpc_call_start_batch(st->call, NULL, 0, &st->tag_wake, NULL) == GRPC_CALL_OK)
		st->wake_pending = true;
	pthread_mutex_unlock(&st->lock);
}

/* One SEND_MESSAGE (with the initial metadata when `with_md`). */
static bool send_message(raw_stream *st, bool with_md)
{
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&message, 1);
	grpc_op ops[2];
	memset(ops, 0, sizeof ops);
	size_t n = 0;
	if (with_md)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n++].data.send_message.send_message = bb;
	/* gRPC takes its own reference to the buffer's slices at the start. */
	bool ok = start(st, ops, n, &st->tag_send) == GRPC_CALL_OK;
	grpc_byte_buffer_destroy(bb);
	st->send_busy = ok;
	return ok;
}

static void on_event(raw_stream *st, const grpc_event *ev)
{
	if (ev->tag == &st->tag_close) {
		st->closed = true;
	} else if (ev->tag == &st->tag_md) {
		st->md_pending = false;
	} else if (ev->tag == &st->tag_send) {
		st->send_busy = false;
	} else if (ev->tag == &st->tag_status) {
		st->status_pending = false;
	} else if (ev->tag == &st->tag_wake) {
		pthread_mutex_lock(&st->lock);
		st->wake_pending = false;
		pthread_mutex_unlock(&st->lock);
	}
}

static void serve(raw_stream *st)
{
	char mode[16] = "one";
	int64_t count = 1;
	grpc_op op;
	if (st->payload) {
		grpc_byte_buffer_reader r;
		if (grpc_byte_buffer_reader_init(&r, st->payload)) {
			grpc_slice s = grpc_byte_buffer_reader_readall(&r);
			grpc_byte_buffer_reader_destroy(&r);
			Aggregator__SyncMessagesReq *req = aggregator__sync_messages_req__unpack(
				NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
			if (req) {
				if (req->id[0])
					snprintf(mode, sizeof mode, "%s", req->id);
				count = req->monotonic_clock;
				aggregator__sync_messages_req__free_unpacked(req, NULL);
			}
			grpc_slice_unref(s);
		}
	}
	bool flood = strcmp(mode, "flood") == 0;
	bool owner = strcmp(mode, "owner") == 0;
	bool watch = strcmp(mode, "watch") == 0;
	bool first = strcmp(mode, "one") == 0 || owner || (flood && count > 0);
	int64_t left = flood ? count : first ? 1 : 0;
	bool wants_wake = watch;

	memset(&op, 0, sizeof op);
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &st->cancelled;
	if (start(st, &op, 1, &st->tag_close) != GRPC_CALL_OK)
		st->closed = true;
	if (left > 0) {
		if (send_message(st, true))
			left--;
		else
			left = 0;
	} else {
		memset(&op, 0, sizeof op);
		op.op = GRPC_OP_SEND_INITIAL_METADATA;
		st->md_pending = start(st, &op, 1, &st->tag_md) == GRPC_CALL_OK;
	}
	if (wants_wake) {
		pthread_mutex_lock(&streams_lock);
		watcher = st;
		pthread_mutex_unlock(&streams_lock);
	}

	bool woken = false; /* a wake seen, its message not yet started */
	while (!st->closed && !atomic_load(&stopping)) {
		if (!st->send_busy && woken) {
			woken = false;
			send_message(st, false);
		} else if (!st->send_busy && left > 0) {
			if (send_message(st, false))
				left--;
			else
				break;
		} else if (!st->send_busy && flood && left == 0) {
			break; /* all sent: end with OK */
		}
		grpc_event ev = grpc_completion_queue_next(st->cq, after_ms(1000), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		if (ev.tag == &st->tag_wake)
			woken = true;
		on_event(st, &ev);
	}
	if (wants_wake) {
		pthread_mutex_lock(&streams_lock);
		if (watcher == st)
			watcher = NULL;
		pthread_mutex_unlock(&streams_lock);
	}
	if (owner) {
		pthread_mutex_lock(&streams_lock);
		if (watcher)
			wake(watcher);
		pthread_mutex_unlock(&streams_lock);
	}
	grpc_slice details = grpc_empty_slice();
	if (!st->closed) {
		memset(&op, 0, sizeof op);
		op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
		op.data.send_status_from_server.status = GRPC_STATUS_OK;
		op.data.send_status_from_server.status_details = &details;
		if (st->send_busy || start(st, &op, 1, &st->tag_status) != GRPC_CALL_OK)
			grpc_call_cancel(st->call, NULL);
		else
			st->status_pending = true;
	}
	/* Collect every pending batch. */
	for (;;) {
		pthread_mutex_lock(&st->lock);
		bool wake_pending = st->wake_pending;
		pthread_mutex_unlock(&st->lock);
		if (st->closed && !st->send_busy && !st->md_pending && !st->status_pending &&
		    !wake_pending)
			break;
		grpc_event ev = grpc_completion_queue_next(st->cq, after_ms(2000), NULL);
		if (ev.type == GRPC_OP_COMPLETE)
			on_event(st, &ev);
		else
			grpc_call_cancel(st->call, NULL);
	}
}

static void stream_free(raw_stream *st)
{
	if (st->call)
		grpc_call_unref(st->call);
	grpc_completion_queue_shutdown(st->cq);
	while (grpc_completion_queue_next(st->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(st->cq);
	grpc_metadata_array_destroy(&st->md);
	if (st->payload)
		grpc_byte_buffer_destroy(st->payload);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

static void *stream_main(void *arg)
{
	raw_stream *st = arg;
	pthread_setname_np(pthread_self(), "raw-stream");
	serve(st);
	stream_free(st);
	pthread_mutex_lock(&streams_lock);
	live_streams--;
	pthread_cond_broadcast(&streams_cond);
	pthread_mutex_unlock(&streams_lock);
	return NULL;
}

static raw_stream *request_one(void)
{
	raw_stream *st = calloc(1, sizeof *st);
	if (!st)
		die("out of memory");
	pthread_mutex_init(&st->lock, NULL);
	grpc_metadata_array_init(&st->md);
	st->cq = grpc_completion_queue_create_for_next(NULL);
	if (grpc_server_request_registered_call(server, method_handle, &st->call, &st->deadline,
						&st->md, &st->payload, st->cq, server_cq,
						st) != GRPC_CALL_OK)
		die("grpc_server_request_registered_call failed");
	return st;
}

static void accept_call(raw_stream *st)
{
	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, RAW_STACK < PTHREAD_STACK_MIN ? PTHREAD_STACK_MIN : RAW_STACK);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&streams_lock);
	live_streams++;
	pthread_mutex_unlock(&streams_lock);
	if (pthread_create(&t, &attr, stream_main, st) != 0) {
		grpc_call_cancel(st->call, NULL);
		stream_free(st);
		pthread_mutex_lock(&streams_lock);
		live_streams--;
		pthread_mutex_unlock(&streams_lock);
	}
	pthread_attr_destroy(&attr);
}

static int outstanding;
static bool shutdown_seen;

static void *acceptor_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "raw-accept");
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(server_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
							   NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			break;
		if (ev.tag == &shutdown_tag) {
			shutdown_seen = true;
		} else {
			raw_stream *st = ev.tag;
			outstanding--;
			if (!ev.success) {
				stream_free(st);
			} else {
				if (!atomic_load(&stopping)) {
					request_one();
					outstanding++;
				}
				accept_call(st);
			}
		}
		if (shutdown_seen && outstanding == 0)
			break;
	}
	return NULL;
}

static grpc_arg int_arg(const char *key, int value)
{
	grpc_arg a;
	memset(&a, 0, sizeof a);
	a.type = GRPC_ARG_INTEGER;
	a.key = (char *)key;
	a.value.integer = value;
	return a;
}

/* The message: what ap sends for a block task, packed once. */
static grpc_slice make_message(void)
{
	Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger bt = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	Aggregator__SyncMessagesResp m = AGGREGATOR__SYNC_MESSAGES_RESP__INIT;
	Aggregator__SyncMessagesResp__TaskMetadata md = AGGREGATOR__SYNC_MESSAGES_RESP__TASK_METADATA__INIT;
	static char id[] = "01jbench0raw0task0000000001";
	static char name[] = "bench block task";
	bc.interval = 10;
	bt.config = &bc;
	tr.name = name;
	tr.id = id;
	tr.type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	tr.block = &bt;
	m.id = id;
	m.op = AGGREGATOR__MESSAGE_OP__MonitorTaskTrigger;
	m.task_metadata = &md;
	md.task_id = id;
	md.remain = -1;
	md.trigger = &tr;
	md.start_at = 1700000000000;
	size_t len = aggregator__sync_messages_resp__get_packed_size(&m);
	uint8_t *buf = malloc(len);
	if (!buf)
		die("out of memory");
	aggregator__sync_messages_resp__pack(&m, buf);
	grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, len);
	free(buf);
	return s;
}

int main(int argc, char **argv)
{
	const char *listen = "127.0.0.1:0";
	const char *port_file = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
			listen = argv[++i];
		else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc)
			port_file = argv[++i];
		else {
			fprintf(stderr, "usage: raw_server [--listen HOST:PORT] [--port-file FILE]\n");
			return 2;
		}
	}
	/* gRPC starts threads in grpc_init: block the signals first and wait
	 * for them in one place. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* The gRPC runtime as ap configures it (abseil's deadlock detector
	 * off), so the ratios measure ap's own work, not the platform's. */
	ap_grpc_init();
	message = make_message();

	grpc_arg args[] = {
		int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, 10000),
		int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000),
		int_arg(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1),
		int_arg(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0),
		int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000),
		int_arg(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0),
		int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0),
	};
	grpc_channel_args ca = { sizeof args / sizeof args[0], args };
	server = grpc_server_create(&ca, NULL);
	server_cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(server, server_cq, NULL);
	method_handle = grpc_server_register_method(server, RAW_METHOD, NULL,
						    GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
	int port = grpc_server_add_http2_port(server, listen, creds);
	grpc_server_credentials_release(creds);
	if (!port)
		die("cannot listen");
	grpc_server_start(server);
	for (int i = 0; i < RAW_BACKLOG; i++) {
		request_one();
		outstanding++;
	}
	pthread_t acceptor;
	if (pthread_create(&acceptor, NULL, acceptor_main, NULL) != 0)
		die("cannot start the acceptor");
	if (port_file) {
		char tmp[PATH_MAX];
		snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
		FILE *f = fopen(tmp, "w");
		if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0)
			die("cannot write the port file");
	} else {
		printf("%d\n", port);
		fflush(stdout);
	}

	int sig;
	while (sigwait(&sigs, &sig) != 0)
		;
	/* The shutdown order of the notes (and of ap). */
	atomic_store(&stopping, true);
	grpc_server_shutdown_and_notify(server, server_cq, &shutdown_tag);
	grpc_server_cancel_all_calls(server);
	pthread_mutex_lock(&streams_lock);
	while (live_streams > 0)
		pthread_cond_wait(&streams_cond, &streams_lock);
	pthread_mutex_unlock(&streams_lock);
	pthread_join(acceptor, NULL);
	grpc_server_destroy(server);
	grpc_completion_queue_shutdown(server_cq);
	while (grpc_completion_queue_next(server_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(server_cq);
	grpc_slice_unref(message);
	grpc_shutdown();
	return 0;
}
