/* Operator authentication (SPEC section 7), wire-compatible with the Go
 * operator's bearer token:
 *
 *   authorization: Bearer <epoch>.<sig>
 *
 * where sig is 65 bytes in hex (r, s, v with v 27 or 28) of an EIP-191
 * personal_sign over "Operator:" + <address as sent> + "Epoch:" + <epoch>,
 * i.e. keccak256("\x19Ethereum Signed Message:\n" + len(msg) + msg). The
 * address recovered from the signature must equal the claimed one (case
 * insensitive) and |now - epoch| <= max_skew_s.
 *
 * secp256k1 comes from Debian's libsecp256k1 (recovery module); keccak-256
 * from nettle. All functions are thread-safe (one shared, randomised
 * secp256k1 context created once). */
#ifndef AP_AUTH_H
#define AP_AUTH_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
	AP_AUTH_OK = 0,
	AP_AUTH_MISSING,       /* no authorization metadata */
	AP_AUTH_MALFORMED,     /* not "Bearer <epoch>.<130 hex>" */
	AP_AUTH_BAD_SIGNATURE, /* not a valid recoverable signature */
	AP_AUTH_WRONG_SIGNER,  /* recovered address differs from the claimed one */
	AP_AUTH_EXPIRED,       /* epoch older than now - max_skew_s */
	AP_AUTH_FUTURE,        /* epoch newer than now + max_skew_s */
} ap_auth_result;

/* A short label for logs and the ap_auth_failures_total{reason} metric:
 * "ok", "missing", "malformed", "bad_signature", "wrong_signer", "expired",
 * "future". */
const char *ap_auth_result_name(ap_auth_result r);

/* Check an authorization header value (NULL = missing) for `address`
 * (the address as sent in the request). */
ap_auth_result ap_auth_verify(const char *authorization, const char *address,
			      int64_t now_s, int64_t max_skew_s);

/* keccak-256 of data. */
void ap_auth_keccak256(const void *data, size_t len, uint8_t out[32]);

/* The lower-case 0x address of a private key. 0 or AP_EINVAL. */
int ap_auth_address(const uint8_t priv[32], char out[43]);
/* Make the header value "Bearer <epoch>.<sig hex>" for address at epoch.
 * 0, AP_EINVAL or AP_ELIMIT (out too small; 160 bytes is enough). */
int ap_auth_sign(const uint8_t priv[32], const char *address, int64_t epoch,
		 char *out, size_t outlen);

/* Key files: one line with the private key as 64 hex digits (an optional
 * 0x prefix is accepted). Save writes with mode 0600 and refuses to
 * overwrite. Load refuses a file readable by group or others? No: it warns
 * through err but loads. 0, AP_EIO, AP_EINVAL, AP_EEXIST; detail in err. */
int ap_auth_key_generate(uint8_t priv[32]);
int ap_auth_key_save(const char *path, const uint8_t priv[32], char *err, size_t errlen);
int ap_auth_key_load(const char *path, uint8_t priv[32], char *err, size_t errlen);

#endif
