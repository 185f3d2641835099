/* bench/engine (issue 3, point 14): assignment changes per second for each
 * durability mode beside the raw BerkeleyDB transaction commit rate measured
 * in the same run on the same disk, and the time to load N tasks at start.
 *
 *   bench/bench_engine [--tasks N] [--load-tasks M] [--dir DIR]
 *
 * Prints one table; the ratios are the figures (the machines are shared and
 * noisy, so absolute numbers vary from run to run). Never run by make check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ap/clock.h"
#include "ap/config.h"
#include "ap/engine.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/store.h"

static double secs(int64_t ns) { return (double)ns / 1e9; }

static void die(const char *what, const char *err)
{
	fprintf(stderr, "bench_engine: %s: %s\n", what, err);
	exit(1);
}

static const char *mode_name(ap_durability d)
{
	return d == AP_DURABILITY_SYNC ? "sync" : d == AP_DURABILITY_WRITE_NOSYNC ? "write_nosync" : "nosync";
}

typedef struct put_arg {
	int from, n;
} put_arg;

static int put_many(ap_store_txn *txn, void *arg)
{
	put_arg *p = arg;
	/* About the size of an assignment record. */
	static const char val[] = "\x01\x0a\x2a" "0x00000000000000000000000000000000000000aa\x10\x05\x18\x01";
	for (int i = p->from; i < p->from + p->n; i++) {
		char key[32];
		int klen = snprintf(key, sizeof key, "raw-%09d", i);
		int rc = ap_store_put(txn, AP_DB_ASSIGNMENTS, key, (size_t)klen, val, sizeof val - 1);
		if (rc)
			return rc;
	}
	return 0;
}

/* Raw commits: `n` transactions of `per` puts each; returns puts/s. */
static double raw_rate(const char *dir, ap_durability d, int n, int per)
{
	char err[256];
	ap_store *st;
	ap_store_options o = { .dir = dir, .durability = d };
	if (ap_store_open(&st, &o, err, sizeof err))
		die("store open", err);
	int64_t t0 = ap_clock_mono_ns();
	for (int i = 0; i < n; i++) {
		put_arg p = { i * per, per };
		if (ap_store_run(st, 0, put_many, &p))
			die("raw put", "failed");
	}
	double rate = (double)n * per / secs(ap_clock_mono_ns() - t0);
	ap_store_close(st);
	return rate;
}

static void set_str(char **slot, const char *v)
{
	free(*slot);
	*slot = strdup(v);
}

static ap_engine *open_engine(ap_config *cfg, const char *dir, ap_durability d)
{
	char err[256];
	ap_config_defaults(cfg);
	set_str(&cfg->storage.dir, dir);
	cfg->storage.durability = d;
	set_str(&cfg->operators.approved[0], "*");
	cfg->operators.stabilization_ms = 0;
	cfg->operators.restart_grace_ms = 0;
	ap_engine *e;
	if (ap_engine_open(&e, cfg, err, sizeof err))
		die("engine open", err);
	ap_engine_start(e);
	return e;
}

static void create_tasks(ap_engine *e, int n, int batch)
{
	Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger bt = AGGREGATOR__BLOCK_TRIGGER__INIT;
	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	bc.interval = 10;
	bt.config = &bc;
	tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
	tr.block = &bt;
	Aggregator__NewTask *nts = calloc((size_t)batch, sizeof *nts);
	Aggregator__NewTask **list = calloc((size_t)batch, sizeof *list);
	char (*ids)[32] = calloc((size_t)batch, 32);
	for (int done = 0; done < n; done += batch) {
		int k = n - done < batch ? n - done : batch;
		for (int i = 0; i < k; i++) {
			aggregator__new_task__init(&nts[i]);
			snprintf(ids[i], 32, "task-%09d", done + i);
			nts[i].id = ids[i];
			nts[i].trigger = &tr;
			list[i] = &nts[i];
		}
		char **out, err[256];
		if (ap_engine_create_tasks(e, list, (size_t)k, &out, err, sizeof err))
			die("create", err);
		ap_engine_free_ids(out, (size_t)k);
	}
	free(nts);
	free(list);
	free(ids);
}

static ap_session *connect_ready(ap_engine *e, int n)
{
	char address[43], err[256];
	snprintf(address, sizeof address, "0x%040x", n);
	ap_hello h = { .address = address, .monotonic_clock = 1 };
	ap_session *s;
	if (ap_engine_session_open(e, &h, &s, err, sizeof err))
		die("session", err);
	while (!ap_session_ready(s)) {
		struct timespec ts = { 0, 200000 };
		nanosleep(&ts, NULL);
	}
	return s;
}

/* Assignment changes per second: A owns N tasks, A leaves, B (ready) takes
 * them all: the engine's failover path, batched transactions. */
static double engine_rate(const char *dir, ap_durability d, int n)
{
	ap_config cfg;
	ap_engine *e = open_engine(&cfg, dir, d);
	ap_session *a = connect_ready(e, 0xa);
	create_tasks(e, n, 5000);
	ap_session *b = connect_ready(e, 0xb);
	ap_engine_stats before, after;
	ap_engine_get_stats(e, &before);
	int64_t t0 = ap_clock_mono_ns();
	ap_engine_session_close(e, a, "bench");
	double el = secs(ap_clock_mono_ns() - t0);
	ap_engine_get_stats(e, &after);
	uint64_t moved = after.assign_reassign - before.assign_reassign;
	if ((int)moved != n)
		fprintf(stderr, "bench_engine: expected %d moves, saw %llu\n", n,
			(unsigned long long)moved);
	ap_engine_session_close(e, b, "bench");
	ap_engine_close(e);
	ap_config_free(&cfg);
	return (double)moved / el;
}

static void rm_rf(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_engine: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
	int n = 100000, load_n = 1000000;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--tasks") == 0 && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (strcmp(argv[i], "--load-tasks") == 0 && i + 1 < argc)
			load_n = atoi(argv[++i]);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			base = argv[++i];
		else {
			fprintf(stderr, "usage: bench_engine [--tasks N] [--load-tasks M] [--dir DIR]\n");
			return 2;
		}
	}
	ap_log_set_level(AP_LOG_ERROR);
	char root[512];
	snprintf(root, sizeof root, "%s/ap-bench-XXXXXX", base);
	if (!mkdtemp(root))
		die("mkdtemp", root);

	printf("assignment changes: %d tasks moved by one failover (engine) vs raw puts\n", n);
	printf("%-13s %14s %16s %16s %8s %8s\n", "durability", "raw txn/s", "raw puts/s (2000/txn)",
	       "engine moves/s", "vs 1/txn", "vs 2000");
	ap_durability modes[] = { AP_DURABILITY_SYNC, AP_DURABILITY_WRITE_NOSYNC, AP_DURABILITY_NOSYNC };
	for (int m = 0; m < 3; m++) {
		char d1[600], d2[600], d3[600];
		snprintf(d1, sizeof d1, "%s/raw1-%d", root, m);
		snprintf(d2, sizeof d2, "%s/raw2-%d", root, m);
		snprintf(d3, sizeof d3, "%s/eng-%d", root, m);
		int singles = modes[m] == AP_DURABILITY_SYNC ? 500 : 20000;
		double r1 = raw_rate(d1, modes[m], singles, 1);
		double r2 = raw_rate(d2, modes[m], n / 2000 ? n / 2000 : 1, 2000);
		double en = engine_rate(d3, modes[m], n);
		printf("%-13s %14.0f %16.0f %16.0f %7.1fx %7.2fx\n", mode_name(modes[m]), r1, r2, en,
		       en / r1, en / r2);
		fflush(stdout);
	}

	/* Load time: M tasks stored, then a fresh open loads them. */
	char dl[600];
	snprintf(dl, sizeof dl, "%s/load", root);
	ap_config cfg;
	ap_engine *e = open_engine(&cfg, dl, AP_DURABILITY_NOSYNC);
	int64_t t0 = ap_clock_mono_ns();
	create_tasks(e, load_n, 10000);
	double create_s = secs(ap_clock_mono_ns() - t0);
	ap_engine_close(e);
	ap_config_free(&cfg);
	t0 = ap_clock_mono_ns();
	e = open_engine(&cfg, dl, AP_DURABILITY_NOSYNC);
	double load_s = secs(ap_clock_mono_ns() - t0);
	ap_engine_stats st;
	ap_engine_get_stats(e, &st);
	ap_engine_close(e);
	ap_config_free(&cfg);
	printf("\nload at start: %zu tasks (%zu orphans) loaded in %.2f s (%.0f tasks/s); "
	       "creating them took %.2f s (%.0f tasks/s, batches of 10000, nosync)\n",
	       st.tasks, st.orphans, load_s, (double)st.tasks / load_s, create_s,
	       (double)load_n / create_s);
	rm_rf(root);
	return 0;
}
