/* Configuration: two declarative key tables and one loader (SPEC section 5).
 *
 * Every key of a configuration file is one row of a table below: its dotted
 * name, its type, its bounds, its default and where it lives in the struct
 * (offsetof). Nothing else in this file knows about individual keys, except
 * the short cross-key checks at the end of each table (TLS cert and key go
 * together, a TCP admin listener needs a token, backoff max >= initial, the
 * operator's other TLS keys need its tls.ca_file).
 * Adding a key means adding a row, a struct field, and a commented line in
 * the matching conf/ file; the unit test fails when the conf file and the
 * table drift apart. This is Redis's config.c idea, kept small.
 *
 * Loading is "defaults, then the file": the struct is filled from the table,
 * libconfig parses the file, and then every setting in the file (not every
 * row of the table) is walked, so a key the table does not know is an error
 * at any depth instead of being silently ignored. Errors are written as
 * "FILE:LINE: key 'name': what is wrong" using the line libconfig recorded
 * for the offending setting. On any error the struct is reset to the
 * defaults before returning, so a caller never sees a half-applied file.
 *
 * libconfig 1.5 (Debian's) reads an integer literal that does not fit in 32
 * bits and has no L suffix as a silently truncated int (4294967296 reads as
 * 0). A short lexical pass over each file read rejects such literals, since
 * the truncated value could otherwise land inside a key's bounds.
 *
 * Enums are parsed from the table's own name lists (the log level and format
 * lists use the ap_log_level / ap_log_format values from ap/log.h), so the
 * error can list the allowed names and this module needs nothing from log.c.
 *
 * No threads and no locks: loading is single-threaded, a loaded config is
 * read-only. All strings and arrays in a loaded struct are heap copies owned
 * by the struct and released by the matching _free. */
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "ap/config.h"
#include "ap/error.h"
#include "ap/log.h"

_Static_assert(sizeof(ap_durability) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(ap_auth_mode) == sizeof(int), "enum stored as int");

/* Durations are bounded to a week: far beyond any sensible value, and small
 * enough that deadline arithmetic in nanoseconds can never overflow. */
#define MAX_MS INT64_C(604800000)

typedef enum {
	CT_GROUP,
	CT_STRING,
	CT_INT64,
	CT_BOOL,
	CT_DOUBLE,
	CT_ENUM,    /* a string from `enums`, stored as its int value */
	CT_STRLIST, /* char ** + size_t count at count_offset */
	CT_INTLIST, /* int64_t * + size_t count; min/max bound each element */
} conf_type;

/* String checks. */
enum {
	CF_NONEMPTY = 1 << 0, /* "" is an error */
	CF_ADDRESS = 1 << 1,  /* 0x + 40 hex, stored lower-cased */
	CF_APPROVED = 1 << 2, /* list entries: addresses, or a lone "*" */
	CF_ENDPOINT = 1 << 3, /* HOST:PORT, or "" unless CF_NONEMPTY */
	CF_UNIX = 1 << 4,     /* with CF_ENDPOINT: unix:PATH is accepted too */
};

typedef struct conf_enum {
	const char *name;
	int value;
} conf_enum;

typedef struct conf_key {
	const char *name; /* dotted: "operators.stabilization_ms" */
	conf_type type;
	unsigned flags;
	size_t offset;
	size_t count_offset;
	int64_t min, max;
	double dmin, dmax;
	const conf_enum *enums; /* NULL-terminated */
	const char *def_s;      /* CT_STRING, and CT_ENUM by name */
	int64_t def_i;
	bool def_b;
	double def_d;
	const char *const *def_strs; /* CT_STRLIST, def_n entries */
	const int64_t *def_ints;     /* CT_INTLIST, def_n entries */
	size_t def_n;
} conf_key;

typedef struct conf_schema {
	const conf_key *keys;
	size_t n_keys;
	size_t size; /* sizeof the struct */
	/* Cross-key checks after the walk; `seen[i]` is the setting that set
	 * key i, or NULL when the file left it at its default. */
	int (*check)(const struct conf_schema *s, const void *obj,
		     config_setting_t *const *seen, const char *path,
		     char *err, size_t errlen);
} conf_schema;

static const conf_enum durability_names[] = {
	{ "sync", AP_DURABILITY_SYNC },
	{ "write_nosync", AP_DURABILITY_WRITE_NOSYNC },
	{ "nosync", AP_DURABILITY_NOSYNC },
	{ NULL, 0 },
};
static const conf_enum auth_mode_names[] = {
	{ "signature", AP_AUTH_SIGNATURE },
	{ "none", AP_AUTH_NONE },
	{ NULL, 0 },
};
static const conf_enum log_level_names[] = {
	{ "debug", AP_LOG_DEBUG },
	{ "info", AP_LOG_INFO },
	{ "warn", AP_LOG_WARN },
	{ "error", AP_LOG_ERROR },
	{ NULL, 0 },
};
static const conf_enum log_format_names[] = {
	{ "text", AP_LOG_TEXT },
	{ "json", AP_LOG_JSON },
	{ NULL, 0 },
};

#define DEFAULT_OPERATOR "0x997e5d40a32c44a3d93e59fc55c4fd20b7d2d49d"
static const char *const default_approved[] = { DEFAULT_OPERATOR };

/* Row constructors; CONF_STRUCT names the struct the offsets refer to. */
#define K_GROUP(n) { .name = (n), .type = CT_GROUP }
#define K_STRING(n, f, d, fl)                                                 \
	{ .name = (n), .type = CT_STRING, .flags = (fl),                      \
	  .offset = offsetof(CONF_STRUCT, f), .def_s = (d) }
#define K_INT64(n, f, d, lo, hi)                                              \
	{ .name = (n), .type = CT_INT64, .offset = offsetof(CONF_STRUCT, f),  \
	  .def_i = (d), .min = (lo), .max = (hi) }
#define K_BOOL(n, f, d)                                                       \
	{ .name = (n), .type = CT_BOOL, .offset = offsetof(CONF_STRUCT, f),   \
	  .def_b = (d) }
#define K_DOUBLE(n, f, d, lo, hi)                                             \
	{ .name = (n), .type = CT_DOUBLE, .offset = offsetof(CONF_STRUCT, f), \
	  .def_d = (d), .dmin = (lo), .dmax = (hi) }
#define K_ENUM(n, f, d, names)                                                \
	{ .name = (n), .type = CT_ENUM, .offset = offsetof(CONF_STRUCT, f),   \
	  .def_s = (d), .enums = (names) }
#define K_STRLIST(n, f, cnt, defs, ndefs, fl)                                 \
	{ .name = (n), .type = CT_STRLIST, .flags = (fl),                     \
	  .offset = offsetof(CONF_STRUCT, f),                                 \
	  .count_offset = offsetof(CONF_STRUCT, cnt), .def_strs = (defs),     \
	  .def_n = (ndefs) }
#define K_INTLIST(n, f, cnt, defs, ndefs, lo, hi)                             \
	{ .name = (n), .type = CT_INTLIST,                                    \
	  .offset = offsetof(CONF_STRUCT, f),                                 \
	  .count_offset = offsetof(CONF_STRUCT, cnt), .def_ints = (defs),     \
	  .def_n = (ndefs), .min = (lo), .max = (hi) }

/* ---- the aggregator's keys (conf/aggregator.conf) ---------------------- */
#define CONF_STRUCT ap_config
static const conf_key aggregator_keys[] = {
	K_STRING("listen", listen, "127.0.0.1:2206", CF_NONEMPTY | CF_ENDPOINT),
	K_STRING("admin_listen", admin_listen, "unix:./data/admin.sock",
		 CF_NONEMPTY | CF_ENDPOINT | CF_UNIX),
	K_GROUP("storage"),
	K_STRING("storage.dir", storage.dir, "./data", CF_NONEMPTY),
	K_ENUM("storage.durability", storage.durability, "write_nosync",
	       durability_names),
	K_GROUP("operators"),
	K_STRLIST("operators.approved", operators.approved,
		  operators.n_approved, default_approved, 1, CF_APPROVED),
	K_INT64("operators.stabilization_ms", operators.stabilization_ms,
		10000, 0, MAX_MS),
	K_INT64("operators.resync_interval_ms", operators.resync_interval_ms,
		5000, 10, MAX_MS),
	K_INT64("operators.send_timeout_ms", operators.send_timeout_ms,
		2000, 1, MAX_MS),
	K_INT64("operators.reconnect_cooldown_ms",
		operators.reconnect_cooldown_ms, 0, 0, MAX_MS),
	K_INT64("operators.max_sessions", operators.max_sessions,
		10000, 1, 1000000),
	K_INT64("operators.keepalive_time_ms", operators.keepalive_time_ms,
		10000, 100, MAX_MS),
	K_INT64("operators.keepalive_timeout_ms",
		operators.keepalive_timeout_ms, 5000, 100, MAX_MS),
	K_INT64("operators.restart_grace_ms", operators.restart_grace_ms,
		30000, 0, MAX_MS),
	K_GROUP("tls"),
	K_STRING("tls.cert_file", tls.cert_file, "", 0),
	K_STRING("tls.key_file", tls.key_file, "", 0),
	K_STRING("tls.client_ca_file", tls.client_ca_file, "", 0),
	K_INT64("max_message_bytes", max_message_bytes, 4194304,
		1024, INT64_C(1) << 30),
	K_INT64("shutdown_timeout_ms", shutdown_timeout_ms, 5000, 100, MAX_MS),
	K_GROUP("ticker"),
	K_INT64("ticker.threads", ticker.threads, 2, 1, 64),
	K_GROUP("auth"),
	K_ENUM("auth.mode", auth.mode, "signature", auth_mode_names),
	K_INT64("auth.max_skew_s", auth.max_skew_s, 30, 1, 3600),
	K_GROUP("log"),
	K_ENUM("log.level", log.level, "info", log_level_names),
	K_ENUM("log.format", log.format, "text", log_format_names),
	K_STRING("log.file", log.file, "", 0),
	K_STRING("metrics_listen", metrics_listen, "127.0.0.1:9206",
		 CF_ENDPOINT),
	K_GROUP("admin"),
	K_STRING("admin.token", admin.token, "", 0),
};
#undef CONF_STRUCT

/* ---- the operator client's keys (conf/operator.conf) ------------------- */
#define CONF_STRUCT ap_operator_config
static const conf_key operator_keys[] = {
	K_STRING("aggregator", aggregator, "127.0.0.1:2206", CF_NONEMPTY),
	K_STRING("address", address, DEFAULT_OPERATOR, CF_ADDRESS),
	K_STRING("key_file", key_file, "", 0),
	K_GROUP("capabilities"),
	K_BOOL("capabilities.event_monitoring",
	       capabilities.event_monitoring, true),
	K_BOOL("capabilities.block_monitoring",
	       capabilities.block_monitoring, true),
	K_BOOL("capabilities.time_monitoring",
	       capabilities.time_monitoring, true),
	K_INTLIST("chain_ids", chain_ids, n_chain_ids, NULL, 0, 1, INT64_MAX),
	K_INT64("ping_interval_ms", ping_interval_ms, 5000, 100, MAX_MS),
	K_GROUP("backoff"),
	K_INT64("backoff.initial_ms", backoff.initial_ms, 1000, 1, MAX_MS),
	K_DOUBLE("backoff.factor", backoff.factor, 2.0, 1.0, 10.0),
	K_INT64("backoff.max_ms", backoff.max_ms, 60000, 1, MAX_MS),
	K_DOUBLE("backoff.jitter", backoff.jitter, 0.25, 0.0, 1.0),
	K_INT64("backoff.reset_after_ms", backoff.reset_after_ms,
		120000, 0, MAX_MS),
	K_GROUP("tls"),
	K_STRING("tls.ca_file", tls.ca_file, "", 0),
	K_STRING("tls.cert_file", tls.cert_file, "", 0),
	K_STRING("tls.key_file", tls.key_file, "", 0),
	K_STRING("tls.server_name", tls.server_name, "", 0),
	K_GROUP("log"),
	K_ENUM("log.level", log.level, "info", log_level_names),
	K_ENUM("log.format", log.format, "text", log_format_names),
	K_STRING("log.file", log.file, "", 0),
};
#undef CONF_STRUCT

static int aggregator_check(const conf_schema *s, const void *obj,
			    config_setting_t *const *seen, const char *path,
			    char *err, size_t errlen);
static int operator_check(const conf_schema *s, const void *obj,
			  config_setting_t *const *seen, const char *path,
			  char *err, size_t errlen);

static const conf_schema aggregator_schema = {
	aggregator_keys, sizeof aggregator_keys / sizeof aggregator_keys[0],
	sizeof(ap_config), aggregator_check,
};
static const conf_schema operator_schema = {
	operator_keys, sizeof operator_keys / sizeof operator_keys[0],
	sizeof(ap_operator_config), operator_check,
};

/* ---- small helpers ------------------------------------------------------ */

static void *field(void *obj, size_t offset)
{
	return (char *)obj + offset;
}

static const conf_key *find_key(const conf_schema *s, const char *name)
{
	for (size_t i = 0; i < s->n_keys; i++)
		if (strcmp(s->keys[i].name, name) == 0)
			return &s->keys[i];
	return NULL;
}

static config_setting_t *seen_key(const conf_schema *s,
				  config_setting_t *const *seen,
				  const char *name)
{
	const conf_key *k = find_key(s, name);
	AP_ASSERT(k != NULL);
	return seen[k - s->keys];
}

static int enum_value(const conf_enum *e, const char *name)
{
	for (; e->name; e++)
		if (strcmp(e->name, name) == 0)
			return e->value;
	return -1;
}

static void lower_case(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

bool ap_config_is_address(const char *s)
{
	if (!s || s[0] != '0' || s[1] != 'x')
		return false;
	for (int i = 2; i < 42; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		      (c >= 'A' && c <= 'F')))
			return false;
	}
	return s[42] == '\0';
}

/* HOST:PORT with a decimal port 0..65535; an IPv6 host needs brackets. */
static bool is_host_port(const char *s)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s)
		return false;
	size_t hostlen = (size_t)(colon - s);
	if (memchr(s, ':', hostlen) &&
	    !(s[0] == '[' && hostlen >= 3 && s[hostlen - 1] == ']'))
		return false;
	const char *p = colon + 1;
	size_t n = strlen(p);
	if (n == 0 || n > 5)
		return false;
	long port = 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		port = port * 10 + (*p - '0');
	}
	return port <= 65535;
}

/* The name of a file libconfig read while loading `path`. libconfig 1.5
 * records an @include by the name written in the file, although it opened
 * it relative to the include directory (the directory of `path`); join the
 * two so messages and the literal scan name the file actually read. */
static void resolve_file(char *out, size_t outlen, const char *file,
			 const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!file || strcmp(file, path) == 0 || file[0] == '/' || !slash)
		snprintf(out, outlen, "%s", file ? file : path);
	else
		snprintf(out, outlen, "%.*s%s", (int)(slash - path + 1), path,
			 file);
}

/* "FILE:LINE: " + message, FILE and LINE being where `st` was read; with
 * st NULL (a key left at its default) only "FILE: ". */
__attribute__((format(printf, 5, 6))) static int
setting_error(char *err, size_t errlen, const config_setting_t *st,
	      const char *path, const char *fmt, ...)
{
	if (err && errlen) {
		int n;
		if (st) {
			char file[4096];
			resolve_file(file, sizeof file,
				     config_setting_source_file(st), path);
			n = snprintf(err, errlen, "%s:%u: ", file,
				     (unsigned)config_setting_source_line(st));
		} else {
			n = snprintf(err, errlen, "%s: ", path);
		}
		if (n >= 0 && (size_t)n < errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return AP_ECONFIG;
}

static int nomem(char *err, size_t errlen)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", ap_strerror(AP_ENOMEM));
	return AP_ENOMEM;
}

/* ---- defaults and free -------------------------------------------------- */

static void free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void conf_free(const conf_schema *s, void *obj)
{
	if (!obj)
		return;
	for (size_t i = 0; i < s->n_keys; i++) {
		const conf_key *k = &s->keys[i];
		switch (k->type) {
		case CT_STRING:
			free(*(char **)field(obj, k->offset));
			break;
		case CT_STRLIST:
			free_strings(*(char ***)field(obj, k->offset),
				     *(size_t *)field(obj, k->count_offset));
			break;
		case CT_INTLIST:
			free(*(int64_t **)field(obj, k->offset));
			break;
		default:
			break;
		}
	}
	memset(obj, 0, s->size);
}

static int conf_defaults(const conf_schema *s, void *obj)
{
	memset(obj, 0, s->size);
	for (size_t i = 0; i < s->n_keys; i++) {
		const conf_key *k = &s->keys[i];
		void *f = field(obj, k->offset);
		switch (k->type) {
		case CT_GROUP:
			break;
		case CT_STRING:
			if (!(*(char **)f = strdup(k->def_s)))
				goto fail;
			break;
		case CT_INT64:
			*(int64_t *)f = k->def_i;
			break;
		case CT_BOOL:
			*(bool *)f = k->def_b;
			break;
		case CT_DOUBLE:
			*(double *)f = k->def_d;
			break;
		case CT_ENUM: {
			int v = enum_value(k->enums, k->def_s);
			AP_ASSERT(v >= 0);
			*(int *)f = v;
			break;
		}
		case CT_STRLIST: {
			if (k->def_n == 0)
				break;
			char **v = calloc(k->def_n, sizeof *v);
			if (!v)
				goto fail;
			*(char ***)f = v;
			for (size_t j = 0; j < k->def_n; j++) {
				if (!(v[j] = strdup(k->def_strs[j])))
					goto fail;
				*(size_t *)field(obj, k->count_offset) = j + 1;
			}
			break;
		}
		case CT_INTLIST: {
			if (k->def_n == 0)
				break;
			int64_t *v = malloc(k->def_n * sizeof *v);
			if (!v)
				goto fail;
			memcpy(v, k->def_ints, k->def_n * sizeof *v);
			*(int64_t **)f = v;
			*(size_t *)field(obj, k->count_offset) = k->def_n;
			break;
		}
		}
	}
	return 0;
fail:
	conf_free(s, obj);
	return AP_ENOMEM;
}

/* ---- applying one setting ----------------------------------------------- */

static bool is_int_setting(const config_setting_t *st)
{
	int t = config_setting_type(st);
	return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
}

static int check_int(const conf_key *k, const config_setting_t *st,
		     int64_t v, const char *path, char *err, size_t errlen)
{
	if (v < k->min)
		return setting_error(err, errlen, st, path,
				     "key '%s': value %" PRId64
				     " is below the minimum %" PRId64,
				     k->name, v, k->min);
	if (v > k->max)
		return setting_error(err, errlen, st, path,
				     "key '%s': value %" PRId64
				     " is above the maximum %" PRId64,
				     k->name, v, k->max);
	return 0;
}

static int check_string(const conf_key *k, const config_setting_t *st,
			const char *v, const char *path, char *err,
			size_t errlen)
{
	if ((k->flags & CF_NONEMPTY) && v[0] == '\0')
		return setting_error(err, errlen, st, path,
				     "key '%s': must not be empty", k->name);
	if ((k->flags & CF_ADDRESS) && !ap_config_is_address(v))
		return setting_error(err, errlen, st, path,
				     "key '%s': '%s' is not an operator address "
				     "(0x followed by 40 hex digits)",
				     k->name, v);
	if ((k->flags & CF_ENDPOINT) && v[0] != '\0') {
		bool is_unix = strncmp(v, "unix:", 5) == 0;
		if ((k->flags & CF_UNIX) && is_unix) {
			if (v[5] == '\0')
				return setting_error(err, errlen, st, path,
						     "key '%s': 'unix:' needs a "
						     "socket path", k->name);
		} else if (!is_host_port(v)) {
			return setting_error(err, errlen, st, path,
					     "key '%s': '%s' is not %sHOST:PORT",
					     k->name, v,
					     (k->flags & CF_UNIX) ? "unix:PATH or "
								  : "");
		}
	}
	return 0;
}

static int apply_list(const conf_key *k, void *obj,
		      const config_setting_t *st, const char *path, char *err,
		      size_t errlen)
{
	int t = config_setting_type(st);
	bool strings = k->type == CT_STRLIST;
	const char *what = strings ? "expected a list of strings"
				   : "expected a list of integers";
	if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
		return setting_error(err, errlen, st, path, "key '%s': %s",
				     k->name, what);

	size_t n = (size_t)config_setting_length(st);
	char **sv = NULL;
	int64_t *iv = NULL;
	size_t done = 0;
	int rc = 0;
	if (n > 0) {
		if (strings)
			sv = calloc(n, sizeof *sv);
		else
			iv = calloc(n, sizeof *iv);
		if (!sv && !iv)
			return nomem(err, errlen);
	}
	for (size_t i = 0; i < n; i++) {
		const config_setting_t *el = config_setting_get_elem(st, (unsigned)i);
		if (!strings) {
			if (!is_int_setting(el)) {
				rc = setting_error(err, errlen, el, path,
						   "key '%s': %s", k->name, what);
				goto fail;
			}
			iv[i] = config_setting_get_int64(el);
			if ((rc = check_int(k, el, iv[i], path, err, errlen)))
				goto fail;
			continue;
		}
		if (config_setting_type(el) != CONFIG_TYPE_STRING) {
			rc = setting_error(err, errlen, el, path, "key '%s': %s",
					   k->name, what);
			goto fail;
		}
		const char *v = config_setting_get_string(el);
		if (k->flags & CF_APPROVED) {
			if (strcmp(v, "*") == 0 && n > 1) {
				rc = setting_error(err, errlen, el, path,
						   "key '%s': the wildcard '*' "
						   "must be the only entry",
						   k->name);
				goto fail;
			}
			if (strcmp(v, "*") != 0 && !ap_config_is_address(v)) {
				rc = setting_error(err, errlen, el, path,
						   "key '%s': '%s' is not an "
						   "operator address (0x followed "
						   "by 40 hex digits) or '*'",
						   k->name, v);
				goto fail;
			}
		}
		if (!(sv[i] = strdup(v))) {
			rc = nomem(err, errlen);
			goto fail;
		}
		done = i + 1;
		if (k->flags & CF_APPROVED)
			lower_case(sv[i]);
	}

	size_t *count = field(obj, k->count_offset);
	if (strings) {
		char ***slot = field(obj, k->offset);
		free_strings(*slot, *count);
		*slot = sv;
	} else {
		int64_t **slot = field(obj, k->offset);
		free(*slot);
		*slot = iv;
	}
	*count = n;
	return 0;
fail:
	if (sv)
		free_strings(sv, done);
	free(iv);
	return rc;
}

static int apply_setting(const conf_key *k, void *obj,
			 const config_setting_t *st, const char *path,
			 char *err, size_t errlen)
{
	void *f = field(obj, k->offset);
	int t = config_setting_type(st);

	switch (k->type) {
	case CT_GROUP:
		break;
	case CT_STRING: {
		if (t != CONFIG_TYPE_STRING)
			return setting_error(err, errlen, st, path,
					     "key '%s': expected a string",
					     k->name);
		const char *v = config_setting_get_string(st);
		int rc = check_string(k, st, v, path, err, errlen);
		if (rc)
			return rc;
		char *copy = strdup(v);
		if (!copy)
			return nomem(err, errlen);
		if (k->flags & CF_ADDRESS)
			lower_case(copy);
		free(*(char **)f);
		*(char **)f = copy;
		return 0;
	}
	case CT_INT64: {
		if (!is_int_setting(st))
			return setting_error(err, errlen, st, path,
					     "key '%s': expected an integer",
					     k->name);
		int64_t v = config_setting_get_int64(st);
		int rc = check_int(k, st, v, path, err, errlen);
		if (rc)
			return rc;
		*(int64_t *)f = v;
		return 0;
	}
	case CT_BOOL:
		if (t != CONFIG_TYPE_BOOL)
			return setting_error(err, errlen, st, path,
					     "key '%s': expected a boolean "
					     "(true or false)", k->name);
		*(bool *)f = config_setting_get_bool(st) != 0;
		return 0;
	case CT_DOUBLE: {
		/* An integer is a fine number ("factor = 2;"). */
		double v;
		if (t == CONFIG_TYPE_FLOAT)
			v = config_setting_get_float(st);
		else if (is_int_setting(st))
			v = (double)config_setting_get_int64(st);
		else
			return setting_error(err, errlen, st, path,
					     "key '%s': expected a number",
					     k->name);
		if (!(v >= k->dmin))
			return setting_error(err, errlen, st, path,
					     "key '%s': value %g is below the "
					     "minimum %g", k->name, v, k->dmin);
		if (!(v <= k->dmax))
			return setting_error(err, errlen, st, path,
					     "key '%s': value %g is above the "
					     "maximum %g", k->name, v, k->dmax);
		*(double *)f = v;
		return 0;
	}
	case CT_ENUM: {
		if (t != CONFIG_TYPE_STRING)
			return setting_error(err, errlen, st, path,
					     "key '%s': expected a string",
					     k->name);
		const char *v = config_setting_get_string(st);
		int value = enum_value(k->enums, v);
		if (value < 0) {
			char names[128] = "";
			size_t used = 0;
			for (const conf_enum *e = k->enums; e->name; e++) {
				int n = snprintf(names + used, sizeof names - used,
						 "%s%s", used ? ", " : "",
						 e->name);
				if (n < 0 || (size_t)n >= sizeof names - used)
					break;
				used += (size_t)n;
			}
			return setting_error(err, errlen, st, path,
					     "key '%s': '%s' is not one of %s",
					     k->name, v, names);
		}
		*(int *)f = value;
		return 0;
	}
	case CT_STRLIST:
	case CT_INTLIST:
		return apply_list(k, obj, st, path, err, errlen);
	}
	return 0;
}

/* Walk every member of `group` (the root or a group key); `prefix` is the
 * group's dotted name, "" at the root. */
static int walk_group(const conf_schema *s, void *obj,
		      const config_setting_t *group, const char *prefix,
		      config_setting_t **seen, const char *path, char *err,
		      size_t errlen)
{
	int n = config_setting_length(group);
	for (int i = 0; i < n; i++) {
		config_setting_t *st = config_setting_get_elem(group, (unsigned)i);
		const char *name = config_setting_name(st);
		char key[256];
		int len = snprintf(key, sizeof key, "%s%s%s", prefix,
				   prefix[0] ? "." : "", name ? name : "");
		const conf_key *k = NULL;
		if (len > 0 && (size_t)len < sizeof key)
			k = find_key(s, key);
		if (!k)
			return setting_error(err, errlen, st, path,
					     "unknown key '%s'", key);
		seen[k - s->keys] = st;
		int rc;
		if (k->type == CT_GROUP) {
			if (!config_setting_is_group(st))
				return setting_error(err, errlen, st, path,
						     "key '%s': expected a group "
						     "({ ... })", k->name);
			rc = walk_group(s, obj, st, key, seen, path, err, errlen);
		} else {
			rc = apply_setting(k, obj, st, path, err, errlen);
		}
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- the libconfig 1.5 32-bit literal trap ------------------------------ */

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*';
}

static bool is_hex_digit(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

/* Scan the text of one file read by libconfig for an integer literal that
 * libconfig 1.5 would truncate to 32 bits (no L suffix). Skips comments,
 * strings and names the way libconfig's scanner does. */
static int scan_wide_literals(const char *file, char *err, size_t errlen)
{
	FILE *fp = fopen(file, "r");
	if (!fp)
		return 0; /* libconfig just read it; nothing more to say */
	char *text = NULL;
	size_t len = 0, cap = 0;
	int rc = 0;
	for (;;) {
		if (cap - len < 4096) {
			char *bigger = realloc(text, cap + 65536);
			if (!bigger) {
				rc = nomem(err, errlen);
				goto out;
			}
			text = bigger;
			cap += 65536;
		}
		size_t got = fread(text + len, 1, cap - len - 1, fp);
		len += got;
		if (got == 0)
			break;
	}
	text[len] = '\0';

	unsigned line = 1;
	for (size_t i = 0; i < len;) {
		char c = text[i];
		if (c == '\n') {
			line++;
			i++;
		} else if (c == '#' || (c == '/' && text[i + 1] == '/')) {
			while (i < len && text[i] != '\n')
				i++;
		} else if (c == '/' && text[i + 1] == '*') {
			for (i += 2; i < len && !(text[i] == '*' && text[i + 1] == '/'); i++)
				if (text[i] == '\n')
					line++;
			i += 2;
		} else if (c == '"') {
			for (i++; i < len && text[i] != '"'; i++) {
				if (text[i] == '\\' && i + 1 < len)
					i++;
				if (text[i] == '\n')
					line++;
			}
			i++;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   c == '*' || c == '@') {
			for (i++; i < len && is_name_char(text[i]); i++)
				;
		} else if (c >= '0' && c <= '9') {
			size_t start = i;
			bool negative = start > 0 && text[start - 1] == '-';
			bool hex = c == '0' && (text[i + 1] == 'x' || text[i + 1] == 'X');
			uint64_t v = 0;
			bool wide = false;
			if (hex) {
				for (i += 2; i < len && is_hex_digit(text[i]); i++) {
					char d = text[i];
					unsigned dv = d <= '9' ? (unsigned)(d - '0')
						   : (unsigned)((d | 0x20) - 'a' + 10);
					if (v > 0x7fffffff)
						wide = true;
					else
						v = v * 16 + dv;
				}
				if (v > 0x7fffffff)
					wide = true;
			} else {
				for (; i < len && text[i] >= '0' && text[i] <= '9'; i++) {
					if (v > 0x80000000u)
						wide = true;
					else
						v = v * 10 + (uint64_t)(text[i] - '0');
				}
				if (v > (negative ? 0x80000000u : 0x7fffffffu))
					wide = true;
			}
			char next = i < len ? text[i] : '\0';
			if (next == '.' || next == 'e' || next == 'E') {
				/* a float: skip the rest of it */
				while (i < len && (is_hex_digit(text[i]) || text[i] == '.' ||
						   text[i] == '+' || text[i] == '-'))
					i++;
			} else if (next == 'L') {
				i++; /* a 64-bit literal, read correctly */
			} else if (wide) {
				int n = (int)(i - start) + (negative ? 1 : 0);
				const char *lit = text + start - (negative ? 1 : 0);
				if (err && errlen)
					snprintf(err, errlen,
						 "%s:%u: integer %.*s does not fit "
						 "in 32 bits; write it as %.*sL",
						 file, line, n, lit, n, lit);
				rc = AP_ECONFIG;
				goto out;
			}
		} else {
			i++;
		}
	}
out:
	free(text);
	fclose(fp);
	return rc;
}

/* ---- loading -------------------------------------------------------------- */

/* libconfig 1.5 calls exit(2) when an @include names a directory ("input
 * in flex scanner failed"), which would end the daemon or `ap config check`
 * without a FILE:LINE error. So before libconfig reads anything, every
 * @include line (recursively, as libconfig would follow them) must name a
 * regular file; the first that does not is reported here. Found by the
 * config fuzz target. A missing file is left to libconfig, which reports
 * it properly. */
static int check_includes(const char *file, const char *dir, int depth, char *err,
			  size_t errlen)
{
	FILE *fp = fopen(file, "r");
	if (!fp)
		return 0; /* libconfig reports unreadable files itself */
	char line[4096];
	int lineno = 0, rc = 0;
	for (;;) {
		/* getline-like read that sees NUL bytes: fgets would hide them. */
		size_t n = 0;
		int c;
		while ((c = getc_unlocked(fp)) != EOF && c != '\n' && n < sizeof line - 1)
			line[n++] = (char)c;
		if (n == 0 && c == EOF)
			break;
		line[n] = '\0';
		lineno++;
		if (memchr(line, '\0', n)) {
			snprintf(err, errlen, "%s:%d: NUL byte in a configuration file", file, lineno);
			rc = AP_ECONFIG;
			break;
		}
		if (c != '\n' && c != EOF) /* an over-long line: skip its rest */
			while ((c = getc_unlocked(fp)) != EOF && c != '\n')
				if (c == 0) {
					snprintf(err, errlen, "%s:%d: NUL byte in a configuration file",
						 file, lineno);
					rc = AP_ECONFIG;
					break;
				}
		if (rc)
			break;
		const char *p = line + strspn(line, " \t");
		if (strncmp(p, "@include", 8) != 0)
			continue;
		p += 8;
		p += strspn(p, " \t");
		if (*p != '"')
			continue;
		const char *end = strchr(p + 1, '"');
		const char *esc = strchr(p + 1, '\\');
		if (!end || (esc && esc < end)) {
			/* libconfig would unescape the name; we refuse rather than
			 * guess what it would open. */
			snprintf(err, errlen, "%s:%d: @include needs a plain quoted file name "
				 "(no escapes)", file, lineno);
			rc = AP_ECONFIG;
			break;
		}
		char name[4096], full[8192];
		snprintf(name, sizeof name, "%.*s", (int)(end - p - 1), p + 1);
		if (name[0] == '/' || !dir)
			snprintf(full, sizeof full, "%s", name);
		else
			snprintf(full, sizeof full, "%s/%s", dir, name);
		struct stat st;
		if (stat(full, &st) != 0)
			continue;
		if (!S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "%s:%d: @include \"%s\" is not a regular file",
				 file, lineno, name);
			rc = AP_ECONFIG;
		} else if (depth >= 10) {
			snprintf(err, errlen, "%s:%d: @include nested too deeply", file, lineno);
			rc = AP_ECONFIG;
		} else {
			rc = check_includes(full, dir, depth + 1, err, errlen);
		}
		if (rc)
			break;
	}
	fclose(fp);
	return rc;
}

static int conf_load(const conf_schema *s, void *obj, const char *path,
		     char *err, size_t errlen)
{
	int rc = conf_defaults(s, obj);
	if (rc)
		return nomem(err, errlen);
	if (err && errlen)
		err[0] = '\0';
	if (!path)
		return 0;

	config_t lc;
	config_init(&lc);
	config_setting_t **seen = calloc(s->n_keys, sizeof *seen);
	char *dir = strdup(path);
	if (!seen || !dir) {
		rc = nomem(err, errlen);
		goto fail;
	}
	/* @include "x" is resolved next to the including file, not the cwd. */
	char *slash = strrchr(dir, '/');
	if (slash) {
		slash[slash == dir ? 1 : 0] = '\0';
		config_set_include_dir(&lc, dir);
	}

	rc = check_includes(path, slash ? dir : NULL, 0, err, errlen);
	if (rc)
		goto fail;
	errno = 0;
	if (!config_read_file(&lc, path)) {
		int saved = errno;
		if (config_error_type(&lc) == CONFIG_ERR_FILE_IO) {
			if (err && errlen)
				snprintf(err, errlen, "%s: cannot read: %s", path,
					 saved ? strerror(saved)
					       : config_error_text(&lc));
		} else if (err && errlen) {
			char file[4096];
			resolve_file(file, sizeof file, config_error_file(&lc),
				     path);
			snprintf(err, errlen, "%s:%d: %s", file,
				 config_error_line(&lc), config_error_text(&lc));
		}
		rc = AP_ECONFIG;
		goto fail;
	}
	for (unsigned i = 0; i < lc.num_filenames; i++) {
		char file[4096];
		resolve_file(file, sizeof file, lc.filenames[i], path);
		if ((rc = scan_wide_literals(file, err, errlen)))
			goto fail;
	}
	if ((rc = walk_group(s, obj, config_root_setting(&lc), "", seen, path,
			     err, errlen)))
		goto fail;
	if (s->check && (rc = s->check(s, obj, seen, path, err, errlen)))
		goto fail;

	config_destroy(&lc);
	free(seen);
	free(dir);
	return 0;
fail:
	config_destroy(&lc);
	free(seen);
	free(dir);
	conf_free(s, obj);
	if (conf_defaults(s, obj))
		return nomem(err, errlen);
	return rc;
}

/* ---- cross-key checks ------------------------------------------------------ */

static int aggregator_check(const conf_schema *s, const void *obj,
			    config_setting_t *const *seen, const char *path,
			    char *err, size_t errlen)
{
	const ap_config *cfg = obj;
	bool cert = cfg->tls.cert_file[0] != '\0';
	bool key = cfg->tls.key_file[0] != '\0';

	if (cert && !key) {
		config_setting_t *st = seen_key(s, seen, "tls.key_file");
		return setting_error(err, errlen,
				     st ? st : seen_key(s, seen, "tls.cert_file"),
				     path, "key 'tls.key_file': must be set "
				     "when tls.cert_file is set");
	}
	if (key && !cert) {
		config_setting_t *st = seen_key(s, seen, "tls.cert_file");
		return setting_error(err, errlen,
				     st ? st : seen_key(s, seen, "tls.key_file"),
				     path, "key 'tls.cert_file': must be set "
				     "when tls.key_file is set");
	}
	if (cfg->tls.client_ca_file[0] != '\0' && !cert)
		return setting_error(err, errlen,
				     seen_key(s, seen, "tls.client_ca_file"),
				     path, "key 'tls.client_ca_file': mutual TLS "
				     "needs tls.cert_file and tls.key_file");
	if (strncmp(cfg->admin_listen, "unix:", 5) != 0 &&
	    cfg->admin.token[0] == '\0') {
		config_setting_t *st = seen_key(s, seen, "admin.token");
		return setting_error(err, errlen,
				     st ? st : seen_key(s, seen, "admin_listen"),
				     path, "key 'admin.token': must be set when "
				     "admin_listen is TCP ('%s')", cfg->admin_listen);
	}
	return 0;
}

static int operator_check(const conf_schema *s, const void *obj,
			  config_setting_t *const *seen, const char *path,
			  char *err, size_t errlen)
{
	const ap_operator_config *cfg = obj;
	bool ca = cfg->tls.ca_file[0] != '\0';
	bool cert = cfg->tls.cert_file[0] != '\0';
	bool key = cfg->tls.key_file[0] != '\0';

	if (cert != key) {
		const char *missing = cert ? "tls.key_file" : "tls.cert_file";
		const char *given = cert ? "tls.cert_file" : "tls.key_file";
		config_setting_t *st = seen_key(s, seen, missing);
		return setting_error(err, errlen, st ? st : seen_key(s, seen, given),
				     path, "key '%s': must be set when %s is set",
				     missing, given);
	}
	if (!ca && cert)
		return setting_error(err, errlen, seen_key(s, seen, "tls.cert_file"),
				     path, "key 'tls.cert_file': a client certificate "
				     "needs TLS, which needs tls.ca_file");
	if (!ca && cfg->tls.server_name[0] != '\0')
		return setting_error(err, errlen, seen_key(s, seen, "tls.server_name"),
				     path, "key 'tls.server_name': needs TLS, which "
				     "needs tls.ca_file");
	if (cfg->backoff.max_ms < cfg->backoff.initial_ms) {
		config_setting_t *st = seen_key(s, seen, "backoff.max_ms");
		return setting_error(err, errlen,
				     st ? st : seen_key(s, seen, "backoff.initial_ms"),
				     path, "key 'backoff.max_ms': value %" PRId64
				     " is below backoff.initial_ms %" PRId64,
				     cfg->backoff.max_ms, cfg->backoff.initial_ms);
	}
	return 0;
}

/* ---- public interface ------------------------------------------------------ */

int ap_config_defaults(ap_config *cfg)
{
	return conf_defaults(&aggregator_schema, cfg);
}

int ap_config_load(ap_config *cfg, const char *path, char *err, size_t errlen)
{
	return conf_load(&aggregator_schema, cfg, path, err, errlen);
}

void ap_config_free(ap_config *cfg)
{
	conf_free(&aggregator_schema, cfg);
}

int ap_operator_config_defaults(ap_operator_config *cfg)
{
	return conf_defaults(&operator_schema, cfg);
}

int ap_operator_config_load(ap_operator_config *cfg, const char *path,
			    char *err, size_t errlen)
{
	return conf_load(&operator_schema, cfg, path, err, errlen);
}

void ap_operator_config_free(ap_operator_config *cfg)
{
	conf_free(&operator_schema, cfg);
}

bool ap_config_is_approved(const ap_config *cfg, const char *address)
{
	if (!ap_config_is_address(address))
		return false;
	for (size_t i = 0; i < cfg->operators.n_approved; i++) {
		const char *a = cfg->operators.approved[i];
		if (strcmp(a, "*") == 0 || strcasecmp(a, address) == 0)
			return true;
	}
	return false;
}

/* Key i of one kind's table, counting only keys that hold a value (groups
 * are skipped); NULL past the end or for an unknown kind. */
static const conf_key *key_at(int kind, size_t i)
{
	const conf_schema *s = kind == 0 ? &aggregator_schema
			     : kind == 1 ? &operator_schema
					 : NULL;
	if (!s)
		return NULL;
	for (size_t j = 0; j < s->n_keys; j++) {
		if (s->keys[j].type == CT_GROUP)
			continue;
		if (i-- == 0)
			return &s->keys[j];
	}
	return NULL;
}

const char *ap_config_key_name(int kind, size_t i)
{
	const conf_key *k = key_at(kind, i);
	return k ? k->name : NULL;
}

/* ---- describing keys (for the man pages) ---------------------------------- */

/* A double as libconfig reads a float back: always with a '.' or exponent. */
static void format_double(char *out, size_t outlen, double v)
{
	int n = snprintf(out, outlen, "%g", v);
	if (n > 0 && (size_t)n + 2 < outlen && !strpbrk(out, ".e"))
		memcpy(out + n, ".0", 3);
}

static void describe_type(const conf_key *k, ap_config_key_info *info)
{
	const char *t = "string";
	switch (k->type) {
	case CT_STRING:
		if (k->flags & CF_ADDRESS)
			t = "string, an address (0x and 40 hex digits)";
		else if ((k->flags & CF_ENDPOINT) && (k->flags & CF_UNIX))
			t = "string, HOST:PORT or unix:PATH";
		else if (k->flags & CF_ENDPOINT)
			t = (k->flags & CF_NONEMPTY) ? "string, HOST:PORT"
						     : "string, HOST:PORT or empty";
		else if (k->flags & CF_NONEMPTY)
			t = "string, not empty";
		break;
	case CT_INT64:
		t = "integer";
		break;
	case CT_BOOL:
		t = "boolean";
		break;
	case CT_DOUBLE:
		t = "number";
		break;
	case CT_ENUM:
		t = "string"; /* the names are in info->values */
		break;
	case CT_STRLIST:
		t = (k->flags & CF_APPROVED) ? "list of addresses, or [ \"*\" ]"
					     : "list of strings";
		break;
	case CT_INTLIST:
		t = "list of integers";
		break;
	case CT_GROUP:
		t = "group";
		break;
	}
	snprintf(info->type, sizeof info->type, "%s", t);
}

static void describe_default(const conf_key *k, ap_config_key_info *info)
{
	char *out = info->default_value;
	size_t len = sizeof info->default_value, used = 0;
	switch (k->type) {
	case CT_STRING:
	case CT_ENUM:
		snprintf(out, len, "\"%s\"", k->def_s);
		break;
	case CT_INT64:
		snprintf(out, len, "%" PRId64, k->def_i);
		break;
	case CT_BOOL:
		snprintf(out, len, "%s", k->def_b ? "true" : "false");
		break;
	case CT_DOUBLE:
		format_double(out, len, k->def_d);
		break;
	case CT_STRLIST:
	case CT_INTLIST:
		if (k->def_n == 0) {
			snprintf(out, len, "[]");
			break;
		}
		used = (size_t)snprintf(out, len, "[");
		for (size_t j = 0; j < k->def_n && used < len; j++) {
			if (k->type == CT_STRLIST)
				used += (size_t)snprintf(out + used, len - used,
							 "%s \"%s\"", j ? "," : "",
							 k->def_strs[j]);
			else
				used += (size_t)snprintf(out + used, len - used,
							 "%s %" PRId64, j ? "," : "",
							 k->def_ints[j]);
		}
		if (used < len)
			snprintf(out + used, len - used, " ]");
		break;
	case CT_GROUP:
		out[0] = '\0';
		break;
	}
}

int ap_config_key_describe(int kind, size_t i, ap_config_key_info *info)
{
	const conf_key *k = key_at(kind, i);
	if (!k)
		return AP_ENOTFOUND;
	memset(info, 0, sizeof *info);
	info->name = k->name;
	describe_type(k, info);
	describe_default(k, info);

	if (k->type == CT_INT64 || k->type == CT_INTLIST) {
		info->has_range = true;
		info->min = (double)k->min;
		info->max = (double)k->max;
		if (k->max == INT64_MAX)
			snprintf(info->range, sizeof info->range, ">= %" PRId64, k->min);
		else
			snprintf(info->range, sizeof info->range,
				 "%" PRId64 " .. %" PRId64, k->min, k->max);
	} else if (k->type == CT_DOUBLE) {
		char lo[24], hi[24];
		format_double(lo, sizeof lo, k->dmin);
		format_double(hi, sizeof hi, k->dmax);
		info->has_range = true;
		info->min = k->dmin;
		info->max = k->dmax;
		snprintf(info->range, sizeof info->range, "%s .. %s", lo, hi);
	}

	if (k->type == CT_ENUM) {
		size_t used = 0;
		for (const conf_enum *e = k->enums; e->name; e++) {
			int n = snprintf(info->values + used, sizeof info->values - used,
					 "%s\"%s\"", used ? ", " : "", e->name);
			if (n < 0 || (size_t)n >= sizeof info->values - used)
				break;
			used += (size_t)n;
		}
	}
	return 0;
}
