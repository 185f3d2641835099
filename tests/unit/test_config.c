/* Unit tests for src/config.c and `ap config check`.
 *
 * Each test runs in its own mkdtemp directory (removed afterwards) and
 * writes the files it loads there. Error tests compare the whole message,
 * "FILE:LINE: ..." included, and then check that the struct was left at
 * the defaults. The shipped conf/ files are read from $AP_SRCDIR (set by
 * `make check`) and must name every table key, document it, and load to
 * exactly the defaults, except for the development operator key they
 * ship (operators.approved, address, key_file). Leaks are caught by the
 * ASan build. */
#include <libconfig.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/cli.h"
#include "ap/config.h"
#include "ap/error.h"
#include "ap/log.h"
#include "tmpdir.h"

#define ADDR0 "0x997e5d40a32c44a3d93e59fc55c4fd20b7d2d49d"
#define ADDR1 "0x00000000000000000000000000000000000000a1"
#define ADDR2 "0xabcdefabcdefabcdefabcdefabcdefabcdefabcd"
/* conf/dev-operator.key's address (Hardhat test account #0) */
#define DEV_ADDR "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"

typedef struct fixture {
	char dir[1024];
	char path[PATH_MAX]; /* last file written */
	char err[1024];
} fixture;

/* ---- fixture ------------------------------------------------------------- */

static int setup(void **state)
{
	fixture *t = calloc(1, sizeof *t);
	if (!t)
		return -1;
	if (tmpdir_create(t->dir, sizeof t->dir, tmpdir_parent(), "config") != 0) {
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

/* Write `text` to DIR/name; the path is left in t->path. */
static const char *write_file(fixture *t, const char *name, const char *text)
{
	tmpdir_write(tmpdir_path(t->path, sizeof t->path, t->dir, name), text,
		     0666);
	return t->path;
}

static void src_path(char *out, size_t outlen, const char *rel)
{
	const char *srcdir = getenv("AP_SRCDIR");
	snprintf(out, outlen, "%s/%s", srcdir && srcdir[0] ? srcdir : ".", rel);
}

/* ---- the defaults, spelled out ------------------------------------------ */

/* Every aggregator default but operators.approved. */
static void check_aggregator_defaults_but_approved(const ap_config *c)
{
	assert_string_equal(c->listen, "127.0.0.1:2206");
	assert_string_equal(c->admin_listen, "unix:./data/admin.sock");
	assert_string_equal(c->storage.dir, "./data");
	assert_int_equal(c->storage.durability, AP_DURABILITY_WRITE_NOSYNC);
	assert_int_equal(c->operators.stabilization_ms, 10000);
	assert_int_equal(c->operators.resync_interval_ms, 5000);
	assert_int_equal(c->operators.send_timeout_ms, 2000);
	assert_int_equal(c->operators.reconnect_cooldown_ms, 0);
	assert_int_equal(c->operators.max_sessions, 10000);
	assert_int_equal(c->operators.keepalive_time_ms, 10000);
	assert_int_equal(c->operators.keepalive_timeout_ms, 5000);
	assert_int_equal(c->operators.restart_grace_ms, 30000);
	assert_string_equal(c->tls.cert_file, "");
	assert_string_equal(c->tls.key_file, "");
	assert_string_equal(c->tls.client_ca_file, "");
	assert_int_equal(c->max_message_bytes, 4194304);
	assert_int_equal(c->shutdown_timeout_ms, 5000);
	assert_int_equal(c->ticker.threads, 2);
	assert_int_equal(c->auth.mode, AP_AUTH_SIGNATURE);
	assert_int_equal(c->auth.max_skew_s, 30);
	assert_int_equal(c->log.level, AP_LOG_INFO);
	assert_int_equal(c->log.format, AP_LOG_TEXT);
	assert_string_equal(c->log.file, "");
	assert_string_equal(c->metrics_listen, "127.0.0.1:9206");
	assert_string_equal(c->admin.token, "");
}

static void check_aggregator_defaults(const ap_config *c)
{
	assert_int_equal(c->operators.n_approved, 1);
	assert_string_equal(c->operators.approved[0], ADDR0);
	check_aggregator_defaults_but_approved(c);
}

/* Every operator default but address and key_file. */
static void check_operator_defaults_but_key(const ap_operator_config *c)
{
	assert_string_equal(c->aggregator, "127.0.0.1:2206");
	assert_true(c->capabilities.event_monitoring);
	assert_true(c->capabilities.block_monitoring);
	assert_true(c->capabilities.time_monitoring);
	assert_int_equal(c->n_chain_ids, 0);
	assert_null(c->chain_ids);
	assert_int_equal(c->ping_interval_ms, 5000);
	assert_int_equal(c->backoff.initial_ms, 1000);
	assert_true(c->backoff.factor == 2.0);
	assert_int_equal(c->backoff.max_ms, 60000);
	assert_true(c->backoff.jitter == 0.25);
	assert_int_equal(c->backoff.reset_after_ms, 120000);
	assert_string_equal(c->tls.ca_file, "");
	assert_string_equal(c->tls.cert_file, "");
	assert_string_equal(c->tls.key_file, "");
	assert_string_equal(c->tls.server_name, "");
	assert_int_equal(c->log.level, AP_LOG_INFO);
	assert_int_equal(c->log.format, AP_LOG_TEXT);
	assert_string_equal(c->log.file, "");
}

static void check_operator_defaults(const ap_operator_config *c)
{
	assert_string_equal(c->address, ADDR0);
	assert_string_equal(c->key_file, "");
	check_operator_defaults_but_key(c);
}

/* Load `text` as an aggregator file and expect exactly
 * "PATH:LINE: <message>", with the struct left at the defaults. */
__attribute__((format(printf, 4, 5))) static void
expect_error(fixture *t, const char *text, int line, const char *fmt, ...)
{
	char msg[512], want[PATH_MAX + 600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	write_file(t, "ap.conf", text);
	snprintf(want, sizeof want, "%s:%d: %s", t->path, line, msg);

	ap_config cfg;
	assert_int_equal(ap_config_load(&cfg, t->path, t->err, sizeof t->err),
			 AP_ECONFIG);
	assert_string_equal(t->err, want);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);
}

__attribute__((format(printf, 4, 5))) static void
expect_operator_error(fixture *t, const char *text, int line,
		      const char *fmt, ...)
{
	char msg[512], want[PATH_MAX + 600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	write_file(t, "op.conf", text);
	snprintf(want, sizeof want, "%s:%d: %s", t->path, line, msg);

	ap_operator_config cfg;
	assert_int_equal(ap_operator_config_load(&cfg, t->path, t->err,
						 sizeof t->err),
			 AP_ECONFIG);
	assert_string_equal(t->err, want);
	check_operator_defaults(&cfg);
	ap_operator_config_free(&cfg);
}

static void expect_ok(fixture *t, const char *text, ap_config *cfg)
{
	write_file(t, "ap.conf", text);
	int rc = ap_config_load(cfg, t->path, t->err, sizeof t->err);
	if (rc != 0)
		fail_msg("load failed: %s", t->err);
}

/* ---- defaults ------------------------------------------------------------ */

static void test_aggregator_defaults(void **state)
{
	(void)state;
	ap_config cfg;
	assert_int_equal(ap_config_defaults(&cfg), 0);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);
	/* free zeroes, and a second free is harmless */
	assert_null(cfg.listen);
	ap_config_free(&cfg);
	ap_config_free(NULL);

	/* No path: the defaults alone. */
	char err[64];
	assert_int_equal(ap_config_load(&cfg, NULL, err, sizeof err), 0);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);
}

static void test_operator_defaults(void **state)
{
	(void)state;
	ap_operator_config cfg;
	assert_int_equal(ap_operator_config_defaults(&cfg), 0);
	check_operator_defaults(&cfg);
	ap_operator_config_free(&cfg);
	ap_operator_config_free(NULL);
}

static void test_empty_file_is_defaults(void **state)
{
	fixture *t = *state;
	ap_config cfg;
	expect_ok(t, "# nothing here\n", &cfg);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);

	ap_operator_config op;
	write_file(t, "op.conf", "");
	assert_int_equal(ap_operator_config_load(&op, t->path, t->err,
						 sizeof t->err), 0);
	check_operator_defaults(&op);
	ap_operator_config_free(&op);
}

/* ---- the shipped conf/ files ------------------------------------------- */

/* Every table key of `kind` is set in `file`, with a comment on its line or
 * on the line before, and the file holds nothing else (the loader rejects
 * unknown keys, checked by loading it). */
static void check_conf_covers_table(int kind, const char *file)
{
	config_t lc;
	config_init(&lc);
	if (!config_read_file(&lc, file))
		fail_msg("%s:%d: %s", file, config_error_line(&lc),
			 config_error_text(&lc));

	/* the file's lines, to find each key's comment */
	char *lines[512] = { 0 };
	size_t n_lines = 0;
	FILE *f = fopen(file, "r");
	assert_non_null(f);
	char buf[1024];
	while (n_lines < 512 && fgets(buf, sizeof buf, f))
		lines[n_lines++] = strdup(buf);
	fclose(f);

	size_t n_keys = 0;
	for (const char *key; (key = ap_config_key_name(kind, n_keys)); n_keys++) {
		config_setting_t *st = config_lookup(&lc, key);
		if (!st)
			fail_msg("%s: key '%s' is missing", file, key);
		unsigned line = config_setting_source_line(st);
		assert_true(line >= 1 && line <= n_lines);
		const char *here = lines[line - 1];
		const char *prev = line >= 2 ? lines[line - 2] : "";
		prev += strspn(prev, " \t");
		if (!strchr(here, '#') && prev[0] != '#')
			fail_msg("%s:%u: key '%s' has no comment", file, line, key);
	}
	assert_true(n_keys > 10);
	for (size_t i = 0; i < n_lines; i++)
		free(lines[i]);
	config_destroy(&lc);
}

static void test_aggregator_conf_file(void **state)
{
	fixture *t = *state;
	char file[PATH_MAX];
	src_path(file, sizeof file, "conf/aggregator.conf");
	check_conf_covers_table(0, file);

	ap_config cfg;
	int rc = ap_config_load(&cfg, file, t->err, sizeof t->err);
	if (rc)
		fail_msg("%s", t->err);
	/* the defaults, plus the clearly labelled development operator */
	assert_int_equal(cfg.operators.n_approved, 2);
	assert_string_equal(cfg.operators.approved[0], ADDR0);
	assert_string_equal(cfg.operators.approved[1], DEV_ADDR);
	check_aggregator_defaults_but_approved(&cfg);
	ap_config_free(&cfg);
}

static void test_operator_conf_file(void **state)
{
	fixture *t = *state;
	char file[PATH_MAX];
	src_path(file, sizeof file, "conf/operator.conf");
	check_conf_covers_table(1, file);

	ap_operator_config cfg;
	int rc = ap_operator_config_load(&cfg, file, t->err, sizeof t->err);
	if (rc)
		fail_msg("%s", t->err);
	/* the defaults, but signing with the development key */
	assert_string_equal(cfg.address, DEV_ADDR);
	assert_string_equal(cfg.key_file, "conf/dev-operator.key");
	check_operator_defaults_but_key(&cfg);
	ap_operator_config_free(&cfg);
}

static void test_key_names(void **state)
{
	(void)state;
	size_t n = 0;
	while (ap_config_key_name(0, n))
		n++;
	assert_int_equal(n, 26);
	assert_string_equal(ap_config_key_name(0, 0), "listen");
	n = 0;
	while (ap_config_key_name(1, n))
		n++;
	assert_int_equal(n, 20);
	assert_null(ap_config_key_name(2, 0));
	assert_null(ap_config_key_name(-1, 0));

	/* Groups are not listed, leaves are dotted. */
	bool found = false;
	for (size_t i = 0; ap_config_key_name(0, i); i++) {
		assert_string_not_equal(ap_config_key_name(0, i), "operators");
		if (strcmp(ap_config_key_name(0, i), "operators.stabilization_ms") == 0)
			found = true;
	}
	assert_true(found);
}

/* ---- valid files ----------------------------------------------------------- */

/* A valid file setting every key to something other than its default. */
static void test_aggregator_every_key(void **state)
{
	fixture *t = *state;
	ap_config cfg;
	expect_ok(t,
		  "listen = \"[::]:0\";\n"
		  "admin_listen = \"127.0.0.1:2207\";\n"
		  "storage = { dir = \"/var/lib/ap\"; durability = \"sync\"; };\n"
		  "operators = {\n"
		  "  approved = [ \"0x997E5D40A32C44A3D93E59FC55C4FD20B7D2D49D\",\n"
		  "               \"" ADDR2 "\" ];\n"
		  "  stabilization_ms = 0;\n"
		  "  resync_interval_ms = 10;\n"
		  "  send_timeout_ms = 1;\n"
		  "  reconnect_cooldown_ms = 250;\n"
		  "  max_sessions = 0x10;\n"
		  "  keepalive_time_ms = 100;\n"
		  "  keepalive_timeout_ms = 604800000L;\n"
		  "  restart_grace_ms = 0;\n"
		  "};\n"
		  "tls = { cert_file = \"c.pem\"; key_file = \"k.pem\"; "
		  "client_ca_file = \"ca.pem\"; };\n"
		  "max_message_bytes = 1073741824;\n"
		  "shutdown_timeout_ms = 100;\n"
		  "ticker = { threads = 64; };\n"
		  "auth = { mode = \"none\"; max_skew_s = 3600; };\n"
		  "log = { level = \"debug\"; format = \"json\"; file = \"ap.log\"; };\n"
		  "metrics_listen = \"\";\n"
		  "admin = { token = \"s3cret\"; };\n",
		  &cfg);
	assert_string_equal(cfg.listen, "[::]:0");
	assert_string_equal(cfg.admin_listen, "127.0.0.1:2207");
	assert_string_equal(cfg.storage.dir, "/var/lib/ap");
	assert_int_equal(cfg.storage.durability, AP_DURABILITY_SYNC);
	assert_int_equal(cfg.operators.n_approved, 2);
	assert_string_equal(cfg.operators.approved[0], ADDR0); /* lower-cased */
	assert_string_equal(cfg.operators.approved[1], ADDR2);
	assert_int_equal(cfg.operators.stabilization_ms, 0);
	assert_int_equal(cfg.operators.resync_interval_ms, 10);
	assert_int_equal(cfg.operators.send_timeout_ms, 1);
	assert_int_equal(cfg.operators.reconnect_cooldown_ms, 250);
	assert_int_equal(cfg.operators.max_sessions, 16);
	assert_int_equal(cfg.operators.keepalive_time_ms, 100);
	assert_int_equal(cfg.operators.keepalive_timeout_ms, 604800000);
	assert_int_equal(cfg.operators.restart_grace_ms, 0);
	assert_string_equal(cfg.tls.cert_file, "c.pem");
	assert_string_equal(cfg.tls.key_file, "k.pem");
	assert_string_equal(cfg.tls.client_ca_file, "ca.pem");
	assert_int_equal(cfg.max_message_bytes, 1073741824);
	assert_int_equal(cfg.shutdown_timeout_ms, 100);
	assert_int_equal(cfg.ticker.threads, 64);
	assert_int_equal(cfg.auth.mode, AP_AUTH_NONE);
	assert_int_equal(cfg.auth.max_skew_s, 3600);
	assert_int_equal(cfg.log.level, AP_LOG_DEBUG);
	assert_int_equal(cfg.log.format, AP_LOG_JSON);
	assert_string_equal(cfg.log.file, "ap.log");
	assert_string_equal(cfg.metrics_listen, "");
	assert_string_equal(cfg.admin.token, "s3cret");

	assert_true(ap_config_is_approved(&cfg, ADDR0));
	assert_true(ap_config_is_approved(&cfg, "0x997E5D40A32C44A3D93E59FC55C4FD20B7D2D49D"));
	assert_false(ap_config_is_approved(&cfg, ADDR1));
	assert_false(ap_config_is_approved(&cfg, "*"));
	ap_config_free(&cfg);
}

static void test_wildcard_and_empty_approved(void **state)
{
	fixture *t = *state;
	ap_config cfg;
	expect_ok(t, "operators = { approved = [ \"*\" ]; };\n", &cfg);
	assert_int_equal(cfg.operators.n_approved, 1);
	assert_string_equal(cfg.operators.approved[0], "*");
	assert_true(ap_config_is_approved(&cfg, ADDR1));
	assert_false(ap_config_is_approved(&cfg, "0x12"));
	assert_false(ap_config_is_approved(&cfg, NULL));
	ap_config_free(&cfg);

	/* a () list works as well as a [] array; [] approves nobody */
	expect_ok(t, "operators = { approved = ( \"" ADDR1 "\" ); };\n", &cfg);
	assert_true(ap_config_is_approved(&cfg, ADDR1));
	ap_config_free(&cfg);
	expect_ok(t, "operators = { approved = [ ]; };\n", &cfg);
	assert_int_equal(cfg.operators.n_approved, 0);
	assert_false(ap_config_is_approved(&cfg, ADDR0));
	ap_config_free(&cfg);
}

static void test_operator_every_key(void **state)
{
	fixture *t = *state;
	write_file(t, "op.conf",
		   "aggregator = \"agg.example:443\";\n"
		   "address = \"0xABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCD\";\n"
		   "key_file = \"/etc/ap/operator.key\";\n"
		   "capabilities = { event_monitoring = false;\n"
		   "  block_monitoring = true; time_monitoring = false; };\n"
		   "chain_ids = ( 1, 11155111, 4294967296L );\n"
		   "ping_interval_ms = 100;\n"
		   "backoff = { initial_ms = 50; factor = 3; max_ms = 50;\n"
		   "  jitter = 0.0; reset_after_ms = 0; };\n"
		   "tls = { ca_file = \"ca.pem\"; cert_file = \"c.pem\"; key_file = \"k.pem\";\n"
		   "  server_name = \"agg.example\"; };\n"
		   "log = { level = \"error\"; format = \"json\"; file = \"/tmp/x\"; };\n");
	ap_operator_config cfg;
	int rc = ap_operator_config_load(&cfg, t->path, t->err, sizeof t->err);
	if (rc)
		fail_msg("%s", t->err);
	assert_string_equal(cfg.aggregator, "agg.example:443");
	assert_string_equal(cfg.address, ADDR2);
	assert_string_equal(cfg.key_file, "/etc/ap/operator.key");
	assert_false(cfg.capabilities.event_monitoring);
	assert_true(cfg.capabilities.block_monitoring);
	assert_false(cfg.capabilities.time_monitoring);
	assert_int_equal(cfg.n_chain_ids, 3);
	assert_int_equal(cfg.chain_ids[0], 1);
	assert_int_equal(cfg.chain_ids[1], 11155111);
	assert_int_equal(cfg.chain_ids[2], INT64_C(4294967296));
	assert_int_equal(cfg.ping_interval_ms, 100);
	assert_int_equal(cfg.backoff.initial_ms, 50);
	assert_true(cfg.backoff.factor == 3.0); /* an int is a fine double */
	assert_int_equal(cfg.backoff.max_ms, 50);
	assert_true(cfg.backoff.jitter == 0.0);
	assert_int_equal(cfg.backoff.reset_after_ms, 0);
	assert_string_equal(cfg.tls.ca_file, "ca.pem");
	assert_string_equal(cfg.tls.cert_file, "c.pem");
	assert_string_equal(cfg.tls.key_file, "k.pem");
	assert_string_equal(cfg.tls.server_name, "agg.example");
	assert_int_equal(cfg.log.level, AP_LOG_ERROR);
	assert_int_equal(cfg.log.format, AP_LOG_JSON);
	assert_string_equal(cfg.log.file, "/tmp/x");
	ap_operator_config_free(&cfg);
}

static void test_include_next_to_file(void **state)
{
	fixture *t = *state;
	char main_path[PATH_MAX];
	write_file(t, "extra.conf", "ticker = { threads = 7; };\n");
	write_file(t, "main.conf", "listen = \"0.0.0.0:1\";\n@include \"extra.conf\"\n");
	snprintf(main_path, sizeof main_path, "%s", t->path);

	/* the cwd is not the file's directory */
	ap_config cfg;
	int rc = ap_config_load(&cfg, main_path, t->err, sizeof t->err);
	if (rc)
		fail_msg("%s", t->err);
	assert_int_equal(cfg.ticker.threads, 7);
	assert_string_equal(cfg.listen, "0.0.0.0:1");
	ap_config_free(&cfg);

	/* an error inside the included file names that file */
	write_file(t, "extra.conf", "\nticker = { threads = 0; };\n");
	char want[PATH_MAX + 100];
	snprintf(want, sizeof want,
		 "%s/extra.conf:2: key 'ticker.threads': value 0 is below the minimum 1",
		 t->dir);
	assert_int_equal(ap_config_load(&cfg, main_path, t->err, sizeof t->err),
			 AP_ECONFIG);
	assert_string_equal(t->err, want);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);

	/* so does a syntax error, and a wide literal, in the included file */
	write_file(t, "extra.conf", "ticker = {\n threads = ; };\n");
	snprintf(want, sizeof want, "%s/extra.conf:2: syntax error", t->dir);
	assert_int_equal(ap_config_load(&cfg, main_path, t->err, sizeof t->err),
			 AP_ECONFIG);
	assert_string_equal(t->err, want);
	ap_config_free(&cfg);
	write_file(t, "extra.conf", "operators = { restart_grace_ms = 4294967296; };\n");
	snprintf(want, sizeof want, "%s/extra.conf:1: integer 4294967296 does not "
		 "fit in 32 bits; write it as 4294967296L", t->dir);
	assert_int_equal(ap_config_load(&cfg, main_path, t->err, sizeof t->err),
			 AP_ECONFIG);
	assert_string_equal(t->err, want);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);
}

/* libconfig 1.5 exits the process when @include names a directory: the
 * loader must catch it first and name the line (found by fuzz_config). */
static void test_include_directory(void **state)
{
	fixture *t = *state;
	char main_path[PATH_MAX], want[PATH_MAX + 100];
	write_file(t, "main.conf", "listen = \"0.0.0.0:1\";\n@include \".\"\n");
	snprintf(main_path, sizeof main_path, "%s", t->path);
	ap_config cfg;
	assert_int_equal(ap_config_load(&cfg, main_path, t->err, sizeof t->err), AP_ECONFIG);
	snprintf(want, sizeof want, "%s:2: @include \".\" is not a regular file", main_path);
	assert_string_equal(t->err, want);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);

	/* one level down, and the empty name (the directory itself) */
	write_file(t, "extra.conf", "@include \"\"\n");
	write_file(t, "main.conf", "@include \"extra.conf\"\n");
	assert_int_equal(ap_config_load(&cfg, main_path, t->err, sizeof t->err), AP_ECONFIG);
	snprintf(want, sizeof want, "%s/extra.conf:1: @include \"\" is not a regular file",
		 t->dir);
	assert_string_equal(t->err, want);
	ap_config_free(&cfg);

	/* names with escapes are refused rather than guessed at */
	write_file(t, "main.conf", "@include \"a\\\\b\"\n");
	assert_int_equal(ap_config_load(&cfg, main_path, t->err, sizeof t->err), AP_ECONFIG);
	snprintf(want, sizeof want, "%s:1: @include needs a plain quoted file name (no escapes)",
		 main_path);
	assert_string_equal(t->err, want);
	ap_config_free(&cfg);

	/* a NUL byte (the fuzzer hid an @include of "" behind one) */
	FILE *fp = fopen(main_path, "wb");
	assert_non_null(fp);
	static const char nul_text[] = "listen = \"0.0.0.0:1\";\n@include \"\0x\"\n";
	assert_int_equal(fwrite(nul_text, 1, sizeof nul_text - 1, fp), sizeof nul_text - 1);
	fclose(fp);
	assert_int_equal(ap_config_load(&cfg, main_path, t->err, sizeof t->err), AP_ECONFIG);
	snprintf(want, sizeof want, "%s:2: NUL byte in a configuration file", main_path);
	assert_string_equal(t->err, want);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);
}

/* ---- errors ---------------------------------------------------------------- */

static void test_syntax_error(void **state)
{
	fixture *t = *state;
	expect_error(t, "listen = \"127.0.0.1:1\";\nstorage = {\n  dir = ;\n};\n",
		     3, "syntax error");
	expect_error(t, "listen = \"127.0.0.1:1\";\nticker = { threads = 1 2; };\n",
		     2, "syntax error");
	expect_error(t, "listen = \"127.0.0.1:1\";\nlisten = \"127.0.0.1:2\";\n",
		     2, "duplicate setting name");
}

static void test_missing_file(void **state)
{
	fixture *t = *state;
	char path[PATH_MAX + 20], want[PATH_MAX + 100];
	snprintf(path, sizeof path, "%s/absent.conf", t->dir);
	snprintf(want, sizeof want, "%s: cannot read: No such file or directory",
		 path);
	ap_config cfg;
	assert_int_equal(ap_config_load(&cfg, path, t->err, sizeof t->err),
			 AP_ECONFIG);
	assert_string_equal(t->err, want);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);
}

static void test_unknown_keys(void **state)
{
	fixture *t = *state;
	expect_error(t, "listen = \"127.0.0.1:1\";\nfoo = 1;\n", 2,
		     "unknown key 'foo'");
	expect_error(t,
		     "operators = {\n  stabilization_ms = 5;\n  bogus = true;\n};\n",
		     3, "unknown key 'operators.bogus'");
	/* a key of the other kind is unknown here */
	expect_error(t, "\n\nping_interval_ms = 5000;\n", 3,
		     "unknown key 'ping_interval_ms'");
	/* one level deeper than the table */
	expect_error(t, "storage = { dir = \"d\";\n  sub = { x = 1; }; };\n", 2,
		     "unknown key 'storage.sub'");
	/* keys are case-sensitive */
	expect_error(t, "Listen = \"127.0.0.1:1\";\n", 1,
		     "unknown key 'Listen'");
}

static void test_wrong_types(void **state)
{
	fixture *t = *state;
	expect_error(t, "max_message_bytes = \"big\";\n", 1,
		     "key 'max_message_bytes': expected an integer");
	expect_error(t, "listen = 2206;\n", 1, "key 'listen': expected a string");
	expect_error(t, "\nticker = {\n  threads = 2.5;\n};\n", 3,
		     "key 'ticker.threads': expected an integer");
	expect_error(t, "ticker = { threads = 1e1; };\n", 1,
		     "key 'ticker.threads': expected an integer");
	expect_error(t, "log = {\n  level = [ \"info\" ];\n};\n", 2,
		     "key 'log.level': expected a string");
	expect_error(t, "listen = ( \"127.0.0.1:1\" );\n", 1,
		     "key 'listen': expected a string");
	expect_error(t, "operators = { max_sessions = true; };\n", 1,
		     "key 'operators.max_sessions': expected an integer");
	expect_error(t, "storage = \"./data\";\n", 1,
		     "key 'storage': expected a group ({ ... })");
	expect_error(t, "listen = { port = 1; };\n", 1,
		     "key 'listen': expected a string");
	expect_error(t, "operators = { approved = \"" ADDR0 "\"; };\n", 1,
		     "key 'operators.approved': expected a list of strings");
	expect_error(t, "operators = { approved = (\n  \"" ADDR0 "\",\n  1 ); };\n",
		     3, "key 'operators.approved': expected a list of strings");
	expect_error(t, "auth = { mode = 1; };\n", 1,
		     "key 'auth.mode': expected a string");
}

static void test_out_of_range(void **state)
{
	fixture *t = *state;
	expect_error(t, "operators = {\n  stabilization_ms = -5;\n};\n", 2,
		     "key 'operators.stabilization_ms': value -5 is below the minimum 0");
	expect_error(t, "ticker = { threads = 65; };\n", 1,
		     "key 'ticker.threads': value 65 is above the maximum 64");
	expect_error(t, "ticker = { threads = 0; };\n", 1,
		     "key 'ticker.threads': value 0 is below the minimum 1");
	expect_error(t, "max_message_bytes = 1073741825;\n", 1,
		     "key 'max_message_bytes': value 1073741825 is above the maximum 1073741824");
	expect_error(t, "max_message_bytes = 1023;\n", 1,
		     "key 'max_message_bytes': value 1023 is below the minimum 1024");
	expect_error(t, "operators = { resync_interval_ms = 9; };\n", 1,
		     "key 'operators.resync_interval_ms': value 9 is below the minimum 10");
	expect_error(t, "auth = { max_skew_s = 3601; };\n", 1,
		     "key 'auth.max_skew_s': value 3601 is above the maximum 3600");
	expect_error(t, "operators = { restart_grace_ms = 9000000000000L; };\n", 1,
		     "key 'operators.restart_grace_ms': value 9000000000000 is above the maximum 604800000");
	expect_error(t, "operators = { restart_grace_ms = -9000000000000L; };\n", 1,
		     "key 'operators.restart_grace_ms': value -9000000000000 is below the minimum 0");
}

/* libconfig 1.5 truncates a literal that does not fit in 32 bits; the
 * loader refuses it rather than use the truncated value. */
static void test_wide_literal_without_suffix(void **state)
{
	fixture *t = *state;
	expect_error(t, "# 4294967296 in a comment is fine\n"
			"listen = \"127.0.0.1:4294967296\";\n"
			"operators = {\n  restart_grace_ms = 4294967296;\n};\n",
		     4, "integer 4294967296 does not fit in 32 bits; write it as 4294967296L");
	expect_error(t, "operators = { stabilization_ms = -2147483649; };\n", 1,
		     "integer -2147483649 does not fit in 32 bits; write it as -2147483649L");
	expect_error(t, "max_message_bytes = 0x100000400;\n", 1,
		     "integer 0x100000400 does not fit in 32 bits; write it as 0x100000400L");
	/* the limits of 32 bits are read correctly (and range-checked) */
	expect_error(t, "operators = { stabilization_ms = -2147483648; };\n", 1,
		     "key 'operators.stabilization_ms': value -2147483648 is below the minimum 0");
	expect_error(t, "max_message_bytes = 2147483647;\n", 1,
		     "key 'max_message_bytes': value 2147483647 is above the maximum 1073741824");
	ap_config cfg;
	expect_ok(t, "metrics_listen = \"\"; # 99999999999\n/* 99999999999 */\n"
		     "log = { file = \"/var/log/99999999999\"; };\n", &cfg);
	ap_config_free(&cfg);
}

static void test_bad_enum(void **state)
{
	fixture *t = *state;
	expect_error(t, "storage = {\n  durability = \"fast\";\n};\n", 2,
		     "key 'storage.durability': 'fast' is not one of sync, write_nosync, nosync");
	expect_error(t, "log = { level = \"verbose\"; };\n", 1,
		     "key 'log.level': 'verbose' is not one of debug, info, warn, error");
	expect_error(t, "log = { format = \"JSON\"; };\n", 1,
		     "key 'log.format': 'JSON' is not one of text, json");
	expect_error(t, "auth = { mode = \"\"; };\n", 1,
		     "key 'auth.mode': '' is not one of signature, none");
}

/* libconfig 1.5 gives a string list element the line its scanner reached
 * after looking for an adjacent string literal to concatenate, so the last
 * element of a list whose "]" sits on a later line is reported at the "]"
 * line. The cases below keep "]" on the element's line. */
static void test_bad_approved(void **state)
{
	fixture *t = *state;
	expect_error(t,
		     "operators = {\n"
		     "  approved = [\n"
		     "    \"" ADDR0 "\",\n"
		     "    \"0x1234\" ];\n"
		     "};\n",
		     4, "key 'operators.approved': '0x1234' is not an operator "
			"address (0x followed by 40 hex digits) or '*'");
	expect_error(t,
		     "operators = { approved = [\n \"997e5d40a32c44a3d93e59fc55c4fd20b7d2d49d00\" ]; };\n",
		     2, "key 'operators.approved': '997e5d40a32c44a3d93e59fc55c4fd20b7d2d49d00' "
			"is not an operator address (0x followed by 40 hex digits) or '*'");
	expect_error(t,
		     "operators = { approved = [ \"" ADDR0 "\",\n \"*\" ]; };\n",
		     2, "key 'operators.approved': the wildcard '*' must be the only entry");
}

static void test_admin_tcp_needs_token(void **state)
{
	fixture *t = *state;
	expect_error(t, "listen = \"127.0.0.1:2206\";\nadmin_listen = \"127.0.0.1:2207\";\n",
		     2, "key 'admin.token': must be set when admin_listen is TCP ('127.0.0.1:2207')");
	expect_error(t, "admin_listen = \"127.0.0.1:2207\";\nadmin = {\n  token = \"\";\n};\n",
		     3, "key 'admin.token': must be set when admin_listen is TCP ('127.0.0.1:2207')");
	ap_config cfg;
	expect_ok(t, "admin_listen = \"127.0.0.1:2207\";\nadmin = { token = \"t\"; };\n", &cfg);
	ap_config_free(&cfg);
	/* a unix socket needs no token */
	expect_ok(t, "admin_listen = \"unix:/run/ap/admin.sock\";\n", &cfg);
	assert_string_equal(cfg.admin_listen, "unix:/run/ap/admin.sock");
	ap_config_free(&cfg);
}

static void test_tls_pairs(void **state)
{
	fixture *t = *state;
	expect_error(t, "tls = {\n  cert_file = \"/etc/ap/cert.pem\";\n};\n", 2,
		     "key 'tls.key_file': must be set when tls.cert_file is set");
	expect_error(t, "tls = {\n  cert_file = \"c.pem\";\n  key_file = \"\";\n};\n", 3,
		     "key 'tls.key_file': must be set when tls.cert_file is set");
	expect_error(t, "tls = { key_file = \"k.pem\"; };\n", 1,
		     "key 'tls.cert_file': must be set when tls.key_file is set");
	expect_error(t, "\ntls = { client_ca_file = \"ca.pem\"; };\n", 2,
		     "key 'tls.client_ca_file': mutual TLS needs tls.cert_file and tls.key_file");
	ap_config cfg;
	expect_ok(t, "tls = { cert_file = \"c.pem\"; key_file = \"k.pem\"; };\n", &cfg);
	assert_string_equal(cfg.tls.client_ca_file, "");
	ap_config_free(&cfg);
}

static void test_bad_listeners(void **state)
{
	fixture *t = *state;
	expect_error(t, "listen = \"localhost\";\n", 1,
		     "key 'listen': 'localhost' is not HOST:PORT");
	expect_error(t, "listen = \"\";\n", 1, "key 'listen': must not be empty");
	expect_error(t, "listen = \"127.0.0.1:65536\";\n", 1,
		     "key 'listen': '127.0.0.1:65536' is not HOST:PORT");
	expect_error(t, "listen = \"::1:2206\";\n", 1,
		     "key 'listen': '::1:2206' is not HOST:PORT");
	expect_error(t, "listen = \"unix:/tmp/s\";\n", 1,
		     "key 'listen': 'unix:/tmp/s' is not HOST:PORT");
	expect_error(t, "admin_listen = \"unix:\";\n", 1,
		     "key 'admin_listen': 'unix:' needs a socket path");
	expect_error(t, "admin_listen = \"admin\";\n", 1,
		     "key 'admin_listen': 'admin' is not unix:PATH or HOST:PORT");
	expect_error(t, "metrics_listen = \":9206\";\n", 1,
		     "key 'metrics_listen': ':9206' is not HOST:PORT");
	expect_error(t, "storage = { dir = \"\"; };\n", 1,
		     "key 'storage.dir': must not be empty");
}

static void test_defaults_kept_after_failure(void **state)
{
	fixture *t = *state;
	/* Many valid keys are applied before the error on the last line;
	 * none of them may survive. */
	expect_error(t,
		     "listen = \"0.0.0.0:1\";\n"
		     "storage = { dir = \"/elsewhere\"; durability = \"nosync\"; };\n"
		     "operators = { approved = [ \"*\" ]; stabilization_ms = 1; };\n"
		     "log = { file = \"x.log\"; level = \"debug\"; };\n"
		     "admin = { token = \"t\"; };\n"
		     "ticker = { threads = 100; };\n",
		     6, "key 'ticker.threads': value 100 is above the maximum 64");
	/* a failed load after a successful one also gives the defaults */
	ap_config cfg;
	expect_ok(t, "listen = \"0.0.0.0:1\";\n", &cfg);
	assert_string_equal(cfg.listen, "0.0.0.0:1");
	ap_config_free(&cfg);
	write_file(t, "bad.conf", "listen = \"0.0.0.0:1\";\nnope = 1;\n");
	assert_int_equal(ap_config_load(&cfg, t->path, t->err, sizeof t->err),
			 AP_ECONFIG);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);
	/* no error buffer is fine too */
	assert_int_equal(ap_config_load(&cfg, t->path, NULL, 0), AP_ECONFIG);
	check_aggregator_defaults(&cfg);
	ap_config_free(&cfg);
}

static void test_operator_errors(void **state)
{
	fixture *t = *state;
	expect_operator_error(t, "address = \"0x997e5d40a32c44a3d93e59fc55c4fd20b7d2d49\";\n", 1,
			      "key 'address': '0x997e5d40a32c44a3d93e59fc55c4fd20b7d2d49' is not "
			      "an operator address (0x followed by 40 hex digits)");
	expect_operator_error(t, "chain_ids = [ 1,\n  0 ];\n", 2,
			      "key 'chain_ids': value 0 is below the minimum 1");
	expect_operator_error(t, "chain_ids = [ \"1\" ];\n", 1,
			      "key 'chain_ids': expected a list of integers");
	expect_operator_error(t, "chain_ids = [ 1.5 ];\n", 1,
			      "key 'chain_ids': expected a list of integers");
	expect_operator_error(t, "chain_ids = 1;\n", 1,
			      "key 'chain_ids': expected a list of integers");
	expect_operator_error(t, "backoff = {\n  jitter = 1.5;\n};\n", 2,
			      "key 'backoff.jitter': value 1.5 is above the maximum 1");
	expect_operator_error(t, "backoff = { factor = 0.5; };\n", 1,
			      "key 'backoff.factor': value 0.5 is below the minimum 1");
	expect_operator_error(t, "backoff = { factor = \"2\"; };\n", 1,
			      "key 'backoff.factor': expected a number");
	expect_operator_error(t, "capabilities = {\n  event_monitoring = \"yes\";\n};\n", 2,
			      "key 'capabilities.event_monitoring': expected a boolean (true or false)");
	expect_operator_error(t, "capabilities = { time_monitoring = 1; };\n", 1,
			      "key 'capabilities.time_monitoring': expected a boolean (true or false)");
	expect_operator_error(t, "backoff = {\n initial_ms = 5000;\n max_ms = 4000;\n};\n", 3,
			      "key 'backoff.max_ms': value 4000 is below backoff.initial_ms 5000");
	expect_operator_error(t, "backoff = { initial_ms = 70000; };\n", 1,
			      "key 'backoff.max_ms': value 60000 is below backoff.initial_ms 70000");
	expect_operator_error(t, "aggregator = \"\";\n", 1,
			      "key 'aggregator': must not be empty");
	expect_operator_error(t, "approved = [];\n", 1, "unknown key 'approved'");
	expect_operator_error(t, "log = { colour = true; };\n", 1,
			      "unknown key 'log.colour'");
	/* TLS: a client certificate and its key go together, and they and a
	 * server name need the CA file that turns TLS on. */
	expect_operator_error(t, "tls = {\n  ca_file = \"ca.pem\";\n  cert_file = \"c.pem\";\n};\n", 3,
			      "key 'tls.key_file': must be set when tls.cert_file is set");
	expect_operator_error(t, "tls = {\n  ca_file = \"ca.pem\";\n  key_file = \"k.pem\";\n};\n", 3,
			      "key 'tls.cert_file': must be set when tls.key_file is set");
	expect_operator_error(t, "tls = {\n  cert_file = \"c.pem\";\n  key_file = \"k.pem\";\n};\n", 2,
			      "key 'tls.cert_file': a client certificate needs TLS, which needs tls.ca_file");
	expect_operator_error(t, "tls = { server_name = \"localhost\"; };\n", 1,
			      "key 'tls.server_name': needs TLS, which needs tls.ca_file");
	expect_operator_error(t, "tls = { ca_file = 1; };\n", 1,
			      "key 'tls.ca_file': expected a string");
}

static void test_is_address(void **state)
{
	(void)state;
	assert_true(ap_config_is_address(ADDR0));
	assert_true(ap_config_is_address("0x997E5D40A32C44A3D93E59FC55C4FD20B7D2D49D"));
	assert_false(ap_config_is_address(NULL));
	assert_false(ap_config_is_address(""));
	assert_false(ap_config_is_address("0x"));
	assert_false(ap_config_is_address("997e5d40a32c44a3d93e59fc55c4fd20b7d2d49d"));
	assert_false(ap_config_is_address("0x997e5d40a32c44a3d93e59fc55c4fd20b7d2d49"));
	assert_false(ap_config_is_address(ADDR0 "0"));
	assert_false(ap_config_is_address("0x997e5d40a32c44a3d93e59fc55c4fd20b7d2d49g"));
	assert_false(ap_config_is_address("0X997e5d40a32c44a3d93e59fc55c4fd20b7d2d49d"));
	assert_false(ap_config_is_address("*"));
}

/* ---- ap config check ---------------------------------------------------- */

/* Run the command with stdout and stderr captured into `out` / `errout`. */
static int run_check(fixture *t, const char *config_path, char *out,
		     size_t outlen, char *errout, size_t errlen, int argc, ...)
{
	char *argv[8];
	va_list ap;
	va_start(ap, argc);
	for (int i = 0; i < argc && i < 7; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	argv[argc] = NULL;

	tmpdir_capture cap;
	tmpdir_capture_begin(&cap, t->dir);
	ap_cli_global g = { .config_path = config_path };
	int rc = ap_cmd_config(argc, argv, &g);
	tmpdir_capture_end(&cap, out, outlen, errout, errlen);
	return rc;
}

static void test_cli_config_check(void **state)
{
	fixture *t = *state;
	char out[2048], errout[2048], want[PATH_MAX + 200];
	char good[PATH_MAX], bad[PATH_MAX], opfile[PATH_MAX];

	snprintf(good, sizeof good, "%s", write_file(t, "good.conf", "ticker = { threads = 3; };\n"));
	snprintf(bad, sizeof bad, "%s", write_file(t, "bad.conf", "\nfoo = 1;\n"));
	snprintf(opfile, sizeof opfile, "%s", write_file(t, "op.conf", "chain_ids = [ 1 ];\n"));

	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   3, "config", "check", good), AP_EXIT_OK);
	snprintf(want, sizeof want, "%s: ok\n", good);
	assert_string_equal(out, want);
	assert_string_equal(errout, "");

	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   3, "config", "check", bad), AP_EXIT_FAIL);
	snprintf(want, sizeof want, "%s:2: unknown key 'foo'\n", bad);
	assert_string_equal(errout, want);
	assert_string_equal(out, "");

	/* the global --config is the default FILE */
	assert_int_equal(run_check(t, good, out, sizeof out, errout, sizeof errout,
				   2, "config", "check"), AP_EXIT_OK);
	snprintf(want, sizeof want, "%s: ok\n", good);
	assert_string_equal(out, want);
	assert_int_equal(run_check(t, bad, out, sizeof out, errout, sizeof errout,
				   2, "config", "check"), AP_EXIT_FAIL);
	/* ... and a positional FILE wins over it */
	assert_int_equal(run_check(t, bad, out, sizeof out, errout, sizeof errout,
				   3, "config", "check", good), AP_EXIT_OK);

	/* --operator uses the operator table, before or after FILE */
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   4, "config", "check", "--operator", opfile), AP_EXIT_OK);
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   4, "config", "check", opfile, "--operator"), AP_EXIT_OK);
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   3, "config", "check", opfile), AP_EXIT_FAIL);
	snprintf(want, sizeof want, "%s:1: unknown key 'chain_ids'\n", opfile);
	assert_string_equal(errout, want);
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   4, "config", "check", "--operator", good), AP_EXIT_FAIL);

	/* the shipped files, by their default names relative to the cwd */
	const char *srcdir = getenv("AP_SRCDIR");
	char cwd[PATH_MAX];
	assert_non_null(getcwd(cwd, sizeof cwd));
	if (srcdir && srcdir[0]) {
		assert_int_equal(chdir(srcdir), 0);
		assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
					   2, "config", "check"), AP_EXIT_OK);
		assert_string_equal(out, "conf/aggregator.conf: ok\n");
		assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
					   3, "config", "check", "--operator"), AP_EXIT_OK);
		assert_string_equal(out, "conf/operator.conf: ok\n");
		assert_int_equal(chdir(cwd), 0);
	}

	/* an unreadable file is a runtime failure, not a usage error */
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   3, "config", "check", "/nonexistent/ap.conf"), AP_EXIT_FAIL);
	assert_string_equal(errout, "/nonexistent/ap.conf: cannot read: No such file or directory\n");

	/* usage errors */
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   1, "config"), AP_EXIT_USAGE);
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   2, "config", "lint"), AP_EXIT_USAGE);
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   3, "config", "check", "--bogus"), AP_EXIT_USAGE);
	assert_int_equal(run_check(t, NULL, out, sizeof out, errout, sizeof errout,
				   4, "config", "check", good, bad), AP_EXIT_USAGE);
	assert_non_null(strstr(errout, "usage: ap config check"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_aggregator_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_operator_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_file_is_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_aggregator_conf_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_operator_conf_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_aggregator_every_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wildcard_and_empty_approved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_operator_every_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_include_next_to_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_include_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syntax_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_types, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wide_literal_without_suffix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_enum, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_approved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_tcp_needs_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_pairs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_listeners, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defaults_kept_after_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_operator_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_is_address, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cli_config_check, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
