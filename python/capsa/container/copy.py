"""`capsa cp`: files between the host and a container, running or not.

Nothing here enters the container. The container's root is a descriptor
(capsa-core's copy module, rust/core/src/copy/): `/proc/<init>/root` of a
running or paused container (pinned by a pidfd, so a reused pid cannot hand
over a host process's root; its volumes and tmpfs mounts show), or, for a
created or stopped one, its overlay as a detached mount that no path or
mount namespace shows and that goes when the descriptor is closed. Every
path in it is resolved by the kernel inside that root (openat2
RESOLVE_IN_ROOT), the tar is written and read by the core as a stream
through a pipe, and no process, this one or a child, changes its root or
mount namespace: no user or group name is looked up and no module is
imported while the container's files are in reach, so none of them can run.

What lands in a container belongs to its root user (as with `docker cp`);
what lands on the host is extracted into a fresh directory beside the
destination and renamed into place: no device node or fifo, no setuid bit,
no symlink that is absolute or climbs out of the destination (those are
skipped with a warning), nothing through a symlink.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from capsa.errors import CapsaError

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


@contextlib.contextmanager
def container_root(store, rec, writable: bool = False) -> Iterator[tuple[int, int, int]]:
    """(fd, uid, gid): the container's root as a descriptor, and the host ids of its root user."""
    from capsa import _core
    from capsa.container.lifecycle import overlay_of

    st = store.status(rec)
    fd = None
    if st.live:
        try:
            fd, uid, gid = _core.copy_root_of_running(str(store.run_root), rec.id)
        except _core.CopyError as e:
            now = store.status(rec)
            if now.live:
                raise CapsaError(f"container {rec.name} is {now.status} but its root cannot be opened: {e}") from None
    if fd is None:      # created, exited, or stopped meanwhile
        fd, uid, gid = _core.copy_root_of_overlay(overlay_of(store, rec), writable), 0, 0
    try:
        yield fd, uid, gid
    finally:
        os.close(fd)


def _inner(path: str) -> PurePosixPath:
    return PurePosixPath("/") / path


def read_tar(store, rec, path: str, out_fd: int) -> list[str]:
    """Write a tar of `path` in the container (a file, link or whole dir,
    named by its last component) to out_fd; returns the warnings."""
    from capsa import _core

    inner = _inner(path)
    with container_root(store, rec) as (fd, _, _):
        if _core.copy_lookup(fd, str(inner), False) is None:
            raise CapsaError(f"no such file or directory in container {rec.name}: {inner}")
        return _core.copy_tar_out(fd, str(inner), inner.name or "rootfs", out_fd)


def write_tar(store, rec, into: str, in_fd: int) -> list[str]:
    """Extract the tar read from in_fd into the directory `into` of the
    container; what it adds belongs to the container's root user, as
    `docker cp` does. Returns the warnings."""
    from capsa import _core

    inner = _inner(into)
    with container_root(store, rec, writable=True) as (fd, uid, gid):
        if _core.copy_lookup(fd, str(inner)) != "dir":
            raise CapsaError(f"no such directory in container {rec.name}: {inner}")
        return _core.copy_tar_in(in_fd, fd, str(inner), True, uid, gid)


def copy_out(store, rec, src_path: str, dst_path: str) -> list[str]:
    """`capsa cp CONTAINER:SRC DEST`. DEST an existing dir: SRC lands in it
    under its own name; else SRC becomes DEST (a dir there is replaced by a
    copied dir). Returns the warnings."""
    from capsa import _core

    inner = _inner(src_path)
    shown = f"{rec.name}:{inner}"
    target = Path(dst_path)
    with container_root(store, rec) as (fd, _, _):
        kind = _core.copy_lookup(fd, str(inner), False)
        if kind is None:
            raise CapsaError(f"no such file or directory in container {rec.name}: {inner}")
        name = inner.name
        if not name and target.exists():
            raise CapsaError(f"cannot copy the root of container {rec.name} into an existing {dst_path}: name a new directory")
        final = target / name if name and target.is_dir() else target
        parent = final.parent
        if not parent.is_dir():
            raise CapsaError(f"cannot copy {shown} to {dst_path}: no such directory {parent}")
        if final.is_dir() and not final.is_symlink() and kind != "dir":
            raise CapsaError(f"cannot copy {shown} to {final}: cannot overwrite a directory with a non-directory")
        if kind == "dir" and os.path.lexists(final) and (final.is_symlink() or not final.is_dir()):
            raise CapsaError(f"cannot copy {shown} to {final}: cannot overwrite a non-directory with a directory")
        name = name or final.name or "rootfs"
        with tempfile.TemporaryDirectory(dir=parent, prefix=".capsa-cp-") as tmp:
            tmp_fd = os.open(tmp, _DIR_FLAGS)
            try:
                warnings, skipped = _core.copy_between(fd, str(inner), name, tmp_fd, "", False, 0, 0)
            finally:
                os.close(tmp_fd)
            made = os.path.join(tmp, name)
            if skipped or not os.path.lexists(made):
                raise CapsaError(f"cannot copy {shown}: " + (warnings[0] if warnings else "nothing was copied"))
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(made, final)
    return warnings


def copy_in(store, rec, src_path: str, dst_path: str) -> list[str]:
    """`capsa cp SRC CONTAINER:DEST`. DEST a dir in the container (its
    symlinks followed inside it): SRC lands in it under its own name; else
    SRC becomes DEST. Returns the warnings."""
    from capsa import _core

    raw = src_path.rstrip("/") or "/"
    base = os.path.basename(raw)
    if base in ("", ".", ".."):
        real = os.path.realpath(raw)
        host_dir, name = os.path.dirname(real), os.path.basename(real)
    else:
        host_dir, name = os.path.dirname(raw) or ".", base
    if not name:
        raise CapsaError("cannot copy the host's root directory into a container")
    if not os.path.lexists(os.path.join(host_dir, name)):
        raise CapsaError(f"cannot copy {src_path}: no such file or directory")
    inner = _inner(dst_path)
    with container_root(store, rec, writable=True) as (fd, uid, gid):
        if _core.copy_lookup(fd, str(inner)) == "dir":
            into, arcname = inner, name
        else:
            into, arcname = inner.parent, inner.name
        if _core.copy_lookup(fd, str(into)) != "dir":
            raise CapsaError(f"no such directory in container {rec.name}: {into}")
        host_fd = os.open(host_dir, _DIR_FLAGS)
        try:
            warnings, skipped = _core.copy_between(host_fd, name, arcname, fd, str(into), True, uid, gid)
        finally:
            os.close(host_fd)
    if skipped:
        raise CapsaError(f"cannot copy {src_path}: " + (warnings[0] if warnings else "nothing was copied"))
    return warnings
