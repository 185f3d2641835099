/* The unary methods of service aggregator.Node and grpc.health.v1.Health
 * (SPEC sections 2, 6b and 7); SyncMessages is in stream.c.
 *
 * Every handler checks in the same order: a request that cannot be decoded
 * or is malformed (an address that is not an address, a missing field) is
 * INVALID_ARGUMENT; then, in signature mode, the bearer token for the
 * address as sent (UNAUTHENTICATED); then approval (PERMISSION_DENIED);
 * then the engine. Checking the shape first gives a clear answer to a
 * broken client and reveals nothing: it depends only on the request.
 * HealthCheck needs no authentication. Handlers run on the worker pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/auth.h"
#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"
#include "ap/metrics.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "node.pb-c.h"
#include "rpc_int.h"

bool rpc_node_auth(ap_rpc_server *srv, const rpc_request *req, const char *address,
		   const char *method, rpc_reply *rep)
{
	if (srv->cfg->auth.mode == AP_AUTH_NONE)
		return true;
	char *authz = rpc_md_dup(req->md, "authorization");
	ap_auth_result r = ap_auth_verify(authz, address, ap_clock_wall_ms() / 1000,
					  srv->cfg->auth.max_skew_s);
	free(authz);
	if (r == AP_AUTH_OK)
		return true;
	ap_metrics_auth_failure(ap_auth_result_name(r));
	AP_WARN("🔒 Operator authentication failed", AP_F_STR("method", method),
		AP_F_STR("operator", address), AP_F_STR("reason", ap_auth_result_name(r)));
	rpc_reply_error(rep, GRPC_STATUS_UNAUTHENTICATED, "authentication failed: %s",
			ap_auth_result_name(r));
	return false;
}

static bool check_address(const char *address, rpc_reply *rep)
{
	if (ap_config_is_address(address))
		return true;
	rpc_reply_error(rep, GRPC_STATUS_INVALID_ARGUMENT,
			"address must be 0x followed by 40 hex digits");
	return false;
}

static bool check_approved(ap_rpc_server *srv, const char *address, rpc_reply *rep)
{
	char lower[AP_ADDRESS_LEN + 1];
	for (size_t i = 0; i <= AP_ADDRESS_LEN; i++)
		lower[i] = (address[i] >= 'A' && address[i] <= 'Z') ? (char)(address[i] + 32)
								    : address[i];
	if (ap_engine_approved(srv->engine, lower))
		return true;
	ap_metrics_auth_failure("unapproved");
	rpc_reply_error(rep, GRPC_STATUS_PERMISSION_DENIED, "operator %s is not approved", lower);
	return false;
}

static Google__Protobuf__Timestamp timestamp_ms(int64_t ms)
{
	Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	t.seconds = ms / 1000;
	t.nanos = (int32_t)(ms % 1000) * 1000000;
	return t;
}

static void health_check(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__HealthCheckRequest *in =
		rpc_unpack(&aggregator__health_check_request__descriptor, req, rep);
	if (!in)
		return;
	static const char *const status[] = { "STARTING", "OK", "STOPPING" };
	static const char *const message[] = { "aggregator is starting",
					       "aggregator is running",
					       "aggregator is shutting down" };
	int h = atomic_load(&srv->health);
	Aggregator__HealthCheckResponse out = AGGREGATOR__HEALTH_CHECK_RESPONSE__INIT;
	out.status = (char *)status[h];
	out.message = (char *)message[h];
	out.timestamp = (uint64_t)ap_clock_wall_ms();
	rpc_reply_pack(rep, &out.base);
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

static void ping(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__Checkin *in = rpc_unpack(&aggregator__checkin__descriptor, req, rep);
	if (!in)
		return;
	if (!check_address(in->address, rep) || !rpc_node_auth(srv, req, in->address, "Ping", rep) ||
	    !check_approved(srv, in->address, rep))
		goto out;
	int64_t updated_at = 0;
	int rc = ap_engine_ping(srv->engine, in, &updated_at);
	if (rc) {
		rpc_reply_error(rep, rpc_status_from_ap(rc), "ping not recorded: %s", ap_strerror(rc));
		goto out;
	}
	Google__Protobuf__Timestamp ts = timestamp_ms(updated_at);
	Aggregator__CheckinResp out = AGGREGATOR__CHECKIN_RESP__INIT;
	out.updated_at = &ts;
	rpc_reply_pack(rep, &out.base);
out:
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

/* Ack carries no address: the caller names itself in x-operator-address
 * (SPEC section 2). Without it the answer is false; a value that is not an
 * address is INVALID_ARGUMENT like everywhere else; an unapproved operator
 * gets PERMISSION_DENIED like on every other Node method. */
static void ack(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__AckMessageReq *in = rpc_unpack(&aggregator__ack_message_req__descriptor, req, rep);
	if (!in)
		return;
	char *address = rpc_md_dup(req->md, "x-operator-address");
	bool known = false;
	if (address) {
		if (!check_address(address, rep) || !rpc_node_auth(srv, req, address, "Ack", rep) ||
		    !check_approved(srv, address, rep))
			goto out;
		known = in->id[0] && ap_engine_ack(srv->engine, address, in->id);
	}
	Google__Protobuf__BoolValue out = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
	out.value = known;
	rpc_reply_pack(rep, &out.base);
out:
	free(address);
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

static void notify_triggers(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Aggregator__NotifyTriggersReq *in =
		rpc_unpack(&aggregator__notify_triggers_req__descriptor, req, rep);
	if (!in)
		return;
	if (!check_address(in->address, rep))
		goto out;
	if (!in->task_id[0]) {
		rpc_reply_error(rep, GRPC_STATUS_INVALID_ARGUMENT, "task_id is required");
		goto out;
	}
	/* SPEC section 2: token, then approval, then the task's state. */
	if (!rpc_node_auth(srv, req, in->address, "NotifyTriggers", rep) ||
	    !check_approved(srv, in->address, rep))
		goto out;
	ap_notify_result res;
	int rc = ap_engine_notify(srv->engine, in->address, in->task_id, in->trigger_request_id, &res);
	if (rc == AP_EDENIED) {
		rpc_reply_error(rep, GRPC_STATUS_PERMISSION_DENIED,
				"operator is not the owner of task %.64s", in->task_id);
		goto out;
	}
	if (rc) {
		rpc_reply_error(rep, rpc_status_from_ap(rc), "trigger not recorded: %s",
				ap_strerror(rc));
		goto out;
	}
	Google__Protobuf__Timestamp ts = timestamp_ms(ap_clock_wall_ms());
	Aggregator__NotifyTriggersResp out = AGGREGATOR__NOTIFY_TRIGGERS_RESP__INIT;
	out.updated_at = &ts;
	out.remaining_executions = res.remaining_executions;
	out.task_still_enabled = res.task_still_enabled;
	out.status = (char *)(res.status ? res.status : "error");
	out.message = res.message;
	rpc_reply_pack(rep, &out.base);
out:
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

/* grpc.health.v1.Health/Check: SERVING from the moment the server runs
 * (the store is open before it starts) until shutdown begins. The empty
 * service name and "aggregator.Node" are known; others are NOT_FOUND, as
 * the health protocol says. */
static void grpc_health_check(ap_rpc_server *srv, const rpc_request *req, rpc_reply *rep)
{
	Grpc__Health__V1__HealthCheckRequest *in =
		rpc_unpack(&grpc__health__v1__health_check_request__descriptor, req, rep);
	if (!in)
		return;
	if (in->service[0] && strcmp(in->service, "aggregator.Node") != 0) {
		rpc_reply_error(rep, GRPC_STATUS_NOT_FOUND, "unknown service %.100s", in->service);
	} else {
		Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
		out.status = atomic_load(&srv->health) == RPC_STOPPING
				     ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
				     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
		rpc_reply_pack(rep, &out.base);
	}
	protobuf_c_message_free_unpacked(&in->base, NULL);
}

/* SyncMessages gets more outstanding requests: operators reconnect in
 * bursts after a restart or a network blip. */
const rpc_method rpc_node_methods[] = {
	{ "/aggregator.Node/HealthCheck", health_check, 2 },
	{ "/aggregator.Node/Ping", ping, 4 },
	{ "/aggregator.Node/SyncMessages", NULL, 16 },
	{ "/aggregator.Node/Ack", ack, 2 },
	{ "/aggregator.Node/NotifyTriggers", notify_triggers, 4 },
	{ "/grpc.health.v1.Health/Check", grpc_health_check, 2 },
};
const size_t rpc_node_n_methods = sizeof rpc_node_methods / sizeof rpc_node_methods[0];
