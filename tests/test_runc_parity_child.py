"""What runc's init does between the clone and the execve, done as runc
does it (items of runc's own integration suite): proc/sysfs never on a
link, stdio handed to the process's user, a read-only /dev, the -ENOSYS
seccomp stub, startContainer hooks under the filter, createContainer hooks
in the rootfs, --no-pivot hiding the host's procfs, seccomp user
notification."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers as h


def _rootfs_with(ctx, name="rootfs") -> Path:
    return ctx.own_rootfs(name)


@pytest.mark.parametrize("dest", ["proc", "sys"])
def test_pseudo_filesystem_on_a_symlink_is_refused(ctx, dest):
    """runc's mask.bats: an image whose /proc (or /sys) is a link gets no
    procfs (sysfs) through it: refused before anything is made."""
    rootfs = _rootfs_with(ctx)
    target = rootfs / dest
    shutil.rmtree(target)
    target.symlink_to("/symlink")
    cid, bundle = ctx.bundle(["true"], root_path=str(rootfs))
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode != 0, res.describe()
    fstype = "proc" if dest == "proc" else "sysfs"
    assert f'filesystem "{fstype}" must be mounted on ordinary directory' in res.stderr, res.describe()
    ctx.assert_nothing_left(cid, rootfs)


def test_stdio_is_chowned_to_the_process_user(ctx):
    """runc's fixStdioPermissions: a non-root process owns its stdio (a pipe
    here, the pty in tty.bats); /dev/null is left alone."""
    script = "stat -L -c %u /proc/self/fd/1; stat -L -c %u /proc/self/fd/0"
    res = ctx.run(["sh", "-c", script], user={"uid": 1000, "gid": 1000})
    assert res.returncode == 0, res.describe()
    out, null_owner = res.stdout.split()
    assert out == "1000"
    assert null_owner == "0", "the host's /dev/null must not be chowned"
    assert os.stat("/dev/null").st_uid == 0


def test_readonly_dev_mount(ctx):
    """runc's mounts.bats "[ro /dev mount]": /dev is mounted writable for
    devpts and the device nodes, and remounted read-only at the end."""
    mounts = [dict(m) for m in h.DEFAULT_MOUNTS]
    for m in mounts:
        if m["destination"] == "/dev":
            m["options"] = m["options"] + ["ro"]
    script = "grep '^tmpfs /dev ' /proc/mounts; test -c /dev/null && test -d /dev/pts && echo nodes; touch /dev/x 2>&1 || true"
    res = ctx.run(["sh", "-c", script], mounts=mounts)
    assert res.returncode == 0, res.describe()
    lines = res.stdout.splitlines()
    assert " ro," in lines[0], lines
    assert "nodes" in lines
    assert "Read-only file system" in res.stdout


ENOSYS_TEST = r"""
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long a = syscall(1000);
    int ea = errno;
    long b = syscall(SYS_getppid);
    int eb = errno;
    printf("%ld %d %ld %d\n", a, ea, b, eb);
    return 0;
}
"""

STATIC_ALLOW = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
                "prlimit64", "mprotect", "readlinkat", "readlink", "getrandom", "write", "writev",
                "exit_group", "exit", "newfstatat", "fstat", "uname", "ioctl", "openat", "close",
                "read", "mmap", "munmap", "futex", "lseek", "rt_sigaction", "rt_sigprocmask",
                "sigaltstack", "statx"]


def _static_binary(ctx, rootfs: Path, source: str, name: str) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = ctx.tmp / f"{name}.c"
    src.write_text(source)
    out = rootfs / name
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a static test binary: {r.stderr[-300:]}")
    os.chmod(out, 0o755)
    return f"/{name}"


def test_seccomp_syscall_above_the_profile_is_enosys(ctx):
    """runc's seccomp.bats "-ENOSYS handling": a syscall numbered above every
    one the profile names fails with ENOSYS (what an older kernel says), a
    known one not allowed gets the default action (EPERM)."""
    rootfs = _rootfs_with(ctx)
    exe = _static_binary(ctx, rootfs, ENOSYS_TEST, "enosys_test")
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO",
               "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "syscalls": [{"names": STATIC_ALLOW, "action": "SCMP_ACT_ALLOW"}]}
    cid, config = ctx.config([exe], root_path=str(rootfs))
    config["linux"]["seccomp"] = seccomp
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    a, ea, b, eb = res.stdout.split()
    assert (a, int(ea)) == ("-1", 38), res.stdout  # ENOSYS
    assert (b, int(eb)) == ("-1", 1), res.stdout  # EPERM, the default


def test_start_container_hook_runs_under_the_seccomp_filter(ctx):
    """runc's seccomp.bats "(startContainer hook)": the hook is killed by the
    filter (mkdir is SCMP_ACT_KILL), and the start fails saying so."""
    shared = ctx.shared_dir()
    cid, config = ctx.config(["true"])
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                  "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                                  "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}]}
    config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "mkdir /tmp/hook-dir"]}]}
    config["mounts"].append(ctx.bind_mount(shared))
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode != 0, res.describe()
    assert "error running hook" in res.stderr and "bad system call" in res.stderr, res.describe()
    ctx.assert_nothing_left(cid)


def test_create_container_hook_starts_in_the_rootfs(ctx):
    """runc's hooks.bats: a createContainer hook runs with the rootfs as its
    cwd (`touch ./lib/x`)."""
    shared = ctx.shared_dir()
    cid, config = ctx.config(["true"])
    config["hooks"] = {"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", f"pwd -P > {shared}/cwd"]}]}
    bundle = ctx.write_bundle(cid, config)
    res = ctx.cli("run", "--bundle", bundle, cid)
    assert res.returncode == 0, res.describe()
    assert (shared / "cwd").read_text().strip() == str(ctx.rootfs.resolve())


def test_no_pivot_does_not_expose_the_host_proc(ctx):
    """runc's no_pivot.bats: with --no-pivot the host's /proc stays in the
    container's mount namespace; unless it is unmounted first, a user
    namespace in the container may mount a fresh (unmasked) procfs."""
    script = "mount -t proc none /proc && echo mounted"
    cid, bundle = ctx.bundle(["unshare", "-mrpf", "sh", "-c", script])
    res = ctx.cli("run", "--no-pivot", "--bundle", bundle, cid)
    assert res.returncode != 0, res.describe()
    assert "mounted" not in res.stdout
    assert "permission denied" in (res.stdout + res.stderr).lower(), res.describe()
    # The host's own /proc is untouched.
    assert Path("/proc/self/status").exists()
