//! exec's child, from the clone to the execve: it joins the container's
//! cgroups and namespaces (user first, mount last), takes the init's root,
//! closes what it holds of the caller, and runs the process setup the init
//! runs too (process.rs).

use super::failure::Failure;
use super::process;
use super::report;
use super::sys;
use crate::plan::ProcessPlan;
use crate::sync;
use std::ffi::CStr;
use std::os::fd::RawFd;

/// Everything the child uses: fds opened and pointer arrays built by the parent.
pub struct Context<'a> {
    pub process: &'a ProcessPlan,
    pub sync: RawFd,
    /// The parent's end, closed first (see child::init::Context::parent_sync).
    pub parent_sync: RawFd,
    /// (CLONE_NEW* type, fd, name) in joining order.
    pub join: &'a [(i32, RawFd, &'static CStr)],
    pub root: RawFd,
    pub userns: bool,
    pub console: Option<RawFd>,
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
    pub preserve_fds: u32,
    pub personality: Option<libc::c_ulong>,
    /// See child::init::Context::join_cgroups.
    pub join_cgroups: &'a [RawFd],
}

/// Never returns.
pub fn run(cx: &Context<'_>) -> ! {
    // SAFETY: argv and envp point into the process plan, built before the clone and alive until the execve.
    unsafe { process::exec_or_report(cx.sync, setup(cx), cx.argv, cx.envp, || {}) }
}

fn setup<'a>(cx: &Context<'a>) -> Result<&'a CStr, Failure<'a>> {
    sys::close(cx.parent_sync);
    process::reset_signals();
    if report::recv(cx.sync) != Some(sync::GO) {
        sys::exit(1);
    }
    process::join_cgroups(cx.join_cgroups)?;
    for (nstype, fd, name) in cx.join {
        sys::setns(*fd, *nstype).map_err(|e| Failure::new("join namespace", name, e))?;
    }
    // The init's root, whatever it was made with (pivot_root or MS_MOVE + chroot).
    sys::fchdir(cx.root).map_err(|e| Failure::bare("enter the container's root", e))?;
    sys::chroot(c".").map_err(|e| Failure::bare("chroot into the container's root", e))?;
    // Namespace, root and cgroup fds are used: nothing of the caller's goes further (isolation.rs).
    super::isolation::close_all_except(3 + cx.preserve_fds, &[cx.sync, cx.console.unwrap_or(-1)], &[]);
    sys::setsid().map_err(|e| Failure::bare("setsid", e))?;
    if let Some(persona) = cx.personality {
        sys::personality(persona).map_err(|e| Failure::bare("set personality", e))?;
    }
    let exe = process::prepare(cx.process, cx.userns, cx.console, cx.preserve_fds, cx.sync)?;
    // Outlive the runtime from here on (a detached exec's runtime exits now).
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, 0, 0);
    // With no_new_privs the container's filter goes on last, as for its init
    // (without it, process::prepare loaded it before dropping capabilities).
    if cx.process.no_new_privs {
        process::load_seccomp(cx.process, cx.sync)?;
    }
    Ok(exe)
}
