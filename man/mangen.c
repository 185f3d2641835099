/* mangen: write the KEYS section of ap-aggregator.conf(5) and
 * ap-operator.conf(5) at build time, so the man pages cannot drift from the
 * configuration the loader accepts.
 *
 *   mangen aggregator|operator CONF TEMPLATE > PAGE
 *
 * copies TEMPLATE (a man page with directories already substituted) to
 * stdout and replaces its one line "@KEYS@" with an entry per key. Each
 * piece of an entry has exactly one source:
 *
 *   - which keys exist, their order, type, default, range and enum names:
 *     the key table in src/config.c, through ap_config_key_describe();
 *   - what a key means: its comment in the shipped, fully commented CONF
 *     (the comment lines right above the key, or the comment after it on
 *     the same line and the lines aligned under that), which is the text an
 *     admin reads in the installed file too.
 *
 * It fails (exit 1, "FILE:LINE: ..." on stderr, which fails the build)
 * when the two disagree: a table key missing from CONF or without a
 * comment, a key in CONF that the table does not know, or a comment whose
 * "(MIN .. MAX)" differs from the table's bounds. tests/unit/test_man.c
 * checks the generated pages and these failures.
 *
 * The reader understands the subset of libconfig the shipped files use: one
 * setting or group opening per line, `name = value;` (a list value may span
 * lines), `name = {` ... `};`, and # comments. Anything else is an error
 * rather than a silently wrong page. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap/config.h"

#define MAX_SETTINGS 128
#define MAX_DEPTH 8

/* One setting (key or group) read from CONF and the comment that
 * describes it, one string per comment line, '#' and one space removed. */
typedef struct setting {
	char *name; /* dotted */
	unsigned line;
	bool group;
	char **comment;
	size_t n_comment;
} setting;

typedef struct conf_doc {
	const char *file;
	setting settings[MAX_SETTINGS];
	size_t n_settings;
} conf_doc;

static void die_oom(void)
{
	fprintf(stderr, "mangen: out of memory\n");
	exit(1);
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d)
		die_oom();
	return d;
}

static void push_line(char ***v, size_t *n, const char *text)
{
	char **bigger = realloc(*v, (*n + 1) * sizeof **v);
	if (!bigger)
		die_oom();
	*v = bigger;
	(*v)[(*n)++] = xstrdup(text);
}

static void free_lines(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void conf_doc_free(conf_doc *d)
{
	for (size_t i = 0; i < d->n_settings; i++) {
		free(d->settings[i].name);
		free_lines(d->settings[i].comment, d->settings[i].n_comment);
	}
	d->n_settings = 0;
}

static const setting *find_setting(const conf_doc *d, const char *name)
{
	for (size_t i = 0; i < d->n_settings; i++)
		if (strcmp(d->settings[i].name, name) == 0)
			return &d->settings[i];
	return NULL;
}

/* The text of a comment starting at '#': without the '#' and one space. */
static const char *comment_text(const char *hash)
{
	const char *t = hash + 1;
	return *t == ' ' ? t + 1 : t;
}

/* Scan the code part of a line: *semicolon is set to the first ';' outside
 * a string (or NULL), *comment to the '#' that starts a comment (or NULL).
 * Returns false for what this reader does not understand. */
static bool scan_code(const char *p, const char **semicolon, const char **comment)
{
	bool in_string = false;
	*semicolon = NULL;
	*comment = NULL;
	for (; *p; p++) {
		if (in_string) {
			if (*p == '\\' && p[1])
				p++;
			else if (*p == '"')
				in_string = false;
		} else if (*p == '"') {
			in_string = true;
		} else if (*p == '#') {
			*comment = p;
			return true;
		} else if (*p == '/' && (p[1] == '/' || p[1] == '*')) {
			return false;
		} else if (*p == ';' && !*semicolon) {
			*semicolon = p;
		}
	}
	return !in_string;
}

static int parse_error(const char *file, unsigned line, const char *what)
{
	fprintf(stderr, "%s:%u: %s\n", file, line, what);
	return -1;
}

/* Read CONF into d. Returns 0 or -1 (message printed). */
static int conf_doc_read(conf_doc *d, const char *file)
{
	FILE *fp = fopen(file, "r");
	if (!fp) {
		fprintf(stderr, "mangen: cannot read %s: %s\n", file, strerror(errno));
		return -1;
	}
	d->file = file;
	char *groups[MAX_DEPTH];
	size_t depth = 0;
	char **pending = NULL; /* full-line comments since the last setting */
	size_t n_pending = 0;
	setting *last = NULL; /* a key whose trailing comment may continue */
	size_t last_column = 0;
	bool in_value = false;  /* inside a value that spans lines */
	char buf[4096];
	unsigned line = 0;
	int rc = 0;

	while (rc == 0 && fgets(buf, sizeof buf, fp)) {
		line++;
		buf[strcspn(buf, "\n")] = '\0';
		const char *semi, *hash;
		if (!scan_code(buf, &semi, &hash)) {
			rc = parse_error(file, line, "mangen reads # comments and "
					 "one-line strings only");
			break;
		}
		if (in_value) {
			if (semi)
				in_value = false;
			continue;
		}
		const char *p = buf + strspn(buf, " \t");
		if (*p == '\0') {
			free_lines(pending, n_pending);
			pending = NULL;
			n_pending = 0;
			last = NULL;
			continue;
		}
		if (p == hash) {
			if (last && (size_t)(hash - buf) == last_column) {
				const char *t = comment_text(hash);
				push_line(&last->comment, &last->n_comment,
					  t + strspn(t, " "));
			} else {
				last = NULL;
				push_line(&pending, &n_pending, comment_text(hash));
			}
			continue;
		}
		last = NULL;
		if (*p == '}') {
			if (depth == 0) {
				rc = parse_error(file, line, "'}' without a group");
				break;
			}
			free(groups[--depth]);
			free_lines(pending, n_pending);
			pending = NULL;
			n_pending = 0;
			continue;
		}

		/* name = value  or  name = { */
		size_t name_len = strspn(p, "abcdefghijklmnopqrstuvwxyz"
					    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-*");
		const char *q = p + name_len;
		q += strspn(q, " \t");
		if (name_len == 0 || (*q != '=' && *q != ':')) {
			rc = parse_error(file, line, "expected 'name = value;' or "
					 "'name = {'");
			break;
		}
		q++;
		q += strspn(q, " \t");
		if (d->n_settings == MAX_SETTINGS || depth == MAX_DEPTH) {
			rc = parse_error(file, line, "too many settings for mangen");
			break;
		}
		char name[512] = "";
		size_t used = 0;
		for (size_t g = 0; g < depth && used < sizeof name; g++)
			used += (size_t)snprintf(name + used, sizeof name - used,
						 "%s.", groups[g]);
		if (used + name_len >= sizeof name) {
			rc = parse_error(file, line, "name too long for mangen");
			break;
		}
		memcpy(name + used, p, name_len);
		name[used + name_len] = '\0';

		setting *s = &d->settings[d->n_settings++];
		memset(s, 0, sizeof *s);
		s->name = xstrdup(name);
		s->line = line;
		s->comment = pending;
		s->n_comment = n_pending;
		pending = NULL;
		n_pending = 0;

		if (*q == '{') {
			const char *rest = q + 1 + strspn(q + 1, " \t");
			if (*rest != '\0' && rest != hash) {
				rc = parse_error(file, line, "mangen wants a group's "
						 "settings on their own lines");
				break;
			}
			s->group = true;
			groups[depth] = strndup(p, name_len);
			if (!groups[depth++])
				die_oom();
			continue;
		}
		if (!semi) {
			in_value = true;
			continue;
		}
		if (hash) {
			push_line(&s->comment, &s->n_comment, comment_text(hash));
			last = s;
			last_column = (size_t)(hash - buf);
		}
	}
	if (rc == 0 && (depth != 0 || in_value))
		rc = parse_error(file, line, "unexpected end of file");
	while (depth > 0)
		free(groups[--depth]);
	free_lines(pending, n_pending);
	fclose(fp);
	return rc;
}

/* ---- writing troff ---------------------------------------------------------- */

/* Text with troff's special characters escaped, so that a comment reads the
 * same in the page as in the file (an ASCII '-' and quotes, not typeset
 * dashes and curly quotes, which matter in values an admin copies). */
static void put_escaped(FILE *out, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '\\':
			fputs("\\e", out);
			break;
		case '-':
			fputs("\\-", out);
			break;
		case '\'':
			fputs("\\(aq", out);
			break;
		case '`':
			fputs("\\(ga", out);
			break;
		default:
			fputc(*s, out);
		}
	}
}

static void put_line(FILE *out, const char *s)
{
	if (*s == '.')
		fputs("\\&", out);
	put_escaped(out, s);
	fputc('\n', out);
}

/* A comment as troff: lines are filled into a paragraph, except indented
 * lines (tables such as storage.durability's), which keep their layout;
 * an empty comment line starts a new paragraph. A terse comment after a
 * value ("first wait (1 .. 604800000)") becomes a sentence: capital first
 * letter, final period. */
static void put_comment(FILE *out, char *const *lines, size_t n)
{
	bool nofill = false;
	for (size_t i = 0; i < n; i++) {
		char l[4096];
		snprintf(l, sizeof l, "%s", lines[i]);
		if (i == 0 && l[0] >= 'a' && l[0] <= 'z')
			l[0] = (char)(l[0] - 'a' + 'A');
		size_t len = strlen(l);
		if (i + 1 == n && len > 0 && len + 1 < sizeof l &&
		    !strchr(".!?:", l[len - 1]))
			memcpy(l + len, ".", 2);
		if (l[0] == '\0') {
			if (nofill)
				fputs(".fi\n", out);
			nofill = false;
			fputs(".IP\n", out);
			continue;
		}
		if (l[0] == ' ' && !nofill) {
			fputs(".nf\n", out);
			nofill = true;
		} else if (l[0] != ' ' && nofill) {
			fputs(".fi\n", out);
			nofill = false;
		}
		put_line(out, l);
	}
	if (nofill)
		fputs(".fi\n", out);
}

static bool same_bound(double a, double b)
{
	return fabs(a - b) <= 1e-9 * fmax(1.0, fabs(b));
}

/* Every "A .. B" in a key's comment must be the key's bounds. */
static int check_ranges(const conf_doc *d, const setting *s,
			const ap_config_key_info *info)
{
	static const char number[] = "0123456789.-";
	for (size_t i = 0; i < s->n_comment; i++) {
		const char *line = s->comment[i];
		for (const char *p = strstr(line, " .. "); p; p = strstr(p + 4, " .. ")) {
			const char *lo = p;
			while (lo > line && strchr(number, lo[-1]))
				lo--;
			const char *hi = p + 4;
			size_t hi_len = strspn(hi, number);
			if (lo == p || hi_len == 0)
				continue;
			char *end;
			double vlo = strtod(lo, &end);
			if (end != p)
				continue;
			double vhi = strtod(hi, &end);
			if (end != hi + hi_len)
				continue;
			if (!info->has_range) {
				fprintf(stderr, "%s:%u: key '%s': its comment gives a "
					"range, %.*s, but the key table has none\n",
					d->file, s->line, s->name,
					(int)(hi + hi_len - lo), lo);
				return -1;
			}
			if (!same_bound(vlo, info->min) || !same_bound(vhi, info->max)) {
				fprintf(stderr, "%s:%u: key '%s': its comment says "
					"%.*s, the key table in src/config.c says %s\n",
					d->file, s->line, s->name,
					(int)(hi + hi_len - lo), lo, info->range);
				return -1;
			}
		}
	}
	return 0;
}

/* The KEYS entries, in table order; a group's comment (when CONF has one)
 * comes before its first key. */
static void put_keys(FILE *out, const conf_doc *d, int kind)
{
	char group[512] = "";
	ap_config_key_info info;
	for (size_t i = 0; ap_config_key_describe(kind, i, &info) == 0; i++) {
		const char *dot = strrchr(info.name, '.');
		size_t glen = dot ? (size_t)(dot - info.name) : 0;
		if (glen != strlen(group) || strncmp(group, info.name, glen) != 0) {
			snprintf(group, sizeof group, "%.*s", (int)glen, info.name);
			const setting *g = glen ? find_setting(d, group) : NULL;
			if (g && g->n_comment) {
				fprintf(out, ".TP\n.B %s\n", group);
				put_comment(out, g->comment, g->n_comment);
				fprintf(out, ".IP\nA group: the \\fB%s.\\fR keys below "
					"go inside its braces.\n", group);
			}
		}
		const setting *s = find_setting(d, info.name);
		fprintf(out, ".TP\n.B %s\n", info.name);
		put_comment(out, s->comment, s->n_comment);
		fputs(".IP\nType: ", out);
		put_escaped(out, info.type);
		if (info.values[0]) {
			fputs(", one of ", out);
			put_escaped(out, info.values);
		}
		if (info.range[0]) {
			fputs(info.type[0] == 'l' ? ", each " : ", ", out);
			put_escaped(out, info.range);
		}
		fputs(".\nDefault: ", out);
		put_escaped(out, info.default_value);
		fputs(".\n", out);
	}
}

/* The table and CONF name the same keys, and every key has a comment. */
static int check_doc(const conf_doc *d, int kind)
{
	ap_config_key_info info;
	for (size_t i = 0; ap_config_key_describe(kind, i, &info) == 0; i++) {
		const setting *s = find_setting(d, info.name);
		if (!s || s->group) {
			fprintf(stderr, "%s: key '%s' of the key table in src/config.c "
				"is not in this file; add it with a comment\n",
				d->file, info.name);
			return -1;
		}
		if (s->n_comment == 0) {
			fprintf(stderr, "%s:%u: key '%s' has no comment (above it, or "
				"after it on its line) to document it\n",
				d->file, s->line, s->name);
			return -1;
		}
		if (check_ranges(d, s, &info))
			return -1;
	}
	for (size_t j = 0; j < d->n_settings; j++) {
		const setting *s = &d->settings[j];
		bool known = false;
		size_t len = strlen(s->name);
		for (size_t i = 0; !known && ap_config_key_describe(kind, i, &info) == 0; i++)
			known = s->group ? strncmp(info.name, s->name, len) == 0 &&
						   info.name[len] == '.'
					 : strcmp(info.name, s->name) == 0;
		if (!known) {
			fprintf(stderr, "%s:%u: %s '%s' is not in the key table in "
				"src/config.c\n", d->file, s->line,
				s->group ? "group" : "key", s->name);
			return -1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "aggregator") != 0 &&
			  strcmp(argv[1], "operator") != 0)) {
		fprintf(stderr, "usage: mangen aggregator|operator CONF TEMPLATE > PAGE\n");
		return 2;
	}
	int kind = strcmp(argv[1], "aggregator") == 0 ? 0 : 1;
	conf_doc doc = { 0 };
	FILE *template = NULL;
	int rc = 1;

	if (conf_doc_read(&doc, argv[2]) != 0 || check_doc(&doc, kind) != 0)
		goto out;
	template = fopen(argv[3], "r");
	if (!template) {
		fprintf(stderr, "mangen: cannot read %s: %s\n", argv[3], strerror(errno));
		goto out;
	}
	char buf[4096];
	int n_marks = 0;
	while (fgets(buf, sizeof buf, template)) {
		if (strcmp(buf, "@KEYS@\n") == 0) {
			put_keys(stdout, &doc, kind);
			n_marks++;
		} else {
			fputs(buf, stdout);
		}
	}
	if (n_marks != 1) {
		fprintf(stderr, "%s: needs exactly one line @KEYS@, has %d\n",
			argv[3], n_marks);
		goto out;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "mangen: write error: %s\n", strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (template)
		fclose(template);
	conf_doc_free(&doc);
	return rc;
}
