"""Container escapes, tried as an attacker would, through every entry point
they apply to: capsa-runtime, the Python API, `capsa run` and images.

- a cwd through a leaked host fd (`/proc/self/fd/N`, runc's CVE-2024-21626);
- the waiting init of a created container holding host fds;
- the host binary through /proc/<init>/exe (runc's CVE-2019-5736), only
  ever against a copy of the binary;
- an image WorkingDir with `..`, and image symlinks followed on the host.

Each attack would print a secret of the host; the tests assert it never
appears and that nothing of the host changed."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

import helpers as h
import image_fixtures as imgs

# A cwd of /proc/self/fd/N for every N an inherited fd could have.
LEAK_FDS = range(3, 16)
CLIMB = "../" * 12


@pytest.fixture
def secret():
    """A host file the container must never read: (path relative to /, content)."""
    token = uuid.uuid4().hex
    path = Path(f"/tmp/capsa-secret-{token[:12]}")
    path.write_text(f"host secret {token}\n")
    yield str(path).lstrip("/"), token
    path.unlink(missing_ok=True)


def _cwd_attack(rel: str) -> list[str]:
    return ["sh", "-c", f"cat {CLIMB}{rel} 2>/dev/null; true"]


# ------------------------------------------------------------------- the cwd

def test_runtime_run_with_a_leaked_fd_cwd(ctx, secret):
    rel, token = secret
    for n in LEAK_FDS:
        res = ctx.run(_cwd_attack(rel), cwd=f"/proc/self/fd/{n}")
        assert token not in res.stdout + res.stderr, f"cwd /proc/self/fd/{n} reached the host"
        if res.returncode != 0:
            assert "cwd" in res.stderr, res.describe()


def test_runtime_exec_with_a_leaked_fd_cwd(ctx, secret):
    rel, token = secret
    cid, _ = ctx.create(["sleep", "30"])
    ctx.ok("start", cid)
    for n in LEAK_FDS:
        res = ctx.cli("exec", "--cwd", f"/proc/self/fd/{n}", cid, *_cwd_attack(rel))
        assert token not in res.stdout + res.stderr, f"exec --cwd /proc/self/fd/{n} reached the host"
    ctx.ok("delete", "--force", cid)


def test_python_api_with_a_leaked_fd_cwd(ctx, secret, tmp_path):
    """The API's caller is a Python process with fds of its own (a directory among them)."""
    from capsa.runtime import ContainerError, Runtime

    rel, token = secret
    held = os.open("/", os.O_RDONLY | os.O_DIRECTORY)  # what a caller may hold
    rt = Runtime(root=str(ctx.root))
    try:
        for n in list(LEAK_FDS) + [held]:
            cid, bundle = ctx.bundle(["sh", "-c", f"cat {CLIMB}{rel} > /dev/null 2>&1 && exit 42; exit 0"],
                                     cwd=f"/proc/self/fd/{n}")
            try:
                code = rt.run(cid, str(bundle))
            except ContainerError as e:
                assert "cwd" in str(e)
                continue
            assert code != 42, f"cwd /proc/self/fd/{n} reached the host"
    finally:
        os.close(held)


def _capsa_image(capsa, tag: str, links: dict[str, str], changes: list[str], base: Path) -> None:
    """Import busybox with `links` (path -> symlink target, replacing what is there) as `tag`."""
    rootfs = imgs.busybox_rootfs(base / f"rootfs-{uuid.uuid4().hex[:8]}")
    for name, target in links.items():
        p = rootfs / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        os.symlink(target, p)
    tar = base / f"{tag.replace(':', '-')}.tar"
    tar.write_bytes(imgs.tar_of(rootfs))
    args = ["import"] + [a for c in changes for a in ("-c", c)] + [str(tar), tag]
    res = capsa(*args)
    assert res.returncode == 0, res.describe()
    shutil.rmtree(rootfs)


@pytest.fixture(scope="module")
def escape_root(base_dir):
    return imgs.busybox_store(base_dir, "capsa-escape-root")


@pytest.fixture
def capsa(escape_root):
    with imgs.capsa_cli(escape_root) as run:
        yield run


def test_capsa_run_workdir_through_a_leaked_fd(capsa, secret):
    rel, token = secret
    for n in LEAK_FDS:
        res = capsa("run", "--rm", "-w", f"/proc/self/fd/{n}", "busybox", *_cwd_attack(rel))
        assert token not in res.stdout + res.stderr, f"-w /proc/self/fd/{n} reached the host"


def test_image_workdir_through_a_leaked_fd(capsa, secret, tmp_path):
    rel, token = secret
    for n in (3, 4, 5, 6, 7, 8):
        tag = f"evil-workdir-{n}:1"
        _capsa_image(capsa, tag, {}, [f"WORKDIR /proc/self/fd/{n}"], tmp_path)
        res = capsa("run", "--rm", tag, *_cwd_attack(rel))
        assert token not in res.stdout + res.stderr, f"image WORKDIR /proc/self/fd/{n} reached the host"
        capsa("rmi", tag)


def test_image_workdir_with_dotdot_stays_inside(capsa, tmp_path):
    """WORKDIR /../../../../tmp/x is /tmp/x of the container, made there, never on the host."""
    name = f"capsa-wd-{uuid.uuid4().hex[:10]}"
    host = Path("/tmp") / name
    assert not host.exists()
    _capsa_image(capsa, "evil-dotdot:1", {}, [f"WORKDIR /../../../../../tmp/{name}/sub"], tmp_path)
    try:
        res = capsa("run", "--rm", "evil-dotdot:1", "pwd")
        assert res.returncode == 0, res.describe()
        assert res.stdout.strip() == f"/tmp/{name}/sub"
        assert not host.exists(), "the image's WorkingDir was made on the host"
        res = capsa("run", "--rm", "-w", f"/../../../tmp/{name}", "busybox", "pwd")
        assert res.stdout.strip() == f"/tmp/{name}" and not host.exists(), res.describe()
    finally:
        shutil.rmtree(host, ignore_errors=True)
        capsa("rmi", "evil-dotdot:1")


# ------------------------------------------- image symlinks, seen on the host

def test_image_etc_link_to_a_host_dir(capsa, tmp_path):
    """An image whose /etc is a link to a host dir: capsa neither reads the
    host's files there (the user lookup) nor creates files in it (the mount
    points of /etc/hosts, /etc/hostname, /etc/resolv.conf)."""
    host = Path(f"/tmp/capsa-etc-{uuid.uuid4().hex[:10]}")
    host.mkdir()
    (host / "passwd").write_text("root:x:0:0::/:/bin/sh\nhostonly:x:4242:4242::/:/bin/sh\n")
    try:
        _capsa_image(capsa, "evil-etc:1", {"etc": str(host)}, [], tmp_path)
        res = capsa("run", "--rm", "-u", "hostonly", "evil-etc:1", "id", "-u")
        assert "4242" not in res.stdout, "the user was looked up in the host's file"
        assert res.returncode == 125 and "unable to find user hostonly" in res.stderr, res.describe()
        res = capsa("run", "--rm", "evil-etc:1", "sh", "-c", "cat /etc/hostname >/dev/null && echo ran")
        assert res.stdout.strip() == "ran", res.describe()
        assert sorted(os.listdir(host)) == ["passwd"], "capsa created files in the host dir"
    finally:
        shutil.rmtree(host, ignore_errors=True)
        capsa("rmi", "evil-etc:1")


def test_image_passwd_that_is_a_device(capsa, tmp_path):
    """/etc/passwd -> /dev/zero would never end if read through the host."""
    _capsa_image(capsa, "evil-passwd:1", {"etc/passwd": "/dev/zero"}, [], tmp_path)
    try:
        res = capsa("run", "--rm", "-u", "someone", "evil-passwd:1", "true", timeout=30)
        assert res.returncode == 125 and "unable to find user someone" in res.stderr, res.describe()
    finally:
        capsa("rmi", "evil-passwd:1")


# ------------------------------------------------- the waiting init's fds

def test_created_init_holds_no_host_fd(ctx, secret):
    """After create, the init waits for start: a process exec'd meanwhile
    must find nothing of the host through /proc/1/fd."""
    rel, token = secret
    cid, _ = ctx.create(["sleep", "30"])
    probe = ("for f in /proc/1/fd/*; do echo \"fd $f -> $(readlink $f)\"; "
             f"cat $f/{CLIMB}{rel} 2>/dev/null; ls $f/ 2>/dev/null | head -3; done; true")
    res = ctx.cli("exec", cid, "sh", "-c", probe)
    assert token not in res.stdout, res.describe()
    for line in res.stdout.splitlines():
        if line.startswith("fd ") and "->" in line:
            target = line.split("->", 1)[1].strip()
            assert not target.startswith(("/proc", "/sys", "/tmp", "/run")), f"init holds a host path: {line}"
    ctx.ok("delete", "--force", cid)


# ------------------------------------------------------ the host binary

ATTACK = ("head -c 1 /proc/1/exe > /dev/null 2>&1 || exit 9; exec 3</proc/1/exe; "
          "for i in 1 2 3 4 5 6 7 8 9 10; do (echo pwned > /proc/self/fd/3) 2>/dev/null && exit 0; sleep 0.1; done; exit 8")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_runtime_binary_is_out_of_reach(ctx, tmp_path):
    """A copy of capsa-runtime creates the container; a process exec'd into it
    tries to open /proc/1/exe and overwrite it once the runtime has exited."""
    copy = tmp_path / "capsa-runtime-copy"
    shutil.copy2(ctx.runtime, copy)
    before = _sha(copy)
    cid, bundle = ctx.bundle(["sleep", "30"])
    res = h.run_cmd([str(copy), "--root", str(ctx.root), "create", "--bundle", str(bundle), cid])
    assert res.returncode == 0, res.describe()
    res = ctx.cli("exec", cid, "sh", "-c", ATTACK)
    assert res.returncode == 9, f"/proc/1/exe was reachable: {res.describe()}"
    assert _sha(copy) == before, "the runtime binary was overwritten"
    ctx.ok("delete", "--force", cid)


def _python_copy(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of this interpreter's binary that runs with capsa importable."""
    real = Path(os.path.realpath(sys.executable))
    copy = tmp_path / "python-copy"
    shutil.copy2(real, copy)
    import capsa
    env = dict(os.environ, PYTHONHOME=sys.base_prefix,
               PYTHONPATH=os.pathsep.join([str(Path(capsa.__file__).parent.parent)] + [p for p in sys.path if "site-packages" in p]))
    return copy, env


def test_python_binary_is_out_of_reach(ctx, tmp_path):
    """The API's init is a clone of the caller: /proc/1/exe is python until
    the execve. Attacked on a copy of the interpreter."""
    copy, env = _python_copy(tmp_path)
    before = _sha(copy)
    cid, bundle = ctx.bundle(["sleep", "30"])
    script = (f"from capsa.runtime import Runtime\n"
              f"Runtime(root={str(ctx.root)!r}, spare_namespaces=False).create({cid!r}, {str(bundle)!r})\n")
    res = h.run_cmd([str(copy), "-c", script], env=env)
    assert res.returncode == 0, res.describe()
    res = ctx.cli("exec", cid, "sh", "-c", ATTACK)
    assert res.returncode == 9, f"/proc/1/exe was reachable: {res.describe()}"
    assert _sha(copy) == before, "the interpreter was overwritten"
    ctx.ok("delete", "--force", cid)


def test_caller_is_dumpable_again_after_a_start(ctx):
    """The caller is non-dumpable only around the clone."""
    from capsa.runtime import Runtime

    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_GET_DUMPABLE = 3
    assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
    rt = Runtime(root=str(ctx.root))
    cid, bundle = ctx.bundle(["true"])
    assert rt.run(cid, str(bundle)) == 0
    cid, bundle = ctx.bundle(["true"])
    rt.create(cid, str(bundle))
    assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
    rt.delete(cid, force=True)
