/* `ap config check [--operator] [FILE]`: load a configuration file against
 * its key table and say whether it is valid.
 *
 * The file is the positional FILE, else the global --config, else the
 * repository-relative default (conf/aggregator.conf, or conf/operator.conf
 * with --operator). Success prints "FILE: ok" on stdout; a bad file prints
 * the loader's "FILE:LINE: ..." message on stderr, which editors and CI
 * logs understand. Exit 0 valid, 1 invalid or unreadable, 2 usage. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ap/cli.h"
#include "ap/config.h"
#include "ap/error.h"

static int usage(void)
{
	fprintf(stderr, "usage: ap config check [--operator] [FILE]\n");
	return AP_EXIT_USAGE;
}

int ap_cmd_config(int argc, char **argv, const ap_cli_global *g)
{
	if (argc < 2 || strcmp(argv[1], "check") != 0) {
		if (argc >= 2)
			fprintf(stderr, "ap config: unknown subcommand '%s'\n",
				argv[1]);
		return usage();
	}

	bool operator_kind = false;
	bool options_done = false;
	const char *file = NULL;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (!options_done && strcmp(a, "--") == 0) {
			options_done = true;
		} else if (!options_done && strcmp(a, "--operator") == 0) {
			operator_kind = true;
		} else if (!options_done && a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "ap config check: unknown option '%s'\n", a);
			return usage();
		} else if (!file) {
			file = a;
		} else {
			fprintf(stderr, "ap config check: one FILE only\n");
			return usage();
		}
	}
	if (!file)
		file = g && g->config_path ? g->config_path
		       : operator_kind     ? "conf/operator.conf"
					   : "conf/aggregator.conf";

	char err[1024];
	int rc;
	if (operator_kind) {
		ap_operator_config cfg;
		rc = ap_operator_config_load(&cfg, file, err, sizeof err);
		ap_operator_config_free(&cfg);
	} else {
		ap_config cfg;
		rc = ap_config_load(&cfg, file, err, sizeof err);
		ap_config_free(&cfg);
	}
	if (rc != 0) {
		fprintf(stderr, "%s\n", err[0] ? err : ap_strerror(rc));
		return AP_EXIT_FAIL;
	}
	printf("%s: ok\n", file);
	return AP_EXIT_OK;
}
