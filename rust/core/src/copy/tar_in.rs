//! A tar stream extracted below one directory: a directory of a container
//! (resolved in the container's root by openat2 RESOLVE_IN_ROOT, so the
//! container's own symlinks lead to its own files), or a fresh directory on
//! the host. The tar crate parses headers only; every file is made here.
//!
//! - Below the destination, every parent directory is resolved with
//!   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: no symlink is ever followed, one
//!   that the archive made itself least of all, and no name leaves the
//!   destination. A member through a symlink is refused.
//! - Names with `..` are refused, a leading `/` is dropped. Leaves are made
//!   with O_EXCL / O_NOFOLLOW; what is in the way is unlinked, never followed
//!   (a directory in the way of a file, or a file in the way of a directory,
//!   is an error, as with `docker cp`).
//! - Device nodes and fifos are never made (skipped with a warning), and no
//!   writes go into the kernel's filesystems (/proc, /sys...).
//! - Into a container: what is made belongs to the container's root user.
//!   On the host: owned by the caller, no setuid/setgid/sticky bit and no
//!   group or other write bit (tarfile's `tar` filter), and symlinks only
//!   when they provably stay inside the destination (names::link_stays_inside),
//!   else skipped with a warning: absolute ones never.
//! - Runs of zeros (64 KiB blocks) become holes: a sparse file stays sparse.

use super::names::{self, link_stays_inside};
use super::{pseudo_fs, Warnings, BENEATH, IN_ROOT};
use crate::error::{errno_text, Error, Result};
use crate::layers::root::openat2;
use crate::layers::safe_path::{display, split};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{self, fstat, fstatat, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tar::EntryType;

const CHUNK: usize = 256 << 10;
/// The error of an extraction stopped by its caller.
pub const INTERRUPTED: &str = "interrupted";
/// Zero blocks of this size are left as holes.
const HOLE: usize = 64 << 10;

/// Who owns what lands, and which links may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Into a container: owned by its root user (these host ids); any symlink (it resolves in the container).
    Container { uid: u32, gid: u32 },
    /// Onto the host: owned by the caller; symlinks only if they stay inside.
    Host,
}

pub struct Dest<'a> {
    /// The root that `path` is resolved in (RESOLVE_IN_ROOT).
    pub root: BorrowedFd<'a>,
    /// An existing directory below `root`.
    pub path: &'a Path,
    pub policy: Policy,
}

#[derive(Debug, Default)]
pub struct Extracted {
    pub entries: u64,
    pub bytes: u64,
    /// The archive's first entry (what `cp` names) was skipped, or there was none.
    pub first_skipped: bool,
}

/// A failure of one entry, or of the stream.
enum Failed {
    Interrupted,
    Read(io::Error),
    Entry { path: Vec<u8>, what: String },
}

type Step<T> = std::result::Result<T, Failed>;

struct At<'a>(&'a [u8]);

impl At<'_> {
    fn err(&self, step: &str, e: Errno) -> Failed {
        Failed::Entry { path: self.0.to_vec(), what: format!("{step}: {}", errno_text(e)) }
    }
    fn refuse(&self, why: impl Into<String>) -> Failed {
        Failed::Entry { path: self.0.to_vec(), what: why.into() }
    }
}

struct Meta {
    mode: u32,
    mtime: TimeSpec,
}

struct Extractor<'w> {
    dest: OwnedFd,
    policy: Policy,
    /// The parent of the previous entry (archives list siblings together).
    last: Option<(PathBuf, Rc<OwnedFd>)>,
    /// Directory times, set last (entries made inside change them).
    dirs: Vec<(PathBuf, TimeSpec)>,
    buf: Vec<u8>,
    warnings: &'w mut Warnings,
    /// Asked between entries and chunks: true stops the extraction (Ctrl-C).
    interrupted: &'w mut dyn FnMut() -> bool,
    done: Extracted,
    first: Option<bool>,
}

/// Extracts the archive read from `input` into `dest`.
pub fn extract<R: Read>(input: R, dest: &Dest, warnings: &mut Warnings, interrupted: &mut dyn FnMut() -> bool) -> Result<Extracted> {
    let shown = Path::new("/").join(dest.path);
    let fd = openat2(dest.root, dest.path, OFlag::O_PATH | OFlag::O_DIRECTORY, IN_ROOT)
        .map_err(|e| Error::sys("open destination directory", &shown, e))?;
    if let Some(fs) = pseudo_fs(fd.as_fd()) {
        return Err(Error::msg(format!("refusing to copy into {}: it is on the kernel's {fs} filesystem", shown.display())));
    }
    let mut x = Extractor {
        dest: fd,
        policy: dest.policy,
        last: None,
        dirs: Vec::new(),
        buf: vec![0; CHUNK],
        warnings,
        interrupted,
        done: Extracted::default(),
        first: None,
    };
    let mut archive = tar::Archive::new(input);
    let outcome = x.all(&mut archive);
    x.set_dir_times();
    match outcome {
        Ok(()) => {}
        Err(Failed::Interrupted) => return Err(Error::msg(INTERRUPTED)),
        Err(Failed::Read(e)) => return Err(Error::msg(format!("read the archive: {}", one_line(&e)))),
        Err(Failed::Entry { path, what }) => return Err(Error::msg(format!("{}: {what}", display(&path)))),
    }
    x.done.first_skipped = x.first != Some(true);
    Ok(x.done)
}

fn one_line(err: &io::Error) -> String {
    let text = display(err.to_string().as_bytes());
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn kind_of(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

fn is_zero(b: &[u8]) -> bool {
    // SAFETY: any bytes are valid u128s; only the aligned middle is reinterpreted.
    let (head, mid, tail) = unsafe { b.align_to::<u128>() };
    head.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0) && tail.iter().all(|&x| x == 0)
}

impl Extractor<'_> {
    fn all<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Step<()> {
        for entry in archive.entries().map_err(Failed::Read)? {
            let mut entry = entry.map_err(Failed::Read)?;
            if (self.interrupted)() {
                return Err(Failed::Interrupted);
            }
            let kind = entry.header().entry_type();
            if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink) {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let made = self.one(&mut entry, kind, &raw)?;
            if let Some(made) = made {
                self.first.get_or_insert(made);
            }
        }
        Ok(())
    }

    /// One entry: Some(true) made, Some(false) skipped, None the destination itself.
    fn one<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, kind: EntryType, raw: &[u8]) -> Step<Option<bool>> {
        let at = At(raw);
        let rel = names::member(raw).ok_or_else(|| at.refuse("refused: the name leaves the destination (`..`)"))?;
        let h = entry.header();
        let meta =
            Meta { mode: h.mode().map_err(Failed::Read)? & 0o7777, mtime: TimeSpec::new(h.mtime().map_err(Failed::Read)? as i64, 0) };
        let Some((dir, name)) = split(&rel) else {
            if kind == EntryType::Directory {
                return Ok(None); // "./": the destination, left as it is
            }
            return Err(at.refuse("refused: a non-directory in place of the destination"));
        };
        self.done.entries += 1;
        let skip = |w: &mut Warnings, why: &str| {
            w.push(format!("skipped {}: {why}", display(raw)));
            Ok(Some(false))
        };
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let what = match kind {
                    EntryType::Char => "a character device",
                    EntryType::Block => "a block device",
                    _ => "a fifo",
                };
                return skip(self.warnings, &format!("{what} (device nodes and fifos are never copied)"));
            }
            EntryType::Directory
            | EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Symlink
            | EntryType::Link => {}
            other => return skip(self.warnings, &format!("unsupported entry type {:?}", other.as_byte() as char)),
        }
        let parent = self.parent(&at, dir)?;
        let made = match kind {
            EntryType::Directory => self.directory(&at, &parent, name, &rel, &meta)?,
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                self.symlink(&at, &parent, name, &rel, &target, &meta)?
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| at.refuse("a hardlink without a target"))?.into_owned();
                self.hardlink(&at, &parent, name, &rel, &target)?
            }
            _ => self.file(&at, &parent, name, &meta, entry)?,
        };
        Ok(Some(made))
    }

    fn refuse_pseudo(&self, at: &At, fd: BorrowedFd<'_>) -> Step<()> {
        match pseudo_fs(fd) {
            Some(fs) => Err(at.refuse(format!("refused: that would write into the kernel's {fs} filesystem"))),
            None => Ok(()),
        }
    }

    fn beneath(&self, at: &At, from: BorrowedFd<'_>, rel: &Path, flags: OFlag, step: &str) -> Step<OwnedFd> {
        openat2(from, rel, flags, BENEATH).map_err(|e| beneath_failed(at, rel, e, step))
    }

    /// The directory `rel` below the destination, made (0755) where missing.
    fn parent(&mut self, at: &At, rel: &Path) -> Step<Rc<OwnedFd>> {
        if let Some((path, fd)) = &self.last {
            if path == rel {
                return Ok(fd.clone());
            }
        }
        let fd = match openat2(self.dest.as_fd(), rel, OFlag::O_PATH | OFlag::O_DIRECTORY, BENEATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => self.make_dirs(at, rel)?,
            Err(e) => return Err(beneath_failed(at, rel, e, "open parent directory")),
        };
        self.refuse_pseudo(at, fd.as_fd())?;
        let fd = Rc::new(fd);
        self.last = Some((rel.to_path_buf(), fd.clone()));
        Ok(fd)
    }

    fn make_dirs(&mut self, at: &At, rel: &Path) -> Step<OwnedFd> {
        let mut cur = self.beneath(at, self.dest.as_fd(), Path::new(""), OFlag::O_PATH | OFlag::O_DIRECTORY, "open destination")?;
        for part in rel.iter() {
            let fresh = match stat::mkdirat(&cur, part, Mode::from_bits_truncate(0o700)) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(e) => return Err(at.err("create parent directory", e)),
            };
            if fresh {
                let fd = nix::fcntl::openat(
                    &cur,
                    part,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| at.err("open new parent directory", e))?;
                self.own(at, fd.as_fd(), 0o755)?;
            }
            let next = self.beneath(at, cur.as_fd(), Path::new(part), OFlag::O_PATH | OFlag::O_DIRECTORY, "open parent directory")?;
            self.refuse_pseudo(at, next.as_fd())?;
            cur = next;
        }
        Ok(cur)
    }

    /// Ownership by policy, then the mode (chown clears setuid, so it goes first).
    fn own(&self, at: &At, fd: BorrowedFd<'_>, mode: u32) -> Step<()> {
        let mode = match self.policy {
            Policy::Container { uid, gid } => {
                nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| at.err("chown", e))?;
                mode & 0o7777
            }
            Policy::Host => mode & 0o755,
        };
        stat::fchmod(fd, Mode::from_bits_truncate(mode)).map_err(|e| at.err("chmod", e))
    }

    /// What is at `name` in `dir`, not followed; None if nothing.
    fn existing(&self, at: &At, dir: &OwnedFd, name: &OsStr) -> Step<Option<FileStat>> {
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(at.err("inspect existing", e)),
        }
    }

    /// Removes a non-directory in the way (a directory in the way is an error).
    fn clear(&mut self, at: &At, dir: &OwnedFd, name: &OsStr, what: &str) -> Step<Option<FileStat>> {
        let Some(st) = self.existing(at, dir, name)? else { return Ok(None) };
        if kind_of(&st) == libc::S_IFDIR {
            return Err(at.refuse(format!("cannot overwrite directory {} with {what}", display(name.as_bytes()))));
        }
        match nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(None),
            // A mount point (a file bound into a running container): the caller may write it in place.
            Err(Errno::EBUSY) => Ok(Some(st)),
            Err(e) => Err(at.err("remove existing", e)),
        }
    }

    fn directory(&mut self, at: &At, parent: &OwnedFd, name: &OsStr, rel: &Path, meta: &Meta) -> Step<bool> {
        match stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(at.err("create directory", e)),
        }
        let fd = match nix::fcntl::openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOTDIR | Errno::ELOOP) => {
                return Err(at.refuse(format!("cannot overwrite non-directory {} with a directory", display(name.as_bytes()))));
            }
            Err(e) => return Err(at.err("open directory", e)),
        };
        self.refuse_pseudo(at, fd.as_fd())?;
        self.own(at, fd.as_fd(), meta.mode)?;
        self.dirs.push((rel.to_path_buf(), meta.mtime));
        Ok(true)
    }

    fn file<R: Read>(&mut self, at: &At, parent: &OwnedFd, name: &OsStr, meta: &Meta, data: &mut R) -> Step<bool> {
        let create = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut tries = 0;
        let (fd, fresh) = loop {
            match nix::fcntl::openat(parent, name, create, Mode::from_bits_truncate(0o600)) {
                Ok(fd) => break (fd, true),
                Err(Errno::EEXIST) if tries < 3 => {
                    tries += 1;
                    if let Some(busy) = self.clear(at, parent, name, "a file")? {
                        if kind_of(&busy) != libc::S_IFREG {
                            return Err(at.err("remove existing", Errno::EBUSY));
                        }
                        let fd = nix::fcntl::openat(
                            parent,
                            name,
                            OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|e| at.err("open existing", e))?;
                        let st = fstat(&fd).map_err(|e| at.err("stat existing", e))?;
                        if kind_of(&st) != libc::S_IFREG {
                            return Err(at.err("open existing", Errno::EBUSY));
                        }
                        self.refuse_pseudo(at, fd.as_fd())?;
                        break (fd, false);
                    }
                }
                Err(e) => return Err(at.err("create file", e)),
            }
        };
        let file = File::from(fd);
        let filled = self.fill(at, &file, data);
        if filled.is_err() && fresh {
            // Not left half-written (the archive was cut, the copy interrupted).
            let _ = nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir);
        }
        let pos = filled?;
        self.done.bytes += pos;
        self.own(at, file.as_fd(), meta.mode)?;
        stat::futimens(&file, &meta.mtime, &meta.mtime).map_err(|e| at.err("set times", e))?;
        Ok(true)
    }

    /// The entry's data written to `file`; its size.
    fn fill<R: Read>(&mut self, at: &At, file: &File, data: &mut R) -> Step<u64> {
        let mut pos = 0u64;
        loop {
            if (self.interrupted)() {
                return Err(Failed::Interrupted);
            }
            let n = read_full(data, &mut self.buf).map_err(Failed::Read)?;
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off < n {
                // One write per run of non-zero blocks; zero blocks stay holes.
                let end = (off + HOLE).min(n);
                if is_zero(&self.buf[off..end]) {
                    off = end;
                    continue;
                }
                let mut run_end = end;
                while run_end < n && !is_zero(&self.buf[run_end..(run_end + HOLE).min(n)]) {
                    run_end = (run_end + HOLE).min(n);
                }
                file.write_all_at(&self.buf[off..run_end], pos + off as u64).map_err(|e| at.err("write file", io_errno(&e)))?;
                off = run_end;
            }
            pos += n as u64;
        }
        file.set_len(pos).map_err(|e| at.err("set file size", io_errno(&e)))?;
        Ok(pos)
    }

    fn symlink(&mut self, at: &At, parent: &OwnedFd, name: &OsStr, rel: &Path, target: &[u8], meta: &Meta) -> Step<bool> {
        if target.is_empty() {
            self.warnings.push(format!("skipped symlink {}: it has no target", display(at.0)));
            return Ok(false);
        }
        if self.policy == Policy::Host && !link_stays_inside(rel, target) {
            self.warnings.push(format!("skipped symlink {} -> {}: it points outside the destination", display(at.0), display(target)));
            return Ok(false);
        }
        let target = OsStr::from_bytes(target);
        let mut tries = 0;
        loop {
            match nix::unistd::symlinkat(target, parent, name) {
                Ok(()) => break,
                Err(Errno::EEXIST) if tries < 3 => {
                    tries += 1;
                    if self.clear(at, parent, name, "a symlink")?.is_some() {
                        return Err(at.err("remove existing", Errno::EBUSY));
                    }
                }
                Err(e) => return Err(at.err("create symlink", e)),
            }
        }
        if let Policy::Container { uid, gid } = self.policy {
            nix::unistd::fchownat(parent, name, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| at.err("chown", e))?;
        }
        stat::utimensat(parent, name, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink).map_err(|e| at.err("set times", e))?;
        Ok(true)
    }

    fn hardlink(&mut self, at: &At, parent: &OwnedFd, name: &OsStr, rel: &Path, target: &[u8]) -> Step<bool> {
        let trel = names::member(target)
            .ok_or_else(|| at.refuse(format!("refused: hardlink to {}, which leaves the destination (`..`)", display(target))))?;
        if trel == rel {
            return Ok(true);
        }
        let Some((tdir, tname)) = split(&trel) else {
            return Err(at.refuse("refused: a hardlink to the destination itself"));
        };
        let step = format!("hardlink to {}", display(target));
        let tdir_fd = self.beneath(at, self.dest.as_fd(), tdir, OFlag::O_PATH | OFlag::O_DIRECTORY, &step)?;
        let Some(st) = self.existing(at, &tdir_fd, tname)? else {
            return Err(at.refuse(format!("refused: hardlink to {}, which is not in the destination", display(target))));
        };
        match kind_of(&st) {
            libc::S_IFREG => {}
            libc::S_IFLNK if self.policy == Policy::Host => {
                // The same symlink again, judged where the new name is.
                let text = nix::fcntl::readlinkat(&tdir_fd, tname).map_err(|e| at.err(&step, e))?;
                if !link_stays_inside(rel, text.as_bytes()) {
                    self.warnings.push(format!(
                        "skipped {}: a hardlink to symlink {} -> {}, which would point outside the destination",
                        display(at.0),
                        display(target),
                        display(text.as_bytes())
                    ));
                    return Ok(false);
                }
            }
            libc::S_IFLNK => {}
            libc::S_IFDIR => return Err(at.refuse(format!("refused: hardlink to directory {}", display(target)))),
            _ => {
                self.warnings.push(format!(
                    "skipped {}: a hardlink to {}, which is not a file (device nodes and fifos are never copied)",
                    display(at.0),
                    display(target)
                ));
                return Ok(false);
            }
        }
        let mut tries = 0;
        loop {
            // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
            match nix::unistd::linkat(&tdir_fd, tname, parent, name, AtFlags::empty()) {
                Ok(()) => return Ok(true),
                Err(Errno::EEXIST) if tries < 3 => {
                    tries += 1;
                    if let Some(now) = self.existing(at, parent, name)? {
                        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) {
                            return Ok(true);
                        }
                    }
                    if self.clear(at, parent, name, "a hardlink")?.is_some() {
                        return Err(at.err("remove existing", Errno::EBUSY));
                    }
                }
                Err(e) => return Err(at.err(&step, e)),
            }
        }
    }

    fn set_dir_times(&self) {
        for (rel, mtime) in self.dirs.iter().rev() {
            // A directory a later entry replaced is simply not there any more.
            if let Ok(fd) = openat2(self.dest.as_fd(), rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, BENEATH) {
                let _ = stat::futimens(&fd, mtime, mtime);
            }
        }
    }
}

fn beneath_failed(at: &At, rel: &Path, e: Errno, step: &str) -> Failed {
    match e {
        Errno::ELOOP => at.refuse(format!(
            "refused: {} goes through a symlink (below the destination, symlinks are never followed)",
            display(rel.as_os_str().as_bytes())
        )),
        Errno::EXDEV => at.refuse("refused: the name leaves the destination"),
        e => at.err(step, e),
    }
}

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Reads until `buf` is full or the entry ends.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks() {
        let mut b = vec![0u8; 1000];
        assert!(is_zero(&b[3..]));
        b[999] = 1;
        assert!(!is_zero(&b[3..]));
        assert!(is_zero(&b[..999]));
    }
}
