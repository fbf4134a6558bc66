"""Ctrl-C for long registry work (pull, push).

Python raises KeyboardInterrupt at any bytecode of the main thread, inside a
library's lock handling too: httpcore's pool lock or a concurrent.futures
condition is then left taken, and the cleanup that follows waits on it
forever (a pull hung so). So the work runs on a worker thread and the main
thread only waits, on a bare lock the worker releases when done (Thread.join,
interrupted, takes a live thread for stopped). On Ctrl-C the main thread sets
a Cancel, which the work checks at each chunk and step: it stops by raising
KeyboardInterrupt itself, where that is safe, and cleans up as for any error.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")

# After Ctrl-C, how long the work may take to stop and clean up; a transfer
# stalled in a read notices only when the read returns.
GRACE = 5.0


class Cancel(threading.Event):
    """Set on Ctrl-C; `check` (also usable as a progress callback) raises
    KeyboardInterrupt once it is."""

    def check(self, *_progress) -> None:
        if self.is_set():
            raise KeyboardInterrupt

    def checking(self, report: Callable[[int, int | None], None]) -> Callable[[int, int | None], None]:
        """A transfer's progress callback that checks first, then reports."""
        def checked(done: int, total: int | None) -> None:
            self.check()
            report(done, total)
        return checked


def on_worker(work: Callable[[Cancel], T], name: str) -> T:
    """work(cancel) on a worker thread when called from the main thread (on
    other threads no Ctrl-C arrives: it runs right there)."""
    cancel = Cancel()
    if threading.current_thread() is not threading.main_thread():
        return work(cancel)
    outcome: dict = {}
    finished = threading.Lock()
    finished.acquire()

    def run() -> None:
        try:
            outcome["result"] = work(cancel)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = e
        finally:
            finished.release()

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        finished.acquire()
    except KeyboardInterrupt:
        cancel.set()
        if not outcome:             # still running: let it stop and clean up
            finished.acquire(timeout=GRACE)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
