"""`capsa cp`: files between the host and a container, running or not.

The container side is read or written by a forked child whose root is the
container's own: `/proc/<init>/root` of a running (or paused) container,
which also shows its volumes and tmpfs mounts, or, for a created or stopped
one, its overlay root mounted in a private mount namespace (the host never
sees that mount; it goes when the child exits). Inside that root the
container's symlinks, absolute ones included, cannot lead to the host's
files, and the image needs no tar or shell. What lands on the host is
extracted by the caller with tarfile's `tar` filter.
"""

from __future__ import annotations

import os
import tarfile
from typing import Callable, BinaryIO

from capsa.errors import CapsaError


def read_tar(store, rec, path: str) -> bytes:
    """A tar of `path` in the container (a file, link or whole dir), named by its last component."""
    def job(_inp: BinaryIO, out: BinaryIO) -> None:
        if not os.path.lexists(path):
            raise CapsaError(f"no such file or directory in container {rec.name}: {path}")
        with tarfile.open(fileobj=out, mode="w|") as tf:
            tf.add(path, arcname=os.path.basename(path.rstrip("/")) or ".")

    return _in_root(store, rec, job)


def is_dir(store, rec, path: str) -> bool:
    def job(_inp: BinaryIO, out: BinaryIO) -> None:
        out.write(b"1" if os.path.isdir(path) else b"0")

    return _in_root(store, rec, job) == b"1"


def write_tar(store, rec, into: str, data: bytes) -> None:
    """Extract a tar into the dir `into` of the container; what it adds
    belongs to the container's root user, as `docker cp` does."""
    def owned_by_root(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        return tarfile.tar_filter(member, dest).replace(uid=0, gid=0, uname="root", gname="root")

    def job(inp: BinaryIO, _out: BinaryIO) -> None:
        if not os.path.isdir(into):
            raise CapsaError(f"no such directory in container {rec.name}: {into}")
        with tarfile.open(fileobj=inp, mode="r|") as tf:
            tf.extractall(into, filter=owned_by_root)

    _in_root(store, rec, job, data)


def _enter(store, rec) -> None:
    """Make this (forked, single-threaded) process's root the container's."""
    st = store.status(rec)
    if st.live and st.pid:
        os.chroot(f"/proc/{st.pid}/root")
        os.chdir("/")
        return
    from capsa import _core
    from capsa.container.lifecycle import overlay_of

    d = store.dir(rec.id)
    _core.enter_overlay_root(overlay_of(store, rec), str(d / "lower-links"), str(d / "merged"))


def _in_root(store, rec, job: Callable[[BinaryIO, BinaryIO], None], data: bytes = b"") -> bytes:
    """Run job(input, output) in a child inside the container's root; its output.
    A failure in the child comes back as a CapsaError with its message."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            _enter(store, rec)
            with os.fdopen(in_r, "rb") as inp, os.fdopen(out_w, "wb") as out:
                job(inp, out)
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent, one line
            from capsa._core import ContainerError

            msg = str(e) if isinstance(e, (CapsaError, OSError, ContainerError)) else f"{type(e).__name__}: {e}"
            os.write(err_w, msg.encode(errors="replace"))
        finally:
            os._exit(code)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    try:
        # The jobs either read their input or write output, never both at
        # once: one pipe at a time cannot deadlock.
        with os.fdopen(in_w, "wb") as inp:
            try:
                inp.write(data)
            except BrokenPipeError:
                pass
        with os.fdopen(out_r, "rb") as out:
            result = out.read()
        with os.fdopen(err_r, "rb") as err:
            message = err.read().decode(errors="replace").strip()
    finally:
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise CapsaError(message or f"copy in container {rec.name} failed (status {status})")
    return result
