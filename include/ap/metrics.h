/* Metrics (SPEC section 6b): Prometheus text exposition at
 * http://<metrics_listen>/metrics, served by libmicrohttpd.
 *
 * Two kinds of figures:
 *  - events counted where they happen (task sends and their durations,
 *    reconnect-to-first-task, auth failures): process-wide counters and
 *    histograms updated with C11 atomics, cheap enough for hot paths and
 *    safe from any thread without a lock;
 *  - state owned by the engine (operators, tasks, assignments): read at
 *    scrape time through a source callback, so there is one source of truth.
 *
 * Debian has no maintained C Prometheus client, so the text format is
 * written here; libmicrohttpd (its own thread) does the HTTP.
 *
 * Lock rule: no locks; counters are atomics. The server object is owned by
 * the daemon's main thread (start/stop). */
#ifndef AP_METRICS_H
#define AP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "ap/engine.h"

typedef enum {
	AP_SEND_OK = 0,
	AP_SEND_TIMEOUT = 1,
	AP_SEND_ERROR = 2,
} ap_send_result;

/* A task send finished after `seconds` with `result`. Thread-safe. */
void ap_metrics_send(ap_send_result result, double seconds);
/* A session got its first task `seconds` after it was opened. */
void ap_metrics_first_task(double seconds);
/* An authentication failure; reason is ap_auth_result_name() text. */
void ap_metrics_auth_failure(const char *reason);

/* Render the exposition text into a malloc'd buffer (caller frees).
 * `stats` may be NULL (engine figures left out). 0 or AP_ENOMEM. */
int ap_metrics_render(const ap_engine_stats *stats, char **out, size_t *len);

/* Reset every event counter (tests). */
void ap_metrics_reset(void);

typedef struct ap_metrics_server ap_metrics_server;
/* Serve GET /metrics on listen ("HOST:PORT", port 0 = any) with engine
 * figures from e (may be NULL). Returns 0 or AP_EINVAL/AP_EIO (detail in
 * err). */
int ap_metrics_server_start(ap_metrics_server **out, const char *listen, ap_engine *e,
			    char *err, size_t errlen);
int ap_metrics_server_port(const ap_metrics_server *ms);
/* Stop and free; NULL accepted. */
void ap_metrics_server_stop(ap_metrics_server *ms);

#endif
