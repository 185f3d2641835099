/* `ap version`: the package version and the library versions it was built
 * against, which is what a bug report needs. */
#include <protobuf-c/protobuf-c.h>
#include <stdio.h>

#include "ap/cli.h"
#include "ap/store.h"
#include "config.h"

int ap_cmd_version(int argc, char **argv, const ap_cli_global *g)
{
	(void)g;
	(void)argv;
	if (argc > 1) {
		fprintf(stderr, "usage: ap version\n");
		return AP_EXIT_USAGE;
	}
	printf("ap %s\n", PACKAGE_VERSION);
	printf("protobuf-c %s, %s\n", protobuf_c_version(), ap_store_version());
	return AP_EXIT_OK;
}
