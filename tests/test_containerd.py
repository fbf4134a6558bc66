"""containerd runs containers through capsa-runtime: ctr -> containerd ->
containerd-shim-runc-v2 -> go-runc -> capsa-runtime (with --log FILE
--log-format json), on a private containerd started by the tests
(tests/engines.py) with a busybox image imported from a tarball."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

import helpers as h
from engines import IMAGE, cgroup_dirs, cgroup_limits, pty_session, require_runtime_command, require_seccomp
from engines import (busybox_tar, containerd, containerd_daemon, docker_archive,  # noqa: F401  (fixtures)
                     podman_home)


def task_status(containerd, cid: str) -> str | None:
    for line in containerd.ok("task", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[2]
    return None


def test_run_rm_prints_hi(containerd):
    cid = h.new_id("ctr")
    res = containerd.ok("run", "--rm", IMAGE, cid, "echo", "hi")
    assert res.stdout == "hi\n"
    assert containerd.ctr("containers", "info", cid).returncode != 0  # --rm removed it


@pytest.mark.parametrize("code", [0, 7, 255])
def test_exit_code_propagates(containerd, code):
    res = containerd.ctr("run", "--rm", IMAGE, h.new_id("ctr"), "sh", "-c", f"exit {code}")
    assert res.returncode == code, res.describe()


def test_runtime_error_reaches_ctr(containerd):
    """go-runc reads the error from capsa-runtime's JSON --log: ctr shows it."""
    res = containerd.ctr("run", "--rm", IMAGE, h.new_id("ctr"), "/no/such/command")
    assert res.returncode != 0
    assert "exec /no/such/command: ENOENT" in res.stderr, res.describe()


def test_detached_task_kill(containerd):
    cid = h.new_id("ctr")
    containerd.ok("run", "-d", IMAGE, cid, "sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done")
    info = json.loads(containerd.ok("containers", "info", cid).stdout)
    options = base64.b64decode(info["Runtime"]["Options"]["value"])  # runc.v1.Options, protobuf
    assert containerd.runtime.encode() in options
    assert task_status(containerd, cid) == "RUNNING"
    pid = int(containerd.ok("task", "ps", cid).stdout.splitlines()[1].split()[0])
    assert h.pid_alive(pid)
    state_dir = containerd.runc_root / containerd.namespace / cid
    assert (state_dir / "state.json").exists()  # capsa-runtime's state, under --runc-root

    containerd.ok("task", "kill", cid)  # SIGTERM, trapped
    h.wait_for(lambda: task_status(containerd, cid) == "STOPPED", timeout=10, what="task to stop")
    res = containerd.ok("task", "delete", cid)
    assert "exit code 3" in res.stderr, res.describe()
    assert not h.pid_alive(pid)
    assert not state_dir.exists()
    containerd.ok("containers", "delete", cid)


def test_task_kill_sigkill_and_exit_status(containerd):
    cid = h.new_id("ctr")
    containerd.ok("run", "-d", IMAGE, cid, "sleep", "1000")
    pid = int(containerd.ok("task", "ps", cid).stdout.splitlines()[1].split()[0])
    containerd.ok("task", "kill", "--signal", "SIGKILL", cid)
    h.wait_for(lambda: task_status(containerd, cid) == "STOPPED", timeout=10, what="task to stop")
    assert not h.pid_alive(pid)
    containerd.ok("task", "delete", cid)
    containerd.ok("containers", "delete", cid)
    assert cgroup_dirs(f"{containerd.namespace}/{cid}") == []


def test_task_exec(containerd):
    require_runtime_command(containerd.runtime, "exec")
    cid = h.new_id("ctr")
    containerd.ok("run", "-d", IMAGE, cid, "sleep", "1000")
    res = containerd.ok("task", "exec", "--exec-id", "x1", cid, "sh", "-c", "echo $$ from-exec; cat /proc/1/cmdline")
    pid, word = res.stdout.split()[:2]
    assert word == "from-exec" and pid != "1"
    assert res.stdout.split(None, 2)[2].startswith("sleep")
    res = containerd.ctr("task", "exec", "--exec-id", "x2", cid, "sh", "-c", "exit 6")
    assert res.returncode == 6, res.describe()
    res = containerd.ok("task", "exec", "--exec-id", "x3", "--user", "65534", "--cwd", "/tmp", cid,
                        "sh", "-c", "echo $(id -u) $(pwd)")
    assert res.stdout.split() == ["65534", "/tmp"]
    containerd.ok("task", "kill", "--signal", "SIGKILL", cid)


def test_task_pause_resume(containerd):
    require_runtime_command(containerd.runtime, "pause")
    cid = h.new_id("ctr")
    containerd.ok("run", "-d", IMAGE, cid, "sleep", "1000")
    containerd.ok("task", "pause", cid)
    assert task_status(containerd, cid) == "PAUSED"
    containerd.ok("task", "resume", cid)
    assert task_status(containerd, cid) == "RUNNING"
    containerd.ok("task", "exec", "--exec-id", "after-resume", cid, "true")
    containerd.ok("task", "kill", "--signal", "SIGKILL", cid)


def test_run_with_terminal(containerd):
    """ctr run -t: go-runc passes --console-socket; capsa-runtime sends the pty master."""
    out, code = pty_session(
        containerd.ctr_argv("run", "-t", "--rm", IMAGE, h.new_id("ctr"), "sh"), dict(os.environ),
        [("", "# "), ("tty\n", "/dev/pts/0"), ("echo $((6*7))\n", "42\r"), ("exit 4\n", "")])
    assert code == 4, out


def test_shim_cleanup_runs_clean(containerd):
    """After a task is deleted the shim force-deletes it once more; as with
    runc, an id already gone is no error (no warning in containerd's log)."""
    cid = h.new_id("ctr")
    containerd.ok("run", "--rm", IMAGE, cid, "true")
    h.wait_for(lambda: f"id={cid}" in containerd.log_tail(400) and "shim disconnected" in containerd.log_tail(400),
               timeout=10, what="the shim to be gone")
    warnings = [line for line in containerd.log_tail(400).splitlines()
                if cid in line and "did not terminate successfully" in line]
    assert warnings == []


def test_resource_limits_reach_the_cgroup(containerd):
    cid = h.new_id("ctr")
    containerd.ok("run", "-d", "--memory-limit", str(64 * 1024 * 1024), IMAGE, cid, "sleep", "1000")
    pid = int(containerd.ok("task", "ps", cid).stdout.splitlines()[1].split()[0])
    assert cgroup_limits(pid)["memory"] == 64 * 1024 * 1024
    assert f"/{containerd.namespace}/{cid}" in Path(f"/proc/{pid}/cgroup").read_text()
    containerd.ok("task", "kill", "--signal", "SIGKILL", cid)


def test_default_seccomp_profile_applies(containerd):
    """ctr run --seccomp puts containerd's default profile in config.json."""
    require_seccomp(containerd.runtime)
    res = containerd.ok("run", "--rm", "--seccomp", IMAGE, h.new_id("ctr"), "grep", "^Seccomp:", "/proc/self/status")
    assert res.stdout.split() == ["Seccomp:", "2"]
