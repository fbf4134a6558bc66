"""`save` and `load`: image archives as tar files.

save writes what Docker 25+ writes: one tar that is both a docker-archive
(manifest.json naming config and layers) and an OCI image layout (oci-layout,
index.json, blobs/sha256/...), the two sharing the blob files. So `docker load`,
`podman load`, and skopeo's `docker-archive:` and `oci-archive:` all read it.

load reads docker-archives (Docker, `podman save`, `skopeo copy ...
docker-archive:`) and OCI archives (`skopeo copy ... oci-archive:`, `podman
save --format oci-archive`), compressed or not. Every blob is checked against
its digest, every layer against the config's diff IDs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import posixpath
import tarfile
import zlib
from typing import BinaryIO

from capsa.errors import BadInput, NotFound
from capsa.image import schema
from capsa.image.progress import Progress
from capsa.image.reference import InvalidReference, Reference
from capsa.image.store import DigestError, Image, Store, chain_ids, hex_of, naming, sha256_digest
from capsa.registry import mediatypes

CHUNK = 1 << 20
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


class ArchiveError(BadInput):
    """An archive that is not one, or whose contents break their formats."""


# ---------------------------------------------------------------------- save

def save(store: Store, names: list[str], out: BinaryIO) -> None:
    images: list[tuple[Image, list[str]]] = []
    for name in names:
        image_id, by_tag = store.resolve(name)
        if image_id is None:
            raise NotFound(f"No such image: {name}")
        image = store.get(image_id)
        tags = [Reference.parse(by_tag).familiar] if by_tag else []     # by ID or digest: no name
        images.append((image, tags))
    written: set[str] = set()
    index: list[dict] = []
    docker_manifest: list[dict] = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        for image, tags in images:
            manifest_bytes = store.read_blob(image.manifest_digest)
            manifest = json.loads(manifest_bytes)
            layer_digests = [d["digest"] for d in manifest["layers"]]
            for digest in (image.id, *layer_digests, image.manifest_digest):
                if digest not in written:
                    _add_file(tar, f"blobs/sha256/{hex_of(digest)}", store.blob_path(digest))
                    written.add(digest)
            descriptor = {"mediaType": image.manifest_media_type, "digest": image.manifest_digest,
                          "size": len(manifest_bytes)}
            for tag in tags or [None]:
                entry = dict(descriptor)
                if tag:
                    ref = Reference.parse(tag)
                    entry["annotations"] = {NAME_ANNOTATION: str(ref), REF_ANNOTATION: ref.tag or ""}
                index.append(entry)
            docker_manifest.append({
                "Config": f"blobs/sha256/{hex_of(image.id)}",
                "RepoTags": tags,
                "Layers": [f"blobs/sha256/{hex_of(d)}" for d in layer_digests],
                "LayerSources": {},
            })
            if not docker_manifest[-1]["LayerSources"]:
                del docker_manifest[-1]["LayerSources"]
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps(
            {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": index}).encode())
        _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())


def _info(name: str, size: int = 0, kind=tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, kind, 0o644 if kind == tarfile.REGTYPE else 0o755, 0
    return info


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_info(name, kind=tarfile.DIRTYPE))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path) -> None:
    with open(path, "rb") as f:
        tar.addfile(_info(name, os.fstat(f.fileno()).st_size), f)


# ---------------------------------------------------------------------- load

def load(store: Store, path: str, progress: Progress, name: str | None = None) -> list[Image]:
    """Load every image of the archive at `path` (a regular file; `name` is
    what messages call it, default its path). Every document in it is
    checked before anything is stored; on a failure what the load stored is
    collected again (by the caller, if it holds the store's writer lock)."""
    name = name or path
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as e:
        raise ArchiveError(f"{name} is not a tar archive of images: {e}") from None
    try:
        with tar, store.writing():
            members = {_clean(m.name): m for m in tar.getmembers()}
            reader = _Reader(store, tar, members, name)
            if "manifest.json" in members:
                images = reader.docker_archive()
            elif "index.json" in members:
                images = reader.oci_archive()
            else:
                raise ArchiveError(f"{name} has neither manifest.json (docker-archive) nor index.json "
                                   "(OCI archive)")
    except _BROKEN_STREAM as e:
        store.collect()
        raise ArchiveError(f"{name} is truncated or corrupt: {e or type(e).__name__}") from None
    except BaseException:
        store.collect()
        raise
    for image, tags in images:
        for tag in tags:
            progress.message(f"Loaded image: {Reference.parse(tag).familiar}")
        if not tags:
            progress.message(f"Loaded image ID: {image.id}")
    return [image for image, _ in images]


# What reading a damaged tar (or its gzip/xz/bz2 stream) raises.
_BROKEN_STREAM = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def _clean(name: str) -> str:
    return posixpath.normpath(name.lstrip("/")).removeprefix("./")


class _Reader:
    def __init__(self, store: Store, tar: tarfile.TarFile, members: dict, path: str):
        self.store, self.tar, self.members, self.path = store, tar, members, path

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self.members.get(_clean(name))
        if member is None:
            raise ArchiveError(f"{self.path}: {name} is named in the archive's index but missing")
        return member

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        member = self._member(name)
        if member.size > limit:
            raise ArchiveError(f"{self.path}: {name} is larger than {limit} bytes")
        f = self.tar.extractfile(member)
        if f is None:
            raise ArchiveError(f"{self.path}: {name} is not a file")
        return f.read()

    def copy_blob(self, name: str, digest: str | None = None) -> tuple[str, int]:
        """Copy a member into the store's blobs (verified against `digest` if
        given); returns (digest, size)."""
        member = self._member(name)
        f = self.tar.extractfile(member)
        if f is None:
            raise ArchiveError(f"{self.path}: {name} is not a file")
        if digest and self.store.has_blob(digest):
            return digest, self.store.blob_path(digest).stat().st_size
        hasher = hashlib.sha256()
        tmp = self.store.temp_path("load-")
        size = 0
        with naming(tmp), open(tmp, "wb") as out:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
                size += len(chunk)
        actual = "sha256:" + hasher.hexdigest()
        if digest and actual != digest:
            tmp.unlink()
            raise DigestError(f"{self.path}: {name} has digest {actual}, not {digest}: the archive is corrupt")
        self.store.adopt_blob(tmp, actual)
        return actual, size

    def _layers(self, config: dict, blobs: list[str]):
        diff_ids = config["rootfs"]["diff_ids"]
        return [self.store.ensure_layer(c, d, self.store.blob_path(b))
                for c, d, b in zip(chain_ids(diff_ids), diff_ids, blobs)]

    def docker_archive(self) -> list[tuple[Image, list[str]]]:
        entries = schema.docker_archive(self.read("manifest.json"), f"{self.path}: manifest.json")
        checked = []
        for entry in entries:       # every config checked before anything is stored
            config_bytes = self.read(entry["Config"])
            config = schema.config(config_bytes, f"{self.path}: the image config {entry['Config']}")
            schema.same_layer_count(entry["Layers"], config["rootfs"]["diff_ids"],
                                    f"{self.path}: the image {entry['Config']}")
            checked.append((entry, config_bytes, config))
        loaded = []
        for entry, config_bytes, config in checked:
            config_digest = self.store.write_blob(config_bytes)
            layer_descs = []
            for name in entry["Layers"]:
                digest, size = self.copy_blob(name)
                layer_descs.append({"mediaType": _layer_media_type(self.store.blob_path(digest)),
                                    "digest": digest, "size": size})
            layers = self._layers(config, [d["digest"] for d in layer_descs])
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": config_digest,
                           "size": len(config_bytes)},
                "layers": layer_descs}, separators=(",", ":")).encode()
            self.store.write_blob(manifest)
            tags = [t for t in (_tag_name(t) for t in entry.get("RepoTags") or []) if t]
            image = self.store.commit_image(config=config_bytes, manifest=manifest,
                                            manifest_media_type=mediatypes.OCI_MANIFEST, layers=layers,
                                            layer_blobs=[d["digest"] for d in layer_descs], tags=tags)
            loaded.append((image, tags))
        return loaded

    def oci_archive(self) -> list[tuple[Image, list[str]]]:
        from capsa.registry.platform import resolve_platform
        index = schema.index(self.read("index.json"), f"{self.path}: index.json")
        checked = []
        for descriptor in index["manifests"]:   # every document checked before anything is stored
            annotations = descriptor.get("annotations") or {}
            name = annotations.get(NAME_ANNOTATION) or ""
            ref_name = annotations.get(REF_ANNOTATION) or ""
            if not name and ("/" in ref_name or ":" in ref_name):
                name = ref_name     # a full name; a bare tag names no repository
            if descriptor["mediaType"] in mediatypes.INDEXES:
                nested = schema.index(self._blob_bytes(descriptor["digest"]),
                                      f"{self.path}: the image index {descriptor['digest']}")
                descriptor = resolve_platform(nested)
            manifest_bytes = self._blob_bytes(descriptor["digest"])
            manifest = schema.manifest(manifest_bytes, f"{self.path}: the manifest {descriptor['digest']}")
            config_bytes = self._blob_bytes(manifest["config"]["digest"])
            config = schema.config(config_bytes, f"{self.path}: the image config {manifest['config']['digest']}")
            schema.same_layer_count(manifest["layers"], config["rootfs"]["diff_ids"],
                                    f"{self.path}: the manifest {descriptor['digest']}")
            media_type = descriptor.get("mediaType") or manifest.get("mediaType") or mediatypes.OCI_MANIFEST
            checked.append((name, media_type, manifest_bytes, manifest, config_bytes, config))
        loaded = []
        for name, media_type, manifest_bytes, manifest, config_bytes, config in checked:
            layer_digests = []
            for d in manifest["layers"]:
                self.copy_blob(_blob_name(d["digest"]), d["digest"])
                layer_digests.append(d["digest"])
            layers = self._layers(config, layer_digests)
            self.store.write_blob(config_bytes)
            self.store.write_blob(manifest_bytes)
            tag = _tag_name(name)
            image = self.store.commit_image(config=config_bytes, manifest=manifest_bytes,
                                            manifest_media_type=media_type, layers=layers,
                                            layer_blobs=layer_digests, tags=[tag] if tag else [])
            loaded.append((image, [tag] if tag else []))
        return loaded

    def _blob_bytes(self, digest: str) -> bytes:
        data = self.read(_blob_name(digest))
        if sha256_digest(data) != digest:
            raise DigestError(f"{self.path}: blob {digest} does not have that digest: the archive is corrupt")
        return data


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{hex_of(digest)}"


def _tag_name(text: str) -> str | None:
    """The normalised name for a tag in an archive, or None."""
    if not text:
        return None
    try:
        ref = Reference.parse(text)
    except InvalidReference:
        return None
    return str(ref) if ref.digest is None else None


def _layer_media_type(path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\x1f\x8b"):
        return mediatypes.OCI_LAYER_GZIP
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return mediatypes.OCI_LAYER_ZSTD
    return mediatypes.OCI_LAYER
