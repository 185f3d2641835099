/* Service aggregator.Admin (SPEC section 2b), served only on admin_listen.
 *
 * Each method decodes its request, calls the engine and maps the result:
 * a malformed request or task is INVALID_ARGUMENT, a duplicate id
 * ALREADY_EXISTS, an unknown id NOT_FOUND, enabling a completed or failed
 * task FAILED_PRECONDITION. On a TCP listener the admin token has been
 * checked before a handler runs (call.c). Handlers run on the worker pool. */
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "ap/error.h"
#include "ap/log.h"
#include "rpc_int.h"

static bool check_id(const char *id, rpc_reply *rep)
{
	if (id && id[0])
		return true;
	rpc_reply_error(rep, GRPC_STATUS_INVALID_ARGUMENT, "task id is required");
	return false;
}

static void engine_error(rpc_reply *rep, int rc, const char *what, const char *id,
			 const char *detail)
{
	if (rc == AP_ENOTFOUND)
		rpc_reply_error(rep, GRPC_STATUS_NOT_FOUND, "task %.64s not found", id);
	else if (rc == AP_ESTATE)
		rpc_reply_error(rep, GRPC_STATUS_FAILED_PRECONDITION,
				"task %.64s is completed or failed and cannot change state", id);
	else if (detail && detail[0])
		rpc_reply_error(rep, rpc_status_from_ap(rc), "%s", detail);
	else
		rpc_reply_error(rep, rpc_status_from_ap(rc), "%s: %s", what, ap_strerror(rc));
}

static void create_tasks(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__CreateTasksReq *in =
		rpc_unpack(&aggregator__create_tasks_req__descriptor, req, rep);
	if (!in)
		return;
	char **ids = NULL;
	char err[256] = "";
	int rc = ap_engine_create_tasks(srv->engine, in->tasks, in->n_tasks, &ids, err, sizeof err);
	if (rc) {
		engine_error(rep, rc, "creating tasks", "", err);
	} else {
		Aggregator__CreateTasksResp out = AGGREGATOR__CREATE_TASKS_RESP__INIT;
		out.n_ids = in->n_tasks;
		out.ids = ids;
		rpc_reply_pack(rep, &out.base);
		ap_engine_free_ids(ids, in->n_tasks);
	}
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

static void set_task_enabled(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__SetTaskEnabledReq *in =
		rpc_unpack(&aggregator__set_task_enabled_req__descriptor, req, rep);
	if (!in)
		return;
	if (check_id(in->id, rep)) {
		const char *status = NULL;
		int rc = ap_engine_set_enabled(srv->engine, in->id, in->enabled, &status);
		if (rc) {
			engine_error(rep, rc, "changing the task", in->id, NULL);
		} else {
			Aggregator__TaskOpResp out = AGGREGATOR__TASK_OP_RESP__INIT;
			out.id = in->id;
			out.status = (char *)status;
			rpc_reply_pack(rep, &out.base);
		}
	}
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

static void delete_task(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__TaskIdReq *in = rpc_unpack(&aggregator__task_id_req__descriptor, req, rep);
	if (!in)
		return;
	if (check_id(in->id, rep)) {
		int rc = ap_engine_delete_task(srv->engine, in->id);
		if (rc) {
			engine_error(rep, rc, "deleting the task", in->id, NULL);
		} else {
			Aggregator__TaskOpResp out = AGGREGATOR__TASK_OP_RESP__INIT;
			out.id = in->id;
			out.status = "deleted";
			rpc_reply_pack(rep, &out.base);
		}
	}
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

static void list_tasks(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__ListTasksReq *in = rpc_unpack(&aggregator__list_tasks_req__descriptor, req, rep);
	if (!in)
		return;
	Aggregator__ListTasksResp *out = NULL;
	int rc = ap_engine_list_tasks(srv->engine, in->after, in->limit, &out);
	if (rc)
		engine_error(rep, rc, "listing tasks", "", NULL);
	else
		rpc_reply_pack(rep, &out->base);
	ap_engine_free_list(out);
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

static void list_operators(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__ListOperatorsReq *in =
		rpc_unpack(&aggregator__list_operators_req__descriptor, req, rep);
	if (!in)
		return;
	Aggregator__ListOperatorsResp *out = NULL;
	int rc = ap_engine_list_operators(srv->engine, &out);
	if (rc)
		engine_error(rep, rc, "listing operators", "", NULL);
	else
		rpc_reply_pack(rep, &out->base);
	ap_engine_free_operators(out);
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

const rpc_method rpc_admin_methods[] = {
	{ "/aggregator.Admin/CreateTasks", create_tasks, 2 },
	{ "/aggregator.Admin/SetTaskEnabled", set_task_enabled, 2 },
	{ "/aggregator.Admin/DeleteTask", delete_task, 2 },
	{ "/aggregator.Admin/ListTasks", list_tasks, 2 },
	{ "/aggregator.Admin/ListOperators", list_operators, 2 },
};
const size_t rpc_admin_n_methods = sizeof rpc_admin_methods / sizeof rpc_admin_methods[0];
