#!/usr/bin/env python3
"""Exec latency: `capsa-runtime exec ID true` vs `runc exec ID true`, each on
a running container of its own made from the same busybox bundle (plus
capsa's in-process Runtime.exec when capsa is importable).

Each sample is one whole `RUNTIME exec ID true` process (join the
container's namespaces and cgroup, run `true`, wait for it), timed with
time.perf_counter around subprocess.run, and its CPU time (user + system of
the runtime and everything it waited for, from RUSAGE_CHILDREN), which moves
far less than wall time when the machine is busy; runtimes are interleaved
round by round. By default everything runs in the same cgroup2-only view as
benches/start_latency.py (a private mount namespace with cgroup2 on
/sys/fs/cgroup); `--view host` measures on the host's own cgroups instead
(v1 or hybrid here, where moving a task into v1 cgroups costs an RCU grace
period now and then, for both runtimes).

Usage (root):  python benches/exec_latency.py [--runs N] [--view cgroup2|host] [--capsa PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import start_latency as sl  # noqa: E402 - the shared bench helpers (cgroup2 view, bundle, p90)

WARMUP = 3


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50, help="timed execs per runtime")
    p.add_argument("--view", choices=["cgroup2", "host"], default="cgroup2",
                   help="cgroup2-only view (default) or the host's own cgroups")
    p.add_argument("--capsa", default=str(sl.REPO / ".venv" / "bin" / "capsa-runtime"),
                   help="capsa-runtime binary (default: .venv/bin/capsa-runtime)")
    return p.parse_args(argv)


def quiet(cmd, timeout=60):
    """Run cmd; stderr to a file, not a pipe: a container started by it keeps
    the runtime's stdio, and a pipe would be waited on until the container ends."""
    with tempfile.TemporaryFile() as err:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err, timeout=timeout)
        if res.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(map(str, cmd))} exited {res.returncode}: "
                               f"{err.read().decode(errors='replace').strip()}")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_and_children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime + children_cpu()


class CliExec:
    """A running container of one runtime, exec'd into by that runtime's CLI."""

    def __init__(self, name, binary, workdir: Path, bundle: Path, started: list):
        self.name = name
        self.binary = binary
        self.root = workdir / f"state-{name}"
        self.id = f"bench-exec-{name}-{uuid.uuid4().hex[:8]}"
        self.samples: list[float] = []
        self.cpu: list[float] = []
        self.error: str | None = None
        started.append(self)  # cleaned up even if start fails
        quiet([binary, "--root", self.root, "create", "--bundle", bundle, self.id])
        quiet([binary, "--root", self.root, "start", self.id])

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip() if out.strip() else "?"

    def once(self) -> tuple[float, float]:
        cmd = [self.binary, "--root", str(self.root), "exec", self.id, "true"]
        c0 = children_cpu()
        t0 = time.perf_counter()
        quiet(cmd)
        return time.perf_counter() - t0, children_cpu() - c0

    def cleanup(self):
        subprocess.run([self.binary, "--root", str(self.root), "delete", "--force", self.id],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)


class ApiExec:
    """capsa.runtime.Runtime.exec in this process, on a container of its own."""

    def __init__(self, workdir: Path, bundle: Path, started: list):
        from capsa.runtime import Runtime  # noqa: PLC0415 - optional
        self.name = "capsa (Python API)"
        self.rt = Runtime(root=str(workdir / "state-capsa-api"))
        self.id = f"bench-exec-api-{uuid.uuid4().hex[:8]}"
        self.samples: list[float] = []
        self.cpu: list[float] = []
        self.error: str | None = None
        started.append(self)
        self.rt.create(self.id, str(bundle))
        self.rt.start(self.id)

    def version(self) -> str:
        return "capsa (in-process)"

    def once(self) -> tuple[float, float]:
        c0 = own_and_children_cpu()
        t0 = time.perf_counter()
        code = self.rt.exec(self.id, ["true"])
        elapsed = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"Runtime.exec returned {code}")
        return elapsed, own_and_children_cpu() - c0

    def cleanup(self):
        try:
            self.rt.delete(self.id, force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


def main():
    args = parse_args(sys.argv[1:])
    if os.geteuid() != 0:
        sys.exit("exec_latency: needs root (namespaces, cgroups)")
    if args.view == "cgroup2":
        sl.reexec_in_cgroup2_view(__file__)
        if sl.cgroup_fstype() != "cgroup2":
            sys.exit("exec_latency: /sys/fs/cgroup is not cgroup2 after re-exec")
    original_argv = json.loads(os.environ.get(sl.ARGV_ENV, json.dumps(sys.orig_argv)))

    host_before = sl.host_snapshot()
    workdir = Path(tempfile.mkdtemp(prefix="capsa-bench-exec-"))
    os.chmod(workdir, 0o755)
    bundle = sl.build_bundle(workdir / "bundle", ["sleep", "1000000"])

    runners, skipped, started = [], [], []
    try:
        candidates = [("capsa", args.capsa if os.access(args.capsa, os.X_OK) else None),
                      ("runc", shutil.which("runc"))]
        for name, binary in candidates:
            if not binary:
                skipped.append(f"{name}: not found")
                continue
            try:
                runners.append(CliExec(name, binary, workdir, bundle, started))
            except Exception as e:  # noqa: BLE001 - reported
                skipped.append(f"{name}: could not start its container: {e}")
        try:
            runners.append(ApiExec(workdir, bundle, started))
        except Exception as e:  # noqa: BLE001 - ImportError, or a broken build
            skipped.append(f"capsa Python API: {type(e).__name__}: {e}")

        print("capsa exec latency: `RUNTIME exec ID true` on a running busybox container")
        print(f"command:  {' '.join(original_argv)}")
        print(f"kernel:   {platform.release()} (uname -r)    nproc: {len(os.sched_getaffinity(0))}")
        if args.view == "cgroup2":
            print("cgroups:  private mount namespace with cgroup2 mounted on /sys/fs/cgroup "
                  "(the same view as benches/start_latency.py)")
        else:
            print(f"cgroups:  the host's own ({'hybrid/v1' if sl.cgroup_fstype() != 'cgroup2' else 'v2'})")
        print("bundle:   capsa-runtime spec's config on busybox, running `sleep`; "
              f"namespaces {', '.join(sl.NAMESPACES)}")
        for r in runners:
            print(f"runtime:  {r.name}: {r.version()}")
        for s in skipped:
            print(f"skipped:  {s}")
        print(f"method:   {WARMUP} warm-up execs each, then {args.runs} timed execs each, interleaved "
              "(order rotates every round); wall time of the whole exec process")
        print(flush=True)

        for i in range(WARMUP + args.runs):
            k = i % max(1, len(runners))
            for r in runners[k:] + runners[:k]:
                if r.error:
                    continue
                try:
                    t, cpu = r.once()
                except Exception as e:  # noqa: BLE001 - reported in the table
                    r.error = str(e)
                    print(f"error:    {r.name}: {r.error}", file=sys.stderr, flush=True)
                    continue
                if i >= WARMUP:
                    r.samples.append(t)
                    r.cpu.append(cpu)
    finally:
        for r in started:
            r.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        sl.restore_host(host_before)

    base = next((r for r in runners if r.name == "runc" and r.samples), None)
    base_median = statistics.median(base.samples) if base else None
    base_cpu = statistics.median(base.cpu) if base else None
    print(f"{'runtime':<22} {'runs':>5} {'median ms':>10} {'p90 ms':>9} {'vs runc':>8} {'cpu ms':>8} {'vs runc':>8}")
    for r in runners:
        if not r.samples:
            print(f"{r.name:<22} {'-':>5} {'failed' if r.error else '-':>10}")
            continue
        med, cpu = statistics.median(r.samples), statistics.median(r.cpu)
        ratio = f"{med / base_median:.2f}x" if base_median else "-"
        cpu_ratio = f"{cpu / base_cpu:.2f}x" if base_cpu else "-"
        print(f"{r.name:<22} {len(r.samples):>5} {med * 1000:>10.2f} "
              f"{sl.p90(r.samples) * 1000:>9.2f} {ratio:>8} {cpu * 1000:>8.1f} {cpu_ratio:>8}")
    if any(r.error for r in runners):
        sys.exit(1)


if __name__ == "__main__":
    main()
