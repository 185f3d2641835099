/* The process-wide gRPC runtime: every server and client takes its
 * grpc_init reference through ap_grpc_init so the one-time tuning below
 * happens before gRPC creates its first mutex. */
#ifndef AP_GRPC_RUNTIME_H
#define AP_GRPC_RUNTIME_H

#include <stdbool.h>

/* grpc_init, preceded once per process by switching off abseil's mutex
 * deadlock detector and routing gRPC's own log lines into ap's log (see
 * runtime.c). Pair each call with grpc_shutdown. */
void ap_grpc_init(void);

/* True when the detector's switch was found and turned off. False means
 * gRPC runs with whatever abseil defaults to; ap still works, but under a
 * reconnect storm much slower and it may abort on a false lock-order
 * report. A unit test pins this to true on the supported platform. */
bool ap_grpc_detector_off(void);

/* gRPC 1.51 gives up on a listening port for good when accept4 fails with
 * anything but EAGAIN, ECONNABORTED or EINTR (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM): it logs "Failed accept4: ..." and never accepts on that port
 * again, while the process carries on. ap watches gRPC's log for that
 * line. `hook` (NULL: none) is called once, from the gRPC thread that saw
 * the failure, so it must only do async-safe work (ap aggregator sends
 * itself SIGTERM and exits 1 for its supervisor to restart it). */
void ap_grpc_set_listener_failure_hook(void (*hook)(void));

/* True once gRPC reported that a listener stopped accepting. */
bool ap_grpc_listener_failed(void);

#endif
