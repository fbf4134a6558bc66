"""Shared machinery for the capsa runtime tests.

Everything here runs real things: a busybox rootfs on disk, config.json files
shaped like `runc spec` output, the runtime binary as a subprocess, and
cgroup/mount/process inspection straight from /proc and /sys/fs/cgroup.

The runtime under test is configurable so the CLI tests can be validated
against runc:  CAPSA_TEST_RUNTIME=runc pytest tests/
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = Path("/bin/busybox")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_UNIFIED = CGROUP_ROOT / "unified"
# Parent of every cgroup the tests ask for: cgroupsPath = /capsa-test/<id>.
CGROUP_PARENT = "capsa-test"

DEFAULT_TIMEOUT = 30


# --------------------------------------------------------------------------
# Which runtime binary
# --------------------------------------------------------------------------

def runtime_binary() -> str | None:
    """CAPSA_TEST_RUNTIME, else capsa-runtime on PATH, else .venv/bin/capsa-runtime."""
    env = os.environ.get("CAPSA_TEST_RUNTIME")
    if env:
        found = shutil.which(env)
        return found or (env if os.path.exists(env) else None)
    found = shutil.which("capsa-runtime")
    if found:
        return found
    local = REPO / ".venv" / "bin" / "capsa-runtime"
    if local.exists():
        return str(local)
    return None


def runtime_is_runc(binary: str) -> bool:
    return os.path.basename(binary) == "runc"


# --------------------------------------------------------------------------
# Rootfs
# --------------------------------------------------------------------------

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
tty:x:5:
users:x:100:
nogroup:x:65534:
"""

ROOTFS_DIRS = ["bin", "etc", "proc", "dev", "sys", "tmp", "root", "run", "var",
               "shared", "mnt"]
ROOTFS_MARKER = "etc/capsa-test-rootfs"


def build_rootfs(dest: Path) -> Path:
    """A busybox rootfs: /bin/busybox plus a RELATIVE symlink per applet.

    `busybox --install -s` makes absolute symlinks to the host path, which do
    not resolve inside the container, so the links are made by hand. Every
    directory is 0755 so a user-namespaced container (mapped to an unprivileged
    host uid) can traverse it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    for d in ROOTFS_DIRS:
        (dest / d).mkdir(exist_ok=True)
        os.chmod(dest / d, 0o755)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    os.chmod(dest / "bin" / "busybox", 0o755)
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True,
                             capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet == "busybox":
            continue
        link = dest / "bin" / applet
        if not link.exists() and not link.is_symlink():
            os.symlink("busybox", link)
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / ROOTFS_MARKER).write_text("capsa-test\n")
    for f in ("passwd", "group", "capsa-test-rootfs"):
        os.chmod(dest / "etc" / f, 0o644)
    return dest


# --------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------

# Docker's default capability set.
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6,
    "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23, "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}


def cap_mask(names) -> int:
    mask = 0
    for n in names:
        mask |= 1 << CAP_NUMBERS[n]
    return mask


DEFAULT_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                 "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
]

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]

READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]

DEFAULT_NAMESPACES = ["pid", "network", "ipc", "uts", "mount", "cgroup"]

DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "TERM=xterm"]


def make_config(args, **overrides) -> dict:
    """A runc-spec-like default config.json as a dict.

    Keyword overrides (all optional):
      cgroups_path   linux.cgroupsPath (None: leave it out)
      root_path      root.path (default "rootfs")
      readonly       root.readonly (default True)
      hostname       (default "capsa-test"; None: leave it out)
      env, cwd, terminal, no_new_privileges
      user           process.user dict (default uid 0 gid 0)
      capabilities   one list used for bounding/effective/permitted
                     (inheritable and ambient empty), or a full dict
      rlimits        list of {"type","soft","hard"} (default NOFILE 1024/1024)
      namespaces     list of type names or namespace dicts
      extra_namespaces  appended to the default namespace list
      uid_mappings, gid_mappings
      resources      linux.resources (default: deny-all device rule only)
      mounts         full mount list; extra_mounts appended to the default
      masked_paths, readonly_paths
      annotations
    """
    o = dict(overrides)

    def take(key, default):
        return o.pop(key) if key in o else copy.deepcopy(default)

    caps = take("capabilities", DEFAULT_CAPS)
    if isinstance(caps, list):
        caps = {"bounding": list(caps), "effective": list(caps),
                "permitted": list(caps), "inheritable": [], "ambient": []}
    namespaces = take("namespaces", DEFAULT_NAMESPACES)
    namespaces = [n if isinstance(n, dict) else {"type": n} for n in namespaces]
    namespaces += [n if isinstance(n, dict) else {"type": n}
                   for n in take("extra_namespaces", [])]
    mounts = take("mounts", DEFAULT_MOUNTS) + take("extra_mounts", [])
    resources = take("resources", {})
    resources.setdefault("devices", [{"allow": False, "access": "rwm"}])

    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": take("terminal", False),
            "user": take("user", {"uid": 0, "gid": 0}),
            "args": list(args),
            "env": take("env", DEFAULT_ENV),
            "cwd": take("cwd", "/"),
            "capabilities": caps,
            "rlimits": take("rlimits", [{"type": "RLIMIT_NOFILE", "hard": 1024,
                                         "soft": 1024}]),
            "noNewPrivileges": take("no_new_privileges", True),
        },
        "root": {"path": take("root_path", "rootfs"),
                 "readonly": take("readonly", True)},
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": take("masked_paths", MASKED_PATHS),
            "readonlyPaths": take("readonly_paths", READONLY_PATHS),
        },
    }
    hostname = take("hostname", "capsa-test")
    if hostname is not None:
        config["hostname"] = hostname
    cgroups_path = take("cgroups_path", None)
    if cgroups_path is not None:
        config["linux"]["cgroupsPath"] = cgroups_path
    uid_mappings = take("uid_mappings", None)
    gid_mappings = take("gid_mappings", None)
    if uid_mappings is not None:
        config["linux"]["uidMappings"] = uid_mappings
    if gid_mappings is not None:
        config["linux"]["gidMappings"] = gid_mappings
    annotations = take("annotations", None)
    if annotations is not None:
        config["annotations"] = annotations
    if o:
        raise TypeError(f"make_config: unknown overrides {sorted(o)}")
    return config


def new_id(prefix: str = "ct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def cgroup_path_for(cid: str) -> str:
    return f"/{CGROUP_PARENT}/{cid}"


# --------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------

@dataclass
class Result:
    args: list
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return (f"$ {' '.join(map(str, self.args))}\n"
                f"exit {self.returncode}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


def run_cmd(argv, *, input: str | None = None, timeout: float = DEFAULT_TIMEOUT,
            preexec_fn=None, close_fds: bool = True, cwd=None, env=None) -> Result:
    """Run argv with stdout/stderr to temp FILES, never pipes.

    A created or detached container inherits the runtime's stdio; with pipes
    the caller would wait for EOF until the container exits.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
        proc = subprocess.Popen([str(a) for a in argv], stdin=stdin, stdout=out,
                                stderr=err, preexec_fn=preexec_fn,
                                close_fds=close_fds, cwd=cwd, env=env,
                                start_new_session=True)
        try:
            proc.communicate(input.encode() if input is not None else None,
                             timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            out.seek(0)
            err.seek(0)
            raise AssertionError(
                f"timed out after {timeout}s: {' '.join(map(str, argv))}\n"
                f"--- stdout\n{out.read().decode(errors='replace')}"
                f"--- stderr\n{err.read().decode(errors='replace')}")
        out.seek(0)
        err.seek(0)
        return Result([str(a) for a in argv], proc.returncode,
                      out.read().decode(errors="replace"),
                      err.read().decode(errors="replace"))


def cgroup2_wrapper() -> list:
    """Prefix that runs a command in a private mount namespace where
    /sys/fs/cgroup is a plain cgroup2 mount (a v2-only host view)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"', "cgroup2-view"]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# Host-side inspection
# --------------------------------------------------------------------------

def v1_controllers() -> list[Path]:
    """Mounted v1 hierarchies under /sys/fs/cgroup (not unified, not tmpfs)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype = post.split()[0]
        mountpoint = pre.split()[4]
        if fstype == "cgroup" and mountpoint.startswith(str(CGROUP_ROOT) + "/"):
            found.append(Path(mountpoint))
    return found


def plain_dirs_under_cgroup_root() -> list[Path]:
    """Dirs in /sys/fs/cgroup that are no hierarchy, only dirs of its tmpfs
    (a tool's mkdir for a controller this host does not mount)."""
    try:
        dev = CGROUP_ROOT.stat().st_dev
        return [d for d in CGROUP_ROOT.iterdir() if d.is_dir() and not d.is_symlink() and d.stat().st_dev == dev]
    except OSError:
        return []


def host_mount_of(path) -> tuple[str, str, str]:
    """(mount point, root within the filesystem, fstype) of the host mount
    that holds path."""
    path = os.path.realpath(path)
    best = ("", "", "")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        mp = fields[4]
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) \
                and len(mp) >= len(best[0]):
            best = (mp, fields[3], post.split()[0])
    return best


def cgroup_dirs(rel: str, include_unified: bool = True) -> list[Path]:
    """Existing cgroup directories for the relative path in every hierarchy."""
    rel = rel.strip("/")
    roots = v1_controllers()
    if include_unified and CGROUP_UNIFIED.is_dir():
        roots.append(CGROUP_UNIFIED)
    return [r / rel for r in roots if (r / rel).is_dir()]


def cgroup_procs(d: Path) -> list[int]:
    pids = set()
    for f in ("cgroup.procs", "tasks"):
        try:
            pids.update(int(x) for x in (d / f).read_text().split())
        except (OSError, ValueError):
            pass
    return sorted(pids)


def remove_cgroup_tree(d: Path) -> None:
    """Kill everything inside a cgroup directory tree and rmdir it bottom-up."""
    if not d.is_dir():
        return
    for sub, dirs, _ in os.walk(d, topdown=False):
        p = Path(sub)
        for pid in cgroup_procs(p):
            kill_quietly(pid)
    for _ in range(100):
        for sub, dirs, _ in os.walk(d, topdown=False):
            try:
                os.rmdir(sub)
            except OSError:
                pass
        if not d.exists():
            return
        for sub, _, _ in os.walk(d):
            for pid in cgroup_procs(Path(sub)):
                kill_quietly(pid)
        time.sleep(0.02)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def kill_quietly(pid: int, sig=signal.SIGKILL) -> None:
    """Kill a leftover; never the test process or its ancestors (should a
    runtime have moved the caller into a container's cgroup)."""
    if pid in _ancestors():
        return
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def pid_alive(pid: int) -> bool:
    """True if the pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def proc_starttime(pid: int) -> int | None:
    """Start time of pid (clock ticks since boot): with pid_max 32768 here,
    a pid alone does not name a process for long."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def processes_rooted_under(prefix: str) -> list[int]:
    """Host pids whose root directory (as seen from here) lies under prefix."""
    found = []
    me = os.getpid()
    prefix = prefix.rstrip("/")
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            root = os.readlink(f"/proc/{entry}/root")
        except OSError:
            continue
        if root == prefix or root.startswith(prefix + "/"):
            if pid_alive(int(entry)):
                found.append(int(entry))
    return found


def mounts_containing(fragment: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if fragment in line:
            out.append(line)
    return out


def proc_status_field(text: str, field: str) -> str:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(field)


def assert_clean_error(res: Result, *, mentions=(), one_line: bool = False) -> None:
    """Bad input: non-zero exit, a short message on stderr, no traceback.

    one_line: the message is exactly one line (capsa's contract; runc may add
    a warning line, so tests validated against runc pass one_line=False)."""
    assert res.returncode != 0, res.describe()
    msg = res.stderr.strip()
    assert msg, "expected an error message on stderr\n" + res.describe()
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, \
        res.describe()
    assert "panicked at" not in res.stderr, res.describe()
    lines = [l for l in msg.splitlines() if l.strip()]
    assert len(lines) <= 3, "error should be a short message\n" + res.describe()
    if one_line:
        assert len(lines) == 1, "error should be one line\n" + res.describe()
    for m in mentions:
        assert m.lower() in res.stderr.lower(), \
            f"error message should mention {m!r}\n" + res.describe()


# --------------------------------------------------------------------------
# One test's world
# --------------------------------------------------------------------------

class Ctx:
    """One test's world: a state root, bundles, container ids it created."""

    def __init__(self, runtime: str | None, rootfs: Path, tmp: Path):
        self.runtime = runtime
        self.is_runc = bool(runtime) and runtime_is_runc(runtime)
        self.rootfs = rootfs
        self.tmp = tmp
        self.root = tmp / "state"
        self.ids: list[str] = []
        self.cgroup_paths: list[str] = []
        self.pids: dict[int, int | None] = {}  # pid -> start time
        # argv prefix for every runtime call (e.g. the cgroup2-only view)
        self.prefix: list[str] = []

    # ---- ids, configs, bundles
    def new_id(self, prefix="ct") -> str:
        cid = new_id(prefix)
        self.ids.append(cid)
        return cid

    def track_cgroup(self, path: str) -> None:
        self.cgroup_paths.append(path)

    def config(self, args, cid: str | None = None, **overrides):
        cid = cid or self.new_id()
        overrides.setdefault("cgroups_path", cgroup_path_for(cid))
        overrides.setdefault("root_path", str(self.rootfs))
        if overrides["cgroups_path"]:
            self.track_cgroup(overrides["cgroups_path"])
        return cid, make_config(args, **overrides)

    def write_bundle(self, cid: str, config) -> Path:
        bundle = self.tmp / f"bundle-{cid}"
        bundle.mkdir(exist_ok=True)
        os.chmod(bundle, 0o755)
        text = config if isinstance(config, str) else json.dumps(config, indent=2)
        (bundle / "config.json").write_text(text)
        return bundle

    def bundle(self, args, cid: str | None = None, **overrides):
        cid, config = self.config(args, cid, **overrides)
        return cid, self.write_bundle(cid, config)

    def own_rootfs(self, name="rootfs") -> Path:
        """A private rootfs copy for tests that write into it."""
        return build_rootfs(self.tmp / name)

    def shared_dir(self, name="shared") -> Path:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o777)
        return d

    @staticmethod
    def bind_mount(source: Path, dest="/shared", ro=False) -> dict:
        return {"destination": dest, "type": "bind", "source": str(source),
                "options": ["rbind", "ro" if ro else "rw"]}

    # ---- running the runtime
    def cli(self, *args, timeout=DEFAULT_TIMEOUT, input=None, preexec_fn=None,
            close_fds=True, root=True, cwd=None, env=None) -> Result:
        argv = list(self.prefix) + [self.runtime]
        if root:
            argv += ["--root", str(self.root)]
        argv += [str(a) for a in args]
        return run_cmd(argv, timeout=timeout, input=input, preexec_fn=preexec_fn,
                         close_fds=close_fds, cwd=cwd, env=env)

    def ok(self, *args, **kw) -> Result:
        res = self.cli(*args, **kw)
        assert res.returncode == 0, res.describe()
        return res

    def run(self, args, *, input=None, timeout=DEFAULT_TIMEOUT, **overrides) -> Result:
        """`run` a container with the default config plus overrides; returns
        the runtime's Result (its exit code is the container's)."""
        cid, bundle = self.bundle(args, **overrides)
        return self.cli("run", "--bundle", bundle, cid, input=input, timeout=timeout)

    def create(self, args, *extra, **overrides):
        cid, bundle = self.bundle(args, **overrides)
        self.ok("create", "--bundle", bundle, *extra, cid)
        return cid, bundle

    def state(self, cid) -> dict:
        res = self.ok("state", cid)
        st = json.loads(res.stdout)
        pid = st.get("pid")
        if pid and pid not in self.pids:
            self.pids[pid] = proc_starttime(pid)
        return st

    def wait_status(self, cid, status, timeout=10.0) -> dict:
        last = {}

        def check():
            nonlocal last
            last = self.state(cid)
            return last if last["status"] == status else None

        try:
            return wait_for(check, timeout, interval=0.05, what=f"{cid} {status}")
        except AssertionError:
            raise AssertionError(f"{cid} never reached {status!r}; last state {last}")

    # ---- checks
    def assert_error(self, res: Result, mentions=(), capsa_mentions=()) -> None:
        """A clean one-line error (runc: up to three lines, it adds warnings).
        capsa_mentions: words capsa's message must contain (DESIGN: name what
        failed) where runc's wording does not, so only checked for capsa."""
        if not self.is_runc:
            mentions = list(mentions) + list(capsa_mentions)
        assert_clean_error(res, mentions=mentions, one_line=not self.is_runc)

    def state_entries(self, cid) -> list[Path]:
        if not self.root.exists():
            return []
        return [p for p in self.root.rglob("*") if cid in p.name]

    def leftover_cgroups(self, cid_or_path) -> list[Path]:
        path = cid_or_path if cid_or_path.startswith("/") else cgroup_path_for(cid_or_path)
        return cgroup_dirs(path)

    def assert_nothing_left(self, cid, rootfs: Path | None = None):
        """No state entry, cgroup dir, mount, or process for cid."""
        assert not self.state_entries(cid), f"state left behind: {self.state_entries(cid)}"
        assert not self.leftover_cgroups(cid), \
            f"cgroup left behind: {self.leftover_cgroups(cid)}"
        assert not mounts_containing(str(self.tmp)), mounts_containing(str(self.tmp))
        assert not mounts_containing(str(self.rootfs)), \
            mounts_containing(str(self.rootfs))
        for r in (rootfs, self.rootfs, self.tmp):
            if r is not None:
                procs = processes_rooted_under(str(r))
                assert not procs, f"processes left inside {r}: {procs}"

    # ---- teardown
    def cleanup(self, force_delete=None) -> list[str]:
        """Force-delete every container this test named, then look for (and
        remove) anything left: cgroups, processes, mounts."""
        problems = []
        for cid in self.ids:
            try:
                if force_delete is not None:
                    force_delete(cid)
                else:
                    self.cli("delete", "--force", cid, timeout=20)
            except AssertionError as e:  # timed out
                problems.append(f"delete --force {cid} hung: {e}")
            except Exception:  # unknown id and the like
                pass
        for path in self.cgroup_paths:
            for d in cgroup_dirs(path):
                procs = cgroup_procs(d)
                problems.append(f"cgroup left behind: {d} (procs {procs})")
                if os.getpid() in procs:
                    problems.append(f"the test process itself is in {d}")
                remove_cgroup_tree(d)
        for pid, start in sorted(self.pids.items()):
            if start is not None and proc_starttime(pid) == start and pid_alive(pid):
                problems.append(f"container process {pid} still alive")
                kill_quietly(pid)
        for pid in processes_rooted_under(str(self.tmp)) + \
                processes_rooted_under(str(self.rootfs)):
            problems.append(f"process {pid} left inside the rootfs")
            kill_quietly(pid)
        for line in mounts_containing(str(self.tmp.parent)):
            problems.append(f"mount left behind: {line}")
            os.system(f"umount -l {line.split()[4]} 2>/dev/null")
        return problems


@contextlib.contextmanager
def world(base_dir: Path, rootfs: Path, runtime: str | None, force_delete=None):
    """A Ctx in a fresh 0755 temp dir; on exit, the finalizer: force-delete
    what the test named, clean up and report whatever the runtime left."""
    tmp = Path(tempfile.mkdtemp(prefix="t-", dir=base_dir))
    os.chmod(tmp, 0o755)
    c = Ctx(runtime, rootfs, tmp)
    try:
        yield c
    finally:
        problems = c.cleanup(force_delete(c) if force_delete else None)
        shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        pytest.fail("left behind after the test:\n  " + "\n  ".join(problems),
                    pytrace=False)


# --------------------------------------------------------------------------
# Console socket peer
# --------------------------------------------------------------------------

class ConsoleReceiver:
    """The --console-socket peer: accepts one connection and receives the pty
    master over SCM_RIGHTS."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.settimeout(20)
        self.master: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                self.master = fds[0]
        except BaseException as e:  # reported by the test
            self.error = e

    def get_master(self) -> int:
        self.thread.join(20)
        assert self.error is None, f"console socket: {self.error!r}"
        assert self.master is not None, "no pty master received"
        return self.master

    def close(self):
        self.sock.close()
        if self.master is not None:
            os.close(self.master)


def read_pty(master: int, until: list[str], timeout=10.0) -> str:
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the slave side is closed
                break
            if not chunk:
                break
            buf += chunk
            text = buf.decode(errors="replace")
            if all(u in text for u in until):
                break
    return buf.decode(errors="replace")
