"""`capsa cp` against hostile containers and hostile archives, on real
containers and the real kernel.

The rule under test (DESIGN.md, security rules): nothing of a container is
ever run or loaded by a host-privileged process, and every path inside a
container root is resolved inside it. The attacks:

- a container whose /etc/nsswitch.conf names a module of its own
  (`libnss_evil.so.2`, a shared library whose constructor leaves a marker):
  a copier that looks up users or groups from inside the container's root
  loads it as host root (Docker's CVE-2019-14271);
- symlinks in the container (`/escape -> /`, `/etc`-style links to host
  paths, `../../..` chains) when copying in and out;
- archives from the host side with device nodes, fifos, absolute symlinks,
  `..` members and members through a symlink the archive made itself;
- a 3 GiB (sparse) file, which must stream: the copier's peak RSS stays small.

Every container is removed by the capsa_cli fixture, even on failure, which
also fails the test if a mount is left under the store root.
"""

from __future__ import annotations

import io
import os
import resource
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import helpers as h
import image_fixtures as imgs
from image_fixtures import CAPSA

NSS_MARKER = "nss-pwned"
NSS_SOURCE = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Runs when the library is loaded: leaves a marker in whatever root the
   loading process has, and next to the library's own copy (both inside the
   container's root, which the test reads through the upper dir). */
__attribute__((constructor)) static void pwned(void) {
    char line[128];
    int n = snprintf(line, sizeof line, "loaded by pid %d uid %d\n", (int)getpid(), (int)getuid());
    int fd = open("/" "NSS_MARKER", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) { write(fd, line, n); close(fd); }
}
""".replace("NSS_MARKER", NSS_MARKER)
NSS_DIRS = ["lib", "lib64", "usr/lib", "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu",
            "lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu"]
SMALL_RSS = 200 * 1024 * 1024


# --------------------------------------------------------------------------
# Images and store
# --------------------------------------------------------------------------

def _evil_rootfs(dest: Path, work: Path) -> Path:
    """busybox plus a name service module of the container's own."""
    imgs.busybox_rootfs(dest)
    src = work / "evil.c"
    src.write_text(NSS_SOURCE)
    lib = work / "libnss_evil.so.2"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True)
    for d in NSS_DIRS:
        (dest / d).mkdir(parents=True, exist_ok=True)
        (dest / d / "libnss_evil.so.2").write_bytes(lib.read_bytes())
    (dest / "etc" / "nsswitch.conf").write_text("passwd: evil files\ngroup: evil files\nshadow: evil files\n")
    # Owners with and without names, so a copier has names to look up.
    (dest / "data").mkdir()
    (dest / "data" / "owned").write_text("owned by app\n")
    os.chown(dest / "data" / "owned", 1234, 2345)
    (dest / "data" / "nameless").write_text("owned by nobody known\n")
    os.chown(dest / "data" / "nameless", 4242, 4242)
    return dest


@pytest.fixture(scope="session")
def cp_root(base_dir):
    if not any(os.access(os.path.join(p, "gcc"), os.X_OK) for p in os.environ.get("PATH", "").split(":")):
        pytest.fail("gcc is needed to build the hostile NSS module (make apt installs it)")
    root = imgs.busybox_store(base_dir, "capsa-cp-root")
    from capsa.image.importer import import_tarball
    from capsa.image.reference import Reference
    from capsa.image.store import Store

    work = base_dir / "cp-evil-image"
    work.mkdir()
    rootfs = _evil_rootfs(work / "rootfs", work)
    store = Store.open(root)
    try:
        import_tarball(store, io.BytesIO(imgs.tar_of(rootfs)), tags=[str(Reference.parse("evil-nss:latest"))],
                       changes=imgs.BUSYBOX_CHANGES)
    finally:
        store.close()
    return root


@pytest.fixture
def capsa(cp_root):
    with imgs.capsa_cli(cp_root) as run:
        yield run


def _upper(capsa, name: str) -> Path:
    return capsa.root / "containers" / capsa.store.find(name).id / "upper"


def _container(capsa, name: str, state: str, image: str = "busybox", setup: str = "true") -> None:
    """A container in `state` (running, paused, created, exited) whose root has had `setup` run in it."""
    if state == "created":
        assert setup == "true", "a created container has run nothing"
        res = capsa("create", "--name", name, image, "sleep", "1000")
        assert res.returncode == 0, res.describe()
        return
    if state == "exited":
        res = capsa("run", "--name", name, image, "sh", "-c", setup)
        assert res.returncode == 0, res.describe()
        return
    res = capsa("run", "-d", "--name", name, image, "sh", "-c", f"{setup} && touch /ready && exec sleep 1000")
    assert res.returncode == 0, res.describe()
    h.wait_for(lambda: capsa("exec", name, "test", "-e", "/ready").returncode == 0, timeout=20, what=f"{name} ready")
    if state == "paused":
        assert capsa("pause", name).returncode == 0
        h.wait_for(lambda: capsa.store.status(capsa.store.find(name)).status == "paused", what="paused")


def _ok(res) -> None:
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.describe()


def _refused(res, *words) -> None:
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.describe()
    assert res.stderr.strip().splitlines()[-1].startswith("capsa: error:"), res.describe()
    for w in words:
        assert w in res.stderr, res.describe()


def _snapshot(d: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            body = p.read_bytes() if stat.S_ISREG(st.st_mode) else (os.readlink(p) if stat.S_ISLNK(st.st_mode) else "")
            out[str(p.relative_to(d))] = (st.st_mode, st.st_uid, body)
    return out


# --------------------------------------------------------------------------
# The container's name service modules are never loaded
# --------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["running", "paused", "created", "exited"])
def test_container_nss_modules_are_never_loaded(capsa, tmp_path, state):
    name = f"cp-nss-{state}-{os.getpid()}"
    _container(capsa, name, state, image="evil-nss")
    out = tmp_path / "out"
    out.mkdir()
    # Out: a file with a named owner, one with an unknown owner, a whole dir, the module itself.
    for src in ("/data/owned", "/data/nameless", "/data", "/etc", "/lib/libnss_evil.so.2"):
        _ok(capsa("cp", f"{name}:{src}", str(out)))
    assert (out / "data" / "owned").read_text() == "owned by app\n"
    assert (out / "etc" / "nsswitch.conf").is_file()
    # In: files and a dir, whose owners a copier would name.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f").write_text("from the host\n")
    os.chown(tmp_path / "in" / "f", 1234, 2345)
    _ok(capsa("cp", str(tmp_path / "in" / "f"), f"{name}:/tmp/"))
    _ok(capsa("cp", str(tmp_path / "in"), f"{name}:/"))
    _ok(capsa("cp", str(tmp_path / "in" / "f"), f"{name}:/data/owned"))
    # The Python API's tar of a container path: numeric owners, no names looked up
    # (data/owned was just replaced by a copy, root's).
    members = _tar_from_container(capsa, name, "/data")
    assert {m.name: (m.uid, m.uname) for m in members} == {
        "data": (0, ""), "data/owned": (0, ""), "data/nameless": (4242, "")}
    if state == "paused":
        assert capsa("unpause", name).returncode == 0
    marker = _upper(capsa, name) / NSS_MARKER
    assert not marker.exists(), f"the container's NSS module ran on the host side: {marker.read_text()}"
    assert not Path("/" + NSS_MARKER).exists()
    assert not (out / NSS_MARKER).exists()
    # What came in belongs to the container's root user, whatever the host owner was.
    for p in ("tmp/f", "in/f", "data/owned"):
        st = os.lstat(_upper(capsa, name) / p)
        assert (st.st_uid, st.st_gid) == (0, 0), p
        assert (_upper(capsa, name) / p).read_text() == "from the host\n"
    assert capsa("rm", "-f", name).returncode == 0


@pytest.mark.parametrize("state", ["running", "paused", "created", "exited"])
def test_files_dirs_and_symlinks_both_ways(capsa, tmp_path, state):
    """Links travel as links: into a container verbatim (they resolve in its
    root), out of it only when they stay inside the destination."""
    name = f"cp-trip-{state}-{os.getpid()}"
    _container(capsa, name, state)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"\x00binary\xffdata" * 1000)
    os.chmod(tree / "sub" / "f", 0o4750)
    os.symlink("sub/f", tree / "rel")
    os.symlink("/etc/motd", tree / "abs")
    os.link(tree / "sub" / "f", tree / "hard")
    os.symlink("tree/sub", tmp_path / "toplink")
    _ok(capsa("cp", str(tree), f"{name}:/"))
    _ok(capsa("cp", str(tmp_path / "toplink"), f"{name}:/tmp/"))
    upper = _upper(capsa, name)
    assert (upper / "tree" / "sub" / "f").read_bytes() == (tree / "sub" / "f").read_bytes()
    st = os.stat(upper / "tree" / "sub" / "f")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o4750)     # the container's root's, mode kept
    assert os.readlink(upper / "tree" / "rel") == "sub/f"
    assert os.readlink(upper / "tree" / "abs") == "/etc/motd"               # resolves in the container
    assert os.stat(upper / "tree" / "hard").st_ino == st.st_ino
    assert os.readlink(upper / "tmp" / "toplink") == "tree/sub"
    back = tmp_path / "back"
    res = capsa("cp", f"{name}:/tree", str(back))
    _ok(res)
    assert (back / "sub" / "f").read_bytes() == (tree / "sub" / "f").read_bytes()
    assert os.stat(back / "sub" / "f").st_mode & 0o7777 == 0o750            # no setuid bit on the host
    assert os.readlink(back / "rel") == "sub/f" and os.stat(back / "hard").st_ino == os.stat(back / "sub" / "f").st_ino
    assert not os.path.lexists(back / "abs") and "tree/abs -> /etc/motd" in res.stderr, res.describe()
    if state == "paused":
        assert capsa("unpause", name).returncode == 0
    assert capsa("rm", "-f", name).returncode == 0


def _tar_from_container(capsa, name, path) -> list[tarfile.TarInfo]:
    import threading

    from capsa.container import copy

    r, w = os.pipe()
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(tarfile.open(fileobj=os.fdopen(r, "rb"), mode="r|")), daemon=True)
    reader.start()
    try:
        copy.read_tar(capsa.store, capsa.store.find(name), path, w)
    finally:
        os.close(w)
        reader.join(10)
    return got


def test_cp_processes_keep_the_hosts_root_and_mounts(capsa, tmp_path):
    """While a copy runs, neither the capsa process nor anything it starts
    has the container's root or another mount namespace."""
    name = f"cp-ns-{os.getpid()}"
    _container(capsa, name, "exited", setup="true")
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    proc = subprocess.Popen([CAPSA, "--root", str(capsa.root), "cp", str(big), f"{name}:/big"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    my_mnt = os.readlink("/proc/self/ns/mnt")
    seen = 0
    try:
        while proc.poll() is None:
            for pid in _tree(proc.pid):
                for tid in _listdir(f"/proc/{pid}/task"):
                    try:
                        root = os.readlink(f"/proc/{pid}/task/{tid}/root")
                        mnt = os.readlink(f"/proc/{pid}/task/{tid}/ns/mnt")
                    except OSError:
                        continue
                    assert root == "/" and mnt == my_mnt, f"pid {pid} task {tid}: root {root}, {mnt}"
                    seen += 1
            time.sleep(0.005)
        assert proc.wait() == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        big.unlink()
    assert seen > 0
    assert os.lstat(_upper(capsa, name) / "big").st_size == 1 << 30
    assert capsa("rm", name).returncode == 0


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for tid in _listdir(f"/proc/{p}/task"):
            try:
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    return out


# --------------------------------------------------------------------------
# Symlinks in the container
# --------------------------------------------------------------------------

ESCAPES = ("mkdir -p /out/sub && echo inside > /out/sub/f && echo top > /out/f"
           " && ln -s / /escape && ln -s ../../../../.. /up && ln -s /etc /etclink"
           " && ln -s /etc/shadow /out/abs && ln -s ../../../../../etc /out/climb"
           " && ln -s sub/f /out/ok && ln -s ../f /out/sub/okup && ln -s sub/../../x /out/dotdot"
           " && ln -s sub/.. /out/sub2 && ln -s sub2/../../../etc /out/chain"
           " && echo container > /etc/marker")


@pytest.mark.parametrize("state", ["running", "exited"])
def test_symlink_escapes_copying_out(capsa, tmp_path, state):
    name = f"cp-esc-out-{state}-{os.getpid()}"
    _container(capsa, name, state, setup=ESCAPES)
    host = tmp_path / "host"
    host.mkdir()
    # Parents that are container symlinks resolve in the container's root.
    for via in ("/escape/etc/marker", "/up/etc/marker", "/etclink/marker", "/out/chain/marker"):
        dest = host / via.strip("/").replace("/", "_")
        _ok(capsa("cp", f"{name}:{via}", str(dest)))
        assert dest.read_text() == "container\n", via
    # The tree: links that stay inside the destination are kept, the rest are refused with a warning.
    res = capsa("cp", f"{name}:/out", str(host))
    _ok(res)
    got = host / "out"
    assert (got / "sub" / "f").read_text() == "inside\n"
    assert os.readlink(got / "ok") == "sub/f" and (got / "ok").read_text() == "inside\n"
    assert os.readlink(got / "sub" / "okup") == "../f"
    for refused in ("abs", "climb", "dotdot", "sub2", "chain"):
        assert not os.path.lexists(got / refused), refused
        assert f"out/{refused}" in res.stderr, res.describe()
    assert "warning" in res.stderr
    # The link itself, absolute: nothing to copy that would stay in the destination.
    before = sorted(os.listdir(host))
    _refused(capsa("cp", f"{name}:/escape", str(host / "esc")), "symlink")
    _refused(capsa("cp", f"{name}:/up", str(host)), "symlink")
    assert sorted(os.listdir(host)) == before
    assert capsa("rm", "-f", name).returncode == 0


@pytest.mark.parametrize("state", ["running", "exited"])
def test_symlink_escapes_copying_in(capsa, tmp_path, state):
    """Links in the container to host paths (absolute, or `..` chains) lead
    to the container's own files; a link where a file lands is replaced, not
    written through. The targets are copies made for the test."""
    victims = tmp_path / "victims"
    (victims / "etc").mkdir(parents=True)
    (victims / "etc" / "passwd").write_text("host copy\n")
    (victims / "file").write_text("host file\n")
    before = _snapshot(victims)
    up = "../" * 12
    setup = (f"ln -s {victims}/etc /hostetc && ln -s {up}{str(victims).lstrip('/')}/etc /hostup"
             f" && ln -s {victims}/file /tmp/victim && mkdir -p {victims}/etc && ln -s /etc /etclink")
    name = f"cp-esc-in-{state}-{os.getpid()}"
    _container(capsa, name, state, setup=setup)
    src = tmp_path / "passwd"
    src.write_text("pwned\n")
    _ok(capsa("cp", str(src), f"{name}:/hostetc/"))
    _ok(capsa("cp", str(src), f"{name}:/hostup/passwd"))
    _ok(capsa("cp", str(src), f"{name}:/tmp/victim"))
    _ok(capsa("cp", str(src), f"{name}:/etclink/"))
    assert _snapshot(victims) == before, "a write went through a container symlink onto the host"
    upper = _upper(capsa, name)
    inner = upper / str(victims).lstrip("/") / "etc" / "passwd"
    assert inner.read_text() == "pwned\n"                     # the container's path of that name
    assert (upper / "tmp" / "victim").read_text() == "pwned\n" and not (upper / "tmp" / "victim").is_symlink()
    assert (upper / "etc" / "passwd").read_text() == "pwned\n"
    assert capsa("rm", "-f", name).returncode == 0


# --------------------------------------------------------------------------
# Hostile archives
# --------------------------------------------------------------------------

def _tar(*members) -> bytes:
    """A tar of (TarInfo fields, data) pairs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for k, v in fields.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _reg(name, data=b"x\n", **kw):
    return (dict(name=name, **{"mode": 0o644, **kw}), data)


def _sym(name, target):
    return (dict(name=name, type=tarfile.SYMTYPE, linkname=target), None)


def _hard(name, target):
    return (dict(name=name, type=tarfile.LNKTYPE, linkname=target), None)


def _dev(name, kind=tarfile.CHRTYPE, major=1, minor=3):
    return (dict(name=name, type=kind, devmajor=major, devminor=minor, mode=0o666), None)


def _dir(name, mode=0o755):
    return (dict(name=name, type=tarfile.DIRTYPE, mode=mode), None)


def _feed(data: bytes):
    """A pipe's read end carrying data (written by a thread: a pipe holds 64 KiB)."""
    import threading

    r, w = os.pipe()

    def pump():
        try:
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BrokenPipeError:
            pass

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return r, t


def _into_container(capsa, name, into, data):
    from capsa.container import copy

    rec = capsa.store.find(name)
    r, t = _feed(data)
    try:
        return copy.write_tar(capsa.store, rec, into, r)
    finally:
        os.close(r)
        t.join(10)


@pytest.mark.parametrize("state", ["running", "exited"])
def test_hostile_archive_into_a_container(capsa, tmp_path, state):
    from capsa.errors import CapsaError

    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("host\n")
    before = _snapshot(sentinel)
    name = f"cp-tar-in-{state}-{os.getpid()}"
    _container(capsa, name, state, setup="mkdir -p /dest /etc/cfg && ln -s /etc /dest/etclink")
    upper = _upper(capsa, name)

    # Device nodes and fifos are skipped with a warning; the rest lands, root-owned.
    warnings = _into_container(capsa, name, "/dest", _tar(
        _dev("null"), _dev("sda", tarfile.BLKTYPE, 8, 0), _dev("fifo", tarfile.FIFOTYPE, 0, 0),
        _reg("plain", b"ok\n", uid=1234, gid=2345), _reg("/abs/member", b"abs\n")))
    for n in ("null", "sda", "fifo"):
        assert any(n in w for w in warnings), (n, warnings)
        assert not os.path.lexists(upper / "dest" / n)
    assert (upper / "dest" / "plain").read_text() == "ok\n"
    assert os.stat(upper / "dest" / "plain").st_uid == 0
    assert (upper / "dest" / "abs" / "member").read_text() == "abs\n"   # leading / dropped, below the destination

    # `..` members, hardlinks out of the destination, and members through links are refused.
    attacks = {
        "dotdot": _tar(_reg("../../../../escaped")),
        "dotdot-inner": _tar(_reg("a/../../escaped")),
        "hardlink-out": _tar(_hard("hl", "../etc/passwd")),
        "hardlink-abs": _tar(_hard("hl", f"{sentinel}/keep")),
        "through-own-symlink": _tar(_sym("own", "/etc"), _reg("own/passwd", b"pwned\n")),
        "through-own-relative": _tar(_sym("rel", "../etc"), _reg("rel/cfg/x", b"pwned\n")),
        "through-container-symlink": _tar(_reg("etclink/passwd", b"pwned\n")),
        "host-path": _tar(_sym("h", str(sentinel)), _reg("h/keep", b"pwned\n")),
    }
    for what, data in attacks.items():
        with pytest.raises(CapsaError):
            _into_container(capsa, name, "/dest", data)
        passwd = upper / "etc" / "passwd"
        assert not passwd.exists() or "pwned" not in passwd.read_text(), what
        assert not (upper / "escaped").exists() and not (upper.parent / "escaped").exists(), what
    assert not os.path.lexists(upper / "etc" / "cfg" / "x")
    assert _snapshot(sentinel) == before
    # Absolute links themselves are fine inside a container: they resolve in its root.
    _into_container(capsa, name, "/dest", _tar(_sym("abslink", "/etc/passwd")))
    assert os.readlink(upper / "dest" / "abslink") == "/etc/passwd"
    assert capsa("rm", "-f", name).returncode == 0


def test_hostile_archive_to_the_host(tmp_path):
    """The host side of `cp` out of a container: the extractor writes only
    below its destination, makes no device or fifo, keeps no link that
    points out, follows no link the archive made."""
    from capsa import _core

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host\n")
    before = _snapshot(outside)

    def extract(data):
        dest = tmp_path / f"dest-{len(list(tmp_path.iterdir()))}"
        dest.mkdir()
        fd = os.open(dest, os.O_PATH | os.O_DIRECTORY)
        r, t = _feed(data)
        try:
            return dest, _core.copy_tar_in(r, fd, "", False, 0, 0)
        finally:
            os.close(r)
            os.close(fd)
            t.join(10)

    dest, warnings = extract(_tar(
        _dir("top"), _reg("top/f", b"data\n", mode=0o4755), _dev("top/null"), _dev("top/fifo", tarfile.FIFOTYPE, 0, 0),
        _sym("top/abs", "/etc/passwd"), _sym("top/climb", "../../outside/keep"), _sym("top/ok", "f"),
        _sym("top/dotdot", "ok/../../outside"), _sym("top/up", "../top/f"), _hard("top/hl", "top/f"),
        _sym("top/empty", "")))
    top = dest / "top"
    assert sorted(os.listdir(top)) == ["f", "hl", "ok", "up"]
    assert os.stat(top / "f").st_mode & 0o7777 == 0o755            # no setuid on the host
    assert os.stat(top / "hl").st_ino == os.stat(top / "f").st_ino
    for n in ("null", "fifo", "abs", "climb", "dotdot", "empty"):
        assert any(f"top/{n}" in w for w in warnings), (n, warnings)

    from capsa.errors import CapsaError
    for data in (
        _tar(_reg("../outside/keep", b"pwned\n")),
        _tar(_reg("/../../outside/keep", b"pwned\n")),
        _tar(_sym("l", "."), _reg("l/x", b"pwned\n")),                     # through its own (inside) link
        _tar(_dir("d"), _sym("d/up", ".."), _reg("d/up/y", b"pwned\n")),
        _tar(_hard("hl", "../outside/keep")),
        _tar(_hard("hl", str(outside / "keep"))),
    ):
        with pytest.raises(CapsaError):
            extract(data)
    # A hardlink to a symlink is that symlink again, judged where the new name is.
    dest, warnings = extract(_tar(_dir("d"), _sym("d/l", "../x"), _hard("d/l2", "d/l"), _hard("top-l", "d/l")))
    assert os.readlink(dest / "d" / "l2") == "../x" and not os.path.lexists(dest / "top-l")
    assert any("top-l" in w for w in warnings), warnings
    assert _snapshot(outside) == before
    assert not list(tmp_path.glob("dest-*/x")) and not list(tmp_path.glob("dest-*/d/y"))


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------

def _cp_measured(capsa, *args, timeout=150):
    """`capsa cp ARGS` and its peak RSS in bytes (its own rusage, from wait4)."""
    proc = subprocess.Popen([CAPSA, "--root", str(capsa.root), "cp", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, 9)
                raise AssertionError(f"capsa cp {args} timed out")
            time.sleep(0.05)
    finally:
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        proc.returncode = 0   # reaped above: keep Popen from waiting again
    assert os.waitstatus_to_exitcode(status) == 0, err
    return usage.ru_maxrss * 1024


@pytest.mark.parametrize("state", ["running", "exited"])
def test_a_large_file_streams(capsa, tmp_path, state):
    size = 3 << 30
    name = f"cp-big-{state}-{os.getpid()}"
    _container(capsa, name, state)
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(size)
        f.seek(size // 2)
        f.write(b"middle")
        f.seek(size - 4)
        f.write(b"end\n")
    back = tmp_path / "back"
    try:
        rss_in = _cp_measured(capsa, str(big), f"{name}:/big")
        assert os.lstat(_upper(capsa, name) / "big").st_size == size
        rss_out = _cp_measured(capsa, f"{name}:/big", str(back))
        assert os.lstat(back).st_size == size
        with open(back, "rb") as f:
            f.seek(size // 2)
            assert f.read(6) == b"middle"
            f.seek(size - 4)
            assert f.read() == b"end\n"
        # Zero runs land as holes: 3 GiB of zeros take no disk.
        assert os.lstat(back).st_blocks * 512 < 64 << 20
        assert rss_in < SMALL_RSS and rss_out < SMALL_RSS, (rss_in, rss_out)
    finally:
        big.unlink(missing_ok=True)
        back.unlink(missing_ok=True)
    assert capsa("rm", "-f", name).returncode == 0


@pytest.mark.parametrize("direction", ["in", "out"])
def test_ctrl_c_stops_a_copy_and_leaves_no_half_file(capsa, tmp_path, direction):
    import signal
    import sys

    name = f"cp-int-{direction}-{os.getpid()}"
    _container(capsa, name, "exited")
    upper = _upper(capsa, name)
    huge = (tmp_path / "huge") if direction == "in" else (upper / "huge")
    with open(huge, "wb") as f:
        f.truncate(256 << 30)     # sparse: minutes to stream, no disk
    out = tmp_path / "out"
    out.mkdir()
    args = [str(huge), f"{name}:/copied"] if direction == "in" else [f"{name}:/huge", str(out / "copied")]
    # SIGINT at its default (a shell starts background jobs with it ignored).
    with_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", with_sigint, CAPSA, "--root", str(capsa.root), "cp", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = (lambda: (upper / "copied").exists()) if direction == "in" else (lambda: any(out.glob(".capsa-cp-*/huge")))
        h.wait_for(lambda: started() or proc.poll() is not None, timeout=30, what="the copy under way")
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
        huge.unlink(missing_ok=True)
    assert proc.returncode == 130 and b"Traceback" not in err, err.decode()
    assert not os.path.lexists(upper / "copied")
    assert os.listdir(out) == []
    assert capsa("rm", name).returncode == 0
