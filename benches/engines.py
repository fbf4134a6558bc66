#!/usr/bin/env python3
"""Container start through the engines: capsa-runtime vs runc as the OCI
runtime of podman and of containerd.

Each sample is one whole engine command that starts a busybox container
running `true`, waits for it and removes it:

    podman --runtime RUNTIME run --rm --network none IMAGE true
    ctr run --runc-binary RUNTIME --rm IMAGE ID true

timed with time.perf_counter around subprocess.run. Both runtimes use the
same image in the same private storage (podman: vfs under a temp dir;
containerd: a private daemon, overlayfs), and are interleaved round by round
(alternating which goes first) so drift on the machine hits both alike. The
private setups are the interop tests' (tests/engines.py): nothing on the
host's podman or containerd is used or changed.

Usage (root):  python benches/engines.py [--runs N] [--capsa PATH] [--no-containerd]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import engines as e  # noqa: E402  (the interop tests' private podman and containerd)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import start_latency as sl  # noqa: E402 - the shared bench helpers

WARMUP = 3


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="timed runs per engine and runtime")
    p.add_argument("--capsa", default=str(REPO / ".venv" / "bin" / "capsa-runtime"),
                   help="capsa-runtime binary (default: .venv/bin/capsa-runtime)")
    p.add_argument("--runc", default=shutil.which("runc") or "/usr/sbin/runc", help="runc binary")
    p.add_argument("--no-containerd", action="store_true", help="podman only")
    return p.parse_args(argv)


class Case:
    """One engine with one runtime: argv() gives a fresh command per sample."""

    def __init__(self, engine: str, runtime: str, argv):
        self.engine, self.runtime, self.argv = engine, runtime, argv
        self.samples: list[float] = []
        self.example: list[str] = []

    def once(self, env=None) -> None:
        cmd = self.argv()
        self.example = cmd
        t0 = time.perf_counter()
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env, timeout=120)
        elapsed = time.perf_counter() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: "
                               f"{res.stderr.decode(errors='replace').strip()}")
        self.samples.append(elapsed)


def p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def measure(pairs, runs: int, env=None) -> None:
    """Warm up, then `runs` rounds, each case once per round, the order
    alternating so neither runtime always follows the other."""
    for case in (c for pair in pairs for c in pair):
        for _ in range(WARMUP):
            case.once(env)
        case.samples.clear()
    for i in range(runs):
        for pair in pairs:
            for case in (pair if i % 2 == 0 else pair[::-1]):
                case.once(env)


def report(pairs, runs: int) -> None:
    print(f"\n{runs} runs each, interleaved, after {WARMUP} warm-up runs; times in ms\n")
    print("| engine | OCI runtime | median | p90 | min | capsa / runc (median) |")
    print("|---|---|---:|---:|---:|---:|")
    for capsa, runc in pairs:
        for case in (capsa, runc):
            med = statistics.median(case.samples) * 1000
            ratio = statistics.median(capsa.samples) / statistics.median(runc.samples)
            print(f"| {case.engine} | {case.runtime} | {med:.0f} | {p90(case.samples) * 1000:.0f} | "
                  f"{min(case.samples) * 1000:.0f} | {f'{ratio:.2f}' if case is capsa else ''} |")
    print("\ncommands (one sample each):")
    for case in (c for pair in pairs for c in pair):
        print("  " + " ".join(case.example))


def versions(args) -> str:
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
            return out.splitlines()[0].strip()
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            return f"? ({exc})"
    return "; ".join(first_line(c) for c in ([args.capsa, "--version"], [args.runc, "--version"],
                                             ["podman", "--version"], ["containerd", "--version"]))


def main():
    args = parse_args(sys.argv[1:])
    if os.geteuid() != 0:
        sys.exit("engines bench: needs root")
    capsa = os.path.abspath(args.capsa)
    if not os.access(capsa, os.X_OK):
        sys.exit(f"engines bench: no capsa-runtime at {capsa} (make build)")
    print(versions(args))

    work = Path(tempfile.mkdtemp(prefix="capsa-bench-engines-"))
    os.chmod(work, 0o755)
    podman = e.Podman(work / "podman", capsa)
    containerd = None
    try:
        tar = e.write_busybox_tar(work)
        res = podman("import", tar, e.IMAGE, timeout=120)
        if not res.ok:
            sys.exit(res.describe())

        def podman_run(runtime):
            return lambda: podman.argv("run", "--rm", "--network", "none", e.IMAGE, "true", runtime=runtime)

        pairs = [(Case("podman", "capsa-runtime", podman_run(capsa)),
                  Case("podman", "runc", podman_run(args.runc)))]
        measure(pairs, args.runs, env=podman.env)

        if not args.no_containerd:
            archive = work / "busybox-docker-archive.tar"
            res = podman("save", "--format", "docker-archive", "-o", archive, e.IMAGE, timeout=120)
            if not res.ok:
                sys.exit(res.describe())
            containerd = e.Containerd(work / "containerd", capsa)
            containerd.start()
            res = containerd.ctr("images", "import", archive, timeout=120)
            if not res.ok:
                sys.exit(res.describe())

            def ctr_run(runtime):
                return lambda: containerd.ctr_argv("run", "--rm", e.IMAGE, f"bench-{uuid.uuid4().hex[:10]}",
                                                   "true", runtime=runtime)

            ctr_pair = (Case("containerd (ctr run)", "capsa-runtime", ctr_run(capsa)),
                        Case("containerd (ctr run)", "runc", ctr_run(args.runc)))
            measure([ctr_pair], args.runs)
            pairs.append(ctr_pair)
        report(pairs, args.runs)
    finally:
        for problem in podman.cleanup():
            print("cleanup:", problem, file=sys.stderr)
        if containerd is not None:
            containerd.teardown()
        e.unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    with sl.host_as_found():  # the capsa parent cgroups and /run/capsa the run made go again
        main()
