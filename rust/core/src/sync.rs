//! The sync channel between the runtime and a container's init: a
//! SOCK_SEQPACKET pair, one byte of kind per message, so neither side can
//! hang on a dead peer (a closed end reads as EOF).

use crate::error::{Cause, Error, Result};
use crate::failure::{Failure, StackText};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Parent to child: uid maps written and cgroups joined, go on.
pub const GO: u8 = b'G';
/// Parent to child (run without the exec fifo): start the process now.
pub const START: u8 = b'S';
/// Child to parent: the container is set up and waits to be started.
pub const READY: u8 = b'R';
/// Child to parent: mounts are made; run the prestart/createRuntime hooks now.
pub const HOOKS: u8 = b'H';
/// Parent to child: the runtime's hooks ran, go on to pivot_root.
pub const RESUME: u8 = b'C';
/// Child to parent: a failure message follows the kind byte.
pub const FAILED: u8 = b'E';
/// First child to parent: the init's pid follows (4 bytes, native order).
pub const PID: u8 = b'P';

pub fn pair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| Error::msg(format!("create sync socket pair: {}", crate::error::errno_text(e))))
}

/// Child side: send one kind byte. Allocation-free.
pub fn send(fd: RawFd, kind: u8) -> bool {
    loop {
        let r = unsafe { libc::send(fd, &kind as *const u8 as *const libc::c_void, 1, libc::MSG_NOSIGNAL) };
        if r == 1 {
            return true;
        }
        if r < 0 && nix::errno::Errno::last_raw() == libc::EINTR {
            continue;
        }
        return false;
    }
}

/// Child side: wait for one kind byte; None on EOF (the parent is gone).
pub fn recv(fd: RawFd) -> Option<u8> {
    let mut b = 0u8;
    loop {
        let r = unsafe { libc::recv(fd, &mut b as *mut u8 as *mut libc::c_void, 1, 0) };
        if r == 1 {
            return Some(b);
        }
        if r < 0 && nix::errno::Errno::last_raw() == libc::EINTR {
            continue;
        }
        return None;
    }
}

/// Child side: report a failure to the parent. Allocation-free. The
/// message: FAILED, the errno (4 bytes), the step and the path (each ended
/// by a NUL), then the rendered line.
pub fn send_failure(fd: RawFd, f: &Failure<'_>) {
    let mut text = StackText::new();
    text.push_bytes(&[FAILED]);
    text.push_bytes(&f.errno.to_ne_bytes());
    text.push_bytes(f.step.as_bytes());
    text.push_bytes(&[0]);
    text.push_bytes(f.path.map_or(&[][..], |p| p.to_bytes()));
    text.push_bytes(&[0]);
    f.render(&mut text);
    let b = text.as_bytes();
    unsafe { libc::send(fd, b.as_ptr() as *const libc::c_void, b.len(), libc::MSG_NOSIGNAL) };
}

/// The parent's reading of send_failure's message.
fn failure(body: &[u8]) -> Error {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if body.len() < 4 {
        return Error::msg(text(body));
    }
    let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
    let mut parts = body[4..].splitn(3, |b| *b == 0);
    let (step, path, message) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    Error { message: text(message), cause: Some(Cause { step: text(step), path: text(path), errno }) }
}

/// First child side: the pid of the init it cloned. Allocation-free.
pub fn send_pid(fd: RawFd, pid: i32) -> bool {
    let mut msg = [PID, 0, 0, 0, 0];
    msg[1..].copy_from_slice(&pid.to_ne_bytes());
    unsafe { libc::send(fd, msg.as_ptr() as *const libc::c_void, msg.len(), libc::MSG_NOSIGNAL) == msg.len() as isize }
}

/// What the parent heard from the child.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    Kind(u8),
    Failed(Error),
    Pid(i32),
    Closed,
}

/// Parent side: one message.
pub fn hear(fd: &OwnedFd) -> Result<Heard> {
    let mut buf = [0u8; 2048];
    loop {
        let r = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if r < 0 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::EINTR {
                continue;
            }
            return Err(Error::msg(format!("read from container init: {}", crate::error::errno_text(e))));
        }
        return Ok(match r {
            0 => Heard::Closed,
            _ if buf[0] == FAILED => Heard::Failed(failure(&buf[1..r as usize])),
            5 if buf[0] == PID => Heard::Pid(i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]])),
            _ => Heard::Kind(buf[0]),
        });
    }
}

/// Parent side: one kind byte.
pub fn tell(fd: &OwnedFd, kind: u8) -> Result<()> {
    if send(fd.as_raw_fd(), kind) {
        Ok(())
    } else {
        Err(Error::msg("container init went away during setup"))
    }
}
