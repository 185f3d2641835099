#!/bin/bash
# Partition test (issue 7, point 7): an operator in its own network
# namespace loses its link without a FIN (the veth goes down inside the
# namespace: packets vanish, no socket is closed). The daemon must notice
# through HTTP/2 keepalive within keepalive_time_ms + keepalive_timeout_ms
# (plus slack), move the operator's tasks to the operator that is still
# reachable, and, once the link returns, the partitioned operator reconnects
# by itself and takes tasks again.
#
# Needs root and network namespaces (ip netns, veth, from iproute2); exits
# 77 (automake's SKIP) with a clear message where they are not permitted.
# Addresses are the project's own test hosts on a veth pair it creates
# (10.231.N.1/30 and .2), and are removed at exit.
set -u
ap=${AP_BUILDDIR:?run through make check}/ap
tag=$$
ns=ap-part-$tag
host_if=apa$((tag % 100000))
peer_if=apb$((tag % 100000))
net=$((tag % 200 + 20))
host_ip=10.231.$net.1
peer_ip=10.231.$net.2
keepalive_ms=1000
keepalive_timeout_ms=1000
dir=$(mktemp -d /tmp/ap-part-XXXXXX)
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	ip link del "$host_if" 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*"
	for f in "$dir"/*.log; do echo "---- $f (tail)"; tail -n 30 "$f"; done
	exit 1
}

if ! ip netns add "$ns" 2>/dev/null; then
	echo "SKIP: network namespaces are not permitted here (ip netns add failed)"
	exit 77
fi
ip link add "$host_if" type veth peer name "$peer_if" || fail "veth"
ip link set "$peer_if" netns "$ns" || fail "move veth"
ip addr add "$host_ip/30" dev "$host_if" && ip link set "$host_if" up || fail "host side"
ip netns exec "$ns" ip addr add "$peer_ip/30" dev "$peer_if" || fail "peer addr"
ip netns exec "$ns" ip link set "$peer_if" up && ip netns exec "$ns" ip link set lo up || fail "peer up"

now_ms() { date +%s%3N; }

# wait_for SECONDS COMMAND...: poll every 50 ms until COMMAND succeeds.
wait_for() {
	local deadline=$(($(now_ms) + $1 * 1000))
	shift
	until "$@"; do
		[ "$(now_ms)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

cat > "$dir/aggregator.conf" <<CONF
listen = "$host_ip:0";
admin_listen = "unix:$dir/admin.sock";
storage = { dir = "$dir/db"; };
operators = {
  approved = [ "*" ];
  stabilization_ms = 200;
  restart_grace_ms = 0;
  resync_interval_ms = 1000;
  keepalive_time_ms = $keepalive_ms;
  keepalive_timeout_ms = $keepalive_timeout_ms;
};
auth = { mode = "none"; };
metrics_listen = "";
CONF
printf 'key_file = "";\nping_interval_ms = 500;\n' > "$dir/operator.conf"

"$ap" --config "$dir/aggregator.conf" aggregator --port-file "$dir/port" > "$dir/daemon.log" 2>&1 &
pids+=($!)
wait_for 60 test -s "$dir/port" || fail "daemon did not write its port file"
port=$(cat "$dir/port")
task() { "$ap" --config "$dir/aggregator.conf" task "$@"; }

near=0x00000000000000000000000000000000000000a1
far=0x00000000000000000000000000000000000000b2
"$ap" --config "$dir/operator.conf" operator --aggregator "$host_ip:$port" --address "$near" \
	> "$dir/near.log" 2>&1 &
pids+=($!)
ip netns exec "$ns" "$ap" --config "$dir/operator.conf" operator \
	--aggregator "$host_ip:$port" --address "$far" > "$dir/far.log" 2>&1 &
pids+=($!)

# owned ADDRESS: how many tasks ListTasks says ADDRESS owns.
owned() { task list --json | grep -o "\"owner\": *\"$1\"" | wc -l; }
ready() { "$ap" --config "$dir/aggregator.conf" status --json --db "$dir/db" |
	grep -q "\"address\":\"$1\",\"connected\":true"; }
wait_for 60 ready "$near" || fail "near operator never connected"
wait_for 60 ready "$far" || fail "far operator never connected"
# Conditions are functions: wait_for re-evaluates them on every poll.
owns() { test "$(owned "$1")" -eq "$2"; }
log_count_at_least() { test "$(grep -c "$2" "$dir/$1")" -ge "$3"; }
# Both must be ready before the tasks exist, so each gets half.
wait_for 30 log_count_at_least daemon.log 'Connection stabilized' 2 || fail "not both ready"
task create --count 10 --block-interval 5 --id part > /dev/null || fail "task create"
wait_for 30 owns "$far" 5 || fail "far operator does not own 5 tasks: $(owned "$far")"
wait_for 30 log_count_at_least far.log 'Created new subscription' 5 ||
	fail "far operator did not subscribe its tasks"

# The partition: the link vanishes inside the namespace, no FIN is sent.
cut=$(now_ms)
ip netns exec "$ns" ip link set "$peer_if" down || fail "link down"
bound_s=$(((keepalive_ms + keepalive_timeout_ms) / 1000 + 8))
wait_for "$bound_s" owns "$far" 0 ||
	fail "far operator still owns $(owned "$far") tasks ${bound_s}s after the cut"
detected=$(($(now_ms) - cut))
test "$(owned "$near")" -eq 10 || fail "near operator owns $(owned "$near"), not 10"
echo "partition detected and tasks reassigned in ${detected} ms" \
	"(keepalive ${keepalive_ms} + ${keepalive_timeout_ms} ms)"

# The link returns: the far operator reconnects on its own.
ip netns exec "$ns" ip link set "$peer_if" up || fail "link up"
wait_for 90 ready "$far" || fail "far operator did not reconnect"
wait_for 30 log_count_at_least daemon.log 'Connection stabilized' 3 ||
	fail "far operator's new session never became ready"
# New tasks go to the least loaded operator: the one that came back.
task create --count 4 --block-interval 5 --id back > /dev/null || fail "task create"
wait_for 30 owns "$far" 4 || fail "returning operator owns $(owned "$far"), not 4"
# 5 subscriptions before the cut, 4 after the return.
wait_for 30 log_count_at_least far.log 'Created new subscription' 9 ||
	fail "returning operator did not receive its new tasks"
echo "far operator reconnected after the link returned and owns 4 new tasks"
exit 0
