/* Many SyncMessages streams driven by one thread through one completion
 * queue: the event-driven side of the client library (include/ap/client.h
 * has the blocking one, a queue and a consumer thread per stream).
 *
 * `ap stress` simulates a thousand operators in one process on two cores;
 * a thread per stream would cost a thousand threads. Here an ap_mux owns
 * one NEXT completion queue; every stream opened on it starts its batches
 * on that queue, and whichever thread calls ap_mux_run (one at a time per
 * mux) receives the completions and turns each into a callback. A program
 * that wants more cores runs several muxes, one thread each.
 *
 * A stream's operations are those of ap_stream (src/rpc/client_stream.c):
 * one open batch {SEND_INITIAL_METADATA, SEND_MESSAGE,
 * SEND_CLOSE_FROM_CLIENT, RECV_INITIAL_METADATA}, one RECV_STATUS_ON_CLIENT,
 * and one RECV_MESSAGE re-armed as soon as a message has been handed out,
 * so a stream never holds back the server. Callbacks, in order:
 *   AP_MSTREAM_OPENED   the server's initial metadata arrived (the server
 *                       accepted the call; not sent when it refused it);
 *   AP_MSTREAM_MESSAGE  one decoded message, owned by the callee (free it
 *                       with ap_client_free);
 *   AP_MSTREAM_END      the call is over: every message came before it; st
 *                       is the final status. The last callback: the stream
 *                       is freed when it returns.
 *
 * Threads: everything runs on the thread in ap_mux_run, including the
 * callbacks, which may open, cancel and abandon streams of the same mux.
 * ap_mstream_cancel (only grpc_call_cancel, thread-safe in gRPC) may also
 * be called from another thread as long as the caller knows the stream is
 * not yet freed. Nothing here takes a lock. Each mux and each stream holds
 * a grpc_init reference; a stream does not need its ap_client after it is
 * opened (the call holds the channel). */
#ifndef AP_CLIENT_MULTI_H
#define AP_CLIENT_MULTI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap/client.h"

typedef struct ap_mux ap_mux;
typedef struct ap_mstream ap_mstream;

typedef enum {
	AP_MSTREAM_OPENED = 0,
	AP_MSTREAM_MESSAGE = 1,
	AP_MSTREAM_END = 2,
} ap_mstream_event;

/* msg is set for AP_MSTREAM_MESSAGE (the callee owns it), st for
 * AP_MSTREAM_END (valid during the call); both NULL otherwise. */
typedef void (*ap_mstream_fn)(ap_mstream *s, void *user, ap_mstream_event ev,
			      Aggregator__SyncMessagesResp *msg,
			      const ap_rpc_status *st);

/* A new mux with its own completion queue. 0 or AP_ENOMEM. */
int ap_mux_open(ap_mux **out);
/* Wait up to timeout_ms (0: do not wait; negative: forever) for a
 * completion, then dispatch it and every other completion already queued,
 * at most max_events in all (0: no limit but the queue). Returns the number
 * dispatched (0 on timeout). One thread at a time. */
int ap_mux_run(ap_mux *m, int64_t timeout_ms, int max_events);
/* Streams opened on this mux and not yet freed. */
size_t ap_mux_streams(const ap_mux *m);
/* Abandon every stream still open (no more callbacks), wait for their
 * completions, destroy the queue and free. NULL accepted. The thread that
 * runs the mux, once it no longer does. */
void ap_mux_close(ap_mux *m);

/* Start a SyncMessages call with req on channel c; its events go to
 * fn(s, user, ...) from ap_mux_run. o->timeout_ms, when positive, is a
 * deadline for the whole stream. The stream is live until its END callback
 * returns (or it is abandoned). Returns 0 with *out, AP_EINVAL (bad
 * argument, or a metadata key gRPC refuses) or AP_ENOMEM. The mux's
 * thread. */
int ap_mstream_open(ap_mux *m, ap_client *c, const Aggregator__SyncMessagesReq *req,
		    const ap_call_options *o, ap_mstream_fn fn, void *user,
		    ap_mstream **out);
/* Cancel the call (RST_STREAM, as a client that goes away): END follows
 * with AP_RPC_CANCELLED unless the call had already ended. Idempotent.
 * Any thread, while the stream is live. */
void ap_mstream_cancel(ap_mstream *s);
/* Cancel the call and deliver no more callbacks: the owner forgets the
 * stream at once, the mux frees it when its last completion arrives. The
 * mux's thread, while the stream is live. */
void ap_mstream_abandon(ap_mstream *s);
/* The user pointer given at open. */
void *ap_mstream_user(const ap_mstream *s);

/* True while channel c is making a connection attempt (gRPC's
 * CONNECTING state). gRPC 1.51 keeps the TCP connection of a channel
 * destroyed in that state open until grpc_shutdown (measured: 500 of 500
 * channels closed right after a call cancelled before the connection was
 * up), so an owner of many short-lived channels waits for this to turn
 * false before ap_client_close. Thread-safe. */
bool ap_client_connecting(ap_client *c);

#endif
