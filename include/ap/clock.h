/* Time sources.
 *
 * Durations and deadlines use CLOCK_MONOTONIC; wall-clock times (what goes
 * on the wire and into the database) are milliseconds since the Unix epoch.
 * Tests may replace the wall clock through ap_clock_set_wall_hook() (a fault
 * seam, not a mock of the world); the hook is read atomically, so setting it
 * is thread-safe, but a test sets it before starting threads that use it. */
#ifndef AP_CLOCK_H
#define AP_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic time in nanoseconds. */
int64_t ap_clock_mono_ns(void);
/* Monotonic time in milliseconds. */
int64_t ap_clock_mono_ms(void);
/* Wall-clock time in milliseconds since the Unix epoch (hookable). */
int64_t ap_clock_wall_ms(void);
/* Wall-clock time in nanoseconds since the Unix epoch (not hooked). */
int64_t ap_clock_wall_ns(void);
/* A CLOCK_MONOTONIC timespec `ms` milliseconds from now, for
 * pthread_cond_timedwait on a condvar created with ap_clock_cond_init. */
struct timespec ap_clock_deadline_ms(int64_t ms);
/* A timespec for an absolute monotonic time in nanoseconds. */
struct timespec ap_clock_ts_from_ns(int64_t mono_ns);

#include <pthread.h>
/* Initialise a condition variable that waits on CLOCK_MONOTONIC. */
int ap_clock_cond_init(pthread_cond_t *cond);

typedef int64_t (*ap_clock_wall_fn)(void);
/* Replace the wall clock (NULL restores the real one). */
void ap_clock_set_wall_hook(ap_clock_wall_fn fn);

#endif
