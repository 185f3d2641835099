/* ap: the task aggregator. Everything lives in libap; see src/cli/cli.c. */
#include "ap/cli.h"

int main(int argc, char **argv)
{
	return ap_cli_main(argc, argv);
}
