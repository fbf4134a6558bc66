"""capsa-runtime: the runc command contract, for podman (conmon), containerd
(go-runc) and people who benchmark runtimes.

Start-up time is part of every container start, so this module imports
nothing heavy: the flags are read by a small table-driven parser rather than
argparse (which with its dependencies costs about as much as the rest of a
`run`), and json is imported only by the commands that print it.
"""


import os
import sys

USAGE = """usage: capsa-runtime [global options] COMMAND [options] [ID]

global options:
  --root DIR              state directory (default /run/capsa/runtime)
  --log FILE              also write errors to FILE
  --log-format text|json  format of --log lines (default text)
  --debug                 more detail on errors
  --systemd-cgroup        cgroups through systemd (not supported: fails on create)
  -v, --version           print the version

commands:
  create ID --bundle DIR [--pid-file F] [--console-socket S] [--no-pivot] [--no-new-keyring] [--preserve-fds N]
  start ID
  run ID --bundle DIR [--detach] [create options]   exits with the container's exit code
  state ID
  kill [--all] ID [SIGNAL]
  delete [--force] ID
  ps [--format table|json] ID [ps options]
  list [--format table|json] [--quiet]
  features
  spec [--bundle DIR]
  exec [options] ID COMMAND [ARG...] | exec [options] --process FILE ID
       -t/--tty --console-socket S -d/--detach --pid-file F -e/--env K=V --cwd DIR
       -u/--user UID[:GID] -g/--additional-gids GID --cap CAP --no-new-privs --preserve-fds N
       exits with the process's exit code (128+N if killed by signal N) unless detached
  pause ID | resume ID
  update [--resources FILE|-] [--memory N --memory-reservation N --memory-swap N --cpu-shares N
         --cpu-quota N --cpu-period N --cpuset-cpus L --cpuset-mems L --pids-limit N --blkio-weight N] ID
  events [--stats] [--interval SECONDS] ID   one stats JSON line with --stats, else one per interval
"""

# Each command's options: name -> (aliases, takes a value); APPEND: a value, repeatable.
APPEND = "append"
_CREATE = {
    "bundle": (("-b",), True), "pid-file": ((), True), "console-socket": ((), True),
    "no-pivot": ((), False), "no-new-keyring": ((), False), "preserve-fds": ((), True),
}
COMMANDS = {
    "create": _CREATE,
    "run": {**_CREATE, "detach": (("-d",), False), "keep": ((), False)},
    "start": {},
    "state": {},
    "kill": {"all": (("-a",), False)},
    "delete": {"force": (("-f",), False)},
    "ps": {"format": (("-f",), True)},
    "list": {"format": (("-f",), True), "quiet": (("-q",), False)},
    "features": {},
    "spec": {"bundle": (("-b",), True), "rootless": ((), False)},
    "exec": {
        "process": (("-p",), True), "tty": (("-t",), False), "console-socket": ((), True),
        "detach": (("-d",), False), "pid-file": ((), True), "env": (("-e",), APPEND),
        "cwd": ((), True), "user": (("-u",), True), "additional-gids": (("-g",), APPEND),
        "cap": (("-c",), APPEND), "no-new-privs": ((), False), "preserve-fds": ((), True),
        "ignore-paused": ((), False), "apparmor": ((), True), "process-label": ((), True),
        "cgroup": ((), APPEND),
    },
    "pause": {},
    "resume": {},
    "update": {
        "resources": (("-r",), True), "memory": ((), True), "memory-reservation": ((), True),
        "memory-swap": ((), True), "kernel-memory": ((), True), "kernel-memory-tcp": ((), True),
        "cpu-share": ((), True), "cpu-shares": ((), True), "cpu-quota": ((), True),
        "cpu-period": ((), True), "cpu-rt-period": ((), True), "cpu-rt-runtime": ((), True),
        "cpuset-cpus": ((), True), "cpuset-mems": ((), True), "pids-limit": ((), True),
        "blkio-weight": ((), True), "l3-cache-schema": ((), True), "mem-bw-schema": ((), True),
    },
    "events": {"stats": ((), False), "interval": ((), True)},
}
GLOBALS = {
    "root": ((), True), "log": ((), True), "log-format": ((), True), "debug": ((), False),
    "systemd-cgroup": ((), False), "version": (("-v",), False), "help": (("-h",), False),
    "rootless": ((), True), "criu": ((), True),
}
NOT_YET = {"checkpoint", "restore"}


class UsageError(Exception):
    pass


def parse(argv: list[str], table: dict, stop_at_positional: bool = False) -> tuple[dict, list[str]]:
    """Options from `table` (--name value, --name=value, -x value, booleans) and the positionals.
    With stop_at_positional, everything from the first positional on is returned untouched."""
    opts: dict = {}
    rest: list[str] = []
    short = {alias: name for name, (aliases, _) in table.items() for alias in aliases}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i + 1:])
            break
        if arg.startswith("-") and arg != "-":
            key, eq, value = arg.partition("=")
            name = short.get(key) or key.lstrip("-")
            if name not in table:
                raise UsageError(f"unknown option {key}")
            if table[name][1]:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"option {key} needs a value")
                    value = argv[i]
                if table[name][1] == APPEND:
                    opts.setdefault(name, []).append(value)
                else:
                    opts[name] = value
            else:
                opts[name] = value.lower() not in ("false", "0") if eq else True
        else:
            if stop_at_positional:
                rest.extend(argv[i:])
                break
            rest.append(arg)
        i += 1
    return opts, rest


class Cli:
    def __init__(self, globals_: dict):
        self.root = globals_.get("root") or os.environ.get("CAPSA_RUNTIME_ROOT") or "/run/capsa/runtime"
        self.systemd_cgroup = bool(globals_.get("systemd-cgroup"))

    def _id(self, args: list[str], extra_ok: bool = False) -> str:
        if not args:
            raise UsageError("a container id is required")
        if len(args) > 1 and not extra_ok:
            raise UsageError(f"unexpected arguments: {' '.join(args[1:])}")
        return args[0]

    def _create_args(self, opts: dict) -> dict:
        preserve = opts.get("preserve-fds", "0")
        if not str(preserve).isdigit():
            raise UsageError(f"--preserve-fds takes a number, not {preserve!r}")
        return dict(
            bundle=opts.get("bundle") or os.getcwd(),
            console_socket=opts.get("console-socket"),
            pid_file=opts.get("pid-file"),
            no_pivot=bool(opts.get("no-pivot")),
            preserve_fds=int(preserve),
            systemd_cgroup=self.systemd_cgroup,
        )

    def create(self, opts, args):
        from capsa import _core

        a = self._create_args(opts)
        _core.create(self.root, self._id(args), a["bundle"], a["console_socket"], a["pid_file"],
                     a["no_pivot"], a["preserve_fds"], a["systemd_cgroup"])
        return 0

    def run(self, opts, args):
        from capsa import _core

        a = self._create_args(opts)
        # In the foreground, signals sent to us are meant for the container (as with runc).
        code = _core.run(self.root, self._id(args), a["bundle"], a["console_socket"], a["pid_file"], a["no_pivot"],
                         a["preserve_fds"], a["systemd_cgroup"], bool(opts.get("detach")), True)
        return 0 if code is None else code

    def start(self, opts, args):
        from capsa import _core

        _core.start(self.root, self._id(args))
        return 0

    def state(self, opts, args):
        import json

        from capsa import _core

        print(json.dumps(json.loads(_core.state(self.root, self._id(args))), indent=2))
        return 0

    def kill(self, opts, args):
        from capsa import _core

        cid = self._id(args[:1])
        if len(args) > 2:
            raise UsageError(f"unexpected arguments: {' '.join(args[2:])}")
        _core.kill(self.root, cid, args[1] if len(args) > 1 else "SIGTERM", bool(opts.get("all")))
        return 0

    def delete(self, opts, args):
        from capsa import _core

        _core.delete(self.root, self._id(args), bool(opts.get("force")))
        return 0

    def ps(self, opts, args):
        from capsa import _core

        cid = args[0] if args else self._id(args)
        pids = _core.ps(self.root, cid)
        fmt = opts.get("format", "table")
        if fmt == "json":
            import json

            print(json.dumps(pids))
            return 0
        if fmt != "table":
            raise UsageError(f"unknown format {fmt!r}: use table or json")
        import subprocess

        out = subprocess.run(["ps", *(args[1:] or ["-ef"])], capture_output=True, text=True, check=True).stdout
        lines = out.splitlines()
        header = lines[0].split() if lines else []
        col = header.index("PID") if "PID" in header else 1
        print(lines[0] if lines else "")
        wanted = {str(p) for p in pids}
        for line in lines[1:]:
            fields = line.split()
            if len(fields) > col and fields[col] in wanted:
                print(line)
        return 0

    def list(self, opts, args):
        import json

        from capsa import _core

        items = json.loads(_core.list(self.root))
        fmt = opts.get("format", "table")
        if opts.get("quiet"):
            for c in items:
                print(c["id"])
        elif fmt == "json":
            print(json.dumps(items))
        elif fmt == "table":
            rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
            rows += [(c["id"], str(c["pid"]), c["status"], c["bundle"], c["created"], c["owner"] or "root") for c in items]
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for r in rows:
                print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        else:
            raise UsageError(f"unknown format {fmt!r}: use table or json")
        return 0

    def features(self, opts, args):
        import json

        from capsa.runtime.templates import features

        print(json.dumps(features(), indent=2))
        return 0

    def spec(self, opts, args):
        import json

        from capsa.runtime.templates import default_spec

        path = os.path.join(opts.get("bundle") or ".", "config.json")
        try:
            with open(path, "x") as f:
                json.dump(default_spec(), f, indent=2)
                f.write("\n")
        except FileExistsError:
            raise UsageError(f"{path} already exists: remove it first") from None
        return 0


    def exec(self, opts, args):
        from capsa import _core

        cid = self._id(args[:1])
        preserve = opts.get("preserve-fds", "0")
        if not str(preserve).isdigit():
            raise UsageError(f"--preserve-fds takes a number, not {preserve!r}")
        gids = []
        for g in opts.get("additional-gids", []):
            if not g.isdigit():
                raise UsageError(f"--additional-gids takes numbers, not {g!r}")
            gids.append(int(g))
        process = opts.get("process")
        if process is None and len(args) < 2:
            raise UsageError("exec needs a command after the container id, or --process FILE")
        if process is not None and len(args) > 1:
            raise UsageError(f"exec --process takes no command: unexpected {' '.join(args[1:])}")
        detach = bool(opts.get("detach"))
        # In the foreground, signals sent to us are meant for the process (as with runc).
        code = _core.exec(self.root, cid, None, process, args[1:], opts.get("env", []), opts.get("cwd"),
                          opts.get("user"), gids, opts.get("cap", []),
                          True if opts.get("no-new-privs") else None, bool(opts.get("tty")),
                          opts.get("console-socket"), opts.get("pid-file"), int(preserve), detach, True)
        return 0 if detach else code

    def pause(self, opts, args):
        from capsa import _core

        _core.pause(self.root, self._id(args))
        return 0

    def resume(self, opts, args):
        from capsa import _core

        _core.resume(self.root, self._id(args))
        return 0

    def update(self, opts, args):
        from capsa import _core

        cid = self._id(args)
        source = opts.get("resources")
        if source == "-":
            text, origin = sys.stdin.read(), "standard input"
        elif source:
            try:
                with open(source) as f:
                    text, origin = f.read(), source
            except OSError as e:
                raise UsageError(f"cannot read resources file {source}: {e.strerror}") from None
        else:
            import json

            text, origin = json.dumps(resources_from_flags(opts)), "the command line"
        _core.update(self.root, cid, text, origin)
        return 0

    def events(self, opts, args):
        from capsa import _core

        cid = self._id(args)
        if opts.get("stats"):
            print(_core.stats(self.root, cid))
            return 0
        interval = parse_duration(opts.get("interval", "5s"))
        import time

        while True:  # runc's stream: a stats event per interval while the container runs
            try:
                line = _core.stats(self.root, cid)
            except Exception:  # noqa: BLE001 - the container stopped: the stream ends
                if self.state_status(cid) == "stopped":
                    return 0
                raise
            print(line, flush=True)
            time.sleep(interval)

    def state_status(self, cid: str) -> str:
        import json

        from capsa import _core

        try:
            return json.loads(_core.state(self.root, cid))["status"]
        except Exception:  # noqa: BLE001 - gone counts as stopped
            return "stopped"


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(flag: str, value: str) -> int:
    """runc's memory flags: bytes, or a number with k/m/g/t (binary units); -1 is unlimited."""
    v = value.strip().lower()
    if v == "-1":
        return -1
    v = v.removesuffix("ib").removesuffix("b")
    number, unit = (v[:-1], v[-1]) if v and v[-1] in _UNITS else (v, "")
    try:
        return int(float(number) * _UNITS[unit])
    except ValueError:
        raise UsageError(f"--{flag} takes a size such as 67108864, 64m or 1g, not {value!r}") from None


def parse_int(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--{flag} takes a number, not {value!r}") from None


def parse_duration(value: str) -> float:
    """--interval: 5s, 500ms, 1m or plain seconds."""
    v = value.strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if v.endswith(suffix):
            v, factor = v[: -len(suffix)], scale
            break
    else:
        factor = 1.0
    try:
        seconds = float(v) * factor
    except ValueError:
        raise UsageError(f"--interval takes a duration such as 5s, not {value!r}") from None
    if seconds <= 0:
        raise UsageError("--interval must be positive")
    return seconds


def resources_from_flags(opts: dict) -> dict:
    """runc update's flags as runtime-spec LinuxResources."""
    for unsupported in ("l3-cache-schema", "mem-bw-schema"):
        if opts.get(unsupported):
            raise UsageError(f"--{unsupported}: Intel RDT is not supported by capsa-runtime")
    r: dict = {}
    memory = {key: parse_bytes(flag, opts[flag]) for flag, key in
              (("memory", "limit"), ("memory-reservation", "reservation"), ("memory-swap", "swap"))
              if opts.get(flag) is not None}
    if memory:
        r["memory"] = memory
    cpu: dict = {}
    for flag, key in (("cpu-share", "shares"), ("cpu-shares", "shares"), ("cpu-quota", "quota"),
                      ("cpu-period", "period"), ("cpu-rt-period", "realtimePeriod"),
                      ("cpu-rt-runtime", "realtimeRuntime")):
        if opts.get(flag) is not None:
            cpu[key] = parse_int(flag, opts[flag])
    for flag, key in (("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")):
        if opts.get(flag) is not None:
            cpu[key] = opts[flag]
    if cpu:
        r["cpu"] = cpu
    if opts.get("pids-limit") is not None:
        r["pids"] = {"limit": parse_int("pids-limit", opts["pids-limit"])}
    if opts.get("blkio-weight") is not None:
        r["blockIO"] = {"weight": parse_int("blkio-weight", opts["blkio-weight"])}
    return r  # no flags: nothing to change, as with runc


def _log(globals_: dict, level: str, msg: str) -> None:
    """An error line on stderr, and in --log as text or JSON (what containerd reads)."""
    sys.stderr.write(f"capsa-runtime: {msg}\n")
    path = globals_.get("log")
    if not path:
        return
    import time

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if globals_.get("log-format") == "json":
        import json

        line = json.dumps({"level": level, "msg": msg, "time": now})
    else:
        escaped = msg.replace("\\", "\\\\").replace('"', '\\"')
        line = f'time="{now}" level={level} msg="{escaped}"'
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        sys.stderr.write(f"capsa-runtime: cannot write log {path}: {e.strerror}\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    globals_: dict = {}
    try:
        globals_, rest = parse(argv, GLOBALS, stop_at_positional=True)
        if globals_.get("version"):
            from capsa import __version__
            from capsa._core import OCI_VERSION

            print(f"capsa-runtime version {__version__}\nspec: {OCI_VERSION}")
            return 0
        if globals_.get("help") or not rest or rest[0] in ("help", "--help", "-h"):
            sys.stdout.write(USAGE)
            return 0
        if globals_.get("log-format", "text") not in ("text", "json"):
            raise UsageError("--log-format takes text or json")
        command, cmd_args = rest[0], rest[1:]
        if command in NOT_YET:
            raise UsageError(f"{command} is not implemented yet in capsa-runtime")
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; see capsa-runtime --help")
        # ps passes what follows the id to ps(1); the others take options anywhere.
        opts, args = parse(cmd_args, COMMANDS[command], stop_at_positional=command in ("ps", "exec"))
        if command == "ps" and args and args[0].startswith("-"):
            opts, args = parse(args, COMMANDS[command], stop_at_positional=True)
        return getattr(Cli(globals_), command)(opts, args)
    except UsageError as e:
        _log(globals_, "error", str(e))
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one line, never a traceback
        from capsa._core import ContainerError

        msg = str(e) if isinstance(e, (ContainerError, OSError)) else f"{type(e).__name__}: {e}"
        _log(globals_, "error", msg)
        if globals_.get("debug") and not isinstance(e, ContainerError):
            import traceback

            traceback.print_exc()
        return 1


def entry() -> None:
    """The console script: main(), then exit without interpreter teardown,
    which costs a few ms per container start and has nothing left to do."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
