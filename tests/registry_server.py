"""A real registry for the tests: Debian's docker-registry (distribution 2.8)
on 127.0.0.1, open, behind htpasswd Basic auth, or behind Bearer tokens from
a token server written here; small test images built from busybox-static;
and a TCP proxy that injects faults (503s, dropped connections, redirects)
between a client and a server.

Fixtures (session-scoped, each torn down with its processes and temp dirs):
  registry        open registry
  registry_basic  htpasswd Basic auth, user alice / secret
  registry_token  Bearer tokens (alice/secret may push, anonymous may pull);
                  .token_server.requests counts token requests

Other test modules use them as they are (conftest imports them) and build
images with `registry.push_image("repo", "tag")` / `registry.push_index(...)`.
Hostile images (a config whose Cmd is 3, a manifest that is `[]`) go up
with `registry.push_raw(...)`: the registry stores what it accepts (any
config blob, a negative size); what it refuses to store (a manifest that is
not an object, a size that is a string) a FaultProxy in front of it serves
in its place (Fault kind "serve"), so the client still talks to the real
registry for everything else.
The registries are shared by the whole session, and equal content is one
blob in them: a test that corrupts stored blobs (registry.blob_path) must
corrupt only content of its own, e.g. build_image(files={"id": os.urandom(16)}).
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import http.server
import io
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX = Path("/bin/busybox")
USER, PASSWORD = "alice", "secret"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, proc: subprocess.Popen | None = None,
                  timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


# --------------------------------------------------------------------------
# Test images
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class TestImage:
    config: Blob
    layers: tuple[Blob, ...]
    diff_ids: tuple[str, ...]
    manifest: Blob                  # .data is the manifest JSON, .media_type its type
    platform: str

    __test__ = False                # not a pytest test class

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(path: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), mode, 1700000000
    return info, data


def _dir(path: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
    return info, None


@functools.lru_cache(maxsize=None)
def busybox_tar() -> bytes:
    """bin/busybox with a symlink per applet (uncompressed tar)."""
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    entries = [_dir("bin/"), _file("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    for name in sorted(set(applets) - {"busybox"}):
        info = tarfile.TarInfo(f"bin/{name}")
        info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "busybox", 0o777, 1700000000
        entries.append((info, None))
    return _tar(entries)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def compress(data: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return _gzip(data)
    if compression == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True,
                              check=True).stdout
    return data


_LAYER_TYPES = {
    ("oci", "gzip"): OCI_LAYER_GZIP, ("oci", "zstd"): OCI_LAYER_ZSTD, ("oci", None): OCI_LAYER,
    ("docker", "gzip"): DOCKER_LAYER_GZIP,
}


@functools.lru_cache(maxsize=None)
def _busybox_layer(compression: str | None) -> bytes:
    return compress(busybox_tar(), compression)


def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer tar of path -> content (parent dirs added)."""
    dirs = set()
    for p in files:
        parts = p.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[:i]) + "/" for i in range(1, len(parts) + 1))
    return _tar([_dir(d) for d in sorted(dirs)] +
                [_file(p.lstrip("/"), d) for p, d in sorted(files.items())])


def build_image(*, fmt: str = "oci", os_name: str = "linux", architecture: str = "amd64",
                variant: str | None = None, files: dict[str, bytes] | None = None,
                layers: list[dict[str, bytes]] | None = None, busybox: bool = True,
                compression: str | None = "gzip",
                cmd: tuple[str, ...] = ("/bin/sh",)) -> TestImage:
    """A small image: the busybox layer (unless busybox=False), then one
    layer per dict in `layers` (path -> content; `files` is one more).
    fmt: "oci" or "docker"; compression: "gzip", "zstd" (oci) or None (oci)."""
    if (fmt, compression) not in _LAYER_TYPES:
        raise ValueError(f"no {fmt} layer media type for compression {compression}")
    layer_type = _LAYER_TYPES[fmt, compression]
    raw_layers: list[bytes] = [busybox_tar()] if busybox else []
    raw_layers += [layer_tar(f) for f in [*(layers or []), *([files] if files else [])]]
    layers_blobs = tuple(
        Blob(_busybox_layer(compression) if busybox and i == 0 else compress(raw, compression),
             layer_type)
        for i, raw in enumerate(raw_layers))
    diff_ids = tuple(sha256(raw) for raw in raw_layers)
    platform = {"os": os_name, "architecture": architecture}
    if variant:
        platform["variant"] = variant
    config = {
        **platform,
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": list(cmd), "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                             "/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"capsa test layer {i}"}
                    for i in range(len(layers_blobs))],
    }
    config_blob = Blob(json.dumps(config, sort_keys=True).encode(),
                       OCI_CONFIG if fmt == "oci" else DOCKER_CONFIG)
    manifest_type = OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST
    manifest = {"schemaVersion": 2, "mediaType": manifest_type,
                "config": config_blob.descriptor(),
                "layers": [layer.descriptor() for layer in layers_blobs]}
    return TestImage(config_blob, layers_blobs, diff_ids,
                     Blob(json.dumps(manifest, indent=2).encode(), manifest_type),
                     "/".join(x for x in (os_name, architecture, variant) if x))


def with_config(image: TestImage, config: bytes | dict) -> TestImage:
    """`image` with another config (raw bytes, or a dict serialised as is),
    its manifest rebuilt to name it."""
    data = config if isinstance(config, bytes) else json.dumps(config, sort_keys=True).encode()
    config_blob = Blob(data, image.config.media_type)
    manifest = {"schemaVersion": 2, "mediaType": image.manifest.media_type,
                "config": config_blob.descriptor(),
                "layers": [layer.descriptor() for layer in image.layers]}
    return TestImage(config_blob, image.layers, image.diff_ids,
                     Blob(json.dumps(manifest, indent=2).encode(), image.manifest.media_type), image.platform)


def build_index(images: list[TestImage], fmt: str = "oci") -> Blob:
    media_type = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    manifests = []
    for image in images:
        os_name, arch, *variant = image.platform.split("/")
        platform = {"os": os_name, "architecture": arch}
        if variant:
            platform["variant"] = variant[0]
        manifests.append(image.manifest.descriptor(platform=platform))
    return Blob(json.dumps({"schemaVersion": 2, "mediaType": media_type,
                            "manifests": manifests}, indent=2).encode(), media_type)


def write_oci_layout(directory: Path, image: TestImage, tag: str) -> Path:
    """An OCI image layout (what skopeo's and umoci's `oci:` transport reads)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (*image.blobs, image.manifest):
        (blobs / blob.digest.split(":")[1]).write_bytes(blob.data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [image.manifest.descriptor(
        annotations={"org.opencontainers.image.ref.name": tag})]}
    (directory / "index.json").write_text(json.dumps(index))
    return directory


# --------------------------------------------------------------------------
# The token server (Bearer auth)
# --------------------------------------------------------------------------

def libtrust_key_id(public_key) -> str:
    """The key ID distribution 2.8 (libtrust) gives a public key, which a
    token's `kid` header must name: base32 of the first 240 bits of the
    sha256 of the DER SubjectPublicKeyInfo, in ':'-separated groups of 4."""
    from cryptography.hazmat.primitives import serialization
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class TokenServer:
    """Issues RS256 JWTs the registry accepts: alice/secret may pull and
    push everywhere, anonymous callers may pull. Records every request."""

    ISSUER = "capsa-test-issuer"
    SERVICE = "capsa-test-registry"

    def __init__(self, workdir: Path, *, expires_in: int = 300):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
        import datetime

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capsa test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .sign(self.key, hashes.SHA256()))
        self.cert_path = workdir / "token-signer.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.kid = libtrust_key_id(self.key.public_key())
        self.expires_in = expires_in
        self.requests: list[dict] = []
        self.refresh_tokens = {"capsa-refresh-token": USER}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth:
                    try:
                        name, _, pw = base64.b64decode(auth.split(" ", 1)[1]).decode().partition(":")
                    except Exception:
                        name, pw = "", ""
                    if (name, pw) != (USER, PASSWORD):
                        server._record("GET", query, None, denied=True)
                        return self._answer(401, {"details": "incorrect username or password"})
                    user = name
                server._record("GET", query, user)
                self._answer(200, server._token_response(user, query.get("scope", []),
                                                         query.get("service", [""])[0]))

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                user = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                server._record("POST", form, user, denied=user is None)
                if form.get("grant_type") != ["refresh_token"] or user is None:
                    return self._answer(401, {"error": "invalid_grant"})
                scopes = " ".join(form.get("scope", [])).split()
                self._answer(200, server._token_response(user, scopes,
                                                         form.get("service", [""])[0]))

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _record(self, method, params, user, denied=False):
        self.requests.append({"method": method, "params": params, "user": user,
                              "denied": denied})

    def _token_response(self, user, scopes, service) -> dict:
        allowed = {"pull", "push"} if user else {"pull"}
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in allowed]
            if kind == "repository" and name:
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.ISSUER, "sub": user or "", "aud": service or self.SERVICE,
                  "exp": now + self.expires_in, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        token = self.sign(claims)
        return {"token": token, "access_token": token, "expires_in": self.expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    def sign(self, claims: dict) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode()))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def token_requests(self, *, method: str | None = None) -> list[dict]:
        return [r for r in self.requests if method is None or r["method"] == method]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------

@dataclass
class Registry:
    """A running docker-registry. host is 127.0.0.1:PORT; data_dir the
    filesystem storage root (blob_path(digest) is where a blob's bytes live)."""
    host: str
    workdir: Path
    process: subprocess.Popen
    auth: str = "none"                  # none | basic | token
    token_server: TokenServer | None = None
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def credentials(self):
        from capsa.registry.credentials import Credentials
        return Credentials(USER, PASSWORD) if self.auth in ("basic", "token") else None

    def blob_path(self, digest: str) -> Path:
        hex_digest = digest.split(":", 1)[1]
        return (self.data_dir / "docker/registry/v2/blobs/sha256" / hex_digest[:2] /
                hex_digest / "data")

    def client(self, **kw):
        """A RegistryClient for this registry (its credentials, fast retries)."""
        from capsa.registry.client import RegistryClient
        kw.setdefault("credentials", self.credentials)
        kw.setdefault("use_stored_credentials", False)
        kw.setdefault("backoff", 0.01)
        return RegistryClient(kw.pop("host", self.host), **kw)

    def push_image(self, repository: str, tag: str | None = "latest",
                   image: TestImage | None = None, **build) -> TestImage:
        """Push `image` (default: build_image(**build)) with capsa's client;
        tag None pushes the manifest by digest only."""
        image = image or build_image(**build)
        with self.client() as client:
            self._push_blobs(client, repository, image.blobs)
            client.put_manifest(repository, tag or image.digest, image.manifest.data,
                                image.manifest.media_type)
        return image

    def push_raw(self, repository: str, tag: str, manifest: bytes, media_type: str,
                 blobs=(), proxy: "FaultProxy | None" = None) -> str:
        """Push `blobs`, then `manifest` byte for byte under `tag`. If the
        registry refuses to store it (it checks manifests), `proxy` serves
        it for that tag instead. Returns who serves it: "registry" or "proxy"."""
        from capsa.registry.errors import RegistryError
        with self.client() as client:
            self._push_blobs(client, repository, blobs)
            try:
                client.put_manifest(repository, tag, manifest, media_type)
                return "registry"
            except RegistryError:       # 400 MANIFEST_INVALID; a 500 for some (schemaVersion 1)
                if proxy is None:
                    raise
        proxy.faults.append(Fault("serve", f"/v2/{repository}/manifests/{tag}", times=1 << 30,
                                  body=manifest, content_type=media_type, method="GET"))
        return "proxy"

    def push_index(self, repository: str, tag: str = "latest",
                   platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64", "linux/arm/v7"),
                   fmt: str = "oci") -> tuple[Blob, list[TestImage]]:
        """A multi-platform image: one small image per platform (each has a
        /etc/platform file naming it), under one index."""
        images = []
        for p in platforms:
            os_name, arch, *variant = p.split("/")
            image = build_image(fmt=fmt, os_name=os_name, architecture=arch,
                                variant=variant[0] if variant else None,
                                files={"etc/platform": p.encode() + b"\n"})
            images.append(self.push_image(repository, None, image))
        index = build_index(images, fmt)
        with self.client() as client:
            client.put_manifest(repository, tag, index.data, index.media_type)
        return index, images

    def _push_blobs(self, client, repository: str, blobs) -> None:
        with tempfile.TemporaryDirectory(prefix="capsa-push-") as tmp:
            for blob in blobs:
                path = Path(tmp) / blob.digest.split(":")[1]
                path.write_bytes(blob.data)
                client.push_blob(repository, blob.digest, path, size=blob.size)


def _config_yaml(data_dir: Path, port: int, auth: str) -> str:
    return f"""\
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data_dir}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secrets.token_hex(16)}
{auth}"""


def start_registry(auth: str = "none") -> Registry:
    """Start docker-registry with `auth` none | basic | token. The
    caller must stop_registry() it (the fixtures do)."""
    workdir = Path(tempfile.mkdtemp(prefix="capsa-registry-"))
    token_server = None
    try:
        (workdir / "data").mkdir()
        if auth == "basic":
            htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True,
                                      text=True, check=True).stdout
            (workdir / "htpasswd").write_text(htpasswd)
            auth_yaml = (f"auth:\n  htpasswd:\n    realm: capsa-test\n"
                         f"    path: {workdir / 'htpasswd'}\n")
        elif auth == "token":
            token_server = TokenServer(workdir)
            auth_yaml = (f"auth:\n  token:\n    realm: {token_server.url}\n"
                         f"    service: {TokenServer.SERVICE}\n    issuer: {TokenServer.ISSUER}\n"
                         f"    rootcertbundle: {token_server.cert_path}\n")
        else:
            auth_yaml = ""
        for _ in range(5):      # a free port can be taken between probe and bind
            port = free_port()
            config = workdir / "config.yml"
            config.write_text(_config_yaml(workdir / "data", port, auth_yaml))
            log_path = workdir / "registry.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                wait_for_port("127.0.0.1", port, proc)
            except RuntimeError:
                _kill(proc)
                continue
            return Registry(f"127.0.0.1:{port}", workdir, proc, auth, token_server, log_path)
        raise RuntimeError(f"docker-registry did not start: {log_path.read_text()[-2000:]}")
    except BaseException:
        if token_server:
            token_server.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_registry(registry: Registry) -> None:
    _kill(registry.process)
    if registry.token_server:
        registry.token_server.close()
    shutil.rmtree(registry.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def registry():
    r = start_registry("none")
    yield r
    stop_registry(r)


@pytest.fixture(scope="session")
def registry_basic():
    r = start_registry("basic")
    yield r
    stop_registry(r)


@pytest.fixture(scope="session")
def registry_token():
    pytest.importorskip("cryptography", reason="the token server signs JWTs with cryptography")
    r = start_registry("token")
    yield r
    stop_registry(r)


# --------------------------------------------------------------------------
# A fault-injecting proxy, and a server that records what reaches it
# --------------------------------------------------------------------------

@dataclass
class Fault:
    kind: str                 # "status" | "cut" | "redirect" | "serve"
    path_contains: str
    times: int = 1            # how many matching requests it applies to
    status: int = 503
    location: str = ""        # for "redirect": the URL prefix; the request path is appended
    method: str | None = None  # only requests with this method
    body: bytes = b""         # for "serve": the 200 answer's body and Content-Type
    content_type: str = ""


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict             # lowercase names


def _read_head(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return b"", buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _parse_head(head: bytes) -> tuple[str, dict]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


class FaultProxy:
    """HTTP/1.1 proxy for one upstream, one request per connection (it asks
    the upstream to close after each), recording requests and applying the
    first matching Fault: answer `status` itself, relay half of the
    response body then drop the connection (`cut`), answer 307 to
    `location` + path (`redirect`), or answer 200 with `body` (`serve`)."""

    def __init__(self, upstream: str, bind: str = "127.0.0.1"):
        self.upstream_host, port = upstream.rsplit(":", 1)
        self.upstream_port = int(port)
        self.faults: list[Fault] = []
        self.requests: list[SeenRequest] = []
        self.listener = socket.create_server((bind, 0))
        self.host = f"{bind}:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def close(self):
        """Stop accepting, and wait for the accepting thread to end. A bare
        close() left that thread in its accept loop while the fd number was
        reused by the next listening socket of the session (a token
        server's): the proxy then took connections meant for that server and
        relayed them to its registry, which answered 404 (a test of the token
        flow failed after any test with a proxy)."""
        self._closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)    # wakes the blocked accept()
        except OSError:
            pass
        self._acceptor.join(timeout=5)
        self.listener.close()

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (fault.times > 0 and fault.path_contains in path
                        and fault.method in (None, method)):
                    fault.times -= 1
                    return fault
        return None

    def _serve(self, conn: socket.socket):
        with conn:
            head, rest = _read_head(conn)
            if not head:
                return
            request_line, headers = _parse_head(head)
            method, path, _ = request_line.split(" ", 2)
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                rest += chunk
            self.requests.append(SeenRequest(method, path, headers))
            fault = self._take_fault(method, path)
            if fault and fault.kind == "status":
                conn.sendall(f"HTTP/1.1 {fault.status} Injected\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n".encode())
                return
            if fault and fault.kind == "serve":
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {fault.content_type}\r\n"
                             f"Content-Length: {len(fault.body)}\r\nConnection: close\r\n\r\n"
                             .encode() + fault.body)
                return
            if fault and fault.kind == "redirect":
                conn.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                             f"{fault.location}{path}\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n".encode())
                return
            lines = [l for l in head.decode("latin-1").split("\r\n")[:-2]
                     if not l.lower().startswith("connection:")]
            forwarded = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode("latin-1")
            with socket.create_connection((self.upstream_host, self.upstream_port)) as up:
                up.sendall(forwarded + rest)
                if fault and fault.kind == "cut":
                    rhead, body = _read_head(up)
                    _, rheaders = _parse_head(rhead)
                    keep = int(rheaders.get("content-length", "0")) // 2
                    while len(body) < keep:
                        chunk = up.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                    conn.sendall(rhead + body[:keep])
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                while chunk := up.recv(65536):
                    conn.sendall(chunk)


def self_signed_tls_context(workdir: Path, ip: str) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed cert for `ip` (that no
    client trusts)."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = workdir / "tls-cert.pem", workdir / "tls-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


class RecordingBlobServer:
    """An HTTP server (e.g. on 127.0.0.2, another host than the registry)
    that records each request's headers and serves GET .../blobs/<digest>
    from a registry's storage, as a blob store behind a redirect would."""

    def __init__(self, registry: Registry, bind: str = "127.0.0.2",
                 tls: ssl.SSLContext | None = None):
        self.requests: list[SeenRequest] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(SeenRequest("GET", self.path,
                                                  {k.lower(): v for k, v in self.headers.items()}))
                digest = self.path.rsplit("/", 1)[-1]
                try:
                    data = registry.blob_path(digest).read_bytes()
                except (OSError, IndexError):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer((bind, 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{bind}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fault_proxy(registry):
    """A FaultProxy in front of the open registry (no faults until you add them)."""
    proxy = FaultProxy(registry.host)
    yield proxy
    proxy.close()
