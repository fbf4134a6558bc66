#!/usr/bin/env python3
"""`capsa ps -a` vs `podman ps -a` with 200 containers (created, not
running, to keep the setup cheap). The same busybox rootfs tarball is
imported into a private capsa store and into podman's private storage
(overlay, runc, cgroupfs, no events, `default_ulimits = []`: root here lacks
CAP_SYS_RESOURCE), as in benches/run_latency.py. Each sample is one whole
CLI process, timed around subprocess.run, the two interleaved round by
round. Prints medians and the ratio capsa/podman.

Usage (root):  .venv/bin/python benches/ps_many.py [--containers N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import image_fixtures as imgs  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
import start_latency as sl  # noqa: E402 - the shared bench helpers

CAPSA = str(Path(sys.executable).parent / "capsa")


def timed(argv, env=None) -> tuple[float, bytes]:
    t = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{r.stderr.decode()}")
    return took, r.stdout


def create_many(argv_of, n: int, env=None) -> None:
    def one(i):
        r = subprocess.run(argv_of(i), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        if r.returncode != 0:
            raise SystemExit(f"create {i} failed: {r.stderr.decode()}")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--containers", type=int, default=200)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="capsa-bench-ps-"))
    os.chmod(base, 0o755)
    conf = base / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    podman = ["podman", "--root", str(base / "proot"), "--runroot", str(base / "prun"), "--storage-driver", "overlay",
              "--cgroup-manager", "cgroupfs", "--events-backend", "none", "--runtime", "runc"]
    root = base / "capsa"
    try:
        rootfs = imgs.busybox_rootfs(base / "rootfs")
        tar = base / "busybox.tar"
        tar.write_bytes(imgs.tar_of(rootfs))
        subprocess.run([CAPSA, "--root", str(root), "import", str(tar), "bench-busybox"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(podman + ["import", str(tar), "localhost/bench-busybox"], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        n = args.containers
        create_many(lambda i: [CAPSA, "--root", str(root), "create", "--name", f"c{i}", "bench-busybox", "true"], n)
        create_many(lambda i: podman + ["create", "--network", "none", "--name", f"c{i}", "localhost/bench-busybox", "true"],
                    n, env)
        cmds = {
            "capsa": ([CAPSA, "--root", str(root), "ps", "-a"], None),
            "podman": (podman + ["ps", "-a"], env),
        }
        for name, (argv, e) in cmds.items():  # warm-up, and both really list n containers
            _, out = timed(argv, e)
            rows = len(out.decode().splitlines()) - 1
            if rows != n:
                raise SystemExit(f"{name} ps -a listed {rows} containers, expected {n}")
        samples: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.runs):
            for name, (argv, e) in cmds.items():
                samples[name].append(timed(argv, e)[0])
    finally:
        subprocess.run(podman + ["rm", "-a", "-f"], env=env, capture_output=True)
        subprocess.run(podman + ["system", "reset", "-f"], env=env, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    ratio = sl.print_capsa_vs_podman(samples, f"{args.containers} created containers, {args.runs} runs each, interleaved")
    print(f"capsa/podman median ratio: {ratio:.2f}")
    print("commands: capsa --root R ps -a | podman --root .. --runroot .. ps -a")


if __name__ == "__main__":
    with sl.host_as_found():  # the capsa parent cgroups and /run/capsa the run made go again
        main()
