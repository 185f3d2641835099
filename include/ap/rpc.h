/* The gRPC transport (SPEC sections 2, 2b, 3 and 6b): the operator server
 * (service aggregator.Node and grpc.health.v1.Health on `listen`) and the
 * admin server (service aggregator.Admin on `admin_listen`), both driving
 * one engine. src/rpc/ is the only code that includes <grpc/grpc.h>; this
 * interface does not expose any gRPC type.
 *
 * Threads it owns: one acceptor per server, a small pool of workers for
 * unary calls, and one thread per accepted SyncMessages stream (the only
 * writer on its call). All are named and joined by ap_rpc_server_stop.
 *
 * Life cycle, from the one thread that runs the daemon:
 *
 *   ap_rpc_server_open   grpc_init, create both servers, bind the ports
 *   ap_rpc_server_start  start serving (Node HealthCheck says "STARTING")
 *   ap_rpc_server_ready  the engine is started (HealthCheck says "OK")
 *   ap_rpc_server_stop   the shutdown order of STYLE.md: stop accepting,
 *                        health NOT_SERVING, ap_engine_stop (every session
 *                        ends with UNAVAILABLE), cancel what is left, wait
 *                        for every stream and worker thread
 *   ap_engine_close      (the caller) checkpoint and close the store
 *   ap_rpc_server_close  destroy the servers, grpc_shutdown
 *
 * Signals: gRPC starts threads in grpc_init; block the signals the daemon
 * waits for before ap_rpc_server_open. */
#ifndef AP_RPC_H
#define AP_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "ap/config.h"
#include "ap/engine.h"

typedef struct ap_rpc_server ap_rpc_server;

/* Initialise gRPC and create the operator and admin servers for `cfg`,
 * bound but not yet serving. The engine and the config are borrowed and
 * must outlive the server. Returns 0, or AP_EIO (a port could not be bound,
 * the admin socket is in use, a TLS file is unreadable), AP_EINVAL or
 * AP_ENOMEM with the detail in err. On failure everything is released
 * (gRPC included). */
int ap_rpc_server_open(ap_rpc_server **out, ap_engine *engine, const ap_config *cfg,
		       char *err, size_t errlen);

/* Start both servers and their threads. Returns 0 or AP_EIO/AP_ENOMEM with
 * the detail in err (then call ap_rpc_server_stop and _close). */
int ap_rpc_server_start(ap_rpc_server *srv, char *err, size_t errlen);

/* The engine is started: Node HealthCheck answers "OK". Thread-safe. */
void ap_rpc_server_ready(ap_rpc_server *srv);

/* The bound operator port (the real one when `listen` asked for port 0). */
int ap_rpc_server_port(const ap_rpc_server *srv);

/* Shut down in order (see above), stopping the engine on the way, and join
 * every thread; `timeout_ms` bounds the whole. Returns
 *   0             done: close the engine, then ap_rpc_server_close;
 *   AP_ETIMEDOUT  the transport no longer uses the engine (close it), but
 *                 some connection is still draining (a peer that stopped
 *                 reading): do not call ap_rpc_server_close, leave the
 *                 process with _exit;
 *   AP_ESTATE     a thread is still inside the engine: close nothing.
 * Call once. */
int ap_rpc_server_stop(ap_rpc_server *srv, int64_t timeout_ms);

/* Destroy the servers and shut gRPC down. Call after ap_rpc_server_stop
 * returned 0, or after a failed open or start (stop first in that case).
 * NULL accepted. */
void ap_rpc_server_close(ap_rpc_server *srv);

#endif
