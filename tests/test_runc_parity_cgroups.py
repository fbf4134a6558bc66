"""runc v1.1.5's integration suite, the cgroup side (update.bats,
cgroups.bats, events.bats, list.bats, delete.bats): what capsa-runtime must
print and do as runc does. v1 on the host's hierarchies, v2 in the
cgroup2-only view (ctx2)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import helpers as h

MiB = 1024 * 1024
V1_UNLIMITED = "9223372036854771712"


def read(p: Path) -> str:
    return p.read_text().strip()


def v1_dir(controller: str, rel: str) -> Path:
    return h.CGROUP_ROOT / controller / rel.lstrip("/")


def needs_v1(*controllers):
    missing = [c for c in controllers if not (h.CGROUP_ROOT / c / "cgroup.procs").exists()]
    return pytest.mark.skipif(bool(missing), reason=f"no v1 hierarchy for {missing}")


def running(ctx, args=("sleep", "1000"), **overrides) -> str:
    cid, _ = ctx.create(list(args), **overrides)
    ctx.ok("start", cid)
    return cid


# --------------------------------------------------------------------------
# B. JSON key order
# --------------------------------------------------------------------------

def test_events_stats_keys_in_runcs_order(ctx):
    """events 1: `{"type":"stats","id":"ID","data":{...}}`, as text."""
    cid = running(ctx)
    line = ctx.ok("events", "--stats", cid).stdout.strip()
    assert line.startswith('{"type":"stats","id":"%s","data":{' % cid), line




def test_list_json_keys_in_runcs_order(ctx):
    """list 1: ociVersion, id, pid, status, bundle, rootfs, created, owner; no empty annotations."""
    cid = running(ctx)
    text = ctx.ok("list", "--format", "json").stdout.strip()
    item = json.loads(text)[0]
    assert list(item) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"], text
    assert text.startswith('[{"ociVersion":"'), text
    assert item["id"] == cid and item["status"] == "running"


# --------------------------------------------------------------------------
# C. update on cgroup v1
# --------------------------------------------------------------------------

@needs_v1("memory")
def test_update_memory_unlimited_lifts_memsw_v1(ctx):
    """update 1: `--memory -1` alone lifts memsw too (else EINVAL)."""
    if not (h.CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists():
        pytest.skip("no swap accounting on this host")
    cid = running(ctx, resources={"memory": {"limit": 32 * MiB, "swap": 64 * MiB}})
    mem = v1_dir("memory", h.cgroup_path_for(cid))
    ctx.ok("update", "--memory", "-1", cid)
    assert read(mem / "memory.limit_in_bytes") == V1_UNLIMITED
    assert read(mem / "memory.memsw.limit_in_bytes") == V1_UNLIMITED
    # and the setMemoryAndSwap order: a new limit above the old memsw, both at once
    ctx.ok("update", "--memory", "30M", "--memory-swap", "50M", cid)
    ctx.ok("update", "--memory", "60M", "--memory-swap", "80M", cid)
    assert int(read(mem / "memory.limit_in_bytes")) == 60 * MiB
    assert int(read(mem / "memory.memsw.limit_in_bytes")) == 80 * MiB


@needs_v1("cpu")
def test_update_shorter_period_under_a_pod_quota_v1(ctx):
    """update 8: in a parent limited to 50%, period 10000 + quota 3000 lands
    (the period refused first, written again after the quota)."""
    pod = f"/{h.CGROUP_PARENT}/pod-{os.getpid()}-{time.monotonic_ns() % 100000}"
    pod_dir = v1_dir("cpu", pod)
    pod_dir.mkdir(parents=True)
    try:
        (pod_dir / "cpu.cfs_quota_us").write_text("50000")
        cid = ctx.new_id()
        cid = running(ctx, cid=cid, cgroups_path=f"{pod}/{cid}")
        leaf = pod_dir / cid
        assert not ctx.cli("update", "--cpu-quota", "60000", cid).ok, "60% inside a 50% pod must fail"
        ctx.ok("update", "--cpu-period", "10000", "--cpu-quota", "3000", cid)
        assert read(leaf / "cpu.cfs_period_us") == "10000"
        assert read(leaf / "cpu.cfs_quota_us") == "3000"
        ctx.ok("delete", "--force", cid)
    finally:
        for c in ctx.ids:
            ctx.cli("delete", "--force", c)
        for sub in sorted(pod_dir.glob("*/"), reverse=True):
            if sub.is_dir():
                sub.rmdir()
        pod_dir.rmdir()


@needs_v1("cpu")
def test_update_realtime_v1(ctx):
    """update 12: cpu.rt_period_us and cpu.rt_runtime_us, period first."""
    root = h.CGROUP_ROOT / "cpu"
    if not (root / "cpu.rt_runtime_us").exists():
        pytest.skip("no CONFIG_RT_GROUP_SCHED")
    period, runtime = read(root / "cpu.rt_period_us"), read(root / "cpu.rt_runtime_us")
    # A top-level parent of the test's own (swept by conftest like capsa-test):
    # it gets the root's realtime budget, and goes with it.
    pod = root / f"{h.CGROUP_PARENT}-rt-{os.getpid()}"
    pod.mkdir()
    try:
        (pod / "cpu.rt_runtime_us").write_text(runtime)
        cid = ctx.new_id()
        cid = running(ctx, cid=cid, cgroups_path=f"/{pod.name}/{cid}")
        ctx.ok("update", "-r", "-", cid, input=json.dumps({"cpu": {"realtimeRuntime": 500001}}))
        assert read(pod / cid / "cpu.rt_period_us") == period
        assert read(pod / cid / "cpu.rt_runtime_us") == "500001"
        ctx.ok("update", "-r", "-", cid, input=json.dumps({"cpu": {"realtimePeriod": 800001, "realtimeRuntime": 500001}}))
        assert read(pod / cid / "cpu.rt_period_us") == "800001"
        ctx.ok("update", "--cpu-rt-period", "900001", "--cpu-rt-runtime", "600001", cid)
        assert read(pod / cid / "cpu.rt_period_us") == "900001"
        assert read(pod / cid / "cpu.rt_runtime_us") == "600001"
        ctx.ok("delete", "--force", cid)
    finally:
        for c in ctx.ids:
            ctx.cli("delete", "--force", c)
        for sub in pod.glob("*/"):
            if sub.is_dir():
                sub.rmdir()
        pod.rmdir()


DEVICES_RWA = [{"allow": False, "access": "rwm"},
               {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "rwa"}]


def test_device_rule_access_letters_ignored_v1(ctx):
    """update 13: access "rwa" is r and w (runc ignores other letters)."""
    res = ctx.run(["sh", "-c", "echo x > /dev/null && echo ok"], resources={"devices": DEVICES_RWA})
    assert res.ok and "ok" in res.stdout, res.describe()


@pytest.mark.cgroup2
def test_device_rule_access_letters_ignored_v2(ctx2):
    res = ctx2.run(["sh", "-c", "echo x > /dev/null && echo ok"], resources={"devices": DEVICES_RWA})
    assert res.ok and "ok" in res.stdout, res.describe()


# --------------------------------------------------------------------------
# D. checks at create
# --------------------------------------------------------------------------

def test_unified_on_v1_is_invalid(ctx):
    """cgroups 7."""
    cid, bundle = ctx.bundle(["true"], resources={"unified": {"memory.min": "131072"}})
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert not res.ok and "invalid configuration" in res.stderr, res.describe()
    ctx.assert_nothing_left(cid)


@needs_v1("freezer")
def test_frozen_cgroup_refused_v1(ctx):
    """cgroups 17: runc's words."""
    cid, bundle = ctx.bundle(["true"])
    d = v1_dir("freezer", h.cgroup_path_for(cid))
    d.mkdir(parents=True)
    try:
        (d / "freezer.state").write_text("FROZEN")
        for cmd in (["run", "-d"], ["create"]):
            res = ctx.cli(*cmd, "--bundle", bundle, cid)
            assert res.returncode == 1, res.describe()
            assert "container's cgroup unexpectedly frozen" in res.stderr, res.describe()
    finally:
        (d / "freezer.state").write_text("THAWED")
        d.rmdir()


@pytest.mark.cgroup2
def test_frozen_cgroup_refused_v2(ctx2):
    ctx = ctx2
    cid, bundle = ctx.bundle(["true"])
    d = h.CGROUP_UNIFIED / h.cgroup_path_for(cid).lstrip("/")
    d.mkdir(parents=True)
    try:
        (d / "cgroup.freeze").write_text("1")
        res = ctx.cli("create", "--bundle", bundle, cid)
        assert res.returncode == 1 and "container's cgroup unexpectedly frozen" in res.stderr, res.describe()
    finally:
        (d / "cgroup.freeze").write_text("0")
        d.rmdir()


def test_non_empty_cgroup_is_recorded(ctx):
    """cgroups 16: a second container in the first one's cgroup; the core
    counts what it found (state.json's cgroup.procs_found) for the warning."""
    first = running(ctx)
    second = ctx.new_id()
    cid, bundle = ctx.bundle(["sleep", "1000"], cid=second, cgroups_path=h.cgroup_path_for(first))
    res = ctx.ok("create", "--bundle", bundle, second)
    state = json.loads((ctx.root / second / "state.json").read_text())
    assert state["cgroup"]["procs_found"] >= 1, state["cgroup"]
    first_state = json.loads((ctx.root / first / "state.json").read_text())
    assert "procs_found" not in first_state["cgroup"]
    ctx.ok("delete", "--force", second)
    ctx.ok("delete", "--force", first)


def test_non_empty_cgroup_warning(ctx):
    first = running(ctx)
    second = ctx.new_id()
    _, bundle = ctx.bundle(["sleep", "1000"], cid=second, cgroups_path=h.cgroup_path_for(first))
    res = ctx.ok("create", "--bundle", bundle, second)
    assert "container's cgroup is not empty: 1 process(es) found" in res.stderr, res.describe()


# --------------------------------------------------------------------------
# L. delete -f with sub-cgroups
# --------------------------------------------------------------------------

def _sub_cgroups(ctx, cid, leaves: list[Path]) -> int:
    ctx.ok("exec", "-d", cid, "sleep", "1000")
    pids = h.wait_for(lambda: [p for p in h.cgroup_procs(leaves[0]) if "sleep" in Path(f"/proc/{p}/cmdline").read_text()
                               and p != ctx.state(cid)["pid"]], what="the exec'd sleep")
    pid = pids[0]
    for leaf in leaves:
        (leaf / "foo" / "bar").mkdir(parents=True)
        (leaf / "foo" / "bar" / "cgroup.procs").write_text(str(pid))
    return pid


@needs_v1("memory", "freezer")
def test_delete_force_with_sub_cgroups_v1(ctx):
    """delete 5: sub-cgroups go depth first, their processes killed."""
    cid = running(ctx)
    rel = h.cgroup_path_for(cid)
    pid = _sub_cgroups(ctx, cid, [v1_dir("memory", rel), v1_dir("freezer", rel)])
    ctx.ok("delete", "--force", cid)
    h.wait_for(lambda: not h.pid_alive(pid), what="the sub-cgroup's process to die")
    ctx.assert_nothing_left(cid)


@pytest.mark.cgroup2
def test_delete_force_with_sub_cgroups_v2(ctx2):
    ctx = ctx2
    cid = running(ctx)
    pid = _sub_cgroups(ctx, cid, [h.CGROUP_UNIFIED / h.cgroup_path_for(cid).lstrip("/")])
    ctx.ok("delete", "--force", cid)
    h.wait_for(lambda: not h.pid_alive(pid), what="the sub-cgroup's process to die")
    ctx.assert_nothing_left(cid)


# --------------------------------------------------------------------------
# Q. events: OOM
# --------------------------------------------------------------------------

def _oom_events(ctx, cid):
    argv = list(ctx.prefix) + [ctx.runtime, "--root", str(ctx.root), "events", "--interval", "1s", cid]
    out_path = ctx.tmp / "events.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            h.wait_for(lambda: cid in out_path.read_text(), what="a first stats event")
            ctx.ok("exec", "-d", cid, "sh", "-c", "x=$(dd if=/dev/urandom ibs=5120k 2>/dev/null)")
            h.wait_for(lambda: '"oom"' in out_path.read_text(), timeout=20, what="an oom event")
            ctx.ok("delete", "--force", cid)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert '{"type":"oom","id":"%s"}' % cid in out_path.read_text().splitlines()




@needs_v1("memory")
def test_events_oom_v1(ctx):
    """events 5."""
    cid = running(ctx, resources={"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    _oom_events(ctx, cid)


@pytest.mark.cgroup2
def test_events_oom_v2(ctx2):
    if "memory" not in (h.CGROUP_UNIFIED / "cgroup.controllers").read_text().split():
        pytest.skip("no memory controller on this host's cgroup2")
    cid = running(ctx2, resources={"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    _oom_events(ctx2, cid)
