//! Member names and symlink targets of a `cp` archive, judged by their text.
//! Where the kernel is involved (symlinks met on the way, a directory moved
//! meanwhile), openat2 decides; these rules only say which names and which
//! links are acceptable at all.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A member name as a path below the destination: a leading `/` and `.` or
/// empty components dropped (as GNU tar does). A name with a `..` component
/// is refused (None), never clamped: an archive that says `..` is lying about
/// where its files go. The destination itself is the empty path.
pub fn member(raw: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            name => out.push(OsStr::from_bytes(name)),
        }
    }
    Some(out)
}

/// Whether a symlink at `member` (a path below the destination, made of real
/// directories: members are never created through a link) with this target
/// resolves inside the destination whatever the other links are: it must be
/// relative, and may only climb (`..`) before it names anything, at most as
/// many levels as `member` is deep. A name after that is a real directory,
/// a file, or a link that passed this same test, so no chain of links can
/// lead out. `a/../b` is refused: `a` may be a link, and `..` from its
/// target is not `..` from `a`'s directory.
pub fn link_stays_inside(member: &Path, target: &[u8]) -> bool {
    if target.is_empty() || target[0] == b'/' {
        return false;
    }
    let depth = member.components().count().saturating_sub(1);
    let (mut ups, mut named) = (0usize, false);
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if named => return false,
            b".." => ups += 1,
            _ => named = true,
        }
    }
    ups <= depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Option<String> {
        member(s.as_bytes()).map(|p| p.to_string_lossy().into_owned())
    }

    #[test]
    fn member_names() {
        assert_eq!(m("out/sub/f"), Some("out/sub/f".into()));
        assert_eq!(m("/abs/member"), Some("abs/member".into()));
        assert_eq!(m("./a//b/./"), Some("a/b".into()));
        assert_eq!(m("./"), Some("".into()));
        assert_eq!(m("a/..b"), Some("a/..b".into()));
        for bad in ["..", "../x", "a/../b", "/../../etc/passwd", "a/b/.."] {
            assert_eq!(m(bad), None, "{bad}");
        }
    }

    #[test]
    fn links_that_stay() {
        let at = |p: &str, t: &str| link_stays_inside(Path::new(p), t.as_bytes());
        assert!(at("sh", "busybox"));
        assert!(at("out/ok", "sub/f"));
        assert!(at("out/sub/okup", "../f"));
        assert!(at("out/sub/top", "../.."));
        assert!(at("out/here", "."));
        assert!(at("out/x", "./sub/./f"));
    }

    #[test]
    fn links_that_leave() {
        let at = |p: &str, t: &str| link_stays_inside(Path::new(p), t.as_bytes());
        assert!(!at("out/abs", "/etc/shadow"));
        assert!(!at("escape", "/"));
        assert!(!at("up", ".."));
        assert!(!at("out/climb", "../../etc"));
        assert!(!at("out/dotdot", "sub/../../x"));
        assert!(!at("out/sub2", "sub/.."));
        assert!(!at("out/chain", "sub2/../../../etc"));
        assert!(!at("out/empty", ""));
    }
}
