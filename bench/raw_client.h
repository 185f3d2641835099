/* The raw gRPC core client side of the baselines (bench/raw_client.c):
 * SyncMessages-like streams to bench/raw_server with no client library in
 * between, measured by bench/bench_grpc in the same run as ap.
 *
 * Every function blocks its calling thread until it is done, makes its own
 * channels (each its own TCP connection: a local subchannel pool) and
 * completion queues, and releases all of them before returning (except the
 * handles below, released by their close). Call grpc_init (or
 * ap_client_init) first. Failures print a message and return a negative
 * value or NULL. Times are CLOCK_MONOTONIC nanoseconds (ap_clock_mono_ns),
 * comparable across processes. */
#ifndef AP_BENCH_RAW_CLIENT_H
#define AP_BENCH_RAW_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

/* One channel (its own TCP connection, made lazily by the first stream)
 * and a completion queue, for streams one after the other. */
typedef struct raw_conn raw_conn;
raw_conn *raw_conn_open(const char *target);
/* One "one" stream on c: started, its first message awaited, cancelled and
 * collected. Returns the time from t0 (0: the call's start) to the first
 * message, or -1. */
int64_t raw_conn_stream(raw_conn *c, int64_t t0);
void raw_conn_close(raw_conn *c);

/* Connect-stream-close cycles: a new channel, a stream, its first message,
 * cancel, collect, destroy; `inflight` threads each doing cycles until `n`
 * are done in all. Returns cycles per second (< 0 on failure). */
double raw_cycles(const char *target, int n, int inflight);

/* `streams` streams on as many connections, each asking for `per_stream`
 * messages, read from one thread through one completion queue. Returns
 * messages per second from the first call started to the last message
 * received (< 0 on failure). */
double raw_flood(const char *target, int streams, int64_t per_stream);

/* A fleet of streams, each on its own connection, all on one completion
 * queue served by one thread of the fleet's own: idle operators by the
 * thousand, or 100 operators receiving tasks. Stream i sends
 * SyncMessagesReq{id = mode, address = "0x" + group as 8 hex digits + i as
 * 32, monotonic_clock = count}: mode "idle" for the raw server, "" for ap.
 * Messages are counted, not decoded. At most `max` streams. */
typedef struct raw_fleet raw_fleet;
raw_fleet *raw_fleet_open(const char *target, const char *mode, int64_t count, unsigned group,
			  int max);
/* Grow to `total` streams; returns 0 once each has the server's initial
 * metadata, -1 when one failed or after timeout_ms. */
int raw_fleet_grow(raw_fleet *f, int total, int64_t timeout_ms);
/* Messages received by all streams so far, and when the last one came. */
uint64_t raw_fleet_received(raw_fleet *f);
int64_t raw_fleet_last_ns(raw_fleet *f);
/* Streams that ended (the server refused or closed them). */
int raw_fleet_ended(raw_fleet *f);
/* Stop the thread, cancel and collect every stream, free; *min and *max
 * (may be NULL) get the fewest and most messages one stream received. */
void raw_fleet_close(raw_fleet *f, uint64_t *min, uint64_t *max);

/* One stream with its own channel and queue, for the failover baseline:
 * mode "watch" (a message each time an owner stream ends) or "owner" (one
 * message at once; its end wakes the watcher). */
typedef struct raw_stream raw_stream;
raw_stream *raw_stream_open(const char *target, const char *mode);
/* Wait up to timeout_ms for the next message: its arrival time (ns), or
 * -1 (timeout or end). */
int64_t raw_stream_next(raw_stream *s, int64_t timeout_ms);
/* RST_STREAM, as a client that goes away. Any thread. */
void raw_stream_cancel(raw_stream *s);
/* Cancel, collect, free. NULL accepted. */
void raw_stream_close(raw_stream *s);

#endif
