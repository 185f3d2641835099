/* One-time tuning of the gRPC runtime.
 *
 * Debian builds abseil without NDEBUG, which leaves absl::Mutex's deadlock
 * detector on in kAbort mode. gRPC core takes abseil mutexes on every
 * call, channel and poller operation, so each lock and unlock then updates
 * one process-wide lock-order graph behind a single spinlock, and a cycle
 * it believes it saw aborts the process. Under a reconnect storm (bench
 * `--only storm`) this made 5 of 15 runs stall: the poller spent its time
 * in the graph, accepted connections piled up in CLOSE-WAIT until accept4
 * failed with EMFILE, and twice the detector aborted the daemon. With the
 * detector off, 13 of 13 runs passed and throughput rose by a third.
 * Release builds of abseil compile the detector out; switching it off is
 * what gRPC's own release builds get.
 *
 * The switch is a C++ function, absl::SetMutexDeadlockDetectionMode(
 * OnDeadlockCycle), inside abseil's inline namespace (Debian 12: "debian3").
 * We look it up with dlsym rather than linking to it, so a platform whose
 * abseil lacks it (or names its namespace otherwise) still runs. The enum
 * is `enum class OnDeadlockCycle { kIgnore, kReport, kAbort }`, passed as
 * an int in a register on every ABI we build for.
 *
 * gRPC's own log lines (gpr_log: errors by default, more with
 * GRPC_VERBOSITY) go through ap's logger, so a JSON log stays JSON and a
 * log file gets them too. One of them matters to ap: "Failed accept4" from
 * the TCP server means the listener is dead (see grpc_runtime.h). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/support/log.h>

#include "ap/grpc_runtime.h"
#include "ap/log.h"

static const char *const detector_symbols[] = {
	"_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
	"_ZN4absl12lts_2022062329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
	"_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE",
};

enum { ON_DEADLOCK_IGNORE = 0 };

static pthread_once_t tune_once = PTHREAD_ONCE_INIT;
static atomic_bool detector_off;
static atomic_bool listener_failed;
static _Atomic(void (*)(void)) listener_failure_hook;

static ap_log_level level_of(gpr_log_severity s)
{
	switch (s) {
	case GPR_LOG_SEVERITY_DEBUG: return AP_LOG_DEBUG;
	case GPR_LOG_SEVERITY_INFO: return AP_LOG_INFO;
	default: return AP_LOG_ERROR;
	}
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Called by gRPC on any of its threads. */
static void grpc_log_to_ap(gpr_log_func_args *a)
{
	const char *file = a->file ? a->file : "";
	const char *msg = a->message ? a->message : "";
	if (a->severity == GPR_LOG_SEVERITY_ERROR && ends_with(file, "tcp_server_posix.cc") &&
	    strncmp(msg, "Failed accept4", 14) == 0 && !atomic_exchange(&listener_failed, true)) {
		AP_ERROR("gRPC stopped accepting connections on a listener (gRPC 1.51 does not "
			 "retry accept after this error)", AP_F_STR("grpc_error", msg));
		void (*hook)(void) = atomic_load(&listener_failure_hook);
		if (hook)
			hook();
		return;
	}
	const char *base = strrchr(file, '/');
	AP_LOG(level_of(a->severity), "grpc", AP_F_STR("message", msg),
	       AP_F_STR("file", base ? base + 1 : file), AP_F_INT("line", a->line));
}

static void tune(void)
{
	gpr_set_log_function(grpc_log_to_ap);
	for (size_t i = 0; i < sizeof(detector_symbols) / sizeof(detector_symbols[0]); i++) {
		void *sym = dlsym(RTLD_DEFAULT, detector_symbols[i]);
		if (!sym)
			continue;
		/* POSIX guarantees a dlsym result converts to a function pointer. */
		void (*set_mode)(int);
		*(void **)&set_mode = sym;
		set_mode(ON_DEADLOCK_IGNORE);
		atomic_store(&detector_off, true);
		return;
	}
}

void ap_grpc_init(void)
{
	pthread_once(&tune_once, tune);
	grpc_init();
}

void ap_grpc_set_listener_failure_hook(void (*hook)(void))
{
	atomic_store(&listener_failure_hook, hook);
}

bool ap_grpc_listener_failed(void)
{
	return atomic_load(&listener_failed);
}

bool ap_grpc_detector_off(void)
{
	pthread_once(&tune_once, tune);
	return atomic_load(&detector_off);
}
