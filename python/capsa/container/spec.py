"""Image config + run flags -> the container's OCI runtime spec, the Docker
way: Entrypoint/Cmd combined, Env, WorkingDir, User (resolved in the image),
Docker's default capabilities and masked/read-only paths, the default
mounts, resources, and the namespaces the network mode asks for."""

from __future__ import annotations

import os
import re
from pathlib import Path

from capsa.container import user as users
from capsa.binaries import native_binary
from capsa.errors import CapsaError

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

ALL_CAPS = DEFAULT_CAPS + [
    "CAP_DAC_READ_SEARCH", "CAP_LINUX_IMMUTABLE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_LEASE",
    "CAP_AUDIT_CONTROL", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]

# The kernel's capability numbers (linux/capability.h), for reading our own sets.
CAP_NUMBERS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]


def current_caps() -> list[str]:
    """The capabilities we hold (CapEff): --privileged gives these, as containerd's
    WithAllCurrentCapabilities; a cap we lack (CAP_SYS_RESOURCE here) cannot be granted."""
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            mask = int(line.split()[1], 16)
            return [name for bit, name in enumerate(CAP_NUMBERS) if mask >> bit & 1]
    return list(ALL_CAPS)


MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


# RunOptions fields and their defaults (lists and dicts are copied per instance).
# A plain class, not a dataclass: importing dataclasses (and inspect) costs
# more than a container start, and this module is on `capsa run`'s path.
_OPTION_DEFAULTS: dict = dict(
    command=[], entrypoint=None, env=[], workdir=None, user=None, hostname=None, volumes=[], tmpfs=[],
    read_only=False, memory=None, memory_swap=None, cpus=None, cpu_shares=None, pids_limit=None,
    network="none", tty=False, interactive=False, restart="no", stop_signal=None, stop_timeout=None,
    labels={}, ulimits=[], cap_add=[], cap_drop=[], privileged=False, security_opt=[], auto_remove=False,
    init=False,
    blkio_weight=None,
)


class RunOptions:
    """Everything `capsa run`/`create` takes besides the image; stored with the container."""

    __slots__ = tuple(_OPTION_DEFAULTS)

    def __init__(self, **values):
        for k, default in _OPTION_DEFAULTS.items():
            v = values.pop(k, default)
            setattr(self, k, v.copy() if isinstance(v, (list, dict)) and v is default else v)
        if values:
            raise TypeError(f"unknown run options: {', '.join(values)}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in _OPTION_DEFAULTS}

    @classmethod
    def from_dict(cls, d: dict) -> "RunOptions":
        return cls(**{k: v for k, v in d.items() if k in _OPTION_DEFAULTS})

    def restart_policy(self) -> tuple[str, int]:
        name, _, count = self.restart.partition(":")
        if name not in RESTART_POLICIES or (count and (name != "on-failure" or not count.isdigit())):
            raise CapsaError(f"invalid restart policy {self.restart!r}: use no, always, unless-stopped or on-failure[:N]")
        return name, int(count or 0)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$", re.I)


def parse_size(text: str, what: str) -> int:
    """Docker's sizes: 512, 64k, 512m, 1g (binary units)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise CapsaError(f"invalid {what} {text!r}: use a number with an optional unit b, k, m or g")
    unit = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * unit)


def command_line(config: dict, opts: RunOptions) -> list[str]:
    """Entrypoint + Cmd as Docker combines them: --entrypoint replaces the
    image's and drops its Cmd; arguments replace Cmd."""
    if opts.entrypoint is not None:
        entry = [opts.entrypoint] if opts.entrypoint else []
        cmd = list(opts.command)
    else:
        entry = list(config.get("Entrypoint") or [])
        cmd = list(opts.command) if opts.command else list(config.get("Cmd") or [])
    argv = entry + cmd
    if not argv:
        raise CapsaError("no command specified: the image has no Entrypoint or Cmd and none was given")
    return argv


def environment(config: dict, opts: RunOptions, hostname: str) -> list[str]:
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    env.setdefault("PATH", DEFAULT_PATH.partition("=")[2])
    env["HOSTNAME"] = hostname
    if opts.tty:
        env.setdefault("TERM", "xterm")
    for item in opts.env:
        k, eq, v = item.partition("=")
        if not k:
            raise CapsaError(f"invalid environment variable {item!r}: use KEY=VALUE")
        if eq:
            env[k] = v
        elif k in os.environ:
            env[k] = os.environ[k]
    return [f"{k}={v}" for k, v in env.items()]


def capabilities(opts: RunOptions) -> list[str]:
    if opts.privileged:
        return current_caps()

    def norm(c: str) -> str:
        c = c.upper()
        return c if c == "ALL" or c.startswith("CAP_") else "CAP_" + c

    caps = list(DEFAULT_CAPS)
    drop = {norm(c) for c in opts.cap_drop}
    add = [norm(c) for c in opts.cap_add]
    for c in add + list(drop):
        if c != "ALL" and c not in ALL_CAPS:
            raise CapsaError(f"unknown capability {c}")
    if "ALL" in drop:
        caps = []
    caps = [c for c in caps if c not in drop]
    if "ALL" in add:
        return list(ALL_CAPS)
    return caps + [c for c in add if c not in caps]


def _ulimit(text: str) -> dict:
    name, _, values = text.partition("=")
    soft, _, hard = values.partition(":")
    hard = hard or soft
    if not name or not soft.lstrip("-").isdigit() or not hard.lstrip("-").isdigit():
        raise CapsaError(f"invalid ulimit {text!r}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048")
    as_int = lambda v: (1 << 64) - 1 if int(v) < 0 else int(v)  # noqa: E731  (-1: unlimited)
    return {"type": "RLIMIT_" + name.upper(), "soft": as_int(soft), "hard": as_int(hard)}


def mounts_for(opts: RunOptions, container_dir: Path, volumes_dir: Path) -> tuple[list[dict], list[dict]]:
    """The default mounts plus volumes and tmpfs; also Docker-shaped `Mounts` for inspect."""
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]
    if opts.privileged:
        # As Docker: a privileged container may write sysfs and its cgroups.
        for m in mounts:
            if m["type"] in ("sysfs", "cgroup"):
                m["options"] = [o for o in m["options"] if o != "ro"]
    for name in ("hosts", "hostname", "resolv.conf"):
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": str(container_dir / name), "options": ["rbind", "rprivate"]})
    shown = []
    for v in opts.volumes:
        parts = v.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise CapsaError(f"invalid volume {v!r}: use HOST-PATH:CONTAINER-PATH[:ro] or NAME:CONTAINER-PATH[:ro]")
        src, dest = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise CapsaError(f"invalid volume mode {mode!r} in {v!r}: use ro or rw")
        if src.startswith("/"):
            if not os.path.exists(src):
                raise CapsaError(f"volume path {src} does not exist")
            kind, name = "bind", ""
        else:
            if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", src):
                raise CapsaError(f"invalid volume name {src!r}")
            name = src
            data = volumes_dir / src / "_data"
            data.mkdir(parents=True, exist_ok=True)
            src, kind = str(data), "volume"
        # ro is read-only all the way down (rro), mounts under the source included, as Docker 25 does.
        mounts.append({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate"] + (["rro"] if mode == "ro" else [])})
        shown.append({"Type": kind, "Name": name, "Source": src, "Destination": dest, "Mode": mode, "RW": mode == "rw", "Propagation": "rprivate"})
    for t in opts.tmpfs:
        dest, _, topts = t.partition(":")
        if not dest.startswith("/"):
            raise CapsaError(f"invalid tmpfs {t!r}: use /PATH[:OPTIONS]")
        mounts.append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "noexec"] + [o for o in topts.split(",") if o]})
        shown.append({"Type": "tmpfs", "Source": "", "Destination": dest, "Mode": topts, "RW": True, "Propagation": ""})
    return mounts, shown


def resources(opts: RunOptions) -> dict:
    res: dict = {}
    if opts.memory:
        mem = {"limit": parse_size(opts.memory, "memory limit")}
        if mem["limit"] < 6 << 20:
            raise CapsaError("minimum memory limit allowed is 6MB")
        if opts.memory_swap:
            mem["swap"] = -1 if opts.memory_swap.strip() == "-1" else parse_size(opts.memory_swap, "memory-swap limit")
        res["memory"] = mem
    elif opts.memory_swap:
        raise CapsaError("--memory-swap needs --memory")
    cpu: dict = {}
    if opts.cpus is not None:
        if opts.cpus <= 0 or opts.cpus > os.cpu_count():
            raise CapsaError(f"invalid --cpus {opts.cpus}: range is 0.01 to {os.cpu_count()} (the number of CPUs)")
        cpu.update(period=100000, quota=int(opts.cpus * 100000))
    if opts.cpu_shares is not None:
        cpu["shares"] = opts.cpu_shares
    if cpu:
        res["cpu"] = cpu
    if opts.pids_limit is not None:
        res["pids"] = {"limit": opts.pids_limit}
    if opts.blkio_weight:       # 0: not set, as in Docker
        if not 10 <= opts.blkio_weight <= 1000:
            raise CapsaError(f"invalid --blkio-weight {opts.blkio_weight}: the range is 10 to 1000")
        if blkio_weight_supported():
            res["blockIO"] = {"weight": opts.blkio_weight}
        else:   # Docker's warning: the container runs, without the weight
            import sys
            print(f"WARNING: {BLKIO_WEIGHT_DISCARDED}", file=sys.stderr)
    return res


BLKIO_WEIGHT_DISCARDED = "Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded."


def blkio_weight_supported(cgroup_root: str = "/sys/fs/cgroup") -> bool:
    """Whether a blkio weight can land (the core refuses one that cannot):
    cgroup v2 needs the io controller; a v1 or hybrid host blkio.weight (CFQ)
    or blkio.bfq.weight (BFQ) in its blkio hierarchy, where BFQ's shows in
    cgroups below the root only."""
    try:
        with open(os.path.join(cgroup_root, "cgroup.controllers")) as f:
            return "io" in f.read().split()
    except FileNotFoundError:
        pass
    blkio = os.path.join(cgroup_root, "blkio")
    names = ("blkio.weight", "blkio.bfq.weight")
    if not os.path.exists(os.path.join(blkio, "cgroup.procs")):
        return False
    if any(os.path.exists(os.path.join(blkio, n)) for n in names):
        return True
    child = next((e.path for e in os.scandir(blkio) if e.is_dir(follow_symlinks=False)), None)
    if child is not None:
        return any(os.path.exists(os.path.join(child, n)) for n in names)
    probe = os.path.join(blkio, f"capsa-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    try:
        return any(os.path.exists(os.path.join(probe, n)) for n in names)
    finally:
        os.rmdir(probe)


INIT_PATH = "/dev/init"
# Not copied by --privileged (Docker's list): mounts of their own, and the host's console.
_HOST_DEV_SKIP = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console", "ptmx"}


def host_devices(top: str = "/dev") -> list[dict]:
    """--privileged: every char and block device of the host's /dev, as Docker gives them."""
    import stat
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in _HOST_DEV_SKIP]
        for name in filenames:
            if name in _HOST_DEV_SKIP:
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out


def seccomp_profile(path: str) -> dict:
    """--security-opt seccomp=FILE: a profile in the runtime spec's linux.seccomp
    form (Docker's profiles are too, but for their archMap, translated here)."""
    import json
    try:
        profile = json.loads(Path(path).read_text())
    except OSError as e:
        raise CapsaError(f"seccomp profile {path}: {e.strerror}") from None
    except ValueError as e:
        raise CapsaError(f"seccomp profile {path} is not valid JSON: {e}") from None
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise CapsaError(f"seccomp profile {path} has no defaultAction")
    if "archMap" in profile:
        archs = []
        for entry in profile.pop("archMap") or []:
            archs += [entry.get("architecture"), *(entry.get("subArchitectures") or [])]
        profile.setdefault("architectures", [a for a in archs if a])
    for rule in profile.get("syscalls") or []:
        for docker_only in ("includes", "excludes", "comment"):
            rule.pop(docker_only, None)
    return profile


def build(config: dict, layers: list[Path], opts: RunOptions, container_id: str, container_dir: Path, volumes_dir: Path) -> tuple[dict, list[dict]]:
    """The config.json of the container's bundle, and its Docker-shaped Mounts."""
    from capsa.image import schema
    cfg = schema.container_config(config, "the image config").get("config") or {}
    if opts.network not in ("none", "host"):
        raise CapsaError(f"network {opts.network!r} is not supported yet: use --network none or --network host (bridge networks come in a later release)")
    hostname = opts.hostname or container_id[:12]
    ident = users.resolve(opts.user if opts.user is not None else cfg.get("User") or "", layers)
    caps = capabilities(opts)
    no_new_privs = False
    seccomp: dict | str | None = "default"
    for s in opts.security_opt:
        if s in ("no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"):
            no_new_privs = True
        elif s in ("seccomp=unconfined", "seccomp:unconfined"):
            seccomp = None
        elif s.startswith(("seccomp=", "seccomp:")):
            seccomp = seccomp_profile(s[len("seccomp="):])
        else:
            raise CapsaError(f"unsupported --security-opt {s!r}: use no-new-privileges, seccomp=unconfined or seccomp=PROFILE.json")
    mounts, shown = mounts_for(opts, container_dir, volumes_dir)
    args = command_line(cfg, opts)
    if opts.init:
        # Docker's --init: a static reaper, bound in read-only, runs as PID 1 with the command as its child.
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": native_binary("capsa-init", "--init"), "options": ["bind", "ro", "nosuid", "nodev"]})
        args = [INIT_PATH, "--", *args]
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    if opts.network == "none":
        namespaces.append({"type": "network"})
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": opts.tty,
            "user": {"uid": ident.uid, "gid": ident.gid, **({"additionalGids": ident.additional_gids} if ident.additional_gids else {})},
            "args": args,
            "env": environment(cfg, opts, hostname),
            "cwd": opts.workdir or cfg.get("WorkingDir") or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [_ulimit(u) for u in opts.ulimits],
            "noNewPrivileges": no_new_privs,
        },
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": resources(opts),
            "maskedPaths": [] if opts.privileged else MASKED_PATHS,
            "readonlyPaths": [] if opts.privileged else READONLY_PATHS,
        },
    }
    if seccomp == "default" and not opts.privileged:
        # Docker's default profile, as Docker gives every unprivileged container.
        from capsa.runtime.seccomp_default import default_seccomp
        seccomp = default_seccomp(caps)
    if isinstance(seccomp, dict) and not opts.privileged:
        spec["linux"]["seccomp"] = seccomp
    if opts.privileged:
        spec["linux"]["devices"] = host_devices()
        spec["linux"]["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
    if not spec["process"]["cwd"].startswith("/"):
        raise CapsaError(f"the working directory {spec['process']['cwd']!r} is not an absolute path")
    return spec, shown


def etc_files(container_dir: Path, hostname: str, network: str) -> None:
    """/etc/hosts, /etc/hostname and /etc/resolv.conf of the container, bound in as Docker does."""
    (container_dir / "hostname").write_text(hostname + "\n")
    hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    resolv = ""
    if network == "host":
        try:
            hosts = Path("/etc/hosts").read_text()
            resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            pass
    (container_dir / "hosts").write_text(hosts)
    (container_dir / "resolv.conf").write_text(resolv)
