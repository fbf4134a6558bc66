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
"""

# Each command's options: name -> (aliases, takes a value).
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
}
GLOBALS = {
    "root": ((), True), "log": ((), True), "log-format": ((), True), "debug": ((), False),
    "systemd-cgroup": ((), False), "version": (("-v",), False), "help": (("-h",), False),
    "rootless": ((), True), "criu": ((), True),
}
NOT_YET = {"exec", "pause", "resume", "update", "events", "checkpoint", "restore"}


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
        opts, args = parse(cmd_args, COMMANDS[command], stop_at_positional=command == "ps")
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
