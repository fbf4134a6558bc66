//! Entry paths from a tar header, made relative to the layer root. This is
//! only the lexical part: `..` is clamped at the root the way a chroot would
//! see it. Symlinks met on the way are the kernel's job (openat2
//! RESOLVE_IN_ROOT in `root.rs`), so a path can never reach outside either way.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `raw` as a relative path below the root: leading `/`, `.` and empty
/// components dropped, `..` pops (never above the root). The root itself is
/// the empty path.
pub fn normalise(raw: &[u8]) -> PathBuf {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut out = PathBuf::new();
    for p in parts {
        out.push(OsStr::from_bytes(p));
    }
    out
}

/// The directory holding `rel` and the last component; None for the root.
pub fn split(rel: &Path) -> Option<(&Path, &OsStr)> {
    Some((rel.parent()?, rel.file_name()?))
}

/// An entry path as it may be printed on one line (control characters escaped).
pub fn display(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalise(s.as_bytes()).to_string_lossy().into_owned()
    }

    #[test]
    fn plain_paths_stay() {
        assert_eq!(n("usr/bin/env"), "usr/bin/env");
        assert_eq!(n("./usr/bin/"), "usr/bin");
        assert_eq!(n("a//b/./c"), "a/b/c");
    }

    #[test]
    fn root_forms_are_empty() {
        for s in ["", ".", "./", "/", "//", "..", "../..", "./.."] {
            assert_eq!(n(s), "", "{s:?}");
        }
    }

    #[test]
    fn parent_components_are_clamped_at_the_root() {
        assert_eq!(n("../etc/passwd"), "etc/passwd");
        assert_eq!(n("/../../etc/passwd"), "etc/passwd");
        assert_eq!(n("a/../../b"), "b");
        assert_eq!(n("a/b/../c"), "a/c");
        assert_eq!(n("a/..x/b"), "a/..x/b");
    }

    #[test]
    fn absolute_paths_become_relative() {
        assert_eq!(n("/etc/shadow"), "etc/shadow");
        assert!(normalise(b"/etc/shadow").is_relative());
    }

    #[test]
    fn split_names_the_parent_and_the_leaf() {
        let p = normalise(b"a/b/c");
        assert_eq!(split(&p), Some((Path::new("a/b"), OsStr::new("c"))));
        let p = normalise(b"top");
        assert_eq!(split(&p), Some((Path::new(""), OsStr::new("top"))));
        assert_eq!(split(&normalise(b"/")), None);
    }

    #[test]
    fn display_is_one_line() {
        assert_eq!(display(b"a\nb"), "a\\nb");
    }
}
