"""pause/resume (the cgroup freezer), update (new limits on a running
container) and events --stats, through the CLI (runc's contract: also run
with CAPSA_TEST_RUNTIME=runc) and the Python API; v1 on the host's own
cgroups, v2 in the cgroup2-only view (tests/helpers.py cgroup2_wrapper).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

import helpers as h

MiB = 1024 * 1024

# Counts while it runs: a frozen container's counter stands still.
COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /shared/count.tmp; mv /shared/count.tmp /shared/count; sleep 0.02; done"


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def read(path: Path) -> str:
    return path.read_text().strip()


def v1_dir(controller: str, cid: str) -> Path:
    return h.CGROUP_ROOT / controller / h.CGROUP_PARENT / cid


def v2_dir(cid: str) -> Path:
    return h.CGROUP_UNIFIED / h.CGROUP_PARENT / cid


def needs_v1(*controllers):
    missing = [c for c in controllers if not (h.CGROUP_ROOT / c / "cgroup.procs").exists()]
    return pytest.mark.skipif(bool(missing), reason=f"no v1 hierarchy for {missing}")


def counting(ctx, **overrides) -> tuple[str, Path]:
    shared = ctx.shared_dir()
    cid, _ = ctx.create(sh(COUNTER), extra_mounts=[ctx.bind_mount(shared)], **overrides)
    ctx.ok("start", cid)
    h.wait_for(lambda: (shared / "count").exists(), what="the counter to start")
    return cid, shared / "count"


def count(path: Path) -> int:
    return int(read(path))


def assert_pause_stops_and_resume_restarts(ctx, cid, counter: Path, frozen_file: Path, frozen_value: str):
    ctx.ok("pause", cid)
    assert ctx.state(cid)["status"] == "paused"
    assert read(frozen_file) == frozen_value
    before = count(counter)
    time.sleep(0.5)
    assert count(counter) == before, "a paused container kept running"
    ctx.ok("resume", cid)
    assert ctx.state(cid)["status"] == "running"
    h.wait_for(lambda: count(counter) > before + 2, what="the counter to advance after resume")


# ==========================================================================
# pause / resume
# ==========================================================================

@needs_v1("freezer")
def test_pause_resume_v1(ctx):
    cid, counter = counting(ctx)
    assert_pause_stops_and_resume_restarts(ctx, cid, counter, v1_dir("freezer", cid) / "freezer.state", "FROZEN")
    ctx.ok("delete", "--force", cid)
    ctx.assert_nothing_left(cid)


@pytest.mark.cgroup2
def test_pause_resume_v2(ctx2):
    ctx = ctx2
    cid, counter = counting(ctx)
    assert_pause_stops_and_resume_restarts(ctx, cid, counter, v2_dir(cid) / "cgroup.freeze", "1")
    ctx.ok("delete", "--force", cid)
    ctx.assert_nothing_left(cid)


def test_kill_paused_container(ctx):
    cid, _ = counting(ctx)
    ctx.ok("pause", cid)
    ctx.ok("kill", cid, "KILL")
    ctx.wait_status(cid, "stopped")
    ctx.ok("delete", cid)
    ctx.assert_nothing_left(cid)


@pytest.mark.parametrize("view", ["host", "cgroup2"])
def test_delete_force_paused_container(ctx, view):
    if view == "cgroup2":
        ctx.prefix = h.cgroup2_wrapper()
    cid, _ = counting(ctx)
    ctx.ok("exec", "-d", cid, "sleep", "1000")
    ctx.ok("pause", cid)
    res = ctx.cli("delete", cid)
    ctx.assert_error(res, mentions=[cid])
    ctx.ok("delete", "--force", cid)
    ctx.assert_nothing_left(cid)


def test_pause_created_container(ctx):
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("pause", cid)
    assert ctx.state(cid)["status"] == "paused"
    ctx.assert_error(ctx.cli("start", cid))
    ctx.ok("resume", cid)
    assert ctx.state(cid)["status"] == "created"
    ctx.ok("start", cid)
    assert ctx.state(cid)["status"] == "running"


def test_pause_errors(ctx):
    cid, _ = counting(ctx)
    ctx.assert_error(ctx.cli("resume", cid), capsa_mentions=["not paused"])
    ctx.ok("pause", cid)
    ctx.assert_error(ctx.cli("exec", cid, "true"), mentions=["paused"])
    ctx.ok("resume", cid)
    ctx.ok("kill", cid, "KILL")
    ctx.wait_status(cid, "stopped")
    ctx.assert_error(ctx.cli("pause", cid), capsa_mentions=["not running"])
    ctx.assert_error(ctx.cli("pause", "no-such-" + h.new_id()), capsa_mentions=["does not exist"])


# ==========================================================================
# update
# ==========================================================================

@needs_v1("memory", "pids", "cpu")
def test_update_flags_v1(ctx):
    cid, _ = ctx.create(["sleep", "1000"], resources={"memory": {"limit": 64 * MiB}, "pids": {"limit": 50}})
    ctx.ok("start", cid)
    ctx.ok("update", "--memory", "32m", "--pids-limit", "20", "--cpu-quota", "50000",
           "--cpu-period", "100000", "--cpu-share", "256", cid)
    assert int(read(v1_dir("memory", cid) / "memory.limit_in_bytes")) == 32 * MiB
    assert read(v1_dir("pids", cid) / "pids.max") == "20"
    assert read(v1_dir("cpu", cid) / "cpu.cfs_quota_us") == "50000"
    assert read(v1_dir("cpu", cid) / "cpu.shares") == "256"
    assert ctx.state(cid)["status"] == "running"


@needs_v1("memory", "pids")
def test_update_resources_file_and_stdin_v1(ctx):
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("start", cid)
    path = ctx.tmp / "resources.json"
    path.write_text(json.dumps({"memory": {"limit": 48 * MiB, "reservation": 16 * MiB}, "pids": {"limit": 30}}))
    ctx.ok("update", "--resources", path, cid)
    assert int(read(v1_dir("memory", cid) / "memory.limit_in_bytes")) == 48 * MiB
    assert int(read(v1_dir("memory", cid) / "memory.soft_limit_in_bytes")) == 16 * MiB
    assert read(v1_dir("pids", cid) / "pids.max") == "30"
    ctx.ok("update", "-r", "-", cid, input=json.dumps({"pids": {"limit": 40}}))
    assert read(v1_dir("pids", cid) / "pids.max") == "40"


@needs_v1("memory")
def test_update_raises_memory_and_swap_v1(ctx):
    """memory.limit_in_bytes may not exceed memory.memsw.limit_in_bytes: raising
    both, the runtime writes memsw first."""
    memsw = v1_dir("memory", "x").parent.parent / "memory.memsw.limit_in_bytes"
    if not memsw.exists():
        pytest.skip("no swap accounting (memory.memsw.*) on this host")
    cid, _ = ctx.create(["sleep", "1000"], resources={"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    ctx.ok("start", cid)
    ctx.ok("update", "--memory", "64m", "--memory-swap", "96m", cid)
    assert int(read(v1_dir("memory", cid) / "memory.limit_in_bytes")) == 64 * MiB
    assert int(read(v1_dir("memory", cid) / "memory.memsw.limit_in_bytes")) == 96 * MiB
    ctx.ok("update", "--memory", "16m", "--memory-swap", "16m", cid)
    assert int(read(v1_dir("memory", cid) / "memory.memsw.limit_in_bytes")) == 16 * MiB


@needs_v1("pids")
def test_update_is_enforced(ctx):
    """A lowered pids limit stops new processes in the running container."""
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("start", cid)
    ok = ctx.cli("exec", cid, "sh", "-c", "sleep 0.2 & sleep 0.2 & sleep 0.2 & wait; echo forked")
    assert "forked" in ok.stdout, ok.describe()
    ctx.ok("update", "--pids-limit", "3", cid)
    assert read(v1_dir("pids", cid) / "pids.max") == "3"
    # init + the exec'd shell + one child: the shell's second fork fails
    res = ctx.cli("exec", cid, "sh", "-c", "sleep 0.2 & sleep 0.2 & sleep 0.2 & wait; echo forked")
    assert "fork" in res.stderr.lower(), res.describe()


@pytest.mark.cgroup2
@pytest.mark.parametrize("controller,flags,file,value", [
    ("memory", ["--memory", "32m"], "memory.max", str(32 * MiB)),
    ("pids", ["--pids-limit", "20"], "pids.max", "20"),
], ids=["memory", "pids"])
def test_update_v2(ctx2, controller, flags, file, value):
    ctx = ctx2
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("start", cid)
    res = ctx.cli("update", *flags, cid)
    available = (h.CGROUP_UNIFIED / "cgroup.controllers").read_text().split()
    if controller in available:
        assert res.returncode == 0, res.describe()
        assert read(v2_dir(cid) / file) == value
    elif ctx.is_runc:
        pytest.skip(f"no {controller} controller on this host's cgroup2")
    else:
        # the limit cannot land: say which controller, change nothing
        ctx.assert_error(res, mentions=[controller])
        assert ctx.state(cid)["status"] == "running"


def test_update_errors(ctx):
    cid, _ = ctx.create(["sleep", "1000"])
    ctx.ok("start", cid)
    ctx.assert_error(ctx.cli("update", "--memory", "lots", cid))
    ctx.assert_error(ctx.cli("update", "--resources", ctx.tmp / "missing.json", cid))
    bad = ctx.tmp / "bad.json"
    bad.write_text("{nope")
    ctx.assert_error(ctx.cli("update", "--resources", bad, cid))
    ctx.ok("kill", cid, "KILL")
    ctx.wait_status(cid, "stopped")
    ctx.assert_error(ctx.cli("update", "--pids-limit", "5", cid))


# ==========================================================================
# events --stats
# ==========================================================================

BUSY = "dd if=/dev/zero of=/dev/null bs=1M count=300; head -c 4000000 /dev/zero > /tmp/x; exec sleep 1000"


def stats_of(ctx, cid) -> dict:
    res = ctx.ok("events", "--stats", cid)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    event = json.loads(lines[0])
    assert event["type"] == "stats" and event["id"] == cid, event
    return event["data"]


@needs_v1("memory", "pids", "cpuacct")
def test_events_stats_v1(ctx):
    shared = ctx.shared_dir()
    cid, _ = ctx.create(sh(BUSY.replace("exec sleep", "touch /shared/done; exec sleep")),
                        resources={"memory": {"limit": 64 * MiB}, "pids": {"limit": 50}},
                        extra_mounts=[ctx.bind_mount(shared)], readonly=False)
    ctx.ok("start", cid)
    h.wait_for((shared / "done").exists, 30, what="the busy work")
    data = stats_of(ctx, cid)
    assert data["cpu"]["usage"]["total"] > 0
    assert len(data["cpu"]["usage"]["percpu"]) >= 1
    mem = data["memory"]["usage"]
    assert mem["usage"] > 0 and mem["limit"] == 64 * MiB and mem["max"] >= mem["usage"]
    assert data["pids"]["current"] >= 1 and data["pids"]["limit"] == 50


@pytest.mark.cgroup2
def test_events_stats_v2(ctx2):
    ctx = ctx2
    shared = ctx.shared_dir()
    cid, _ = ctx.create(sh(BUSY.replace("exec sleep", "touch /shared/done; exec sleep")),
                        extra_mounts=[ctx.bind_mount(shared)], readonly=False)
    ctx.ok("start", cid)
    h.wait_for((shared / "done").exists, 30, what="the busy work")
    data = stats_of(ctx, cid)
    assert data["cpu"]["usage"]["total"] > 0
    assert data["cpu"]["usage"]["user"] + data["cpu"]["usage"]["kernel"] > 0
    assert data["pids"]["current"] >= 1
    assert "usage" in data["memory"]


def test_events_stream_ends_with_the_container(ctx):
    """events without --stats: a stats line per interval until the container stops."""
    if ctx.is_runc:
        pytest.skip("runc's stream does not end when the container stops")
    shared = ctx.shared_dir()
    cid, _ = ctx.create(sh("sleep 1; echo x > /shared/x; sleep 1000"), extra_mounts=[ctx.bind_mount(shared)])
    ctx.ok("start", cid)
    argv = [ctx.runtime, "--root", str(ctx.root), "events", "--interval", "100ms", cid]
    with open(ctx.tmp / "events.out", "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        try:
            h.wait_for((shared / "x").exists, what="the container to run a while")
            ctx.ok("kill", cid, "KILL")
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = (ctx.tmp / "events.out").read_text().splitlines()
    assert len(lines) >= 3, lines
    assert all(json.loads(l)["type"] == "stats" for l in lines)


def test_events_stats_of_stopped_container(ctx):
    cid, _ = ctx.create(["true"])
    ctx.ok("start", cid)
    ctx.wait_status(cid, "stopped")
    ctx.assert_error(ctx.cli("events", "--stats", cid))


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


@needs_v1("memory", "pids", "freezer")
def test_api_pause_update_stats(api):
    from capsa.runtime import ContainerError

    shared = api.shared_dir()
    cid, bundle = api.bundle(sh(COUNTER), extra_mounts=[api.bind_mount(shared)])
    api.rt.create(cid, str(bundle))
    api.rt.start(cid)
    counter = shared / "count"
    h.wait_for(counter.exists, what="the counter to start")
    api.rt.pause(cid)
    assert api.rt.state(cid)["status"] == "paused"
    before = count(counter)
    time.sleep(0.3)
    assert count(counter) == before
    with pytest.raises(ContainerError, match="paused"):
        api.rt.pause(cid)
    api.rt.resume(cid)
    h.wait_for(lambda: count(counter) > before, what="the counter to advance")

    api.rt.update(cid, {"memory": {"limit": 40 * MiB}, "pids": {"limit": 25}})
    assert int(read(v1_dir("memory", cid) / "memory.limit_in_bytes")) == 40 * MiB
    stats = api.rt.stats(cid)
    assert stats["memory"]["usage"]["limit"] == 40 * MiB
    assert stats["pids"]["limit"] == 25 and stats["pids"]["current"] >= 1
    assert stats["cpu"]["usage"]["total"] > 0
    with pytest.raises(ContainerError, match="invalid resources"):
        api.rt.update(cid, {"memory": {"limit": "lots"}})
    api.rt.delete(cid, force=True)
