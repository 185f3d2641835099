/* Transport internals shared by the src/rpc/ files. Not an interface: only the
 * transport's own files include it (and with it <grpc/grpc.h>).
 *
 * Pieces and who owns what:
 *   server.c  ap_rpc_server: gRPC init, the two servers, listeners, start,
 *             the shutdown order, close.
 *   call.c    the acceptor of each server (requests calls, hands them on),
 *             the unary worker pool, and the helpers every handler uses
 *             (payload, metadata, replies, status mapping).
 *   stream.c  SyncMessages: one thread per accepted stream.
 *   node.c    the unary Node methods and grpc.health.v1.Health/Check.
 *   admin.c   the Admin service.
 *
 * Lock rule: `ap_rpc_server.lock` guards the work queue, the worker stop
 * flag, the live stream count and the finished-stream list. It is a leaf:
 * no gRPC call, engine call or log line is made while it is held, except
 * signalling its condition variables. Each stream has its own `lock`
 * (src/rpc/stream.c) ordered after the session lock, because the session's
 * wake hook takes it. */
#ifndef AP_RPC_INT_H
#define AP_RPC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/status.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>

#include "ap/config.h"
#include "ap/engine.h"
#include "ap/rpc.h"

#define RPC_MAX_METHODS 8
#define RPC_WORKERS 4          /* unary calls handled at once */
#define RPC_GENERIC_BACKLOG 2  /* unknown-method requests kept outstanding */
#define RPC_ANSWER_WAIT_MS 100 /* a worker waits this long for an answer to go out */

/* Health as both health services report it. */
enum { RPC_STARTING = 0, RPC_SERVING = 1, RPC_STOPPING = 2 };

typedef struct ap_rpc_server ap_rpc_server;
typedef struct rpc_stream rpc_stream;

/* A decoded unary request as a handler sees it: the payload bytes and the
 * call metadata (for authorization and x-operator-address). */
typedef struct rpc_request {
	const uint8_t *data;
	size_t len;
	const grpc_metadata_array *md;
} rpc_request;

/* A handler's answer: a status, its message, and on OK the packed
 * response (malloc'd; the caller frees it). */
typedef struct rpc_reply {
	grpc_status_code code;
	char message[256];
	uint8_t *body;
	size_t len;
} rpc_reply;

typedef void (*rpc_handler)(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep);

typedef struct rpc_method {
	const char *path;    /* "/aggregator.Node/Ping" */
	rpc_handler handler; /* NULL: the SyncMessages stream */
	int backlog;         /* requests kept outstanding */
} rpc_method;

extern const rpc_method rpc_node_methods[];
extern const size_t rpc_node_n_methods;
extern const rpc_method rpc_admin_methods[];
extern const size_t rpc_admin_n_methods;

/* One of the two servers. */
typedef struct rpc_side {
	ap_rpc_server *srv;
	const char *name;            /* "operator" or "admin", for logs */
	grpc_server *server;
	grpc_completion_queue *cq;   /* notifications: new calls, shutdown */
	const rpc_method *methods;
	size_t n_methods;
	void *handles[RPC_MAX_METHODS];
	char *bearer;                /* "Bearer <admin.token>" required, or NULL */
	pthread_t acceptor;
	bool acceptor_running;
	bool shutdown_requested;     /* grpc_server_shutdown_and_notify called */
	atomic_bool stopping;        /* no new streams; late calls get UNAVAILABLE */
	/* Acceptor-private. */
	int outstanding;             /* requests posted and not yet completed */
	bool shutdown_seen;
	char shutdown_tag;           /* its address is the shutdown tag */
} rpc_side;

/* One requested, then accepted, call. Until the acceptor hands it on it is
 * the acceptor's; then a worker's or a stream thread's. */
typedef struct rpc_call {
	struct rpc_call *next;       /* work queue link */
	rpc_side *side;
	const rpc_method *method;    /* NULL: generic (unknown method) */
	grpc_call *call;
	grpc_completion_queue *cq;   /* per call, NEXT; the call's batches complete here */
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_byte_buffer *payload;
	grpc_call_details details;   /* generic requests only */
	grpc_status_code reject;     /* not OK: answer this without a handler */
	const char *reject_msg;
	/* The answer batch (rpc_call_answer), kept until gRPC completes it. */
	grpc_byte_buffer *reply_bb;
	grpc_slice reply_details;
	int reply_cancelled;
	gpr_timespec reply_deadline; /* parked: cancelled after this */
	bool reply_cut;              /* parked and cancelled */
} rpc_call;

struct ap_rpc_server {
	ap_engine *engine;           /* borrowed */
	const ap_config *cfg;        /* borrowed */
	int port;                    /* bound operator port */
	atomic_int health;
	rpc_side node, admin;
	char *admin_socket;          /* unix socket path, or NULL for TCP */
	bool grpc_inited, started, stopped;
	size_t stream_stack;         /* stack size of stream threads */

	pthread_mutex_t lock;        /* see the lock rule above */
	pthread_cond_t work_cond;    /* work queued or pool stopping */
	pthread_cond_t streams_cond; /* a stream thread finished, or an engine user left */
	rpc_call *work_head, *work_tail;
	bool pool_stop;
	pthread_t workers[RPC_WORKERS];
	int n_workers;
	size_t live_streams;         /* stream threads started and not finished */
	size_t engine_users;         /* threads inside an engine call or holding a session */
	bool engine_gone;            /* set once engine_users reached 0 at shutdown */
	rpc_stream *finished;        /* finished stream threads, to be joined */
	rpc_call *lingering;         /* answered calls gRPC has not given back */
	size_t reaped_since_trim;    /* reaper-private (stream.c) */
	int64_t last_trim_ns;
};

/* ---- call.c ------------------------------------------------------------ */

/* Post the initial requests of a side (after grpc_server_start). */
int rpc_side_request_all(rpc_side *side);
void *rpc_acceptor_main(void *arg);
int rpc_workers_start(ap_rpc_server *srv);
void rpc_workers_stop(ap_rpc_server *srv);
/* Answer a call on which no batch was started yet with one batch (initial
 * metadata, the response body when code is OK, the status) and release it.
 * Takes the call. The batch normally completes at once; one that does not
 * within RPC_ANSWER_WAIT_MS (a peer that stopped reading) is parked on the
 * server's lingering list so the worker moves on; the node acceptor frees
 * it once gRPC gives it back, and cancels it after send_timeout_ms. */
void rpc_call_answer(rpc_call *c, grpc_status_code code, const char *message,
		     const uint8_t *body, size_t len);
/* Free the parked calls whose batch completed; returns how many are left. */
size_t rpc_lingering_poll(ap_rpc_server *srv);
/* Shut a completion queue down, drain it, destroy it. */
void rpc_cq_drain_destroy(grpc_completion_queue *cq);
/* Release everything a call holds (unref the call, drain and destroy its
 * queue). Every batch started on it must have completed. */
void rpc_call_free(rpc_call *c);
/* Flatten the payload into a slice; false when it cannot be read. */
bool rpc_payload_slice(grpc_byte_buffer *bb, grpc_slice *out);
/* A malloc'd copy of a metadata value (first match), or NULL. */
char *rpc_md_dup(const grpc_metadata_array *md, const char *key);

void *rpc_unpack(const ProtobufCMessageDescriptor *d, const rpc_request *req,
		 rpc_reply *rep);
void rpc_reply_pack(rpc_reply *rep, const ProtobufCMessage *m);
void rpc_reply_error(rpc_reply *rep, grpc_status_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The status for an AP_E code (SPEC section 2 and 2b). */
grpc_status_code rpc_status_from_ap(int rc);
const char *rpc_status_name(grpc_status_code code);
gpr_timespec rpc_deadline_ms(int64_t ms);

/* The engine gate: a handler or stream enters before it calls the engine
 * (a stream stays inside while it holds its session) and leaves after.
 * Shutdown waits for the last one to leave and then closes the gate, so
 * the engine can be closed even while a stalled connection still holds a
 * thread in gRPC. rpc_engine_enter returns false once the gate is closed. */
bool rpc_engine_enter(ap_rpc_server *srv);
void rpc_engine_leave(ap_rpc_server *srv);
/* Wait until no thread is inside the engine, then close the gate. False
 * when the monotonic deadline passed first (the gate stays open). */
bool rpc_engine_close_gate(ap_rpc_server *srv, int64_t deadline_ns);

/* ---- stream.c ---------------------------------------------------------- */

/* Start the thread of an accepted SyncMessages call; it takes the call.
 * AP_ENOMEM/AP_ELIMIT when no thread could be started (the call stays the
 * caller's). */
int rpc_stream_start(ap_rpc_server *srv, rpc_call *c);
/* Join the stream threads that finished. */
void rpc_streams_reap(ap_rpc_server *srv);
/* Wait until no stream thread is live or the monotonic deadline passes;
 * true when none is left. */
bool rpc_streams_wait(ap_rpc_server *srv, int64_t deadline_ns);

/* ---- node.c ------------------------------------------------------------ */

/* Signature mode: check the bearer token of `req` for `address` (as sent).
 * False with UNAUTHENTICATED in rep when it fails. */
bool rpc_node_auth(ap_rpc_server *srv, const rpc_request *req, const char *address,
		   const char *method, rpc_reply *rep);

#endif
