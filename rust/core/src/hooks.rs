//! OCI hooks. Each gets the container's state JSON on stdin and may have a
//! timeout (killed, and failed, when it runs over).
//!
//! - prestart, createRuntime, poststart, poststop run in the runtime's
//!   namespaces: the runtime forks them (`run`).
//! - createContainer and startContainer run in the container's namespaces:
//!   the container's init forks and execs them itself (`run_in_init`), from
//!   argv/envp arrays built here before the clone, with stdin on a memfd the
//!   parent filled with the state once the pid was known. Being children of
//!   the init, they are in every namespace of the container (its pid
//!   namespace too, which a setns from outside could not give an exec'd
//!   process) and see its mounts as they are at that moment: createContainer
//!   before pivot_root (its path resolves on the host), startContainer after
//!   it (its path resolves in the container).

use crate::error::{Error, Result};
use crate::mounts::cstring;
use oci_spec::runtime::{Hook, Hooks};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// Which hooks, by the spec's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }

    #[allow(deprecated)] // prestart is deprecated in the spec, still used (podman, nvidia)
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        let list = match self {
            Kind::Prestart => hooks.prestart(),
            Kind::CreateRuntime => hooks.create_runtime(),
            Kind::CreateContainer => hooks.create_container(),
            Kind::StartContainer => hooks.start_container(),
            Kind::Poststart => hooks.poststart(),
            Kind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }
}

/// Check every hook of a config before anything is created.
pub fn validate(hooks: Option<&Hooks>) -> Result<()> {
    let Some(hooks) = hooks else { return Ok(()) };
    for kind in [Kind::Prestart, Kind::CreateRuntime, Kind::CreateContainer, Kind::StartContainer, Kind::Poststart, Kind::Poststop] {
        for h in kind.of(hooks) {
            if !h.path().is_absolute() {
                return Err(Error::msg(format!("{} hook path {} must be absolute", kind.name(), h.path().display())));
            }
            if let Some(t) = h.timeout() {
                if t <= 0 {
                    return Err(Error::msg(format!(
                        "{} hook {}: timeout must be greater than zero, not {t}",
                        kind.name(),
                        h.path().display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Run the hooks of one kind in the runtime's namespaces, in order; the
/// first failure stops the rest and is returned.
pub fn run(hooks: Option<&Hooks>, kind: Kind, state_json: &str) -> Result<()> {
    let Some(hooks) = hooks else { return Ok(()) };
    for h in kind.of(hooks) {
        run_one(h, kind, state_json)?;
    }
    Ok(())
}

/// Run hooks whose failure is only reported (poststart, poststop).
pub fn run_warning(hooks: Option<&Hooks>, kind: Kind, state_json: &str) {
    if let Err(e) = run(hooks, kind, state_json) {
        eprintln!("capsa-runtime: warning: {e}");
    }
}

fn run_one(h: &Hook, kind: Kind, state_json: &str) -> Result<()> {
    let what = format!("{} hook {}", kind.name(), h.path().display());
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = std::process::Command::new(h.path());
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::piped());
    unsafe {
        // A hook must not outlive a runtime killed while waiting for it.
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::io(&format!("run {} hook", kind.name()), h.path(), e))?;
    let stdin = child.stdin.take();
    let state = state_json.as_bytes().to_vec();
    // Written from a thread: a hook that never reads its stdin must still time out.
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin {
            let _ = s.write_all(&state);
        }
    });
    let timeout = h.timeout().map(|t| Duration::from_secs(t as u64));
    let status = wait_with_timeout(&mut child, timeout).map_err(|e| Error::msg(format!("{what}: wait: {e}")))?;
    let _ = writer.join();
    match status {
        None => Err(Error::msg(format!("{what} timed out after {}s and was killed", h.timeout().unwrap_or(0)))),
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(Error::msg(format!("{what} failed: {s}"))),
    }
}

/// Wait for a child; None when the timeout passed first (the child is then killed and reaped).
fn wait_with_timeout(child: &mut std::process::Child, timeout: Option<Duration>) -> std::io::Result<Option<std::process::ExitStatus>> {
    let Some(timeout) = timeout else { return child.wait().map(Some) };
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as RawFd;
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r > 0 {
            return child.wait().map(Some);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if r == 0 || std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
    }
}

// ---------------------------------------------------------------------------
// Hooks run by the container's init
// ---------------------------------------------------------------------------

/// One hook as the init execs it: every byte and pointer made before the clone.
#[derive(Debug)]
pub struct InitHook {
    pub path: CString,
    _argv: Vec<CString>,
    _env: Vec<CString>,
    pub(crate) argv: Vec<*const libc::c_char>,
    pub(crate) envp: Vec<*const libc::c_char>,
    /// Milliseconds, or -1 for none.
    pub(crate) timeout_ms: i32,
}

// The pointers point into the CStrings this struct owns, whose heap buffers never move.
unsafe impl Send for InitHook {}
unsafe impl Sync for InitHook {}

impl InitHook {
    fn new(h: &Hook) -> InitHook {
        let path = cstring(&h.path().to_string_lossy());
        let mut argv: Vec<CString> = h.args().iter().flatten().map(|a| cstring(a)).collect();
        if argv.is_empty() {
            argv.push(path.clone());
        }
        let env: Vec<CString> = h.env().iter().flatten().map(|e| cstring(e)).collect();
        let ptrs = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        InitHook {
            argv: ptrs(&argv),
            envp: ptrs(&env),
            path,
            _argv: argv,
            _env: env,
            timeout_ms: h.timeout().map(|t| (t as u64 * 1000).min(i32::MAX as u64) as i32).unwrap_or(-1),
        }
    }
}

/// The hooks a container's init runs, and whether it must pause for the runtime's own.
#[derive(Debug, Default)]
pub struct InitHooks {
    pub create_container: Vec<InitHook>,
    pub start_container: Vec<InitHook>,
    /// prestart or createRuntime hooks exist: the init asks the runtime to run them before pivot_root.
    pub runtime_pause: bool,
}

impl InitHooks {
    pub fn new(hooks: Option<&Hooks>) -> InitHooks {
        let Some(hooks) = hooks else { return InitHooks::default() };
        InitHooks {
            create_container: Kind::CreateContainer.of(hooks).iter().map(InitHook::new).collect(),
            start_container: Kind::StartContainer.of(hooks).iter().map(InitHook::new).collect(),
            runtime_pause: !Kind::Prestart.of(hooks).is_empty() || !Kind::CreateRuntime.of(hooks).is_empty(),
        }
    }

    pub fn in_container(&self) -> bool {
        !self.create_container.is_empty() || !self.start_container.is_empty()
    }
}

/// The state JSON the in-container hooks read: one memfd per kind, made
/// before the clone (the child inherits them), filled after it.
pub struct StateFiles {
    pub creating: OwnedFd,
    pub created: OwnedFd,
}

impl StateFiles {
    pub fn new() -> Result<StateFiles> {
        let make = |name: &std::ffi::CStr| crate::seccomp::memfd(name).map_err(|e| Error::msg(format!("memfd_create for hook state: {e}")));
        Ok(StateFiles { creating: make(c"capsa-hook-state")?, created: make(c"capsa-hook-state")? })
    }

    pub fn fill(&self, creating: &str, created: &str) -> Result<()> {
        for (fd, text) in [(&self.creating, creating), (&self.created, created)] {
            let n = unsafe { libc::pwrite(fd.as_raw_fd(), text.as_ptr() as *const libc::c_void, text.len(), 0) };
            if n != text.len() as isize {
                return Err(Error::msg(format!("write hook state to memfd: {}", std::io::Error::last_os_error())));
            }
        }
        Ok(())
    }
}

/// Static words for one kind's failures (the init cannot format).
pub struct InitKind {
    pub spawn: &'static str,
    pub failed: &'static str,
    pub timed_out: &'static str,
}

pub const CREATE_CONTAINER: InitKind = InitKind {
    spawn: "createContainer hook: fork",
    failed: "createContainer: error running hook",
    timed_out: "createContainer hook timed out and was killed:",
};

pub const START_CONTAINER: InitKind = InitKind {
    spawn: "startContainer hook: fork",
    failed: "startContainer: error running hook",
    timed_out: "startContainer hook timed out and was killed:",
};
