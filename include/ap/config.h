/* Configuration (SPEC section 5).
 *
 * Two files, each described by one declarative table of keys (type, bounds,
 * default, offset into the struct) in src/config.c: the aggregator's
 * (conf/aggregator.conf) and the operator client's (conf/operator.conf).
 * Loading fills defaults first, then applies the file; an unknown key, a
 * wrong type or an out-of-range value is an error naming file and line
 * ("FILE:LINE: key 'x': ..."), and leaves the struct at its defaults.
 *
 * A loaded config is immutable and owned by whoever loaded it; free it with
 * the matching _free. Not thread-safe while loading; read-only afterwards. */
#ifndef AP_CONFIG_H
#define AP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
	AP_DURABILITY_SYNC = 0,
	AP_DURABILITY_WRITE_NOSYNC = 1,
	AP_DURABILITY_NOSYNC = 2,
} ap_durability;

typedef enum {
	AP_AUTH_SIGNATURE = 0,
	AP_AUTH_NONE = 1,
} ap_auth_mode;

typedef struct ap_config {
	char *listen;
	char *admin_listen;
	struct {
		char *dir;
		ap_durability durability;
	} storage;
	struct {
		char **approved; /* lower-cased addresses, or just "*" (anyone) */
		size_t n_approved;
		int64_t stabilization_ms;
		int64_t resync_interval_ms;
		int64_t send_timeout_ms;
		int64_t reconnect_cooldown_ms;
		int64_t max_sessions;
		int64_t keepalive_time_ms;
		int64_t keepalive_timeout_ms;
		int64_t restart_grace_ms;
	} operators;
	struct {
		char *cert_file;
		char *key_file;
		char *client_ca_file;
	} tls;
	int64_t max_message_bytes;
	int64_t shutdown_timeout_ms;
	struct {
		int64_t threads;
	} ticker;
	struct {
		ap_auth_mode mode;
		int64_t max_skew_s;
	} auth;
	struct {
		int level;  /* ap_log_level */
		int format; /* ap_log_format */
		char *file; /* "" = stderr */
	} log;
	char *metrics_listen;
	struct {
		char *token;
	} admin;
} ap_config;

typedef struct ap_operator_config {
	char *aggregator; /* host:port of the aggregator's operator port */
	char *address;    /* 0x + 40 hex, lower-cased */
	char *key_file;
	struct {
		bool event_monitoring;
		bool block_monitoring;
		bool time_monitoring;
	} capabilities;
	int64_t *chain_ids;
	size_t n_chain_ids;
	int64_t ping_interval_ms;
	struct {
		int64_t initial_ms;
		double factor;
		int64_t max_ms;
		double jitter;      /* fraction, 0.25 = 25 % */
		int64_t reset_after_ms;
	} backoff;
	struct {
		char *ca_file;     /* "" = plaintext; else TLS trusting this CA */
		char *cert_file;   /* client certificate for mutual TLS, or "" */
		char *key_file;    /* its private key, or "" */
		char *server_name; /* name the server certificate must carry, or "" */
	} tls;
	struct {
		int level;
		int format;
		char *file;
	} log;
} ap_operator_config;

/* Fill every key with its default. Returns 0 or AP_ENOMEM. *cfg is output
 * only: whatever it held before is overwritten, not freed. */
int ap_config_defaults(ap_config *cfg);
/* Load `path` over the defaults. Returns 0, AP_ECONFIG (detail in err as
 * "FILE:LINE: ...") or AP_ENOMEM. On error *cfg holds the defaults, so it
 * must be freed either way. Like _defaults, *cfg is output only (do not
 * call _defaults first without _free in between). `path` NULL loads the
 * defaults alone. `@include "x"` in a file is resolved next to that file.
 * Not thread-safe (libconfig parse); the result is read-only afterwards. */
int ap_config_load(ap_config *cfg, const char *path, char *err, size_t errlen);
/* Release every string and array of *cfg and zero it; NULL is fine. */
void ap_config_free(ap_config *cfg);

/* True when `address` is an address that operators.approved admits (an
 * entry equal ignoring case, or the wildcard "*"). Thread-safe on a loaded,
 * read-only config. */
bool ap_config_is_approved(const ap_config *cfg, const char *address);

int ap_operator_config_defaults(ap_operator_config *cfg);
int ap_operator_config_load(ap_operator_config *cfg, const char *path,
			    char *err, size_t errlen);
void ap_operator_config_free(ap_operator_config *cfg);

/* True when `s` is 0x followed by 40 hex digits (any case). */
bool ap_config_is_address(const char *s);

/* Iterate over the key table of one kind (for man pages and tests):
 * returns the dotted name of key i ("operators.stabilization_ms"), or NULL
 * past the end. kind 0 = aggregator, 1 = operator. */
const char *ap_config_key_name(int kind, size_t i);

/* What the manual says about one key, taken from the key table itself so
 * that a man page generated from it cannot disagree with the loader. */
typedef struct ap_config_key_info {
	const char *name;        /* dotted name, static */
	char type[96];           /* "integer", "string, HOST:PORT", ... */
	char default_value[160]; /* as written in a file: "./data" quoted, 10000, [] */
	char range[64];          /* "1 .. 64", ">= 1"; "" when the type has none;
				  * for a list of integers, each element's */
	bool has_range;
	double min, max;         /* the range as numbers, when has_range */
	char values[128];        /* an enum's names, quoted, comma-separated */
} ap_config_key_info;

/* Describe key i of one kind (numbered as ap_config_key_name) into *info.
 * Returns 0, or AP_ENOTFOUND past the end or for an unknown kind.
 * Thread-safe: reads only the static tables. */
int ap_config_key_describe(int kind, size_t i, ap_config_key_info *info);

#endif
