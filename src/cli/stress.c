/* `ap stress`: the rapid-reconnect harness (SPEC section 8). The options
 * are described by the usage text in src/cli/cli.c; the harness itself is
 * include/ap/stress.h.
 *
 * Where the aggregator is: --spawn starts one in a temp dir; --target and
 * --admin name a running one; with neither, the configuration (global
 * --config, else conf/aggregator.conf, else the installed one) gives
 * listen, admin_listen, admin.token, operators.stabilization_ms and the
 * auth mode, with a wildcard listen host (0.0.0.0, [::]) read as loopback.
 *
 * Exit codes: 0 every invariant held; 1 a violation, or the run could not
 * be made; 2 usage. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap/cli.h"
#include "ap/config.h"
#include "ap/error.h"
#include "ap/stress.h"

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ap stress: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: ap [--config FILE] stress [--spawn | --target HOST:PORT "
			"--admin ADDR] [OPTIONS] (see ap stress --help)\n");
	return AP_EXIT_USAGE;
}

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	if (!s || !*s)
		return false;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_seconds(const char *s, int64_t *ms)
{
	char *end;
	if (!s || !*s)
		return false;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || !(v > 0) || v > 86400.0 * 365)
		return false;
	*ms = (int64_t)(v * 1000.0 + 0.5);
	return *ms > 0;
}

/* Integer options: name, lower and upper bound, where it goes. */
typedef struct int_opt {
	const char *name;
	int64_t lo, hi;
	int kind; /* 0 int, 1 int64, 2 unsigned, 3 MB -> kB (negative: off) */
	void *dst;
} int_opt;

/* A wildcard listen address ("0.0.0.0:2206", "[::]:2206") as a target. */
static void loopback_target(const char *listen, char *out, size_t len)
{
	const char *colon = strrchr(listen, ':');
	if (strncmp(listen, "0.0.0.0:", 8) == 0 && colon)
		snprintf(out, len, "127.0.0.1%s", colon);
	else if (strncmp(listen, "[::]:", 5) == 0 && colon)
		snprintf(out, len, "[::1]%s", colon);
	else
		snprintf(out, len, "%s", listen);
}

int ap_cmd_stress(int argc, char **argv, const ap_cli_global *g)
{
	ap_stress_options o;
	ap_stress_options_init(&o);
	bool stab_given = false;
	int64_t debug_drop = -1;
	char target_buf[256], err[512];

	const int_opt ints[] = {
		{ "--operators", 1, 100000, 0, &o.operators },
		{ "--threads", 1, 64, 0, &o.threads },
		{ "--tasks", 0, 10000000, 0, &o.tasks },
		{ "--stabilization-ms", 0, 3600000, 1, &o.stabilization_ms },
		{ "--hold-min-ms", 0, 3600000, 1, &o.hold_min_ms },
		{ "--hold-max-ms", 0, 3600000, 1, &o.hold_max_ms },
		{ "--clean", 0, 100, 2, &o.share_clean },
		{ "--crash", 0, 100, 2, &o.share_crash },
		{ "--dup", 0, 100, 2, &o.share_dup },
		{ "--early", 0, 100, 2, &o.early_pct },
		{ "--clock-newer", 0, 100, 2, &o.clock_newer },
		{ "--clock-same", 0, 100, 2, &o.clock_same },
		{ "--clock-older", 0, 100, 2, &o.clock_older },
		{ "--quiet-ms", 50, 600000, 1, &o.quiet_ms },
		{ "--thread-slack", 0, 1000000, 0, &o.thread_slack },
		{ "--fd-slack", 0, 1000000, 0, &o.fd_slack },
		{ "--rss-slack-mb", -1, 1000000, 3, &o.rss_slack_kb },
		{ "--daemon-pid", 1, INT32_MAX, 0, &o.daemon_pid },
		{ "--debug-drop-operator", 0, 100000, 1, &debug_drop },
	};

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		bool done = false;
		for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !done; k++) {
			const int_opt *io = &ints[k];
			if (strcmp(a, io->name) != 0)
				continue;
			int64_t v;
			if (!parse_i64(val, io->lo, io->hi, &v)) {
				fprintf(stderr, "ap stress: %s needs a number from %lld to %lld\n",
					io->name, (long long)io->lo, (long long)io->hi);
				return usage("bad value for %s", io->name);
			}
			switch (io->kind) {
			case 0: *(int *)io->dst = (int)v; break;
			case 1: *(int64_t *)io->dst = v; break;
			case 2: *(unsigned *)io->dst = (unsigned)v; break;
			default: *(int64_t *)io->dst = v < 0 ? -1 : v * 1024; break;
			}
			stab_given |= io->dst == &o.stabilization_ms;
			i++;
			done = true;
		}
		if (done)
			continue;
		if (strcmp(a, "--spawn") == 0) {
			o.spawn = true;
		} else if (strcmp(a, "--auth") == 0) {
			o.auth = true;
		} else if (strcmp(a, "--keep") == 0) {
			o.keep = true;
		} else if (strcmp(a, "--json") == 0) {
			o.json = true;
		} else if (strcmp(a, "--no-progress") == 0) {
			o.progress = false;
		} else if (strcmp(a, "--target") == 0 || strcmp(a, "--admin") == 0 ||
			   strcmp(a, "--admin-token") == 0 || strcmp(a, "--ap") == 0) {
			if (!val || !*val)
				return usage("%s needs a value", a);
			if (strcmp(a, "--target") == 0)
				o.target = val;
			else if (strcmp(a, "--admin") == 0)
				o.admin = val;
			else if (strcmp(a, "--ap") == 0)
				o.ap_path = val;
			else
				o.admin_token = val;
			i++;
		} else if (strcmp(a, "--duration") == 0 || strcmp(a, "--settle-timeout") == 0) {
			int64_t *dst = strcmp(a, "--duration") == 0 ? &o.duration_ms
								     : &o.settle_timeout_ms;
			if (!parse_seconds(val, dst))
				return usage("%s needs a positive number of seconds", a);
			i++;
		} else if (strcmp(a, "--task-ops") == 0 || strcmp(a, "--max-rate") == 0) {
			double *dst = a[2] == 't' ? &o.task_ops_per_s : &o.max_rate;
			char *end;
			*dst = val ? strtod(val, &end) : -1;
			if (!val || !*val || *end || !(*dst >= 0) || *dst > 1000000)
				return usage("%s needs a rate from 0 to 1000000 per second", a);
			i++;
		} else if (strcmp(a, "--seed") == 0) {
			char *end;
			errno = 0;
			o.seed = val ? strtoull(val, &end, 10) : 0;
			if (!val || !*val || *end || errno)
				return usage("%s needs a number", a);
			i++;
		} else {
			return usage("unknown option '%s'", a);
		}
	}
	o.debug_drop_operator = (int)debug_drop;
	if (o.hold_min_ms > o.hold_max_ms)
		return usage("--hold-min-ms exceeds --hold-max-ms");
	if (o.share_clean + o.share_crash + o.share_dup == 0)
		return usage("--clean, --crash and --dup are all 0");
	if (o.spawn && (o.target || o.admin))
		return usage("--spawn starts its own aggregator: no --target or --admin");
	if (!o.spawn && o.ap_path)
		return usage("--ap goes with --spawn");
	if (!o.spawn && (!o.target) != (!o.admin))
		return usage("--target and --admin go together");

	ap_config cfg = { 0 };
	bool have_cfg = false;
	if (!o.spawn && !o.target) {
		const char *path = ap_cli_config_file(g, "aggregator.conf");
		if (ap_config_load(&cfg, path, err, sizeof err) != 0) {
			fprintf(stderr, "ap stress: %s\n", err);
			ap_config_free(&cfg);
			return AP_EXIT_FAIL;
		}
		have_cfg = true;
		loopback_target(cfg.listen, target_buf, sizeof target_buf);
		o.target = target_buf;
		o.admin = cfg.admin_listen;
		if (cfg.admin.token && *cfg.admin.token)
			o.admin_token = cfg.admin.token;
		if (!stab_given)
			o.stabilization_ms = cfg.operators.stabilization_ms;
		stab_given = true;
		o.auth |= cfg.auth.mode == AP_AUTH_SIGNATURE;
	}
	if (!o.spawn && !stab_given)
		o.stabilization_ms = -1; /* unknown: no early-send check */
	if (o.debug_drop_operator >= o.operators)
		o.debug_drop_operator = -1;

	ap_stress_report *r = calloc(1, sizeof *r);
	if (!r) {
		ap_config_free(&cfg);
		return AP_EXIT_FAIL;
	}
	int rc = ap_stress_run(&o, r, err, sizeof err);
	int exit_code = AP_EXIT_OK;
	if (rc) {
		fprintf(stderr, "ap stress: %s\n", err);
		exit_code = AP_EXIT_FAIL;
	} else {
		int prc = o.json ? ap_stress_print_json(stdout, r) : ap_stress_print_table(stdout, r);
		if (prc || fflush(stdout) != 0) {
			fprintf(stderr, "ap stress: cannot write the report\n");
			exit_code = AP_EXIT_FAIL;
		} else if (ap_stress_violations(&r->verdict) > 0) {
			exit_code = AP_EXIT_FAIL;
		}
	}
	free(r);
	if (have_cfg)
		ap_config_free(&cfg);
	return exit_code;
}
