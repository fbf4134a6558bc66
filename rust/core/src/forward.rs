//! Waiting for a child of ours while the signals we get go on to it, as a
//! foreground runtime does (runc run, runc exec). The signals are blocked
//! in this thread and read from a signalfd; the child's exit is seen on a
//! pidfd, so neither can be missed.

use crate::error::{errno_text, Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The signals passed on to the child (SIGWINCH too: a relayed terminal
/// turns it into a resize instead).
pub const FORWARDED: [i32; 7] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

pub(crate) fn sys_error(what: &str) -> Error {
    Error::msg(format!("{what}: {}", errno_text(nix::errno::Errno::last())))
}

/// FORWARDED blocked and readable from `signals`, `child` a pidfd; the
/// thread's signal mask comes back on drop.
pub struct Watch {
    pub signals: OwnedFd,
    pub child: OwnedFd,
    old_mask: libc::sigset_t,
}

impl Watch {
    pub fn new(pid: i32) -> Result<Watch> {
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in FORWARDED {
                libc::sigaddset(&mut set, s);
            }
            let mut old_mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask);
            let restore = |e: Error| {
                libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
                e
            };
            let sfd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if sfd < 0 {
                return Err(restore(sys_error("signalfd")));
            }
            let signals = OwnedFd::from_raw_fd(sfd);
            let pfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
            if pfd < 0 {
                return Err(restore(sys_error("pidfd_open")));
            }
            Ok(Watch { signals, child: OwnedFd::from_raw_fd(pfd), old_mask })
        }
    }

    /// The signal the signalfd holds (call when it polled readable).
    pub fn read_signal(&self) -> Option<i32> {
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = unsafe { libc::read(self.signals.as_raw_fd(), &mut info as *mut _ as *mut libc::c_void, size) };
        (n > 0).then_some(info.ssi_signo as i32)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// poll(2) that retries on EINTR.
pub(crate) fn poll(fds: &mut [libc::pollfd]) -> Result<()> {
    loop {
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } >= 0 {
            return Ok(());
        }
        if nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            return Err(sys_error("poll"));
        }
    }
}

/// Reap our child `pid` once its pidfd is readable: its exit code.
pub(crate) fn reap_exited(pid: i32) -> Result<i32> {
    let mut status = 0;
    if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
        return Ok(crate::spawn::exit_code(status));
    }
    Err(sys_error("waitpid"))
}

/// Wait for our child `pid`, passing on every signal we receive meanwhile.
pub fn wait_forwarding_signals(pid: i32) -> Result<i32> {
    let watch = Watch::new(pid)?;
    loop {
        let mut fds = [
            libc::pollfd { fd: watch.child.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: watch.signals.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        poll(&mut fds)?;
        if fds[1].revents & libc::POLLIN != 0 {
            if let Some(sig) = watch.read_signal() {
                unsafe { libc::kill(pid, sig) };
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            return reap_exited(pid);
        }
    }
}
