#!/bin/sh
# make install into a temp dir, then use what it installed (issue #8):
#
#   - exactly the expected files land where configure said (bin/ap, the
#     configs and the development key under $(sysconfdir)/ap, the systemd
#     unit, ap(1), ap-aggregator.conf(5), ap-operator.conf(5)), with their
#     relative paths rewritten for the installed layout;
#   - the installed ap runs: `ap version`, `ap config check` on its installed
#     configs, and (once `ap aggregator` is available) the daemon starts and
#     stops cleanly from the installed tree with its installed config, moved
#     into the temp dir;
#   - the pages render with `man -l`, and ap(1) has a section for every
#     command `ap help` lists (and no other) naming every option of its
#     `--help`;
#   - the unit passes `systemd-analyze verify` (when that is installed);
#   - a reinstall keeps an edited config; uninstall removes the rest.
#
# Nothing is written outside the mkdtemp directory: the installs use
# DESTDIR. Run by make check, which sets AP_BUILDDIR and the AP_INST_*
# directories (see the install block of Makefile.am).
set -eu

: "${AP_BUILDDIR:?run from make check}"
: "${AP_INST_BINDIR:?run from make check}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ap-test-install.XXXXXX")
daemon=
cleanup() {
	if [ -n "$daemon" ]; then
		kill -KILL "$daemon" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
step() {
	echo "--- $*"
}

# The sub-make only installs what make check already built; it must not
# inherit make check's command line (TESTS=...) or its jobserver.
run_make() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL ${AP_MAKE:-make} -C "$AP_BUILDDIR" "$@"
}

root=$tmp/root
bindir=$root$AP_INST_BINDIR
confdir=$root$AP_INST_SYSCONFDIR/ap
man1=$root$AP_INST_MANDIR/man1
man5=$root$AP_INST_MANDIR/man5
ap=$bindir/ap

step "make install DESTDIR=$root"
run_make install DESTDIR="$root" >"$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log"; fail "make install"; }

step "installed files"
{
	echo "$ap"
	echo "$confdir/aggregator.conf"
	echo "$confdir/operator.conf"
	echo "$confdir/dev-operator.key"
	echo "$man1/ap.1"
	echo "$man5/ap-aggregator.conf.5"
	echo "$man5/ap-operator.conf.5"
	if [ -n "${AP_INST_UNITDIR:-}" ]; then
		echo "$root$AP_INST_UNITDIR/ap-aggregator.service"
	fi
} | LC_ALL=C sort >"$tmp/expected"
find "$root" -type f | LC_ALL=C sort >"$tmp/installed"
diff -u "$tmp/expected" "$tmp/installed" || fail "installed files differ from the expected list"
[ -x "$ap" ] || fail "$ap is not executable"
[ "$(stat -c %a "$confdir/dev-operator.key")" = 600 ] || fail "dev-operator.key is not mode 0600"
[ "$(stat -c %a "$confdir/aggregator.conf")" = 644 ] || fail "aggregator.conf is not mode 0644"
[ -d "$root$AP_INST_RUNSTATEDIR" ] || fail "$AP_INST_RUNSTATEDIR was not created"
for f in $(grep -v "^$ap\$" "$tmp/installed"); do
	if grep -n '@[a-zA-Z_]\{1,\}@' "$f"; then
		fail "$f keeps an @VARIABLE@ (lines above)"
	fi
done

step "installed configs name the installed layout"
expect_line() {
	grep -qxF "$2" "$1" || fail "$1 has no line '$2'"
}
expect_line "$confdir/aggregator.conf" "  dir = \"$AP_INST_LOCALSTATEDIR/lib/ap\";"
expect_line "$confdir/aggregator.conf" "admin_listen = \"unix:$AP_INST_RUNSTATEDIR/ap/admin.sock\";"
expect_line "$confdir/operator.conf" "key_file = \"$AP_INST_SYSCONFDIR/ap/dev-operator.key\";"
if grep -n '"\./\|"conf/' "$confdir/aggregator.conf" "$confdir/operator.conf"; then
	fail "an installed config keeps a relative path"
fi

step "the installed ap runs"
"$ap" version >"$tmp/out" || fail "ap version exited $?"
[ "$(head -n1 "$tmp/out")" = "ap $AP_VERSION" ] || fail "ap version printed: $(cat "$tmp/out")"
"$ap" config check "$confdir/aggregator.conf" >"$tmp/out" ||
	fail "ap config check on the installed aggregator.conf"
[ "$(cat "$tmp/out")" = "$confdir/aggregator.conf: ok" ] || fail "config check printed: $(cat "$tmp/out")"
"$ap" --config "$confdir/aggregator.conf" config check >/dev/null ||
	fail "ap --config INSTALLED config check"
"$ap" config check --operator "$confdir/operator.conf" >/dev/null ||
	fail "ap config check --operator on the installed operator.conf"
set +e
"$ap" >/dev/null 2>&1
status=$?
set -e
[ "$status" = 2 ] || fail "ap with no command exited $status, not 2"

step "ap help and ap(1)"
"$ap" help >"$tmp/help" || fail "ap help exited $?"
sed -n '/^commands:/,/^$/s/^  \([a-z][a-z0-9-]*\) .*/\1/p' "$tmp/help" | LC_ALL=C sort >"$tmp/commands"
[ "$(wc -l <"$tmp/commands")" -ge 9 ] || fail "cannot read the commands of ap help: $(cat "$tmp/help")"
sed -n 's/^\.SS "ap \([a-z][a-z0-9-]*\).*/\1/p' "$man1/ap.1" | LC_ALL=C sort >"$tmp/documented"
diff -u "$tmp/commands" "$tmp/documented" ||
	fail "ap(1) (man/ap.1.in) and ap help list different commands (- ap help, + ap.1)"
# Options of `ap --help`'s first line (the global ones) in OPTIONS, each
# command's options in its own section, written as troff writes them.
troff_option() {
	printf '%s\n' "$1" | sed 's/-/\\-/g'
}
for opt in $(head -n1 "$tmp/help" | grep -o -- '--[a-z][a-z-]*' | sort -u); do
	sed -n '/^\.SH OPTIONS/,/^\.SH /p' "$man1/ap.1" | grep -qF -- "$(troff_option "$opt")" ||
		fail "ap(1) OPTIONS does not document $opt"
done
for cmd in $(cat "$tmp/commands"); do
	"$ap" help "$cmd" >"$tmp/usage" || fail "ap help $cmd exited $?"
	# (`ap help --help` takes --help for a command name.)
	if [ "$cmd" != help ]; then
		"$ap" "$cmd" --help >"$tmp/usage2" || fail "ap $cmd --help exited $?"
		cmp -s "$tmp/usage" "$tmp/usage2" || fail "ap help $cmd and ap $cmd --help differ"
	fi
	awk -v cmd="$cmd" '
		/^\.S[SH] / { in_section = index($0, ".SS \"ap " cmd " ") == 1 || $0 == ".SS \"ap " cmd "\"" }
		in_section' "$man1/ap.1" >"$tmp/section"
	for opt in $(grep -o -- '--[a-z][a-z-]*' "$tmp/usage" | sort -u); do
		case $opt in --config | --help) continue ;; esac
		grep -qF -- "$(troff_option "$opt")" "$tmp/section" ||
			fail "ap(1) does not document '$opt' of ap $cmd (its --help names it)"
	done
done

step "man -l"
have_man=yes
if command -v man >/dev/null 2>&1; then
	for page in "$man1/ap.1" "$man5/ap-aggregator.conf.5" "$man5/ap-operator.conf.5"; do
		MAN_DISABLE_SECCOMP=1 MANWIDTH=80 LC_ALL=C.UTF-8 \
			man --warnings -l -P cat "$page" >"$tmp/page" 2>"$tmp/page.err" ||
			{ cat "$tmp/page.err"; fail "man -l $page"; }
		[ ! -s "$tmp/page.err" ] || { cat "$tmp/page.err"; fail "man -l $page warns"; }
		grep -q '^NAME' "$tmp/page" || fail "man -l $page: no NAME section"
		cp "$tmp/page" "$tmp/$(basename "$page").txt"
	done
	grep -q '^EXIT STATUS' "$tmp/ap.1.txt" || fail "ap(1) has no EXIT STATUS"
	grep -q '^ *ap keygen FILE' "$tmp/ap.1.txt" || fail "ap(1) renders no ap keygen"
	grep -q '^ *operators\.stabilization_ms$' "$tmp/ap-aggregator.conf.5.txt" ||
		fail "ap-aggregator.conf(5) renders no operators.stabilization_ms"
	grep -q 'Default: 10000\.' "$tmp/ap-aggregator.conf.5.txt" ||
		fail "ap-aggregator.conf(5) renders no default"
	grep -q '^ *backoff\.reset_after_ms$' "$tmp/ap-operator.conf.5.txt" ||
		fail "ap-operator.conf(5) renders no backoff.reset_after_ms"
else
	have_man=no
	echo "man is not installed (apt-get install man-db): pages not rendered"
fi

if [ -n "${AP_INST_UNITDIR:-}" ]; then
	step "systemd unit"
	unit=$root$AP_INST_UNITDIR/ap-aggregator.service
	expect_line "$unit" "Type=notify"
	expect_line "$unit" "ExecStart=$AP_INST_BINDIR/ap --config $AP_INST_SYSCONFDIR/ap/aggregator.conf aggregator"
	expect_line "$unit" "StateDirectory=ap"
	expect_line "$unit" "RuntimeDirectory=ap"
	if command -v systemd-analyze >/dev/null 2>&1; then
		# verify wants ExecStart's program to exist: point it at the
		# installed copy.
		mkdir "$tmp/unit"
		sed "s|^ExecStart=$AP_INST_BINDIR/ap |ExecStart=$ap |" "$unit" >"$tmp/unit/ap-aggregator.service"
		SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
			"$tmp/unit/ap-aggregator.service" >"$tmp/verify" 2>&1 ||
			{ cat "$tmp/verify"; fail "systemd-analyze verify"; }
		if grep -i 'ap-aggregator' "$tmp/verify"; then
			fail "systemd-analyze verify complains about the unit"
		fi
	else
		echo "systemd-analyze is not installed: unit not verified"
	fi
fi

if "$ap" help | grep -q '^  aggregator .*(not available yet)'; then
	echo "ap aggregator is not available yet: daemon not started"
else
	step "the installed ap aggregator starts and stops with its installed config"
	# The installed config with its directories moved into the temp dir and
	# a free port.
	sed -e "s|\"$AP_INST_LOCALSTATEDIR/lib/ap\"|\"$tmp/state\"|" \
		-e "s|\"unix:$AP_INST_RUNSTATEDIR/ap/admin.sock\"|\"unix:$tmp/run/admin.sock\"|" \
		-e 's|^listen = .*|listen = "127.0.0.1:0";|' \
		-e 's|^metrics_listen = .*|metrics_listen = "";|' \
		"$confdir/aggregator.conf" >"$tmp/aggregator.conf"
	"$ap" config check "$tmp/aggregator.conf" >/dev/null || fail "the moved config"
	"$ap" --config "$tmp/aggregator.conf" aggregator --port-file "$tmp/port" \
		2>"$tmp/daemon.log" &
	daemon=$!
	tries=0
	while [ ! -s "$tmp/port" ]; do
		kill -0 "$daemon" 2>/dev/null || { cat "$tmp/daemon.log"; fail "the daemon exited"; }
		tries=$((tries + 1))
		[ "$tries" -le 600 ] || { cat "$tmp/daemon.log"; fail "no port file after 60 s"; }
		sleep 0.1
	done
	[ -d "$tmp/state" ] || fail "the daemon did not create its storage.dir"
	[ -S "$tmp/run/admin.sock" ] || fail "the daemon did not create its admin socket"
	kill -TERM "$daemon"
	set +e
	wait "$daemon"
	status=$?
	set -e
	daemon=
	[ "$status" = 0 ] || { cat "$tmp/daemon.log"; fail "the daemon exited $status after SIGTERM"; }
fi

step "reinstall keeps an edited config; uninstall removes the rest"
echo "# edited by the admin" >>"$confdir/aggregator.conf"
run_make install DESTDIR="$root" >"$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log"; fail "make install (again)"; }
tail -n1 "$confdir/aggregator.conf" | grep -qx '# edited by the admin' ||
	fail "a reinstall overwrote an edited aggregator.conf"
grep -q "keeping the existing .*aggregator.conf" "$tmp/install.log" ||
	fail "the reinstall did not say it kept aggregator.conf"
run_make uninstall DESTDIR="$root" >"$tmp/uninstall.log" 2>&1 ||
	{ cat "$tmp/uninstall.log"; fail "make uninstall"; }
find "$root" -type f >"$tmp/left"
[ "$(cat "$tmp/left")" = "$confdir/aggregator.conf" ] ||
	fail "after uninstall, expected only the edited aggregator.conf, found: $(cat "$tmp/left")"

if [ "$have_man" = no ]; then
	exit 77
fi
echo "PASS"
