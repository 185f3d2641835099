/* Helpers shared by the libFuzzer targets: see fuzz.h. */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ap/clock.h"
#include "ap/config.h"
#include "ap/log.h"
#include "fuzz.h"
#include "node.pb-c.h"

/* What the process keeps for the whole run; released by cleanup() at
 * exit, in the order the engine needs: sessions, engine, config, dirs. */
static struct {
	bool registered;
	char dirs[4][512];
	size_t n_dirs;
	int log_fd;
	ap_config cfg;
	bool cfg_loaded;
	ap_engine *engine;
	ap_session *owner;
} fz = { .log_fd = -1 };

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void cleanup(void)
{
	if (fz.owner) {
		ap_engine_session_close(fz.engine, fz.owner, "fuzzing finished");
		fz.owner = NULL;
	}
	ap_engine_close(fz.engine);
	fz.engine = NULL;
	if (fz.cfg_loaded)
		ap_config_free(&fz.cfg);
	fz.cfg_loaded = false;
	for (size_t i = 0; i < fz.n_dirs; i++)
		nftw(fz.dirs[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	fz.n_dirs = 0;
	ap_log_set_fd(-1);
	if (fz.log_fd >= 0)
		close(fz.log_fd);
	fz.log_fd = -1;
}

static void register_cleanup(void)
{
	if (!fz.registered) {
		fz.registered = true;
		atexit(cleanup);
	}
}

const char *fz_tmpdir(const char *tag)
{
	FZ_CHECK(fz.n_dirs < sizeof fz.dirs / sizeof fz.dirs[0]);
	const char *base = getenv("AP_FUZZ_TMPDIR");
	if (!base || !base[0])
		base = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : NULL;
	if (!base)
		base = getenv("TMPDIR");
	if (!base || !base[0])
		base = "/tmp";
	char *dir = fz.dirs[fz.n_dirs];
	snprintf(dir, sizeof fz.dirs[0], "%s/ap-fuzz-%s-XXXXXX", base, tag);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "fuzz: cannot create %s\n", dir);
		abort();
	}
	fz.n_dirs++;
	register_cleanup();
	return dir;
}

void fz_quiet_log(void)
{
	if (fz.log_fd < 0)
		fz.log_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	FZ_CHECK(fz.log_fd >= 0);
	ap_log_set_fd(fz.log_fd);
	ap_log_set_level(AP_LOG_DEBUG);
	register_cleanup();
}

char *fz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	FZ_CHECK(s != NULL);
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* ---- the fixture tasks ------------------------------------------------- */

enum { FX_BLOCK, FX_EVENT, FX_CRON, FX_FIXED, FX_MANUAL };

static const struct fixture {
	const char *id;
	int kind;
	int64_t max_execution, start_at, expired_at;
	bool disabled;
} fixtures[] = {
	{ "fz-block", FX_BLOCK, 0, 0, 0, false },
	{ "fz-event", FX_EVENT, 0, 0, 0, false },
	{ "fz-cron", FX_CRON, 0, 0, 0, false },
	{ "fz-fixed", FX_FIXED, 0, 0, 0, false },
	{ "fz-manual", FX_MANUAL, 0, 0, 0, false },
	{ "fz-once", FX_BLOCK, 1, 0, 0, false },        /* completes on its first trigger */
	{ "fz-late", FX_BLOCK, 0, 0, 1, false },        /* expired in 1970 */
	{ "fz-early", FX_BLOCK, 0, 4102444800000, 0, false }, /* starts in 2100 */
	{ "fz-off", FX_BLOCK, 0, 0, 0, true },
};
#define N_FIXTURES (sizeof fixtures / sizeof fixtures[0])

const char *const fz_fixture_ids[] = {
	"fz-block", "fz-event", "fz-cron", "fz-fixed", "fz-manual",
	"fz-once", "fz-late", "fz-early", "fz-off", NULL,
};

/* Create one fixture; AP_EEXIST when it is there already. */
static int create_fixture(ap_engine *e, const struct fixture *fx)
{
	Aggregator__BlockTrigger__Config bc = AGGREGATOR__BLOCK_TRIGGER__CONFIG__INIT;
	Aggregator__BlockTrigger bt = AGGREGATOR__BLOCK_TRIGGER__INIT;
	bc.interval = 10;
	bc.chain_id = 1;
	bt.config = &bc;
	char *addresses[] = { (char *)FZ_OTHER };
	char *topics[] = { (char *)"0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef" };
	Aggregator__EventTrigger__Query q = AGGREGATOR__EVENT_TRIGGER__QUERY__INIT;
	q.n_addresses = 1;
	q.addresses = addresses;
	q.n_topics = 1;
	q.topics = topics;
	Aggregator__EventTrigger__Query *queries[] = { &q };
	Aggregator__EventTrigger__Config ec = AGGREGATOR__EVENT_TRIGGER__CONFIG__INIT;
	ec.n_queries = 1;
	ec.queries = queries;
	Aggregator__EventTrigger et = AGGREGATOR__EVENT_TRIGGER__INIT;
	et.config = &ec;
	char *schedules[] = { (char *)"*/5 * * * *" };
	Aggregator__CronTrigger__Config cc = AGGREGATOR__CRON_TRIGGER__CONFIG__INIT;
	cc.n_schedules = 1;
	cc.schedules = schedules;
	Aggregator__CronTrigger ct = AGGREGATOR__CRON_TRIGGER__INIT;
	ct.config = &cc;
	int64_t epochs[] = { 1700000000000 };
	Aggregator__FixedTimeTrigger__Config fc = AGGREGATOR__FIXED_TIME_TRIGGER__CONFIG__INIT;
	fc.n_epochs = 1;
	fc.epochs = epochs;
	Aggregator__FixedTimeTrigger ft = AGGREGATOR__FIXED_TIME_TRIGGER__INIT;
	ft.config = &fc;
	Aggregator__ManualTrigger mt = AGGREGATOR__MANUAL_TRIGGER__INIT;

	Aggregator__TaskTrigger tr = AGGREGATOR__TASK_TRIGGER__INIT;
	tr.name = (char *)"fixture";
	switch (fx->kind) {
	case FX_BLOCK:
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_BLOCK;
		tr.block = &bt;
		break;
	case FX_EVENT:
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_EVENT;
		tr.event = &et;
		break;
	case FX_CRON:
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_CRON;
		tr.cron = &ct;
		break;
	case FX_FIXED:
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_FIXED_TIME;
		tr.fixed_time = &ft;
		break;
	default:
		tr.trigger_type_case = AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL;
		tr.manual = &mt;
		break;
	}
	Aggregator__NewTask nt = AGGREGATOR__NEW_TASK__INIT;
	nt.id = (char *)fx->id;
	nt.name = (char *)"fuzz fixture";
	nt.trigger = &tr;
	nt.max_execution = fx->max_execution;
	nt.start_at = fx->start_at;
	nt.expired_at = fx->expired_at;
	Aggregator__NewTask *list[] = { &nt };
	char **ids = NULL;
	char err[256] = "";
	int rc = ap_engine_create_tasks(e, list, 1, &ids, err, sizeof err);
	if (rc == AP_EEXIST)
		return rc;
	if (rc) {
		fprintf(stderr, "fuzz: creating fixture %s: %s\n", fx->id, err);
		abort();
	}
	ap_engine_free_ids(ids, 1);
	if (fx->disabled) {
		const char *status = NULL;
		FZ_CHECK(ap_engine_set_enabled(e, fx->id, false, &status) == 0);
	}
	return 0;
}

void fz_fixtures_restore(ap_engine *e)
{
	for (size_t i = 0; i < N_FIXTURES; i++)
		create_fixture(e, &fixtures[i]);
}

/* ---- the engine -------------------------------------------------------- */

static void set_string(char **slot, const char *value)
{
	free(*slot);
	*slot = strdup(value);
	FZ_CHECK(*slot != NULL);
}

ap_engine *fz_engine_open(const char *dir, bool owner)
{
	FZ_CHECK(!fz.engine);
	register_cleanup();
	FZ_CHECK(ap_config_defaults(&fz.cfg) == 0);
	fz.cfg_loaded = true;
	char db[600];
	snprintf(db, sizeof db, "%s/db", dir);
	set_string(&fz.cfg.storage.dir, db);
	fz.cfg.storage.durability = AP_DURABILITY_NOSYNC;
	for (size_t i = 0; i < fz.cfg.operators.n_approved; i++)
		free(fz.cfg.operators.approved[i]);
	free(fz.cfg.operators.approved);
	fz.cfg.operators.approved = calloc(2, sizeof *fz.cfg.operators.approved);
	FZ_CHECK(fz.cfg.operators.approved != NULL);
	fz.cfg.operators.approved[0] = strdup(FZ_OWNER);
	fz.cfg.operators.approved[1] = strdup(FZ_OTHER);
	FZ_CHECK(fz.cfg.operators.approved[0] && fz.cfg.operators.approved[1]);
	fz.cfg.operators.n_approved = 2;
	fz.cfg.operators.stabilization_ms = 0;
	fz.cfg.operators.resync_interval_ms = 3600000;
	fz.cfg.operators.restart_grace_ms = 0;
	fz.cfg.operators.reconnect_cooldown_ms = 0;

	char err[256] = "";
	if (ap_engine_open(&fz.engine, &fz.cfg, err, sizeof err) != 0) {
		fprintf(stderr, "fuzz: engine open in %s: %s\n", db, err);
		abort();
	}
	FZ_CHECK(ap_engine_start(fz.engine) == 0);
	fz_fixtures_restore(fz.engine);
	if (!owner)
		return fz.engine;

	ap_hello hello = {
		.address = FZ_OWNER,
		.monotonic_clock = 1,
		.has_capabilities = false, /* absent capabilities mean all */
	};
	if (ap_engine_session_open(fz.engine, &hello, &fz.owner, err, sizeof err) != 0) {
		fprintf(stderr, "fuzz: owner session: %s\n", err);
		abort();
	}
	/* Stabilization is 0: the ticker makes the session ready and gives it
	 * the orphaned fixtures. Wait (bounded) for both. */
	int64_t deadline = ap_clock_mono_ns() + 10000000000LL;
	for (;;) {
		ap_engine_stats st;
		ap_engine_get_stats(fz.engine, &st);
		if (ap_session_ready(fz.owner) && st.orphans == 0)
			break;
		if (ap_clock_mono_ns() > deadline) {
			fprintf(stderr, "fuzz: owner session not ready with every task after 10 s\n");
			abort();
		}
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	fz_drain(fz.owner);
	return fz.engine;
}

ap_session *fz_owner_session(void)
{
	return fz.owner;
}

/* True when m, or a message inside it, keeps an unknown field of field
 * number 0 (see fuzz.h). */
static bool unknown_tag0(const ProtobufCMessage *m)
{
	if (!m)
		return false;
	for (unsigned i = 0; i < m->n_unknown_fields; i++)
		if (m->unknown_fields[i].tag == 0)
			return true;
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	for (unsigned f = 0; f < d->n_fields; f++) {
		const ProtobufCFieldDescriptor *fd = &d->fields[f];
		if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + fd->quantifier_offset);
			ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + fd->offset);
			for (size_t k = 0; k < n; k++)
				if (unknown_tag0(v[k]))
					return true;
			continue;
		}
		if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + fd->quantifier_offset) != fd->id)
			continue;
		if (unknown_tag0(*(ProtobufCMessage *const *)(base + fd->offset)))
			return true;
	}
	return false;
}

bool fz_strict(void)
{
	static int strict = -1;
	if (strict < 0) {
		const char *v = getenv("AP_FUZZ_STRICT");
		strict = v && strcmp(v, "1") == 0;
	}
	return strict;
}

bool fz_known_tag0(const ProtobufCMessage *m)
{
	return !fz_strict() && unknown_tag0(m);
}

size_t fz_drain(ap_session *s)
{
	size_t n = 0;
	ap_outmsg *m;
	while (s && ap_session_next(s, 0, &m) == 0) {
		Aggregator__SyncMessagesResp *r =
			aggregator__sync_messages_resp__unpack(NULL, m->len, m->bytes);
		FZ_CHECK(r != NULL);
		FZ_CHECK(strcmp(r->id, m->task_id) == 0);
		FZ_CHECK((int)r->op == (int)m->op);
		if (m->op == AP_OP_MONITOR)
			FZ_CHECK(r->task_metadata && r->task_metadata->trigger &&
				 strcmp(r->task_metadata->task_id, m->task_id) == 0);
		aggregator__sync_messages_resp__free_unpacked(r, NULL);
		ap_session_sent(s, m, true);
		n++;
	}
	return n;
}
