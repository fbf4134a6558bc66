//! The container's init, from the clone to the execve: namespaces,
//! cgroups, the root filesystem, pivot_root, then the process's own setup
//! (process.rs) and the wait for start.

use super::failure::{Failure, StackText};
use super::mount::{create_target, remount};
use super::process;
use super::report;
use super::sys;
use crate::plan::Plan;
use crate::sync;
use std::ffi::CStr;
use std::os::fd::RawFd;

/// Everything the child uses besides the plan: fds opened and pointer arrays built by the parent.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub plan: &'a Plan,
    pub sync: RawFd,
    /// The parent's end of the sync pair, inherited by clone: closed first, so
    /// that a runtime killed before it says GO reads as EOF, not a hang.
    pub parent_sync: RawFd,
    /// Namespaces to join (CLONE_NEW* type, fd), user namespace first.
    pub join: &'a [(i32, RawFd)],
    pub console: Option<RawFd>,
    pub fifo: Option<ExecFifo<'a>>,
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
    pub preserve_fds: u32,
    /// Where the cgroup namespace cannot be made by the clone, it is made
    /// after the child joined its cgroups.
    pub unshare_cgroupns: bool,
    /// Files the child writes "0" to, to move itself into its cgroups (see
    /// Cgroup::self_join_files); empty when the parent moves it.
    pub join_cgroups: &'a [RawFd],
    /// stdin of the createContainer and startContainer hooks (state JSON memfds).
    pub hook_state: Option<(RawFd, RawFd)>,
    /// Per mount of the plan, an O_PATH fd on its bind source (or -1): in a
    /// user namespace the source may be out of the namespace root's reach,
    /// so the host's root opens it and the child mounts it by fd, as runc.
    pub bind_sources: &'a [RawFd],
    /// Started at once (spawn::clone_vm).
    pub at_once: Option<AtOnce<'a>>,
}

/// The exec fifo that `start` opens: an O_PATH fd on it, reopened for
/// writing through /proc once the init is set up. The container's own
/// /proc where it has one (`proc_dir` is AT_FDCWD, `path` absolute): no fd
/// of the host /proc is then held while the init waits.
#[derive(Clone, Copy)]
pub struct ExecFifo<'a> {
    pub fd: RawFd,
    pub proc_dir: RawFd,
    pub path: &'a CStr,
}

/// An init started at once shares the parent's memory until its execve:
/// there is no GO, READY or START on the sync socket, since the parent
/// sleeps until then.
#[derive(Clone, Copy)]
pub struct AtOnce<'a> {
    /// Set just before the execve, in the parent's memory: a child that
    /// died before it (a signal, a bug) is not taken for one that exec'd.
    pub reached_exec: &'a std::sync::atomic::AtomicBool,
}

/// The child's whole life; never returns.
pub fn run(cx: &Context<'_>) -> ! {
    let reached_exec = || {
        if let Some(a) = cx.at_once {
            a.reached_exec.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    // SAFETY: argv and envp point into the plan, built before the clone and alive until the execve.
    unsafe { process::exec_or_report(cx.sync, setup(cx), cx.argv, cx.envp, reached_exec) }
}

/// Joining a user namespace by path while making other namespaces: those
/// must be made from inside it, so that it owns them (else the init has no
/// right to mount in its own mount namespace). This first child joins the
/// namespaces, clones the init into the new ones as a child of the runtime
/// (CLONE_PARENT: the runtime waits for it as for any init), reports its
/// pid and exits.
pub fn run_joining_user_namespace(cx: &Context<'_>, new_namespaces: u64) -> ! {
    sys::close(cx.parent_sync);
    process::reset_signals();
    for (nstype, fd) in cx.join {
        if let Err(e) = sys::setns(*fd, *nstype) {
            report::failure(cx.sync, &Failure::bare("join namespace (setns)", e));
            sys::exit(1);
        }
    }
    // The kernel refuses CLONE_NEWPID with CLONE_PARENT in one clone: the
    // namespaces come from unshare (pid: for the children), the clone only
    // makes the init.
    if let Err(e) = sys::unshare(new_namespaces as libc::c_int) {
        report::failure(cx.sync, &Failure::bare("make namespaces inside the joined user namespace (unshare)", e));
        sys::exit(1);
    }
    match sys::clone_parent() {
        Ok(0) => {
            let joined = Context { join: &[], ..*cx };
            run(&joined)
        }
        Ok(pid) => {
            report::pid(cx.sync, pid);
            sys::exit(0)
        }
        Err(e) => {
            report::failure(cx.sync, &Failure::bare("clone the init inside the joined user namespace", e));
            sys::exit(1)
        }
    }
}

/// Set up the container; returns the executable to exec once started.
fn setup<'a>(cx: &Context<'a>) -> Result<&'a CStr, Failure<'a>> {
    let plan = cx.plan;
    sys::close(cx.parent_sync);
    process::reset_signals();
    if cx.at_once.is_none() && report::recv(cx.sync) != Some(sync::GO) {
        sys::exit(1);
    }
    process::join_cgroups(cx.join_cgroups)?;
    for (nstype, fd) in cx.join {
        sys::setns(*fd, *nstype).map_err(|e| Failure::bare("join namespace (setns)", e))?;
    }
    if plan.userns() {
        // Become the root of the user namespace (made with the maps the
        // parent wrote, or joined): files made from here on are its root's.
        sys::setresgid(0).map_err(|e| Failure::bare("setresgid to root of the user namespace (is container gid 0 mapped?)", e))?;
        sys::setresuid(0).map_err(|e| Failure::bare("setresuid to root of the user namespace (is container uid 0 mapped?)", e))?;
    }
    if cx.unshare_cgroupns {
        sys::unshare(libc::CLONE_NEWCGROUP).map_err(|e| Failure::bare("unshare cgroup namespace", e))?;
    }
    // Nothing of the caller's goes further than this: namespace and cgroup
    // fds are used, and no container path has been resolved yet.
    let (creating, started) = cx.hook_state.unzip();
    let fifo = cx.fifo.map(|f| [f.fd, f.proc_dir]).unwrap_or([-1, -1]);
    let keep = [cx.sync, cx.console.unwrap_or(-1), fifo[0], fifo[1], creating.unwrap_or(-1), started.unwrap_or(-1)];
    super::isolation::close_all_except(3 + cx.preserve_fds, &keep, cx.bind_sources);
    sys::setsid().map_err(|e| Failure::bare("setsid", e))?;

    setup_rootfs(plan, cx.bind_sources)?;
    before_pivot(cx)?;
    enter_rootfs(plan)?;
    if let Some(persona) = plan.personality {
        sys::personality(persona).map_err(|e| Failure::bare("set personality", e))?;
    }
    if let Some(h) = &plan.hostname {
        sys::sethostname(h).map_err(|e| Failure::new("set hostname", h, e))?;
    }
    if let Some(d) = &plan.domainname {
        sys::setdomainname(d).map_err(|e| Failure::new("set domainname", d, e))?;
    }
    let listener = plan.process.seccomp.as_ref().is_some_and(|f| f.has_listener());
    if listener && cx.at_once.is_some() {
        // The parent sleeps until the execve, and could not pass the fd on.
        return Err(Failure::bare("seccomp user notification (SCMP_ACT_NOTIFY) cannot be set up by an init started at once", libc::EINVAL));
    }
    let exe = process::prepare(&plan.process, plan.userns(), cx.console, cx.preserve_fds, cx.sync)?;
    if listener && plan.process.no_new_privs {
        // As runc: before READY, while the runtime that made the container
        // is there to pass the listener fd to the agent.
        process::load_seccomp(&plan.process, cx.sync)?;
    }

    // From here on the container outlives the runtime that made it: stop
    // dying with it before saying READY, or its exit could race our prctl.
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, 0, 0);
    if cx.at_once.is_some() {
        before_exec(cx)?;
        return Ok(exe);
    }
    if !report::send(cx.sync, sync::READY) {
        sys::exit(1);
    }
    match cx.fifo {
        Some(fifo) => {
            // Blocks until `start` opens the fifo for reading.
            let fd = sys::openat(fifo.proc_dir, fifo.path, libc::O_WRONLY | libc::O_CLOEXEC)
                .map_err(|e| Failure::new("open exec fifo", fifo.path, e))?;
            // `start` reads "0", or the reason the container could not start.
            match before_exec(cx) {
                Ok(()) => {
                    let _ = sys::write(fd, b"0");
                }
                Err(f) => {
                    let mut text = StackText::new();
                    text.push_bytes(b"E");
                    f.render(&mut text);
                    let _ = sys::write(fd, text.as_bytes());
                    return Err(f);
                }
            }
        }
        None => {
            if report::recv(cx.sync) != Some(sync::START) {
                sys::exit(1);
            }
            before_exec(cx)?;
        }
    }
    Ok(exe)
}

fn setup_rootfs<'a>(plan: &'a Plan, bind_sources: &[RawFd]) -> Result<(), Failure<'a>> {
    let root = &plan.rootfs;
    sys::mount(None, c"/", None, plan.root_propagation, None).map_err(|e| Failure::new("make / a slave mount", c"/", e))?;
    if let Some(ov) = &plan.overlay {
        super::mount::overlay_root(ov, root)?;
    }
    sys::mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC, None).map_err(|e| Failure::new("bind-mount rootfs", root, e))?;
    for (i, m) in plan.mounts.iter().enumerate() {
        m.apply(bind_sources.get(i).copied().filter(|fd| *fd >= 0))?;
    }
    let userns = plan.userns();
    // mknod obeys the umask; the config's modes are meant exactly.
    let umask = sys::umask(0);
    for d in &plan.devices {
        if userns {
            // mknod is refused in a user namespace: bind the host's node instead.
            create_target(&d.target, true).map_err(|e| Failure::new("create device", &d.destination, e))?;
            sys::mount(Some(&d.host), &d.target, None, libc::MS_BIND, None)
                .map_err(|e| Failure::new("bind-mount device", &d.destination, e))?;
            continue;
        }
        let made = match sys::mknod(&d.target, d.mode, d.dev) {
            // Something is there already (a node from an earlier run): replace it.
            Err(libc::EEXIST) => {
                let _ = sys::unlink(&d.target);
                sys::mknod(&d.target, d.mode, d.dev)
            }
            // A nested device (/dev/net/tun, /dev/dri/card0): its directories first
            // (create_target makes them and an empty file, which gives way to the node).
            Err(libc::ENOENT) => {
                create_target(&d.target, true).map_err(|e| Failure::new("create device", &d.destination, e))?;
                let _ = sys::unlink(&d.target);
                sys::mknod(&d.target, d.mode, d.dev)
            }
            r => r,
        };
        made.map_err(|e| Failure::new("mknod", &d.destination, e))?;
        sys::chown(&d.target, d.uid, d.gid).map_err(|e| Failure::new("chown device", &d.destination, e))?;
    }
    sys::umask(umask);
    for (link, to) in &plan.dev_links {
        match sys::symlink(to, link) {
            Ok(()) | Err(libc::EEXIST) => {}
            Err(e) => return Err(Failure::new("symlink", link, e)),
        }
    }
    Ok(())
}

/// pivot_root (or MS_MOVE + chroot) into the rootfs, then what needs the
/// new root: the cwd, sysctls, masked and read-only paths, a read-only root.
fn enter_rootfs(plan: &Plan) -> Result<(), Failure<'_>> {
    let root = &plan.rootfs;
    sys::chdir(root).map_err(|e| Failure::new("chdir to rootfs", root, e))?;
    if plan.no_pivot {
        hide_host_pseudo_filesystems(plan)?;
        sys::mount(Some(root), c"/", None, libc::MS_MOVE, None).map_err(|e| Failure::new("move rootfs to /", root, e))?;
        sys::chroot(c".").map_err(|e| Failure::new("chroot", root, e))?;
    } else {
        sys::pivot_root(c".", c".").map_err(|e| Failure::new("pivot_root", root, e))?;
        // The old root is stacked on "."; detach it without telling the host.
        sys::mount(None, c".", None, libc::MS_SLAVE | libc::MS_REC, None).map_err(|e| Failure::new("make old root a slave", root, e))?;
        sys::umount_detach(c".").map_err(|e| Failure::new("unmount old root", root, e))?;
    }
    sys::chdir(c"/").map_err(|e| Failure::bare("chdir to /", e))?;
    // A cwd the image lacks is made here, inside the container's root, before it may become read-only.
    create_target(&plan.process.cwd, false).map_err(|e| Failure::new("create cwd", &plan.process.cwd, e))?;
    if plan.rootfs_propagation != 0 {
        sys::mount(None, c"/", None, plan.rootfs_propagation, None).map_err(|e| Failure::new("set rootfsPropagation on", c"/", e))?;
    }
    // Before maskedPaths and readonlyPaths, which usually cover /proc/sys.
    for s in &plan.sysctls {
        let fd = sys::open(&s.path, libc::O_WRONLY | libc::O_CLOEXEC).map_err(|e| Failure::new("open sysctl", &s.path, e))?;
        let r = sys::write(fd, s.value.to_bytes());
        sys::close(fd);
        r.map_err(|e| Failure::new("write sysctl", &s.path, e))?;
    }
    mask_paths(plan)?;
    for path in &plan.readonly {
        match sys::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None) {
            Err(libc::ENOENT) => continue,
            Err(e) => return Err(Failure::new("bind readonly path", path, e)),
            Ok(()) => remount(path, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC)
                .map_err(|e| Failure::new("remount readonly path", path, e))?,
        }
    }
    // runc's finalizeRootfs: a read-only /dev was mounted writable for devpts and the devices.
    if let Some(flags) = plan.dev_readonly {
        remount(c"/dev", flags | libc::MS_REMOUNT | libc::MS_RDONLY).map_err(|e| Failure::new("remount read-only", c"/dev", e))?;
    }
    if plan.readonly_root {
        remount(c"/", libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY).map_err(|e| Failure::new("remount root read-only", c"/", e))?;
    }
    Ok(())
}

/// With --no-pivot the host's full procfs and sysfs mounts stay reachable
/// in the container's mount namespace, and the kernel allows a new procfs
/// (unmasked) where such a mount exists: unmount them (or cover them with a
/// tmpfs) first, as runc's msMoveRoot does. The list is the plan's.
fn hide_host_pseudo_filesystems(plan: &Plan) -> Result<(), Failure<'_>> {
    for path in &plan.host_pseudo_mounts {
        match sys::mount(None, path, None, libc::MS_SLAVE | libc::MS_REC, None) {
            Err(libc::ENOENT) => continue,
            Err(e) => return Err(Failure::new("make host mount a slave", path, e)),
            Ok(()) => {}
        }
        match sys::umount_detach(path) {
            Ok(()) => {}
            Err(libc::EINVAL) | Err(libc::EPERM) => {
                sys::mount(Some(c"tmpfs"), path, Some(c"tmpfs"), 0, None).map_err(|e| Failure::new("cover host mount", path, e))?;
            }
            Err(e) => return Err(Failure::new("unmount host mount", path, e)),
        }
    }
    Ok(())
}

/// Directories are masked by one empty read-only tmpfs, bound on each after
/// the first (a superblock less per directory to make and tear down), files
/// by /dev/null.
fn mask_paths(plan: &Plan) -> Result<(), Failure<'_>> {
    let mut mask_dir: Option<&CStr> = None;
    for path in &plan.masked {
        let st = match sys::stat(path) {
            Ok(st) => st,
            Err(libc::ENOENT) => continue,
            Err(e) => return Err(Failure::new("mask path", path, e)),
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let fresh = || sys::mount(Some(c"tmpfs"), path, Some(c"tmpfs"), libc::MS_RDONLY, None);
        let r = match (is_dir, mask_dir) {
            (true, None) => fresh(),
            // The first may be gone under a later mask of its ancestor: then a tmpfs of its own.
            (true, Some(first)) => match sys::mount(Some(first), path, None, libc::MS_BIND, None) {
                Err(libc::ENOENT) => fresh().map(|()| mask_dir = None),
                r => r,
            },
            (false, _) => sys::mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None),
        };
        match r {
            Ok(()) if is_dir => mask_dir = mask_dir.or(Some(path)),
            Ok(()) => {}
            // No /dev/null in the container (no /dev mount): as runc, left as is.
            Err(libc::ENOENT) if !is_dir => {}
            Err(e) => return Err(Failure::new("mask path", path, e)),
        }
    }
    Ok(())
}

/// The container's mounts exist, pivot_root has not happened: the
/// runtime's prestart/createRuntime hooks, then createContainer.
fn before_pivot<'a>(cx: &Context<'a>) -> Result<(), Failure<'a>> {
    let plan = cx.plan;
    if plan.hooks.runtime_pause && (!report::send(cx.sync, sync::HOOKS) || report::recv(cx.sync) != Some(sync::RESUME)) {
        sys::exit(1);
    }
    if let Some((creating, _)) = cx.hook_state {
        // As runc, createContainer hooks start in the rootfs (`touch ./lib/x`).
        sys::chdir(&plan.rootfs).map_err(|e| Failure::new("chdir to rootfs", &plan.rootfs, e))?;
        super::hooks::run(&plan.hooks.create_container, creating, &crate::hooks::CREATE_CONTAINER)?;
    }
    Ok(())
}

/// Once started: (with no_new_privs) the seccomp filter, then the
/// startContainer hooks, which run under it as runc's do.
fn before_exec<'a>(cx: &Context<'a>) -> Result<(), Failure<'a>> {
    let plan = cx.plan;
    let listener = plan.process.seccomp.as_ref().is_some_and(|f| f.has_listener());
    if plan.process.no_new_privs && !listener {
        process::load_seccomp(&plan.process, cx.sync)?;
    }
    if let Some((_, created)) = cx.hook_state {
        super::hooks::run(&plan.hooks.start_container, created, &crate::hooks::START_CONTAINER)?;
    }
    Ok(())
}
