//! A tar stream of one path below a root descriptor (a container's root, or
//! the host directory holding what is copied in). The path is resolved by
//! openat2 RESOLVE_IN_ROOT, its last component is not followed (a symlink is
//! archived as a symlink, as `docker cp` does without -L), and the tree
//! below is walked by descriptor: every name is opened relative to its
//! directory's descriptor with O_NOFOLLOW, so nothing the files do (links,
//! renames meanwhile) leads the walk elsewhere. Only regular files are ever
//! opened, never a device or a fifo; headers carry numeric owners only (no
//! user or group name is looked up). File data goes out in bounded chunks.

use super::{pseudo_fs, Warnings, IN_ROOT};
use crate::error::{Error, Result};
use crate::layers::root::openat2;
use crate::layers::safe_path::display;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use tar::{EntryType, Header};

/// Directories open at once on the way down (each holds a descriptor).
pub const MAX_DEPTH: usize = 512;
const CHUNK: usize = 256 << 10;
const BLOCK: usize = 512;
/// The name field of a tar header; longer names go in a GNU long-name entry.
const NAME_FIELD: usize = 100;

/// What to archive.
pub struct Source<'a> {
    /// The directory that paths are resolved in, as their `/`.
    pub root: BorrowedFd<'a>,
    /// The path below `root`; its last component is not followed.
    pub path: &'a Path,
    /// The entry's name in the archive (one component).
    pub name: &'a OsStr,
}

struct Level {
    dir: nix::dir::OwningIter,
    arc: Vec<u8>,
    dev: u64,
}

struct Writer<'w, W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Files with more than one link, by (dev, ino): the first one's archive name.
    links: HashMap<(u64, u64), Vec<u8>>,
    warnings: &'w mut Warnings,
    entries: u64,
}

fn fail(step: &str, arc: &[u8], e: Errno) -> Error {
    Error::msg(format!("{step} {}: {}", display(arc), crate::error::errno_text(e)))
}

fn write_err(e: io::Error) -> Error {
    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let cause = crate::error::Cause { step: "write the archive".into(), path: String::new(), errno: errno as i32 };
    Error { message: format!("write the archive: {}", crate::error::errno_text(errno)), cause: Some(cause) }
}

/// Writes the archive of `src` to `out`; returns the number of entries.
pub fn write<W: Write>(src: &Source, out: W, warnings: &mut Warnings) -> Result<u64> {
    let name = src.name.as_bytes();
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Error::msg(format!("archive name {} is not one file name", display(name))));
    }
    let mut w = Writer { out, buf: vec![0; CHUNK], links: HashMap::new(), warnings, entries: 0 };
    let top = match src.path.components().next_back() {
        Some(Component::Normal(leaf)) => {
            let parent = src.path.parent().unwrap_or(Path::new(""));
            let dir = openat2(src.root, parent, OFlag::O_PATH | OFlag::O_DIRECTORY, IN_ROOT)
                .map_err(|e| Error::sys("open", Path::new("/").join(parent), e))?;
            w.entry(dir.as_fd(), leaf, name.to_vec(), None)?
        }
        // The root itself, or a path ending in `..`: a directory, followed.
        _ => {
            let fd = openat2(src.root, src.path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, IN_ROOT)
                .map_err(|e| Error::sys("open", Path::new("/").join(src.path), e))?;
            let st = fstat(&fd).map_err(|e| fail("stat", name, e))?;
            w.directory(fd, &st, name.to_vec(), None)?
        }
    };
    let mut stack: Vec<Level> = top.into_iter().collect();
    while let Some(level) = stack.last_mut() {
        let next = match level.dir.next() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(e)) => return Err(fail("read directory", &level.arc, e)),
            Some(Ok(entry)) => entry,
        };
        let child = next.file_name().to_bytes();
        if child == b"." || child == b".." {
            continue;
        }
        let mut arc = level.arc.clone();
        arc.push(b'/');
        arc.extend_from_slice(child);
        let (dir_fd, dev) = (level.dir.as_raw_fd(), level.dev);
        let child = OsStr::from_bytes(child).to_os_string();
        // SAFETY: the descriptor belongs to `level`, which stays on the stack for this call.
        let dir = unsafe { BorrowedFd::borrow_raw(dir_fd) };
        if let Some(sub) = w.entry(dir, &child, arc, Some(dev))? {
            if stack.len() >= MAX_DEPTH {
                return Err(Error::msg(format!("{}: directories nested deeper than {MAX_DEPTH} levels", display(&sub.arc))));
            }
            stack.push(sub);
        }
    }
    // The end of the archive: two zero blocks.
    w.out.write_all(&[0u8; 2 * BLOCK]).map_err(write_err)?;
    w.out.flush().map_err(write_err)?;
    Ok(w.entries)
}

fn kind_of(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

impl<W: Write> Writer<'_, W> {
    /// One name in `dir`: its entry written; a directory to walk comes back.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr, arc: Vec<u8>, parent_dev: Option<u64>) -> Result<Option<Level>> {
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Below the top, a name can go between readdir and stat.
            Err(Errno::ENOENT) if parent_dev.is_some() => {
                self.warnings.push(format!("skipped {}: removed while being copied", display(&arc)));
                return Ok(None);
            }
            Err(e) => return Err(fail("stat", &arc, e)),
        };
        match kind_of(&st) {
            libc::S_IFREG => self.file(dir, name, &arc, &st).map(|_| None),
            libc::S_IFDIR => {
                let fd = match nix::fcntl::openat(
                    dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                        self.warnings.push(format!("skipped {}: changed while being copied", display(&arc)));
                        return Ok(None);
                    }
                    Err(e) => return Err(fail("open directory", &arc, e)),
                };
                let st = fstat(&fd).map_err(|e| fail("stat", &arc, e))?;
                self.directory(fd, &st, arc, parent_dev)
            }
            libc::S_IFLNK => {
                let target = match nix::fcntl::readlinkat(dir, name) {
                    Ok(t) => t,
                    Err(Errno::ENOENT | Errno::EINVAL) => {
                        self.warnings.push(format!("skipped {}: changed while being copied", display(&arc)));
                        return Ok(None);
                    }
                    Err(e) => return Err(fail("read symlink", &arc, e)),
                };
                let mut h = self.header(EntryType::Symlink, &st, 0);
                self.link_entry(&mut h, &arc, target.as_bytes())?;
                Ok(None)
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let kind = match kind_of(&st) {
                    libc::S_IFCHR => EntryType::Char,
                    libc::S_IFBLK => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut h = self.header(kind, &st, 0);
                let _ = h.set_device_major(libc::major(st.st_rdev));
                let _ = h.set_device_minor(libc::minor(st.st_rdev));
                self.put(&mut h, &arc)?;
                Ok(None)
            }
            _ => {
                self.warnings.push(format!("skipped {}: a socket (an archive cannot hold one)", display(&arc)));
                Ok(None)
            }
        }
    }

    /// A directory's entry; its contents are walked unless it is one of the
    /// kernel's filesystems (/proc, /sys and the like) mounted there.
    fn directory(&mut self, fd: OwnedFd, st: &FileStat, mut arc: Vec<u8>, parent_dev: Option<u64>) -> Result<Option<Level>> {
        let mut h = self.header(EntryType::Directory, st, 0);
        arc.push(b'/');
        self.put(&mut h, &arc)?;
        arc.pop();
        if parent_dev != Some(st.st_dev) && pseudo_fs(fd.as_fd()).is_some() {
            return Ok(None);
        }
        let dir = nix::dir::Dir::from_fd(fd).map_err(|e| fail("read directory", &arc, e))?;
        Ok(Some(Level { dir: dir.into_iter(), arc, dev: st.st_dev }))
    }

    fn file(&mut self, dir: BorrowedFd<'_>, name: &OsStr, arc: &[u8], st: &FileStat) -> Result<()> {
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.header(EntryType::Link, st, 0);
                return self.link_entry(&mut h, arc, &first);
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENXIO) => {
                self.warnings.push(format!("skipped {}: changed while being copied", display(arc)));
                return Ok(());
            }
            Err(e) => return Err(fail("open", arc, e)),
        };
        let st = fstat(&fd).map_err(|e| fail("stat", arc, e))?;
        if kind_of(&st) != libc::S_IFREG {
            self.warnings.push(format!("skipped {}: changed while being copied", display(arc)));
            return Ok(());
        }
        if let Some(fs) = pseudo_fs(fd.as_fd()) {
            self.warnings.push(format!("skipped {}: a file of the kernel's {fs} filesystem", display(arc)));
            return Ok(());
        }
        let size = st.st_size.max(0) as u64;
        let mut h = self.header(EntryType::Regular, &st, size);
        self.put(&mut h, arc)?;
        let mut left = size;
        let mut short = false;
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            let n = if short {
                0
            } else {
                match nix::unistd::read(&fd, &mut self.buf[..want]) {
                    Ok(n) => n,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(fail("read", arc, e)),
                }
            };
            if n == 0 {
                // The file shrank meanwhile: the header promised `size` bytes.
                short = true;
                self.buf[..want].fill(0);
                self.out.write_all(&self.buf[..want]).map_err(write_err)?;
                left -= want as u64;
                continue;
            }
            self.out.write_all(&self.buf[..n]).map_err(write_err)?;
            left -= n as u64;
        }
        if short {
            self.warnings.push(format!("{}: shrank while being copied (padded with zeros)", display(arc)));
        }
        self.pad(size)?;
        if st.st_nlink > 1 {
            self.links.insert(key, arc.to_vec());
        }
        Ok(())
    }

    fn header(&self, kind: EntryType, st: &FileStat, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(size);
        h
    }

    /// A header named `arc` (with a GNU long-name entry before it when the name is long).
    fn put(&mut self, h: &mut Header, arc: &[u8]) -> Result<()> {
        self.long(b'L', arc)?;
        let field = &mut h.as_old_mut().name;
        let n = arc.len().min(NAME_FIELD);
        field[..n].copy_from_slice(&arc[..n]);
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(write_err)?;
        self.entries += 1;
        Ok(())
    }

    /// A symlink or hardlink header: the target byte for byte (long ones in a GNU long-link entry).
    fn link_entry(&mut self, h: &mut Header, arc: &[u8], target: &[u8]) -> Result<()> {
        self.long(b'K', target)?;
        let field = &mut h.as_old_mut().linkname;
        let n = target.len().min(NAME_FIELD);
        field[..n].copy_from_slice(&target[..n]);
        self.put(h, arc)
    }

    fn long(&mut self, kind: u8, text: &[u8]) -> Result<()> {
        if text.len() <= NAME_FIELD {
            return Ok(());
        }
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(text.len() as u64 + 1);
        h.set_entry_type(EntryType::new(kind));
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(write_err)?;
        self.out.write_all(text).map_err(write_err)?;
        self.out.write_all(&[0]).map_err(write_err)?;
        self.pad(text.len() as u64 + 1)
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        let rest = (BLOCK - (len % BLOCK as u64) as usize) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..rest]).map_err(write_err)
    }
}
