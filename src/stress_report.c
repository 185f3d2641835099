/* The report of `ap stress`: latency percentiles, the end-of-run table
 * and the JSON object. Pure formatting; no state. */
#include <stdlib.h>
#include <string.h>

#include "ap/error.h"
#include "ap/stress.h"

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p of them at or below. */
static double rank_ms(const int64_t *v, size_t n, double p)
{
	size_t k = (size_t)(p * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return (double)v[k - 1] / 1e6;
}

ap_stress_latency ap_stress_latency_of(int64_t *ns, size_t n)
{
	ap_stress_latency l = { 0 };
	if (!ns || n == 0)
		return l;
	qsort(ns, n, sizeof *ns, cmp_i64);
	l.count = n;
	l.p50 = rank_ms(ns, n, 0.50);
	l.p90 = rank_ms(ns, n, 0.90);
	l.p99 = rank_ms(ns, n, 0.99);
	l.max = (double)ns[n - 1] / 1e6;
	return l;
}

static void latency_row(FILE *f, const char *label, const ap_stress_latency *l)
{
	if (!l->count) {
		fprintf(f, "    %-22s %7s %8s %8s %8s %8s\n", label, "0", "-", "-", "-", "-");
		return;
	}
	fprintf(f, "    %-22s %7llu %8.2f %8.2f %8.2f %8.2f\n", label,
		(unsigned long long)l->count, l->p50, l->p90, l->p99, l->max);
}

static void proc_row(FILE *f, const char *label, const ap_stress_proc *p)
{
	fprintf(f, "    %-22s %7d %8d %8.1f %8d\n", label, p->threads, p->fds,
		(double)p->rss_kb / 1024.0, p->client_conns);
}

int ap_stress_print_table(FILE *f, const ap_stress_report *r)
{
	const ap_stress_verdict *v = &r->verdict;
	uint64_t total = ap_stress_violations(v);

	fprintf(f, "ap stress: %d operators on %d threads, %.1f s storm against %s%s, seed %llu\n",
		r->operators, r->threads, r->storm_s, r->target,
		r->spawned ? " (spawned)" : "", (unsigned long long)r->seed);
	fprintf(f, "  %-24s %llu (%.1f/s), %llu sessions opened\n", "reconnects",
		(unsigned long long)r->reconnects, r->reconnects_per_s,
		(unsigned long long)r->sessions_opened);
	fprintf(f, "  %-24s clean %llu, crash %llu, second session %llu, early %llu\n",
		"actions", (unsigned long long)r->clean_closes, (unsigned long long)r->crashes,
		(unsigned long long)r->dup_sessions, (unsigned long long)r->early_closes);
	if (r->rate_deferred)
		fprintf(f, "  %-24s %llu (--max-rate %.0f/s)\n", "actions put off",
			(unsigned long long)r->rate_deferred, r->max_rate);
	fprintf(f, "  %-24s newer %llu, same %llu, older %llu\n", "reconnect clocks",
		(unsigned long long)r->clock_newer, (unsigned long long)r->clock_same,
		(unsigned long long)r->clock_older);
	fprintf(f, "  %-24s %llu (%llu by a late request of a session given up)\n",
		"sessions superseded", (unsigned long long)r->superseded,
		(unsigned long long)r->stale_supersedes);
	fprintf(f, "  %-24s %llu\n", "tasks moved", (unsigned long long)r->tasks_moved);
	fprintf(f, "  %-24s %llu (%llu re-sent on the same session)\n", "messages",
		(unsigned long long)r->messages, (unsigned long long)r->duplicate_deliveries);
	fprintf(f, "  %-24s created %llu, disabled %llu, enabled %llu, deleted %llu\n",
		"admin during the storm", (unsigned long long)r->admin_created,
		(unsigned long long)r->admin_disabled, (unsigned long long)r->admin_enabled,
		(unsigned long long)r->admin_deleted);
	fprintf(f, "  latency (ms)%15s %7s %8s %8s %8s %8s\n", "", "count", "p50", "p90", "p99", "max");
	latency_row(f, "reconnect->first task", &r->first_task);
	latency_row(f, "crash->new owner", &r->failover);
	fprintf(f, "  %-24s %.2f s; %zu tasks, %zu enabled, %zu owned\n", "settled in",
		r->settle_s, r->final_tasks, r->final_enabled, r->final_owned);
	if (r->have_daemon) {
		fprintf(f, "  daemon%21s %7s %8s %8s %8s  (cpu %.1f s in the storm)\n", "",
			"threads", "fds", "RSS MB", "ours", (double)r->daemon_cpu_ms / 1000.0);
		proc_row(f, "before connecting", &r->before_connect);
		proc_row(f, "connected, before", &r->connected_before);
		proc_row(f, "connected, after", &r->connected_after);
		proc_row(f, "all sessions closed", &r->after_close);
	} else {
		fprintf(f, "  %-24s not sampled (no --daemon-pid)\n", "daemon");
	}
	fprintf(f, "  %-24s RSS %.1f MB peak, cpu %.1f s\n", "harness",
		(double)r->harness_rss_kb / 1024.0, (double)r->harness_cpu_ms / 1000.0);
	fprintf(f, "  %-24s %9s %11s\n", "invariant", "checked", "violations");
	for (int i = 0; i < AP_STRESS_N_INV; i++) {
		const ap_stress_result *res = &v->r[i];
		if (!res->checked) {
			fprintf(f, "    %-22s %9s %11s\n", ap_stress_inv_name(i), "-", "n/a");
			continue;
		}
		fprintf(f, "    %-22s %9llu %11llu%s\n", ap_stress_inv_name(i),
			(unsigned long long)res->items, (unsigned long long)res->violations,
			res->violations ? "  FAIL" : "");
		if (res->note[0])
			fprintf(f, "      (%s)\n", res->note);
		for (uint64_t k = 0; k < res->violations && k < AP_STRESS_EXAMPLES; k++)
			if (res->examples[k][0])
				fprintf(f, "      - %s\n", res->examples[k]);
	}
	if (r->daemon_dir[0])
		fprintf(f, "  daemon dir kept: %s\n", r->daemon_dir);
	if (total)
		fprintf(f, "RESULT: FAIL, %llu violations\n", (unsigned long long)total);
	else
		fprintf(f, "RESULT: PASS, every invariant holds\n");
	return ferror(f) ? AP_EIO : 0;
}

/* ---- JSON --------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void json_latency(FILE *f, const char *key, const ap_stress_latency *l)
{
	fprintf(f, "\"%s\":{\"count\":%llu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}",
		key, (unsigned long long)l->count, l->p50, l->p90, l->p99, l->max);
}

static void json_proc(FILE *f, const char *key, const ap_stress_proc *p)
{
	fprintf(f, "\"%s\":{\"threads\":%d,\"fds\":%d,\"rss_kb\":%lld,\"client_conns\":%d}",
		key, p->threads, p->fds, (long long)p->rss_kb, p->client_conns);
}

#define U(x) ((unsigned long long)(x))

int ap_stress_print_json(FILE *f, const ap_stress_report *r)
{
	const ap_stress_verdict *v = &r->verdict;
	uint64_t total = ap_stress_violations(v);

	fputs("{\"target\":", f);
	json_str(f, r->target);
	fprintf(f, ",\"spawned\":%s,\"operators\":%d,\"threads\":%d,\"tasks_initial\":%d,"
		"\"duration_ms\":%lld,\"stabilization_ms\":%lld,\"max_rate\":%.1f,\"seed\":%llu,"
		"\"storm_s\":%.3f,",
		r->spawned ? "true" : "false", r->operators, r->threads, r->tasks_initial,
		(long long)r->duration_ms, (long long)r->stabilization_ms, r->max_rate, U(r->seed),
		r->storm_s);
	fprintf(f, "\"reconnects\":%llu,\"reconnects_per_s\":%.2f,\"sessions_opened\":%llu,"
		"\"clean_closes\":%llu,\"crashes\":%llu,\"dup_sessions\":%llu,\"early_closes\":%llu,\"rate_deferred\":%llu,"
		"\"clocks\":{\"newer\":%llu,\"same\":%llu,\"older\":%llu},"
		"\"superseded\":%llu,\"stale_supersedes\":%llu,\"tasks_moved\":%llu,\"messages\":%llu,"
		"\"duplicate_deliveries\":%llu,",
		U(r->reconnects), r->reconnects_per_s, U(r->sessions_opened), U(r->clean_closes),
		U(r->crashes), U(r->dup_sessions), U(r->early_closes), U(r->rate_deferred),
		U(r->clock_newer),
		U(r->clock_same), U(r->clock_older), U(r->superseded), U(r->stale_supersedes),
		U(r->tasks_moved),
		U(r->messages), U(r->duplicate_deliveries));
	fprintf(f, "\"admin\":{\"created\":%llu,\"disabled\":%llu,\"enabled\":%llu,\"deleted\":%llu},",
		U(r->admin_created), U(r->admin_disabled), U(r->admin_enabled), U(r->admin_deleted));
	fputs("\"latency_ms\":{", f);
	json_latency(f, "reconnect_to_first_task", &r->first_task);
	fputc(',', f);
	json_latency(f, "kill_to_new_owner", &r->failover);
	fprintf(f, "},\"settle_s\":%.3f,\"tasks\":{\"total\":%zu,\"enabled\":%zu,\"owned\":%zu},",
		r->settle_s, r->final_tasks, r->final_enabled, r->final_owned);
	fputs("\"daemon\":", f);
	if (r->have_daemon) {
		fputc('{', f);
		json_proc(f, "before_connect", &r->before_connect);
		fputc(',', f);
		json_proc(f, "connected_before", &r->connected_before);
		fputc(',', f);
		json_proc(f, "connected_after", &r->connected_after);
		fputc(',', f);
		json_proc(f, "after_close", &r->after_close);
		fprintf(f, ",\"storm_cpu_ms\":%lld}", (long long)r->daemon_cpu_ms);
	} else {
		fputs("null", f);
	}
	fprintf(f, ",\"harness\":{\"rss_kb\":%lld,\"cpu_ms\":%lld}", (long long)r->harness_rss_kb,
		(long long)r->harness_cpu_ms);
	fputs(",\"invariants\":{", f);
	for (int i = 0; i < AP_STRESS_N_INV; i++) {
		const ap_stress_result *res = &v->r[i];
		fprintf(f, "%s\"%s\":{\"checked\":%s,\"items\":%llu,\"violations\":%llu,\"examples\":[",
			i ? "," : "", ap_stress_inv_name(i), res->checked ? "true" : "false",
			U(res->items), U(res->violations));
		bool first = true;
		for (uint64_t k = 0; k < res->violations && k < AP_STRESS_EXAMPLES; k++) {
			if (!res->examples[k][0])
				continue;
			if (!first)
				fputc(',', f);
			json_str(f, res->examples[k]);
			first = false;
		}
		fputs("],\"note\":", f);
		json_str(f, res->note);
		fputc('}', f);
	}
	fputs("},\"daemon_dir\":", f);
	json_str(f, r->daemon_dir);
	fprintf(f, ",\"violations\":%llu,\"passed\":%s}\n", U(total), total ? "false" : "true");
	return ferror(f) ? AP_EIO : 0;
}
