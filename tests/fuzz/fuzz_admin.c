/* libFuzzer target: the requests of service aggregator.Admin (SPEC section
 * 2b), handled as src/rpc/admin.c does, on a real engine.
 *
 * Input: byte 0 chooses the request (byte % 5), the rest is the request as
 * a gRPC payload carries it:
 *
 *   0 CreateTasksReq     ap_engine_create_tasks (which runs every NewTask
 *                        through ap_task_id_valid and ap_task_trigger_check),
 *                        then the created tasks are deleted again
 *   1 SetTaskEnabledReq  ap_engine_set_enabled, then the fixture is put back
 *   2 TaskIdReq          ap_engine_delete_task (DeleteTask), then any
 *                        deleted fixture is created again
 *   3 ListTasksReq       ap_engine_list_tasks
 *   4 ListOperatorsReq   ap_engine_list_operators
 *
 * The engine is opened once with the fixture tasks and a ready FZ_OWNER
 * session that is given every new assignable task, so a created task is
 * packed into the SyncMessagesResp the operator is sent (and fz_drain
 * checks that it decodes). Each input leaves the engine as it found it.
 * Besides the sanitizers, the target checks the answers against the rules
 * the engine must apply: all or nothing, the id and trigger rules, list
 * order and limits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "ap/task.h"
#include "fuzz.h"

static ap_engine *engine;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet_log();
	engine = fz_engine_open(fz_tmpdir("admin"), true);
	return 0;
}

static void answer(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);
	FZ_CHECK(buf != NULL);
	FZ_CHECK(protobuf_c_message_pack(m, buf) == len);
	free(buf);
}

static size_t task_count(void)
{
	ap_engine_stats st;
	ap_engine_get_stats(engine, &st);
	return st.tasks;
}

/* SPEC 2b's rules for one NewTask, checked here independently of the
 * engine's own check_new. */
static bool new_task_valid(const Aggregator__NewTask *nt)
{
	if (nt->id[0] && !ap_task_id_valid(nt->id))
		return false;
	char why[160] = "";
	int type = ap_task_trigger_check(nt->trigger, why, sizeof why);
	if (type < 0) {
		FZ_CHECK(type == AP_EINVAL && why[0] != '\0');
		return false;
	}
	FZ_CHECK(type >= AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_MANUAL &&
		 type <= AGGREGATOR__TRIGGER_TYPE__TRIGGER_TYPE_EVENT);
	FZ_CHECK(ap_task_trigger_chain(nt->trigger) >= 0);
	return nt->max_execution >= 0 && nt->start_at >= 0 && nt->expired_at >= 0;
}

static void create_tasks(const uint8_t *data, size_t size)
{
	Aggregator__CreateTasksReq *in = aggregator__create_tasks_req__unpack(NULL, size, data);
	if (!in)
		return;
	bool valid = in->n_tasks > 0;
	for (size_t i = 0; i < in->n_tasks; i++)
		valid = new_task_valid(in->tasks[i]) && valid;
	size_t before = task_count();
	char **ids = NULL;
	char err[256] = "";
	int rc = ap_engine_create_tasks(engine, in->tasks, in->n_tasks, &ids, err, sizeof err);
	FZ_CHECK(rc == 0 || rc == AP_EINVAL || rc == AP_EEXIST || rc == AP_EIO || rc == AP_ENOMEM);
	FZ_CHECK((rc == AP_EINVAL) == !valid);
	if (rc == AP_ENOMEM) {
		/* Only the known protobuf-c quirk (fuzz.h) makes the copy fail. */
		bool known = false;
		for (size_t i = 0; i < in->n_tasks && !known; i++)
			known = fz_known_tag0(&in->tasks[i]->base);
		FZ_CHECK(known);
	}
	if (rc) {
		FZ_CHECK(ids == NULL && err[0] != '\0');
		FZ_CHECK(task_count() == before); /* all or nothing */
		goto out;
	}
	FZ_CHECK(task_count() == before + in->n_tasks);
	for (size_t i = 0; i < in->n_tasks; i++) {
		FZ_CHECK(ap_task_id_valid(ids[i]));
		FZ_CHECK(!in->tasks[i]->id[0] || strcmp(ids[i], in->tasks[i]->id) == 0);
	}
	Aggregator__CreateTasksResp out = AGGREGATOR__CREATE_TASKS_RESP__INIT;
	out.n_ids = in->n_tasks;
	out.ids = ids;
	answer(&out.base);
	fz_drain(fz_owner_session());
	for (size_t i = 0; i < in->n_tasks; i++)
		FZ_CHECK(ap_engine_delete_task(engine, ids[i]) == 0);
	FZ_CHECK(task_count() == before);
	ap_engine_free_ids(ids, in->n_tasks);
out:
	aggregator__create_tasks_req__free_unpacked(in, NULL);
}

static void task_op_answer(const char *id, const char *status)
{
	Aggregator__TaskOpResp out = AGGREGATOR__TASK_OP_RESP__INIT;
	out.id = (char *)id;
	out.status = (char *)status;
	answer(&out.base);
}

static void set_task_enabled(const uint8_t *data, size_t size)
{
	Aggregator__SetTaskEnabledReq *in =
		aggregator__set_task_enabled_req__unpack(NULL, size, data);
	if (!in)
		return;
	if (!in->id[0])
		goto out; /* "task id is required" */
	const char *status = NULL;
	int rc = ap_engine_set_enabled(engine, in->id, in->enabled, &status);
	FZ_CHECK(rc == 0 || rc == AP_ENOTFOUND || rc == AP_ESTATE || rc == AP_EIO);
	if (rc == 0) {
		FZ_CHECK(status && strcmp(status, in->enabled ? "enabled" : "disabled") == 0);
		task_op_answer(in->id, status);
		/* Only fixtures exist between inputs: put this one back. */
		bool enabled = strcmp(in->id, "fz-off") != 0;
		FZ_CHECK(ap_engine_set_enabled(engine, in->id, enabled, &status) == 0);
	}
out:
	aggregator__set_task_enabled_req__free_unpacked(in, NULL);
}

static void delete_task(const uint8_t *data, size_t size)
{
	Aggregator__TaskIdReq *in = aggregator__task_id_req__unpack(NULL, size, data);
	if (!in)
		return;
	if (!in->id[0])
		goto out;
	size_t before = task_count();
	int rc = ap_engine_delete_task(engine, in->id);
	FZ_CHECK(rc == 0 || rc == AP_ENOTFOUND || rc == AP_EIO);
	FZ_CHECK(task_count() == (rc == 0 ? before - 1 : before));
	if (rc == 0) {
		task_op_answer(in->id, "deleted");
		fz_drain(fz_owner_session());
		fz_fixtures_restore(engine);
		FZ_CHECK(task_count() == before);
	}
out:
	aggregator__task_id_req__free_unpacked(in, NULL);
}

static void list_tasks(const uint8_t *data, size_t size)
{
	static const char *const statuses[] = { "enabled", "disabled", "completed", "failed" };
	Aggregator__ListTasksReq *in = aggregator__list_tasks_req__unpack(NULL, size, data);
	if (!in)
		return;
	Aggregator__ListTasksResp *out = NULL;
	int rc = ap_engine_list_tasks(engine, in->after, in->limit, &out);
	FZ_CHECK(rc == 0 || rc == AP_EIO);
	if (rc == 0) {
		uint32_t limit = in->limit ? in->limit : 1000;
		FZ_CHECK(out->n_tasks <= limit);
		const char *prev = in->after;
		for (size_t i = 0; i < out->n_tasks; i++) {
			const Aggregator__TaskInfo *t = out->tasks[i];
			FZ_CHECK(strcmp(t->id, prev) > 0); /* id order, after exclusive */
			bool known = false;
			for (size_t k = 0; k < 4 && !known; k++)
				known = strcmp(t->status, statuses[k]) == 0;
			FZ_CHECK(known);
			prev = t->id;
		}
		FZ_CHECK(!out->next_after[0] ||
			 (out->n_tasks && strcmp(out->next_after, prev) == 0));
		answer(&out->base);
	}
	ap_engine_free_list(out);
	aggregator__list_tasks_req__free_unpacked(in, NULL);
}

static void list_operators(const uint8_t *data, size_t size)
{
	Aggregator__ListOperatorsReq *in = aggregator__list_operators_req__unpack(NULL, size, data);
	if (!in)
		return;
	Aggregator__ListOperatorsResp *out = NULL;
	int rc = ap_engine_list_operators(engine, &out);
	FZ_CHECK(rc == 0);
	if (rc == 0) {
		bool owner = false;
		for (size_t i = 0; i < out->n_operators; i++)
			owner = owner || (strcmp(out->operators[i]->address, FZ_OWNER) == 0 &&
					  out->operators[i]->connected);
		FZ_CHECK(owner);
		answer(&out->base);
	}
	ap_engine_free_operators(out);
	aggregator__list_operators_req__free_unpacked(in, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned kind = data[0] % 5;
	data++;
	size--;
	switch (kind) {
	case 0: create_tasks(data, size); break;
	case 1: set_task_enabled(data, size); break;
	case 2: delete_task(data, size); break;
	case 3: list_tasks(data, size); break;
	default: list_operators(data, size); break;
	}
	fz_drain(fz_owner_session());
	return 0;
}
