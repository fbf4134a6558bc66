//! Mounts: config.json mount options into mount(2) flags and one MountOp
//! per mount, everything the child needs precomputed (it makes them with
//! child::mount).

use std::ffi::CString;

const MS_BIND: u64 = libc::MS_BIND;
const MS_REC: u64 = libc::MS_REC;
const MS_REMOUNT: u64 = libc::MS_REMOUNT;

/// Flags that a bind mount only takes on a second, remounting call.
pub(crate) const BIND_REMOUNT_FLAGS: u64 = libc::MS_RDONLY
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
}

pub fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
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
