/* libFuzzer target: the requests of service aggregator.Node (SPEC sections
 * 2 and 7), checked and handled as the transport does (src/rpc/node.c and
 * src/rpc/stream.c), on a real engine.
 *
 * Input: byte 0 chooses the request (byte % 7) and the calling operator
 * (byte / 7 % 4: none, FZ_OWNER, FZ_OTHER, FZ_OWNER in EIP-55 case), the
 * rest is the request as a gRPC payload carries it:
 *
 *   0 HealthCheckRequest   decode, answer
 *   1 Checkin (Ping)       address check, approval, ap_engine_ping
 *   2 SyncMessagesReq      address and clock checks, ap_engine_session_open,
 *                          drain what the session is sent, close it
 *   3 AckMessageReq        the operator comes from x-operator-address (the
 *                          chosen operator; none = no metadata)
 *   4 NotifyTriggersReq    address and task id checks, approval,
 *                          ap_engine_notify
 *   5 authorization value  ap_auth_verify of the bytes as the bearer token
 *                          of the chosen operator, at a fixed clock
 *   6 grpc.health.v1.HealthCheckRequest (Health/Check on the operator port)
 *
 * The engine is opened once (fz_engine_open with an owner): FZ_OWNER holds
 * a ready session that owns every fixture task, so NotifyTriggers reaches
 * the counting path. A SyncMessagesReq from FZ_OWNER is checked but does
 * not open a session: it would supersede that holder for the rest of the
 * run. The transport's token check is fuzzed on its own (kind 5), so the
 * other kinds behave as auth.mode "none". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ap/auth.h"
#include "ap/clock.h"
#include "ap/config.h"
#include "ap/log.h"
#include "fuzz.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "node.pb-c.h"

/* The clock of kind 5: tokens in the seed corpus are signed for it. */
#define FZ_NOW_S 1700000000
/* FZ_OWNER as the Go operator sends it (EIP-55 mixed case). */
#define FZ_OWNER_MIXED "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"

static ap_engine *engine;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_quiet_log();
	engine = fz_engine_open(fz_tmpdir("node"), true);
	return 0;
}

/* Pack a response as the transport would, and drop it. */
static void answer(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);
	FZ_CHECK(buf != NULL);
	FZ_CHECK(protobuf_c_message_pack(m, buf) == len);
	free(buf);
}

/* The transport's approval check: the address lower-cased. */
static bool approved(const char *address)
{
	char lower[AP_ADDRESS_LEN + 1];
	for (size_t i = 0; i <= AP_ADDRESS_LEN; i++)
		lower[i] = (address[i] >= 'A' && address[i] <= 'Z') ? (char)(address[i] + 32)
								    : address[i];
	bool ok = ap_engine_approved(engine, lower);
	FZ_CHECK(ok == (strcmp(lower, FZ_OWNER) == 0 || strcmp(lower, FZ_OTHER) == 0));
	return ok;
}

static Google__Protobuf__Timestamp timestamp_ms(int64_t ms)
{
	Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	t.seconds = ms / 1000;
	t.nanos = (int32_t)(ms % 1000) * 1000000;
	return t;
}

static void health_check(const uint8_t *data, size_t size)
{
	Aggregator__HealthCheckRequest *in =
		aggregator__health_check_request__unpack(NULL, size, data);
	if (!in)
		return;
	Aggregator__HealthCheckResponse out = AGGREGATOR__HEALTH_CHECK_RESPONSE__INIT;
	out.status = (char *)"OK";
	out.message = (char *)"aggregator is running";
	out.timestamp = (uint64_t)ap_clock_wall_ms();
	answer(&out.base);
	aggregator__health_check_request__free_unpacked(in, NULL);
}

static void grpc_health_check(const uint8_t *data, size_t size)
{
	Grpc__Health__V1__HealthCheckRequest *in =
		grpc__health__v1__health_check_request__unpack(NULL, size, data);
	if (!in)
		return;
	/* The empty service and "aggregator.Node" are known, others NOT_FOUND. */
	if (!in->service[0] || strcmp(in->service, "aggregator.Node") == 0) {
		Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
		out.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
		answer(&out.base);
	}
	grpc__health__v1__health_check_request__free_unpacked(in, NULL);
}

static void ping(const uint8_t *data, size_t size)
{
	Aggregator__Checkin *in = aggregator__checkin__unpack(NULL, size, data);
	if (!in)
		return;
	if (!ap_config_is_address(in->address) || !approved(in->address))
		goto out;
	int64_t updated_at = 0;
	int rc = ap_engine_ping(engine, in, &updated_at);
	FZ_CHECK(rc == 0 || rc == AP_EIO);
	if (rc == 0) {
		Google__Protobuf__Timestamp ts = timestamp_ms(updated_at);
		Aggregator__CheckinResp out = AGGREGATOR__CHECKIN_RESP__INIT;
		out.updated_at = &ts;
		answer(&out.base);
	}
out:
	aggregator__checkin__free_unpacked(in, NULL);
}

static void sync_messages(const uint8_t *data, size_t size)
{
	Aggregator__SyncMessagesReq *in = aggregator__sync_messages_req__unpack(NULL, size, data);
	if (!in)
		return;
	AP_INFO("open channel to stream check to operator", AP_F_STR("operator", in->address),
		AP_F_STR("peer", "fuzz"), AP_F_INT("monotonic_clock", in->monotonic_clock));
	if (!ap_config_is_address(in->address) || in->monotonic_clock < 0)
		goto out;
	if (strcasecmp(in->address, FZ_OWNER) == 0)
		goto out; /* keep the holder session current (see the top) */
	ap_hello hello = {
		.address = in->address,
		.monotonic_clock = in->monotonic_clock,
		.has_capabilities = in->capabilities != NULL,
		.event_monitoring = in->capabilities && in->capabilities->event_monitoring,
		.block_monitoring = in->capabilities && in->capabilities->block_monitoring,
		.time_monitoring = in->capabilities && in->capabilities->time_monitoring,
		.chain_ids = in->supported_chain_ids,
		.n_chain_ids = in->n_supported_chain_ids,
	};
	ap_session *s = NULL;
	char err[200] = "";
	int rc = ap_engine_session_open(engine, &hello, &s, err, sizeof err);
	/* The transport's checks leave nothing malformed for the engine. */
	FZ_CHECK(rc != AP_EINVAL);
	FZ_CHECK((rc == 0) == (s != NULL));
	FZ_CHECK(rc != 0 || strcasecmp(in->address, FZ_OTHER) == 0);
	FZ_CHECK(rc == 0 || err[0] != '\0');
	if (s) {
		fz_drain(s);
		ap_engine_session_close(engine, s, "fuzz: stream ended");
	}
out:
	aggregator__sync_messages_req__free_unpacked(in, NULL);
}

static const char *caller(unsigned who)
{
	static const char *const callers[] = { NULL, FZ_OWNER, FZ_OTHER, FZ_OWNER_MIXED };
	return callers[who % 4];
}

static void ack(const uint8_t *data, size_t size, const char *address)
{
	Aggregator__AckMessageReq *in = aggregator__ack_message_req__unpack(NULL, size, data);
	if (!in)
		return;
	bool known = false;
	if (address) {
		if (!ap_config_is_address(address) || !approved(address))
			goto out;
		known = in->id[0] && ap_engine_ack(engine, address, in->id);
	}
	Google__Protobuf__BoolValue out = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
	out.value = known;
	answer(&out.base);
out:
	aggregator__ack_message_req__free_unpacked(in, NULL);
}

static void notify_triggers(const uint8_t *data, size_t size)
{
	static const char *const statuses[] = { "enabled", "deduplicated", "exhausted", "expired",
						"not_started", "not_found", "disabled", NULL };
	Aggregator__NotifyTriggersReq *in =
		aggregator__notify_triggers_req__unpack(NULL, size, data);
	if (!in)
		return;
	if (!ap_config_is_address(in->address) || !in->task_id[0] || !approved(in->address))
		goto out;
	ap_notify_result res;
	int rc = ap_engine_notify(engine, in->address, in->task_id, in->trigger_request_id, &res);
	FZ_CHECK(rc == 0 || rc == AP_EDENIED || rc == AP_EIO);
	if (rc == 0) {
		bool known = false;
		for (size_t i = 0; statuses[i] && !known; i++)
			known = res.status && strcmp(res.status, statuses[i]) == 0;
		FZ_CHECK(known);
		FZ_CHECK(res.remaining_executions >= -1);
		FZ_CHECK(memchr(res.message, '\0', sizeof res.message) != NULL);
		Google__Protobuf__Timestamp ts = timestamp_ms(ap_clock_wall_ms());
		Aggregator__NotifyTriggersResp out = AGGREGATOR__NOTIFY_TRIGGERS_RESP__INIT;
		out.updated_at = &ts;
		out.remaining_executions = res.remaining_executions;
		out.task_still_enabled = res.task_still_enabled;
		out.status = (char *)res.status;
		out.message = res.message;
		answer(&out.base);
	}
out:
	aggregator__notify_triggers_req__free_unpacked(in, NULL);
}

static void authorization(const uint8_t *data, size_t size, const char *address)
{
	char *token = fz_strndup(data, size);
	const char *claimed = address ? address : "not an address";
	ap_auth_result r = ap_auth_verify(token, claimed, FZ_NOW_S, 30);
	FZ_CHECK(r >= AP_AUTH_OK && r <= AP_AUTH_FUTURE);
	FZ_CHECK(strcmp(ap_auth_result_name(r), "unknown") != 0);
	/* Only the development key signed anything: a token that verifies
	 * can only be for its address. */
	FZ_CHECK(r != AP_AUTH_OK || strcasecmp(claimed, FZ_OWNER) == 0);
	free(token);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned kind = data[0] % 7;
	const char *who = caller(data[0] / 7u);
	data++;
	size--;
	switch (kind) {
	case 0: health_check(data, size); break;
	case 1: ping(data, size); break;
	case 2: sync_messages(data, size); break;
	case 3: ack(data, size, who); break;
	case 4: notify_triggers(data, size); break;
	case 5: authorization(data, size, who); break;
	default: grpc_health_check(data, size); break;
	}
	/* The owner's transport sends whatever the request caused. */
	fz_drain(fz_owner_session());
	return 0;
}
