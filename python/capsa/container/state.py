"""Container records. What a container *is* (id, name, image, options) is a
row in capsa.db, written once at create (and by rename/rm). What it is
*doing* comes from the live system: `containers/<id>/status.json`, written
atomically by its supervisor (the capsa-monitor of a detached container, or
the CLI of a foreground run), checked against that supervisor still being
alive, and the runtime state of its init. So a killed monitor or a reboot
shows the truth (exited, exit code unknown), never a stale "running"."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from capsa import db
from capsa.errors import CapsaError, Conflict, NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL,
    image_name TEXT NOT NULL,
    created TEXT NOT NULL,
    options TEXT NOT NULL,
    argv TEXT NOT NULL,
    layers TEXT NOT NULL,
    mounts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_users (  -- shared with the image store: rmi refuses an image in use
    image_id TEXT NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY (image_id, user)
);
"""


class Status:
    """What a container is doing: created | running | paused | restarting | exited."""

    def __init__(self, status: str = "created", pid: int = 0, exit_code: int | None = None, oom_killed: bool = False,
                 started_at: str = "", finished_at: str = "", restart_count: int = 0, error: str = ""):
        self.status, self.pid, self.exit_code, self.oom_killed = status, pid, exit_code, oom_killed
        self.started_at, self.finished_at, self.restart_count, self.error = started_at, finished_at, restart_count, error

    @property
    def live(self) -> bool:
        """Its processes exist (running, paused, or between restarts)."""
        return self.status in ("running", "paused", "restarting")

    def __repr__(self) -> str:
        return f"Status({self.__dict__})"


class Record:
    """What a container is: its row in capsa.db."""

    def __init__(self, id: str, name: str, image_id: str, image_name: str, created: str, options: dict,
                 argv: list[str], layers: list[str], mounts: list[dict] | None = None):
        self.id, self.name, self.image_id, self.image_name, self.created = id, name, image_id, image_name, created
        self.options, self.argv, self.layers, self.mounts = options, argv, layers, mounts or []


class Store:
    """The container table and dirs under one capsa root."""

    def __init__(self, root: Path):
        self.root = root
        self.containers_dir = root / "containers"
        self.run_root = root / "run"
        self.volumes_dir = root / "volumes"
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = db.connect(self.root)
            self._conn.executescript(SCHEMA)
        return self._conn

    def dir(self, cid: str) -> Path:
        return self.containers_dir / cid

    # ---- records ----------------------------------------------------------

    def insert(self, rec: Record) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO containers (id, name, image_id, image_name, created, options, argv, layers, mounts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.id, rec.name, rec.image_id, rec.image_name, rec.created, json.dumps(rec.options),
                 json.dumps(rec.argv), json.dumps(rec.layers), json.dumps(rec.mounts)))
            self.conn.execute("INSERT OR IGNORE INTO image_users VALUES (?, ?)", (rec.image_id, rec.id))
            self.conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            self.conn.execute("ROLLBACK")
            raise Conflict(f'the container name "/{rec.name}" is already in use: remove that container or choose another name') from None

    def delete(self, cid: str) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM containers WHERE id = ?", (cid,))
            self.conn.execute("DELETE FROM image_users WHERE user = ?", (cid,))

    def rename(self, cid: str, name: str) -> None:
        try:
            self.conn.execute("UPDATE containers SET name = ? WHERE id = ?", (name, cid))
        except sqlite3.IntegrityError:
            raise Conflict(f'the container name "/{name}" is already in use') from None

    @staticmethod
    def _record(row) -> Record:
        return Record(row["id"], row["name"], row["image_id"], row["image_name"], row["created"],
                      json.loads(row["options"]), json.loads(row["argv"]), json.loads(row["layers"]), json.loads(row["mounts"]))

    def all(self) -> list[Record]:
        rows = self.conn.execute("SELECT * FROM containers ORDER BY created DESC").fetchall()
        return [self._record(r) for r in rows]

    def find(self, ref: str) -> Record:
        """By full id, name, or unique id prefix (as Docker accepts them)."""
        ref = ref.lstrip("/")
        row = self.conn.execute("SELECT * FROM containers WHERE id = ? OR name = ?", (ref, ref)).fetchone()
        if row is None and ref and all(c in "0123456789abcdef" for c in ref):
            rows = self.conn.execute("SELECT * FROM containers WHERE id LIKE ?", (ref + "%",)).fetchall()
            if len(rows) > 1:
                raise CapsaError(f"container id prefix {ref} is ambiguous: give more characters")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no such container: {ref}")
        return self._record(row)

    # ---- live status ------------------------------------------------------

    def write_status(self, cid: str, **fields) -> None:
        d = self.dir(cid)
        tmp = d / ".status.json.tmp"
        try:
            tmp.write_text(json.dumps(fields))
            os.replace(tmp, d / "status.json")
        except FileNotFoundError:
            pass  # removed meanwhile (rm -f from another shell): nothing left to record

    def status(self, rec: Record) -> Status:
        path = self.dir(rec.id) / "status.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raw = None
        if raw is None:
            return Status("created")
        st = Status(status=raw.get("status", "exited"), pid=raw.get("pid") or 0, exit_code=raw.get("exit_code"),
                    oom_killed=bool(raw.get("oom_killed")), started_at=raw.get("started_at", ""),
                    finished_at=raw.get("finished_at", ""), restart_count=raw.get("restart_count", 0),
                    error=raw.get("error", ""))
        if st.status in ("running", "restarting"):
            supervised = _alive(raw.get("monitor_pid", 0), raw.get("monitor_start", 0))
            init = self.init_state(rec.id)
            if init is not None and init.get("status") in ("running", "created", "paused"):
                st.pid = init.get("pid", st.pid)
                if init.get("status") == "paused":
                    st.status = "paused"
                elif st.status == "restarting":
                    st.status = "running"
            elif not supervised:
                # The supervisor died (killed, or the host rebooted) and the container is gone: say so.
                st.status, st.exit_code, st.pid = "exited", None, 0
        return st

    def init_state(self, cid: str) -> dict | None:
        """The runtime state of the container's init (capsa-core's state.json), or None."""
        from capsa import _core
        try:
            return json.loads(_core.state(str(self.run_root), cid))
        except _core.ContainerError:
            return None


def _alive(pid: int, start: int) -> bool:
    """Whether pid is still the process that wrote the status (not a reused pid)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[0] != "Z" and (not start or fields[19] == str(start))
