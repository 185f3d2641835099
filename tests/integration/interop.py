"""Interop: the reconnection flow driven by Debian's python3-grpcio.

Issue 4, point 7. The stubs are generated at test time from the project's
proto/*.proto with python3-grpc-tools (grpc_tools.protoc) into a temp dir,
so the operator side here shares no code with protobuf-c or the gRPC core
client of tests/integration: an independent encoder and HTTP/2 client
talking to the real daemon.

The test starts `$AP_BUILDDIR/ap aggregator` itself (temp dir, port 0,
admin on a unix socket, auth "none", stabilization 300 ms) and:
  1. creates four tasks through the Admin service;
  2. connects an operator (own channel) and receives all four after the
     stabilization period;
  3. reconnects with a newer, the same and an older MonotonicClock: each
     time the previous stream ends with ABORTED "superseded by a newer
     connection" and the new one receives all four tasks again;
  4. cancels the stream: the tasks become orphans and the operator is no
     longer connected; a new session reclaims all four;
  5. Ack (x-operator-address metadata) and NotifyTriggers answer as SPEC
     section 2 says;
  6. SIGTERM: the stream ends with UNAVAILABLE "aggregator shutting down"
     and the daemon exits 0.
Every wait is bounded. Run by interop.sh with $PYTHON_PROTO (default
/usr/bin/python3, which has Debian's grpc and protobuf modules). Exit 0 on
success, 1 on failure (never a skip: a missing module names its package).
"""

import ctypes
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True

WAIT = 20.0            # bound for things that normally take milliseconds
START_WAIT = 60.0      # daemon start (slow under sanitizers)
STOP_WAIT = 30.0
STABILIZATION_MS = 300
SUPERSEDED = "superseded by a newer connection"
ADDRESS = "0x" + "%040x" % 0xb0001


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def need(module, package):
    try:
        return __import__(module)
    except ImportError as e:
        print("FAIL: cannot import %s (%s): install the Debian package %s "
              "for %s" % (module, e, package, sys.executable))
        sys.exit(1)


def generate_stubs(srcdir, proto_include, out):
    need("grpc_tools", "python3-grpc-tools")
    from grpc_tools import protoc
    args = ["grpc_tools.protoc", "-I" + os.path.join(srcdir, "proto"),
            "-I" + proto_include, "--python_out=" + out,
            "--grpc_python_out=" + out]
    args += [os.path.join(srcdir, "proto", f)
             for f in ("avs.proto", "node.proto", "admin.proto")]
    rc = protoc.main(args)
    check(rc == 0, "grpc_tools.protoc failed with %s" % rc)
    sys.path.insert(0, out)


class Daemon:
    def __init__(self, builddir, tmp):
        self.ap = os.path.join(builddir, "ap")
        self.tmp = tmp
        self.conf = os.path.join(tmp, "aggregator.conf")
        self.port_file = os.path.join(tmp, "port")
        self.log_path = os.path.join(tmp, "daemon.log")
        self.admin_target = "unix:" + os.path.join(tmp, "admin.sock")
        self.proc = None
        self.port = None
        with open(self.conf, "w") as f:
            f.write('listen = "127.0.0.1:0";\n'
                    'admin_listen = "%s";\n'
                    'storage = { dir = "%s"; };\n'
                    'operators = { approved = [ "*" ]; stabilization_ms = %d;'
                    ' restart_grace_ms = 0; };\n'
                    'auth = { mode = "none"; };\n'
                    'metrics_listen = "";\n'
                    'log = { level = "debug"; };\n'
                    % (self.admin_target, os.path.join(tmp, "db"),
                       STABILIZATION_MS))

    def start(self):
        check(os.access(self.ap, os.X_OK), "%s is not built" % self.ap)
        libc = ctypes.CDLL(None, use_errno=True)

        def die_with_parent():
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.ap, "--config", self.conf, "aggregator",
             "--port-file", self.port_file],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
        log.close()
        deadline = time.monotonic() + START_WAIT
        while True:
            check(self.proc.poll() is None,
                  "daemon exited with %s before writing its port file"
                  % self.proc.returncode)
            try:
                with open(self.port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    break
            except (FileNotFoundError, ValueError):
                pass
            check(time.monotonic() < deadline, "no port file after %ss" % START_WAIT)
            time.sleep(0.005)
        self.target = "127.0.0.1:%d" % self.port

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("daemon did not exit within %ss of SIGTERM" % STOP_WAIT)
        check(rc == 0, "daemon exited with %s on SIGTERM, want 0" % rc)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def dump_log(self, lines=80):
        try:
            with open(self.log_path, errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError:
            return
        print("---- last %d lines of the daemon log ----" % len(tail))
        sys.stdout.write("".join(tail))
        print("---- end of daemon log ----")


class Operator:
    """One operator session: its own channel, a thread draining the stream
    into a queue, the task set as an operator keeps it."""

    def __init__(self, grpc, node_pb2, node_pb2_grpc, target, clock):
        self.grpc = grpc
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = node_pb2_grpc.NodeStub(self.channel)
        req = node_pb2.SyncMessagesReq(id="interop", address=ADDRESS,
                                       monotonic_clock=clock)
        self.call = stub.SyncMessages(req)
        self.events = queue.Queue()
        self.tasks = set()
        self.message_ids = []
        self.end = None  # (code, details) once the stream ended
        self.ops = node_pb2
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        try:
            for msg in self.call:
                self.events.put(("msg", msg))
            self.events.put(("end", (self.grpc.StatusCode.OK, "")))
        except self.grpc.RpcError as e:
            self.events.put(("end", (e.code(), e.details())))

    def _take(self, timeout):
        kind, value = self.events.get(timeout=timeout)
        if kind == "end":
            self.end = value
        else:
            self.message_ids.append(value.id)
            if value.op == self.ops.MonitorTaskTrigger:
                self.tasks.add(value.task_metadata.task_id or value.id)
            elif value.op in (self.ops.DisableTask, self.ops.DeleteTask,
                              self.ops.CompletedTask):
                self.tasks.discard(value.task_metadata.task_id or value.id)
        return kind

    def wait_tasks(self, want, first_allowed_at=None):
        deadline = time.monotonic() + WAIT
        while self.tasks != want:
            left = deadline - time.monotonic()
            check(left > 0 and self.end is None,
                  "operator has %s, want %s (end: %s)"
                  % (sorted(self.tasks), sorted(want), self.end))
            try:
                self._take(left)
            except queue.Empty:
                pass
            if first_allowed_at is not None and self.message_ids:
                check(time.monotonic() >= first_allowed_at,
                      "a task arrived before the stabilization period ended")
                first_allowed_at = None

    def wait_end(self):
        deadline = time.monotonic() + WAIT
        while self.end is None:
            left = deadline - time.monotonic()
            check(left > 0, "stream did not end within %ss" % WAIT)
            try:
                self._take(left)
            except queue.Empty:
                pass
        return self.end

    def close(self):
        self.call.cancel()
        self.thread.join(WAIT)
        self.channel.close()


def main():
    srcdir = os.environ.get("AP_SRCDIR")
    builddir = os.environ.get("AP_BUILDDIR")
    if not srcdir or not builddir:
        print("FAIL: AP_SRCDIR and AP_BUILDDIR must be set (run through make check)")
        return 1
    proto_include = os.environ.get("PROTO_INCLUDE") or "/usr/include"
    grpc = need("grpc", "python3-grpcio")
    need("google.protobuf", "python3-protobuf")

    tmp = tempfile.mkdtemp(prefix="ap-interop-", dir="/tmp")
    daemon = None
    operators = []
    try:
        gen = os.path.join(tmp, "gen")
        os.mkdir(gen)
        generate_stubs(srcdir, proto_include, gen)
        import admin_pb2
        import admin_pb2_grpc
        import avs_pb2
        import node_pb2
        import node_pb2_grpc

        daemon = Daemon(builddir, tmp)
        daemon.start()
        admin_channel = grpc.insecure_channel(daemon.admin_target)
        admin = admin_pb2_grpc.AdminStub(admin_channel)
        node_channel = grpc.insecure_channel(daemon.target)
        node = node_pb2_grpc.NodeStub(node_channel)

        # Serving: HealthCheck "OK" (bounded retries while it starts).
        deadline = time.monotonic() + START_WAIT
        while True:
            try:
                h = node.HealthCheck(node_pb2.HealthCheckRequest(), timeout=2,
                                     wait_for_ready=True)
                if h.status == "OK":
                    break
            except grpc.RpcError:
                pass
            check(time.monotonic() < deadline, "daemon not serving")
            time.sleep(0.01)

        # 1. Four tasks.
        trigger = avs_pb2.TaskTrigger(
            name="interop", type=avs_pb2.TRIGGER_TYPE_BLOCK,
            block=avs_pb2.BlockTrigger(config=avs_pb2.BlockTrigger.Config(interval=7)))
        ids = ["interop-%d" % i for i in range(4)]
        resp = admin.CreateTasks(admin_pb2.CreateTasksReq(tasks=[
            admin_pb2.NewTask(id=i, name=i, trigger=trigger) for i in ids]),
            timeout=WAIT)
        check(list(resp.ids) == ids, "CreateTasks answered %s" % list(resp.ids))
        want = set(ids)

        def new_operator(clock):
            op = Operator(grpc, node_pb2, node_pb2_grpc, daemon.target, clock)
            operators.append(op)
            return op

        # 2. First session: nothing before the stabilization period.
        t0 = time.monotonic()
        op = new_operator(1000)
        op.wait_tasks(want, first_allowed_at=t0 + STABILIZATION_MS / 1000.0)
        print("first session: %d tasks after %.0f ms" % (len(want), (time.monotonic() - t0) * 1e3))

        # 3. Newer, same, older clock.
        for clock in (2000, 2000, 500):
            nxt = new_operator(clock)
            code, details = op.wait_end()
            check(code == grpc.StatusCode.ABORTED and details == SUPERSEDED,
                  "superseded stream ended with %s %r" % (code, details))
            nxt.wait_tasks(want)
            print("reconnect with clock %d: old stream %s %r, all %d tasks re-sent"
                  % (clock, code.name, details, len(want)))
            op.close()
            op = nxt

        # 4. Cancel: orphans; then a new session reclaims them.
        op.call.cancel()
        deadline = time.monotonic() + WAIT
        while True:
            tasks = admin.ListTasks(admin_pb2.ListTasksReq(), timeout=WAIT).tasks
            ops = admin.ListOperators(admin_pb2.ListOperatorsReq(), timeout=WAIT).operators
            me = [o for o in ops if o.address == ADDRESS]
            if (len(tasks) == 4 and all(t.owner == "" for t in tasks)
                    and me and not me[0].connected):
                break
            check(time.monotonic() < deadline,
                  "after the cancel: owners %s, operator %s"
                  % ([t.owner for t in tasks], me))
            time.sleep(0.01)
        op.close()
        op = new_operator(3000)
        op.wait_tasks(want)
        tasks = admin.ListTasks(admin_pb2.ListTasksReq(), timeout=WAIT).tasks
        check(all(t.owner == ADDRESS for t in tasks),
              "after the reclaim: owners %s" % [t.owner for t in tasks])
        me = [o for o in admin.ListOperators(admin_pb2.ListOperatorsReq(),
                                             timeout=WAIT).operators
              if o.address == ADDRESS]
        check(me and me[0].connected and me[0].ready and me[0].connects == 5,
              "ListOperators after the reclaim: %s" % me)
        print("cancel: 4 orphans, reclaimed by the next session")

        # 5. Ack and NotifyTriggers.
        ack = node.Ack(node_pb2.AckMessageReq(id=op.message_ids[0]), timeout=WAIT,
                       metadata=[("x-operator-address", ADDRESS)])
        check(ack.value is True, "Ack of a sent message id answered %s" % ack.value)
        ack = node.Ack(node_pb2.AckMessageReq(id=op.message_ids[0]), timeout=WAIT)
        check(ack.value is False, "Ack without x-operator-address answered true")
        n = node.NotifyTriggers(node_pb2.NotifyTriggersReq(
            address=ADDRESS, task_id=ids[0], trigger_type=avs_pb2.TRIGGER_TYPE_BLOCK,
            trigger_request_id="interop-1"), timeout=WAIT)
        check(n.status == "enabled" and n.remaining_executions == -1
              and n.task_still_enabled,
              "NotifyTriggers answered %s" % n)

        # 6. SIGTERM.
        admin_channel.close()
        node_channel.close()
        daemon.stop()
        code, details = op.wait_end()
        check(code == grpc.StatusCode.UNAVAILABLE
              and details == "aggregator shutting down",
              "stream at shutdown ended with %s %r" % (code, details))
        print("SIGTERM: stream ended %s %r, daemon exit 0" % (code.name, details))
        print("PASS")
        return 0
    except Failure as e:
        print("FAIL: %s" % e)
        if daemon:
            daemon.dump_log()
        return 1
    except grpc.RpcError as e:
        print("FAIL: an RPC failed: %s %r" % (e.code(), e.details()))
        if daemon:
            daemon.dump_log()
        return 1
    finally:
        for op in operators:
            try:
                op.call.cancel()
                op.channel.close()
            except Exception:
                pass
        if daemon:
            daemon.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
