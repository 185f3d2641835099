/* `ap operator [--aggregator HOST:PORT] [--address ADDR] [--key-file FILE]`:
 * run an operator client in the foreground (SPEC section 8; the client
 * itself is src/operator.c).
 *
 * Start: block SIGINT, SIGTERM and SIGHUP and ignore SIGPIPE before gRPC
 * starts a thread, so that only the main thread ever sees them; load the
 * operator config (ap_cli_config_file: --config, else conf/operator.conf,
 * else the installed one, else the built-in defaults) and apply the
 * overrides; open the log; open the operator (key check, channel) and start
 * its threads. Then the main thread waits in sigwaitinfo: SIGHUP reopens
 * the log file, SIGTERM and SIGINT stop the operator (the stream is
 * cancelled at once, in-flight calls end within their deadline) and exit
 * 0. A configuration or key error exits 1 before anything is sent; a bad
 * command line exits 2. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ap/cli.h"
#include "ap/clock.h"
#include "ap/config.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/operator.h"

static int usage(const char *why)
{
	if (why)
		fprintf(stderr, "ap operator: %s\n", why);
	fprintf(stderr, "usage: ap [--config FILE] operator [--aggregator HOST:PORT] "
			"[--address ADDR] [--key-file FILE]\n");
	return AP_EXIT_USAGE;
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]: the value, or NULL when
 * argv[*i] is another option. *missing is set when the value is absent. */
static const char *option_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
	size_t len = strlen(name);
	if (strncmp(argv[*i], name, len) != 0)
		return NULL;
	if (argv[*i][len] == '=')
		return argv[*i] + len + 1;
	if (argv[*i][len] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

int ap_cmd_operator(int argc, char **argv, const ap_cli_global *g)
{
	ap_operator_overrides ov = { 0 };
	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *v;
		if ((v = option_value(argc, argv, &i, "--aggregator", &missing)) != NULL) {
			if (!v[0])
				return usage("--aggregator needs HOST:PORT");
			ov.aggregator = v;
		} else if ((v = option_value(argc, argv, &i, "--address", &missing)) != NULL) {
			if (!ap_config_is_address(v))
				return usage("--address needs 0x followed by 40 hex digits");
			ov.address = v;
		} else if ((v = option_value(argc, argv, &i, "--key-file", &missing)) != NULL) {
			ov.key_file = v;
		} else if (missing) {
			fprintf(stderr, "ap operator: %s needs a value\n", argv[i]);
			return usage(NULL);
		} else {
			fprintf(stderr, "ap operator: unknown argument '%s'\n", argv[i]);
			return usage(NULL);
		}
	}

	/* Before grpc_init and before any thread (see the notes on gRPC). */
	sigset_t set;
	ap_cli_block_signals(&set);

	const char *config_path = ap_cli_config_file(g, "operator.conf");
	char err[1024] = "";
	ap_operator_config cfg;
	int rc = ap_operator_config_load(&cfg, config_path, err, sizeof err);
	if (rc) {
		fprintf(stderr, "ap operator: %s\n", err[0] ? err : ap_strerror(rc));
		ap_operator_config_free(&cfg);
		return AP_EXIT_FAIL;
	}
	rc = ap_log_open((ap_log_level)cfg.log.level, (ap_log_format)cfg.log.format, cfg.log.file,
			 err, sizeof err);
	if (rc) {
		fprintf(stderr, "ap operator: log: %s\n", err[0] ? err : ap_strerror(rc));
		ap_operator_config_free(&cfg);
		return AP_EXIT_FAIL;
	}
	AP_INFO("ap operator starting", AP_F_STR("config",
		config_path ? config_path : "(built-in defaults)"), AP_F_INT("pid", getpid()));

	ap_operator *op = NULL;
	bool log_to_file = cfg.log.file && cfg.log.file[0];
	rc = ap_operator_open(&op, &cfg, &ov, err, sizeof err);
	ap_operator_config_free(&cfg);
	if (rc) {
		/* Also on stderr when logging to a file: the operator did not
		 * start, and whoever started it should see why. */
		AP_ERROR("❌ Operator not started", AP_F_STR("error", err[0] ? err : ap_strerror(rc)));
		if (log_to_file)
			fprintf(stderr, "ap operator: %s\n", err[0] ? err : ap_strerror(rc));
		ap_log_close();
		return AP_EXIT_FAIL;
	}
	if (ap_operator_start(op) != 0) {
		ap_operator_close(op);
		ap_log_close();
		return AP_EXIT_FAIL;
	}

	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&set, &info);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			AP_ERROR("sigwaitinfo failed, stopping", AP_F_STR("error", strerror(errno)));
			break;
		}
		if (sig == SIGHUP) {
			int hrc = ap_log_reopen();
			AP_INFO("SIGHUP: log file reopened", AP_F_STR("result", ap_strerror(hrc)));
			continue;
		}
		AP_INFO("🛑 Received signal, stopping the operator", AP_F_STR("signal", strsignal(sig)),
			AP_F_INT("sender_pid", info.si_pid));
		break;
	}
	int64_t t0 = ap_clock_mono_ms();
	ap_operator_stop(op);
	ap_operator_close(op);
	AP_INFO("👋 Operator stopped", AP_F_INT("stop_ms", ap_clock_mono_ms() - t0));
	ap_log_close();
	return AP_EXIT_OK;
}
