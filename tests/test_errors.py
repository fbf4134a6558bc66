"""Bad input: every failure is a clear message on stderr (no traceback), a
non-zero exit, and leaves nothing behind: no state entry for the id under
--root, no cgroup, no mount, no process."""

from __future__ import annotations

import json
import resource

import pytest

import helpers as h


def _missing_config(ctx, cid):
    bundle = ctx.tmp / f"bundle-{cid}"
    bundle.mkdir()
    return bundle


def _invalid_json(ctx, cid):
    return ctx.write_bundle(cid, '{"ociVersion": "1.0.2", "process": {not json')


def _no_process(ctx, cid):
    _, config = ctx.config(["true"], cid)
    del config["process"]
    return ctx.write_bundle(cid, config)


def _empty_args(ctx, cid):
    _, config = ctx.config([], cid)
    return ctx.write_bundle(cid, config)


def _args_not_a_list(ctx, cid):
    _, config = ctx.config(["true"], cid)
    config["process"]["args"] = "true"
    return ctx.write_bundle(cid, config)


def _missing_rootfs(ctx, cid):
    _, config = ctx.config(["true"], cid, root_path=str(ctx.tmp / "no-such-rootfs"))
    return ctx.write_bundle(cid, config)


def _unknown_executable(ctx, cid):
    _, config = ctx.config(["nosuchcmd", "arg"], cid)
    return ctx.write_bundle(cid, config)


def _missing_namespace_path(ctx, cid):
    namespaces = [n for n in h.DEFAULT_NAMESPACES if n != "network"]
    namespaces.append({"type": "network", "path": "/proc/999999/ns/net"})
    _, config = ctx.config(["true"], cid, namespaces=namespaces)
    return ctx.write_bundle(cid, config)


def _unknown_namespace_type(ctx, cid):
    _, config = ctx.config(["true"], cid, extra_namespaces=["bogus"])
    return ctx.write_bundle(cid, config)


def _hostname_without_uts(ctx, cid):
    namespaces = [n for n in h.DEFAULT_NAMESPACES if n != "uts"]
    _, config = ctx.config(["true"], cid, namespaces=namespaces, hostname="nope")
    return ctx.write_bundle(cid, config)


def _relative_cwd(ctx, cid):
    _, config = ctx.config(["true"], cid, cwd="etc")
    return ctx.write_bundle(cid, config)


def _unknown_rlimit(ctx, cid):
    _, config = ctx.config(["true"], cid,
                           rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}])
    return ctx.write_bundle(cid, config)


def _rlimit_above_hard(ctx, cid):
    # root here lacks CAP_SYS_RESOURCE: raising a hard limit fails with EPERM
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_NOFILE hard limit is unlimited here")
    _, config = ctx.config(["true"], cid, rlimits=[
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1000}])
    return ctx.write_bundle(cid, config)


def _bind_source_missing(ctx, cid):
    _, config = ctx.config(["true"], cid, extra_mounts=[
        {"destination": "/mnt", "type": "bind", "source": str(ctx.tmp / "no-such-src"),
         "options": ["rbind"]}])
    return ctx.write_bundle(cid, config)


# (name, bundle maker, words the message must contain, more words capsa's
# message must contain where runc's wording differs)
BAD_BUNDLES = [
    ("missing-config", _missing_config, ["config.json"], []),
    ("invalid-json", _invalid_json, [], ["config.json"]),
    ("no-process", _no_process, ["process"], []),
    ("empty-args", _empty_args, ["args"], []),
    ("args-not-a-list", _args_not_a_list, [], ["config.json"]),
    ("missing-rootfs", _missing_rootfs, ["no-such-rootfs"], []),
    ("unknown-executable", _unknown_executable, ["nosuchcmd"], []),
    ("missing-namespace-path", _missing_namespace_path, ["/proc/999999/ns/net"], []),
    ("unknown-namespace-type", _unknown_namespace_type, ["bogus"], []),
    ("hostname-without-uts", _hostname_without_uts, ["hostname"], []),
    ("relative-cwd", _relative_cwd, ["cwd"], []),
    ("unknown-rlimit", _unknown_rlimit, ["RLIMIT_BOGUS"], []),
    ("rlimit-above-hard-limit", _rlimit_above_hard, ["rlimit"], ["RLIMIT_NOFILE"]),
    ("bind-source-missing", _bind_source_missing, ["no-such-src"], []),
]


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("name,make_bundle,mentions,capsa_mentions", BAD_BUNDLES,
                         ids=[b[0] for b in BAD_BUNDLES])
def test_bad_bundle(ctx, command, name, make_bundle, mentions, capsa_mentions):
    cid = ctx.new_id()
    ctx.track_cgroup(h.cgroup_path_for(cid))
    bundle = make_bundle(ctx, cid)
    res = ctx.cli(command, "--bundle", bundle, cid, timeout=20)
    ctx.assert_error(res, mentions=mentions, capsa_mentions=capsa_mentions)
    state = ctx.cli("state", cid)
    assert state.returncode != 0, f"a failed {command} left a container:\n{state.describe()}"
    ctx.assert_nothing_left(cid)


def test_bad_bundle_json_log(ctx):
    """With --log F --log-format json the error is a JSON line in F."""
    cid = ctx.new_id()
    log = ctx.tmp / "log.json"
    bundle = _missing_rootfs(ctx, cid)
    res = ctx.cli("--log", log, "--log-format", "json", "create", "--bundle", bundle, cid)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    errors = [l for l in lines if l.get("level") == "error"]
    assert errors, log.read_text()
    assert "no-such-rootfs" in errors[-1]["msg"]
    assert errors[-1]["time"]
    ctx.assert_nothing_left(cid)


def test_id_already_exists(ctx):
    shared = ctx.shared_dir()
    cid, bundle = ctx.create(["sh", "-c", "echo > /shared/started; sleep 1000"],
                             extra_mounts=[ctx.bind_mount(shared)])
    first = ctx.state(cid)
    _, other = ctx.bundle(["true"], ctx.new_id())
    res = ctx.cli("create", "--bundle", other, cid)
    ctx.assert_error(res, capsa_mentions=[cid])
    res = ctx.cli("run", "--bundle", other, cid)
    ctx.assert_error(res, capsa_mentions=[cid])
    # the first container is untouched and still works
    again = ctx.state(cid)
    assert again["status"] == "created"
    assert again["pid"] == first["pid"]
    assert again["bundle"] == str(bundle)
    assert h.pid_alive(first["pid"])
    ctx.ok("start", cid)
    h.wait_for((shared / "started").exists, 10, what="the first container to run")
    assert ctx.state(cid)["status"] == "running"
    ctx.ok("delete", "--force", cid)
    ctx.assert_nothing_left(cid)


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", ".", ".."])
def test_invalid_id(ctx, bad_id):
    _, bundle = ctx.bundle(["true"], ctx.new_id())
    res = ctx.cli("create", "--bundle", bundle, bad_id)
    ctx.assert_error(res)
    assert not (ctx.tmp / "escape").exists()
    listed = json.loads(ctx.ok("list", "--format", "json").stdout)
    assert not listed, listed
    assert not ctx.root.exists() or not any(ctx.root.iterdir()), list(ctx.root.iterdir())


@pytest.mark.parametrize("argv", [
    ["delete"], ["delete", "--force"], ["state"], ["start"], ["kill"], ["kill", "--all"],
    ["ps"],
], ids=lambda a: "-".join(x.strip("-") for x in a))
def test_unknown_id(ctx, argv):
    res = ctx.cli(*argv, "no-such-container")
    if argv == ["delete", "--force"] and res.returncode == 0:
        return  # runc: delete --force of an unknown id is not an error
    ctx.assert_error(res, capsa_mentions=["no-such-container"])


def test_systemd_cgroup_fails_clearly(ctx):
    cid, bundle = ctx.bundle(["true"])
    res = ctx.cli("--systemd-cgroup", "create", "--bundle", bundle, cid)
    ctx.assert_error(res)
    if not ctx.is_runc:
        assert "systemd" in res.stderr.lower(), res.describe()
    assert ctx.cli("state", cid).returncode != 0
    ctx.assert_nothing_left(cid)


def test_unknown_command_and_flag(ctx):
    ctx.assert_error(ctx.cli("frobnicate"))
    cid, bundle = ctx.bundle(["true"])
    ctx.assert_error(ctx.cli("create", "--no-such-flag", "--bundle", bundle, cid))
    assert ctx.cli("state", cid).returncode != 0
    ctx.assert_nothing_left(cid)


def test_create_without_id(ctx):
    _, bundle = ctx.bundle(["true"], ctx.new_id())
    ctx.assert_error(ctx.cli("create", "--bundle", bundle))


def test_kill_stopped_container(ctx):
    cid, _ = ctx.create(["true"])
    ctx.ok("start", cid)
    ctx.wait_status(cid, "stopped")
    res = ctx.cli("kill", cid, "KILL")
    if res.returncode != 0:
        ctx.assert_error(res)
    ctx.ok("delete", cid)
    ctx.assert_nothing_left(cid)


def test_console_socket_missing(ctx):
    cid, bundle = ctx.bundle(["true"], terminal=True)
    res = ctx.cli("create", "--console-socket", ctx.tmp / "no-such.sock", "--bundle",
                  bundle, cid, timeout=20)
    ctx.assert_error(res, mentions=["no-such.sock"])
    ctx.assert_nothing_left(cid)


def test_terminal_without_console_socket(ctx):
    cid, bundle = ctx.bundle(["true"], terminal=True)
    res = ctx.cli("create", "--bundle", bundle, cid, timeout=20)
    ctx.assert_error(res)
    ctx.assert_nothing_left(cid)
