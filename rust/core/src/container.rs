//! The container lifecycle of the runtime spec: create, start, state, kill,
//! delete (and run = all of them), over the state kept under a root dir.

use crate::cgroups::{self, Cgroup};
use crate::error::{Error, Result};
use crate::hooks;
use crate::plan::Plan;
use crate::spawn::{self, Spawned};
use crate::state::{self, State, Status, EXEC_FIFO};
use oci_spec::runtime::Spec;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct CreateOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    pub systemd_cgroup: bool,
    /// Leave out the exec fifo: the caller starts the init itself through
    /// the returned sync socket (run, and in-process callers).
    pub start_in_process: bool,
    /// With start_in_process: nothing happens between create and start (run),
    /// so the init may exec as soon as it is set up (see spawn::clone_vm).
    pub start_at_once: bool,
    /// Mount this overlay on the bundle's rootfs dir inside the container
    /// (lowers bottom first); its symlinks, if needed, go next to `upper`.
    pub rootfs_overlay: Option<crate::overlay::Overlay>,
    /// The caller starts many containers: join namespaces made ahead, and
    /// (run) have more made once this one is reaped (spares.rs).
    pub spare_namespaces: bool,
    /// A terminal without a console socket: the pty master comes back in
    /// `Created::terminal` (a foreground `run`). Otherwise that is an error.
    pub relay_terminal: bool,
    /// run: keep the state and the cgroup once the process has exited
    /// (runc's `run --keep`), until `delete`.
    pub keep: bool,
}

pub struct Created {
    pub pid: i32,
    /// Present when created with `start_in_process`.
    pub init: Option<Spawned>,
    /// The config has hooks: starting must read the state and config again for them.
    pub hooks: bool,
    /// The spares (CLONE_NEW* flags) a container like this one could join.
    pub spare_kinds: i32,
    /// The pty master, with `relay_terminal`.
    pub terminal: Option<std::os::fd::OwnedFd>,
    /// The state as saved.
    pub state: State,
}

/// Read and parse `<bundle>/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::msg(format!("no config.json in bundle {}", bundle.display())));
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    serde_json::from_slice(&text).map_err(|e| Error::msg(format!("invalid {}: {e}", path.display())))
}

/// Undo on drop unless disarmed: a failed create leaves nothing behind.
struct Cleanup<F: FnMut()>(Option<F>);

impl<F: FnMut()> Drop for Cleanup<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.as_mut() {
            f();
        }
    }
}

pub fn create(root: &Path, id: &str, bundle: &Path, opts: &CreateOptions) -> Result<Created> {
    state::validate_id(id)?;
    let bundle = std::path::absolute(bundle).map_err(|e| Error::io("resolve bundle", bundle, e))?;
    if !bundle.is_dir() {
        return Err(Error::msg(format!("bundle {} is not a directory", bundle.display())));
    }
    let spec = load_spec(&bundle)?;
    // Not a container id ('@'): `list` and `delete` never take it for one.
    crate::seccomp::set_cache_dir(root.join("@seccomp-cache"));
    let mut plan = Plan::new(&spec, &bundle, opts.no_pivot, opts.rootfs_overlay.as_ref())?;
    let linux = spec.linux().clone().unwrap_or_default();
    let cgroup_path = cgroups::resolve_path(linux.cgroups_path().as_deref(), id, opts.systemd_cgroup)?;

    // Made 0700, as runc's: other users have no business with container state.
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(|e| Error::io("create state root", root, e))?;
    let dir = state::dir(root, id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::msg(format!("container {id} already exists")));
        }
        Err(e) => return Err(Error::io("create state dir", &dir, e)),
    }
    let dir_guard = Cleanup(Some(|| {
        let _ = std::fs::remove_dir_all(&dir);
    }));

    let mode = cgroups::detect();
    // Saved before the cgroup exists, again once the init is cloned, and
    // last when create is done: a runtime killed at any point in between
    // leaves a state that `delete --force` cleans.
    let mut first = State {
        id: id.to_string(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.clone(),
        rootfs: plan.rootfs_path.clone(),
        created: state::rfc3339_now(),
        owner: String::new(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup: Cgroup { path: cgroup_path.clone(), ..Default::default() },
        creating: true,
        hooks: spec.hooks().is_some(),
    };
    first.save(root)?;
    let cgroup = Cgroup::create(mode, &cgroup_path, linux.resources().as_ref())?;
    let cgroup_guard = Cleanup(Some(|| {
        cgroup.remove();
    }));
    plan.expand_cgroup_mounts(&cgroup, mode);
    first.cgroup = cgroup.clone();
    if let Some(w) = cgroup.non_empty_warning() {
        crate::debug::warn(|| w);
    }
    let st = std::cell::RefCell::new(first);
    let hook_files = if plan.hooks.in_container() { Some(hooks::StateFiles::new()?) } else { None };
    let events = |e: spawn::Event| -> Result<()> {
        match e {
            spawn::Event::Cloned(pid) | spawn::Event::Started(pid, _) => {
                let mut s = st.borrow_mut();
                s.pid = pid;
                s.pid_start = match e {
                    spawn::Event::Started(_, Some(start)) => start,
                    _ => state::process_start(pid).unwrap_or(0),
                };
                s.creating = e == spawn::Event::Cloned(pid);
                s.save(root)?;
                if let Some(files) = &hook_files {
                    files.fill(&s.oci_state(Status::Creating).to_string(), &s.oci_state(Status::Created).to_string())?;
                }
                Ok(())
            }
            spawn::Event::RuntimeHooks(_) => {
                let json = st.borrow().oci_state(Status::Creating).to_string();
                hooks::run(spec.hooks().as_ref(), hooks::Kind::Prestart, &json)?;
                hooks::run(spec.hooks().as_ref(), hooks::Kind::CreateRuntime, &json)
            }
        }
    };

    let fifo = dir.join(EXEC_FIFO);
    if !opts.start_in_process {
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .map_err(|e| Error::sys("create exec fifo", &fifo, e))?;
        // mkfifo obeys the umask; any container user must be able to open it for writing.
        std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o622)).map_err(|e| Error::io("chmod", &fifo, e))?;
    }
    // The spares (spares.rs) this container may join, and asks to be made again.
    let spare_kinds = if opts.spare_namespaces { plan.spare_kinds() } else { 0 };
    let spawned = spawn::spawn(
        &plan,
        &cgroup,
        &spawn::Options {
            console_socket: opts.console_socket.as_deref(),
            relay_terminal: opts.relay_terminal,
            exec_fifo: (!opts.start_in_process).then_some(fifo.as_path()),
            preserve_fds: opts.preserve_fds,
            hook_state: hook_files.as_ref().map(|f| (f.creating.as_raw_fd(), f.created.as_raw_fd())),
            events: Some(&events),
            start_at_once: opts.start_in_process && opts.start_at_once,
            spare_kinds,
        },
    )?;
    let pid = spawned.pid;
    let kill_guard = Cleanup(Some(|| {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        spawn::reap(pid);
    }));

    let mut st = st.into_inner();
    if st.creating {
        st.creating = false;
        st.save(root)?;
    }
    if let Some(pid_file) = &opts.pid_file {
        write_atomically(pid_file, &pid.to_string())?;
    }
    std::mem::forget(kill_guard);
    std::mem::forget(cgroup_guard);
    std::mem::forget(dir_guard);
    if !opts.start_at_once {
        // create + start: while this one runs (run asks once it is reaped).
        crate::spares::request(spare_kinds);
    }
    let mut spawned = spawned;
    let terminal = spawned.terminal.take();
    Ok(Created { pid, terminal, init: opts.start_in_process.then_some(spawned), hooks: spec.hooks().is_some(), spare_kinds, state: st })
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("capsa-tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
}

/// Release a created container: open its exec fifo, which its init waits on.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let st = State::load(root, id)?;
    match st.status(root) {
        Status::Created => {}
        s => return Err(Error::msg(format!("cannot start container {id}: it is {}", s.as_str()))),
    }
    let fifo = state::dir(root, id).join(EXEC_FIFO);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(|e| Error::io("open exec fifo", &fifo, e))?;
    // The init opens its end as soon as ours is open, then writes one byte;
    // poll so that an init that died meanwhile cannot hang us.
    loop {
        let mut pfd = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            // "0", or "E" and why the init could not go on (a startContainer hook, seccomp).
            let mut b = [0u8; 1024];
            let n = unsafe { libc::read(file.as_raw_fd(), b.as_mut_ptr() as *mut libc::c_void, b.len()) };
            if n > 0 && b[0] == b'0' {
                break;
            }
            if n > 1 && b[0] == b'E' {
                let _ = std::fs::remove_file(&fifo);
                let why = String::from_utf8_lossy(&b[1..n as usize]).into_owned();
                return Err(Error::msg(format!("cannot start container {id}: {why}")));
            }
            if n == 0 && pfd.revents & libc::POLLHUP != 0 && st.alive() {
                break; // closed without a word: it exec'd
            }
        }
        if !st.alive() {
            let _ = std::fs::remove_file(&fifo);
            return Err(Error::msg(format!("cannot start container {id}: its init process has exited")));
        }
    }
    let _ = std::fs::remove_file(&fifo);
    poststart(&st, root);
    Ok(())
}

/// Start an init created with `start_in_process` (run, the Python API):
/// it execs, then the poststart hooks run.
pub fn start_in_process(root: &Path, id: &str, created: &Created) -> Result<()> {
    let init = created.init.as_ref().ok_or_else(|| Error::msg(format!("container {id} was not created for an in-process start")))?;
    init.start()?;
    if !created.hooks {
        return Ok(());
    }
    if let Ok(st) = State::load(root, id) {
        poststart(&st, root);
    }
    Ok(())
}

/// create + start in this process; unless detached, `wait` for the init
/// (given its pid), then delete the container. The exit code, or None when detached.
pub fn run(
    root: &Path,
    id: &str,
    bundle: &Path,
    mut opts: CreateOptions,
    detach: bool,
    wait: impl FnOnce(i32) -> Result<i32>,
) -> Result<Option<i32>> {
    opts.start_in_process = true;
    opts.start_at_once = true;
    // In the foreground a terminal without a console socket is ours to relay, as runc does.
    opts.relay_terminal = !detach && opts.console_socket.is_none();
    let mut created = create(root, id, bundle, &opts)?;
    if let Err(e) = start_in_process(root, id, &created) {
        let _ = delete(root, id, true);
        return Err(e);
    }
    if detach {
        return Ok(None);
    }
    let code = match created.terminal.take() {
        Some(master) => crate::tty::relay(master, created.pid),
        None => wait(created.pid),
    };
    crate::spares::request(created.spare_kinds);
    if code.is_ok() && opts.keep {
        // Stopped, with its state and cgroup, until `delete`.
    } else if code.is_ok() {
        // Reaped: stopped, as the state in hand says; no need to read it again.
        let _ = remove(root, &created.state);
    } else {
        let _ = delete(root, id, true);
    }
    code.map(Some)
}

fn poststart(st: &State, root: &Path) {
    if let Ok(spec) = load_spec(&st.bundle) {
        if spec.hooks().is_some() {
            hooks::run_warning(spec.hooks().as_ref(), hooks::Kind::Poststart, &st.oci_state(st.status(root)).to_string());
        }
    }
}

pub fn state(root: &Path, id: &str) -> Result<(State, Status)> {
    let st = State::load(root, id)?;
    let status = st.status(root);
    Ok((st, status))
}

/// Every container under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<(State, Status)>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read state root", root, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(st) = State::load(root, &name) {
            let status = st.status(root);
            out.push((st, status));
        }
    }
    out.sort_by(|a, b| a.0.created.cmp(&b.0.created));
    Ok(out)
}

pub fn ps(root: &Path, id: &str) -> Result<Vec<i32>> {
    let st = State::load(root, id)?;
    Ok(st.cgroup.pids())
}

/// A signal from a name (`TERM`, `SIGTERM`, `term`) or a number.
pub fn parse_signal(s: &str) -> Result<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        // 0 checks that the process exists, as kill(2) does.
        if (0..=64).contains(&n) {
            return Ok(n);
        }
        return Err(Error::msg(format!("invalid signal number {n}")));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    if let Some(rt) = name.strip_prefix("SIGRTMIN+").and_then(|n| n.parse::<i32>().ok()) {
        return Ok(libc::SIGRTMIN() + rt);
    }
    if let Some(rt) = name.strip_prefix("SIGRTMAX-").and_then(|n| n.parse::<i32>().ok()) {
        return Ok(libc::SIGRTMAX() - rt);
    }
    name.parse::<nix::sys::signal::Signal>().map(|sig| sig as i32).map_err(|_| Error::msg(format!("unknown signal {s:?}")))
}

pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<()> {
    let st = State::load(root, id)?;
    if st.status(root) == Status::Stopped {
        if !all {
            return Err(Error::msg(format!("cannot kill container {id}: it is not running")));
        }
        // As runc: --all reaches whatever is left in the cgroup (nothing, often).
        for pid in st.cgroup.pids() {
            unsafe { libc::kill(pid, signal) };
        }
        return Ok(());
    }
    if all {
        for pid in st.cgroup.pids() {
            unsafe { libc::kill(pid, signal) };
        }
    }
    if unsafe { libc::kill(st.pid, signal) } != 0 {
        return Err(Error::sys("kill", format!("container {id} init {}", st.pid), nix::errno::Errno::last()));
    }
    // A frozen (v1) task dies only once thawed.
    if signal == libc::SIGKILL && st.cgroup.frozen() {
        st.cgroup.thaw()?;
    }
    Ok(())
}

/// Remove a container: its processes (with force, or while only created),
/// its cgroup and its state.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let st = match State::load(root, id) {
        Ok(st) => st,
        Err(e) => {
            // A create killed before its first save leaves a dir without
            // state (state.json itself is written atomically, but may have
            // been damaged by hand): force removes what is there. An id
            // already gone is no error with force either (as runc:
            // containerd's shim force-deletes what the task delete removed).
            let dir = state::dir(root, id);
            if force && state::validate_id(id).is_ok() {
                if dir.is_dir() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Ok(());
            }
            return Err(e);
        }
    };
    match st.status(root) {
        Status::Running | Status::Paused if !force => {
            return Err(Error::msg(format!("cannot delete container {id}: it is running (stop it first, or use --force)")));
        }
        Status::Stopped => {}
        _ => stop_all(&st),
    }
    // Our own child leaves a zombie until reaped.
    if st.pid > 0 {
        unsafe { libc::waitpid(st.pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
    remove(root, &st)
}

/// The end of delete, once the container's processes are gone and reaped:
/// its cgroup, the poststop hooks, its state dir.
fn remove(root: &Path, st: &State) -> Result<()> {
    let failed = st.cgroup.remove();
    if st.creating && st.cgroup.created.is_empty() {
        remove_unrecorded_cgroup(&st.cgroup.path);
    }
    if let Some((dir, e)) = failed.first() {
        return Err(Error::io("remove cgroup", dir, std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))));
    }
    // A create that never finished never ran its container: no poststop.
    if !st.creating && st.hooks {
        if let Ok(spec) = load_spec(&st.bundle) {
            if spec.hooks().is_some() {
                hooks::run_warning(spec.hooks().as_ref(), hooks::Kind::Poststop, &st.oci_state(Status::Stopped).to_string());
            }
        }
    }
    state::remove_dir(root, &st.id)
}

/// A create killed after making its cgroup but before recording it (no
/// process was cloned yet): the empty leaf at its path in every hierarchy.
/// Parents are left, as for any delete: they may be shared.
fn remove_unrecorded_cgroup(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let mut roots = vec![PathBuf::from(cgroups::ROOT), Path::new(cgroups::ROOT).join("unified")];
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        roots.extend(cgroups::v1_hierarchies(&mountinfo).into_iter().map(|h| h.mountpoint));
    }
    for r in roots {
        let _ = std::fs::remove_dir(r.join(rel));
    }
}

/// SIGKILL the init and everything in the cgroup, and wait until they are gone.
/// Only for a live init (never pid 0 of a create killed before its clone).
fn stop_all(st: &State) {
    let deadline = Instant::now() + Duration::from_secs(10);
    unsafe { libc::kill(st.pid, libc::SIGKILL) };
    if st.cgroup.frozen() {
        let _ = st.cgroup.thaw(); // frozen tasks die only once thawed
    }
    loop {
        unsafe { libc::waitpid(st.pid, std::ptr::null_mut(), libc::WNOHANG) };
        let pids = st.cgroup.pids();
        for pid in &pids {
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if (pids.is_empty() && !st.alive()) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Wait for the init of a container this process created: its exit code.
/// `interrupted` runs when a signal arrives, and may abort the wait.
pub fn wait_pid(pid: i32, mut interrupted: impl FnMut() -> Result<()>) -> Result<i32> {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(spawn::exit_code(status));
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::EINTR => interrupted()?,
            e => return Err(Error::msg(format!("wait for container init {pid}: {}", crate::error::errno_text(e)))),
        }
    }
}

pub use crate::forward::wait_forwarding_signals;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGRTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(parse_signal("0").unwrap(), 0, "0 checks that the process exists, as kill(2)");
        assert!(parse_signal("65").is_err());
    }
}
