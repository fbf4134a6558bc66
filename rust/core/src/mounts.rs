//! Mounts: config.json mount options into mount(2) flags (parent side), and
//! the allocation-free steps that make each mount in the child.

use crate::failure::Failure;
use std::ffi::{CStr, CString};

const MS_BIND: u64 = libc::MS_BIND;
const MS_REC: u64 = libc::MS_REC;
const MS_REMOUNT: u64 = libc::MS_REMOUNT;

/// Flags that a bind mount only takes on a second, remounting call.
const BIND_REMOUNT_FLAGS: u64 = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME;

/// Parsed mount options: flags to set, propagation, and the rest as fs data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub flags: u64,
    pub propagation: u64,
    pub data: String,
    /// `rro`: read-only all the way down, the mounts under a bind included
    /// (`ro` makes only the top one read-only, as mount(2) does).
    pub recursive_ro: bool,
}

/// Parse mount(8)-style options as config.json carries them.
pub fn parse_options<S: AsRef<str>>(options: &[S]) -> Options {
    let mut o = Options::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_ref();
        let (set, clear): (u64, u64) = match opt {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rro" => {
                o.recursive_ro = true;
                (libc::MS_RDONLY, 0)
            }
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                o.propagation = propagation(opt).unwrap_or(0);
                continue;
            }
            // Extensions some engines add; they have no kernel meaning.
            "tmpcopyup" | "notmpcopyup" | "copy-symlink" => continue,
            other => {
                data.push(other);
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o.data = data.join(",");
    o
}

/// The mount(2) flags of a propagation name (`rslave`, `private`...).
pub fn propagation(name: &str) -> Option<u64> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// One mount to make in the child, everything precomputed.
#[derive(Debug)]
pub struct MountOp {
    pub source: CString,
    /// Host path under the rootfs (before pivot_root), symlinks resolved inside the root.
    pub target: CString,
    /// The destination as the container sees it, for messages.
    pub destination: CString,
    pub fstype: CString,
    pub flags: u64,
    pub data: CString,
    pub bind: bool,
    /// For binds: the second call that applies ro/nosuid/nodev/noexec.
    pub remount: Option<u64>,
    pub propagation: u64,
    /// mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY) once made (`rro`).
    pub recursive_ro: bool,
    /// Where a mount of this type is refused (sysfs in a user namespace without
    /// its own network namespace), bind this host path instead.
    pub fallback_bind: Option<CString>,
}

impl MountOp {
    /// A mount from config.json's parts; `target` already resolved inside the root.
    pub fn new(source: &str, target: CString, destination: &str, fstype: &str, options: &Options) -> MountOp {
        let bind = options.flags & MS_BIND != 0;
        let (flags, remount) = if bind {
            let extra = options.flags & BIND_REMOUNT_FLAGS;
            (MS_BIND | (options.flags & MS_REC), (extra != 0).then_some(MS_BIND | MS_REMOUNT | extra))
        } else {
            (options.flags, None)
        };
        MountOp {
            source: cstring(source),
            target,
            destination: cstring(destination),
            fstype: cstring(if bind { "bind" } else { fstype }),
            flags,
            data: cstring(&options.data),
            bind,
            remount,
            propagation: options.propagation,
            recursive_ro: options.recursive_ro,
            fallback_bind: None,
        }
    }

    /// Make the mount. Child side: syscalls and stack buffers only.
    pub fn apply(&self) -> Result<(), Failure<'_>> {
        let fail = |step: &'static str, errno| Failure::with_detail(step, &self.fstype, &self.destination, errno);
        if self.flags & MS_REMOUNT == 0 {
            let is_file = self.bind && !is_dir(&self.source);
            create_target(&self.target, is_file).map_err(|e| fail("create mount point for", e))?;
        }
        let data = if self.data.as_bytes().is_empty() { std::ptr::null() } else { self.data.as_ptr() };
        let fstype = if self.bind { std::ptr::null() } else { self.fstype.as_ptr() };
        if let Err(e) = mount(self.source.as_ptr(), &self.target, fstype, self.flags, data) {
            match &self.fallback_bind {
                Some(host) if e == libc::EPERM => {
                    mount(host.as_ptr(), &self.target, std::ptr::null(), MS_BIND | MS_REC, std::ptr::null())
                        .map_err(|e| fail("bind-mount host fallback for", e))?;
                    let extra = self.flags & BIND_REMOUNT_FLAGS;
                    if extra != 0 {
                        remount(&self.target, MS_BIND | MS_REMOUNT | extra).map_err(|e| fail("remount", e))?;
                    }
                }
                _ => return Err(fail("mount", e)),
            }
        }
        if let Some(flags) = self.remount {
            remount(&self.target, flags).map_err(|e| fail("remount", e))?;
        }
        if self.propagation != 0 {
            mount(std::ptr::null(), &self.target, std::ptr::null(), self.propagation, std::ptr::null())
                .map_err(|e| fail("set propagation of", e))?;
        }
        if self.recursive_ro {
            recursive_read_only(&self.target).map_err(|e| fail("make recursively read-only", e))?;
        }
        Ok(())
    }
}

/// mount_setattr(2) with AT_RECURSIVE: the mount at `target` and every
/// mount under it read-only (Linux 5.12).
pub fn recursive_read_only(target: &CStr) -> Result<(), i32> {
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
        libc::syscall(libc::SYS_mount_setattr, libc::AT_FDCWD, target.as_ptr(), libc::AT_RECURSIVE as libc::c_uint, &attr as *const MountAttr, std::mem::size_of::<MountAttr>())
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

pub fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// mount(2). `source`, `fstype` and `data` are C strings or null (as mount(2) takes them).
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn mount(source: *const libc::c_char, target: &CStr, fstype: *const libc::c_char, flags: u64, data: *const libc::c_char) -> Result<(), i32> {
    let r = unsafe { libc::mount(source, target.as_ptr(), fstype, flags as libc::c_ulong, data as *const libc::c_void) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// A bind remount; where the kernel refuses to drop flags locked by a
/// parent user namespace (nosuid, nodev, noexec...), keep them and retry.
pub fn remount(target: &CStr, flags: u64) -> Result<(), i32> {
    match mount(std::ptr::null(), target, std::ptr::null(), flags, std::ptr::null()) {
        Err(libc::EPERM) => {
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(target.as_ptr(), &mut st) } != 0 {
                return Err(libc::EPERM);
            }
            let locked = st.f_flag as u64
                & (libc::ST_NOSUID | libc::ST_NODEV | libc::ST_NOEXEC | libc::ST_NOATIME | libc::ST_NODIRATIME | libc::ST_RELATIME | libc::ST_RDONLY);
            mount(std::ptr::null(), target, std::ptr::null(), flags | locked, std::ptr::null())
        }
        other => other,
    }
}

/// mkdir -p of buf[..end] (NUL-terminated in place): try the whole path,
/// and only on ENOENT walk up to the first existing ancestor.
fn mkdir_all(buf: &mut [u8; 4096], end: usize) -> Result<(), i32> {
    let saved = buf[end];
    buf[end] = 0;
    let r = unsafe { libc::mkdir(buf.as_ptr() as *const libc::c_char, 0o755) };
    let e = errno();
    buf[end] = saved;
    if r == 0 || e == libc::EEXIST {
        return Ok(());
    }
    if e != libc::ENOENT {
        return Err(e);
    }
    match buf[..end].iter().rposition(|b| *b == b'/') {
        Some(parent) if parent > 0 => mkdir_all(buf, parent)?,
        _ => return Err(e),
    }
    let saved = buf[end];
    buf[end] = 0;
    let r = unsafe { libc::mkdir(buf.as_ptr() as *const libc::c_char, 0o755) };
    let e = errno();
    buf[end] = saved;
    if r == 0 || e == libc::EEXIST { Ok(()) } else { Err(e) }
}

pub fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

pub fn is_dir(path: &CStr) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::stat(path.as_ptr(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR }
}

/// mkdir -p in a stack copy of `path` (deepest first: one syscall when the
/// parent exists), then (for a file mount point) an empty file.
pub fn create_target(path: &CStr, is_file: bool) -> Result<(), i32> {
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
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW, 0o644) };
        if fd < 0 && errno() != libc::EEXIST && errno() != libc::EISDIR {
            return Err(errno());
        }
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_to_flags() {
        let o = parse_options(&["nosuid", "noexec", "nodev", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV);
        assert_eq!(o.data, "mode=755,size=65536k");
        let o = parse_options(&["rbind", "ro", "rslave"]);
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(o.propagation, libc::MS_SLAVE | libc::MS_REC);
        let o = parse_options(&["ro", "rw"]);
        assert_eq!(o.flags, 0);
    }

    #[test]
    fn bind_flags_move_to_remount() {
        let o = parse_options(&["bind", "ro", "nosuid"]);
        let m = MountOp::new("/src", cstring("/r/dst"), "/dst", "none", &o);
        assert!(m.bind);
        assert_eq!(m.flags, libc::MS_BIND);
        assert_eq!(m.remount, Some(libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID));
        let plain = MountOp::new("/src", cstring("/r/dst"), "/dst", "none", &parse_options(&["rbind"]));
        assert_eq!(plain.remount, None);
        assert_eq!(plain.flags, libc::MS_BIND | libc::MS_REC);
    }
}
