/* The conf(5) man pages against the key tables (issue #8).
 *
 * ap_config_key_describe() reports each key as the loader sees it; the
 * pages generated from it by man/mangen ($AP_BUILDDIR/man/) must document
 * exactly the table's keys, with their types and defaults; and mangen must
 * refuse a conf file that has drifted from the table (a key without a
 * comment, a comment with the wrong range, a key missing, an unknown key),
 * since that refusal is what keeps the pages honest. Each test that writes
 * files gets its own temp dir. */
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/config.h"
#include "ap/error.h"

typedef struct fixture {
	char dir[PATH_MAX];
} fixture;

static const char *env_dir(const char *name)
{
	const char *v = getenv(name);
	if (!v || !v[0])
		fail_msg("%s is not set (run from make check)", name);
	return v;
}

static int setup(void **state)
{
	fixture *t = calloc(1, sizeof *t);
	assert_non_null(t);
	const char *tmp = getenv("TMPDIR");
	snprintf(t->dir, sizeof t->dir, "%s/ap-test-man.XXXXXX",
		 tmp && tmp[0] ? tmp : "/tmp");
	assert_non_null(mkdtemp(t->dir));
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	fixture *t = *state;
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
	assert_int_equal(system(cmd), 0);
	free(t);
	return 0;
}

/* The whole file, NUL-terminated; the caller frees it. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		fail_msg("cannot read %s", path);
	char *text = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (cap - len < 4096) {
			cap += 65536;
			text = realloc(text, cap);
			assert_non_null(text);
		}
		size_t got = fread(text + len, 1, cap - len - 1, f);
		len += got;
		if (got == 0)
			break;
	}
	text[len] = '\0';
	fclose(f);
	return text;
}

static void spit(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* `text` with "-" written as troff's "\-", as mangen writes it. */
static void troff_escape(char *out, size_t outlen, const char *text)
{
	size_t used = 0;
	for (; *text && used + 3 < outlen; text++) {
		if (*text == '-')
			out[used++] = '\\';
		out[used++] = *text;
	}
	out[used] = '\0';
}

/* ---- ap_config_key_describe ---------------------------------------------- */

static void test_describe_matches_key_name(void **state)
{
	(void)state;
	for (int kind = 0; kind <= 1; kind++) {
		size_t i = 0;
		ap_config_key_info info;
		for (; ap_config_key_name(kind, i); i++) {
			assert_int_equal(ap_config_key_describe(kind, i, &info), 0);
			assert_string_equal(info.name, ap_config_key_name(kind, i));
			assert_true(info.type[0] != '\0');
			assert_true(info.default_value[0] != '\0');
		}
		assert_true(i > 10);
		assert_int_equal(ap_config_key_describe(kind, i, &info), AP_ENOTFOUND);
	}
	ap_config_key_info info;
	assert_int_equal(ap_config_key_describe(2, 0, &info), AP_ENOTFOUND);
	assert_int_equal(ap_config_key_describe(-1, 0, &info), AP_ENOTFOUND);
}

static void describe(int kind, const char *name, ap_config_key_info *info)
{
	for (size_t i = 0; ap_config_key_describe(kind, i, info) == 0; i++)
		if (strcmp(info->name, name) == 0)
			return;
	fail_msg("no key '%s' in table %d", name, kind);
}

static void test_describe_values(void **state)
{
	(void)state;
	ap_config_key_info info;

	describe(0, "operators.stabilization_ms", &info);
	assert_string_equal(info.type, "integer");
	assert_string_equal(info.default_value, "10000");
	assert_string_equal(info.range, "0 .. 604800000");
	assert_true(info.has_range);
	assert_true(info.min == 0.0 && info.max == 604800000.0);
	assert_string_equal(info.values, "");

	describe(0, "storage.durability", &info);
	assert_string_equal(info.type, "string");
	assert_string_equal(info.values, "\"sync\", \"write_nosync\", \"nosync\"");
	assert_string_equal(info.default_value, "\"write_nosync\"");
	assert_false(info.has_range);
	assert_string_equal(info.range, "");

	describe(0, "storage.dir", &info);
	assert_string_equal(info.type, "string, not empty");
	assert_string_equal(info.default_value, "\"./data\"");

	describe(0, "admin_listen", &info);
	assert_string_equal(info.type, "string, HOST:PORT or unix:PATH");
	describe(0, "metrics_listen", &info);
	assert_string_equal(info.type, "string, HOST:PORT or empty");

	describe(0, "operators.approved", &info);
	assert_string_equal(info.default_value,
			    "[ \"0x997e5d40a32c44a3d93e59fc55c4fd20b7d2d49d\" ]");

	describe(0, "max_message_bytes", &info);
	assert_string_equal(info.range, "1024 .. 1073741824");

	describe(1, "backoff.factor", &info);
	assert_string_equal(info.type, "number");
	assert_string_equal(info.default_value, "2.0");
	assert_string_equal(info.range, "1.0 .. 10.0");
	describe(1, "backoff.jitter", &info);
	assert_string_equal(info.default_value, "0.25");

	describe(1, "chain_ids", &info);
	assert_string_equal(info.type, "list of integers");
	assert_string_equal(info.default_value, "[]");
	assert_string_equal(info.range, ">= 1");

	describe(1, "capabilities.event_monitoring", &info);
	assert_string_equal(info.type, "boolean");
	assert_string_equal(info.default_value, "true");

	describe(1, "address", &info);
	assert_string_equal(info.type, "string, an address (0x and 40 hex digits)");
}

/* ---- the generated pages ------------------------------------------------- */

/* Every ".TP\n.B name" entry of a page must be a key of the table or a group
 * holding some, and every key of the table must have one, with its type and
 * default. */
static void check_page(int kind, const char *page)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/man/%s", env_dir("AP_BUILDDIR"), page);
	char *text = slurp(path);

	size_t n_entries = 0;
	for (char *p = strstr(text, "\n.TP\n.B "); p; p = strstr(p + 1, "\n.TP\n.B ")) {
		char name[256];
		const char *start = p + strlen("\n.TP\n.B ");
		size_t len = strcspn(start, "\n");
		assert_true(len < sizeof name);
		memcpy(name, start, len);
		name[len] = '\0';
		bool known = false;
		ap_config_key_info info;
		for (size_t i = 0; !known && ap_config_key_describe(kind, i, &info) == 0; i++)
			known = strcmp(info.name, name) == 0 ||
				(strncmp(info.name, name, len) == 0 && info.name[len] == '.');
		if (!known)
			fail_msg("%s documents '%s', which is not in key table %d",
				 page, name, kind);
		n_entries++;
	}

	size_t n_keys = 0;
	ap_config_key_info info;
	for (; ap_config_key_describe(kind, n_keys, &info) == 0; n_keys++) {
		char head[300];
		snprintf(head, sizeof head, "\n.TP\n.B %s\n", info.name);
		char *entry = strstr(text, head);
		if (!entry) {
			fail_msg("%s does not document key '%s'", page, info.name);
			continue; /* not reached: tells GCC entry is not NULL below */
		}
		char *end = strstr(entry + 1, "\n.TP\n");
		if (end)
			*end = '\0';
		char want[512], escaped[400];
		troff_escape(escaped, sizeof escaped, info.type);
		snprintf(want, sizeof want, "\nType: %s", escaped);
		if (!strstr(entry, want))
			fail_msg("%s: key '%s' lacks \"%s\"", page, info.name, want + 1);
		troff_escape(escaped, sizeof escaped, info.default_value);
		snprintf(want, sizeof want, "\nDefault: %s.", escaped);
		const char *at = strstr(entry, want);
		if (!at || (at[strlen(want)] != '\n' && at[strlen(want)] != '\0'))
			fail_msg("%s: key '%s' lacks the line \"%s\"", page,
				 info.name, want + 1);
		if (info.range[0]) {
			troff_escape(escaped, sizeof escaped, info.range);
			if (!strstr(entry, escaped))
				fail_msg("%s: key '%s' lacks its range %s", page,
					 info.name, info.range);
		}
		if (end)
			*end = '\n';
	}
	assert_true(n_entries >= n_keys);
	assert_null(strstr(text, "@KEYS@"));
	free(text);
}

static void test_aggregator_page(void **state)
{
	(void)state;
	check_page(0, "ap-aggregator.conf.5");
}

static void test_operator_page(void **state)
{
	(void)state;
	check_page(1, "ap-operator.conf.5");
}

/* ---- mangen refuses drift ----------------------------------------------- */

/* Run mangen on `conf` (the aggregator table); returns its exit status and
 * leaves its stderr in t->dir/err. */
static int run_mangen(fixture *t, const char *conf)
{
	char cmd[4 * PATH_MAX];
	snprintf(cmd, sizeof cmd,
		 "'%s/man/mangen' aggregator '%s' '%s/man/ap-aggregator.conf.5.in' "
		 ">'%s/out' 2>'%s/err'",
		 env_dir("AP_BUILDDIR"), conf, env_dir("AP_SRCDIR"), t->dir, t->dir);
	int status = system(cmd);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* Write the shipped aggregator.conf with `from` replaced by `to` (which
 * must occur) to t->dir/drift.conf, run mangen on it, and expect it to fail
 * naming `message`. */
static void expect_drift(fixture *t, const char *from, const char *to,
			 const char *message)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/conf/aggregator.conf", env_dir("AP_SRCDIR"));
	char *text = slurp(path);
	char *at = strstr(text, from);
	if (!at)
		fail_msg("conf/aggregator.conf has no \"%s\"", from);
	size_t head = (size_t)(at - text);
	char *drift = malloc(strlen(text) + strlen(to) + 1);
	assert_non_null(drift);
	memcpy(drift, text, head);
	strcpy(drift + head, to);
	strcat(drift, at + strlen(from));

	char conf[PATH_MAX + 16];
	snprintf(conf, sizeof conf, "%s/drift.conf", t->dir);
	spit(conf, drift);
	int status = run_mangen(t, conf);
	char err_path[PATH_MAX + 16];
	snprintf(err_path, sizeof err_path, "%s/err", t->dir);
	char *err = slurp(err_path);
	if (status != 1 || !strstr(err, message) || !strstr(err, "drift.conf"))
		fail_msg("mangen on a conf with \"%s\" -> \"%s\": exit %d, stderr "
			 "\"%s\", expected 1 and \"%s\"", from, to, status, err,
			 message);
	free(err);
	free(drift);
	free(text);
}

static void test_mangen_accepts_shipped_conf(void **state)
{
	fixture *t = *state;
	char conf[PATH_MAX];
	snprintf(conf, sizeof conf, "%s/conf/aggregator.conf", env_dir("AP_SRCDIR"));
	assert_int_equal(run_mangen(t, conf), 0);
}

static void test_mangen_refuses_drift(void **state)
{
	fixture *t = *state;
	/* a comment's range that the table does not have */
	expect_drift(t, "(1 .. 64)", "(1 .. 65)",
		     "key 'ticker.threads': its comment says 1 .. 65, the key "
		     "table in src/config.c says 1 .. 64");
	/* a key separated from its comment */
	expect_drift(t, "\nshutdown_timeout_ms =", "\n\nshutdown_timeout_ms =",
		     "key 'shutdown_timeout_ms' has no comment");
	/* a key of the table missing from the file */
	expect_drift(t, "  threads = 2;\n", "",
		     "key 'ticker.threads' of the key table in src/config.c is "
		     "not in this file");
	/* a key the table does not know */
	expect_drift(t, "\n# Largest request",
		     "\n# A new key.\nnew_key = 1;\n\n# Largest request",
		     "key 'new_key' is not in the key table");
	/* a group the table does not know */
	expect_drift(t, "\nticker = {", "\n# New.\nfresh = {\n  a = 1; # b\n};\nticker = {",
		     "group 'fresh' is not in the key table");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_describe_matches_key_name),
		cmocka_unit_test(test_describe_values),
		cmocka_unit_test(test_aggregator_page),
		cmocka_unit_test(test_operator_page),
		cmocka_unit_test_setup_teardown(test_mangen_accepts_shipped_conf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mangen_refuses_drift, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
