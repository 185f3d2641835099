/* The unit test watchdog: see watchdog.h. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "watchdog.h"

/* Built by watchdog_arm, so that the handler only calls write and _exit,
 * which are async-signal-safe. */
static char message[128];
static size_t message_len;

static void watchdog_fire(int sig)
{
	(void)sig;
	ssize_t n = write(2, message, message_len);
	(void)n;
	_exit(99);
}

void watchdog_arm(const char *name, unsigned seconds)
{
	int n = snprintf(message, sizeof message, "%s: watchdog: a test hung\n",
			 name);
	message_len = n < 0 ? 0
		: (size_t)n < sizeof message ? (size_t)n : sizeof message - 1;
	signal(SIGALRM, watchdog_fire);
	alarm(seconds);
}

void watchdog_disarm(void)
{
	alarm(0);
}
