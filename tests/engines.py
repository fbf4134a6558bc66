"""A private podman and a private containerd, for the interop tests.

Both engines run with every path of their own under the session's temp dir,
so the host's configuration, storage and daemons are never touched and a
concurrent run cannot collide with this one:

- podman: --root/--runroot/--tmpdir, vfs storage, cgroupfs cgroups under a
  cgroup parent per test, a private containers.conf (default_ulimits = []:
  root here lacks CAP_SYS_RESOURCE) and storage.conf, file events,
  `--network none`.
- containerd: its own root, state, opt dir and socket, no CRI plugin; ctr
  runs with `--runc-root` and `--fifo-dir` of our own and a random namespace
  (which is also the parent of its containers' cgroups).

The busybox image is built here from Debian's busybox-static (helpers'
rootfs builder), imported into podman from a tarball, and saved from podman
as a docker-archive for containerd.

Import the fixtures into a test module: `from engines import podman, ...`.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

import helpers as h

IMAGE = "localhost/capsa-busybox:latest"
# Where capsa-runtime keeps state when no --root is given: podman passes none
# (and forwards neither its environment nor --runtime-flag to its cleanup).
DEFAULT_RUNTIME_ROOT = Path("/run/capsa/runtime")
CONTAINERD_RUN_DIR = Path("/run/containerd")  # shim sockets: fixed in containerd 1.6


def unmount_under(path: Path) -> None:
    for line in reversed(h.mounts_containing(str(path))):
        mountpoint = line.split()[4]
        if mountpoint.startswith(str(path)):
            subprocess.run(["umount", "-l", mountpoint], capture_output=True)


def _kill_processes_mentioning(fragment: str) -> None:
    """Daemons (conmon, shims) whose command line names our private dirs."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if fragment.encode() in cmdline:
            h.kill_quietly(int(entry))


def cgroup_dirs(rel: str) -> list[Path]:
    """Existing dirs for a cgroup path in every hierarchy: v1 controllers,
    the hybrid unified mount, or /sys/fs/cgroup itself on a v2-only host."""
    found = h.cgroup_dirs(rel)
    if (h.CGROUP_ROOT / "cgroup.controllers").exists() and (h.CGROUP_ROOT / rel.strip("/")).is_dir():
        found.append(h.CGROUP_ROOT / rel.strip("/"))
    return found


def remove_cgroup_everywhere(rel: str) -> None:
    for d in cgroup_dirs(rel):
        h.remove_cgroup_tree(d)
    # podman's cgroupfs manager also mkdirs the path for v1 controllers this
    # host does not mount (hugetlb, net_cls...): plain dirs on the tmpfs.
    for d in h.plain_dirs_under_cgroup_root():
        shutil.rmtree(d / rel.strip("/"), ignore_errors=True)


def require_runtime_command(runtime: str, command: str) -> None:
    """Skip when this capsa-runtime does not have `command` yet (exec, pause
    and update come from another branch of the work)."""
    res = h.run_cmd([runtime, command], timeout=30)
    if "not implemented" in res.stderr:
        pytest.skip(f"needs capsa-runtime {command}")


def cgroup_limits(pid: int) -> dict:
    """The memory and pids limits of the cgroups a host pid is in (v1 or v2)."""
    v2_root = h.CGROUP_UNIFIED if h.CGROUP_UNIFIED.is_dir() else h.CGROUP_ROOT
    files = {"memory": ("memory.limit_in_bytes", "memory.max"), "pids": ("pids.max",)}
    limits = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for ctl, names in files.items():
            if not controllers:
                base = v2_root
            elif ctl in controllers.split(","):
                base = h.CGROUP_ROOT / ctl
            else:
                continue
            for name in names:
                f = base / path.lstrip("/") / name
                if f.exists() and ctl not in limits and f.read_text().strip() != "max":
                    limits[ctl] = int(f.read_text())
    return limits


def require_seccomp(runtime: str) -> None:
    """Skip when this capsa-runtime does not apply linux.seccomp yet."""
    import json

    res = h.run_cmd([runtime, "features"], timeout=30)
    if not json.loads(res.stdout or "{}").get("linux", {}).get("seccomp", {}).get("enabled"):
        pytest.skip("needs capsa-runtime seccomp")


# --------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------

def write_busybox_tar(workdir: Path) -> Path:
    """The busybox rootfs as a plain tarball (what `podman import` takes)."""
    rootfs = h.build_rootfs(workdir / "engines-rootfs")
    tar = workdir / "busybox-rootfs.tar"
    with tarfile.open(tar, "w") as t:
        for entry in sorted(rootfs.iterdir()):
            t.add(entry, arcname=entry.name)
    shutil.rmtree(rootfs)
    return tar


@pytest.fixture(scope="session")
def busybox_tar(base_dir) -> Path:
    return write_busybox_tar(base_dir)


# --------------------------------------------------------------------------
# podman
# --------------------------------------------------------------------------

CONTAINERS_CONF = """\
[containers]
# root here lacks CAP_SYS_RESOURCE: podman's default nofile/nproc raise fails.
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{home}/events.log"
runtime = "{runtime}"

[network]
network_config_dir = "{home}/networks"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{home}/root"
runroot = "{home}/runroot"
"""


# podman 4.3 copies images through a blob-info cache at the fixed path
# /var/lib/containers/cache when run as root: image copies (import, save) see
# a private empty /var/lib so the host's stays as it was.
PRIVATE_VAR_LIB = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs -o mode=0755 capsa-test /var/lib && exec "$@"', "private-var-lib"]


class Podman:
    """podman 4.x with private storage and config; containers started by
    run()/create() carry a label and a cgroup parent of this instance."""

    def __init__(self, home: Path, runtime: str):
        self.home = home
        self.runtime = runtime
        for d in ("root", "runroot", "tmp", "networks"):
            (home / d).mkdir(parents=True, exist_ok=True)
        (home / "containers.conf").write_text(CONTAINERS_CONF.format(home=home, runtime=runtime))
        (home / "storage.conf").write_text(STORAGE_CONF.format(home=home))
        self.env = dict(os.environ,
                        CONTAINERS_CONF=str(home / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(home / "storage.conf"))
        self.label = "capsa-test=" + uuid.uuid4().hex[:12]
        self.cgroup_parent = "/capsa-podman-" + uuid.uuid4().hex[:12]

    def argv(self, *args, runtime: str | None = None) -> list[str]:
        """The full podman command line; run/create get the label, the cgroup
        parent and network none unless the caller says otherwise."""
        args = [str(a) for a in args]
        if args and args[0] in ("run", "create"):
            extra = ["--label", self.label, "--cgroup-parent", self.cgroup_parent]
            if not any(a.startswith("--network") for a in args):
                extra += ["--network", "none"]
            args = [args[0], *extra, *args[1:]]
        return ["podman", "--root", str(self.home / "root"), "--runroot", str(self.home / "runroot"),
                "--tmpdir", str(self.home / "tmp"), "--storage-driver", "vfs",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                "--runtime", runtime or self.runtime, *args]

    def __call__(self, *args, runtime: str | None = None, timeout: float = 60, input=None) -> h.Result:
        argv = self.argv(*args, runtime=runtime)
        if args and args[0] in ("import", "save"):
            argv = PRIVATE_VAR_LIB + argv
        return h.run_cmd(argv, env=self.env, timeout=timeout, input=input)

    def ok(self, *args, **kw) -> h.Result:
        res = self(*args, **kw)
        assert res.ok, res.describe()
        return res

    def remove(self, *ids: str, force: bool = True) -> h.Result:
        """`podman rm [-f -t 0]`, retried while podman races its own conmon
        cleanup over the shm mount ("unlinkat .../userdata/shm: device or
        resource busy", podman #11594, seen with runc too); any other
        failure is returned at once."""
        for attempt in range(5):
            res = self("rm", *(["-f", "-t", "0"] if force else []), *ids, timeout=60)
            if res.ok or "device or resource busy" not in res.stderr:
                return res
            time.sleep(0.2 * (attempt + 1))
        return res

    def remove_ok(self, *ids: str, force: bool = True) -> h.Result:
        res = self.remove(*ids, force=force)
        assert res.ok, res.describe()
        return res

    def container_ids(self) -> list[str]:
        res = self("ps", "-aq", "--no-trunc", "--filter", f"label={self.label}")
        return res.stdout.split() if res.ok else []

    def cleanup(self) -> list[str]:
        """Remove this instance's containers; report what the runtime left."""
        problems = []
        ids = self.container_ids()
        if ids:
            res = self.remove(*ids)
            if not res.ok:
                problems.append("podman rm -f failed:\n" + res.describe())
        for cid in ids:
            if (DEFAULT_RUNTIME_ROOT / cid).exists():
                problems.append(f"runtime state left: {DEFAULT_RUNTIME_ROOT / cid}")
                h.run_cmd([self.runtime, "delete", "--force", cid])
            for d in cgroup_dirs(f"{self.cgroup_parent}/libpod-{cid}"):
                problems.append(f"cgroup left: {d}")
        remove_cgroup_everywhere(self.cgroup_parent)
        return problems


@pytest.fixture(scope="session")
def podman_home(base_dir, busybox_tar, runtime_bin):
    """Private podman storage holding the busybox image (imported once)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (make apt)")
    home = base_dir / "podman"
    pm = Podman(home, os.path.abspath(runtime_bin))
    try:
        pm.ok("import", busybox_tar, IMAGE, timeout=120)
        yield home
    finally:
        _kill_processes_mentioning(str(home))
        unmount_under(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def podman(podman_home, runtime_bin):
    """A podman whose runtime is capsa-runtime; its containers, their
    runtime state and cgroups are checked and removed after the test."""
    pm = Podman(podman_home, os.path.abspath(runtime_bin))
    try:
        yield pm
    finally:
        problems = pm.cleanup()
    if problems:
        pytest.fail("left behind after the test:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def docker_archive(podman_home, runtime_bin, base_dir) -> Path:
    """The busybox image as a docker-archive, for `ctr images import`."""
    out = base_dir / "busybox-docker-archive.tar"
    Podman(podman_home, os.path.abspath(runtime_bin)).ok(
        "save", "--format", "docker-archive", "-o", out, IMAGE, timeout=120)
    return out


# --------------------------------------------------------------------------
# containerd
# --------------------------------------------------------------------------

CONTAINERD_CONFIG = """\
version = 2
root = "{home}/root"
state = "{home}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{home}/containerd.sock"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{home}/opt"
"""


class Containerd:
    """A running containerd and ctr bound to its socket and one namespace."""

    def __init__(self, home: Path, runtime: str):
        self.home = home
        self.runtime = runtime
        self.socket = home / "containerd.sock"
        self.namespace = "capsa-" + uuid.uuid4().hex[:10]
        self.runc_root = home / "runc"
        self.fifo_dir = home / "fifo"
        self.proc: subprocess.Popen | None = None
        self.run_dirs_existed = {d: d.exists() for d in (CONTAINERD_RUN_DIR, CONTAINERD_RUN_DIR / "s")}
        self.started_at = time.time()

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.fifo_dir.mkdir(exist_ok=True)
        config = self.home / "config.toml"
        config.write_text(CONTAINERD_CONFIG.format(home=self.home))
        log = open(self.home / "containerd.log", "wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

        def serving():
            if self.proc.poll() is not None:
                raise AssertionError("containerd exited:\n" + self.log_tail())
            return self.socket.exists() and self.ctr("version", timeout=10).ok

        h.wait_for(serving, timeout=30, interval=0.1, what="containerd to serve")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.home / "containerd.log").read_text().splitlines()[-n:])
        except OSError:
            return ""

    def ctr_argv(self, *args, runtime: str | None = None) -> list[str]:
        """ctr against our socket and namespace; `run` gets the runtime binary,
        its root and our fifo dir, `task exec` our fifo dir."""
        args = [str(a) for a in args]
        if args[:1] == ["run"]:
            args = ["run", "--runc-binary", runtime or self.runtime, "--runc-root", str(self.runc_root),
                    "--fifo-dir", str(self.fifo_dir), *args[1:]]
        elif args[:2] == ["task", "exec"]:
            args = ["task", "exec", "--fifo-dir", str(self.fifo_dir), *args[2:]]
        return ["ctr", "--address", str(self.socket), "--namespace", self.namespace, *args]

    def ctr(self, *args, runtime: str | None = None, timeout: float = 60, input=None) -> h.Result:
        return h.run_cmd(self.ctr_argv(*args, runtime=runtime), timeout=timeout, input=input)

    def ok(self, *args, **kw) -> h.Result:
        res = self.ctr(*args, **kw)
        assert res.ok, res.describe() + "\n--- containerd log\n" + self.log_tail()
        return res

    def remove_containers(self) -> list[str]:
        """Kill and delete every task and container of our namespace; report
        runtime state and cgroups left behind by the runtime."""
        problems = []
        tasks = self.ctr("task", "ls", "-q")
        for tid in tasks.stdout.split() if tasks.ok else []:
            self.ctr("task", "kill", "-s", "SIGKILL", tid)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not self.ctr("task", "delete", tid).ok:
                time.sleep(0.1)
        containers = self.ctr("containers", "ls", "-q")
        for cid in containers.stdout.split() if containers.ok else []:
            res = self.ctr("containers", "delete", cid)
            if not res.ok:
                problems.append(f"ctr containers delete {cid}:\n" + res.describe())
        state = self.runc_root / self.namespace
        if state.is_dir():
            for left in state.iterdir():
                if left.name.startswith("@"):   # capsa's caches (compiled seccomp filters), not container state
                    continue
                problems.append(f"runtime state left: {left}")
                h.run_cmd([self.runtime, "--root", state, "delete", "--force", left.name])
        for d in cgroup_dirs(self.namespace):
            if any(sub.is_dir() for sub in d.iterdir()):
                problems.append(f"cgroups left under {d}: {[s.name for s in d.iterdir() if s.is_dir()]}")
        return problems

    def teardown(self) -> None:
        """Containers, image, daemon, shims, mounts, cgroups, files: all gone."""
        self.remove_containers()
        self.ctr("images", "rm", IMAGE)
        self.stop()
        unmount_under(self.home)
        remove_cgroup_everywhere(self.namespace)
        shutil.rmtree(self.home, ignore_errors=True)
        # A shim killed above leaves its socket file: remove those nothing
        # listens on any more that appeared since we started. Then the dirs,
        # if we made them and they are empty.
        listening = {line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()[1:]}
        for sock in (CONTAINERD_RUN_DIR / "s").glob("*"):
            try:
                if sock.is_socket() and str(sock) not in listening and sock.stat().st_mtime >= self.started_at:
                    sock.unlink()
            except OSError:
                pass
        for d in (CONTAINERD_RUN_DIR / "s", CONTAINERD_RUN_DIR):
            if not self.run_dirs_existed[d]:
                try:
                    d.rmdir()
                except OSError:
                    pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # shims outlive containerd by design; ours name our socket
        _kill_processes_mentioning(str(self.socket))


@pytest.fixture(scope="session")
def containerd_daemon(base_dir, runtime_bin, docker_archive):
    """containerd on a private socket with the busybox image imported;
    stopped and every trace of it removed at the end of the session."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.fail("containerd is not installed (make apt)")
    cd = Containerd(base_dir / "containerd", os.path.abspath(runtime_bin))
    try:
        cd.start()
        cd.ok("images", "import", docker_archive, timeout=120)
        yield cd
    finally:
        cd.teardown()


@pytest.fixture
def containerd(containerd_daemon):
    """The session's containerd; the test's tasks and containers are removed
    after it, and what the runtime left behind fails the test."""
    try:
        yield containerd_daemon
    finally:
        problems = containerd_daemon.remove_containers()
    if problems:
        pytest.fail("left behind after the test:\n  " + "\n  ".join(problems), pytrace=False)


# --------------------------------------------------------------------------
# A terminal
# --------------------------------------------------------------------------

def pty_session(argv, env, steps, timeout=20.0):
    """Run argv on a new pty; for each (text to type, text to wait for), type
    and wait. Returns (everything read, exit status)."""
    pid, master = pty.fork()
    if pid == 0:  # child: exec at once (no Python work after fork)
        os.execvpe(argv[0], argv, env)
    out = b""
    try:
        for typed, expected in steps:
            if typed:
                os.write(master, typed.encode())
            deadline = time.monotonic() + timeout
            while expected.encode() not in out and time.monotonic() < deadline:
                r, _, _ = select.select([master], [], [], 0.1)
                if r:
                    try:
                        chunk = os.read(master, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    out += chunk
            assert expected.encode() in out, f"waiting for {expected!r}; got {out!r}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)
            try:
                r, _, _ = select.select([master], [], [], 0.1)
                if r:
                    out += os.read(master, 4096)
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the engine did not exit; got {out!r}")
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(master)
