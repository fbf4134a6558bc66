"""Containers from a layered busybox image through capsa.container (the
Python API the CLI uses): the overlay root and its copy-on-write guarantee,
flags seen from inside, the monitor (logs, exit codes, restarts, stop
timeouts, a killed monitor), errors, and cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

import helpers as h
import image_fixtures as imgs
from capsa.container import lifecycle
from capsa.container.spec import RunOptions
from capsa.container.state import Store
from capsa.errors import CapsaError, Conflict


@pytest.fixture(scope="session")
def capsa_root(base_dir):
    """One store root for the session: the busybox image is imported once; containers come and go."""
    root = base_dir / "capsa-root"
    root.mkdir()
    os.chmod(root, 0o755)
    return root


@pytest.fixture(scope="session")
def busybox(capsa_root, base_dir):
    return imgs.import_busybox(capsa_root, base_dir)


def _monitors_under(root: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"capsa-monitor" in cmd and str(root).encode() in cmd:
                found.append(int(entry))
    return found


class World:
    def __init__(self, root: Path, image):
        self.root = root
        self.store = Store(root)
        self.image = image
        self.ids: list[str] = []
        self.scratch = Path(tempfile.mkdtemp(prefix="ct-", dir=root))

    def create(self, command, name=None, **kw):
        rec = lifecycle.create(self.store, self.image, RunOptions(command=list(command), **kw), name)
        self.ids.append(rec.id)
        return rec

    def run(self, command, capfd, **kw):
        """Foreground run: (exit code, stdout, stderr)."""
        rec = self.create(command, **kw)
        capfd.readouterr()
        code = lifecycle.run_foreground(self.store, rec)
        out, err = capfd.readouterr()
        return code, out, err, rec

    def detach(self, command, **kw):
        rec = self.create(command, **kw)
        lifecycle.start_detached(self.store, rec)
        return rec

    def log(self, rec) -> list[dict]:
        p = self.store.dir(rec.id) / f"{rec.id}-json.log"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def leftovers(self) -> list[str]:
        problems = []
        for cid in self.ids:
            for d in h.cgroup_dirs(f"/capsa/{cid}"):
                problems.append(f"cgroup left: {d}")
                h.remove_cgroup_tree(d)
        for line in h.mounts_containing(str(self.root)):
            problems.append(f"host mount left: {line}")
            os.system(f"umount -l {line.split()[4]} 2>/dev/null")
        for pid in _monitors_under(self.root):
            problems.append(f"monitor {pid} still running")
            h.kill_quietly(pid)
        return problems


@pytest.fixture
def world(capsa_root, busybox):
    root = capsa_root
    w = World(root, busybox)
    try:
        yield w
    finally:
        for rec in w.store.all():
            try:
                lifecycle.remove(w.store, rec, force=True)
            except CapsaError:
                pass
        problems = w.leftovers()
        shutil.rmtree(w.scratch, ignore_errors=True)
    if problems:
        pytest.fail("left behind:\n  " + "\n  ".join(problems), pytrace=False)


# ---------------------------------------------------------------- overlay root

def test_copy_on_write(world, busybox, capfd):
    before = imgs.snapshot(busybox.layer_dirs)
    code, out, err, first = world.run(
        ["sh", "-c", "echo new > /new-file && echo changed > /etc/motd && rm /bin/true && "
                     "cat /new-file /etc/motd && ls /bin/true 2>&1; true"], capfd)
    assert code == 0, err
    assert "new\nchanged\n" in out and "No such file" in out
    assert imgs.snapshot(busybox.layer_dirs) == before, "the image's layers changed"
    # A second container of the same image sees the image, not the first container's changes.
    code, out, err, _ = world.run(["sh", "-c", "cat /etc/motd; ls /new-file 2>&1; ls /bin/true"], capfd)
    assert code == 0, err
    assert out.startswith("from the image\n") and "No such file" in out and "/bin/true" in out
    # The first container's writes are in its own upper dir, and gone with it.
    upper = world.store.dir(first.id) / "upper"
    assert (upper / "new-file").read_text() == "new\n"
    lifecycle.remove(world.store, first)
    assert not world.store.dir(first.id).exists()
    assert imgs.snapshot(busybox.layer_dirs) == before


def test_no_host_mount_while_running(world):
    rec = world.detach(["sleep", "60"])
    assert world.store.status(rec).status == "running"
    # The overlay exists only in the container's mount namespace.
    assert h.mounts_containing(str(world.root)) == []
    pid = world.store.status(rec).pid
    assert "overlay" in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()[0]
    lifecycle.remove(world.store, rec, force=True)


def test_many_layers(world, base_dir, capfd):
    """Layers named by 64-hex digests: more than fit in a page of mount options."""
    layers_dir = world.scratch / "many-layers"
    layers = []
    for i in range(120):
        d = layers_dir / os.urandom(32).hex()
        (d / "layers").mkdir(parents=True)
        (d / "layers" / f"f{i:03d}").write_text(str(i))
        layers.append(d)
    image = imgs.LayeredImage("sha256:" + "2" * 64, world.image.config, list(world.image.layer_dirs) + layers)
    world.image = image
    code, out, err, _ = world.run(["sh", "-c", "ls /layers | wc -l; cat /layers/f119"], capfd)
    assert code == 0, err
    assert out.split() == ["120", "119"]


# ---------------------------------------------------------------- flags inside

def test_flags_seen_inside(world, capfd, tmp_path):
    shared = world.scratch / "shared-vol"
    shared.mkdir()
    (shared / "data").write_text("host data\n")
    script = ("echo E=$FOO I=$IMAGE_VAR; pwd; id -u; id -g; id -G; hostname; "
              "cat /vol/data; touch /vol/x 2>&1 | grep -c Read-only; "
              "touch /rootfile 2>&1 | grep -c Read-only; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; "
              "cat /proc/net/dev | grep -c :; grep -c ' /scratch .* - tmpfs' /proc/self/mountinfo; true")
    code, out, err, _ = world.run(
        ["sh", "-c", script], capfd, env=["FOO=bar"], workdir="/work/dir", user="app", hostname="boxy",
        volumes=[f"{shared}:/vol:ro"], read_only=True, pids_limit=42, tmpfs=["/scratch"])
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "E=bar I=from-image"
    assert lines[1] == "/work/dir"
    assert lines[2:5] == ["1234", "2345", "2345 3456"]
    assert lines[5] == "boxy"
    assert lines[6] == "host data"
    assert lines[7] == "1" and lines[8] == "1"     # read-only volume and read-only root
    assert lines[9] == "42"
    assert lines[10] == "1"                          # --network none: only lo
    assert lines[11] == "1"


def test_entrypoint_and_memory(world, capfd):
    code, out, err, _ = world.run(["hello", "world"], capfd, entrypoint="echo", memory="64m")
    assert (code, out) == (0, "hello world\n"), err
    code, out, err, _ = world.run(
        ["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"],
        capfd, memory="64m")
    assert out.strip() == str(64 << 20), err


def test_default_capabilities(world, capfd):
    code, out, _, _ = world.run(["sh", "-c", "grep CapBnd /proc/self/status"], capfd)
    assert int(out.split()[1], 16) == h.cap_mask(h.DEFAULT_CAPS)
    code, out, _, _ = world.run(["sh", "-c", "grep CapBnd /proc/self/status"], capfd, cap_drop=["ALL"], cap_add=["KILL"])
    assert int(out.split()[1], 16) == 1 << 5


def test_docker_default_seccomp_profile(world, capfd, tmp_path):
    """Unprivileged containers get Docker's default profile; seccomp=unconfined
    and --privileged drop it; seccomp=FILE applies a profile of one's own."""
    status = "grep Seccomp: /proc/self/status; mkdir /tmp/d; echo rc=$?"
    _, out, _, _ = world.run(["sh", "-c", status], capfd)
    assert "Seccomp:\t2" in out and "rc=0" in out, out
    code, out, err, _ = world.run(["sh", "-c", "unshare -U true; echo rc=$?"], capfd)
    assert "rc=0" not in out, (out, err)     # unshare is outside Docker's allow-list without CAP_SYS_ADMIN
    _, out, _, _ = world.run(["sh", "-c", status], capfd, security_opt=["seccomp=unconfined"])
    assert "Seccomp:\t0" in out, out
    _, out, _, _ = world.run(["sh", "-c", status], capfd, privileged=True)
    assert "Seccomp:\t0" in out, out
    profile = tmp_path / "deny-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "comment": "no dirs"}]}))
    _, out, _, _ = world.run(["sh", "-c", status], capfd, security_opt=[f"seccomp={profile}"])
    assert "Seccomp:\t2" in out and "rc=1" in out, out


# ---------------------------------------------------------------- errors

def test_unknown_command_is_127(world):
    rec = world.create(["no-such-command"])
    with pytest.raises(lifecycle.StartError) as e:
        lifecycle.run_foreground(world.store, rec)
    assert e.value.exit_code == 127
    assert "executable file not found in $PATH" in str(e.value)


def test_name_in_use(world):
    world.create(["true"], name="dup")
    with pytest.raises(Conflict, match="already in use"):
        world.create(["true"], name="dup")
    assert [r.name for r in world.store.all()] == ["dup"]


def test_bad_input_leaves_nothing(world):
    for kw in (dict(volumes=["/no/such/dir:/x"]), dict(user="nobody-here"), dict(memory="lots"),
               dict(network="bridge"), dict(restart="sometimes")):
        with pytest.raises(CapsaError):
            world.create(["true"], **kw)
    assert world.store.all() == []
    assert not (world.root / "containers").exists() or os.listdir(world.root / "containers") == []


def test_rm_running_needs_force(world):
    rec = world.detach(["sleep", "60"])
    with pytest.raises(Conflict, match="running"):
        lifecycle.remove(world.store, rec)
    lifecycle.remove(world.store, rec, force=True)
    assert world.store.all() == []


# ---------------------------------------------------------------- the monitor

def test_detached_logs_and_exit_code(world):
    rec = world.detach(["sh", "-c", "echo one; echo two >&2; printf partial; exit 7"])
    assert lifecycle.wait(world.store, rec) == 7
    entries = world.log(rec)
    assert [(e["stream"], e["log"]) for e in entries if e["stream"] == "stdout"] == [("stdout", "one\n"), ("stdout", "partial")]
    assert [e["log"] for e in entries if e["stream"] == "stderr"] == ["two\n"]
    assert all(e["time"].endswith("Z") and "T" in e["time"] for e in entries)
    st = world.store.status(rec)
    assert (st.status, st.exit_code, st.oom_killed) == ("exited", 7, False)
    # Its cgroup is gone as soon as it exited.
    assert h.cgroup_dirs(f"/capsa/{rec.id}") == []


def test_restart_on_failure(world):
    rec = world.detach(["sh", "-c", "echo attempt; exit 3"], restart="on-failure:2")
    h.wait_for(lambda: world.store.status(rec).status == "exited" and world.store.status(rec).restart_count == 2, timeout=20)
    assert [e["log"] for e in world.log(rec)] == ["attempt\n"] * 3
    assert world.store.status(rec).exit_code == 3


def test_restart_always_until_stopped(world):
    rec = world.detach(["sh", "-c", "echo run; exit 0"], restart="always")
    h.wait_for(lambda: world.store.status(rec).restart_count >= 2, timeout=20)
    lifecycle.stop(world.store, rec, timeout=2)
    h.wait_for(lambda: world.store.status(rec).status == "exited", timeout=10)
    count = world.store.status(rec).restart_count
    time.sleep(0.5)
    assert world.store.status(rec).restart_count == count


def test_stop_timeout_kills_a_container_ignoring_sigterm(world):
    rec = world.detach(["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"])
    h.wait_for(lambda: world.log(rec), timeout=10)
    t = time.monotonic()
    lifecycle.stop(world.store, rec, timeout=1)
    took = time.monotonic() - t
    st = world.store.status(rec)
    assert (st.status, st.exit_code) == ("exited", 137)
    assert took >= 1.0


def test_stop_graceful(world):
    rec = world.detach(["sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done"])
    h.wait_for(lambda: world.log(rec), timeout=10)     # the trap is set
    lifecycle.stop(world.store, rec, timeout=10)
    assert world.store.status(rec).exit_code == 0
    assert world.log(rec)[-1]["log"] == "bye\n"


def test_killed_monitor_shows_the_truth(world):
    rec = world.detach(["sleep", "60"])
    st = world.store.status(rec)
    raw = json.loads((world.store.dir(rec.id) / "status.json").read_text())
    os.kill(raw["monitor_pid"], signal.SIGKILL)
    os.kill(st.pid, signal.SIGKILL)
    h.wait_for(lambda: not h.pid_alive(st.pid))
    st = world.store.status(rec)
    assert (st.status, st.exit_code) == ("exited", None)
    assert lifecycle.status_text(st).startswith("Exited (unknown)")


def test_auto_remove_detached(world):
    rec = world.detach(["true"], auto_remove=True)
    h.wait_for(lambda: not world.store.dir(rec.id).exists(), timeout=10)
    assert lifecycle.reap_removed(world.store, world.store.find(rec.id))
    assert world.store.all() == []


def test_cleanup_after_rm(world):
    rec = world.detach(["sleep", "60"])
    pid = world.store.status(rec).pid
    lifecycle.remove(world.store, rec, force=True)
    assert not h.pid_alive(pid)
    assert h.cgroup_dirs(f"/capsa/{rec.id}") == []
    assert not (world.root / "run" / rec.id).exists()
    assert _monitors_under(world.root) == []


def test_fast_image_lookup_agrees_with_the_store(world, busybox):
    """`capsa run`'s store-free lookup finds what the store finds, and declines what it does not handle."""
    from capsa.container import image_lookup
    from capsa.image.reference import Reference
    for ref in ("busybox", "busybox:1.2", "me/app", "localhost:5000/x/y:t", "ghcr.io/a/b", "127.0.0.1:5000/x"):
        assert image_lookup.normalise(ref) == str(Reference.parse(ref))
    found = image_lookup.by_tag(world.store.conn, world.root, "busybox")
    assert (found.id, found.layer_dirs, found.config) == (busybox.id, busybox.layer_dirs, busybox.config)
    for other in ("busybox@sha256:" + "0" * 64, busybox.id, "Busybox", "not-there"):
        assert image_lookup.by_tag(world.store.conn, world.root, other) is None


def test_named_volume_outlives_its_container(world, capfd):
    code, _, err, first = world.run(["sh", "-c", "echo kept > /data/f"], capfd, volumes=["vol-" + world.scratch.name[3:] + ":/data"])
    assert code == 0, err
    name = first.mounts[0]["Name"]
    lifecycle.remove(world.store, first)
    code, out, err, second = world.run(["cat", "/data/f"], capfd, volumes=[f"{name}:/data:ro"])
    assert (code, out) == (0, "kept\n"), err
    lifecycle.remove(world.store, second, volumes=True)
    assert not (world.store.volumes_dir / name).exists()


# ---------------------------------------------------------------- more flags, seen from inside

def _cgroup_v1(controller: str) -> bool:
    return Path(f"/sys/fs/cgroup/{controller}").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists()


def test_cpus_and_cpu_shares(world, capfd):
    script = ("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu/cpu.shares "
              "2>/dev/null || cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight")
    code, out, err, _ = world.run(["sh", "-c", script], capfd, cpus=0.5, cpu_shares=512)
    assert code == 0, err
    if _cgroup_v1("cpu"):
        assert out.split() == ["50000", "100000", "512"]
    else:
        assert out.split()[:2] == ["50000", "100000"]


def test_memory_swap(world, capfd):
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes "
              "2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory.swap.max")
    code, out, err, _ = world.run(["sh", "-c", script], capfd, memory="32m", memory_swap="96m")
    assert code == 0, err
    if _cgroup_v1("memory"):
        assert out.split() == [str(32 << 20), str(96 << 20)]
    else:
        assert out.split() == [str(32 << 20), str(64 << 20)]  # v2 counts swap alone


def test_ulimit_nofile(world, capfd):
    code, out, err, _ = world.run(["sh", "-c", "ulimit -Sn; ulimit -Hn"], capfd, ulimits=["nofile=1000:2000"])
    assert (code, out.split()) == (0, ["1000", "2000"]), err


def test_privileged_all_caps_and_devices(world, capfd):
    host_dev = sorted(p.name for p in Path("/dev").iterdir()
                      if p.is_char_device() or p.is_block_device() and p.name not in ("console", "ptmx"))
    script = "grep CapBnd /proc/self/status; ls /dev; (: < /dev/loop-control) 2>/dev/null && echo opened; true"
    code, out, err, _ = world.run(["sh", "-c", script], capfd, privileged=True)
    assert code == 0, err
    lines = out.splitlines()
    ours = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapEff:"))
    assert lines[0].split()[1] == ours.split()[1]  # every capability we hold (all but CAP_SYS_RESOURCE here)
    inside = set(lines[1:])
    assert {"null", "zero", "kmsg"} <= inside
    missing = [d for d in host_dev if d not in inside and d not in ("console", "ptmx")]
    assert missing == [], missing
    assert "opened" in lines  # the devices cgroup lets a non-default device through
    # Without --privileged: Docker's default set only, no host devices.
    code, out, err, _ = world.run(["sh", "-c", "ls /dev"], capfd)
    assert "kmsg" not in out.split() and "loop-control" not in out.split()


def test_privileged_sysfs_and_cgroups_are_writable(world, capfd):
    """As Docker: /sys and /sys/fs/cgroup are read-write only with --privileged."""
    script = "awk '$2 == \"/sys\" || $2 ~ /^\\/sys\\/fs\\/cgroup/ { split($4, o, \",\"); print $2, o[1] }' /proc/mounts"
    code, out, err, _ = world.run(["sh", "-c", script], capfd, privileged=True)
    assert code == 0, err
    modes = dict(line.split() for line in out.splitlines())
    assert modes.get("/sys") == "rw" and modes, out
    assert all(m == "rw" for m in modes.values()), out
    code, out, err, _ = world.run(["sh", "-c", script], capfd)
    assert code == 0, err
    modes = dict(line.split() for line in out.splitlines())
    assert modes.get("/sys") == "ro" and all(m == "ro" for m in modes.values()), out


def test_stop_signal(world):
    rec = world.detach(["sh", "-c", 'trap "" TERM; trap "echo got-usr1; exit 0" USR1; echo ready; while :; do sleep 0.1; done'],
                       stop_signal="USR1")
    deadline = time.monotonic() + 10
    while not any("ready" in e["log"] for e in world.log(rec)) and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    lifecycle.stop(world.store, rec, 20)
    assert time.monotonic() - t0 < 10  # not the SIGKILL after the timeout: USR1 ended it
    assert lifecycle.wait(world.store, rec) == 0
    assert any(e["log"] == "got-usr1\n" for e in world.log(rec))


def test_oom_kill_is_reported(world):
    # The shell holds 64 MB in a variable under an 8 MB limit without swap.
    rec = world.detach(["sh", "-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"],
                       memory="8m", memory_swap="8m")
    code = lifecycle.wait(world.store, rec)
    st = world.store.status(rec)
    assert code == 137 and st.oom_killed, (code, world.log(rec))
    calm = world.detach(["true"], memory="8m")
    assert lifecycle.wait(world.store, calm) == 0 and not world.store.status(calm).oom_killed
