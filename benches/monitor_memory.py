#!/usr/bin/env python3
"""Memory of capsa-monitor per detached container.

Starts N detached busybox containers (`sleep`) through capsa.container (the
code path of `capsa run -d`), each supervised by its own capsa-monitor, and
reads every monitor's VmRSS and Pss (/proc/PID/smaps_rollup: shared pages
divided among the processes sharing them). Target: at most 2 MB RSS.
Where podman's conmon is installed, the same is measured for conmon
supervising `podman run -d` containers of the same rootfs, side by side.

Usage (root):  .venv/bin/python benches/monitor_memory.py [--containers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import image_fixtures as imgs  # noqa: E402
from capsa.container import lifecycle  # noqa: E402
from capsa.container.spec import RunOptions  # noqa: E402
from capsa.container.state import Store  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
import start_latency as sl  # noqa: E402 - the shared bench helpers


def memory_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def summary(name: str, values: list[tuple[int, int]]) -> dict:
    rss = [v[0] for v in values]
    pss = [v[1] for v in values]
    return {"supervisor": name, "containers": len(values), "rss_kb_median": statistics.median(rss),
            "rss_kb_max": max(rss), "pss_kb_median": statistics.median(pss)}


def capsa_monitors(n: int, base: Path) -> dict:
    image = imgs.import_busybox(base / "root", base)
    store = Store(base / "root")
    recs = []
    try:
        for _ in range(n):
            rec = lifecycle.create(store, image, RunOptions(command=["sleep", "600"]))
            recs.append(rec)
            lifecycle.start_detached(store, rec)
        values = []
        for rec in recs:
            raw = json.loads((store.dir(rec.id) / "status.json").read_text())
            pid = raw["monitor_pid"]
            # Steady state: the monitor says "ok" just before re-exec'ing into its supervise phase.
            deadline = time.monotonic() + 10
            while b"--supervise" not in Path(f"/proc/{pid}/cmdline").read_bytes() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            values.append(memory_kb(pid))
        return summary("capsa-monitor", values)
    finally:
        for rec in recs:
            lifecycle.remove(store, rec, force=True)


def conmon_monitors(n: int, base: Path) -> dict | None:
    """podman run -d with private storage: each container's conmon."""
    if not shutil.which("podman"):
        return None
    import subprocess
    tar = base / "rootfs.tar"
    tar.write_bytes(imgs.tar_of(imgs.busybox_rootfs(base / "podman-rootfs")))
    conf = base / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n")
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    podman = ["podman", "--root", str(base / "proot"), "--runroot", str(base / "prun"), "--storage-driver", "overlay",
              "--cgroup-manager", "cgroupfs", "--events-backend", "none", "--runtime", "runc"]
    subprocess.run(podman + ["import", str(tar), "localhost/bench-busybox"], check=True, env=env, capture_output=True)
    ids = []
    try:
        for _ in range(n):
            out = subprocess.run(podman + ["run", "-d", "--network", "none", "localhost/bench-busybox", "sleep", "600"],
                                 check=True, env=env, capture_output=True, text=True).stdout.strip()
            ids.append(out)
        values = []
        for cid in ids:
            pid = subprocess.run(podman + ["inspect", "--format", "{{.State.ConmonPid}}", cid], check=True, env=env,
                                 capture_output=True, text=True).stdout.strip()
            values.append(memory_kb(int(pid)))
        return summary("conmon (podman)", values)
    finally:
        if ids:
            subprocess.run(podman + ["rm", "-f", "-t", "0"] + ids, env=env, capture_output=True)
        subprocess.run(podman + ["system", "reset", "-f"], env=env, capture_output=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--containers", type=int, default=10)
    p.add_argument("--no-podman", action="store_true")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="capsa-bench-monitor-"))
    os.chmod(base, 0o755)
    try:
        rows = [capsa_monitors(args.containers, base)]
        if not args.no_podman:
            try:
                row = conmon_monitors(args.containers, base)
            except Exception as e:  # podman missing pieces: report capsa alone
                print(f"(podman/conmon not measured: {e})", file=sys.stderr)
                row = None
            if row:
                rows.append(row)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'supervisor':<18}{'containers':>11}{'RSS median':>12}{'RSS max':>10}{'PSS median':>12}")
    for r in rows:
        print(f"{r['supervisor']:<18}{r['containers']:>11}{r['rss_kb_median'] / 1024:>10.2f}MB"
              f"{r['rss_kb_max'] / 1024:>8.2f}MB{r['pss_kb_median'] / 1024:>10.2f}MB")
    if len(rows) == 2:
        print(f"capsa-monitor RSS / conmon RSS: {rows[0]['rss_kb_median'] / rows[1]['rss_kb_median']:.2f}")


if __name__ == "__main__":
    with sl.host_as_found():  # the capsa parent cgroups and /run/capsa the run made go again
        main()
