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
 * an int in a register on every ABI we build for. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include <grpc/grpc.h>

#include "ap/grpc_runtime.h"

static const char *const detector_symbols[] = {
	"_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
	"_ZN4absl12lts_2022062329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
	"_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE",
};

enum { ON_DEADLOCK_IGNORE = 0 };

static pthread_once_t tune_once = PTHREAD_ONCE_INIT;
static atomic_bool detector_off;

static void tune(void)
{
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

bool ap_grpc_detector_off(void)
{
	pthread_once(&tune_once, tune);
	return atomic_load(&detector_off);
}
