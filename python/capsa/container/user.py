"""The image's User ("name", "uid", "name:group", "uid:gid"...) resolved
against the image's own /etc/passwd and /etc/group, as Docker does: a
numeric uid need not exist (its gid is then 0); a name must."""

from __future__ import annotations

from pathlib import Path

from capsa.errors import CapsaError


class Identity:
    def __init__(self):
        self.uid = 0
        self.gid = 0
        self.additional_gids: list[int] = []
        self.home = "/"


# /etc/passwd and /etc/group are read up to this size (a hostile image's may be huge).
MAX_DB_BYTES = 4 << 20


def _entries(layers: list[Path], relpath: str) -> list[list[str]]:
    """The lines of a file as the merged image shows it, resolved inside the
    image's layers by the core (an image's `etc -> /host/dir` or a passwd
    that is /dev/zero never reaches the host); none if it is absent."""
    from capsa import _core

    data = _core.read_image_file([str(p) for p in layers], "/" + relpath, MAX_DB_BYTES)
    if data is None:
        return []
    text = data.decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve(spec: str, layers: list[Path]) -> Identity:
    spec = (spec or "").strip()
    if not spec:
        spec = "0"
    user, _, group = spec.partition(":")
    passwd = [e for e in _entries(layers, "etc/passwd") if len(e) >= 7]
    groups = [e for e in _entries(layers, "etc/group") if len(e) >= 3]
    ident = Identity()
    entry = None
    if user.isdigit():
        ident.uid = int(user)
        entry = next((e for e in passwd if e[2] == user), None)
    else:
        entry = next((e for e in passwd if e[0] == user), None)
        if entry is None:
            raise CapsaError(f"unable to find user {user}: no matching entries in passwd file")
        ident.uid = int(entry[2])
    name = entry[0] if entry else None
    if entry is not None:
        ident.gid = int(entry[3]) if entry[3].isdigit() else 0
        ident.home = entry[5] or "/"
    if group:
        if group.isdigit():
            ident.gid = int(group)
        else:
            g = next((e for e in groups if e[0] == group), None)
            if g is None:
                raise CapsaError(f"unable to find group {group}: no matching entries in group file")
            ident.gid = int(g[2])
    elif name is not None:
        # Supplementary groups: every group that lists the user (only when no group was given).
        ident.additional_gids = sorted({int(e[2]) for e in groups if e[2].isdigit() and name in e[3].split(",") and int(e[2]) != ident.gid})
    return ident
