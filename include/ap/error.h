/* Error codes shared by every module.
 *
 * Functions return 0 on success or a negative AP_E... code; a caller that
 * wants the human detail passes an error buffer (Redis's anet style).
 * ap_strerror() names a code; the string is static and thread-safe. */
#ifndef AP_ERROR_H
#define AP_ERROR_H

#include <stdio.h>
#include <stdlib.h>

enum {
	AP_OK = 0,
	AP_ENOMEM = -1,     /* allocation failed */
	AP_EINVAL = -2,     /* malformed argument or request */
	AP_ENOTFOUND = -3,  /* no such task, operator or key */
	AP_EEXIST = -4,     /* duplicate id */
	AP_EIO = -5,        /* storage or system call failed */
	AP_ESTALE = -6,     /* the session generation is no longer current */
	AP_ECANCELLED = -7, /* a token was cancelled while waiting */
	AP_ETIMEDOUT = -8,  /* a deadline passed */
	AP_EDENIED = -9,    /* not approved / not the owner */
	AP_ELIMIT = -10,    /* a configured limit was reached */
	AP_EVERSION = -11,  /* stored record of an unknown version */
	AP_ESTATE = -12,    /* wrong state for the operation (e.g. disabled) */
	AP_ECONFIG = -13,   /* configuration error */
	AP_EUSAGE = -14,    /* command-line usage error */
};

const char *ap_strerror(int code);

/* An invariant check that aborts in release builds too (STYLE.md, Errors). */
#define AP_ASSERT(cond)                                                       \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: assertion failed: %s\n",      \
				__FILE__, __LINE__, #cond);                   \
			abort();                                              \
		}                                                             \
	} while (0)

#endif
