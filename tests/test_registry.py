"""The registry client against a real registry (Debian's docker-registry on
loopback): manifests, blobs, push, auth (Basic, Bearer tokens), credentials,
and faults injected on real sockets (503s, dropped connections, redirects)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from registry_server import (
    FaultProxy, Fault, PASSWORD, RecordingBlobServer, USER, build_image, free_port,
    write_oci_layout,
)

from capsa.registry import mediatypes as mt
from capsa.registry.client import RegistryClient, is_loopback
from capsa.registry.credentials import Credentials, get_credentials, login, logout
from capsa.registry.errors import (
    DigestMismatch, ManifestUnknown, NoMatchingPlatform, RegistryError, RegistryUnreachable,
    Unauthorized,
)
from capsa.registry.platform import host_platform, resolve_platform


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    """A private $DOCKER_CONFIG so no test reads or writes the user's."""
    d = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d


# --------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------

def test_scheme_is_http_only_for_loopback_or_insecure():
    assert str(RegistryClient("quay.io", use_stored_credentials=False).base_url) == "https://quay.io/v2/"
    assert RegistryClient("docker.io", use_stored_credentials=False).base_url.host == "registry-1.docker.io"
    for host in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"):
        assert is_loopback(host)
        assert RegistryClient(host, use_stored_credentials=False).base_url.scheme == "http"
    assert not is_loopback("10.0.0.1:5000") and not is_loopback("example.com")
    assert RegistryClient("10.0.0.1:5000", use_stored_credentials=False).base_url.scheme == "https"
    assert RegistryClient("10.0.0.1:5000", insecure=True,
                          use_stored_credentials=False).base_url.scheme == "http"
    assert RegistryClient("127.0.0.1:5000", insecure=False,
                          use_stored_credentials=False).base_url.scheme == "https"


def test_ping(registry, registry_basic):
    with registry.client() as c:
        c.ping()
        c.ping(authenticate=True)
    with registry_basic.client(credentials=None) as c:
        c.ping()                            # it answers, even if it wants a login
        with pytest.raises(Unauthorized, match="capsa login"):
            c.ping(authenticate=True)


def test_unreachable_registry(registry):
    port = free_port()
    with RegistryClient(f"127.0.0.1:{port}", use_stored_credentials=False, backoff=0.01) as c:
        with pytest.raises(RegistryUnreachable) as info:
            c.get_manifest("x", "latest")
    assert str(info.value) == f"cannot reach registry 127.0.0.1:{port}: connection refused"
    with registry.client(insecure=False) as c:       # https to a plain-HTTP registry
        with pytest.raises(RegistryUnreachable, match="TLS handshake failed.*marked insecure"):
            c.ping()
    with RegistryClient("no-such-registry.invalid", use_stored_credentials=False,
                        timeout=5, backoff=0.01) as c:
        with pytest.raises(RegistryUnreachable, match="cannot reach registry no-such-registry.invalid"):
            c.ping()


# --------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["oci", "docker", "oci-index", "docker-list"])
def test_manifest_by_tag_and_digest(registry, kind):
    repo = f"manifests/{kind}"
    fmt = kind.split("-")[0]
    if "-" in kind:
        pushed, _ = registry.push_index(repo, "v1", platforms=("linux/amd64", "linux/arm64"),
                                        fmt=fmt)
        expected_type = mt.OCI_INDEX if fmt == "oci" else mt.DOCKER_MANIFEST_LIST
    else:
        pushed = registry.push_image(repo, "v1", fmt=fmt).manifest
        expected_type = mt.OCI_MANIFEST if fmt == "oci" else mt.DOCKER_MANIFEST
    with registry.client() as c:
        by_tag = c.get_manifest(repo, "v1")
        by_digest = c.get_manifest(repo, pushed.digest)
    for m in (by_tag, by_digest):
        assert (m.data, m.media_type, m.digest) == (pushed.data, expected_type, pushed.digest)


def test_accept_header_limits_what_comes_back(registry):
    index, _ = registry.push_index("manifests/accept", "v1", platforms=("linux/amd64",))
    with registry.client() as c:
        m = c.get_manifest("manifests/accept", "v1", accept=(mt.OCI_INDEX,))
    assert m.media_type == mt.OCI_INDEX and m.digest == index.digest


def test_index_platform_selection(registry):
    index, images = registry.push_index("multi/arch", "v1")
    with registry.client() as c:
        m = c.get_manifest("multi/arch", "v1")
        assert mt.is_index(m.media_type)
        for wanted, image in zip(("linux/amd64", "linux/aarch64", "linux/arm/v7"), images):
            descriptor = resolve_platform(m.data, wanted)
            assert descriptor["digest"] == image.digest
            chosen = c.get_manifest("multi/arch", descriptor["digest"])
            assert chosen.data == image.manifest.data
        if host_platform().architecture == "amd64":
            assert resolve_platform(m.data)["digest"] == images[0].digest
        with pytest.raises(NoMatchingPlatform, match="linux/ppc64le"):
            resolve_platform(m.data, "linux/ppc64le")


def test_unknown_manifest(registry):
    registry.push_image("known/repo", "v1")
    with registry.client() as c:
        with pytest.raises(ManifestUnknown, match="known/repo:nope: not found"):
            c.get_manifest("known/repo", "nope")
        with pytest.raises(ManifestUnknown):
            c.get_manifest("no/such/repo", "latest")
        with pytest.raises(ManifestUnknown):
            c.get_manifest("known/repo", "sha256:" + "0" * 64)


def test_list_tags(registry):
    image = build_image(files={"etc/x": b"x"})
    for tag in ("b", "a", "c"):
        registry.push_image("tags/repo", tag, image)
    with registry.client() as c:
        assert sorted(c.list_tags("tags/repo")) == ["a", "b", "c"]


def test_corrupt_manifest_is_refused(registry):
    """The registry's stored manifest changed under it (still valid JSON):
    by digest it fails the requested digest, by tag the Docker-Content-Digest."""
    image = registry.push_image("lying/repo", "v1", files={"etc/id": os.urandom(16)})
    stored = registry.blob_path(image.digest)
    stored.write_bytes(stored.read_bytes().replace(b"\n  ", b"\n\t ", 1))
    with registry.client() as c:
        for reference in ("v1", image.digest):
            with pytest.raises(DigestMismatch, match="corrupt or tampered with"):
                c.get_manifest("lying/repo", reference)


def test_cut_manifest_body_is_an_error(registry, fault_proxy):
    image = registry.push_image("cut/repo", "v1")
    fault_proxy.faults.append(Fault("cut", "/manifests/v1", times=10))
    with registry.client(host=fault_proxy.host, retries=1) as c:
        with pytest.raises(RegistryUnreachable, match="dropped the connection"):
            c.get_manifest("cut/repo", "v1")
    with registry.client() as c:
        assert c.get_manifest("cut/repo", image.digest).digest == image.digest


# --------------------------------------------------------------------------
# Blobs
# --------------------------------------------------------------------------

def test_fetch_blob_with_progress(registry, tmp_path):
    image = registry.push_image("blobs/repo", "v1")
    layer = image.layers[0]
    seen = []
    with registry.client() as c:
        assert c.blob_exists("blobs/repo", layer.digest) == layer.size
        assert c.blob_exists("blobs/repo", "sha256:" + "1" * 64) is None
        c.fetch_blob("blobs/repo", layer.digest, tmp_path / "layer", size=layer.size,
                     progress=lambda done, total: seen.append((done, total)))
    assert (tmp_path / "layer").read_bytes() == layer.data
    assert seen[-1] == (layer.size, layer.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer"]


def test_unknown_blob_leaves_nothing(registry, registry_basic, tmp_path):
    from capsa.registry.errors import BlobUnknown
    registry.push_image("unknownblob/repo", "v1")
    with registry.client() as c:
        with pytest.raises(BlobUnknown):
            c.fetch_blob("unknownblob/repo", "sha256:" + "4" * 64, tmp_path / "blob")
    with registry_basic.client(credentials=None) as c:
        with pytest.raises(Unauthorized):
            c.fetch_blob("unknownblob/repo", "sha256:" + "4" * 64, tmp_path / "blob")
    assert list(tmp_path.iterdir()) == []


def test_blob_larger_than_its_descriptor_is_refused(registry, tmp_path):
    image = registry.push_image("toolarge/repo", "v1")
    layer = image.layers[0]
    with registry.client() as c:
        with pytest.raises(DigestMismatch, match="larger than"):
            c.fetch_blob("toolarge/repo", layer.digest, tmp_path / "layer", size=layer.size - 1)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_blob_in_registry_is_refused(registry, tmp_path):
    image = registry.push_image("corrupt/repo", "v1", files={"etc/corrupt-me": os.urandom(1000)})
    layer = image.layers[-1]
    stored = registry.blob_path(layer.digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with registry.client() as c:
        with pytest.raises(DigestMismatch) as info:
            c.fetch_blob("corrupt/repo", layer.digest, tmp_path / "layer", size=layer.size)
    assert layer.digest in str(info.value) and "nothing was stored" in str(info.value)
    assert list(tmp_path.iterdir()) == []         # neither dest nor a partial file


def test_interrupted_download_resumes_with_range(registry, fault_proxy, tmp_path):
    image = registry.push_image("resume/repo", "v1")
    layer = image.layers[0]
    fault_proxy.faults.append(Fault("cut", f"/blobs/{layer.digest}"))
    seen = []
    with registry.client(host=fault_proxy.host) as c:
        c.fetch_blob("resume/repo", layer.digest, tmp_path / "layer", size=layer.size,
                     progress=lambda done, total: seen.append(done))
    assert (tmp_path / "layer").read_bytes() == layer.data
    gets = [r for r in fault_proxy.requests if r.method == "GET" and layer.digest in r.path]
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    resumed_from = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= layer.size // 2
    assert seen[-1] == layer.size and resumed_from in seen


def test_partial_file_from_an_earlier_run_is_resumed(registry, fault_proxy, tmp_path):
    image = registry.push_image("resume2/repo", "v1")
    layer = image.layers[0]
    half = layer.size // 2
    (tmp_path / ".layer.partial").write_bytes(layer.data[:half])
    with registry.client(host=fault_proxy.host) as c:
        c.fetch_blob("resume2/repo", layer.digest, tmp_path / "layer", size=layer.size)
    assert (tmp_path / "layer").read_bytes() == layer.data
    gets = [r for r in fault_proxy.requests if layer.digest in r.path]
    assert [r.headers.get("range") for r in gets] == [f"bytes={half}-"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer"]


def test_complete_partial_file_is_verified_not_downloaded_again(registry, fault_proxy, tmp_path):
    image = registry.push_image("resume3/repo", "v1")
    config = image.config
    (tmp_path / ".config.partial").write_bytes(config.data)
    with registry.client(host=fault_proxy.host) as c:
        c.fetch_blob("resume3/repo", config.digest, tmp_path / "config")
    assert (tmp_path / "config").read_bytes() == config.data
    gets = [r for r in fault_proxy.requests if config.digest in r.path]
    assert [r.headers.get("range") for r in gets] == [f"bytes={config.size}-"]


def test_retry_on_503_and_429_then_success(registry, fault_proxy, tmp_path):
    image = registry.push_image("retry/repo", "v1")
    fault_proxy.faults += [Fault("status", "/manifests/v1", times=2, status=503),
                           Fault("status", "/blobs/", times=1, status=429)]
    with registry.client(host=fault_proxy.host) as c:
        assert c.get_manifest("retry/repo", "v1").digest == image.digest
        c.fetch_blob("retry/repo", image.config.digest, tmp_path / "config")
    assert (tmp_path / "config").read_bytes() == image.config.data
    assert len([r for r in fault_proxy.requests if "/manifests/v1" in r.path]) == 3
    assert len([r for r in fault_proxy.requests if "/blobs/" in r.path]) == 2


def test_retries_run_out(registry, fault_proxy, tmp_path):
    image = registry.push_image("retry2/repo", "v1")
    fault_proxy.faults.append(Fault("status", "/blobs/", times=100, status=502))
    with registry.client(host=fault_proxy.host, retries=2) as c:
        with pytest.raises(RegistryError, match="HTTP 502"):
            c.fetch_blob("retry2/repo", image.config.digest, tmp_path / "config")
    assert len([r for r in fault_proxy.requests if "/blobs/" in r.path]) == 3
    assert not (tmp_path / "config").exists()


def test_concurrent_fetches_of_one_blob(registry, tmp_path):
    image = registry.push_image("concurrent/repo", "v1")
    layer = image.layers[0]
    errors = []

    def fetch():
        try:
            with registry.client() as c:
                c.fetch_blob("concurrent/repo", layer.digest, tmp_path / "layer", size=layer.size)
        except Exception as e:       # reported below
            errors.append(e)
    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (tmp_path / "layer").read_bytes() == layer.data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer"]


def test_redirect_does_not_carry_authorization_to_another_host(registry_basic, tmp_path):
    image = registry_basic.push_image("redirect/repo", "v1")
    layer = image.layers[0]
    blob_host = RecordingBlobServer(registry_basic, bind="127.0.0.2")
    proxy = FaultProxy(registry_basic.host)
    try:
        proxy.faults.append(Fault("redirect", f"/blobs/{layer.digest}", method="GET",
                                  location=blob_host.url))
        with registry_basic.client(host=proxy.host) as c:
            c.ping(authenticate=True)       # learn the challenge: the GET then has Basic auth
            c.fetch_blob("redirect/repo", layer.digest, tmp_path / "layer", size=layer.size)
    finally:
        proxy.close()
        blob_host.close()
    assert (tmp_path / "layer").read_bytes() == layer.data
    to_registry = [r for r in proxy.requests if layer.digest in r.path]
    assert to_registry and to_registry[-1].headers["authorization"].startswith("Basic ")
    assert len(blob_host.requests) == 1
    assert "authorization" not in blob_host.requests[0].headers


def test_plain_registry_redirecting_to_https_still_verifies_certificates(registry, tmp_path):
    """The plain-HTTP transport of a loopback registry skips TLS setup; an
    https redirect must still get a verifying one."""
    from registry_server import self_signed_tls_context
    image = registry.push_image("redirect/tls", "v1", files={"etc/id": os.urandom(16)})
    layer = image.layers[-1]
    blob_host = RecordingBlobServer(registry, bind="127.0.0.2",
                                    tls=self_signed_tls_context(tmp_path, "127.0.0.2"))
    proxy = FaultProxy(registry.host)
    dest = tmp_path / "out"
    dest.mkdir()
    try:
        proxy.faults.append(Fault("redirect", f"/blobs/{layer.digest}", method="GET",
                                  location=blob_host.url))
        with registry.client(host=proxy.host) as c:
            with pytest.raises(RegistryUnreachable, match="certificate not trusted"):
                c.fetch_blob("redirect/tls", layer.digest, dest / "layer", size=layer.size)
    finally:
        proxy.close()
        blob_host.close()
    assert blob_host.requests == [] and list(dest.iterdir()) == []


# --------------------------------------------------------------------------
# Push
# --------------------------------------------------------------------------

def _blob_files(tmp_path: Path, image) -> dict[str, Path]:
    paths = {}
    for blob in image.blobs:
        p = tmp_path / blob.digest.split(":")[1]
        p.write_bytes(blob.data)
        paths[blob.digest] = p
    return paths


def test_push_monolithic_then_pull_back(registry, fault_proxy, tmp_path):
    image = build_image(fmt="docker", files={"etc/hello": b"hello\n"})
    paths = _blob_files(tmp_path, image)
    progress = []
    with registry.client(host=fault_proxy.host) as c:
        for blob in image.blobs:
            assert c.push_blob("push/mono", blob.digest, paths[blob.digest], size=blob.size,
                               progress=lambda d, t: progress.append((d, t)))
        # the second time HEAD finds each blob and nothing is uploaded
        before = len(fault_proxy.requests)
        for blob in image.blobs:
            assert not c.push_blob("push/mono", blob.digest, paths[blob.digest], size=blob.size)
        assert [r.method for r in fault_proxy.requests[before:]] == ["HEAD"] * len(image.blobs)
        digest = c.put_manifest("push/mono", "v1", image.manifest.data, image.manifest.media_type)
    assert digest == image.digest
    assert progress[-1] == (image.blobs[-1].size, image.blobs[-1].size)
    uploads = [r for r in fault_proxy.requests if r.method == "PUT" and "/blobs/uploads/" in r.path]
    assert len(uploads) == len(image.blobs)
    assert not [r for r in fault_proxy.requests if r.method == "PATCH"]
    _pull_back_and_compare(registry, "push/mono", "v1", image, tmp_path / "pulled")


def test_push_chunked(registry, fault_proxy, tmp_path):
    image = build_image(files={"etc/chunked": os.urandom(50_000)})
    paths = _blob_files(tmp_path, image)
    with registry.client(host=fault_proxy.host) as c:
        for blob in image.blobs:
            c.push_blob("push/chunked", blob.digest, paths[blob.digest], size=blob.size,
                        chunk_size=256 * 1024)
        c.put_manifest("push/chunked", "v1", image.manifest.data, image.manifest.media_type)
    patches = [r for r in fault_proxy.requests if r.method == "PATCH"]
    expected = sum(-(-b.size // (256 * 1024)) for b in image.blobs)
    assert len(patches) == expected > len(image.blobs)
    second = f"{256 * 1024}-{2 * 256 * 1024 - 1}"
    assert len([p for p in patches if p.headers["content-range"] == second]) == 1
    _pull_back_and_compare(registry, "push/chunked", "v1", image, tmp_path / "pulled")


def test_push_retries_a_failed_upload_in_a_new_session(registry, fault_proxy, tmp_path):
    image = build_image(busybox=False, files={"etc/retry-push": os.urandom(5000)})
    paths = _blob_files(tmp_path, image)
    fault_proxy.faults.append(Fault("status", "/blobs/uploads/", method="PUT", status=500))
    with registry.client(host=fault_proxy.host) as c:
        for blob in image.blobs:
            assert c.push_blob("push/retry", blob.digest, paths[blob.digest], size=blob.size)
        c.put_manifest("push/retry", "v1", image.manifest.data, image.manifest.media_type)
    starts = [r for r in fault_proxy.requests if r.method == "POST"]
    assert len(starts) == len(image.blobs) + 1      # one upload session was started again
    _pull_back_and_compare(registry, "push/retry", "v1", image, tmp_path / "pulled")


@pytest.mark.parametrize("compression", ["zstd", None])
def test_other_layer_compressions_round_trip(registry, tmp_path, compression):
    image = registry.push_image(f"compression/{compression or 'none'}", "v1",
                                compression=compression,
                                layers=[{"etc/a": b"a\n"}, {"usr/share/b/c": b"c\n"}])
    assert len(image.layers) == 3
    assert {l.media_type for l in image.layers} == {mt.OCI_LAYER_ZSTD if compression else mt.OCI_LAYER}
    _pull_back_and_compare(registry, f"compression/{compression or 'none'}", "v1", image,
                           tmp_path / "pulled")
    top = tmp_path / "pulled" / image.layers[-1].digest[7:]
    raw = subprocess.run(["zstd", "-d", "-c", str(top)], capture_output=True,
                         check=True).stdout if compression else top.read_bytes()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.diff_ids[-1]


def test_cross_repository_mount(registry, tmp_path):
    image = registry.push_image("mount/source", "v1")
    layer = image.layers[0]
    with registry.client() as c:
        assert c.blob_exists("mount/target", layer.digest) is None
        assert c.mount_blob("mount/target", layer.digest, "mount/source") is True
        assert c.blob_exists("mount/target", layer.digest) == layer.size
        # a blob the source does not have: the registry does not mount, nothing breaks
        assert c.mount_blob("mount/target", "sha256:" + "2" * 64, "mount/source") is False


def test_put_manifest_by_digest_checks_it(registry):
    image = registry.push_image("bydigest/repo", None)
    with registry.client() as c:
        assert c.get_manifest("bydigest/repo", image.digest).digest == image.digest
        with pytest.raises(DigestMismatch):
            c.put_manifest("bydigest/repo", "sha256:" + "3" * 64, image.manifest.data,
                           image.manifest.media_type)


def test_push_manifest_with_missing_blob_is_refused(registry):
    image = build_image(busybox=False, files={"x": b"never pushed"})
    with registry.client() as c:
        with pytest.raises(RegistryError, match="HTTP 400.*MANIFEST_BLOB_UNKNOWN"):
            c.put_manifest("missing/blob", "v1", image.manifest.data, image.manifest.media_type)


def _pull_back_and_compare(registry, repo, tag, image, dest: Path):
    dest.mkdir()
    with registry.client() as c:
        m = c.get_manifest(repo, tag)
        assert (m.data, m.digest, m.media_type) == (image.manifest.data, image.digest,
                                                    image.manifest.media_type)
        for descriptor in [m.json()["config"], *m.json()["layers"]]:
            target = dest / descriptor["digest"].split(":")[1]
            c.fetch_blob(repo, descriptor["digest"], target, size=descriptor["size"])
    for blob in image.blobs:
        assert (dest / blob.digest.split(":")[1]).read_bytes() == blob.data


# --------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------

def test_basic_auth(registry_basic, tmp_path):
    image = registry_basic.push_image("basic/repo", "v1")
    with registry_basic.client() as c:
        assert c.get_manifest("basic/repo", "v1").digest == image.digest
    with registry_basic.client(credentials=None) as c:
        with pytest.raises(Unauthorized, match="capsa login"):
            c.get_manifest("basic/repo", "v1")
    with registry_basic.client(credentials=Credentials(USER, "wrong")) as c:
        with pytest.raises(Unauthorized) as info:
            c.get_manifest("basic/repo", "v1")
        assert "\n" not in str(info.value)


def test_bearer_tokens_are_fetched_once_per_scope(registry_token, tmp_path):
    image = registry_token.push_image("token/repo", "v1")
    tokens = registry_token.token_server
    with registry_token.client() as c:
        before = len(tokens.requests)
        c.get_manifest("token/repo", "v1")
        c.get_manifest("token/repo", image.digest)
        assert c.blob_exists("token/repo", image.config.digest) == image.config.size
        c.fetch_blob("token/repo", image.config.digest, tmp_path / "config")
        new = tokens.requests[before:]
        assert len(new) == 1
        assert new[0]["params"]["scope"] == ["repository:token/repo:pull"]
        assert new[0]["params"]["service"] == [tokens.SERVICE] and new[0]["user"] == USER
        # another repository is another scope: one more token
        registry_token.push_image("token/other", "v1", image)
        c.get_manifest("token/other", "v1")
        scopes = [r["params"]["scope"] for r in tokens.requests[before + 1:]]
        assert ["repository:token/other:pull"] in scopes


def test_concurrent_downloads_share_one_token(registry_token, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    image = registry_token.push_image("token/parallel", "v1",
                                      layers=[{"a": os.urandom(300_000)}, {"b": os.urandom(300_000)}])
    tokens = registry_token.token_server
    with registry_token.client() as c:    # all three start unauthenticated, get a 401
        before = len(tokens.requests)
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda b: c.fetch_blob("token/parallel", b.digest,
                                                 tmp_path / b.digest[7:], size=b.size),
                          image.blobs))
    assert len(tokens.requests) == before + 1
    for blob in image.blobs:
        assert (tmp_path / blob.digest[7:]).read_bytes() == blob.data


def test_bearer_token_is_renewed_when_it_expires(registry_token):
    import time
    image = registry_token.push_image("token/expiry", "v1")
    tokens = registry_token.token_server
    with registry_token.client() as c:
        before = len(tokens.requests)
        c.get_manifest("token/expiry", "v1")
        c.get_manifest("token/expiry", "v1")
        assert len(tokens.requests) == before + 1
        c.auth.clock = lambda: time.monotonic() + tokens.expires_in   # that much later
        assert c.get_manifest("token/expiry", "v1").digest == image.digest
        assert len(tokens.requests) == before + 2


def test_bearer_anonymous_pull_but_no_push(registry_token, tmp_path):
    image = registry_token.push_image("token/public", "v1")
    tokens = registry_token.token_server
    with registry_token.client(credentials=None) as c:
        before = len(tokens.requests)
        assert c.get_manifest("token/public", "v1").digest == image.digest
        assert tokens.requests[before]["user"] is None
        assert "account" not in tokens.requests[before]["params"]
        path = tmp_path / "blob"
        path.write_bytes(b"anonymous push")
        with pytest.raises(Unauthorized, match="capsa login"):
            c.push_blob("token/public", "sha256:" + hashlib.sha256(
                b"anonymous push").hexdigest(), path, size=path.stat().st_size)


def test_bearer_wrong_password(registry_token):
    with registry_token.client(credentials=Credentials(USER, "wrong")) as c:
        with pytest.raises(Unauthorized, match="incorrect username or password"):
            c.get_manifest("token/repo", "v1")


def test_bearer_identity_token(registry_token):
    image = registry_token.push_image("token/identity", "v1")
    tokens = registry_token.token_server
    before = len(tokens.requests)
    creds = Credentials(identity_token="capsa-refresh-token")
    with registry_token.client(credentials=creds) as c:
        assert c.get_manifest("token/identity", "v1").digest == image.digest
    assert [r["method"] for r in tokens.requests[before:]] == ["POST"]
    with registry_token.client(credentials=Credentials(identity_token="bogus")) as c:
        with pytest.raises(Unauthorized):
            c.get_manifest("token/identity", "v1")


# --------------------------------------------------------------------------
# Credentials: login / logout in Docker's config format
# --------------------------------------------------------------------------

def test_login_writes_docker_config_and_logout_removes(registry_basic, docker_config):
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps(
        {"auths": {"other.example": {"auth": "eDp5"}}, "psFormat": "table"}))
    path = login(registry_basic.host, USER, PASSWORD)
    assert path == docker_config / "config.json"
    config = json.loads(path.read_text())
    assert config["psFormat"] == "table"
    assert config["auths"]["other.example"] == {"auth": "eDp5"}
    assert config["auths"][registry_basic.host] == {
        "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in docker_config.iterdir()] == ["config.json"]
    # a client with no explicit credentials uses the stored ones
    image = registry_basic.push_image("login/repo", "v1")
    with RegistryClient(registry_basic.host, backoff=0.01) as c:
        assert c.get_manifest("login/repo", "v1").digest == image.digest
    assert logout(registry_basic.host) is True
    assert registry_basic.host not in json.loads(path.read_text())["auths"]
    assert logout(registry_basic.host) is False


def test_login_with_wrong_password_stores_nothing(registry_basic, registry_token, docker_config):
    for r in (registry_basic, registry_token):
        with pytest.raises(Unauthorized):
            login(r.host, USER, "wrong")
    assert not (docker_config / "config.json").exists()
    login(registry_token.host, USER, PASSWORD)
    assert get_credentials(registry_token.host) == Credentials(USER, PASSWORD)


def test_docker_hub_credentials_key(docker_config):
    from capsa.registry.credentials import store_credentials
    store_credentials("docker.io", Credentials("u", "p"))
    config = json.loads((docker_config / "config.json").read_text())
    assert list(config["auths"]) == ["https://index.docker.io/v1/"]
    assert get_credentials("docker.io") == Credentials("u", "p")
    assert get_credentials("registry-1.docker.io") == Credentials("u", "p")
    assert get_credentials("quay.io") is None


def test_identitytoken_and_bad_config(docker_config):
    from capsa.registry.credentials import CredentialsError
    docker_config.mkdir()
    cfg = docker_config / "config.json"
    cfg.write_text(json.dumps({"auths": {"https://r.example/v2/": {
        "auth": base64.b64encode(b"u:").decode(), "identitytoken": "tok"}}}))
    assert get_credentials("r.example") == Credentials("u", "", "tok")
    cfg.write_text("{not json")
    with pytest.raises(CredentialsError, match="not valid JSON"):
        get_credentials("r.example")


HELPER = """#!{python}
# A docker-credential-* helper keeping its secrets in a JSON file.
import json, os, sys
store = os.environ["CAPSA_TEST_HELPER_STORE"]
data = json.load(open(store)) if os.path.exists(store) else {{}}
action, payload = sys.argv[1], sys.stdin.read().strip()
if action == "get":
    if payload not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    json.dump(dict(data[payload], ServerURL=payload), sys.stdout)
elif action == "store":
    entry = json.loads(payload)
    data[entry["ServerURL"]] = {{"Username": entry["Username"], "Secret": entry["Secret"]}}
elif action == "erase":
    data.pop(payload, None)
json.dump(data, open(store, "w"))
"""


def test_credential_helper(registry_basic, docker_config, tmp_path, monkeypatch):
    import sys
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-capsatest"
    helper.write_text(HELPER.format(python=sys.executable))
    helper.chmod(0o755)
    secrets_file = tmp_path / "helper-store.json"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CAPSA_TEST_HELPER_STORE", str(secrets_file))
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "capsatest"}))

    login(registry_basic.host, USER, PASSWORD)
    config = json.loads((docker_config / "config.json").read_text())
    assert config["auths"] == {registry_basic.host: {}}          # no secret in the file
    assert json.loads(secrets_file.read_text()) == {
        registry_basic.host: {"Username": USER, "Secret": PASSWORD}}
    image = registry_basic.push_image("helper/repo", "v1")
    with RegistryClient(registry_basic.host, backoff=0.01) as c:
        assert c.get_manifest("helper/repo", "v1").digest == image.digest
    assert logout(registry_basic.host) is True
    assert json.loads(secrets_file.read_text()) == {}
    assert get_credentials(registry_basic.host) is None
    # a helper named for one registry only, that is not installed: anonymous there
    (docker_config / "config.json").write_text(json.dumps(
        {"credHelpers": {"quay.io": "not-installed"}}))
    assert get_credentials("quay.io") is None
    # but storing through it fails clearly, and the config stays as it was
    from capsa.registry.credentials import CredentialsError
    (docker_config / "config.json").write_text(json.dumps(
        {"credHelpers": {registry_basic.host: "not-installed"}}))
    with pytest.raises(CredentialsError, match="docker-credential-not-installed.*not installed"):
        login(registry_basic.host, USER, PASSWORD)
    assert "auths" not in json.loads((docker_config / "config.json").read_text())


# --------------------------------------------------------------------------
# Interoperability: an image pushed by skopeo
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_image_pushed_by_skopeo(registry, tmp_path, fmt):
    if not shutil.which("skopeo"):
        pytest.fail("skopeo is not installed (make test installs it)")
    image = build_image(files={"etc/from-skopeo": b"yes\n"})
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    cmd = ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
    if fmt == "v2s2":
        cmd += ["--format", "v2s2"]
    repo = f"skopeo/{fmt}"
    subprocess.run(cmd + [f"oci:{layout}:v1", f"docker://{registry.host}/{repo}:v1"],
                   check=True, capture_output=True, timeout=120,
                   env={**os.environ, "HOME": str(tmp_path)})
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    with registry.client() as c:
        m = c.get_manifest(repo, "v1")
        manifest = m.json()
        assert m.media_type == (mt.OCI_MANIFEST if fmt == "oci" else mt.DOCKER_MANIFEST)
        for descriptor in [manifest["config"], *manifest["layers"]]:
            c.fetch_blob(repo, descriptor["digest"], pulled / descriptor["digest"][7:],
                         size=descriptor["size"])
    assert [d["digest"] for d in manifest["layers"]] == [b.digest for b in image.layers]
    for blob in image.layers:
        assert (pulled / blob.digest[7:]).read_bytes() == blob.data
    config = json.loads((pulled / manifest["config"]["digest"][7:]).read_bytes())
    assert config["rootfs"]["diff_ids"] == list(image.diff_ids)


def test_image_pushed_by_capsa_is_read_by_skopeo(registry, tmp_path):
    image = build_image(fmt="docker", layers=[{"etc/a": b"a\n"}], files={"etc/b": b"b\n"})
    paths = _blob_files(tmp_path, image)
    with registry.client() as c:
        for blob in image.blobs:
            c.push_blob("capsa/pushed", blob.digest, paths[blob.digest], size=blob.size,
                        chunk_size=400_000)
        c.put_manifest("capsa/pushed", "v1", image.manifest.data, image.manifest.media_type)
    out = tmp_path / "skopeo-layout"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                    "--preserve-digests", f"docker://{registry.host}/capsa/pushed:v1",
                    f"oci:{out}:v1"], check=True, capture_output=True, timeout=120,
                   env={**os.environ, "HOME": str(tmp_path)})
    index = json.loads((out / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.digest]
    for blob in image.blobs:
        assert (out / "blobs/sha256" / blob.digest[7:]).read_bytes() == blob.data
