"""A real root filesystem for the benchmarks (and the tests that want one):
Debian bookworm minbase + nginx made by debootstrap from this machine's apt
mirror, cached; without a mirror or debootstrap, a copy of this host's /usr,
with the reason."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = "bookworm"


def apt_mirror() -> str | None:
    """The Debian archive URI apt uses here, from deb822 .sources or one-line lists."""
    files = sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]
    files += sorted(Path("/etc/apt").glob("sources.list.d/*.list"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if SUITE in fields.get("Suites", "").split() and fields.get("Types", "") == "deb":
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and SUITE in parts and not parts[1].startswith("["):
                    return parts[1]
    return None


def build_rootfs(cache: Path) -> tuple[Path, str]:
    """A debootstrapped bookworm + nginx, or (with the reason) this host's /usr."""
    rootfs = cache / "rootfs"
    done = cache / "rootfs.done"
    if done.exists():
        return rootfs, done.read_text().strip()
    mirror = apt_mirror()
    why = None
    if mirror is None:
        why = "no bookworm mirror found in /etc/apt/sources.list*"
    elif shutil.which("debootstrap") is None:
        why = "debootstrap is not installed"
    else:
        shutil.rmtree(rootfs, ignore_errors=True)
        print(f"debootstrap --variant=minbase --include=nginx {SUITE} {rootfs} {mirror}", file=sys.stderr)
        r = subprocess.run(["debootstrap", "--variant=minbase", "--include=nginx", SUITE, str(rootfs), mirror],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
            why = f"debootstrap failed (exit {r.returncode}): {tail}"
    if why is None:
        # as image builds do (apt-get clean): the downloaded .debs are not part of the image
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        source = f"debootstrap {SUITE} minbase + nginx from {mirror}"
    else:
        print(f"falling back to this host's /usr: {why}", file=sys.stderr)
        shutil.rmtree(rootfs, ignore_errors=True)
        (rootfs).mkdir(parents=True)
        subprocess.run(["cp", "-a", "/usr", str(rootfs / "usr")], check=True)
        source = f"this host's /usr ({why})"
    done.write_text(source + "\n")
    return rootfs, source
