"""The rest of config.json's linux section on real containers: sysctl,
device cgroup rules (v1, and v2 through the cgroup2 view), oomScoreAdj,
personality, intelRdt. Also against runc: CAPSA_TEST_RUNTIME=runc."""

from __future__ import annotations

import os

import pytest

import helpers as h


def sh(script):
    return ["sh", "-c", script]


def run_config(ctx, args, edit, **overrides):
    cid, config = ctx.config(args, **overrides)
    edit(config)
    bundle = ctx.write_bundle(cid, config)
    return cid, ctx.cli("run", "--bundle", bundle, cid)


def test_namespaced_sysctls_are_visible_inside(ctx):
    def edit(c):
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789",
                                "net/ipv4/ip_default_ttl": "42"}
    _, res = run_config(ctx, sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax "
                                "/proc/sys/net/ipv4/ip_default_ttl"), edit)
    assert res.ok, res.describe()
    assert res.stdout.split() == ["1", "123456789", "42"], res.describe()
    # The host's values are untouched.
    assert open("/proc/sys/kernel/shmmax").read().strip() != "123456789"


@pytest.mark.parametrize("key", ["kernel.pid_max", "vm.swappiness", "fs.file-max"])
def test_host_wide_sysctl_is_refused(ctx, key):
    cid, res = run_config(ctx, ["true"], lambda c: c["linux"].__setitem__("sysctl", {key: "1"}))
    ctx.assert_error(res, mentions=[key], capsa_mentions=["namespace"])
    ctx.assert_nothing_left(cid)


def test_net_sysctl_without_network_namespace_is_refused(ctx):
    namespaces = [n for n in h.DEFAULT_NAMESPACES if n != "network"]
    cid, res = run_config(ctx, ["true"], lambda c: c["linux"].__setitem__("sysctl", {"net.ipv4.ip_forward": "1"}),
                          namespaces=namespaces)
    ctx.assert_error(res, mentions=["net.ipv4.ip_forward"])
    ctx.assert_nothing_left(cid)


LOOP = "/dev/loop0"


def device_rules(allow_loop: bool):
    rules = [{"allow": False, "access": "rwm"}]
    if allow_loop:
        st = os.stat(LOOP)
        rules.append({"allow": True, "type": "b", "major": os.major(st.st_rdev),
                      "minor": os.minor(st.st_rdev), "access": "r"})
    return rules


def device_check(ctx, allow_loop: bool):
    if not os.path.exists(LOOP):
        pytest.skip(f"{LOOP} is needed as a harmless block device")
    st = os.stat(LOOP)

    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/blk", "type": "b", "major": os.major(st.st_rdev),
                                  "minor": os.minor(st.st_rdev), "fileMode": 0o600, "uid": 0, "gid": 0}]
    _, res = run_config(ctx, sh("true < /dev/blk && echo opened; echo x > /dev/null && echo null-ok"), edit,
                        resources={"devices": device_rules(allow_loop)})
    assert res.ok, res.describe()
    assert "null-ok" in res.stdout, res.describe()
    return res


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/devices"), reason="no v1 devices hierarchy")
def test_v1_denied_device_cannot_be_opened(ctx):
    denied = device_check(ctx, allow_loop=False)
    assert "opened" not in denied.stdout and "Operation not permitted" in denied.stderr, denied.describe()
    allowed = device_check(ctx, allow_loop=True)
    assert "opened" in allowed.stdout, allowed.describe()


@pytest.mark.cgroup2
def test_v2_device_rules_are_enforced_by_bpf(ctx2):
    denied = device_check(ctx2, allow_loop=False)
    assert "opened" not in denied.stdout and "Operation not permitted" in denied.stderr, denied.describe()
    allowed = device_check(ctx2, allow_loop=True)
    assert "opened" in allowed.stdout, allowed.describe()


def test_oom_score_adj_is_set(ctx):
    _, res = run_config(ctx, ["cat", "/proc/self/oom_score_adj"],
                        lambda c: c["process"].__setitem__("oomScoreAdj", 512))
    assert res.ok and res.stdout.strip() == "512", res.describe()


def test_personality_linux32(ctx):
    if ctx.is_runc:
        pytest.skip("runc 1.1 ignores linux.personality")
    _, res = run_config(ctx, ["uname", "-m"],
                        lambda c: c["linux"].__setitem__("personality", {"domain": "LINUX32"}))
    assert res.ok and res.stdout.strip() == "i686", res.describe()
    _, res = run_config(ctx, ["uname", "-m"],
                        lambda c: c["linux"].__setitem__("personality", {"domain": "LINUX"}))
    assert res.ok and res.stdout.strip() == os.uname().machine, res.describe()


def test_personality_applies_to_exec(ctx):
    if ctx.is_runc:
        pytest.skip("runc 1.1 ignores linux.personality")
    cid, config = ctx.config(["sleep", "1000"])
    config["linux"]["personality"] = {"domain": "LINUX32"}
    ctx.ok("create", "--bundle", ctx.write_bundle(cid, config), cid)
    ctx.ok("start", cid)
    assert ctx.ok("exec", cid, "uname", "-m").stdout.strip() == "i686"
    ctx.ok("delete", "--force", cid)


def test_intel_rdt_is_refused(ctx):
    cid, res = run_config(ctx, ["true"],
                          lambda c: c["linux"].__setitem__("intelRdt", {"closID": "capsa", "l3CacheSchema": "L3:0=f"}))
    ctx.assert_error(res, capsa_mentions=["intelRdt"])
    ctx.assert_nothing_left(cid)


def _allow_all_but_loop_read(ctx):
    if not os.path.exists(LOOP):
        pytest.skip(f"{LOOP} is needed as a harmless block device")
    st = os.stat(LOOP)
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    rules = [{"allow": True, "access": "rwm"},
             {"allow": False, "type": "b", "major": major, "minor": minor, "access": "r"}]

    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/blk", "type": "b", "major": major, "minor": minor,
                                  "fileMode": 0o600, "uid": 0, "gid": 0}]
    _, res = run_config(ctx, sh("true < /dev/blk && echo read-ok; true > /dev/blk && echo write-ok; exit 0"),
                        edit, resources={"devices": rules})
    assert res.ok, res.describe()
    # The last matching rule decides: reading is denied, writing is not.
    # (Opening for both differs: v1 denies any overlap with a deny rule, the
    # v2 programs of runc and capsa match a rule only if it covers every
    # requested access.)
    assert "read-ok" not in res.stdout and "write-ok" in res.stdout, res.describe()


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/devices"), reason="no v1 devices hierarchy")
def test_v1_later_rule_overrides_an_allow_all(ctx):
    _allow_all_but_loop_read(ctx)


@pytest.mark.cgroup2
def test_v2_later_rule_overrides_an_allow_all(ctx2):
    _allow_all_but_loop_read(ctx2)


def test_device_already_in_the_rootfs_is_replaced_not_opened(ctx):
    """Without a /dev tmpfs, a config device made by an earlier run is still
    in the (writable) rootfs: it is replaced by a new node, never opened (a
    fifo with no reader would block the init for good)."""
    rootfs = ctx.own_rootfs()

    def edit(c):
        c["root"] = {"path": str(rootfs), "readonly": False}
        c["mounts"] = [m for m in c["mounts"] if not m["destination"].startswith("/dev")]
        c["linux"]["devices"] = [{"path": "/dev/capsa-fifo", "type": "p", "fileMode": 0o600, "uid": 0, "gid": 0}]
    for _ in range(2):
        _, res = run_config(ctx, sh("test -p /dev/capsa-fifo && echo fifo-ok"), edit)
        assert res.ok, res.describe()
        assert "fifo-ok" in res.stdout, res.describe()

