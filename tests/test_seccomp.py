"""linux.seccomp on real containers: denied syscalls fail with the configured
errno, argument conditions select calls, SCMP_ACT_KILL kills with SIGSYS,
and capsa's default profile (Docker's policy) runs busybox but blocks what it
should. Also run against runc: CAPSA_TEST_RUNTIME=runc."""

from __future__ import annotations

import signal

import pytest

import helpers as h

from capsa.runtime.seccomp_default import default_seccomp

TMPFS = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}


def run_with(ctx, args, seccomp, **overrides):
    overrides.setdefault("extra_mounts", [TMPFS])
    cid, config = ctx.config(args, **overrides)
    if seccomp is not None:
        config["linux"]["seccomp"] = seccomp
    bundle = ctx.write_bundle(cid, config)
    return ctx.cli("run", "--bundle", bundle, cid)


def deny(names, action="SCMP_ACT_ERRNO", errno=None, args=None, default="SCMP_ACT_ALLOW", **extra):
    rule = {"names": names, "action": action}
    if errno is not None:
        rule["errnoRet"] = errno
    if args is not None:
        rule["args"] = args
    return {"defaultAction": default, "syscalls": [rule], **extra}


def sh(script):
    return ["sh", "-c", script]


def test_denied_syscall_returns_the_configured_errno(ctx):
    script = "mkdir /tmp/a; echo rc=$?"
    allowed = run_with(ctx, sh(script), None)
    assert allowed.ok and "rc=0" in allowed.stdout, allowed.describe()

    eperm = run_with(ctx, sh(script), deny(["mkdir", "mkdirat"], errno=1))
    assert eperm.ok, eperm.describe()
    assert "rc=1" in eperm.stdout and "Operation not permitted" in eperm.stderr, eperm.describe()

    enospc = run_with(ctx, sh(script), deny(["mkdir", "mkdirat"], errno=28))
    assert "No space left on device" in enospc.stderr, enospc.describe()


def test_errno_without_errnoret_is_eperm_and_other_syscalls_work(ctx):
    res = run_with(ctx, sh("echo hi > /tmp/f && cat /tmp/f; mkdir /tmp/a; echo rc=$?"),
                   deny(["mkdir", "mkdirat"]))
    assert res.ok, res.describe()
    assert "hi" in res.stdout and "rc=1" in res.stdout, res.describe()
    assert "Operation not permitted" in res.stderr


def test_filter_flags(ctx):
    if ctx.is_runc:
        pytest.skip("runc 1.1 refuses seccomp flags")
    flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
    res = run_with(ctx, sh("mkdir /tmp/a; echo rc=$?; grep Seccomp: /proc/self/status"),
                   deny(["mkdir", "mkdirat"], flags=flags))
    assert res.ok, res.describe()
    assert "rc=1" in res.stdout and "Seccomp:\t2" in res.stdout, res.describe()


def test_unknown_syscall_names_are_skipped(ctx):
    res = run_with(ctx, sh("mkdir /tmp/a; echo rc=$?"), deny(["no_such_syscall_x", "mkdir", "mkdirat"]))
    assert res.ok and "rc=1" in res.stdout, res.describe()


def test_argument_condition_selects_calls(ctx):
    # kill(pid, SIGUSR1) is denied; kill(pid, 0) still works.
    cond = [{"index": 1, "value": int(signal.SIGUSR1), "op": "SCMP_CMP_EQ"}]
    res = run_with(ctx, sh("kill -0 $$; echo zero=$?; kill -USR1 $$; echo usr1=$?"),
                   deny(["kill"], args=cond))
    assert res.ok, res.describe()
    assert "zero=0" in res.stdout and "usr1=1" in res.stdout, res.describe()


def test_masked_equal_condition(ctx):
    # kill(2) with bit 8 set in the signal number is denied: SIGUSR1 (10)
    # is, SIGCONT (18) and 0 are not. The spec's value is the mask.
    cond = [{"index": 1, "value": 8, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]
    res = run_with(ctx, sh("kill -0 $$; echo zero=$?; kill -CONT $$; echo cont=$?; kill -USR1 $$; echo usr1=$?"),
                   deny(["kill"], args=cond))
    assert res.ok, res.describe()
    assert "zero=0" in res.stdout and "cont=0" in res.stdout and "usr1=1" in res.stdout, res.describe()


def test_kill_action_kills_with_sigsys(ctx):
    res = run_with(ctx, ["mkdir", "/tmp/a"], deny(["mkdir", "mkdirat"], action="SCMP_ACT_KILL"))
    assert res.returncode == 128 + signal.SIGSYS, res.describe()


def test_default_action_errno_with_allow_list(ctx):
    # The default profile's policy: everything not allowed fails.
    profile = default_seccomp(h.DEFAULT_CAPS)
    res = run_with(ctx, sh("echo hello; ls / > /dev/null && echo listed"), profile)
    assert res.ok, res.describe()
    assert "hello" in res.stdout and "listed" in res.stdout


def test_default_profile_blocks_unshare_and_namespace_clones(ctx):
    script = "unshare -U true; echo rc=$?"
    without = run_with(ctx, sh(script), None)
    assert "rc=0" in without.stdout, "a user namespace should work without the profile\n" + without.describe()
    profile = default_seccomp(h.DEFAULT_CAPS)
    res = run_with(ctx, sh(script), profile)
    assert res.ok, res.describe()
    assert "rc=0" not in res.stdout, res.describe()
    assert "Operation not permitted" in res.stderr, res.describe()


def test_default_profile_allows_privileged_calls_with_the_capability(ctx):
    caps = h.DEFAULT_CAPS + ["CAP_SYS_ADMIN"]
    res = run_with(ctx, sh("unshare -U true; echo rc=$?"), default_seccomp(caps), capabilities=caps)
    assert res.ok and "rc=0" in res.stdout, res.describe()


def test_default_profile_shape():
    p = default_seccomp(h.DEFAULT_CAPS, machine="x86_64")
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = set(p["syscalls"][0]["names"])
    assert {"read", "write", "execve", "arch_prctl"} <= allowed
    assert not {"mount", "unshare", "setns", "keyctl", "add_key", "kexec_load", "reboot"} & allowed
    clone3 = [r for r in p["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 and clone3[0]["errnoRet"] == 38
    admin = default_seccomp(h.DEFAULT_CAPS + ["CAP_SYS_ADMIN"], machine="x86_64")
    assert {"mount", "unshare", "setns", "clone3"} <= set(admin["syscalls"][0]["names"])
    assert not [r for r in admin["syscalls"] if r["names"] == ["clone3"] and r["action"] != "SCMP_ACT_ALLOW"]


def test_unknown_action_is_a_clear_error(ctx):
    cid, config = ctx.config(["true"])
    config["linux"]["seccomp"] = deny(["mkdir"], action="SCMP_ACT_BOGUS")
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    ctx.assert_error(res, capsa_mentions=["SCMP_ACT_BOGUS"])
    ctx.assert_nothing_left(cid)


def test_notify_is_refused_clearly(ctx):
    if ctx.is_runc:
        pytest.skip("runc supports user notification with a listener")
    cid, config = ctx.config(["true"])
    config["linux"]["seccomp"] = deny(["mkdir"], action="SCMP_ACT_NOTIFY")
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    ctx.assert_error(res, mentions=["SCMP_ACT_NOTIFY"])
    ctx.assert_nothing_left(cid)


def test_filter_without_no_new_privileges_for_a_non_root_user(ctx):
    # Without no_new_privs the filter must be loaded while CAP_SYS_ADMIN is
    # still held, before the switch to the container's user.
    res = run_with(ctx, sh("id -u; mkdir /tmp/a; echo rc=$?"), deny(["mkdir", "mkdirat"], errno=28),
                   no_new_privileges=False, user={"uid": 1000, "gid": 1000})
    assert res.ok, res.describe()
    assert res.stdout.split()[0] == "1000" and "rc=1" in res.stdout, res.describe()
    assert "No space left on device" in res.stderr, res.describe()


def test_compiled_filter_is_reused_and_still_enforced(ctx):
    if ctx.is_runc:
        pytest.skip("the compiled-filter cache is capsa's")
    profile = deny(["mkdir", "mkdirat"], errno=28)
    for _ in range(2):
        res = run_with(ctx, sh("mkdir /tmp/a; echo rc=$?"), profile)
        assert res.ok and "rc=1" in res.stdout and "No space left on device" in res.stderr, res.describe()
    cache = ctx.root / "@seccomp-cache"
    assert len(list(cache.iterdir())) == 1
    assert cache.stat().st_mode & 0o077 == 0, "the cache must be root's alone"
    assert not ctx.ok("list", "--format", "json").stdout.strip("[]\n"), "the cache is not a container"


@pytest.mark.parametrize("no_new_privs", [True, False])
def test_exec_gets_the_containers_filter(ctx, no_new_privs):
    """An exec'd process runs under the container's filter, loaded last before
    execve with no_new_privs and before the capabilities drop without it."""
    cid, config = ctx.config(["sleep", "1000"], extra_mounts=[TMPFS])
    config["linux"]["seccomp"] = deny(["mkdir", "mkdirat"], errno=1)
    config["process"]["noNewPrivileges"] = no_new_privs
    bundle = ctx.write_bundle(cid, config)
    ctx.ok("create", "--bundle", bundle, cid)
    ctx.ok("start", cid)
    res = ctx.cli("exec", cid, "sh", "-c", "mkdir /tmp/a; echo rc=$?; grep Seccomp: /proc/self/status")
    assert res.ok, res.describe()
    assert "rc=1" in res.stdout and "Seccomp:\t2" in res.stdout, res.describe()
    assert "Operation not permitted" in res.stderr, res.describe()
