"""`capsa run` with images from a real registry (Debian's docker-registry on
loopback): push, rmi, then run pulls the absent image as Docker does; an
unknown image fails after the pull with one line and leaves nothing."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

import helpers as h
import image_fixtures as imgs
from capsa.container import lifecycle
from capsa.container.state import Store

CAPSA = str(Path(sys.executable).parent / "capsa")


@pytest.fixture
def capsa(base_dir):
    """`capsa --root R ...` on a fresh store holding busybox; nothing may be left afterwards."""
    root = base_dir / f"capsa-reg-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    os.chmod(root, 0o755)
    imgs.import_busybox(root, base_dir / f"reg-image-{uuid.uuid4().hex[:8]}")

    def run(*args, timeout=120):
        return h.run_cmd([CAPSA, "--root", str(root), *args], timeout=timeout)

    run.root = root
    yield run
    store = Store(root)
    recs = store.all()
    for rec in recs:
        lifecycle.remove(store, rec, force=True)
    left = [str(d) for d in (root / "containers").glob("*")] if (root / "containers").exists() else []
    left += h.mounts_containing(str(root))
    assert not recs and not left, f"left behind: {[r.id for r in recs]} {left}"


def test_push_rmi_then_run_pulls(capsa, registry):
    ref = f"{registry.host}/capsa-test/bb{uuid.uuid4().hex[:6]}:v1"
    r = capsa("tag", "busybox", ref)
    assert r.returncode == 0, r.stderr
    r = capsa("push", ref)
    assert r.returncode == 0, r.stderr
    r = capsa("rmi", ref)
    assert r.returncode == 0, r.stderr
    assert ref not in capsa("images").stdout
    r = capsa("run", "--rm", ref, "echo", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"
    assert f"Unable to find image '{ref}' locally" in r.stderr
    # Now it is in the store: a second run does not pull.
    r = capsa("run", "--rm", ref, "echo", "again")
    assert (r.returncode, r.stdout) == (0, "again\n"), r.stderr
    assert "Unable to find image" not in r.stderr
    assert ref.rsplit(":", 1)[0] in capsa("images").stdout


@pytest.mark.parametrize("detach", [False, True])
def test_unknown_image_one_line_and_nothing_created(capsa, registry, detach):
    ref = f"{registry.host}/capsa-test/absent{uuid.uuid4().hex[:6]}:nope"
    r = capsa("run", *(["-d"] if detach else []), "--rm", "--name", "never", ref, "true")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and ref.split("/", 1)[1].split(":")[0] in errors[0], r.stderr
    assert Store(capsa.root).all() == []
    assert not (capsa.root / "containers").exists() or not any((capsa.root / "containers").iterdir())
    # The name was not taken by a half-created container.
    r = capsa("create", "--name", "never", "busybox", "true")
    assert r.returncode == 0, r.stderr
    assert capsa("rm", "never").returncode == 0
