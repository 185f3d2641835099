#!/bin/bash
# Crash torture (issue 7, point 6): the daemon under `ap stress` load is
# killed with SIGKILL at a random moment, ROUNDS times, and restarted each
# time. After each restart:
#   - recovery time is measured (start to serving: port file written and the
#     admin service answering), and printed;
#   - no created task is lost: every `ap task create` that returned 0 before
#     the kill (a synchronous commit) is listed again;
#   - no task has two owners: each id is listed once, with one owner, and the
#     owners' counts add up to the owned tasks (`ap status --json`);
#   - every orphan is reclaimed once operators return: a short `ap stress`
#     run against the restarted daemon must end with its invariants intact
#     (one ready owner for every eligible task).
#
#   tests/torture/crash_torture.sh [ROUNDS]      (default 20)
# Uses $AP (default ./ap). Everything runs on 127.0.0.1 and a unix socket in
# a temp dir that is removed at the end; every process it starts is stopped.
set -u
ap=${AP:-./ap}
rounds=${1:-20}
dir=$(mktemp -d /tmp/ap-torture-XXXXXX)
daemon=
stress=
trap 'kill -9 $daemon $stress 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

fail() {
	echo "FAIL (round ${round:-0}): $*"
	tail -n 40 "$dir/daemon.log"
	exit 1
}
now_ms() { date +%s%3N; }

cat > "$dir/aggregator.conf" <<CONF
listen = "127.0.0.1:0";
admin_listen = "unix:$dir/admin.sock";
storage = { dir = "$dir/db"; durability = "write_nosync"; };
operators = { approved = [ "*" ]; stabilization_ms = 100; restart_grace_ms = 1000;
              resync_interval_ms = 1000; };
auth = { mode = "none"; };
metrics_listen = "";
log = { level = "info"; };
CONF
task() { "$ap" --config "$dir/aggregator.conf" task "$@"; }

# start: run the daemon, wait until it serves; sets daemon, port and
# recovery (ms). Not called in $(...): its variables must reach the caller.
start() {
	rm -f "$dir/port"
	local t0
	t0=$(now_ms)
	"$ap" --config "$dir/aggregator.conf" aggregator --port-file "$dir/port" >> "$dir/daemon.log" 2>&1 &
	daemon=$!
	local deadline=$((t0 + 120000))
	until [ -s "$dir/port" ] && task list --limit 1 > /dev/null 2>&1; do
		kill -0 "$daemon" 2>/dev/null || fail "the daemon exited during recovery"
		[ "$(now_ms)" -lt "$deadline" ] || fail "the daemon did not serve within 120 s"
		sleep 0.02
	done
	port=$(cat "$dir/port")
	recovery=$(($(now_ms) - t0))
}

# The created tasks that must survive: ids of every create that returned 0.
: > "$dir/created"
create_loop() {
	local i=0
	while :; do
		if task create --id "r${round}-$i" --block-interval 5 > /dev/null 2>&1; then
			echo "r${round}-$i" >> "$dir/created"
		fi
		i=$((i + 1))
	done
}

verify() {
	task list --json > "$dir/list.json" || fail "task list failed after restart"
	"$ap" --config "$dir/aggregator.conf" status --json > "$dir/status.json" ||
		[ $? -eq 3 ] || fail "ap status failed after restart"
	/usr/bin/python3 - "$dir/list.json" "$dir/status.json" "$dir/created" <<'PY' || exit 1
import json, sys, collections
tasks = json.load(open(sys.argv[1]))
status = json.load(open(sys.argv[2]))
created = [l.strip() for l in open(sys.argv[3]) if l.strip()]
ids = [t["id"] for t in tasks]
dups = [i for i, n in collections.Counter(ids).items() if n > 1]
assert not dups, f"listed twice: {dups[:5]}"
lost = sorted(set(created) - set(ids))
assert not lost, f"created tasks lost: {lost[:10]} ({len(lost)})"
owned = collections.Counter(t["owner"] for t in tasks if t["owner"])
assert dict(owned) == status["owners"], (dict(owned), status["owners"])
assert status["tasks"]["total"] == len(tasks), (status["tasks"], len(tasks))
print(f"tasks={len(tasks)} created_checked={len(created)} owners={len(owned)} orphaned={status['orphaned']}")
PY
}

echo "crash torture: $rounds rounds, daemon under ap stress, SIGKILL at a random moment"
round=0
start
task create --count 200 --block-interval 5 --id base > /dev/null || fail "initial create"
for round in $(seq 1 "$rounds"); do
	"$ap" --config "$dir/aggregator.conf" stress --target "127.0.0.1:$port" \
		--admin "unix:$dir/admin.sock" --operators 50 --duration 30 --task-ops 20 \
		--tasks 50 --keep --seed "$round" --no-progress --json > "$dir/stress.out" 2>&1 &
	stress=$!
	create_loop &
	creator=$!
	# A random moment 0.5 to 4.5 s into the storm.
	sleep "$((RANDOM % 4)).$((RANDOM % 10))5"
	kill -9 "$daemon"
	wait "$daemon" 2>/dev/null
	kill "$creator" 2>/dev/null
	wait "$creator" 2>/dev/null
	kill -9 "$stress" 2>/dev/null
	wait "$stress" 2>/dev/null
	start
	line=$(verify) || fail "invariants after restart"
	# Operators return: orphans must be reclaimed, every invariant must hold.
	"$ap" --config "$dir/aggregator.conf" stress --target "127.0.0.1:$port" \
		--admin "unix:$dir/admin.sock" --operators 20 --duration 2 --task-ops 0 \
		--tasks 0 --keep --seed "$round" --no-progress --json > "$dir/check.out" 2>&1 ||
		{ cat "$dir/check.out"; fail "invariants do not hold once operators return"; }
	echo "round $round/$rounds: recovery ${recovery} ms, $line, invariants OK"
done
echo "crash torture: $rounds/$rounds rounds passed"
