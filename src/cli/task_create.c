/* `ap task create`: one task, or --count N similar ones in batches.
 *
 * The trigger is given by its fields, exactly one kind per command:
 *   --block-interval N [--chain-id C]
 *   --event-address A... --event-topic T... [--chain-id C]  (one query)
 *   --cron EXPR...    --at EPOCH_MS...    --manual
 * The repeatable flags add one value each time. Everything else (name,
 * max_execution, start_at, expired_at) is the same for every task made.
 *
 * --count N sends CreateTasks calls of --batch tasks (default 1000, well
 * under the 4 MiB message limit for ordinary triggers). Ids come from the
 * server (lower-case ULIDs) unless --id ID is given: alone it is the id,
 * with --count it is a prefix and the tasks are ID-0 .. ID-(N-1); --name
 * gets the same "-i" suffix. Each batch is one transaction on the server,
 * so a refused batch (a duplicate id, ...) creates none of its tasks, but
 * the batches before it stay created: the command then says how many
 * were. Created ids are printed one a line as each batch commits; --quiet
 * prints just the number created. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/error.h"
#include "task_int.h"

#define DEFAULT_BATCH 1000
#define MAX_BATCH 10000
#define MAX_COUNT 100000000

static const char create_usage[] =
	"usage: ap task create TRIGGER [--name S] [--id ID] [--max-execution N]\n"
	"                      [--start-at MS] [--expire-at MS]\n"
	"                      [--count N [--batch N]] [--quiet]\n"
	"TRIGGER: --block-interval N [--chain-id C]\n"
	"       | --event-address A... --event-topic T... [--chain-id C]\n"
	"       | --cron EXPR...  | --at EPOCH_MS...  | --manual\n";

static int create_usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static int create_usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "ap task create: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fputs(create_usage, stderr);
	return AP_EXIT_USAGE;
}

/* A growable list of borrowed argv strings. */
typedef struct str_list {
	char **v;
	size_t n;
} str_list;

typedef struct create_opts {
	int64_t block_interval; /* 0: not a block trigger */
	int64_t chain_id;
	bool have_chain;
	str_list addresses, topics, crons, ats;
	bool manual;
	const char *name, *id;
	int64_t max_execution, start_at, expire_at;
	int64_t count, batch;
	bool have_count, quiet;
	int64_t *epochs; /* --at values, parsed */
} create_opts;

static bool push(str_list *l, char *s, size_t cap)
{
	if (!l->v && !(l->v = calloc(cap, sizeof *l->v)))
		return false;
	l->v[l->n++] = s;
	return true;
}

static void opts_free(create_opts *o)
{
	free(o->addresses.v);
	free(o->topics.v);
	free(o->crons.v);
	free(o->ats.v);
	free(o->epochs);
}

/* Parse argv (argv[0] is "create"). Returns AP_EXIT_OK or the exit code
 * of a usage error (already reported). */
static int parse(int argc, char **argv, create_opts *o)
{
	size_t cap = (size_t)argc;
	o->batch = DEFAULT_BATCH;
	o->count = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		bool missing = false;
		int64_t n;
#define OPT(name) ((v = task_option_value(argc, argv, &i, name, &missing)) || missing)
#define NEED(name, what)                                                      \
	do {                                                                  \
		if (missing)                                                  \
			return create_usage_error("%s", name " needs " what); \
	} while (0)
#define INT_ARG(name, min, max, what, dst)                                    \
	do {                                                                  \
		NEED(name, what);                                             \
		if (!task_parse_int(v, min, max, &n))                         \
			return create_usage_error(name " needs " what ", not '%s'", v); \
		dst = n;                                                      \
	} while (0)
		if (strcmp(a, "--manual") == 0) {
			o->manual = true;
		} else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
			o->quiet = true;
		} else if (OPT("--block-interval")) {
			INT_ARG("--block-interval", 1, INT64_MAX, "a block count > 0",
				o->block_interval);
		} else if (OPT("--chain-id")) {
			INT_ARG("--chain-id", 0, INT64_MAX, "a chain id (0 or more)", o->chain_id);
			o->have_chain = true;
		} else if (OPT("--event-address")) {
			NEED("--event-address", "an address");
			if (!*v)
				return create_usage_error("%s", "--event-address needs an address");
			if (!push(&o->addresses, (char *)v, cap))
				return AP_EXIT_FAIL;
		} else if (OPT("--event-topic")) {
			NEED("--event-topic", "a topic");
			if (!*v)
				return create_usage_error("%s", "--event-topic needs a topic");
			if (!push(&o->topics, (char *)v, cap))
				return AP_EXIT_FAIL;
		} else if (OPT("--cron")) {
			NEED("--cron", "a schedule, e.g. \"*/5 * * * *\"");
			if (!*v)
				return create_usage_error("%s", "--cron needs a schedule");
			if (!push(&o->crons, (char *)v, cap))
				return AP_EXIT_FAIL;
		} else if (OPT("--at")) {
			NEED("--at", "a time in ms since the epoch");
			if (!task_parse_int(v, 0, INT64_MAX, &n))
				return create_usage_error("--at needs a time in ms since "
							  "the epoch, not '%s'", v);
			if (!push(&o->ats, (char *)v, cap))
				return AP_EXIT_FAIL;
		} else if (OPT("--max-execution")) {
			INT_ARG("--max-execution", 0, INT64_MAX, "a count (0 = unlimited)",
				o->max_execution);
		} else if (OPT("--start-at")) {
			INT_ARG("--start-at", 0, INT64_MAX, "a time in ms since the epoch",
				o->start_at);
		} else if (OPT("--expire-at")) {
			INT_ARG("--expire-at", 0, INT64_MAX, "a time in ms since the epoch",
				o->expire_at);
		} else if (OPT("--count")) {
			INT_ARG("--count", 1, MAX_COUNT, "a number of tasks (1 or more)", o->count);
			o->have_count = true;
		} else if (OPT("--batch")) {
			INT_ARG("--batch", 1, MAX_BATCH, "a batch size (1 .. 10000)", o->batch);
		} else if (OPT("--name")) {
			NEED("--name", "a name");
			o->name = v;
		} else if (OPT("--id")) {
			NEED("--id", "an id");
			o->id = v;
		} else if (a[0] == '-') {
			return create_usage_error("unknown option '%s'", a);
		} else {
			return create_usage_error("unexpected argument '%s'", a);
		}
#undef OPT
#undef NEED
#undef INT_ARG
	}

	int kinds = (o->block_interval > 0) + (o->addresses.n + o->topics.n > 0) +
		    (o->crons.n > 0) + (o->ats.n > 0) + o->manual;
	if (kinds == 0)
		return create_usage_error("%s", "which trigger? give --block-interval, "
						"--event-address/--event-topic, --cron, "
						"--at or --manual");
	if (kinds > 1)
		return create_usage_error("%s", "one trigger kind per task: --block-interval, "
						"--event-*, --cron, --at and --manual "
						"exclude each other");
	if (o->have_chain && !o->block_interval && o->addresses.n + o->topics.n == 0)
		return create_usage_error("%s", "--chain-id goes with a block or an event "
						"trigger only");
	if (o->id) {
		char last[96];
		if (o->have_count)
			snprintf(last, sizeof last, "%s-%lld", o->id, (long long)(o->count - 1));
		else
			snprintf(last, sizeof last, "%s", o->id);
		if (!task_id_ok(last))
			return create_usage_error(
				o->have_count ? "with --count, --id is a prefix: '%s-N' must "
						"be 1 to 64 of A-Z a-z 0-9 _ -"
					      : "'%s' is not a task id (1 to 64 of A-Z a-z 0-9 _ -)",
				o->id);
	}
	if (o->ats.n) {
		if (!(o->epochs = calloc(o->ats.n, sizeof *o->epochs)))
			return AP_EXIT_FAIL;
		for (size_t i = 0; i < o->ats.n; i++)
			task_parse_int(o->ats.v[i], 0, INT64_MAX, &o->epochs[i]);
	}
	return AP_EXIT_OK;
}

/* The trigger every task of this command shares: its parts live in *t
 * and point into o, so both must outlive the requests. */
typedef struct trigger_parts {
	Aggregator__TaskTrigger trigger;
	Aggregator__BlockTrigger block;
	Aggregator__BlockTrigger__Config block_cfg;
	Aggregator__EventTrigger event;
	Aggregator__EventTrigger__Config event_cfg;
	Aggregator__EventTrigger__Query query;
	Aggregator__EventTrigger__Query *queries[1];
	Aggregator__CronTrigger cron;
	Aggregator__CronTrigger__Config cron_cfg;
	Aggregator__FixedTimeTrigger fixed;
	Aggregator__FixedTimeTrigger__Config fixed_cfg;
	Aggregator__ManualTrigger manual;
} trigger_parts;

static void build_trigger(trigger_parts *t, create_opts *o)
{
	Aggregator__TaskTrigger *tr = &t->trigger;
	aggregator__task_trigger__init(tr);
	tr->name = (char *)(o->name ? o->name : "");
	if (o->block_interval > 0) {
		aggregator__block_trigger__init(&t->block);
		aggregator__block_trigger__config__init(&t->block_cfg);
		t->block_cfg.interval = o->block_interval;
		t->block_cfg.chain_id = o->chain_id;
		t->block.config = &t->block_cfg;
		tr->type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_BLOCK;
		tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
		tr->block = &t->block;
	} else if (o->addresses.n + o->topics.n > 0) {
		aggregator__event_trigger__init(&t->event);
		aggregator__event_trigger__config__init(&t->event_cfg);
		aggregator__event_trigger__query__init(&t->query);
		t->query.n_addresses = o->addresses.n;
		t->query.addresses = o->addresses.v;
		t->query.n_topics = o->topics.n;
		t->query.topics = o->topics.v;
		t->queries[0] = &t->query;
		t->event_cfg.n_queries = 1;
		t->event_cfg.queries = t->queries;
		t->event_cfg.chain_id = o->chain_id;
		t->event.config = &t->event_cfg;
		tr->type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT;
		tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_EVENT;
		tr->event = &t->event;
	} else if (o->crons.n > 0) {
		aggregator__cron_trigger__init(&t->cron);
		aggregator__cron_trigger__config__init(&t->cron_cfg);
		t->cron_cfg.n_schedules = o->crons.n;
		t->cron_cfg.schedules = o->crons.v;
		t->cron.config = &t->cron_cfg;
		tr->type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_CRON;
		tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON;
		tr->cron = &t->cron;
	} else if (o->ats.n > 0) {
		aggregator__fixed_time_trigger__init(&t->fixed);
		aggregator__fixed_time_trigger__config__init(&t->fixed_cfg);
		t->fixed_cfg.n_epochs = o->ats.n;
		t->fixed_cfg.epochs = o->epochs;
		t->fixed.config = &t->fixed_cfg;
		tr->type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_FIXED_TIME;
		tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME;
		tr->fixed_time = &t->fixed;
	} else {
		aggregator__manual_trigger__init(&t->manual);
		tr->type = AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL;
		tr->trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL;
		tr->manual = &t->manual;
	}
}

/* One batch's request storage, reused from batch to batch. */
typedef struct batch {
	Aggregator__NewTask *tasks;
	Aggregator__NewTask **ptrs;
	char (*ids)[80];
	char (*names)[512];
} batch;

static int send_batches(const create_opts *o, trigger_parts *t, task_admin *a,
			int64_t *created)
{
	batch b = { 0 };
	size_t size = (size_t)(o->count < o->batch ? o->count : o->batch);
	int code = AP_EXIT_OK;

	b.tasks = calloc(size, sizeof *b.tasks);
	b.ptrs = calloc(size, sizeof *b.ptrs);
	b.ids = calloc(size, sizeof *b.ids);
	b.names = calloc(size, sizeof *b.names);
	if (!b.tasks || !b.ptrs || !b.ids || !b.names) {
		fprintf(stderr, "%s: out of memory\n", a->cmd);
		code = AP_EXIT_FAIL;
		goto out;
	}
	ap_call_options co = task_call_options(a, TASK_CREATE_TIMEOUT_MS);
	for (int64_t first = 0; first < o->count; first += (int64_t)size) {
		size_t n = (size_t)(o->count - first < (int64_t)size ? o->count - first
								     : (int64_t)size);
		for (size_t i = 0; i < n; i++) {
			Aggregator__NewTask *nt = &b.tasks[i];
			long long k = (long long)(first + (int64_t)i);
			aggregator__new_task__init(nt);
			b.ids[i][0] = '\0';
			b.names[i][0] = '\0';
			if (o->id && o->have_count)
				snprintf(b.ids[i], sizeof b.ids[i], "%s-%lld", o->id, k);
			else if (o->id)
				snprintf(b.ids[i], sizeof b.ids[i], "%s", o->id);
			if (o->name && o->have_count)
				snprintf(b.names[i], sizeof b.names[i], "%s-%lld", o->name, k);
			else if (o->name)
				snprintf(b.names[i], sizeof b.names[i], "%s", o->name);
			nt->id = b.ids[i];
			nt->name = b.names[i];
			nt->trigger = &t->trigger;
			nt->max_execution = o->max_execution;
			nt->start_at = o->start_at;
			nt->expired_at = o->expire_at;
			b.ptrs[i] = nt;
		}
		Aggregator__CreateTasksReq req = AGGREGATOR__CREATE_TASKS_REQ__INIT;
		Aggregator__CreateTasksResp *resp = NULL;
		ap_rpc_status st = { 0 };
		req.n_tasks = n;
		req.tasks = b.ptrs;
		int rc = ap_client_create_tasks(a->client, &req, &resp, &co, &st);
		if (rc != 0 || st.code != AP_RPC_OK) {
			code = task_call_failed(a, "creating tasks", rc, &st);
			goto out;
		}
		if (!o->quiet)
			for (size_t i = 0; i < resp->n_ids; i++)
				printf("%s\n", resp->ids[i]);
		*created += (int64_t)resp->n_ids;
		ap_client_free(resp);
	}
out:
	free(b.tasks);
	free(b.ptrs);
	free(b.ids);
	free(b.names);
	return code;
}

int task_create(int argc, char **argv, const task_ctx *ctx)
{
	create_opts o = { 0 };
	trigger_parts t;
	task_admin a;
	int64_t created = 0;

	int code = parse(argc, argv, &o);
	if (code != AP_EXIT_OK) {
		opts_free(&o);
		return code;
	}
	build_trigger(&t, &o);
	code = task_admin_open(&a, ctx);
	if (code == AP_EXIT_OK) {
		code = send_batches(&o, &t, &a, &created);
		task_admin_close(&a);
	}
	if (code != AP_EXIT_OK && created > 0)
		fprintf(stderr, "%s: %lld of %lld tasks were created before the failure\n",
			ctx->cmd, (long long)created, (long long)o.count);
	if (code == AP_EXIT_OK && o.quiet)
		printf("%lld\n", (long long)created);
	if (fflush(stdout) != 0) {
		perror("ap task create: stdout");
		code = AP_EXIT_FAIL;
	}
	opts_free(&o);
	return code;
}
