/* libFuzzer target: the configuration loaders (SPEC section 5).
 *
 * Input: a configuration file. It is written to input.conf in a private
 * temp dir (so an @include resolves next to it, as for a real file) and
 * loaded by both ap_config_load and ap_operator_config_load. The error
 * buffer is allocated at a size taken from the input, so a message written
 * past its end is caught by AddressSanitizer.
 *
 * Besides the sanitizers, the target checks what include/ap/config.h
 * promises: on success every key is within its bounds and addresses are
 * lower-cased; on error the message is non-empty and NUL-terminated inside
 * the buffer, and the struct holds the defaults.
 *
 * KNOWN ISSUE, found here and reported with issue 7 (the fix belongs in
 * src/config.c): libconfig 1.5 joins an @include name to the include
 * directory and, when the result is a directory (`@include ""`,
 * `@include "."`), its flex scanner fails to read it and calls exit(2)
 * after printing "input in flex scanner failed": `ap config check` and the
 * daemon's start exit 2 with that message instead of an AP_ECONFIG error
 * naming the file and line. Until config.c refuses such includes before
 * libconfig reads them, inputs with an @include that names a directory are
 * skipped, unless AP_FUZZ_STRICT=1 (fuzz.h). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ap/config.h"
#include "ap/log.h"
#include "fuzz.h"

static char path[600];
static ap_config agg_defaults;
static ap_operator_config op_defaults;

static void free_defaults(void)
{
	ap_config_free(&agg_defaults);
	ap_operator_config_free(&op_defaults);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet_log();
	snprintf(path, sizeof path, "%s/input.conf", fz_tmpdir("config"));
	FZ_CHECK(ap_config_defaults(&agg_defaults) == 0);
	FZ_CHECK(ap_operator_config_defaults(&op_defaults) == 0);
	atexit(free_defaults);
	return 0;
}

static void write_input(const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FZ_CHECK(fd >= 0);
	while (size > 0) {
		ssize_t n = write(fd, data, size);
		FZ_CHECK(n > 0);
		data += n;
		size -= (size_t)n;
	}
	FZ_CHECK(close(fd) == 0);
}

/* True when some @include of the input names a directory, resolved as
 * libconfig 1.5 resolves it: the include directory, "/", then the name
 * with its \\ and \" escapes undone (a NUL ends it, as it ends the C
 * string libconfig builds). Directives are found as the scanner
 * finds them: at the start of a line after blanks, "@include", blanks, '"'. */
static bool includes_directory(const uint8_t *data, size_t size)
{
	const char *dir_end = strrchr(path, '/');
	size_t i = 0;
	while (i < size) {
		size_t line = i;
		while (i < size && (data[i] == ' ' || data[i] == '\t'))
			i++;
		static const char word[] = "@include";
		if (size - i > sizeof word - 1 && memcmp(data + i, word, sizeof word - 1) == 0 &&
		    (data[i + sizeof word - 1] == ' ' || data[i + sizeof word - 1] == '\t')) {
			i += sizeof word - 1;
			while (i < size && (data[i] == ' ' || data[i] == '\t'))
				i++;
			if (i < size && data[i] == '"') {
				char name[4096];
				size_t n = (size_t)(dir_end - path) + 1;
				memcpy(name, path, n); /* the directory and its '/' */
				for (i++; i < size && data[i] != '"' && n < sizeof name - 1; i++) {
					if (data[i] == '\\' && i + 1 < size &&
					    (data[i + 1] == '\\' || data[i + 1] == '"'))
						i++;
					name[n++] = (char)data[i];
				}
				name[n] = '\0';
				struct stat st;
				if (stat(name, &st) == 0 && S_ISDIR(st.st_mode))
					return true;
			}
		}
		i = line;
		while (i < size && data[i] != '\n')
			i++;
		i++;
	}
	return false;
}

static bool lower_address(const char *s)
{
	if (!ap_config_is_address(s))
		return false;
	for (const char *p = s; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			return false;
	return true;
}

static bool is_endpoint(const char *s)
{
	return strchr(s, ':') != NULL;
}

static void check_error(int rc, const char *err, size_t errlen)
{
	FZ_CHECK(rc == AP_ECONFIG || rc == AP_ENOMEM);
	FZ_CHECK(memchr(err, '\0', errlen) != NULL);
	FZ_CHECK(err[0] != '\0');
}

static void load_aggregator(char *err, size_t errlen)
{
	ap_config cfg;
	int rc = ap_config_load(&cfg, path, err, errlen);
	if (rc == 0) {
		FZ_CHECK(cfg.listen[0] && is_endpoint(cfg.listen));
		FZ_CHECK(cfg.admin_listen[0] && is_endpoint(cfg.admin_listen));
		FZ_CHECK(strncmp(cfg.admin_listen, "unix:", 5) == 0 || cfg.admin.token[0]);
		FZ_CHECK(cfg.storage.dir[0]);
		FZ_CHECK(cfg.storage.durability >= AP_DURABILITY_SYNC &&
			 cfg.storage.durability <= AP_DURABILITY_NOSYNC);
		for (size_t i = 0; i < cfg.operators.n_approved; i++) {
			const char *a = cfg.operators.approved[i];
			FZ_CHECK(lower_address(a) ||
				 (strcmp(a, "*") == 0 && cfg.operators.n_approved == 1));
		}
		FZ_CHECK(cfg.operators.stabilization_ms >= 0);
		FZ_CHECK(cfg.operators.resync_interval_ms >= 10);
		FZ_CHECK(cfg.operators.send_timeout_ms >= 1);
		FZ_CHECK(cfg.operators.max_sessions >= 1 && cfg.operators.max_sessions <= 1000000);
		FZ_CHECK(cfg.operators.keepalive_time_ms >= 100);
		FZ_CHECK(cfg.max_message_bytes >= 1024 && cfg.max_message_bytes <= (INT64_C(1) << 30));
		FZ_CHECK(cfg.ticker.threads >= 1 && cfg.ticker.threads <= 64);
		FZ_CHECK(cfg.auth.mode == AP_AUTH_SIGNATURE || cfg.auth.mode == AP_AUTH_NONE);
		FZ_CHECK(cfg.auth.max_skew_s >= 1 && cfg.auth.max_skew_s <= 3600);
		FZ_CHECK(cfg.log.level >= AP_LOG_DEBUG && cfg.log.level <= AP_LOG_ERROR);
		FZ_CHECK(cfg.log.format == AP_LOG_TEXT || cfg.log.format == AP_LOG_JSON);
		FZ_CHECK(!cfg.tls.key_file[0] == !cfg.tls.cert_file[0]);
		FZ_CHECK(!cfg.tls.client_ca_file[0] || cfg.tls.cert_file[0]);
		/* What the daemon asks of a loaded config. */
		FZ_CHECK(!ap_config_is_approved(&cfg, "not an address"));
		(void)ap_config_is_approved(&cfg, FZ_OWNER);
	} else {
		check_error(rc, err, errlen);
		/* Left at the defaults. */
		FZ_CHECK(strcmp(cfg.listen, agg_defaults.listen) == 0);
		FZ_CHECK(strcmp(cfg.storage.dir, agg_defaults.storage.dir) == 0);
		FZ_CHECK(cfg.operators.n_approved == agg_defaults.operators.n_approved);
		FZ_CHECK(cfg.operators.stabilization_ms == agg_defaults.operators.stabilization_ms);
		FZ_CHECK(cfg.ticker.threads == agg_defaults.ticker.threads);
	}
	ap_config_free(&cfg);
}

static void load_operator(char *err, size_t errlen)
{
	ap_operator_config cfg;
	int rc = ap_operator_config_load(&cfg, path, err, errlen);
	if (rc == 0) {
		FZ_CHECK(cfg.aggregator[0]);
		FZ_CHECK(lower_address(cfg.address));
		for (size_t i = 0; i < cfg.n_chain_ids; i++)
			FZ_CHECK(cfg.chain_ids[i] >= 1);
		FZ_CHECK(cfg.ping_interval_ms >= 100);
		FZ_CHECK(cfg.backoff.initial_ms >= 1 && cfg.backoff.max_ms >= cfg.backoff.initial_ms);
		FZ_CHECK(cfg.backoff.factor >= 1.0 && cfg.backoff.factor <= 10.0);
		FZ_CHECK(cfg.backoff.jitter >= 0.0 && cfg.backoff.jitter <= 1.0);
		FZ_CHECK(cfg.backoff.reset_after_ms >= 0);
		FZ_CHECK(cfg.log.level >= AP_LOG_DEBUG && cfg.log.level <= AP_LOG_ERROR);
	} else {
		check_error(rc, err, errlen);
		FZ_CHECK(strcmp(cfg.address, op_defaults.address) == 0);
		FZ_CHECK(cfg.n_chain_ids == op_defaults.n_chain_ids);
		FZ_CHECK(cfg.backoff.max_ms == op_defaults.backoff.max_ms);
	}
	ap_operator_config_free(&cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!fz_strict() && includes_directory(data, size))
		return 0; /* the known issue at the top */
	write_input(data, size);
	/* 2 to 257 bytes: short enough that long messages are truncated. */
	size_t errlen = 2 + (size ? data[size - 1] : 0);
	char *err = malloc(errlen);
	FZ_CHECK(err != NULL);
	load_aggregator(err, errlen);
	load_operator(err, errlen);
	free(err);
	return 0;
}
