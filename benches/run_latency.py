#!/usr/bin/env python3
"""`capsa run --rm IMAGE true` vs `podman run --rm --network none IMAGE true`.

The same busybox rootfs tarball is imported into a private capsa store and
into podman's private storage (overlay driver, runc, cgroupfs, no events,
a private containers.conf with `default_ulimits = []` because root here
lacks CAP_SYS_RESOURCE). Each sample is one whole CLI process, timed around
subprocess.run; the two are interleaved round by round. Prints medians and
the ratio capsa/podman (target: at most 0.5).

Usage (root):  .venv/bin/python benches/run_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import image_fixtures as imgs  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
import start_latency as sl  # noqa: E402 - the shared bench helpers

CAPSA = str(Path(sys.executable).parent / "capsa")


def timed(argv, env=None) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{r.stderr.decode()}")
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="capsa-bench-run-"))
    os.chmod(base, 0o755)
    try:
        rootfs = imgs.busybox_rootfs(base / "rootfs")
        tar = base / "busybox.tar"
        tar.write_bytes(imgs.tar_of(rootfs))
        root = base / "capsa"
        subprocess.run([CAPSA, "--root", str(root), "import", str(tar), "bench-busybox"], check=True,
                       stdout=subprocess.DEVNULL)
        conf = base / "containers.conf"
        conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
        env = dict(os.environ, CONTAINERS_CONF=str(conf))
        podman = ["podman", "--root", str(base / "proot"), "--runroot", str(base / "prun"), "--storage-driver", "overlay",
                  "--cgroup-manager", "cgroupfs", "--events-backend", "none", "--runtime", "runc"]
        subprocess.run(podman + ["import", str(tar), "localhost/bench-busybox"], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cmds = {
            "capsa": ([CAPSA, "--root", str(root), "run", "--rm", "bench-busybox", "true"], None),
            "podman": (podman + ["run", "--rm", "--network", "none", "localhost/bench-busybox", "true"], env),
        }
        samples: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(3):  # warm-up
            for argv, e in cmds.values():
                timed(argv, e)
        for _ in range(args.runs):
            for name, (argv, e) in cmds.items():
                samples[name].append(timed(argv, e))
        subprocess.run(podman + ["system", "reset", "-f"], env=env, capture_output=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ratio = sl.print_capsa_vs_podman(samples, f"{args.runs} runs each, interleaved")
    print(f"capsa/podman median ratio: {ratio:.2f} (target <= 0.50)")
    print("commands: capsa --root R run --rm bench-busybox true | "
          "podman --root .. --runroot .. --runtime runc run --rm --network none localhost/bench-busybox true")


if __name__ == "__main__":
    with sl.host_as_found():  # the capsa parent cgroups and /run/capsa the run made go again
        main()
