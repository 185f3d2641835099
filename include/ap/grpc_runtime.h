/* The process-wide gRPC runtime: every server and client takes its
 * grpc_init reference through ap_grpc_init so the one-time tuning below
 * happens before gRPC creates its first mutex. */
#ifndef AP_GRPC_RUNTIME_H
#define AP_GRPC_RUNTIME_H

#include <stdbool.h>

/* grpc_init, preceded once per process by switching off abseil's mutex
 * deadlock detector (see runtime.c). Pair each call with grpc_shutdown. */
void ap_grpc_init(void);

/* True when the detector's switch was found and turned off. False means
 * gRPC runs with whatever abseil defaults to; ap still works, but under a
 * reconnect storm much slower and it may abort on a false lock-order
 * report. A unit test pins this to true on the supported platform. */
bool ap_grpc_detector_off(void);

#endif
