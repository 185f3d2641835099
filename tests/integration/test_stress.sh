#!/bin/sh
# `ap stress --spawn` inside make check (issue 6):
#
#   1. the storm: 200 simulated operators flapping for 30 s against a
#      spawned aggregator must end with exit 0, a JSON report of more than
#      0 reconnects and 0 violations, and every invariant checked;
#   2. the checker can fail: with --debug-drop-operator 0, operator 0 keeps
#      its first session (and so the tasks it took) and ignores what it is
#      sent, so its received set differs from what it owns: exit 1 and a
#      received_equals_owned violation.
#
# Sanitizer builds (detected from the libraries `ap` links) run the daemon
# and the harness several times slower, so their storm is shorter and
# their RSS is reported, not checked (ASan keeps freed memory in
# quarantine, TSan its shadow); threads and fds are checked all the same. AP_STRESS_OPERATORS and
# AP_STRESS_DURATION (seconds) override the storm's size; AP_STRESS_SCALE
# (a percentage, default 100) scales both for a slow machine. `make check`
# sets AP_BUILDDIR and PYTHON_PROTO.
set -u

: "${AP_BUILDDIR:?run through make check}"
ap=$AP_BUILDDIR/ap
python=${PYTHON_PROTO:-/usr/bin/python3}
[ -x "$ap" ] || { echo "FAIL: $ap is not built" >&2; exit 1; }

sanitizer=none
case $(ldd "$ap" 2>/dev/null) in
*libtsan*) sanitizer=thread ;;
*libasan*) sanitizer=address ;;
esac
# Measured on 2 cores (the whole script, alone): plain 200/30 38 s; ASan
# 200/30 39 s, 200/10 19 s; TSan 200/30 40 s, 100/10 18 s. make check runs
# other tests beside this one, so the sanitizer storms are shorter and
# gentler (--max-rate) than the plain one.
case $sanitizer in
none) operators=200 duration=30 extra= ;;
*) operators=200 duration=15 extra="--max-rate 250 --rss-slack-mb -1 --settle-timeout 180" ;;
esac
operators=${AP_STRESS_OPERATORS:-$operators}
duration=${AP_STRESS_DURATION:-$duration}
scale=${AP_STRESS_SCALE:-100}
operators=$((operators * scale / 100))
duration=$((duration * scale / 100))
[ "$operators" -ge 2 ] || operators=2
[ "$duration" -ge 1 ] || duration=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ap-test-stress.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# Print KEY=VALUE lines from a report: passed, violations, reconnects,
# daemon_dir, and each invariant's checked flag and violation count.
summary() {
	"$python" - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("passed=%s" % ("yes" if r["passed"] else "no"))
for k in ("violations", "reconnects", "sessions_opened", "superseded", "daemon_dir"):
    print("%s=%s" % (k, r[k]))
for name, inv in r["invariants"].items():
    print("checked_%s=%s" % (name, "yes" if inv["checked"] else "no"))
    print("violations_%s=%d" % (name, inv["violations"]))
EOF
}

value() {
	sed -n "s/^$1=//p" "$2"
}

echo "== storm: $operators operators, $duration s (sanitizer: $sanitizer)"
start=$(date +%s)
"$ap" stress --spawn --operators "$operators" --duration "$duration" --json \
	--no-progress $extra >"$tmp/storm.json" 2>"$tmp/storm.err"
status=$?
echo "   exit $status after $(($(date +%s) - start)) s"
cat "$tmp/storm.err" >&2
if ! summary "$tmp/storm.json" >"$tmp/storm.sum" 2>"$tmp/sum.err"; then
	cat "$tmp/storm.json" "$tmp/sum.err" >&2
	fail "the storm did not print a JSON report"
fi
# An indented copy of the report for the test log.
"$python" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps(r, indent=1))' \
	"$tmp/storm.json" | head -n 200
dir=$(value daemon_dir "$tmp/storm.sum")
if [ "$status" != 0 ] || [ "$(value passed "$tmp/storm.sum")" != yes ]; then
	[ -n "$dir" ] && [ -f "$dir/daemon.log" ] && tail -n 50 "$dir/daemon.log" >&2
	[ -n "$dir" ] && echo "(daemon dir kept: $dir)" >&2
	fail "ap stress exited $status with $(value violations "$tmp/storm.sum") violations"
fi
[ "$(value violations "$tmp/storm.sum")" = 0 ] || fail "violations reported with exit 0"
[ "$(value reconnects "$tmp/storm.sum")" -gt 0 ] || fail "no reconnects were made"
[ "$(value superseded "$tmp/storm.sum")" -gt 0 ] || fail "no session was ever superseded"
for inv in sessions one_owner received_equals_owned no_double_delivery resources \
	statuses stabilization quiescence daemon; do
	[ "$(value "checked_$inv" "$tmp/storm.sum")" = yes ] || fail "invariant $inv was not checked"
done

echo "== the checker fails a run whose operator 0 ignores its messages"
"$ap" stress --spawn --operators 10 --duration 2 --json --no-progress \
	--debug-drop-operator 0 $extra >"$tmp/neg.json" 2>"$tmp/neg.err"
status=$?
summary "$tmp/neg.json" >"$tmp/neg.sum" || fail "no JSON report from the failing run"
dir=$(value daemon_dir "$tmp/neg.sum")
case $dir in /tmp/ap-stress-*) rm -rf "$dir" ;; esac
[ "$status" = 1 ] || { cat "$tmp/neg.err" "$tmp/neg.json" >&2; fail "exit $status, not 1"; }
[ "$(value passed "$tmp/neg.sum")" = no ] || fail "the run passed"
[ "$(value violations_received_equals_owned "$tmp/neg.sum")" -gt 0 ] ||
	fail "no received_equals_owned violation: $(cat "$tmp/neg.sum")"

echo "== usage errors exit 2"
"$ap" stress --operators 0 >/dev/null 2>&1
[ $? = 2 ] || fail "--operators 0 did not exit 2"
"$ap" stress --spawn --target 127.0.0.1:1 --admin unix:/nonexistent >/dev/null 2>&1
[ $? = 2 ] || fail "--spawn with --target did not exit 2"
"$ap" stress --bogus >/dev/null 2>&1
[ $? = 2 ] || fail "an unknown option did not exit 2"
echo "PASS"
