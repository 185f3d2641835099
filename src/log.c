/* Logging: see include/ap/log.h and SPEC.md section 6.
 *
 * Why it is shaped this way: log lines are what operators grep and what
 * dashboards parse, so a line must never be torn, never be split in two by a
 * newline inside a value, and in JSON mode must always be valid JSON even when
 * a field carries bytes from the network. So every line is built completely
 * in a buffer private to the calling thread (a stack buffer, grown on the
 * heap for long lines) and only then handed to the kernel with one write(2)
 * while holding `log_lock`. Formatting happens outside the lock, so a slow
 * formatter never holds up other threads; the lock covers only the syscall.
 *
 * A line is capped at AP_LOG_LINE_MAX bytes. A longer line is cut at a
 * character boundary, its strings are still closed properly, and it is
 * marked with a final `truncated=true` field, so the cut is never silent.
 *
 * Level and format are atomics read without the lock, which keeps
 * ap_log_enabled() to one relaxed load. The module starts no threads. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"

static atomic_int log_level = AP_LOG_INFO;
static atomic_int log_format = AP_LOG_TEXT;

/* Lock rule: log_lock guards log_fd, log_path and log_owns_fd. It is held
 * around the write(2) of a finished line and around the swap/reopen of the
 * descriptor, nothing else; no other module and no callback is called while
 * holding it. A descriptor being replaced is closed after the lock is
 * dropped: once swapped out no writer can reach it any more. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = STDERR_FILENO;
static char *log_path;    /* owned; NULL unless logging to a file we opened */
static bool log_owns_fd;  /* true when log_fd was opened by ap_log_open */

/* Room always kept free for closing quotes, the truncation mark and '\n'. */
#define LINE_RESERVE 64
#define LINE_STACK 4096

typedef struct {
	char *p;
	size_t len, size;
	bool truncated;
	char stack[LINE_STACK];
} line_buf;

/* Append content. Fails (and marks the line truncated) when the bytes would
 * eat into the reserve below AP_LOG_LINE_MAX or the heap is exhausted. */
static bool put(line_buf *l, const char *s, size_t n)
{
	if (l->truncated || l->len + n + LINE_RESERVE > AP_LOG_LINE_MAX) {
		l->truncated = true;
		return false;
	}
	if (l->len + n + LINE_RESERVE > l->size) {
		size_t size = l->size * 2;
		while (size < l->len + n + LINE_RESERVE)
			size *= 2;
		if (size > AP_LOG_LINE_MAX)
			size = AP_LOG_LINE_MAX;
		char *p = malloc(size);
		if (!p) {
			l->truncated = true;
			return false;
		}
		memcpy(p, l->p, l->len);
		if (l->p != l->stack)
			free(l->p);
		l->p = p;
		l->size = size;
	}
	memcpy(l->p + l->len, s, n);
	l->len += n;
	return true;
}

/* Append closing syntax from the reserve; content puts always leave room. */
static void put_close(line_buf *l, const char *s)
{
	size_t n = strlen(s);
	AP_ASSERT(l->len + n <= l->size);
	memcpy(l->p + l->len, s, n);
	l->len += n;
}

static bool puts_(line_buf *l, const char *s) { return put(l, s, strlen(s)); }

/* Length of the valid UTF-8 sequence at s (at most `n` bytes), or 0 when the
 * byte at s does not start one. Strict: no overlongs, surrogates, or code
 * points above U+10FFFF, so what passes is what a strict decoder accepts. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t want;
	unsigned char lo = 0x80, hi = 0xbf;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		want = 2;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		want = 3;
		lo = s[0] == 0xe0 ? 0xa0 : 0x80; /* no overlongs */
		hi = s[0] == 0xed ? 0x9f : 0xbf; /* no surrogates */
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		want = 4;
		lo = s[0] == 0xf0 ? 0x90 : 0x80; /* no overlongs */
		hi = s[0] == 0xf4 ? 0x8f : 0xbf; /* nothing above U+10FFFF */
	} else {
		return 0;
	}
	if (n < want || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < want; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return want;
}

/* Does a text value need double quotes? */
static bool text_needs_quotes(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str), k;
	if (n == 0)
		return true;
	for (; n > 0; s += k, n -= k) {
		k = utf8_len(s, n);
		if (k == 0 || *s <= ' ' || *s == '=' || *s == '"' || *s == 0x7f)
			return true;
	}
	return false;
}

/* A string body, escaped so a line stays one line. JSON: `"`, `\` and
 * control characters escaped, invalid UTF-8 bytes replaced by U+FFFD. Text:
 * control characters and invalid bytes as \n, \t, \r or \xNN; `"` and `\`
 * are escaped only inside quotes (a bare value holds no quote and nothing
 * else to escape, so its backslashes are literal). Each escape goes in
 * whole, so a full line is cut at a character boundary. */
static void put_escaped(line_buf *l, const char *str, bool json, bool quoted)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str);
	char esc[8];
	while (n > 0 && !l->truncated) {
		size_t k = utf8_len(s, n), outlen = k;
		const char *out = (const char *)s;
		if (k == 0 && json) {
			out = "\\ufffd", outlen = 6, k = 1;
		} else if (k == 0 || *s < 0x20 || (!json && *s == 0x7f)) {
			const char *named = k == 0 ? NULL : *s == '\n' ? "\\n" :
					    *s == '\t' ? "\\t" : *s == '\r' ? "\\r" : NULL;
			if (named)
				out = named, outlen = 2;
			else
				outlen = (size_t)snprintf(esc, sizeof esc,
							  json ? "\\u%04x" : "\\x%02x", *s), out = esc;
			k = 1;
		} else if ((json || quoted) && (*s == '"' || *s == '\\')) {
			esc[0] = '\\', esc[1] = (char)*s, out = esc, outlen = 2;
		}
		put(l, out, outlen);
		s += k, n -= k;
	}
}

/* A scalar field value as text; false for a string field. A double is
 * written with the shorter of %.15g/%.17g that reads back as itself. */
static bool fmt_scalar(const ap_log_field *f, bool json, char *buf, size_t size)
{
	const char *word = json ? "null" : "(unknown)";
	switch (f->kind) {
	case AP_LF_INT: snprintf(buf, size, "%" PRId64, f->v.i); return true;
	case AP_LF_UINT: snprintf(buf, size, "%" PRIu64, f->v.u); return true;
	case AP_LF_BOOL: word = f->v.b ? "true" : "false"; break;
	case AP_LF_STR:
		if (f->v.s)
			return false;
		word = json ? "null" : "(null)";
		break;
	case AP_LF_DBL:
		if (isfinite(f->v.d)) {
			snprintf(buf, size, "%.15g", f->v.d);
			if (strtod(buf, NULL) != f->v.d)
				snprintf(buf, size, "%.17g", f->v.d);
			return true;
		}
		if (!json)
			word = isnan(f->v.d) ? "nan" : f->v.d > 0 ? "inf" : "-inf";
		break;
	}
	snprintf(buf, size, "%s", word);
	return true;
}

/* UTC ISO-8601 with milliseconds, from the (hookable) wall clock. */
static void fmt_time(char *buf, size_t size)
{
	int64_t ms = ap_clock_wall_ms();
	int64_t ms_part = ((ms % 1000) + 1000) % 1000;
	time_t secs = (time_t)((ms - ms_part) / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)ms_part);
}

static const char *const level_text[] = { "DEBUG", "INFO ", "WARN ", "ERROR" };
static const char *const level_json[] = { "debug", "info", "warn", "error" };

static void format_line(line_buf *l, ap_log_level level, const char *msg,
			const ap_log_field *fields, size_t nfields)
{
	bool json = atomic_load_explicit(&log_format, memory_order_relaxed) == AP_LOG_JSON;
	char ts[96], num[40];
	fmt_time(ts, sizeof ts);
	if ((int)level < AP_LOG_DEBUG || (int)level > AP_LOG_ERROR)
		level = AP_LOG_ERROR;
	if (!msg)
		msg = "";

	if (json) {
		puts_(l, "{\"ts\":\""), puts_(l, ts), puts_(l, "\",\"level\":\"");
		puts_(l, level_json[level]), puts_(l, "\",\"msg\":\"");
		put_escaped(l, msg, true, true);
		put_close(l, "\"");
	} else {
		puts_(l, ts), puts_(l, " "), puts_(l, level_text[level]), puts_(l, " ");
		put_escaped(l, msg, false, false);
	}
	for (size_t i = 0; i < nfields && !l->truncated; i++) {
		const ap_log_field *f = &fields[i];
		size_t mark = l->len, content;
		bool scalar = fmt_scalar(f, json, num, sizeof num), quoted = false;
		if (json) {
			puts_(l, ",\""), put_escaped(l, f->key ? f->key : "", true, true);
			puts_(l, "\":");
		} else {
			puts_(l, " "), put_escaped(l, f->key ? f->key : "", false, false);
			puts_(l, "=");
		}
		if (scalar) {
			content = l->len;
			puts_(l, num);
		} else {
			quoted = json || text_needs_quotes(f->v.s);
			if (quoted)
				puts_(l, "\"");
			content = l->len;
			put_escaped(l, f->v.s, json, quoted);
		}
		/* Never leave half a key, a cut number or an empty cut value;
		 * a string value cut short is kept, and closed. */
		if (l->truncated && l->len == content) {
			l->len = mark;
			break;
		}
		if (quoted)
			put_close(l, "\"");
	}
	if (l->truncated)
		put_close(l, json ? ",\"truncated\":true" : " truncated=true");
	put_close(l, json ? "}\n" : "\n");
}

/* One write(2) for the whole line; loops only on EINTR and partial writes.
 * Any other error drops the rest of the line: there is nowhere to report it. */
static void write_all_locked(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(log_fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w, n -= (size_t)w;
	}
}

void ap_log_emit(ap_log_level level, const char *msg,
		 const ap_log_field *fields, size_t nfields)
{
	line_buf l = { .size = sizeof l.stack };
	l.p = l.stack;
	int saved_errno = errno; /* logging must not disturb the caller's errno */
	format_line(&l, level, msg, fields, nfields);
	pthread_mutex_lock(&log_lock);
	write_all_locked(l.p, l.len);
	pthread_mutex_unlock(&log_lock);
	if (l.p != l.stack)
		free(l.p);
	errno = saved_errno;
}

/* Swap in a new destination; returns the descriptor the caller must close
 * after unlocking (or -1). Takes ownership of `path`. */
static int swap_locked(int fd, bool owns, char *path)
{
	int old = log_owns_fd ? log_fd : -1;
	free(log_path);
	log_fd = fd, log_owns_fd = owns, log_path = path;
	return old;
}

static int open_path(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0 && err && errlen)
		snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
	return fd;
}

int ap_log_open(ap_log_level level, ap_log_format format, const char *path,
		char *err, size_t errlen)
{
	int fd = STDERR_FILENO, old;
	char *copy = NULL;
	if ((int)level < AP_LOG_DEBUG || (int)level > AP_LOG_ERROR ||
	    (format != AP_LOG_TEXT && format != AP_LOG_JSON)) {
		if (err && errlen)
			snprintf(err, errlen, "invalid log level or format");
		return AP_EINVAL;
	}
	if (path && *path) {
		if (!(copy = strdup(path)))
			return AP_ENOMEM; /* ap_strerror() says it all */
		if ((fd = open_path(path, err, errlen)) < 0) {
			free(copy);
			return AP_EIO;
		}
	}
	pthread_mutex_lock(&log_lock);
	old = swap_locked(fd, copy != NULL, copy);
	pthread_mutex_unlock(&log_lock);
	if (old >= 0)
		close(old);
	atomic_store(&log_level, level);
	atomic_store(&log_format, format);
	return 0;
}

int ap_log_reopen(void)
{
	int rc = 0, old = -1;
	/* The open happens under the lock so a concurrent ap_log_open cannot
	 * slip in between reading the path and installing the new descriptor. */
	pthread_mutex_lock(&log_lock);
	if (log_path) {
		int fd = open_path(log_path, NULL, 0);
		if (fd < 0) {
			rc = AP_EIO; /* keep writing to the old file */
		} else {
			old = log_fd;
			log_fd = fd;
		}
	}
	pthread_mutex_unlock(&log_lock);
	if (old >= 0)
		close(old);
	return rc;
}

void ap_log_set_fd(int fd)
{
	pthread_mutex_lock(&log_lock);
	int old = swap_locked(fd >= 0 ? fd : STDERR_FILENO, false, NULL);
	pthread_mutex_unlock(&log_lock);
	if (old >= 0)
		close(old);
}

void ap_log_close(void) { ap_log_set_fd(STDERR_FILENO); }

void ap_log_set_level(ap_log_level level)
{
	if ((int)level >= AP_LOG_DEBUG && (int)level <= AP_LOG_ERROR)
		atomic_store(&log_level, level);
}

ap_log_level ap_log_get_level(void) { return (ap_log_level)atomic_load(&log_level); }

void ap_log_set_format(ap_log_format format)
{
	if (format == AP_LOG_TEXT || format == AP_LOG_JSON)
		atomic_store(&log_format, format);
}

bool ap_log_enabled(ap_log_level level)
{
	return (int)level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

int ap_log_level_parse(const char *s)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	for (int i = 0; s && i < 4; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return -1;
}

int ap_log_format_parse(const char *s)
{
	return !s ? -1 : strcasecmp(s, "text") == 0 ? AP_LOG_TEXT :
	       strcasecmp(s, "json") == 0 ? AP_LOG_JSON : -1;
}
