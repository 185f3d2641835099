#!/bin/bash
# A listener that gRPC gave up on (issue 6: the reconnect storm). gRPC 1.51
# stops accepting on a port for good once accept4 fails with EMFILE, while
# the process lives on: operators that drop could never reconnect. ap
# aggregator must notice, shut down in order and exit 1 so its supervisor
# restarts it. The daemon runs with a descriptor limit of 64 and the test
# holds more raw TCP connections than that; then it checks the log line,
# the exit status, and that a restarted daemon serves on the same store
# with every task still there.
set -u
ap=${AP_BUILDDIR:?run through make check}/ap
py=${PYTHON_PROTO:-/usr/bin/python3}
dir=$(mktemp -d /tmp/ap-emfile-XXXXXX)
daemon=
holder=
trap 'kill -9 $daemon $holder 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; tail -n 30 "$dir/daemon.log"; exit 1; }
now_ms() { date +%s%3N; }

cat > "$dir/aggregator.conf" <<CONF
listen = "127.0.0.1:0";
admin_listen = "unix:$dir/admin.sock";
storage = { dir = "$dir/db"; durability = "nosync"; };
operators = { approved = [ "*" ]; max_sessions = 16; };
auth = { mode = "none"; };
metrics_listen = "";
CONF

start_daemon() { # $1: descriptor limit (soft and hard), or "" for the inherited one
	rm -f "$dir/port"
	if [ -n "$1" ]; then
		(ulimit -n "$1" && exec "$ap" --config "$dir/aggregator.conf" aggregator \
			--port-file "$dir/port") >> "$dir/daemon.log" 2>&1 &
	else
		"$ap" --config "$dir/aggregator.conf" aggregator --port-file "$dir/port" >> "$dir/daemon.log" 2>&1 &
	fi
	daemon=$!
	local deadline=$(($(now_ms) + 60000))
	until [ -s "$dir/port" ]; do
		kill -0 "$daemon" 2>/dev/null || fail "daemon exited at start"
		[ "$(now_ms)" -lt "$deadline" ] || fail "daemon not serving"
		sleep 0.05
	done
}

start_daemon 64
grep -q "file descriptor limit is below" "$dir/daemon.log" || fail "no warning about the low descriptor limit"
"$ap" --config "$dir/aggregator.conf" task create --block-interval 1 --count 5 --quiet > /dev/null \
	|| fail "task create"

# Hold 200 connections open (more than the 64 descriptors the daemon has)
# until the daemon is gone or 60 s pass.
"$py" - "$(cat "$dir/port")" "$daemon" > "$dir/holder.log" 2>&1 <<'PY' &
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(200):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError as e:
        print("connect:", e)
        break
print("held", len(held), flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        break
    time.sleep(0.05)
PY
holder=$!

deadline=$(($(now_ms) + 60000))
while kill -0 "$daemon" 2>/dev/null; do
	[ "$(now_ms)" -lt "$deadline" ] || fail "the daemon kept running with a dead listener"
	sleep 0.05
done
wait "$daemon"
rc=$?
daemon=
[ "$rc" -eq 1 ] || fail "exit status $rc, expected 1"
grep -q "gRPC stopped accepting connections on a listener" "$dir/daemon.log" \
	|| fail "no log line naming the dead listener"
grep -q "shutting down to be restarted" "$dir/daemon.log" || fail "no shutdown reason in the log"
wait "$holder" 2>/dev/null
holder=

# What a supervisor does next: start it again; the store is intact.
start_daemon ""
"$ap" --config "$dir/aggregator.conf" task list --json > "$dir/tasks.json" || fail "task list after restart"
n=$("$py" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$dir/tasks.json")
[ "$n" -eq 5 ] || fail "expected 5 tasks after the restart, found $n"
kill -TERM "$daemon"
wait "$daemon" || fail "restarted daemon did not stop cleanly"
daemon=
echo "PASS: listener failure -> exit 1 -> restart with 5 tasks"
