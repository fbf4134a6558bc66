"""Image references (`busybox`, `ghcr.io/a/b:1.0`, `x@sha256:...`), parsed
and normalised by Docker's rules so that capsa names the same image Docker
would. Imported on the container start path: standard library only."""

from __future__ import annotations

import re
from dataclasses import dataclass

from capsa.errors import CapsaError

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_LEGACY_DEFAULT_REGISTRY = "index.docker.io"
_OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

# The grammar of distribution/reference, written out here.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")

# Digest algorithms capsa can verify, with their hex lengths.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}


class InvalidReference(CapsaError):
    """A string that is not a valid image reference."""


def _invalid(text: str, why: str) -> InvalidReference:
    return InvalidReference(f"invalid reference format: {text!r}: {why}")


def validate_digest(digest: str) -> str:
    """`algorithm:hex` for an algorithm capsa verifies; returns it unchanged."""
    algorithm, _, hex_part = digest.partition(":")
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None or len(hex_part) != length or not re.fullmatch(r"[0-9a-f]+", hex_part):
        raise InvalidReference(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    return digest


def api_host(registry: str) -> str:
    """The host serving the registry API (Docker Hub's is not docker.io)."""
    return DOCKER_HUB_API_HOST if registry == DEFAULT_REGISTRY else registry


def _split_registry(name: str) -> tuple[str, str]:
    """Docker's splitDockerDomain: the first component is a registry host only
    if it has a `.` or `:`, is `localhost`, or has capitals (which no
    repository path may have)."""
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first
                     and first != "localhost" and first.lower() == first):
        registry, remainder = DEFAULT_REGISTRY, name
    else:
        registry, remainder = first, rest
    if registry == _LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = _OFFICIAL_PREFIX + remainder
    return registry, remainder


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if not text:
            raise InvalidReference("invalid reference format: empty image name")
        if _HEX64_RE.match(text):
            raise _invalid(text, "cannot be a 64-character hexadecimal string (that is an image ID)")
        name, at, digest = text.partition("@")
        if at:
            if not _DIGEST_RE.match(digest):
                raise _invalid(text, "bad digest")
            validate_digest(digest)
        # A tag is after the last ':' that is not inside the registry host's port.
        tag = None
        colon = name.rfind(":")
        if colon > name.rfind("/"):
            name, tag = name[:colon], name[colon + 1:]
            if not _TAG_RE.match(tag):
                raise _invalid(text, "bad tag (letters, digits, '_', '.', '-'; at most 128)")
        if not name:
            raise _invalid(text, "empty repository name")
        registry, repository = _split_registry(name)
        if repository.lower() != repository:
            raise _invalid(text, "repository name must be lowercase")
        if not _DOMAIN_RE.match(registry):
            raise _invalid(text, f"bad registry host {registry!r}")
        if not _PATH_RE.match(repository):
            raise _invalid(text, "bad repository name (lowercase letters, digits and "
                                 "separators '.', '_', '__', '-', '/')")
        if len(registry) + 1 + len(repository) > NAME_MAX:
            raise _invalid(text, f"repository name must not be more than {NAME_MAX} characters")
        if tag is None and not at:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest or None)

    @property
    def api_host(self) -> str:
        return api_host(self.registry)

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """Docker's short name: `busybox`, `user/app`, `ghcr.io/a/b`."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        repo = self.repository
        if repo.startswith(_OFFICIAL_PREFIX) and "/" not in repo[len(_OFFICIAL_PREFIX):]:
            return repo[len(_OFFICIAL_PREFIX):]
        return repo

    @property
    def familiar(self) -> str:
        return self._with_suffix(self.familiar_name)

    @property
    def manifest_reference(self) -> str:
        """What to ask the registry's manifests endpoint for."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise _invalid(tag, "bad tag (letters, digits, '_', '.', '-'; at most 128)")
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, validate_digest(digest))

    def _with_suffix(self, name: str) -> str:
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name

    def __str__(self) -> str:
        return self._with_suffix(self.name)


def validate_repository(repository: str) -> str:
    """A repository path as a registry URL may carry it (no `..`, no `%`)."""
    if not _PATH_RE.match(repository) or len(repository) > NAME_MAX:
        raise _invalid(repository, "bad repository name")
    return repository


def validate_manifest_reference(reference: str) -> str:
    """A tag or a digest."""
    if ":" in reference:
        return validate_digest(reference)
    if not _TAG_RE.match(reference):
        raise _invalid(reference, "bad tag")
    return reference
