/* Cron schedules: see include/ap/cron.h for the accepted syntax and the
 * matching rules.
 *
 * Parsing fills one bit set per field. ap_cron_next walks forward from the
 * next minute, skipping a whole month, day or hour at a time when that
 * field does not match, so the worst case (a schedule that never fires)
 * costs a few thousand steps over the horizon, not one per minute. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ap/cron.h"
#include "ap/error.h"

#define MS_PER_MIN INT64_C(60000)

typedef struct field_spec {
	const char *name;
	int min, max;  /* accepted values (weekday: 0..7) */
	const char *const *names; /* three-letter names for min.., or NULL */
} field_spec;

static const char *const month_names[] = { "jan", "feb", "mar", "apr", "may", "jun",
					   "jul", "aug", "sep", "oct", "nov", "dec", NULL };
static const char *const wday_names[] = { "sun", "mon", "tue", "wed", "thu", "fri",
					  "sat", NULL };

static const field_spec fields[5] = {
	{ "minute", 0, 59, NULL },
	{ "hour", 0, 23, NULL },
	{ "day-of-month", 1, 31, NULL },
	{ "month", 1, 12, month_names },
	{ "day-of-week", 0, 7, wday_names },
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return AP_EINVAL;
}

/* One value at *p: digits or a name. Advances *p. */
static int parse_value(const char **p, int i, int *out, char *err, size_t errlen)
{
	const field_spec *f = &fields[i];
	const char *s = *p;
	if (isdigit((unsigned char)*s)) {
		long v = 0;
		while (isdigit((unsigned char)*s)) {
			v = v * 10 + (*s - '0');
			if (v > 1000)
				break;
			s++;
		}
		if (isdigit((unsigned char)*s) || v < f->min || v > f->max)
			return fail(err, errlen, "field %d (%s): value out of range %d-%d", i + 1,
				    f->name, f->min, f->max);
		*out = (int)v;
		*p = s;
		return 0;
	}
	if (f->names && isalpha((unsigned char)s[0]) && isalpha((unsigned char)s[1]) &&
	    isalpha((unsigned char)s[2]) && !isalpha((unsigned char)s[3])) {
		for (int k = 0; f->names[k]; k++) {
			if (tolower((unsigned char)s[0]) == f->names[k][0] &&
			    tolower((unsigned char)s[1]) == f->names[k][1] &&
			    tolower((unsigned char)s[2]) == f->names[k][2]) {
				*out = f->min + k;
				*p = s + 3;
				return 0;
			}
		}
		return fail(err, errlen, "field %d (%s): unknown name '%.3s'", i + 1, f->name, s);
	}
	return fail(err, errlen, "field %d (%s): expected a number%s, '*' or a range", i + 1,
		    f->name, f->names ? " or a name" : "");
}

/* One field: the text between s and end (no whitespace inside). Sets the
 * bits of *bits. */
static int parse_field(const char *s, const char *end, int i, uint64_t *bits, char *err,
		       size_t errlen)
{
	const field_spec *f = &fields[i];
	*bits = 0;
	for (;;) {
		int lo, hi, step = 1;
		bool star = false, ranged = false;
		if (s == end || *s == ',')
			return fail(err, errlen, "field %d (%s): empty list item", i + 1, f->name);
		if (*s == '*') {
			lo = f->min;
			hi = f->max;
			star = true;
			s++;
		} else {
			int rc = parse_value(&s, i, &lo, err, errlen);
			if (rc)
				return rc;
			hi = lo;
			if (s < end && *s == '-') {
				s++;
				ranged = true;
				rc = parse_value(&s, i, &hi, err, errlen);
				if (rc)
					return rc;
				if (hi < lo)
					return fail(err, errlen,
						    "field %d (%s): range %d-%d goes backwards", i + 1,
						    f->name, lo, hi);
			}
		}
		if (s < end && *s == '/') {
			s++;
			if (s == end || !isdigit((unsigned char)*s))
				return fail(err, errlen, "field %d (%s): '/' needs a step number",
					    i + 1, f->name);
			long v = 0;
			while (s < end && isdigit((unsigned char)*s) && v <= 1000)
				v = v * 10 + (*s++ - '0');
			if (v < 1 || v > f->max - f->min + 1 || (s < end && isdigit((unsigned char)*s)))
				return fail(err, errlen, "field %d (%s): step must be 1-%d", i + 1,
					    f->name, f->max - f->min + 1);
			step = (int)v;
			/* "a/n" is "a-MAX/n"; "*" and ranges keep their ends. */
			if (!star && !ranged)
				hi = f->max;
		}
		for (int v = lo; v <= hi; v += step)
			*bits |= UINT64_C(1) << v;
		if (s == end)
			break;
		if (*s != ',')
			return fail(err, errlen, "field %d (%s): unexpected '%c'", i + 1, f->name, *s);
		s++;
	}
	return 0;
}

static const struct {
	const char *name;
	const char *expansion;
} macros[] = {
	{ "@yearly", "0 0 1 1 *" },  { "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
	{ "@weekly", "0 0 * * 0" },  { "@daily", "0 0 * * *" },    { "@midnight", "0 0 * * *" },
	{ "@hourly", "0 * * * *" },
};

int ap_cron_parse(const char *expr, ap_cron *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	if (!expr)
		return fail(err, errlen, "no schedule");
	while (isspace((unsigned char)*expr))
		expr++;
	if (*expr == '@') {
		size_t len = strcspn(expr, " \t\r\n");
		const char *rest = expr + len;
		while (isspace((unsigned char)*rest))
			rest++;
		for (size_t k = 0; k < sizeof macros / sizeof macros[0]; k++)
			if (strlen(macros[k].name) == len && strncasecmp(expr, macros[k].name, len) == 0) {
				if (*rest)
					return fail(err, errlen, "%s takes nothing after it",
						    macros[k].name);
				return ap_cron_parse(macros[k].expansion, out, err, errlen);
			}
		return fail(err, errlen, "unknown macro '%.*s'", (int)(len > 20 ? 20 : len), expr);
	}

	const char *start[6], *end[6];
	int n = 0;
	const char *s = expr;
	while (*s) {
		if (n == 6)
			break;
		start[n] = s;
		while (*s && !isspace((unsigned char)*s))
			s++;
		end[n++] = s;
		while (isspace((unsigned char)*s))
			s++;
	}
	if (n == 6 || (n == 5 && *s))
		return fail(err, errlen, "more than 5 fields (seconds and years are not supported)");
	if (n < 5)
		return fail(err, errlen, "%d field%s, expected 5: minute hour day-of-month month "
			    "day-of-week", n, n == 1 ? "" : "s");

	uint64_t bits[5];
	for (int i = 0; i < 5; i++) {
		int rc = parse_field(start[i], end[i], i, &bits[i], err, errlen);
		if (rc) {
			memset(out, 0, sizeof *out);
			return rc;
		}
	}
	out->minutes = bits[0];
	out->hours = (uint32_t)bits[1];
	out->mdays = (uint32_t)bits[2];
	out->months = (uint16_t)bits[3];
	if (bits[4] & (UINT64_C(1) << 7))
		bits[4] = (bits[4] | 1) & ~(UINT64_C(1) << 7);
	out->wdays = (uint8_t)bits[4];
	out->mday_star = *start[2] == '*';
	out->wday_star = *start[4] == '*';
	return 0;
}

static bool day_matches(const ap_cron *c, const struct tm *tm)
{
	bool mday = (c->mdays >> tm->tm_mday) & 1;
	bool wday = (c->wdays >> tm->tm_wday) & 1;
	if (c->mday_star || c->wday_star)
		return mday && wday;
	return mday || wday;
}

static bool to_tm(int64_t ms, struct tm *tm)
{
	time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	return gmtime_r(&t, tm) != NULL;
}

bool ap_cron_matches(const ap_cron *c, int64_t time_ms)
{
	struct tm tm;
	if (!to_tm(time_ms, &tm))
		return false;
	return ((c->months >> (tm.tm_mon + 1)) & 1) && day_matches(c, &tm) &&
	       ((c->hours >> tm.tm_hour) & 1) && ((c->minutes >> tm.tm_min) & 1);
}

int64_t ap_cron_next(const ap_cron *c, int64_t after_ms)
{
	if (!c->minutes || !c->hours || !c->mdays || !c->months || !c->wdays)
		return -1;
	if (after_ms < -1)
		after_ms = -1;
	/* The first minute start strictly after after_ms. */
	int64_t t = (after_ms / MS_PER_MIN + 1) * MS_PER_MIN;
	if (after_ms < 0)
		t = 0;
	struct tm tm;
	if (!to_tm(t, &tm))
		return -1;
	int limit_year = tm.tm_year + AP_CRON_HORIZON_YEARS + 1;
	/* Each step moves tm to the start of a later month, day, hour or
	 * minute; timegm normalises the overflow (day 32, hour 24, ...). */
	while (tm.tm_year <= limit_year) {
		if (!((c->months >> (tm.tm_mon + 1)) & 1)) {
			tm.tm_mon++;
			tm.tm_mday = 1;
			tm.tm_hour = tm.tm_min = 0;
		} else if (!day_matches(c, &tm)) {
			tm.tm_mday++;
			tm.tm_hour = tm.tm_min = 0;
		} else if (!((c->hours >> tm.tm_hour) & 1)) {
			tm.tm_hour++;
			tm.tm_min = 0;
		} else if (!((c->minutes >> tm.tm_min) & 1)) {
			tm.tm_min++;
		} else {
			return (int64_t)timegm(&tm) * 1000;
		}
		tm.tm_sec = 0;
		tm.tm_isdst = 0;
		time_t norm = timegm(&tm);
		if (norm == (time_t)-1 || !gmtime_r(&norm, &tm))
			return -1;
	}
	return -1;
}
