"""Layer extraction (capsa._core.extract_layer / extract_layers) on real
files: every entry type round-trips with its ownership, mode, xattrs and
times; whiteouts in overlay and flatten modes; hostile layers write nothing
outside; broken blobs leave nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

import malicious_layers as ml  # noqa: E402
from malicious_layers import d, f, hard, member, sym, tar_bytes  # noqa: E402

from capsa import _core  # noqa: E402
from capsa.errors import CapsaError  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="extraction with ownership and devices needs root")

MTIME = 1_650_000_000
BIG = os.urandom(3 * 1024 * 1024 + 123)  # crosses the decompressor's 1 MiB chunks


@pytest.fixture
def work():
    """A private scratch dir, removed however the test ends."""
    w = Path(tempfile.mkdtemp(prefix="capsa-layers-"))
    yield w
    shutil.rmtree(w, ignore_errors=True)


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def write_blob(work: Path, data: bytes, how: str = "gzip", name: str = "layer.blob") -> Path:
    p = work / name  # no telling suffix: compression is detected from the bytes
    p.write_bytes(compress(data, how))
    return p


def timed(entry, mtime=MTIME):
    entry[0].mtime = mtime
    return entry


def full_layer() -> bytes:
    long_dir = "deep/" + "/".join(["n" * 60] * 3)
    return tar_bytes([
        timed(d("./", mode=0o751)),
        timed(d("etc", mode=0o755, uid=1000, gid=1001), MTIME + 1),
        timed(f("etc/hello", b"hello\n", mode=0o640, uid=1, gid=2,
                pax={"SCHILY.xattr.user.note": "hi", "SCHILY.xattr.trusted.capsa": "t"}), MTIME + 2),
        timed(sym("etc/link", "hello", uid=5, gid=6), MTIME + 3),
        timed(hard("etc/hard", "etc/hello")),
        timed(f("bin/su", b"\x7fELF", mode=0o4755)),
        timed(f("bin/wall", b"\x7fELF", mode=0o2755, gid=5)),
        timed(d("srv", mode=0o2775, gid=50)),
        timed(d("tmp", mode=0o1777)),
        timed(member("dev/null", tarfile.CHRTYPE, dev=(1, 3), mode=0o666)),
        timed(member("dev/loop0", tarfile.BLKTYPE, dev=(7, 0), mode=0o660, gid=6)),
        timed(member("run/fifo", tarfile.FIFOTYPE, mode=0o600, uid=7)),
        timed(f("implicit/parents/file", b"x")),
        timed(f("empty", b"")),
        timed(f("big", BIG, mode=0o600)),
        timed(f(long_dir + "/" + "l" * 110, b"long"), MTIME + 4),
        member("frac", tarfile.REGTYPE, b"", pax={"mtime": "1650000000.5"}),
    ])


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_every_entry_type_round_trips(work, how):
    raw = full_layer()
    blob = write_blob(work, raw, how)
    out = work / "layer"
    info = _core.extract_layer(str(blob), str(out))

    assert info["diff_id"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert info["digest"] == "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    assert info["bytes"] == len(raw)
    assert info["compression"] == how
    assert info["entries"] == 17

    def st(rel):
        return os.lstat(out / rel)

    root = st(".")
    assert stat.S_IMODE(root.st_mode) == 0o751 and root.st_mtime == MTIME

    etc = st("etc")
    assert stat.S_ISDIR(etc.st_mode) and (etc.st_uid, etc.st_gid) == (1000, 1001)
    assert etc.st_mtime == MTIME + 1, "directory mtimes are set after their contents"

    hello = st("etc/hello")
    assert (out / "etc/hello").read_bytes() == b"hello\n"
    assert stat.S_IMODE(hello.st_mode) == 0o640 and (hello.st_uid, hello.st_gid) == (1, 2)
    assert hello.st_mtime == MTIME + 2
    assert os.getxattr(out / "etc/hello", "user.note") == b"hi"
    assert os.getxattr(out / "etc/hello", "trusted.capsa") == b"t"

    link = st("etc/link")
    assert stat.S_ISLNK(link.st_mode) and os.readlink(out / "etc/link") == "hello"
    assert (link.st_uid, link.st_gid) == (5, 6) and link.st_mtime == MTIME + 3

    assert st("etc/hard").st_ino == hello.st_ino and hello.st_nlink == 2

    assert stat.S_IMODE(st("bin/su").st_mode) == 0o4755
    wall = st("bin/wall")
    assert stat.S_IMODE(wall.st_mode) == 0o2755 and wall.st_gid == 5, "setgid survives the chown"
    srv = st("srv")
    assert stat.S_IMODE(srv.st_mode) == 0o2775 and srv.st_gid == 50
    assert stat.S_IMODE(st("tmp").st_mode) == 0o1777

    null = st("dev/null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = st("dev/loop0")
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 0)
    assert loop.st_gid == 6 and stat.S_IMODE(loop.st_mode) == 0o660
    fifo = st("run/fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and fifo.st_uid == 7 and stat.S_IMODE(fifo.st_mode) == 0o600

    implied = st("implicit/parents")
    assert stat.S_ISDIR(implied.st_mode) and stat.S_IMODE(implied.st_mode) == 0o755
    assert (out / "implicit/parents/file").read_bytes() == b"x"
    assert st("empty").st_size == 0
    assert (out / "big").read_bytes() == BIG

    long_path = out / ("deep/" + "/".join(["n" * 60] * 3)) / ("l" * 110)
    assert long_path.read_bytes() == b"long" and os.lstat(long_path).st_mtime == MTIME + 4
    assert st("frac").st_mtime_ns == 1_650_000_000_500_000_000

    assert sorted(p.name for p in work.iterdir()) == ["layer", "layer.blob"], "no scratch dir left"


def test_overlay_whiteouts_become_overlayfs_whiteouts(work):
    blob = write_blob(work, tar_bytes([
        d("dir"), f("dir/keep"), f(".wh.gone"), f("dir/.wh..wh..opq"), f("dir/sub/.wh.x"), f(".wh..wh.plnk"),
    ]))
    out = work / "layer"
    _core.extract_layer(str(blob), str(out), mode="overlay")

    gone = os.lstat(out / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0 and (gone.st_uid, gone.st_gid) == (0, 0)
    assert stat.S_ISCHR(os.lstat(out / "dir/sub/x").st_mode)
    assert os.getxattr(out / "dir", "trusted.overlay.opaque") == b"y"
    assert (out / "dir/keep").exists()
    names = [p.name for p in out.rglob("*")]
    assert not [n for n in names if n.startswith(".wh.")], names


def test_overlay_layer_dirs_mount_as_lowers(work):
    """The per-layer dirs work as overlayfs lowerdirs: whiteouts hide and opaque dirs mask."""
    lower = work / "lower"
    upper = work / "upper"
    _core.extract_layer(str(write_blob(work, tar_bytes([f("a"), f("b"), f("dir/old"), f("dir/also")]), name="l1")), str(lower))
    _core.extract_layer(str(write_blob(work, tar_bytes([f(".wh.a"), d("dir"), f("dir/.wh..wh..opq"), f("dir/new")]), name="l2")),
                        str(upper))
    merged = work / "merged"
    merged.mkdir()
    rc = os.system(f"mount -t overlay overlay -o lowerdir={upper}:{lower} {merged}")
    if rc != 0:
        pytest.skip("overlayfs is not available here")
    try:
        assert sorted(os.listdir(merged)) == ["b", "dir"]
        assert sorted(os.listdir(merged / "dir")) == ["new"]
    finally:
        os.system(f"umount {merged}")


def test_flatten_applies_whiteouts(work):
    flat = work / "flat"
    flat.mkdir()
    _core.extract_layer(str(write_blob(work, tar_bytes([
        f("gone"), f("keep"), d("dir"), f("dir/old"), d("dir/sub"), f("dir/sub/old2"), f("gonedir/x/y"),
    ]), name="l1")), str(flat), mode="flatten")

    info = _core.extract_layer(str(write_blob(work, tar_bytes([
        f("dir/new"),                # before the opaque marker: this layer's own, so kept
        f(".wh.gone"), f(".wh.gonedir"), f(".wh.never-existed"),
        f("dir/.wh..wh..opq"),
        f("dir/sub/fresh"),
        f("dir/.wh.new"),            # a whiteout hides lower layers only, not its own layer
    ]), name="l2")), str(flat), mode="flatten")

    assert info["entries"] == 7
    assert sorted(os.listdir(flat)) == ["dir", "keep"]
    assert sorted(os.listdir(flat / "dir")) == ["new", "sub"]
    assert sorted(os.listdir(flat / "dir/sub")) == ["fresh"]
    assert not list(flat.rglob(".wh.*"))


def test_overlay_dest_must_not_exist_and_flatten_dest_must(work):
    blob = write_blob(work, tar_bytes([f("x")]))
    (work / "exists").mkdir()
    with pytest.raises(_core.LayerError, match="EEXIST"):
        _core.extract_layer(str(blob), str(work / "exists"))
    with pytest.raises(_core.LayerError, match="ENOTDIR"):
        _core.extract_layer(str(blob), str(work / "missing"), mode="flatten")
    with pytest.raises(ValueError):
        _core.extract_layer(str(blob), str(work / "new"), mode="sideways")
    assert issubclass(_core.LayerError, CapsaError)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "garbage", "truncated_zstd"])
def test_broken_blob_raises_and_leaves_nothing(work, damage):
    raw = tar_bytes([d("a"), f("a/big", BIG), f("a/after")])
    if damage == "truncated":
        data = gzip.compress(raw)[: 200_000]
    elif damage == "corrupt":
        data = bytearray(gzip.compress(raw))
        for i in range(5000, 5200):
            data[i] ^= 0x5A
        data = bytes(data)
    elif damage == "garbage":
        data = os.urandom(4096)
    else:
        data = zstandard.ZstdCompressor().compress(raw)[: 100_000]
    blob = work / "blob"
    blob.write_bytes(data)
    with pytest.raises(_core.LayerError) as exc:
        _core.extract_layer(str(blob), str(work / "out"))
    msg = str(exc.value)
    assert "\n" not in msg and str(blob) in msg
    assert sorted(p.name for p in work.iterdir()) == ["blob"], "no target and no scratch dir left"


def test_error_names_entry_step_and_errno(work):
    blob = write_blob(work, tar_bytes([f("ok"), hard("dir/link", "no/such/target")]))
    with pytest.raises(_core.LayerError) as exc:
        _core.extract_layer(str(blob), str(work / "out"))
    msg = str(exc.value)
    assert "entry dir/link" in msg and "hardlink to no/such/target" in msg and "ENOENT" in msg, msg
    assert not (work / "out").exists()


def test_extract_layers_runs_jobs_concurrently_in_order(work):
    raws = [tar_bytes([f(f"file{i}", bytes([i]) * 1000), d(f"dir{i}")]) for i in range(4)]
    jobs = [(str(write_blob(work, r, ["gzip", "zstd", "none", "gzip"][i], name=f"b{i}")), str(work / f"l{i}"))
            for i, r in enumerate(raws)]
    infos = _core.extract_layers(jobs, threads=3)
    assert [i["diff_id"] for i in infos] == ["sha256:" + hashlib.sha256(r).hexdigest() for r in raws]
    for i in range(4):
        assert (work / f"l{i}" / f"file{i}").read_bytes() == bytes([i]) * 1000

    # flatten jobs sharing a destination apply in list order
    flat = work / "flat"
    flat.mkdir()
    b1 = write_blob(work, tar_bytes([f("a"), f("b")]), name="f1")
    b2 = write_blob(work, tar_bytes([f(".wh.a"), f("c")]), name="f2")
    infos = _core.extract_layers([(str(b1), str(flat)), (str(b2), str(flat))], mode="flatten")
    assert len(infos) == 2 and sorted(os.listdir(flat)) == ["b", "c"]


def test_extract_layers_raises_the_failure(work):
    good = write_blob(work, tar_bytes([f("x")]), name="good")
    bad = work / "bad"
    bad.write_bytes(gzip.compress(tar_bytes([f("y", BIG)]))[:1000])
    with pytest.raises(_core.LayerError, match=re.escape(str(bad))):
        _core.extract_layers([(str(good), str(work / "g")), (str(bad), str(work / "b"))])
    assert (work / "g" / "x").exists(), "the good layer is complete"
    assert not (work / "b").exists()


# --------------------------------------------------------------------------
# The malicious-layer corpus
# --------------------------------------------------------------------------

def snapshot(top: Path, exclude: Path) -> dict:
    """Everything about a tree (but `exclude`) an attack could change: type,
    mode, owner, size, mtime, content, link target, xattrs; each directory's
    list of entries."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [n for n in dirnames if Path(dirpath) / n != exclude]
        for name in dirnames + filenames + [""]:
            p = Path(dirpath) / name if name else Path(dirpath)
            if p == exclude:
                continue
            s = os.lstat(p)
            if stat.S_ISDIR(s.st_mode):
                # its entries, not its mtime: the sandbox dir legitimately gains `dest`
                rec = (s.st_mode, s.st_uid, s.st_gid, tuple(sorted(c for c in os.listdir(p) if p / c != exclude)))
            else:
                rec = (s.st_mode, s.st_uid, s.st_gid, s.st_size, s.st_mtime_ns, s.st_nlink, s.st_rdev)
            if stat.S_ISREG(s.st_mode):
                rec += (p.read_bytes(),)
            elif stat.S_ISLNK(s.st_mode):
                rec += (os.readlink(p),)
            xattrs = {} if stat.S_ISLNK(s.st_mode) else {k: os.getxattr(p, k) for k in os.listxattr(p)}
            out[str(p.relative_to(top))] = rec + (tuple(sorted(xattrs.items())),)
    return out


@pytest.fixture
def sandbox(work):
    s = work / "sandbox"
    (s / "sentinel" / "dir").mkdir(parents=True)
    (s / "sentinel" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (s / "sentinel" / "victim").write_text("untouched\n")
    (s / "sentinel" / "dir" / "inner").write_text("inner\n")
    os.chmod(s / "sentinel" / "passwd", 0o644)
    return s


def test_corpus_is_large_enough():
    assert len(ml.CASES) >= 12
    assert len({c.name for c in ml.CASES}) == len(ml.CASES)


@pytest.mark.parametrize("mode", ["overlay", "flatten"])
@pytest.mark.parametrize("case", ml.CASES, ids=[c.name for c in ml.CASES])
def test_malicious_layer_stays_inside(work, sandbox, case, mode):
    blob = work / "evil"
    blob.write_bytes(gzip.compress(case.build(sandbox)))
    dest = sandbox / "dest"
    if mode == "flatten":
        dest.mkdir()
    outside_before = snapshot(work, exclude=dest)
    try:
        _core.extract_layer(str(blob), str(dest), mode=mode)
    except _core.LayerError as e:
        assert "\n" not in str(e)
        if mode == "overlay":
            assert not dest.exists(), "a failed overlay extraction leaves no target"
    outside_after = snapshot(work, exclude=dest)
    assert outside_after == outside_before, f"{case.name}: {case.why}"
