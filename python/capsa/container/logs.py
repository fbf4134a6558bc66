"""Reading a container's json-file log (`<id>-json.log`, written by
capsa-monitor): one `{"log":...,"stream":...,"time":...}` object a line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from capsa.errors import CapsaError


def log_path(container_dir: Path, cid: str) -> Path:
    return container_dir / f"{cid}-json.log"


def _entries(f) -> Iterator[dict]:
    for line in f:
        if not line.endswith("\n"):
            # A line still being written: rewind so that follow picks it up whole.
            f.seek(f.tell() - len(line.encode()))
            return
        try:
            yield json.loads(line)
        except ValueError:
            continue


def parse_since(text: str | None) -> float | None:
    """--since: a Unix timestamp, an RFC 3339 time, or a duration like 10m, 2h, 30s."""
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    from capsa.container.lifecycle import parse_time
    t = parse_time(text)
    if t is None:
        raise CapsaError(f"invalid --since {text!r}: use a duration (10m), a Unix time or an RFC 3339 time")
    return t


def show(path: Path, *, follow: bool = False, tail: int | None = None, timestamps: bool = False,
         since: float | None = None, running: Callable[[], bool] = lambda: False) -> None:
    """Write the log to our stdout/stderr as the container wrote it."""
    from capsa.container.lifecycle import parse_time

    out, err = sys.stdout.buffer, sys.stderr.buffer

    def emit(entries):
        for e in entries:
            if since is not None and (parse_time(e.get("time", "")) or 0) < since:
                continue
            data = e.get("log", "").encode()
            if timestamps:
                data = e.get("time", "").encode() + b" " + data
            (err if e.get("stream") == "stderr" else out).write(data)
        out.flush()
        err.flush()

    try:
        f = open(path, "r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if not follow:
            return
        f = None
    with f or open(os.devnull) as fh:
        if f is None:
            return
        entries = list(_entries(fh))
        if tail is not None and tail >= 0:
            entries = entries[-tail:] if tail else []
        emit(entries)
        while follow:
            new = list(_entries(fh))
            if new:
                emit(new)
                continue
            if not running():
                emit(_entries(fh))
                return
            time.sleep(0.1)
