/* Stored record encoding (SPEC section 4: "versioned records").
 *
 * A stored value is one version byte followed by a packed protobuf-c message
 * from proto/store.proto. Decoding rejects an unknown version with
 * AP_EVERSION and a malformed body with AP_EINVAL, never crashes on any
 * input (fuzzed in issue 7), and never returns a half-decoded record.
 * Returned buffers and messages belong to the caller: free buffers with
 * free(), messages with the matching ap_record_free_*. Thread-safe. */
#ifndef AP_RECORD_H
#define AP_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "store.pb-c.h"

#define AP_RECORD_VERSION 1

/* Pack any store.proto message behind the version byte. 0, AP_ENOMEM, or
 * AP_EINVAL for a NULL argument. *out is malloc'd (caller frees). */
int ap_record_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *len);

/* Decode a stored value: 0 and a new message in *out; AP_EINVAL for an
 * empty buffer or a body that does not decode; AP_EVERSION for a version
 * byte other than AP_RECORD_VERSION. On error *out is NULL. The free
 * functions accept NULL. */
int ap_record_unpack_task(const void *buf, size_t len, Apstore__TaskRecord **out);
int ap_record_unpack_assignment(const void *buf, size_t len,
				Apstore__AssignmentRecord **out);
int ap_record_unpack_operator(const void *buf, size_t len,
			      Apstore__OperatorRecord **out);
void ap_record_free_task(Apstore__TaskRecord *r);
void ap_record_free_assignment(Apstore__AssignmentRecord *r);
void ap_record_free_operator(Apstore__OperatorRecord *r);

#endif
