"""`capsa run NAME[:TAG]` finds its image here, straight from the image
store's tables (tags, images, image_layers), without importing
capsa.image.store: that module's imports (dataclasses, hashlib, uuid,
threading...) and its open-time sweep cost more than starting a container.
Only the plain case is handled (a tag that exists); ids, digests, odd names
and missing images return None and go through the store (which also pulls)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


class StoredImage:
    """The fields of capsa.image.store.Image that containers use."""

    def __init__(self, id: str, config: dict, layer_dirs: list[Path], repo_tags: list[str]):
        self.id, self.config, self.layer_dirs, self.repo_tags = id, config, layer_dirs, repo_tags


def normalise(ref: str) -> str | None:
    """Docker's normalisation of NAME[:TAG] (docker.io/library/busybox:latest), or None if not that simple."""
    if "@" in ref or not ref or ref != ref.strip() or any(c.isupper() or c.isspace() for c in ref):
        return None
    first, slash, rest = ref.partition("/")
    if not slash:
        name = "docker.io/library/" + ref
    elif "." in first or ":" in first or first == "localhost":
        name = ref
    else:
        name = "docker.io/" + ref
    last = name.rsplit("/", 1)[1]
    return name if ":" in last else name + ":latest"


def by_tag(conn: sqlite3.Connection, root: Path, ref: str) -> StoredImage | None:
    name = normalise(ref)
    if name is None:
        return None
    try:
        row = conn.execute("SELECT i.id, i.config FROM tags t JOIN images i ON i.id = t.image_id WHERE t.name = ?",
                           (name,)).fetchone()
        if row is None:
            return None
        chains = [r[0] for r in conn.execute("SELECT chain_id FROM image_layers WHERE image_id = ? ORDER BY position",
                                             (row[0],))]
    except sqlite3.OperationalError:  # no image tables yet: the store creates them
        return None
    layers = [root / "layers" / c.partition(":")[2] for c in chains]
    if not all(d.is_dir() for d in layers):
        return None
    return StoredImage(row[0], json.loads(row[1]), layers, [ref])
