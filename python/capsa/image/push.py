"""Push: the image's blobs (those the registry lacks; mounted from another
repository of the same registry when the image came from there), up to N at
once, then its manifest, byte for byte as stored, so its digest is kept."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from capsa.errors import NotFound
from capsa.image.interrupt import Cancel, on_worker
from capsa.image.progress import Progress, for_output
from capsa.image.pull import concurrent_downloads
from capsa.image.reference import Reference
from capsa.image.store import Store, hex_of


def push(store: Store, reference_text: str, *, quiet: bool = False, progress: Progress | None = None,
         insecure: bool | None = None) -> str:
    """Returns the manifest digest the registry stored (the work runs on a
    worker thread: see interrupt.py)."""
    return on_worker(lambda cancel: _push(store, reference_text, quiet, progress, insecure, cancel), "push")


def _push(store: Store, reference_text: str, quiet: bool, progress: Progress | None,
          insecure: bool | None, cancel: Cancel) -> str:
    from capsa.registry.client import RegistryClient

    ref = Reference.parse(reference_text)
    image_id, by_tag = store.resolve(reference_text)
    if image_id is None or (ref.digest is None and by_tag is None):
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
    image = store.get(image_id)
    manifest = store.read_blob(image.manifest_digest)
    doc = json.loads(manifest)
    blobs = [doc["config"], *doc.get("layers", [])]
    sources = sorted({Reference.parse(name).repository for name in image.repo_digests
                      if Reference.parse(name).registry == ref.registry} - {ref.repository})
    own_progress = progress is None
    progress = progress or for_output(quiet)
    progress.message(f"The push refers to repository [{ref.name}]")
    try:
        with RegistryClient(ref.registry, insecure=insecure) as client:
            def upload(desc: dict) -> None:
                cancel.check()
                digest, size = desc["digest"], desc.get("size")
                short = hex_of(digest)[:12]
                path = store.blob_path(digest)
                if size is None:
                    size = path.stat().st_size
                if sources and client.blob_exists(ref.repository, digest) is not None:
                    progress.layer(short, "Layer already exists")
                    return
                for source in sources:
                    if client.mount_blob(ref.repository, digest, source):
                        progress.layer(short, f"Mounted from {source}")
                        return
                progress.layer(short, "Preparing")
                uploaded = client.push_blob(ref.repository, digest, path, size=size, progress=cancel.checking(
                    lambda done, total: progress.bytes(short, done, total)))
                progress.layer(short, "Pushed" if uploaded else "Layer already exists")

            with ThreadPoolExecutor(concurrent_downloads(), thread_name_prefix="upload") as pool:
                for future in [pool.submit(upload, d) for d in blobs]:
                    future.result()
            cancel.check()
            digest = client.put_manifest(ref.repository, ref.digest or ref.tag, manifest,
                                         image.manifest_media_type)
        with store.transaction() as tx:
            tx.execute("INSERT OR IGNORE INTO repo_digests VALUES (?,?)", (image.id, f"{ref.name}@{digest}"))
        progress.message(f"{ref.tag or ref.digest}: digest: {digest} size: {len(manifest)}")
        return digest
    finally:
        if own_progress:
            progress.close()
