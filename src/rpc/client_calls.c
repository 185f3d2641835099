/* The typed unary calls of the Node and Admin services, and the port-file
 * helper. Each wrapper only names the method and the response type; the
 * call itself is ap_client_call_message in client.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "ap/error.h"
#include "client_int.h"

#define TYPED_CALL(c, method, req, desc, resp, o, st)                          \
	ap_client_call_message(c, method, (const ProtobufCMessage *)(req), &(desc),      \
		     (ProtobufCMessage **)(resp), NULL, 0, o, st)

int ap_client_health_check(ap_client *c, const Aggregator__HealthCheckRequest *req,
			   Aggregator__HealthCheckResponse **resp,
			   const ap_call_options *o, ap_rpc_status *st)
{
	return TYPED_CALL(c, AP_RPC_NODE_HEALTH_CHECK, req,
			  aggregator__health_check_response__descriptor, resp, o, st);
}

int ap_client_ping(ap_client *c, const Aggregator__Checkin *req,
		   Aggregator__CheckinResp **resp, const ap_call_options *o,
		   ap_rpc_status *st)
{
	return TYPED_CALL(c, AP_RPC_NODE_PING, req,
			  aggregator__checkin_resp__descriptor, resp, o, st);
}

int ap_client_ack(ap_client *c, const char *operator_address,
		  const char *message_id, bool *acked,
		  const ap_call_options *o, ap_rpc_status *st)
{
	Aggregator__AckMessageReq req = AGGREGATOR__ACK_MESSAGE_REQ__INIT;
	Google__Protobuf__BoolValue *answer = NULL;
	ap_rpc_metadata who = { AP_RPC_OPERATOR_ADDRESS_KEY, operator_address };

	*acked = false;
	req.id = (char *)(message_id ? message_id : "");
	int rc = ap_client_call_message(c, AP_RPC_NODE_ACK, &req.base,
			      &google__protobuf__bool_value__descriptor,
			      (ProtobufCMessage **)&answer, &who,
			      operator_address ? 1 : 0, o, st);
	if (rc == 0 && answer)
		*acked = answer->value;
	ap_client_free(answer);
	return rc;
}

int ap_client_notify_triggers(ap_client *c, const Aggregator__NotifyTriggersReq *req,
			      Aggregator__NotifyTriggersResp **resp,
			      const ap_call_options *o, ap_rpc_status *st)
{
	return TYPED_CALL(c, AP_RPC_NODE_NOTIFY_TRIGGERS, req,
			  aggregator__notify_triggers_resp__descriptor, resp, o, st);
}

int ap_client_create_tasks(ap_client *c, const Aggregator__CreateTasksReq *req,
			   Aggregator__CreateTasksResp **resp,
			   const ap_call_options *o, ap_rpc_status *st)
{
	return TYPED_CALL(c, AP_RPC_ADMIN_CREATE_TASKS, req,
			  aggregator__create_tasks_resp__descriptor, resp, o, st);
}

int ap_client_set_task_enabled(ap_client *c, const char *id, bool enabled,
			       Aggregator__TaskOpResp **resp,
			       const ap_call_options *o, ap_rpc_status *st)
{
	Aggregator__SetTaskEnabledReq req = AGGREGATOR__SET_TASK_ENABLED_REQ__INIT;
	req.id = (char *)(id ? id : "");
	req.enabled = enabled;
	return TYPED_CALL(c, AP_RPC_ADMIN_SET_TASK_ENABLED, &req,
			  aggregator__task_op_resp__descriptor, resp, o, st);
}

int ap_client_delete_task(ap_client *c, const char *id,
			  Aggregator__TaskOpResp **resp,
			  const ap_call_options *o, ap_rpc_status *st)
{
	Aggregator__TaskIdReq req = AGGREGATOR__TASK_ID_REQ__INIT;
	req.id = (char *)(id ? id : "");
	return TYPED_CALL(c, AP_RPC_ADMIN_DELETE_TASK, &req,
			  aggregator__task_op_resp__descriptor, resp, o, st);
}

int ap_client_list_tasks(ap_client *c, const Aggregator__ListTasksReq *req,
			 Aggregator__ListTasksResp **resp,
			 const ap_call_options *o, ap_rpc_status *st)
{
	Aggregator__ListTasksReq all = AGGREGATOR__LIST_TASKS_REQ__INIT;
	return TYPED_CALL(c, AP_RPC_ADMIN_LIST_TASKS, req ? req : &all,
			  aggregator__list_tasks_resp__descriptor, resp, o, st);
}

int ap_client_list_operators(ap_client *c, Aggregator__ListOperatorsResp **resp,
			     const ap_call_options *o, ap_rpc_status *st)
{
	Aggregator__ListOperatorsReq req = AGGREGATOR__LIST_OPERATORS_REQ__INIT;
	return TYPED_CALL(c, AP_RPC_ADMIN_LIST_OPERATORS, &req,
			  aggregator__list_operators_resp__descriptor, resp, o, st);
}

/* ---- helpers -------------------------------------------------------------- */

int ap_client_read_port_file(const char *path, int *port)
{
	char buf[32];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? AP_ENOTFOUND : AP_EIO;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0)
		return AP_EIO;
	buf[n] = '\0';
	if (n == 0)
		return AP_ENOTFOUND;
	char *end;
	errno = 0;
	long v = strtol(buf, &end, 10);
	if (end == buf || errno || v < 1 || v > 65535)
		return AP_EINVAL;
	while (*end == '\n' || *end == '\r' || *end == ' ')
		end++;
	if (*end)
		return AP_EINVAL;
	*port = (int)v;
	return 0;
}
