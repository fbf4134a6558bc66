"""Nothing is left behind: after a runtime killed with SIGKILL in the middle
of create, after delete --force of created and running containers, and
after a container is killed (no zombie). Also against runc where runc can:
CAPSA_TEST_RUNTIME=runc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import helpers as h


def sh(script):
    return ["sh", "-c", script]


def test_sigkill_mid_create_then_delete_force_cleans_everything(ctx):
    if ctx.is_runc:
        pytest.skip("runc 1.1 keeps no state until create ends: killed mid-create, it leaves its cgroups behind")
    shared = ctx.shared_dir()
    # The createRuntime hook holds create half-way: namespaces, cgroup,
    # mounts and the init exist; create has not finished.
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {shared}/hook.pid.tmp; "
                                                    f"mv {shared}/hook.pid.tmp {shared}/hook.pid; exec sleep 60"]}
    cid, config = ctx.config(["sleep", "1000"])
    config["hooks"] = {"createRuntime": [hook]}
    bundle = ctx.write_bundle(cid, config)
    argv = list(ctx.prefix) + [ctx.runtime, "--root", str(ctx.root), "create", "--bundle", str(bundle), cid]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        h.wait_for(lambda: (shared / "hook.pid").exists() or proc.poll() is not None, timeout=20,
                   what="create to reach its createRuntime hook")
        assert proc.poll() is None, "create ended before its hook ran"
        hook_pid = int((shared / "hook.pid").read_text())
        # Mid-create: the state already names the init, and says creating.
        st = json.loads(ctx.ok("state", cid).stdout)
        assert st["status"] == "creating" and st["pid"] > 0, st
        init_pid = st["pid"]
        assert ctx.leftover_cgroups(cid), "the cgroup should exist mid-create"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Whatever is left, state and list must answer without a traceback.
    res = ctx.cli("state", cid)
    assert "Traceback" not in res.stderr, res.describe()
    if res.ok:
        assert json.loads(res.stdout)["status"] in ("creating", "stopped")
    listed = ctx.ok("list", "--format", "json")
    assert isinstance(json.loads(listed.stdout), list)

    ctx.ok("delete", "--force", cid)
    h.wait_for(lambda: not h.pid_alive(hook_pid), what="the hook to die with its runtime")
    h.wait_for(lambda: not h.pid_alive(init_pid), what="the init to be gone")
    ctx.assert_nothing_left(cid)
    assert ctx.cli("state", cid).returncode != 0


def test_damaged_state_does_not_break_state_list_or_delete_force(ctx):
    if ctx.is_runc:
        pytest.skip("runc's state layout is its own")
    cid = ctx.new_id()
    d = ctx.root / cid
    d.mkdir(parents=True)
    (d / "state.json").write_text('{"id": "' + cid + '", "pid": 12')
    res = ctx.cli("state", cid)
    ctx.assert_error(res, mentions=["state"])
    ctx.ok("list")
    ctx.ok("delete", "--force", cid)
    assert not d.exists()


@pytest.mark.parametrize("started", [False, True], ids=["created", "running"])
def test_delete_force_leaves_nothing(ctx, started):
    cid, _ = ctx.create(sh("sleep 1000 & sleep 1000"))
    pid = ctx.state(cid)["pid"]
    if started:
        ctx.ok("start", cid)
        ctx.wait_status(cid, "running")
        h.wait_for(lambda: len(h.cgroup_procs(ctx.leftover_cgroups(cid)[0])) >= 2, what="the children")
    ctx.ok("delete", "--force", cid)
    assert not h.pid_alive(pid)
    ctx.assert_nothing_left(cid)
    assert ctx.cli("state", cid).returncode != 0


def test_killed_container_leaves_no_zombie_and_deletes_clean(ctx):
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("start", cid)
    pid = ctx.state(cid)["pid"]
    os.kill(pid, signal.SIGKILL)
    ctx.wait_status(cid, "stopped")
    # Its parent (init of the host, or a subreaper) reaps it: no zombie stays.
    h.wait_for(lambda: not os.path.exists(f"/proc/{pid}") or h.proc_starttime(pid) != ctx.pids.get(pid),
               what="the killed init to be reaped")
    ctx.ok("delete", cid)
    ctx.assert_nothing_left(cid)


def test_in_process_container_killed_is_reaped_by_delete(ctx):
    if ctx.is_runc:
        pytest.skip("the in-process API is capsa's")
    from capsa.runtime import Runtime

    rt = Runtime(ctx.root)
    cid, bundle = ctx.bundle(["sleep", "1000"])
    pid = rt.create(cid, bundle)
    rt.start(cid)
    os.kill(pid, signal.SIGKILL)
    h.wait_for(lambda: rt.state(cid)["status"] == "stopped", what="stopped")
    rt.delete(cid)
    # The init was our child: delete reaped it, so no zombie is left.
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}"), open(f"/proc/{pid}/stat").read()
    ctx.assert_nothing_left(cid)


def test_delete_force_removes_a_cgroup_made_but_not_yet_recorded(ctx):
    """The narrowest window: killed after making the cgroup, before the init
    was cloned and the cgroup recorded. The state names the path only."""
    if ctx.is_runc:
        pytest.skip("runc's state layout is its own")
    cid = ctx.new_id()
    path = h.cgroup_path_for(cid)
    ctx.track_cgroup(path)
    made = []
    for r in h.v1_controllers() + ([h.CGROUP_UNIFIED] if h.CGROUP_UNIFIED.is_dir() else []):
        d = r / path.strip("/")
        d.mkdir(parents=True)
        made.append(d)
    d = ctx.root / cid
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({
        "id": cid, "pid": 0, "pid_start": 0, "bundle": str(ctx.tmp), "rootfs": str(ctx.rootfs),
        "created": "2026-11-27T00:00:00.000000000Z", "owner": "", "annotations": {},
        "cgroup": {"path": path, "dirs": [], "created": [], "unified": False}, "creating": True}))
    st = json.loads(ctx.ok("state", cid).stdout)
    assert st["status"] == "stopped" and st["pid"] == 0, st
    ctx.ok("delete", "--force", cid)
    assert not [m for m in made if m.exists()]
    ctx.assert_nothing_left(cid)


@pytest.mark.parametrize("delay_ms", [0, 5, 15, 30, 60])
def test_sigkill_at_any_moment_of_create_is_cleaned_by_delete_force(ctx, delay_ms):
    if ctx.is_runc:
        pytest.skip("runc 1.1 keeps no state until create ends: killed mid-create, it leaves its cgroups behind")
    cid, bundle = ctx.bundle(["sleep", "1000"])
    argv = list(ctx.prefix) + [ctx.runtime, "--root", str(ctx.root), "create", "--bundle", str(bundle), cid]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay_ms / 1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = ctx.cli("state", cid)
    assert "Traceback" not in res.stderr, res.describe()
    ctx.ok("list")
    res = ctx.cli("delete", "--force", cid)
    assert res.ok or "does not exist" in res.stderr, res.describe()
    h.wait_for(lambda: not h.processes_rooted_under(str(ctx.rootfs)), what="no process left in the rootfs")
    # A child cloned before the runtime said GO still has the runtime's argv:
    # it must see EOF on the sync socket and exit, not wait forever.
    h.wait_for(lambda: not _with_argument(str(bundle)), what="no cloned runtime child left")
    ctx.assert_nothing_left(cid)


def _with_argument(arg: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and arg.encode() in (d / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids
