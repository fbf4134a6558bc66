//! Seccomp user notification, the runtime's side: a filter with
//! SCMP_ACT_NOTIFY rules is loaded by the child with
//! SECCOMP_FILTER_FLAG_NEW_LISTENER; the child sends the listener fd on the
//! sync socket (child::report::listener: the kind byte LISTENER, then one
//! message carrying the fd) and closes its copy. The runtime receives it,
//! connects to the profile's listenerPath and sends runc's
//! ContainerProcessState JSON with the fd (SCM_RIGHTS), then closes its
//! copy too: the agent holds the only one, so that when it dies the
//! notified syscalls fail with ENOSYS instead of hanging, and no hook
//! inherits it.

use super::{Filter, Listener};
use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Child to parent: a message with the seccomp listener fd follows.
pub const LISTENER: u8 = b'N';

/// The parent, having heard LISTENER: receive the listener fd from the
/// child and pass it to the seccomp agent. `state_json` is the container's
/// OCI state (status "creating", as for the hooks); None makes a minimal one.
pub fn forward(sync: &OwnedFd, filter: Option<&Filter>, pid: i32, state_json: Option<&str>) -> Result<()> {
    let fd = receive(sync)?;
    let Some(listener) = filter.and_then(|f| f.listener.as_ref()) else {
        return Err(Error::msg("seccomp: the init sent a listener fd, but listenerPath is not set"));
    };
    send(listener, fd, pid, state_json)
}

/// The fd of the message after LISTENER (close-on-exec here).
pub fn receive(sync: &OwnedFd) -> Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr() as *mut libc::c_void, iov_len: 1 };
    let mut cmsg_buf = [0u64; 8];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
    let r = loop {
        let r = unsafe { libc::recvmsg(sync.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break r;
    };
    if r < 0 {
        return Err(Error::msg(format!("seccomp: receive the listener fd from the container init: {}", std::io::Error::last_os_error())));
    }
    let mut fd: Option<OwnedFd> = None;
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let n = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    let got = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    // One is expected; any other is closed by its drop.
                    if fd.is_none() {
                        fd = Some(got);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    fd.ok_or_else(|| {
        if r == 0 {
            Error::msg("seccomp: the container init went away before it sent the listener fd")
        } else {
            Error::msg("seccomp: the container init's message has no listener fd")
        }
    })
}

/// runc's ContainerProcessState, as the agent reads it.
pub fn process_state(listener: &Listener, pid: i32, state_json: Option<&str>) -> Result<String> {
    let state: serde_json::Value = match state_json {
        Some(s) => serde_json::from_str(s).map_err(|e| Error::msg(format!("seccomp: container state for the agent: {e}")))?,
        None => serde_json::json!({"ociVersion": "1.0.2", "id": "", "status": "creating", "pid": pid, "bundle": ""}),
    };
    let version = state.get("ociVersion").and_then(|v| v.as_str()).unwrap_or("1.0.2").to_string();
    let mut msg = serde_json::json!({"ociVersion": version, "fds": ["seccompFd"], "pid": pid, "state": state});
    if !listener.metadata.is_empty() {
        msg["metadata"] = serde_json::Value::String(listener.metadata.clone());
    }
    serde_json::to_string(&msg).map_err(|e| Error::msg(format!("seccomp: encode the state for the agent: {e}")))
}

/// Connect to the agent at listenerPath and send it the state with the
/// listener fd; the fd is closed here whatever happens.
pub fn send(listener: &Listener, fd: OwnedFd, pid: i32, state_json: Option<&str>) -> Result<()> {
    let text = process_state(listener, pid, state_json)?;
    let conn = UnixStream::connect(&listener.path).map_err(|e| {
        Error::msg(format!("failed to connect with seccomp agent specified in the seccomp profile: {}: {e}", listener.path.display()))
    })?;
    crate::child::report::send_fd(conn.as_raw_fd(), fd.as_raw_fd(), text.as_bytes()).map_err(|e| {
        Error::msg(format!("cannot send seccomp fd to {}: {}", listener.path.display(), std::io::Error::from_raw_os_error(e)))
    })?;
    drop(fd);
    Ok(())
}
