//! Paths inside a container's root: a path from config.json is resolved the
//! way the container would see it, symlinks included, and never leaves the root.

use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 40;

/// `root` joined with `unsafe_path`, with every symlink on the way resolved
/// relative to `root` (an absolute link target or `..` cannot climb above it).
/// Components that do not exist yet are kept as they are.
pub fn resolve_in_root(root: &Path, unsafe_path: &Path) -> PathBuf {
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = components(unsafe_path);
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        if part == "." {
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(resolved.iter());
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && links < MAX_SYMLINKS => {
                links += 1;
                let Ok(target) = std::fs::read_link(&candidate) else {
                    resolved.push(part);
                    continue;
                };
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut t = components(&target);
                t.reverse();
                pending.extend(t);
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(resolved.iter());
    out
}

fn components(p: &Path) -> Vec<std::ffi::OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside() {
        let dir = std::env::temp_dir().join(format!("capsa-rootpath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        symlink("/real", dir.join("abs")).unwrap();
        symlink("../../../../etc", dir.join("real/up")).unwrap();
        symlink("sub", dir.join("real/rel")).unwrap();
        assert_eq!(resolve_in_root(&dir, Path::new("/abs/sub")), dir.join("real/sub"));
        assert_eq!(resolve_in_root(&dir, Path::new("/real/up/passwd")), dir.join("etc/passwd"));
        assert_eq!(resolve_in_root(&dir, Path::new("/real/rel/x")), dir.join("real/sub/x"));
        assert_eq!(resolve_in_root(&dir, Path::new("/../../x")), dir.join("x"));
        assert_eq!(resolve_in_root(&dir, Path::new("/new/dir")), dir.join("new/dir"));
        symlink("loop", dir.join("loop")).unwrap();
        assert!(resolve_in_root(&dir, Path::new("/loop")).starts_with(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
