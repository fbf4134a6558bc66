"""Progress of pulls, pushes and loads, as Docker shows it: on a terminal a
line per layer with a bar and sizes (rich, imported only then); otherwise one
plain line per event (`a1b2c3d4e5f6: Pull complete`); nothing when quiet.

Callers report from any thread: `message(text)` for a line of its own,
`layer(id, status)` for a status change, `bytes(id, done, total)` for a
download or upload going on."""

from __future__ import annotations

import sys
import threading


class Progress:
    """The quiet one: reports go nowhere."""

    def message(self, text: str) -> None:
        pass

    def layer(self, layer_id: str, status: str) -> None:
        pass

    def bytes(self, layer_id: str, done: int, total: int | None) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LineProgress(Progress):
    """One line per event, for logs and pipes."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def message(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def layer(self, layer_id: str, status: str) -> None:
        self.message(f"{layer_id}: {status}")


class TerminalProgress(Progress):
    """A rich live display: a row per layer, bars for bytes moving."""

    def __init__(self, stream=None):
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress as Bars, TextColumn

        self.console = Console(file=stream or sys.stdout)
        self.bars = Bars(TextColumn("{task.fields[layer]}: {task.description:<18}"), BarColumn(bar_width=40),
                         DownloadColumn(), console=self.console, transient=False, refresh_per_second=8)
        self.tasks: dict[str, int] = {}
        self._lock = threading.Lock()
        self.bars.start()

    def _task(self, layer_id: str) -> int:
        with self._lock:
            if layer_id not in self.tasks:
                self.tasks[layer_id] = self.bars.add_task("Waiting", layer=layer_id, total=None)
            return self.tasks[layer_id]

    def message(self, text: str) -> None:
        self.bars.console.print(text, highlight=False, markup=False)

    def layer(self, layer_id: str, status: str) -> None:
        self.bars.update(self._task(layer_id), description=status)

    def bytes(self, layer_id: str, done: int, total: int | None) -> None:
        self.bars.update(self._task(layer_id), completed=done, total=total)

    def close(self) -> None:
        self.bars.stop()


def for_output(quiet: bool = False, stream=None) -> Progress:
    """The right reporter for where output goes."""
    if quiet:
        return Progress()
    stream = stream or sys.stdout
    if stream.isatty():
        return TerminalProgress(stream)
    return LineProgress(stream)


def human_size(n: float) -> str:
    """Docker's sizes (go-units HumanSize: decimal, 3 significant digits): 4.26MB."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.3g}{units[i]}"


def human_duration(seconds: float) -> str:
    """Docker's "2 months" (go-units HumanDuration)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"
