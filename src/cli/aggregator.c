/* `ap aggregator [--port-file FILE]`: run the daemon in the foreground
 * (SPEC sections 5 and 8).
 *
 * Start: block the signals the daemon waits for (and ignore SIGPIPE) before
 * gRPC or anything else starts a thread, so every thread inherits the mask
 * and only the main thread ever sees them; load the config (see
 * ap_cli_config_file); open the log; open the engine (store with recovery, tasks,
 * assignments, operators); open and start the transport; start the engine;
 * serve metrics; write the port file; tell systemd READY=1 when run under
 * it (libsystemd's sd_notify; WATCHDOG=1 when the unit sets WatchdogSec).
 *
 * Then the main thread waits in sigwaitinfo: SIGHUP reopens the log file,
 * SIGTERM and SIGINT shut down in the order of ap_rpc_server_stop (stop
 * accepting, health NOT_SERVING, every session ends with UNAVAILABLE, the
 * ticker stops, every thread joined), then the store is checkpointed and
 * closed, then gRPC shuts down. Exit 0, or 1 when something failed.
 *
 * The port file holds the bound operator port and a newline. It is written
 * to a temporary name and renamed, so a reader never sees half of it, once
 * the server accepts calls; a clean shutdown removes it. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "ap/cli.h"
#include "ap/config.h"
#include "ap/engine.h"
#include "ap/error.h"
#include "ap/grpc_runtime.h"
#include "ap/log.h"
#include "ap/metrics.h"
#include "ap/rpc.h"
#include "config.h"

/* Descriptors the daemon needs besides its operator streams. */
enum { FD_RESERVE = 256 };

static int usage(void)
{
	fprintf(stderr, "usage: ap [--config FILE] aggregator [--port-file FILE]\n");
	return AP_EXIT_USAGE;
}

static int write_port_file(const char *path, int port)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
		return AP_EINVAL;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return AP_EIO;
	char line[32];
	int n = snprintf(line, sizeof line, "%d\n", port);
	bool ok = write(fd, line, (size_t)n) == n;
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return AP_EIO;
	}
	return 0;
}

/* One daemon per storage directory. A second daemon would open the
 * BerkeleyDB environment with recovery under the first one's feet, which
 * panics the first's environment; so before the store is touched take an
 * exclusive flock on STORAGE/aggregator.lock (held until exit, released by
 * the kernel even after kill -9). `ap status` joins the environment without
 * recovery and does not take this lock. Returns the descriptor or -1 with
 * the reason in err. */
static int lock_storage(const char *dir, char *err, size_t errlen)
{
	char path[4096];
	if (snprintf(path, sizeof path, "%s/aggregator.lock", dir) >= (int)sizeof path) {
		snprintf(err, errlen, "storage.dir is too long");
		return -1;
	}
	/* mkdir -p with mode 0700, as the store itself would. */
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %.900s: %s", path, strerror(errno));
			return -1;
		}
		*p = '/';
	}
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open %.900s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		snprintf(err, errlen, "storage %s is in use by another ap aggregator (pid %s)", dir,
			 pid[0] ? pid : "unknown");
		close(fd);
		return -1;
	}
	char line[32];
	int len = snprintf(line, sizeof line, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len)
		AP_WARN("cannot write the pid into the storage lock", AP_F_STR("path", path));
	return fd;
}

/* A dead listener (see ap_grpc_set_listener_failure_hook) cannot be
 * revived inside gRPC 1.51: operators that drop could never come back. So
 * the daemon shuts down in order and exits 1, and its supervisor
 * (Restart=on-failure in the unit) starts it again with a fresh listener;
 * tasks and assignments are in the store, operators reconnect. kill(2) is
 * async-signal-safe and reaches the main thread's sigwaitinfo. */
static void on_listener_failure(void)
{
	kill(getpid(), SIGTERM);
}

/* sd_notify(3) from libsystemd: a no-op when not run by systemd. */
static void notify_systemd(const char *state)
{
	int rc = sd_notify(0, state);
	if (rc < 0)
		AP_WARN("sd_notify failed", AP_F_STR("state", state), AP_F_STR("error", strerror(-rc)));
}

/* Wait for SIGTERM or SIGINT; reopen the log on SIGHUP. When the unit
 * asks for a watchdog (WatchdogSec=), ping it at half the interval from
 * this thread: if the main thread is stuck, systemd notices. */
static int wait_for_stop(const sigset_t *set)
{
	uint64_t watchdog_us = 0;
	if (sd_watchdog_enabled(0, &watchdog_us) <= 0)
		watchdog_us = 0;
	for (;;) {
		siginfo_t info;
		int sig;
		if (watchdog_us) {
			struct timespec ts = { (time_t)(watchdog_us / 2000000),
					       (long)(watchdog_us / 2 % 1000000) * 1000 };
			sig = sigtimedwait(set, &info, &ts);
			if (sig < 0 && errno == EAGAIN) {
				notify_systemd("WATCHDOG=1");
				continue;
			}
		} else {
			sig = sigwaitinfo(set, &info);
		}
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			AP_ERROR("sigwaitinfo failed, shutting down", AP_F_STR("error", strerror(errno)));
			return SIGTERM;
		}
		if (sig == SIGHUP) {
			int rc = ap_log_reopen();
			AP_INFO("SIGHUP: log file reopened", AP_F_STR("result", ap_strerror(rc)));
			continue;
		}
		AP_INFO("🛑 Received signal, shutting down", AP_F_STR("signal", strsignal(sig)),
			AP_F_INT("sender_pid", info.si_pid));
		return sig;
	}
}

int ap_cmd_aggregator(int argc, char **argv, const ap_cli_global *g)
{
	const char *port_file = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc)
			port_file = argv[++i];
		else if (strncmp(argv[i], "--port-file=", 12) == 0 && argv[i][12])
			port_file = argv[i] + 12;
		else
			return usage();
	}

	/* Before grpc_init and before any thread: every thread inherits the
	 * mask, so these signals reach only sigwaitinfo below. */
	sigset_t set;
	ap_cli_block_signals(&set);

	const char *config_path = ap_cli_config_file(g, "aggregator.conf");
	char err[1024] = "";
	ap_config cfg;
	int rc = ap_config_load(&cfg, config_path, err, sizeof err);
	if (rc) {
		fprintf(stderr, "ap aggregator: %s\n", err[0] ? err : ap_strerror(rc));
		ap_config_free(&cfg);
		return AP_EXIT_FAIL;
	}
	rc = ap_log_open((ap_log_level)cfg.log.level, (ap_log_format)cfg.log.format, cfg.log.file,
			 err, sizeof err);
	if (rc) {
		fprintf(stderr, "ap aggregator: log: %s\n", err[0] ? err : ap_strerror(rc));
		ap_config_free(&cfg);
		return AP_EXIT_FAIL;
	}
	AP_INFO("ap aggregator starting", AP_F_STR("version", PACKAGE_VERSION),
		AP_F_STR("config", config_path ? config_path : "(built-in defaults)"),
		AP_F_STR("storage", cfg.storage.dir), AP_F_INT("pid", getpid()));

	/* One descriptor per operator stream, plus the store's files, the
	 * listeners, metrics scrapes and admin calls (FD_RESERVE). A limit
	 * below that is worth a warning, not a refusal: it only caps how many
	 * operators can connect at once, and ap keeps working below it
	 * (accept fails with EMFILE, the client retries). */
	unsigned long fd_limit = ap_cli_raise_fd_limit();
	if (fd_limit < (unsigned long)cfg.operators.max_sessions + FD_RESERVE)
		AP_WARN("the file descriptor limit is below operators.max_sessions",
			AP_F_UINT("limit", fd_limit), AP_F_INT("max_sessions", cfg.operators.max_sessions),
			AP_F_STR("hint", "raise it with ulimit -n or LimitNOFILE="));
	else
		AP_DEBUG("file descriptor limit", AP_F_UINT("limit", fd_limit));

	int exit_code = AP_EXIT_FAIL;
	int stop_rc = 0;
	ap_engine *engine = NULL;
	ap_rpc_server *srv = NULL;
	ap_metrics_server *metrics = NULL;
	int lock_fd = lock_storage(cfg.storage.dir, err, sizeof err);
	if (lock_fd < 0) {
		AP_ERROR("cannot lock the storage directory", AP_F_STR("error", err));
		goto out;
	}
	rc = ap_engine_open(&engine, &cfg, err, sizeof err);
	if (rc) {
		AP_ERROR("cannot open the engine", AP_F_STR("error", err[0] ? err : ap_strerror(rc)));
		goto out;
	}
	ap_grpc_set_listener_failure_hook(on_listener_failure);
	rc = ap_rpc_server_open(&srv, engine, &cfg, err, sizeof err);
	if (rc) {
		AP_ERROR("cannot open the gRPC servers", AP_F_STR("error", err));
		goto out;
	}
	rc = ap_rpc_server_start(srv, err, sizeof err);
	if (rc == 0)
		rc = ap_engine_start(engine);
	if (rc) {
		AP_ERROR("cannot start", AP_F_STR("error", err[0] ? err : ap_strerror(rc)));
		goto stop;
	}
	if (cfg.metrics_listen[0]) {
		rc = ap_metrics_server_start(&metrics, cfg.metrics_listen, engine, err, sizeof err);
		if (rc) {
			AP_ERROR("cannot serve metrics", AP_F_STR("error", err));
			goto stop;
		}
		AP_INFO("📈 Metrics served", AP_F_STR("url_host", cfg.metrics_listen),
			AP_F_INT("port", ap_metrics_server_port(metrics)));
	}
	ap_rpc_server_ready(srv);
	if (port_file && write_port_file(port_file, ap_rpc_server_port(srv)) != 0) {
		AP_ERROR("cannot write the port file", AP_F_STR("path", port_file),
			 AP_F_STR("error", strerror(errno)));
		goto stop;
	}
	AP_INFO("✅ Aggregator ready", AP_F_INT("port", ap_rpc_server_port(srv)));
	notify_systemd("READY=1");

	wait_for_stop(&set);
	notify_systemd("STOPPING=1");
	exit_code = AP_EXIT_OK;
	if (ap_grpc_listener_failed()) {
		AP_ERROR("a gRPC listener stopped accepting connections: shutting down to be "
			 "restarted (exit 1)", AP_F_UINT("fd_limit", fd_limit));
		exit_code = AP_EXIT_FAIL;
	}
stop:
	ap_metrics_server_stop(metrics);
	/* The transport gets 90 % of shutdown_timeout_ms, the store's
	 * checkpoint and close the rest. */
	stop_rc = ap_rpc_server_stop(srv, cfg.shutdown_timeout_ms - cfg.shutdown_timeout_ms / 10);
	if (stop_rc == AP_ESTATE) {
		/* A thread is still inside the engine: closing the store under it
		 * is worse than leaving; BerkeleyDB recovers at the next start. */
		AP_ERROR("⚠️ Exiting without closing the store");
		_exit(AP_EXIT_FAIL);
	}
out:
	ap_engine_close(engine);
	if (stop_rc == AP_ETIMEDOUT) {
		/* The store is closed cleanly; a stalled connection still holds a
		 * thread inside gRPC, so gRPC cannot be torn down. Leave without
		 * running exit handlers under that thread. */
		if (port_file && exit_code == AP_EXIT_OK)
			unlink(port_file);
		AP_INFO("👋 Aggregator stopped (stalled connections abandoned)");
		_exit(exit_code);
	}
	ap_rpc_server_close(srv);
	if (port_file && exit_code == AP_EXIT_OK)
		unlink(port_file);
	if (lock_fd >= 0)
		close(lock_fd); /* releases the flock; the file stays */
	AP_INFO(exit_code == AP_EXIT_OK ? "👋 Aggregator stopped" : "Aggregator failed to start");
	ap_log_close();
	ap_config_free(&cfg);
	return exit_code;
}
