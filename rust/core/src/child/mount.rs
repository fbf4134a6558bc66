//! Making the container's mounts in the child: the overlay root, each
//! MountOp of the plan, mount points created on the way, remounts. Stack
//! buffers and syscalls only.

use super::failure::Failure;
use super::sys::{self, errno, SysResult};
use crate::mounts::{MountOp, BIND_REMOUNT_FLAGS};
use crate::overlay::OverlayPlan;
use std::ffi::CStr;
use std::os::fd::RawFd;

impl MountOp {
    /// Make the mount; a bind from `tree` (a detached copy of its source the
    /// parent made with open_tree) when given.
    pub fn apply(&self, tree: Option<RawFd>) -> Result<(), Failure<'_>> {
        let fail = |step: &'static str, errno| Failure::with_detail(step, &self.fstype, &self.destination, errno);
        if self.flags & libc::MS_REMOUNT == 0 {
            let is_file = self.bind && !tree.map_or_else(|| is_dir(&self.source), fd_is_dir);
            create_target(&self.target, is_file).map_err(|e| fail("create mount point for", e))?;
        }
        let data = Some(self.data.as_c_str()).filter(|d| !d.is_empty());
        let fstype = if self.bind { None } else { Some(self.fstype.as_c_str()) };
        let made = match tree {
            Some(fd) => attach_tree(fd, &self.target),
            None => sys::mount(Some(&self.source), &self.target, fstype, self.flags, data),
        };
        if let Err(e) = made {
            match &self.fallback_bind {
                Some(host) if e == libc::EPERM => {
                    sys::mount(Some(host), &self.target, None, libc::MS_BIND | libc::MS_REC, None)
                        .map_err(|e| fail("bind-mount host fallback for", e))?;
                    let extra = self.flags & BIND_REMOUNT_FLAGS;
                    if extra != 0 {
                        remount(&self.target, libc::MS_BIND | libc::MS_REMOUNT | extra).map_err(|e| fail("remount", e))?;
                    }
                }
                _ => return Err(fail("mount", e)),
            }
        }
        if let Some(flags) = self.remount {
            remount(&self.target, flags).map_err(|e| fail("remount", e))?;
        }
        if self.propagation != 0 {
            sys::mount(None, &self.target, None, self.propagation, None).map_err(|e| fail("set propagation of", e))?;
        }
        if self.recursive_ro {
            recursive_read_only(&self.target).map_err(|e| fail("make recursively read-only", e))?;
        }
        Ok(())
    }
}

/// After "/" became a slave: mount the overlay on the rootfs dir. Its
/// layers are named relative to the dir the child changes to first.
pub fn overlay_root<'a>(plan: &'a OverlayPlan, rootfs: &'a CStr) -> Result<(), Failure<'a>> {
    sys::chdir(&plan.base).map_err(|e| Failure::new("chdir to overlay layers dir", &plan.base, e))?;
    sys::mount(Some(c"overlay"), rootfs, Some(c"overlay"), 0, Some(&plan.data))
        .map_err(|e| Failure::new("mount overlay root on", rootfs, e))
}

/// A bind remount; where the kernel refuses to drop flags locked by a
/// parent user namespace (nosuid, nodev, noexec...), keep them and retry.
pub fn remount(target: &CStr, flags: u64) -> SysResult {
    match sys::mount(None, target, None, flags, None) {
        Err(libc::EPERM) => {
            // SAFETY: statvfs is plain data; the kernel fills it.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: target is a NUL-terminated C string and st is writable.
            if unsafe { libc::statvfs(target.as_ptr(), &mut st) } != 0 {
                return Err(libc::EPERM);
            }
            let locked = st.f_flag as u64
                & (libc::ST_NOSUID
                    | libc::ST_NODEV
                    | libc::ST_NOEXEC
                    | libc::ST_NOATIME
                    | libc::ST_NODIRATIME
                    | libc::ST_RELATIME
                    | libc::ST_RDONLY);
            sys::mount(None, target, None, flags | locked, None)
        }
        other => other,
    }
}

/// mount_setattr(2) with AT_RECURSIVE: the mount at `target` and every
/// mount under it read-only (Linux 5.12).
pub fn recursive_read_only(target: &CStr) -> SysResult {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: mount_setattr reads `attr` (of the size given) and the NUL-terminated target.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// move_mount(2) of a detached tree onto `target`.
fn attach_tree(tree: RawFd, target: &CStr) -> SysResult {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    // SAFETY: move_mount reads two NUL-terminated paths ("" and target) and plain integers.
    let r = unsafe { libc::syscall(libc::SYS_move_mount, tree, c"".as_ptr(), libc::AT_FDCWD, target.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn fd_is_dir(fd: RawFd) -> bool {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open fd and st is writable.
    (unsafe { libc::fstat(fd, &mut st) }) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_dir(path: &CStr) -> bool {
    sys::stat(path).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// `buf[..end]` as a C string, for the call `f`, without the heap: the byte
/// after it is NUL for the call and restored after.
fn with_prefix<T>(buf: &mut [u8; 4096], end: usize, f: impl FnOnce(&CStr) -> T) -> T {
    let saved = buf[end];
    buf[end] = 0;
    let r = match CStr::from_bytes_until_nul(&buf[..=end]) {
        Ok(prefix) => f(prefix),
        Err(_) => f(c""),
    };
    buf[end] = saved;
    r
}

/// mkdir -p of buf[..end]: try the whole path, and only on ENOENT walk up
/// to the first existing ancestor.
fn mkdir_all(buf: &mut [u8; 4096], end: usize) -> SysResult {
    let made = |r: SysResult| matches!(r, Ok(()) | Err(libc::EEXIST));
    let first = with_prefix(buf, end, |p| sys::mkdir(p, 0o755));
    match first {
        r if made(r) => return Ok(()),
        Err(libc::ENOENT) => {}
        r => return r,
    }
    match buf[..end].iter().rposition(|b| *b == b'/') {
        Some(parent) if parent > 0 => mkdir_all(buf, parent)?,
        _ => return first,
    }
    match with_prefix(buf, end, |p| sys::mkdir(p, 0o755)) {
        r if made(r) => Ok(()),
        r => r,
    }
}

/// mkdir -p in a stack copy of `path` (deepest first: one syscall when the
/// parent exists), then (for a file mount point) an empty file.
pub fn create_target(path: &CStr, is_file: bool) -> SysResult {
    let bytes = path.to_bytes();
    let mut buf = [0u8; 4096];
    if bytes.len() >= buf.len() {
        return Err(libc::ENAMETOOLONG);
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    let end = if is_file { bytes.iter().rposition(|b| *b == b'/').unwrap_or(0) } else { bytes.len() };
    if end > 0 {
        mkdir_all(&mut buf, end)?;
    }
    if is_file {
        // SAFETY: path is a NUL-terminated C string; O_CREAT takes the mode argument given.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW, 0o644) };
        if fd < 0 && errno() != libc::EEXIST && errno() != libc::EISDIR {
            return Err(errno());
        }
        if fd >= 0 {
            sys::close(fd);
        }
    }
    Ok(())
}
