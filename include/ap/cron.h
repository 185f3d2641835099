/* Cron schedules for time triggers (`ap operator`, SPEC section 2:
 * CronTrigger.Config.schedules).
 *
 * Debian packages no C library for cron expressions, so this is a small
 * matcher of the classic five-field form that crontab(5) (Vixie cron,
 * cronie) documents:
 *
 *     minute hour day-of-month month day-of-week
 *     0-59   0-23 1-31         1-12  0-7 (0 and 7 are Sunday)
 *
 * Each field is a comma-separated list of items; an item is `*`, a number,
 * or a range `a-b`, each optionally followed by a step `/n`; `a/n` means
 * `a-MAX/n` (cronie's reading). Months and weekdays also take the English
 * three-letter names (JAN..DEC, SUN..SAT, any case), in ranges too. A
 * weekday range may end at 7 ("5-7" is Friday to Sunday). The macros
 * @yearly (@annually), @monthly, @weekly, @daily (@midnight) and @hourly
 * stand for their usual expansions; @reboot has no meaning here and is an
 * error. Six-field (seconds) expressions are an error, not a guess.
 *
 * Day matching follows Vixie cron: when both day-of-month and day-of-week
 * are restricted (neither field starts with `*`), a day matches when
 * either does; when one starts with `*`, both must match (so "*\/2" in one
 * of them still means AND).
 *
 * Times are milliseconds since the Unix epoch and schedules are evaluated
 * in UTC, like every other time on the wire; a schedule fires at the start
 * of each matching minute.
 *
 * A parsed ap_cron is a plain value: no allocation, thread-safe to share. */
#ifndef AP_CRON_H
#define AP_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ap_cron {
	uint64_t minutes; /* bit m: minute m, 0..59 */
	uint32_t hours;   /* bit h: hour h, 0..23 */
	uint32_t mdays;   /* bit d: day of month d, 1..31 */
	uint16_t months;  /* bit m: month m, 1..12 */
	uint8_t wdays;    /* bit d: weekday d, 0 (Sunday) .. 6; 7 is stored as 0 */
	bool mday_star;   /* the day-of-month field started with '*' */
	bool wday_star;   /* the day-of-week field started with '*' */
} ap_cron;

/* How far ap_cron_next looks ahead before answering "never" (a schedule
 * such as "0 0 30 2 *"): 28 years covers every leap-year and weekday
 * combination. */
#define AP_CRON_HORIZON_YEARS 28

/* Parse expr into *out. Returns 0, or AP_EINVAL with the reason in err
 * ("field 2 (hour): 24 is out of range 0-23"). Thread-safe. */
int ap_cron_parse(const char *expr, ap_cron *out, char *err, size_t errlen);

/* True when the minute containing time_ms (UTC) matches. */
bool ap_cron_matches(const ap_cron *c, int64_t time_ms);

/* The start of the first matching minute strictly after after_ms, or -1
 * when none comes within AP_CRON_HORIZON_YEARS. after_ms may be negative
 * only down to -1 (the epoch itself is then a candidate). */
int64_t ap_cron_next(const ap_cron *c, int64_t after_ms);

#endif
