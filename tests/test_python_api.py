"""The in-process Python API (capsa.runtime.Runtime): the same operations as
the CLI, real containers, ContainerError for every failure.

Skipped only when capsa.runtime cannot be imported (not built yet).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import threading
from pathlib import Path

import pytest

import helpers as h


pytest.importorskip("capsa.runtime", reason="capsa is not importable (build it first)")
from capsa.runtime import ContainerError, Runtime  # noqa: E402

MiB = 1024 * 1024


@pytest.fixture
def api(base_dir, rootfs):
    """A Ctx (bundles, ids, finalizer) plus `api.rt`, a Runtime on its state root.
    The finalizer force-deletes through the API itself."""
    def force_delete(c):
        return lambda cid: c.rt.delete(cid, force=True)

    with h.world(base_dir, rootfs, None, force_delete=force_delete) as c:
        c.rt = Runtime(root=str(c.root))
        yield c


def sh(script):
    return ["sh", "-c", script]


def run_script(api, script, **overrides):
    """rt.run a shell script whose stdout/stderr go to files through a bind
    mount (an in-process container shares the test process's stdio).
    Returns (exit code, stdout, stderr)."""
    shared = api.shared_dir(f"io-{h.new_id('x')}")
    mounts = [api.bind_mount(shared, "/shared")] + overrides.pop("extra_mounts", [])
    cid, bundle = api.bundle(sh(f"( {script} ) > /shared/out 2> /shared/err"),
                             extra_mounts=mounts, **overrides)
    code = api.rt.run(cid, str(bundle))
    return code, (shared / "out").read_text(), (shared / "err").read_text()


def assert_container_error(excinfo, mentions=()):
    msg = str(excinfo.value)
    assert msg.strip(), "ContainerError without a message"
    assert "Traceback" not in msg
    assert len(msg.strip().splitlines()) == 1, f"message should be one line: {msg!r}"
    for m in mentions:
        assert m.lower() in msg.lower(), f"{msg!r} should mention {m!r}"


def wait_state(api, cid, status, timeout=10.0):
    return h.wait_for(lambda: api.rt.state(cid)["status"] == status and api.rt.state(cid),
                      timeout, interval=0.05, what=f"{cid} {status}")


def test_container_error_is_an_exception():
    assert issubclass(ContainerError, Exception)


# ==========================================================================
# Inside the container
# ==========================================================================

def test_run_exit_codes(api):
    assert api.rt.run(*_bundle(api, sh("exit 0"))) == 0
    assert api.rt.run(*_bundle(api, sh("exit 7"))) == 7


def _bundle(api, args, **overrides):
    cid, bundle = api.bundle(args, **overrides)
    return cid, str(bundle)


def test_inside_view(api):
    code, out, err = run_script(
        api, "echo $$; hostname; ls /sys/class/net; cat /etc/capsa-test-rootfs; "
             "readlink /proc/self/ns/mnt", hostname="api-box")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "1"
    assert lines[1] == "api-box"
    assert lines[2] == "lo"
    assert lines[3] == "capsa-test"
    assert lines[4] != os.readlink("/proc/self/ns/mnt")


def test_capabilities_default_and_reduced(api):
    for caps in (h.DEFAULT_CAPS, ["CAP_KILL", "CAP_CHOWN"]):
        code, out, err = run_script(api, "cat /proc/self/status", capabilities=caps)
        assert code == 0, err
        want = h.cap_mask(caps)
        for field in ("CapBnd", "CapPrm", "CapEff"):
            assert int(h.proc_status_field(out, field), 16) == want, (field, caps)


def test_user_env_cwd_rlimits_nnp(api):
    code, out, err = run_script(
        api, "id -u; id -g; id -G; pwd; echo $FOO; ulimit -n; "
             "grep NoNewPrivs /proc/self/status",
        user={"uid": 1000, "gid": 1000, "additionalGids": [100]},
        env=["PATH=/bin", "FOO=bar"], cwd="/etc",
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512}])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "1000"
    assert lines[1] == "1000"
    assert set(lines[2].split()) == {"1000", "100"}
    assert lines[3] == "/etc"
    assert lines[4] == "bar"
    assert lines[5] == "256"
    assert lines[6].split() == ["NoNewPrivs:", "1"]


def test_readonly_root_and_masked_paths(api):
    code, out, err = run_script(
        api, "touch /x && echo WROTE; cat /proc/timer_list 2>/dev/null | wc -c; exit 0")
    assert code == 0, err
    assert "WROTE" not in out
    assert "read-only" in err.lower()
    if os.path.exists("/proc/timer_list"):
        assert out.split()[-1] == "0"


def test_no_fds_leak_from_the_calling_process(api, capfd):
    """The calling Python process has many fds, some inheritable: only stdio
    reaches the container. (Output through capfd: a redirection in the
    script would make sh itself hold extra fds.)"""
    # two commands, so sh (PID 1) does not exec ls; ls lists PID 1's fds
    cid, bundle = _bundle(api, sh("ls /proc/1/fd; ls -l /proc/1/fd >&2"))
    fd = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        capfd.readouterr()
        code = api.rt.run(cid, bundle)
        out, err = capfd.readouterr()
    finally:
        os.close(fd)
    assert code == 0, err
    assert sorted(out.split(), key=int) == ["0", "1", "2"], err


def test_container_stdio_is_the_callers(api, capfd):
    cid, bundle = _bundle(api, sh("echo to-stdout; echo to-stderr >&2"))
    capfd.readouterr()
    assert api.rt.run(cid, bundle) == 0
    out, err = capfd.readouterr()
    assert out == "to-stdout\n"
    assert err == "to-stderr\n"


def test_user_namespace(api):
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    code, out, err = run_script(api, "cat /proc/self/uid_map",
                                extra_namespaces=["user"], uid_mappings=mapping,
                                gid_mappings=mapping)
    assert code == 0, err
    assert out.split() == ["0", "100000", "65536"]


# ==========================================================================
# Lifecycle
# ==========================================================================

def test_lifecycle(api):
    rt = api.rt
    shared = api.shared_dir()
    cid, bundle = _bundle(
        api, sh("echo > /shared/started; while [ ! -e /shared/go ]; do sleep 0.05; done; "
                "exit 3"),
        extra_mounts=[api.bind_mount(shared)])
    pid = rt.create(cid, bundle)
    assert isinstance(pid, int) and pid > 0
    assert h.pid_alive(pid)

    st = rt.state(cid)
    for field in ("ociVersion", "id", "status", "pid", "bundle", "rootfs", "created",
                  "owner"):
        assert field in st, f"state lacks {field}: {st}"
    assert st["id"] == cid
    assert st["status"] == "created"
    assert st["pid"] == pid
    assert st["bundle"] == bundle
    assert not (shared / "started").exists()

    rt.start(cid)
    h.wait_for((shared / "started").exists, 10, what="the process to run")
    assert rt.state(cid)["status"] == "running"
    assert cid in [c["id"] for c in rt.list()]
    assert pid in rt.ps(cid)

    (shared / "go").touch()
    assert rt.wait(cid) == 3
    assert rt.state(cid)["status"] == "stopped"
    assert not h.pid_alive(pid)

    rt.delete(cid)
    with pytest.raises(ContainerError) as ei:
        rt.state(cid)
    assert_container_error(ei)
    api.assert_nothing_left(cid)


@pytest.mark.parametrize("sig", ["KILL", "SIGKILL", 9])
def test_kill_and_wait_exit_code(api, sig):
    cid, bundle = _bundle(api, ["sleep", "1000"])
    api.rt.create(cid, bundle)
    api.rt.start(cid)
    api.rt.kill(cid, sig)
    assert api.rt.wait(cid) == 128 + 9
    assert api.rt.state(cid)["status"] == "stopped"
    api.rt.delete(cid)
    api.assert_nothing_left(cid)


@pytest.mark.parametrize("sig", ["TERM", "SIGTERM", 15])
def test_kill_term_reaches_handler(api, sig):
    shared = api.shared_dir()
    cid, bundle = _bundle(api, sh("trap 'exit 42' TERM; sleep 1000 & "
                                  "echo > /shared/ready; wait"),
                          extra_mounts=[api.bind_mount(shared)])
    api.rt.create(cid, bundle)
    api.rt.start(cid)
    h.wait_for((shared / "ready").exists, 10, what="the trap to be set")
    api.rt.kill(cid, sig)
    assert api.rt.wait(cid) == 42
    api.rt.delete(cid)
    api.assert_nothing_left(cid)


def test_kill_all(api):
    shared = api.shared_dir()
    cid, bundle = _bundle(api, sh("sleep 1000 & sleep 1000 & echo > /shared/ready; wait"),
                          extra_mounts=[api.bind_mount(shared)])
    api.rt.create(cid, bundle)
    api.rt.start(cid)
    h.wait_for((shared / "ready").exists, 10, what="the children to start")
    pids = api.rt.ps(cid)
    assert len(pids) == 3, pids
    api.rt.kill(cid, "KILL", all=True)
    api.rt.wait(cid)
    h.wait_for(lambda: not any(h.pid_alive(p) for p in pids), 5, what="all to die")
    api.rt.delete(cid)
    api.assert_nothing_left(cid)


def test_delete_running_needs_force(api):
    cid, bundle = _bundle(api, ["sleep", "1000"])
    pid = api.rt.create(cid, bundle)
    api.rt.start(cid)
    with pytest.raises(ContainerError) as ei:
        api.rt.delete(cid)
    assert_container_error(ei)
    assert api.rt.state(cid)["status"] == "running"
    api.rt.delete(cid, force=True)
    h.wait_for(lambda: not h.pid_alive(pid), 5, what="the process to die")
    api.assert_nothing_left(cid)


def test_delete_created(api):
    cid, bundle = _bundle(api, ["sleep", "1000"])
    pid = api.rt.create(cid, bundle)
    api.rt.delete(cid)
    h.wait_for(lambda: not h.pid_alive(pid), 5, what="the process to die")
    api.assert_nothing_left(cid)


def test_run_deletes_container(api):
    cid, bundle = _bundle(api, ["true"])
    assert api.rt.run(cid, bundle) == 0
    with pytest.raises(ContainerError):
        api.rt.state(cid)
    assert cid not in [c["id"] for c in api.rt.list()]
    api.assert_nothing_left(cid)


def test_pid_file(api):
    cid, bundle = _bundle(api, ["sleep", "1000"])
    pid_file = api.tmp / "ct.pid"
    pid = api.rt.create(cid, bundle, pid_file=str(pid_file))
    assert int(pid_file.read_text().strip()) == pid
    api.rt.delete(cid, force=True)


def test_list(api):
    assert api.rt.list() == []
    ids = []
    for _ in range(2):
        cid, bundle = _bundle(api, ["sleep", "1000"])
        api.rt.create(cid, bundle)
        ids.append(cid)
    api.rt.start(ids[0])
    by_id = {c["id"]: c for c in api.rt.list()}
    assert by_id[ids[0]]["status"] == "running"
    assert by_id[ids[1]]["status"] == "created"
    for cid in ids:
        api.rt.delete(cid, force=True)
    assert api.rt.list() == []


def test_preserve_fds(api):
    out_path = api.tmp / "fd3.out"
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    cid, bundle = _bundle(api, sh("echo via-fd3 >&3"))
    try:
        saved = os.dup(3)
    except OSError:
        saved = None
    try:
        os.dup2(fd, 3)
        api.rt.create(cid, bundle, preserve_fds=1)
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)
        os.close(fd)
    api.rt.start(cid)
    assert api.rt.wait(cid) == 0
    api.rt.delete(cid)
    assert out_path.read_text() == "via-fd3\n"


def test_console_socket(api):
    recv = h.ConsoleReceiver(api.tmp / "console.sock")
    cid, bundle = _bundle(api, sh("echo hello; tty"), terminal=True)
    try:
        api.rt.create(cid, bundle, console_socket=str(recv.path))
        master = recv.get_master()
        assert os.isatty(master)
        api.rt.start(cid)
        out = h.read_pty(master, ["hello", "/dev/"])
        assert "hello" in out, out
        assert "/dev/pts/" in out or "/dev/console" in out, out
        assert api.rt.wait(cid) == 0
        api.rt.delete(cid)
    finally:
        recv.close()


def test_many_containers_from_threads(api):
    """The API is used from a threaded Python process: containers started
    from several threads at once, while another thread keeps allocating,
    all finish (fork safety: nothing may deadlock in the child)."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            [str(i) * 10 for i in range(1000)]

    results, errors = {}, []

    def worker(n):
        try:
            for i in range(3):
                cid, bundle = _bundle(api, sh(f"exit {n * 10 + i}"))
                results[cid] = (api.rt.run(cid, bundle), n * 10 + i)
        except BaseException as e:
            errors.append(e)

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    workers = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    stop.set()
    churner.join(5)
    assert not any(w.is_alive() for w in workers), "a worker hung (deadlock?)"
    assert not errors, errors
    assert len(results) == 12
    for cid, (got, want) in results.items():
        assert got == want, (cid, got, want)
    assert api.rt.list() == []


def test_run_leaves_the_callers_memory_alone(api):
    """run() starts its init with CLONE_VM (in this process's memory, until
    the execve): a hundred runs must not grow this process by more than
    Python's own noise, and the process keeps working."""
    cid, bundle = _bundle(api, ["true"])

    def rss_kib():
        return int(h.proc_status_field(Path("/proc/self/status").read_text(), "VmRSS").split()[0])

    for i in range(10):
        assert api.rt.run(f"{cid}-w{i}", bundle) == 0
    before = rss_kib()
    for i in range(100):
        assert api.rt.run(f"{cid}-{i}", bundle) == 0
    grown = rss_kib() - before
    assert grown < 4096, f"the process grew by {grown} KiB over 100 runs"
    assert api.rt.list() == []


# ==========================================================================
# Spare namespaces: a Runtime has network and IPC namespaces made ahead (spares.rs)
# ==========================================================================

NS_GET_USERNS = 0xB701


def wait_until(cond, timeout=5.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def spares_thread_exists() -> bool:
    return any((t / "comm").read_text().strip() == "capsa-spares" for t in Path("/proc/self/task").iterdir())


def test_each_container_gets_a_fresh_network_namespace(api):
    """Spare network namespaces, made while the previous container ran,
    serve one container each: what one container does to its network is
    not seen by the next, and none is the host's."""
    caps = h.DEFAULT_CAPS + ["CAP_NET_ADMIN"]
    seen = []
    for i in range(4):
        code, out, err = run_script(
            api, "readlink /proc/self/ns/net; cat /sys/class/net/lo/flags; ls /sys/class/net; "
                 "ip link set lo up", capabilities=caps)
        assert code == 0, err
        lines = out.split()
        seen.append(lines[0])
        assert int(lines[1], 16) & 1 == 0, f"run {i}: lo is up already: a used namespace"
        assert lines[2:] == ["lo"], out
    # (Inode numbers alone prove nothing: a freed namespace's number is reused.)
    assert os.readlink("/proc/self/ns/net") not in seen
    assert spares_thread_exists(), "the spares thread was not started"


def test_each_container_gets_a_fresh_ipc_namespace(api):
    """Spare IPC namespaces likewise: a message queue one container makes
    is not in the next one's."""
    seen = []
    for i in range(3):
        code, out, err = run_script(api, f"readlink /proc/self/ns/ipc; ls /dev/mqueue; touch /dev/mqueue/q{i}")
        assert code == 0, err
        lines = out.split()
        seen.append(lines[0])
        assert lines[1:] == [], f"run {i} sees another container's queues: {lines[1:]}"
    assert os.readlink("/proc/self/ns/ipc") not in seen


def test_forked_child_does_not_use_its_parents_spares(api, tmp_path):
    """After os.fork(), parent and child hold copies of the same spare
    namespaces: only the process whose thread made them may use them, or a
    container in each would share one network. (In a subprocess, so that
    this test process does not fork with its threads.)"""
    cid, bundle = _bundle(api, ["sh", "-c", "readlink /proc/self/ns/net > /shared/${ID:-warm}"],
                          extra_mounts=[api.bind_mount(api.shared_dir("fork"), "/shared")],
                          env=h.DEFAULT_ENV)
    shared = api.tmp / "fork"
    for tag in ("parent", "child"):
        api.track_cgroup(h.cgroup_path_for(cid) + "-" + tag)
    script = f"""
import os, sys, time
sys.path.insert(0, {str(Path(__file__).parent.parent / "python")!r})
from capsa.runtime import Runtime
rt = Runtime({str(api.root)!r})
bundle = {bundle!r}
for i in range(3):                      # spares made, kept
    assert rt.run(f"{cid}-warm{{i}}", bundle) == 0
time.sleep(0.2)
pid = os.fork()
tag = "child" if pid == 0 else "parent"
import json
cfg = json.load(open(bundle + "/config.json"))
cfg["process"]["env"].append("ID=" + tag)
cfg["linux"]["cgroupsPath"] += "-" + tag  # two containers, two cgroups: one's delete must not take the other's
mine = bundle + "-" + tag
os.makedirs(mine, exist_ok=True)      # config.json names the rootfs by absolute path
json.dump(cfg, open(mine + "/config.json", "w"))
if pid == 0:                            # no copy of the parent's spares here
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{{fd}}"))
        except OSError:                 # listdir's own fd, gone by now
            pass
    open({str(shared)!r} + "/child-fds", "w").write(" ".join(h for h in held if h.startswith(("net:", "ipc:"))))
code = rt.run(f"{cid}-{{tag}}", mine)
if pid == 0:
    os._exit(code)
_, status = os.waitpid(pid, 0)
sys.exit(code or os.waitstatus_to_exitcode(status))
"""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    parent, child = (shared / "parent").read_text(), (shared / "child").read_text()
    assert parent != child, f"both containers joined {parent.strip()}"
    assert (shared / "child-fds").read_text() == "", "the forked child kept its parent's spares open"


def test_user_namespace_container_makes_its_own_network_namespace(api):
    """A spare belongs to the host's user namespace; a container with a user
    namespace of its own must own its network namespace."""
    assert run_script(api, "true")[0] == 0            # a spare is made meanwhile
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cid, bundle = _bundle(api, ["sleep", "1000"], extra_namespaces=["user"],
                          uid_mappings=mapping, gid_mappings=mapping)
    api.rt.create(cid, bundle)
    pid = api.rt.state(cid)["pid"]
    import fcntl
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        owner = fcntl.ioctl(net, NS_GET_USERNS)
        try:
            assert os.fstat(owner).st_ino == os.stat(f"/proc/{pid}/ns/user").st_ino
        finally:
            os.close(owner)
    finally:
        os.close(net)
    api.rt.delete(cid, force=True)


# ==========================================================================
# cgroups
# ==========================================================================

def test_cgroup_limits_land_and_go(api):
    cid, bundle = _bundle(api, ["sleep", "1000"],
                          resources={"memory": {"limit": 64 * MiB}, "pids": {"limit": 30}})
    api.rt.create(cid, bundle)
    api.rt.start(cid)
    pid = api.rt.state(cid)["pid"]
    mem = h.CGROUP_ROOT / "memory" / h.CGROUP_PARENT / cid
    pids = h.CGROUP_ROOT / "pids" / h.CGROUP_PARENT / cid
    assert int((mem / "memory.limit_in_bytes").read_text()) == 64 * MiB
    assert (pids / "pids.max").read_text().strip() == "30"
    assert pid in h.cgroup_procs(mem)
    api.rt.delete(cid, force=True)
    assert not mem.exists() and not pids.exists()
    api.assert_nothing_left(cid)


def test_oom_kill(api):
    cid, bundle = _bundle(api, ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                          resources={"memory": {"limit": 32 * MiB}})
    assert api.rt.run(cid, bundle) == 137
    api.assert_nothing_left(cid)


# ==========================================================================
# Errors
# ==========================================================================

def _write(api, cid, config):
    return str(api.write_bundle(cid, config))


def _bad(api, cid, kind):
    if kind == "missing-config":
        d = api.tmp / f"bundle-{cid}"
        d.mkdir()
        return str(d), ["config.json"]
    if kind == "invalid-json":
        return _write(api, cid, "{not json"), []
    if kind == "missing-rootfs":
        _, c = api.config(["true"], cid, root_path=str(api.tmp / "no-such-rootfs"))
        return _write(api, cid, c), ["no-such-rootfs"]
    if kind == "unknown-executable":
        _, c = api.config(["nosuchcmd"], cid)
        return _write(api, cid, c), ["nosuchcmd"]
    if kind == "missing-namespace-path":
        ns = [n for n in h.DEFAULT_NAMESPACES if n != "network"]
        ns.append({"type": "network", "path": "/proc/999999/ns/net"})
        _, c = api.config(["true"], cid, namespaces=ns)
        return _write(api, cid, c), ["/proc/999999/ns/net"]
    if kind == "rlimit-above-hard-limit":
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        _, c = api.config(["true"], cid, rlimits=[
            {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1000}])
        return _write(api, cid, c), ["rlimit"]
    raise AssertionError(kind)


BAD = ["missing-config", "invalid-json", "missing-rootfs", "unknown-executable",
       "missing-namespace-path", "rlimit-above-hard-limit"]


@pytest.mark.parametrize("op", ["create", "run"])
@pytest.mark.parametrize("kind", BAD)
def test_bad_bundle_raises_container_error(api, kind, op):
    cid = api.new_id()
    api.track_cgroup(h.cgroup_path_for(cid))
    bundle, mentions = _bad(api, cid, kind)
    with pytest.raises(ContainerError) as ei:
        getattr(api.rt, op)(cid, bundle)
    assert_container_error(ei, mentions)
    with pytest.raises(ContainerError):
        api.rt.state(cid)
    api.assert_nothing_left(cid)


def test_id_already_exists(api):
    cid, bundle = _bundle(api, ["sleep", "1000"])
    pid = api.rt.create(cid, bundle)
    _, other = _bundle(api, ["true"])
    with pytest.raises(ContainerError) as ei:
        api.rt.create(cid, other)
    assert_container_error(ei, [cid])
    st = api.rt.state(cid)
    assert st["status"] == "created" and st["pid"] == pid and st["bundle"] == bundle
    api.rt.start(cid)
    assert api.rt.state(cid)["status"] == "running"
    api.rt.delete(cid, force=True)
    api.assert_nothing_left(cid)


@pytest.mark.parametrize("op", ["state", "start", "delete", "kill", "ps", "wait"])
def test_unknown_id(api, op):
    args = ("no-such-container", "KILL") if op == "kill" else ("no-such-container",)
    with pytest.raises(ContainerError) as ei:
        getattr(api.rt, op)(*args)
    assert_container_error(ei, ["no-such-container"])


def test_invalid_signal(api):
    cid, bundle = _bundle(api, ["sleep", "1000"])
    api.rt.create(cid, bundle)
    with pytest.raises(ContainerError):
        api.rt.kill(cid, "NOSUCHSIGNAL")
    api.rt.delete(cid, force=True)


def test_cli_sees_api_containers(api, runtime_bin):
    """The CLI and the API share one state format: a container created
    in-process is visible to `capsa-runtime state/list` on the same root."""
    if h.runtime_is_runc(runtime_bin):
        pytest.skip("needs the capsa CLI, not runc")
    cid, bundle = _bundle(api, ["sleep", "1000"])
    api.rt.create(cid, bundle)
    api.rt.start(cid)
    res = h.run_cmd([runtime_bin, "--root", str(api.root), "state", cid])
    assert res.returncode == 0, res.describe()
    cli_state = json.loads(res.stdout)
    api_state = api.rt.state(cid)
    for k in ("id", "status", "pid", "bundle", "rootfs"):
        assert cli_state[k] == api_state[k], k
    api.rt.delete(cid, force=True)


def test_container_error_keeps_its_fields(api):
    """ContainerError carries the failed step, path and errno, and Docker's exit code for it."""
    from capsa.runtime import ContainerError

    cid, bundle = api.bundle(["/no/such/binary"])
    with pytest.raises(ContainerError) as e:
        api.rt.run(cid, str(bundle))
    assert (e.value.step, e.value.path, e.value.errno) == ("exec", "/no/such/binary", errno.ENOENT)
    assert e.value.start_exit_code == 127
    with pytest.raises(ContainerError) as e:
        api.rt.state("no-such-container")
    assert e.value.errno is None or isinstance(e.value.errno, int)
