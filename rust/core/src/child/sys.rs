//! The system calls of the child side, each behind a small safe wrapper:
//! C strings and plain integers in, `Err(errno)` out. Raw syscalls where
//! glibc's wrapper would do more than the call (set*id broadcast to threads
//! that do not exist in the child; fork's atfork handlers).

use std::ffi::CStr;
use std::os::fd::RawFd;

pub type SysResult<T = ()> = Result<T, i32>;

/// The calling thread's errno.
pub fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

fn check(r: libc::c_long) -> SysResult<libc::c_long> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn ok(r: libc::c_int) -> SysResult {
    check(r as libc::c_long).map(drop)
}

fn fd(r: libc::c_int) -> SysResult<RawFd> {
    check(r as libc::c_long).map(|fd| fd as RawFd)
}

pub fn close(fd: RawFd) {
    // SAFETY: closes an fd number of this process; nothing else refers to it afterwards.
    unsafe { libc::close(fd) };
}

pub fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running anything of the parent's (atexit, buffers).
    unsafe { libc::_exit(code) }
}

pub fn chdir(path: &CStr) -> SysResult {
    // SAFETY: path is a NUL-terminated C string.
    ok(unsafe { libc::chdir(path.as_ptr()) })
}

pub fn fchdir(dir: RawFd) -> SysResult {
    // SAFETY: plain integer argument.
    ok(unsafe { libc::fchdir(dir) })
}

pub fn chroot(path: &CStr) -> SysResult {
    // SAFETY: path is a NUL-terminated C string.
    ok(unsafe { libc::chroot(path.as_ptr()) })
}

pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> SysResult {
    // SAFETY: both are NUL-terminated C strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) }).map(drop)
}

pub fn umount_detach(target: &CStr) -> SysResult {
    // SAFETY: target is a NUL-terminated C string.
    ok(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

/// mount(2); `source`, `fstype` and `data` may be null, as mount(2) takes them.
pub fn mount(source: Option<&CStr>, target: &CStr, fstype: Option<&CStr>, flags: u64, data: Option<&CStr>) -> SysResult {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is a NUL-terminated C string or null.
    ok(unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags as libc::c_ulong, p(data) as *const libc::c_void) })
}

pub fn mkdir(path: &CStr, mode: libc::mode_t) -> SysResult {
    // SAFETY: path is a NUL-terminated C string.
    ok(unsafe { libc::mkdir(path.as_ptr(), mode) })
}

pub fn mknod(path: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> SysResult {
    // SAFETY: path is a NUL-terminated C string.
    ok(unsafe { libc::mknod(path.as_ptr(), mode, dev) })
}

pub fn unlink(path: &CStr) -> SysResult {
    // SAFETY: path is a NUL-terminated C string.
    ok(unsafe { libc::unlink(path.as_ptr()) })
}

pub fn symlink(target: &CStr, link: &CStr) -> SysResult {
    // SAFETY: both are NUL-terminated C strings.
    ok(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
}

pub fn chown(path: &CStr, uid: u32, gid: u32) -> SysResult {
    // SAFETY: path is a NUL-terminated C string.
    ok(unsafe { libc::chown(path.as_ptr(), uid, gid) })
}

pub fn stat(path: &CStr) -> SysResult<libc::stat> {
    // SAFETY: stat is plain old data; an all-zero value is valid and the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: path is a NUL-terminated C string and st is writable.
    ok(unsafe { libc::stat(path.as_ptr(), &mut st) }).map(|()| st)
}

pub fn fstat(fd: RawFd) -> SysResult<libc::stat> {
    // SAFETY: stat is plain old data; an all-zero value is valid and the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: plain fd argument and a writable stat.
    ok(unsafe { libc::fstat(fd, &mut st) }).map(|()| st)
}

pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> SysResult {
    // SAFETY: plain integer arguments.
    ok(unsafe { libc::fchown(fd, uid, gid) })
}

pub fn open(path: &CStr, flags: libc::c_int) -> SysResult<RawFd> {
    // SAFETY: path is a NUL-terminated C string; no O_CREAT, so no mode argument.
    fd(unsafe { libc::open(path.as_ptr(), flags) })
}

pub fn openat(dir: RawFd, path: &CStr, flags: libc::c_int) -> SysResult<RawFd> {
    // SAFETY: path is a NUL-terminated C string; no O_CREAT, so no mode argument.
    fd(unsafe { libc::openat(dir, path.as_ptr(), flags) })
}

pub fn write(fd: RawFd, bytes: &[u8]) -> SysResult<usize> {
    // SAFETY: the kernel reads at most bytes.len() bytes from the slice.
    check(unsafe { libc::write(fd, bytes.as_ptr() as *const libc::c_void, bytes.len()) } as libc::c_long).map(|n| n as usize)
}

pub fn dup2(from: RawFd, to: RawFd) -> SysResult {
    // SAFETY: plain integer arguments.
    ok(unsafe { libc::dup2(from, to) })
}

pub fn setns(fd: RawFd, nstype: i32) -> SysResult {
    // SAFETY: plain integer arguments.
    ok(unsafe { libc::setns(fd, nstype) })
}

pub fn unshare(flags: libc::c_int) -> SysResult {
    // SAFETY: plain integer argument.
    ok(unsafe { libc::unshare(flags) })
}

pub fn setsid() -> SysResult {
    // SAFETY: no arguments.
    ok(unsafe { libc::setsid() })
}

pub fn sethostname(name: &CStr) -> SysResult {
    // SAFETY: the kernel reads len bytes of name.
    ok(unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) })
}

pub fn setdomainname(name: &CStr) -> SysResult {
    // SAFETY: the kernel reads len bytes of name.
    ok(unsafe { libc::setdomainname(name.as_ptr(), name.to_bytes().len()) })
}

pub fn personality(persona: libc::c_ulong) -> SysResult {
    // SAFETY: plain integer argument.
    ok(unsafe { libc::personality(persona) })
}

pub fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: plain integer argument; umask cannot fail.
    unsafe { libc::umask(mask) }
}

/// prctl with integer arguments only.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> SysResult<libc::c_int> {
    // SAFETY: the options used here take integers, not pointers.
    let r = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    check(r as libc::c_long).map(|r| r as libc::c_int)
}

pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> SysResult {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: the kernel reads the rlimit it is given.
    ok(unsafe { libc::setrlimit(resource as _, &lim) })
}

// Raw set*id syscalls, not glibc's wrappers: in a process that had threads,
// glibc broadcasts them to every thread it knows of (SIGSETXID) and waits
// for them; in the child those threads do not exist and the wait never ends.
pub fn setresuid(uid: u32) -> SysResult {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

pub fn setresgid(gid: u32) -> SysResult {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

pub fn setgroups(groups: &[libc::gid_t]) -> SysResult {
    // SAFETY: the kernel reads groups.len() gids from the slice.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) }).map(drop)
}

/// ioctl whose third argument is an integer.
pub fn ioctl_int(fd: RawFd, request: libc::c_ulong, arg: libc::c_int) -> SysResult<libc::c_int> {
    // SAFETY: the requests used here take an integer argument.
    let r = unsafe { libc::ioctl(fd, request, arg) };
    check(r as libc::c_long).map(|r| r as libc::c_int)
}

/// ioctl whose third argument points at a value the kernel reads.
pub fn ioctl_ptr<T>(fd: RawFd, request: libc::c_ulong, arg: &T) -> SysResult {
    // SAFETY: the request reads a T from the pointer, which lives for the call.
    ok(unsafe { libc::ioctl(fd, request, arg as *const T) })
}

/// Default dispositions for every signal, and none blocked.
pub fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMIN() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: SIG_DFL is a valid disposition for every catchable signal.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both point at the local sigset_t (the old mask is not asked for).
    unsafe {
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// execve(2): returns only on failure, with the errno.
///
/// # Safety
/// `argv` and `envp` are NULL-terminated arrays of C strings that stay
/// alive until the call (the plan's, built before the clone).
pub unsafe fn execve(path: &CStr, argv: *const *const libc::c_char, envp: *const *const libc::c_char) -> i32 {
    // SAFETY: the caller vouches for argv and envp; path is a C string.
    unsafe { libc::execve(path.as_ptr(), argv, envp) };
    errno()
}

/// clone3's arguments (struct clone_args).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// A fork-like clone whose child is our parent's (CLONE_PARENT): Ok(0) in
/// the child, the child's pid here.
pub fn clone_parent() -> SysResult<i32> {
    let mut args = CloneArgs { flags: libc::CLONE_PARENT as u64, ..Default::default() };
    // SAFETY: clone3 reads args of the size given; without CLONE_VM the child
    // runs on a copy of this stack, as after fork.
    let mut pid = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid < 0 && errno() == libc::ENOSYS {
        // SAFETY: as above, through clone(2) with no stack of its own.
        pid = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_PARENT as libc::c_ulong, 0, 0, 0, 0) };
    }
    check(pid).map(|p| p as i32)
}
