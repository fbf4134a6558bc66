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


def test_foreground_run_relays_its_own_terminal(ctx):
    """terminal: true without --console-socket: the runtime makes the pty and
    relays it to its own stdio (no \\r added), exiting with the container's code."""
    import pty
    cid, bundle = ctx.bundle(["sh", "-c", "tty; echo out; exit 3"], terminal=True)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([ctx.runtime, "--root", str(ctx.root), "run", "--bundle", str(bundle), cid],
                                stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        text = h.read_pty(master, ["/dev/pts/", "out"], timeout=20)
        assert proc.wait(timeout=20) == 3, text
    finally:
        os.close(master)
    assert "/dev/pts/" in text and "out\n" in text.replace("\r\n", "\n"), text
    assert not ctx.state_entries(cid)
    # Detached, the tty has nowhere to go: refused.
    cid2, bundle2 = ctx.bundle(["true"], terminal=True)
    res = ctx.cli("run", "-d", "--bundle", bundle2, cid2)
    assert res.returncode != 0 and "console-socket" in res.stderr, res.describe()


def test_run_keep_leaves_a_stopped_container(ctx):
    cid, bundle = ctx.bundle(["true"])
    res = ctx.cli("run", "--keep", "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    assert ctx.state(cid)["status"] == "stopped"
    assert ctx.leftover_cgroups(cid), "the cgroup goes only with delete"
    ctx.ok("kill", "--all", cid, "0")   # as runc: --all on a stopped container is no error
    assert ctx.cli("kill", cid, "0").returncode != 0
    ctx.ok("delete", cid)
    assert not ctx.state_entries(cid) and not ctx.leftover_cgroups(cid)


def test_exec_failures_exit_255_and_paused_containers(ctx):
    cid, _ = ctx.create(["sleep", "30"])
    ctx.ok("start", cid)
    assert ctx.cli("exec", cid, "no-such-binary").returncode == 255
    assert ctx.cli("exec", "no-such-container", "true").returncode == 255
    assert ctx.cli("exec", cid, "sh", "-c", "exit 7").returncode == 7
    process = ctx.tmp / "process.json"
    process.write_text(json.dumps({"args": ["id", "-u"], "cwd": "/", "env": ["PATH=/bin"]}))
    res = ctx.cli("exec", "--process", process, cid)
    assert (res.returncode, res.stdout.strip()) == (0, "0"), res.describe()   # no user: uid 0, as runc
    ctx.ok("pause", cid)
    res = ctx.cli("exec", cid, "true")
    assert res.returncode == 255 and "cannot exec in a paused container" in res.stderr, res.describe()
    resumer = subprocess.Popen(["sh", "-c", f"sleep 1; {ctx.runtime} --root {ctx.root} resume {cid}"])
    res = ctx.cli("exec", "--ignore-paused", cid, "echo", "ok", timeout=30)
    resumer.wait(timeout=30)
    assert (res.returncode, res.stdout.strip()) == (0, "ok"), res.describe()
    ctx.ok("delete", "--force", cid)


def test_help_topics_and_spec_namespaces(ctx):
    res = ctx.cli("foo", "-h", root=False)
    assert res.returncode != 0 and "No help topic for 'foo'" in res.stderr
    assert ctx.cli("run", "-h", root=False).returncode == 0
    d = ctx.tmp / "spec-ns"
    d.mkdir()
    ctx.ok("spec", root=False, cwd=d)
    types = [n["type"] for n in json.loads((d / "config.json").read_text())["linux"]["namespaces"]]
    pure_v2 = not h.v1_controllers()
    assert ("cgroup" in types) == pure_v2, types   # as runc spec: a cgroup namespace only on pure v2


def test_debug_lines_go_to_stderr_or_the_log(ctx):
    cid, bundle = ctx.bundle(["true"])
    res = ctx.cli("--debug", "run", "--bundle", bundle, cid)
    assert res.returncode == 0 and "level=debug" in res.stderr and "cloning the init" in res.stderr, res.describe()
    log = ctx.tmp / "debug.json"
    cid, bundle = ctx.bundle(["true"])
    res = ctx.cli("--log", log, "--log-format", "json", "--debug", "run", "--bundle", bundle, cid)
    assert res.returncode == 0 and "level=debug" not in res.stderr, res.describe()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all(line["level"] == "debug" for line in lines)
    assert any("signal completion" in line["msg"] for line in lines)
    res = ctx.cli("run", "--bundle", ctx.bundle(["true"])[1], ctx.ids[-1])
    assert "level=debug" not in res.stderr   # none without --debug


def test_exec_into_sub_cgroups(ctx):
    """runc's exec --cgroup [CONTROLLERS:]PATH: below the container's leaf only."""
    mem = [c for c in h.v1_controllers() if c.name == "memory"]
    if not mem:
        pytest.skip("this host has no v1 memory hierarchy")
    cid, _ = ctx.create(["sleep", "30"])
    ctx.ok("start", cid)
    leaf = mem[0] / h.cgroup_path_for(cid).lstrip("/")
    (leaf / "sub").mkdir()
    try:
        res = ctx.cli("exec", "--cgroup", "memory:sub", cid, "cat", "/proc/self/cgroup")
        assert res.returncode == 0, res.describe()
        assert any(line.endswith(":memory:" + h.cgroup_path_for(cid) + "/sub") or line.endswith("memory:/sub") for line in res.stdout.splitlines()), res.stdout
        res = ctx.cli("exec", "--cgroup", "..", cid, "true")
        assert res.returncode == 255 and "is not a sub cgroup path" in res.stderr, res.describe()
        res = ctx.cli("exec", "--cgroup", "nope", cid, "true")
        assert res.returncode == 255 and "no such file" in res.stderr, res.describe()
        res = ctx.cli("exec", "--cgroup", "whaaat:/", cid, "true")
        assert res.returncode == 255 and "unknown controller whaaat" in res.stderr, res.describe()
    finally:
        if (leaf / "sub").exists():
            (leaf / "sub").rmdir()
        ctx.ok("delete", "--force", cid)


def test_user_namespace_binds_a_source_out_of_its_reach(ctx):
    """A bind source under a 0700 host dir: the namespace's root (host uid
    100000) could not look it up; the host's root hands it over as a tree."""
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    private = ctx.tmp / "private"
    (private / "dir").mkdir(parents=True)
    os.chmod(private, 0o700)
    (private / "dir" / "foo.txt").write_text("inside\n")
    mount = {"destination": "/tmp/mount-1", "type": "bind", "source": str(private / "dir"), "options": ["bind"]}
    res = ctx.run(["cat", "/tmp/mount-1/foo.txt"], extra_namespaces=["user"], uid_mappings=mapping,
                  gid_mappings=mapping, extra_mounts=[mount])
    assert (res.returncode, res.stdout) == (0, "inside\n"), res.describe()
