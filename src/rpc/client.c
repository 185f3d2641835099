/* Client channels and unary calls over the gRPC core C API.
 *
 * A unary call is one grpc_call with its own NEXT completion queue and one
 * batch of all six operations (send initial metadata, message and
 * half-close; receive initial metadata, message and status). The call's
 * deadline bounds the wait; the queue wait gets a few seconds more and, if
 * that ever passes, cancels the call and waits for the batch to finish,
 * because every started tag must be collected before the queue is
 * destroyed. A queue per call costs a few hundred bytes and keeps
 * concurrent calls on one channel independent (no shared pluck queue, so
 * no limit of six pluckers).
 *
 * TLS: a channel is plaintext unless the options name a CA file; then it
 * uses gRPC's SSL credentials with exactly that CA (plus a client
 * certificate for mutual TLS), read at open so that a wrong path is an
 * error the caller sees at once rather than a handshake that fails on
 * every call. The private key's copy is wiped once gRPC has its own.
 *
 * No locks: a channel is thread-safe in gRPC, and everything else a call
 * touches lives on the calling thread's stack. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include "ap/pb.h"
#include "ap/error.h"
#include "ap/grpc_runtime.h"
#include "client_int.h"

/* The interface's status codes must be gRPC's. */
_Static_assert((int)AP_RPC_OK == (int)GRPC_STATUS_OK, "status codes");
_Static_assert((int)AP_RPC_CANCELLED == (int)GRPC_STATUS_CANCELLED, "status codes");
_Static_assert((int)AP_RPC_INVALID_ARGUMENT == (int)GRPC_STATUS_INVALID_ARGUMENT, "status codes");
_Static_assert((int)AP_RPC_PERMISSION_DENIED == (int)GRPC_STATUS_PERMISSION_DENIED, "status codes");
_Static_assert((int)AP_RPC_RESOURCE_EXHAUSTED == (int)GRPC_STATUS_RESOURCE_EXHAUSTED, "status codes");
_Static_assert((int)AP_RPC_ABORTED == (int)GRPC_STATUS_ABORTED, "status codes");
_Static_assert((int)AP_RPC_UNAVAILABLE == (int)GRPC_STATUS_UNAVAILABLE, "status codes");
_Static_assert((int)AP_RPC_UNAUTHENTICATED == (int)GRPC_STATUS_UNAUTHENTICATED, "status codes");

/* How much longer than the call's own deadline the queue wait may last
 * before the call is cancelled from this side. */
#define QUEUE_GRACE_MS 5000

static const char *const code_names[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *ap_rpc_code_name(int code)
{
	if (code < 0 || code >= (int)(sizeof code_names / sizeof code_names[0]))
		return "?";
	return code_names[code];
}

/* ---- shared helpers (client_int.h) ---------------------------------------- */

gpr_timespec ap_client_deadline(int64_t timeout_ms)
{
	if (timeout_ms < 0)
		return gpr_inf_future(GPR_CLOCK_MONOTONIC);
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
			    gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

int ap_client_md_build(const ap_rpc_metadata *a, size_t na,
		    const ap_rpc_metadata *b, size_t nb,
		    grpc_metadata **out, size_t *n_out)
{
	size_t n = na + nb;
	*out = NULL;
	*n_out = 0;
	if (n == 0)
		return 0;
	grpc_metadata *md = calloc(n, sizeof *md);
	if (!md)
		return AP_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const ap_rpc_metadata *e = i < na ? &a[i] : &b[i - na];
		if (!e->key || !e->value) {
			ap_client_md_free(md, i);
			return AP_EINVAL;
		}
		md[i].key = grpc_slice_from_copied_string(e->key);
		md[i].value = grpc_slice_from_copied_string(e->value);
	}
	*out = md;
	*n_out = n;
	return 0;
}

void ap_client_md_free(grpc_metadata *md, size_t n)
{
	if (!md)
		return;
	for (size_t i = 0; i < n; i++) {
		grpc_slice_unref(md[i].key);
		grpc_slice_unref(md[i].value);
	}
	free(md);
}

uint32_t ap_client_md_flags(const ap_call_options *o)
{
	if (o && o->wait_for_ready)
		return GRPC_INITIAL_METADATA_WAIT_FOR_READY |
		       GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
	return 0;
}

grpc_byte_buffer *ap_client_buffer_from(const void *data, size_t len)
{
	grpc_slice slice = grpc_slice_from_copied_buffer(data, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	return bb;
}

grpc_byte_buffer *ap_client_buffer_pack(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	grpc_slice slice = grpc_slice_malloc(len);
	protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(slice));
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	return bb;
}

ProtobufCMessage *ap_client_buffer_unpack(grpc_byte_buffer *bb,
				       const ProtobufCMessageDescriptor *d)
{
	grpc_byte_buffer_reader reader;
	if (!grpc_byte_buffer_reader_init(&reader, bb))
		return NULL;
	grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
	grpc_byte_buffer_reader_destroy(&reader);
	ProtobufCMessage *m = ap_pb_unpack(d, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
	grpc_slice_unref(all);
	return m;
}

void ap_client_status_set(ap_rpc_status *st, grpc_status_code code,
		       const grpc_slice *details)
{
	st->code = (int)code;
	size_t len = details ? GRPC_SLICE_LENGTH(*details) : 0;
	if (len >= sizeof st->details)
		len = sizeof st->details - 1;
	if (len)
		memcpy(st->details, GRPC_SLICE_START_PTR(*details), len);
	st->details[len] = '\0';
}

void ap_client_status_local(ap_rpc_status *st, int code, const char *details)
{
	st->code = code;
	snprintf(st->details, sizeof st->details, "%s", details);
}

/* ---- channels ------------------------------------------------------------- */

void ap_client_init(void)
{
	ap_grpc_init();
}

void ap_client_shutdown(void)
{
	grpc_shutdown();
}

static void set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
}

static int add_int_arg(grpc_arg *args, size_t *n, char *key, int64_t value)
{
	if (value < 0 || value > INT_MAX)
		return AP_EINVAL;
	args[*n].type = GRPC_ARG_INTEGER;
	args[*n].key = key;
	args[*n].value.integer = (int)value;
	(*n)++;
	return 0;
}

static bool is_set(const char *s)
{
	return s && s[0];
}

/* The whole of a PEM file as a string (caller frees), or NULL with the
 * reason in err. A file without a PEM block is refused here, because gRPC
 * would only say so in its own log and fail every handshake. */
static char *read_pem(const char *what, const char *path, char *err, size_t errlen)
{
	char msg[512];
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0;
	if (!f) {
		snprintf(msg, sizeof msg, "cannot open %s %s: %s", what, path, strerror(errno));
		goto fail;
	}
	for (;;) {
		if (cap - len < 4097) {
			if (cap > (1u << 24)) {
				snprintf(msg, sizeof msg, "%s %s is larger than 16 MiB", what, path);
				goto fail;
			}
			size_t bigger_cap = cap ? 2 * cap : 8192;
			char *bigger = realloc(buf, bigger_cap);
			if (!bigger) {
				snprintf(msg, sizeof msg, "out of memory");
				goto fail;
			}
			buf = bigger;
			cap = bigger_cap;
		}
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		snprintf(msg, sizeof msg, "cannot read %s %s", what, path);
		goto fail;
	}
	buf[len] = '\0';
	if (!strstr(buf, "-----BEGIN ")) {
		snprintf(msg, sizeof msg, "%s %s holds no PEM block", what, path);
		goto fail;
	}
	fclose(f);
	return buf;
fail:
	set_err(err, errlen, msg);
	if (buf) {
		explicit_bzero(buf, cap);
		free(buf);
	}
	if (f)
		fclose(f);
	return NULL;
}

static void free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* Plaintext credentials, or TLS ones from the options' PEM files (gRPC
 * copies the PEM strings). NULL with err set when a file is unusable. */
static grpc_channel_credentials *channel_credentials(const ap_client_options *o,
						     char *err, size_t errlen)
{
	if (!is_set(o->tls_ca_file))
		return grpc_insecure_credentials_create();
	grpc_channel_credentials *creds = NULL;
	char *ca = read_pem("tls CA file", o->tls_ca_file, err, errlen);
	char *cert = NULL, *key = NULL;
	if (!ca)
		goto out;
	if (is_set(o->tls_cert_file)) {
		if (!(cert = read_pem("tls certificate file", o->tls_cert_file, err, errlen)) ||
		    !(key = read_pem("tls key file", o->tls_key_file, err, errlen)))
			goto out;
	}
	grpc_ssl_pem_key_cert_pair pair = { key, cert };
	creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
	if (!creds)
		set_err(err, errlen, "grpc_ssl_credentials_create failed");
out:
	free(ca);
	free(cert);
	free_secret(key);
	return creds;
}

int ap_client_open(const char *target, const ap_client_options *options,
		   ap_client **out, char *err, size_t errlen)
{
	static const ap_client_options defaults = { 0 };
	const ap_client_options *o = options ? options : &defaults;
	grpc_arg args[10];
	size_t n = 0;
	int rc = 0;

	*out = NULL;
	if (!target || !*target) {
		set_err(err, errlen, "empty target");
		return AP_EINVAL;
	}
	if (is_set(o->tls_cert_file) != is_set(o->tls_key_file)) {
		set_err(err, errlen, "a TLS client certificate needs its key, and a key its certificate");
		return AP_EINVAL;
	}
	if (!is_set(o->tls_ca_file) && (is_set(o->tls_cert_file) || is_set(o->tls_server_name))) {
		set_err(err, errlen, "TLS options need tls_ca_file");
		return AP_EINVAL;
	}
	if (is_set(o->tls_server_name)) {
		args[n].type = GRPC_ARG_STRING;
		args[n].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
		args[n].value.string = (char *)o->tls_server_name;
		n++;
	}
	if (!o->shared_connection)
		rc |= add_int_arg(args, &n, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
	if (o->keepalive_time_ms > 0) {
		rc |= add_int_arg(args, &n, GRPC_ARG_KEEPALIVE_TIME_MS, o->keepalive_time_ms);
		if (o->keepalive_timeout_ms > 0)
			rc |= add_int_arg(args, &n, GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
					  o->keepalive_timeout_ms);
	}
	if (o->max_receive_message_bytes > 0)
		rc |= add_int_arg(args, &n, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
				  o->max_receive_message_bytes);
	if (o->reconnect_backoff_ms > 0) {
		rc |= add_int_arg(args, &n, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
				  o->reconnect_backoff_ms);
		rc |= add_int_arg(args, &n, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
				  o->reconnect_backoff_ms);
	}
	if (o->max_reconnect_backoff_ms > 0)
		rc |= add_int_arg(args, &n, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
				  o->max_reconnect_backoff_ms);
	if (rc) {
		set_err(err, errlen, "an option is out of range (0 .. INT_MAX ms/bytes)");
		return AP_EINVAL;
	}

	ap_client *c = calloc(1, sizeof *c);
	if (!c || !(c->target = strdup(target))) {
		free(c);
		set_err(err, errlen, "out of memory");
		return AP_ENOMEM;
	}
	ap_grpc_init();
	grpc_channel_args chargs = { .num_args = n, .args = args };
	grpc_channel_credentials *creds = channel_credentials(o, err, errlen);
	if (!creds) {
		ap_client_close(c);
		return AP_EINVAL;
	}
	c->channel = grpc_channel_create(target, creds, &chargs);
	grpc_channel_credentials_release(creds);
	/* gRPC returns a "lame" channel for a target it cannot parse; calls on
	 * it fail with UNAVAILABLE, which is how the caller will learn. */
	if (!c->channel) {
		ap_client_close(c);
		set_err(err, errlen, "grpc_channel_create failed");
		return AP_EINVAL;
	}
	*out = c;
	return 0;
}

void ap_client_close(ap_client *c)
{
	if (!c)
		return;
	if (c->channel) {
		grpc_channel_destroy(c->channel);
		c->channel = NULL;
	}
	free(c->target);
	free(c);
	grpc_shutdown();
}

const char *ap_client_target(const ap_client *c)
{
	return c->target;
}

void ap_client_free(void *message)
{
	if (message)
		protobuf_c_message_free_unpacked(message, NULL);
}

/* ---- unary calls ---------------------------------------------------------- */

/* Run one unary call with request buffer `send` (not freed here). On 0,
 * *st holds the status and *recv the response buffer when the status is
 * OK and the server sent one (the caller destroys it). */
static int unary(ap_client *c, const char *method, grpc_byte_buffer *send,
		 const ap_rpc_metadata *extra, size_t n_extra,
		 const ap_call_options *o, grpc_byte_buffer **recv,
		 ap_rpc_status *st)
{
	grpc_metadata *md = NULL;
	size_t n_md = 0;
	grpc_metadata_array initial_md, trailing_md;
	grpc_status_code code = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	grpc_byte_buffer *response = NULL;
	int64_t timeout_ms = o && o->timeout_ms ? o->timeout_ms : AP_CLIENT_UNARY_TIMEOUT_MS;
	int rc;

	*recv = NULL;
	if (!c || !method || !send)
		return AP_EINVAL;
	rc = ap_client_md_build(o ? o->metadata : NULL, o ? o->n_metadata : 0,
			     extra, n_extra, &md, &n_md);
	if (rc)
		return rc;
	grpc_metadata_array_init(&initial_md);
	grpc_metadata_array_init(&trailing_md);

	grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
	grpc_slice method_slice = grpc_slice_from_copied_string(method);
	grpc_call *call = grpc_channel_create_call(c->channel, NULL,
		GRPC_PROPAGATE_DEFAULTS, cq, method_slice, NULL,
		ap_client_deadline(timeout_ms), NULL);
	grpc_slice_unref(method_slice);

	grpc_op ops[6];
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].flags = ap_client_md_flags(o);
	ops[0].data.send_initial_metadata.count = n_md;
	ops[0].data.send_initial_metadata.metadata = md;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &response;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
	ops[5].data.recv_status_on_client.status = &code;
	ops[5].data.recv_status_on_client.status_details = &details;

	grpc_call_error ce = grpc_call_start_batch(call, ops, 6, ops, NULL);
	if (ce != GRPC_CALL_OK) {
		/* Nothing was started: a metadata key gRPC refuses, usually. */
		rc = AP_EINVAL;
		goto out;
	}
	gpr_timespec wait = timeout_ms < 0
		? gpr_inf_future(GPR_CLOCK_MONOTONIC)
		: ap_client_deadline(timeout_ms + QUEUE_GRACE_MS);
	grpc_event ev = grpc_completion_queue_next(cq, wait, NULL);
	if (ev.type == GRPC_QUEUE_TIMEOUT) {
		grpc_call_cancel(call, NULL);
		ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
	}
	AP_ASSERT(ev.type == GRPC_OP_COMPLETE && ev.tag == ops);
	ap_client_status_set(st, code, &details);
	if (code == GRPC_STATUS_OK) {
		if (response) {
			*recv = response;
			response = NULL;
		}
	}
out:
	grpc_call_unref(call);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
					  NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	if (response)
		grpc_byte_buffer_destroy(response);
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&initial_md);
	grpc_metadata_array_destroy(&trailing_md);
	ap_client_md_free(md, n_md);
	return rc;
}

int ap_client_call_message(ap_client *c, const char *method,
			const ProtobufCMessage *req,
			const ProtobufCMessageDescriptor *resp_descriptor,
			ProtobufCMessage **resp, const ap_rpc_metadata *extra,
			size_t n_extra, const ap_call_options *o,
			ap_rpc_status *st)
{
	grpc_byte_buffer *recv = NULL;

	*resp = NULL;
	if (!req || !resp_descriptor)
		return AP_EINVAL;
	grpc_byte_buffer *send = ap_client_buffer_pack(req);
	if (!send)
		return AP_ENOMEM;
	int rc = unary(c, method, send, extra, n_extra, o, &recv, st);
	grpc_byte_buffer_destroy(send);
	if (rc)
		return rc;
	if (st->code != AP_RPC_OK)
		return 0;
	if (!recv) {
		ap_client_status_local(st, AP_RPC_INTERNAL,
				    "client: OK status without a response message");
		return 0;
	}
	*resp = ap_client_buffer_unpack(recv, resp_descriptor);
	grpc_byte_buffer_destroy(recv);
	if (!*resp) {
		char detail[AP_RPC_DETAILS_MAX];
		snprintf(detail, sizeof detail, "client: cannot decode %s",
			 resp_descriptor->name);
		ap_client_status_local(st, AP_RPC_INTERNAL, detail);
	}
	return 0;
}

int ap_client_call(ap_client *c, const char *method,
		   const ProtobufCMessage *req,
		   const ProtobufCMessageDescriptor *resp_descriptor,
		   ProtobufCMessage **resp, const ap_call_options *o,
		   ap_rpc_status *st)
{
	return ap_client_call_message(c, method, req, resp_descriptor, resp, NULL, 0, o, st);
}

int ap_client_call_raw(ap_client *c, const char *method, const void *req,
		       size_t req_len, void **resp, size_t *resp_len,
		       const ap_call_options *o, ap_rpc_status *st)
{
	grpc_byte_buffer *recv = NULL;

	if (resp)
		*resp = NULL;
	if (resp_len)
		*resp_len = 0;
	if (!req && req_len)
		return AP_EINVAL;
	grpc_byte_buffer *send = ap_client_buffer_from(req, req_len);
	if (!send)
		return AP_ENOMEM;
	int rc = unary(c, method, send, NULL, 0, o, &recv, st);
	grpc_byte_buffer_destroy(send);
	if (rc || !recv)
		return rc;
	if (resp) {
		grpc_byte_buffer_reader reader;
		if (grpc_byte_buffer_reader_init(&reader, recv)) {
			grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
			grpc_byte_buffer_reader_destroy(&reader);
			size_t len = GRPC_SLICE_LENGTH(all);
			if (len && (*resp = malloc(len)) != NULL) {
				memcpy(*resp, GRPC_SLICE_START_PTR(all), len);
				if (resp_len)
					*resp_len = len;
			} else if (len) {
				rc = AP_ENOMEM;
			}
			grpc_slice_unref(all);
		}
	}
	grpc_byte_buffer_destroy(recv);
	return rc;
}
