//! Paths inside a container's root: a path from config.json is resolved the
//! way the container would see it, symlinks included, and never leaves the root.
//!
//! The root is a directory (a bundle's rootfs) or an overlay not mounted yet
//! (`capsa run`: the child mounts it): then lookups go through the layer
//! dirs, top first, as overlayfs merges them (whiteouts hide, an opaque dir
//! or a non-directory hides what the layers below have under it), so the
//! image's own symlinks are seen before anything is created on their path.

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
    /// A directory whose contents show the layers above `merged`
    /// (overlayfs stops at an opaque dir or a non-directory).
    Dir {
        merged: usize,
    },
    /// Anything else, in `layers[layer]`.
    Other {
        layer: usize,
    },
}

/// Resolves paths inside one root, remembering what each lstat found: a
/// plan resolves some twenty paths (mounts, devices) that mostly share
/// their first components. Lookups are relative to an fd on the root.
pub struct RootResolver {
    root: PathBuf,
    /// The root's layers, top first: one for a plain directory.
    layers: Vec<OwnedFd>,
    seen: HashMap<PathBuf, Entry>,
    /// Where a fresh tmpfs goes (container path, resolved path): nothing of
    /// the rootfs is under it, so paths there resolve by their names alone.
    empty: Vec<(PathBuf, PathBuf)>,
}

impl RootResolver {
    pub fn new(root: &Path) -> nix::Result<RootResolver> {
        RootResolver::layered(root, &[root])
    }

    /// `root` is where the overlay of `layers` (top first) will be mounted.
    pub fn layered(root: &Path, layers: &[&Path]) -> nix::Result<RootResolver> {
        let layers = layers
            .iter()
            .map(|l| nix::fcntl::open(*l, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()))
            .collect::<nix::Result<Vec<_>>>()?;
        Ok(RootResolver { root: root.to_path_buf(), layers, seen: HashMap::new(), empty: Vec::new() })
    }

    /// The regular file at `path` in the root, at most `limit` bytes of it;
    /// None when there is none (missing, or not a regular file: a device or
    /// fifo is never opened for reading).
    pub fn read_file(&mut self, path: &Path, limit: u64) -> nix::Result<Option<Vec<u8>>> {
        let full = self.resolve(path)?;
        let rel = full.strip_prefix(&self.root).unwrap_or(&full).to_path_buf();
        let Entry::Other { layer } = self.lookup(&rel) else { return Ok(None) };
        let how = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        use std::os::fd::AsFd;
        let fd = crate::layers::root::openat2(self.layers[layer].as_fd(), &rel, how, resolve)?;
        let st = nix::sys::stat::fstat(&fd)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Ok(None);
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(std::fs::File::from(fd), limit), &mut data)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(Some(data))
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
        // Only the layers merged into the parent can hold the entry; under
        // anything but a directory, nothing exists.
        let merged = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => self.layers.len(),
            Some(parent) => match self.lookup(parent) {
                Entry::Dir { merged } => merged,
                _ => 0,
            },
        };
        let entry = self.lstat(rel, merged);
        self.seen.insert(rel.to_path_buf(), entry.clone());
        entry
    }

    fn lstat(&self, rel: &Path, merged: usize) -> Entry {
        let found = |layer: usize| fstatat(&self.layers[layer], rel, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let kind = |st: &libc::stat| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let Some((top, st)) = (0..merged).find_map(|l| found(l).map(|st| (l, st))) else { return Entry::Missing };
        match kind(&st) {
            // An overlay whiteout: deleted in the merged view.
            SFlag::S_IFCHR if st.st_rdev == 0 && self.layers.len() > 1 => Entry::Missing,
            SFlag::S_IFLNK => readlinkat(&self.layers[top], rel).map_or(Entry::Other { layer: top }, |t| Entry::Link(t.into())),
            SFlag::S_IFDIR => {
                // Lower layers' dirs merge in until an opaque dir or anything else.
                let mut below = top;
                while below + 1 < merged && !self.opaque(below, rel) {
                    match found(below + 1) {
                        Some(st) if kind(&st) == SFlag::S_IFDIR => below += 1,
                        Some(_) => break,
                        None => below += 1,
                    }
                }
                Entry::Dir { merged: below + 1 }
            }
            _ => Entry::Other { layer: top },
        }
    }

    /// overlayfs's mark on a directory that hides the layers below it.
    fn opaque(&self, layer: usize, rel: &Path) -> bool {
        if self.layers.len() == 1 {
            return false;
        }
        use std::os::fd::AsFd;
        let Ok(fd) = crate::layers::root::openat2(
            self.layers[layer].as_fd(),
            rel,
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
        ) else {
            return false;
        };
        use std::os::fd::AsRawFd;
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default();
        let mut value = [0u8; 2];
        // SAFETY: getxattr reads at most value.len() bytes into value; both strings are NUL-terminated.
        let n = unsafe {
            libc::getxattr(path.as_ptr(), c"trusted.overlay.opaque".as_ptr(), value.as_mut_ptr() as *mut libc::c_void, value.len())
        };
        n == 1 && value[0] == b'y'
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

    #[test]
    fn layers_merge_as_overlayfs_does() {
        let dir = std::env::temp_dir().join(format!("capsa-rootpath-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (upper, mid, low) = (dir.join("upper"), dir.join("mid"), dir.join("low"));
        for l in [&upper, &mid, &low] {
            std::fs::create_dir_all(l).unwrap();
        }
        // low: etc/ is a real dir with passwd, opt/x, gone/file, var -> /host-var
        std::fs::create_dir_all(low.join("etc")).unwrap();
        std::fs::write(low.join("etc/passwd"), "low").unwrap();
        std::fs::create_dir_all(low.join("opt/x")).unwrap();
        std::fs::create_dir_all(low.join("gone")).unwrap();
        symlink("/host-var", low.join("var")).unwrap();
        // mid: etc is now a link out of the root; gone is whited out
        symlink("/elsewhere/etc", mid.join("etc")).unwrap();
        nix::sys::stat::mknod(&mid.join("gone"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), 0).unwrap();
        // upper: opt is opaque (low's opt/x is hidden)
        std::fs::create_dir_all(upper.join("opt")).unwrap();
        let opt = std::ffi::CString::new(upper.join("opt").to_str().unwrap()).unwrap();
        unsafe { libc::setxattr(opt.as_ptr(), c"trusted.overlay.opaque".as_ptr(), b"y".as_ptr() as *const libc::c_void, 1, 0) };
        let root = dir.join("rootfs");
        let mut r = RootResolver::layered(&root, &[&upper, &mid, &low]).unwrap();
        assert_eq!(r.resolve(Path::new("/etc/passwd")), Ok(root.join("elsewhere/etc/passwd")));
        assert_eq!(r.resolve(Path::new("/var/log")), Ok(root.join("host-var/log")));
        assert_eq!(r.read_file(Path::new("/etc/passwd"), 100), Ok(None), "the link hides the lower etc/");
        assert!(matches!(r.lookup(Path::new("gone/file")), Entry::Missing), "a whiteout hides the lower dir");
        assert!(matches!(r.lookup(Path::new("opt/x")), Entry::Missing), "an opaque dir hides the lower entries");
        let mut plain = RootResolver::layered(&root, &[&low]).unwrap();
        assert_eq!(plain.read_file(Path::new("/etc/passwd"), 100), Ok(Some(b"low".to_vec())));
        assert_eq!(plain.read_file(Path::new("/etc/passwd"), 2), Ok(Some(b"lo".to_vec())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
