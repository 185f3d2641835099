/* Metrics: counters, histograms, the Prometheus text format and the HTTP
 * endpoint. See include/ap/metrics.h. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/error.h"
#include "ap/metrics.h"

/* Latency buckets in seconds: sub-millisecond sends up to the default
 * 10 s stabilization period and beyond. */
static const double bucket_le[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
				    0.1,    0.25,  0.5,    1,     2.5,  5,     10,   30 };
#define N_BUCKETS (sizeof bucket_le / sizeof bucket_le[0])

typedef struct histogram {
	atomic_uint_fast64_t buckets[N_BUCKETS]; /* not cumulative; summed on render */
	atomic_uint_fast64_t count;
	atomic_uint_fast64_t sum_ns;
} histogram;

static const char *const auth_reasons[] = { "missing", "malformed", "bad_signature",
					    "wrong_signer", "expired", "future",
					    "unapproved", "other" };
#define N_AUTH (sizeof auth_reasons / sizeof auth_reasons[0])

static atomic_uint_fast64_t sends[3];
static histogram send_duration;
static histogram first_task;
static atomic_uint_fast64_t auth_failures[N_AUTH];

static void observe(histogram *h, double seconds)
{
	if (seconds < 0)
		seconds = 0;
	size_t i = 0;
	while (i < N_BUCKETS && seconds > bucket_le[i])
		i++;
	if (i < N_BUCKETS)
		atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)(seconds * 1e9), memory_order_relaxed);
}

void ap_metrics_send(ap_send_result result, double seconds)
{
	if ((unsigned)result > AP_SEND_ERROR)
		result = AP_SEND_ERROR;
	atomic_fetch_add_explicit(&sends[result], 1, memory_order_relaxed);
	observe(&send_duration, seconds);
}

void ap_metrics_first_task(double seconds)
{
	observe(&first_task, seconds);
}

void ap_metrics_auth_failure(const char *reason)
{
	size_t i = 0;
	while (i < N_AUTH - 1 && (!reason || strcmp(reason, auth_reasons[i]) != 0))
		i++;
	atomic_fetch_add_explicit(&auth_failures[i], 1, memory_order_relaxed);
}

static void reset_histogram(histogram *h)
{
	for (size_t i = 0; i < N_BUCKETS; i++)
		atomic_store(&h->buckets[i], 0);
	atomic_store(&h->count, 0);
	atomic_store(&h->sum_ns, 0);
}

void ap_metrics_reset(void)
{
	for (int i = 0; i < 3; i++)
		atomic_store(&sends[i], 0);
	for (size_t i = 0; i < N_AUTH; i++)
		atomic_store(&auth_failures[i], 0);
	reset_histogram(&send_duration);
	reset_histogram(&first_task);
}

/* ---- text format ---------------------------------------------------- */

typedef struct outbuf {
	char *p;
	size_t len, cap;
	bool oom;
} outbuf;

__attribute__((format(printf, 2, 3))) static void put(outbuf *b, const char *fmt, ...)
{
	if (b->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap * 2 + (size_t)n;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

static void head(outbuf *b, const char *name, const char *type, const char *help)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_histogram(outbuf *b, const char *name, const char *help, histogram *h)
{
	head(b, name, "histogram", help);
	uint64_t cum = 0;
	for (size_t i = 0; i < N_BUCKETS; i++) {
		cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
		put(b, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i], (unsigned long long)cum);
	}
	/* The count is read last: +Inf is never below the finite buckets. */
	uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
	if (count < cum)
		count = cum;
	put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
	put(b, "%s_sum %.9f\n", name,
	    (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9);
	put(b, "%s_count %llu\n", name, (unsigned long long)count);
}

static void gauge(outbuf *b, const char *name, const char *help, unsigned long long v)
{
	head(b, name, "gauge", help);
	put(b, "%s %llu\n", name, v);
}

static void counter(outbuf *b, const char *name, const char *help, unsigned long long v)
{
	head(b, name, "counter", help);
	put(b, "%s %llu\n", name, v);
}

int ap_metrics_render(const ap_engine_stats *st, char **out, size_t *len)
{
	outbuf b = { .cap = 8192 };
	b.p = malloc(b.cap);
	if (!b.p)
		return AP_ENOMEM;
	b.p[0] = '\0';
	if (st) {
		gauge(&b, "ap_operators_connected", "Operators with an open session.", st->connected);
		gauge(&b, "ap_operators_ready", "Operators whose session is past stabilization.",
		      st->ready);
		counter(&b, "ap_operator_connects_total", "Sessions accepted.", st->connects);
		counter(&b, "ap_operator_reconnects_total",
			"Sessions accepted for an address seen before.", st->reconnects);
		counter(&b, "ap_operator_disconnects_total",
			"Current sessions that ended (cleanup ran).", st->disconnects);
		counter(&b, "ap_sessions_superseded_total",
			"Sessions replaced by a newer session of the same operator.", st->superseded);
		head(&b, "ap_tasks", "gauge", "Tasks by status.");
		static const char *const names[4] = { "enabled", "disabled", "completed", "failed" };
		for (int i = 0; i < 4; i++)
			put(&b, "ap_tasks{status=\"%s\"} %zu\n", names[i], st->tasks_by_status[i]);
		gauge(&b, "ap_tasks_orphaned", "Enabled, non-manual tasks without an owner.",
		      st->orphans);
		head(&b, "ap_assignments_total", "counter", "Owner assignments by reason.");
		put(&b, "ap_assignments_total{reason=\"round_robin\"} %llu\n",
		    (unsigned long long)st->assign_round_robin);
		put(&b, "ap_assignments_total{reason=\"reclaim\"} %llu\n",
		    (unsigned long long)st->assign_reclaim);
		put(&b, "ap_assignments_total{reason=\"reassign\"} %llu\n",
		    (unsigned long long)st->assign_reassign);
	}
	head(&b, "ap_task_sends_total", "counter", "Messages sent to operators by result.");
	static const char *const results[3] = { "ok", "timeout", "error" };
	for (int i = 0; i < 3; i++)
		put(&b, "ap_task_sends_total{result=\"%s\"} %llu\n", results[i],
		    (unsigned long long)atomic_load(&sends[i]));
	render_histogram(&b, "ap_reconnect_to_first_task_seconds",
			 "From a session's accept to its first task sent.", &first_task);
	render_histogram(&b, "ap_send_duration_seconds", "Time to send one message.",
			 &send_duration);
	head(&b, "ap_auth_failures_total", "counter", "Rejected operator calls by reason.");
	for (size_t i = 0; i < N_AUTH; i++)
		put(&b, "ap_auth_failures_total{reason=\"%s\"} %llu\n", auth_reasons[i],
		    (unsigned long long)atomic_load(&auth_failures[i]));
	if (b.oom) {
		free(b.p);
		return AP_ENOMEM;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* ---- HTTP ----------------------------------------------------------- */

struct ap_metrics_server {
	struct MHD_Daemon *mhd;
	ap_engine *engine;
	int port;
};

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_size, void **con_cls)
{
	ap_metrics_server *ms = cls;
	(void)version;
	(void)upload;
	(void)upload_size;
	(void)con_cls;
	struct MHD_Response *resp;
	unsigned code;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		static const char msg[] = "method not allowed\n";
		resp = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
						       MHD_RESPMEM_PERSISTENT);
		code = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics") != 0) {
		static const char msg[] = "not found: try /metrics\n";
		resp = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
						       MHD_RESPMEM_PERSISTENT);
		code = MHD_HTTP_NOT_FOUND;
	} else {
		ap_engine_stats st;
		if (ms->engine)
			ap_engine_get_stats(ms->engine, &st);
		char *text;
		size_t len;
		if (ap_metrics_render(ms->engine ? &st : NULL, &text, &len) != 0)
			return MHD_NO;
		resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
		if (resp)
			MHD_add_response_header(resp, "Content-Type",
						"text/plain; version=0.0.4; charset=utf-8");
		code = MHD_HTTP_OK;
	}
	if (!resp)
		return MHD_NO;
	enum MHD_Result rc = MHD_queue_response(conn, code, resp);
	MHD_destroy_response(resp);
	return rc;
}

static int parse_listen(const char *listen, struct sockaddr_in *sa, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(listen, ':');
	if (!colon || (size_t)(colon - listen) >= sizeof host) {
		snprintf(err, errlen, "metrics_listen '%s' is not HOST:PORT", listen);
		return AP_EINVAL;
	}
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (*end || port < 0 || port > 65535 ||
	    (strcmp(host, "localhost") == 0 ? inet_pton(AF_INET, "127.0.0.1", &sa->sin_addr)
					     : inet_pton(AF_INET, host, &sa->sin_addr)) != 1) {
		snprintf(err, errlen, "metrics_listen '%s' must be an IPv4 HOST:PORT", listen);
		return AP_EINVAL;
	}
	return 0;
}

int ap_metrics_server_start(ap_metrics_server **out, const char *listen, ap_engine *e,
			    char *err, size_t errlen)
{
	*out = NULL;
	struct sockaddr_in sa;
	int rc = parse_listen(listen, &sa, err, errlen);
	if (rc)
		return rc;
	ap_metrics_server *ms = calloc(1, sizeof *ms);
	if (!ms)
		return AP_ENOMEM;
	ms->engine = e;
	/* AUTO picks epoll (or poll): with the raised descriptor limit a
	 * scrape's socket can be numbered above FD_SETSIZE while thousands of
	 * operators are connected, and MHD's default select() refuses it. */
	ms->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
				   NULL, answer, ms, MHD_OPTION_SOCK_ADDR, &sa,
				   MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
	if (!ms->mhd) {
		snprintf(err, errlen, "cannot serve metrics on %s", listen);
		free(ms);
		return AP_EIO;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(ms->mhd, MHD_DAEMON_INFO_BIND_PORT);
	ms->port = info ? info->port : ntohs(sa.sin_port);
	*out = ms;
	return 0;
}

int ap_metrics_server_port(const ap_metrics_server *ms) { return ms->port; }

void ap_metrics_server_stop(ap_metrics_server *ms)
{
	if (!ms)
		return;
	MHD_stop_daemon(ms->mhd);
	free(ms);
}
