//! A terminal without a console socket (a foreground `exec -t`, as runc
//! offers it): the runtime keeps the pty master itself and relays it to its
//! own stdin/stdout, in raw mode while the process runs, passing on window
//! size changes and signals, until the process exits.

use crate::error::{errno_text, Error, Result};
use crate::forward;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Connect to a --console-socket. A listener started just before us may not
/// be bound yet: ENOENT and ECONNREFUSED are retried for up to a second.
pub fn connect_console(path: &std::path::Path) -> Result<UnixStream> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match UnixStream::connect(path) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r.map_err(|e| Error::io("connect to console socket", path, e)),
        }
    }
}

/// Where a process's pty master goes: the end the child sends it over (a
/// --console-socket, or one end of a pair when we relay the terminal
/// ourselves, as runc does in the foreground) and, then, our end.
pub fn console(socket: Option<&std::path::Path>, relay: bool) -> Result<(OwnedFd, Option<UnixStream>)> {
    match socket {
        Some(path) => Ok((OwnedFd::from(connect_console(path)?), None)),
        None if relay => {
            let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("create a console socket pair", "(socketpair)", e))?;
            Ok((OwnedFd::from(theirs), Some(ours)))
        }
        None => Err(Error::msg(
            "process.terminal is true: a --console-socket is required (cannot allocate a tty for a detached process without one)",
        )),
    }
}

/// The pty master the process's setup sent over the console socket pair.
pub fn receive_master(sock: &UnixStream) -> Result<OwnedFd> {
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| Error::msg(format!("receive the pty master: {}", errno_text(e))))?;
    for c in msg.cmsgs().map_err(|e| Error::msg(format!("receive the pty master: {}", errno_text(e))))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::msg("receive the pty master: no file descriptor came"))
}

/// Our terminal's settings, restored on drop.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        unsafe {
            if libc::isatty(0) != 1 {
                return RawMode(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return RawMode(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

/// Our terminal's (rows, columns), if stdin is one.
pub fn window_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    (unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0).then_some((ws.ws_row, ws.ws_col))
}

fn copy_window_size(master: RawFd) {
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master, libc::TIOCSWINSZ, &ws);
        }
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        let n = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
        if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        data = &data[n as usize..];
    }
}

/// What is left in the master, without waiting for more.
fn drain(m: RawFd, buf: &mut [u8]) {
    loop {
        let mut p = libc::pollfd { fd: m, events: libc::POLLIN, revents: 0 };
        if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
            return;
        }
        let n = unsafe { libc::read(m, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n <= 0 {
            return;
        }
        write_all(1, &buf[..n as usize]);
    }
}

/// No "\n" to "\r\n" on the way out, as runc relays: the output is what
/// the process wrote (our own terminal, in raw mode, does no mapping either).
fn clear_onlcr(master: RawFd) {
    // SAFETY: termios is plain data; tcgetattr fills it before tcsetattr reads it.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(master, &mut t) == 0 {
            t.c_oflag &= !libc::ONLCR;
            libc::tcsetattr(master, libc::TCSANOW, &t);
        }
    }
}

/// Relay until our child `pid` exits; its exit code (128+N when killed by signal N).
pub fn relay(master: OwnedFd, pid: i32) -> Result<i32> {
    let m = master.as_raw_fd();
    clear_onlcr(m);
    let _raw = RawMode::enter();
    copy_window_size(m);
    let watch = forward::Watch::new(pid)?;
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            libc::pollfd { fd: watch.child.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: watch.signals.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if master_open { m } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if stdin_open { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
        ];
        forward::poll(&mut fds)?;
        if fds[1].revents & libc::POLLIN != 0 {
            match watch.read_signal() {
                Some(libc::SIGWINCH) => copy_window_size(m),
                Some(sig) => unsafe {
                    libc::kill(pid, sig);
                },
                None => {}
            }
        }
        if fds[2].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let n = unsafe { libc::read(m, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n > 0 {
                write_all(1, &buf[..n as usize]);
            } else {
                master_open = false; // EIO: every slave fd is closed
            }
        }
        if fds[3].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let n = unsafe { libc::read(0, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n > 0 {
                write_all(m, &buf[..n as usize]);
            } else {
                stdin_open = false;
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            // The process is gone: pass on what it wrote last, then reap it.
            if master_open {
                drain(m, &mut buf);
            }
            return forward::reap_exited(pid);
        }
    }
}
