/* `ap keygen FILE`: write a new secp256k1 private key to FILE and print its
 * address.
 *
 * FILE is created with mode 0600 and never overwritten: an existing FILE
 * (or a symlink there) is a runtime failure (exit 1) that leaves it alone,
 * since silently replacing an operator's key would lock it out. On success
 * stdout holds exactly one line, the lower-case 0x address, so scripts can
 * capture it (`addr=$(ap keygen op.key)`); put that address in the
 * aggregator's operators.approved and FILE in the operator's key_file.
 * Exit 0 success, 1 runtime failure, 2 usage. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ap/auth.h"
#include "ap/cli.h"
#include "ap/error.h"

static int usage(void)
{
	fprintf(stderr, "usage: ap keygen FILE\n");
	return AP_EXIT_USAGE;
}

int ap_cmd_keygen(int argc, char **argv, const ap_cli_global *g)
{
	(void)g;
	bool options_done = false;
	const char *file = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!options_done && strcmp(a, "--") == 0) {
			options_done = true;
		} else if (!options_done && a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "ap keygen: unknown option '%s'\n", a);
			return usage();
		} else if (!file) {
			file = a;
		} else {
			fprintf(stderr, "ap keygen: one FILE only\n");
			return usage();
		}
	}
	if (!file || !file[0]) {
		fprintf(stderr, "ap keygen: no FILE given\n");
		return usage();
	}

	uint8_t priv[32];
	char address[43], err[1024];
	int rc = ap_auth_key_generate(priv);
	if (rc != 0) {
		fprintf(stderr, "ap keygen: cannot get random bytes: %s\n",
			ap_strerror(rc));
		return AP_EXIT_FAIL;
	}
	rc = ap_auth_address(priv, address);
	AP_ASSERT(rc == 0); /* generate checked the key */
	rc = ap_auth_key_save(file, priv, err, sizeof err);
	explicit_bzero(priv, sizeof priv);
	if (rc != 0) {
		fprintf(stderr, "ap keygen: %s\n", err[0] ? err : ap_strerror(rc));
		return AP_EXIT_FAIL;
	}
	printf("%s\n", address);
	if (fflush(stdout) != 0) {
		perror("ap keygen: stdout");
		return AP_EXIT_FAIL;
	}
	return AP_EXIT_OK;
}
