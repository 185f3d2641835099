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
 * Token details (the Go operator writes "Bearer <decimal epoch>.<130
 * lower-case hex digits>" with no 0x and v 27/28, and signs the address in
 * its EIP-55 mixed-case spelling, which is why the message uses the address
 * exactly as sent):
 *   - "Bearer" is case-sensitive and followed by exactly one space;
 *   - the epoch is decimal digits only (no sign, no space; leading zeros
 *     are harmless) and must fit an int64; the signed message spells it
 *     without leading zeros, as the Go operator's "%d" does;
 *   - the signature is exactly 130 hex digits in any case, optionally
 *     preceded by "0x" (what web3 libraries print); nothing may follow;
 *   - v must be 27 or 28: a raw recovery id 0/1 is MALFORMED, as SPEC
 *     section 7 names 27/28 and the Go operator always adds 27.
 * Checks run in that order: the claimed address must be "0x" + 40 hex
 * digits (else MALFORMED), then the token's syntax, then the clock (cheap,
 * before any curve arithmetic), then recovery, then the address compare.
 *
 * secp256k1 comes from Debian's libsecp256k1 (recovery module); keccak-256
 * is nettle's Keccak-f[1600] permutation (sha3_permute) with the original
 * Keccak padding (0x01, not SHA-3's 0x06), rate 136 bytes, as Ethereum
 * uses. All functions are thread-safe: they share one randomised secp256k1
 * context, created on first use and kept for the life of the process, and
 * only read it afterwards. */
#ifndef AP_AUTH_H
#define AP_AUTH_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
	AP_AUTH_OK = 0,
	AP_AUTH_MISSING,       /* no authorization metadata (NULL or "") */
	AP_AUTH_MALFORMED,     /* not "Bearer <epoch>.<130 hex>", v not 27/28,
				* or the claimed address is not an address */
	AP_AUTH_BAD_SIGNATURE, /* not a valid recoverable signature */
	AP_AUTH_WRONG_SIGNER,  /* recovered address differs from the claimed one */
	AP_AUTH_EXPIRED,       /* epoch older than now - max_skew_s */
	AP_AUTH_FUTURE,        /* epoch newer than now + max_skew_s */
} ap_auth_result;

/* A short label for logs and the ap_auth_failures_total{reason} metric:
 * "ok", "missing", "malformed", "bad_signature", "wrong_signer", "expired",
 * "future". Static strings; "unknown" for a value outside the enum. */
const char *ap_auth_result_name(ap_auth_result r);

/* Check an authorization header value (NULL = missing) for `address`
 * (the address as sent in the request). now_s is the caller's clock in
 * seconds since the Unix epoch; a negative max_skew_s counts as 0. */
ap_auth_result ap_auth_verify(const char *authorization, const char *address,
			      int64_t now_s, int64_t max_skew_s);

/* keccak-256 of data (data may be NULL when len is 0). */
void ap_auth_keccak256(const void *data, size_t len, uint8_t out[32]);

/* The lower-case 0x address of a private key. 0 or AP_EINVAL (not a valid
 * secp256k1 secret key). */
int ap_auth_address(const uint8_t priv[32], char out[43]);

/* Make the header value "Bearer <epoch>.<sig hex>" for address at epoch,
 * in the Go operator's spelling (130 lower-case hex digits, no 0x, v 27/28).
 * address is signed as given and must be "0x" + 40 hex digits; epoch >= 0.
 * 0, AP_EINVAL or AP_ELIMIT (out too small; 160 bytes is enough). */
int ap_auth_sign(const uint8_t priv[32], const char *address, int64_t epoch,
		 char *out, size_t outlen);

/* EIP-191 personal_sign of msg: sig = r, s, v with v 27 or 28, the nonce
 * from RFC 6979 (deterministic, as web3 wallets sign). 0 or AP_EINVAL. */
int ap_auth_personal_sign(const uint8_t priv[32], const void *msg, size_t len,
			  uint8_t sig[65]);

/* The lower-case 0x address that made the personal_sign signature sig
 * (v 27 or 28) over msg. 0 or AP_EINVAL (bad v, r or s, or no key
 * recovers). */
int ap_auth_recover(const void *msg, size_t len, const uint8_t sig[65],
		    char out[43]);

/* Key files: one line holding the private key as 64 hex digits (an
 * optional 0x prefix and trailing whitespace are accepted on load; save
 * writes lower-case digits, no prefix, and a newline, which is also what
 * go-ethereum's SaveECDSA/LoadECDSA use).
 *
 * generate: a fresh key from getrandom(2), checked with
 *   secp256k1_ec_seckey_verify. 0 or AP_EIO.
 * save: creates path with mode 0600 (O_EXCL: never overwrites, never
 *   follows a symlink) and fsyncs it. 0, AP_EEXIST (path exists), AP_EIO.
 * load: accepts any file mode (the shipped development key is checked out
 *   by git with the umask's mode); 0, AP_EIO (cannot read), AP_EINVAL (not
 *   a key: the message never quotes the file's content).
 * The human detail goes to err (may be NULL). Thread-safe. */
int ap_auth_key_generate(uint8_t priv[32]);
int ap_auth_key_save(const char *path, const uint8_t priv[32], char *err, size_t errlen);
int ap_auth_key_load(const char *path, uint8_t priv[32], char *err, size_t errlen);

#endif
