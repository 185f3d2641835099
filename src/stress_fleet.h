/* Internals of the simulated operators, shared by src/stress_op.c (an
 * operator and its sessions) and src/stress_fleet.c (the driver threads,
 * snapshots, start and stop). Not an interface. See stress_op.c for the
 * design and the lock rules. */
#ifndef AP_STRESS_FLEET_H
#define AP_STRESS_FLEET_H

#include "stress_int.h"
#include "uthash.h"

#define REOPEN_BACKOFF_NS (50 * 1000000LL)
#define LOOP_WAIT_MS 20         /* longest wait in the mux: park/phase latency */
#define MAX_SESSIONS 3
#define STOP_DRAIN_MS 10000     /* bound on the streams' ends at stop */
/* See chan_close_or_bury in stress_op.c. */
#define CONNECT_MIN_NS (1000 * 1000000LL)
#define CONNECT_MAX_NS (30 * 1000000000LL)
#define GRAVEYARD_POLL_NS (20 * 1000000LL)
#define STALE_WINDOW_NS (10 * 1000000000LL) /* see on_end in stress_op.c */          /* more than this and the action is a clean close */

typedef struct set_item {
	UT_hash_handle hh;
	char id[];
} set_item;

/* Latency samples in ns, grown by their shard thread only. */
typedef struct st_samples {
	int64_t *v;
	size_t n, cap;
} st_samples;

typedef struct st_op st_op;
typedef struct st_shard st_shard;

/* One connection of an operator. Dropping it (a crash, or settling to
 * one connection) closes it once no stream opened on it is left and no
 * connection attempt can be in flight: gRPC would otherwise keep the
 * connection open until grpc_shutdown (about one crash in a hundred, see
 * ap_client_connecting), and the daemon's fd count would include it. */
typedef struct st_chan {
	ap_client *client;
	int streams;   /* opened on it, END not yet seen */
	bool dropped;  /* the operator let go of it */
	bool ready;    /* a stream on it was accepted: it is connected */
	int64_t close_min_ns, close_max_ns; /* in the graveyard */
	struct st_chan *next;  /* the graveyard */
} st_chan;

/* One SyncMessages stream of an operator, from open to its end. */
typedef struct st_session {
	st_op *op;
	struct st_session *next;  /* the operator's live sessions */
	ap_mstream *ms;
	uint64_t serial;          /* the operator's open count at its open */
	int channel;
	st_chan *chan;
	int phase;                /* the phase it was opened in */
	int64_t clock;            /* the MonotonicClock it sent */
	int64_t open_ns, first_task_ns;
	bool opened, closing;
	bool crashed;             /* given up in a crash: on the dying list */
	set_item *received;
	size_t n_received;
} st_session;

/* A simulated operator: touched by its shard thread only. */
struct st_op {
	st_shard *shard;
	int index;
	char address[43];
	uint8_t key[32];
	st_chan *chan[2];
	st_session *sessions;     /* live, newest first */
	st_session *dying;        /* crashed, cancelled, END not yet seen */
	int n_sessions, n_opened;
	uint64_t opens;
	int64_t clock;
	int64_t due_ns, reopen_ns; /* 0: none */
	bool reopen_after_close;
	bool deferred;             /* its due action waits for a --max-rate token */
	int64_t unconfirmed_ns;    /* last gave up on a session not yet accepted */
};

/* A driver thread with its completion queue and its operators. */
struct st_shard {
	st_fleet *fleet;
	int index;
	pthread_t thread;
	bool started;
	ap_mux *mux;
	st_op **ops;
	size_t n_ops;
	uint64_t rng;
	int phase;                 /* the last phase this shard acted on */
	int64_t token_ns;          /* --max-rate: ns per action (0: no cap) */
	int64_t token_time;        /* the bucket: next token's time, minus burst */
	int tokens_burst;
	atomic_bool park_req;
	pthread_mutex_t lock;      /* park, parked */
	pthread_cond_t cond;
	bool park, parked;
	st_samples first_task, failover;
	st_chan *graveyard;        /* dropped, never connected, closed later */
	int64_t graveyard_next_ns; /* its next check, 0: none */
};

/* What the ledger knows of a task (under st_fleet.ledger_lock). */
typedef struct ledger_entry {
	UT_hash_handle hh;
	int holder, killed_by;     /* operator indexes, -1: none */
	int64_t kill_ns;
	char id[];
} ledger_entry;

struct st_fleet {
	st_fleet_config cfg;
	const ap_stress_options *o;
	st_counters *c;
	atomic_int phase;
	int64_t stab_ns;           /* -1: unknown */
	ap_client_options copt;
	st_op *ops;
	int n_ops;
	st_shard *shards;
	int n_shards;
	pthread_mutex_t ledger_lock;
	ledger_entry *ledger;
};

#define ST_INC(f, field) atomic_fetch_add_explicit(&(f)->c->field, 1, memory_order_relaxed)

/* stress_fleet.c: channels, on the operator's shard thread. Open one (NULL
 * on failure); let go of the operator's channel i; close a dropped
 * channel once its last stream has ended (st_chan_release). */
st_chan *st_chan_open(st_fleet *f);
void st_chan_drop(st_op *op, int i);
void st_chan_release(st_shard *sh, st_chan *c);

/* stress_op.c, all on the operator's shard thread. */
void st_samples_add(st_samples *s, int64_t v);
/* Open a session of op on channel 0 or 1 (opened lazily). */
void st_op_open(st_shard *sh, st_op *op, int channel, int64_t now);
/* Draw the end of the newest session's hold time. */
void st_op_schedule(st_shard *sh, st_op *op, int64_t now);
/* The action at the end of a hold time: clean, crash or dup. */
void st_op_act(st_shard *sh, st_op *op, int64_t now);
void st_session_free(st_session *ss);
/* Drop the channels no live session of op uses (settle: one connection
 * per operator, as in the baseline). */
void st_op_trim_channels(st_op *op);
/* Close the graveyard's channels whose time has come (all: every one);
 * sets sh->graveyard_next_ns to the next. */
void st_shard_graveyard(st_shard *sh, int64_t now, bool all);
/* Stop: cancel every session and drop every channel (END follows). */
void st_op_shutdown(st_op *op);

#endif
