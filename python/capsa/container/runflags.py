"""`capsa run` / `capsa create`: the flags, and the command itself.

`run` is the hot path, so the CLI dispatches it here before importing typer
(which alone costs more than the whole start of a container): a small
table-driven parser for Docker's flags. Anything it does not know (--help,
a typo) goes back to the typer command of the same name, which prints
help and errors the usual way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from capsa.errors import CapsaError

# flag -> (RunOptions field or special name, kind): kind is "bool", "str", "list", "int", "float", "map".
FLAGS: dict[str, tuple[str, str]] = {}


def _flag(names: str, field: str, kind: str) -> None:
    for n in names.split():
        FLAGS[n] = (field, kind)


_flag("-d --detach", "detach", "bool")
_flag("-i --interactive", "interactive", "bool")
_flag("-t --tty", "tty", "bool")
_flag("--rm", "auto_remove", "bool")
_flag("--name", "name", "str")
_flag("-e --env", "env", "list")
_flag("--env-file", "env_file", "list")
_flag("-w --workdir", "workdir", "str")
_flag("-u --user", "user", "str")
_flag("--entrypoint", "entrypoint", "str")
_flag("-h --hostname", "hostname", "str")
_flag("-v --volume", "volumes", "list")
_flag("--tmpfs", "tmpfs", "list")
_flag("--read-only", "read_only", "bool")
_flag("-m --memory", "memory", "str")
_flag("--memory-swap", "memory_swap", "str")
_flag("--cpus", "cpus", "float")
_flag("--cpu-shares -c", "cpu_shares", "int")
_flag("--pids-limit", "pids_limit", "int")
_flag("--blkio-weight", "blkio_weight", "int")
_flag("--network --net", "network", "str")
_flag("--init", "init", "bool")
_flag("--restart", "restart", "str")
_flag("--stop-signal", "stop_signal", "str")
_flag("--stop-timeout", "stop_timeout", "int")
_flag("-l --label", "labels", "map")
_flag("--ulimit", "ulimits", "list")
_flag("--cap-add", "cap_add", "list")
_flag("--cap-drop", "cap_drop", "list")
_flag("--privileged", "privileged", "bool")
_flag("--security-opt", "security_opt", "list")


class NotFast(Exception):
    """The argv needs the full CLI (help, an unknown flag)."""


def parse(args: list[str]) -> tuple[dict, str, list[str]]:
    """Docker-style argv (flags, IMAGE, COMMAND...) -> (values by field, image, command)."""
    values: dict = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        name, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        if name in FLAGS:
            field, kind = FLAGS[name]
            if kind == "bool":
                if eq:
                    values[field] = inline.lower() in ("1", "true", "yes")
                else:
                    values[field] = True
                i += 1
                continue
            if eq:
                value = inline
                i += 1
            else:
                if i + 1 >= len(args):
                    raise CapsaError(f"flag needs an argument: {name}")
                value = args[i + 1]
                i += 2
            _store(values, field, kind, value, name)
            continue
        if not a.startswith("--") and len(a) > 2:
            # Combined short flags: -it, -dit, -e=X is not Docker's; -eFOO=bar is.
            first = FLAGS.get(a[:2])
            if first and first[1] == "bool" and all(FLAGS.get("-" + c, ("", ""))[1] == "bool" for c in a[1:]):
                for c in a[1:]:
                    values[FLAGS["-" + c][0]] = True
                i += 1
                continue
            if first and first[1] != "bool":
                _store(values, first[0], first[1], a[2:], a[:2])
                i += 1
                continue
        raise NotFast(a)
    if i >= len(args):
        raise CapsaError('"capsa run" requires at least 1 argument: capsa run [OPTIONS] IMAGE [COMMAND] [ARG...]')
    return values, args[i], args[i + 1:]


def _store(values: dict, field: str, kind: str, value: str, flag: str) -> None:
    try:
        if kind == "list":
            values.setdefault(field, []).append(value)
        elif kind == "map":
            k, _, v = value.partition("=")
            values.setdefault(field, {})[k] = v
        elif kind == "int":
            values[field] = int(value)
        elif kind == "float":
            values[field] = float(value)
        else:
            values[field] = value
    except ValueError:
        raise CapsaError(f"invalid value {value!r} for {flag}") from None


def read_env_files(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        try:
            text = Path(p).read_text()
        except OSError as e:
            raise CapsaError(f"cannot read env file {p}: {e.strerror}") from None
        out += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return out


def options(values: dict, command: list[str]):
    from capsa.container.spec import RunOptions

    v = dict(values)
    for extra in ("detach", "name", "env_file"):
        v.pop(extra, None)
    opts = RunOptions.from_dict(v)
    opts.command = list(command)
    opts.env = read_env_files(values.get("env_file", [])) + opts.env
    return opts


def find_image(root: Path, ref: str, conn=None):
    """The image from the store, pulled (with progress) if absent, as Docker does."""
    if conn is not None:
        from capsa.container.image_lookup import by_tag
        image = by_tag(conn, root, ref)
        if image is not None:
            return image
    from capsa.image.store import Store
    store = Store.open(root)
    image = store.lookup(ref)
    if image is None:
        from capsa.image.progress import for_output
        from capsa.image.pull import pull
        print(f"Unable to find image '{ref}' locally", file=sys.stderr)
        # As docker run: the pull's progress on stderr, stdout is the container's.
        progress = for_output(stream=sys.stderr)
        try:
            image = pull(store, ref, progress=progress)
        finally:
            progress.close()
    return image


def execute(root: Path, values: dict, image_ref: str, command: list[str], *, start: bool = True) -> int:
    """Create (and, for run, start) a container; the exit code of the CLI.
    A failure of capsa's own (not of the container's command) exits 125, as
    `docker run` does."""
    try:
        return _execute(root, values, image_ref, command, start=start)
    except CapsaError as e:
        if e.exit_code == 1:
            e.exit_code = 125
        raise


def _execute(root: Path, values: dict, image_ref: str, command: list[str], *, start: bool) -> int:
    from capsa.container import lifecycle
    from capsa.container.state import Store

    opts = options(values, command)
    detach = values.get("detach", False)
    store = Store(root)
    image = find_image(root, image_ref, store.conn)
    rec = lifecycle.create(store, image, opts, values.get("name"), image_name=image_ref)
    if not start:
        print(rec.id)
        return 0
    if detach:
        try:
            lifecycle.start_detached(store, rec)
        except BaseException:
            lifecycle.remove(store, rec, force=True)
            raise
        print(rec.id)
        return 0
    if not opts.interactive:
        _stdin_from_devnull()
    try:
        if opts.tty:
            from capsa.container import terminal
            code = terminal.run(store, rec)
        else:
            code = lifecycle.run_foreground(store, rec)
    except lifecycle.StartError:
        # A container that never ran leaves nothing behind.
        lifecycle.remove(store, rec, force=True)
        raise
    if opts.auto_remove:
        lifecycle.remove(store, rec, force=True)
    return code


def _stdin_from_devnull() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


def fast_main(argv: list[str]) -> int | None:
    """`capsa [--root R] run ...` without typer; None when the full CLI must handle it."""
    root = None
    args = list(argv)
    if args[:1] == ["--root"] and len(args) > 2:
        root, args = args[1], args[2:]
    elif args and args[0].startswith("--root="):
        root, args = args[0].partition("=")[2], args[1:]
    if args[:1] == ["ps"]:
        return _fast_ps(root, args[1:])
    if not args or args[0] != "run":
        return None
    try:
        values, image, command = parse(args[1:])
    except NotFast:
        return None
    from capsa.db import store_root
    return execute(store_root(root), values, image, command)


def _fast_ps(root: str | None, args: list[str]) -> int | None:
    """`capsa ps [-a] [-q] [--no-trunc] [--format F]` without typer (a listing is mostly start-up cost)."""
    flags = {"-a": "all_", "--all": "all_", "-q": "quiet", "--quiet": "quiet", "--no-trunc": "no_trunc",
             "-aq": "aq", "-qa": "aq"}
    kw: dict = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a in flags:
            for k in (("all_", "quiet") if flags[a] == "aq" else (flags[a],)):
                kw[k] = True
        elif a == "--format" and i + 1 < len(args):
            kw["format_"] = args[i + 1]
            i += 1
        elif a.startswith("--format="):
            kw["format_"] = a.partition("=")[2]
        else:
            return None  # --help, filters, typos: the full CLI
        i += 1
    from capsa.container.listing import show
    from capsa.container.state import Store
    from capsa.db import store_root
    show(Store(store_root(root)), **kw)
    return 0


def entry() -> None:
    """The `capsa` console script: `run` here, without typer; the rest to capsa.cli."""
    argv = sys.argv[1:]
    code = None
    try:
        code = fast_main(argv)
    except CapsaError as e:
        print(f"capsa: error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    if code is None:
        from capsa.cli import main
        main(argv)
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    os._exit(code)
