/* The operator registry: see include/ap/registry.h. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "ap/error.h"
#include "ap/registry.h"

typedef struct record {
	ap_operator_info info;
	ap_session *session; /* current session (a reference) or NULL */
	UT_hash_handle hh;
} record;

struct ap_registry {
	pthread_mutex_t lock;
	record *by_address;
	size_t connected;
};

int ap_registry_open(ap_registry **out)
{
	ap_registry *reg = calloc(1, sizeof *reg);
	if (!reg)
		return AP_ENOMEM;
	pthread_mutex_init(&reg->lock, NULL);
	*out = reg;
	return 0;
}

void ap_registry_close(ap_registry *reg)
{
	if (!reg)
		return;
	record *r, *tmp;
	HASH_ITER(hh, reg->by_address, r, tmp) {
		HASH_DEL(reg->by_address, r);
		ap_session_unref(r->session);
		free(r);
	}
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

static record *find_locked(ap_registry *reg, const char *address)
{
	record *r;
	HASH_FIND_STR(reg->by_address, address, r);
	return r;
}

static record *get_locked(ap_registry *reg, const char *address)
{
	record *r = find_locked(reg, address);
	if (r)
		return r;
	r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	snprintf(r->info.address, sizeof r->info.address, "%s", address);
	HASH_ADD_STR(reg->by_address, info.address, r);
	return r;
}

int ap_registry_load(ap_registry *reg, const Apstore__OperatorRecord *pr)
{
	int rc = 0;
	pthread_mutex_lock(&reg->lock);
	record *r = get_locked(reg, pr->address);
	if (!r) {
		rc = AP_ENOMEM;
		goto out;
	}
	ap_operator_info *i = &r->info;
	i->monotonic_clock = pr->monotonic_clock;
	i->connected_at_ms = pr->last_connect_ms;
	i->disconnected_at_ms = pr->last_disconnect_ms;
	i->total_connects = pr->connects;
	i->disconnects = pr->disconnects;
	i->has_capabilities = pr->has_capabilities;
	i->event_monitoring = pr->event_monitoring;
	i->block_monitoring = pr->block_monitoring;
	i->time_monitoring = pr->time_monitoring;
	i->n_chain_ids = pr->n_chain_ids < 16 ? pr->n_chain_ids : 16;
	if (i->n_chain_ids)
		memcpy(i->chain_ids, pr->chain_ids, i->n_chain_ids * sizeof i->chain_ids[0]);
out:
	pthread_mutex_unlock(&reg->lock);
	return rc;
}

int ap_registry_attach(ap_registry *reg, ap_session *s, int64_t now_ms,
		       ap_attach_result *res)
{
	memset(res, 0, sizeof *res);
	const char *address = ap_session_address(s);
	pthread_mutex_lock(&reg->lock);
	record *r = find_locked(reg, address);
	res->known = r != NULL;
	if (!r && !(r = get_locked(reg, address))) {
		pthread_mutex_unlock(&reg->lock);
		return AP_ENOMEM;
	}
	ap_operator_info *i = &r->info;
	res->replaced = r->session; /* the reference moves to the caller */
	res->previous_clock = i->monotonic_clock;
	res->last_connect_ms = i->connected_at_ms;
	r->session = ap_session_ref(s);
	if (!i->connected)
		reg->connected++;
	i->connected = true;
	i->ready = false;
	i->generation = ap_session_generation(s);
	if (ap_session_clock(s) > i->monotonic_clock)
		i->monotonic_clock = ap_session_clock(s);
	i->connected_at_ms = now_ms;
	i->connects++;
	i->total_connects++;
	pthread_mutex_unlock(&reg->lock);
	return 0;
}

bool ap_registry_detach(ap_registry *reg, const char *address,
			uint64_t generation, int64_t now_ms)
{
	ap_session *old = NULL;
	pthread_mutex_lock(&reg->lock);
	record *r = find_locked(reg, address);
	bool current = r && r->session && r->info.generation == generation;
	if (current) {
		old = r->session;
		r->session = NULL;
		r->info.connected = false;
		r->info.ready = false;
		r->info.disconnected_at_ms = now_ms;
		r->info.disconnects++;
		reg->connected--;
	}
	pthread_mutex_unlock(&reg->lock);
	ap_session_unref(old);
	return current;
}

bool ap_registry_set_ready(ap_registry *reg, const char *address, uint64_t generation)
{
	pthread_mutex_lock(&reg->lock);
	record *r = find_locked(reg, address);
	bool current = r && r->session && r->info.generation == generation;
	if (current)
		r->info.ready = true;
	pthread_mutex_unlock(&reg->lock);
	return current;
}

bool ap_registry_is_current(ap_registry *reg, const char *address, uint64_t generation)
{
	pthread_mutex_lock(&reg->lock);
	record *r = find_locked(reg, address);
	bool current = r && r->session && r->info.generation == generation;
	pthread_mutex_unlock(&reg->lock);
	return current;
}

ap_session *ap_registry_current(ap_registry *reg, const char *address)
{
	pthread_mutex_lock(&reg->lock);
	record *r = find_locked(reg, address);
	ap_session *s = r && r->session ? ap_session_ref(r->session) : NULL;
	pthread_mutex_unlock(&reg->lock);
	return s;
}

size_t ap_registry_connected(ap_registry *reg)
{
	pthread_mutex_lock(&reg->lock);
	size_t n = reg->connected;
	pthread_mutex_unlock(&reg->lock);
	return n;
}

bool ap_registry_get(ap_registry *reg, const char *address, ap_operator_info *out)
{
	pthread_mutex_lock(&reg->lock);
	record *r = find_locked(reg, address);
	if (r)
		*out = r->info;
	pthread_mutex_unlock(&reg->lock);
	return r != NULL;
}

static int by_address(const void *a, const void *b)
{
	return strcmp(((const ap_operator_info *)a)->address,
		      ((const ap_operator_info *)b)->address);
}

size_t ap_registry_snapshot(ap_registry *reg, ap_operator_info **out)
{
	pthread_mutex_lock(&reg->lock);
	size_t n = HASH_COUNT(reg->by_address);
	ap_operator_info *arr = n ? malloc(n * sizeof *arr) : NULL;
	size_t k = 0;
	if (arr) {
		record *r, *tmp;
		HASH_ITER(hh, reg->by_address, r, tmp) arr[k++] = r->info;
	}
	pthread_mutex_unlock(&reg->lock);
	if (arr)
		qsort(arr, k, sizeof *arr, by_address);
	*out = arr;
	return k;
}

size_t ap_registry_sessions(ap_registry *reg, ap_session ***out)
{
	pthread_mutex_lock(&reg->lock);
	ap_session **arr = reg->connected ? malloc(reg->connected * sizeof *arr) : NULL;
	size_t k = 0;
	if (arr) {
		record *r, *tmp;
		HASH_ITER(hh, reg->by_address, r, tmp) {
			if (r->session && k < reg->connected)
				arr[k++] = ap_session_ref(r->session);
		}
	}
	pthread_mutex_unlock(&reg->lock);
	*out = arr;
	return k;
}
