"""Hostile input to the image commands: a registry (Debian's docker-registry
on loopback, with a FaultProxy in front serving what it refuses to store)
and archives for `capsa load` whose manifests, indexes and image configs
are valid JSON of the wrong shape. Each case runs the real `capsa` CLI and
must end with exit code 125, one line on stderr (`capsa: error: ...`), no
traceback, and a store with no record of the image and no file of it."""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from registry_server import (
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Blob, build_image, busybox_tar, sha256, with_config,
)

if not hasattr(pytest.importorskip("capsa._core"), "extract_layer"):
    pytest.skip("needs capsa._core.extract_layer", allow_module_level=True)

CAPSA = str(Path(sys.executable).parent / "capsa")
TIMEOUT = 120
TABLES = ("images", "tags", "layers", "image_layers", "image_blobs", "repo_digests")


def capsa(root: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CAPSA, "--root", str(root), *args], input=input, capture_output=True,
                          timeout=TIMEOUT)


def assert_refused(proc: subprocess.CompletedProcess, *mentions: str) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert proc.returncode == 125, f"exit {proc.returncode}: {err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("capsa: error: "), err
    for m in mentions:
        assert m in lines[0], lines[0]
    return lines[0]


def assert_nothing_stored(root: Path) -> None:
    with sqlite3.connect(root / "capsa.db") as db:
        for table in TABLES:
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    for d in ("blobs/sha256", "layers", "tmp"):
        left = sorted(p.name for p in (root / d).iterdir())     # .partial files too
        assert left == [], f"{d}: {left}"


@pytest.fixture
def root():
    d = Path(tempfile.mkdtemp(prefix="capsa-hostile-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def base_image():
    """A small valid image (one layer, no busybox) to break in one place."""
    return build_image(busybox=False, files={"etc/hostile": b"hostile test\n"})


# ------------------------------------------------------------ manifests

def _manifest(image) -> dict:
    return json.loads(image.manifest.data)


def _edit(change):
    def make(image) -> bytes:
        doc = copy.deepcopy(_manifest(image))
        change(doc)
        return json.dumps(doc).encode()
    return make


def _delete(path: list):
    def change(doc):
        for key in path[:-1]:
            doc = doc[key]
        del doc[path[-1]]
    return change


def _set(path: list, value):
    def change(doc):
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value
    return change


MANIFESTS = {
    # id: (manifest bytes from the valid image, Content-Type, what the error names)
    "a-list": (lambda image: b"[]", OCI_MANIFEST, "not a JSON object"),
    "a-string": (lambda image: b'"x"', OCI_MANIFEST, "not a JSON object"),
    "a-number": (lambda image: b"5", OCI_MANIFEST, "not a JSON object"),
    "a-list-of-no-known-type": (lambda image: b"[]", "application/json", "not a JSON object"),
    "not-json": (lambda image: b"{not json", OCI_MANIFEST, "not JSON"),
    "deeply-nested": (lambda image: b"[" * 200000, OCI_MANIFEST, "nested too deeply"),
    "schema-version-1": (_edit(_set(["schemaVersion"], 1)), OCI_MANIFEST, "schemaVersion is 1"),
    "size-a-string": (_edit(_set(["config", "size"], "12")), OCI_MANIFEST, 'config.size is "12"'),
    "size-negative": (_edit(_set(["layers", 0, "size"], -1)), OCI_MANIFEST, "layers[0].size is -1"),
    "size-a-bool": (_edit(_set(["layers", 0, "size"], True)), OCI_MANIFEST, "layers[0].size is true"),
    "digest-missing": (_edit(_delete(["config", "digest"])), OCI_MANIFEST, "config.digest is missing"),
    "digest-a-number": (_edit(_set(["layers", 0, "digest"], 5)), OCI_MANIFEST, "layers[0].digest is 5"),
    "digest-not-sha256": (_edit(_set(["layers", 0, "digest"], "md5:abc")), OCI_MANIFEST,
                          'layers[0].digest is "md5:abc"'),
    "media-type-missing": (_edit(_delete(["layers", 0, "mediaType"])), OCI_MANIFEST,
                           "layers[0].mediaType is missing"),
    "media-type-a-number": (_edit(_set(["config", "mediaType"], 7)), OCI_MANIFEST, "config.mediaType is 7"),
    "layers-not-a-list": (_edit(_set(["layers"], {})), OCI_MANIFEST, "layers is {}"),
    "layer-a-number": (_edit(_set(["layers"], [3])), OCI_MANIFEST, "layers[0] is 3"),
    "config-a-string": (_edit(_set(["config"], "sha256:" + "0" * 64)), OCI_MANIFEST, "config is"),
    "config-missing": (_edit(_delete(["config"])), DOCKER_MANIFEST, "config is missing"),
    "annotations-not-strings": (_edit(_set(["annotations"], {"a": 1})), OCI_MANIFEST, "annotations.a is 1"),
}


@pytest.mark.parametrize("case", MANIFESTS, ids=list(MANIFESTS))
def test_hostile_manifest_is_refused_and_nothing_is_stored(registry, fault_proxy, root, case):
    make, media_type, mention = MANIFESTS[case]
    image = base_image()
    repo = unique("hostile-manifest")
    served_by = registry.push_raw(repo, "v1", make(image), media_type, image.blobs, proxy=fault_proxy)
    host = registry.host if served_by == "registry" else fault_proxy.host
    error = assert_refused(capsa(root, "pull", f"{host}/{repo}:v1"), mention)
    assert f"the manifest of {host}/{repo}:v1 is invalid" in error
    assert_nothing_stored(root)


def test_the_registry_itself_serves_the_cases_it_accepts(registry, fault_proxy):
    """The hostile cases are not all the proxy's: docker-registry stores and
    serves a negative size and a descriptor without mediaType itself."""
    image = base_image()
    for case in ("size-negative", "media-type-missing"):
        make, media_type, _ = MANIFESTS[case]
        assert registry.push_raw(unique("accepted"), "v1", make(image), media_type, image.blobs,
                                 proxy=fault_proxy) == "registry", case
    assert fault_proxy.faults == []


# -------------------------------------------------------------- indexes

def _index(image, **entry_changes) -> dict:
    entry = image.manifest.descriptor(platform={"os": "linux", "architecture": "amd64"})
    entry.update(entry_changes)
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}


INDEXES = {
    "manifests-has-a-number": (lambda image: {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [5]},
                               "manifests[0] is 5"),
    "manifests-not-a-list": (lambda image: {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "x"},
                             'manifests is "x"'),
    "manifests-missing": (lambda image: {"schemaVersion": 2, "mediaType": OCI_INDEX}, "manifests is missing"),
    "a-list": (lambda image: [], "not a JSON object"),
    "entry-size-a-string": (lambda image: _index(image, size="12"), 'manifests[0].size is "12"'),
    "entry-digest-missing": (lambda image: _index(image, digest=None), "manifests[0].digest is missing"),
    "platform-a-string": (lambda image: _index(image, platform="linux/amd64"),
                          'manifests[0].platform is "linux/amd64"'),
    "platform-os-a-number": (lambda image: _index(image, platform={"os": 1, "architecture": "amd64"}),
                             "manifests[0].platform.os is 1"),
}


@pytest.mark.parametrize("case", INDEXES, ids=list(INDEXES))
def test_hostile_index_is_refused_and_nothing_is_stored(registry, fault_proxy, root, case):
    make, mention = INDEXES[case]
    image = base_image()
    repo = unique("hostile-index")
    registry.push_image(repo, None, image)          # the platform's manifest, by digest
    doc = make(image)
    served_by = registry.push_raw(repo, "v1", json.dumps(doc).encode(), OCI_INDEX, proxy=fault_proxy)
    host = registry.host if served_by == "registry" else fault_proxy.host
    error = assert_refused(capsa(root, "pull", f"{host}/{repo}:v1"), mention)
    assert f"the image index of {host}/{repo}:v1 is invalid" in error
    assert_nothing_stored(root)


# -------------------------------------------------------------- configs

def _config(image) -> dict:
    return json.loads(image.config.data)


def _config_edit(path: list, value=...):
    def make(image) -> dict:
        doc = copy.deepcopy(_config(image))
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {})
        if value is ...:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return doc
    return make


CONFIGS = {
    "a-list": (lambda image: b"[]", "not a JSON object"),
    "a-string": (lambda image: b'"x"', "not a JSON object"),
    "user-a-number": (_config_edit(["config", "User"], 5), "config.User is 5"),
    "entrypoint-a-string": (_config_edit(["config", "Entrypoint"], "sh"), 'config.Entrypoint is "sh"'),
    "env-a-string": (_config_edit(["config", "Env"], "PATH=/bin"), 'config.Env is "PATH=/bin"'),
    "env-not-strings": (_config_edit(["config", "Env"], ["A=1", 2]), "config.Env[1] is 2"),
    "cmd-a-number": (_config_edit(["config", "Cmd"], 3), "config.Cmd is 3"),
    "exposed-ports-a-list": (_config_edit(["config", "ExposedPorts"], ["80/tcp"]),
                             'config.ExposedPorts is ["80/tcp"]'),
    "labels-not-strings": (_config_edit(["config", "Labels"], {"a": {"b": 1}}), "config.Labels.a is"),
    "config-a-list": (_config_edit(["config"], []), "config is []"),
    "rootfs-missing": (_config_edit(["rootfs"]), "rootfs is missing"),
    "diff-ids-a-string": (_config_edit(["rootfs", "diff_ids"], "sha256:x"), "rootfs.diff_ids is"),
    "diff-id-a-number": (_config_edit(["rootfs", "diff_ids"], [7]), "rootfs.diff_ids[0] is 7"),
    "history-a-string": (_config_edit(["history"], "x"), 'history is "x"'),
    "os-a-number": (_config_edit(["os"], 1), "os is 1"),
}


@pytest.mark.parametrize("case", CONFIGS, ids=list(CONFIGS))
def test_hostile_config_is_refused_and_nothing_is_stored(registry, root, case):
    """The registry stores any config blob: these are served by it alone."""
    make, mention = CONFIGS[case]
    image = with_config(base_image(), make(base_image()))
    repo = unique("hostile-config")
    assert registry.push_raw(repo, "v1", image.manifest.data, image.manifest.media_type, image.blobs) == "registry"
    error = assert_refused(capsa(root, "pull", f"{registry.host}/{repo}:v1"), mention)
    assert f"the image config of {registry.host}/{repo}:v1 is invalid" in error
    assert_nothing_stored(root)


def test_layer_count_that_does_not_match_the_config_is_refused(registry, root):
    image = base_image()
    doc = _manifest(image)
    doc["layers"] = doc["layers"] * 2
    repo = unique("hostile-count")
    registry.push_raw(repo, "v1", json.dumps(doc).encode(), OCI_MANIFEST, image.blobs)
    assert_refused(capsa(root, "pull", f"{registry.host}/{repo}:v1"), "2 layers but its config 1 diff IDs")
    assert_nothing_stored(root)


def test_run_that_pulls_a_hostile_config_fails_with_125_and_leaves_nothing(registry, root):
    image = with_config(base_image(), _config_edit(["config", "Cmd"], 3)(base_image()))
    repo = unique("hostile-run")
    registry.push_raw(repo, "v1", image.manifest.data, image.manifest.media_type, image.blobs)
    proc = capsa(root, "run", "--rm", f"{registry.host}/{repo}:v1")
    err = proc.stderr.decode()
    assert proc.returncode == 125 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("capsa: error: ")]
    assert len(errors) == 1 and "config.Cmd is 3" in errors[0], err
    assert err.splitlines()[-1] == errors[0]
    assert_nothing_stored(root)
    assert list((root / "containers").iterdir()) == []


# ------------------------------------------------- a config in the store

RUN_CONFIGS = {
    "user-a-number": ({"User": 5}, "config.User is 5"),
    "entrypoint-a-string": ({"Entrypoint": "sh"}, 'config.Entrypoint is "sh"'),
    "env-not-strings": ({"Env": [1]}, "config.Env[0] is 1"),
    "env-a-string": ({"Env": "A=1"}, 'config.Env is "A=1"'),
    "cmd-a-number": ({"Cmd": 3}, "config.Cmd is 3"),
    "working-dir-a-list": ({"WorkingDir": ["/"]}, 'config.WorkingDir is ["/"]'),
}


@pytest.mark.parametrize("case", RUN_CONFIGS, ids=list(RUN_CONFIGS))
def test_run_of_a_stored_image_with_a_wrong_config_is_one_line_and_125(root, case):
    """A config that reached the store unchecked (an older capsa, a store
    edited by hand): `run` refuses it before anything is created."""
    changes, mention = RUN_CONFIGS[case]
    proc = capsa(root, "import", "-c", 'CMD ["sh"]', "-", "stored:v1", input=busybox_tar())
    assert proc.returncode == 0, proc.stderr.decode()
    with sqlite3.connect(root / "capsa.db") as db:
        (config_text,) = db.execute("SELECT config FROM images").fetchone()
        config = json.loads(config_text)
        config["config"].update(changes)
        db.execute("UPDATE images SET config=?", (json.dumps(config),))
    for how in (["run", "--rm"], ["run"], ["create"]):
        assert_refused(capsa(root, *how, "stored:v1"), "the image config is invalid", mention)
    assert capsa(root, "ps", "-a", "-q").stdout == b""
    assert list((root / "containers").iterdir()) == []
    for how in (["history"], ["image", "inspect"]):
        assert_refused(capsa(root, *how, "stored:v1"), mention)


def test_history_and_inspect_of_a_stored_config_with_bad_history_are_one_line(root):
    proc = capsa(root, "import", "-", "stored:v1", input=busybox_tar())
    assert proc.returncode == 0, proc.stderr.decode()
    with sqlite3.connect(root / "capsa.db") as db:
        config = json.loads(db.execute("SELECT config FROM images").fetchone()[0])
        config["history"] = ["not an entry"]
        db.execute("UPDATE images SET config=?", (json.dumps(config),))
    for how in (["history"], ["image", "inspect"]):
        assert_refused(capsa(root, *how, "stored:v1"), 'history[0] is "not an entry", not an object')


# ------------------------------------------------------------- archives

def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_archive(image, entries=None, config: bytes | None = None) -> bytes:
    """A docker-archive (docker save) of `image`; `entries` replaces its
    manifest.json (a Python value, or bytes as they are)."""
    config_data = image.config.data if config is None else config
    files = {"config.json": config_data}
    layer_names = []
    for i, layer in enumerate(image.layers):
        files[f"layer{i}.tar"] = layer.data
        layer_names.append(f"layer{i}.tar")
    if entries is None:
        entries = [{"Config": "config.json", "RepoTags": ["hostile:v1"], "Layers": layer_names}]
    files["manifest.json"] = entries if isinstance(entries, bytes) else json.dumps(entries).encode()
    return _tar(files)


def oci_archive(image, index=None, manifest: bytes | None = None, config: bytes | None = None) -> bytes:
    """An OCI archive of `image`; `index` replaces index.json, `manifest` and
    `config` the image's blobs (the index and manifest name them by digest)."""
    config_data = image.config.data if config is None else config
    manifest_data = manifest
    if manifest_data is None:
        doc = _manifest(image)
        doc["config"] = Blob(config_data, image.config.media_type).descriptor()
        manifest_data = json.dumps(doc).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    for data in (config_data, manifest_data, *(layer.data for layer in image.layers)):
        files[f"blobs/sha256/{sha256(data)[7:]}"] = data
    if index is None:
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": sha256(manifest_data), "size": len(manifest_data),
            "annotations": {"io.containerd.image.name": "docker.io/library/hostile:v1"}}]}
    files["index.json"] = index if isinstance(index, bytes) else json.dumps(index).encode()
    return _tar(files)


def _bad_config(path: list, value=...) -> callable:
    return lambda image: json.dumps(_config_edit(path, value)(image)).encode()


ARCHIVES = {
    # docker-archive: manifest.json
    "docker-manifest-an-object": (lambda im: docker_archive(im, {}), "manifest.json is invalid", "not a list"),
    "docker-manifest-not-json": (lambda im: docker_archive(im, b"[{"), "manifest.json is invalid", "not JSON"),
    "docker-entry-a-number": (lambda im: docker_archive(im, [5]), "manifest.json is invalid", "[0] is 5"),
    "docker-no-config": (lambda im: docker_archive(im, [{"RepoTags": ["x:1"], "Layers": ["layer0.tar"]}]),
                         "manifest.json is invalid", "[0].Config is missing"),
    "docker-config-a-number": (lambda im: docker_archive(im, [{"Config": 5, "Layers": ["layer0.tar"]}]),
                               "[0].Config is 5"),
    "docker-layers-a-string": (lambda im: docker_archive(im, [{"Config": "config.json", "Layers": "layer0.tar"}]),
                               '[0].Layers is "layer0.tar"'),
    "docker-layers-missing": (lambda im: docker_archive(im, [{"Config": "config.json"}]), "[0].Layers is missing"),
    "docker-layers-not-strings": (lambda im: docker_archive(im, [{"Config": "config.json", "Layers": [1]}]),
                                  "[0].Layers[0] is 1"),
    "docker-repo-tags-a-string": (lambda im: docker_archive(
        im, [{"Config": "config.json", "RepoTags": "x:1", "Layers": ["layer0.tar"]}]), '[0].RepoTags is "x:1"'),
    "docker-too-many-layers": (lambda im: docker_archive(
        im, [{"Config": "config.json", "Layers": ["layer0.tar", "layer0.tar"]}]), "2 layers but its config 1"),
    # docker-archive: the image config
    "docker-config-user-a-number": (lambda im: docker_archive(im, config=_bad_config(["config", "User"], 5)(im)),
                                    "the image config config.json is invalid", "config.User is 5"),
    "docker-config-entrypoint-a-string": (lambda im: docker_archive(
        im, config=_bad_config(["config", "Entrypoint"], "sh")(im)), 'config.Entrypoint is "sh"'),
    "docker-config-env-not-strings": (lambda im: docker_archive(
        im, config=_bad_config(["config", "Env"], [{"A": "1"}])(im)), "config.Env[0] is"),
    "docker-config-cmd-a-number": (lambda im: docker_archive(im, config=_bad_config(["config", "Cmd"], 3)(im)),
                                   "config.Cmd is 3"),
    "docker-config-exposed-ports-a-list": (lambda im: docker_archive(
        im, config=_bad_config(["config", "ExposedPorts"], ["80/tcp"])(im)), "config.ExposedPorts is"),
    "docker-config-a-list": (lambda im: docker_archive(im, config=b"[]"), "not a JSON object"),
    "docker-second-image-bad": (lambda im: docker_archive(im, [
        {"Config": "config.json", "RepoTags": ["good:v1"], "Layers": ["layer0.tar"]},
        {"Config": "bad.json", "RepoTags": ["bad:v1"], "Layers": ["layer0.tar"]}]), "bad.json"),
    # OCI archive
    "oci-index-a-list": (lambda im: oci_archive(im, []), "index.json is invalid", "not a JSON object"),
    "oci-index-manifests-has-a-number": (lambda im: oci_archive(im, {"schemaVersion": 2, "manifests": [5]}),
                                         "index.json is invalid", "manifests[0] is 5"),
    "oci-index-entry-size-a-string": (lambda im: oci_archive(im, {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": im.digest, "size": "12"}]}), 'manifests[0].size is "12"'),
    "oci-manifest-a-string": (lambda im: oci_archive(im, manifest=b'"x"'), "the manifest sha256:", "not a JSON object"),
    "oci-manifest-negative-size": (lambda im: oci_archive(im, manifest=_edit(_set(["layers", 0, "size"], -5))(im)),
                                   "layers[0].size is -5"),
    "oci-config-cmd-a-number": (lambda im: oci_archive(im, config=_bad_config(["config", "Cmd"], 3)(im)),
                                "the image config sha256:", "config.Cmd is 3"),
}


@pytest.mark.parametrize("case", ARCHIVES, ids=list(ARCHIVES))
def test_hostile_archive_is_refused_and_nothing_is_stored(root, case):
    make, *mentions = ARCHIVES[case]
    image = base_image()
    data = make(image)
    if case == "docker-second-image-bad":       # the first image is fine: still nothing may be stored
        files = dict(_members(data))
        files["bad.json"] = _bad_config(["config", "Cmd"], 3)(image)
        data = _tar(files)
    archive = root.parent / f"{root.name}-{case}.tar"
    archive.write_bytes(data)
    try:
        error = assert_refused(capsa(root, "load", "-i", str(archive)), *mentions)
        assert str(archive) in error
        assert_nothing_stored(root)
        # and from stdin
        assert "the archive on stdin" in assert_refused(capsa(root, "load", input=data), *mentions)
        assert_nothing_stored(root)
    finally:
        archive.unlink()


def _members(data: bytes):
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            yield m.name, tar.extractfile(m).read()


@pytest.mark.parametrize("compressed", [False, True], ids=["tar", "tar.gz"])
def test_truncated_archive_is_one_line_and_125(root, compressed):
    data = docker_archive(base_image())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        layer = tar.getmember("layer0.tar")
    cut = data[:layer.offset_data + layer.size // 2]        # inside the layer's bytes
    if compressed:
        packed = gzip.compress(data)
        cut = packed[:len(packed) // 2]
    archive = root.parent / f"{root.name}-truncated.tar"
    archive.write_bytes(cut)
    try:
        assert_refused(capsa(root, "load", "-i", str(archive)))
        assert_nothing_stored(root)
    finally:
        archive.unlink()


def test_the_valid_archives_still_load(root):
    """The builders above make loadable archives when nothing is broken."""
    image = base_image()
    for name, data in (("docker", docker_archive(image)), ("oci", oci_archive(image))):
        proc = capsa(root, "load", input=data)
        assert proc.returncode == 0, (name, proc.stderr.decode())
        assert proc.stdout.decode() == "Loaded image: hostile:v1\n", name
    assert capsa(root, "images", "-q", "--no-trunc").stdout.decode().split() == [image.config.digest]
