"""Images for the container tests, built once per session and put in a real
capsa store with the store's own import (`capsa import` of a tarball):
busybox from Debian's busybox-static, plus /etc/motd, a user `app` (1234)
with a primary group and a supplementary one, and an image config with Cmd
and Env set through import's --change instructions."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import helpers as h

CAPSA = str(Path(sys.executable).parent / "capsa")

BUSYBOX_CHANGES = ['CMD ["sh"]', "ENV IMAGE_VAR=from-image", "WORKDIR /"]
EXTRA_USER = "app:x:1234:2345:app user:/home/app:/bin/sh\n"
EXTRA_GROUP = "appgroup:x:2345:\nextra:x:3456:app\n"

# The busybox image config as the store records it (for images made here by hand).
BUSYBOX_CONFIG = {"config": {"Cmd": ["sh"], "Env": ["IMAGE_VAR=from-image"], "WorkingDir": "/"}}


@dataclass
class LayeredImage:
    """An image as the store hands it to containers, for layer sets the store
    would not make in a test's time (hundreds of layers): id, config, layer dirs (bottom first), tags."""
    id: str
    config: dict
    layer_dirs: list[Path]
    repo_tags: list[str] = field(default_factory=list)


def busybox_rootfs(dest: Path) -> Path:
    h.build_rootfs(dest)
    (dest / "home" / "app").mkdir(parents=True)
    os.chown(dest / "home" / "app", 1234, 2345)
    os.chmod(dest / "home", 0o755)
    (dest / "etc" / "motd").write_text("from the image\n")
    with open(dest / "etc" / "passwd", "a") as f:
        f.write(EXTRA_USER)
    with open(dest / "etc" / "group", "a") as f:
        f.write(EXTRA_GROUP)
    return dest


def tar_of(rootfs: Path) -> bytes:
    return subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."],
                          check=True, capture_output=True).stdout


def import_busybox(root: Path, work: Path, tag: str = "busybox:latest"):
    """The busybox image in the store at `root` (an Image from capsa.image.store)."""
    from capsa.image.importer import import_tarball
    from capsa.image.reference import Reference
    from capsa.image.store import Store

    rootfs = busybox_rootfs(work / "busybox-rootfs")
    data = tar_of(rootfs)
    store = Store.open(root)
    try:
        return import_tarball(store, io.BytesIO(data), tags=[str(Reference.parse(tag))], changes=BUSYBOX_CHANGES)
    finally:
        store.close()


def busybox_store(base_dir: Path, name: str) -> Path:
    """A fresh capsa store root under base_dir holding the busybox image."""
    root = base_dir / name
    root.mkdir()
    os.chmod(root, 0o755)
    import_busybox(root, base_dir / f"{name}-image")
    return root


def snapshot(dirs: list[Path]) -> dict[str, tuple]:
    """Every path in the layer dirs with its type, size, mode and content hash: the image must never change."""
    import hashlib
    out = {}
    for d in dirs:
        for dirpath, dirnames, filenames in os.walk(d):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = os.lstat(p)
                digest = ""
                if p.is_file() and not p.is_symlink():
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[str(p)] = (st.st_mode, st.st_size, digest)
    return out


@contextlib.contextmanager
def capsa_cli(root: Path, *, must_remove_own: bool = False):
    """`capsa --root ROOT ...` as a function (with .root and .store). Afterwards
    every container the test made is removed; a container dir or host mount
    left under ROOT fails the test, and with must_remove_own so does a
    container the test did not remove itself."""
    from capsa.container import lifecycle
    from capsa.container.state import Store

    store = Store(root)
    before = {r.id for r in store.all()}

    def run(*args, timeout=60, input=None):
        return h.run_cmd([CAPSA, "--root", str(root), *args], timeout=timeout, input=input)

    run.root = root
    run.store = store
    yield run
    left = [r for r in store.all() if r.id not in before]
    for rec in left:
        lifecycle.remove(store, rec, force=True)
    problems = []
    if must_remove_own and left:
        problems.append(f"containers left: {[r.id for r in left]}")
    containers = root / "containers"
    for d in containers.glob("*") if containers.exists() else []:
        if d.name not in before:
            problems.append(f"container dir left: {d}")
    for line in h.mounts_containing(str(root)):
        problems.append(f"host mount left: {line}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
