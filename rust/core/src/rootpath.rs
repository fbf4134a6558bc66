//! Paths inside a container's root: a path from config.json is resolved the
//! way the container would see it, symlinks included, and never leaves the root.

use nix::fcntl::{readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 40;

/// What an lstat inside the root found.
#[derive(Clone)]
enum Entry {
    Missing,
    Link(PathBuf),
    Other,
}

/// Resolves paths inside one root, remembering what each lstat found: a
/// plan resolves some twenty paths (mounts, devices) that mostly share
/// their first components. Lookups are relative to an fd on the root.
pub struct RootResolver {
    root: PathBuf,
    dir: OwnedFd,
    seen: HashMap<PathBuf, Entry>,
    /// Where a fresh tmpfs goes (container path, resolved path): nothing of
    /// the rootfs is under it, so paths there resolve by their names alone.
    empty: Vec<(PathBuf, PathBuf)>,
}

impl RootResolver {
    pub fn new(root: &Path) -> nix::Result<RootResolver> {
        let dir = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(RootResolver { root: root.to_path_buf(), dir, seen: HashMap::new(), empty: Vec::new() })
    }

    /// A fresh tmpfs is mounted on `dest`, which resolved to `resolved`
    /// (the default /dev: its devices and mount points need no lookups).
    pub fn empty_at(&mut self, dest: &Path, resolved: &Path) {
        self.covered(dest);
        self.empty.push((dest.to_path_buf(), resolved.to_path_buf()));
    }

    /// Something else is mounted on `dest`: what was empty there is hidden.
    pub fn covered(&mut self, dest: &Path) {
        self.empty.retain(|(d, _)| !d.starts_with(dest));
    }

    /// `root` joined with `unsafe_path`, with every symlink on the way
    /// resolved relative to `root` (an absolute link target or `..` cannot
    /// climb above it). Components that do not exist yet are kept as they
    /// are. More than 40 links: ELOOP (a link left in the result could be
    /// followed later, outside the root).
    pub fn resolve(&mut self, unsafe_path: &Path) -> nix::Result<PathBuf> {
        let plain = unsafe_path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if plain {
            // The last empty mount that holds it, if any.
            if let Some((dest, resolved)) = self.empty.iter().rev().find(|(d, _)| unsafe_path.starts_with(d) && unsafe_path != d) {
                return Ok(resolved.join(unsafe_path.strip_prefix(dest).unwrap_or(unsafe_path)));
            }
        }
        let mut resolved = PathBuf::new();
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
            let candidate = resolved.join(&part);
            match self.lookup(&candidate) {
                Entry::Link(_) if links == MAX_SYMLINKS => return Err(nix::errno::Errno::ELOOP),
                Entry::Link(target) => {
                    links += 1;
                    if target.is_absolute() {
                        resolved = PathBuf::new();
                    }
                    let mut t = components(&target);
                    t.reverse();
                    pending.extend(t);
                }
                _ => resolved = candidate,
            }
        }
        Ok(self.root.join(resolved))
    }

    fn lookup(&mut self, rel: &Path) -> Entry {
        if let Some(e) = self.seen.get(rel) {
            return e.clone();
        }
        // Under a missing directory, nothing exists.
        let parent_missing = rel.parent().is_some_and(|p| matches!(self.seen.get(p), Some(Entry::Missing)));
        let entry = if parent_missing { Entry::Missing } else { self.lstat(rel) };
        self.seen.insert(rel.to_path_buf(), entry.clone());
        entry
    }

    fn lstat(&self, rel: &Path) -> Entry {
        match fstatat(&self.dir, rel, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(_) => Entry::Missing,
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
                readlinkat(&self.dir, rel).map_or(Entry::Other, |t| Entry::Link(t.into()))
            }
            Ok(_) => Entry::Other,
        }
    }
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
        // One resolver for all: its remembered lookups give the same answers.
        let mut r = RootResolver::new(&dir).unwrap();
        for _ in 0..2 {
            assert_eq!(r.resolve(Path::new("/abs/sub")), Ok(dir.join("real/sub")));
            assert_eq!(r.resolve(Path::new("/real/up/passwd")), Ok(dir.join("etc/passwd")));
            assert_eq!(r.resolve(Path::new("/real/rel/x")), Ok(dir.join("real/sub/x")));
            assert_eq!(r.resolve(Path::new("/../../x")), Ok(dir.join("x")));
            assert_eq!(r.resolve(Path::new("/new/dir")), Ok(dir.join("new/dir")));
            assert_eq!(r.resolve(Path::new("/new/dir/../x")), Ok(dir.join("new/x")));
        }
        symlink("loop", dir.join("loop")).unwrap();
        assert_eq!(RootResolver::new(&dir).unwrap().resolve(Path::new("/loop")), Err(nix::errno::Errno::ELOOP));
        // A chain longer than the limit must not end in a link left as a name.
        for i in 0..45 {
            symlink(format!("/c{}", i + 1), dir.join(format!("c{i}"))).unwrap();
        }
        symlink("/etc", dir.join("c45")).unwrap();
        assert_eq!(RootResolver::new(&dir).unwrap().resolve(Path::new("/c0/x")), Err(nix::errno::Errno::ELOOP));
        assert_eq!(RootResolver::new(&dir).unwrap().resolve(Path::new("/c10/x")), Ok(dir.join("etc/x")));
        // Under an empty mount, names are taken as they are: the rootfs's
        // own /dev (here a link out of the root) does not count.
        symlink("/etc", dir.join("dev")).unwrap();
        let mut r = RootResolver::new(&dir).unwrap();
        assert_eq!(r.resolve(Path::new("/dev/null")), Ok(dir.join("etc/null")));
        r.empty_at(Path::new("/dev"), &dir.join("etc"));
        assert_eq!(r.resolve(Path::new("/dev/pts")), Ok(dir.join("etc/pts")));
        assert_eq!(r.resolve(Path::new("/dev/../dev/x")), Ok(dir.join("etc/x")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
