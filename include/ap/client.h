/* A gRPC client for the aggregator's Node and Admin services (SPEC sections
 * 2 and 2b), built on the gRPC core C API in src/rpc/client*.c. It is what
 * the integration tests talk to the daemon with, and what `ap operator`,
 * `ap task` and `ap stress` are built on.
 *
 * Objects:
 *  - ap_client: one channel to one target ("HOST:PORT", "ipv4:...",
 *    "unix:PATH"). By default every client has its own subchannel pool, so
 *    its own TCP connection: N clients to one target are N connections, as N
 *    operator processes would be (GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL).
 *    Thread-safe: any number of threads may make calls on one client at
 *    once. Close it after its calls have returned; streams opened on it do
 *    not need it afterwards and may outlive it.
 *  - Unary calls (HealthCheck, Ping, Ack, NotifyTriggers and the Admin
 *    methods) block until the call ends, bounded by a deadline, and report
 *    the gRPC status code and details plus the decoded response. Each call
 *    has its own completion queue, so concurrent calls do not contend.
 *  - ap_stream: one SyncMessages call with its own NEXT completion queue.
 *    One thread (the consumer) opens it, calls ap_stream_next and closes it;
 *    ap_stream_cancel may be called from any thread until close starts.
 *    Many streams may be driven at once, one consumer thread each.
 *
 * A later `ap stress` may drive many streams from one thread: the stream's
 * state machine only reacts to completion events (see stream_on_event in
 * src/rpc/client_stream.c), so a shared queue can feed it without changing
 * this interface's per-stream functions.
 *
 * Return values follow STYLE.md: 0 or a negative AP_E... code for failures
 * of this side (no memory, bad argument, undecodable response, a local
 * deadline). A call that reached the point of getting a gRPC status returns
 * 0 and puts the status in an ap_rpc_status, whatever the code: a
 * PERMISSION_DENIED answer is a successful call in this sense.
 *
 * Responses are protobuf-c messages owned by the caller; free them with
 * ap_client_free(). */
#ifndef AP_CLIENT_H
#define AP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "node.pb-c.h"

/* gRPC status codes, with the values of grpc_status_code (this header may
 * not include <grpc/grpc.h>; client.c checks that they agree). */
enum {
	AP_RPC_OK = 0,
	AP_RPC_CANCELLED = 1,
	AP_RPC_UNKNOWN = 2,
	AP_RPC_INVALID_ARGUMENT = 3,
	AP_RPC_DEADLINE_EXCEEDED = 4,
	AP_RPC_NOT_FOUND = 5,
	AP_RPC_ALREADY_EXISTS = 6,
	AP_RPC_PERMISSION_DENIED = 7,
	AP_RPC_RESOURCE_EXHAUSTED = 8,
	AP_RPC_FAILED_PRECONDITION = 9,
	AP_RPC_ABORTED = 10,
	AP_RPC_OUT_OF_RANGE = 11,
	AP_RPC_UNIMPLEMENTED = 12,
	AP_RPC_INTERNAL = 13,
	AP_RPC_UNAVAILABLE = 14,
	AP_RPC_DATA_LOSS = 15,
	AP_RPC_UNAUTHENTICATED = 16,
};

/* "OK", "PERMISSION_DENIED", ...; "?" for a value outside 0..16. Static. */
const char *ap_rpc_code_name(int code);

/* Method paths. */
#define AP_RPC_NODE_HEALTH_CHECK "/aggregator.Node/HealthCheck"
#define AP_RPC_NODE_PING "/aggregator.Node/Ping"
#define AP_RPC_NODE_SYNC_MESSAGES "/aggregator.Node/SyncMessages"
#define AP_RPC_NODE_ACK "/aggregator.Node/Ack"
#define AP_RPC_NODE_NOTIFY_TRIGGERS "/aggregator.Node/NotifyTriggers"
#define AP_RPC_ADMIN_CREATE_TASKS "/aggregator.Admin/CreateTasks"
#define AP_RPC_ADMIN_SET_TASK_ENABLED "/aggregator.Admin/SetTaskEnabled"
#define AP_RPC_ADMIN_DELETE_TASK "/aggregator.Admin/DeleteTask"
#define AP_RPC_ADMIN_LIST_TASKS "/aggregator.Admin/ListTasks"
#define AP_RPC_ADMIN_LIST_OPERATORS "/aggregator.Admin/ListOperators"

/* Metadata key naming the caller of Ack (SPEC section 2). */
#define AP_RPC_OPERATOR_ADDRESS_KEY "x-operator-address"

/* The final status of a call. `details` is the status message, truncated
 * to fit (NUL-terminated). */
#define AP_RPC_DETAILS_MAX 256
typedef struct ap_rpc_status {
	int code; /* AP_RPC_... */
	char details[AP_RPC_DETAILS_MAX];
} ap_rpc_status;

/* One metadata entry. Keys are lower-case ASCII ("authorization",
 * "x-operator-address"); keys ending in "-bin" carry binary values, which
 * this interface does not support. */
typedef struct ap_rpc_metadata {
	const char *key;
	const char *value;
} ap_rpc_metadata;

/* Per-call options; NULL means all defaults. */
typedef struct ap_call_options {
	/* Deadline of the call, from its start. 0: AP_CLIENT_UNARY_TIMEOUT_MS
	 * for unary calls, none for streams. A negative value means none. */
	int64_t timeout_ms;
	/* Extra metadata sent with the call (e.g. "authorization",
	 * "Bearer ..." from ap_auth_sign). Copied; need not outlive the call. */
	const ap_rpc_metadata *metadata;
	size_t n_metadata;
	/* Wait for the channel to connect instead of failing with UNAVAILABLE
	 * at once while it is in transient failure. */
	bool wait_for_ready;
} ap_call_options;

#define AP_CLIENT_UNARY_TIMEOUT_MS 10000

/* Channel options; NULL or a zeroed struct means all defaults. */
typedef struct ap_client_options {
	/* Share TCP connections with other clients to the same target (gRPC's
	 * global subchannel pool). Default false: one connection per client. */
	bool shared_connection;
	/* HTTP/2 keepalive pings, so a vanished server is noticed: interval
	 * and answer timeout. 0: no keepalive (gRPC's default). */
	int64_t keepalive_time_ms;
	int64_t keepalive_timeout_ms;
	/* Largest message accepted from the server; 0: gRPC's 4 MiB. */
	int64_t max_receive_message_bytes;
	/* First and largest delay between connection attempts; 0: gRPC's
	 * defaults (1 s growing to 120 s). */
	int64_t reconnect_backoff_ms;
	int64_t max_reconnect_backoff_ms;
	/* TLS (SPEC section 7). All NULL or "": plaintext, the default.
	 * tls_ca_file: PEM file of the CA certificates that may sign the
	 * server's certificate; setting it turns TLS on, and only these CAs
	 * are trusted (not the system's), as an operator port is normally
	 * served with a private CA. The server's certificate must name the
	 * target's host (an IP SAN for "127.0.0.1:PORT") or tls_server_name.
	 * tls_cert_file, tls_key_file: this client's certificate chain and
	 * private key (PEM) for mutual TLS; both or neither, and only with
	 * tls_ca_file.
	 * tls_server_name: check the server's certificate against this name
	 * instead of the target's host (GRPC_SSL_TARGET_NAME_OVERRIDE_ARG; it
	 * is also the SNI name); only with tls_ca_file.
	 * The files are read by ap_client_open (a missing or non-PEM file is
	 * AP_EINVAL there, not a failure of the first call); the strings need
	 * not outlive it. */
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
	const char *tls_server_name;
} ap_client_options;

typedef struct ap_client ap_client;
typedef struct ap_stream ap_stream;

/* Process-wide start and stop of gRPC (grpc_init/grpc_shutdown, counted).
 * ap_client_open takes its own reference too, so calling these is only
 * needed to keep gRPC running between clients (a test that opens and closes
 * clients in a loop should, to avoid restarting gRPC each time). Call
 * ap_client_init before starting threads that use gRPC in a program that
 * blocks signals (see notes: grpc_init starts threads). Thread-safe. */
void ap_client_init(void);
void ap_client_shutdown(void);

/* Open a channel to target. The connection is made lazily by the first
 * call. Returns 0, AP_EINVAL (bad target or options, a TLS file that cannot
 * be read or holds no PEM) or AP_ENOMEM; detail in err (may be NULL). A
 * TLS handshake that fails (untrusted server, refused client certificate)
 * shows as calls failing with AP_RPC_UNAVAILABLE. */
int ap_client_open(const char *target, const ap_client_options *options,
		   ap_client **out, char *err, size_t errlen);
/* Destroy the channel. NULL accepted. Calls in progress on it must have
 * returned; streams opened on it stay usable. */
void ap_client_close(ap_client *c);
/* The target string given to open. Owned by the client. */
const char *ap_client_target(const ap_client *c);

/* Free a response returned by any function below. NULL accepted. */
void ap_client_free(void *message);

/* ---- unary calls ---------------------------------------------------------
 * All block until the call ends (bounded by the deadline) and are
 * thread-safe. On return 0, *st holds the status; *resp is set (owned by the
 * caller) only when st->code is AP_RPC_OK, else NULL. A response that
 * cannot be decoded gives st->code AP_RPC_INTERNAL. A negative return means
 * the call could not be made (*resp NULL, *st undefined). */

/* Any method, any protobuf-c message in and out. */
int ap_client_call(ap_client *c, const char *method,
		   const ProtobufCMessage *req,
		   const ProtobufCMessageDescriptor *resp_descriptor,
		   ProtobufCMessage **resp, const ap_call_options *o,
		   ap_rpc_status *st);
/* Any method, raw bytes in and out: for sending malformed or oversized
 * requests. On OK, *resp is a malloc'd copy of the response bytes (NULL
 * when empty) and *resp_len its length; resp may be NULL to discard it. */
int ap_client_call_raw(ap_client *c, const char *method, const void *req,
		       size_t req_len, void **resp, size_t *resp_len,
		       const ap_call_options *o, ap_rpc_status *st);

int ap_client_health_check(ap_client *c, const Aggregator__HealthCheckRequest *req,
			   Aggregator__HealthCheckResponse **resp,
			   const ap_call_options *o, ap_rpc_status *st);
int ap_client_ping(ap_client *c, const Aggregator__Checkin *req,
		   Aggregator__CheckinResp **resp, const ap_call_options *o,
		   ap_rpc_status *st);
/* Ack a message id. operator_address (may be NULL) goes into the
 * x-operator-address metadata, added to o->metadata. *acked is the
 * answer (false unless the status is OK). */
int ap_client_ack(ap_client *c, const char *operator_address,
		  const char *message_id, bool *acked,
		  const ap_call_options *o, ap_rpc_status *st);
int ap_client_notify_triggers(ap_client *c, const Aggregator__NotifyTriggersReq *req,
			      Aggregator__NotifyTriggersResp **resp,
			      const ap_call_options *o, ap_rpc_status *st);

int ap_client_create_tasks(ap_client *c, const Aggregator__CreateTasksReq *req,
			   Aggregator__CreateTasksResp **resp,
			   const ap_call_options *o, ap_rpc_status *st);
int ap_client_set_task_enabled(ap_client *c, const char *id, bool enabled,
			       Aggregator__TaskOpResp **resp,
			       const ap_call_options *o, ap_rpc_status *st);
int ap_client_delete_task(ap_client *c, const char *id,
			  Aggregator__TaskOpResp **resp,
			  const ap_call_options *o, ap_rpc_status *st);
int ap_client_list_tasks(ap_client *c, const Aggregator__ListTasksReq *req,
			 Aggregator__ListTasksResp **resp,
			 const ap_call_options *o, ap_rpc_status *st);
int ap_client_list_operators(ap_client *c, Aggregator__ListOperatorsResp **resp,
			     const ap_call_options *o, ap_rpc_status *st);

/* ---- the SyncMessages stream -------------------------------------------- */

/* Start a SyncMessages call: one batch sends the request with initial
 * metadata and the client's half-close and receives the server's initial
 * metadata; a second waits for the final status. Then wait up to
 * open_wait_ms for the initial metadata (0: do not wait; the first
 * ap_stream_next does). A server that refuses the call (PERMISSION_DENIED,
 * ...) still gives a stream: its first ap_stream_next returns
 * AP_STREAM_END with the status. o->timeout_ms, when positive, is a
 * deadline for the whole stream.
 * Returns 0, AP_ETIMEDOUT (no initial metadata within open_wait_ms; the
 * call was cancelled and *out is NULL), AP_EINVAL, AP_ENOMEM. */
int ap_stream_open(ap_client *c, const Aggregator__SyncMessagesReq *req,
		   const ap_call_options *o, int64_t open_wait_ms,
		   ap_stream **out);
/* The same with raw request bytes (malformed or oversized requests). */
int ap_stream_open_raw(ap_client *c, const void *req, size_t req_len,
		       const ap_call_options *o, int64_t open_wait_ms,
		       ap_stream **out);

enum {
	AP_STREAM_END = 0,     /* the call ended: *st holds its final status */
	AP_STREAM_MESSAGE = 1, /* *msg holds the next message */
};
/* Wait up to timeout_ms (negative: forever) for the next message. Returns
 * AP_STREAM_MESSAGE with *msg (owned by the caller), AP_STREAM_END with *st
 * (again on every later call), or AP_ETIMEDOUT (nothing yet; the stream is
 * intact). Every message the server sent before the end is returned before
 * AP_STREAM_END. A message that cannot be decoded ends the call with
 * AP_RPC_INTERNAL. Consumer thread only. */
int ap_stream_next(ap_stream *s, int64_t timeout_ms,
		   Aggregator__SyncMessagesResp **msg, ap_rpc_status *st);
/* True once the server's initial metadata has arrived. Consumer thread. */
bool ap_stream_opened(const ap_stream *s);
/* Cancel the call at once (RST_STREAM, as a crashed client would): the
 * server sees the client go away; a blocked ap_stream_next returns
 * AP_STREAM_END with AP_RPC_CANCELLED. Thread-safe; idempotent; only until
 * ap_stream_close starts. */
void ap_stream_cancel(ap_stream *s);
/* Cancel the call if it has not ended, wait for its pending operations,
 * and free everything. NULL accepted. Consumer thread, after any other
 * thread's last ap_stream_cancel. */
void ap_stream_close(ap_stream *s);

/* ---- helpers -------------------------------------------------------------- */

/* Read the port `ap aggregator --port-file` wrote: decimal digits and an
 * optional newline. Returns 0 with *port, AP_ENOTFOUND (no file yet, or
 * still empty), AP_EINVAL (not a port number), AP_EIO. */
int ap_client_read_port_file(const char *path, int *port);

#endif
