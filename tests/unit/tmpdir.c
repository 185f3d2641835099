/* Temp directories and files for the unit tests: see tmpdir.h. */
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tmpdir.h"

const char *tmpdir_parent(void)
{
	const char *tmp = getenv("TMPDIR");
	return tmp && tmp[0] ? tmp : "/tmp";
}

int tmpdir_create(char *dir, size_t size, const char *parent, const char *name)
{
	int n = snprintf(dir, size, "%s/ap-test-%s-XXXXXX", parent, name);
	/* A truncated template would not end in XXXXXX, or would name
	 * somewhere else. */
	if (n < 0 || (size_t)n >= size)
		return -1;
	return mkdtemp(dir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *sb, int type,
			struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path);
}

int tmpdir_remove(const char *dir)
{
	/* FTW_DEPTH: a directory's entries go before the directory itself;
	 * FTW_PHYS: a link a test made is removed, not what it points to. */
	return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *tmpdir_path(char *out, size_t size, const char *dir,
			const char *name)
{
	int n = snprintf(out, size, "%s/%s", dir, name);
	assert_true(n >= 0 && (size_t)n < size);
	return out;
}

void tmpdir_write(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, mode);
	assert_true(fd >= 0);
	size_t len = strlen(text);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

void tmpdir_read(const char *path, char *out, size_t size)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, size - 1, f);
	out[n] = '\0';
	fclose(f);
}

void tmpdir_capture_begin(tmpdir_capture *cap, const char *dir)
{
	snprintf(cap->out_path, sizeof cap->out_path, "%s/stdout", dir);
	snprintf(cap->err_path, sizeof cap->err_path, "%s/stderr", dir);
	/* What the test printed so far belongs on the real streams. */
	fflush(stdout);
	fflush(stderr);
	cap->saved_out = dup(1);
	cap->saved_err = dup(2);
	int fo = open(cap->out_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	int fe = open(cap->err_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	assert_true(cap->saved_out >= 0 && cap->saved_err >= 0 && fo >= 0 &&
		    fe >= 0);
	dup2(fo, 1);
	dup2(fe, 2);
	close(fo);
	close(fe);
}

void tmpdir_capture_end(tmpdir_capture *cap, char *out, size_t outlen,
			char *errout, size_t errlen)
{
	fflush(stdout);
	fflush(stderr);
	dup2(cap->saved_out, 1);
	dup2(cap->saved_err, 2);
	close(cap->saved_out);
	close(cap->saved_err);
	tmpdir_read(cap->out_path, out, outlen);
	tmpdir_read(cap->err_path, errout, errlen);
	unlink(cap->out_path);
	unlink(cap->err_path);
}
