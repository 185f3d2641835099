#!/usr/bin/python3
"""Write the seed corpora of the libFuzzer targets (tests/fuzz/corpus/).

The seeds are committed; run this again only when a .proto file, a
target's input format or conf/*.conf changes:

    /usr/bin/python3 tests/fuzz/make_corpus.py        (from the source tree)

It compiles ap's .proto files with protoc --python_out into a temp dir and
encodes small valid (and a few deliberately invalid) requests and records
with Debian's python3-protobuf, an encoder independent of protobuf-c.
Each seed is the input format of its target (see the comment at the top of
each tests/fuzz/fuzz_*.c): one selector byte, then the message; the config
seeds are plain configuration files.

Needs python3-protobuf, protobuf-compiler (or python3-grpc-tools) and grpc-proto.
"""

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
PROTO_DIR = os.path.join(TOP, "proto")
CORPUS = os.path.join(HERE, "corpus")
INCLUDE = os.environ.get("PROTO_INCLUDE", "/usr/include")
GRPC_PROTO_DIR = os.environ.get("GRPC_PROTO_DIR", "/usr/share/grpc-proto")

# Keep in step with tests/fuzz/fuzz.h and fuzz_node.c.
OWNER = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"   # conf/dev-operator.key
OWNER_MIXED = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
OTHER = "0x00000000000000000000000000000000000000f2"
STRANGER = "0x1111111111111111111111111111111111111111"
# ap_auth_sign(conf/dev-operator.key, address, 1700000000) for the address
# in lower case and in EIP-55 case (fuzz_node verifies at that clock).
TOKEN_OWNER = ("Bearer 1700000000.a823696c227cb40ae5ff311cd8352203f4a3dcf1fa10380e"
               "44e2e4d26be7960e5c2467fb784af372d27780f631fdbd917b12599079343dd6f1"
               "a0137a7945f4091b")
TOKEN_OWNER_MIXED = ("Bearer 1700000000.9c32e72b7498ef30cafa2ca40e3b89ba452ed1104397fe"
                     "a3f7dae316d0fc94586b52b7bf85cb18a58a3b2da90cb04516f2ede404b6619d"
                     "83f6b98828896079591b")


def die(msg):
    sys.stderr.write("make_corpus.py: %s\n" % msg)
    sys.exit(2)


def protoc():
    path = os.environ.get("PROTOC") or shutil.which("protoc")
    if path:
        return [path]
    try:
        importlib.import_module("grpc_tools.protoc")
        return [sys.executable, "-m", "grpc_tools.protoc"]
    except ImportError:
        die("protoc not found: install protobuf-compiler (apt-get install -y protobuf-compiler)")


def load_modules(out):
    files = ["avs.proto", "node.proto", "admin.proto", "store.proto"]
    cmd = protoc() + ["--python_out=" + out, "-I" + PROTO_DIR, "-I" + INCLUDE] + files
    if subprocess.call(cmd, cwd=PROTO_DIR) != 0:
        die("%s failed" % " ".join(cmd))
    cmd = protoc() + ["--python_out=" + out, "-I" + GRPC_PROTO_DIR, "grpc/health/v1/health.proto"]
    if subprocess.call(cmd) != 0:
        die("%s failed (grpc/health/v1/health.proto comes from grpc-proto)" % " ".join(cmd))
    sys.path.insert(0, out)
    try:
        mods = [importlib.import_module(m) for m in ("avs_pb2", "node_pb2", "admin_pb2", "store_pb2")]
        # Not as grpc.health.v1: python3-grpcio's own "grpc" package would win.
        path = os.path.join(out, "grpc", "health", "v1", "health_pb2.py")
        spec = importlib.util.spec_from_file_location("ap_health_pb2", path)
        health = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(health)
        return mods + [health]
    except ImportError as e:
        die("cannot import the generated modules (%s): install python3-protobuf" % e)


class Writer:
    def __init__(self, target):
        self.dir = os.path.join(CORPUS, target)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.n = 0

    def put(self, name, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        with open(os.path.join(self.dir, name), "wb") as f:
            f.write(data)
        self.n += 1

    def msg(self, name, selector, message):
        self.put(name, bytes([selector]) + message.SerializeToString())


def triggers(avs):
    """One TaskTrigger of each kind, valid, by kind name."""
    from google.protobuf import struct_pb2
    t = {}
    x = avs.TaskTrigger(name="block", type=avs.TRIGGER_TYPE_BLOCK, id="t-block")
    x.block.config.interval = 10
    x.block.config.chain_id = 1
    t["block"] = x
    x = avs.TaskTrigger(name="event", type=avs.TRIGGER_TYPE_EVENT)
    q = x.event.config.queries.add()
    q.addresses.append(OTHER)
    q.topics.append("0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")
    q.max_events_per_block = 5
    x.event.config.cooldown_seconds = 30
    x.event.config.chain_id = 11155111
    t["event"] = x
    x = avs.TaskTrigger(name="cron")
    x.cron.config.schedules.extend(["*/5 * * * *", "0 0 * * 1"])
    t["cron"] = x
    x = avs.TaskTrigger(name="fixed", type=avs.TRIGGER_TYPE_FIXED_TIME)
    x.fixed_time.config.epochs.extend([1700000000000, 1800000000000])
    t["fixed"] = x
    x = avs.TaskTrigger(name="manual", type=avs.TRIGGER_TYPE_MANUAL)
    data = struct_pb2.Value()
    data.struct_value.update({"amount": 12.5, "to": OTHER, "ok": True, "tags": ["a", "b"]})
    x.manual.config.data.CopyFrom(data)
    t["manual"] = x
    return t


def node_corpus(avs, node, health):
    from google.protobuf import struct_pb2
    w = Writer("node")

    def sel(kind, who=0):
        return kind + 7 * who

    w.msg("health-empty", sel(0), node.HealthCheckRequest())
    w.msg("health-address", sel(0), node.HealthCheckRequest(operator_address=OWNER))

    def checkin(address):
        c = node.Checkin(id="op-1", address=address, signature="sig", version="v1.9.6",
                         metricsPort=9090, remoteIP="10.0.0.7", block_number=19000000,
                         event_count=42)
        c.status.uptime = 3600
        c.status.queueDepth = 2
        c.status.last_heartbeat.seconds = 1700000000
        c.supported_chain_ids.extend([1, 11155111])
        return c
    w.msg("ping-owner", sel(1), checkin(OWNER))
    w.msg("ping-other", sel(1), checkin(OTHER.upper().replace("0X", "0x")))
    w.msg("ping-stranger", sel(1), checkin(STRANGER))
    w.msg("ping-not-an-address", sel(1), checkin("0xnothex"))

    def sync(address, clock=12345, caps=(True, True, True), chains=(1,)):
        r = node.SyncMessagesReq(id="op-1", address=address, signature=b"\x01\x02",
                                 monotonic_clock=clock)
        r.capabilities.event_monitoring, r.capabilities.block_monitoring, \
            r.capabilities.time_monitoring = caps
        r.supported_chain_ids.extend(chains)
        return r
    w.msg("sync-other", sel(2), sync(OTHER))
    w.msg("sync-other-block-only", sel(2), sync(OTHER, caps=(False, True, False), chains=(5, 1)))
    w.msg("sync-other-no-capabilities", sel(2),
          node.SyncMessagesReq(address=OTHER, monotonic_clock=1))
    w.msg("sync-owner", sel(2), sync(OWNER))
    w.msg("sync-negative-clock", sel(2), sync(OTHER, clock=-1))
    w.msg("sync-stranger", sel(2), sync(STRANGER))

    for who, name in ((0, "none"), (1, "owner"), (2, "other"), (3, "owner-mixed")):
        w.msg("ack-%s" % name, sel(3, who), node.AckMessageReq(id="fz-block"))
    w.msg("ack-owner-unknown", sel(3, 1), node.AckMessageReq(id="nope"))

    def notify(address, task, request_id="req-1", kind="block"):
        n = node.NotifyTriggersReq(address=address, signature="sig", task_id=task,
                                   trigger_request_id=request_id, chain_id=1)
        value = struct_pb2.Value(number_value=19000001)
        if kind == "block":
            n.trigger_type = avs.TRIGGER_TYPE_BLOCK
            n.block_trigger.data.CopyFrom(value)
        elif kind == "event":
            n.trigger_type = avs.TRIGGER_TYPE_EVENT
            v = struct_pb2.Value()
            v.struct_value.update({"tx": "0xabc", "log_index": 3})
            n.event_trigger.data.CopyFrom(v)
        elif kind == "cron":
            n.trigger_type = avs.TRIGGER_TYPE_CRON
            n.cron_trigger.data.CopyFrom(value)
        elif kind == "fixed":
            n.trigger_type = avs.TRIGGER_TYPE_FIXED_TIME
            n.fixed_time_trigger.data.CopyFrom(value)
        else:
            n.trigger_type = avs.TRIGGER_TYPE_MANUAL
            n.manual_trigger.data.CopyFrom(struct_pb2.Value(string_value="run"))
        return n
    for task, kind in (("fz-block", "block"), ("fz-event", "event"), ("fz-cron", "cron"),
                       ("fz-fixed", "fixed"), ("fz-manual", "manual"), ("fz-once", "block"),
                       ("fz-late", "block"), ("fz-early", "block"), ("fz-off", "block"),
                       ("nope", "block")):
        w.msg("notify-owner-%s" % task, sel(4), notify(OWNER, task, kind=kind))
    w.msg("notify-owner-mixed", sel(4), notify(OWNER_MIXED, "fz-block", "req-2"))
    w.msg("notify-owner-no-request-id", sel(4), notify(OWNER, "fz-block", ""))
    w.msg("notify-other", sel(4), notify(OTHER, "fz-block"))
    w.msg("notify-stranger", sel(4), notify(STRANGER, "fz-block"))
    w.msg("notify-no-task", sel(4), notify(OWNER, ""))

    w.put("auth-owner", bytes([sel(5, 1)]) + TOKEN_OWNER.encode())
    w.put("auth-owner-mixed", bytes([sel(5, 3)]) + TOKEN_OWNER_MIXED.encode())
    w.put("auth-owner-0x", bytes([sel(5, 1)]) + TOKEN_OWNER.replace(".", ".0x").encode())
    w.put("auth-wrong-signer", bytes([sel(5, 2)]) + TOKEN_OWNER.encode())
    w.put("auth-expired", bytes([sel(5, 1)]) + TOKEN_OWNER.replace("1700000000", "1600000000").encode())
    w.put("auth-malformed", bytes([sel(5, 1)]) + b"Bearer 1700000000.zz")
    w.put("auth-missing", bytes([sel(5, 1)]))
    w.msg("grpc-health-empty", sel(6), health.HealthCheckRequest())
    w.msg("grpc-health-node", sel(6), health.HealthCheckRequest(service="aggregator.Node"))
    w.msg("grpc-health-unknown", sel(6), health.HealthCheckRequest(service="other.Service"))
    return w.n


def admin_corpus(avs, admin):
    w = Writer("admin")
    t = triggers(avs)

    def new(id_, trigger, **kw):
        n = admin.NewTask(id=id_, name="seed %s" % (id_ or "ulid"), **kw)
        if trigger is not None:
            n.trigger.CopyFrom(trigger)
        return n

    def create(name, *tasks):
        w.msg("create-" + name, 0, admin.CreateTasksReq(tasks=list(tasks)))
    for kind, trig in sorted(t.items()):
        create(kind, new("seed-" + kind, trig, max_execution=5, start_at=1700000000000,
                         expired_at=4102444800000))
    create("every-kind", *[new("", trig) for _, trig in sorted(t.items())])
    create("empty")
    create("no-trigger", new("seed-none", None))
    create("bad-id", new("bad id!", t["block"]))
    create("long-id", new("x" * 65, t["block"]))
    create("negative", new("seed-neg", t["block"], max_execution=-1))
    mismatch = avs.TaskTrigger()
    mismatch.CopyFrom(t["block"])
    mismatch.type = avs.TRIGGER_TYPE_CRON
    create("type-mismatch", new("seed-mismatch", mismatch))
    zero = avs.TaskTrigger()
    zero.block.config.interval = 0
    create("block-interval-0", new("seed-zero", zero))
    create("duplicate", new("seed-dup", t["block"]), new("seed-dup", t["cron"]))
    create("fixture-id", new("fz-block", t["block"]))

    w.msg("enable-fz-off", 1, admin.SetTaskEnabledReq(id="fz-off", enabled=True))
    w.msg("disable-fz-block", 1, admin.SetTaskEnabledReq(id="fz-block", enabled=False))
    w.msg("enable-unknown", 1, admin.SetTaskEnabledReq(id="nope", enabled=True))
    w.msg("enable-no-id", 1, admin.SetTaskEnabledReq(enabled=True))
    w.msg("delete-fz-cron", 2, admin.TaskIdReq(id="fz-cron"))
    w.msg("delete-unknown", 2, admin.TaskIdReq(id="nope"))
    w.msg("delete-no-id", 2, admin.TaskIdReq())
    w.msg("list-default", 3, admin.ListTasksReq())
    w.msg("list-page", 3, admin.ListTasksReq(after="fz-c", limit=2))
    w.msg("list-huge-limit", 3, admin.ListTasksReq(limit=4000000000))
    w.msg("operators", 4, admin.ListOperatorsReq())
    return w.n


def record_corpus(avs, store):
    w = Writer("record")
    t = triggers(avs)
    version = b"\x01"

    def rec(name, selector, message, v=version):
        w.put(name, bytes([selector]) + v + message.SerializeToString())
    for kind, trig in sorted(t.items()):
        r = store.TaskRecord(id="rec-" + kind, name=kind, status=store.TASK_ENABLED,
                             max_execution=10, execution_count=3, start_at=1700000000000,
                             expired_at=4102444800000, created_at=1700000000000)
        r.trigger.CopyFrom(trig)
        rec("task-" + kind, 0, r)
    for status in (store.TASK_DISABLED, store.TASK_COMPLETED, store.TASK_FAILED, 7):
        r = store.TaskRecord(id="rec-status", status=status)
        r.trigger.CopyFrom(t["block"])
        rec("task-status-%d" % status, 0, r)
    rec("task-no-trigger", 0, store.TaskRecord(id="rec-none"))
    r = store.TaskRecord(id="rec-v2")
    r.trigger.CopyFrom(t["cron"])
    rec("task-version-2", 0, r, v=b"\x02")
    w.put("task-empty", b"\x00")
    w.put("task-version-only", b"\x00\x01")

    rec("assignment-owner", 1, store.AssignmentRecord(owner=OWNER, generation=3,
                                                      assigned_at=1700000000000))
    rec("assignment-upper", 1, store.AssignmentRecord(owner=OWNER.upper().replace("0X", "0x"),
                                                      generation=1))
    rec("assignment-orphan", 1, store.AssignmentRecord(owner="", generation=0))
    rec("assignment-bad-owner", 1, store.AssignmentRecord(owner="0x123", generation=9))

    o = store.OperatorRecord(address=OWNER, monotonic_clock=99, has_capabilities=True,
                             event_monitoring=True, block_monitoring=False,
                             time_monitoring=True, last_connect_ms=1700000000000,
                             last_disconnect_ms=1700000001000, connected=True, connects=4,
                             disconnects=3, last_ping_ms=1700000002000, version="v1.9.6",
                             block_number=19000000, event_count=7, metrics_port=9090,
                             remote_ip="10.0.0.7", uptime=3600, queue_depth=1)
    o.chain_ids.extend([1, 11155111])
    rec("operator-owner", 2, o)
    many = store.OperatorRecord(address=OTHER)
    many.chain_ids.extend(range(1, 21))
    rec("operator-20-chains", 2, many)
    rec("operator-bad-address", 2, store.OperatorRecord(address="operator"))
    return w.n


CONFIG_SEEDS = {
    "minimal-aggregator.conf": 'listen = "127.0.0.1:0";\nstorage = { dir = "/tmp/x"; };\n',
    "tcp-admin.conf": 'admin_listen = "127.0.0.1:2207";\nadmin = { token = "secret"; };\n'
                      'auth = { mode = "none"; max_skew_s = 60; };\n',
    "tcp-admin-no-token.conf": 'admin_listen = "127.0.0.1:2207";\n',
    "tls.conf": 'tls = { cert_file = "c.pem"; key_file = "k.pem"; client_ca_file = "ca.pem"; };\n',
    "tls-cert-only.conf": 'tls = { cert_file = "c.pem"; };\n',
    "approved-wildcard.conf": 'operators = { approved = [ "*" ]; max_sessions = 5; };\n',
    "approved-mixed.conf": 'operators = { approved = [ "%s", "%s" ];\n'
                           '  stabilization_ms = 0; restart_grace_ms = 0; };\n' % (OWNER_MIXED, OTHER),
    "wrong-types.conf": 'listen = 2206;\nticker = { threads = "two"; };\nlog = { level = "loud"; };\n',
    "out-of-range.conf": 'max_message_bytes = 12;\noperators = { max_sessions = 0L; };\n',
    "unknown-key.conf": 'listen = "127.0.0.1:2206";\nlisten_typo = 1;\n',
    "include-self.conf": '@include "input.conf"\nlisten = "127.0.0.1:1";\n',
    "syntax-error.conf": 'storage = { dir = "./data" \n',
    "minimal-operator.conf": 'aggregator = "127.0.0.1:2206";\naddress = "%s";\n'
                             'chain_ids = [ 1, 11155111 ];\n' % OWNER_MIXED,
    "operator-backoff.conf": 'backoff = { initial_ms = 5000; max_ms = 1000; factor = 1; jitter = 0.5; };\n',
    "operator-capabilities.conf": 'capabilities = { event_monitoring = false; '
                                  'block_monitoring = true; time_monitoring = false; };\n'
                                  'ping_interval_ms = 100;\nlog = { format = "json"; file = ""; };\n',
}


def config_corpus():
    w = Writer("config")
    for name in ("aggregator.conf", "operator.conf"):
        with open(os.path.join(TOP, "conf", name), "rb") as f:
            w.put(name, f.read())
    for name, text in sorted(CONFIG_SEEDS.items()):
        w.put(name, text)
    return w.n


def main():
    out = tempfile.mkdtemp(prefix="ap-corpus-")
    try:
        avs, node, admin, store, health = load_modules(out)
        counts = {
            "node": node_corpus(avs, node, health),
            "admin": admin_corpus(avs, admin),
            "config": config_corpus(),
            "record": record_corpus(avs, store),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
    for target, n in sorted(counts.items()):
        print("tests/fuzz/corpus/%s: %d seeds" % (target, n))


if __name__ == "__main__":
    main()
