"""Images for the container tests, built once per session: busybox from
Debian's busybox-static, as two layers (the busybox rootfs, then a layer
that adds /etc/motd, a user and a group), so every container runs on a real
multi-layer overlay."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import helpers as h

BUSYBOX_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_VAR=from-image"],
               "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": []},
}

EXTRA_USER = "app:x:1234:2345:app user:/home/app:/bin/sh\n"
EXTRA_GROUP = "appgroup:x:2345:\nextra:x:3456:app\n"


@dataclass
class LayeredImage:
    """An image as the store hands it to containers: id, config, layer dirs (bottom first), tags."""
    id: str
    config: dict
    layer_dirs: list[Path]
    repo_tags: list[str] = field(default_factory=list)


def build_busybox(base: Path) -> LayeredImage:
    layers = base / "layers"
    bottom = h.build_rootfs(layers / "busybox")
    top = layers / "extras"
    (top / "etc").mkdir(parents=True)
    (top / "home" / "app").mkdir(parents=True)
    os.chown(top / "home" / "app", 1234, 2345)
    (top / "etc" / "motd").write_text("from the image\n")
    (top / "etc" / "passwd").write_text((bottom / "etc" / "passwd").read_text() + EXTRA_USER)
    (top / "etc" / "group").write_text((bottom / "etc" / "group").read_text() + EXTRA_GROUP)
    for d in (layers, top, top / "etc", top / "home"):
        os.chmod(d, 0o755)
    return LayeredImage("sha256:" + os.urandom(32).hex(), BUSYBOX_CONFIG, [bottom, top], ["busybox:latest"])


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
