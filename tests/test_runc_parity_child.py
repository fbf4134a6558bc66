"""What runc's init does between the clone and the execve, done as runc
does it (items of runc's own integration suite): proc/sysfs never on a
link, stdio handed to the process's user, a read-only /dev, the -ENOSYS
seccomp stub, startContainer hooks under the filter, createContainer hooks
in the rootfs, --no-pivot hiding the host's procfs, seccomp user
notification."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers as h


def _rootfs_with(ctx, name="rootfs") -> Path:
    return ctx.own_rootfs(name)


@pytest.mark.parametrize("dest", ["proc", "sys"])
def test_pseudo_filesystem_on_a_symlink_is_refused(ctx, dest):
    """runc's mask.bats: an image whose /proc (or /sys) is a link gets no
    procfs (sysfs) through it: refused before anything is made."""
    rootfs = _rootfs_with(ctx)
    target = rootfs / dest
    shutil.rmtree(target)
    target.symlink_to("/symlink")
    cid, bundle = ctx.bundle(["true"], root_path=str(rootfs))
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode != 0, res.describe()
    fstype = "proc" if dest == "proc" else "sysfs"
    assert f'filesystem "{fstype}" must be mounted on ordinary directory' in res.stderr, res.describe()
    ctx.assert_nothing_left(cid, rootfs)


def test_stdio_is_chowned_to_the_process_user(ctx):
    """runc's fixStdioPermissions: a non-root process owns its stdio (a pipe
    here, the pty in tty.bats); /dev/null is left alone."""
    script = "stat -L -c %u /proc/self/fd/1; stat -L -c %u /proc/self/fd/0"
    res = ctx.run(["sh", "-c", script], user={"uid": 1000, "gid": 1000})
    assert res.returncode == 0, res.describe()
    out, null_owner = res.stdout.split()
    assert out == "1000"
    assert null_owner == "0", "the host's /dev/null must not be chowned"
    assert os.stat("/dev/null").st_uid == 0


def test_readonly_dev_mount(ctx):
    """runc's mounts.bats "[ro /dev mount]": /dev is mounted writable for
    devpts and the device nodes, and remounted read-only at the end."""
    mounts = [dict(m) for m in h.DEFAULT_MOUNTS]
    for m in mounts:
        if m["destination"] == "/dev":
            m["options"] = m["options"] + ["ro"]
    script = "grep '^tmpfs /dev ' /proc/mounts; test -c /dev/null && test -d /dev/pts && echo nodes; touch /dev/x 2>&1 || true"
    res = ctx.run(["sh", "-c", script], mounts=mounts)
    assert res.returncode == 0, res.describe()
    lines = res.stdout.splitlines()
    assert " ro," in lines[0], lines
    assert "nodes" in lines
    assert "Read-only file system" in res.stdout


ENOSYS_TEST = r"""
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long a = syscall(1000);
    int ea = errno;
    long b = syscall(SYS_getppid);
    int eb = errno;
    printf("%ld %d %ld %d\n", a, ea, b, eb);
    return 0;
}
"""

STATIC_ALLOW = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
                "prlimit64", "mprotect", "readlinkat", "readlink", "getrandom", "write", "writev",
                "exit_group", "exit", "newfstatat", "fstat", "uname", "ioctl", "openat", "close",
                "read", "mmap", "munmap", "futex", "lseek", "rt_sigaction", "rt_sigprocmask",
                "sigaltstack", "statx"]


def _static_binary(ctx, rootfs: Path, source: str, name: str) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = ctx.tmp / f"{name}.c"
    src.write_text(source)
    out = rootfs / name
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a static test binary: {r.stderr[-300:]}")
    os.chmod(out, 0o755)
    return f"/{name}"


def test_seccomp_syscall_above_the_profile_is_enosys(ctx):
    """runc's seccomp.bats "-ENOSYS handling": a syscall numbered above every
    one the profile names fails with ENOSYS (what an older kernel says), a
    known one not allowed gets the default action (EPERM)."""
    rootfs = _rootfs_with(ctx)
    exe = _static_binary(ctx, rootfs, ENOSYS_TEST, "enosys_test")
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO",
               "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "syscalls": [{"names": STATIC_ALLOW, "action": "SCMP_ACT_ALLOW"}]}
    cid, config = ctx.config([exe], root_path=str(rootfs))
    config["linux"]["seccomp"] = seccomp
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    a, ea, b, eb = res.stdout.split()
    assert (a, int(ea)) == ("-1", 38), res.stdout  # ENOSYS
    assert (b, int(eb)) == ("-1", 1), res.stdout  # EPERM, the default


def test_start_container_hook_runs_under_the_seccomp_filter(ctx):
    """runc's seccomp.bats "(startContainer hook)": the hook is killed by the
    filter (mkdir is SCMP_ACT_KILL), and the start fails saying so."""
    shared = ctx.shared_dir()
    cid, config = ctx.config(["true"])
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                  "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                                  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}]}
    config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "mkdir /tmp/hook-dir"]}]}
    config["mounts"].append(ctx.bind_mount(shared))
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode != 0, res.describe()
    assert "error running hook" in res.stderr and "bad system call" in res.stderr, res.describe()
    ctx.assert_nothing_left(cid)


def test_create_container_hook_starts_in_the_rootfs(ctx):
    """runc's hooks.bats: a createContainer hook runs with the rootfs as its
    cwd (`touch ./lib/x`)."""
    shared = ctx.shared_dir()
    cid, config = ctx.config(["true"])
    config["hooks"] = {"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", f"pwd -P > {shared}/cwd"]}]}
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    assert (shared / "cwd").read_text().strip() == str(ctx.rootfs.resolve())


def test_no_pivot_does_not_expose_the_host_proc(ctx):
    """runc's no_pivot.bats: with --no-pivot the host's /proc stays in the
    container's mount namespace; unless it is unmounted first, a user
    namespace in the container may mount a fresh (unmasked) procfs."""
    script = "mount -t proc none /proc && echo mounted"
    cid, bundle = ctx.bundle(["unshare", "-mrpf", "sh", "-c", script])
    res = ctx.cli("run", "--no-pivot", "--bundle", bundle, cid)
    assert res.returncode != 0, res.describe()
    assert "mounted" not in res.stdout
    assert "permission denied" in (res.stdout + res.stderr).lower(), res.describe()
    # The host's own /proc is untouched.
    assert Path("/proc/self/status").exists()


# --------------------------------------------------------------------------
# Seccomp user notification (runc's seccomp-notify.bats)
# --------------------------------------------------------------------------

AGENT = r'''
import ctypes, errno, json, os, socket, struct, sys
NOTIF_RECV, NOTIF_SEND = 0xC0502100, 0xC0182101
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
path, out = sys.argv[1], sys.argv[2]
ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ln.bind(path)
ln.listen(1)
print("ready", flush=True)
conn, _ = ln.accept()
msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
conn.close()
state = json.loads(msg)
open(out, "w").write(json.dumps({"state": state, "nfds": len(fds)}))
fd = fds[state["fds"].index("seccompFd")]
req, resp = ctypes.create_string_buffer(80), ctypes.create_string_buffer(24)
while True:
    ctypes.memset(req, 0, 80)
    if libc.ioctl(fd, NOTIF_RECV, ctypes.addressof(req)) < 0:
        if ctypes.get_errno() in (errno.EINTR, errno.ENOENT):
            continue
        break
    nid, _pid, _flags, nr = struct.unpack_from("=QIIi", req.raw, 0)
    # mkdir (83): ENOMEDIUM; anything else: let it run.
    val, err, flags = (-1, -errno.ENOMEDIUM, 0) if nr == 83 else (0, 0, 1)
    struct.pack_into("=QqiI", resp, 0, nid, val, err, flags)
    libc.ioctl(fd, NOTIF_SEND, ctypes.addressof(resp))
'''


_SUPPORT: list[bool] = []


def _require_notify_support(ctx):
    """The runtime's side (spawn.rs and exec.rs passing the fd on) is the
    lead's; until it is there the init's LISTENER message is "unexpected"."""
    if not _SUPPORT:
        cid, config = ctx.config(["true"], no_new_privileges=False)
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock",
                                      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
        res = ctx.cli("run", "--bundle", ctx.write_bundle(cid, config), cid)
        _SUPPORT.append("failed to connect with seccomp agent" in res.stderr)
    if not _SUPPORT[0]:
        pytest.skip("this capsa-runtime does not pass the seccomp listener fd on (spawn.rs integration missing)")


def _agent(ctx):
    import sys
    _require_notify_support(ctx)
    sock = ctx.tmp / "agent.sock"
    out = ctx.tmp / "agent.json"
    script = ctx.tmp / "agent.py"
    script.write_text(AGENT)
    proc = subprocess.Popen([sys.executable, str(script), str(sock), str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, sock, out


def _notify_config(ctx, args, sock, *, nnp, names=("mkdir",), hooks=None, extra_mounts=()):
    cid, config = ctx.config(args, no_new_privileges=nnp, extra_mounts=list(extra_mounts))
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(sock), "listenerMetadata": "bar",
        "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_X86_64"],
        "syscalls": [{"names": list(names), "action": "SCMP_ACT_NOTIFY"}]}
    if hooks:
        config["hooks"] = hooks
    return cid, ctx.write_bundle(cid, config)


@pytest.mark.parametrize("nnp", [False, True])
def test_seccomp_notify_reaches_the_agent(ctx, nnp):
    """The listener fd goes to the agent with runc's ContainerProcessState;
    the agent's answer is what the container's syscall returns."""
    agent, sock, out = _agent(ctx)
    try:
        cid, bundle = _notify_config(ctx, ["sh", "-c", "mkdir /tmp/foo"], sock, nnp=nnp)
        res = ctx.cli("run", "--bundle", bundle, cid)
        assert res.returncode != 0, res.describe()
        assert "No medium found" in res.stderr, res.describe()
        got = json.loads(out.read_text())
        st = got["state"]
        assert got["nfds"] == 1
        assert st["fds"] == ["seccompFd"] and st["metadata"] == "bar" and st["pid"] > 0
        assert st["state"]["status"] == "creating" and st["ociVersion"]
    finally:
        agent.kill()
        agent.wait()


def test_seccomp_notify_exec(ctx):
    """A process exec'd into the container gets its own listener, passed on too."""
    agent, sock, out = _agent(ctx)
    try:
        cid, bundle = _notify_config(ctx, ["sleep", "100"], sock, nnp=False, names=("chmod",))
        ctx.ok("run", "-d", "--bundle", bundle, cid)
        # The init's listener went to the agent, which serves one connection:
        # a second agent for the exec.
        agent.kill()
        agent.wait()
        sock.unlink()
        out.unlink()
        agent, sock, out = _agent(ctx)
        res = ctx.cli("exec", cid, "sh", "-c", "echo ok")
        assert res.returncode == 0 and res.stdout.strip() == "ok", res.describe()
        assert json.loads(out.read_text())["state"]["fds"] == ["seccompFd"]
    finally:
        agent.kill()
        agent.wait()


def test_seccomp_notify_agent_gone_gives_enosys(ctx):
    """No copy of the listener is left with the runtime or the init: once
    the agent is gone, a notified syscall fails with ENOSYS."""
    agent, sock, out = _agent(ctx)
    try:
        shared = ctx.shared_dir()
        cid, bundle = _notify_config(ctx, ["sh", "-c", "while [ ! -e /shared/go ]; do sleep 0.05; done; mkdir /tmp/foo"], sock, nnp=False,
                                     extra_mounts=[ctx.bind_mount(shared)])
        proc = subprocess.Popen([ctx.runtime, "--root", str(ctx.root), "run", "--bundle", str(bundle), cid],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        h.wait_for(lambda: out.exists() and out.read_text(), 10)
        agent.kill()
        agent.wait()
        (shared / "go").write_text("")
        _, err = proc.communicate(timeout=20)
        assert proc.returncode != 0
        assert "Function not implemented" in err, err
    finally:
        agent.kill()
        agent.wait()


def test_seccomp_notify_hook_sees_no_listener(ctx):
    """The startContainer hook holds no extra fd (the listener is closed)."""
    agent, sock, out = _agent(ctx)
    try:
        check = "n=$(ls /proc/self/fd | wc -l); [ $n -eq 4 ] || { echo fds $n; ls -l /proc/self/fd; exit 1; }"
        cid, bundle = _notify_config(ctx, ["true"], sock, nnp=True,
                                     hooks={"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", check]}]})
        res = ctx.cli("run", "--bundle", bundle, cid)
        assert res.returncode == 0, res.describe()
    finally:
        agent.kill()
        agent.wait()


@pytest.mark.parametrize("change,expect", [
    ({"listenerPath": ""}, "listenerPath is not set"),
    ({"listenerPath": "/nonexistent/agent.sock"}, "failed to connect with seccomp agent"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY cannot be used as default action"),
    ({"syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}, "SCMP_ACT_NOTIFY cannot be used for the write syscall"),
])
def test_seccomp_notify_errors(ctx, change, expect):
    if "connect" in expect:
        _require_notify_support(ctx)
    cid, config = ctx.config(["true"], no_new_privileges=False)
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(ctx.tmp / "none.sock"),
                                  "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}], **change}
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode != 0, res.describe()
    assert expect in res.stderr, res.describe()
    ctx.assert_nothing_left(cid)


def test_listener_path_without_notify_rules_runs(ctx):
    """runc's "(empty listener path)": a listenerPath and no SCMP_ACT_NOTIFY rule is no listener."""
    cid, config = ctx.config(["sh", "-c", "mkdir /dev/shm/foo && echo ok"])
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent.sock"}
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.describe()
