"""A container's json-file log (`<id>-json.log`, written by capsa-monitor,
or by `tee` below for a foreground run): one
`{"log":...,"stream":...,"time":...}` object a line."""

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


PARTIAL = 16 * 1024  # Docker's json-file splits a line longer than this


class Tee:
    """A foreground run's output: the container writes to two pipes (our fds 1
    and 2 while it runs); a thread copies each chunk to the real stdout/stderr
    at once and appends Docker's json-file lines to the log, as the monitor does."""

    def __init__(self, path: Path):
        import threading

        self.saved = (os.dup(1), os.dup(2))
        pipes = [os.pipe(), os.pipe()]
        for fd, (_, w) in zip((1, 2), pipes):
            os.dup2(w, fd)
            os.close(w)
        self.log = open(path, "ab")
        self.thread = threading.Thread(target=self._copy, args=([r for r, _ in pipes],), daemon=True)
        self.thread.start()

    def _copy(self, readers: list[int]) -> None:
        import select
        from capsa.container.lifecycle import _now

        streams = {readers[0]: ("stdout", self.saved[0]), readers[1]: ("stderr", self.saved[1])}
        pending = {r: b"" for r in readers}
        open_fds = list(readers)
        while open_fds:
            ready, _, _ = select.select(open_fds, [], [])
            for r in ready:
                data = os.read(r, 65536)
                name, out = streams[r]
                if not data:
                    open_fds.remove(r)
                    os.close(r)
                    if pending[r]:
                        self._line(pending[r], name, _now())
                    continue
                _write_all(out, data)
                buf = pending[r] + data
                lines = buf.split(b"\n")
                pending[r] = lines.pop()
                now = _now()
                for line in lines:
                    self._line(line + b"\n", name, now)
                while len(pending[r]) >= PARTIAL:
                    self._line(pending[r][:PARTIAL], name, now)
                    pending[r] = pending[r][PARTIAL:]
        self.log.flush()

    def _line(self, data: bytes, stream: str, now: str) -> None:
        for i in range(0, len(data), PARTIAL):
            entry = {"log": data[i:i + PARTIAL].decode("utf-8", "replace"), "stream": stream, "time": now}
            self.log.write(json.dumps(entry, ensure_ascii=False).encode() + b"\n")

    def close(self) -> None:
        """Give fds 1 and 2 back (closing our ends of the pipes) and wait for the copy to drain."""
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
        self.thread.join()
        self.log.close()
        for saved in self.saved:
            os.close(saved)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # our stdout closed (a pipe to `head`): the log still gets everything
        pass
