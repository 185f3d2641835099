/* Unit tests for src/auth.c and `ap keygen`.
 *
 * The cryptography is checked against published Ethereum vectors, not
 * against itself:
 *   - keccak256("") and keccak256("abc"): the Ethereum empty-string hash
 *     and the Keccak team's "abc" answer, as the task listed them;
 *     keccak256("The quick brown fox jumps over the lazy dog"): Wikipedia's
 *     SHA-3 article (Keccak-256 column); inputs of 135..1000 bytes around
 *     the 136-byte rate boundary: computed with Debian's
 *     python3-pycryptodome 3.11 (Cryptodome.Hash.keccak, 256 bits);
 *   - private key 0x4c0883a6... -> 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23
 *     and personal_sign('Some data') with it, messageHash 0x1da44b58...,
 *     signature 0xb91467e5...1c: the web3.js documentation of
 *     web3.eth.accounts.sign (v1.2.2), repeated in web3.py's eth-account
 *     tests, which add personal_sign('10284') = 0x00515bc8...1b (v 27, r
 *     and s with a leading zero byte);
 *   - private key 0xac0974be... -> 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266:
 *     Hardhat's and Anvil's documented test account #0 (the key shipped as
 *     conf/dev-operator.key).
 * Then round trips of the bearer token and every failure kind, key files
 * (mode, refusal to overwrite, bad content), and `ap keygen` both in
 * process and as the built binary ($AP_BUILDDIR/ap, which `make check`
 * builds). Each test has its own mkdtemp directory, removed afterwards. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/auth.h"
#include "ap/cli.h"
#include "ap/error.h"
#include "tmpdir.h"

/* web3.js documentation key and its address */
#define WEB3_KEY "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
#define WEB3_ADDR "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
/* Hardhat / Anvil test account #0 (conf/dev-operator.key) */
#define DEV_KEY "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
#define DEV_ADDR "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
#define DEV_ADDR_EIP55 "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
/* the secp256k1 group order n: not a valid key, and not a valid r or s */
#define ORDER_N "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"

#define NOW 1700000000 /* a fixed "now" for the token tests */
#define SKEW 30

typedef struct fixture {
	char dir[1024];
	char path[PATH_MAX];
	char err[1024];
} fixture;

/* ---- fixture and helpers ------------------------------------------------- */

static int setup(void **state)
{
	fixture *t = calloc(1, sizeof *t);
	if (!t)
		return -1;
	if (tmpdir_create(t->dir, sizeof t->dir, tmpdir_parent(), "auth") != 0) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	fixture *t = *state;
	int rc = tmpdir_remove(t->dir);
	free(t);
	return rc;
}

static void unhex(const char *hex, uint8_t *out, size_t len)
{
	assert_int_equal(strlen(hex), 2 * len);
	for (size_t i = 0; i < len; i++) {
		unsigned v;
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

static void tohex(const uint8_t *in, size_t len, char *out)
{
	for (size_t i = 0; i < len; i++)
		sprintf(out + 2 * i, "%02x", in[i]);
	out[2 * len] = '\0';
}

static void check_keccak(const void *data, size_t len, const char *want)
{
	uint8_t h[32];
	char got[65];
	ap_auth_keccak256(data, len, h);
	tohex(h, sizeof h, got);
	assert_string_equal(got, want);
}

/* DIR/name, left in t->path. */
static const char *tmp_path(fixture *t, const char *name)
{
	return tmpdir_path(t->path, sizeof t->path, t->dir, name);
}

/* A token with the given epoch and raw signature (hex, any spelling). */
static const char *token(char *buf, size_t len, const char *epoch, const char *sighex)
{
	snprintf(buf, len, "Bearer %s.%s", epoch, sighex);
	return buf;
}

/* ---- keccak-256 ---------------------------------------------------------- */

static void test_keccak_vectors(void **state)
{
	(void)state;
	check_keccak(NULL, 0, "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
	check_keccak("", 0, "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
	check_keccak("abc", 3, "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
	const char *fox = "The quick brown fox jumps over the lazy dog";
	check_keccak(fox, strlen(fox),
		     "4d741b6f1eb29cb2a9b9911c82f56fa8d73b04959d3d9d222895df6c0b28aa15");

	/* bytes 0, 1, 2, ... (mod 256): one byte short of a block (the two
	 * padding bits share a byte), exactly one block (a whole padding
	 * block follows), one over, the same around two blocks, and many */
	static const struct {
		size_t len;
		const char *hash;
	} counted[] = {
		{ 135, "cbdfd9dee5faad3818d6b06f95a219fd290b0e1706f6a82e5a595b9ce9faca62" },
		{ 136, "7ce759f1ab7f9ce437719970c26b0a66ff11fe3e38e17df89cf5d29c7d7f807e" },
		{ 137, "ac73d4fae68b8453f764007c1a20ce95994187861f0c3227a3a8e99a73a3b1db" },
		{ 271, "7c974895b2a88303ff2dc6b58f438ceb0b298cac91099ac0539cc0f477506191" },
		{ 272, "fdf2ec49e749960d3c8521a0219af8d03e30e2b3bf19bd16150ee0eaf133d66e" },
		{ 273, "4f707289a9c3ccd0c4a51f2f17339f5dd171d371c04ff7783b735b5b22682eaf" },
		{ 1000, "aca79e4146e30eb1c733f6d6060d72471c36ea4e01ebf45d7f4916249c2bbd82" },
	};
	uint8_t data[1000];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof counted / sizeof counted[0]; i++)
		check_keccak(data, counted[i].len, counted[i].hash);

	/* one million 'a' (pycryptodome as above): many blocks, heap input */
	size_t big = 1000000;
	char *as = malloc(big);
	assert_non_null(as);
	memset(as, 'a', big);
	check_keccak(as, big, "fadae6b49f129bbb812be8407b7b2894f34aecf6dbd1f9b0f0c7e9853098fc96");
	free(as);

	/* the EIP-191 message hashes published with the personal_sign vectors */
	const char *m1 = "\x19" "Ethereum Signed Message:\n9Some data";
	check_keccak(m1, strlen(m1),
		     "1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655");
	const char *m2 = "\x19" "Ethereum Signed Message:\n510284";
	check_keccak(m2, strlen(m2),
		     "0a162a5efbba02f38db3114531c8acba39fe676f09f7e471d93e8a06c471821c");
}

/* ---- addresses and personal_sign ----------------------------------------- */

static void test_address_of_known_keys(void **state)
{
	(void)state;
	uint8_t key[32];
	char addr[43];

	unhex(WEB3_KEY, key, 32);
	assert_int_equal(ap_auth_address(key, addr), 0);
	assert_string_equal(addr, WEB3_ADDR);

	unhex(DEV_KEY, key, 32);
	assert_int_equal(ap_auth_address(key, addr), 0);
	assert_string_equal(addr, DEV_ADDR);

	/* zero and the group order are not keys */
	memset(key, 0, 32);
	assert_int_equal(ap_auth_address(key, addr), AP_EINVAL);
	unhex(ORDER_N, key, 32);
	assert_int_equal(ap_auth_address(key, addr), AP_EINVAL);
	memset(key, 0xff, 32);
	assert_int_equal(ap_auth_address(key, addr), AP_EINVAL);
}

static void test_personal_sign_vectors(void **state)
{
	(void)state;
	static const struct {
		const char *msg;
		const char *sig;
	} v[] = {
		{ "Some data",
		  "b91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd"
		  "6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a029"
		  "1c" },
		{ "10284",
		  "00515bc8fd32264e21ec0820e8c5123ed58c1195c9ea17cb018b1ad4073cc5a6"
		  "0080f5dcec397a5a8c523082bfa41771568903aa554ec06ba8475ca9050fb7d5"
		  "1b" },
	};
	uint8_t key[32], sig[65], want[65];
	char addr[43], hex[131];
	unhex(WEB3_KEY, key, 32);

	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		unhex(v[i].sig, want, 65);
		/* recovery of the published signature gives the published signer */
		assert_int_equal(ap_auth_recover(v[i].msg, strlen(v[i].msg), want, addr), 0);
		assert_string_equal(addr, WEB3_ADDR);
		/* and signing (RFC 6979, low s) reproduces it byte for byte */
		assert_int_equal(ap_auth_personal_sign(key, v[i].msg, strlen(v[i].msg), sig), 0);
		tohex(sig, 65, hex);
		assert_string_equal(hex, v[i].sig);
	}

	/* another message recovers to some other address, not an error */
	unhex(v[0].sig, want, 65);
	assert_int_equal(ap_auth_recover("Some datA", 9, want, addr), 0);
	assert_string_not_equal(addr, WEB3_ADDR);

	/* v other than 27/28, r or s zero or >= n: not a signature */
	uint8_t bad[65];
	static const uint8_t bad_v[] = { 0, 1, 26, 29, 0x25 };
	for (size_t i = 0; i < sizeof bad_v; i++) {
		memcpy(bad, want, 65);
		bad[64] = bad_v[i];
		assert_int_equal(ap_auth_recover("Some data", 9, bad, addr), AP_EINVAL);
	}
	memcpy(bad, want, 65);
	memset(bad, 0, 32);
	assert_int_equal(ap_auth_recover("Some data", 9, bad, addr), AP_EINVAL);
	memcpy(bad, want, 65);
	memset(bad + 32, 0, 32);
	assert_int_equal(ap_auth_recover("Some data", 9, bad, addr), AP_EINVAL);
	memcpy(bad, want, 65);
	unhex(ORDER_N, bad, 32);
	assert_int_equal(ap_auth_recover("Some data", 9, bad, addr), AP_EINVAL);
	memcpy(bad, want, 65);
	unhex(ORDER_N, bad + 32, 32);
	assert_int_equal(ap_auth_recover("Some data", 9, bad, addr), AP_EINVAL);

	/* an invalid key cannot sign */
	memset(key, 0, 32);
	assert_int_equal(ap_auth_personal_sign(key, "x", 1, sig), AP_EINVAL);
}

/* ---- the bearer token ---------------------------------------------------- */

static void test_token_round_trip(void **state)
{
	(void)state;
	uint8_t key[32];
	char tok[160];
	unhex(DEV_KEY, key, 32);

	assert_int_equal(ap_auth_sign(key, DEV_ADDR, NOW, tok, sizeof tok), 0);
	/* the Go operator's spelling: decimal epoch, 130 lower-case hex, v 1b/1c */
	assert_int_equal(strlen(tok), strlen("Bearer 1700000000.") + 130);
	assert_memory_equal(tok, "Bearer 1700000000.", 18);
	for (const char *p = tok + 18; *p; p++)
		assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
	assert_true(strcmp(tok + 146, "1b") == 0 || strcmp(tok + 146, "1c") == 0);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_OK);

	/* the signature is what personal_sign gives for the upstream message */
	uint8_t sig[65];
	char hex[131];
	const char *msg = "Operator:" DEV_ADDR "Epoch:1700000000";
	assert_int_equal(ap_auth_personal_sign(key, msg, strlen(msg), sig), 0);
	tohex(sig, 65, hex);
	assert_string_equal(tok + 18, hex);

	/* a token made with a fresh key verifies for that key's address */
	uint8_t k2[32];
	char a2[43];
	assert_int_equal(ap_auth_key_generate(k2), 0);
	assert_int_equal(ap_auth_address(k2, a2), 0);
	assert_int_equal(ap_auth_sign(k2, a2, NOW, tok, sizeof tok), 0);
	assert_int_equal(ap_auth_verify(tok, a2, NOW, SKEW), AP_AUTH_OK);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_WRONG_SIGNER);
}

/* The Go operator signs its EIP-55 (mixed-case) address and sends that
 * address; the message uses the address as sent and the comparison with
 * the recovered (lower-case) address ignores case. */
static void test_token_address_as_sent(void **state)
{
	(void)state;
	uint8_t key[32], sig[65];
	char hex[131], tok[300];
	unhex(DEV_KEY, key, 32);

	const char *msg = "Operator:" DEV_ADDR_EIP55 "Epoch:1700000000";
	assert_int_equal(ap_auth_personal_sign(key, msg, strlen(msg), sig), 0);
	tohex(sig, 65, hex);
	token(tok, sizeof tok, "1700000000", hex);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR_EIP55, NOW, SKEW), AP_AUTH_OK);
	/* the same token with the address spelled differently signs another
	 * message, so someone else "signed" it */
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_WRONG_SIGNER);

	/* ap_auth_sign signs the spelling it is given */
	assert_int_equal(ap_auth_sign(key, DEV_ADDR_EIP55, NOW, tok, sizeof tok), 0);
	assert_string_equal(tok + 18, hex);

	/* hex in upper case, and with a 0x prefix, as web3 libraries print it */
	char up[131];
	for (size_t i = 0; i <= 130; i++)
		up[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 'a' + 'A' : hex[i]);
	token(tok, sizeof tok, "1700000000", up);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR_EIP55, NOW, SKEW), AP_AUTH_OK);
	char pre[140];
	snprintf(pre, sizeof pre, "0x%s", hex);
	token(tok, sizeof tok, "1700000000", pre);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR_EIP55, NOW, SKEW), AP_AUTH_OK);
	snprintf(pre, sizeof pre, "0X%s", up);
	token(tok, sizeof tok, "1700000000", pre);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR_EIP55, NOW, SKEW), AP_AUTH_OK);
	/* leading zeros in the epoch: the message spells it as %d does */
	token(tok, sizeof tok, "001700000000", hex);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR_EIP55, NOW, SKEW), AP_AUTH_OK);
}

static void test_token_missing_and_malformed(void **state)
{
	(void)state;
	uint8_t key[32];
	char good[160], tok[400], hex[300];
	unhex(DEV_KEY, key, 32);
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, NOW, good, sizeof good), 0);
	const char *sig = good + 18; /* 130 hex digits */

	assert_int_equal(ap_auth_verify(NULL, DEV_ADDR, NOW, SKEW), AP_AUTH_MISSING);
	assert_int_equal(ap_auth_verify("", DEV_ADDR, NOW, SKEW), AP_AUTH_MISSING);

	/* the claimed address must be an address */
	assert_int_equal(ap_auth_verify(good, NULL, NOW, SKEW), AP_AUTH_MALFORMED);
	assert_int_equal(ap_auth_verify(good, "", NOW, SKEW), AP_AUTH_MALFORMED);
	assert_int_equal(ap_auth_verify(good, DEV_ADDR + 2, NOW, SKEW), AP_AUTH_MALFORMED);
	assert_int_equal(ap_auth_verify(good, "0xf39fd6e51aad88f6f4ce6ab8827279cfffb9226",
					NOW, SKEW), AP_AUTH_MALFORMED);
	assert_int_equal(ap_auth_verify(good, "0xf39fd6e51aad88f6f4ce6ab8827279cfffb922661",
					NOW, SKEW), AP_AUTH_MALFORMED);
	assert_int_equal(ap_auth_verify(good, "0xg39fd6e51aad88f6f4ce6ab8827279cfffb92266",
					NOW, SKEW), AP_AUTH_MALFORMED);
	assert_int_equal(ap_auth_verify(good, "0Xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
					NOW, SKEW), AP_AUTH_MALFORMED);

	const char *bad[] = {
		"Bearer",
		"Bearer ",
		"Basic 1700000000.00",
		"Bearer1700000000.",
		"1700000000.",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(ap_auth_verify(bad[i], DEV_ADDR, NOW, SKEW),
				 AP_AUTH_MALFORMED);

	/* the scheme: case and spacing as the Go operator writes it */
	snprintf(tok, sizeof tok, "bearer 1700000000.%s", sig);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	snprintf(tok, sizeof tok, "Bearer  1700000000.%s", sig);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	snprintf(tok, sizeof tok, " Bearer 1700000000.%s", sig);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	/* no dot */
	snprintf(tok, sizeof tok, "Bearer 1700000000%s", sig);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	snprintf(tok, sizeof tok, "Bearer 1700000000");
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);

	/* bad epochs: empty, signed, not decimal, too big for int64 */
	static const char *epochs[] = {
		"", "-1700000000", "+1700000000", " 1700000000", "1700000000 ",
		"17000000o0", "0x6553f100", "1.7e9", "9223372036854775808",
		"99999999999999999999",
	};
	for (size_t i = 0; i < sizeof epochs / sizeof epochs[0]; i++) {
		token(tok, sizeof tok, epochs[i], sig);
		assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	}
	/* INT64_MAX itself parses (and is then in the future) */
	token(tok, sizeof tok, "9223372036854775807", sig);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_FUTURE);

	/* bad signature text: short, long, not hex, trailing bytes, bare 0x */
	snprintf(hex, sizeof hex, "%.128s", sig);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	snprintf(hex, sizeof hex, "%.129s", sig);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	snprintf(hex, sizeof hex, "%s00", sig);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	snprintf(hex, sizeof hex, "%s", sig);
	hex[17] = 'g';
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	static const char *trailers[] = { " ", "\n", "\r\n", ".", "\t" };
	for (size_t i = 0; i < sizeof trailers / sizeof trailers[0]; i++) {
		snprintf(hex, sizeof hex, "%s%s", sig, trailers[i]);
		assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
						DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	}
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", "0x"),
					DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	snprintf(hex, sizeof hex, "0x0x%s", sig);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	snprintf(hex, sizeof hex, "%.*s", 130, sig);
	hex[60] = '\0'; /* an embedded NUL is where a C string ends */
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);

	/* v must be 27 or 28: raw recovery ids 0/1 and EIP-155 v are refused */
	static const char *vs[] = { "00", "01", "1a", "1d", "25", "26", "ff" };
	for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
		snprintf(hex, sizeof hex, "%.128s%s", sig, vs[i]);
		assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
						DEV_ADDR, NOW, SKEW), AP_AUTH_MALFORMED);
	}
}

static void test_token_bad_signature(void **state)
{
	(void)state;
	char tok[400], hex[300];
	static const char *zero64 =
		"0000000000000000000000000000000000000000000000000000000000000000";
	static const char *one64 =
		"0000000000000000000000000000000000000000000000000000000000000001";

	/* r or s zero, or not below the group order */
	snprintf(hex, sizeof hex, "%s%s1b", zero64, one64);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_BAD_SIGNATURE);
	snprintf(hex, sizeof hex, "%s%s1c", one64, zero64);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_BAD_SIGNATURE);
	snprintf(hex, sizeof hex, "%s%s1b", ORDER_N, one64);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_BAD_SIGNATURE);
	snprintf(hex, sizeof hex, "%s%s1b", one64, ORDER_N);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_BAD_SIGNATURE);
	/* r = 5 is the x of no curve point (x^3 + 7 = 132 is not a square
	 * modulo p), so no key recovers from it */
	snprintf(hex, sizeof hex,
		 "0000000000000000000000000000000000000000000000000000000000000005%s1b",
		 one64);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1700000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_BAD_SIGNATURE);

	/* the clock is checked before any curve arithmetic */
	snprintf(hex, sizeof hex, "%s%s1b", zero64, one64);
	assert_int_equal(ap_auth_verify(token(tok, sizeof tok, "1600000000", hex),
					DEV_ADDR, NOW, SKEW), AP_AUTH_EXPIRED);
}

static void test_token_wrong_signer(void **state)
{
	(void)state;
	uint8_t dev[32], web3[32];
	char tok[160];
	unhex(DEV_KEY, dev, 32);
	unhex(WEB3_KEY, web3, 32);

	/* the web3 key signs a token claiming to be the dev operator */
	assert_int_equal(ap_auth_sign(web3, DEV_ADDR, NOW, tok, sizeof tok), 0);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_WRONG_SIGNER);
	/* a real dev token presented for another address */
	assert_int_equal(ap_auth_sign(dev, DEV_ADDR, NOW, tok, sizeof tok), 0);
	assert_int_equal(ap_auth_verify(tok, WEB3_ADDR, NOW, SKEW), AP_AUTH_WRONG_SIGNER);
	/* a token for one epoch with its epoch changed */
	tok[16] = '1'; /* 1700000000 -> 1700000001 */
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), AP_AUTH_WRONG_SIGNER);
	/* one flipped bit in s */
	assert_int_equal(ap_auth_sign(dev, DEV_ADDR, NOW, tok, sizeof tok), 0);
	tok[100] = tok[100] == '0' ? '1' : '0';
	ap_auth_result r = ap_auth_verify(tok, DEV_ADDR, NOW, SKEW);
	assert_true(r == AP_AUTH_WRONG_SIGNER || r == AP_AUTH_BAD_SIGNATURE);
	/* the other v recovers the other candidate key */
	assert_int_equal(ap_auth_sign(dev, DEV_ADDR, NOW, tok, sizeof tok), 0);
	tok[147] = tok[147] == 'b' ? 'c' : 'b';
	r = ap_auth_verify(tok, DEV_ADDR, NOW, SKEW);
	assert_true(r == AP_AUTH_WRONG_SIGNER || r == AP_AUTH_BAD_SIGNATURE);
}

static void test_token_clock(void **state)
{
	(void)state;
	uint8_t key[32];
	char tok[160];
	unhex(DEV_KEY, key, 32);

	/* |now - epoch| <= max_skew_s, both edges inclusive */
	static const struct {
		int64_t epoch;
		ap_auth_result want;
	} cases[] = {
		{ NOW, AP_AUTH_OK },
		{ NOW - SKEW, AP_AUTH_OK },
		{ NOW + SKEW, AP_AUTH_OK },
		{ NOW - SKEW - 1, AP_AUTH_EXPIRED },
		{ NOW + SKEW + 1, AP_AUTH_FUTURE },
		{ 0, AP_AUTH_EXPIRED },
		{ NOW + 86400, AP_AUTH_FUTURE },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_int_equal(ap_auth_sign(key, DEV_ADDR, cases[i].epoch, tok, sizeof tok), 0);
		assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, SKEW), cases[i].want);
	}

	/* replay: a token that was good is refused once the window passed */
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, NOW, tok, sizeof tok), 0);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW + SKEW, SKEW), AP_AUTH_OK);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW + SKEW + 1, SKEW), AP_AUTH_EXPIRED);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW + 3600, SKEW), AP_AUTH_EXPIRED);

	/* skew 0: only the exact second; a negative skew counts as 0 */
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, 0), AP_AUTH_OK);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW + 1, 0), AP_AUTH_EXPIRED);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW - 1, 0), AP_AUTH_FUTURE);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, -5), AP_AUTH_OK);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW + 1, -5), AP_AUTH_EXPIRED);

	/* extreme clocks and epochs do not overflow */
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, INT64_MAX, SKEW), AP_AUTH_EXPIRED);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, INT64_MIN, SKEW), AP_AUTH_FUTURE);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, NOW, INT64_MAX), AP_AUTH_OK);
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, INT64_MAX, tok, sizeof tok), 0);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, INT64_MIN, INT64_MAX), AP_AUTH_FUTURE);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, INT64_MAX, 0), AP_AUTH_OK);
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, 0, tok, sizeof tok), 0);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, INT64_MAX, INT64_MAX), AP_AUTH_OK);
	assert_int_equal(ap_auth_verify(tok, DEV_ADDR, INT64_MAX, SKEW), AP_AUTH_EXPIRED);
}

static void test_sign_arguments(void **state)
{
	(void)state;
	uint8_t key[32];
	char tok[160];
	unhex(DEV_KEY, key, 32);

	assert_int_equal(ap_auth_sign(key, NULL, NOW, tok, sizeof tok), AP_EINVAL);
	assert_int_equal(ap_auth_sign(key, "0x1234", NOW, tok, sizeof tok), AP_EINVAL);
	assert_int_equal(ap_auth_sign(key, DEV_ADDR + 2, NOW, tok, sizeof tok), AP_EINVAL);
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, -1, tok, sizeof tok), AP_EINVAL);
	uint8_t zero[32] = { 0 };
	assert_int_equal(ap_auth_sign(zero, DEV_ADDR, NOW, tok, sizeof tok), AP_EINVAL);

	/* 160 bytes hold the longest token (epoch INT64_MAX); less may not */
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, INT64_MAX, tok, 160), 0);
	assert_int_equal(strlen(tok), 7 + 19 + 1 + 130);
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, INT64_MAX, tok, 158), 0);
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, INT64_MAX, tok, 157), AP_ELIMIT);
	assert_string_equal(tok, "");
	assert_int_equal(ap_auth_sign(key, DEV_ADDR, NOW, tok, 0), AP_ELIMIT);
}

static void test_result_names(void **state)
{
	(void)state;
	assert_string_equal(ap_auth_result_name(AP_AUTH_OK), "ok");
	assert_string_equal(ap_auth_result_name(AP_AUTH_MISSING), "missing");
	assert_string_equal(ap_auth_result_name(AP_AUTH_MALFORMED), "malformed");
	assert_string_equal(ap_auth_result_name(AP_AUTH_BAD_SIGNATURE), "bad_signature");
	assert_string_equal(ap_auth_result_name(AP_AUTH_WRONG_SIGNER), "wrong_signer");
	assert_string_equal(ap_auth_result_name(AP_AUTH_EXPIRED), "expired");
	assert_string_equal(ap_auth_result_name(AP_AUTH_FUTURE), "future");
	assert_string_equal(ap_auth_result_name((ap_auth_result)99), "unknown");
}

/* ---- key files ----------------------------------------------------------- */

static void test_key_generate(void **state)
{
	(void)state;
	uint8_t a[32], b[32];
	char addr[43];
	assert_int_equal(ap_auth_key_generate(a), 0);
	assert_int_equal(ap_auth_key_generate(b), 0);
	assert_memory_not_equal(a, b, 32);
	assert_int_equal(ap_auth_address(a, addr), 0);
	assert_int_equal(strlen(addr), 42);
}

static void test_key_save_load(void **state)
{
	fixture *t = *state;
	uint8_t key[32], back[32];
	char text[200];
	struct stat st;

	unhex(DEV_KEY, key, 32);
	/* exactly 0600 whatever the umask: wide open, or one that would take
	 * the owner's write bit away */
	static const mode_t umasks[] = { 0, 0022, 0277 };
	for (size_t i = 0; i < sizeof umasks / sizeof umasks[0]; i++) {
		char name[32];
		snprintf(name, sizeof name, "key%zu", i);
		const char *path = tmp_path(t, name);
		mode_t old = umask(umasks[i]);
		int rc = ap_auth_key_save(path, key, t->err, sizeof t->err);
		umask(old);
		if (rc)
			fail_msg("%s", t->err);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		tmpdir_read(path, text, sizeof text);
		assert_string_equal(text, DEV_KEY "\n");
		memset(back, 0, 32);
		assert_int_equal(ap_auth_key_load(path, back, t->err, sizeof t->err), 0);
		assert_memory_equal(back, key, 32);
	}

	/* a generated key round-trips too */
	uint8_t fresh[32];
	assert_int_equal(ap_auth_key_generate(fresh), 0);
	const char *path = tmp_path(t, "fresh");
	assert_int_equal(ap_auth_key_save(path, fresh, t->err, sizeof t->err), 0);
	assert_int_equal(ap_auth_key_load(path, back, t->err, sizeof t->err), 0);
	assert_memory_equal(back, fresh, 32);

	/* never overwrite: the file keeps its key */
	unhex(WEB3_KEY, key, 32);
	assert_int_equal(ap_auth_key_save(path, key, t->err, sizeof t->err), AP_EEXIST);
	assert_non_null(strstr(t->err, "already exists"));
	assert_non_null(strstr(t->err, path));
	assert_int_equal(ap_auth_key_load(path, back, t->err, sizeof t->err), 0);
	assert_memory_equal(back, fresh, 32);

	/* nor write through a symlink, even a dangling one */
	char link[PATH_MAX];
	snprintf(link, sizeof link, "%s/link", t->dir);
	assert_int_equal(symlink(tmp_path(t, "target"), link), 0);
	assert_int_equal(ap_auth_key_save(link, key, t->err, sizeof t->err), AP_EEXIST);
	assert_int_equal(access(tmp_path(t, "target"), F_OK), -1);

	/* a directory that does not exist: I/O error, nothing created */
	snprintf(link, sizeof link, "%s/no/such/dir", t->dir);
	assert_int_equal(ap_auth_key_save(link, key, t->err, sizeof t->err), AP_EIO);
	assert_non_null(strstr(t->err, "No such file or directory"));

	/* an invalid key is not saved */
	uint8_t zero[32] = { 0 };
	assert_int_equal(ap_auth_key_save(tmp_path(t, "zero"), zero, t->err, sizeof t->err),
			 AP_EINVAL);
	assert_int_equal(access(t->path, F_OK), -1);
}

static void test_key_load_formats(void **state)
{
	fixture *t = *state;
	uint8_t key[32], want[32];
	unhex(DEV_KEY, want, 32);

	/* accepted: 0x prefix, either case, no newline, CRLF; any file mode */
	static const char *good[] = {
		DEV_KEY "\n",
		DEV_KEY,
		"0x" DEV_KEY "\n",
		"0X" DEV_KEY "\r\n",
		"AC0974BEC39A17E36BA4A6B4D238FF944BACB478CBED5EFCAE784D7BF4F2FF80\n",
		DEV_KEY " \n\n",
	};
	const char *path = tmp_path(t, "k");
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		tmpdir_write(path, good[i], 0644);
		assert_int_equal(chmod(path, i % 2 ? 0644 : 0400), 0);
		memset(key, 0, 32);
		int rc = ap_auth_key_load(path, key, t->err, sizeof t->err);
		if (rc)
			fail_msg("case %zu: %s", i, t->err);
		assert_memory_equal(key, want, 32);
		assert_int_equal(unlink(path), 0);
	}

	/* refused, with a message naming the file but never the content */
	static const char *bad[] = {
		"",
		"\n",
		"ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff8\n",
		"ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff800\n",
		"ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ffzz\n",
		" ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n",
		"ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n"
		"ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n",
		"ac0974bec39a17e36ba4a6b4d238ff944bacb478 cbed5efcae784d7bf4f2ff80\n",
		"0x\n",
		"0000000000000000000000000000000000000000000000000000000000000000\n",
		ORDER_N "\n",
		"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n",
		"{\"address\":\"f39fd6e51aad88f6f4ce6ab8827279cfffb92266\",\"crypto\":{}}\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		tmpdir_write(path, bad[i], 0600);
		assert_int_equal(ap_auth_key_load(path, key, t->err, sizeof t->err),
				 AP_EINVAL);
		assert_non_null(strstr(t->err, path));
		assert_null(strstr(t->err, "ac0974"));
		assert_null(strstr(t->err, "ffffffff"));
		assert_int_equal(unlink(path), 0);
	}

	/* a big file is refused without reading it all */
	char *big = malloc(100000);
	assert_non_null(big);
	memset(big, 'a', 99999);
	big[99999] = '\0';
	tmpdir_write(path, big, 0600);
	free(big);
	assert_int_equal(ap_auth_key_load(path, key, t->err, sizeof t->err), AP_EINVAL);
	assert_int_equal(unlink(path), 0);

	/* missing file, a directory: cannot read */
	assert_int_equal(ap_auth_key_load(path, key, t->err, sizeof t->err), AP_EIO);
	assert_non_null(strstr(t->err, "No such file or directory"));
	assert_int_equal(ap_auth_key_load(t->dir, key, t->err, sizeof t->err), AP_EIO);
	assert_non_null(strstr(t->err, "Is a directory"));
	/* err may be NULL */
	assert_int_equal(ap_auth_key_load(path, key, NULL, 0), AP_EIO);
}

/* The shipped development key is the documented Hardhat account #0. */
static void test_shipped_dev_key(void **state)
{
	fixture *t = *state;
	const char *srcdir = getenv("AP_SRCDIR");
	char path[PATH_MAX], addr[43];
	uint8_t key[32];
	snprintf(path, sizeof path, "%s/conf/dev-operator.key",
		 srcdir && srcdir[0] ? srcdir : ".");
	int rc = ap_auth_key_load(path, key, t->err, sizeof t->err);
	if (rc)
		fail_msg("%s", t->err);
	assert_int_equal(ap_auth_address(key, addr), 0);
	assert_string_equal(addr, DEV_ADDR);
}

/* ---- ap keygen ----------------------------------------------------------- */

/* Run `ap ARGS...` in process with stdout and stderr captured. */
static int run_cli(fixture *t, char *out, size_t outlen, char *errout,
		   size_t errlen, int argc, ...)
{
	char *argv[8];
	va_list ap;
	va_start(ap, argc);
	argv[0] = "ap";
	for (int i = 1; i < argc && i < 7; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	argv[argc] = NULL;

	tmpdir_capture cap;
	tmpdir_capture_begin(&cap, t->dir);
	int rc = ap_cli_main(argc, argv);
	tmpdir_capture_end(&cap, out, outlen, errout, errlen);
	return rc;
}

static void check_key_file(fixture *t, const char *path, const char *addr_line)
{
	struct stat st;
	uint8_t key[32];
	char addr[43], line[50];
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	int rc = ap_auth_key_load(path, key, t->err, sizeof t->err);
	if (rc)
		fail_msg("%s", t->err);
	assert_int_equal(ap_auth_address(key, addr), 0);
	snprintf(line, sizeof line, "%s\n", addr);
	assert_string_equal(addr_line, line);
}

static void test_keygen_command(void **state)
{
	fixture *t = *state;
	char out[4096], err[4096], first[4096], again[4096];
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/op.key", t->dir);

	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 3, "keygen", path),
			 AP_EXIT_OK);
	assert_int_equal(strlen(out), 43); /* 0x + 40 + newline */
	assert_memory_equal(out, "0x", 2);
	assert_string_equal(err, "");
	check_key_file(t, path, out);
	tmpdir_read(path, first, sizeof first);

	/* a second run refuses to overwrite and leaves the key alone */
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 3, "keygen", path),
			 AP_EXIT_FAIL);
	assert_string_equal(out, "");
	assert_non_null(strstr(err, "already exists"));
	tmpdir_read(path, again, sizeof again);
	assert_string_equal(first, again);

	/* `--` lets a file name start with a dash */
	char cwd[PATH_MAX];
	assert_non_null(getcwd(cwd, sizeof cwd));
	assert_int_equal(chdir(t->dir), 0);
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 4, "keygen", "--", "-k"),
			 AP_EXIT_OK);
	check_key_file(t, "-k", out);

	/* unwritable place: runtime failure */
	snprintf(path, sizeof path, "%s/missing/op.key", t->dir);
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 3, "keygen", path),
			 AP_EXIT_FAIL);
	assert_non_null(strstr(err, "No such file or directory"));

	/* usage errors */
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 2, "keygen"),
			 AP_EXIT_USAGE);
	assert_non_null(strstr(err, "usage: ap keygen FILE"));
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 4, "keygen", "a", "b"),
			 AP_EXIT_USAGE);
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 3, "keygen", "--force"),
			 AP_EXIT_USAGE);
	assert_non_null(strstr(err, "unknown option '--force'"));
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 3, "keygen", ""),
			 AP_EXIT_USAGE);
	assert_int_equal(access("a", F_OK), -1);

	/* help */
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 3, "keygen", "--help"),
			 AP_EXIT_OK);
	assert_non_null(strstr(out, "usage: ap keygen FILE"));
	assert_non_null(strstr(out, "0600"));
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 3, "help", "keygen"),
			 AP_EXIT_OK);
	assert_non_null(strstr(out, "usage: ap keygen FILE"));
	assert_int_equal(run_cli(t, out, sizeof out, err, sizeof err, 2, "help"), AP_EXIT_OK);
	assert_non_null(strstr(out, "print its address\n"));
	assert_int_equal(chdir(cwd), 0);
}

/* The built binary, as a user runs it: exit codes and stdout. */
static int run_binary(fixture *t, const char *ap, char *out, size_t outlen,
		      const char *arg1, const char *arg2)
{
	char out_path[PATH_MAX + 16];
	snprintf(out_path, sizeof out_path, "%s/bin-stdout", t->dir);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(out_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
		int null = open("/dev/null", O_WRONLY);
		if (fd < 0 || null < 0 || dup2(fd, 1) < 0 || dup2(null, 2) < 0)
			_exit(127);
		execl(ap, "ap", arg1, arg2, (char *)NULL);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	assert_true(WIFEXITED(status));
	tmpdir_read(out_path, out, outlen);
	return WEXITSTATUS(status);
}

static void test_keygen_binary(void **state)
{
	fixture *t = *state;
	const char *builddir = getenv("AP_BUILDDIR");
	char ap[PATH_MAX], path[PATH_MAX], out[4096];
	snprintf(ap, sizeof ap, "%s/ap", builddir && builddir[0] ? builddir : ".");
	if (access(ap, X_OK) != 0) {
		/* `make check` always builds it; a bare run of this binary may not */
		print_message("skipped: no %s (run through make check)\n", ap);
		skip();
	}
	snprintf(path, sizeof path, "%s/bin.key", t->dir);
	assert_int_equal(run_binary(t, ap, out, sizeof out, "keygen", path), 0);
	check_key_file(t, path, out);
	assert_int_equal(run_binary(t, ap, out, sizeof out, "keygen", path), 1);
	assert_string_equal(out, "");
	assert_int_equal(run_binary(t, ap, out, sizeof out, "keygen", NULL), 2);
	assert_int_equal(run_binary(t, ap, out, sizeof out, "keygen", "--help"), 0);
	assert_non_null(strstr(out, "usage: ap keygen FILE"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keccak_vectors),
		cmocka_unit_test(test_address_of_known_keys),
		cmocka_unit_test(test_personal_sign_vectors),
		cmocka_unit_test(test_token_round_trip),
		cmocka_unit_test(test_token_address_as_sent),
		cmocka_unit_test(test_token_missing_and_malformed),
		cmocka_unit_test(test_token_bad_signature),
		cmocka_unit_test(test_token_wrong_signer),
		cmocka_unit_test(test_token_clock),
		cmocka_unit_test(test_sign_arguments),
		cmocka_unit_test(test_result_names),
		cmocka_unit_test(test_key_generate),
		cmocka_unit_test_setup_teardown(test_key_save_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_load_formats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shipped_dev_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keygen_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keygen_binary, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
