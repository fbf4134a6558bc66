"""Image references normalised as Docker normalises them, platforms parsed
and matched as containerd does (no registry needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from capsa.errors import CapsaError
from capsa.image.reference import InvalidReference, Reference
from capsa.registry.errors import NoMatchingPlatform
from capsa.registry.platform import InvalidPlatform, Platform, host_platform, resolve_platform

D = "sha256:" + "ab" * 32
D2 = "sha256:" + "cd" * 32

# text -> (registry, repository, tag, digest, str, familiar)
CASES = [
    ("busybox", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None,
     "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest", "busybox:latest"),
    ("user/app", "docker.io", "user/app", "latest", None,
     "docker.io/user/app:latest", "user/app:latest"),
    ("docker.io/library/a/b", "docker.io", "library/a/b", "latest", None,
     "docker.io/library/a/b:latest", "library/a/b:latest"),
    ("ghcr.io/org/tool:v1.2", "ghcr.io", "org/tool", "v1.2", None,
     "ghcr.io/org/tool:v1.2", "ghcr.io/org/tool:v1.2"),
    ("localhost/app", "localhost", "app", "latest", None,
     "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/a/b:t", "localhost:5000", "a/b", "t", None,
     "localhost:5000/a/b:t", "localhost:5000/a/b:t"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None,
     "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("[::1]:5000/x:y", "[::1]:5000", "x", "y", None, "[::1]:5000/x:y", "[::1]:5000/x:y"),
    # a port-like tag on a bare name is a tag (as in Docker)
    ("localhost:5000", "docker.io", "library/localhost", "5000", None,
     "docker.io/library/localhost:5000", "localhost:5000"),
    # capitals in the first component make it a host, not a repository
    ("Registry/app", "Registry", "app", "latest", None, "Registry/app:latest", "Registry/app:latest"),
    (f"busybox@{D}", "docker.io", "library/busybox", None, D,
     f"docker.io/library/busybox@{D}", f"busybox@{D}"),
    (f"busybox:1.36@{D}", "docker.io", "library/busybox", "1.36", D,
     f"docker.io/library/busybox:1.36@{D}", f"busybox:1.36@{D}"),
    (f"quay.io/a/b-c_d.e__f:tag_1.0-rc@{D}", "quay.io", "a/b-c_d.e__f", "tag_1.0-rc", D,
     f"quay.io/a/b-c_d.e__f:tag_1.0-rc@{D}", f"quay.io/a/b-c_d.e__f:tag_1.0-rc@{D}"),
    ("a--b/c", "docker.io", "a--b/c", "latest", None, "docker.io/a--b/c:latest", "a--b/c:latest"),
]


@pytest.mark.parametrize("text,registry,repository,tag,digest,full,familiar", CASES,
                         ids=[c[0] for c in CASES])
def test_parse_normalises_like_docker(text, registry, repository, tag, digest, full, familiar):
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == full
    assert ref.familiar == familiar
    # the normalised forms parse back to the same reference
    assert Reference.parse(full) == ref
    assert Reference.parse(familiar) == ref


def test_api_host_and_manifest_reference():
    assert Reference.parse("busybox").api_host == "registry-1.docker.io"
    assert Reference.parse("quay.io/a/b").api_host == "quay.io"
    assert Reference.parse("busybox").manifest_reference == "latest"
    assert Reference.parse(f"busybox:1@{D}").manifest_reference == D
    ref = Reference.parse("busybox:1").with_digest(D2)
    assert str(ref) == f"docker.io/library/busybox:1@{D2}"
    assert str(ref.with_tag("2")) == "docker.io/library/busybox:2"


BAD = [
    ("", "empty"),
    ("Busybox", "must be lowercase"),
    ("user/App", "must be lowercase"),
    ("ab" * 32, "hexadecimal"),
    ("busybox:", "bad tag"),
    ("busybox:-x", "bad tag"),
    ("busybox:" + "t" * 129, "bad tag"),
    ("busybox@sha256:abc", "bad digest"),
    ("busybox@md5:" + "a" * 32, "invalid digest"),
    ("busybox@sha256:" + "AB" * 32, "invalid digest"),
    ("a//b", "bad repository"),
    ("a/-b", "bad repository"),
    ("a/b_", "bad repository"),
    ("a/../b", "bad repository"),
    ("a b", "bad"),
    ("-host.io/x", "bad registry host"),
    ("quay.io/" + "a" * 250, "255"),
]


@pytest.mark.parametrize("text,fragment", BAD, ids=[b[0][:40] or "empty" for b in BAD])
def test_bad_references_give_one_line_errors(text, fragment):
    with pytest.raises(InvalidReference) as info:
        Reference.parse(text)
    message = str(info.value)
    assert isinstance(info.value, CapsaError)
    assert fragment in message and "\n" not in message


def test_reference_module_does_not_import_httpx():
    code = ("import sys, capsa.image.reference as r; r.Reference.parse('busybox'); "
            "print('httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------
# Platforms
# --------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/arm64", "linux/arm64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/arm/v6", "linux/arm/v6"),
    ("Linux/AMD64", "linux/amd64"),
    ("arm64", "linux/arm64"),
    ("linux/riscv64", "linux/riscv64"),
])
def test_platform_parse_normalises(text, expected):
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "linux/", "/amd64", "linux/arm/v7/x"])
def test_bad_platform(text):
    with pytest.raises(InvalidPlatform):
        Platform.parse(text)


def test_host_platform_is_this_machine():
    import os
    machine = os.uname().machine
    assert host_platform().os == "linux"
    assert host_platform() == Platform.parse(f"linux/{machine}")


def _index(*platforms):
    manifests = []
    for i, p in enumerate(platforms):
        os_name, arch, *variant = p.split("/")
        plat = {"os": os_name, "architecture": arch}
        if variant:
            plat["variant"] = variant[0]
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": f"sha256:{i:064x}", "size": 1, "platform": plat})
    return json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()


def test_resolve_platform_picks_the_match():
    index = _index("unknown/unknown", "linux/amd64", "linux/arm64/v8", "linux/arm/v6",
                   "linux/arm/v7")
    assert resolve_platform(index, "linux/amd64")["digest"].endswith("1")
    assert resolve_platform(index, "linux/arm64")["digest"].endswith("2")   # v8 ~ no variant
    assert resolve_platform(index, "linux/aarch64")["digest"].endswith("2")
    assert resolve_platform(index, "linux/arm/v7")["digest"].endswith("4")
    assert resolve_platform(index, Platform.parse("linux/arm/v6"))["digest"].endswith("3")
    # default: the host's platform
    host = host_platform()
    if host.architecture in ("amd64", "arm64"):
        assert resolve_platform(index)["platform"]["architecture"] == host.architecture


def test_resolve_platform_arm_falls_back_to_older_variants():
    index = _index("linux/amd64", "linux/arm/v5", "linux/arm/v6")
    assert resolve_platform(index, "linux/arm/v7")["digest"].endswith("2")


def test_resolve_platform_no_match():
    index = _index("unknown/unknown", "linux/amd64", "linux/arm/v7")
    with pytest.raises(NoMatchingPlatform) as info:
        resolve_platform(index, "linux/s390x")
    message = str(info.value)
    assert "linux/s390x" in message and "linux/amd64, linux/arm/v7" in message
    assert "unknown" not in message and "\n" not in message
    with pytest.raises(NoMatchingPlatform):
        resolve_platform(index, "linux/arm/v6")   # v7 does not run on a v6 machine
