//! The parent side of the start path: open what the child needs, clone3 it
//! into its namespaces (and, on cgroup v2, straight into its cgroup), write
//! its id maps, and wait on the sync socket until it is set up or failed.

use crate::cgroups::Cgroup;
use crate::child::init::{self, Context};
use crate::child::sys::CloneArgs;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::sync::{self, Heard};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

pub struct Options<'a> {
    pub console_socket: Option<&'a Path>,
    /// A terminal without a console socket: the caller keeps the pty master
    /// (a foreground `run`, relayed by tty.rs, as runc does). Otherwise that is an error.
    pub relay_terminal: bool,
    /// With a fifo the child waits on it after setup (create/start from
    /// different processes); without, it waits for START on the sync socket.
    pub exec_fifo: Option<&'a Path>,
    pub preserve_fds: u32,
    /// In-container hooks' stdin: (createContainer, startContainer) state fds.
    pub hook_state: Option<(RawFd, RawFd)>,
    /// Told what happens while the init sets up, for the caller's state and hooks.
    pub events: Option<&'a dyn Fn(Event) -> Result<()>>,
    /// Exec the process as soon as it is set up (run): allows the faster
    /// clone_vm when nothing needs the parent in between (no user namespace
    /// maps to write, no hooks).
    pub start_at_once: bool,
    /// CLONE_NEW* kinds to join spare namespaces of (spares.rs), where
    /// ready, instead of making them (Plan::spare_kinds, or 0).
    pub spare_kinds: i32,
}

/// What the parent learns while the init sets up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The init exists (before its setup starts): its host pid.
    Cloned(i32),
    /// The init made its mounts and waits for the prestart/createRuntime hooks.
    RuntimeHooks(i32),
    /// Started at once (clone_vm): the process has exec'd already. With
    /// its start time (state::process_start) when the clone's window tells it.
    Started(i32, Option<u64>),
}

/// A container init that finished its setup and waits to be started
/// (or, when `started`, has exec'd already).
pub struct Spawned {
    pub pid: i32,
    pub sync: OwnedFd,
    pub started: bool,
    /// The pty master, with `relay_terminal`.
    pub terminal: Option<OwnedFd>,
}

impl Spawned {
    /// Start a fifo-less init and wait until it has exec'd (or say why not).
    pub fn start(&self) -> Result<()> {
        if self.started {
            return Ok(());
        }
        sync::tell(&self.sync, sync::START)?;
        match sync::hear(&self.sync)? {
            Heard::Closed => Ok(()), // the socket is close-on-exec: closed means exec'd
            Heard::Failed(e) => Err(e),
            other => Err(Error::msg(format!("unexpected message {other:?} from container init"))),
        }
    }
}

pub(crate) fn open_path(path: &Path, flags: OFlag, what: &str) -> Result<OwnedFd> {
    open(path, flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| Error::sys(&format!("open {what}"), path, e))
}

pub fn spawn(plan: &Plan, cgroup: &Cgroup, opts: &Options<'_>) -> Result<Spawned> {
    // Everything the child touches is opened or built here, before the clone.
    let mut join: Vec<(i32, OwnedFd)> = Vec::new();
    let mut pid_ns: Option<OwnedFd> = None;
    for (nstype, path) in &plan.join {
        let fd = open_path(path, OFlag::O_RDONLY, "namespace path")?;
        if *nstype == libc::CLONE_NEWPID {
            pid_ns = Some(fd);
        } else {
            join.push((*nstype, fd));
        }
    }
    let mut flags = plan.new_namespaces;
    for (kind, _) in crate::spares::KINDS {
        if opts.spare_kinds & kind != 0 {
            if let Some(fd) = crate::spares::take(kind) {
                join.push((kind, fd));
                flags &= !(kind as u64);
            }
        }
    }
    join.sort_by_key(|(t, _)| *t != libc::CLONE_NEWUSER);
    let join_raw: Vec<(i32, RawFd)> = join.iter().map(|(t, fd)| (*t, fd.as_raw_fd())).collect();

    let (console, relay_end) = match plan.process.terminal {
        true => crate::tty::console(opts.console_socket, opts.relay_terminal).map(|(c, r)| (Some(c), r))?,
        false => (None, None),
    };

    // The init reopens the fifo through its own /proc once set up; a host
    // /proc dir fd only for a container without one (isolation.rs).
    let fifo = match opts.exec_fifo {
        Some(path) => {
            let fifo_fd = open_path(path, OFlag::O_PATH, "exec fifo")?;
            let n = fifo_fd.as_raw_fd();
            let (proc_dir, path) = if plan.proc_mounted {
                (None, format!("/proc/self/fd/{n}"))
            } else {
                (Some(open_path(Path::new("/proc"), OFlag::O_PATH | OFlag::O_DIRECTORY, "/proc")?), format!("self/fd/{n}"))
            };
            let path = CString::new(path).unwrap_or_default();
            Some((proc_dir, fifo_fd, path))
        }
        None => None,
    };

    // In a user namespace a bind source may be out of the namespace root's
    // reach: the host's root copies its tree here and the child attaches it.
    let mut bind_fds: Vec<Option<OwnedFd>> = Vec::new();
    if plan.userns() {
        let mut trees = 0;
        for m in &plan.mounts {
            let wanted = m.bind && m.flags & libc::MS_REMOUNT == 0 && trees < crate::child::isolation::MAX_BIND_SOURCES;
            trees += wanted as usize;
            bind_fds.push(if wanted { Some(clone_tree(&m.source, m.flags & libc::MS_REC != 0)?) } else { None });
        }
    }
    let bind_raw: Vec<RawFd> = bind_fds.iter().map(|f| f.as_ref().map_or(-1, |fd| fd.as_raw_fd())).collect();
    let argv: Vec<*const libc::c_char> = plan.process.args.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp: Vec<*const libc::c_char> = plan.process.env.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let (parent_sock, child_sock) = sync::pair()?;
    // Straight into the cgroup2 leaf with the clone (v2, or a hybrid host's
    // unified hierarchy); the child moves itself into the rest (v1) through
    // files opened here, unless a user namespace takes the rights it needs:
    // then the parent moves it.
    // Joining a user namespace by path while making others: a first child
    // joins, then clones the init (init::run_joining_user_namespace).
    let two_stage = plan.join.iter().any(|(t, _)| *t == libc::CLONE_NEWUSER) && plan.new_namespaces != 0;
    let cgroup_fd = if two_stage { None } else { cgroup.clone_into_fd() };
    let self_join = !plan.userns();
    let join_files: Vec<OwnedFd> = if self_join { cgroup.self_join_files(cgroup_fd.is_some())? } else { Vec::new() };
    let join_files_raw: Vec<RawFd> = join_files.iter().map(|fd| fd.as_raw_fd()).collect();
    // A cgroup namespace made by the clone is rooted where the clone put the
    // child: right only on pure v2; else it is made once the child has joined.
    let unshare_cgroupns = plan.new_cgroupns() && !(cgroup.unified && cgroup_fd.is_some());
    if unshare_cgroupns {
        flags &= !(libc::CLONE_NEWCGROUP as u64);
    }

    // At once only when the parent has nothing to do between the clone and
    // the execve: no user namespace (maps, cgroup joins), no hooks.
    let at_once = opts.start_at_once && clone_vm::SUPPORTED && self_join
        && !plan.hooks.runtime_pause && !plan.hooks.in_container() && opts.hook_state.is_none()
        // A seccomp listener goes to its agent through us before the execve.
        && !plan.process.seccomp.as_ref().is_some_and(|f| f.has_listener());

    let mut cx = Context {
        plan,
        sync: child_sock.as_raw_fd(),
        parent_sync: parent_sock.as_raw_fd(),
        join: &join_raw,
        console: console.as_ref().map(|c| c.as_raw_fd()),
        fifo: fifo.as_ref().map(|(dir, fd, path)| init::ExecFifo {
            fd: fd.as_raw_fd(),
            proc_dir: dir.as_ref().map_or(libc::AT_FDCWD, |d| d.as_raw_fd()),
            path: path.as_c_str(),
        }),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        preserve_fds: opts.preserve_fds,
        unshare_cgroupns,
        join_cgroups: &join_files_raw,
        bind_sources: &bind_raw,
        hook_state: opts.hook_state,
        at_once: None,
    };

    crate::debug::log(|| format!("nsexec container setup: cloning the init (namespace flags {flags:#x}, at once: {at_once})"));
    let reached_exec = std::sync::atomic::AtomicBool::new(false);
    // The init is born non-dumpable: /proc/<init>/exe is our binary until its execve (isolation.rs).
    let non_dumpable = crate::child::isolation::NonDumpable::hold();
    if at_once {
        cx.at_once = Some(init::AtOnce { reached_exec: &reached_exec });
        let before = crate::state::boot_ticks();
        let cloned = with_pid_namespace(pid_ns.as_ref(), || clone_vm::clone_and_run(flags, cgroup_fd.as_ref(), &cx), |_| false)?;
        if let Some(pid) = cloned {
            crate::debug::log(|| format!("child process in init(): pid {pid} set up and exec'd"));
            drop(non_dumpable);
            drop(child_sock);
            drop(join_files);
            // The kernel stamps the start time within the clone: where the
            // clock did not tick meanwhile, that is it (no /proc read).
            let start = Some(before).filter(|b| *b == crate::state::boot_ticks());
            return started_at_once(pid, start, parent_sock, reached_exec.load(std::sync::atomic::Ordering::SeqCst), relay_end, opts);
        }
        // clone3 cannot do it here (an old kernel): the usual way below.
        cx.at_once = None;
    }

    let first_flags = if two_stage { 0 } else { flags };
    let pid = with_pid_namespace(pid_ns.as_ref(), || clone(first_flags, cgroup_fd.as_ref()), |pid| *pid == 0)?;
    if pid == 0 {
        if two_stage {
            init::run_joining_user_namespace(&cx, flags);
        }
        init::run(&cx);
    }
    drop(non_dumpable);
    drop(child_sock);
    crate::debug::log(|| format!("child process in init(): pid {}, setting up", pid.unsigned_abs()));
    let (mut pid, attached) = pid_and_attached(pid, cgroup_fd.is_some());
    if two_stage {
        let heard = sync::hear(&parent_sock);
        let first = reap(pid);
        pid = match heard? {
            Heard::Pid(init) => init,
            Heard::Failed(e) => return Err(e),
            other => return Err(Error::msg(format!("container init: unexpected {other:?} ({})", describe_exit(first)))),
        };
    }

    let reaped = std::cell::Cell::new(false);
    let ready = |heard: Heard| -> Result<()> {
        match heard {
            Heard::Kind(sync::READY) => Ok(()),
            Heard::Failed(e) => Err(e),
            Heard::Closed => {
                reaped.set(true);
                Err(Error::msg(format!("container init exited during setup ({})", describe_exit(reap(pid)))))
            }
            other => Err(Error::msg(format!("unexpected message {other:?} from container init"))),
        }
    };
    let event = |e: Event| opts.events.map_or(Ok(()), |f| f(e));
    // Once the init is set up: the pty master it sent, with relay_terminal.
    let finish = || -> Result<Option<OwnedFd>> {
        event(Event::Cloned(pid))?;
        if let Some(map) = &plan.uid_map {
            write_proc(pid, "uid_map", map)?;
        }
        if let Some(map) = &plan.gid_map {
            write_proc(pid, "gid_map", map)?;
        }
        if let (Some(adj), true) = (plan.process.oom_score_adj, plan.userns()) {
            write_proc(pid, "oom_score_adj", &adj.to_string())?;
        }
        if !self_join || (cgroup_fd.is_some() && !attached) {
            // (A clone3 without CLONE_INTO_CGROUP, on an old kernel: all of them.)
            cgroup.attach_after_clone(pid, attached)?;
        }
        sync::tell(&parent_sock, sync::GO)?;
        loop {
            match sync::hear(&parent_sock)? {
                Heard::Kind(sync::HOOKS) => {
                    event(Event::RuntimeHooks(pid))?;
                    sync::tell(&parent_sock, sync::RESUME)?;
                    continue;
                }
                Heard::Kind(crate::seccomp::agent::LISTENER) => {
                    crate::seccomp::agent::forward(&parent_sock, plan.process.seccomp.as_ref(), pid, None)?;
                    continue;
                }
                heard => {
                    ready(heard)?;
                    crate::debug::log(|| format!("init: closing the pipe to signal completion (pid {pid} waits to be started)"));
                    return relay_end.as_ref().map(crate::tty::receive_master).transpose();
                }
            }
        }
    };
    match finish() {
        Ok(terminal) => Ok(Spawned { pid, sync: parent_sock, started: false, terminal }),
        Err(e) => {
            // Once reaped, the pid may already belong to someone else.
            if !reaped.get() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                reap(pid);
            }
            Err(e)
        }
    }
}

/// A detached copy of the mount tree at `source` (open_tree OPEN_TREE_CLONE),
/// for the child to attach with move_mount: a bind source by fd that works
/// across mount namespaces.
fn clone_tree(source: &std::ffi::CStr, recursive: bool) -> Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | if recursive { libc::AT_RECURSIVE as libc::c_uint } else { 0 };
    // SAFETY: open_tree reads the NUL-terminated path and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source.as_ptr(), flags) };
    if fd < 0 {
        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(source.to_bytes()));
        return Err(Error::sys("open_tree (clone) bind mount source", path, nix::errno::Errno::last()));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// The parent's side of clone_vm: by now the child has exec'd or failed.
fn started_at_once(
    pid: i32,
    start: Option<u64>,
    parent_sock: OwnedFd,
    reached_exec: bool,
    relay_end: Option<UnixStream>,
    opts: &Options<'_>,
) -> Result<Spawned> {
    let heard = sync::hear(&parent_sock);
    if matches!(heard, Ok(Heard::Closed)) && !reached_exec {
        // Closed without a word, before the execve: it died during setup.
        let status = reap(pid);
        return Err(Error::msg(format!("container init exited during setup ({})", describe_exit(status))));
    }
    let recorded = opts.events.map_or(Ok(()), |f| f(Event::Started(pid, start)));
    let mut terminal = None;
    let failure = match heard {
        // close-on-exec: closed means exec'd
        Ok(Heard::Closed) => recorded.err().or_else(|| match relay_end.as_ref().map(crate::tty::receive_master).transpose() {
            Ok(master) => {
                terminal = master;
                None
            }
            Err(e) => Some(e),
        }),
        Ok(Heard::Failed(e)) => Some(e),
        Ok(other) => Some(Error::msg(format!("unexpected message {other:?} from container init"))),
        Err(e) => Some(e),
    };
    match failure {
        None => {
            crate::debug::log(|| format!("init: closing the pipe to signal completion (pid {pid} runs)"));
            Ok(Spawned { pid, sync: parent_sock, started: true, terminal })
        }
        Some(e) => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap(pid);
            Err(e)
        }
    }
}

/// The fast clone: CLONE_VM|CLONE_VFORK, as posix_spawn does. The child runs
/// on its own stack in our address space, so there is no copy of this
/// process's page tables (the cost of fork in a big process such as Python),
/// and this thread sleeps until the child's execve or exit: the child may use
/// our memory as if it were this thread. It touches no heap (see init.rs).
mod clone_vm {
    use super::{CloneArgs, CLONE_INTO_CGROUP};
    use crate::child::init::{self, Context};
    use crate::error::{Error, Result};
    use std::os::fd::{AsRawFd, OwnedFd};

    pub const SUPPORTED: bool = cfg!(target_arch = "x86_64");
    const STACK_SIZE: usize = 1 << 20;

    extern "C" fn child(cx: *const Context<'_>) -> ! {
        init::run(unsafe { &*cx })
    }

    /// Ok(Some(pid)) once the child has exec'd or exited; Ok(None) where
    /// clone3 lacks what this needs (the caller then clones the usual way).
    pub fn clone_and_run(flags: u64, cgroup_fd: Option<&OwnedFd>, cx: &Context<'_>) -> Result<Option<i32>> {
        let stack = Stack::take()?;
        unsafe {
            let mut args = CloneArgs {
                flags: flags | libc::CLONE_VM as u64 | libc::CLONE_VFORK as u64,
                exit_signal: libc::SIGCHLD as u64,
                stack: stack.0 as u64,
                stack_size: STACK_SIZE as u64,
                ..Default::default()
            };
            if let Some(fd) = cgroup_fd {
                args.flags |= CLONE_INTO_CGROUP;
                args.cgroup = fd.as_raw_fd() as u64;
            }
            // No signal handler of ours may run in the child before it resets them.
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let r = clone3_calling(&mut args, child, cx);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            // The child has exec'd or exited (CLONE_VFORK): its stack is free again.
            stack.give_back();
            match r {
                pid if pid > 0 => Ok(Some(pid as i32)),
                e if matches!(-e as i32, libc::ENOSYS | libc::EINVAL | libc::E2BIG) => Ok(None),
                e => {
                    let errno = nix::errno::Errno::from_raw(-e as i32);
                    Err(Error::msg(format!("clone3 with namespace flags {flags:#x}: {}", crate::error::errno_text(errno))))
                }
            }
        }
    }

    /// A child stack, kept for the next clone once its child has exec'd: a
    /// fresh mapping would cost an mmap, an munmap and page faults per start.
    struct Stack(*mut libc::c_void);

    // Kept: as many as clones have run at once (threads), up to a few.
    static FREE: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    const KEEP: usize = 4;

    impl Stack {
        // try_lock: in a child forked while another thread held it, the
        // lock stays held; a fresh mapping then does.
        fn take() -> Result<Stack> {
            if let Some(addr) = FREE.try_lock().ok().and_then(|mut f| f.pop()) {
                return Ok(Stack(addr as *mut libc::c_void));
            }
            unsafe {
                let stack = libc::mmap(
                    std::ptr::null_mut(),
                    STACK_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                    -1,
                    0,
                );
                if stack == libc::MAP_FAILED {
                    return Err(Error::msg(format!(
                        "mmap a stack for the container init: {}",
                        crate::error::errno_text(nix::errno::Errno::last())
                    )));
                }
                // A guard page: an overflow faults instead of writing into our memory.
                libc::mprotect(stack, 4096, libc::PROT_NONE);
                Ok(Stack(stack))
            }
        }

        fn give_back(self) {
            if let Ok(mut free) = FREE.try_lock() {
                if free.len() < KEEP {
                    free.push(self.0 as usize);
                    return;
                }
            }
            unsafe { libc::munmap(self.0, STACK_SIZE) };
        }
    }

    /// clone3 whose child starts on the new stack in `f(arg)`: the child
    /// cannot return into this function's frame, which is not on its stack.
    #[cfg(target_arch = "x86_64")]
    unsafe fn clone3_calling(args: &mut CloneArgs, f: extern "C" fn(*const Context<'_>) -> !, arg: *const Context<'_>) -> i64 {
        let ret: i64;
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            // The child: rsp is the top of its stack (16-byte aligned); r12/r13 survive the syscall.
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") f,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        ret
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn clone3_calling(_: &mut CloneArgs, _: extern "C" fn(*const Context<'_>) -> !, _: *const Context<'_>) -> i64 {
        -(libc::ENOSYS as i64)
    }
}

/// clone3 returns the pid; a negative value marks "cloned without CLONE_INTO_CGROUP".
pub(crate) fn pid_and_attached(raw: i64, wanted_into_cgroup: bool) -> (i32, bool) {
    if raw < 0 {
        ((-raw) as i32, false)
    } else {
        (raw as i32, wanted_into_cgroup)
    }
}

/// One clone3 with all namespace flags; clone(2) where clone3 is missing.
pub(crate) fn clone(flags: u64, cgroup_fd: Option<&OwnedFd>) -> Result<i64> {
    let mut args = CloneArgs { flags, exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    let r = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if r >= 0 {
        return Ok(r);
    }
    let e = nix::errno::Errno::last();
    let fallback = match e {
        nix::errno::Errno::ENOSYS => unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0) },
        // An old kernel without CLONE_INTO_CGROUP: clone first, join the cgroup after.
        nix::errno::Errno::EINVAL | nix::errno::Errno::E2BIG if cgroup_fd.is_some() => {
            let mut plain = CloneArgs { flags, exit_signal: libc::SIGCHLD as u64, ..Default::default() };
            unsafe { libc::syscall(libc::SYS_clone3, &mut plain as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) }
        }
        _ => return Err(Error::msg(format!("clone3 with namespace flags {flags:#x}: {}", crate::error::errno_text(e)))),
    };
    match fallback {
        0 => Ok(0),
        r if r > 0 => Ok(-r),
        _ => Err(Error::msg(format!("clone with namespace flags {flags:#x}: {}", crate::error::errno_text(nix::errno::Errno::last())))),
    }
}

/// Joining a pid namespace only affects children: switch this thread's
/// pid_for_children around the clone, then switch back.
/// `in_child` says whether a result is the child's (of a fork-like clone).
pub(crate) fn with_pid_namespace<T>(target: Option<&OwnedFd>, f: impl FnOnce() -> Result<T>, in_child: impl Fn(&T) -> bool) -> Result<T> {
    let Some(target) = target else { return f() };
    let own = open_path(Path::new("/proc/thread-self/ns/pid_for_children"), OFlag::O_RDONLY, "own pid namespace")?;
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        return Err(Error::msg(format!("join pid namespace: {}", crate::error::errno_text(nix::errno::Errno::last()))));
    }
    let r = f();
    if matches!(&r, Ok(v) if in_child(v)) {
        return r; // the child: never switch back
    }
    unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
    r
}

fn write_proc(pid: i32, file: &str, text: &str) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, text).map_err(|e| Error::io(&format!("write {:?} to", text.trim()), &path, e))
}

/// Wait for a child of ours; its wait status.
pub fn reap(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        return -1;
    }
}

/// A wait status as the shell reports it: the exit code, or 128 + signal.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

pub(crate) fn describe_exit(status: i32) -> String {
    if status == -1 {
        "exit status unknown".into()
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit code {}", libc::WEXITSTATUS(status))
    }
}
