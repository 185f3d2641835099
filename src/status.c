/* Status of a database: the collector behind `ap status` and its two
 * printers. See include/ap/status.h for the counting rules.
 *
 * How it reads. Three scans in key order: tasks, then assignments, then
 * operators. Both the tasks and the assignments databases are keyed by
 * task id, so the ids of the enabled, non-manual tasks are kept in one
 * sorted array (the bytes in one arena: a million ULIDs cost about 50
 * MiB, not a hash node each) and each assignment finds its task by binary
 * search with BerkeleyDB's default B-tree order (memcmp, then the shorter
 * key first). Owners are counted in a small hash by address. Nothing
 * here takes a lock or keeps state between calls. */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include "ap/config.h"
#include "ap/error.h"
#include "ap/record.h"
#include "ap/status.h"
#include "ap/task.h"

/* ---- the ids of the tasks that can be owned --------------------------- */

typedef struct id_ref {
	size_t off; /* into idset.bytes */
	size_t len;
	bool owned; /* a counted assignment was seen */
} id_ref;

typedef struct idset {
	char *bytes;
	size_t used, cap;
	id_ref *refs;
	size_t n, cap_refs;
	bool unsorted; /* an id arrived out of key order (not expected) */
} idset;

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = n > 0 ? memcmp(a, b, n) : 0;
	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int idset_add(idset *s, const void *key, size_t klen)
{
	if (s->used + klen > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		while (cap < s->used + klen)
			cap *= 2;
		char *b = realloc(s->bytes, cap);
		if (b == NULL)
			return AP_ENOMEM;
		s->bytes = b;
		s->cap = cap;
	}
	if (s->n == s->cap_refs) {
		size_t cap = s->cap_refs ? s->cap_refs * 2 : 256;
		id_ref *r = realloc(s->refs, cap * sizeof *r);
		if (r == NULL)
			return AP_ENOMEM;
		s->refs = r;
		s->cap_refs = cap;
	}
	if (s->n > 0) {
		const id_ref *last = &s->refs[s->n - 1];
		if (key_cmp(s->bytes + last->off, last->len, key, klen) >= 0)
			s->unsorted = true;
	}
	if (klen > 0)
		memcpy(s->bytes + s->used, key, klen);
	s->refs[s->n++] = (id_ref){ .off = s->used, .len = klen };
	s->used += klen;
	return 0;
}

static int ref_cmp(const void *a, const void *b, void *arena)
{
	const id_ref *x = a, *y = b;
	const char *bytes = arena;
	return key_cmp(bytes + x->off, x->len, bytes + y->off, y->len);
}

/* Scans visit keys in order, so this is a check, not real work. */
static void idset_sort(idset *s)
{
	if (!s->unsorted)
		return;
	qsort_r(s->refs, s->n, sizeof *s->refs, ref_cmp, s->bytes);
	s->unsorted = false;
}

static id_ref *idset_find(idset *s, const void *key, size_t klen)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		id_ref *r = &s->refs[mid];
		int c = key_cmp(s->bytes + r->off, r->len, key, klen);
		if (c == 0)
			return r;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static void idset_free(idset *s)
{
	free(s->bytes);
	free(s->refs);
}

/* ---- owners ------------------------------------------------------------- */

typedef struct owner_count {
	char address[AP_STATUS_ADDRESS_LEN + 1];
	size_t tasks;
	bool known;
	UT_hash_handle hh;
} owner_count;

static void lower_address(char out[AP_STATUS_ADDRESS_LEN + 1], const char *in)
{
	size_t i = 0;
	for (; i < AP_STATUS_ADDRESS_LEN && in[i]; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[i] = '\0';
}

static void owners_free(owner_count **h)
{
	owner_count *o, *tmp;
	HASH_ITER(hh, *h, o, tmp) {
		HASH_DEL(*h, o);
		free(o);
	}
}

/* ---- the scans ---------------------------------------------------------- */

typedef struct collect_ctx {
	ap_status_report *r;
	unsigned flags;
	idset assignable;
	owner_count *owners; /* hash by address */
	size_t cap_tasks, cap_operators;
	int rc; /* AP_ENOMEM from inside a visitor */
} collect_ctx;

/* The status the daemon gives a stored task (src/task.c ap_task_insert):
 * failed unless the record decodes, its status is known and its trigger is
 * valid. Sets *manual for a manual trigger. */
static Apstore__TaskStatus task_status(const void *val, size_t vlen,
				       bool *manual)
{
	Apstore__TaskRecord *t = NULL;
	Apstore__TaskStatus st = APSTORE__TASK_STATUS__TASK_FAILED;
	*manual = false;
	if (ap_record_unpack_task(val, vlen, &t) != 0)
		return st;
	int type = ap_task_trigger_check(t->trigger, NULL, 0);
	if (type >= 0 && t->status >= APSTORE__TASK_STATUS__TASK_ENABLED &&
	    t->status <= APSTORE__TASK_STATUS__TASK_FAILED) {
		st = t->status;
		*manual = t->trigger->trigger_type_case ==
			  AGGREGATOR__TASK_TRIGGER__TRIGGER_TYPE_MANUAL;
	}
	ap_record_free_task(t);
	return st;
}

static int add_task_entry(collect_ctx *c, const void *key, size_t klen,
			  Apstore__TaskStatus st, bool manual)
{
	ap_status_report *r = c->r;
	if (r->n_task_list == c->cap_tasks) {
		size_t cap = c->cap_tasks ? c->cap_tasks * 2 : 256;
		ap_status_task *v = realloc(r->task_list, cap * sizeof *v);
		if (v == NULL)
			return AP_ENOMEM;
		r->task_list = v;
		c->cap_tasks = cap;
	}
	char *id = malloc(klen + 1);
	if (id == NULL)
		return AP_ENOMEM;
	memcpy(id, key, klen);
	id[klen] = '\0';
	r->task_list[r->n_task_list++] = (ap_status_task){
		.id = id, .status = st, .manual = manual,
	};
	return 0;
}

static int visit_task(void *arg, const void *key, size_t klen,
		      const void *val, size_t vlen)
{
	collect_ctx *c = arg;
	ap_status_report *r = c->r;
	bool manual;
	Apstore__TaskStatus st = task_status(val, vlen, &manual);
	r->tasks.total++;
	switch (st) {
	case APSTORE__TASK_STATUS__TASK_ENABLED:
		r->tasks.enabled++;
		if (manual)
			r->manual++;
		else if ((c->rc = idset_add(&c->assignable, key, klen)) != 0)
			return 1;
		break;
	case APSTORE__TASK_STATUS__TASK_DISABLED:
		r->tasks.disabled++;
		break;
	case APSTORE__TASK_STATUS__TASK_COMPLETED:
		r->tasks.completed++;
		break;
	default:
		r->tasks.failed++;
		break;
	}
	if ((c->flags & AP_STATUS_TASKS) &&
	    (c->rc = add_task_entry(c, key, klen, st, manual)) != 0)
		return 1;
	return 0;
}

static int task_entry_cmp(const void *key, const void *elem)
{
	const char *id = key;
	const ap_status_task *t = elem;
	return key_cmp(id, strlen(id), t->id, strlen(t->id));
}

static void set_task_owner(ap_status_report *r, const void *key, size_t klen,
			   const char *owner)
{
	/* Task ids never hold a NUL (SPEC 2b), so a C string compares the
	 * same as the key. */
	char id[256];
	if (r->n_task_list == 0 || klen >= sizeof id ||
	    memchr(key, '\0', klen) != NULL)
		return;
	memcpy(id, key, klen);
	id[klen] = '\0';
	ap_status_task *t = bsearch(id, r->task_list, r->n_task_list,
				    sizeof *t, task_entry_cmp);
	if (t != NULL)
		snprintf(t->owner, sizeof t->owner, "%s", owner);
}

static int visit_assignment(void *arg, const void *key, size_t klen,
			    const void *val, size_t vlen)
{
	collect_ctx *c = arg;
	ap_status_report *r = c->r;
	id_ref *task = idset_find(&c->assignable, key, klen);
	Apstore__AssignmentRecord *a = NULL;
	if (task == NULL || task->owned ||
	    ap_record_unpack_assignment(val, vlen, &a) != 0 ||
	    !ap_config_is_address(a->owner)) {
		/* Stale: the task is gone or cannot be owned, or the record
		 * is unusable (then the task stays orphaned, as in the
		 * daemon). */
		r->stale_assignments++;
		ap_record_free_assignment(a);
		return 0;
	}
	char address[AP_STATUS_ADDRESS_LEN + 1];
	lower_address(address, a->owner);
	ap_record_free_assignment(a);

	owner_count *o;
	HASH_FIND_STR(c->owners, address, o);
	if (o == NULL) {
		if ((o = calloc(1, sizeof *o)) == NULL) {
			c->rc = AP_ENOMEM;
			return 1;
		}
		memcpy(o->address, address, sizeof o->address);
		HASH_ADD_STR(c->owners, address, o);
	}
	o->tasks++;
	task->owned = true;
	r->owned++;
	if (c->flags & AP_STATUS_TASKS)
		set_task_owner(r, key, klen, address);
	return 0;
}

static int visit_operator(void *arg, const void *key, size_t klen,
			  const void *val, size_t vlen)
{
	collect_ctx *c = arg;
	ap_status_report *r = c->r;
	(void)key;
	(void)klen;
	Apstore__OperatorRecord *rec = NULL;
	if (ap_record_unpack_operator(val, vlen, &rec) != 0 ||
	    !ap_config_is_address(rec->address)) {
		ap_record_free_operator(rec);
		return 0;
	}
	if (r->n_operators == c->cap_operators) {
		size_t cap = c->cap_operators ? c->cap_operators * 2 : 16;
		ap_status_operator *v = realloc(r->operators, cap * sizeof *v);
		if (v == NULL) {
			ap_record_free_operator(rec);
			c->rc = AP_ENOMEM;
			return 1;
		}
		r->operators = v;
		c->cap_operators = cap;
	}
	ap_status_operator *op = &r->operators[r->n_operators++];
	memset(op, 0, sizeof *op);
	lower_address(op->address, rec->address);
	op->connected = rec->connected;
	op->last_connect_ms = rec->last_connect_ms > 0 ? rec->last_connect_ms : 0;
	op->last_disconnect_ms =
		rec->last_disconnect_ms > 0 ? rec->last_disconnect_ms : 0;
	ap_record_free_operator(rec);

	owner_count *o;
	HASH_FIND_STR(c->owners, op->address, o);
	if (o != NULL) {
		op->owned_tasks = o->tasks;
		o->known = true;
	}
	if (op->connected)
		r->connected++;
	return 0;
}

static int owner_cmp(const void *a, const void *b)
{
	const ap_status_owner *x = a, *y = b;
	return strcmp(x->address, y->address);
}

static int operator_cmp(const void *a, const void *b)
{
	const ap_status_operator *x = a, *y = b;
	return strcmp(x->address, y->address);
}

static void set_err(char *err, size_t errlen, const char *msg)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

/* One scan; a visitor's own failure (c->rc) wins over the scan's result. */
static int scan(ap_store *st, ap_store_db db, ap_store_visit_fn fn,
		collect_ctx *c, const char *what, char *err, size_t errlen)
{
	int rc = ap_store_scan(st, db, fn, c);
	if (c->rc != 0)
		rc = c->rc;
	if (rc == 0)
		return 0;
	if (rc > 0) /* cannot happen: visitors stop only with c->rc set */
		rc = AP_EIO;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "cannot read the %s database at %s: %s%s",
			 what, ap_store_dir(st), ap_strerror(rc),
			 rc == AP_EIO ? " (when a daemon was killed inside a "
					"transaction, its locks stay until it "
					"starts again)"
				      : "");
	return rc;
}

int ap_status_collect_store(ap_store *st, unsigned flags,
			    ap_status_report *out, char *err, size_t errlen)
{
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out == NULL)
		return AP_EINVAL;
	memset(out, 0, sizeof *out);
	if (st == NULL) {
		set_err(err, errlen, "no store given");
		return AP_EINVAL;
	}
	collect_ctx c = { .r = out, .flags = flags };
	int rc;
	if ((out->database = strdup(ap_store_dir(st))) == NULL) {
		rc = AP_ENOMEM;
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	if ((rc = scan(st, AP_DB_TASKS, visit_task, &c, "tasks", err,
		       errlen)) != 0)
		goto fail;
	idset_sort(&c.assignable);
	if ((rc = scan(st, AP_DB_ASSIGNMENTS, visit_assignment, &c,
		       "assignments", err, errlen)) != 0)
		goto fail;
	out->orphaned = c.assignable.n - out->owned;
	if ((rc = scan(st, AP_DB_OPERATORS, visit_operator, &c, "operators",
		       err, errlen)) != 0)
		goto fail;
	/* The database is in key order already; lower-casing could in
	 * principle reorder a stray upper-case key. */
	if (out->n_operators > 1)
		qsort(out->operators, out->n_operators,
		      sizeof *out->operators, operator_cmp);

	size_t n = HASH_COUNT(c.owners);
	if (n > 0) {
		out->owners = calloc(n, sizeof *out->owners);
		if (out->owners == NULL) {
			rc = AP_ENOMEM;
			set_err(err, errlen, "out of memory");
			goto fail;
		}
		owner_count *o, *tmp;
		HASH_ITER(hh, c.owners, o, tmp) {
			ap_status_owner *w = &out->owners[out->n_owners++];
			memcpy(w->address, o->address, sizeof w->address);
			w->tasks = o->tasks;
			w->known = o->known;
		}
		qsort(out->owners, out->n_owners, sizeof *out->owners,
		      owner_cmp);
	}
	AP_ASSERT(out->tasks.enabled ==
		  out->manual + out->owned + out->orphaned);
	idset_free(&c.assignable);
	owners_free(&c.owners);
	return 0;
fail:
	idset_free(&c.assignable);
	owners_free(&c.owners);
	ap_status_free(out);
	return rc;
}

int ap_status_collect(const char *dir, ap_status_report *out, char *err,
		      size_t errlen)
{
	if (out != NULL)
		memset(out, 0, sizeof *out);
	if (out == NULL || dir == NULL) {
		set_err(err, errlen, "no database directory given");
		return AP_EINVAL;
	}
	ap_store_options opt = { .dir = dir, .readonly = true };
	ap_store *st = NULL;
	int rc = ap_store_open(&st, &opt, err, errlen);
	if (rc != 0)
		return rc;
	rc = ap_status_collect_store(st, 0, out, err, errlen);
	ap_store_close(st);
	return rc;
}

void ap_status_free(ap_status_report *r)
{
	if (r == NULL)
		return;
	free(r->database);
	free(r->owners);
	free(r->operators);
	for (size_t i = 0; i < r->n_task_list; i++)
		free(r->task_list[i].id);
	free(r->task_list);
	memset(r, 0, sizeof *r);
}

/* ---- verdict and printers ----------------------------------------------- */

ap_status_health ap_status_verdict(const ap_status_report *r, char *buf,
				   size_t len)
{
	ap_status_health h = AP_STATUS_OK;
	size_t assignable = r->owned + r->orphaned;
	if (r->connected == 0 && assignable > 0)
		h = AP_STATUS_NO_OPERATORS;
	else if (r->orphaned > 0)
		h = AP_STATUS_DEGRADED;
	if (buf != NULL && len > 0) {
		if (h == AP_STATUS_NO_OPERATORS)
			snprintf(buf, len, "NO OPERATORS");
		else if (h == AP_STATUS_DEGRADED)
			snprintf(buf, len, "DEGRADED: %zu orphaned task%s",
				 r->orphaned, r->orphaned == 1 ? "" : "s");
		else
			snprintf(buf, len, "OK");
	}
	return h;
}

/* "2026-11-28T04:17:24Z" (UTC, whole seconds), or "-" for never. */
static void format_time(char *buf, size_t len, int64_t ms)
{
	struct tm tm;
	time_t s = (time_t)(ms / 1000);
	if (ms <= 0)
		snprintf(buf, len, "-");
	else if (gmtime_r(&s, &tm) == NULL ||
		 strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%" PRId64 "ms", ms);
}

static const char *plural(size_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

/* Operators table: the address is 42 columns, so the two times are
 * stacked in the last column to stay within 80:
 *   ADDRESS (42)  CONN (4)  TASKS (7)  LAST CONNECT / LAST DISCONNECT (20)
 * which is 79 columns.
 * Owners without an operator record (not expected) get a row with CONN
 * "?", so every owned task shows up in the table. */
#define OP_ROW "%-42s  %-4s  %7zu  %s\n%59s%s\n"

int ap_status_print_text(FILE *out, const ap_status_report *r)
{
	char verdict[64];
	ap_status_verdict(r, verdict, sizeof verdict);
	fprintf(out, "%s\n", verdict);
	fprintf(out, "database   %s\n", r->database ? r->database : "");
	fprintf(out, "tasks      %zu total: %zu enabled, %zu disabled, "
		     "%zu completed, %zu failed\n",
		r->tasks.total, r->tasks.enabled, r->tasks.disabled,
		r->tasks.completed, r->tasks.failed);
	fprintf(out, "owned      %zu %s by %zu %s\n", r->owned,
		plural(r->owned, "task", "tasks"), r->n_owners,
		plural(r->n_owners, "operator", "operators"));
	fprintf(out, "orphaned   %zu\n", r->orphaned);
	fprintf(out, "manual     %zu enabled (never owned)\n", r->manual);
	fprintf(out, "operators  %zu known, %zu connected\n", r->n_operators,
		r->connected);

	size_t unknown = 0;
	for (size_t i = 0; i < r->n_owners; i++)
		unknown += !r->owners[i].known;
	if (r->n_operators + unknown > 0) {
		fprintf(out, "\n%-42s  %-4s  %7s  %s\n%59s%s\n", "ADDRESS",
			"CONN", "TASKS", "LAST CONNECT (UTC)", "",
			"LAST DISCONNECT");
		for (size_t i = 0; i < r->n_operators; i++) {
			const ap_status_operator *op = &r->operators[i];
			char conn[32], disc[32];
			format_time(conn, sizeof conn, op->last_connect_ms);
			format_time(disc, sizeof disc, op->last_disconnect_ms);
			fprintf(out, OP_ROW, op->address,
				op->connected ? "yes" : "no", op->owned_tasks,
				conn, "", disc);
		}
		for (size_t i = 0; i < r->n_owners; i++)
			if (!r->owners[i].known)
				fprintf(out, OP_ROW, r->owners[i].address, "?",
					r->owners[i].tasks, "-", "", "-");
	}
	return ferror(out) ? AP_EIO : 0;
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 when the bytes
 * there are not one (overlong forms, surrogates and code points above
 * U+10FFFF included). */
static size_t utf8_len(const unsigned char *s)
{
	unsigned c = s[0];
	size_t n;
	unsigned cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/* A JSON string: quotes, backslashes and control characters escaped;
 * bytes that are not UTF-8 (a directory name may hold any byte) become
 * U+FFFD, so the output is always valid JSON. */
static void json_string(FILE *out, const char *str)
{
	const unsigned char *s = (const unsigned char *)(str ? str : "");
	fputc('"', out);
	while (*s) {
		unsigned c = *s;
		if (c == '"' || c == '\\') {
			fputc('\\', out);
			fputc((int)c, out);
			s++;
		} else if (c < 0x20) {
			switch (c) {
			case '\b': fputs("\\b", out); break;
			case '\f': fputs("\\f", out); break;
			case '\n': fputs("\\n", out); break;
			case '\r': fputs("\\r", out); break;
			case '\t': fputs("\\t", out); break;
			default: fprintf(out, "\\u%04x", c); break;
			}
			s++;
		} else {
			size_t n = utf8_len(s);
			if (n == 0) {
				fputs("\\ufffd", out);
				s++;
			} else {
				fwrite(s, 1, n, out);
				s += n;
			}
		}
	}
	fputc('"', out);
}

int ap_status_print_json(FILE *out, const ap_status_report *r)
{
	fputs("{\"database\":", out);
	json_string(out, r->database);
	fprintf(out, ",\"tasks\":{\"total\":%zu,\"enabled\":%zu,\"disabled\":%zu,"
		     "\"completed\":%zu,\"failed\":%zu}",
		r->tasks.total, r->tasks.enabled, r->tasks.disabled,
		r->tasks.completed, r->tasks.failed);
	fprintf(out, ",\"orphaned\":%zu,\"owners\":{", r->orphaned);
	for (size_t i = 0; i < r->n_owners; i++) {
		if (i > 0)
			fputc(',', out);
		json_string(out, r->owners[i].address);
		fprintf(out, ":%zu", r->owners[i].tasks);
	}
	fputs("},\"operators\":[", out);
	for (size_t i = 0; i < r->n_operators; i++) {
		const ap_status_operator *op = &r->operators[i];
		fputs(i > 0 ? ",{\"address\":" : "{\"address\":", out);
		json_string(out, op->address);
		fprintf(out, ",\"connected\":%s,\"last_connect_ms\":%" PRId64
			     ",\"last_disconnect_ms\":%" PRId64
			     ",\"owned_tasks\":%zu}",
			op->connected ? "true" : "false", op->last_connect_ms,
			op->last_disconnect_ms, op->owned_tasks);
	}
	fputs("]}\n", out);
	return ferror(out) ? AP_EIO : 0;
}
