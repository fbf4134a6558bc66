"""cgroups: limits from config.json land in the container's cgroup, the kernel
enforces them, and the cgroup goes away on delete.

This machine is hybrid: v1 controllers under /sys/fs/cgroup/<controller>,
an empty cgroup2 at /sys/fs/cgroup/unified. The v2 tests run the runtime in a
private mount namespace where /sys/fs/cgroup is that cgroup2 hierarchy, which
the host sees at /sys/fs/cgroup/unified.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import helpers as h

MiB = 1024 * 1024


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def v1_dir(controller: str, cid: str) -> Path:
    return h.CGROUP_ROOT / controller / h.CGROUP_PARENT / cid


def read(path: Path) -> str:
    return path.read_text().strip()


def needs_v1(*controllers):
    missing = [c for c in controllers if not (h.CGROUP_ROOT / c / "cgroup.procs").exists()]
    return pytest.mark.skipif(bool(missing), reason=f"no v1 hierarchy for {missing}")


def v1_blkio_weight_file() -> str | None:
    """The v1 file a blkio weight goes to on this host: blkio.weight (CFQ) or
    blkio.bfq.weight (BFQ, shown only below the root cgroup), or None where
    neither scheduler offers one. Asked of a cgroup made for the question."""
    blkio = h.CGROUP_ROOT / "blkio"
    if not (blkio / "cgroup.procs").exists():
        return None
    probe = blkio / f"capsa-test-probe-{os.getpid()}"
    probe.mkdir()
    try:
        return next((f for f in ("blkio.weight", "blkio.bfq.weight") if (probe / f).exists()), None)
    finally:
        probe.rmdir()


# ==========================================================================
# cgroup v1 (the host's own view)
# ==========================================================================

@needs_v1("memory", "cpu", "cpuset", "pids", "blkio")
def test_v1_limits_land_in_cgroup_files(ctx):
    """Every limit, and the blkio weight where the host has a file for it
    (only BFQ does now that CFQ is gone; without one, the core refuses a
    weight: see test_v1_blkio_weight_without_bfq_is_refused)."""
    weight_file = v1_blkio_weight_file()
    resources = {
        "memory": {"limit": 64 * MiB, "reservation": 32 * MiB},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0",
                "mems": "0"},
        "pids": {"limit": 50},
        "blockIO": {"weight": 500} if weight_file else {},
    }
    cid, _ = ctx.create(["sleep", "1000"], resources=resources)
    ctx.ok("start", cid)
    pid = ctx.state(cid)["pid"]

    assert int(read(v1_dir("memory", cid) / "memory.limit_in_bytes")) == 64 * MiB
    assert int(read(v1_dir("memory", cid) / "memory.soft_limit_in_bytes")) == 32 * MiB
    assert read(v1_dir("cpu", cid) / "cpu.shares") == "512"
    assert read(v1_dir("cpu", cid) / "cpu.cfs_quota_us") == "50000"
    assert read(v1_dir("cpu", cid) / "cpu.cfs_period_us") == "100000"
    assert read(v1_dir("cpuset", cid) / "cpuset.cpus") == "0"
    assert read(v1_dir("cpuset", cid) / "cpuset.mems") == "0"
    assert read(v1_dir("pids", cid) / "pids.max") == "50"
    if weight_file:
        assert read(v1_dir("blkio", cid) / weight_file).splitlines()[0].split()[-1] == "500"

    for controller in ("memory", "cpu", "cpuset", "pids", "blkio"):
        procs = h.cgroup_procs(v1_dir(controller, cid))
        assert pid in procs, f"{controller}: {pid} not in {procs}"

    ctx.ok("delete", "--force", cid)
    ctx.assert_nothing_left(cid)


@needs_v1("blkio")
def test_v1_blkio_weight_without_bfq_is_refused(ctx):
    """The runtime's contract (runc's too): a weight the host cannot honour
    is an error naming it, and nothing is left behind."""
    if v1_blkio_weight_file():
        pytest.skip("this host has a blkio weight file (BFQ or CFQ)")
    cid, bundle = ctx.bundle(["true"], resources={"blockIO": {"weight": 500}})
    res = ctx.cli("create", "--bundle", bundle, cid)
    ctx.assert_error(res, mentions=["blkio"], capsa_mentions=["blkio weight"])
    assert ctx.cli("state", cid).returncode != 0
    ctx.assert_nothing_left(cid)


# --------------------------------------------------------------------------
# capsa run --blkio-weight: Docker's behaviour on either kind of host
# --------------------------------------------------------------------------

BLKIO_WARNING = ("WARNING: Your kernel does not support Block I/O weight or the cgroup is not mounted. "
                 "Weight discarded.")


@pytest.fixture(scope="module")
def busybox_cli_root(base_dir):
    import image_fixtures as imgs
    return imgs.busybox_store(base_dir, "capsa-cgroups-root")


@pytest.fixture
def capsa_cli(busybox_cli_root):
    import image_fixtures as imgs
    with imgs.capsa_cli(busybox_cli_root) as run:
        yield run


def _host_blkio_weight() -> tuple[Path, str] | None:
    """(hierarchy, weight file) of this host, or None: cgroup v2's io.weight
    where the io controller is available, else the v1 file."""
    controllers = h.CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists():
        return (h.CGROUP_ROOT, "io.weight") if "io" in controllers.read_text().split() else None
    weight_file = v1_blkio_weight_file()
    return (h.CGROUP_ROOT / "blkio", weight_file) if weight_file else None


def test_run_blkio_weight_lands_or_is_discarded_with_a_warning(capsa_cli):
    """As Docker: where the host has a weight file, the weight is in it;
    where it has none, one warning line on stderr and the container runs."""
    host = _host_blkio_weight()
    if host is None:
        res = capsa_cli("run", "--rm", "--blkio-weight", "300", "busybox", "echo", "ran")
        assert res.returncode == 0, res.describe()
        assert res.stdout == "ran\n"
        assert res.stderr.splitlines() == [BLKIO_WARNING], res.describe()
        return
    hierarchy, weight_file = host
    res = capsa_cli("run", "-d", "--blkio-weight", "300", "busybox", "sleep", "60")
    assert res.returncode == 0, res.describe()
    assert BLKIO_WARNING not in res.stderr
    cid = res.stdout.strip()
    value = read(hierarchy / "capsa" / cid / weight_file).splitlines()[0].split()[-1]
    want = str(1 + (300 - 10) * 9999 // 990) if weight_file == "io.weight" else "300"
    assert value == want
    assert capsa_cli("rm", "-f", cid).returncode == 0


def test_run_blkio_weight_out_of_range_is_one_line(capsa_cli):
    res = capsa_cli("run", "--rm", "--blkio-weight", "5", "busybox", "true")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == ["capsa: error: invalid --blkio-weight 5: the range is 10 to 1000"]


V1_CONTROLLERS = ["memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices",
                  "freezer"]


@needs_v1(*V1_CONTROLLERS)
@pytest.mark.parametrize("how", ["create+start", "run --detach"])
def test_v1_process_cgroup_membership(ctx, how):
    """/proc/<pid>/cgroup on the host shows cgroupsPath in every v1 controller
    hierarchy, as with runc: accounting (cpuacct), freezing (freezer) and the
    device whitelist (devices) need the container in its own cgroup there too,
    not only where config.json sets a limit. `run` starts its init at once
    (CLONE_VM): the init then moves itself in, where create+start's parent
    moves it."""
    resources = {"memory": {"limit": 64 * MiB}, "pids": {"limit": 100}}
    if how == "run --detach":
        cid, bundle = ctx.bundle(["sleep", "1000"], resources=resources)
        ctx.ok("run", "--detach", "--bundle", bundle, cid)
    else:
        cid, _ = ctx.create(["sleep", "1000"], resources=resources)
        ctx.ok("start", cid)
    pid = ctx.state(cid)["pid"]
    by_controller = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for n in names.split(","):
            by_controller[n] = path
    want = h.cgroup_path_for(cid)
    for controller in V1_CONTROLLERS:
        assert by_controller.get(controller) == want, (controller, by_controller)
        assert pid in h.cgroup_procs(v1_dir(controller, cid)), controller
    ctx.ok("delete", "--force", cid)
    ctx.assert_nothing_left(cid)


@needs_v1("memory")
def test_v1_cgroup_exists_while_running_and_is_removed_on_delete(ctx):
    cid, _ = ctx.create(["sleep", "1000"], resources={"memory": {"limit": 64 * MiB}})
    ctx.ok("start", cid)
    assert v1_dir("memory", cid).is_dir()
    assert ctx.leftover_cgroups(cid)
    ctx.ok("kill", cid, "KILL")
    ctx.wait_status(cid, "stopped")
    ctx.ok("delete", cid)
    assert not ctx.leftover_cgroups(cid)
    ctx.assert_nothing_left(cid)


@needs_v1("memory")
def test_v1_oom_kill_exit_code(ctx):
    # dd's 64 MiB buffer is touched by the read from /dev/zero; no swap here
    res = ctx.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                  resources={"memory": {"limit": 32 * MiB}})
    assert res.returncode == 128 + 9, res.describe()


@needs_v1("memory")
def test_v1_oom_kill_is_recorded(ctx):
    cid, _ = ctx.create(["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                        resources={"memory": {"limit": 32 * MiB}})
    ctx.ok("start", cid)
    ctx.wait_status(cid, "stopped")
    oom = dict(line.split() for line in
               read(v1_dir("memory", cid) / "memory.oom_control").splitlines())
    assert int(oom.get("oom_kill", "0")) >= 1, oom
    assert int(read(v1_dir("memory", cid) / "memory.failcnt")) > 0
    ctx.ok("delete", cid)
    ctx.assert_nothing_left(cid)


@needs_v1("memory")
def test_v1_within_memory_limit_is_fine(ctx):
    res = ctx.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=4"],
                  resources={"memory": {"limit": 64 * MiB}})
    assert res.returncode == 0, res.describe()


def _open_fifo_for_write(path: Path, timeout=10.0) -> int:
    def attempt():
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no reader yet
                return None
            raise
    return h.wait_for(attempt, timeout, what=f"a reader on {path}")


@needs_v1("pids")
def test_v1_fork_bomb_stops_at_pids_limit(ctx):
    limit = 20
    shared = ctx.shared_dir()
    os.mkfifo(shared / "fifo")
    os.chmod(shared / "fifo", 0o666)
    # The subshell forks `sleep`s until fork fails (ash then aborts the
    # subshell); PID 1 counts the processes with a glob (no fork needed),
    # reports, and blocks on the fifo until the test lets it go.
    script = ("( i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done ) "
              "2>/shared/fork-errors; "
              "set -- /proc/[0-9]*; echo $# > /shared/count; "
              "read x < /shared/fifo")
    cid, _ = ctx.create(sh(script), resources={"pids": {"limit": limit}},
                        extra_mounts=[ctx.bind_mount(shared)])
    ctx.ok("start", cid)
    h.wait_for(lambda: (shared / "count").exists() and read(shared / "count"), 20,
               what="the fork loop to finish")
    count = int(read(shared / "count"))
    assert count <= limit, f"{count} processes with pids.max={limit}"
    assert count >= limit // 2, f"only {count} processes: the fork loop did not run"
    assert "fork" in (shared / "fork-errors").read_text().lower()

    pids_dir = v1_dir("pids", cid)
    assert read(pids_dir / "pids.max") == str(limit)
    assert int(read(pids_dir / "pids.current")) <= limit
    events = dict(line.split() for line in read(pids_dir / "pids.events").splitlines())
    assert int(events.get("max", "0")) > 0, events

    fd = _open_fifo_for_write(shared / "fifo")
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)
    ctx.wait_status(cid, "stopped")
    ctx.ok("delete", cid)
    ctx.assert_nothing_left(cid)


@needs_v1("pids")
def test_v1_fork_bomb_run_ends(ctx):
    """A fork loop as PID 1 under `run`: fork fails, the shell gives up, the
    container ends and everything in it goes."""
    res = ctx.run(sh("while :; do sleep 1000 & done"), resources={"pids": {"limit": 20}},
                  timeout=30)
    assert res.returncode != 0, res.describe()
    assert "fork" in res.stderr.lower(), res.describe()


@needs_v1("devices")
def test_v1_devices_cgroup_denies_host_disk(ctx):
    """Docker's default: deny all devices but the standard ones. The container
    has CAP_MKNOD, but must not be able to open the host's root block device."""
    st = os.stat("/")
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    res = ctx.run(sh(f"mknod /dev/hostdisk b {major} {minor} || exit 10; "
                     "head -c 512 /dev/hostdisk > /dev/null && echo READ; "
                     "echo ok > /dev/null && echo null-ok; exit 0"))
    assert res.returncode == 0, res.describe()
    assert "READ" not in res.stdout, "container read the host's disk"
    assert "null-ok" in res.stdout
    assert "not permitted" in res.stderr.lower(), res.describe()


# ==========================================================================
# cgroup v2 (runtime run in a private mount ns with cgroup2 on /sys/fs/cgroup)
# ==========================================================================

def v2_dir(cid: str) -> Path:
    return h.CGROUP_UNIFIED / h.CGROUP_PARENT / cid


@pytest.mark.cgroup2
@pytest.mark.parametrize("cgroupns", [True, False], ids=["cgroupns", "no-cgroupns"])
def test_v2_container_lands_in_its_cgroup(ctx2, cgroupns):
    ctx = ctx2
    shared = ctx.shared_dir()
    namespaces = list(h.DEFAULT_NAMESPACES)
    if not cgroupns:
        namespaces.remove("cgroup")
    cid, _ = ctx.create(sh("cat /proc/self/cgroup > /shared/cgroup; "
                           "grep ' /sys/fs/cgroup ' /proc/self/mountinfo > /shared/mnt; "
                           "exec sleep 1000"),
                        namespaces=namespaces, extra_mounts=[ctx.bind_mount(shared)])
    ctx.ok("start", cid)
    pid = ctx.state(cid)["pid"]
    h.wait_for(lambda: (shared / "mnt").exists() and read(shared / "mnt"), 10,
               what="the container to report")

    assert v2_dir(cid).is_dir()
    assert pid in h.cgroup_procs(v2_dir(cid))
    assert f"0::{h.cgroup_path_for(cid)}" in Path(f"/proc/{pid}/cgroup").read_text()

    unified = [l for l in read(shared / "cgroup").splitlines() if l.startswith("0::")]
    want = "0::/" if cgroupns else f"0::{h.cgroup_path_for(cid)}"
    assert unified == [want], read(shared / "cgroup")
    assert " - cgroup2 " in read(shared / "mnt"), "inside, /sys/fs/cgroup should be cgroup2"

    ctx.ok("delete", "--force", cid)
    assert not v2_dir(cid).exists()
    ctx.assert_nothing_left(cid)


@pytest.mark.cgroup2
def test_v2_run_and_cleanup(ctx2):
    ctx = ctx2
    cid, bundle = ctx.bundle(sh("echo v2-ok; exit 4"))
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 4, res.describe()
    assert res.stdout == "v2-ok\n"
    assert not v2_dir(cid).exists()
    ctx.assert_nothing_left(cid)


@pytest.mark.cgroup2
@pytest.mark.parametrize("resources,controller", [
    ({"memory": {"limit": 32 * MiB}}, "memory"),
    ({"pids": {"limit": 20}}, "pids"),
    ({"cpu": {"quota": 50000, "period": 100000}}, "cpu"),
], ids=["memory", "pids", "cpu"])
def test_v2_missing_controller_is_a_clear_error(ctx2, resources, controller):
    """No controller is enabled on this host's cgroup2: a limit cannot land,
    so create must fail, say which controller, and leave nothing behind."""
    ctx = ctx2
    available = (h.CGROUP_UNIFIED / "cgroup.controllers").read_text().split()
    if controller in available:
        pytest.skip(f"{controller} is available on cgroup2 here")
    cid, bundle = ctx.bundle(["true"], resources=resources)
    res = ctx.cli("create", "--bundle", bundle, cid)
    ctx.assert_error(res, mentions=[controller])
    assert not v2_dir(cid).exists()
    assert ctx.cli("state", cid).returncode != 0
    ctx.assert_nothing_left(cid)
