#!/usr/bin/env python3
"""Pull of a multi-layer image from a local registry into a ready-to-run
state: `capsa pull` vs `skopeo copy` + `umoci unpack` vs `podman pull`,
side by side in one run.

The image is a real root filesystem, a minimal Debian bookworm with nginx
made once by debootstrap (from the apt mirror this machine uses) and cached
under /var/tmp/capsa-bench/pull, split into four gzip layers (everything but
/usr, /usr/lib, /usr/share, the rest of /usr) and pushed once by skopeo to a
docker-registry the script starts on 127.0.0.1.

Each round pulls it once per tool into fresh, empty storage, in rotating
order; each sample is the whole command (a new process, as a user runs it):
  capsa   capsa --root DIR pull REF            (layers extracted: ready to run)
  skopeo  skopeo copy docker://REF oci:DIR  +  umoci unpack (a runtime bundle)
  podman  podman --root DIR pull REF           (private storage, overlay driver)
Storage goes to tmpfs by default (--scratch to change it), so the shared VM
disk's writeback does not drown the tools' own work.

Usage (root):  python benches/pull.py [--runs N] [--rootfs DIR] [--driver overlay|vfs]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from debian_rootfs import build_rootfs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from registry_server import start_registry, stop_registry  # noqa: E402  (the tests' real registry)

CACHE = Path("/var/tmp/capsa-bench/pull")
SCRATCH = Path("/dev/shm/capsa-pull")
LAYERS = [  # (name, tar arguments relative to the rootfs)
    ("base", ["--exclude=./usr", "."]),
    ("usr-lib", ["./usr/lib"]),
    ("usr-share", ["./usr/share"]),
    ("usr-rest", ["--exclude=./usr/lib", "--exclude=./usr/share", "./usr"]),
]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed pulls per tool")
    p.add_argument("--rootfs", type=Path, help="use this root filesystem instead of debootstrapping one")
    p.add_argument("--scratch", type=Path, default=SCRATCH, help="where the pulled storage goes")
    p.add_argument("--driver", default="overlay", choices=("overlay", "vfs"), help="podman storage driver")
    p.add_argument("--capsa", default=str(REPO / ".venv" / "bin" / "capsa"), help="capsa executable")
    return p.parse_args(argv)


# --------------------------------------------------------------------------
# The image, made once
# --------------------------------------------------------------------------

def rootfs(args) -> Path:
    return args.rootfs or build_rootfs(CACHE)[0]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def oci_layout(source: Path) -> Path:
    """The rootfs as a four-layer OCI image layout (cached)."""
    layout = CACHE / "layout"
    if (layout / "index.json").exists():
        return layout
    shutil.rmtree(layout, ignore_errors=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descriptors, diff_ids = [], []
    for name, paths in LAYERS:
        raw = CACHE / f"{name}.tar"
        subprocess.run(["tar", "--numeric-owner", "--sort=name", "-C", str(source), "-cf", str(raw), *paths],
                       check=True)
        diff_ids.append(sha256_file(raw))
        packed = CACHE / f"{name}.tar.gz"
        with open(raw, "rb") as src, gzip.GzipFile(packed, "wb", compresslevel=6, mtime=0) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        raw.unlink()
        digest = sha256_file(packed)
        packed.rename(blobs / digest[7:])
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                            "size": (blobs / digest[7:]).stat().st_size})
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["nginx", "-g", "daemon off;"],
                   "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"bench layer {n}"} for n, _ in LAYERS],
    }).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest[7:]).write_bytes(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": descriptors}).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_digest[7:]).write_bytes(manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json.tmp").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    (layout / "index.json.tmp").rename(layout / "index.json")
    return layout


# --------------------------------------------------------------------------
# The pullers
# --------------------------------------------------------------------------

def run(cmd: list[str], env: dict | None = None) -> None:
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")


def podman_env(scratch: Path) -> dict:
    conf = scratch / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = "none"\n'
                    'cgroup_manager = "cgroupfs"\n')
    (scratch / "registries.conf").write_text("")
    return {"CONTAINERS_CONF": str(conf), "CONTAINERS_REGISTRIES_CONF": str(scratch / "registries.conf")}


def pull_capsa(args, ref: str, d: Path) -> None:
    run([args.capsa, "--root", str(d / "capsa"), "pull", "-q", ref])


def pull_skopeo_umoci(args, ref: str, d: Path) -> None:
    run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{d / 'oci'}:v1"])
    run(["umoci", "unpack", "--image", f"{d / 'oci'}:v1", str(d / "bundle")])


def pull_podman(args, ref: str, d: Path) -> None:
    run(["podman", "--root", str(d / "podman"), "--runroot", str(d / "run"),
         "--storage-driver", args.driver, "pull", "-q", "--tls-verify=false", ref], env=podman_env(d))


def clean(d: Path) -> None:
    if d.exists():
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            mountpoint = line.split()[1]
            if mountpoint.startswith(str(d)):
                subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None) -> None:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if os.geteuid() != 0:
        sys.exit("run as root (podman's and umoci's storage)")
    source = rootfs(args)
    layout = oci_layout(source)
    layer_bytes = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
    registry = start_registry("none")
    tools = [("capsa pull", pull_capsa), ("skopeo copy + umoci unpack", pull_skopeo_umoci),
             (f"podman pull ({args.driver})", pull_podman)]
    times: dict[str, list[float]] = {name: [] for name, _ in tools}
    try:
        ref = f"{registry.host}/bench/debian:v1"
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}"])
        for i in range(args.runs + 1):          # round 0 is a warm-up, not counted
            order = tools[i % len(tools):] + tools[:i % len(tools)]
            for name, fn in order:
                d = args.scratch / f"{i}{fn.__name__[5]}"   # short: podman's runroot max is 50 chars
                clean(d)
                d.mkdir(parents=True)
                subprocess.run(["sync"])
                t0 = time.perf_counter()
                fn(args, ref, d)
                elapsed = time.perf_counter() - t0
                if i:
                    times[name].append(elapsed)
                clean(d)
    finally:
        stop_registry(registry)
        clean(args.scratch)
    podman = statistics.median(times[tools[2][0]])
    print(f"image: {len(LAYERS)} gzip layers, {layer_bytes / 1e6:.1f} MB compressed, "
          f"from {source}; storage on {args.scratch}; {args.runs} runs each")
    print(f"{'tool':30} {'runs':>5} {'median s':>9} {'min s':>7} {'vs podman':>10}")
    for name, _ in tools:
        t = times[name]
        print(f"{name:30} {len(t):5d} {statistics.median(t):9.2f} {min(t):7.2f} "
              f"{statistics.median(t) / podman:9.2f}x")


if __name__ == "__main__":
    main()
