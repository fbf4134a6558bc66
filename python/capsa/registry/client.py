"""A client for one registry over the OCI distribution protocol (httpx).

Everything it returns is verified against its digest. Requests that fail
for a passing reason (5xx, 429, a dropped connection) are retried with
exponential backoff; a blob download that breaks off resumes with Range."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx

from capsa.image.reference import (
    api_host, validate_digest, validate_manifest_reference, validate_repository,
)
from capsa.registry import mediatypes
from capsa.registry.auth import Authenticator, repository_scope
from capsa.registry.credentials import Credentials, get_credentials
from capsa.registry.errors import (
    BlobUnknown, DigestMismatch, ManifestUnknown, RegistryError, RegistryUnreachable,
    Unauthorized,
)

ALL_MANIFEST_TYPES = mediatypes.ALL_MANIFEST_TYPES
MANIFEST_MAX = 4 * 1024 * 1024      # the limit registries themselves apply
STREAM_CHUNK = 1024 * 1024
USER_AGENT = "capsa/0.1"

Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class Manifest:
    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict:
        return json.loads(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


class _Transient(Exception):
    """A failure worth retrying; `error` is what the user sees if retries run out."""

    def __init__(self, error: RegistryError, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def is_loopback(host: str) -> bool:
    """host[:port] names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.startswith("["):
        name = host[1:host.find("]")]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _error_code(response: httpx.Response) -> tuple[str, str]:
    """The distribution error body's first (code, message), if any."""
    try:
        first = response.json()["errors"][0]
        return str(first.get("code", "")), str(first.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, httpx.ResponseNotRead):
        return "", ""


def _connect_reason(e: Exception) -> str:
    cause = e
    while cause.__cause__ or cause.__context__:
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({cause.verify_message or cause.reason})"
    if isinstance(cause, ssl.SSLError):
        return (f"TLS handshake failed ({cause.reason or cause}); "
                "a registry that speaks plain HTTP must be marked insecure")
    if isinstance(cause, OSError) and cause.errno:
        if cause.errno in (errno.ECONNREFUSED,):
            return "connection refused"
        return cause.strerror or str(cause)
    text = str(e) or type(e).__name__
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "name not resolved"
    return text


class RegistryClient:
    def __init__(self, registry: str, *, insecure: bool | None = None,
                 credentials: Credentials | None = None, timeout: float = 30,
                 retries: int = 4, backoff: float = 0.5, use_stored_credentials: bool = True):
        """registry: `docker.io` or host[:port]. insecure: plain HTTP (None:
        only for loopback hosts). credentials: default from Docker's config."""
        self.registry = registry
        self.host = api_host(registry)
        plain = is_loopback(self.host) if insecure is None else insecure
        self.base_url = httpx.URL(f"{'http' if plain else 'https'}://{self.host}/v2/")
        self.retries = retries
        self.backoff = backoff
        if credentials is None and use_stored_credentials:
            credentials = get_credentials(registry)
        tls = {}
        if plain:   # the CA bundle only if a redirect leads to https
            tls = {"transport": httpx.HTTPTransport(verify=False), "mounts": {"https://": _LazyTLS()}}
        self._http = httpx.Client(timeout=timeout, follow_redirects=True,
                                  headers={"User-Agent": USER_AGENT}, **tls)
        self.auth = Authenticator(self.host, credentials, self._send_plain)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------
    # Requests: retries, authentication, errors
    # ------------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        return self.base_url.join(path)

    def _same_origin(self, url: httpx.URL) -> bool:
        def origin(u: httpx.URL):
            return u.scheme, u.host, u.port or {"http": 80, "https": 443}.get(u.scheme)
        return origin(url) == origin(self.base_url)

    def _once(self, method: str, url, *, headers=None, body=None, params=None, data=None,
              stream: bool = False) -> httpx.Response:
        """One request. Transport failures and 5xx/429 become _Transient."""
        content = body() if callable(body) else body
        request = self._http.build_request(method, url, headers=headers, content=content,
                                           params=params, data=data)
        try:
            response = self._http.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise RegistryUnreachable(
                f"cannot reach registry {request.url.netloc.decode()}: {_connect_reason(e)}") from None
        except (httpx.TransportError, httpx.StreamError) as e:
            raise _Transient(RegistryUnreachable(
                f"registry {self.host} dropped the connection during {method} "
                f"{request.url.path}: {e or type(e).__name__}")) from None
        if response.status_code >= 500 or response.status_code == 429:
            response.close()
            raise _Transient(RegistryError(
                f"registry {self.host} answered HTTP {response.status_code} to {method} "
                f"{request.url.path}"), _retry_after(response))
        return response

    def _retrying(self, attempt: Callable[[], httpx.Response]) -> httpx.Response:
        for n in range(self.retries + 1):
            try:
                return attempt()
            except _Transient as e:
                if n == self.retries:
                    raise e.error from None
                self._sleep(n, e.retry_after)
        raise AssertionError("unreachable")

    def _sleep(self, n: int, retry_after: float | None = None) -> None:
        delay = self.backoff * (2 ** n)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 60.0))
        time.sleep(delay)

    def _send_plain(self, method: str, url, **kw) -> httpx.Response:
        """For the token server: retried, never with the registry's auth."""
        response = self._retrying(lambda: self._once(method, url, **kw))
        response.read()
        return response

    def _request(self, method: str, url, scopes: tuple[str, ...], *, headers=None,
                 body=None, params=None, stream=False, retry=True) -> httpx.Response:
        """A request with authorization for `scopes`, answering one 401 challenge."""
        url = httpx.URL(url)
        for _ in range(2):
            sent = self.auth.header(scopes) if self._same_origin(url) else None
            all_headers = dict(headers or {})
            if sent:
                all_headers["Authorization"] = sent

            def attempt():
                return self._once(method, url, headers=all_headers, body=body,
                                  params=params, stream=stream)
            response = self._retrying(attempt) if retry else attempt()
            if response.status_code != 401:
                return response
            response.read()
            if not self.auth.on_unauthorized(response, scopes, sent):
                break
        return response

    def _fail(self, response: httpx.Response, what: str) -> RegistryError:
        """The user's error for an unexpected answer about `what`."""
        response.read()
        code, message = _error_code(response)
        status = response.status_code
        if status in (401, 403):
            if self.auth.credentials:
                return Unauthorized(f"access to {what} denied by {self.host}"
                                    f"{': ' + message if message else ''}")
            return Unauthorized(f"access to {what} denied: it does not exist or needs "
                                f"'capsa login {self.registry}'")
        if status == 404 and code in ("BLOB_UNKNOWN",):
            return BlobUnknown(f"blob unknown: {what}")
        if status == 404:
            return ManifestUnknown(f"{what}: not found"
                                   f"{' (' + message + ')' if message else ''}")
        detail = f": {code} {message}".rstrip() if code else ""
        return RegistryError(f"registry {self.host} answered HTTP {status} about {what}{detail}")

    # ------------------------------------------------------------------
    # The protocol
    # ------------------------------------------------------------------

    def ping(self, *, authenticate: bool = False) -> None:
        """Check the registry answers the v2 API; with authenticate, that the
        credentials (or anonymous access) are accepted."""
        if authenticate:
            response = self._request("GET", self._url(""), ())
        else:
            response = self._retrying(lambda: self._once("GET", self._url("")))
            if response.status_code == 401:
                self.auth.on_unauthorized(response, (), None)
                return
        if response.status_code == 401:
            if self.auth.credentials:
                raise Unauthorized(f"login to {self.host} refused: incorrect username or password")
            raise Unauthorized(f"{self.host} needs a login: run 'capsa login {self.registry}'")
        if response.status_code != 200:
            raise RegistryError(f"{self.host} is not a registry: GET /v2/ answered "
                                f"HTTP {response.status_code}")

    def get_manifest(self, repository: str, reference: str,
                     accept: tuple[str, ...] | list[str] = ALL_MANIFEST_TYPES) -> Manifest:
        validate_repository(repository)
        validate_manifest_reference(reference)
        what = f"{self.registry}/{repository}{'@' if ':' in reference else ':'}{reference}"
        url = self._url(f"{repository}/manifests/{reference}")
        scopes = (repository_scope(repository, "pull"),)

        def attempt() -> tuple[httpx.Response, bytes]:
            response = self._request("GET", url, scopes, headers={"Accept": ", ".join(accept)},
                                     stream=True)
            with contextlib.closing(response):
                if response.status_code != 200:
                    raise self._fail(response, what)
                return response, self._read_capped(response, MANIFEST_MAX, what)
        response, data = self._retrying(attempt)
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in mediatypes.ALL_MANIFEST_TYPES:
            from capsa.image import schema
            media_type = schema.document(data, f"the manifest of {what}").get("mediaType") or media_type
        digest = self._verify_manifest(data, reference, response.headers.get("docker-content-digest"),
                                       what)
        return Manifest(data, media_type, digest)

    def _read_capped(self, response: httpx.Response, limit: int, what: str) -> bytes:
        chunks, total = [], 0
        try:
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise RegistryError(f"the manifest of {what} is larger than {limit} bytes")
                chunks.append(chunk)
        except (httpx.TransportError, httpx.StreamError) as e:
            raise _Transient(RegistryUnreachable(f"registry {self.host} dropped the connection "
                                                 f"sending {what}: {e}")) from None
        return b"".join(chunks)

    @staticmethod
    def _verify_manifest(data: bytes, reference: str, header: str | None, what: str) -> str:
        if ":" in reference:
            expected = reference
        elif header:
            expected = header.strip()
        else:
            return compute_digest(data)
        algorithm = expected.split(":", 1)[0]
        if algorithm not in hashlib.algorithms_available:
            raise DigestMismatch(f"the manifest of {what} has an unsupported digest {expected}")
        actual = compute_digest(data, algorithm)
        if actual != expected:
            raise DigestMismatch(f"the manifest of {what} has digest {actual}, "
                                 f"not {expected}: corrupt or tampered with")
        return actual if algorithm == "sha256" else compute_digest(data)

    def blob_exists(self, repository: str, digest: str) -> int | None:
        """The blob's size if the repository has it, else None."""
        validate_repository(repository)
        validate_digest(digest)
        response = self._request("HEAD", self._url(f"{repository}/blobs/{digest}"),
                                 (repository_scope(repository, "pull"),))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"{self.registry}/{repository}@{digest}")
        try:
            return int(response.headers.get("content-length", ""))
        except ValueError:
            return 0

    def fetch_blob(self, repository: str, digest: str, dest: Path | str, *,
                   size: int | None = None, progress: Progress | None = None) -> None:
        """Download a blob to `dest`, verified. It streams to `.NAME.partial`
        beside dest, which a later call resumes; dest appears only, by an
        atomic rename, once the content has the digest. A partial whose
        content turns out wrong is removed."""
        validate_repository(repository)
        algorithm = validate_digest(digest).split(":", 1)[0]
        dest = Path(dest)
        partial = dest.with_name(f".{dest.name}.partial")
        what = f"{self.registry}/{repository}@{digest}"
        url = self._url(f"{repository}/blobs/{digest}")
        scopes = (repository_scope(repository, "pull"),)
        with _locked(partial) as f:
            if dest.exists():           # a concurrent fetch finished it while we waited
                partial.unlink(missing_ok=True)
                return
            part = _Partial(f, algorithm)
            if size is not None and part.done > size:
                part.restart()
            try:
                self._download_with_retries(url, scopes, what, part, size, progress)
            except BaseException as e:
                # keep a partial worth resuming; never one that is wrong or empty
                if part.done == 0 or isinstance(e, DigestMismatch):
                    partial.unlink(missing_ok=True)
                raise
            actual = part.digest()
            if actual != digest or (size is not None and part.done != size):
                partial.unlink(missing_ok=True)
                raise DigestMismatch(f"blob {what} arrived as {part.done} bytes with digest "
                                     f"{actual}: corrupt in the registry or in transit; "
                                     "nothing was stored")
            f.flush()
            os.fsync(f.fileno())
            os.replace(partial, dest)

    def _download_with_retries(self, url, scopes, what, part: _Partial, size, progress) -> None:
        failures = 0
        while True:
            before = part.done
            try:
                return self._download(url, scopes, what, part, size, progress)
            except _Transient as e:
                # a try that moved forward resets the budget
                failures = 0 if part.done > before else failures + 1
                if failures > self.retries:
                    raise e.error from None
                self._sleep(max(failures - 1, 0), e.retry_after)

    def _download(self, url, scopes, what, part: _Partial, size, progress) -> None:
        """One GET of the blob from where `part` ends, appended to it."""
        # identity: the bytes as stored are what the digest covers
        headers = {"Accept-Encoding": "identity"}
        if part.done:
            headers["Range"] = f"bytes={part.done}-"
        response = self._request("GET", url, scopes, headers=headers, stream=True)
        with contextlib.closing(response):
            status = response.status_code
            if status == 416 and part.done:
                if size is None or part.done == size:
                    return                   # all of it was already here; the digest decides
                part.restart()
                raise _Transient(RegistryError(f"registry {self.host} refused to resume {what}"))
            if status == 206 and not response.headers.get(
                    "content-range", "").startswith(f"bytes {part.done}-"):
                part.restart()               # not the range asked for: ask for all of it
                raise _Transient(RegistryError(f"registry {self.host} sent another range "
                                               f"of {what} than asked for"))
            if status not in (200, 206):
                raise self._fail(response, what)
            if status == 200 and part.done:
                part.restart()
            total = size
            if total is None and "content-length" in response.headers:
                with contextlib.suppress(ValueError):
                    total = part.done + int(response.headers["content-length"])
            try:
                for chunk in response.iter_raw():   # as it arrives: a buffer would be lost on a drop
                    part.append(chunk)
                    if size is not None and part.done > size:
                        raise DigestMismatch(f"blob {what} is larger than the {size} bytes "
                                             "its descriptor says; nothing was stored")
                    if progress:
                        progress(part.done, total)
            except (httpx.TransportError, httpx.StreamError) as e:
                raise _Transient(RegistryUnreachable(
                    f"registry {self.host} dropped the connection sending {what} "
                    f"({part.done} bytes in): {e or type(e).__name__}")) from None

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; True if it did."""
        validate_repository(repository)
        validate_repository(from_repository)
        validate_digest(digest)
        scopes = (repository_scope(repository, "pull", "push"),
                  repository_scope(from_repository, "pull"))
        response = self._request("POST", self._url(f"{repository}/blobs/uploads/"), scopes,
                                 params={"mount": digest, "from": from_repository})
        response.read()
        if response.status_code == 201:
            return True
        if response.status_code == 202:     # not mounted: an upload session we do not need
            with contextlib.suppress(RegistryError, httpx.HTTPError):
                self._request("DELETE", self._location(response), scopes).read()
            return False
        raise self._fail(response, f"{self.registry}/{repository}@{digest}")

    @staticmethod
    def _location(response: httpx.Response) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"registry answered {response.request.method} "
                                f"{response.request.url.path} without a Location")
        return response.url.join(location)

    def push_blob(self, repository: str, digest: str, path: Path | str, *, size: int,
                  progress: Progress | None = None, chunk_size: int | None = None) -> bool:
        """Upload a blob unless the repository has it (HEAD first). Monolithic
        by default; PATCH chunks of chunk_size when given. True if uploaded."""
        validate_repository(repository)
        validate_digest(digest)
        if self.blob_exists(repository, digest) is not None:
            if progress:
                progress(size, size)
            return False
        for n in range(self.retries + 1):
            try:
                self._upload(repository, digest, Path(path), size, progress, chunk_size)
                return True
            except _Transient as e:
                if n == self.retries:
                    raise e.error from None
                self._sleep(n, e.retry_after)
        return True

    def _upload(self, repository, digest, path, size, progress, chunk_size) -> None:
        scopes = (repository_scope(repository, "pull", "push"),)
        what = f"{self.registry}/{repository}@{digest}"
        response = self._request("POST", self._url(f"{repository}/blobs/uploads/"), scopes,
                                 headers={"Content-Length": "0"}, retry=False)
        response.read()
        if response.status_code != 202:
            raise self._fail(response, what)
        location = self._location(response)
        octets = {"Content-Type": "application/octet-stream"}
        if chunk_size:
            offset = 0
            with open(path, "rb") as f:
                while offset < size:
                    data = f.read(chunk_size)
                    if not data:
                        raise RegistryError(f"{path} is shorter than {size} bytes")
                    headers = {**octets, "Content-Length": str(len(data)),
                               "Content-Range": f"{offset}-{offset + len(data) - 1}"}
                    response = self._request("PATCH", location, scopes, headers=headers,
                                             body=data, retry=False)
                    response.read()
                    if response.status_code != 202:
                        raise self._fail(response, what)
                    location = self._location(response)
                    offset += len(data)
                    if progress:
                        progress(offset, size)
            response = self._request("PUT", location.copy_merge_params({"digest": digest}),
                                     scopes, headers={"Content-Length": "0"}, retry=False)
        else:
            def body() -> Iterator[bytes]:
                sent = 0
                with open(path, "rb") as f:
                    while chunk := f.read(STREAM_CHUNK):
                        sent += len(chunk)
                        yield chunk
                        if progress:
                            progress(sent, size)
            response = self._request("PUT", location.copy_merge_params({"digest": digest}),
                                     scopes, headers={**octets, "Content-Length": str(size)},
                                     body=body, retry=False)
        response.read()
        if response.status_code != 201:
            code, message = _error_code(response)
            if code == "DIGEST_INVALID":
                raise DigestMismatch(f"registry {self.host} computed another digest for "
                                     f"{path} than {digest}: {message}")
            raise self._fail(response, what)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Store a manifest under a tag (or its digest); returns its digest."""
        validate_repository(repository)
        validate_manifest_reference(reference)
        digest = compute_digest(data)
        if ":" in reference and reference != digest:
            raise DigestMismatch(f"manifest has digest {digest}, not {reference}")
        scopes = (repository_scope(repository, "pull", "push"),)
        response = self._request("PUT", self._url(f"{repository}/manifests/{reference}"),
                                 scopes, headers={"Content-Type": media_type}, body=data)
        response.read()
        if response.status_code not in (200, 201):
            raise self._fail(response, f"{self.registry}/{repository}:{reference}")
        returned = response.headers.get("docker-content-digest")
        if returned and returned != digest:
            raise DigestMismatch(f"registry {self.host} stored the manifest as {returned}, "
                                 f"not {digest}")
        return digest

    def list_tags(self, repository: str) -> list[str]:
        validate_repository(repository)
        scopes = (repository_scope(repository, "pull"),)
        url: httpx.URL | None = self._url(f"{repository}/tags/list")
        tags: list[str] = []
        while url is not None:
            response = self._request("GET", url, scopes)
            if response.status_code != 200:
                raise self._fail(response, f"{self.registry}/{repository}")
            try:
                tags.extend(response.json().get("tags") or [])
            except (ValueError, AttributeError):
                raise RegistryError(f"registry {self.host} sent a tag list that is not JSON") from None
            nxt = response.links.get("next", {}).get("url")
            url = response.url.join(nxt) if nxt else None
        return tags


class _LazyTLS(httpx.BaseTransport):
    """The https transport, made on first use: loading the CA bundle costs
    tens of milliseconds that a plain-HTTP (loopback) registry never needs.
    The plain transport it stands beside never sees an https URL."""

    def __init__(self):
        self._transport: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self._transport is None:
                self._transport = httpx.HTTPTransport()
        return self._transport.handle_request(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@contextlib.contextmanager
def _locked(path: Path):
    """The partial file, opened and exclusively locked: two fetches of one
    blob take turns instead of writing the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)     # the previous holder renamed or removed it: lock the new one
    with os.fdopen(fd, "r+b") as f:
        yield f


class _Partial:
    """A blob being downloaded: the file, its length and the running hash,
    always in step (a resumed fetch first hashes what is already there)."""

    def __init__(self, f, algorithm: str):
        self.f = f
        self.algorithm = algorithm
        self.hasher = hashlib.new(algorithm)
        self.done = 0
        f.seek(0)
        while chunk := f.read(STREAM_CHUNK):
            self.hasher.update(chunk)
            self.done += len(chunk)

    def restart(self) -> None:
        self.f.seek(0)
        self.f.truncate(0)
        self.hasher = hashlib.new(self.algorithm)
        self.done = 0

    def append(self, chunk: bytes) -> None:
        self.f.write(chunk)
        self.hasher.update(chunk)
        self.done += len(chunk)

    def digest(self) -> str:
        return f"{self.algorithm}:{self.hasher.hexdigest()}"
