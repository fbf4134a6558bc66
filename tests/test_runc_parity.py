"""Bundles and hosts that runc handles, handled as runc does: runc's own
default spec, a frozen cgroup, recursively read-only binds, a private state
root."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

import helpers as h


def test_runc_default_spec_runs(ctx):
    """`runc spec` asks for ambient capabilities without inheritable ones;
    the kernel cannot raise those, and runc runs the bundle all the same."""
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed")
    bundle = ctx.tmp / "runc-spec"
    bundle.mkdir()
    os.chmod(bundle, 0o755)
    subprocess.run([runc, "spec", "--bundle", str(bundle)], check=True)
    h.build_rootfs(bundle / "rootfs")
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["capabilities"]["ambient"] and not config["process"]["capabilities"].get("inheritable")
    cid = ctx.new_id()
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "grep CapAmb /proc/self/status"]
    config["linux"]["cgroupsPath"] = h.cgroup_path_for(cid)
    ctx.track_cgroup(h.cgroup_path_for(cid))
    (bundle / "config.json").write_text(json.dumps(config))
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    assert res.stdout.split() == ["CapAmb:", "0000000000000000"]


def _freezer_dir(path: str) -> Path | None:
    for c in h.v1_controllers():
        if c.name == "freezer" or "freezer" in c.name.split(","):
            return c / path.lstrip("/")
    return None


def test_frozen_cgroup_is_refused(ctx):
    """A cgroupsPath whose freezer is frozen would stop the init at once and
    the start would never end: refused with a clear error, nothing left."""
    cid = ctx.new_id()
    path = h.cgroup_path_for(cid)
    d = _freezer_dir(path)
    if d is None:
        pytest.skip("this host has no v1 freezer hierarchy")
    d.mkdir(parents=True)
    try:
        (d / "freezer.state").write_text("FROZEN")
        _, bundle = ctx.bundle(["true"], cid=cid, cgroups_path=path)
        res = ctx.cli("run", "--bundle", bundle, cid, timeout=20)
        assert res.returncode != 0
        ctx.assert_error(res, capsa_mentions=["frozen"])
        assert not ctx.state_entries(cid)
    finally:
        (d / "freezer.state").write_text("THAWED")
        d.rmdir()


def test_rro_bind_is_read_only_all_the_way_down(ctx):
    """`rro`: a mount under the bind's source is read-only in the container
    too (plain `ro` leaves it writable, as mount(2) does)."""
    src = ctx.shared_dir("rro-src")
    sub = src / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)
    try:
        script = "touch /ro/sub/x 2>/dev/null && echo writable || echo read-only"
        for opt, expect in (("ro", "writable"), ("rro", "read-only")):
            mount = {"destination": "/ro", "type": "bind", "source": str(src), "options": ["rbind", opt]}
            res = ctx.run(["sh", "-c", script], extra_mounts=[mount])
            assert res.returncode == 0, res.describe()
            assert res.stdout.strip() == expect, (opt, res.describe())
    finally:
        subprocess.run(["umount", str(sub)], check=True)


def test_state_root_is_private(ctx):
    cid, _ = ctx.create(["true"])
    mode = stat.S_IMODE(os.stat(ctx.root).st_mode)
    assert mode == 0o700, oct(mode)
    ctx.ok("delete", "--force", cid)
