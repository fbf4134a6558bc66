"""capsa: the Docker-style command line (typer).

Start-up cost is part of every `capsa run`, so this package imports only typer
and the standard library; command modules import httpx, rich and the store
inside the commands that need them. Each command group is a module that adds
its commands to `app` (top-level, as Docker names them) and, where Docker has
one, to its management group (`capsa image ls`); registering a module is the
one line in COMMAND_MODULES.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from capsa.errors import CapsaError

_SETTINGS = dict(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,          # plain click help: rich costs ~100 ms per --help
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app = typer.Typer(name="capsa", help="A fast, daemonless container engine.", **_SETTINGS)


def group(name: str, help: str) -> typer.Typer:
    """A management command group (`capsa image ...`), created once and shared
    by the modules that add commands to it."""
    if name not in _groups:
        _groups[name] = typer.Typer(name=name, help=help, **_SETTINGS)
        app.add_typer(_groups[name], name=name)
    return _groups[name]


_groups: dict[str, typer.Typer] = {}
_root: Path | None = None


@app.callback()
def _global_options(
    root: Path = typer.Option(None, "--root", help="Store root (default $CAPSA_ROOT or /var/lib/capsa)",
                              show_default=False),
) -> None:
    global _root
    _root = root


def root() -> Path:
    """The store root chosen by --root, else $CAPSA_ROOT, else /var/lib/capsa."""
    from capsa.db import store_root
    return store_root(_root)


def open_store():
    """The image store at root(), opened (and repaired if a crash left debris)."""
    from capsa.image.store import Store
    return Store.open(root())


def fail(message: str, code: int = 1) -> None:
    """Raise a user error from a command."""
    error = CapsaError(message)
    error.exit_code = code
    raise error


# One line per command module.
COMMAND_MODULES = (
    "capsa.cli.images",
)


def _register() -> None:
    import importlib
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every CapsaError is one line on stderr and its exit
    code; Ctrl-C is exit 130; never a traceback for the user's mistakes."""
    try:    # typer 0.28 carries its own click
        from typer._click.exceptions import ClickException
    except ImportError:   # pragma: no cover - a typer that depends on click
        from click import ClickException

    _register()
    code = 0
    try:
        result = app(args=argv, prog_name="capsa", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except CapsaError as e:
        print(f"capsa: error: {e}", file=sys.stderr)
        code = e.exit_code
    except typer.Abort:
        code = 1
    except KeyboardInterrupt:
        code = 130
    except typer.Exit as e:
        code = e.exit_code
    except ClickException as e:
        e.show()
        code = e.exit_code
    except BrokenPipeError:
        code = 141
        sys.stdout = None   # nothing more to flush into a closed pipe
    except OSError as e:
        # Disk full and friends surface as OSError from deep inside a copy.
        import errno
        what = (e.strerror or str(e)).lower()
        if e.filename:
            what += f" writing {e.filename}" if e.errno in (errno.ENOSPC, errno.EDQUOT) else f": {e.filename}"
        print(f"capsa: error: {what}", file=sys.stderr)
        code = 1
    _exit(code)


def _exit(code: int) -> None:
    # Flush, then skip interpreter teardown (module GC costs milliseconds).
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
