/* The operator registry (SPEC sections 1 and 3): address -> operator record.
 * It alone decides which session of an address is current.
 *
 * A record exists for every operator ever seen (loaded from the operators
 * database at start, all disconnected). Attaching a session gives the
 * address a new current generation and hands back the session it replaced,
 * which the caller cancels after releasing its own locks. Detaching only
 * happens for the current generation: a stale cleanup finds a newer
 * generation and changes nothing.
 *
 * Lock rule: `lock` (a private mutex) guards the whole map. It is a leaf:
 * nothing is called while it is held except session reference counting.
 * The engine calls the mutating functions with the engine lock held, so
 * attach/detach/ready are ordered with the assignment changes they cause;
 * is_current and the snapshots may be called from any thread. */
#ifndef AP_REGISTRY_H
#define AP_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ap/session.h"
#include "store.pb-c.h"

typedef struct ap_registry ap_registry;

/* A copy of one record, for listing and persistence. */
typedef struct ap_operator_info {
	char address[AP_ADDRESS_LEN + 1];
	bool connected;
	bool ready;
	uint64_t generation;     /* current or last session; 0 = none since start */
	int64_t monotonic_clock; /* the largest seen */
	int64_t connected_at_ms;
	int64_t disconnected_at_ms;
	uint64_t connects;       /* accepted sessions since this process started */
	uint64_t total_connects; /* including earlier runs (persisted) */
	uint64_t disconnects;
	bool has_capabilities, event_monitoring, block_monitoring, time_monitoring;
	int64_t chain_ids[16];   /* the first 16 announced chains */
	size_t n_chain_ids;
} ap_operator_info;

int ap_registry_open(ap_registry **out);
/* Drops the references to current sessions. NULL accepted. */
void ap_registry_close(ap_registry *reg);

/* Add a persisted operator, disconnected. */
int ap_registry_load(ap_registry *reg, const Apstore__OperatorRecord *r);

typedef struct ap_attach_result {
	ap_session *replaced;    /* previous current session (a reference), or NULL */
	bool known;              /* the address had a record */
	int64_t previous_clock;  /* the stored clock before this attach */
	int64_t last_connect_ms; /* before this attach; 0 = never */
} ap_attach_result;

/* Make `s` the current session of its address (takes a reference). */
int ap_registry_attach(ap_registry *reg, ap_session *s, int64_t now_ms,
		       ap_attach_result *res);
/* If `generation` is current for the address: mark it disconnected, drop
 * the session reference and return true. Otherwise change nothing. */
bool ap_registry_detach(ap_registry *reg, const char *address,
			uint64_t generation, int64_t now_ms);
bool ap_registry_set_ready(ap_registry *reg, const char *address,
			   uint64_t generation);
bool ap_registry_is_current(ap_registry *reg, const char *address,
			    uint64_t generation);
/* The current session of an address (a new reference) or NULL. */
ap_session *ap_registry_current(ap_registry *reg, const char *address);
size_t ap_registry_connected(ap_registry *reg);
bool ap_registry_get(ap_registry *reg, const char *address, ap_operator_info *out);
/* A malloc'd array of every record in address order; returns the count. */
size_t ap_registry_snapshot(ap_registry *reg, ap_operator_info **out);
/* Every current session (new references) in a malloc'd array. */
size_t ap_registry_sessions(ap_registry *reg, ap_session ***out);

#endif
