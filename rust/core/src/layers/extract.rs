//! One layer's tar stream applied to a directory. The tar crate only parses
//! headers; every file is made here through `Root`, so the entry names and
//! link targets decide nothing about where writes land.

use super::decompress::{Compression, Digests, Stream};
use super::root::{self, Parent, Root};
use super::safe_path::{display, normalise, split};
use super::whiteout::{classify, Whiteout, OVERLAY_OPAQUE_XATTR};
use super::{Mode, Summary};
use crate::error::{errno_text, Error, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{self, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::EntryType;

const COPY_BUF: usize = 256 << 10;
const BEFORE_FIRST: &str = "before the first entry";

/// An error's text on one short line (a garbage header can put anything in it).
fn one_line(err: &io::Error) -> String {
    let text = display(err.to_string().as_bytes());
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Applies the layer in `blob` to the existing directory `dir`.
pub fn apply(blob: &Path, dir: &Path, mode: Mode) -> Result<Summary> {
    let root = Root::open(dir).map_err(|e| Error::sys("open layer directory", dir, e))?;
    match std::fs::metadata(blob) {
        Ok(m) if m.len() == 0 => return Err(Error::msg(format!("extract {}: the blob is empty, not a layer", blob.display()))),
        Ok(_) => {}
        Err(e) => return Err(Error::io("open layer blob", blob, e)),
    }
    let mut stream = Stream::open(blob).map_err(|e| Error::io("open layer blob", blob, e))?;
    let compression = stream.compression;
    let mut layer = Layer::new(root, mode);
    let outcome = {
        let mut archive = tar::Archive::new(&mut stream);
        layer.apply_all(&mut archive)
    };
    let fail = |entry: &[u8], what: String| Error::msg(format!("extract {}: entry {}: {what}", blob.display(), display(entry)));
    match outcome {
        Ok(()) => {}
        Err(Failed::Entry { path, step, errno }) => return Err(fail(&path, format!("{step}: {}", errno_text(errno)))),
        Err(Failed::Read { place, err }) => {
            // A damaged gzip inflates to garbage before its checksum fails: the
            // tar error is then a symptom, and the decompressor's the cause.
            if stream.failure().is_none() {
                let _ = io::copy(&mut stream, &mut io::sink());
            }
            let why = match stream.failure() {
                Some(why) => why.to_owned(),
                // The parser's words about a random header would only be noise.
                None if place == BEFORE_FIRST && compression == Compression::None => "not a gzip, zstd or tar blob".to_owned(),
                None => format!("read tar: {}", one_line(&err)),
            };
            return Err(Error::msg(format!("extract {}: {why} ({place})", blob.display())));
        }
    }
    let Digests { diff_id, blob_digest, bytes } = match stream.finish() {
        Ok(d) => d,
        Err(e) => return Err(Error::msg(format!("extract {}: read to the end: {}", blob.display(), one_line(&e)))),
    };
    layer.set_dir_times();
    Ok(Summary { diff_id, blob_digest, entries: layer.entries, bytes, compression })
}

enum Failed {
    /// The stream could not be read or parsed; `place` says where, for people.
    Read { place: String, err: io::Error },
    /// A step of applying one entry failed.
    Entry { path: Vec<u8>, step: String, errno: Errno },
}

/// What a header says about an entry besides its name and type.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Layer {
    root: Root,
    mode: Mode,
    euid: u32,
    egid: u32,
    /// The process umask, which open/mkdir/mknod apply; None: unknown, always chmod.
    umask: Option<u32>,
    /// Directory mtimes, set after all entries (creating files changes them).
    dir_times: Vec<(PathBuf, TimeSpec)>,
    /// Flatten mode: paths this layer made (and their parents), which its own whiteouts spare.
    ours: HashSet<PathBuf>,
    buf: Vec<u8>,
    entries: u64,
}

/// The current entry, for error messages.
struct At<'a>(&'a [u8]);

impl At<'_> {
    fn err(&self, step: impl Into<String>, errno: Errno) -> Failed {
        Failed::Entry { path: self.0.to_vec(), step: step.into(), errno }
    }
}

type Step<T> = std::result::Result<T, Failed>;

fn io_errno(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Layer {
    fn new(root: Root, mode: Mode) -> Layer {
        Layer {
            root,
            mode,
            euid: Uid::effective().as_raw(),
            egid: Gid::effective().as_raw(),
            umask: read_umask(),
            dir_times: Vec::new(),
            ours: HashSet::new(),
            buf: vec![0; COPY_BUF],
            entries: 0,
        }
    }

    fn apply_all<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Step<()> {
        let mut last: Option<Vec<u8>> = None;
        let between = |last: &Option<Vec<u8>>| match last {
            None => BEFORE_FIRST.to_owned(),
            Some(p) => format!("after entry {}", display(p)),
        };
        let entries = archive.entries().map_err(|err| Failed::Read { place: between(&last), err })?;
        for entry in entries {
            let mut entry = entry.map_err(|err| Failed::Read { place: between(&last), err })?;
            let raw = entry.path_bytes().into_owned();
            self.apply_entry(&mut entry, &raw).map_err(|f| match f {
                // An io error while reading an entry's data is the stream's (decompression or truncation).
                Failed::Read { err, .. } => Failed::Read { place: format!("in entry {}", display(&raw)), err },
                f => f,
            })?;
            last = Some(raw);
        }
        Ok(())
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Step<()> {
        let at = At(raw);
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink) {
            return Ok(());
        }
        let rel = normalise(raw);
        let meta = read_meta(entry).map_err(|err| Failed::Read { place: String::new(), err })?;
        let Some((dir, name)) = split(&rel) else {
            if kind != EntryType::Directory {
                return Err(at.err("replace the layer root with a non-directory", Errno::EISDIR));
            }
            self.entries += 1;
            return self.root_dir(&at, &meta);
        };
        let whiteout = classify(name);
        if whiteout == Whiteout::Meta {
            return Ok(());
        }
        self.entries += 1;
        if self.mode == Mode::Flatten && whiteout == Whiteout::None {
            self.mark_ours(&rel);
        }
        match whiteout {
            Whiteout::Remove(target) => self.whiteout(&at, dir, target),
            Whiteout::Opaque => self.opaque(&at, dir),
            Whiteout::Meta => Ok(()),
            Whiteout::None => {
                let parent = self.root.parent(dir).map_err(|e| at.err("open parent directory", e))?;
                match kind {
                    EntryType::Directory => self.make_dir(&at, &parent, name, &rel, &meta),
                    EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => self.make_file(&at, &parent, name, &meta, entry),
                    EntryType::Symlink => {
                        let target = entry.link_name_bytes().ok_or_else(|| at.err("symlink without a target", Errno::EINVAL))?.into_owned();
                        self.make_symlink(&at, &parent, name, &target, &meta)
                    }
                    EntryType::Link => {
                        let target =
                            entry.link_name_bytes().ok_or_else(|| at.err("hardlink without a target", Errno::EINVAL))?.into_owned();
                        self.make_hardlink(&at, &parent, name, &rel, &target)
                    }
                    EntryType::Char | EntryType::Block | EntryType::Fifo => {
                        let (major, minor) = (entry.header().device_major(), entry.header().device_minor());
                        let dev = libc::makedev(major.ok().flatten().unwrap_or(0), minor.ok().flatten().unwrap_or(0));
                        let sflag = match kind {
                            EntryType::Char => SFlag::S_IFCHR,
                            EntryType::Block => SFlag::S_IFBLK,
                            _ => SFlag::S_IFIFO,
                        };
                        self.make_node(&at, &parent, name, sflag, dev, &meta)
                    }
                    other => Err(at.err(format!("unsupported entry type {:?}", other.as_byte() as char), Errno::EINVAL)),
                }
            }
        }
    }

    fn mark_ours(&mut self, rel: &Path) {
        let mut p = Some(rel);
        while let Some(path) = p {
            if path.as_os_str().is_empty() || !self.ours.insert(path.to_path_buf()) {
                break;
            }
            p = path.parent();
        }
    }

    // ---- entries ------------------------------------------------------------

    fn root_dir(&mut self, at: &At, meta: &Meta) -> Step<()> {
        let fd = self.root.open_in(Path::new(""), OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(|e| at.err("open layer root", e))?;
        self.own_fd(at, fd.as_fd(), meta, true, true)?;
        self.dir_times.push((PathBuf::new(), meta.mtime));
        Ok(())
    }

    fn make_dir(&mut self, at: &At, parent: &Parent, name: &OsStr, rel: &Path, meta: &Meta) -> Step<()> {
        let perm = stat::Mode::from_bits_truncate(meta.mode & 0o777);
        let mut fresh = true;
        match stat::mkdirat(&parent.fd, name, perm) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                if root::is_dir(parent.fd.as_fd(), name).map_err(|e| at.err("inspect existing", e))? {
                    fresh = false; // a directory again: merged, as tar does
                } else {
                    self.root.remove(parent.fd.as_fd(), name).map_err(|e| at.err("remove existing", e))?;
                    stat::mkdirat(&parent.fd, name, perm).map_err(|e| at.err("create directory", e))?;
                }
            }
            Err(e) => return Err(at.err("create directory", e)),
        }
        let needs_chown = !fresh || self.chown_needed(parent, meta);
        let needs_chmod = !fresh || parent.setgid || self.chmod_needed(meta);
        if needs_chown || needs_chmod || !meta.xattrs.is_empty() {
            let fd = nix::fcntl::openat(
                &parent.fd,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                stat::Mode::empty(),
            )
            .map_err(|e| at.err("open directory", e))?;
            self.own_fd(at, fd.as_fd(), meta, needs_chown, needs_chmod)?;
        }
        self.dir_times.push((rel.to_path_buf(), meta.mtime));
        Ok(())
    }

    fn make_file<R: Read>(&mut self, at: &At, parent: &Parent, name: &OsStr, meta: &Meta, data: &mut R) -> Step<()> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let perm = stat::Mode::from_bits_truncate(meta.mode & 0o777);
        let fd = match nix::fcntl::openat(&parent.fd, name, flags, perm) {
            Err(Errno::EEXIST) => {
                self.root.remove(parent.fd.as_fd(), name).map_err(|e| at.err("remove existing", e))?;
                nix::fcntl::openat(&parent.fd, name, flags, perm)
            }
            other => other,
        }
        .map_err(|e| at.err("create file", e))?;
        let mut file = File::from(fd);
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(Failed::Read { place: String::new(), err }),
            };
            file.write_all(&self.buf[..n]).map_err(|e| at.err("write file", io_errno(&e)))?;
        }
        let chown = self.chown_needed(parent, meta);
        let chmod = self.chmod_needed(meta);
        self.own_fd(at, file.as_fd(), meta, chown, chmod)?;
        stat::futimens(&file, &meta.mtime, &meta.mtime).map_err(|e| at.err("set times", e))
    }

    fn make_symlink(&mut self, at: &At, parent: &Parent, name: &OsStr, target: &[u8], meta: &Meta) -> Step<()> {
        let target = OsStr::from_bytes(target);
        match nix::unistd::symlinkat(target, &parent.fd, name) {
            Err(Errno::EEXIST) => {
                self.root.remove(parent.fd.as_fd(), name).map_err(|e| at.err("remove existing", e))?;
                nix::unistd::symlinkat(target, &parent.fd, name)
            }
            other => other,
        }
        .map_err(|e| at.err("create symlink", e))?;
        self.own_leaf(at, parent, name, meta, false)
    }

    fn make_node(&mut self, at: &At, parent: &Parent, name: &OsStr, kind: SFlag, dev: libc::dev_t, meta: &Meta) -> Step<()> {
        let perm = stat::Mode::from_bits_truncate(meta.mode & 0o777);
        match stat::mknodat(&parent.fd, name, kind, perm, dev) {
            Err(Errno::EEXIST) => {
                self.root.remove(parent.fd.as_fd(), name).map_err(|e| at.err("remove existing", e))?;
                stat::mknodat(&parent.fd, name, kind, perm, dev)
            }
            other => other,
        }
        .map_err(|e| at.err("create device node", e))?;
        self.own_leaf(at, parent, name, meta, true)
    }

    fn make_hardlink(&mut self, at: &At, parent: &Parent, name: &OsStr, rel: &Path, target: &[u8]) -> Step<()> {
        let target_rel = normalise(target);
        if target_rel == rel {
            return Ok(());
        }
        let Some((tdir, tname)) = split(&target_rel) else {
            return Err(at.err("hardlink to the layer root", Errno::EPERM));
        };
        let step = format!("hardlink to {}", display(target));
        let tdir_fd = self.root.dir(tdir).map_err(|e| at.err(step.clone(), e))?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        match nix::unistd::linkat(&tdir_fd, tname, &parent.fd, name, AtFlags::empty()) {
            Err(Errno::EEXIST) => {
                self.root.remove(parent.fd.as_fd(), name).map_err(|e| at.err("remove existing", e))?;
                nix::unistd::linkat(&tdir_fd, tname, &parent.fd, name, AtFlags::empty())
            }
            other => other,
        }
        .map_err(|e| at.err(step, e))
    }

    // ---- whiteouts --------------------------------------------------------

    fn whiteout(&mut self, at: &At, dir: &Path, name: &OsStr) -> Step<()> {
        match self.mode {
            Mode::Overlay => {
                // overlayfs' form: a 0/0 character device with the hidden name.
                let parent = self.root.parent(dir).map_err(|e| at.err("open parent directory", e))?;
                let zero = stat::Mode::empty();
                match stat::mknodat(&parent.fd, name, SFlag::S_IFCHR, zero, 0) {
                    Err(Errno::EEXIST) => {
                        self.root.remove(parent.fd.as_fd(), name).map_err(|e| at.err("remove existing", e))?;
                        stat::mknodat(&parent.fd, name, SFlag::S_IFCHR, zero, 0)
                    }
                    other => other,
                }
                .map_err(|e| at.err("create whiteout device", e))
            }
            Mode::Flatten => {
                if self.ours.contains(&dir.join(name)) {
                    return Ok(()); // a whiteout hides lower layers only
                }
                let dir_fd = match self.root.dir(dir) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(()),
                    Err(e) => return Err(at.err("open whiteout directory", e)),
                };
                match self.root.remove(dir_fd.as_fd(), name) {
                    Ok(()) | Err(Errno::ENOENT) => Ok(()),
                    Err(e) => Err(at.err("apply whiteout", e)),
                }
            }
        }
    }

    fn opaque(&mut self, at: &At, dir: &Path) -> Step<()> {
        match self.mode {
            Mode::Overlay => {
                self.root.parent(dir).map_err(|e| at.err("open opaque directory", e))?;
                let fd = self.root.open_in(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(|e| at.err("open opaque directory", e))?;
                let name = CString::new(OVERLAY_OPAQUE_XATTR).expect("no NUL");
                root::set_xattr(fd.as_fd(), false, &name, b"y").map_err(|e| at.err("set trusted.overlay.opaque", e))
            }
            Mode::Flatten => {
                let fd = match self.root.open_in(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(()),
                    Err(e) => return Err(at.err("open opaque directory", e)),
                };
                self.root.forget();
                self.clear_lower(fd, dir).map_err(|e| at.err("clear opaque directory", e))
            }
        }
    }

    /// Removes what lower layers put in `dir`, keeping this layer's own entries.
    fn clear_lower(&self, fd: OwnedFd, dir: &Path) -> std::result::Result<(), Errno> {
        for child in root::children(&fd)? {
            let rel = dir.join(&child);
            if !self.ours.contains(&rel) {
                root::remove_tree(fd.as_fd(), &child)?;
            } else if root::is_dir(fd.as_fd(), &child)? {
                let sub = nix::fcntl::openat(
                    &fd,
                    child.as_os_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    stat::Mode::empty(),
                )?;
                self.clear_lower(sub, &rel)?;
            }
        }
        Ok(())
    }

    // ---- ownership, modes, xattrs, times ------------------------------------

    fn chown_needed(&self, parent: &Parent, meta: &Meta) -> bool {
        meta.uid != self.euid || meta.gid != self.egid || parent.setgid
    }

    fn chmod_needed(&self, meta: &Meta) -> bool {
        match self.umask {
            Some(umask) => meta.mode & 0o7777 != meta.mode & 0o777 & !umask,
            None => true,
        }
    }

    /// chown, then chmod (chown clears setuid/setgid), then xattrs (chown clears security.capability).
    fn own_fd(&self, at: &At, fd: BorrowedFd<'_>, meta: &Meta, chown: bool, chmod: bool) -> Step<()> {
        if chown {
            nix::unistd::fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))).map_err(|e| at.err("chown", e))?;
        }
        if chmod {
            stat::fchmod(fd, stat::Mode::from_bits_truncate(meta.mode & 0o7777)).map_err(|e| at.err("chmod", e))?;
        }
        self.set_xattrs(at, fd, false, meta)
    }

    /// Ownership, mode, xattrs and times of a symlink or device node by name.
    fn own_leaf(&self, at: &At, parent: &Parent, name: &OsStr, meta: &Meta, chmod: bool) -> Step<()> {
        if self.chown_needed(parent, meta) {
            nix::unistd::fchownat(
                &parent.fd,
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| at.err("chown", e))?;
        }
        if chmod || !meta.xattrs.is_empty() {
            // An O_PATH descriptor of the very node just made: no name lookup can be swapped under it.
            let fd = nix::fcntl::openat(&parent.fd, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, stat::Mode::empty())
                .map_err(|e| at.err("open node", e))?;
            if chmod && self.chmod_needed(meta) {
                let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
                stat::fchmodat(
                    fd.as_fd(),
                    link.as_str(),
                    stat::Mode::from_bits_truncate(meta.mode & 0o7777),
                    stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| at.err("chmod", e))?;
            }
            self.set_xattrs(at, fd.as_fd(), true, meta)?;
        }
        stat::utimensat(&parent.fd, name, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink).map_err(|e| at.err("set times", e))
    }

    fn set_xattrs(&self, at: &At, fd: BorrowedFd<'_>, opath: bool, meta: &Meta) -> Step<()> {
        for (name, value) in &meta.xattrs {
            match root::set_xattr(fd, opath, name, value) {
                Ok(()) | Err(Errno::EOPNOTSUPP) => {}
                Err(e) => return Err(at.err(format!("set xattr {}", name.to_string_lossy()), e)),
            }
        }
        Ok(())
    }

    /// Directory mtimes, last: every entry written inside them changed them.
    fn set_dir_times(&self) {
        for (rel, mtime) in &self.dir_times {
            // A directory a later entry replaced is simply not there any more.
            if let Ok(fd) = self.root.open_in(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW) {
                let _ = stat::futimens(&fd, mtime, mtime);
            }
        }
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    let mode = h.mode()? & 0o7777;
    let uid = h.uid()? as u32;
    let gid = h.gid()? as u32;
    let mut mtime = TimeSpec::new(h.mtime()? as i64, 0);
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                // overlayfs' own xattrs come from whiteouts only, never from the archive.
                if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
                    continue;
                }
                if let Ok(name) = CString::new(name) {
                    xattrs.push((name, ext.value_bytes().to_vec()));
                }
            } else if key == b"mtime" {
                if let Some(t) = parse_pax_time(ext.value_bytes()) {
                    mtime = t;
                }
            }
        }
    }
    Ok(Meta { mode, uid, gid, mtime, xattrs })
}

/// A PAX time: decimal seconds with an optional fraction, e.g. `1700000000.25`.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos: i64 = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
    let nanos = if secs < 0 && nanos > 0 { -nanos } else { nanos };
    Some(TimeSpec::new(secs, nanos))
}

/// The umask from /proc/self/status (reading it with umask(2) would race other threads).
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some(TimeSpec::new(1700000000, 0)));
        assert_eq!(parse_pax_time(b"1700000000.25"), Some(TimeSpec::new(1700000000, 250_000_000)));
        assert_eq!(parse_pax_time(b"12.1234567891"), Some(TimeSpec::new(12, 123_456_789)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn umask_is_readable() {
        assert!(read_umask().is_some());
    }
}
