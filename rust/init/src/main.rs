//! capsa-init: PID 1 of a container run with `--init` (Docker uses tini).
//!
//! `capsa-init -- CMD ARGS...` starts CMD as its child, forwards the signals a
//! user or `capsa stop/kill` sends to it, reaps every zombie that ends up as its
//! child (orphans are reparented to PID 1), and exits with CMD's exit code
//! (128 + signal if CMD was killed). It is linked statically (crt-static), so
//! it runs in any image, bind-mounted read-only at /sbin/capsa-init; it uses
//! only libc: no allocation after the exec arguments are built.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

/// Signals passed on to the child; SIGCHLD drives reaping, the rest keep their defaults.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGALRM,
    libc::SIGPIPE,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

fn die(step: &str) -> ! {
    let err = std::io::Error::last_os_error();
    eprintln!("capsa-init: {step}: {err}");
    std::process::exit(126);
}

fn main() {
    let mut args: Vec<CString> =
        std::env::args_os().skip(1).map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| die("argument with a NUL byte"))).collect();
    if args.first().map(|a| a.as_bytes() == b"--").unwrap_or(false) {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("capsa-init: usage: capsa-init -- COMMAND [ARG...]");
        std::process::exit(2);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());

    unsafe {
        // Block the signals we handle; sigtimedwait takes them one at a time.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let mut old: libc::sigset_t = std::mem::zeroed();
        if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
            die("sigprocmask");
        }

        let child = libc::fork();
        if child < 0 {
            die("fork");
        }
        if child == 0 {
            // The command gets the default signal mask, its own process group
            // and the terminal's foreground if there is one (job control in sh).
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::setpgid(0, 0);
            if libc::isatty(0) == 1 {
                libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpid());
                libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            }
            libc::execvp(argv[0], argv.as_ptr());
            let errno = *libc::__errno_location();
            let name = args[0].to_string_lossy();
            if errno == libc::ENOENT {
                eprintln!("capsa-init: exec {name}: executable file not found in $PATH");
                libc::_exit(127);
            }
            eprintln!("capsa-init: exec {name}: {}", std::io::Error::from_raw_os_error(errno));
            libc::_exit(126);
        }

        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig < 0 {
                continue; // EINTR
            }
            if sig != libc::SIGCHLD {
                // To the command only (tini without -g): it decides for its own children.
                libc::kill(child, sig);
                continue;
            }
            // Reap everything that has exited: the command and any orphan.
            loop {
                let mut status: libc::c_int = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == child {
                    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
                    std::process::exit(code);
                }
            }
        }
    }
}
