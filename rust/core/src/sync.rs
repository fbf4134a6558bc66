//! The sync channel between the runtime and a container's init: a
//! SOCK_SEQPACKET pair, one byte of kind per message, so neither side can
//! hang on a dead peer (a closed end reads as EOF). This is the parent's
//! side; the child's is child/report.rs.

use crate::error::{Cause, Error, Result};
use std::os::fd::{AsRawFd, OwnedFd};

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

/// The parent's reading of child::report::failure's message.
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
    if crate::child::report::send(fd.as_raw_fd(), kind) {
        Ok(())
    } else {
        Err(Error::msg("container init went away during setup"))
    }
}
