"""Fixtures for the capsa runtime tests: a busybox rootfs per session, a
state root + bundles per test, and a finalizer that leaves the machine clean
(and fails the test's teardown if the runtime left anything behind)."""

from __future__ import annotations

import faulthandler
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers as h  # noqa: E402
from registry_server import fault_proxy, registry, registry_basic, registry_token  # noqa: E402,F401 (fixtures)


# A hung test (a runtime call blocking in-process, a container that never
# exits) must not hang the suite until CI's limit: dump every thread's stack
# and exit. Runtime CLI calls have their own, shorter timeouts.
HANG_TIMEOUT = 180


@pytest.fixture(autouse=True)
def _hang_watchdog():
    faulthandler.dump_traceback_later(HANG_TIMEOUT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def pytest_configure(config):
    config.addinivalue_line("markers", "cgroup2: runs the runtime in a cgroup2-only mount view")


# --------------------------------------------------------------------------
# Session-wide
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def base_dir():
    """A 0755 temp dir (pytest's own tmp dirs are 0700, which a container
    mapped to an unprivileged host uid could not traverse)."""
    if os.geteuid() != 0:
        pytest.skip("the runtime tests need root")
    d = Path(tempfile.mkdtemp(prefix="capsa-test-"))
    os.chmod(d, 0o755)
    subtree = _root_subtree_control()
    made_by_others = {p: p.exists() for p in _host_paths_capsa_makes()}
    plain_before = set(h.plain_dirs_under_cgroup_root())
    yield d
    _sweep_cgroup_parents()
    # podman mkdirs dirs for controllers this host does not mount (hugetlb...)
    # on /sys/fs/cgroup's tmpfs: those this session made go when empty.
    for plain in set(h.plain_dirs_under_cgroup_root()) - plain_before:
        try:
            plain.rmdir()
        except OSError:
            pass
    # capsa's default parent cgroup (/capsa) and runtime root (/run/capsa, where
    # podman's calls put state) outlive the containers by design, as runc's do;
    # what this session made, it removes when empty.
    for path, existed in made_by_others.items():
        if not existed:
            for cache in path.glob("*/@*"):     # capsa's caches (compiled seccomp filters)
                shutil.rmtree(cache, ignore_errors=True)
            for sub, _, _ in os.walk(path, topdown=False):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass
    _restore_root_subtree_control(subtree)
    leftover = h.mounts_containing(str(d))
    for line in reversed(leftover):
        os.system(f"umount -l {line.split()[4]} 2>/dev/null")
    for pid in h.processes_rooted_under(str(d)):
        h.kill_quietly(pid)
    shutil.rmtree(d, ignore_errors=True)


def _root_subtree_control() -> set[str] | None:
    try:
        return set((h.CGROUP_UNIFIED / "cgroup.subtree_control").read_text().split())
    except OSError:
        return None


def _restore_root_subtree_control(before: set[str] | None) -> None:
    """runc enables every available controller (here: hugetlb) in the root
    cgroup2's subtree_control; leave the host as the session found it."""
    now = _root_subtree_control()
    if before is None or now is None:
        return
    for c in now - before:
        try:
            (h.CGROUP_UNIFIED / "cgroup.subtree_control").write_text(f"-{c}")
        except OSError:
            pass


def _host_paths_capsa_makes() -> list[Path]:
    roots = h.v1_controllers() + ([h.CGROUP_UNIFIED] if h.CGROUP_UNIFIED.is_dir() else [])
    return [r / "capsa" for r in roots] + [Path("/run/capsa")]


def _sweep_cgroup_parents():
    roots = h.v1_controllers()
    if h.CGROUP_UNIFIED.is_dir():
        roots.append(h.CGROUP_UNIFIED)
    for r in roots:
        for d in r.glob(h.CGROUP_PARENT + "*"):
            # only empty leaves: never disturb a concurrent run's containers
            for sub, _, _ in os.walk(d, topdown=False):
                if not h.cgroup_procs(Path(sub)):
                    try:
                        os.rmdir(sub)
                    except OSError:
                        pass


@pytest.fixture(scope="session")
def rootfs(base_dir):
    return h.build_rootfs(base_dir / "rootfs")


@pytest.fixture(scope="session")
def runtime_bin():
    binary = h.runtime_binary()
    if binary is None:
        pytest.fail("no runtime binary: set CAPSA_TEST_RUNTIME, put capsa-runtime on "
                    "PATH, or build .venv/bin/capsa-runtime (make test)")
    return binary


# --------------------------------------------------------------------------
# Per test
# --------------------------------------------------------------------------

@pytest.fixture
def ctx(base_dir, rootfs, runtime_bin):
    """Per-test world driving the runtime CLI (CAPSA_TEST_RUNTIME)."""
    with h.world(base_dir, rootfs, runtime_bin) as c:
        yield c


@pytest.fixture
def ctx2(ctx):
    """ctx whose runtime calls all see a cgroup2-only /sys/fs/cgroup."""
    ctx.prefix = h.cgroup2_wrapper()
    return ctx
