"""`exec`: another process in a running container, through the CLI (runc's
contract, so CAPSA_TEST_RUNTIME=runc runs these too) and the Python API.

The exec'd process must be in every namespace of the container, under its
root, in its cgroup, with the process's own args/env/cwd/user/caps/rlimits.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

import helpers as h


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def running(ctx, args=("sleep", "1000"), **overrides) -> tuple[str, int]:
    """A started container; (id, init pid)."""
    cid, _ = ctx.create(list(args), **overrides)
    ctx.ok("start", cid)
    return cid, ctx.state(cid)["pid"]


def read(path: Path) -> str:
    return path.read_text().strip()


def v1_dir(controller: str, cid: str) -> Path:
    return h.CGROUP_ROOT / controller / h.CGROUP_PARENT / cid


def track(ctx, pid: int) -> int:
    """Have the finalizer check that this process is gone."""
    ctx.pids[pid] = h.proc_starttime(pid)
    return pid


# ==========================================================================
# Where the process runs
# ==========================================================================

NS = ["pid", "mnt", "net", "uts", "ipc", "cgroup"]


def test_exec_joins_every_namespace(ctx):
    cid, init = running(ctx)
    script = " ".join(f"readlink /proc/self/ns/{n};" for n in NS)
    res = ctx.ok("exec", cid, "sh", "-c", script)
    inside = res.stdout.split()
    want = [os.readlink(f"/proc/{init}/ns/{n}") for n in NS]
    assert inside == want, (inside, want)
    mine = [os.readlink(f"/proc/self/ns/{n}") for n in NS]
    assert all(a != b for a, b in zip(inside, mine)), "exec stayed in the host's namespaces"


def test_exec_sees_the_containers_root_hostname_and_processes(ctx):
    cid, _ = running(ctx)
    res = ctx.ok("exec", cid, "sh", "-c",
                 f"hostname; cat /{h.ROOTFS_MARKER}; echo pid=$$; ps -o pid,args")
    lines = res.stdout.splitlines()
    assert lines[0] == "capsa-test"
    assert lines[1] == "capsa-test"
    assert lines[2].startswith("pid=") and int(lines[2][4:]) > 1
    ps = "\n".join(lines[3:])
    assert any(l.split()[:3] == ["1", "sleep", "1000"] for l in lines[3:]), ps
    assert "ps -o pid,args" in ps


def test_exec_shows_in_ps(ctx):
    shared = ctx.shared_dir()
    cid, init = running(ctx, extra_mounts=[ctx.bind_mount(shared)])
    ctx.ok("exec", "--detach", "--pid-file", ctx.tmp / "exec.pid", cid,
           "sh", "-c", "echo up > /shared/up; exec sleep 1000")
    pid = track(ctx, int(read(ctx.tmp / "exec.pid")))
    h.wait_for((shared / "up").exists, what="the exec'd process to start")
    pids = json.loads(ctx.ok("ps", "--format", "json", cid).stdout)
    assert init in pids and pid in pids, pids


def test_exec_is_in_the_containers_cgroup_v1(ctx):
    if not (h.CGROUP_ROOT / "memory" / "cgroup.procs").exists():
        pytest.skip("no v1 memory hierarchy")
    cid, _ = running(ctx, resources={"memory": {"limit": 64 << 20}, "pids": {"limit": 50}})
    ctx.ok("exec", "-d", "--pid-file", ctx.tmp / "exec.pid", cid, "sleep", "1000")
    pid = track(ctx, int(read(ctx.tmp / "exec.pid")))
    for controller in ("memory", "pids", "freezer", "cpuacct"):
        if (h.CGROUP_ROOT / controller).is_dir():
            assert pid in h.cgroup_procs(v1_dir(controller, cid)), controller
    assert f":{h.cgroup_path_for(cid)}" in Path(f"/proc/{pid}/cgroup").read_text()


@pytest.mark.cgroup2
def test_exec_is_in_the_containers_cgroup_v2(ctx2):
    ctx = ctx2
    cid, init = running(ctx)
    ctx.ok("exec", "-d", "--pid-file", ctx.tmp / "exec.pid", cid, "sleep", "1000")
    pid = track(ctx, int(read(ctx.tmp / "exec.pid")))
    procs = h.cgroup_procs(h.CGROUP_UNIFIED / h.CGROUP_PARENT / cid)
    assert pid in procs and init in procs, procs
    # inside its cgroup namespace the process sees itself at the root
    res = ctx.ok("exec", cid, "cat", "/proc/self/cgroup")
    unified = [l for l in res.stdout.splitlines() if l.startswith("0::")]
    assert unified == ["0::/"], res.stdout


# ==========================================================================
# The process's own settings
# ==========================================================================

def test_exec_env_cwd_user_flags(ctx):
    cid, _ = running(ctx)
    res = ctx.ok("exec", "--env", "FOO=bar", "--env", "TWO=2", "--cwd", "/tmp", "--user", "1000:100",
                 "-g", "5", cid, "sh", "-c", 'echo "$FOO $TWO"; pwd; id -u; id -g; id -G; echo $PATH')
    lines = res.stdout.splitlines()
    assert lines[0] == "bar 2"
    assert lines[1] == "/tmp"
    assert lines[2:4] == ["1000", "100"]
    assert "5" in lines[4].split()
    assert lines[5] == h.DEFAULT_ENV[0].split("=", 1)[1], "the container's env is kept"


def test_exec_inherits_the_containers_capabilities_and_adds_cap(ctx):
    cid, _ = running(ctx)
    res = ctx.ok("exec", cid, "grep", "CapEff", "/proc/self/status")
    assert int(res.stdout.split()[1], 16) == h.cap_mask(h.DEFAULT_CAPS)
    res = ctx.ok("exec", "--cap", "CAP_NET_ADMIN", cid, "grep", "CapEff", "/proc/self/status")
    assert int(res.stdout.split()[1], 16) == h.cap_mask(h.DEFAULT_CAPS + ["CAP_NET_ADMIN"])


def test_exec_process_json(ctx):
    cid, _ = running(ctx)
    process = {
        "terminal": False,
        "user": {"uid": 1, "gid": 1, "additionalGids": [100]},
        "args": ["sh", "-c", 'echo "$ONLY"; pwd; id -u; id -G; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status; '
                             'grep "open files" /proc/self/limits; echo "term=$TERM"'],
        "env": ["PATH=/bin", "ONLY=this"],
        "cwd": "/etc",
        "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL"], "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}],
        "noNewPrivileges": True,
    }
    path = ctx.tmp / "process.json"
    path.write_text(json.dumps(process))
    res = ctx.ok("exec", "--process", path, cid)
    lines = res.stdout.splitlines()
    assert lines[0] == "this"
    assert lines[1] == "/etc"
    assert lines[2] == "1"
    assert "100" in lines[3].split()
    status = dict(l.split(":\t") for l in lines[4:6])
    # uid 1 keeps effective capabilities across execve only through the ambient set
    assert int(status["CapEff"], 16) == h.cap_mask(["CAP_KILL"])
    assert status["NoNewPrivs"] == "1"
    assert lines[6].split()[3:5] == ["100", "200"], lines[6]
    assert lines[7] == "term=", "only the process's env, not the container's"



@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137)],
                         ids=["zero", "three", "killed"])
def test_exec_exit_code(ctx, script, code):
    cid, _ = running(ctx)
    res = ctx.cli("exec", cid, "sh", "-c", script)
    assert res.returncode == code, res.describe()


def test_exec_stdio(ctx):
    cid, _ = running(ctx)
    res = ctx.cli("exec", cid, "sh", "-c", "echo out; echo err >&2; exit 0")
    assert (res.stdout, res.stderr) == ("out\n", "err\n"), res.describe()


def test_exec_forwards_signals(ctx):
    shared = ctx.shared_dir()
    cid, _ = running(ctx, extra_mounts=[ctx.bind_mount(shared)])
    argv = ctx.prefix + [ctx.runtime, "--root", str(ctx.root), "exec", cid, "sh", "-c",
                         'trap "exit 42" TERM; echo up > /shared/up; while :; do sleep 0.1; done']
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        h.wait_for((shared / "up").exists, what="the exec'd shell to start")
        time.sleep(0.2)  # runc installs its forwarding handler after the process starts
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 42, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


def test_exec_in_created_container(ctx):
    """The init waits for start in its finished namespaces: exec works already (as with runc)."""
    cid, _ = ctx.create(["sleep", "1000"])
    res = ctx.ok("exec", cid, "sh", "-c", "hostname; ps -o pid,args")
    assert res.stdout.splitlines()[0] == "capsa-test"
    assert ctx.state(cid)["status"] == "created"
    ctx.ok("start", cid)
    assert ctx.state(cid)["status"] == "running"


def test_exec_in_user_namespace(ctx):
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    shared = ctx.shared_dir()
    cid, init = running(ctx, extra_namespaces=["user"], uid_mappings=mapping, gid_mappings=mapping,
                        extra_mounts=[ctx.bind_mount(shared)])
    res = ctx.ok("exec", "--user", "1000:1000", cid, "sh", "-c",
                 "readlink /proc/self/ns/user; cat /proc/self/uid_map; id -u; touch /shared/by-1000")
    lines = res.stdout.splitlines()
    assert lines[0] == os.readlink(f"/proc/{init}/ns/user")
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2] == "1000"
    st = os.stat(shared / "by-1000")
    assert (st.st_uid, st.st_gid) == (101000, 101000)


def test_exec_in_no_pivot_container(ctx):
    cid, bundle = ctx.bundle(["sleep", "1000"])
    ctx.ok("create", "--no-pivot", "--bundle", bundle, cid)
    ctx.ok("start", cid)
    res = ctx.ok("exec", cid, "sh", "-c", f"cat /{h.ROOTFS_MARKER}; ls /")
    assert res.stdout.splitlines()[0] == "capsa-test"
    assert "proc" in res.stdout.split()


def test_exec_preserve_fds(ctx):
    cid, _ = running(ctx)
    out_path = ctx.tmp / "fd3.out"
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        res = ctx.cli("exec", "--preserve-fds", "1", cid, "sh", "-c", "echo via-fd3 >&3",
                      preexec_fn=lambda: os.dup2(fd, 3), close_fds=False)
        assert res.returncode == 0, res.describe()
        res = ctx.cli("exec", cid, "sh", "-c", "echo leaked >&3 || echo closed",
                      preexec_fn=lambda: os.dup2(fd, 3), close_fds=False)
    finally:
        os.close(fd)
    assert "closed" in res.stdout, res.describe()
    assert out_path.read_text() == "via-fd3\n"


# ==========================================================================
# Terminal, detach, pid file
# ==========================================================================

def test_exec_tty_through_console_socket(ctx):
    cid, _ = running(ctx)
    recv = h.ConsoleReceiver(ctx.tmp / "console.sock")
    try:
        ctx.ok("exec", "--tty", "--console-socket", recv.path, "--detach", "--pid-file",
               ctx.tmp / "exec.pid", cid, "sh", "-c", "tty; [ -t 0 ] && echo stdin-is-tty; sleep 0.5")
        track(ctx, int(read(ctx.tmp / "exec.pid")))
        master = recv.get_master()
        assert os.isatty(master)
        out = h.read_pty(master, ["stdin-is-tty"])
        assert "/dev/pts/" in out, out
        assert "stdin-is-tty" in out, out
    finally:
        recv.close()


def test_exec_tty_relayed_by_the_runtime(ctx):
    """A foreground exec -t without a console socket: the runtime keeps the pty
    and relays it to its own terminal (as runc does), window size included."""
    cid, _ = running(ctx)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    argv = ctx.prefix + [ctx.runtime, "--root", str(ctx.root), "exec", "-t", cid, "sh", "-c",
                         "tty; [ -t 0 ] && echo in-tty; stty size; exit 3"]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        out = h.read_pty(master, ["30 100"], timeout=20)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    if ctx.is_runc and (code != 3 or "30 100" not in out):
        pytest.skip(f"runc 1.1's relay raced the process's exit this time (exit {code}, output {out!r})")
    assert code == 3, out
    assert "/dev/pts/" in out and "in-tty" in out, out
    assert "30 100" in out, out


def test_exec_detach_pid_file(ctx):
    shared = ctx.shared_dir()
    cid, init = running(ctx, extra_mounts=[ctx.bind_mount(shared)])
    pid_file = ctx.tmp / "exec.pid"
    t0 = time.monotonic()
    ctx.ok("exec", "--detach", "--pid-file", pid_file, cid, "sh", "-c",
           "echo $$ > /shared/inner; exec sleep 1000")
    assert time.monotonic() - t0 < 10, "a detached exec must not wait for the process"
    pid = track(ctx, int(read(pid_file)))
    assert h.pid_alive(pid)
    h.wait_for(lambda: (shared / "inner").exists() and read(shared / "inner"), what="the process")
    assert int(read(shared / "inner")) > 1
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    assert os.readlink(f"/proc/{pid}/root") == os.readlink(f"/proc/{init}/root")
    # it dies with the container
    ctx.ok("delete", "--force", cid)
    h.wait_for(lambda: not h.pid_alive(pid), what="the exec'd process to go")
    ctx.assert_nothing_left(cid)


def _process_file(ctx, args, terminal=False, console_size=None) -> Path:
    process = {"terminal": terminal, "user": {"uid": 0, "gid": 0}, "args": args,
               "env": h.DEFAULT_ENV, "cwd": "/",
               "capabilities": {k: h.DEFAULT_CAPS for k in ("bounding", "effective", "permitted")},
               "noNewPrivileges": True}
    if console_size:
        process["consoleSize"] = console_size
    path = ctx.tmp / f"process-{h.new_id('p')}.json"
    path.write_text(json.dumps(process))
    return path


def test_exec_as_containerd_calls_it(ctx):
    """go-runc: exec --process FILE --detach --pid-file F ID (stdio are the shim's pipes)."""
    shared = ctx.shared_dir()
    cid, _ = running(ctx, extra_mounts=[ctx.bind_mount(shared)])
    process = _process_file(ctx, ["sh", "-c", "echo from-exec; echo $$ > /shared/inner; exec sleep 1000"])
    pid_file = ctx.tmp / "exec.pid"
    res = ctx.ok("exec", "--process", process, "--detach", "--pid-file", pid_file, cid)
    pid = track(ctx, int(read(pid_file)))
    h.wait_for(lambda: (shared / "inner").exists() and read(shared / "inner"), what="the process")
    assert h.pid_alive(pid)
    assert res.stdout in ("", "from-exec\n")


def test_exec_as_conmon_calls_it(ctx):
    """conmon (podman exec -t): exec --pid-file F --process FILE --detach --tty --console-socket S ID."""
    cid, _ = running(ctx)
    recv = h.ConsoleReceiver(ctx.tmp / "console.sock")
    try:
        process = _process_file(ctx, ["sh", "-c", "tty; stty size; echo conmon-ok; sleep 0.5"], terminal=True,
                                console_size={"height": 25, "width": 90})
        pid_file = ctx.tmp / "exec.pid"
        ctx.ok("exec", "--pid-file", pid_file, "--process", process, "--detach", "--tty",
               "--console-socket", recv.path, cid)
        track(ctx, int(read(pid_file)))
        out = h.read_pty(recv.get_master(), ["conmon-ok"])
        assert "/dev/pts/" in out and "conmon-ok" in out, out
        assert "25 90" in out, "process.consoleSize sets the pty's size"
    finally:
        recv.close()


# ==========================================================================
# Errors
# ==========================================================================

def test_exec_unknown_executable(ctx):
    cid, _ = running(ctx)
    res = ctx.cli("exec", cid, "nosuchcmd")
    ctx.assert_error(res, mentions=["nosuchcmd", "executable file not found in $PATH"],
                     capsa_mentions=['"nosuchcmd"'])
    assert ctx.state(cid)["status"] == "running"


def test_exec_in_stopped_container(ctx):
    cid, _ = running(ctx, args=["true"])
    ctx.wait_status(cid, "stopped")
    res = ctx.cli("exec", cid, "true")
    ctx.assert_error(res, mentions=["stopped"])


def test_exec_in_missing_container(ctx):
    res = ctx.cli("exec", "no-such-container-" + h.new_id(), "true")
    ctx.assert_error(res, capsa_mentions=["does not exist"])


def test_exec_without_command(ctx):
    cid, _ = running(ctx)
    ctx.assert_error(ctx.cli("exec", cid))


def test_exec_bad_process_file(ctx):
    cid, _ = running(ctx)
    path = ctx.tmp / "process.json"
    path.write_text("{not json")
    ctx.assert_error(ctx.cli("exec", "--process", path, cid))


def test_exec_tty_without_console_socket_detached(ctx):
    cid, _ = running(ctx)
    res = ctx.cli("exec", "-t", "-d", cid, "true")
    ctx.assert_error(res, capsa_mentions=["console-socket"])


# ==========================================================================
# Python API
# ==========================================================================

@pytest.fixture
def api(base_dir, rootfs):
    pytest.importorskip("capsa.runtime", reason="capsa is not importable (build it first)")
    from capsa.runtime import Runtime

    with h.world(base_dir, rootfs, None, force_delete=lambda c: lambda cid: c.rt.delete(cid, force=True)) as c:
        c.rt = Runtime(root=str(c.root))
        yield c


def test_api_exec(api):
    from capsa.runtime import ContainerError

    shared = api.shared_dir()
    cid, bundle = api.bundle(["sleep", "1000"], extra_mounts=[api.bind_mount(shared)])
    api.rt.create(cid, str(bundle))
    api.rt.start(cid)
    assert api.rt.exec(cid, ["sh", "-c", "exit 5"]) == 5
    assert api.rt.exec(cid, ["sh", "-c", 'echo "$A $(id -u) $(pwd)" > /shared/out'],
                       env=["A=x"], user="1000", cwd="/tmp") == 0
    assert read(shared / "out") == "x 1000 /tmp"
    process = {"args": ["sh", "-c", "echo json > /shared/json"], "cwd": "/", "user": {"uid": 0, "gid": 0},
               "env": ["PATH=/bin"]}
    assert api.rt.exec(cid, process) == 0
    assert read(shared / "json") == "json"
    pid = api.rt.exec(cid, ["sleep", "1000"], detach=True)
    track(api, pid)
    assert pid in api.rt.ps(cid)
    with pytest.raises(ContainerError, match="executable file not found"):
        api.rt.exec(cid, ["nosuch"])
    api.rt.delete(cid, force=True)
    with pytest.raises(ContainerError, match="does not exist"):
        api.rt.exec(cid, ["true"])
