/* The transport's life cycle: gRPC init, the operator and admin servers,
 * their listeners, start, the shutdown order, close (see include/ap/rpc.h).
 *
 * Two grpc_server objects, because the two services must not share a
 * listener: the operator server (aggregator.Node, grpc.health.v1.Health)
 * on `listen`, optionally with TLS, and the admin server (aggregator.Admin)
 * on `admin_listen`, a unix socket by default. Both get the same channel
 * arguments: keepalive (a peer that vanishes without a FIN is cut after
 * keepalive_time_ms + keepalive_timeout_ms), tolerance for clients' own
 * keepalive pings on idle streams, no SO_REUSEPORT (a second daemon on the
 * same port must fail, not share it), and max_message_bytes.
 *
 * Shutdown order (STYLE.md, and the order that ran clean under valgrind and
 * ASan in ../shared/notes/grpc-core.md): stop accepting
 * (grpc_server_shutdown_and_notify), health NOT_SERVING, ap_engine_stop
 * (tokens cancelled with AP_REASON_SHUTDOWN: every stream ends itself with
 * UNAVAILABLE "aggregator shutting down"), give them half the budget, then
 * grpc_server_cancel_all_calls for whatever is left, wait for every stream
 * thread, join the acceptors (they return once the shutdown tag and every
 * outstanding request have come back), stop the workers. The caller then
 * closes the engine, and ap_rpc_server_close destroys the servers and shuts
 * gRPC down. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_security.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/grpc_runtime.h"
#include "ap/log.h"
#include "rpc_int.h"

enum { HANDSHAKE_TIMEOUT_MS = 10000 };

static int clamp_int(int64_t v)
{
	return v > INT_MAX ? INT_MAX : (int)v;
}

static grpc_arg int_arg(const char *key, int value)
{
	grpc_arg a;
	memset(&a, 0, sizeof a);
	a.type = GRPC_ARG_INTEGER;
	a.key = (char *)key;
	a.value.integer = value;
	return a;
}

static int side_create(rpc_side *side, const ap_config *cfg, char *err, size_t errlen)
{
	const ap_config *c = cfg;
	grpc_arg args[] = {
		int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, clamp_int(c->operators.keepalive_time_ms)),
		int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, clamp_int(c->operators.keepalive_timeout_ms)),
		int_arg(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1),
		/* Our keepalive pings go out on idle streams too (no data for
		 * hours is normal): no cap on pings without data. */
		int_arg(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0),
		/* Clients' keepalive pings (Go operators ping every 10 s or more)
		 * are never punished with GOAWAY "too_many_pings". */
		int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000),
		int_arg(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0),
		int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, clamp_int(c->max_message_bytes)),
		int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0),
		/* A connection that has not finished its HTTP/2 (and TLS)
		 * handshake in 10 s is dropped, not kept for gRPC's default
		 * 120 s: a client that connects and says nothing, or a backlog
		 * left by a reconnect storm, should not hold descriptors. */
		int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS),
	};
	grpc_channel_args ca = { sizeof args / sizeof args[0], args };
	side->server = grpc_server_create(&ca, NULL);
	side->cq = grpc_completion_queue_create_for_next(NULL);
	if (!side->server || !side->cq) {
		snprintf(err, errlen, "cannot create the %s gRPC server", side->name);
		return AP_ENOMEM;
	}
	grpc_server_register_completion_queue(side->server, side->cq, NULL);
	AP_ASSERT(side->n_methods <= RPC_MAX_METHODS);
	for (size_t i = 0; i < side->n_methods; i++) {
		side->handles[i] = grpc_server_register_method(side->server, side->methods[i].path,
							       NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
		if (!side->handles[i]) {
			snprintf(err, errlen, "cannot register %s", side->methods[i].path);
			return AP_EINVAL;
		}
	}
	return 0;
}

static char *read_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	if (!f)
		goto fail;
	if (fseek(f, 0, SEEK_END) != 0)
		goto fail;
	long n = ftell(f);
	if (n < 0 || fseek(f, 0, SEEK_SET) != 0 || !(buf = malloc((size_t)n + 1)))
		goto fail;
	if (fread(buf, 1, (size_t)n, f) != (size_t)n)
		goto fail;
	buf[n] = '\0';
	fclose(f);
	return buf;
fail:
	snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno ? errno : EIO));
	free(buf);
	if (f)
		fclose(f);
	return NULL;
}

/* Plaintext, or TLS (mutual when tls.client_ca_file is set). */
static grpc_server_credentials *node_credentials(const ap_config *cfg, char *err, size_t errlen)
{
	if (!cfg->tls.cert_file[0])
		return grpc_insecure_server_credentials_create();
	grpc_server_credentials *creds = NULL;
	char *cert = read_file(cfg->tls.cert_file, err, errlen);
	char *key = cert ? read_file(cfg->tls.key_file, err, errlen) : NULL;
	char *ca = NULL;
	if (key && cfg->tls.client_ca_file[0])
		ca = read_file(cfg->tls.client_ca_file, err, errlen);
	if (key && (ca || !cfg->tls.client_ca_file[0])) {
		grpc_ssl_pem_key_cert_pair pair = { key, cert };
		creds = grpc_ssl_server_credentials_create_ex(
			ca, &pair, 1,
			ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
			   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
			NULL);
		if (!creds)
			snprintf(err, errlen, "cannot use the TLS certificate %s and key %s",
				 cfg->tls.cert_file, cfg->tls.key_file);
	}
	free(cert);
	if (key)
		memset(key, 0, strlen(key));
	free(key);
	free(ca);
	return creds;
}

/* The path of a "unix:PATH" or "unix://PATH" address. */
static const char *unix_path(const char *address)
{
	if (strncmp(address, "unix://", 7) == 0)
		return address + 7;
	return address + 5;
}

/* Make room for the admin socket: its directory exists (created 0700 when
 * missing), a stale socket left by a crash is removed, a live one (another
 * daemon) or a file that is not a socket is an error. */
static int prepare_unix_socket(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	if (strlen(path) >= sizeof sun.sun_path || !path[0]) {
		snprintf(err, errlen, "admin socket path '%s' is empty or too long", path);
		return AP_EINVAL;
	}
	char dir[sizeof sun.sun_path];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s for the admin socket: %s", dir,
				 strerror(errno));
			return AP_EIO;
		}
	}
	struct stat sb;
	if (lstat(path, &sb) != 0)
		return 0;
	if (!S_ISSOCK(sb.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", path);
		return AP_EIO;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path));
	bool live = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
	if (fd >= 0)
		close(fd);
	if (live) {
		snprintf(err, errlen, "admin socket %s is in use by another process", path);
		return AP_EIO;
	}
	unlink(path);
	return 0;
}

static int bind_admin(ap_rpc_server *srv, char *err, size_t errlen)
{
	const ap_config *cfg = srv->cfg;
	grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
	int port;
	if (strncmp(cfg->admin_listen, "unix:", 5) == 0) {
		const char *path = unix_path(cfg->admin_listen);
		int rc = prepare_unix_socket(path, err, errlen);
		if (rc) {
			grpc_server_credentials_release(creds);
			return rc;
		}
		if (!(srv->admin_socket = strdup(path))) {
			grpc_server_credentials_release(creds);
			return AP_ENOMEM;
		}
		/* gRPC binds in this thread: the umask makes the socket 0600 from
		 * its creation, so it is never reachable by others, not even for
		 * the moment before the chmod. */
		mode_t old = umask(0077);
		port = grpc_server_add_http2_port(srv->admin.server, cfg->admin_listen, creds);
		umask(old);
		if (port && chmod(path, 0600) != 0) {
			snprintf(err, errlen, "cannot chmod the admin socket %s: %s", path,
				 strerror(errno));
			grpc_server_credentials_release(creds);
			return AP_EIO;
		}
	} else {
		size_t n = strlen(cfg->admin.token) + 8;
		if (!(srv->admin.bearer = malloc(n))) {
			grpc_server_credentials_release(creds);
			return AP_ENOMEM;
		}
		snprintf(srv->admin.bearer, n, "Bearer %s", cfg->admin.token);
		port = grpc_server_add_http2_port(srv->admin.server, cfg->admin_listen, creds);
	}
	grpc_server_credentials_release(creds);
	if (!port) {
		snprintf(err, errlen, "cannot listen on admin_listen '%s'", cfg->admin_listen);
		return AP_EIO;
	}
	AP_INFO("🔧 Admin service listening", AP_F_STR("address", cfg->admin_listen),
		AP_F_INT("port", srv->admin_socket ? 0 : port));
	return 0;
}

int ap_rpc_server_open(ap_rpc_server **out, ap_engine *engine, const ap_config *cfg,
		       char *err, size_t errlen)
{
	*out = NULL;
	ap_rpc_server *srv = calloc(1, sizeof *srv);
	if (!srv) {
		snprintf(err, errlen, "out of memory");
		return AP_ENOMEM;
	}
	srv->engine = engine;
	srv->cfg = cfg;
	atomic_init(&srv->health, RPC_STARTING);
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->work_cond, NULL);
	ap_clock_cond_init(&srv->streams_cond);
	srv->node = (rpc_side){ .srv = srv, .name = "operator", .methods = rpc_node_methods,
				.n_methods = rpc_node_n_methods };
	srv->admin = (rpc_side){ .srv = srv, .name = "admin", .methods = rpc_admin_methods,
				 .n_methods = rpc_admin_n_methods };
	atomic_init(&srv->node.stopping, false);
	atomic_init(&srv->admin.stopping, false);

	ap_grpc_init();
	srv->grpc_inited = true;
	int rc = side_create(&srv->node, cfg, err, errlen);
	if (rc == 0)
		rc = side_create(&srv->admin, cfg, err, errlen);
	if (rc)
		goto fail;

	grpc_server_credentials *creds = node_credentials(cfg, err, errlen);
	if (!creds) {
		rc = AP_EIO;
		goto fail;
	}
	srv->port = grpc_server_add_http2_port(srv->node.server, cfg->listen, creds);
	grpc_server_credentials_release(creds);
	if (!srv->port) {
		snprintf(err, errlen, "cannot listen on '%s' (address in use or invalid?)",
			 cfg->listen);
		rc = AP_EIO;
		goto fail;
	}
	rc = bind_admin(srv, err, errlen);
	if (rc)
		goto fail;
	AP_INFO("📡 Operator service listening", AP_F_STR("address", cfg->listen),
		AP_F_INT("port", srv->port), AP_F_BOOL("tls", cfg->tls.cert_file[0] != '\0'),
		AP_F_BOOL("mutual_tls", cfg->tls.client_ca_file[0] != '\0'));
	if (cfg->auth.mode == AP_AUTH_NONE)
		AP_WARN("⚠️ authentication disabled: auth.mode is \"none\", any client may act as any approved operator");
	*out = srv;
	return 0;
fail:
	ap_rpc_server_close(srv);
	return rc;
}

int ap_rpc_server_start(ap_rpc_server *srv, char *err, size_t errlen)
{
	if (rpc_workers_start(srv) != 0) {
		snprintf(err, errlen, "cannot start the rpc worker threads");
		return AP_ENOMEM;
	}
	rpc_side *sides[] = { &srv->node, &srv->admin };
	for (size_t i = 0; i < 2; i++) {
		rpc_side *side = sides[i];
		grpc_server_start(side->server);
		srv->started = true;
		if (rpc_side_request_all(side) != 0) {
			snprintf(err, errlen, "cannot request calls on the %s server", side->name);
			return AP_EIO;
		}
		if (pthread_create(&side->acceptor, NULL, rpc_acceptor_main, side) != 0) {
			snprintf(err, errlen, "cannot start the %s acceptor thread", side->name);
			return AP_ENOMEM;
		}
		side->acceptor_running = true;
	}
	return 0;
}

void ap_rpc_server_ready(ap_rpc_server *srv)
{
	int expected = RPC_STARTING;
	atomic_compare_exchange_strong(&srv->health, &expected, RPC_SERVING);
}

int ap_rpc_server_port(const ap_rpc_server *srv)
{
	return srv->port;
}

/* pthread_join bounded by a monotonic deadline. */
static bool join_until(pthread_t t, int64_t deadline_ns)
{
	int64_t left = deadline_ns - ap_clock_mono_ns();
	if (left < 0)
		left = 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t ns = ts.tv_nsec + left % 1000000000;
	ts.tv_sec += (time_t)(left / 1000000000 + ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

int ap_rpc_server_stop(ap_rpc_server *srv, int64_t timeout_ms)
{
	if (srv->stopped)
		return 0;
	int64_t t0 = ap_clock_mono_ns();
	int64_t deadline = t0 + timeout_ms * 1000000;
	rpc_side *sides[] = { &srv->node, &srv->admin };

	/* 1. Stop accepting; calls already accepted carry on. */
	for (size_t i = 0; i < 2; i++) {
		atomic_store(&sides[i]->stopping, true);
		if (srv->started && sides[i]->server && !sides[i]->shutdown_requested) {
			grpc_server_shutdown_and_notify(sides[i]->server, sides[i]->cq,
							&sides[i]->shutdown_tag);
			sides[i]->shutdown_requested = true;
		}
	}
	/* 2. Health checks say NOT_SERVING / STOPPING. */
	atomic_store(&srv->health, RPC_STOPPING);
	AP_INFO("🛑 Shutting down: no new connections",
		AP_F_INT("timeout_ms", timeout_ms));
	/* 3. Every session's token is cancelled (AP_REASON_SHUTDOWN): streams
	 * end with UNAVAILABLE on their own. The engine's ticker stops too. */
	ap_engine_stop(srv->engine);
	rpc_streams_wait(srv, t0 + (deadline - t0) / 2);
	/* 4. Cut whatever is left (a stream stuck in a send, unary calls). */
	for (size_t i = 0; i < 2; i++)
		if (sides[i]->shutdown_requested)
			grpc_server_cancel_all_calls(sides[i]->server);
	/* 5. No thread may be inside the engine when it is closed. Sessions
	 * are released as soon as a stream ends, before its call drains. */
	if (!rpc_engine_close_gate(srv, deadline)) {
		AP_ERROR("shutdown timed out: the engine is still in use",
			 AP_F_INT("timeout_ms", timeout_ms));
		return AP_ESTATE;
	}
	/* 6. Wait for every thread. A connection whose peer stopped reading
	 * can hold a send until TCP gives up on it (TCP_USER_TIMEOUT, which
	 * gRPC sets to keepalive_timeout_ms); past the deadline it is left. */
	bool all = rpc_streams_wait(srv, deadline);
	for (size_t i = 0; i < 2; i++) {
		if (sides[i]->acceptor_running && join_until(sides[i]->acceptor, deadline))
			sides[i]->acceptor_running = false;
		all = all && !sides[i]->acceptor_running;
	}
	rpc_streams_reap(srv);
	pthread_mutex_lock(&srv->lock);
	srv->pool_stop = true;
	pthread_cond_broadcast(&srv->work_cond);
	size_t live = srv->live_streams;
	pthread_mutex_unlock(&srv->lock);
	/* Idle workers exit at once; give them a moment even when the
	 * deadline is already spent on a stalled stream. */
	int64_t workers_deadline = ap_clock_mono_ns() + 200000000;
	if (workers_deadline < deadline)
		workers_deadline = deadline;
	while (srv->n_workers > 0 && join_until(srv->workers[srv->n_workers - 1], workers_deadline))
		srv->n_workers--;
	all = all && srv->n_workers == 0;
	size_t lingering;
	while ((lingering = rpc_lingering_poll(srv)) > 0 && ap_clock_mono_ns() < deadline)
		usleep(10000);
	all = all && lingering == 0;
	if (!all) {
		AP_WARN("⚠️ Shutdown deadline passed with connections still draining",
			AP_F_UINT("streams", live), AP_F_INT("workers", srv->n_workers),
			AP_F_UINT("answers", lingering),
			AP_F_INT("timeout_ms", timeout_ms));
		return AP_ETIMEDOUT;
	}
	srv->stopped = true;
	AP_INFO("🛑 Transport stopped",
		AP_F_INT("elapsed_ms", (ap_clock_mono_ns() - t0) / 1000000));
	return 0;
}

/* Release one server: make sure shutdown has completed (a server that was
 * never started, or a stop that was not called), destroy it and its queue. */
static void side_close(rpc_side *side)
{
	AP_ASSERT(!side->acceptor_running);
	if (side->server && !side->shutdown_seen) {
		if (!side->shutdown_requested)
			grpc_server_shutdown_and_notify(side->server, side->cq, &side->shutdown_tag);
		grpc_server_cancel_all_calls(side->server);
		while (!side->shutdown_seen || side->outstanding > 0) {
			grpc_event ev = grpc_completion_queue_next(side->cq, rpc_deadline_ms(5000), NULL);
			if (ev.type != GRPC_OP_COMPLETE) {
				AP_ERROR("gRPC server did not shut down", AP_F_STR("server", side->name));
				break;
			}
			if (ev.tag == &side->shutdown_tag) {
				side->shutdown_seen = true;
			} else {
				side->outstanding--;
				rpc_call_free(ev.tag);
			}
		}
	}
	if (side->server)
		grpc_server_destroy(side->server);
	if (side->cq)
		rpc_cq_drain_destroy(side->cq);
	free(side->bearer);
}

void ap_rpc_server_close(ap_rpc_server *srv)
{
	if (!srv)
		return;
	if (srv->n_workers)
		rpc_workers_stop(srv);
	side_close(&srv->node);
	side_close(&srv->admin);
	if (srv->grpc_inited)
		grpc_shutdown();
	/* gRPC leaves the socket file behind. */
	if (srv->admin_socket) {
		struct stat sb;
		if (lstat(srv->admin_socket, &sb) == 0 && S_ISSOCK(sb.st_mode))
			unlink(srv->admin_socket);
		free(srv->admin_socket);
	}
	pthread_cond_destroy(&srv->streams_cond);
	pthread_cond_destroy(&srv->work_cond);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}
