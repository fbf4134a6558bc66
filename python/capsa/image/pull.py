"""Pull: manifest (an index resolved to one platform), config, then every layer
downloaded concurrently and extracted as soon as its blob is verified. The
config's diff IDs give every layer's chain ID up front, so no extraction waits
for its parent: they run in parallel on threads (the Rust extractor releases
the GIL). Each extracted layer is checked against its diff ID; the image is
recorded only when all are in place."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from capsa.errors import CapsaError
from capsa.image import schema
from capsa.image.interrupt import Cancel, on_worker
from capsa.image.progress import Progress, for_output
from capsa.image.reference import Reference
from capsa.image.store import Image, LayerRecord, Store, chain_ids, hex_of, naming, short_id
from capsa.registry import mediatypes
from capsa.registry.errors import NoMatchingPlatform, RegistryError

DEFAULT_CONCURRENT_DOWNLOADS = 3


def concurrent_downloads() -> int:
    text = os.environ.get("CAPSA_MAX_CONCURRENT_DOWNLOADS", "")
    try:
        return max(1, int(text)) if text else DEFAULT_CONCURRENT_DOWNLOADS
    except ValueError:
        raise CapsaError(f"CAPSA_MAX_CONCURRENT_DOWNLOADS={text!r}: not a number") from None


def pull(store: Store, reference_text: str, *, platform: str | None = None, quiet: bool = False,
         progress: Progress | None = None, insecure: bool | None = None) -> Image:
    """Pull an image into the store (on a worker thread: see interrupt.py)."""
    return on_worker(lambda cancel: _pull(store, reference_text, platform, quiet, progress, insecure, cancel),
                     "pull")


def _pull(store: Store, reference_text: str, platform: str | None, quiet: bool,
          progress: Progress | None, insecure: bool | None, cancel: Cancel) -> Image:
    from capsa.registry.client import RegistryClient
    from capsa.registry.platform import Platform, resolve_platform

    ref = Reference.parse(reference_text)
    own_progress = progress is None
    progress = progress or for_output(quiet)
    wanted = Platform.parse(platform) if platform else None
    what = ref.familiar
    try:
        with RegistryClient(ref.registry, insecure=insecure) as client:
            if ref.digest is None and ":" not in reference_text.rsplit("/", 1)[-1]:
                progress.message(f"Using default tag: {ref.tag}")
            progress.message(f"{ref.digest or ref.tag}: Pulling from {ref.repository}")
            top = client.get_manifest(ref.repository, ref.manifest_reference)
            manifest = top
            if mediatypes.is_index(top.media_type):
                descriptor = resolve_platform(schema.index(top.data, f"the image index of {what}"), wanted)
                manifest = client.get_manifest(ref.repository, descriptor["digest"],
                                               accept=mediatypes.IMAGE_MANIFESTS)
            elif not mediatypes.is_image_manifest(top.media_type):
                raise RegistryError(f"{what}: unsupported manifest type {top.media_type!r}")
            doc = schema.manifest(manifest.data, f"the manifest of {what}")
            config_desc, layer_descs = doc["config"], doc["layers"]
            config_digest = config_desc["digest"]
            with store.writing():
                config_bytes, config = _fetch_config(store, client, ref.repository, config_desc, cancel,
                                                     f"the image config of {what}")
                _check_platform(config, wanted, what)
                diff_ids = config["rootfs"]["diff_ids"]
                schema.same_layer_count(layer_descs, diff_ids, f"the manifest of {what}")
                chains = chain_ids(diff_ids)
                existing = store.lookup(config_digest)
                records = _fetch_layers(store, client, ref.repository, layer_descs, diff_ids, chains, progress,
                                        cancel)
                cancel.check()
                store.write_blob(manifest.data)
                tag_names = [str(ref)] if ref.digest is None else []
                image = store.commit_image(
                    config=config_bytes, manifest=manifest.data, manifest_media_type=manifest.media_type,
                    layers=records, layer_blobs=[d["digest"] for d in layer_descs],
                    tags=tag_names, repo_digests=[f"{ref.name}@{top.digest}"])
            progress.message(f"Digest: {top.digest}")
            if existing is not None and set(existing.repo_tags) >= set(image.repo_tags):
                progress.message(f"Status: Image is up to date for {what}")
            else:
                progress.message(f"Status: Downloaded newer image for {what}")
            return image
    except BaseException:
        store.collect()     # whatever this pull stored and nothing references
        raise
    finally:
        if own_progress:
            progress.close()


def _fetch_config(store: Store, client, repository: str, desc: dict, cancel: Cancel,
                  what: str) -> tuple[bytes, dict]:
    """The config blob (bytes, parsed), checked before it enters blobs/:
    fetched and verified into tmp/, moved to blobs/ only if valid."""
    path = store.blob_path(desc["digest"])
    if path.exists():
        data = path.read_bytes()
        return data, schema.config(data, what)
    tmp = store.temp_path("config-")
    try:
        with naming(tmp):
            client.fetch_blob(repository, desc["digest"], tmp, size=desc["size"], progress=cancel.check)
        data = tmp.read_bytes()
        config = schema.config(data, what)
        store.adopt_blob(tmp, desc["digest"])
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(f".{tmp.name}.partial").unlink(missing_ok=True)
    return data, config


def _check_platform(config: dict, wanted, what: str) -> None:
    if wanted is None:
        return
    from capsa.registry.platform import Platform
    got = Platform.of(config.get("os") or "linux", config.get("architecture") or "",
                      config.get("variant"))
    if (got.os, got.architecture) != (wanted.os, wanted.architecture) or \
            (wanted.variant and got.variant != wanted.variant):
        raise NoMatchingPlatform(f"image {what} is for {got}, which does not match the "
                                 f"requested platform {wanted}")


def _fetch_layers(store: Store, client, repository: str, descs: list[dict], diff_ids: list[str],
                  chains: list[str], progress: Progress, cancel: Cancel) -> list[LayerRecord]:
    """Download (up to N at once) and extract (as each download is verified)."""
    records: list[LayerRecord | None] = [None] * len(descs)
    downloads = ThreadPoolExecutor(concurrent_downloads(), thread_name_prefix="download")
    extractions = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="extract")
    pending: dict[Future, str] = {}

    def extract(i: int) -> None:
        cancel.check()
        short = hex_of(descs[i]["digest"])[:12]
        progress.layer(short, "Extracting")
        records[i] = store.ensure_layer(chains[i], diff_ids[i], store.blob_path(descs[i]["digest"]))
        progress.layer(short, "Pull complete")

    def download(i: int) -> None:
        digest, size = descs[i]["digest"], descs[i].get("size")
        short = hex_of(digest)[:12]
        path = store.blob_path(digest)
        if not path.exists():
            progress.layer(short, "Downloading")
            with naming(path):
                client.fetch_blob(repository, digest, path, size=size, progress=cancel.checking(
                    lambda done, total: progress.bytes(short, done, total or size)))
            progress.layer(short, "Download complete")
        return i

    try:
        for i, desc in enumerate(descs):
            short = hex_of(desc["digest"])[:12]
            if store.layer_present(chains[i]) and store.has_blob(desc["digest"]):
                progress.layer(short, "Already exists")
                records[i] = store.ensure_layer(chains[i], diff_ids[i], store.blob_path(desc["digest"]))
            else:
                progress.layer(short, "Pulling fs layer")
                pending[downloads.submit(download, i)] = "download"
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                kind = pending.pop(f)
                i = f.result()      # the first failure stops the pull
                if kind == "download":   # verified: its extraction starts now
                    pending[extractions.submit(extract, i)] = "extract"
    finally:
        downloads.shutdown(wait=True, cancel_futures=True)
        extractions.shutdown(wait=True, cancel_futures=True)
    return records


__all__ = ["pull", "short_id"]
