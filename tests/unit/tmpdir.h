/* A private temp directory per unit test, and the files a test writes,
 * reads and captures in it.
 *
 * Shared by test_auth, test_config, test_status and test_store, which each
 * carried their own copy of the same mkdtemp/nftw fixture and
 * file-writing code. Every helper that can fail inside a test fails it
 * with a cmocka assert; tmpdir_create and tmpdir_remove instead return a
 * status, because cmocka's setup and teardown functions report failure by
 * their return value. Not thread-safe: tests call these from the test
 * thread, never from a forked child (children must not use cmocka
 * asserts). */
#ifndef AP_TESTS_UNIT_TMPDIR_H
#define AP_TESTS_UNIT_TMPDIR_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

/* $TMPDIR when it is set and not empty, else "/tmp". The string is the
 * environment's or static; the caller does not free it. */
const char *tmpdir_parent(void);

/* Make a fresh directory PARENT/ap-test-NAME-XXXXXX (mode 0700, by
 * mkdtemp) and leave its path in dir (size bytes). Returns 0, or -1 when
 * the path does not fit or mkdtemp fails. */
int tmpdir_create(char *dir, size_t size, const char *parent, const char *name);

/* Remove dir and everything below it, without following symbolic links.
 * Returns 0, or -1 when something could not be removed. */
int tmpdir_remove(const char *dir);

/* DIR/NAME in out (size bytes). Returns out. */
const char *tmpdir_path(char *out, size_t size, const char *dir,
			const char *name);

/* Write text to path: created with mode (less the umask) if absent,
 * truncated if present. */
void tmpdir_write(const char *path, const char *text, mode_t mode);

/* The start of the file at path, at most size - 1 bytes, NUL-terminated. */
void tmpdir_read(const char *path, char *out, size_t size);

/* stdout and stderr redirected to the files "stdout" and "stderr" in a
 * test's directory while in-process code (ap_cli_main and friends) runs. */
typedef struct tmpdir_capture {
	char out_path[PATH_MAX + 16];
	char err_path[PATH_MAX + 16];
	int saved_out; /* the real stdout, restored by tmpdir_capture_end */
	int saved_err;
} tmpdir_capture;

/* Start sending stdout and stderr to files in dir. */
void tmpdir_capture_begin(tmpdir_capture *cap, const char *dir);

/* Restore stdout and stderr, copy what was written to them into out and
 * errout (as tmpdir_read does) and remove the files. */
void tmpdir_capture_end(tmpdir_capture *cap, char *out, size_t outlen,
			char *errout, size_t errlen);

#endif
