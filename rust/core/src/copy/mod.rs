//! `capsa cp`: files between the host and a container's root, without ever
//! entering the container. No process changes its root, cwd or mount
//! namespace, and nothing of the container is run or loaded (no name service
//! lookup, no library, no interpreter): the container's files are only
//! opened, read and written as data, through descriptors.
//!
//! - roots.rs: the container's root as a descriptor (`/proc/<init>/root` of
//!   a running one, pinned by a pidfd; a detached overlay mount otherwise).
//! - tar_out.rs: a tar stream of a path below a root descriptor, every path
//!   resolved by openat2 RESOLVE_IN_ROOT, the tree walked by descriptor.
//! - tar_in.rs: a tar stream extracted below a directory, nothing followed.
//! - names.rs: which member names and symlink targets are acceptable.
//!
//! `copy` joins the two ends with a pipe: the writer on a thread of its own,
//! the extractor on the caller's, each with a bounded buffer, so a file of
//! any size streams through in constant memory.

pub mod names;
pub mod roots;
pub mod tar_in;
pub mod tar_out;

pub use tar_in::{Dest, Extracted, Policy, INTERRUPTED};
pub use tar_out::Source;

use crate::error::{Error, Result};
use crate::layers::root::openat2;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// A path in a root: symlinks (absolute ones too) and `..` resolve inside
/// it, as if it were `/`; /proc-style magic links are refused; mounts inside
/// (a running container's volumes) are crossed.
pub(crate) const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
/// Below a directory, through real directories only.
pub(crate) const BENEATH: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// At most this many warnings are kept; the rest are counted.
const MAX_WARNINGS: usize = 100;
const PIPE_SIZE: libc::c_int = 1 << 20;
const OUT_BUFFER: usize = 256 << 10;

/// Things skipped on the way, for the user (one line each).
#[derive(Debug, Default)]
pub struct Warnings {
    list: Vec<String>,
    more: u64,
}

impl Warnings {
    pub fn push(&mut self, w: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w);
        } else {
            self.more += 1;
        }
    }

    pub fn into_lines(self) -> Vec<String> {
        let mut out = self.list;
        if self.more > 0 {
            out.push(format!("... and {} more skipped", self.more));
        }
        out
    }
}

/// The kernel's own filesystems, which `cp` neither reads files from nor
/// writes into nor walks: their files are not the container's, and reading
/// or writing some of them acts on the host (/proc/sys, /proc/kmsg...).
pub(crate) fn pseudo_fs(fd: BorrowedFd<'_>) -> Option<&'static str> {
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: sfs is a valid out buffer for the call.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) } != 0 {
        return None;
    }
    Some(match sfs.f_type as u32 {
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x7363_6673 => "securityfs",
        0xcafe_4a11 => "bpf",
        0x6165_676c => "pstore",
        0x6265_6570 => "configfs",
        0xde5e_81e4 => "efivarfs",
        0x6573_5543 => "fusectl",
        0xf97c_ff8c => "selinuxfs",
        0x4341_5d53 => "smackfs",
        0x4249_4e4d => "binfmt_misc",
        0x1cd1 => "devpts",
        0x6e73_6673 => "nsfs",
        _ => return None,
    })
}

/// What is at `path` in `root` (followed or not): "dir", "file", "symlink", "other", or None.
pub fn lookup(root: BorrowedFd<'_>, path: &Path, follow: bool) -> Result<Option<&'static str>> {
    let flags = if follow { OFlag::O_PATH } else { OFlag::O_PATH | OFlag::O_NOFOLLOW };
    let fd = match openat2(root, path, flags, IN_ROOT) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(Error::sys("look up", Path::new("/").join(path), e)),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| Error::sys("stat", Path::new("/").join(path), e))?;
    Ok(Some(match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => "dir",
        libc::S_IFREG => "file",
        libc::S_IFLNK => "symlink",
        _ => "other",
    }))
}

/// The archive of `src` written to `out` (a pipe, a file: any descriptor).
pub fn write_to(src: &Source, out: BorrowedFd<'_>) -> Result<Vec<String>> {
    let mut warnings = Warnings::default();
    let file = std::mem::ManuallyDrop::new(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(out.as_raw_fd()) });
    tar_out::write(src, BufWriter::with_capacity(OUT_BUFFER, &*file), &mut warnings)?;
    Ok(warnings.into_lines())
}

/// The archive read from `input` extracted into `dest`; `interrupted` is
/// asked between entries and 256 KiB chunks (true: stop).
pub fn read_from(input: BorrowedFd<'_>, dest: &Dest, interrupted: &mut dyn FnMut() -> bool) -> Result<(Extracted, Vec<String>)> {
    let mut warnings = Warnings::default();
    let file = std::mem::ManuallyDrop::new(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(input.as_raw_fd()) });
    let done = tar_in::extract(&*file, dest, &mut warnings, interrupted)?;
    Ok((done, warnings.into_lines()))
}

/// `src` copied into `dest` as a tar stream through a pipe; `interrupted`
/// as for read_from (it runs on the caller's thread).
pub fn copy(src: &Source, dest: &Dest, interrupted: &mut dyn FnMut() -> bool) -> Result<(Extracted, Vec<String>)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("make a pipe for", src.path, e))?;
    // Fewer, larger hand-overs between the two threads (best effort).
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    let mut out_warnings = Warnings::default();
    let mut in_warnings = Warnings::default();
    let (written, extracted) = std::thread::scope(|s| {
        let writer = std::thread::Builder::new().name("capsa-cp-tar".into()).spawn_scoped(s, || {
            let w: OwnedFd = w;
            tar_out::write(src, BufWriter::with_capacity(OUT_BUFFER, File::from(w)), &mut out_warnings)
            // the write end closes here: EOF for the reader
        });
        let extracted = {
            let mut reader = File::from(r);
            let done = tar_in::extract(&mut reader, dest, &mut in_warnings, interrupted);
            if done.is_ok() {
                // Our writer's end-of-archive blocks (the parser stops at the first).
                let _ = io::copy(&mut reader, &mut io::sink());
            }
            done
            // the read end closes here: a writer still writing gets EPIPE
        };
        let written = match writer {
            Ok(handle) => handle.join().unwrap_or_else(|_| Err(Error::msg("the archive writer panicked"))),
            Err(e) => Err(Error::msg(format!("start the archive writer: {e}"))),
        };
        (written, extracted)
    });
    // The source's failure explains the extractor's (a cut stream); an
    // extractor's failure explains the writer's (EPIPE).
    match (written, extracted) {
        (Ok(_), Ok(done)) => {
            let mut lines = out_warnings.into_lines();
            lines.extend(in_warnings.into_lines());
            Ok((done, lines))
        }
        (Err(w), Ok(_)) => Err(w),
        (Err(w), Err(x)) if w.cause.as_ref().is_none_or(|c| c.errno != libc::EPIPE) && x.message != tar_in::INTERRUPTED => Err(w),
        (_, Err(x)) => Err(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("capsa-copy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn dir_fd(p: &Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).unwrap()
    }

    #[test]
    fn a_tree_round_trips_to_the_host() {
        let d = tmp("tree");
        let src = d.join("src/tree");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"inside\n").unwrap();
        std::fs::write(src.join(format!("{}.txt", "n".repeat(150))), b"long name\n").unwrap();
        symlink("sub/f", src.join("ok")).unwrap();
        symlink("/etc/passwd", src.join("abs")).unwrap();
        symlink(format!("sub/{}", "x".repeat(200)), src.join("longlink")).unwrap();
        std::fs::hard_link(src.join("sub/f"), src.join("hard")).unwrap();
        let big = src.join("sparse");
        let f = File::create(&big).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"end", (64 << 20) - 3).unwrap();
        drop(f);
        std::fs::create_dir_all(d.join("dest")).unwrap();
        let (root, dest) = (dir_fd(&d.join("src")), dir_fd(&d.join("dest")));
        let source = Source { root: root.as_fd(), path: Path::new("tree"), name: std::ffi::OsStr::new("copy") };
        let (done, warnings) =
            copy(&source, &Dest { root: dest.as_fd(), path: Path::new(""), policy: Policy::Host }, &mut || false).unwrap();
        assert!(!done.first_skipped);
        let out = d.join("dest/copy");
        assert_eq!(std::fs::read(out.join("sub/f")).unwrap(), b"inside\n");
        assert_eq!(std::fs::read(out.join(format!("{}.txt", "n".repeat(150)))).unwrap(), b"long name\n");
        assert_eq!(std::fs::read_link(out.join("ok")).unwrap(), Path::new("sub/f"));
        assert_eq!(std::fs::read_link(out.join("longlink")).unwrap(), Path::new(&format!("sub/{}", "x".repeat(200))));
        assert!(std::fs::symlink_metadata(out.join("abs")).is_err());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("copy/abs"), "{warnings:?}");
        assert_eq!(std::fs::metadata(out.join("hard")).unwrap().ino(), std::fs::metadata(out.join("sub/f")).unwrap().ino());
        let m = std::fs::metadata(out.join("sparse")).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(m.blocks() * 512 < 1 << 20, "holes kept: {} blocks", m.blocks());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_interrupted_copy_stops() {
        let d = tmp("stop");
        std::fs::create_dir_all(d.join("src")).unwrap();
        File::create(d.join("src/big")).unwrap().set_len(1 << 30).unwrap();
        std::fs::create_dir_all(d.join("dest")).unwrap();
        let (root, dest) = (dir_fd(&d.join("src")), dir_fd(&d.join("dest")));
        let source = Source { root: root.as_fd(), path: Path::new("big"), name: std::ffi::OsStr::new("big") };
        let mut asked = 0;
        let err = copy(&source, &Dest { root: dest.as_fd(), path: Path::new(""), policy: Policy::Host }, &mut || {
            asked += 1;
            asked > 3
        })
        .unwrap_err();
        assert_eq!(err.message, INTERRUPTED);
        assert_eq!(asked, 4);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_missing_source_is_the_error() {
        let d = tmp("missing");
        let root = dir_fd(&d);
        let source = Source { root: root.as_fd(), path: Path::new("nope"), name: std::ffi::OsStr::new("nope") };
        let err = copy(&source, &Dest { root: root.as_fd(), path: Path::new(""), policy: Policy::Host }, &mut || false).unwrap_err();
        assert!(err.message.contains("nope") && err.message.contains("ENOENT"), "{err}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn lookups_resolve_in_the_root() {
        let d = tmp("lookup");
        std::fs::create_dir_all(d.join("etc")).unwrap();
        symlink("/etc", d.join("link")).unwrap();
        symlink("../../../../", d.join("up")).unwrap();
        let root = dir_fd(&d);
        assert_eq!(lookup(root.as_fd(), Path::new("/link"), true).unwrap(), Some("dir"));
        assert_eq!(lookup(root.as_fd(), Path::new("/link"), false).unwrap(), Some("symlink"));
        assert_eq!(lookup(root.as_fd(), Path::new("/up/etc"), true).unwrap(), Some("dir"));
        // The host's /etc/passwd is not below this root.
        assert_eq!(lookup(root.as_fd(), Path::new("/link/passwd"), true).unwrap(), None);
        std::fs::remove_dir_all(d).unwrap();
    }

    use std::os::unix::fs::FileExt;
}
