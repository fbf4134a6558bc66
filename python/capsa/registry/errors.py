"""What can go wrong talking to a registry, as one-line user errors."""

from __future__ import annotations

from capsa.errors import BadInput, CapsaError, NotFound


class RegistryError(CapsaError):
    """The registry answered something the protocol does not allow here."""


class Unauthorized(RegistryError):
    """Credentials missing, wrong, or without access to the repository."""


class ManifestUnknown(NotFound, RegistryError):
    """No such repository, tag or manifest digest."""


class BlobUnknown(NotFound, RegistryError):
    """The registry does not have a blob the manifest names."""


class RegistryUnreachable(RegistryError):
    """Connection refused, name not resolved, or the registry kept failing."""


class DigestMismatch(RegistryError, BadInput):
    """Content whose sha256 is not the digest it was asked for by."""


class NoMatchingPlatform(NotFound, RegistryError):
    """A multi-platform image has no manifest for the wanted platform."""
