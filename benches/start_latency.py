#!/usr/bin/env python3
"""Container start latency: `capsa-runtime run` vs `runc run` vs `crun run`
(plus capsa's in-process Python API when capsa is importable).

Each sample is one whole `RUNTIME run --bundle B ID` process (create, start,
wait, delete) of a busybox container whose process is `true`, timed with
time.perf_counter around subprocess.run. Runtimes are interleaved round by
round so drift on the machine hits them all alike.

crun 1.8 refuses hybrid cgroup hosts, so the script re-executes itself in a
private mount namespace (unshare -m --propagation private) with cgroup2
mounted on /sys/fs/cgroup: all runtimes see the same cgroup2-only view.

Usage (root):  python benches/start_latency.py [--runs N] [--view cgroup2|host] [--capsa PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IN_NS_ENV = "CAPSA_BENCH_IN_CGROUP2_NS"
ARGV_ENV = "CAPSA_BENCH_ARGV"
WARMUP = 3

NAMESPACES = ["pid", "network", "ipc", "uts", "mount"]
# Every runtime's --root lives on a tmpfs here, as /run is on a stock Debian:
# this VM's /run and /tmp are ext4 (with discard), where one state-file
# rename or unlink costs 0.1-5 ms under the other helpers' disk load.
STATE_DIR = "run"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50, help="timed runs per runtime")
    p.add_argument("--capsa", default=str(REPO / ".venv" / "bin" / "capsa-runtime"),
                   help="capsa-runtime binary (default: .venv/bin/capsa-runtime)")
    p.add_argument("--view", choices=["cgroup2", "host"], default="cgroup2",
                   help="a private cgroup2-only view (default, all three runtimes) or the "
                        "host's own cgroups (hybrid here: without crun, which refuses them)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------
# cgroup2-only view
# --------------------------------------------------------------------------

def cgroup_fstype() -> str:
    best, fstype = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        mp = pre.split()[4]
        if "/sys/fs/cgroup".startswith(mp) and len(mp) >= len(best):
            best, fstype = mp, post.split()[0]
    return fstype


def reexec_in_cgroup2_view(script: str = __file__):
    if os.environ.get(IN_NS_ENV):
        return
    env = dict(os.environ, **{IN_NS_ENV: "1", ARGV_ENV: json.dumps(sys.orig_argv)})
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"', Path(script).stem,
            sys.executable, os.path.abspath(script), *sys.argv[1:]]
    os.execvpe("unshare", argv, env)


# --------------------------------------------------------------------------
# Bundle
# --------------------------------------------------------------------------

def build_bundle(dest: Path, args=("true",)) -> Path:
    """The config `capsa-runtime spec` writes, on a busybox rootfs, running `true`;
    without linux.resources (crun 1.8 raises RLIMIT_MEMLOCK before loading its
    device eBPF filter, which fails where root lacks CAP_SYS_RESOURCE) and
    without the cgroup namespace and mount, so that all three can run it."""
    sys.path.insert(0, str(REPO / "python"))
    from capsa.demo import busybox_bundle  # noqa: PLC0415 - the repo's own package

    busybox_bundle(dest, list(args))
    config = json.loads((dest / "config.json").read_text())
    config["hostname"] = "bench"
    config["mounts"] = [m for m in config["mounts"] if m["type"] != "cgroup"]
    config["linux"].pop("resources", None)
    config["linux"]["namespaces"] = [{"type": t} for t in NAMESPACES]
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


# --------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------

class CliRuntime:
    def __init__(self, name, binary, workdir: Path):
        self.name = name
        self.binary = binary
        self.root = workdir / STATE_DIR / f"state-{name}"
        self.samples: list[float] = []
        self.error: str | None = None
        self.ids: list[str] = []

    def version(self) -> str:
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True,
                                 text=True, timeout=10).stdout
            return out.splitlines()[0].strip() if out.strip() else "?"
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            return f"? ({e})"

    def once(self, bundle: Path) -> float:
        cid = f"bench-{self.name}-{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        cmd = [self.binary, "--root", str(self.root), "run", "--bundle", str(bundle), cid]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, timeout=60)
        elapsed = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: "
                               f"{res.stderr.decode(errors='replace').strip()}")
        return elapsed

    def cleanup(self):
        for cid in self.ids:
            subprocess.run([self.binary, "--root", str(self.root), "delete", "--force", cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)


class ApiRuntime:
    """capsa.runtime.Runtime in this process: run() = create+start+wait+delete.
    With spares (the default), containers join network and IPC namespaces
    that a background thread made ahead; without, each clone makes its own."""

    def __init__(self, workdir: Path, spares: bool = True):
        from capsa.runtime import Runtime  # noqa: PLC0415 - optional dependency
        self.name = "capsa (Python API)" if spares else "capsa (API, no spares)"
        self.root = workdir / STATE_DIR / ("state-capsa-api" if spares else "state-capsa-api-nospare")
        self.rt = Runtime(root=str(self.root), spare_namespaces=spares)
        self.samples: list[float] = []
        self.error: str | None = None
        self.ids: list[str] = []

    def version(self) -> str:
        try:
            from importlib.metadata import version
            return f"capsa {version('capsa')} (in-process)"
        except Exception:  # noqa: BLE001
            return "capsa (in-process)"

    def once(self, bundle: Path) -> float:
        cid = f"bench-api-{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        t0 = time.perf_counter()
        code = self.rt.run(cid, str(bundle))
        elapsed = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"Runtime.run returned {code}")
        return elapsed

    def cleanup(self):
        for cid in self.ids:
            try:
                self.rt.delete(cid, force=True)
            except Exception:  # noqa: BLE001 - already gone is the normal case
                pass


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

SUBTREE_CONTROL = Path("/sys/fs/cgroup/cgroup.subtree_control")


def host_snapshot() -> tuple[set[str], set[Path]]:
    """What restore_host puts back: the root's subtree_control and which
    parent cgroups of the runtimes existed."""
    subtree = set(SUBTREE_CONTROL.read_text().split()) if SUBTREE_CONTROL.exists() else set()
    return subtree, set(runtime_parents())


# Made by a runtime's first container and kept for the next, as runtimes do:
# capsa's /capsa, podman's libpod_parent (cgroupfs manager).
PARENT_NAMES = ("capsa", "libpod_parent")


def runtime_parents() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    return [p for name in PARENT_NAMES for p in [root / name, *root.glob(f"*/{name}")] if p.is_dir()]


def restore_host(before: tuple[set[str], set[Path]]) -> None:
    """Remove the cgroups a runtime left behind (saying so), the empty
    runtime parents the run made, and undo what runc enables in the root's
    subtree_control (here: hugetlb): the host as found."""
    subtree_before, parents_before = before
    for d in runtime_parents():
        if d not in parents_before:
            # Deepest first (podman's conmon cgroup is in its parent); a
            # cgroup still in use refuses the rmdir and stays.
            for sub, _, _ in os.walk(d, topdown=False):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass
    for d in leftover_cgroups():
        print(f"warning:  cgroup left behind: {d}", file=sys.stderr)
        try:
            d.rmdir()
        except OSError:
            pass
    subtree_now = set(SUBTREE_CONTROL.read_text().split()) if SUBTREE_CONTROL.exists() else set()
    for c in subtree_now - subtree_before:
        try:
            SUBTREE_CONTROL.write_text(f"-{c}")
        except OSError:
            pass


def print_capsa_vs_podman(samples: dict, note: str) -> float:
    """The median/mean/min table of whole-command timings (seconds) of the
    CLI benches; the capsa/podman median ratio."""
    print(f"{'command':<8}{'median':>10}{'mean':>10}{'min':>10}   ({note})")
    for name, s in samples.items():
        print(f"{name:<8}{statistics.median(s) * 1000:>8.1f}ms{statistics.mean(s) * 1000:>8.1f}ms{min(s) * 1000:>8.1f}ms")
    return statistics.median(samples["capsa"]) / statistics.median(samples["podman"])


RUN_CAPSA = Path("/run/capsa")


@contextlib.contextmanager
def host_as_found():
    """Around a whole bench: afterwards, the runtimes' parent cgroups and the
    /run/capsa (capsa-runtime's default root, which podman and containerd
    use) that the run made are gone again."""
    before = host_snapshot()
    had_run_capsa = RUN_CAPSA.exists()
    try:
        yield
    finally:
        restore_host(before)
        if not had_run_capsa:
            shutil.rmtree(RUN_CAPSA, ignore_errors=True)


def leftover_cgroups() -> list[Path]:
    """bench-* cgroups anywhere in the top two levels of /sys/fs/cgroup
    (runc uses /<id>, capsa /capsa/<id>)."""
    root = Path("/sys/fs/cgroup")
    found = [p for p in root.glob("bench-*") if p.is_dir()]
    found += [p for p in root.glob("*/bench-*") if p.is_dir()]
    return sorted(found, key=lambda p: -len(p.parts))


def p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def main():
    args = parse_args(sys.argv[1:])
    if os.geteuid() != 0:
        sys.exit("start_latency: needs root (namespaces, cgroups)")
    if args.view == "cgroup2":
        reexec_in_cgroup2_view()
    original_argv = json.loads(os.environ.get(ARGV_ENV, json.dumps(sys.orig_argv)))
    if args.view == "cgroup2" and cgroup_fstype() != "cgroup2":
        sys.exit("start_latency: /sys/fs/cgroup is not cgroup2 after re-exec")

    host_before = host_snapshot()
    workdir = Path(tempfile.mkdtemp(prefix="capsa-bench-"))
    os.chmod(workdir, 0o755)
    bundle = build_bundle(workdir / "bundle")
    (workdir / STATE_DIR).mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "bench-state", str(workdir / STATE_DIR)], check=True)

    runners, skipped = [], []
    if os.path.exists(args.capsa) and os.access(args.capsa, os.X_OK):
        runners.append(CliRuntime("capsa", args.capsa, workdir))
    else:
        skipped.append(f"capsa: {args.capsa} not found")
    for name in ("runc", "crun"):
        path = shutil.which(name)
        if name == "crun" and args.view == "host" and cgroup_fstype() != "cgroup2":
            skipped.append("crun: 1.8 refuses this host's cgroup layout (use the default cgroup2 view)")
        elif path:
            runners.append(CliRuntime(name, path, workdir))
        else:
            skipped.append(f"{name}: not on PATH")
    try:
        runners += [ApiRuntime(workdir), ApiRuntime(workdir, spares=False)]
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken build
        skipped.append(f"capsa Python API: not importable ({type(e).__name__}: {e})")

    print("capsa start latency: `RUNTIME run` of a busybox container running `true`")
    print(f"command:  {' '.join(original_argv)}")
    print(f"kernel:   {platform.release()} (uname -r)    nproc: {len(os.sched_getaffinity(0))}")
    if args.view == "cgroup2":
        print("cgroups:  private mount namespace with cgroup2 mounted on /sys/fs/cgroup "
              "(crun 1.8 refuses this host's hybrid v1+v2 layout), so every runtime sees "
              "the same cgroup2-only view")
    else:
        print(f"cgroups:  the host's own ({cgroup_fstype()} at /sys/fs/cgroup)")
    print(f"bundle:   namespaces {', '.join(NAMESPACES)}; readonly rootfs; "
          "no linux.resources (crun 1.8 raises RLIMIT_MEMLOCK before loading its "
          "device eBPF filter, which fails here: root lacks CAP_SYS_RESOURCE)")
    print("state:    every runtime's --root on a tmpfs (as /run on a stock Debian; "
          "here /run and /tmp are ext4)")
    for r in runners:
        print(f"runtime:  {r.name}: {r.version()}")
    for s in skipped:
        print(f"skipped:  {s}")
    print(f"method:   {WARMUP} warm-up runs each, then {args.runs} timed runs each, "
          "interleaved (order rotates every round); wall time of the whole "
          "process (perf_counter around subprocess.run)")
    print(flush=True)

    try:
        for i in range(WARMUP + args.runs):
            k = i % max(1, len(runners))
            for r in runners[k:] + runners[:k]:
                if r.error:
                    continue
                try:
                    t = r.once(bundle)
                except Exception as e:  # noqa: BLE001 - reported in the table
                    r.error = str(e)
                    print(f"error:    {r.name}: {r.error}", file=sys.stderr, flush=True)
                    continue
                if i >= WARMUP:
                    r.samples.append(t)
    finally:
        for r in runners:
            r.cleanup()
        subprocess.run(["umount", str(workdir / STATE_DIR)], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        restore_host(host_before)

    base = next((r for r in runners if r.name == "runc" and r.samples), None)
    base_median = statistics.median(base.samples) if base else None
    print(f"{'runtime':<22} {'runs':>5} {'median ms':>10} {'p90 ms':>9} {'vs runc':>8}")
    for r in runners:
        if not r.samples:
            print(f"{r.name:<22} {'-':>5} {'failed' if r.error else '-':>10}")
            continue
        med = statistics.median(r.samples)
        ratio = f"{med / base_median:.2f}x" if base_median else "-"
        print(f"{r.name:<22} {len(r.samples):>5} {med * 1000:>10.2f} "
              f"{p90(r.samples) * 1000:>9.2f} {ratio:>8}")
    if any(r.error for r in runners):
        sys.exit(1)


if __name__ == "__main__":
    main()
