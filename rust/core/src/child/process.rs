//! The process's own setup, shared by a container's init and by exec, once
//! inside the container's namespaces and root: console, rlimits, cwd, the
//! executable, fds, user, capabilities and seccomp.

use super::failure::{Failure, StackText};
use super::sys::{self, errno};
use crate::caps::{self, CapSets};
use crate::plan::ProcessPlan;
use std::ffi::CStr;
use std::os::fd::RawFd;

/// The end of every child: exec the process once set up, or report why not
/// (the exec's own failure too) and exit.
///
/// # Safety
/// `argv` and `envp` are NULL-terminated arrays of C strings that live
/// until the execve (the plan's, built before the clone).
pub unsafe fn exec_or_report(
    sync: RawFd,
    setup: Result<&CStr, Failure<'_>>,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    about_to_exec: impl FnOnce(),
) -> ! {
    match setup {
        Ok(exe) => {
            about_to_exec();
            // SAFETY: the caller vouches for argv and envp.
            let e = unsafe { sys::execve(exe, argv, envp) };
            super::report::failure(sync, &Failure::new("exec", exe, e));
            sys::exit(127)
        }
        Err(f) => {
            super::report::failure(sync, &f);
            sys::exit(1)
        }
    }
}

/// Python's handlers, ignored signals and blocked mask must not leak into
/// the container; and the child dies with the runtime until it is set up.
pub fn reset_signals() {
    sys::reset_signal_dispositions();
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
}

/// Move this (single-threaded) process into its cgroups: "0" to each file.
pub fn join_cgroups(files: &[RawFd]) -> Result<(), Failure<'static>> {
    for fd in files {
        sys::write(*fd, b"0").map_err(|e| Failure::bare("join cgroup", e))?;
    }
    Ok(())
}

/// Console, rlimits, oom score, umask, cwd (checked to be inside the root),
/// the executable, fds, user and capabilities. Returns the executable.
pub fn prepare(p: &ProcessPlan, userns: bool, console_sock: Option<RawFd>, preserve_fds: u32, sync: RawFd) -> Result<&CStr, Failure<'_>> {
    if let Some(sock) = console_sock {
        console(sock, p.console_size)?;
    }
    for (resource, soft, hard) in &p.rlimits {
        sys::setrlimit(*resource, *soft, *hard).map_err(|e| Failure::new("setrlimit", rlimit_name(*resource), e))?;
    }
    // In a user namespace our /proc/self files belong to the host's root
    // (we are not dumpable, see isolation.rs): the parent writes it then.
    if let (Some(adj), false) = (p.oom_score_adj, userns) {
        write_number(c"/proc/self/oom_score_adj", adj as i64)?;
    }
    if let Some(mask) = p.umask {
        sys::umask(mask as libc::mode_t);
    }
    sys::chdir(&p.cwd).map_err(|e| Failure::new("chdir to cwd", &p.cwd, e))?;
    if !super::isolation::cwd_is_inside_root() {
        return Err(Failure::verdict("chdir to cwd", &p.cwd, "the directory is outside the container's root (refused)"));
    }
    let exe = find_executable(p)?;
    super::isolation::cloexec_from(3 + preserve_fds);
    set_identity(p, userns, sync)?;
    if p.no_new_privs {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(|e| Failure::bare("set no_new_privs", e))?;
    }
    Ok(exe)
}

/// The process's seccomp filter, if any. A filter with SCMP_ACT_NOTIFY
/// rules gives a listener fd: it goes to the runtime on `sync` (which
/// passes it to the seccomp agent) and is closed here, so that nothing
/// exec'd from here on (hooks, the process) holds it.
pub fn load_seccomp(p: &ProcessPlan, sync: RawFd) -> Result<(), Failure<'_>> {
    let Some(filter) = &p.seccomp else { return Ok(()) };
    let prog = libc::sock_fprog { len: filter.program.len() as u16, filter: filter.program.as_ptr() as *mut libc::sock_filter };
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    // SAFETY: the kernel copies the BPF program the sock_fprog points at, which lives for the call.
    let r = unsafe {
        libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, filter.flags as libc::c_ulong, &prog as *const libc::sock_fprog)
    };
    if r < 0 {
        return Err(Failure::bare("load seccomp filter", errno()));
    }
    if filter.has_listener() {
        let fd = r as RawFd;
        let sent = super::report::listener(sync, fd);
        sys::close(fd);
        if !sent {
            return Err(Failure::bare("send the seccomp listener fd to the runtime", errno()));
        }
    }
    Ok(())
}

/// A pty whose master goes to the console socket and whose slave becomes stdio.
fn console(sock: RawFd, size: Option<(u16, u16)>) -> Result<(), Failure<'static>> {
    let master =
        sys::open(c"/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC).map_err(|e| Failure::new("open", c"/dev/ptmx", e))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        sys::ioctl_ptr(master, libc::TIOCSWINSZ, &ws).map_err(|e| Failure::bare("set the console size", e))?;
    }
    let unlock: libc::c_int = 0;
    sys::ioctl_ptr(master, libc::TIOCSPTLCK, &unlock).map_err(|e| Failure::bare("unlock pty", e))?;
    let slave = sys::ioctl_int(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY).map_err(|e| Failure::bare("open pty peer", e))?;
    send_fd(sock, master)?;
    sys::close(master);
    for fd in 0..3 {
        sys::dup2(slave, fd).map_err(|e| Failure::bare("dup pty onto stdio", e))?;
    }
    if slave > 2 {
        sys::close(slave);
    }
    sys::ioctl_int(0, libc::TIOCSCTTY, 0).map_err(|e| Failure::bare("make pty the controlling terminal", e))?;
    Ok(())
}

/// sendmsg with SCM_RIGHTS, as runc's console socket protocol expects.
fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), Failure<'static>> {
    super::report::send_fd(sock, fd, b"/dev/ptmx").map_err(|e| Failure::bare("send pty master to console socket", e))
}

fn find_executable(p: &ProcessPlan) -> Result<&CStr, Failure<'_>> {
    let mut last = libc::ENOENT;
    for c in &p.candidates {
        if let Ok(st) = sys::stat(c) {
            if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0 {
                return Ok(c);
            }
            last = libc::EACCES;
        }
    }
    if p.arg0.to_bytes().contains(&b'/') {
        return Err(Failure::new("exec", &p.arg0, last));
    }
    Err(Failure { errno: libc::ENOENT, ..Failure::verdict("exec:", &p.arg0, "executable file not found in $PATH") })
}

/// Groups, gid, uid, then the capability sets: the order that keeps the
/// capabilities we need until the last step.
fn set_identity(p: &ProcessPlan, userns: bool, sync: RawFd) -> Result<(), Failure<'_>> {
    if let Some(c) = &p.caps {
        drop_bounding(c.bounding, p.last_cap).map_err(|(cap, e)| Failure::new("drop from bounding set", caps::name(cap), e))?;
    }
    // Without no_new_privs, loading a filter takes CAP_SYS_ADMIN: load it
    // while the capabilities are still there (as runc does); with it, the
    // filter goes on last, right before execve.
    if !p.no_new_privs {
        load_seccomp(p, sync)?;
    }
    sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(|e| Failure::bare("keep capabilities", e))?;
    // setgroups is refused in a user namespace whose setgroups file says deny; an empty list is then moot.
    match sys::setgroups(&p.groups) {
        Err(libc::EPERM) if p.groups.is_empty() && userns => {}
        r => r.map_err(|e| Failure::bare("setgroups", e))?,
    }
    fix_stdio_ownership(p.uid)?;
    sys::setresgid(p.gid).map_err(|e| Failure::bare("setresgid", e))?;
    sys::setresuid(p.uid).map_err(|e| Failure::bare("setresuid", e))?;
    sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0).map_err(|e| Failure::bare("stop keeping capabilities", e))?;
    if let Some(c) = &p.caps {
        set_caps(c).map_err(|e| Failure::bare("capset", e))?;
        // The kernel raises only what is permitted and inheritable; runc
        // runs its own default spec (ambient, no inheritable) as if the
        // others were not asked for, and so do we.
        raise_ambient(c.ambient & c.permitted & c.inheritable, p.last_cap)
            .map_err(|(cap, e)| Failure::new("raise ambient capability", caps::name(cap), e))?;
    }
    Ok(())
}

/// runc's fixStdioPermissions: stdio (a pty's slave, a pipe) becomes the
/// process user's, so that it can use its console; fds it already owns and
/// /dev/null are left alone, and a refusal (an unmapped owner, a read-only
/// /dev) is no error. Only the uid changes.
fn fix_stdio_ownership(uid: u32) -> Result<(), Failure<'static>> {
    let null = sys::stat(c"/dev/null").ok().map(|st| st.st_rdev);
    for fd in 0..3 {
        let st = match sys::fstat(fd) {
            Ok(st) => st,
            Err(libc::EBADF) => continue,
            Err(e) => return Err(Failure::bare("fstat stdio", e)),
        };
        let is_null = st.st_mode & libc::S_IFMT == libc::S_IFCHR && Some(st.st_rdev) == null;
        if st.st_uid == uid || is_null {
            continue;
        }
        match sys::fchown(fd, uid, st.st_gid) {
            Ok(()) | Err(libc::EINVAL) | Err(libc::EPERM) | Err(libc::EROFS) => {}
            Err(e) => return Err(Failure::bare("fchown stdio", e)),
        }
    }
    Ok(())
}

/// Drop from the bounding set every capability not in `bounding` (needs
/// CAP_SETPCAP); the failing capability number with the errno.
fn drop_bounding(bounding: u64, last: u32) -> Result<(), (u32, i32)> {
    for cap in (0..=last.min(63)).filter(|cap| bounding & (1u64 << cap) == 0) {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) {
            Ok(_) | Err(libc::EINVAL) => {}
            Err(e) => return Err((cap, e)),
        }
    }
    Ok(())
}

/// capset(2) with the effective, permitted and inheritable sets.
fn set_caps(sets: &CapSets) -> Result<(), i32> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let mut header = Header { version: V3, pid: 0 };
    let half = |shift: u32| Data {
        effective: (sets.effective >> shift) as u32,
        permitted: (sets.permitted >> shift) as u32,
        inheritable: (sets.inheritable >> shift) as u32,
    };
    let data = [half(0), half(32)];
    // SAFETY: capset reads the header and the two data structs of version 3, which live for the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if r != 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Raise the ambient set (each must be permitted and inheritable).
fn raise_ambient(ambient: u64, last: u32) -> Result<(), (u32, i32)> {
    for cap in (0..=last.min(63)).filter(|cap| ambient & (1u64 << cap) != 0) {
        // SAFETY: prctl with integer arguments.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if r != 0 {
            return Err((cap, errno()));
        }
    }
    Ok(())
}

fn rlimit_name(resource: u32) -> &'static CStr {
    static NAMES: [&CStr; 16] = [
        c"RLIMIT_CPU",
        c"RLIMIT_FSIZE",
        c"RLIMIT_DATA",
        c"RLIMIT_STACK",
        c"RLIMIT_CORE",
        c"RLIMIT_RSS",
        c"RLIMIT_NPROC",
        c"RLIMIT_NOFILE",
        c"RLIMIT_MEMLOCK",
        c"RLIMIT_AS",
        c"RLIMIT_LOCKS",
        c"RLIMIT_SIGPENDING",
        c"RLIMIT_MSGQUEUE",
        c"RLIMIT_NICE",
        c"RLIMIT_RTPRIO",
        c"RLIMIT_RTTIME",
    ];
    NAMES.get(resource as usize).copied().unwrap_or(c"RLIMIT")
}

/// Write a decimal number to a /proc file without the heap.
fn write_number(path: &'static CStr, n: i64) -> Result<(), Failure<'static>> {
    let mut text = StackText::new();
    let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{n}"));
    let fd = sys::open(path, libc::O_WRONLY | libc::O_CLOEXEC).map_err(|e| Failure::new("open", path, e))?;
    let r = sys::write(fd, text.as_bytes());
    sys::close(fd);
    r.map(drop).map_err(|e| Failure::new("write", path, e))
}
