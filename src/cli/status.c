/* `ap status [--json] [--db DIR] [--max-orphans N]`: summarise a database,
 * whether the daemon runs or not (SPEC section 8).
 *
 * The database is --db DIR, else the config's storage.dir, the config
 * being the global --config, else conf/aggregator.conf when it exists,
 * else the built-in defaults (as `ap aggregator` finds it, so both name the
 * same directory from the same working directory). With --db the config
 * is not read at all, so a broken config file does not hide the database.
 *
 * The store is opened readonly: it joins the environment of a running
 * daemon, never creates a file or a directory, never runs recovery. The
 * counting rules and the output formats are in include/ap/status.h.
 *
 * Exit codes: 0 ok; 1 runtime failure (no database, unreadable database,
 * bad config, stdout not writable); 2 usage; 3 the orphaned tasks exceed
 * --max-orphans N (the report is printed all the same, then a line on
 * stderr says why the exit code is 3). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ap/cli.h"
#include "ap/config.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/status.h"

#define DEFAULT_CONFIG "conf/aggregator.conf"

static int usage(void)
{
	fprintf(stderr, "usage: ap [--config FILE] status [--json] [--db DIR] "
			"[--max-orphans N]\n");
	return AP_EXIT_USAGE;
}

/* A non-negative decimal count: digits only, no sign, no spaces. */
static bool parse_count(const char *s, size_t *out)
{
	if (s == NULL || *s == '\0')
		return false;
	for (const char *p = s; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > SIZE_MAX)
		return false;
	*out = (size_t)v;
	return true;
}

/* Value of an option given as "--opt VALUE" or "--opt=VALUE"; NULL when
 * argv[*i] is not that option. Sets *missing when the value is absent. */
static const char *option_value(int argc, char **argv, int *i,
				const char *name, bool *missing)
{
	size_t n = strlen(name);
	const char *a = argv[*i];
	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

int ap_cmd_status(int argc, char **argv, const ap_cli_global *g)
{
	bool json = false, have_max = false;
	size_t max_orphans = 0;
	const char *db = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		bool missing = false;
		if (strcmp(a, "--json") == 0) {
			json = true;
		} else if ((v = option_value(argc, argv, &i, "--db", &missing)) ||
			   missing) {
			if (missing || *v == '\0') {
				fprintf(stderr, "ap status: --db needs a directory\n");
				return usage();
			}
			db = v;
		} else if ((v = option_value(argc, argv, &i, "--max-orphans",
					     &missing)) ||
			   missing) {
			if (missing) {
				fprintf(stderr, "ap status: --max-orphans needs a "
						"count\n");
				return usage();
			}
			if (!parse_count(v, &max_orphans)) {
				fprintf(stderr, "ap status: --max-orphans needs a "
						"count (0 or more), not '%s'\n",
					v);
				return usage();
			}
			have_max = true;
		} else if (a[0] == '-') {
			fprintf(stderr, "ap status: unknown option '%s'\n", a);
			return usage();
		} else {
			fprintf(stderr, "ap status: unexpected argument '%s'\n", a);
			return usage();
		}
	}

	/* The store logs BerkeleyDB's own complaints; the command says what
	 * went wrong in one line of its own, so keep only errors. */
	ap_log_set_level(AP_LOG_ERROR);

	char err[1024] = "";
	char *dir = NULL;
	if (db != NULL) {
		dir = strdup(db);
	} else {
		const char *path = g && g->config_path ? g->config_path
				   : access(DEFAULT_CONFIG, F_OK) == 0
					   ? DEFAULT_CONFIG
					   : NULL;
		ap_config cfg;
		int rc = ap_config_load(&cfg, path, err, sizeof err);
		if (rc != 0) {
			fprintf(stderr, "ap status: %s\n",
				err[0] ? err : ap_strerror(rc));
			ap_config_free(&cfg);
			return AP_EXIT_FAIL;
		}
		dir = strdup(cfg.storage.dir);
		ap_config_free(&cfg);
	}
	if (dir == NULL) {
		fprintf(stderr, "ap status: out of memory\n");
		return AP_EXIT_FAIL;
	}

	ap_status_report r;
	int rc = ap_status_collect(dir, &r, err, sizeof err);
	if (rc == AP_ENOTFOUND) {
		fprintf(stderr, "ap: no database at %s (is storage.dir right? "
				"the daemon creates it on first start)\n",
			dir);
		free(dir);
		return AP_EXIT_FAIL;
	}
	if (rc != 0) {
		fprintf(stderr, "ap: %s\n", err[0] ? err : ap_strerror(rc));
		free(dir);
		return AP_EXIT_FAIL;
	}
	free(dir);

	rc = json ? ap_status_print_json(stdout, &r)
		  : ap_status_print_text(stdout, &r);
	if (fflush(stdout) != 0 || rc != 0) {
		perror("ap status: stdout");
		ap_status_free(&r);
		return AP_EXIT_FAIL;
	}
	int code = AP_EXIT_OK;
	if (have_max && r.orphaned > max_orphans) {
		fprintf(stderr, "ap status: %zu orphaned task%s, more than "
				"--max-orphans %zu\n",
			r.orphaned, r.orphaned == 1 ? "" : "s", max_orphans);
		code = AP_EXIT_ORPHANS;
	}
	ap_status_free(&r);
	return code;
}
