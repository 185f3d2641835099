/* Unit tests for the logger (src/log.c): exact text and JSON lines under a
 * fixed wall clock, JSON escaping checked by a strict independent parser
 * (Python's json module), level filtering without evaluating arguments,
 * whole lines under concurrent writers, the line cap, and reopen after a
 * logrotate-style rename. Every test runs in its own temp dir. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ap/clock.h"
#include "ap/error.h"
#include "ap/log.h"

#define PYTHON "/usr/bin/python3"
#define TS "2026-11-28T04:17:24.123Z"

/* Validate every line as one strict JSON object (UTF-8, no NaN, no
 * duplicate keys) and write it back re-encoded as ASCII-only JSON, so the
 * expectations below compare decoded values, not our own encoder's output. */
static const char py_canon[] =
	"import json, sys\n"
	"def const(c): raise ValueError('non-JSON constant ' + c)\n"
	"def pairs(ps):\n"
	"    if len({k for k, _ in ps}) != len(ps): raise ValueError('duplicate key')\n"
	"    return dict(ps)\n"
	"data = open(sys.argv[1], 'rb').read()\n"
	"if not data.endswith(b'\\n'): sys.exit('no final newline')\n"
	"with open(sys.argv[2], 'w') as out:\n"
	"    for raw in data[:-1].split(b'\\n'):\n"
	"        o = json.loads(raw.decode('utf-8'), parse_constant=const, object_pairs_hook=pairs)\n"
	"        if not isinstance(o, dict): sys.exit('not an object')\n"
	"        out.write(json.dumps(o, separators=(',', ':')) + '\\n')\n";

/* Every line parses; each thread's seq runs 0..per-1 in order. */
static const char py_concurrent[] =
	"import json, sys\n"
	"threads, per = int(sys.argv[2]), int(sys.argv[3])\n"
	"seen = [0] * threads\n"
	"data = open(sys.argv[1], 'rb').read()\n"
	"if not data.endswith(b'\\n'): sys.exit('no final newline')\n"
	"for raw in data[:-1].split(b'\\n'):\n"
	"    o = json.loads(raw.decode('utf-8'))\n"
	"    t, seq = o['thread'], o['seq']\n"
	"    if seq != seen[t]: sys.exit('thread %d: seq %d, expected %d' % (t, seq, seen[t]))\n"
	"    if len(o['pad']) != (6000 if seq % 100 == 0 else 8): sys.exit('bad pad')\n"
	"    seen[t] += 1\n"
	"if seen != [per] * threads: sys.exit('counts %r' % seen)\n";

static _Atomic int64_t fake_now = 1795839444123; /* TS */
static int64_t fake_wall(void) { return fake_now; }

typedef struct {
	char dir[64];
	char path[128]; /* dir/ap.log */
} fixture;

static int setup(void **state)
{
	fixture *fx = calloc(1, sizeof *fx);
	if (!fx)
		return -1;
	snprintf(fx->dir, sizeof fx->dir, "/tmp/ap-test-log-XXXXXX");
	if (!mkdtemp(fx->dir)) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof fx->path, "%s/ap.log", fx->dir);
	fake_now = 1795839444123;
	ap_clock_set_wall_hook(fake_wall);
	*state = fx;
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static int teardown(void **state)
{
	fixture *fx = *state;
	ap_log_close();
	ap_log_set_level(AP_LOG_INFO);
	ap_log_set_format(AP_LOG_TEXT);
	ap_clock_set_wall_hook(NULL);
	int rc = nftw(fx->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return rc;
}

/* The whole file as a NUL-terminated string (caller frees); NULL if absent. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t len = 0, size = 4096, n;
	char *buf = malloc(size);
	while (buf && (n = fread(buf + len, 1, size - len - 1, f)) > 0) {
		len += n;
		if (size - len - 1 == 0) {
			char *bigger = realloc(buf, size *= 2);
			if (!bigger)
				free(buf);
			buf = bigger;
		}
	}
	fclose(f);
	if (buf)
		buf[len] = '\0';
	return buf;
}

static void assert_file_eq(const char *path, const char *want)
{
	char *got = slurp(path);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void write_file(const char *path, const char *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Run a Python check; skips the test when python3 is not installed. */
static void run_python(const char *script, const char *a1, const char *a2, const char *a3)
{
	int status;
	if (access(PYTHON, X_OK) != 0)
		skip();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(PYTHON, "python3", "-c", script, a1, a2, a3, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Canonical (validated, ASCII-only) form of a JSON log file. */
static char *json_canon(const fixture *fx, const char *log_path)
{
	char out[160];
	snprintf(out, sizeof out, "%s/canon.json", fx->dir);
	run_python(py_canon, log_path, out, NULL);
	return slurp(out);
}

static void test_text_exact(void **state)
{
	fixture *fx = *state;
	char err[256];
	assert_int_equal(ap_log_open(AP_LOG_DEBUG, AP_LOG_TEXT, fx->path, err, sizeof err), 0);
	AP_INFO("🔄 Reclaimed orphaned task for operator", AP_F_STR("task_id", "abc"),
		AP_F_STR("operator", "0x5a3e"));
	AP_DEBUG("d");
	AP_WARN("w", AP_F_INT("n", -42), AP_F_UINT("u", UINT64_MAX), AP_F_BOOL("ok", true),
		AP_F_DBL("ratio", 0.1), AP_F_DBL("bad", NAN), AP_F_DBL("big", -INFINITY));
	AP_ERROR("quoting", AP_F_STR("empty", ""), AP_F_STR("space", "a b"),
		 AP_F_STR("eq", "k=v"), AP_F_STR("quote", "say \"hi\""),
		 AP_F_STR("ctl", "l1\nl2\tx\x01"), AP_F_STR("bs", "c:\\dir"),
		 AP_F_STR("raw", "a\xff" "b"), AP_F_STR("null", NULL), AP_F_STR("emoji", "✅"));
	fake_now = 1795839444005;
	AP_INFO("multi\nline");
	fake_now = 0;
	AP_INFO("epoch");
	assert_file_eq(fx->path,
		TS " INFO  🔄 Reclaimed orphaned task for operator task_id=abc operator=0x5a3e\n"
		TS " DEBUG d\n"
		TS " WARN  w n=-42 u=18446744073709551615 ok=true ratio=0.1 bad=nan big=-inf\n"
		TS " ERROR quoting empty=\"\" space=\"a b\" eq=\"k=v\" quote=\"say \\\"hi\\\"\" "
		"ctl=\"l1\\nl2\\tx\\x01\" bs=c:\\dir raw=\"a\\xffb\" null=(null) emoji=✅\n"
		"2026-11-28T04:17:24.005Z INFO  multi\\nline\n"
		"1970-01-01T00:00:00.000Z INFO  epoch\n");
}

static void test_json_exact(void **state)
{
	fixture *fx = *state;
	assert_int_equal(ap_log_open(AP_LOG_INFO, AP_LOG_JSON, fx->path, NULL, 0), 0);
	AP_INFO("🔄 Reclaimed orphaned task for operator", AP_F_STR("task_id", "abc"),
		AP_F_INT("n", -42), AP_F_UINT("u", UINT64_MAX), AP_F_BOOL("ok", false),
		AP_F_DBL("ratio", 0.1), AP_F_DBL("inf", INFINITY), AP_F_STR("none", NULL));
	AP_WARN("no fields");
	assert_file_eq(fx->path,
		"{\"ts\":\"" TS "\",\"level\":\"info\",\"msg\":\"🔄 Reclaimed orphaned task "
		"for operator\",\"task_id\":\"abc\",\"n\":-42,\"u\":18446744073709551615,"
		"\"ok\":false,\"ratio\":0.1,\"inf\":null,\"none\":null}\n"
		"{\"ts\":\"" TS "\",\"level\":\"warn\",\"msg\":\"no fields\"}\n");
}

static void test_json_escaping(void **state)
{
	fixture *fx = *state;
	assert_int_equal(ap_log_open(AP_LOG_INFO, AP_LOG_JSON, fx->path, NULL, 0), 0);
	AP_ERROR("odd \"msg\"\n", AP_F_STR("quote", "a\"b"), AP_F_STR("bs", "a\\b"),
		 AP_F_STR("nl", "a\nb"), AP_F_STR("tab", "a\tb"), AP_F_STR("ctl", "a\x01" "b\x1f"),
		 AP_F_STR("emoji", "🔥"), AP_F_STR("k\"ey", "v"),
		 /* stray byte, overlong, surrogate, sequence cut by the end */
		 AP_F_STR("bad", "a\xff" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x82"));
	/* Our own bytes: short escapes where JSON has them, \u00XX otherwise. */
	char *raw = slurp(fx->path);
	assert_non_null(raw);
	assert_non_null(strstr(raw, "\"msg\":\"odd \\\"msg\\\"\\n\""));
	assert_non_null(strstr(raw, "\"ctl\":\"a\\u0001b\\u001f\""));
	assert_non_null(strstr(raw, "\"emoji\":\"🔥\""));
	free(raw);
	/* What a strict parser decodes. */
	char *canon = json_canon(fx, fx->path);
	assert_non_null(canon);
	assert_string_equal(canon,
		"{\"ts\":\"" TS "\",\"level\":\"error\",\"msg\":\"odd \\\"msg\\\"\\n\","
		"\"quote\":\"a\\\"b\",\"bs\":\"a\\\\b\",\"nl\":\"a\\nb\",\"tab\":\"a\\tb\","
		"\"ctl\":\"a\\u0001b\\u001f\",\"emoji\":\"\\ud83d\\udd25\",\"k\\\"ey\":\"v\","
		"\"bad\":\"a\\ufffdb\\ufffd\\ufffdc\\ufffd\\ufffd\\ufffdd\\ufffd\\ufffd\"}\n");
	free(canon);
}

static int evaluated;
static const char *counted(const char *s)
{
	evaluated++;
	return s;
}

static void test_level_filter(void **state)
{
	fixture *fx = *state;
	evaluated = 0;
	assert_int_equal(ap_log_open(AP_LOG_WARN, AP_LOG_TEXT, fx->path, NULL, 0), 0);
	assert_int_equal(ap_log_get_level(), AP_LOG_WARN);
	assert_false(ap_log_enabled(AP_LOG_DEBUG));
	assert_false(ap_log_enabled(AP_LOG_INFO));
	assert_true(ap_log_enabled(AP_LOG_WARN));
	assert_true(ap_log_enabled(AP_LOG_ERROR));
	AP_DEBUG("hidden", AP_F_STR("k", counted("a")));
	AP_INFO("hidden", AP_F_STR("k", counted("b")));
	assert_int_equal(evaluated, 0);
	AP_WARN("shown", AP_F_STR("k", counted("c")));
	AP_ERROR("shown too", AP_F_STR("k", counted("d")));
	assert_int_equal(evaluated, 2);
	ap_log_set_level(AP_LOG_DEBUG);
	ap_log_set_level((ap_log_level)9); /* ignored */
	assert_int_equal(ap_log_get_level(), AP_LOG_DEBUG);
	AP_DEBUG("now shown", AP_F_STR("k", counted("e")));
	assert_int_equal(evaluated, 3);
	assert_file_eq(fx->path, TS " WARN  shown k=c\n" TS " ERROR shown too k=d\n"
				 TS " DEBUG now shown k=e\n");
}

#define WRITERS 8
#define LINES 2000
static char big_pad[6001];

static void *writer_main(void *arg)
{
	int t = (int)(intptr_t)arg;
	for (int i = 0; i < LINES; i++)
		AP_INFO("concurrent", AP_F_INT("thread", t), AP_F_INT("seq", i),
			AP_F_STR("pad", i % 100 == 0 ? big_pad : "pppppppp"));
	return NULL;
}

typedef struct {
	int fd;
	char *buf;
	size_t len, size;
	int error; /* errno of a failed read or realloc, checked by the test */
} capture;

static void *reader_main(void *arg)
{
	capture *c = arg;
	for (;;) {
		if (c->size - c->len < 65536) {
			char *p = realloc(c->buf, c->size = c->size * 2 + 65536);
			if (!p) {
				c->error = ENOMEM;
				return NULL;
			}
			c->buf = p;
		}
		ssize_t n = read(c->fd, c->buf + c->len, c->size - c->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			c->error = n < 0 ? errno : 0;
			return NULL;
		}
		c->len += (size_t)n;
	}
}

static void test_concurrent_whole_lines(void **state)
{
	fixture *fx = *state;
	int p[2];
	pthread_t reader, writers[WRITERS];
	capture cap = { 0 };
	memset(big_pad, 'p', sizeof big_pad - 1);
	assert_int_equal(pipe(p), 0);
	cap.fd = p[0];
	ap_log_set_format(AP_LOG_JSON);
	ap_log_set_fd(p[1]);
	assert_int_equal(pthread_create(&reader, NULL, reader_main, &cap), 0);
	for (int t = 0; t < WRITERS; t++)
		assert_int_equal(pthread_create(&writers[t], NULL, writer_main, (void *)(intptr_t)t), 0);
	for (int t = 0; t < WRITERS; t++)
		assert_int_equal(pthread_join(writers[t], NULL), 0);
	ap_log_close();
	close(p[1]); /* the reader sees EOF once everything is drained */
	assert_int_equal(pthread_join(reader, NULL), 0);
	close(p[0]);
	assert_int_equal(cap.error, 0);

	size_t lines = 0;
	for (size_t i = 0; i < cap.len; i++)
		lines += cap.buf[i] == '\n';
	assert_int_equal(lines, WRITERS * LINES);
	char out[160];
	snprintf(out, sizeof out, "%s/concurrent.log", fx->dir);
	write_file(out, cap.buf, cap.len);
	free(cap.buf);
	run_python(py_concurrent, out, "8", "2000");
}

static void test_long_lines(void **state)
{
	fixture *fx = *state;
	size_t n = 40000; /* 4-byte characters: 160 KB, far over the cap */
	char *fire = malloc(n * 4 + 1), *fit = malloc(20001);
	assert_non_null(fire);
	assert_non_null(fit);
	for (size_t i = 0; i < n; i++)
		memcpy(fire + i * 4, "🔥", 4);
	fire[n * 4] = '\0';
	memset(fit, 'x', 20000);
	fit[20000] = '\0';
	assert_int_equal(ap_log_open(AP_LOG_INFO, AP_LOG_JSON, fx->path, NULL, 0), 0);
	AP_INFO("fits", AP_F_STR("v", fit));  /* grows past the stack buffer */
	AP_INFO("cut", AP_F_STR("v", fire), AP_F_INT("after", 1));
	ap_log_set_format(AP_LOG_TEXT);
	AP_INFO("cut", AP_F_STR("v", fire), AP_F_INT("after", 1));

	char *raw = slurp(fx->path);
	assert_non_null(raw);
	int lines = 0;
	for (char *c = raw; *c; c++)
		lines += *c == '\n';
	assert_int_equal(lines, 3);
	char *l2 = strchr(raw, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
	char want[20100];
	snprintf(want, sizeof want, "{\"ts\":\"" TS "\",\"level\":\"info\",\"msg\":\"fits\","
		 "\"v\":\"%s\"}\n", fit);
	assert_int_equal(l2 - raw, strlen(want));
	assert_memory_equal(raw, want, strlen(want));
	size_t len2 = (size_t)(l3 - l2), len3 = strlen(l3);
	assert_in_range(len2, AP_LOG_LINE_MAX - 128, AP_LOG_LINE_MAX);
	assert_in_range(len3, AP_LOG_LINE_MAX - 128, AP_LOG_LINE_MAX);
	static const char json_end[] = "🔥\",\"truncated\":true}\n";
	static const char text_end[] = "🔥 truncated=true\n";
	assert_memory_equal(l2 + len2 - strlen(json_end), json_end, strlen(json_end));
	assert_memory_equal(l3 + len3 - strlen(text_end), text_end, strlen(text_end));
	assert_null(strstr(raw, "after"));
	l3[0] = '\0'; /* the JSON lines go through the strict parser */
	write_file(fx->path, raw, strlen(raw));
	char *canon = json_canon(fx, fx->path);
	assert_non_null(canon);
	assert_non_null(strstr(canon, "\\udd25\",\"truncated\":true}\n"));
	free(canon), free(raw), free(fire), free(fit);
}

/* Values of every length near the cap, so the cut lands in turn inside the
 * value, the next key and the next number: each line must stay valid JSON
 * (a half-written key or number is rolled back, not left dangling). */
static void test_cut_between_fields(void **state)
{
	fixture *fx = *state;
	enum { FROM = AP_LOG_LINE_MAX - 300, LINES_CUT = 300 };
	char *v = malloc(AP_LOG_LINE_MAX + 1);
	assert_non_null(v);
	memset(v, 'v', AP_LOG_LINE_MAX);
	assert_int_equal(ap_log_open(AP_LOG_INFO, AP_LOG_JSON, fx->path, NULL, 0), 0);
	for (int i = 0; i < LINES_CUT; i++) {
		v[FROM + i] = '\0';
		AP_INFO("cut", AP_F_STR("v", v), AP_F_INT("after", 12345), AP_F_STR("last", "x"));
		v[FROM + i] = 'v';
	}
	free(v);
	char *canon = json_canon(fx, fx->path), *p = canon;
	assert_non_null(canon);
	static const char *const ends[] = {
		",\"after\":12345,\"last\":\"x\"}", /* whole */
		",\"after\":12345,\"truncated\":true}", /* cut before "last" */
		"v\",\"truncated\":true}", /* cut inside v */
	};
	int seen[3] = { 0 }, lines = 0;
	for (char *nl; (nl = strchr(p, '\n')); p = nl + 1, lines++)
		for (int e = 0; e < 3; e++)
			if (nl - p > (ptrdiff_t)strlen(ends[e]) &&
			    memcmp(nl - strlen(ends[e]), ends[e], strlen(ends[e])) == 0)
				seen[e]++;
	assert_int_equal(lines, LINES_CUT);
	assert_int_equal(seen[0] + seen[1] + seen[2], LINES_CUT);
	assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
	free(canon);
}

static void test_reopen_after_rename(void **state)
{
	fixture *fx = *state;
	char rotated[160];
	struct stat st;
	mode_t mask = umask(022);
	umask(mask);
	snprintf(rotated, sizeof rotated, "%s.1", fx->path);
	assert_int_equal(ap_log_open(AP_LOG_INFO, AP_LOG_TEXT, fx->path, NULL, 0), 0);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640 & ~mask);
	AP_INFO("before rotate");
	assert_int_equal(rename(fx->path, rotated), 0);
	AP_INFO("after rename");
	assert_int_equal(ap_log_reopen(), 0);
	AP_INFO("after reopen");
	assert_file_eq(rotated, TS " INFO  before rotate\n" TS " INFO  after rename\n");
	assert_file_eq(fx->path, TS " INFO  after reopen\n");
}

static void test_open_and_reopen_failures(void **state)
{
	fixture *fx = *state;
	char err[256] = "", sub[96], moved[96], path[128], missing[128];
	snprintf(sub, sizeof sub, "%s/sub", fx->dir);
	snprintf(moved, sizeof moved, "%s/moved", fx->dir);
	snprintf(path, sizeof path, "%s/ap.log", sub);
	snprintf(missing, sizeof missing, "%s/missing/ap.log", fx->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(ap_log_open(AP_LOG_INFO, AP_LOG_TEXT, path, NULL, 0), 0);
	/* A failed open keeps the previous destination and level. */
	assert_int_equal(ap_log_open(AP_LOG_DEBUG, AP_LOG_JSON, missing, err, sizeof err), AP_EIO);
	assert_non_null(strstr(err, "missing"));
	assert_int_equal(ap_log_open((ap_log_level)7, AP_LOG_TEXT, path, NULL, 0), AP_EINVAL);
	assert_int_equal(ap_log_get_level(), AP_LOG_INFO);
	AP_INFO("still here");
	/* A failed reopen keeps writing into the old file. */
	assert_int_equal(rename(sub, moved), 0);
	assert_int_equal(ap_log_reopen(), AP_EIO);
	AP_INFO("after failed reopen");
	snprintf(path, sizeof path, "%s/ap.log", moved);
	assert_file_eq(path, TS " INFO  still here\n" TS " INFO  after failed reopen\n");
}

static void test_set_fd(void **state)
{
	int p[2];
	char buf[256];
	assert_int_equal(pipe(p), 0);
	ap_log_set_fd(p[1]);
	errno = ENOENT;
	AP_INFO("to pipe", AP_F_INT("n", 1));
	assert_int_equal(errno, ENOENT); /* logging keeps the caller's errno */
	assert_int_equal(ap_log_reopen(), 0); /* no path: nothing to reopen */
	AP_INFO("still pipe");
	ap_log_close();
	assert_int_not_equal(fcntl(p[1], F_GETFD), -1); /* the fd stays ours */
	close(p[1]);
	ssize_t n = read(p[0], buf, sizeof buf - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, TS " INFO  to pipe n=1\n" TS " INFO  still pipe\n");
	close(p[0]);
}

static void test_parse(void **state)
{
	assert_int_equal(ap_log_level_parse("debug"), AP_LOG_DEBUG);
	assert_int_equal(ap_log_level_parse("INFO"), AP_LOG_INFO);
	assert_int_equal(ap_log_level_parse("warn"), AP_LOG_WARN);
	assert_int_equal(ap_log_level_parse("error"), AP_LOG_ERROR);
	assert_int_equal(ap_log_level_parse("warning"), -1);
	assert_int_equal(ap_log_level_parse(""), -1);
	assert_int_equal(ap_log_level_parse(NULL), -1);
	assert_int_equal(ap_log_format_parse("text"), AP_LOG_TEXT);
	assert_int_equal(ap_log_format_parse("JSON"), AP_LOG_JSON);
	assert_int_equal(ap_log_format_parse("xml"), -1);
	assert_int_equal(ap_log_format_parse(NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_text_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_whole_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_between_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_after_rename, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_and_reopen_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
