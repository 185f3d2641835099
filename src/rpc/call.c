/* Accepting calls and answering unary ones.
 *
 * Each server has one acceptor thread blocked on the server's notification
 * queue. It keeps `backlog` requests outstanding per registered method and
 * a few generic ones (calls to methods nobody registered, answered
 * UNIMPLEMENTED at once instead of hanging until the client's deadline).
 * Every request gets its own completion queue bound to the call, so the
 * thread that later handles the call waits on that queue alone and a
 * stalled client never delays anyone else. When a call arrives the
 * acceptor posts its replacement first, then hands the call on: a
 * SyncMessages call to a new stream thread (stream.c), anything else to
 * the worker pool.
 *
 * The worker pool (RPC_WORKERS threads) runs unary handlers: decode, call
 * the engine, answer with one batch, wait for it on the call's own queue
 * (bounded by send_timeout_ms), free. Handlers never see a grpc_call.
 *
 * At shutdown the acceptor keeps collecting until it has seen the
 * shutdown tag and every outstanding request has come back (success 0);
 * a real call that still arrives then is answered UNAVAILABLE. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/pb.h"
#include "rpc_int.h"

gpr_timespec rpc_deadline_ms(int64_t ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
			    gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* ---- helpers for handlers ----------------------------------------------- */

bool rpc_payload_slice(grpc_byte_buffer *bb, grpc_slice *out)
{
	grpc_byte_buffer_reader reader;
	if (!bb || !grpc_byte_buffer_reader_init(&reader, bb))
		return false; /* e.g. a compressed payload that does not inflate */
	*out = grpc_byte_buffer_reader_readall(&reader);
	grpc_byte_buffer_reader_destroy(&reader);
	return true;
}

char *rpc_md_dup(const grpc_metadata_array *md, const char *key)
{
	for (size_t i = 0; md && i < md->count; i++) {
		if (grpc_slice_str_cmp(md->metadata[i].key, key) != 0)
			continue;
		grpc_slice v = md->metadata[i].value;
		size_t n = GRPC_SLICE_LENGTH(v);
		char *s = malloc(n + 1);
		if (s) {
			memcpy(s, GRPC_SLICE_START_PTR(v), n);
			s[n] = '\0';
		}
		return s;
	}
	return NULL;
}

void rpc_reply_error(rpc_reply *rep, grpc_status_code code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rep->message, sizeof rep->message, fmt, ap);
	va_end(ap);
	rep->code = code;
}

void *rpc_unpack(const ProtobufCMessageDescriptor *d, const rpc_request *req,
		 rpc_reply *rep)
{
	ProtobufCMessage *m = ap_pb_unpack(d, req->len, req->data);
	if (!m)
		rpc_reply_error(rep, GRPC_STATUS_INVALID_ARGUMENT,
				"request is not a valid %s message", d->name);
	return m;
}

void rpc_reply_pack(rpc_reply *rep, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	rep->body = malloc(len ? len : 1);
	if (!rep->body) {
		rpc_reply_error(rep, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	rep->len = protobuf_c_message_pack(m, rep->body);
	rep->code = GRPC_STATUS_OK;
}

grpc_status_code rpc_status_from_ap(int rc)
{
	switch (rc) {
	case 0: return GRPC_STATUS_OK;
	case AP_EINVAL: return GRPC_STATUS_INVALID_ARGUMENT;
	case AP_ENOTFOUND: return GRPC_STATUS_NOT_FOUND;
	case AP_EEXIST: return GRPC_STATUS_ALREADY_EXISTS;
	case AP_EDENIED: return GRPC_STATUS_PERMISSION_DENIED;
	case AP_ELIMIT:
	case AP_ENOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case AP_ESTATE: return GRPC_STATUS_FAILED_PRECONDITION;
	case AP_ETIMEDOUT: return GRPC_STATUS_DEADLINE_EXCEEDED;
	case AP_ECANCELLED: return GRPC_STATUS_CANCELLED;
	default: return GRPC_STATUS_INTERNAL; /* storage errors and the rest */
	}
}

const char *rpc_status_name(grpc_status_code code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
		"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};
	if ((unsigned)code < sizeof names / sizeof names[0])
		return names[code];
	return "?";
}

/* ---- requesting and freeing calls ------------------------------------- */

void rpc_cq_drain_destroy(grpc_completion_queue *cq)
{
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
}

void rpc_call_free(rpc_call *c)
{
	if (!c)
		return;
	if (c->call)
		grpc_call_unref(c->call);
	if (c->cq)
		rpc_cq_drain_destroy(c->cq);
	grpc_metadata_array_destroy(&c->md);
	if (c->payload)
		grpc_byte_buffer_destroy(c->payload);
	if (!c->method)
		grpc_call_details_destroy(&c->details);
	free(c);
}

/* Post one request for `method` (NULL: generic). */
static int request_one(rpc_side *side, const rpc_method *method)
{
	rpc_call *c = calloc(1, sizeof *c);
	if (!c)
		return AP_ENOMEM;
	c->side = side;
	c->method = method;
	c->reply_details = grpc_empty_slice();
	grpc_metadata_array_init(&c->md);
	if (!method)
		grpc_call_details_init(&c->details);
	c->cq = grpc_completion_queue_create_for_next(NULL);
	if (!c->cq) {
		rpc_call_free(c);
		return AP_ENOMEM;
	}
	grpc_call_error e;
	if (method) {
		size_t i = (size_t)(method - side->methods);
		e = grpc_server_request_registered_call(side->server, side->handles[i], &c->call,
							&c->deadline, &c->md, &c->payload,
							c->cq, side->cq, c);
	} else {
		e = grpc_server_request_call(side->server, &c->call, &c->details, &c->md,
					     c->cq, side->cq, c);
	}
	if (e != GRPC_CALL_OK) {
		AP_ERROR("gRPC refused a call request", AP_F_STR("server", side->name),
			 AP_F_STR("method", method ? method->path : "*"), AP_F_INT("error", e));
		rpc_call_free(c);
		return AP_EIO;
	}
	side->outstanding++;
	return 0;
}

int rpc_side_request_all(rpc_side *side)
{
	for (size_t m = 0; m < side->n_methods; m++)
		for (int i = 0; i < side->methods[m].backlog; i++)
			if (request_one(side, &side->methods[m]))
				return AP_EIO;
	for (int i = 0; i < RPC_GENERIC_BACKLOG; i++)
		if (request_one(side, NULL))
			return AP_EIO;
	return 0;
}

/* ---- the engine gate ---------------------------------------------------- */

bool rpc_engine_enter(ap_rpc_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	bool open = !srv->engine_gone;
	if (open)
		srv->engine_users++;
	pthread_mutex_unlock(&srv->lock);
	return open;
}

void rpc_engine_leave(ap_rpc_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	AP_ASSERT(srv->engine_users > 0);
	if (--srv->engine_users == 0)
		pthread_cond_broadcast(&srv->streams_cond);
	pthread_mutex_unlock(&srv->lock);
}

bool rpc_engine_close_gate(ap_rpc_server *srv, int64_t deadline_ns)
{
	struct timespec ts = ap_clock_ts_from_ns(deadline_ns);
	pthread_mutex_lock(&srv->lock);
	while (srv->engine_users > 0)
		if (pthread_cond_timedwait(&srv->streams_cond, &srv->lock, &ts) == ETIMEDOUT)
			break;
	if (srv->engine_users == 0)
		srv->engine_gone = true;
	bool closed = srv->engine_gone;
	pthread_mutex_unlock(&srv->lock);
	return closed;
}

/* ---- the worker pool ---------------------------------------------------- */

static void enqueue(ap_rpc_server *srv, rpc_call *c)
{
	c->next = NULL;
	pthread_mutex_lock(&srv->lock);
	if (srv->work_tail)
		srv->work_tail->next = c;
	else
		srv->work_head = c;
	srv->work_tail = c;
	pthread_cond_signal(&srv->work_cond);
	pthread_mutex_unlock(&srv->lock);
}

static void reply_release(rpc_call *c)
{
	grpc_slice_unref(c->reply_details);
	c->reply_details = grpc_empty_slice();
	if (c->reply_bb)
		grpc_byte_buffer_destroy(c->reply_bb);
	c->reply_bb = NULL;
}

void rpc_call_answer(rpc_call *c, grpc_status_code code, const char *message,
		     const uint8_t *body, size_t len)
{
	ap_rpc_server *srv = c->side->srv;
	grpc_op ops[4];
	memset(ops, 0, sizeof ops);
	size_t n = 0;
	ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (code == GRPC_STATUS_OK && body) {
		grpc_slice s = grpc_slice_from_copied_buffer((const char *)body, len);
		c->reply_bb = grpc_raw_byte_buffer_create(&s, 1);
		grpc_slice_unref(s);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = c->reply_bb;
	}
	c->reply_details = grpc_slice_from_copied_string(message ? message : "");
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = code;
	ops[n++].data.send_status_from_server.status_details = &c->reply_details;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &c->reply_cancelled;

	grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
	if (e != GRPC_CALL_OK) {
		AP_WARN("gRPC refused to answer a call", AP_F_INT("error", e));
		grpc_call_cancel(c->call, NULL);
		goto done;
	}
	grpc_event ev = grpc_completion_queue_next(c->cq, rpc_deadline_ms(RPC_ANSWER_WAIT_MS), NULL);
	if (ev.type == GRPC_OP_COMPLETE)
		goto done;
	/* A client that does not read its answer must not hold a worker. */
	c->reply_deadline = rpc_deadline_ms(srv->cfg->operators.send_timeout_ms);
	pthread_mutex_lock(&srv->lock);
	c->next = srv->lingering;
	srv->lingering = c;
	pthread_mutex_unlock(&srv->lock);
	return;
done:
	reply_release(c);
	rpc_call_free(c);
}

size_t rpc_lingering_poll(ap_rpc_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	rpc_call *list = srv->lingering;
	srv->lingering = NULL;
	pthread_mutex_unlock(&srv->lock);
	rpc_call *keep = NULL;
	size_t left = 0;
	while (list) {
		rpc_call *c = list;
		list = c->next;
		grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type == GRPC_OP_COMPLETE) {
			reply_release(c);
			rpc_call_free(c);
		} else {
			/* Not taken within send_timeout_ms: cut it. The batch then
			 * fails, unless its bytes sit in a socket the peer does not
			 * drain, until TCP gives up (keepalive_timeout_ms). */
			if (!c->reply_cut &&
			    gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), c->reply_deadline) >= 0) {
				grpc_call_cancel(c->call, NULL);
				c->reply_cut = true;
			}
			c->next = keep;
			keep = c;
			left++;
		}
	}
	if (keep) {
		pthread_mutex_lock(&srv->lock);
		rpc_call *tail = keep;
		while (tail->next)
			tail = tail->next;
		tail->next = srv->lingering;
		srv->lingering = keep;
		left = 0;
		for (rpc_call *c = srv->lingering; c; c = c->next)
			left++;
		pthread_mutex_unlock(&srv->lock);
	}
	return left;
}

/* Compare a secret without an early exit, so the time taken does not tell
 * how much of a guess was right. */
static bool secret_equal(const char *given, const char *expected)
{
	size_t n = strlen(expected);
	if (strlen(given) != n)
		return false;
	unsigned char diff = 0;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(given[i] ^ expected[i]);
	return diff == 0;
}

/* Run one unary call (or answer a rejected or unknown one) and free it. */
static void process(ap_rpc_server *srv, rpc_call *c)
{
	rpc_reply rep = { .code = GRPC_STATUS_OK };
	grpc_slice body = grpc_empty_slice();
	char *authz = NULL;
	if (c->reject != GRPC_STATUS_OK) {
		rpc_reply_error(&rep, c->reject, "%s", c->reject_msg);
		goto answer;
	}
	if (c->side->bearer) {
		/* A TCP admin listener: the admin token guards every method. */
		authz = rpc_md_dup(&c->md, "authorization");
		if (!authz || !secret_equal(authz, c->side->bearer)) {
			AP_WARN("🔒 Admin call without a valid token",
				AP_F_STR("method", c->method ? c->method->path : "?"));
			rpc_reply_error(&rep, GRPC_STATUS_UNAUTHENTICATED,
					"admin token missing or wrong");
			goto answer;
		}
	}
	if (!c->method) {
		char *path = grpc_slice_to_c_string(c->details.method);
		AP_DEBUG("call to an unknown method", AP_F_STR("server", c->side->name),
			 AP_F_STR("method", path));
		rpc_reply_error(&rep, GRPC_STATUS_UNIMPLEMENTED, "unknown method %.200s", path);
		gpr_free(path);
		goto answer;
	}
	if (!c->payload) {
		rpc_reply_error(&rep, GRPC_STATUS_INVALID_ARGUMENT, "request has no message");
		goto answer;
	}
	if (!rpc_payload_slice(c->payload, &body)) {
		rpc_reply_error(&rep, GRPC_STATUS_INVALID_ARGUMENT, "request payload cannot be read");
		goto answer;
	}
	if (!rpc_engine_enter(srv)) {
		rpc_reply_error(&rep, GRPC_STATUS_UNAVAILABLE, AP_REASON_SHUTDOWN);
		goto answer;
	}
	rpc_request req = { GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body), &c->md };
	c->method->handler(srv, &req, &rep);
	rpc_engine_leave(srv);
answer:
	if (rep.code != GRPC_STATUS_OK)
		AP_DEBUG("call answered with an error", AP_F_STR("server", c->side->name),
			 AP_F_STR("method", c->method ? c->method->path : "?"),
			 AP_F_STR("code", rpc_status_name(rep.code)),
			 AP_F_STR("message", rep.message));
	grpc_slice_unref(body);
	rpc_call_answer(c, rep.code, rep.message, rep.body, rep.len);
	free(rep.body);
	free(authz);
}

static void *worker_main(void *arg)
{
	ap_rpc_server *srv = arg;
	pthread_setname_np(pthread_self(), "ap-rpc-worker");
	pthread_mutex_lock(&srv->lock);
	for (;;) {
		while (!srv->work_head && !srv->pool_stop)
			pthread_cond_wait(&srv->work_cond, &srv->lock);
		rpc_call *c = srv->work_head;
		if (!c)
			break; /* stopping and nothing left */
		srv->work_head = c->next;
		if (!srv->work_head)
			srv->work_tail = NULL;
		pthread_mutex_unlock(&srv->lock);
		process(srv, c);
		pthread_mutex_lock(&srv->lock);
	}
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

int rpc_workers_start(ap_rpc_server *srv)
{
	for (int i = 0; i < RPC_WORKERS; i++) {
		if (pthread_create(&srv->workers[i], NULL, worker_main, srv) != 0)
			return AP_ENOMEM;
		srv->n_workers++;
	}
	return 0;
}

void rpc_workers_stop(ap_rpc_server *srv)
{
	pthread_mutex_lock(&srv->lock);
	srv->pool_stop = true;
	pthread_cond_broadcast(&srv->work_cond);
	pthread_mutex_unlock(&srv->lock);
	for (int i = 0; i < srv->n_workers; i++)
		pthread_join(srv->workers[i], NULL);
	srv->n_workers = 0;
}

/* ---- the acceptor --------------------------------------------------------- */

/* Hand an accepted call on. */
static void dispatch(rpc_side *side, rpc_call *c)
{
	ap_rpc_server *srv = side->srv;
	if (atomic_load(&side->stopping)) {
		c->reject = GRPC_STATUS_UNAVAILABLE;
		c->reject_msg = AP_REASON_SHUTDOWN;
	} else if (c->method && !c->method->handler) {
		int rc = rpc_stream_start(srv, c);
		if (rc == 0)
			return;
		c->reject = GRPC_STATUS_RESOURCE_EXHAUSTED;
		c->reject_msg = rc == AP_ELIMIT ? "too many streams" : "cannot start a stream thread";
	}
	enqueue(srv, c);
}

void *rpc_acceptor_main(void *arg)
{
	rpc_side *side = arg;
	ap_rpc_server *srv = side->srv;
	pthread_setname_np(pthread_self(), side == &srv->node ? "ap-accept-node" : "ap-accept-admin");
	for (;;) {
		/* The timeout lets the node acceptor reap finished stream
		 * threads even when no call arrives. */
		grpc_event ev = grpc_completion_queue_next(side->cq, rpc_deadline_ms(1000), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type == GRPC_OP_COMPLETE) {
			if (ev.tag == &side->shutdown_tag) {
				side->shutdown_seen = true;
			} else {
				rpc_call *c = ev.tag;
				side->outstanding--;
				if (!ev.success) {
					rpc_call_free(c); /* a request given back at shutdown */
				} else {
					if (!atomic_load(&side->stopping))
						request_one(side, c->method);
					dispatch(side, c);
				}
			}
		}
		if (side == &srv->node) {
			rpc_streams_reap(srv);
			rpc_lingering_poll(srv);
		}
		if (side->shutdown_seen && side->outstanding == 0)
			break;
	}
	return NULL;
}
