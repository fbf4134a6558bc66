//! The layer directory, reached only through a descriptor of it. Every path
//! below it is resolved by openat2 with RESOLVE_IN_ROOT (symlinks and `..`
//! cannot climb out: the kernel treats the directory as `/`), and every leaf
//! is created, changed or removed relative to its parent's descriptor with
//! no-follow flags. Nothing here can touch a file outside the root, whatever
//! the names say.

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;

/// A directory that entries are created in.
pub struct Parent {
    pub fd: OwnedFd,
    /// New entries in a setgid directory take its group (and dirs its setgid bit).
    pub setgid: bool,
}

pub struct Root {
    fd: OwnedFd,
    /// The directory of the previous entry: tar lists siblings together.
    last: Option<(PathBuf, Rc<Parent>)>,
}

impl Root {
    pub fn open(dir: &Path) -> Result<Root, Errno> {
        let fd = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Root { fd, last: None })
    }

    /// `rel` opened with `flags`, resolved inside the root.
    pub fn open_in(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
        openat2(self.fd.as_fd(), rel, flags | OFlag::O_CLOEXEC, RESOLVE)
    }

    /// An existing directory below the root, for *at calls.
    pub fn dir(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        self.open_in(rel, OFlag::O_PATH | OFlag::O_DIRECTORY)
    }

    /// The directory `rel`, made (0755, like tar's implied parents) where missing.
    pub fn parent(&mut self, rel: &Path) -> Result<Rc<Parent>, Errno> {
        if let Some((path, parent)) = &self.last {
            if path == rel {
                return Ok(parent.clone());
            }
        }
        let fd = match self.dir(rel) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => self.make_dirs(rel)?,
            Err(e) => return Err(e),
        };
        let setgid = fstat(&fd)?.st_mode & libc::S_ISGID != 0;
        let parent = Rc::new(Parent { fd, setgid });
        self.last = Some((rel.to_path_buf(), parent.clone()));
        Ok(parent)
    }

    fn make_dirs(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let mut at = self.dir(Path::new(""))?;
        let mut walked = PathBuf::new();
        for part in rel.iter() {
            walked.push(part);
            match nix::sys::stat::mkdirat(&at, part, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            // Reopened from the root: `part` may be a symlink, which must resolve inside.
            at = self.dir(&walked)?;
        }
        Ok(at)
    }

    /// Something was removed: cached directories may be gone.
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// Removes `name` in `dir`, a whole tree if it is a directory (never following symlinks).
    pub fn remove(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
        self.forget();
        remove_tree(dir, name)
    }
}

pub fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) != SFlag::S_IFDIR {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    let sub = openat(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    for child in children(&sub)? {
        remove_tree(sub.as_fd(), &child)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// The names in a directory (without `.` and `..`).
pub fn children(dir: &OwnedFd) -> Result<Vec<std::ffi::OsString>, Errno> {
    let dup = openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let name = e?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(std::os::unix::ffi::OsStringExt::from_vec(name));
        }
    }
    Ok(names)
}

pub fn is_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<bool, Errno> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

pub fn openat2(dir: BorrowedFd<'_>, rel: &Path, flags: OFlag, resolve: u64) -> Result<OwnedFd, Errno> {
    let path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain data; zero is "no mode, no flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags.bits() as u64;
    how.resolve = resolve;
    loop {
        // SAFETY: valid C string and open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match Errno::result(fd) {
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            // The kernel asks for a retry when a rename raced the lookup.
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sets an xattr on whatever `fd` is, even an O_PATH descriptor of a
/// symlink or a device (through its /proc/self/fd link, which the kernel
/// resolves to that very inode, not to a name that could be swapped).
pub fn set_xattr(fd: BorrowedFd<'_>, opath: bool, name: &CString, value: &[u8]) -> Result<(), Errno> {
    let res = if opath {
        let link = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
        unsafe { libc::setxattr(link.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }
    } else {
        unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }
    };
    Errno::result(res).map(drop)
}
