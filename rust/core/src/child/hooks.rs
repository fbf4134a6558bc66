//! The in-container hooks (createContainer, startContainer), run by the
//! init: a raw fork and execve of argv/envp arrays built before the clone,
//! stdin a memfd with the state JSON, a timeout by poll on a pidfd.

use super::failure::Failure;
use super::sys::{self, errno};
use crate::hooks::{InitHook, InitKind};
use std::os::fd::RawFd;

/// Run each hook to completion, stdin on `state_fd`.
pub fn run<'a>(hooks: &'a [InitHook], state_fd: RawFd, kind: &InitKind) -> Result<(), Failure<'a>> {
    for h in hooks {
        // A raw fork: glibc's fork() runs atfork handlers that take locks
        // another thread of the original process may have held.
        // SAFETY: a fork-like clone (no CLONE_VM): the child has its own copy of this stack.
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) } as libc::pid_t;
        if pid < 0 {
            return Err(Failure::new(kind.spawn, &h.path, errno()));
        }
        if pid == 0 {
            let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
            // SAFETY: plain integer arguments.
            unsafe { libc::lseek(state_fd, 0, libc::SEEK_SET) };
            let _ = sys::dup2(state_fd, 0);
            // SAFETY: the hook's argv and envp are NULL-terminated arrays of its own CStrings.
            unsafe { sys::execve(&h.path, h.argv.as_ptr(), h.envp.as_ptr()) };
            sys::exit(127);
        }
        // SAFETY: plain integer arguments.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
        if pidfd < 0 {
            let e = errno();
            kill_and_wait(pid);
            return Err(Failure::new(kind.spawn, &h.path, e));
        }
        let mut pfd = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
        let r = loop {
            // SAFETY: poll reads and writes the one pollfd given.
            let r = unsafe { libc::poll(&mut pfd, 1, h.timeout_ms) };
            if r < 0 && errno() == libc::EINTR {
                continue;
            }
            break r;
        };
        sys::close(pidfd);
        if r == 0 {
            kill_and_wait(pid);
            return Err(Failure::new(kind.timed_out, &h.path, 0));
        }
        let status = wait(pid);
        if libc::WIFSIGNALED(status) {
            return Err(Failure::verdict(kind.failed, &h.path, signal_verdict(libc::WTERMSIG(status))));
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(Failure::verdict(kind.failed, &h.path, "exit status is not 0"));
        }
    }
    Ok(())
}

fn kill_and_wait(pid: libc::pid_t) {
    // SAFETY: plain integer arguments; pid is our own unreaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait(pid);
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into the local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        return if r == pid { status } else { -1 };
    }
}

/// How a hook killed by a signal is said (Go's words, which runc prints).
fn signal_verdict(sig: i32) -> &'static str {
    match sig {
        libc::SIGSYS => "signal: bad system call",
        libc::SIGKILL => "signal: killed",
        libc::SIGSEGV => "signal: segmentation fault",
        libc::SIGABRT => "signal: aborted",
        libc::SIGTERM => "signal: terminated",
        libc::SIGINT => "signal: interrupt",
        libc::SIGBUS => "signal: bus error",
        libc::SIGPIPE => "signal: broken pipe",
        libc::SIGHUP => "signal: hangup",
        libc::SIGILL => "signal: illegal instruction",
        libc::SIGFPE => "signal: floating point exception",
        _ => "killed by a signal",
    }
}
