"""`capsa run -t`: the container gets a real pty. Its init makes the pty and
sends the master over a console socket (runc's protocol); we relay between
our terminal (raw mode) and the master, copy our window size on SIGWINCH,
pass on SIGTERM/SIGHUP, and return the container's exit code."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import termios
import threading
import tty

from capsa.container import lifecycle
from capsa.errors import CapsaError


def _copy_winsize(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


class ConsoleSocket:
    """A listening console socket in a private temp dir; `master()` waits for the pty master."""

    def __init__(self):
        self._dir = tempfile.mkdtemp(prefix="capsa-console-")
        self.path = os.path.join(self._dir, "console.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(1)
        self._listener.settimeout(30)
        self._got: dict = {}
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self):
        try:
            conn, _ = self._listener.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
                self._got["master"] = fds[0]
        except OSError as e:
            self._got["error"] = e

    def close(self) -> None:
        self._listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.rmdir(self._dir)

    def master(self) -> int:
        self._thread.join(30)
        if "master" not in self._got:
            raise CapsaError(f"no terminal from the container: {self._got.get('error')}")
        return self._got["master"]


def run(store, rec) -> int:
    """`capsa run -t`: start in this process with a pty, relay until the container exits."""
    from capsa import _core

    console = ConsoleSocket()
    me = os.getpid()
    store.write_status(rec.id, status="running", pid=0, started_at=lifecycle._now(), monitor_pid=me,
                       monitor_start=lifecycle._proc_start(me))
    try:
        _core.run(str(store.run_root), rec.id, str(store.dir(rec.id)), console_socket=console.path, detach=True,
                  overlay=lifecycle.overlay_of(store, rec))
        master = console.master()
    except _core.ContainerError as e:
        store.write_status(rec.id, status="exited", exit_code=lifecycle.exit_code_of(e), finished_at=lifecycle._now(), error=str(e))
        raise lifecycle.StartError(e) from None
    finally:
        console.close()
    pid = (store.init_state(rec.id) or {}).get("pid", 0)
    try:
        code = _relay(master, pid, bool(rec.options.get("interactive")))
    finally:
        os.close(master)
        try:
            _core.delete(str(store.run_root), rec.id, True)
        except _core.ContainerError:
            pass
    store.write_status(rec.id, status="exited", exit_code=code, finished_at=lifecycle._now())
    return code


def exec_(store, rec, *, interactive: bool, **exec_args) -> int:
    """`capsa exec -t`: the process gets a pty; relay until it exits."""
    from capsa import _core

    console = ConsoleSocket()
    try:
        pid = _core.exec(str(store.run_root), rec.id, tty=True, console_socket=console.path, detach=True, **exec_args)
        master = console.master()
    except _core.ContainerError as e:
        raise lifecycle.StartError(e) from None
    finally:
        console.close()
    try:
        return _relay(master, pid, interactive)
    finally:
        os.close(master)


def _relay(master: int, pid: int, with_stdin: bool) -> int:
    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    interactive = with_stdin and os.isatty(stdin)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    handlers = {}

    def forward(signum, _frame):
        if signum == signal.SIGWINCH:
            _copy_winsize(stdin, master)
        elif signum != signal.SIGCHLD:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for s in (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGINT):
        handlers[s] = signal.signal(s, forward)
    saved = termios.tcgetattr(stdin) if interactive else None
    status = None
    try:
        if interactive:
            _copy_winsize(stdin, master)
            tty.setraw(stdin)
        inputs = [master, wake_r] + ([stdin] if with_stdin else [])
        master_open = True
        while True:
            if status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
            if status is not None and not master_open:
                break
            r, _, _ = select.select(inputs, [], [], 0.2 if status is None else 0.05)
            if status is not None and not r:
                break
            if wake_r in r:
                os.read(wake_r, 512)
            if master in r:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    data = b""
                if data:
                    os.write(stdout, data)
                else:
                    master_open = False
                    inputs.remove(master)
            if stdin in r:
                data = os.read(stdin, 65536)
                if data:
                    os.write(master, data)
                else:
                    inputs.remove(stdin)
                    os.write(master, b"\x04")  # EOF on our stdin: ^D to the container's terminal
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        for s, hnd in handlers.items():
            signal.signal(s, hnd)
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
