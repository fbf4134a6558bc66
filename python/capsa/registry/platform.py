"""Platforms (`linux/arm64`, `linux/arm/v7`) and choosing one manifest from
an image index. Names are normalised as containerd does, so `x86_64`,
`aarch64` and `arm64/v8` mean what the user meant."""

from __future__ import annotations

import os
from dataclasses import dataclass

from capsa.errors import CapsaError
from capsa.registry.errors import NoMatchingPlatform

_ARCH_ALIASES = {
    "x86_64": ("amd64", None), "x86-64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armhf": ("arm", "v7"), "armel": ("arm", "v6"),
    "armv5l": ("arm", "v5"), "armv6l": ("arm", "v6"), "armv7l": ("arm", "v7"),
    "armv8l": ("arm", "v8"), "arm": ("arm", None),
    "i386": ("386", None), "i686": ("386", None), "386": ("386", None),
}


class InvalidPlatform(CapsaError):
    pass


def _normalise(os_name: str, arch: str, variant: str | None) -> tuple[str, str, str | None]:
    os_name = os_name.lower()
    arch = arch.lower()
    variant = variant.lower() if variant else None
    arch, implied = _ARCH_ALIASES.get(arch, (arch, None))
    variant = variant or implied
    if variant and variant.isdigit():
        variant = "v" + variant
    if arch == "arm64" and variant == "v8":
        variant = None          # v8 is the only arm64, and indexes usually omit it
    if arch == "arm" and variant is None:
        variant = "v7"
    if arch == "amd64" and variant == "v1":
        variant = None
    return os_name, arch, variant


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def of(cls, os_name: str, architecture: str, variant: str | None = None) -> Platform:
        return cls(*_normalise(os_name, architecture, variant))

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`os/arch[/variant]`; a bare `arch` means linux."""
        parts = text.strip().split("/")
        if len(parts) == 1 and parts[0]:
            parts = ["linux", parts[0]]
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidPlatform(f"invalid platform {text!r}: expected os/arch[/variant], "
                                  "e.g. linux/arm64")
        return cls.of(*parts)

    @classmethod
    def from_descriptor(cls, descriptor: dict) -> Platform | None:
        p = descriptor.get("platform")
        if not isinstance(p, dict) or not p.get("os") or not p.get("architecture"):
            return None
        return cls.of(p["os"], p["architecture"], p.get("variant"))

    def __str__(self) -> str:
        return "/".join(x for x in (self.os, self.architecture, self.variant) if x)


def host_platform() -> Platform:
    uname = os.uname()
    return Platform.of(uname.sysname, uname.machine)


def _arm_fallbacks(variant: str) -> list[str]:
    """An arm v7 machine also runs v6 and v5 images, best first."""
    order = ["v8", "v7", "v6", "v5"]
    return order[order.index(variant):] if variant in order else [variant]


def resolve_platform(index: bytes | str | dict, platform: Platform | str | None = None) -> dict:
    """The descriptor in an image index (or Docker manifest list) for `platform`
    (default: the host's); NoMatchingPlatform if it has none."""
    if isinstance(platform, str):
        platform = Platform.parse(platform)
    wanted = platform or host_platform()
    if not isinstance(index, dict):
        from capsa.image import schema
        index = schema.index(index, "the image index")
    candidates = [(d, Platform.from_descriptor(d)) for d in index.get("manifests") or []]
    same_arch = [(d, p) for d, p in candidates
                 if p and p.os == wanted.os and p.architecture == wanted.architecture]
    variants = _arm_fallbacks(wanted.variant) if wanted.architecture == "arm" else [wanted.variant]
    for variant in variants:
        for descriptor, p in same_arch:
            if p.variant == variant:
                return descriptor
    available = sorted({str(p) for _, p in candidates if p and p.os != "unknown"})
    raise NoMatchingPlatform(
        f"no matching manifest for {wanted} in the image index "
        f"(available: {', '.join(available) or 'none'}); choose one with --platform")
