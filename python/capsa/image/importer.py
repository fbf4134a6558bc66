"""`capsa import`: a root filesystem tarball (plain, gzip, bzip2 or xz) becomes
a one-layer image, as `docker import` makes one. The layer is stored as the
uncompressed tar, so its blob digest is its diff ID."""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import shlex
import zlib
from datetime import datetime, timezone
from typing import BinaryIO

from capsa.errors import CapsaError
from capsa.image.store import Image, Store, naming, sha256_digest
from capsa.registry import mediatypes

CHUNK = 1 << 20


def rfc3339_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _decompressor(head: bytes):
    if head.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(wbits=47)     # gzip (also concatenated members: see below)
    if head.startswith(b"BZh"):
        return bz2.BZ2Decompressor()
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor()
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise CapsaError("zstd-compressed tarballs are not supported by import: decompress it first")
    return None


def _copy_uncompressed(source: BinaryIO, out: BinaryIO) -> str:
    """Copy `source` to `out` decompressed; returns the sha256 of what was written."""
    hasher = hashlib.sha256()
    head = source.read(CHUNK)
    decompressor = _decompressor(head)
    chunk = head
    while chunk:
        data = decompressor.decompress(chunk) if decompressor else chunk
        # gzip files may be several members back to back (pigz, cat a.gz b.gz)
        while decompressor is not None and isinstance(decompressor, type(zlib.decompressobj())) \
                and decompressor.eof and decompressor.unused_data:
            rest = decompressor.unused_data
            decompressor = zlib.decompressobj(wbits=47)
            data += decompressor.decompress(rest)
        hasher.update(data)
        out.write(data)
        chunk = source.read(CHUNK)
    if decompressor is not None and hasattr(decompressor, "flush"):
        tail = decompressor.flush()
        hasher.update(tail)
        out.write(tail)
    if decompressor is not None and not decompressor.eof:
        raise CapsaError("the tarball is truncated: its compressed stream ends early")
    return "sha256:" + hasher.hexdigest()


def _json_strings(text: str, change: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CapsaError(f"--change {change!r}: not a JSON array of strings")
    return value


def apply_changes(config: dict, changes: list[str]) -> None:
    """Dockerfile instructions of `docker import --change`: CMD, ENTRYPOINT, ENV,
    WORKDIR, USER, EXPOSE, LABEL, STOPSIGNAL, VOLUME."""
    for change in changes:
        keyword, _, rest = change.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword in ("CMD", "ENTRYPOINT"):
            if rest.startswith("["):
                value = _json_strings(rest, change)
            else:
                value = ["/bin/sh", "-c", rest]
            config["Cmd" if keyword == "CMD" else "Entrypoint"] = value
        elif keyword in ("ENV", "LABEL"):
            pairs = shlex.split(rest)
            if keyword == "ENV" and len(pairs) == 2 and "=" not in pairs[0]:
                pairs = [f"{pairs[0]}={pairs[1]}"]
            for pair in pairs:
                key, eq, value = pair.partition("=")
                if not eq:
                    raise CapsaError(f"--change {change!r}: expected KEY=VALUE")
                if keyword == "ENV":
                    env = [e for e in config.get("Env", []) if e.partition("=")[0] != key]
                    config["Env"] = env + [f"{key}={value}"]
                else:
                    config.setdefault("Labels", {})[key] = value
        elif keyword == "WORKDIR":
            config["WorkingDir"] = rest
        elif keyword == "USER":
            config["User"] = rest
        elif keyword == "STOPSIGNAL":
            config["StopSignal"] = rest
        elif keyword in ("EXPOSE", "VOLUME"):
            key = "ExposedPorts" if keyword == "EXPOSE" else "Volumes"
            for item in (_json_strings(rest, change) if rest.startswith("[") else rest.split()):
                if keyword == "EXPOSE" and "/" not in item:
                    item += "/tcp"
                config.setdefault(key, {})[item] = {}
        else:
            raise CapsaError(f"--change {change!r}: {keyword} is not supported by import "
                             "(CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)")


def import_tarball(store: Store, source: BinaryIO, *, tags: list[str] = (), changes: list[str] = (),
                   message: str = "", origin: str = "-") -> Image:
    from capsa.registry.platform import host_platform

    with store.writing():
        tmp = store.temp_path("import-")
        with naming(tmp), open(tmp, "wb") as out:
            diff_id = _copy_uncompressed(source, out)
        size = tmp.stat().st_size
        store.adopt_blob(tmp, diff_id)
        record = store.ensure_layer(diff_id, diff_id, store.blob_path(diff_id))
        platform = host_platform()
        created = rfc3339_now()
        container_config: dict = {}
        apply_changes(container_config, list(changes))
        config = {
            "architecture": platform.architecture,
            "os": platform.os,
            **({"variant": platform.variant} if platform.variant else {}),
            "created": created,
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": f"capsa import {origin}",
                         **({"comment": message} if message else {})}],
        }
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        config_digest = store.write_blob(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": mediatypes.OCI_LAYER, "digest": diff_id, "size": size}],
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        store.write_blob(manifest_bytes)
        return store.commit_image(config=config_bytes, manifest=manifest_bytes,
                                  manifest_media_type=mediatypes.OCI_MANIFEST, layers=[record],
                                  layer_blobs=[diff_id], tags=list(tags))


__all__ = ["import_tarball", "apply_changes", "sha256_digest"]
