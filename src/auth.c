/* Operator authentication: keccak-256, EIP-191 personal_sign and recovery,
 * the bearer token of SPEC section 7, and key files.
 *
 * The module owns one secp256k1 context, created and randomised (blinding
 * against side channels) by pthread_once on first use and never destroyed;
 * after that it is only read, which libsecp256k1 allows from any number of
 * threads. No locks, no threads of its own. Private keys pass through
 * stack buffers that are wiped (explicit_bzero) before returning. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nettle/sha3.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>

#include "ap/auth.h"
#include "ap/error.h"

#define KECCAK256_RATE 136 /* 1600 - 2 * 256 bits, in bytes */
#define EIP191_PREFIX "\x19" "Ethereum Signed Message:\n"
#define KEY_FILE_MAX 256   /* a key file is one short line */

/* ---- the shared secp256k1 context --------------------------------------- */

static secp256k1_context *secp_ctx;
static pthread_once_t secp_once = PTHREAD_ONCE_INIT;

/* Fill buf from getrandom(2), retrying short reads and EINTR. */
static int fill_random(void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void secp_init(void)
{
	secp_ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
	AP_ASSERT(secp_ctx != NULL);
	/* Randomisation only blinds the signing arithmetic; the context is
	 * correct without it, so a getrandom failure here is not fatal (key
	 * generation reports its own). */
	uint8_t seed[32];
	if (fill_random(seed, sizeof seed) == 0)
		AP_ASSERT(secp256k1_context_randomize(secp_ctx, seed) == 1);
	explicit_bzero(seed, sizeof seed);
}

static const secp256k1_context *secp(void)
{
	AP_ASSERT(pthread_once(&secp_once, secp_init) == 0);
	return secp_ctx;
}

/* ---- keccak-256 ---------------------------------------------------------- */

/* A streaming keccak-256: whole blocks go straight into the state, the
 * tail waits in buf until more data or the final padding arrives. */
typedef struct keccak256 {
	struct sha3_state st;
	uint8_t buf[KECCAK256_RATE];
	size_t n; /* bytes waiting in buf, < KECCAK256_RATE */
} keccak256;

/* XOR one rate-sized block into the state (lanes are little-endian) and
 * permute. */
static void keccak_block(struct sha3_state *st, const uint8_t *block)
{
	for (size_t i = 0; i < KECCAK256_RATE / 8; i++) {
		uint64_t lane = 0;
		for (size_t b = 0; b < 8; b++)
			lane |= (uint64_t)block[8 * i + b] << (8 * b);
		st->a[i] ^= lane;
	}
	sha3_permute(st);
}

static void keccak_init(keccak256 *k)
{
	memset(k, 0, sizeof *k);
}

static void keccak_update(keccak256 *k, const void *data, size_t len)
{
	const uint8_t *p = data;
	if (k->n > 0) {
		size_t take = KECCAK256_RATE - k->n;
		if (take > len)
			take = len;
		memcpy(k->buf + k->n, p, take);
		k->n += take;
		p += take;
		len -= take;
		if (k->n < KECCAK256_RATE)
			return;
		keccak_block(&k->st, k->buf);
		k->n = 0;
	}
	for (; len >= KECCAK256_RATE; p += KECCAK256_RATE, len -= KECCAK256_RATE)
		keccak_block(&k->st, p);
	if (len > 0)
		memcpy(k->buf, p, len);
	k->n = len;
}

static void keccak_final(keccak256 *k, uint8_t out[32])
{
	/* Keccak's pad10*1 with domain byte 0x01 (FIPS 202's SHA-3 uses
	 * 0x06); when only one byte is free both bits land in it (0x81). */
	memset(k->buf + k->n, 0, KECCAK256_RATE - k->n);
	k->buf[k->n] ^= 0x01;
	k->buf[KECCAK256_RATE - 1] ^= 0x80;
	keccak_block(&k->st, k->buf);
	for (size_t i = 0; i < 32; i++)
		out[i] = (uint8_t)(k->st.a[i / 8] >> (8 * (i % 8)));
}

void ap_auth_keccak256(const void *data, size_t len, uint8_t out[32])
{
	keccak256 k;
	keccak_init(&k);
	if (len > 0)
		keccak_update(&k, data, len);
	keccak_final(&k, out);
}

/* ---- small helpers ------------------------------------------------------- */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode exactly 2*len hex digits (any case) from s. */
static bool hex_decode(const char *s, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		int hi = hex_value(s[2 * i]), lo;
		if (hi < 0 || (lo = hex_value(s[2 * i + 1])) < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

static void hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

/* "0x" + 40 hex digits, any case, and nothing else. */
static bool is_address(const char *s)
{
	if (!s || s[0] != '0' || s[1] != 'x')
		return false;
	for (int i = 2; i < 42; i++)
		if (hex_value(s[i]) < 0)
			return false;
	return s[42] == '\0';
}

static void address_of_pubkey(const secp256k1_pubkey *pub, char out[43])
{
	uint8_t ser[65], hash[32];
	size_t serlen = sizeof ser;
	AP_ASSERT(secp256k1_ec_pubkey_serialize(secp(), ser, &serlen, pub,
						SECP256K1_EC_UNCOMPRESSED) == 1);
	AP_ASSERT(serlen == 65 && ser[0] == 0x04);
	ap_auth_keccak256(ser + 1, 64, hash); /* the 64 bytes X || Y */
	out[0] = '0';
	out[1] = 'x';
	hex_encode(hash + 12, 20, out + 2);
}

/* keccak256("\x19Ethereum Signed Message:\n" + decimal len + msg). */
static void eip191_hash(const void *msg, size_t len, uint8_t out[32])
{
	char prefix[sizeof EIP191_PREFIX + 24];
	int n = snprintf(prefix, sizeof prefix, EIP191_PREFIX "%zu", len);
	AP_ASSERT(n > 0 && (size_t)n < sizeof prefix);
	keccak256 k;
	keccak_init(&k);
	keccak_update(&k, prefix, (size_t)n);
	if (len > 0)
		keccak_update(&k, msg, len);
	keccak_final(&k, out);
}

/* The message the operator signs: "Operator:<address>Epoch:<epoch>". */
static int operator_message(char *out, size_t outlen, const char *address,
			    int64_t epoch)
{
	int n = snprintf(out, outlen, "Operator:%sEpoch:%" PRId64, address, epoch);
	AP_ASSERT(n > 0 && (size_t)n < outlen);
	return n;
}

/* ---- signatures ---------------------------------------------------------- */

const char *ap_auth_result_name(ap_auth_result r)
{
	switch (r) {
	case AP_AUTH_OK: return "ok";
	case AP_AUTH_MISSING: return "missing";
	case AP_AUTH_MALFORMED: return "malformed";
	case AP_AUTH_BAD_SIGNATURE: return "bad_signature";
	case AP_AUTH_WRONG_SIGNER: return "wrong_signer";
	case AP_AUTH_EXPIRED: return "expired";
	case AP_AUTH_FUTURE: return "future";
	}
	return "unknown";
}

int ap_auth_address(const uint8_t priv[32], char out[43])
{
	secp256k1_pubkey pub;
	if (!priv || !secp256k1_ec_pubkey_create(secp(), &pub, priv))
		return AP_EINVAL;
	address_of_pubkey(&pub, out);
	return 0;
}

int ap_auth_personal_sign(const uint8_t priv[32], const void *msg, size_t len,
			  uint8_t sig[65])
{
	uint8_t hash[32];
	secp256k1_ecdsa_recoverable_signature rsig;
	int recid;

	if (!priv || (!msg && len > 0))
		return AP_EINVAL;
	eip191_hash(msg, len, hash);
	/* NULL nonce function: RFC 6979, the same deterministic k as
	 * go-ethereum and the web3 libraries, so signatures match theirs. */
	if (!secp256k1_ecdsa_sign_recoverable(secp(), &rsig, hash, priv, NULL, NULL))
		return AP_EINVAL;
	AP_ASSERT(secp256k1_ecdsa_recoverable_signature_serialize_compact(
			  secp(), sig, &recid, &rsig) == 1);
	AP_ASSERT(recid == 0 || recid == 1);
	sig[64] = (uint8_t)(27 + recid);
	return 0;
}

int ap_auth_recover(const void *msg, size_t len, const uint8_t sig[65],
		    char out[43])
{
	uint8_t hash[32];
	secp256k1_ecdsa_recoverable_signature rsig;
	secp256k1_pubkey pub;

	if (!sig || (!msg && len > 0) || (sig[64] != 27 && sig[64] != 28))
		return AP_EINVAL;
	/* parse_compact refuses r or s >= the group order; recover refuses
	 * zero values and points that are not on the curve. */
	if (!secp256k1_ecdsa_recoverable_signature_parse_compact(secp(), &rsig, sig,
								 sig[64] - 27))
		return AP_EINVAL;
	eip191_hash(msg, len, hash);
	if (!secp256k1_ecdsa_recover(secp(), &pub, &rsig, hash))
		return AP_EINVAL;
	address_of_pubkey(&pub, out);
	return 0;
}

int ap_auth_sign(const uint8_t priv[32], const char *address, int64_t epoch,
		 char *out, size_t outlen)
{
	char msg[128];
	uint8_t sig[65];
	char sighex[131];

	if (!priv || !out || !is_address(address) || epoch < 0)
		return AP_EINVAL;
	int n = operator_message(msg, sizeof msg, address, epoch);
	int rc = ap_auth_personal_sign(priv, msg, (size_t)n, sig);
	if (rc)
		return rc;
	hex_encode(sig, sizeof sig, sighex);
	n = snprintf(out, outlen, "Bearer %" PRId64 ".%s", epoch, sighex);
	if (n < 0 || (size_t)n >= outlen) {
		if (outlen > 0)
			out[0] = '\0';
		return AP_ELIMIT;
	}
	return 0;
}

/* Parse "<digits>" into a non-negative int64; false on anything else. */
static bool parse_epoch(const char *s, size_t len, int64_t *out)
{
	int64_t v = 0;
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (v > (INT64_MAX - (s[i] - '0')) / 10)
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

ap_auth_result ap_auth_verify(const char *authorization, const char *address,
			      int64_t now_s, int64_t max_skew_s)
{
	static const char scheme[] = "Bearer ";
	int64_t epoch;
	uint8_t sig[65];

	if (!authorization || authorization[0] == '\0')
		return AP_AUTH_MISSING;
	if (!is_address(address))
		return AP_AUTH_MALFORMED;
	if (strncmp(authorization, scheme, sizeof scheme - 1) != 0)
		return AP_AUTH_MALFORMED;
	const char *token = authorization + sizeof scheme - 1;
	const char *dot = strchr(token, '.');
	if (!dot || !parse_epoch(token, (size_t)(dot - token), &epoch))
		return AP_AUTH_MALFORMED;
	const char *hex = dot + 1;
	if (hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X'))
		hex += 2;
	if (strlen(hex) != 2 * sizeof sig || !hex_decode(hex, sig, sizeof sig))
		return AP_AUTH_MALFORMED;
	if (sig[64] != 27 && sig[64] != 28)
		return AP_AUTH_MALFORMED;

	/* |now - epoch| <= max_skew, without overflow for any int64 now. */
	if (max_skew_s < 0)
		max_skew_s = 0;
	int64_t diff;
	if (epoch < now_s) {
		if (__builtin_sub_overflow(now_s, epoch, &diff) || diff > max_skew_s)
			return AP_AUTH_EXPIRED;
	} else if (__builtin_sub_overflow(epoch, now_s, &diff) || diff > max_skew_s) {
		return AP_AUTH_FUTURE;
	}

	char msg[128], signer[43];
	int n = operator_message(msg, sizeof msg, address, epoch);
	if (ap_auth_recover(msg, (size_t)n, sig, signer) != 0)
		return AP_AUTH_BAD_SIGNATURE;
	if (strcasecmp(signer, address) != 0)
		return AP_AUTH_WRONG_SIGNER;
	return AP_AUTH_OK;
}

/* ---- key files ----------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int ap_auth_key_generate(uint8_t priv[32])
{
	if (!priv)
		return AP_EINVAL;
	/* A uniformly random 32-byte string is a valid key unless it is 0 or
	 * >= the group order, a chance of about 2^-128; retry if so. */
	do {
		if (fill_random(priv, 32) != 0) {
			explicit_bzero(priv, 32);
			return AP_EIO;
		}
	} while (!secp256k1_ec_seckey_verify(secp(), priv));
	return 0;
}

int ap_auth_key_save(const char *path, const uint8_t priv[32], char *err,
		     size_t errlen)
{
	char line[66];
	int rc = 0;

	if (err && errlen)
		err[0] = '\0';
	if (!path || !priv || !secp256k1_ec_seckey_verify(secp(), priv)) {
		set_err(err, errlen, "not a valid secp256k1 private key");
		return AP_EINVAL;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		set_err(err, errlen, "%s: %s", path,
			e == EEXIST ? "already exists; refusing to overwrite it"
				    : strerror(e));
		return e == EEXIST ? AP_EEXIST : AP_EIO;
	}
	hex_encode(priv, 32, line);
	line[64] = '\n';
	line[65] = '\0';
	/* The umask may have taken bits away; the file gets exactly 0600. */
	if (fchmod(fd, 0600) != 0) {
		set_err(err, errlen, "%s: chmod 0600: %s", path, strerror(errno));
		rc = AP_EIO;
		goto out;
	}
	size_t done = 0;
	while (done < 65) {
		ssize_t n = write(fd, line + done, 65 - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			set_err(err, errlen, "%s: write: %s", path, strerror(errno));
			rc = AP_EIO;
			goto out;
		}
		done += (size_t)n;
	}
	if (fsync(fd) != 0) {
		set_err(err, errlen, "%s: fsync: %s", path, strerror(errno));
		rc = AP_EIO;
	}
out:
	explicit_bzero(line, sizeof line);
	if (close(fd) != 0 && rc == 0) {
		set_err(err, errlen, "%s: close: %s", path, strerror(errno));
		rc = AP_EIO;
	}
	if (rc != 0)
		unlink(path); /* we created it (O_EXCL): leave no half key */
	return rc;
}

int ap_auth_key_load(const char *path, uint8_t priv[32], char *err, size_t errlen)
{
	char buf[KEY_FILE_MAX + 1];
	size_t len = 0;
	int rc = 0;

	if (err && errlen)
		err[0] = '\0';
	if (!path || !priv) {
		set_err(err, errlen, "no key file given");
		return AP_EINVAL;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		set_err(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return AP_EIO;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			set_err(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			rc = AP_EIO;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof buf - 1) {
			set_err(err, errlen, "%s: not a key file (longer than %d bytes)",
				path, KEY_FILE_MAX);
			rc = AP_EINVAL;
			goto out;
		}
	}
	buf[len] = '\0';

	/* [0x] 64 hex digits, then only whitespace. The messages below never
	 * quote the content: it may be a key. */
	const char *p = buf;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		p += 2;
	size_t digits = 0;
	while (hex_value(p[digits]) >= 0)
		digits++;
	const char *rest = p + digits;
	while (*rest == ' ' || *rest == '\t' || *rest == '\r' || *rest == '\n')
		rest++;
	if (digits != 64 || *rest != '\0') {
		set_err(err, errlen,
			"%s: not a key file (expected one line of 64 hex digits)", path);
		rc = AP_EINVAL;
		goto out;
	}
	AP_ASSERT(hex_decode(p, priv, 32));
	if (!secp256k1_ec_seckey_verify(secp(), priv)) {
		explicit_bzero(priv, 32);
		set_err(err, errlen, "%s: not a valid secp256k1 private key "
			"(zero or not below the group order)", path);
		rc = AP_EINVAL;
	}
out:
	explicit_bzero(buf, sizeof buf);
	close(fd);
	return rc;
}
