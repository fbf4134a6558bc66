//! A container's root as a descriptor, for `cp`: nothing changes this
//! process's root, cwd or mount namespace.
//!
//! - Running (or paused): `/proc/<init>/root`, opened while a pidfd proves
//!   the pid is still the recorded init (same start time before, still alive
//!   after), so a reused pid cannot hand over some host process's root. The
//!   descriptor sees the container's mount namespace: its volumes and tmpfs
//!   mounts too.
//! - Not running: the container's overlay as a detached mount (fsopen,
//!   fsconfig, fsmount), attached nowhere: no mount namespace or path ever
//!   shows it, and it goes when the descriptor is closed. Read-only copies
//!   stack the upper dir as the top lower layer (no work dir, nothing in the
//!   container's dirs is touched or locked); writable ones mount it as the
//!   upper, as the container's own root is mounted.

use crate::error::{Error, Result};
use crate::overlay::Overlay;
use crate::state::{self, State};
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The root of a container and the host ids of its root user (files copied
/// in belong to it, as with `docker cp`).
pub struct ContainerRoot {
    pub fd: OwnedFd,
    pub uid: u32,
    pub gid: u32,
}

fn sys(step: &str, path: impl AsRef<Path>) -> Error {
    Error::sys(step, path, Errno::last())
}

/// The root of the running container `id` under the runtime root `run_root`.
pub fn running(run_root: &Path, id: &str) -> Result<ContainerRoot> {
    let st = State::load(run_root, id)?;
    if !st.alive() {
        return Err(Error::msg(format!("container {id} is not running")));
    }
    let pid = st.pid;
    // SAFETY: plain syscalls; every returned fd is owned at once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        return Err(Error::msg(format!("container {id} is not running (pidfd_open {pid}: {})", crate::error::errno_text(Errno::last()))));
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if state::process_start(pid) != Some(st.pid_start) {
        return Err(Error::msg(format!("container {id} is not running")));
    }
    let proc_root = format!("/proc/{pid}/root");
    let fd = nix::fcntl::open(
        proc_root.as_str(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open the container's root", &proc_root, e))?;
    let uid = host_id_of_root(&format!("/proc/{pid}/uid_map"))?;
    let gid = host_id_of_root(&format!("/proc/{pid}/gid_map"))?;
    // Still alive now, so alive when the root was opened: that pid was the init.
    let alive = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0) } == 0;
    if !alive {
        return Err(Error::msg(format!("container {id} stopped while its root was being opened")));
    }
    Ok(ContainerRoot { fd, uid, gid })
}

/// The host id that id 0 of a process's user namespace maps to.
fn host_id_of_root(map: &str) -> Result<u32> {
    let text = std::fs::read_to_string(map).map_err(|e| Error::io("read", map, e))?;
    for line in text.lines() {
        let f: Vec<u64> = line.split_whitespace().filter_map(|s| s.parse().ok()).collect();
        if let [inside, outside, count] = f[..] {
            if inside == 0 && count > 0 {
                return u32::try_from(outside).map_err(|_| Error::msg(format!("{map}: bad mapping {line:?}")));
            }
        }
    }
    Err(Error::msg(format!("{map}: the container's root user maps to no host user")))
}

// The new mount API (linux/mount.h); the libc crate has the syscalls only.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
/// fsconfig copies at most this many bytes of a string value.
const FSCONFIG_MAX_STRING: usize = 255;

/// How the layers are handed to overlayfs, newest kernels first.
#[derive(Clone, Copy, Debug)]
enum Style {
    /// `lowerdir+`/`upperdir`/`workdir` as descriptors (Linux 6.13+).
    Fds,
    /// `lowerdir+` one at a time as `/proc/self/fd/N` paths (Linux 6.8+).
    ProcPaths,
    /// One `lowerdir` string of `/proc/self/fd/N` paths (older kernels; few layers).
    Joined,
}

/// The overlay root of a container that is not running, as a detached mount.
pub fn overlay(ov: &Overlay, writable: bool) -> Result<OwnedFd> {
    ov.check_lowers()?;
    let open_dir = |p: &Path| {
        nix::fcntl::open(
            p,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys("open overlay layer", p, e))
    };
    if writable {
        for (dir, what) in [(&ov.upper, "upper dir"), (&ov.work, "work dir")] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(&format!("create overlay {what}"), dir, e))?;
        }
    }
    // Top layer first, as overlayfs lists them.
    let mut lowers: Vec<OwnedFd> = Vec::with_capacity(ov.lower.len() + 1);
    let (upper, work) = if writable {
        (Some(open_dir(&ov.upper)?), Some(open_dir(&ov.work)?))
    } else {
        if ov.upper.is_dir() {
            lowers.push(open_dir(&ov.upper)?);
        }
        (None, None)
    };
    for dir in ov.lower.iter().rev() {
        lowers.push(open_dir(dir)?);
    }
    if lowers.len() > crate::overlay::MAX_LAYERS {
        return Err(Error::msg(format!("{} layers; overlayfs stacks at most {}", lowers.len(), crate::overlay::MAX_LAYERS)));
    }
    let mut last = None;
    for style in [Style::Fds, Style::ProcPaths, Style::Joined] {
        match mount(style, &lowers, upper.as_ref(), work.as_ref(), writable) {
            Ok(fd) => return Ok(fd),
            Err(Attempt::Unsupported(e)) => last = Some(e),
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::msg("mount overlay: no way to pass the layers")))
}

enum Attempt {
    /// This kernel does not take the layers that way: try the next style.
    Unsupported(Error),
    Failed(Error),
}

struct FsContext(OwnedFd);

impl FsContext {
    fn open() -> std::result::Result<FsContext, Attempt> {
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) } as RawFd;
        if fd < 0 {
            return Err(Attempt::Failed(sys("fsopen", "overlay")));
        }
        Ok(FsContext(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn config(&self, cmd: libc::c_uint, key: Option<&CString>, value: Option<&CString>, aux: RawFd) -> std::result::Result<(), Errno> {
        let key = key.map_or(std::ptr::null(), |k| k.as_ptr());
        let value = value.map_or(std::ptr::null(), |v| v.as_ptr());
        let rc = unsafe { libc::syscall(libc::SYS_fsconfig, self.0.as_raw_fd(), cmd, key, value, aux) };
        Errno::result(rc).map(drop)
    }

    /// The kernel's own words about the failure ("e overlay: ..." lines), if any.
    fn log(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.push(String::from_utf8_lossy(&buf[..n as usize]).trim().to_string());
        }
        if out.is_empty() {
            String::new()
        } else {
            format!(" ({})", out.join("; "))
        }
    }
}

fn proc_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
}

fn mount(
    style: Style,
    lowers: &[OwnedFd],
    upper: Option<&OwnedFd>,
    work: Option<&OwnedFd>,
    writable: bool,
) -> std::result::Result<OwnedFd, Attempt> {
    let ctx = FsContext::open()?;
    let fail = |step: &str, e: Errno| {
        Attempt::Failed(Error::msg(format!("mount the container's overlay: {step}: {}{}", crate::error::errno_text(e), ctx.log())))
    };
    let unsupported = |step: &str, e: Errno| {
        Attempt::Unsupported(Error::msg(format!("mount the container's overlay: {step}: {}{}", crate::error::errno_text(e), ctx.log())))
    };
    let key = |k: &str| CString::new(k).expect("no NUL");
    let (lower_plus, upperdir, workdir) = (key("lowerdir+"), key("upperdir"), key("workdir"));
    match style {
        Style::Fds | Style::ProcPaths => {
            for (i, fd) in lowers.iter().enumerate() {
                let r = match style {
                    Style::Fds => ctx.config(FSCONFIG_SET_FD, Some(&lower_plus), None, fd.as_raw_fd()),
                    _ => ctx.config(FSCONFIG_SET_STRING, Some(&lower_plus), Some(&proc_path(fd)), 0),
                };
                match r {
                    Ok(()) => {}
                    Err(e @ (Errno::EINVAL | Errno::EBADF | Errno::EOPNOTSUPP)) if i == 0 => return Err(unsupported("lowerdir+", e)),
                    Err(e) => return Err(fail("lowerdir+", e)),
                }
            }
            for (k, fd) in [(&upperdir, upper), (&workdir, work)] {
                let Some(fd) = fd else { continue };
                let r = match style {
                    Style::Fds => ctx.config(FSCONFIG_SET_FD, Some(k), None, fd.as_raw_fd()),
                    _ => ctx.config(FSCONFIG_SET_STRING, Some(k), Some(&proc_path(fd)), 0),
                };
                r.map_err(|e| fail(&k.to_string_lossy(), e))?;
            }
        }
        Style::Joined => {
            let joined = lowers.iter().map(|fd| proc_path(fd).to_string_lossy().into_owned()).collect::<Vec<_>>().join(":");
            if joined.len() > FSCONFIG_MAX_STRING {
                return Err(Attempt::Failed(Error::msg(format!(
                    "mount the container's overlay: {} layers do not fit this kernel's overlay options (Linux 6.8 takes any number)",
                    lowers.len()
                ))));
            }
            ctx.config(FSCONFIG_SET_STRING, Some(&key("lowerdir")), Some(&CString::new(joined).expect("no NUL")), 0)
                .map_err(|e| fail("lowerdir", e))?;
            for (k, fd) in [(&upperdir, upper), (&workdir, work)] {
                if let Some(fd) = fd {
                    ctx.config(FSCONFIG_SET_STRING, Some(k), Some(&proc_path(fd)), 0).map_err(|e| fail(&k.to_string_lossy(), e))?;
                }
            }
        }
    }
    ctx.config(FSCONFIG_CMD_CREATE, None, None, 0).map_err(|e| fail("create", e))?;
    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    if !writable {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    let fd = unsafe { libc::syscall(libc::SYS_fsmount, ctx.0.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) } as RawFd;
    if fd < 0 {
        return Err(fail("fsmount", Errno::last()));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_mappings() {
        let d = std::env::temp_dir().join(format!("capsa-copy-map-{}", std::process::id()));
        std::fs::write(&d, "         0     100000      65536\n").unwrap();
        assert_eq!(host_id_of_root(d.to_str().unwrap()).unwrap(), 100000);
        std::fs::write(&d, "1000 1000 1\n").unwrap();
        assert!(host_id_of_root(d.to_str().unwrap()).is_err());
        std::fs::remove_file(&d).unwrap();
        assert_eq!(host_id_of_root("/proc/self/uid_map").unwrap(), 0);
    }

    /// Every way of handing over the layers gives the same root (each
    /// kernel takes the first it supports; this one should take all three).
    #[test]
    fn every_style_mounts_the_same_root() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = std::env::temp_dir().join(format!("capsa-copy-ov-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for (dir, file, text) in [("l0", "a", "bottom"), ("l1", "a", "top"), ("l1", "b", "b"), ("up", "c", "upper")] {
            std::fs::create_dir_all(d.join(dir)).unwrap();
            std::fs::write(d.join(dir).join(file), text).unwrap();
        }
        let ov = Overlay { lower: vec![d.join("l0"), d.join("l1")], upper: d.join("up"), work: d.join("work") };
        let read = |fd: &OwnedFd, name: &str| {
            let f = crate::layers::root::openat2(
                std::os::fd::AsFd::as_fd(fd),
                Path::new(name),
                nix::fcntl::OFlag::O_RDONLY,
                super::super::IN_ROOT,
            )
            .unwrap();
            std::io::read_to_string(std::fs::File::from(f)).unwrap()
        };
        for writable in [false, true] {
            std::fs::create_dir_all(d.join("work")).unwrap();
            let open = |p: &Path| {
                nix::fcntl::open(
                    p,
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .unwrap()
            };
            let mut lowers = Vec::new();
            if !writable {
                lowers.push(open(&ov.upper));
            }
            lowers.push(open(&d.join("l1")));
            lowers.push(open(&d.join("l0")));
            let (upper, work) = if writable { (Some(open(&ov.upper)), Some(open(&ov.work))) } else { (None, None) };
            for style in [Style::Fds, Style::ProcPaths, Style::Joined] {
                let fd = match mount(style, &lowers, upper.as_ref(), work.as_ref(), writable) {
                    Ok(fd) => fd,
                    Err(Attempt::Unsupported(e) | Attempt::Failed(e)) => panic!("{style:?} writable={writable}: {e}"),
                };
                assert_eq!((read(&fd, "a"), read(&fd, "/b"), read(&fd, "../c")), ("top".into(), "b".into(), "upper".into()), "{style:?}");
                let made = crate::layers::root::openat2(
                    std::os::fd::AsFd::as_fd(&fd),
                    Path::new("new"),
                    nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CREAT,
                    super::super::IN_ROOT,
                );
                assert_eq!(made.is_ok(), writable, "{style:?}: {made:?}");
                let _ = std::fs::remove_file(d.join("up/new"));
            }
        }
        let fd = overlay(&ov, false).unwrap();
        assert_eq!(read(&fd, "c"), "upper");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
