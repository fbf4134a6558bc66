//! What a container's process holds of the host until its execve, and
//! how it is kept from the container.
//!
//! - Fds: a clone of the runtime inherits every fd of its caller (a Python
//!   process's directories, the host /proc, cgroup dirs), and a directory
//!   fd of the host, reached as `/proc/self/fd/N` or `/proc/1/fd/N`, walks
//!   out of the container with `..` (runc's CVE-2024-21626). The child
//!   closes everything it does not need before any container path is
//!   resolved, and checks where chdir took it.
//! - The host binary: until the execve, `/proc/<init>/exe` is the caller's
//!   executable (capsa-runtime, python3, capsa-monitor), which a process
//!   of the container could open and, once the runtime has exited,
//!   overwrite (runc's CVE-2019-5736). The child is born non-dumpable
//!   (`NonDumpable`): /proc/<pid>/exe, fd/ and mem of a non-dumpable process
//!   are closed to everyone without CAP_SYS_PTRACE in the host's user
//!   namespace, and the execve makes the new image dumpable again.
//!
//! Everything but `NonDumpable` runs in the child of a clone: syscalls
//! only, no heap.

use std::sync::Mutex;

/// The caller's process is non-dumpable while any guard lives, so that the
/// children it clones meanwhile are born so (the flag belongs to the memory
/// map, which a clone copies, or with CLONE_VM shares until the execve).
/// A count, so that threads starting containers at once never turn it back
/// on under each other.
pub struct NonDumpable(());

/// (guards alive, the dumpable value found before the first).
static HOLDERS: Mutex<(usize, libc::c_int)> = Mutex::new((0, 1));

impl NonDumpable {
    pub fn hold() -> NonDumpable {
        let mut held = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 == 0 {
            // SAFETY: prctl with integer arguments reads or sets this process's dumpable flag.
            held.1 = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
            // SAFETY: as above.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        }
        held.0 += 1;
        NonDumpable(())
    }
}

impl Drop for NonDumpable {
    fn drop(&mut self) {
        let mut held = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if held.0 == 0 && held.1 > 0 {
            // SAFETY: prctl with integer arguments sets this process's dumpable flag back.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, held.1 as libc::c_ulong, 0, 0, 0) };
        }
    }
}

/// Most fds the child keeps open besides stdio and the preserved ones
/// (a few of its own, and the bind sources of a user-namespaced container:
/// spawn.rs opens no more than MAX_BIND_SOURCES of those).
const MAX_KEPT: usize = 8 + MAX_BIND_SOURCES;
pub const MAX_BIND_SOURCES: usize = 56;

/// Close every fd from `first` up except those in `keep`. close_range(2)
/// does it in one call per gap; where it fails (kernels before 5.9), each fd
/// up to the highest possible is closed one by one: never one left open.
pub fn close_all_except(first: u32, keep: &[i32], more: &[i32]) {
    let mut kept = [i32::MAX; MAX_KEPT];
    let mut n = 0;
    for &fd in keep.iter().chain(more) {
        if fd >= first as i32 && n < MAX_KEPT {
            kept[n] = fd;
            n += 1;
        }
    }
    kept[..n].sort_unstable();
    let mut from = first;
    for &fd in &kept[..n] {
        let fd = fd as u32;
        if fd > from {
            close_range(from, fd - 1);
        }
        from = from.max(fd + 1);
    }
    close_range(from, u32::MAX);
}

fn close_range(from: u32, to: u32) {
    // SAFETY: close_range takes plain integers and only closes fds of this process.
    let r = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) };
    if r == 0 {
        return;
    }
    let highest = highest_fd_limit();
    let mut fd = from;
    while fd <= to && fd < highest {
        // SAFETY: closing an fd number; EBADF for the ones not open is expected.
        unsafe { libc::close(fd as i32) };
        fd += 1;
    }
}

/// Mark every fd from `first` up close-on-exec (the sync socket and the
/// like, needed until the execve); one by one where close_range fails.
pub fn cloexec_from(first: u32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this process's fds.
    if unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0 {
        return;
    }
    let highest = highest_fd_limit();
    for fd in first..highest {
        // SAFETY: fcntl on an fd number; EBADF for the ones not open is expected.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

fn highest_fd_limit() -> u32 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    // Fds above the current soft limit can exist (opened before it was lowered): go to the hard one.
    lim.rlim_cur.max(lim.rlim_max).min(u32::MAX as u64) as u32
}

/// After chdir: the cwd must be inside this process's root. A directory
/// reached through an fd of the host (or any path the root does not
/// contain) makes the kernel's getcwd say "(unreachable)" instead of a path
/// that starts with '/'.
pub fn cwd_is_inside_root() -> bool {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: the raw getcwd syscall writes at most buf.len() bytes into buf.
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    r > 0 && buf[0] == b'/'
}

/// Open fds of this process from `first` up (for tests of the child's hygiene).
pub fn open_fds_from(first: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let mut fds: Vec<i32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|fd| *fd >= first).collect();
    fds.sort_unstable();
    fds
}

#[cfg(test)]
mod tests {
    use super::super::sys;
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    /// Runs `f` in a forked child and returns what it wrote to the pipe.
    fn in_child(f: impl FnOnce(i32)) -> Vec<u8> {
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only runs `f` (syscalls) and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                drop(r);
                f(w.into_raw_fd());
                sys::exit(0)
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut out).unwrap();
                nix::sys::wait::waitpid(child, None).unwrap();
                out
            }
        }
    }

    #[test]
    fn closes_all_but_the_kept() {
        let out = in_child(|w| {
            let a = nix::fcntl::open("/", nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
            let b = nix::fcntl::open("/proc", nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap();
            let (_a, b) = (a.into_raw_fd(), b.into_raw_fd());
            close_all_except(3, &[w], &[b]);
            let left = open_fds_from(3);
            let text = format!("{:?}", left.iter().filter(|fd| **fd != w && **fd != b).count());
            let _ = sys::write(w, text.as_bytes());
        });
        // Only read_dir's own fd may show up beside the kept two.
        assert!(out == b"1" || out == b"0", "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn a_host_dir_fd_is_not_inside_a_chroot() {
        let tmp = std::env::temp_dir().join(format!("capsa-fds-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let out = in_child(|w| {
            let outside = nix::fcntl::open("/", nix::fcntl::OFlag::O_DIRECTORY, nix::sys::stat::Mode::empty()).unwrap();
            let c = std::ffi::CString::new(tmp.to_str().unwrap()).unwrap();
            sys::chroot(&c).unwrap();
            sys::chdir(c"/").unwrap();
            let inside = cwd_is_inside_root();
            sys::fchdir(outside.as_raw_fd()).unwrap();
            let escaped = !cwd_is_inside_root();
            let _ = sys::write(w, format!("{inside} {escaped}").as_bytes());
        });
        std::fs::remove_dir(&tmp).unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "true true");
    }

    #[test]
    fn a_failing_close_range_lets_no_fd_through() {
        // close_range refused (ENOSYS, as on kernels before 5.9): the fds are closed one by one.
        let out = in_child(|w| {
            let mut filter = libseccomp::ScmpFilterContext::new(libseccomp::ScmpAction::Allow).unwrap();
            let close_range = libseccomp::ScmpSyscall::from_name("close_range").unwrap();
            filter.add_rule(libseccomp::ScmpAction::Errno(libc::ENOSYS), close_range).unwrap();
            filter.load().unwrap();
            let held: Vec<i32> = (0..5)
                .map(|_| nix::fcntl::open("/", nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap().into_raw_fd())
                .collect();
            close_all_except(3, &[w], &[]);
            // SAFETY: F_GETFD only reads the fd's flags (EBADF once closed).
            let flags = |fd: i32| unsafe { libc::fcntl(fd, libc::F_GETFD) };
            let open_after = held.iter().filter(|fd| flags(**fd) >= 0).count();
            let other = nix::fcntl::open("/", nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty()).unwrap().into_raw_fd();
            cloexec_from(3);
            let marked = flags(other) & libc::FD_CLOEXEC != 0;
            let _ = sys::write(w, format!("{open_after} {marked}").as_bytes());
        });
        assert_eq!(String::from_utf8_lossy(&out), "0 true");
    }
}
