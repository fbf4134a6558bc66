//! OCI whiteouts: `.wh.NAME` deletes NAME of the lower layers and
//! `.wh..wh..opq` hides everything the lower layers had in its directory.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

const PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// Not a whiteout: an ordinary entry.
    None,
    /// `.wh.NAME`: NAME is deleted.
    Remove(&'a OsStr),
    /// `.wh..wh..opq`: the directory is opaque.
    Opaque,
    /// Other `.wh..wh.` names (AUFS bookkeeping such as `.wh..wh.plnk`): ignored.
    Meta,
}

/// What an entry's last path component means.
pub fn classify(name: &OsStr) -> Whiteout<'_> {
    let b = name.as_bytes();
    if b == OPAQUE {
        return Whiteout::Opaque;
    }
    let Some(rest) = b.strip_prefix(PREFIX) else {
        return Whiteout::None;
    };
    if rest.starts_with(PREFIX) {
        return Whiteout::Meta;
    }
    match rest {
        // `.wh.`, `.wh..` and `.wh...` would name the directory or its parent.
        b"" | b"." | b".." => Whiteout::Meta,
        _ => Whiteout::Remove(OsStr::from_bytes(rest)),
    }
}

/// The overlayfs xattr that marks a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Whiteout<'_> {
        classify(OsStr::new(s))
    }

    #[test]
    fn ordinary_names() {
        assert_eq!(c("passwd"), Whiteout::None);
        assert_eq!(c(".whatever"), Whiteout::None);
        assert_eq!(c(".wh"), Whiteout::None);
    }

    #[test]
    fn removals_name_the_sibling() {
        assert_eq!(c(".wh.passwd"), Whiteout::Remove(OsStr::new("passwd")));
        assert_eq!(c(".wh..hidden"), Whiteout::Remove(OsStr::new(".hidden")));
    }

    #[test]
    fn opaque_and_meta() {
        assert_eq!(c(".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(c(".wh..wh.plnk"), Whiteout::Meta);
        assert_eq!(c(".wh..wh.aufs"), Whiteout::Meta);
    }

    #[test]
    fn whiteouts_cannot_name_dot_or_dotdot() {
        assert_eq!(c(".wh."), Whiteout::Meta);
        assert_eq!(c(".wh.."), Whiteout::Meta);
        assert_eq!(c(".wh..."), Whiteout::Meta);
    }
}
