#!/bin/bash
# Metrics during a storm (issue 8, point 1): /metrics is scraped before and
# after an `ap stress` run against the daemon, and the counters must have
# moved by what the storm reports it did: sessions accepted, supersedes,
# disconnects, messages sent; and the gauges must be back at rest after the
# harness closed every session. Also scraped while the storm runs: the
# endpoint answers under load.
set -u
ap=${AP_BUILDDIR:?run through make check}/ap
py=${PYTHON_PROTO:-/usr/bin/python3}
dir=$(mktemp -d /tmp/ap-metrics-XXXXXX)
daemon=
trap 'kill -9 $daemon 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; tail -n 30 "$dir/daemon.log"; exit 1; }
now_ms() { date +%s%3N; }

cat > "$dir/aggregator.conf" <<CONF
listen = "127.0.0.1:0";
admin_listen = "unix:$dir/admin.sock";
storage = { dir = "$dir/db"; durability = "nosync"; };
operators = { approved = [ "*" ]; stabilization_ms = 50; restart_grace_ms = 0; };
auth = { mode = "none"; };
metrics_listen = "127.0.0.1:0";
CONF
"$ap" --config "$dir/aggregator.conf" aggregator --port-file "$dir/port" > "$dir/daemon.log" 2>&1 &
daemon=$!
deadline=$(($(now_ms) + 60000))
until [ -s "$dir/port" ] && grep -q "Metrics served" "$dir/daemon.log"; do
	kill -0 "$daemon" 2>/dev/null || fail "daemon exited"
	[ "$(now_ms)" -lt "$deadline" ] || fail "daemon not serving"
	sleep 0.05
done
port=$(cat "$dir/port")
mport=$(sed -n 's/.*Metrics served.* port=\([0-9]*\).*/\1/p' "$dir/daemon.log" | head -n1)
[ -n "$mport" ] || fail "no metrics port in the log"
scrape() {
	"$py" -c 'import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10).read().decode())' "$mport"
}
scrape > "$dir/before.txt" || fail "scrape before"
"$ap" --config "$dir/aggregator.conf" stress --target "127.0.0.1:$port" --admin "unix:$dir/admin.sock" \
	--operators 40 --duration 5 --task-ops 10 --keep --no-progress --json > "$dir/stress.json" 2> "$dir/stress.err" &
stress=$!
sleep 2
scrape > "$dir/during.txt" || fail "scrape during the storm"
wait "$stress" || { cat "$dir/stress.err"; fail "ap stress reported a violation"; }
scrape > "$dir/after.txt" || fail "scrape after"
"$py" - "$dir/before.txt" "$dir/during.txt" "$dir/after.txt" "$dir/stress.json" <<'PY' || fail "counters"
import json, sys
def parse(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out
before, during, after = (parse(p) for p in sys.argv[1:4])
storm = json.load(open(sys.argv[4]))
d = lambda k: after[k] - before[k]
assert storm["passed"], "stress failed"
assert during["ap_operator_connects_total"] > before["ap_operator_connects_total"], "no movement during the storm"
# The daemon accepted the sessions the harness opened: all but the few the
# harness gave up on before the server took them (it opens them without
# waiting; a slow, sanitized daemon may not have accepted one yet).
opened = storm["sessions_opened"]
assert 0.9 * opened <= d("ap_operator_connects_total") <= opened, (d("ap_operator_connects_total"), opened)
assert 0 < d("ap_operator_reconnects_total") <= d("ap_operator_connects_total")
# Supersedes the harness saw (ABORTED) were counted by the daemon.
assert d("ap_sessions_superseded_total") >= storm["superseded"], (d("ap_sessions_superseded_total"), storm["superseded"])
# Every message an operator received was a successful send.
assert d('ap_task_sends_total{result="ok"}') >= storm["messages"] > 0, (d('ap_task_sends_total{result="ok"}'), storm["messages"])
assert d("ap_send_duration_seconds_count") >= storm["messages"]
assert d("ap_reconnect_to_first_task_seconds_count") > 0
moved = d('ap_assignments_total{reason="reassign"}') + d('ap_assignments_total{reason="reclaim"}')
assert moved > 0, moved
# At rest: the harness closed every session, nothing is orphaned, and the
# task gauge matches what the storm's final check counted.
assert after["ap_operators_connected"] == 0, after["ap_operators_connected"]
assert after['ap_tasks{status="enabled"}'] == storm["tasks"]["enabled"], (after['ap_tasks{status="enabled"}'], storm["tasks"])
sends = d('ap_task_sends_total{result="ok"}')
print(f"metrics moved with the storm: connects +{d('ap_operator_connects_total'):.0f} (harness opened {storm['sessions_opened']}), "
      f"superseded +{d('ap_sessions_superseded_total'):.0f} (seen {storm['superseded']}), "
      f"sends ok +{sends:.0f} (received {storm['messages']}), moved {moved:.0f}")
PY
kill -TERM "$daemon"
wait "$daemon" || fail "daemon exit status"
daemon=
exit 0
