/* ap_stress_run: the phases of a stress run (include/ap/stress.h).
 *
 *   1. setup     spawn the daemon (or use --target/--admin), open the admin
 *                channel, create the initial tasks, sample the daemon
 *                ("before connecting");
 *   2. connect   every operator opens one session; wait for quiescence;
 *                sample ("connected, before");
 *   3. storm     the operators flap for duration_ms while this thread runs
 *                the admin churn and the progress line;
 *   4. settle    the operators stop flapping and hold one session each;
 *                wait for quiescence, take the snapshot and the admin lists,
 *                run the checker; sample ("connected, after") and compare
 *                with 2 (the same number of live sessions);
 *   5. close     every session and channel closed; wait for the daemon to
 *                let go of them; sample ("all sessions closed") and compare
 *                threads and fds with 1; stop a spawned daemon (exit 0).
 *
 * Quiescence (stress_settle.c): every operator holds exactly one accepted
 * session, no stream event (message, open, end) for quiet_ms, ListOperators
 * lists every operator connected and ready, and still no event for quiet_ms
 * after the snapshot and the lists were taken, so they describe one moment.
 * Bounded by settle_timeout_ms; missing it is a violation, and the checks
 * then run on the last state seen.
 *
 * The resource bounds are the options' slacks: threads and fds may exceed
 * the baseline by thread_slack and fd_slack in both comparisons; RSS is
 * compared at the same number of live sessions (2 vs 4) only, with
 * rss_slack_kb, because after the sessions close freed stacks and malloc
 * arenas stay in the process and RSS does not fall back to "before
 * connecting". */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ap/cli.h"
#include "ap/clock.h"
#include "ap/error.h"
#include "stress_int.h"

#define ADMIN_TIMEOUT_MS 15000
#define RESOURCE_WAIT_MS 15000

void st_sleep_ms(int64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

void ap_stress_options_init(ap_stress_options *o)
{
	memset(o, 0, sizeof *o);
	o->operators = 100;
	o->duration_ms = 10000;
	o->threads = 2;
	o->tasks = -1;
	o->stabilization_ms = 100;
	o->hold_min_ms = 100;
	o->hold_max_ms = 1000;
	o->share_clean = 40;
	o->share_crash = 40;
	o->share_dup = 20;
	o->early_pct = 20;
	o->clock_newer = 40;
	o->clock_same = 30;
	o->clock_older = 30;
	o->task_ops_per_s = 20;
	o->max_rate = 400;
	o->seed = 1;
	o->quiet_ms = 500;
	o->settle_timeout_ms = 60000;
	o->thread_slack = 8;
	o->fd_slack = 8;
	o->rss_slack_kb = 64 * 1024;
	o->progress = true;
	o->debug_drop_operator = -1;
}

static volatile sig_atomic_t interrupted;

bool st_daemon_gone(st_run *R)
{
	if (R->spawned)
		return !st_daemon_alive(&R->daemon);
	return R->pid > 0 && kill(R->pid, 0) != 0 && errno == ESRCH;
}

bool st_interrupted(void)
{
	return interrupted != 0;
}

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

void st_run_violation(st_run *R, ap_stress_inv inv, const char *fmt, ...)
{
	char text[AP_STRESS_EXAMPLE_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&R->vlock);
	ap_stress_violation(&R->r->verdict, inv, "%s", text);
	pthread_mutex_unlock(&R->vlock);
	atomic_fetch_add(&R->c.violations, 1);
}

static void sample(st_run *R, ap_stress_proc *p)
{
	if (R->pid > 0 && ap_stress_proc_sample(R->pid, p) != 0)
		st_run_violation(R, AP_STRESS_INV_DAEMON, "daemon %d cannot be sampled (gone?)",
				 (int)R->pid);
	p->client_conns = st_own_connections(R->target);
}

static void progress(st_run *R, int64_t t0, uint64_t *last_reconnects, bool final)
{
	if (!R->o->progress || !isatty(STDERR_FILENO))
		return;
	uint64_t rc = atomic_load(&R->c.reconnects);
	fprintf(stderr, "\r%6.1f s  operators %d/%d connected  reconnects %llu (%llu/s)  "
		"violations %llu   ", (double)(ap_clock_mono_ms() - t0) / 1000.0,
		atomic_load(&R->c.connected), R->o->operators, (unsigned long long)rc,
		(unsigned long long)(rc - *last_reconnects),
		(unsigned long long)atomic_load(&R->c.violations));
	*last_reconnects = rc;
	if (final)
		fputc('\n', stderr);
	fflush(stderr);
}

/* The storm: churn and progress on this thread until the duration ends. */
static void storm(st_run *R)
{
	const ap_stress_options *o = R->o;
	int64_t t0 = ap_clock_mono_ms(), end = t0 + o->duration_ms;
	int64_t churn_every_us = o->task_ops_per_s > 0 ? (int64_t)(1e6 / o->task_ops_per_s) : 0;
	int64_t next_churn_us = t0 * 1000, next_progress = t0 + 1000;
	uint64_t last_rc = 0;

	st_fleet_set_phase(R->fleet, ST_PHASE_STORM);
	while (!interrupted) {
		int64_t now = ap_clock_mono_ms();
		if (now >= end)
			break;
		if (churn_every_us && now * 1000 >= next_churn_us) {
			st_churn_one(R);
			next_churn_us += churn_every_us;
			if (next_churn_us < now * 1000 - 1000000)
				next_churn_us = now * 1000; /* fell behind: do not burst */
		}
		if (now >= next_progress) {
			progress(R, t0, &last_rc, false);
			next_progress += 1000;
		}
		int64_t wake = next_progress < end ? next_progress : end;
		if (churn_every_us && next_churn_us / 1000 < wake)
			wake = next_churn_us / 1000;
		if (wake > now)
			st_sleep_ms(wake - now);
	}
	progress(R, t0, &last_rc, true);
	R->r->storm_s = (double)(ap_clock_mono_ms() - t0) / 1000.0;
}

static int count_connected(const Aggregator__ListOperatorsResp *ops)
{
	int n = 0;
	for (size_t i = 0; i < ops->n_operators; i++)
		n += ops->operators[i]->connected;
	return n;
}

/* Sample the daemon until its threads and fds are within the slack of
 * base (the server closes connections and ends session threads a little
 * after the client goes), at most timeout_ms; *out is the last sample. */
static void wait_resources(st_run *R, const ap_stress_proc *base, ap_stress_proc *out,
			   int64_t timeout_ms)
{
	int64_t deadline = ap_clock_mono_ms() + timeout_ms;
	memset(out, 0, sizeof *out);
	if (R->pid <= 0)
		return;
	for (;;) {
		if (ap_stress_proc_sample(R->pid, out) != 0) {
			st_run_violation(R, AP_STRESS_INV_DAEMON,
					 "daemon %d cannot be sampled (gone?)", (int)R->pid);
			return;
		}
		out->client_conns = st_own_connections(R->target);
		if (ap_stress_resources_within(base, out, R->o->thread_slack, R->o->fd_slack) ||
		    ap_clock_mono_ms() > deadline || interrupted)
			return;
		st_sleep_ms(50);
	}
}

/* Wait for the daemon to let go of the closed sessions: no more operators
 * listed connected than before ours came. */
static void wait_released(st_run *R)
{
	int64_t deadline = ap_clock_mono_ms() + RESOURCE_WAIT_MS;
	while (ap_clock_mono_ms() < deadline && !interrupted) {
		Aggregator__ListOperatorsResp *ops = NULL;
		ap_rpc_status st;
		int connected = -1;
		if (ap_client_list_operators(R->admin, &ops, &R->aco, &st) == 0 && st.code == AP_RPC_OK)
			connected = count_connected(ops);
		ap_client_free(ops);
		if (connected >= 0 && connected <= R->connected_at_start)
			return;
		st_sleep_ms(50);
	}
}

#define LOAD(x) atomic_load_explicit(&R->c.x, memory_order_relaxed)

static void copy_counters(st_run *R)
{
	ap_stress_report *r = R->r;
	r->sessions_opened = LOAD(sessions_opened);
	r->reconnects = LOAD(reconnects);
	r->clean_closes = LOAD(clean_closes);
	r->crashes = LOAD(crashes);
	r->dup_sessions = LOAD(dup_sessions);
	r->early_closes = LOAD(early_closes);
	r->rate_deferred = LOAD(rate_deferred);
	r->clock_newer = LOAD(clock_newer);
	r->clock_same = LOAD(clock_same);
	r->clock_older = LOAD(clock_older);
	r->superseded = LOAD(superseded);
	r->stale_supersedes = LOAD(stale_supersedes);
	r->tasks_moved = LOAD(tasks_moved);
	r->messages = LOAD(messages);
	r->duplicate_deliveries = LOAD(duplicate_deliveries);
}

/* Phases 2 to 4 (see the top of the file), once the admin service works. */
static void run_phases(st_run *R)
{
	const ap_stress_options *o = R->o;
	ap_stress_report *r = R->r;
	ap_stress_verdict *v = &r->verdict;
	st_snapshot snap = { 0 };
	double took;

	if (!st_settle(R, &snap, &took))
		st_run_violation(R, AP_STRESS_INV_QUIESCENCE,
			"the first connects did not settle within %lld ms (%zu of %zu operators "
			"hold one accepted session)", (long long)o->settle_timeout_ms,
			snap.with_one_session, snap.n_sims);
	sample(R, &r->connected_before);

	storm(R);
	uint64_t storm_reconnects = LOAD(reconnects);
	r->reconnects_per_s = r->storm_s > 0 ? (double)storm_reconnects / r->storm_s : 0;
	if (R->pid > 0) {
		ap_stress_proc p;
		if (ap_stress_proc_sample(R->pid, &p) == 0)
			r->daemon_cpu_ms = p.cpu_ms - r->connected_before.cpu_ms;
	}
	if (st_daemon_gone(R)) {
		if (R->spawned) {
			st_daemon_log_tail(&R->daemon, 40);
			st_run_violation(R, AP_STRESS_INV_DAEMON, "the daemon died during the storm "
					 "(wait status 0x%x)", (unsigned)R->daemon.wait_status);
		} else {
			st_run_violation(R, AP_STRESS_INV_DAEMON, "the daemon (pid %ld) exited during "
					 "the storm", (long)R->pid);
		}
		goto out;
	}

	st_fleet_set_phase(R->fleet, ST_PHASE_SETTLE);
	bool quiet = st_settle(R, &snap, &r->settle_s);
	v->r[AP_STRESS_INV_QUIESCENCE].checked = true;
	v->r[AP_STRESS_INV_QUIESCENCE].items = 2;
	if (!quiet)
		st_run_violation(R, AP_STRESS_INV_QUIESCENCE,
			"no quiescence within %lld ms after the storm (%zu of %zu operators hold "
			"one accepted session)%s", (long long)o->settle_timeout_ms,
			snap.with_one_session, snap.n_sims, interrupted ? "; interrupted" : "");
	if (snap.sims && R->ops)
		st_check(R, &snap);
	wait_resources(R, &r->connected_before, &r->connected_after, RESOURCE_WAIT_MS);
	if (R->pid > 0) {
		char note[AP_STRESS_EXAMPLE_LEN];
		pthread_mutex_lock(&R->vlock);
		ap_stress_check_resources("connected, after vs before the storm",
					  &r->connected_before, &r->connected_after,
					  o->thread_slack, o->fd_slack, o->rss_slack_kb, v);
		pthread_mutex_unlock(&R->vlock);
		char rss[48] = "RSS not checked";
		if (o->rss_slack_kb >= 0)
			snprintf(rss, sizeof rss, "RSS +%lld MB", (long long)(o->rss_slack_kb / 1024));
		snprintf(note, sizeof note, "bounds: threads +%d, fds +%d, %s at %d sessions; "
			 "threads +%d, fds +%d once all closed", o->thread_slack, o->fd_slack, rss,
			 o->operators, o->thread_slack, o->fd_slack);
		memcpy(v->r[AP_STRESS_INV_RESOURCES].note, note, sizeof note);
	}
out:
	st_snapshot_free(&snap);
}

int ap_stress_run(const ap_stress_options *o, ap_stress_report *out, char *err, size_t errlen)
{
	st_run run = { 0 }, *R = &run;
	ap_stress_verdict *v = &out->verdict;
	struct sigaction sa, old_int, old_term;
	int rc = 0;

	memset(out, 0, sizeof *out);
	ap_stress_verdict_init(v);
	R->o = o;
	R->r = out;
	R->rng = o->seed * 0x9E3779B97F4A7C15ULL + 12345;
	pthread_mutex_init(&R->vlock, NULL);
	out->operators = o->operators;
	out->threads = o->threads;
	out->duration_ms = o->duration_ms;
	out->stabilization_ms = o->stabilization_ms;
	out->seed = o->seed;
	out->max_rate = o->max_rate;
	out->tasks_initial = o->tasks >= 0 ? o->tasks : 10 * o->operators;

	interrupted = 0;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	signal(SIGPIPE, SIG_IGN);
	ap_cli_raise_fd_limit();
	ap_client_init();

	if (o->spawn) {
		rc = st_daemon_start(&R->daemon, o, err, errlen);
		if (rc)
			goto out;
		R->spawned = true;
		R->target = R->daemon.target;
		R->admin_target = R->daemon.admin_target;
		R->pid = R->daemon.pid;
	} else {
		R->target = o->target;
		R->admin_target = o->admin;
		R->pid = o->daemon_pid;
	}
	snprintf(out->target, sizeof out->target, "%.127s", R->target);
	out->spawned = R->spawned;
	out->have_daemon = R->pid > 0;

	rc = ap_client_open(R->admin_target, NULL, &R->admin, err, errlen);
	if (rc)
		goto out;
	R->aco.timeout_ms = ADMIN_TIMEOUT_MS;
	R->aco.wait_for_ready = true;
	if (o->admin_token && *o->admin_token) {
		snprintf(R->bearer, sizeof R->bearer, "Bearer %s", o->admin_token);
		R->amd = (ap_rpc_metadata){ "authorization", R->bearer };
		R->aco.metadata = &R->amd;
		R->aco.n_metadata = 1;
	}
	Aggregator__ListOperatorsResp *ops = NULL;
	ap_rpc_status st = { 0 };
	rc = ap_client_list_operators(R->admin, &ops, &R->aco, &st);
	if (rc == 0 && st.code != AP_RPC_OK)
		rc = AP_EIO;
	if (rc) {
		snprintf(err, errlen, "the admin service at %s does not answer: %s %s",
			 R->admin_target, rc == AP_EIO ? ap_rpc_code_name(st.code) : ap_strerror(rc),
			 rc == AP_EIO ? st.details : "");
		goto out;
	}
	R->connected_at_start = count_connected(ops);
	ap_client_free(ops);
	rc = st_create_tasks(R, out->tasks_initial, err, errlen);
	if (rc)
		goto out;
	sample(R, &out->before_connect);

	st_fleet_config cfg = { o, R->target, &R->c, v, &R->vlock };
	rc = st_fleet_start(&cfg, &R->fleet, err, errlen);
	if (rc)
		goto out;
	run_phases(R);
	copy_counters(R);
	st_fleet_stop(R->fleet, &out->first_task, &out->failover);
	R->fleet = NULL;
	if (R->pid > 0 && !st_daemon_gone(R)) {
		wait_released(R);
		wait_resources(R, &out->before_connect, &out->after_close, RESOURCE_WAIT_MS);
		pthread_mutex_lock(&R->vlock);
		ap_stress_check_resources("all sessions closed vs before connecting",
					  &out->before_connect, &out->after_close,
					  o->thread_slack, o->fd_slack, -1, v);
		pthread_mutex_unlock(&R->vlock);
	}
	if (!R->spawned && !o->keep && !st_daemon_gone(R))
		st_delete_mine(R);

	v->r[AP_STRESS_INV_STATUSES].checked = true;
	v->r[AP_STRESS_INV_STATUSES].items = out->sessions_opened + out->admin_created +
		out->admin_disabled + out->admin_enabled + out->admin_deleted;
	v->r[AP_STRESS_INV_STABILIZATION].checked = o->stabilization_ms >= 0 ||
		v->r[AP_STRESS_INV_STABILIZATION].violations;
	v->r[AP_STRESS_INV_STABILIZATION].items = out->sessions_opened;
	if (R->spawned) {
		v->r[AP_STRESS_INV_DAEMON].checked = true;
		v->r[AP_STRESS_INV_DAEMON].items = 1;
		if (R->daemon.pid > 0) {
			int ws = st_daemon_stop(&R->daemon, 30000);
			if (ws == -1 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
				st_daemon_log_tail(&R->daemon, 40);
				st_run_violation(R, AP_STRESS_INV_DAEMON,
					"the daemon did not exit 0 on SIGTERM (wait status %d)", ws);
			}
		}
	} else if (R->pid > 0) {
		v->r[AP_STRESS_INV_DAEMON].checked = true;
		v->r[AP_STRESS_INV_DAEMON].items = 1;
		if (kill(R->pid, 0) != 0 && errno == ESRCH)
			st_run_violation(R, AP_STRESS_INV_DAEMON, "daemon %d is gone", (int)R->pid);
	}
out:
	st_fleet_stop(R->fleet, NULL, NULL);
	st_admin_lists_free(R);
	ap_client_close(R->admin);
	free(R->mine);
	if (R->daemon.dir[0]) {
		bool keep = o->keep || rc != 0 || ap_stress_violations(v) > 0;
		if (keep)
			snprintf(out->daemon_dir, sizeof out->daemon_dir, "%.127s", R->daemon.dir);
		st_daemon_destroy(&R->daemon, keep);
	}
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		out->harness_rss_kb = ru.ru_maxrss;
		out->harness_cpu_ms = (int64_t)ru.ru_utime.tv_sec * 1000 + ru.ru_utime.tv_usec / 1000 +
				      (int64_t)ru.ru_stime.tv_sec * 1000 + ru.ru_stime.tv_usec / 1000;
	}
	ap_client_shutdown();
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	pthread_mutex_destroy(&R->vlock);
	return rc;
}
