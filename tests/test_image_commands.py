"""The image commands end to end: the `capsa` CLI as a subprocess against a
real docker-registry on loopback, with real skopeo and podman (in private
storage, so the host's is untouched) on the other side."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from registry_server import build_image, busybox_tar, write_oci_layout  # fixtures come from conftest

REPO = Path(__file__).resolve().parent.parent

if not hasattr(pytest.importorskip("capsa._core"), "extract_layer"):
    pytest.skip("needs capsa._core.extract_layer (the layers branch)", allow_module_level=True)
TIMEOUT = 120


def capsa(root: Path, *args: str, input: bytes | None = None, check: bool = True,
          env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "capsa.cli", "--root", str(root), *args],
                          input=input, capture_output=True, timeout=TIMEOUT,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"capsa {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout.decode()}\n{proc.stderr.decode()}")
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("capsa: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def root():
    d = Path(tempfile.mkdtemp(prefix="capsa-images-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def scratch():
    d = Path(tempfile.mkdtemp(prefix="capsa-images-scratch-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def inspect(root: Path, name: str) -> dict:
    return json.loads(capsa(root, "image", "inspect", name).stdout)[0]


def layer_dirs(doc: dict) -> list[Path]:
    return [Path(p) for p in reversed(doc["GraphDriver"]["Data"]["LowerDir"].split(":"))]


def store_debris(root: Path) -> list[str]:
    """Anything a writer leaves only while running: temp files, unverified or
    scratch layer dirs."""
    out = [str(p) for p in (root / "tmp").iterdir()]
    out += [str(p) for p in (root / "layers").iterdir() if len(p.name) != 64]
    return out


# ------------------------------------------------------------------ round trip

def test_import_push_rmi_pull_inspect_round_trip(registry, root, scratch):
    rootfs = scratch / "rootfs.tar.gz"
    rootfs.write_bytes(gzip.compress(busybox_tar()))
    name = f"{registry.host}/{unique('roundtrip')}:v1"
    image_id = capsa(root, "import", "-c", 'CMD ["/bin/sh"]', str(rootfs), name).stdout.decode().strip()
    assert image_id.startswith("sha256:")
    before = inspect(root, name)
    pushed = capsa(root, "push", name).stdout.decode()
    assert "Pushed" in pushed and "digest: sha256:" in pushed

    out = capsa(root, "rmi", name).stdout.decode()
    assert f"Deleted: {image_id}" in out
    assert capsa(root, "images", "-q").stdout == b""
    assert list((root / "layers").iterdir()) == []

    pulled = capsa(root, "pull", name).stdout.decode()
    assert "Pull complete" in pulled and pulled.strip().endswith(name)
    after = inspect(root, name)
    assert after["Id"] == image_id
    assert after["Config"]["Cmd"] == ["/bin/sh"]
    assert after["RootFS"] == before["RootFS"]
    assert after["RepoTags"] == [name]
    assert after["RepoDigests"][0].startswith(name.rsplit(":", 1)[0] + "@sha256:")
    [layer] = layer_dirs(after)
    assert (layer / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert os.readlink(layer / "bin" / "sh") == "busybox"
    # pulling again changes nothing
    again = capsa(root, "pull", name).stdout.decode()
    assert "Already exists" in again and "Image is up to date" in again


def test_pull_quiet_prints_only_the_reference(registry, root):
    repo = unique("quiet")
    registry.push_image(repo, "latest")
    out = capsa(root, "pull", "-q", f"{registry.host}/{repo}").stdout.decode()
    assert out == f"{registry.host}/{repo}:latest\n"


def test_multi_platform_index_picks_the_host_and_honours_platform(registry, root):
    repo = unique("multi")
    registry.push_index(repo, "latest")
    name = f"{registry.host}/{repo}"
    capsa(root, "pull", name)
    doc = inspect(root, name)
    assert doc["Architecture"] == "amd64"
    assert (layer_dirs(doc)[-1] / "etc" / "platform").read_text() == "linux/amd64\n"

    capsa(root, "pull", "--platform", "linux/arm64", name)
    doc = inspect(root, name)
    assert doc["Architecture"] == "arm64"
    assert (layer_dirs(doc)[-1] / "etc" / "platform").read_text() == "linux/arm64\n"

    error = one_line_error(capsa(root, "pull", "--platform", "linux/s390x", name, check=False))
    assert "no matching manifest for linux/s390x" in error


def test_pull_an_image_pushed_by_skopeo(registry, root, scratch):
    image = build_image(files={"etc/greeting": b"from skopeo\n"})
    layout = write_oci_layout(scratch / "layout", image, "v2")
    repo = unique("skopeo")
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:v2",
                    f"docker://{registry.host}/{repo}:v2"], check=True, timeout=TIMEOUT,
                   capture_output=True)
    name = f"{registry.host}/{repo}:v2"
    capsa(root, "pull", name)
    doc = inspect(root, name)
    assert doc["RootFS"]["Layers"] == list(image.diff_ids)
    assert (layer_dirs(doc)[-1] / "etc" / "greeting").read_bytes() == b"from skopeo\n"


# ---------------------------------------------------------------- save, load

def podman(storage: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """podman with private storage (vfs) so the host's images are untouched."""
    conf = storage / "containers.conf"
    if not conf.exists():
        conf.write_text("[containers]\ndefault_ulimits = []\n[engine]\nevents_logger = \"none\"\n"
                        "cgroup_manager = \"cgroupfs\"\n")
    return subprocess.run(["podman", "--root", str(storage / "root"), "--runroot", str(storage / "run"),
                           "--storage-driver", "vfs", *args],
                          capture_output=True, timeout=TIMEOUT, check=check,
                          env={**os.environ, "CONTAINERS_CONF": str(conf),
                               "CONTAINERS_REGISTRIES_CONF": str(storage / "registries.conf")})


@pytest.fixture
def podman_storage():
    d = Path(tempfile.mkdtemp(prefix="capsa-podman-"))
    (d / "registries.conf").write_text("")
    yield d
    subprocess.run(["umount", "-R", str(d / "root")], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def test_save_is_read_by_skopeo_and_loaded_by_podman(registry, root, scratch, podman_storage):
    repo = unique("saved")
    registry.push_image(repo, "v1", files={"etc/saved": b"yes\n"})
    name = f"{registry.host}/{repo}:v1"
    capsa(root, "pull", "-q", name)
    archive = scratch / "out.tar"
    capsa(root, "save", "-o", str(archive), name)
    doc = inspect(root, name)

    seen = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"],
                                     check=True, capture_output=True, timeout=TIMEOUT).stdout)
    assert seen["Layers"] and len(seen["Layers"]) == len(doc["RootFS"]["Layers"])
    oci = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"],
                                    check=True, capture_output=True, timeout=TIMEOUT).stdout)
    assert oci["Digest"] == doc["Descriptor"]["digest"]

    podman(podman_storage, "load", "-i", str(archive))
    listed = podman(podman_storage, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.decode()
    assert f"{registry.host}/{repo}:v1 {doc['Id'][7:19]}" in listed


def test_load_archives_made_by_skopeo_and_podman(registry, root, scratch, podman_storage):
    repo = unique("archived")
    image = registry.push_image(repo, "v1", files={"etc/archived": b"1\n"})
    source = f"{registry.host}/{repo}:v1"
    made = {}
    for transport in ("docker-archive", "oci-archive"):
        path = scratch / f"skopeo-{transport}.tar"
        subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{source}",
                        f"{transport}:{path}:{registry.host}/{repo}:{transport}"],
                       check=True, capture_output=True, timeout=TIMEOUT)
        made[transport] = path
    podman(podman_storage, "pull", "-q", "--tls-verify=false", source)
    for fmt in ("docker-archive", "oci-archive"):
        path = scratch / f"podman-{fmt}.tar"
        podman(podman_storage, "save", "--format", fmt, "-o", str(path), source)
        made[f"podman-{fmt}"] = path

    for what, path in made.items():
        out = capsa(root, "load", "-i", str(path)).stdout.decode()
        assert out.startswith("Loaded image"), (what, out)
    ids = capsa(root, "images", "-q", "--no-trunc").stdout.decode().split()
    assert set(ids) == {image.config.digest}, "every archive holds the same image"
    for tag in ("docker-archive", "oci-archive"):
        doc = inspect(root, f"{registry.host}/{repo}:{tag}")
        assert (layer_dirs(doc)[-1] / "etc" / "archived").read_bytes() == b"1\n"
    doc = inspect(root, source)       # podman's docker-archive names the image
    assert doc["RootFS"]["Layers"] == list(image.diff_ids)


def test_load_of_a_corrupt_archive_stores_nothing(root, scratch):
    bad = scratch / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    error = one_line_error(capsa(root, "load", "-i", str(bad), check=False))
    assert "not a tar archive" in error
    assert capsa(root, "images", "-q").stdout == b""


# ------------------------------------------------------------ failure modes

def test_corrupted_blob_in_the_registry_is_a_digest_error_and_stores_nothing(registry, root):
    repo = unique("corrupt")
    image = registry.push_image(repo, "v1", files={"etc/x": b"x\n"})
    blob = registry.blob_path(image.layers[-1].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    error = one_line_error(capsa(root, "pull", f"{registry.host}/{repo}:v1", check=False))
    assert "digest" in error
    assert capsa(root, "images", "-q").stdout == b""
    assert list((root / "layers").iterdir()) == []
    assert [p for p in (root / "blobs" / "sha256").iterdir() if not p.name.endswith(".partial")] == []


def test_user_errors_are_one_line(registry, registry_basic, root):
    assert "No such image: nothere" in one_line_error(capsa(root, "rmi", "nothere", check=False))
    assert "No such image" in one_line_error(capsa(root, "history", "nothere", check=False))
    error = one_line_error(capsa(root, "pull", f"{registry.host}/{unique('absent')}:v1", check=False))
    assert "not found" in error.lower() or "unknown" in error.lower()
    error = one_line_error(capsa(root, "pull", f"{registry_basic.host}/private:v1", check=False))
    assert "denied" in error and "capsa login" in error
    error = one_line_error(capsa(root, "pull", "127.0.0.1:1/nothing:v1", check=False))
    assert "127.0.0.1:1" in error
    error = one_line_error(capsa(root, "import", "/nonexistent/rootfs.tar", check=False))
    assert "no such file" in error
    error = one_line_error(capsa(root, "tag", "nothere", "x:y", check=False))
    assert "No such image" in error


def test_disk_full_is_a_one_line_error(root, scratch):
    """A tmpfs too small for the import: ENOSPC names the file."""
    small = scratch / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)]).returncode:
        pytest.skip("cannot mount tmpfs")
    try:
        big = scratch / "big.tar"
        big.write_bytes(busybox_tar())
        error = one_line_error(capsa(small, "import", str(big), check=False))
        assert "no space left on device" in error and str(small) in error
    finally:
        subprocess.run(["umount", str(small)])


# ------------------------------------------------------------- concurrency

def big_image(registry, repo: str, layers: int = 4, files: int = 400, size: int = 8 << 10):
    """busybox plus `layers` layers of `files` random files each: several
    layers downloading and extracting at once, each taking a moment."""
    from registry_server import (OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Blob, TestImage, _file, _gzip,
                                 _tar, sha256)
    raws = [busybox_tar()] + [_tar([_file(f"data/{i}/{n}.bin", os.urandom(size)) for n in range(files)])
                              for i in range(layers)]
    layer_blobs = tuple(Blob(_gzip(r), OCI_LAYER_GZIP) for r in raws)
    diff_ids = tuple(sha256(r) for r in raws)
    config = {"os": "linux", "architecture": "amd64", "created": "2026-01-01T00:00:00Z",
              "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}
    config_blob = Blob(json.dumps(config).encode(), OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_blob.descriptor(),
                "layers": [b.descriptor() for b in layer_blobs]}
    image = TestImage(config_blob, layer_blobs, diff_ids, Blob(json.dumps(manifest).encode(), OCI_MANIFEST),
                      "linux/amd64")
    return registry.push_image(repo, "v1", image)


def test_two_concurrent_pulls_both_succeed_and_store_once(registry, root):
    repo = unique("concurrent")
    image = big_image(registry, repo)
    name = f"{registry.host}/{repo}:v1"
    procs = [subprocess.Popen([sys.executable, "-m", "capsa.cli", "--root", str(root), "pull", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err.decode()
    assert capsa(root, "images", "-q", "--no-trunc").stdout.decode().split() == [image.config.digest]
    assert len([p for p in (root / "layers").iterdir()]) == len(image.layers)
    assert store_debris(root) == []
    import sqlite3
    with sqlite3.connect(root / "capsa.db") as db:
        assert db.execute("SELECT COUNT(*), MAX(refcount) FROM layers").fetchone() == (len(image.layers), 1)


@pytest.mark.parametrize("phase", ["download", "extract"])
def test_a_pull_killed_midway_is_repaired_by_the_next_command(registry, root, phase):
    repo = unique("killed")
    image = big_image(registry, repo, layers=3, files=1000, size=4 << 10)
    name = f"{registry.host}/{repo}:v1"
    env = {**os.environ, "CAPSA_MAX_CONCURRENT_DOWNLOADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "capsa.cli", "--root", str(root), "pull", name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    blobs, layers = root / "blobs" / "sha256", root / "layers"

    def reached() -> bool:
        if phase == "download":
            return blobs.is_dir() and any(p.name.endswith(".partial") for p in blobs.iterdir())
        return layers.is_dir() and any(not p.name[0].isalnum() or len(p.name) != 64 for p in layers.iterdir())

    try:
        while not reached():
            assert proc.poll() is None, "the pull finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert capsa(root, "images", "-q").stdout == b""      # repairs as it opens
    assert store_debris(root) == []
    capsa(root, "pull", "-q", name)
    doc = inspect(root, name)
    assert doc["RootFS"]["Layers"] == list(image.diff_ids)
    for i, layer in enumerate(layer_dirs(doc)[1:]):
        assert len(list((layer / "data" / str(i)).iterdir())) == 1000
    assert store_debris(root) == []


# ---------------------------------------------------------------- listings

def test_images_table_quiet_and_json(registry, root, scratch):
    rootfs = scratch / "rootfs.tar"
    rootfs.write_bytes(busybox_tar())
    image_id = capsa(root, "import", str(rootfs), "busybox:latest").stdout.decode().strip()
    capsa(root, "tag", "busybox", "example.com/tools/bb:1.0")
    from registry_server import _file, _tar
    (scratch / "other.tar").write_bytes(gzip.compress(_tar([_file("other", b"o")])))
    other = capsa(root, "import", str(scratch / "other.tar")).stdout.decode().strip()

    lines = capsa(root, "images").stdout.decode().splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = [line.split() for line in lines[1:]]
    assert ["busybox", "latest", image_id[7:19]] == rows[[r[0] for r in rows].index("busybox")][:3]
    assert ["example.com/tools/bb", "1.0", image_id[7:19]] in [r[:3] for r in rows]
    assert ["<none>", "<none>", other[7:19]] in [r[:3] for r in rows]
    # Docker's tabwriter: each column starts 3 past the widest cell before it
    assert lines[0].index("TAG") == max(len(r[0]) for r in [["REPOSITORY"]] + rows) + 3
    assert all(line[lines[0].index("TAG") - 1] == " " for line in lines)
    size = len(busybox_tar())
    from capsa.image.progress import human_size
    assert all(r[-1] == human_size(size) for r in rows if r[0] != "<none>")

    quiet = capsa(root, "images", "-q").stdout.decode().split()
    assert sorted(quiet) == sorted({image_id[7:19], other[7:19]})
    objects = [json.loads(line) for line in capsa(root, "images", "--format", "json").stdout.splitlines()]
    assert {(o["Repository"], o["Tag"], o["ID"]) for o in objects} == {
        ("busybox", "latest", image_id[7:19]), ("example.com/tools/bb", "1.0", image_id[7:19]),
        ("<none>", "<none>", other[7:19])}
    assert capsa(root, "images", "busybox", "-q").stdout.decode().split() == [image_id[7:19]]

    history = capsa(root, "history", "busybox").stdout.decode().splitlines()
    assert history[0].split()[:2] == ["IMAGE", "CREATED"] and history[1].startswith(image_id[7:19])
    assert capsa(root, "image", "inspect", "-f", "{{.Id}} {{json .RepoTags}}", "busybox").stdout.decode() == \
        f'{image_id} ["busybox:latest", "example.com/tools/bb:1.0"]\n'

    # prune: the dangling one only, then -a
    out = capsa(root, "image", "prune", "-f").stdout.decode()
    assert f"deleted: {other}" in out
    assert capsa(root, "images", "-q").stdout.decode().split() == [image_id[7:19]]
    capsa(root, "image", "prune", "-a", "-f")
    assert capsa(root, "images", "-q").stdout == b""
    assert list((root / "layers").iterdir()) == []


def test_import_from_stdin_with_changes(root):
    out = capsa(root, "import", "-c", "ENV FOO=bar", "-c", "WORKDIR /tmp", "-m", "from stdin",
                "-", "imported:v1", input=busybox_tar()).stdout.decode().strip()
    doc = inspect(root, "imported:v1")
    assert doc["Id"] == out
    assert doc["Config"] == {"Env": ["FOO=bar"], "WorkingDir": "/tmp"}
    assert doc["Comment"] == "from stdin"


def test_login_and_logout_use_docker_config(registry_basic, scratch):
    env = {"DOCKER_CONFIG": str(scratch)}
    root = scratch / "root"
    bad = capsa(root, "login", "-u", "alice", "--password-stdin", registry_basic.host,
                input=b"wrong\n", check=False, env=env)
    one_line_error(bad)
    out = capsa(root, "login", "-u", "alice", "--password-stdin", registry_basic.host,
                input=b"secret\n", env=env).stdout.decode()
    assert "Login Succeeded" in out
    assert registry_basic.host in json.loads((scratch / "config.json").read_text())["auths"]
    repo = unique("private")
    registry_basic.push_image(repo, "v1")
    capsa(root, "pull", "-q", f"{registry_basic.host}/{repo}:v1", env=env)
    assert "Removing login credentials" in capsa(root, "logout", registry_basic.host, env=env).stdout.decode()
    one_line_error(capsa(root, "pull", f"{registry_basic.host}/{repo}:v1", env=env, check=False))


# ----------------------------------------------------------- CLI behaviour

def test_cli_start_imports_neither_httpx_nor_rich():
    code = ("import sys; import capsa.cli as c; c._register(); "
            "print(sorted(m for m in ('httpx', 'rich', 'sqlite3', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=TIMEOUT).stdout
    assert out.strip() == "[]"


def test_ctrl_c_exits_130_without_a_traceback_and_the_store_recovers(registry, root):
    repo = unique("interrupted")
    big_image(registry, repo, layers=3, files=1000, size=4 << 10)
    name = f"{registry.host}/{repo}:v1"
    # SIGINT back at its default first: a shell starts background jobs with it
    # ignored, and a Python started so keeps ignoring it.
    with_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", with_sigint, "-m", "capsa.cli", "--root", str(root), "pull", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "CAPSA_MAX_CONCURRENT_DOWNLOADS": "1",
                                 "PYTHONFAULTHANDLER": "1"})   # SIGABRT prints every thread's stack
    try:
        deadline = time.monotonic() + 60
        while not any((root / "blobs" / "sha256").glob(".*.partial")) if (root / "blobs").exists() else True:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        kernel = where_stuck(proc.pid)
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"the pull did not end after Ctrl-C. Kernel: {kernel}\n"
                             f"stdout: {out.decode()}\nstderr: {err.decode()}") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert capsa(root, "images", "-q").stdout == b""
    assert store_debris(root) == []
    capsa(root, "pull", "-q", name)


def test_pull_and_push_from_the_main_thread_do_their_http_on_a_worker(registry, root, monkeypatch):
    """Ctrl-C raises KeyboardInterrupt anywhere in the main thread, inside
    httpcore's lock handling too (a pull then hung forever in its cleanup,
    on a lock the interrupt had left taken): the main thread must only wait."""
    import httpx
    from capsa.image.pull import pull
    from capsa.image.push import push
    from capsa.image.store import Store
    registry.push_image("threads", "v1")
    senders = []
    send = httpx.Client.send

    def recording(self, *args, **kwargs):
        senders.append(threading.current_thread())
        return send(self, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", recording)
    assert threading.current_thread() is threading.main_thread()
    with Store.open(root) as store:
        image = pull(store, f"{registry.host}/threads:v1", quiet=True)
        assert image.layer_dirs and all(d.is_dir() for d in image.layer_dirs)
        assert senders and threading.main_thread() not in senders
        senders.clear()
        assert push(store, f"{registry.host}/threads:v1", quiet=True).startswith("sha256:")
        assert senders and threading.main_thread() not in senders


def where_stuck(pid: int) -> str:
    """Each thread of a process that does not end: its state, where the
    kernel has it waiting, and the kernel stack."""
    out = []
    for tid in sorted(os.listdir(f"/proc/{pid}/task")):
        task = Path(f"/proc/{pid}/task/{tid}")
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            stack = " < ".join(line.split()[-1] for line in (task / "stack").read_text().splitlines())
            out.append(f"thread {tid} ({(task / 'comm').read_text().strip()}) {state} "
                       f"in {(task / 'wchan').read_text()}: {stack}")
        except OSError as e:
            out.append(f"thread {tid}: {e}")
    return "; ".join(out)


def test_pull_with_a_bearer_token_registry_and_push_mounts_across_repositories(registry, root):
    source, target = unique("mount-src"), unique("mount-dst")
    registry.push_image(source, "v1", files={"etc/m": b"m\n"})
    capsa(root, "pull", "-q", f"{registry.host}/{source}:v1")
    capsa(root, "tag", f"{registry.host}/{source}:v1", f"{registry.host}/{target}:v1")
    out = capsa(root, "push", f"{registry.host}/{target}:v1").stdout.decode()
    assert f"Mounted from {source}" in out
    assert capsa(root, "push", f"{registry.host}/{target}:v1").stdout.decode().count("Layer already exists") >= 2


def test_anonymous_pull_through_the_token_flow(registry_token, root):
    repo = unique("token")
    registry_token.push_image(repo, "v1")
    capsa(root, "pull", "-q", f"{registry_token.host}/{repo}:v1")
    assert len(capsa(root, "images", "-q").stdout.split()) == 1


def test_save_to_stdout_load_from_stdin_into_another_store(root, scratch):
    image_id = capsa(root, "import", "-", "piped:v1", input=busybox_tar()).stdout.decode().strip()
    archive = capsa(root, "save", "piped:v1").stdout
    other = scratch / "other-root"
    out = capsa(other, "load", input=archive).stdout.decode()
    assert out == "Loaded image: piped:v1\n"
    doc = inspect(other, "piped:v1")
    assert doc["Id"] == image_id
    assert (layer_dirs(doc)[0] / "bin" / "busybox").is_file()
    # saved by ID: no name in the archive, loaded as an untagged image
    archive = capsa(root, "save", image_id[7:19]).stdout
    assert capsa(scratch / "third-root", "load", input=archive).stdout.decode() == f"Loaded image ID: {image_id}\n"
