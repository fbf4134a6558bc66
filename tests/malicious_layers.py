"""A corpus of hostile image layers. Each case builds a tar that tries to
create, change, chmod, chown, link or delete something outside the directory
it is extracted into. The sandbox the test gives every case:

    <sandbox>/sentinel/{passwd, victim, dir/inner}   must never change
    <sandbox>/dest                                    the layer directory

Absolute-path attacks name the real sentinel (`<sandbox>/sentinel/...`), so an
extractor that honoured them would hit it.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, link: str = "",
           mode: int = 0o644, uid: int = 0, gid: int = 0, dev: tuple[int, int] = (0, 0),
           pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = 1_600_000_000
    info.linkname = link
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    if pax:
        info.pax_headers = dict(pax)
    return info, data


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def d(name: str, **kw):
    return member(name, tarfile.DIRTYPE, mode=kw.pop("mode", 0o755), **kw)


def sym(name: str, target: str, **kw):
    return member(name, tarfile.SYMTYPE, link=target, mode=0o777, **kw)


def hard(name: str, target: str):
    return member(name, tarfile.LNKTYPE, link=target)


def f(name: str, data: bytes = b"pwned\n", **kw):
    return member(name, tarfile.REGTYPE, data, **kw)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], bytes]  # sandbox -> tar bytes
    why: str


def _s(sandbox: Path) -> str:
    """The sentinel's absolute path, as an attacker who knows it would write it."""
    return str(sandbox / "sentinel")


CASES = [
    Case("dotdot_file", lambda s: tar_bytes([f("../sentinel/victim")]),
         "`..` climbs from the layer dir to its sibling"),
    Case("deep_dotdot", lambda s: tar_bytes([d("a"), f("a/../../../../../../sentinel/victim")]),
         "`..` below a real directory, more of them than the depth"),
    Case("absolute_path", lambda s: tar_bytes([f(_s(s) + "/victim"), f("/" + _s(s) + "/passwd")]),
         "absolute names pointing at the sentinel"),
    Case("symlink_to_root_then_write", lambda s: tar_bytes([sym("root", "/"), f("root" + _s(s) + "/victim")]),
         "a symlink to / followed by a write through it"),
    Case("relative_symlink_out_then_write", lambda s: tar_bytes([sym("esc", "../sentinel"), f("esc/victim")]),
         "a relative symlink leaving the layer, then a write through it"),
    Case("absolute_symlink_out_then_write", lambda s: tar_bytes([sym("esc", _s(s)), f("esc/passwd"), d("esc/dir/new")]),
         "an absolute symlink to the sentinel, then a file and a dir through it"),
    Case("symlink_chain", lambda s: tar_bytes([sym("a", "b"), sym("b", "c/../d"), d("c"), sym("d", "../../sentinel"),
                                               f("a/victim")]),
         "a chain of symlinks whose last hop leaves the layer"),
    Case("file_over_symlink", lambda s: tar_bytes([sym("victim", "../sentinel/victim"), f("victim", b"overwrite\n", mode=0o4777)]),
         "a file entry with the name of a symlink must replace the link, not write through it"),
    Case("hardlink_to_outside_relative", lambda s: tar_bytes([hard("pw", "../sentinel/passwd"), f("pw", b"root::0:0::/:/bin/sh\n")]),
         "a hardlink to a file outside, then a write to the link"),
    Case("hardlink_to_outside_absolute", lambda s: tar_bytes([hard("pw", _s(s) + "/passwd")]),
         "a hardlink naming the sentinel by absolute path"),
    Case("hardlink_through_symlink", lambda s: tar_bytes([sym("esc", _s(s)), hard("pw", "esc/passwd")]),
         "a hardlink whose target goes through a symlink that leaves the layer"),
    Case("whiteout_escape", lambda s: tar_bytes([f("../.wh.sentinel"), f("../sentinel/.wh.passwd")]),
         "whiteouts named with `..` to delete the sentinel"),
    Case("whiteout_through_symlink", lambda s: tar_bytes([sym("esc", "../sentinel"), f("esc/.wh.passwd"),
                                                          f("esc/dir/.wh..wh..opq")]),
         "a whiteout and an opaque marker under a symlink that leaves the layer"),
    Case("dir_replacing_symlink", lambda s: tar_bytes([sym("d", "../sentinel"), d("d", mode=0o777, uid=4242, gid=4242),
                                                       f("d/victim")]),
         "a directory entry over a symlink to the sentinel: no chmod/chown of the target"),
    Case("chown_chmod_through_symlink", lambda s: tar_bytes([sym("pw", "../sentinel/passwd", uid=4242, gid=4242),
                                                             sym("pw", _s(s) + "/passwd", uid=4243, gid=4243)]),
         "symlink ownership applies to the link, never to what it points at"),
    Case("device_at_escaping_path", lambda s: tar_bytes([member("../sentinel/null", tarfile.CHRTYPE, dev=(1, 3)),
                                                         sym("esc", _s(s)),
                                                         member("esc/disk", tarfile.BLKTYPE, dev=(7, 0)),
                                                         member("esc/fifo", tarfile.FIFOTYPE)]),
         "device nodes and a fifo at names that escape"),
    Case("pax_long_name_escape", lambda s: tar_bytes([f("../" * 40 + _s(s).lstrip("/") + "/" + "v" * 120)]),
         "a PAX long path made of `..` to the sentinel"),
    Case("gnu_long_link_escape", lambda s: tar_bytes([hard("x" * 150, "../" * 60 + _s(s).lstrip("/") + "/passwd")],
                                                     fmt=tarfile.GNU_FORMAT),
         "a GNU long linkname for a hardlink leaving the layer"),
    Case("root_entry_as_symlink", lambda s: tar_bytes([sym("./", _s(s)), f("victim")]),
         "the layer root itself as a symlink to the sentinel"),
    Case("xattr_through_symlink", lambda s: tar_bytes([sym("pw", _s(s) + "/passwd"),
                                                       f("pw", pax={"SCHILY.xattr.user.pwned": "1"})]),
         "an xattr for a name that is a symlink out"),
]
