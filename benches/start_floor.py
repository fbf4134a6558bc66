#!/usr/bin/env python3
"""The kernel's floor under one in-process container start, with no runtime:
from this (Python, capsa imported) process, fork; in the child unshare the
start-latency bundle's namespaces and exec busybox `true`; waitpid. Any
runtime that forks this process pays at least this per container.

Usage (root):  python benches/start_floor.py [--runs N]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
ALL5 = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
BUSYBOX = "/bin/busybox"

libc = ctypes.CDLL(None, use_errno=True)


def once(flags: int, exe) -> float:
    t0 = time.perf_counter()
    if exe == "spawn":
        # glibc's posix_spawn clones with CLONE_VM|CLONE_VFORK: no copy of this address space.
        pid = os.posix_spawn(BUSYBOX, ["true"], {})
        os.waitpid(pid, 0)
        return time.perf_counter() - t0
    pid = os.fork()
    if pid == 0:
        if flags and libc.unshare(flags) != 0:
            os._exit(3)
        if exe:
            os.execv(BUSYBOX, ["true"])
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SystemExit(f"start_floor: child failed with wait status {status}")
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("start_floor: needs root (namespaces)")
    try:
        import capsa.runtime  # noqa: F401,PLC0415 - the same address space as the API bench
    except ImportError:
        pass
    cases = [("fork+exit", 0, False), ("fork+exec true", 0, True),
             ("posix_spawn true (CLONE_VM)", 0, "spawn"),
             ("fork+unshare(net)+exit", CLONE_NEWNET, False),
             ("fork+unshare(mnt,ipc,uts)+exit", CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS, False),
             ("fork+unshare(5 ns)+exec true", ALL5, True)]
    print(f"load average: {os.getloadavg()[0]:.2f}    runs: {args.runs} each, interleaved")
    samples = {name: [] for name, _, _ in cases}
    for _ in range(args.runs):
        for name, flags, exe in cases:
            samples[name].append(once(flags, exe))
    for name, _, _ in cases:
        print(f"{name:<32} median {statistics.median(samples[name]) * 1000:6.2f} ms")


if __name__ == "__main__":
    main()
