/* The command table and global option parsing for `ap`.
 *
 * Commands whose issue has not landed yet stay in the table with run ==
 * NULL, so `ap help` shows the whole shape of the tool and invoking one says
 * clearly that it is not available yet (exit 2) instead of "unknown". */
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ap/cli.h"
#include "config.h"

static int cmd_help(int argc, char **argv, const ap_cli_global *g);

static const ap_command commands[] = {
	{ "aggregator", "run the aggregator daemon",
	  "usage: ap [--config FILE] aggregator [--port-file FILE]\n"
	  "\n"
	  "Run the aggregator in the foreground, logging to stderr (or log.file).\n"
	  "The configuration is --config, else conf/aggregator.conf, else the\n"
	  "installed ap/aggregator.conf, else the built-in defaults. --port-file\n"
	  "FILE writes the bound operator port once the server accepts calls\n"
	  "(for listen with port 0).\n"
	  "SIGTERM/SIGINT shut down gracefully within shutdown_timeout_ms, SIGHUP\n"
	  "reopens the log file. Exit 0 after a clean shutdown, 1 on failure.\n",
	  ap_cmd_aggregator, NULL },
	{ "operator", "run an operator client",
	  "usage: ap [--config FILE] operator [--aggregator HOST:PORT] [--address ADDR]\n"
	  "                                   [--key-file FILE]\n"
	  "\n"
	  "Run an operator client in the foreground, logging to stderr (or log.file).\n"
	  "The configuration is --config, else conf/operator.conf, else the installed\n"
	  "ap/operator.conf, else the built-in defaults; the options override its\n"
	  "aggregator, address and key_file keys (--key-file \"\" sends no\n"
	  "authorization, for an aggregator with auth.mode \"none\").\n"
	  "\n"
	  "It checks that key_file is the key of address, waits for the aggregator's\n"
	  "HealthCheck to answer OK, opens the SyncMessages stream (MonotonicClock =\n"
	  "wall clock in ns, capabilities and chain_ids from the config, every call\n"
	  "signed) and keeps a subscription per task it is sent. Pings every\n"
	  "ping_interval_ms. When the stream ends it logs why and reconnects after\n"
	  "the backoff of the config (doubling from 1 s to 60 s, +/- 25 % jitter,\n"
	  "reset after 2 min connected), starting from an empty subscription table.\n"
	  "\n"
	  "Fixed-time and cron triggers fire on this machine's clock (cron: 5 fields,\n"
	  "UTC) and are reported with NotifyTriggers, trigger_request_id\n"
	  "\"TASK_ID:SCHEDULED_MS\"; a task the answer says is no longer enabled is\n"
	  "dropped. Block and event triggers need a chain connection this client\n"
	  "does not have: they are subscribed and logged, never fired.\n"
	  "\n"
	  "SIGTERM/SIGINT cancel the stream and exit 0 within a few seconds; SIGHUP\n"
	  "reopens the log file. Exit 1 on a configuration or key error, 2 on a usage\n"
	  "error.\n",
	  ap_cmd_operator, NULL },
	{ "status", "summarise the database (daemon running or not)",
	  "usage: ap [--config FILE] status [--json] [--db DIR] [--max-orphans N]\n",
	  ap_cmd_status, NULL },
	{ "task", "create, list, enable, disable and delete tasks",
	  "usage: ap [--config FILE] task [--admin ADDR] SUBCOMMAND ...\n"
	  "\n"
	  "Manage tasks through the aggregator's admin service: --admin ADDR\n"
	  "(unix:PATH or HOST:PORT), else the config's admin_listen. On TCP the\n"
	  "config's admin.token is sent as \"authorization: Bearer TOKEN\".\n"
	  "\n"
	  "  create TRIGGER [--name S] [--id ID] [--max-execution N]\n"
	  "         [--start-at MS] [--expire-at MS] [--count N [--batch N]] [--quiet]\n"
	  "      TRIGGER is one of\n"
	  "        --block-interval N [--chain-id C]       every N blocks\n"
	  "        --event-address A --event-topic T [--chain-id C]\n"
	  "                                                 (each repeatable)\n"
	  "        --cron \"EXPR\"                          (repeatable)\n"
	  "        --at EPOCH_MS                           fixed time (repeatable)\n"
	  "        --manual\n"
	  "      Prints the new ids, one a line (--quiet: only how many). Ids\n"
	  "      come from the server (ULIDs) unless --id is given. --count N\n"
	  "      makes N similar tasks in CreateTasks calls of --batch tasks\n"
	  "      (default 1000); --id and --name are then prefixes: ID-0 ..\n"
	  "      ID-(N-1). Times are ms since the Unix epoch; --max-execution 0\n"
	  "      (the default) means unlimited.\n"
	  "  list [--json] [--limit N]\n"
	  "      Every task in id order: ID, NAME, STATUS, OWNER (an operator\n"
	  "      address, \"(orphaned)\", or \"-\" when nobody owns it by design),\n"
	  "      TYPE, EXECUTIONS (count/max, or count when unlimited). --json\n"
	  "      prints a JSON array of objects (id, name, status, owner,\n"
	  "      orphaned, trigger_type, execution_count, max_execution).\n"
	  "  disable ID...  enable ID...  delete ID...\n"
	  "      Prints \"ID STATUS\" for each; goes on after an id the server\n"
	  "      refuses. An id starting with '-' goes after \"--\".\n"
	  "\n"
	  "Exit 0 on success; 1 when the daemon cannot be reached (the message\n"
	  "names the admin address) or refuses an operation (its message is\n"
	  "printed, e.g. \"task X not found\"); 2 on a usage error.\n",
	  ap_cmd_task, NULL },
	{ "keygen", "write a new secp256k1 key file and print its address",
	  "usage: ap keygen FILE\n"
	  "\n"
	  "Write a new secp256k1 private key to FILE (created with mode 0600;\n"
	  "an existing FILE is never overwritten) and print its address, the\n"
	  "lower-case 0x form, on stdout. Put the address in the aggregator's\n"
	  "operators.approved and FILE in the operator's key_file. Exit 0 on\n"
	  "success, 1 when FILE exists or cannot be written, 2 on a usage error.\n",
	  ap_cmd_keygen, NULL },
	{ "stress", "the rapid-reconnect harness",
	  "usage: ap [--config FILE] stress [--spawn | --target HOST:PORT --admin ADDR]\n"
	  "                                 [OPTIONS]\n"
	  "\n"
	  "Simulated operators, all in this process (a few threads, no thread per\n"
	  "stream), connect to an aggregator and flap for --duration: clean closes\n"
	  "and reopens, crashes (call cancelled, connection dropped), reconnects\n"
	  "with a newer, the same or an older MonotonicClock, a second concurrent\n"
	  "session for the same address, sessions ended before stabilization,\n"
	  "while tasks are created, disabled, enabled and deleted. Then every\n"
	  "operator holds one session and, at quiescence, the invariants of SPEC\n"
	  "section 8 are checked through the admin service: one ready owner per\n"
	  "enabled task, each operator's received set equal to what it owns, no\n"
	  "task in two final sets, and the daemon's threads, fds and RSS back\n"
	  "within bounds of their baselines. Prints a live line on a terminal and\n"
	  "a report at the end. Exit 0 when every invariant holds, 1 on a\n"
	  "violation or failure, 2 on a usage error.\n"
	  "\n"
	  "Aggregator:\n"
	  "  --spawn               start `ap aggregator` in a temp dir (listen\n"
	  "                        127.0.0.1:0, approved [\"*\"], auth none; kept\n"
	  "                        when a check fails); the binary is --ap PATH,\n"
	  "                        else $AP, else this one\n"
	  "  --target HOST:PORT    a running aggregator's operator port, with\n"
	  "  --admin ADDR          its admin address (unix:PATH or HOST:PORT);\n"
	  "                        without --spawn and --target: listen and\n"
	  "                        admin_listen of the configuration\n"
	  "  --admin-token TOKEN   bearer token of a TCP admin listener\n"
	  "  --daemon-pid PID      sample this process's threads, fds and RSS\n"
	  "                        (--spawn: the spawned daemon)\n"
	  "  --auth                signature mode: a generated key per operator\n"
	  "  --keep                keep the temp dir (--spawn) or the created\n"
	  "                        tasks (--target)\n"
	  "Storm:\n"
	  "  --operators N         simulated operators (100)\n"
	  "  --duration SECONDS    length of the storm (10)\n"
	  "  --threads N           driver threads, one completion queue each (2)\n"
	  "  --tasks N             tasks created first (10 per operator)\n"
	  "  --stabilization-ms N  the aggregator's stabilization_ms (--spawn:\n"
	  "                        configures it, 100; --target: enables the\n"
	  "                        no-task-before-stabilization check)\n"
	  "  --hold-min-ms N       a session lives this long before its next\n"
	  "  --hold-max-ms N       action, uniformly (100 to 1000)\n"
	  "  --clean N --crash N --dup N\n"
	  "                        shares of the actions: clean close and reopen,\n"
	  "                        crash, a second session (40, 40, 20)\n"
	  "  --early PCT           sessions ended before stabilization (20)\n"
	  "  --clock-newer N --clock-same N --clock-older N\n"
	  "                        shares of reconnect clocks (40, 30, 30)\n"
	  "  --task-ops N          admin operations per second (20)\n"
	  "  --max-rate N          actions per second of all operators together\n"
	  "                        (400; 0: no cap): the harness and the daemon\n"
	  "                        share the machine, and a harness that starves\n"
	  "                        the daemon measures only the overload\n"
	  "  --seed N              random seed; also picks the addresses (1)\n"
	  "Checks and output:\n"
	  "  --quiet-ms N          quiescence: no stream event for N ms (500)\n"
	  "  --settle-timeout S    bound on reaching quiescence (60)\n"
	  "  --thread-slack N      allowed growth of the daemon's threads (8:\n"
	  "                        gRPC's own pools grow under load and stay)\n"
	  "  --fd-slack N          ... of its open fds (8)\n"
	  "  --rss-slack-mb N      ... of its RSS at the same number of sessions\n"
	  "                        (64; -1 reports RSS without checking it)\n"
	  "  --json                print one JSON object instead of the table\n"
	  "  --no-progress         no live line on stderr\n"
	  "  --debug-drop-operator I\n"
	  "                        operator I keeps its first session and ignores\n"
	  "                        what it is sent (a test of the checker: the\n"
	  "                        run must fail)\n",
	  ap_cmd_stress, NULL },
	{ "config", "check a configuration file",
	  "usage: ap config check [--operator] [FILE]\n"
	  "\n"
	  "Load FILE (default: --config, else conf/aggregator.conf) against the\n"
	  "aggregator key table, or the operator table with --operator, and\n"
	  "report the first error as FILE:LINE. Exit 0 when valid, 1 when not,\n"
	  "2 on a usage error.\n",
	  ap_cmd_config, NULL },
	{ "version", "print the version",
	  "usage: ap version\n", ap_cmd_version, NULL },
	{ "help", "list the commands, or show one command's help",
	  "usage: ap help [COMMAND]\n", cmd_help, NULL },
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const ap_command *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void print_overview(FILE *out)
{
	fprintf(out, "usage: ap [--config FILE] COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-11s %s%s\n", commands[i].name,
			commands[i].summary,
			commands[i].run ? "" : " (not available yet)");
	fprintf(out, "\n`ap COMMAND --help` shows one command's options.\n");
}

static int cmd_help(int argc, char **argv, const ap_cli_global *g)
{
	(void)g;
	if (argc < 2) {
		print_overview(stdout);
		return AP_EXIT_OK;
	}
	if (ap_cli_wants_help(argc, argv)) {
		fputs(find_command("help")->usage, stdout);
		return AP_EXIT_OK;
	}
	const ap_command *c = find_command(argv[1]);
	if (!c) {
		fprintf(stderr, "ap: unknown command '%s'\n", argv[1]);
		return AP_EXIT_USAGE;
	}
	fputs(c->usage, stdout);
	return AP_EXIT_OK;
}

const char *ap_cli_config_file(const ap_cli_global *g, const char *name)
{
	static char local[256], installed[512];
	if (g && g->config_path)
		return g->config_path;
	snprintf(local, sizeof local, "conf/%s", name);
	if (access(local, R_OK) == 0)
		return local;
	snprintf(installed, sizeof installed, "%s/ap/%s", AP_SYSCONFDIR, name);
	if (access(installed, R_OK) == 0)
		return installed;
	return NULL;
}

void ap_cli_block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

unsigned long ap_cli_raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			rl.rlim_cur = was;
	}
	return rl.rlim_cur == RLIM_INFINITY ? (unsigned long)-1 : (unsigned long)rl.rlim_cur;
}

int ap_cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	}
	return 0;
}

int ap_cli_main(int argc, char **argv)
{
	ap_cli_global g = { 0 };
	int i = 1;

	/* Global options come before the command name. */
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "ap: %s needs a file name\n", argv[i]);
				return AP_EXIT_USAGE;
			}
			g.config_path = argv[++i];
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			g.config_path = argv[i] + 9;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			print_overview(stdout);
			return AP_EXIT_OK;
		} else if (strcmp(argv[i], "--version") == 0) {
			return ap_cmd_version(1, argv + i, &g);
		} else {
			fprintf(stderr, "ap: unknown option '%s'\n", argv[i]);
			print_overview(stderr);
			return AP_EXIT_USAGE;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "ap: no command given\n");
		print_overview(stderr);
		return AP_EXIT_USAGE;
	}

	const ap_command *c = find_command(argv[i]);
	if (!c) {
		fprintf(stderr, "ap: unknown command '%s' (see `ap help`)\n", argv[i]);
		return AP_EXIT_USAGE;
	}
	int cargc = argc - i;
	char **cargv = argv + i;
	if (c->run != cmd_help && ap_cli_wants_help(cargc, cargv)) {
		fputs(c->usage, stdout);
		return AP_EXIT_OK;
	}
	if (!c->run) {
		fprintf(stderr, "ap: '%s' is not available yet in ap %s (issue %s)\n",
			c->name, PACKAGE_VERSION, c->pending_issue);
		return AP_EXIT_USAGE;
	}
	return c->run(cargc, cargv, &g);
}
