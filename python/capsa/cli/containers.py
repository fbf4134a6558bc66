"""Container commands: run, create, start, stop, kill, restart, rm, ps, logs,
inspect, wait, rename, top, stats, container prune. Docker's names, flags
and output shapes. `run` is normally dispatched before typer loads (see
capsa.container.runflags); the typer command here is its help and fallback.
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from capsa.cli import app, group, root
from capsa.errors import CapsaError

container_group = group("container", "Manage containers.")


def _both(name: str, **kw):
    """Register a command as `capsa NAME` and `capsa container NAME`."""
    def deco(f):
        app.command(name, **kw)(f)
        container_group.command(name, **kw)(f)
        return f
    return deco


def _store():
    from capsa.container.state import Store
    return Store(root())


def _find(store, ref: str):
    return store.find(ref)


_RUN_HELP = "Run a command in a new container (pulling the image if needed)."
_NO_H = {"help_option_names": ["--help"], "allow_interspersed_args": False}


def _values(detach, interactive, tty, rm, name, env, env_file, workdir, user, entrypoint, hostname, volume, tmpfs,
            read_only, memory, memory_swap, cpus, cpu_shares, pids_limit, network, init, restart, stop_signal,
            stop_timeout, label, ulimit, cap_add, cap_drop, privileged, security_opt, blkio_weight=None) -> dict:
    labels = {}
    for item in label or []:
        k, _, v = item.partition("=")
        labels[k] = v
    v = dict(detach=detach, interactive=interactive, tty=tty, auto_remove=rm, name=name, env=env or [],
             env_file=env_file or [], workdir=workdir, user=user, entrypoint=entrypoint, hostname=hostname,
             volumes=volume or [], tmpfs=tmpfs or [], read_only=read_only, memory=memory, memory_swap=memory_swap,
             cpus=cpus, cpu_shares=cpu_shares, pids_limit=pids_limit, network=network or "none", init=init,
             restart=restart or "no", stop_signal=stop_signal, stop_timeout=stop_timeout, labels=labels,
             ulimits=ulimit or [], cap_add=cap_add or [], cap_drop=cap_drop or [], privileged=privileged,
             security_opt=security_opt or [], blkio_weight=blkio_weight)
    return v


def _run_or_create(start: bool):
    def command(
        image: str = typer.Argument(..., help="Image name or id"),
        command: Optional[List[str]] = typer.Argument(None, help="Command and arguments"),
        detach: bool = typer.Option(False, "-d", "--detach", help="Run in the background, print the id"),
        interactive: bool = typer.Option(False, "-i", "--interactive", help="Keep stdin open"),
        tty: bool = typer.Option(False, "-t", "--tty", help="Allocate a pseudo-terminal"),
        rm: bool = typer.Option(False, "--rm", help="Remove the container when it exits"),
        name: Optional[str] = typer.Option(None, "--name"),
        env: Optional[List[str]] = typer.Option(None, "-e", "--env"),
        env_file: Optional[List[str]] = typer.Option(None, "--env-file"),
        workdir: Optional[str] = typer.Option(None, "-w", "--workdir"),
        user: Optional[str] = typer.Option(None, "-u", "--user"),
        entrypoint: Optional[str] = typer.Option(None, "--entrypoint"),
        hostname: Optional[str] = typer.Option(None, "-h", "--hostname"),
        volume: Optional[List[str]] = typer.Option(None, "-v", "--volume", help="HOST:CTR[:ro] or NAME:CTR[:ro]"),
        tmpfs: Optional[List[str]] = typer.Option(None, "--tmpfs"),
        read_only: bool = typer.Option(False, "--read-only"),
        memory: Optional[str] = typer.Option(None, "-m", "--memory"),
        memory_swap: Optional[str] = typer.Option(None, "--memory-swap"),
        cpus: Optional[float] = typer.Option(None, "--cpus"),
        cpu_shares: Optional[int] = typer.Option(None, "-c", "--cpu-shares"),
        pids_limit: Optional[int] = typer.Option(None, "--pids-limit"),
        blkio_weight: Optional[int] = typer.Option(None, "--blkio-weight", help="10-1000 (dropped with a warning where the host cannot)"),
        network: str = typer.Option("none", "--network", "--net", help="none or host"),
        init: bool = typer.Option(False, "--init"),
        restart: str = typer.Option("no", "--restart", help="no, always, unless-stopped, on-failure[:N]"),
        stop_signal: Optional[str] = typer.Option(None, "--stop-signal"),
        stop_timeout: Optional[int] = typer.Option(None, "--stop-timeout"),
        label: Optional[List[str]] = typer.Option(None, "-l", "--label"),
        ulimit: Optional[List[str]] = typer.Option(None, "--ulimit"),
        cap_add: Optional[List[str]] = typer.Option(None, "--cap-add"),
        cap_drop: Optional[List[str]] = typer.Option(None, "--cap-drop"),
        privileged: bool = typer.Option(False, "--privileged"),
        security_opt: Optional[List[str]] = typer.Option(None, "--security-opt"),
    ):
        from capsa.container import runflags
        values = _values(detach, interactive, tty, rm, name, env, env_file, workdir, user, entrypoint, hostname,
                         volume, tmpfs, read_only, memory, memory_swap, cpus, cpu_shares, pids_limit, network, init,
                         restart, stop_signal, stop_timeout, label, ulimit, cap_add, cap_drop, privileged, security_opt,
                         blkio_weight)
        code = runflags.execute(root(), values, image, command or [], start=start)
        raise typer.Exit(code)
    return command


_both("run", help=_RUN_HELP, context_settings=_NO_H)(_run_or_create(True))
_both("create", help="Create a container without starting it.", context_settings=_NO_H)(_run_or_create(False))


@_both("start")
def start(containers: List[str] = typer.Argument(...),
          attach: bool = typer.Option(False, "-a", "--attach", help="Follow the output until it exits"),
          interactive: bool = typer.Option(False, "-i", "--interactive", help="Run attached to this stdin (and terminal, if created with -t)")):
    """Start stopped or created containers."""
    from capsa.container import lifecycle, logs
    store = _store()
    if interactive:
        if len(containers) != 1:
            raise CapsaError("you cannot start and attach multiple containers at once")
        raise typer.Exit(lifecycle.start_attached(store, _find(store, containers[0])))
    for ref in containers:
        rec = _find(store, ref)
        lifecycle.start(store, rec)
        if attach:
            logs.show(logs.log_path(store.dir(rec.id), rec.id), follow=True,
                      running=lambda: store.status(rec).status in ("running", "restarting", "paused"))
            raise typer.Exit(lifecycle.wait(store, rec))
        print(ref)


@_both("stop")
def stop(containers: List[str] = typer.Argument(...),
         time_: Optional[int] = typer.Option(None, "-t", "--time", "--timeout", help="Seconds before SIGKILL (default 10)")):
    """Stop containers: the stop signal, then SIGKILL after the timeout."""
    from capsa.container import lifecycle
    store = _store()
    for ref in containers:
        lifecycle.stop(store, _find(store, ref), time_)
        print(ref)


@_both("restart")
def restart(containers: List[str] = typer.Argument(...), time_: Optional[int] = typer.Option(None, "-t", "--time")):
    """Stop, then start containers."""
    from capsa.container import lifecycle
    store = _store()
    for ref in containers:
        rec = _find(store, ref)
        lifecycle.stop(store, rec, time_)
        lifecycle.start(store, rec)
        print(ref)


@_both("kill")
def kill(containers: List[str] = typer.Argument(...), signal: str = typer.Option("KILL", "-s", "--signal")):
    """Send a signal (default SIGKILL) to containers."""
    from capsa.container import lifecycle
    store = _store()
    for ref in containers:
        lifecycle.kill(store, _find(store, ref), signal)
        print(ref)


@_both("rm")
def rm(containers: List[str] = typer.Argument(...), force: bool = typer.Option(False, "-f", "--force"),
       volumes: bool = typer.Option(False, "-v", "--volumes", help="Remove named volumes too")):
    """Remove containers."""
    from capsa.container import lifecycle
    store = _store()
    failed = None
    for ref in containers:
        try:
            lifecycle.remove(store, _find(store, ref), force=force, volumes=volumes)
            print(ref)
        except CapsaError as e:
            failed = e
            print(f"capsa: error: {e}", file=sys.stderr)
    if failed:
        raise typer.Exit(failed.exit_code)


def _rows(store, all_: bool):
    from capsa.container.listing import rows
    return rows(store, all_)


@_both("ps")
def ps(all_: bool = typer.Option(False, "-a", "--all"), quiet: bool = typer.Option(False, "-q", "--quiet"),
       format_: str = typer.Option("table", "--format"), filter_: Optional[List[str]] = typer.Option(None, "-f", "--filter"),
       no_trunc: bool = typer.Option(False, "--no-trunc")):
    """List containers (running ones; -a for all)."""
    from capsa.container.listing import show
    show(_store(), all_=all_, quiet=quiet, format_=format_, filters=filter_ or [], no_trunc=no_trunc)


@_both("logs")
def logs_(container: str = typer.Argument(...), follow: bool = typer.Option(False, "-f", "--follow"),
          tail: Optional[str] = typer.Option(None, "-n", "--tail"), timestamps: bool = typer.Option(False, "-t", "--timestamps"),
          since: Optional[str] = typer.Option(None, "--since")):
    """Show a container's output (json-file log)."""
    from capsa.container import logs
    store = _store()
    rec = _find(store, container)
    n = None
    if tail not in (None, "all"):
        if not tail.isdigit():
            raise CapsaError(f"invalid --tail {tail!r}: use a number or all")
        n = int(tail)
    logs.show(logs.log_path(store.dir(rec.id), rec.id), follow=follow, tail=n, timestamps=timestamps,
              since=logs.parse_since(since),
              running=lambda: store.status(rec).status in ("running", "restarting", "paused"))


def inspect_container(store, rec) -> dict:
    st = store.status(rec)
    opts = rec.options
    d = store.dir(rec.id)
    try:
        spec = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        spec = {}
    proc = spec.get("process", {})
    res = spec.get("linux", {}).get("resources", {})
    return {
        "Id": rec.id,
        "Created": rec.created,
        "Path": rec.argv[0] if rec.argv else "",
        "Args": rec.argv[1:],
        "State": {
            "Status": st.status, "Running": st.status in ("running", "paused"), "Paused": st.status == "paused",
            "Restarting": st.status == "restarting", "OOMKilled": st.oom_killed, "Dead": False,
            "Pid": st.pid if st.status in ("running", "paused") else 0,
            "ExitCode": st.exit_code if st.exit_code is not None else -1,
            "Error": st.error, "StartedAt": st.started_at or "0001-01-01T00:00:00Z",
            "FinishedAt": st.finished_at or "0001-01-01T00:00:00Z",
        },
        "Image": rec.image_id,
        "LogPath": str(d / f"{rec.id}-json.log"),
        "Name": "/" + rec.name,
        "RestartCount": st.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Binds": [v for v in opts.get("volumes", [])], "NetworkMode": opts.get("network"),
            "RestartPolicy": {"Name": opts.get("restart", "no").partition(":")[0],
                              "MaximumRetryCount": int(opts.get("restart", "no").partition(":")[2] or 0)},
            "AutoRemove": opts.get("auto_remove", False), "CapAdd": opts.get("cap_add"), "CapDrop": opts.get("cap_drop"),
            "Privileged": opts.get("privileged", False), "ReadonlyRootfs": opts.get("read_only", False),
            "SecurityOpt": opts.get("security_opt"), "Tmpfs": opts.get("tmpfs"),
            "Memory": res.get("memory", {}).get("limit", 0), "MemorySwap": res.get("memory", {}).get("swap", 0),
            "NanoCpus": int((opts.get("cpus") or 0) * 1e9), "CpuShares": opts.get("cpu_shares") or 0,
            "PidsLimit": opts.get("pids_limit"), "Ulimits": opts.get("ulimits"), "Init": opts.get("init", False),
        },
        "GraphDriver": {"Name": "overlay", "Data": {
            "LowerDir": ":".join(reversed(rec.layers)), "UpperDir": str(d / "upper"), "WorkDir": str(d / "work"),
            "MergedDir": str(d / "rootfs")}},
        "Mounts": rec.mounts,
        "Config": {
            "Hostname": spec.get("hostname", ""), "User": opts.get("user") or "", "Env": proc.get("env", []),
            "Cmd": opts.get("command") or None, "Entrypoint": opts.get("entrypoint"), "Image": rec.image_name,
            "WorkingDir": proc.get("cwd", ""), "Labels": opts.get("labels") or {}, "Tty": opts.get("tty", False),
            "OpenStdin": opts.get("interactive", False), "StopSignal": opts.get("stop_signal") or "SIGTERM",
            "StopTimeout": opts.get("stop_timeout"),
        },
    }


@_both("inspect")
def inspect(containers: List[str] = typer.Argument(...)):
    """Docker-shaped JSON about containers."""
    store = _store()
    print(json.dumps([inspect_container(store, _find(store, ref)) for ref in containers], indent=4))


@_both("wait")
def wait(containers: List[str] = typer.Argument(...)):
    """Block until containers stop; print their exit codes."""
    from capsa.container import lifecycle
    store = _store()
    for ref in containers:
        print(lifecycle.wait(store, _find(store, ref)))


@_both("rename")
def rename(container: str = typer.Argument(...), new_name: str = typer.Argument(...)):
    """Rename a container."""
    from capsa.container import names
    if not names.valid_name(new_name):
        raise CapsaError(f"invalid container name {new_name!r}")
    store = _store()
    store.rename(_find(store, container).id, new_name)


@_both("top")
def top(container: str = typer.Argument(...)):
    """The processes of a container."""
    store = _store()
    rec = _find(store, container)
    if store.status(rec).status not in ("running", "paused"):
        raise CapsaError(f"container {rec.name} is not running")
    from capsa import _core
    pids = _core.ps(str(store.run_root), rec.id)
    print(f"{'PID':<10}{'USER':<10}{'TIME':<12}CMD")
    for pid in sorted(pids):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
            import os
            uid = os.stat(f"/proc/{pid}").st_uid
            stat = open(f"/proc/{pid}/stat").read()
            fields = stat[stat.rfind(")") + 2:].split()
            secs = (int(fields[11]) + int(fields[12])) // os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
        print(f"{pid:<10}{uid:<10}{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}    {cmd}")


@container_group.command("prune")
def prune(force: bool = typer.Option(False, "-f", "--force")):
    """Remove all stopped containers."""
    from capsa.container import lifecycle
    store = _store()
    for rec, st in _rows(store, True):
        if st.status in ("exited", "created"):
            lifecycle.remove(store, rec)
            print(rec.id)


def _running(store, rec):
    st = store.status(rec)
    if not st.live:
        raise CapsaError(f"container {rec.name} is not running")
    return st


@_both("exec", context_settings={"allow_interspersed_args": False})
def exec_(container: str = typer.Argument(...), command: List[str] = typer.Argument(...),
          interactive: bool = typer.Option(False, "-i", "--interactive"), tty: bool = typer.Option(False, "-t", "--tty"),
          env: Optional[List[str]] = typer.Option(None, "-e", "--env"), user: Optional[str] = typer.Option(None, "-u", "--user"),
          workdir: Optional[str] = typer.Option(None, "-w", "--workdir"), detach: bool = typer.Option(False, "-d", "--detach")):
    """Run a command in a running container (in-process through the core)."""
    from pathlib import Path as _P

    from capsa import _core
    from capsa.container import user as users
    store = _store()
    rec = _find(store, container)
    if _running(store, rec).status == "paused":
        raise CapsaError(f"container {rec.name} is paused: unpause it first")
    ident = None
    if user is not None:
        i = users.resolve(user, [_P(p) for p in rec.layers])
        ident = f"{i.uid}:{i.gid}"
    if tty:
        from capsa.container import terminal
        raise typer.Exit(terminal.exec_(store, rec, interactive=interactive, args=list(command), env=env or [],
                                        cwd=workdir, user=ident))
    if not interactive:
        import os
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
    try:
        code = _core.exec(str(store.run_root), rec.id, args=list(command), env=env or [], cwd=workdir, user=ident,
                          detach=detach, forward_signals=not detach)
    except _core.ContainerError as e:
        from capsa.container.lifecycle import StartError
        raise StartError(e) from None
    raise typer.Exit(0 if detach else code)


@_both("pause")
def pause(containers: List[str] = typer.Argument(...)):
    """Freeze every process of containers."""
    from capsa import _core
    store = _store()
    for ref in containers:
        rec = _find(store, ref)
        _running(store, rec)
        try:
            _core.pause(str(store.run_root), rec.id)
        except _core.ContainerError as e:
            raise CapsaError(str(e)) from None
        print(ref)


@_both("unpause")
def unpause(containers: List[str] = typer.Argument(...)):
    """Thaw paused containers."""
    from capsa import _core
    store = _store()
    for ref in containers:
        rec = _find(store, ref)
        if store.status(rec).status != "paused":
            raise CapsaError(f"container {rec.name} is not paused")
        try:
            _core.resume(str(store.run_root), rec.id)
        except _core.ContainerError as e:
            raise CapsaError(str(e)) from None
        print(ref)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n}B"


@_both("stats")
def stats(containers: Optional[List[str]] = typer.Argument(None), no_stream: bool = typer.Option(False, "--no-stream")):
    """CPU %, memory and pids of running containers (from their cgroups)."""
    import time

    from capsa import _core
    store = _store()
    recs = [_find(store, r) for r in containers] if containers else [r for r, _ in _rows(store, False)]

    def sample():
        out = {}
        for rec in recs:
            try:
                out[rec.id] = json.loads(_core.stats(str(store.run_root), rec.id))["data"]
            except (_core.ContainerError, ValueError, KeyError):
                pass
        return out, time.monotonic()

    prev, t0 = sample()
    while True:
        time.sleep(0.5 if no_stream else 1.0)
        cur, t1 = sample()
        print(f"{'CONTAINER ID':<14}{'NAME':<24}{'CPU %':>8}   {'MEM USAGE / LIMIT':<24}{'MEM %':>7}   PIDS")
        for rec in recs:
            if rec.id not in cur:
                continue
            d = cur[rec.id]
            cpu = (d.get("cpu", {}).get("usage", {}).get("total", 0) -
                   prev.get(rec.id, d).get("cpu", {}).get("usage", {}).get("total", 0)) / ((t1 - t0) * 1e9) * 100
            mem = d.get("memory", {}).get("usage", {})
            usage, limit = mem.get("usage", 0), mem.get("limit", 0)
            host = _host_memory()
            limit = min(limit or host, host)
            pids = d.get("pids", {}).get("current", 0)
            print(f"{rec.id[:12]:<14}{rec.name:<24}{cpu:>7.2f}%   {_size(usage) + ' / ' + _size(limit):<24}"
                  f"{usage / limit * 100 if limit else 0:>6.2f}%   {pids}")
        if no_stream:
            return
        prev, t0 = cur, t1


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


@_both("cp")
def cp(source: str = typer.Argument(..., metavar="SRC"), dest: str = typer.Argument(..., metavar="DEST")):
    """Copy files between a container (running or not) and the host (CONTAINER:PATH on one side).

    Nothing of the container runs or is loaded: its root is reached through a
    descriptor and every path is resolved by the kernel inside it
    (capsa/container/copy.py), so its symlinks cannot lead outside it and the
    image needs no tar. Files copied in belong to the container's root user;
    on the host, device nodes, fifos and symlinks that would point outside
    the destination are skipped with a warning."""
    from capsa.container import copy

    store = _store()

    def split(arg):
        ref, sep, path = arg.partition(":")
        return (ref, path) if sep and "/" not in ref and ref else (None, arg)

    (src_ref, src_path), (dst_ref, dst_path) = split(source), split(dest)
    if (src_ref is None) == (dst_ref is None):
        raise CapsaError("cp copies between a container and the host: give CONTAINER:PATH as exactly one side")
    rec = _find(store, src_ref or dst_ref)
    if src_ref:
        warnings = copy.copy_out(store, rec, src_path, dst_path)
    else:
        warnings = copy.copy_in(store, rec, src_path, dst_path)
    for w in warnings:
        print(f"capsa: warning: {w}", file=sys.stderr)
