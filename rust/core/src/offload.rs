//! Kernel work moved off the start path, for a process that starts many
//! containers (the Python API): a background thread that
//! - makes the next container's network namespace while the current one
//!   runs. Making one is the costliest single step of a start (about 0.6 ms
//!   here, nearly all in the kernel: loopback, the per-namespace sysctl
//!   tables); the next clone joins it instead. Each serves one container.
//! - holds a running container's mount namespace, so that the init's exit
//!   does not tear it down: that teardown waits for an RCU grace period and
//!   takes down every superblock the container mounted, all of which the
//!   caller's wait would include. The thread lets go once the container is
//!   reaped, and pays the teardown itself.
//!
//! The init sends its mount namespace to the thread (SCM_RIGHTS, before its
//! setup) and the thread keeps it in an fd table of its own: a clone copies
//! the caller's fd table, and a child whose execve closed the last
//! reference would pay the teardown. Spare network namespaces, which no
//! child ever holds last, come back through a second socket.
//!
//! Spare network namespaces belong to the host's user namespace: containers
//! with a user namespace of their own make theirs. Without the thread (or
//! in a child forked after it started), all happens inline as usual.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

const MAKE_SPARE_NETNS: u8 = b'N';
const HOLD: u8 = b'H';
const RELEASE: u8 = b'R';

struct Worker {
    /// Jobs for the thread: [kind, token (8 bytes)], HOLD with an fd.
    jobs: OwnedFd,
    /// Spare network namespaces from the thread, one fd per message.
    spares: OwnedFd,
    /// The process that started the thread: a forked child has no thread.
    pid: u32,
}

static WORKER: OnceLock<Option<Worker>> = OnceLock::new();
/// A spare is made or on its way: no other is asked for.
static SPARE_PENDING: AtomicBool = AtomicBool::new(false);
static TOKENS: AtomicU64 = AtomicU64::new(1);

fn worker() -> Option<&'static Worker> {
    let w = WORKER.get_or_init(start).as_ref()?;
    (w.pid == std::process::id()).then_some(w)
}

fn start() -> Option<Worker> {
    let (jobs, jobs_far) = seqpacket_pair()?;
    let (spares, spares_far) = seqpacket_pair()?;
    let keep = [jobs_far.as_raw_fd(), spares_far.as_raw_fd()];
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("capsa-offload".into())
        .stack_size(64 << 10)
        .spawn(move || {
            // An fd table of its own, with only its two ends in it.
            let own_table = unsafe { libc::unshare(libc::CLONE_FILES) } == 0;
            if own_table {
                close_all_but(&keep);
            }
            let _ = ready_tx.send(own_table);
            if own_table {
                work(jobs_far, spares_far);
            }
        })
        .ok()?;
    // Until the thread had its own table, its ends were in ours too: close
    // them here (the thread closed them itself if it could not).
    if !ready_rx.recv().unwrap_or(false) {
        return None;
    }
    for fd in keep {
        unsafe { libc::close(fd) };
    }
    Some(Worker { jobs, spares, pid: std::process::id() })
}

/// A token naming one container's hold, or None without the thread.
pub fn hold_token() -> Option<(RawFd, u64)> {
    let w = worker()?;
    Some((w.jobs.as_raw_fd(), TOKENS.fetch_add(1, Ordering::Relaxed)))
}

/// The init's side (no heap, no locks): send its own mount namespace to
/// the thread to hold under `token`. Best effort.
pub fn send_hold(jobs: RawFd, token: u64) {
    let fd = unsafe { libc::open(c"/proc/self/ns/mnt".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        send(jobs, HOLD, token, Some(fd));
        unsafe { libc::close(fd) };
    }
}

/// The container of `token` is reaped: the thread lets its mount namespace go.
pub fn release(token: u64) {
    if let Some(w) = worker() {
        send(w.jobs.as_raw_fd(), RELEASE, token, None);
    }
}

/// Have the next container's network namespace made in the background.
pub fn request_spare_netns() {
    if let Some(w) = worker() {
        if !SPARE_PENDING.swap(true, Ordering::AcqRel) && !send(w.jobs.as_raw_fd(), MAKE_SPARE_NETNS, 0, None) {
            SPARE_PENDING.store(false, Ordering::Release);
        }
    }
}

/// A network namespace made ahead, if one is ready: the container joins it.
pub fn take_spare_netns() -> Option<OwnedFd> {
    let w = worker()?;
    let (_, fd) = recv(w.spares.as_raw_fd(), libc::MSG_DONTWAIT)?;
    SPARE_PENDING.store(false, Ordering::Release);
    fd
}

fn work(jobs: OwnedFd, spares: OwnedFd) {
    let Some(proc_dir) = open_at(libc::AT_FDCWD, c"/proc", libc::O_PATH | libc::O_DIRECTORY) else { return };
    let mut held: Vec<(u64, OwnedFd)> = Vec::new();
    let mut can_make = true;
    while let Some((msg, fd)) = recv(jobs.as_raw_fd(), 0) {
        let token = u64::from_ne_bytes(msg[1..9].try_into().unwrap_or_default());
        match (msg[0], fd) {
            (HOLD, Some(ns)) => held.push((token, ns)),
            // The last reference, most likely: the teardown happens here.
            (RELEASE, _) => held.retain(|(t, _)| *t != token),
            (MAKE_SPARE_NETNS, _) => {
                let made = if can_make { make_netns(proc_dir.as_raw_fd()) } else { None };
                can_make = made.is_some();
                match made {
                    Some(ns) if send(spares.as_raw_fd(), MAKE_SPARE_NETNS, 0, Some(ns.as_raw_fd())) => {}
                    _ => SPARE_PENDING.store(false, Ordering::Release),
                }
            }
            _ => {}
        }
    }
}

/// Unshare a new network namespace and return to the thread's own.
fn make_netns(proc_dir: RawFd) -> Option<OwnedFd> {
    let own = open_at(proc_dir, c"thread-self/ns/net", libc::O_RDONLY)?;
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return None;
    }
    let made = open_at(proc_dir, c"thread-self/ns/net", libc::O_RDONLY);
    // Back home, so that the thread is in no container's namespace.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return None;
    }
    made
}

fn seqpacket_pair() -> Option<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    (r == 0).then(|| unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn close_all_but(keep: &[RawFd]) {
    let mut from: libc::c_uint = 0;
    let mut sorted = keep.to_vec();
    sorted.sort();
    for &k in &sorted {
        if k as libc::c_uint > from {
            unsafe { libc::syscall(libc::SYS_close_range, from, k as libc::c_uint - 1, 0) };
        }
        from = k as libc::c_uint + 1;
    }
    unsafe { libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0) };
}

/// One message of [kind, token], with an fd when given. No heap: the init calls it.
fn send(sock: RawFd, kind: u8, token: u64, fd: Option<RawFd>) -> bool {
    let mut msg = [0u8; 9];
    msg[0] = kind;
    msg[1..].copy_from_slice(&token.to_ne_bytes());
    let mut iov = libc::iovec { iov_base: msg.as_mut_ptr() as *mut libc::c_void, iov_len: msg.len() };
    let mut cmsg_buf = [0u64; 4];
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        hdr.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
        hdr.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        }
    }
    unsafe { libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) == msg.len() as isize }
}

/// One message and the fd it carries, if any. None at EOF, on error, or
/// (with MSG_DONTWAIT) when nothing is there.
fn recv(sock: RawFd, flags: libc::c_int) -> Option<([u8; 9], Option<OwnedFd>)> {
    let mut msg = [0u8; 9];
    let mut iov = libc::iovec { iov_base: msg.as_mut_ptr() as *mut libc::c_void, iov_len: msg.len() };
    let mut cmsg_buf = [0u64; 4];
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = std::mem::size_of_val(&cmsg_buf);
    loop {
        let n = unsafe { libc::recvmsg(sock, &mut hdr, flags | libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n != msg.len() as isize {
            return None;
        }
        break;
    }
    let mut fd = None;
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&hdr);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
            fd = Some(OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd)));
        }
    }
    Some((msg, fd))
}

fn open_at(dir: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> Option<OwnedFd> {
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
