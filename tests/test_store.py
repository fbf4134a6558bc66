"""The image store itself (capsa.image.store), with real layer tarballs
extracted by the Rust core into a temp store root: lookups, reference counts,
concurrency, and repair after a writer was killed."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from capsa.errors import CapsaError, Conflict, NotFound
from capsa.image.importer import import_tarball
from capsa.image.store import DigestError, Store, chain_ids, hex_of, sha256_digest

REPO = Path(__file__).resolve().parent.parent

if not hasattr(pytest.importorskip("capsa._core"), "extract_layer"):
    pytest.skip("needs capsa._core.extract_layer (the layers branch)", allow_module_level=True)


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def root():
    d = Path(tempfile.mkdtemp(prefix="capsa-store-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def store(root):
    s = Store.open(root)
    yield s
    s.close()


def test_chain_ids_follow_the_oci_rule():
    a, b, c = (sha256_digest(x) for x in (b"a", b"b", b"c"))
    chains = chain_ids([a, b, c])
    assert chains[0] == a
    assert chains[1] == sha256_digest(f"{a} {b}".encode())
    assert chains[2] == sha256_digest(f"{chains[1]} {c}".encode())


def test_import_makes_a_one_layer_image_with_its_files(store):
    data = tar_of({"hello.txt": b"hi\n", "etc/os-release": b"ID=test\n"})
    image = import_tarball(store, io.BytesIO(data), tags=["docker.io/library/t1:latest"],
                           changes=['CMD ["/bin/sh"]', "ENV A=1", "WORKDIR /srv"])
    assert image.id == sha256_digest(store.read_blob(image.id))
    assert image.config["rootfs"]["diff_ids"] == [sha256_digest(data)]
    assert image.config["config"] == {"Cmd": ["/bin/sh"], "Env": ["A=1"], "WorkingDir": "/srv"}
    assert image.repo_tags == ["t1:latest"]
    [layer] = image.layer_dirs
    assert (layer / "hello.txt").read_bytes() == b"hi\n"
    assert layer == store.layers / hex_of(image.config["rootfs"]["diff_ids"][0])
    assert image.size == len(data)         # the layer's uncompressed bytes


def test_import_accepts_gzip_and_xz(store):
    import gzip
    import lzma
    data = tar_of({"f": b"x"})
    a = import_tarball(store, io.BytesIO(gzip.compress(data)))
    b = import_tarball(store, io.BytesIO(lzma.compress(data)))
    assert a.diff_ids == b.diff_ids == [sha256_digest(data)]


def test_lookup_by_name_tag_id_and_prefix(store):
    image = import_tarball(store, io.BytesIO(tar_of({"a": b"1"})),
                           tags=["docker.io/library/busybox:latest", "localhost:5000/x/y:v1"])
    hex_id = image.id[7:]
    for name in ("busybox", "busybox:latest", "docker.io/library/busybox", "localhost:5000/x/y:v1",
                 image.id, hex_id, hex_id[:12], "sha256:" + hex_id[:6]):
        found = store.lookup(name)
        assert found is not None and found.id == image.id, name
    assert store.lookup("busybox:other") is None
    assert store.lookup("localhost:5000/x/y") is None       # :latest was not tagged
    assert store.lookup("ffffffffffff") is None
    with pytest.raises(NotFound, match="No such image: nope"):
        store.get("nope")


def test_rmi_keeps_layers_other_images_share(store):
    base = tar_of({"base": b"b" * 100})
    one = import_tarball(store, io.BytesIO(base), tags=["docker.io/library/one:latest"])
    two = import_tarball(store, io.BytesIO(base), tags=["docker.io/library/two:latest"],
                         changes=["CMD echo two"])
    assert one.id != two.id and one.layer_dirs == two.layer_dirs
    layer = one.layer_dirs[0]
    refcount = store.db.execute("SELECT refcount FROM layers").fetchone()["refcount"]
    assert refcount == 2
    events = store.remove("one")
    assert ("Untagged", "one:latest") in events and ("Deleted", one.id) in events
    assert layer.is_dir() and store.lookup("two") is not None
    assert not store.has_blob(one.id)                   # its config went with it
    events = store.remove("two")
    assert ("Deleted", two.id) in events
    assert not layer.exists()
    assert list(store.blobs.iterdir()) == []
    assert store.db.execute("SELECT COUNT(*) FROM layers").fetchone()[0] == 0


def test_rmi_of_one_of_two_tags_only_untags(store):
    image = import_tarball(store, io.BytesIO(tar_of({"a": b"1"})),
                           tags=["docker.io/library/a:1", "docker.io/library/a:2"])
    assert store.remove("a:1") == [("Untagged", "a:1")]
    assert store.get("a:2").id == image.id
    store.tag("a:2", "other/name:x")
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        store.remove(image.id[7:19])
    events = store.remove(image.id[7:19], force=True)
    assert ("Deleted", image.id) in events and store.lookup(image.id) is None


def test_an_image_in_use_is_not_removed(store):
    data = tar_of({"a": b"1"})
    image = import_tarball(store, io.BytesIO(data), tags=["docker.io/library/used:1"])
    store.add_image_user(image.id, "c0ffee" * 10)
    with pytest.raises(Conflict, match="container c0ffeec0ffee is using"):
        store.remove("used:1")
    # forced: untagged, kept for its container
    assert store.remove("used:1", force=True) == [("Untagged", "used:1")]
    assert store.lookup(image.id) is not None and image.layer_dirs[0].is_dir()
    assert store.prune(all=True)[0] == []
    store.remove_image_user(image.id, "c0ffee" * 10)
    deleted, reclaimed = store.prune()
    assert deleted == [image.id] and reclaimed == len(data)
    assert not image.layer_dirs[0].exists()


def test_a_layer_that_unpacks_to_another_diff_id_is_not_stored(store):
    data = tar_of({"a": b"1"})
    blob = store.tmp / "blob"
    blob.write_bytes(data)
    wrong = sha256_digest(b"something else")
    with store.writing(), pytest.raises(DigestError, match="image is corrupt"):
        store.ensure_layer(wrong, wrong, blob)
    assert list(store.layers.iterdir()) == []


def test_concurrent_ensure_layer_extracts_once(store):
    data = tar_of({f"f{i}": os.urandom(2000) for i in range(200)})
    blob = store.tmp / "blob"
    blob.write_bytes(data)
    diff = sha256_digest(data)
    calls = []

    def counting_extract(src, dest):
        from capsa._core import extract_layer
        calls.append(dest)
        return extract_layer(src, dest)

    results, errors = [], []

    def worker():
        try:
            results.append(store.ensure_layer(diff, diff, blob, extract=counting_extract))
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    with store.writing():
        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == [] and len(calls) == 1
    assert all(r.chain_id == diff and r.size == len(data) for r in results)
    assert len(list((store.layers / hex_of(diff)).iterdir())) == 200


def test_open_sweeps_what_a_killed_writer_left(root):
    with Store.open(root) as s:
        image = import_tarball(s, io.BytesIO(tar_of({"keep": b"k"})), tags=["docker.io/library/k:1"])
    # Debris of a writer killed at each step: a temp download, a half-extracted
    # layer, an extracted but unrecorded one, an extractor's scratch dir.
    (root / "tmp" / "blob-123").write_bytes(b"partial")
    for name in (".%s.unverified" % ("a" * 64), "b" * 64, "c" * 64 + ".tmp-99-1"):
        (root / "layers" / name / "usr").mkdir(parents=True)
    with Store.open(root) as s:
        assert sorted(p.name for p in s.layers.iterdir()) == [hex_of(image.diff_ids[0])]
        assert list(s.tmp.iterdir()) == []
        assert s.get("k:1").layer_dirs[0].joinpath("keep").read_bytes() == b"k"


def test_no_sweep_while_a_writer_runs(root):
    """A second process opening the store must not delete a running writer's
    temp files (it holds the writers lock)."""
    with Store.open(root) as s, s.writing():
        scratch = s.tmp / "in-progress"
        scratch.write_bytes(b"x")
        code = ("import sys; from pathlib import Path; from capsa.image.store import Store; "
                "Store.open(Path(sys.argv[1])).close()")
        subprocess.run([sys.executable, "-c", code, str(root)], check=True, timeout=60)
        assert scratch.exists()
    with Store.open(root):
        assert not scratch.exists()


def test_unknown_digest_forms_are_errors(store):
    with pytest.raises(CapsaError, match="malformed digest"):
        store.blob_path("sha256:../../etc/passwd")
    with pytest.raises(CapsaError, match="malformed digest"):
        store.layer_dir("md5:abc")
