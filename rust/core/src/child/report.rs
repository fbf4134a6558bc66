//! The child's side of the sync channel (sync.rs has the kinds and the
//! parent's side): one kind byte, a failure, the init's pid. Allocation-free.

use super::failure::{Failure, StackText};
use crate::sync::{FAILED, PID};
use std::os::fd::RawFd;

fn send_bytes(fd: RawFd, b: &[u8]) -> bool {
    loop {
        // SAFETY: the kernel reads b.len() bytes of b.
        let r = unsafe { libc::send(fd, b.as_ptr() as *const libc::c_void, b.len(), libc::MSG_NOSIGNAL) };
        if r == b.len() as isize {
            return true;
        }
        if r < 0 && super::sys::errno() == libc::EINTR {
            continue;
        }
        return false;
    }
}

/// One kind byte.
pub fn send(fd: RawFd, kind: u8) -> bool {
    send_bytes(fd, &[kind])
}

/// Wait for one kind byte; None on EOF (the parent is gone).
pub fn recv(fd: RawFd) -> Option<u8> {
    let mut b = 0u8;
    loop {
        // SAFETY: the kernel writes at most one byte into b.
        let r = unsafe { libc::recv(fd, &mut b as *mut u8 as *mut libc::c_void, 1, 0) };
        if r == 1 {
            return Some(b);
        }
        if r < 0 && super::sys::errno() == libc::EINTR {
            continue;
        }
        return None;
    }
}

/// A failure: FAILED, the errno (4 bytes), the step and the path (each
/// ended by a NUL), then the rendered line.
pub fn failure(fd: RawFd, f: &Failure<'_>) {
    let mut text = StackText::new();
    text.push_bytes(&[FAILED]);
    text.push_bytes(&f.errno.to_ne_bytes());
    text.push_bytes(f.step.as_bytes());
    text.push_bytes(&[0]);
    text.push_bytes(f.path.map_or(&[][..], |p| p.to_bytes()));
    text.push_bytes(&[0]);
    f.render(&mut text);
    send_bytes(fd, text.as_bytes());
}

/// The seccomp filter's user-notification fd (SCMP_ACT_NOTIFY), for the
/// runtime to pass on to the seccomp agent (seccomp/agent.rs): the kind
/// byte, then a message of one byte that carries the fd.
pub fn listener(fd: RawFd, listener: RawFd) -> bool {
    send(fd, crate::seccomp::agent::LISTENER) && send_fd(fd, listener, b"L").is_ok()
}

/// sendmsg of `payload` with one fd by SCM_RIGHTS.
pub fn send_fd(sock: RawFd, fd: RawFd, payload: &[u8]) -> super::sys::SysResult {
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
    let mut cmsg_buf = [0u64; 8];
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: the control buffer (64 bytes, 8-aligned) holds one cmsg with one fd:
    // CMSG_FIRSTHDR and CMSG_DATA point inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
    }
    loop {
        // SAFETY: msg and everything it points at live for the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        if super::sys::errno() != libc::EINTR {
            return Err(super::sys::errno());
        }
    }
}

/// First child: the pid of the init it cloned.
pub fn pid(fd: RawFd, pid: i32) -> bool {
    let mut msg = [PID, 0, 0, 0, 0];
    msg[1..].copy_from_slice(&pid.to_ne_bytes());
    send_bytes(fd, &msg)
}
