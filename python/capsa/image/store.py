"""The image store under the store root:

    blobs/sha256/<hex>     manifests, configs, layer blobs (OCI-layout compatible)
    layers/<chain-id hex>/ one extracted directory per layer: the overlay lowers
    tmp/                   scratch space of writers (swept when no writer runs)
    locks/                 flock files
    capsa.db               images, tags, layers (with reference counts)

Crash safety comes from the order of writes: a blob or layer directory
appears under its final name only when complete and verified (temp + rename),
and an image appears only when its records commit in one transaction, after
every file it names is in place. So the debris a killed writer can leave is
temp files and directories, and layer directories no record names; both are
swept by the next command that finds no writer running.

Concurrency: every writer (pull, load, import) holds `locks/writers.lock`
shared for its whole run; garbage collection (sweep, rmi, prune) takes it
exclusively and without waiting, and simply skips its file work while a
writer runs (the records already say what is garbage; the next command
collects it). Writers serialise per layer on `locks/layer-<hex>.lock`, so two
pulls of one image extract each layer once; blob downloads are serialised per
blob by the registry client.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from capsa import db
from capsa.errors import BadInput, CapsaError, Conflict, NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,                 -- sha256:<hex of the config>
    manifest_digest TEXT NOT NULL,
    manifest_media_type TEXT NOT NULL,
    created TEXT,                        -- the config's "created"
    size INTEGER NOT NULL,               -- bytes of the extracted layers
    config TEXT NOT NULL,                -- the config JSON as stored
    added REAL NOT NULL                  -- when this store got it (unix time)
);
CREATE TABLE IF NOT EXISTS layers (
    chain_id TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    blob_digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    refcount INTEGER NOT NULL DEFAULT 0  -- images whose rootfs has this layer
);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    chain_id TEXT NOT NULL REFERENCES layers(chain_id),
    PRIMARY KEY (image_id, position)
);
CREATE TABLE IF NOT EXISTS image_blobs (  -- what push and save need: manifest, config, layer blobs
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
);
CREATE TABLE IF NOT EXISTS repo_digests (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    name TEXT NOT NULL,                  -- registry/repository@sha256:...
    PRIMARY KEY (image_id, name)
);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,               -- registry/repository:tag
    image_id TEXT NOT NULL REFERENCES images(id)
);
CREATE TABLE IF NOT EXISTS image_users (  -- filled by containers: an image in use is not removed
    image_id TEXT NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY (image_id, user)
);
"""

_HEX = re.compile(r"[0-9a-f]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: the first layer's diff ID, then sha256("<parent chain> <diff>")."""
    chains: list[str] = []
    for diff in diff_ids:
        chains.append(diff if not chains else sha256_digest(f"{chains[-1]} {diff}".encode()))
    return chains


def hex_of(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    if algorithm != "sha256" or not _HEX64.fullmatch(hex_part):
        raise CapsaError(f"unsupported or malformed digest {digest!r}")
    return hex_part


@contextlib.contextmanager
def naming(path) -> Iterator[None]:
    """OSErrors from writes inside carry `path` (a bare ENOSPC names no file)."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


@dataclass
class Image:
    id: str                                  # sha256:<config digest hex>
    config: dict                             # the parsed image config
    layer_dirs: list[Path]                   # bottom layer first
    repo_tags: list[str]                     # familiar names: busybox:latest
    repo_digests: list[str]
    size: int
    created: str | None
    manifest_digest: str
    manifest_media_type: str
    chain_ids: list[str] = field(default_factory=list)
    added: float = 0.0

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))


@dataclass
class LayerRecord:
    """A layer the caller has put in place (see Store.ensure_layer)."""
    chain_id: str
    diff_id: str
    blob_digest: str
    size: int


def _familiar(name: str) -> str:
    from capsa.image.reference import Reference
    return Reference.parse(name).familiar


class Store:
    def __init__(self, root: Path, conn):
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.layers = root / "layers"
        self.tmp = root / "tmp"
        self.locks = root / "locks"
        self.db = conn
        self._writer_fd: int | None = None
        self._writer_depth = 0
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, root: Path | None = None) -> Store:
        root = db.store_root(root)
        conn = db.connect(root)         # makes the root and its dirs, 0700
        conn.executescript(SCHEMA)
        store = cls(root, conn)
        store.sweep()
        return store

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ----------------------------------------------------------------- locks

    def _lock_fd(self, name: str) -> int:
        return os.open(self.locks / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held by pull, load and import for their whole run: no garbage
        collection while a writer may be using unreferenced files."""
        with self._mutex:
            if self._writer_depth == 0:
                fd = self._lock_fd("writers")
                fcntl.flock(fd, fcntl.LOCK_SH)
                self._writer_fd = fd
            self._writer_depth += 1
        try:
            yield
        finally:
            with self._mutex:
                self._writer_depth -= 1
                if self._writer_depth == 0 and self._writer_fd is not None:
                    os.close(self._writer_fd)
                    self._writer_fd = None

    @contextlib.contextmanager
    def _collecting(self) -> Iterator[bool]:
        """Yields True with the writers lock held exclusively, or False if a
        writer runs (then the caller leaves the files for later)."""
        if self._writer_depth:
            yield False
            return
        fd = self._lock_fd("writers")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        fd = self._lock_fd(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- blobs

    def blob_path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def temp_path(self, hint: str = "") -> Path:
        return self.tmp / f"{hint}{uuid.uuid4().hex}"

    def write_blob(self, data: bytes) -> str:
        """Store bytes under their digest (atomically); returns the digest."""
        digest = sha256_digest(data)
        dest = self.blob_path(digest)
        if not dest.exists():
            tmp = self.temp_path("blob-")
            with naming(tmp), open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        return digest

    def adopt_blob(self, path: Path, digest: str) -> None:
        """Move a verified file (in tmp/) into blobs/ under its digest."""
        dest = self.blob_path(digest)
        if dest.exists():
            path.unlink(missing_ok=True)
        else:
            os.replace(path, dest)

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the store at {self.blobs}") from None

    # ---------------------------------------------------------------- layers

    def layer_dir(self, chain_id: str) -> Path:
        return self.layers / hex_of(chain_id)

    def layer_present(self, chain_id: str) -> bool:
        return self.layer_dir(chain_id).is_dir()

    def ensure_layer(self, chain_id: str, diff_id: str, blob: Path,
                     extract: Callable[[str, str], dict] | None = None) -> LayerRecord:
        """Extract `blob` into layers/<chain-id> unless it is there, verifying
        that its uncompressed digest is `diff_id`, and record it (refcount 0
        until an image commits). Safe to call from several threads and
        processes for one layer: it is extracted once. Call inside writing()."""
        dest = self.layer_dir(chain_id)
        conn = db.connect(self.root)          # per call: this runs on worker threads
        try:
            record = _layer_record(conn, chain_id)
            if record and dest.is_dir():
                return record
            if extract is None:
                from capsa._core import extract_layer as extract
            with self._locked("layer-" + hex_of(chain_id)):
                record = _layer_record(conn, chain_id)
                if record and dest.is_dir():
                    return record
                if dest.exists():           # a killed writer's, never recorded
                    _remove_tree(dest, self.tmp)
                # Extracted under a name that is not a layer's, verified, then
                # renamed: layers/<hex> only ever names a complete, verified layer.
                staging = self.layers / f".{dest.name}.unverified"
                if staging.exists():
                    _remove_tree(staging, self.tmp)
                result = extract(str(blob), str(staging))
                if result["diff_id"] != diff_id:
                    _remove_tree(staging, self.tmp)
                    raise DigestError(f"layer {blob.name[:12]} unpacks to {result['diff_id']}, but the "
                                      f"image config says {diff_id}: the image is corrupt; nothing was stored")
                os.rename(staging, dest)
                record = LayerRecord(chain_id, diff_id, result.get("digest") or "", int(result.get("bytes", 0)))
                conn.execute(
                    "INSERT INTO layers (chain_id, diff_id, blob_digest, size) VALUES (?,?,?,?) "
                    "ON CONFLICT (chain_id) DO UPDATE SET diff_id=excluded.diff_id, "
                    "blob_digest=excluded.blob_digest, size=excluded.size",
                    (record.chain_id, record.diff_id, record.blob_digest, record.size))
                return record
        finally:
            conn.close()

    def layer_size(self, chain_id: str) -> int | None:
        row = self.db.execute("SELECT size FROM layers WHERE chain_id=?", (chain_id,)).fetchone()
        return row["size"] if row else None

    # ---------------------------------------------------------------- images

    def commit_image(self, *, config: bytes, manifest: bytes, manifest_media_type: str,
                     layers: list[LayerRecord], layer_blobs: list[str],
                     tags: list[str] = (), repo_digests: list[str] = ()) -> Image:
        """Record an image whose blobs and layer dirs are all in place, in one
        transaction; tags move to it from whatever image they named before.
        The store's gate: a manifest or config that breaks its format is
        never recorded (callers check theirs earlier, before storing files)."""
        from capsa.image import schema
        image_id = sha256_digest(config)
        cfg = schema.config(config, f"the image config {image_id}")
        schema.manifest(manifest, f"the manifest of image {short_id(image_id)}")
        diff_ids = cfg["rootfs"]["diff_ids"]
        chains = chain_ids(diff_ids)
        if [r.chain_id for r in layers] != chains:
            raise CapsaError(f"image {short_id(image_id)}: layers do not match the config's rootfs")
        for c in chains:
            if not self.layer_present(c):
                raise CapsaError(f"image {short_id(image_id)}: layer {hex_of(c)[:12]} is not in the store")
        manifest_digest = sha256_digest(manifest)
        for digest in (image_id, manifest_digest, *layer_blobs):
            if not self.has_blob(digest):
                raise CapsaError(f"image {short_id(image_id)}: blob {digest} is not in the store")
        with self.transaction() as tx:
            for r in layers:
                tx.execute("INSERT OR IGNORE INTO layers (chain_id, diff_id, blob_digest, size) VALUES (?,?,?,?)",
                           (r.chain_id, r.diff_id, r.blob_digest, r.size))
            new = tx.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone() is None
            if new:
                size = sum(tx.execute("SELECT size FROM layers WHERE chain_id=?", (c,)).fetchone()["size"]
                           for c in chains)
                tx.execute("INSERT INTO images (id, manifest_digest, manifest_media_type, created, size, config, added)"
                           " VALUES (?,?,?,?,?,?,?)",
                           (image_id, manifest_digest, manifest_media_type, cfg.get("created"), size,
                            config.decode(), time.time()))
                for position, c in enumerate(chains):
                    tx.execute("INSERT INTO image_layers VALUES (?,?,?)", (image_id, position, c))
                    tx.execute("UPDATE layers SET refcount = refcount + 1 WHERE chain_id=?", (c,))
                for digest in {image_id, manifest_digest, *layer_blobs}:
                    tx.execute("INSERT OR IGNORE INTO image_blobs VALUES (?,?)", (image_id, digest))
            for name in repo_digests:
                tx.execute("INSERT OR IGNORE INTO repo_digests VALUES (?,?)", (image_id, name))
            for name in tags:
                tx.execute("INSERT OR REPLACE INTO tags VALUES (?,?)", (name, image_id))
        return self._image(image_id)

    def _image(self, image_id: str) -> Image:
        row = self.db.execute("SELECT * FROM images WHERE id=?", (image_id,)).fetchone()
        if row is None:
            raise NotFound(f"No such image: {image_id}")
        chains = [r["chain_id"] for r in self.db.execute(
            "SELECT chain_id FROM image_layers WHERE image_id=? ORDER BY position", (image_id,))]
        tags = [r["name"] for r in self.db.execute(
            "SELECT name FROM tags WHERE image_id=? ORDER BY name", (image_id,))]
        digests = [r["name"] for r in self.db.execute(
            "SELECT name FROM repo_digests WHERE image_id=? ORDER BY name", (image_id,))]
        return Image(
            id=image_id, config=json.loads(row["config"]),
            layer_dirs=[self.layer_dir(c) for c in chains],
            repo_tags=[_familiar(t) for t in tags], repo_digests=[_familiar(d) for d in digests],
            size=row["size"], created=row["created"], manifest_digest=row["manifest_digest"],
            manifest_media_type=row["manifest_media_type"], chain_ids=chains, added=row["added"])

    def images(self) -> list[Image]:
        ids = [r["id"] for r in self.db.execute("SELECT id FROM images ORDER BY added DESC")]
        return [self._image(i) for i in ids]

    def tag_rows(self) -> list[tuple[str, str]]:
        """(registry/repository:tag, image id) for every tag."""
        return [(r["name"], r["image_id"]) for r in self.db.execute("SELECT name, image_id FROM tags")]

    def lookup(self, name_or_id: str) -> Image | None:
        """An image by reference (busybox, busybox:1, host:5000/x:t, name@sha256:..),
        by full ID, or by a unique ID prefix (with or without sha256:)."""
        image_id = self.resolve(name_or_id)[0]
        return self._image(image_id) if image_id else None

    def get(self, name_or_id: str) -> Image:
        image = self.lookup(name_or_id)
        if image is None:
            raise NotFound(f"No such image: {name_or_id}")
        return image

    def resolve(self, text: str) -> tuple[str | None, str | None]:
        """(image id, the tag it was found by or None)."""
        from capsa.image.reference import InvalidReference, Reference
        text = text.strip()
        if not text:
            return None, None
        if text.startswith("sha256:"):
            return self._by_id_prefix(text[7:]), None
        if _HEX64.fullmatch(text):
            return self._by_id_prefix(text), None
        try:
            ref = Reference.parse(text)
        except InvalidReference:
            ref = None
        if ref is not None:
            if ref.digest:
                row = self.db.execute("SELECT image_id FROM repo_digests WHERE name=?",
                                      (f"{ref.name}@{ref.digest}",)).fetchone()
                if row is None:
                    row = self.db.execute("SELECT id AS image_id FROM images WHERE manifest_digest=?",
                                          (ref.digest,)).fetchone()
                if row is not None:
                    return row["image_id"], None
            else:
                row = self.db.execute("SELECT image_id FROM tags WHERE name=?", (str(ref),)).fetchone()
                if row is not None:
                    return row["image_id"], str(ref)
        if _HEX.fullmatch(text):
            return self._by_id_prefix(text), None
        return None, None

    def _by_id_prefix(self, prefix: str) -> str | None:
        if not _HEX.fullmatch(prefix):
            return None
        rows = self.db.execute("SELECT id FROM images WHERE id >= ? AND id < ? LIMIT 2",
                               (f"sha256:{prefix}", f"sha256:{prefix}g")).fetchall()
        if len(rows) > 1:
            raise Conflict(f"image ID prefix {prefix!r} is ambiguous: it matches more than one image")
        return rows[0]["id"] if rows else None

    # ------------------------------------------------------------------ tags

    def tag(self, source: str, target: str) -> str:
        from capsa.image.reference import Reference
        image = self.get(source)
        ref = Reference.parse(target)
        if ref.digest:
            raise CapsaError(f"refusing to create a tag with a digest reference: {target}")
        with self.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO tags VALUES (?,?)", (str(ref), image.id))
        return str(ref)

    # ----------------------------------------------------------------- users

    def image_in_use(self, image_id: str) -> list[str]:
        """Who uses the image (container IDs); containers register themselves in
        the image_users table (see add_image_user)."""
        return [r["user"] for r in self.db.execute(
            "SELECT user FROM image_users WHERE image_id=? ORDER BY user", (image_id,))]

    def add_image_user(self, image_id: str, user: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO image_users VALUES (?,?)", (image_id, user))

    def remove_image_user(self, image_id: str, user: str) -> None:
        self.db.execute("DELETE FROM image_users WHERE image_id=? AND user=?", (image_id, user))

    # --------------------------------------------------------------- removal

    def remove(self, name: str, *, force: bool = False) -> list[tuple[str, str]]:
        """Docker's rmi: untag a tag; delete the image when no tag, no other
        name and no container holds it. Returns ("Untagged"|"Deleted", what)."""
        events: list[tuple[str, str]] = []
        with self.transaction() as tx:
            image_id, by_tag = self.resolve(name)
            if image_id is None:
                raise NotFound(f"No such image: {name}")
            tags = [r["name"] for r in tx.execute("SELECT name FROM tags WHERE image_id=?", (image_id,))]
            users = self.image_in_use(image_id)
            if by_tag and len(tags) > 1:
                tx.execute("DELETE FROM tags WHERE name=?", (by_tag,))
                return [("Untagged", _familiar(by_tag))]
            if not by_tag and len({t.rsplit(":", 1)[0] for t in tags}) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {short_id(image_id)} (must be forced) - "
                               "image is referenced in multiple repositories")
            if users and not force:
                raise Conflict(f"conflict: unable to remove image {name} (must force) - container "
                               f"{users[0][:12]} is using its referenced image {short_id(image_id)}")
            for t in tags:
                tx.execute("DELETE FROM tags WHERE name=?", (t,))
                events.append(("Untagged", _familiar(t)))
            if users:       # forced while in use: untagged, kept for its containers
                return events
            for row in tx.execute("SELECT name FROM repo_digests WHERE image_id=?", (image_id,)):
                events.append(("Untagged", _familiar(row["name"])))
            events.append(("Deleted", image_id))
            events += [("Deleted", c) for c in self._delete_image(tx, image_id)]
        self.collect()
        return events

    def _delete_image(self, tx, image_id: str) -> list[str]:
        """Drop an image's records; returns the chain IDs now unreferenced."""
        chains = [r["chain_id"] for r in tx.execute(
            "SELECT chain_id FROM image_layers WHERE image_id=? ORDER BY position DESC", (image_id,))]
        for c in chains:
            tx.execute("UPDATE layers SET refcount = refcount - 1 WHERE chain_id=?", (c,))
        tx.execute("DELETE FROM images WHERE id=?", (image_id,))
        return [c for c in chains if tx.execute(
            "SELECT refcount FROM layers WHERE chain_id=?", (c,)).fetchone()["refcount"] <= 0]

    def prune(self, *, all: bool = False) -> tuple[list[str], int]:
        """Remove dangling images (no tag), or with all=True every image no
        container uses. Returns (deleted image IDs, bytes reclaimed)."""
        deleted: list[str] = []
        reclaimed = 0
        with self.transaction() as tx:
            for row in tx.execute("SELECT id, size FROM images").fetchall():
                image_id = row["id"]
                tagged = tx.execute("SELECT 1 FROM tags WHERE image_id=?", (image_id,)).fetchone()
                if (tagged and not all) or self.image_in_use(image_id):
                    continue
                tx.execute("DELETE FROM tags WHERE image_id=?", (image_id,))
                freed = self._delete_image(tx, image_id)
                reclaimed += sum(tx.execute("SELECT size FROM layers WHERE chain_id=?", (c,)).fetchone()["size"]
                                 for c in freed)
                deleted.append(image_id)
        self.collect()
        return deleted, reclaimed

    # ------------------------------------------------------- collection, repair

    def sweep(self) -> None:
        """Run on open: if no writer is running, remove what a killed one left
        (temp files, unverified or unrecorded layer directories)."""
        with self._collecting() as exclusive:
            if exclusive:
                self._sweep_files()

    def collect(self) -> None:
        """Delete unreferenced layers and blobs (records, then files), when no
        writer runs; otherwise the next command does it."""
        with self._collecting() as exclusive:
            if not exclusive:
                return
            with self.transaction() as tx:
                tx.execute("DELETE FROM layers WHERE refcount <= 0 AND chain_id NOT IN "
                           "(SELECT chain_id FROM image_layers)")
            self._sweep_files()
            live = {r["digest"] for r in self.db.execute("SELECT digest FROM image_blobs")}
            live |= {r["blob_digest"] for r in self.db.execute("SELECT blob_digest FROM layers")}
            live_hex = {d.partition(":")[2] for d in live}
            for entry in os.scandir(self.blobs):
                if entry.name not in live_hex:
                    _unlink(entry.path)
            for entry in os.scandir(self.locks):
                if entry.name != "writers.lock":
                    _unlink(entry.path)

    def _sweep_files(self) -> None:
        for entry in os.scandir(self.tmp):
            _remove_any(Path(entry.path))
        if not any(os.scandir(self.layers)):
            return
        recorded = {hex_of(r["chain_id"]) for r in self.db.execute("SELECT chain_id FROM layers")}
        for entry in os.scandir(self.layers):
            if entry.name not in recorded:
                _remove_tree(Path(entry.path), self.tmp)


def _layer_record(conn, chain_id: str) -> LayerRecord | None:
    row = conn.execute("SELECT * FROM layers WHERE chain_id=?", (chain_id,)).fetchone()
    return LayerRecord(row["chain_id"], row["diff_id"], row["blob_digest"], row["size"]) if row else None


class DigestError(BadInput):
    """Content that does not have the digest it is named by."""


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_any(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        _unlink(str(path))


def _remove_tree(path: Path, tmp: Path) -> None:
    """Rename out of the way first (so a half-deleted tree never keeps a
    layer's name), then delete."""
    trash = tmp / f"trash-{uuid.uuid4().hex}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
