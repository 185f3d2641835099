/* Time sources: see include/ap/clock.h. */
#include <stdatomic.h>

#include "ap/clock.h"

static _Atomic(ap_clock_wall_fn) wall_hook;

static int64_t ts_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ap_clock_mono_ns(void) { return ts_ns(CLOCK_MONOTONIC); }
int64_t ap_clock_mono_ms(void) { return ts_ns(CLOCK_MONOTONIC) / 1000000; }
int64_t ap_clock_wall_ns(void) { return ts_ns(CLOCK_REALTIME); }

int64_t ap_clock_wall_ms(void)
{
	ap_clock_wall_fn fn = atomic_load(&wall_hook);
	return fn ? fn() : ts_ns(CLOCK_REALTIME) / 1000000;
}

void ap_clock_set_wall_hook(ap_clock_wall_fn fn) { atomic_store(&wall_hook, fn); }

struct timespec ap_clock_ts_from_ns(int64_t mono_ns)
{
	struct timespec ts = { .tv_sec = mono_ns / 1000000000,
			       .tv_nsec = mono_ns % 1000000000 };
	return ts;
}

struct timespec ap_clock_deadline_ms(int64_t ms)
{
	return ap_clock_ts_from_ns(ap_clock_mono_ns() + ms * 1000000);
}

int ap_clock_cond_init(pthread_cond_t *cond)
{
	pthread_condattr_t attr;
	int rc = pthread_condattr_init(&attr);
	if (rc == 0)
		rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
	return rc;
}
