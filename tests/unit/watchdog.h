/* A watchdog for unit test binaries whose tests fork, wait on children or
 * take database locks, where a bug shows up as a hang: an alarm turns the
 * hang into a failure that names the binary, instead of a `make check`
 * that never ends.
 *
 * Shared by test_status and test_store. One watchdog per process (it is
 * SIGALRM); arm it in a test's setup and disarm it in its teardown, from
 * the test thread. */
#ifndef AP_TESTS_UNIT_WATCHDOG_H
#define AP_TESTS_UNIT_WATCHDOG_H

/* In `seconds` from now, write "NAME: watchdog: a test hung" to stderr and
 * _exit(99) (a hard error to the automake test driver), unless disarmed
 * first. Arming again restarts the count. `name` is copied. */
void watchdog_arm(const char *name, unsigned seconds);

/* Cancel the pending alarm. */
void watchdog_disarm(void);

#endif
