"""capsa.db: the one SQLite database under the store root, shared by the image
store and container records. WAL so readers never block the writer; a busy
timeout so concurrent CLIs wait for each other instead of failing. Each module
creates its own tables (CREATE TABLE IF NOT EXISTS) inside a transaction."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/capsa")


def store_root(root: str | os.PathLike | None = None) -> Path:
    """--root, else $CAPSA_ROOT, else /var/lib/capsa."""
    if root:
        return Path(root)
    return Path(os.environ.get("CAPSA_ROOT") or DEFAULT_ROOT)


def connect(root: Path) -> sqlite3.Connection:
    root.mkdir(parents=True, exist_ok=True)
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
