/* Names of the AP_E... codes. */
#include "ap/error.h"

const char *ap_strerror(int code)
{
	switch (code) {
	case AP_OK: return "success";
	case AP_ENOMEM: return "out of memory";
	case AP_EINVAL: return "invalid argument";
	case AP_ENOTFOUND: return "not found";
	case AP_EEXIST: return "already exists";
	case AP_EIO: return "input/output error";
	case AP_ESTALE: return "stale session generation";
	case AP_ECANCELLED: return "cancelled";
	case AP_ETIMEDOUT: return "timed out";
	case AP_EDENIED: return "permission denied";
	case AP_ELIMIT: return "limit reached";
	case AP_EVERSION: return "unsupported record version";
	case AP_ESTATE: return "wrong state";
	case AP_ECONFIG: return "configuration error";
	case AP_EUSAGE: return "usage error";
	}
	return "unknown error";
}
