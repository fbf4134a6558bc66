"""The container lifecycle over an image: create (record + bundle + etc
files), start detached (through capsa-monitor) or in the foreground
(in-process through the Rust core), stop, kill, remove, wait.

A container's files live in `<root>/containers/<id>/`: config.json and the
empty rootfs/ mount point (the bundle), upper/ and work/ (its writable
layer: the overlay is mounted by the core inside the container's own mount
namespace), hosts/hostname/resolv.conf, status.json, `<id>-json.log`. The
core's runtime state (init pid, cgroup) is under `<root>/run/<id>/`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from capsa.container import names
from capsa.container import spec as specs
from capsa.container.state import Record, Status, Store
from capsa.binaries import native_binary
from capsa.errors import CapsaError, Conflict

STOP_MARKER = "stop-requested"


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def create(store: Store, image, opts: specs.RunOptions, name: str | None = None, image_name: str | None = None) -> Record:
    """Validate everything, then record and lay out the container; nothing is left on failure."""
    opts.restart_policy()
    if opts.auto_remove and opts.restart not in ("no", ""):
        raise CapsaError("conflicting options: --restart and --rm")
    if name is not None and not names.valid_name(name):
        raise CapsaError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    cid = names.new_id()
    cdir = store.dir(cid)
    layers = [Path(p) for p in image.layer_dirs]
    spec, mounts = specs.build(image.config, layers, opts, cid, cdir, store.volumes_dir)
    rec = Record(id=cid, name=name or names.random_name(), image_id=image.id,
                 image_name=image_name or (image.repo_tags[0] if getattr(image, "repo_tags", None) else image.id),
                 created=_now(), options=opts.to_dict(), argv=spec["process"]["args"],
                 layers=[str(p) for p in layers], mounts=mounts)
    if name is None:
        for _ in range(5):  # a random name may collide; try another
            try:
                store.insert(rec)
                break
            except Conflict:
                rec.name = names.random_name()
        else:
            store.insert(rec)
    else:
        store.insert(rec)
    try:
        (cdir / "rootfs").mkdir(parents=True)
        for sub in ("upper", "work"):
            (cdir / sub).mkdir()
        specs.etc_files(cdir, spec["hostname"], opts.network)
        (cdir / "config.json").write_text(json.dumps(spec))
    except BaseException:
        import shutil
        shutil.rmtree(cdir, ignore_errors=True)
        store.delete(cid)
        raise
    return rec


def overlay_of(store: Store, rec: Record) -> tuple[list[str], str, str]:
    d = store.dir(rec.id)
    return (rec.layers, str(d / "upper"), str(d / "work"))


def start_detached(store: Store, rec: Record, restart_count: int = 0) -> int:
    """Hand the container to a new capsa-monitor; returns the container's init pid once it runs."""
    opts = specs.RunOptions.from_dict(rec.options)
    policy, retries = opts.restart_policy()
    d = store.dir(rec.id)
    (d / STOP_MARKER).unlink(missing_ok=True)
    lower, upper, work = overlay_of(store, rec)
    job = {"id": rec.id, "runtime_root": str(store.run_root), "bundle": str(d), "dir": str(d),
           "lower": lower, "upper": upper, "work": work, "restart": policy, "max_retries": retries,
           "auto_remove": opts.auto_remove, "restart_count": restart_count}
    (d / "monitor.json").write_text(json.dumps(job))
    import subprocess

    r, w = os.pipe()
    try:
        proc = subprocess.Popen([native_binary("capsa-monitor"), str(d / "monitor.json"), str(w)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, pass_fds=(w,))
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    os.close(w)
    with os.fdopen(r, "r") as f:
        line = f.read().strip()
    proc.wait()
    if line.startswith("ok "):
        return int(line.split()[1])
    raise MonitorError(line)


def run_foreground(store: Store, rec: Record) -> int:
    """Create and start in this process; signals are forwarded. Output goes
    to our stdout/stderr and, unless the container is removed after (--rm), to
    its json-file log too, so `capsa logs` works as after a detached run."""
    from capsa import _core

    d = store.dir(rec.id)
    me = os.getpid()
    start = _proc_start(me)
    store.write_status(rec.id, status="running", pid=0, started_at=_now(), monitor_pid=me, monitor_start=start)
    tee = None
    if not rec.options.get("auto_remove"):
        from capsa.container.logs import Tee, log_path
        tee = Tee(log_path(d, rec.id))
    try:
        code = _core.run(str(store.run_root), rec.id, str(d), forward_signals=True, overlay=overlay_of(store, rec))
    except _core.ContainerError as e:
        store.write_status(rec.id, status="exited", exit_code=exit_code_of(e), finished_at=_now(), error=str(e))
        raise StartError(e) from None
    finally:
        if tee is not None:
            tee.close()
    store.write_status(rec.id, status="exited", exit_code=code, started_at="", finished_at=_now())
    return code


class StartError(CapsaError):
    """The container could not start; exit codes as Docker's: 127 not found, 126 not executable."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.exit_code = exit_code_of(error)


def exit_code_of(error: BaseException) -> int:
    """Docker's code for a start that failed (127 command not found, 126 not
    executable, 125 the rest), as the core chose it from the failure's step
    and errno (ContainerError.start_exit_code, MonitorError's)."""
    return getattr(error, "start_exit_code", None) or 125


class MonitorError(CapsaError):
    """capsa-monitor could not start the container: `error\tCODE\tMESSAGE`."""

    def __init__(self, line: str):
        _, code, message = (line.split("\t", 2) + ["", ""])[:3]
        super().__init__(message or line.removeprefix("error") or "capsa-monitor exited without starting the container")
        self.start_exit_code = int(code) if code.isdigit() else 125
        self.exit_code = self.start_exit_code


def _proc_start(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2:].split()[19])


def start(store: Store, rec: Record) -> None:
    st = store.status(rec)
    if st.live:
        return
    _release_runtime(store, rec)
    start_detached(store, rec)


def start_attached(store: Store, rec: Record) -> int:
    """`start -i`: run a created or stopped container in this process with our
    stdin (and terminal if it was created with -t), as `run` without -d; its exit code."""
    st = store.status(rec)
    if st.live:
        raise CapsaError(f"container {rec.name} is already {st.status}: attaching stdin to a running container is not supported")
    _release_runtime(store, rec)
    if rec.options.get("tty"):
        from capsa.container import terminal
        code = terminal.run(store, rec)
    else:
        code = run_foreground(store, rec)
    if rec.options.get("auto_remove"):
        remove(store, rec, force=True)
    return code


def _release_runtime(store: Store, rec: Record) -> None:
    """Drop the core's state of an init that is gone (a killed monitor leaves it)."""
    from capsa import _core
    try:
        _core.delete(str(store.run_root), rec.id, True)
    except _core.ContainerError:
        pass


def kill(store: Store, rec: Record, signal: str = "KILL") -> None:
    from capsa import _core

    st = store.status(rec)
    if not st.live:
        raise Conflict(f"container {rec.name} is not running")
    try:
        _core.kill(str(store.run_root), rec.id, signal, signal.upper().lstrip("SIG") == "KILL" or signal == "9")
    except _core.ContainerError as e:
        raise CapsaError(str(e)) from None


def stop(store: Store, rec: Record, timeout: int | None = None) -> None:
    """The stop signal, then SIGKILL after the timeout (Docker's default 10 s)."""
    from capsa import _core

    opts = specs.RunOptions.from_dict(rec.options)
    if timeout is None:
        timeout = opts.stop_timeout if opts.stop_timeout is not None else 10
    (store.dir(rec.id) / STOP_MARKER).touch()
    if not store.status(rec).live:
        return
    run_root = str(store.run_root)
    try:
        _core.kill(run_root, rec.id, opts.stop_signal or "TERM", False)
    except _core.ContainerError:
        pass
    if not _wait_stopped(store, rec, timeout):
        try:
            _core.kill(run_root, rec.id, "KILL", True)
        except _core.ContainerError:
            pass
        _wait_stopped(store, rec, 10)


def _wait_stopped(store: Store, rec: Record, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if store.status(rec).status in ("exited", "created"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def wait(store: Store, rec: Record) -> int:
    """Block until the container exits; its exit code (-1 when unknown)."""
    while True:
        st = store.status(rec)
        if st.status in ("exited", "created") and not (st.status == "created" and False):
            return -1 if st.exit_code is None else st.exit_code
        if not store.dir(rec.id).exists():
            return -1
        time.sleep(0.05)


def remove(store: Store, rec: Record, force: bool = False, volumes: bool = False) -> None:
    st = store.status(rec)
    if st.live:
        if not force:
            raise Conflict(f"cannot remove container {rec.name}: it is {st.status} (stop it first, or use -f)")
        (store.dir(rec.id) / STOP_MARKER).touch()
        from capsa import _core
        try:
            _core.kill(str(store.run_root), rec.id, "KILL", True)
        except _core.ContainerError:
            pass
        _wait_stopped(store, rec, 10)
    _release_runtime(store, rec)
    import shutil
    shutil.rmtree(store.dir(rec.id), ignore_errors=True)
    store.delete(rec.id)
    if volumes:
        for m in rec.mounts:
            if m.get("Type") == "volume" and m.get("Name"):
                import shutil
                shutil.rmtree(store.volumes_dir / m["Name"], ignore_errors=True)


def reap_removed(store: Store, rec: Record) -> bool:
    """A --rm container whose monitor removed its dir: drop its record. True if dropped."""
    if rec.options.get("auto_remove") and not store.dir(rec.id).exists():
        store.delete(rec.id)
        return True
    return False


def status_text(st: Status, now: float | None = None) -> str:
    """Docker's STATUS column: Up 5 seconds, Exited (0) 2 minutes ago, Created."""
    if st.status == "created":
        return "Created"
    if st.status == "exited":
        code = "unknown" if st.exit_code is None else st.exit_code
        ago = _ago(st.finished_at, now)
        return f"Exited ({code}) {ago} ago" if ago else f"Exited ({code})"
    up = _ago(st.started_at, now) or "Less than a second"
    if st.status == "paused":
        return f"Up {up} (Paused)"
    if st.status == "restarting":
        return f"Restarting ({st.exit_code}) {_ago(st.finished_at, now)} ago"
    return f"Up {up}"


def parse_time(text: str) -> float | None:
    if not text:
        return None
    import calendar
    base, _, frac = text.rstrip("Z").partition(".")
    try:
        t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return t + (float("0." + frac) if frac.isdigit() else 0.0)


def _ago(text: str, now: float | None = None) -> str:
    t = parse_time(text)
    if t is None:
        return ""
    return human_duration((now or time.time()) - t)


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} second{'s' if s != 1 else ''}"
    m = s // 60
    if m < 60:
        return "About a minute" if m == 1 else f"{m} minutes"
    h = m // 60
    if h < 48:
        return "About an hour" if h == 1 else f"{h} hours"
    return f"{h // 24} days"
