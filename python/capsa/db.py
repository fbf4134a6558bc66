"""capsa.db: the one SQLite database under the store root, shared by the image
store and container records. WAL so readers never block the writer; a busy
timeout so concurrent CLIs wait for each other instead of failing. Each module
creates its own tables (CREATE TABLE IF NOT EXISTS) inside a transaction.

The root and the directories capsa keeps in it are the owner's alone (0700,
as Docker's containers dir): images hold setuid binaries and devices, a
container's upper dir whatever its root user wrote, so no other host user may
reach into them. Opening the database makes them so, existing ones included;
what is below them (a layer's root dir, a container's upper dir) keeps the
mode the image or container gave it, as the container sees that mode as its
own `/`."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/capsa")
PRIVATE = 0o700
# Made 0700 under the root: the image store's, the containers' and the runtime
# state's (<root>/run, which the core fills).
PRIVATE_DIRS = ("blobs", "blobs/sha256", "layers", "tmp", "locks", "containers", "volumes", "run")


def store_root(root: str | os.PathLike | None = None) -> Path:
    """--root, else $CAPSA_ROOT, else /var/lib/capsa."""
    if root:
        return Path(root)
    return Path(os.environ.get("CAPSA_ROOT") or DEFAULT_ROOT)


def private_dir(path: Path) -> None:
    """`path` as a directory of mode 0700: made so, or an existing one's mode
    fixed (a root made by an older capsa or by hand with 0755)."""
    try:
        os.mkdir(path, PRIVATE)     # the umask can only take bits away
        return
    except FileExistsError:
        pass
    st = os.stat(path)          # a root may be a symlink to the real dir
    if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != PRIVATE:
        try:
            os.chmod(path, PRIVATE)
        except PermissionError:     # not ours (another user's root): leave it as it is
            pass


def prepare_root(root: Path) -> None:
    """The store root and its directories, each 0700 (see the module's doc)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    private_dir(root)
    for name in PRIVATE_DIRS:
        private_dir(root / name)


def connect(root: Path) -> sqlite3.Connection:
    prepare_root(root)
    # not tied to its thread: a pull runs on a worker while the main thread waits
    conn = sqlite3.connect(root / "capsa.db", timeout=30, isolation_level=None, check_same_thread=False)
    _switch_to_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Switching a new database to WAL fails at once with "database is
    locked" (the busy timeout does not apply) while another process does the
    same: retry for a while."""
    for attempt in range(200):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == 199:
                raise
            time.sleep(0.05)
