"""The store root and what capsa keeps in it are not open to other host
users: an image's layers hold setuid binaries, a container's upper dir and
volumes whatever its root user wrote. The root and its directories are
0700 (made so, or fixed when an older root is opened); an unprivileged user
can neither list nor execute anything below them. What is below those dirs
keeps its own mode: a layer's root dir and a container's upper dir are the
container's `/`."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from registry_server import busybox_tar

if os.geteuid() != 0:
    pytest.skip("needs root (an unprivileged user is switched to with setpriv)", allow_module_level=True)
if shutil.which("setpriv") is None:
    pytest.skip("needs setpriv (util-linux)", allow_module_level=True)

CAPSA = str(Path(sys.executable).parent / "capsa")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
PRIVATE_DIRS = ["", "blobs", "blobs/sha256", "layers", "tmp", "locks", "containers", "volumes", "run"]


def capsa(root: Path, *args: str, input: bytes | None = None) -> str:
    proc = subprocess.run([CAPSA, "--root", str(root), *args], input=input, capture_output=True, timeout=120)
    assert proc.returncode == 0, f"capsa {' '.join(args)}: {proc.stderr.decode()}"
    return proc.stdout.decode()


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    """argv run by uid/gid 65534 with no capabilities. Through a shell: setpriv
    still holds root's capabilities while it execs its command (the kernel
    drops them in that execve), so its own path lookup is not an
    unprivileged user's."""
    return subprocess.run([*NOBODY, "/bin/sh", "-c", 'exec "$@"', "sh", *argv], capture_output=True,
                          text=True, timeout=30)


def assert_denied(*argv: str) -> None:
    proc = as_nobody(*argv)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, (argv, proc.returncode, proc.stdout,
                                                                          proc.stderr)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def image_with_setuid_binary() -> bytes:
    """busybox, plus bin/suid: a copy of it, root's and setuid."""
    buf = io.BytesIO(busybox_tar())
    out = io.BytesIO()
    with tarfile.open(fileobj=buf) as src, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        root = tarfile.TarInfo("./")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        dst.addfile(root)
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        data = Path("/bin/busybox").read_bytes()
        suid = tarfile.TarInfo("bin/suid")
        suid.size, suid.mode, suid.uid, suid.gid = len(data), 0o4755, 0, 0
        dst.addfile(suid, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def parent():
    """A dir every user may traverse (0755), so that what stops them is the
    store root's own mode, not its parent's (mkdtemp's are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="capsa-perm-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_store_is_closed_to_other_users_after_import_create_and_run(parent):
    root = parent / "store"
    capsa(root, "import", "-c", 'CMD ["sh"]', "-", "suid:v1", input=image_with_setuid_binary())
    cid = capsa(root, "create", "--name", "perm", "-v", "permvol:/data", "suid:v1", "sleep", "60").strip()
    try:
        capsa(root, "run", "--rm", "suid:v1", "true")        # the runtime state under <root>/run
        for d in PRIVATE_DIRS:
            assert mode(root / d) == 0o700, f"{root / d}: {oct(mode(root / d))}"

        [layer] = [p for p in (root / "layers").iterdir()]
        suid = layer / "bin" / "suid"
        assert os.stat(suid).st_mode & stat.S_ISUID, "the image's setuid bit is kept (what makes this matter)"
        assert mode(layer) == 0o755, "a layer's root dir keeps the image's mode: it is the container's /"
        upper = root / "containers" / cid / "upper"
        assert mode(upper) == 0o755, "the upper dir keeps its mode: it is the container's / too"
        shutil.copy2(suid, upper / "planted")               # what a container's root could leave there
        os.chmod(upper / "planted", 0o4755)
        volume = root / "volumes" / "permvol" / "_data"
        assert volume.is_dir()

        # The parent is open (nobody lists it), the root is not.
        listed = as_nobody("ls", str(parent))
        assert listed.returncode == 0 and "store" in listed.stdout, listed.stderr
        for path in (root, root / "layers", layer, layer / "bin", root / "blobs" / "sha256",
                     root / "containers", upper, root / "volumes", volume, root / "run"):
            assert_denied("ls", str(path))
        for binary in (suid, upper / "planted"):
            assert_denied(str(binary), "id", "-u")
        assert_denied("cat", str(root / "capsa.db"))
    finally:
        capsa(root, "rm", "-f", cid)


def test_an_open_root_is_closed_when_opened(parent):
    """A root made by an older capsa (or by hand) with 0755 dirs is fixed by
    the next command, even one that only reads."""
    root = parent / "old-store"
    for d in PRIVATE_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, 0o755)
    assert capsa(root, "images", "-q") == ""
    for d in PRIVATE_DIRS:
        assert mode(root / d) == 0o700, f"{root / d}: {oct(mode(root / d))}"
    assert_denied("ls", str(root))
    assert_denied("ls", str(root / "layers"))


def test_container_commands_also_close_the_root(parent):
    """`ps` opens only the container records: the root is closed all the same."""
    root = parent / "ps-store"
    root.mkdir()
    os.chmod(root, 0o755)
    capsa(root, "ps", "-a")
    assert mode(root) == 0o700
    assert mode(root / "containers") == 0o700
