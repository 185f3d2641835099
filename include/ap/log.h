/* Logging (SPEC section 6).
 *
 * One line per event: time, level, message, then key=value fields (text) or
 * one JSON object per line (json). The logger is process-wide. Each line is
 * formatted into a private buffer and written with a single write(2) under
 * the logger's mutex, so lines from concurrent threads never interleave.
 *
 * The level check comes before the field list is built, so
 *     AP_DEBUG("msg", AP_F_STR("task_id", expensive()))
 * does not call expensive() when debug is off.
 *
 * Lock rule: `log_lock` (private) guards the output fd and the path; it is
 * held only around the write and the reopen. Level and format are atomics,
 * read without the lock. Nothing is called out while it is held. */
#ifndef AP_LOG_H
#define AP_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
	AP_LOG_DEBUG = 0,
	AP_LOG_INFO = 1,
	AP_LOG_WARN = 2,
	AP_LOG_ERROR = 3,
} ap_log_level;

typedef enum {
	AP_LOG_TEXT = 0,
	AP_LOG_JSON = 1,
} ap_log_format;

typedef enum {
	AP_LF_STR,
	AP_LF_INT,
	AP_LF_UINT,
	AP_LF_BOOL,
	AP_LF_DBL,
} ap_log_field_kind;

typedef struct ap_log_field {
	const char *key;
	ap_log_field_kind kind;
	union {
		const char *s;
		int64_t i;
		uint64_t u;
		bool b;
		double d;
	} v;
} ap_log_field;

#define AP_F_STR(k, x) { .key = (k), .kind = AP_LF_STR, .v.s = (x) }
#define AP_F_INT(k, x) { .key = (k), .kind = AP_LF_INT, .v.i = (int64_t)(x) }
#define AP_F_UINT(k, x) { .key = (k), .kind = AP_LF_UINT, .v.u = (uint64_t)(x) }
#define AP_F_BOOL(k, x) { .key = (k), .kind = AP_LF_BOOL, .v.b = (x) }
#define AP_F_DBL(k, x) { .key = (k), .kind = AP_LF_DBL, .v.d = (double)(x) }

/* The longest line written, newline included. A longer line is cut at a
 * character boundary and ends with a `truncated=true` field (text) or
 * "truncated":true (json); it is never cut silently. */
#define AP_LOG_LINE_MAX (64 * 1024)

/* Configure the process logger. `path` NULL or "" logs to stderr; otherwise
 * the file is opened for append (created 0640). Returns 0, AP_EINVAL for an
 * unknown level or format, AP_ENOMEM, or AP_EIO with the reason in err; on
 * failure the previous destination, level and format stay in force.
 * Thread-safe; may be called again to reconfigure. */
int ap_log_open(ap_log_level level, ap_log_format format, const char *path,
		char *err, size_t errlen);
/* Reopen the log file (SIGHUP, logrotate). No-op when logging to stderr
 * or to a descriptor given with ap_log_set_fd. Returns 0 or AP_EIO, in
 * which case logging carries on into the old file. Thread-safe, but not
 * async-signal-safe: call it from the thread that saw the signal flag. */
int ap_log_reopen(void);
/* Log to an existing descriptor (tests use a pipe); a negative fd means
 * stderr. The fd stays the caller's: the logger never closes it. */
void ap_log_set_fd(int fd);
/* Close a log file opened by ap_log_open and go back to stderr. */
void ap_log_close(void);

void ap_log_set_level(ap_log_level level);
ap_log_level ap_log_get_level(void);
void ap_log_set_format(ap_log_format format);
bool ap_log_enabled(ap_log_level level);

/* Parse "debug|info|warn|error" / "text|json"; -1 when unknown. */
int ap_log_level_parse(const char *s);
int ap_log_format_parse(const char *s);

/* Format and write one line. Use the macros below. Thread-safe; keeps the
 * caller's errno; the fields are only read during the call. */
void ap_log_emit(ap_log_level level, const char *msg,
		 const ap_log_field *fields, size_t nfields);

/* AP_LOG(level, msg, fields...): the fields are only evaluated when the
 * level is enabled. The leading {0} lets the list be empty. */
#define AP_LOG(lvl, msg, ...)                                                 \
	do {                                                                  \
		if (ap_log_enabled(lvl)) {                                    \
			const ap_log_field ap_lf_[] = { { 0 }, ##__VA_ARGS__ }; \
			ap_log_emit((lvl), (msg), ap_lf_ + 1,                 \
				    sizeof ap_lf_ / sizeof ap_lf_[0] - 1);    \
		}                                                             \
	} while (0)

#define AP_DEBUG(msg, ...) AP_LOG(AP_LOG_DEBUG, msg, ##__VA_ARGS__)
#define AP_INFO(msg, ...) AP_LOG(AP_LOG_INFO, msg, ##__VA_ARGS__)
#define AP_WARN(msg, ...) AP_LOG(AP_LOG_WARN, msg, ##__VA_ARGS__)
#define AP_ERROR(msg, ...) AP_LOG(AP_LOG_ERROR, msg, ##__VA_ARGS__)

#endif
