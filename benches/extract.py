#!/usr/bin/env python3
"""Layer extraction: capsa's `_core.extract_layer` vs GNU `tar -xzf` vs
`umoci unpack`, side by side in one run.

The layer is a real root filesystem: a minimal Debian bookworm with nginx,
made once by debootstrap from the apt mirror this machine uses (read from
/etc/apt/sources.list*), tarred with `tar --numeric-owner -czf` and cached
under /var/tmp/capsa-bench/extract. If debootstrap cannot work, the script
says why and falls back to a tarball of this host's /usr.

Each round extracts the same gzip layer once per tool into a fresh
directory on the same filesystem, in rotating order so drift hits all
alike; dirty pages are synced and the output removed between samples
(untimed). capsa runs in-process (what `capsa pull` does); tar and umoci
are whole processes. umoci gets an OCI layout holding the same blob and
also writes a runtime bundle's config.json, as it always does.

Layers are extracted into tmpfs by default (--scratch to change it): on
this project's shared VM the disk's journal and writeback, contended by
other workloads, otherwise dominate and hide the extractors' own cost.

Usage (root):  python benches/extract.py [--runs N] [--cache DIR] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from debian_rootfs import build_rootfs

DEFAULT_CACHE = Path("/var/tmp/capsa-bench/extract")
# Where the layers are extracted: tmpfs by default, so the figures are the
# extractors' own work (decompression, parsing, syscalls) rather than the
# shared VM disk's writeback and journal, which other workloads contend for.
DEFAULT_SCRATCH = Path("/dev/shm/capsa-bench-extract")
WARMUP = 1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="timed runs per tool")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the layer and scratch dirs live")
    p.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH,
                   help="where layers are extracted (default: tmpfs; pass a dir under --cache for the disk)")
    p.add_argument("--prepare", action="store_true", help="only build the cached layer")
    return p.parse_args(argv)


# --------------------------------------------------------------------------
# The layer, made once
# --------------------------------------------------------------------------

def build_layer(cache: Path) -> tuple[Path, str]:
    rootfs, source = build_rootfs(cache)
    layer = cache / "layer.tar.gz"
    if not layer.exists():
        tmp = cache / "layer.tar.gz.tmp"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-czf", str(tmp), "."], check=True)
        tmp.rename(layer)
    return layer, source


def build_oci_layout(cache: Path, layer: Path) -> Path:
    """An OCI image layout whose one layer is `layer`, for `umoci unpack`."""
    oci = cache / "oci"
    if (oci / "index.json").exists():
        return oci
    shutil.rmtree(oci, ignore_errors=True)
    blobs = oci / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    raw = layer.read_bytes()
    layer_desc = put(raw)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(raw)).hexdigest()
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    config_desc = put(json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}]}
    manifest_desc = put(json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                  **manifest_desc,
                                                  "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}
    (oci / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (oci / "index.json").write_text(json.dumps(index))
    return oci


def layer_stats(layer: Path) -> tuple[int, int]:
    """(entries, uncompressed bytes) of the layer, from `tar -tvzf`."""
    out = subprocess.run(["tar", "-tzf", str(layer)], check=True, capture_output=True, text=True).stdout
    size = 0
    with gzip.open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
    return len(out.splitlines()), size


# --------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------

def run_capsa(layer: Path, out: Path, oci: Path) -> float:
    from capsa import _core
    t0 = time.perf_counter()
    _core.extract_layer(str(layer), str(out))
    return time.perf_counter() - t0


def run_tar(layer: Path, out: Path, oci: Path) -> float:
    out.mkdir()
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xzf", str(layer), "-C", str(out)], check=True)
    return time.perf_counter() - t0


def run_umoci(layer: Path, out: Path, oci: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["umoci", "--log", "error", "unpack", "--image", f"{oci}:bench", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


TOOLS = {"capsa": run_capsa, "tar -xzf": run_tar, "umoci unpack": run_umoci}


def remove(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if os.geteuid() != 0:
        print("benches/extract.py: run as root (ownership, device nodes)", file=sys.stderr)
        return 1
    args.cache.mkdir(parents=True, exist_ok=True)
    layer, source = build_layer(args.cache)
    oci = build_oci_layout(args.cache, layer)
    if args.prepare:
        print(f"layer ready: {layer} ({source})")
        return 0
    entries, size = layer_stats(layer)
    tools = [t for t in TOOLS if t != "umoci unpack" or shutil.which("umoci")]
    samples: dict[str, list[float]] = {t: [] for t in tools}
    scratch = args.scratch
    load = os.getloadavg()[0]
    remove(scratch)
    scratch.mkdir()
    try:
        for i in range(WARMUP + args.runs):
            order = tools[i % len(tools):] + tools[:i % len(tools)]
            for name in order:
                out = scratch / f"out-{i}-{tools.index(name)}"
                os.sync()
                took = TOOLS[name](layer, out, oci)
                if i >= WARMUP:
                    samples[name].append(took)
                remove(out)
    finally:
        remove(scratch)

    print(f"layer: {source}")
    print(f"       {entries} entries, {size / 1e6:.1f} MB uncompressed, {layer.stat().st_size / 1e6:.1f} MB gzip")
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(scratch.parent)], capture_output=True, text=True).stdout.strip()
    print(f"host:  {os.cpu_count()} CPUs, kernel {platform.release()}, {args.runs} runs each, interleaved")
    print(f"into:  {scratch} ({fs}); load average before: {load:.1f}")
    print()
    base = statistics.median(samples["tar -xzf"])
    print(f"{'tool':<16}{'runs':>6}{'median ms':>11}{'p90 ms':>10}{'vs tar':>9}")
    for name in tools:
        med = statistics.median(samples[name])
        print(f"{name:<16}{len(samples[name]):>6}{med * 1e3:>11.1f}{p90(samples[name]) * 1e3:>10.1f}{med / base:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
