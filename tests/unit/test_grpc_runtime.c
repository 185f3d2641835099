/* Unit tests for the gRPC runtime tuning (src/rpc/runtime.c).
 *
 * Debian's abseil aborts a process whose mutexes were ever taken in two
 * orders (its deadlock detector, on because the package is built without
 * NDEBUG). gpr_mu is an absl::Mutex in gRPC 1.51, so a lock inversion on
 * two gpr_mu shows whether the detector is on. Each case runs in a forked
 * child because the detector's setting is process-wide and the inversion
 * kills the process when it is on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/support/sync.h>

#include "ap/grpc_runtime.h"

static void lock_inversion(void)
{
	gpr_mu a, b;
	gpr_mu_init(&a);
	gpr_mu_init(&b);
	gpr_mu_lock(&a);
	gpr_mu_lock(&b);
	gpr_mu_unlock(&b);
	gpr_mu_unlock(&a);
	gpr_mu_lock(&b);
	gpr_mu_lock(&a); /* the detector aborts here when it is on */
	gpr_mu_unlock(&a);
	gpr_mu_unlock(&b);
	gpr_mu_destroy(&a);
	gpr_mu_destroy(&b);
}

/* Runs the inversion in a child, with or without ap_grpc_init first, and
 * returns its wait status. The child's stderr (abseil's report) is
 * discarded. */
static int inversion_in_child(int tune)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0)
			dup2(devnull, STDERR_FILENO);
		if (tune)
			ap_grpc_init();
		lock_inversion();
		if (tune)
			grpc_shutdown();
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

/* Proves the next test can fail: without the tuning the platform's
 * detector kills the process. On an abseil built with NDEBUG there is
 * no detector and nothing to prove. */
static void test_detector_on_by_default(void **state)
{
	(void)state;
	int status = inversion_in_child(0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		skip();
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void test_init_turns_detector_off(void **state)
{
	(void)state;
	int status = inversion_in_child(1);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Pins the symbol name: an abseil upgrade that renames its inline
 * namespace makes this fail here rather than slow a storm down. */
static void test_switch_found(void **state)
{
	(void)state;
	assert_true(ap_grpc_detector_off());
	assert_true(ap_grpc_detector_off()); /* idempotent */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_detector_on_by_default),
		cmocka_unit_test(test_init_turns_detector_off),
		cmocka_unit_test(test_switch_found),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
