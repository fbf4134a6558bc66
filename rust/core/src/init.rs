//! The container's init, from the clone to the execve. This runs in the
//! fresh child of a possibly multi-threaded process: it makes syscalls on
//! data the plan built before the clone, and never touches the heap.

use crate::caps;
use crate::failure::Failure;
use crate::mounts::{create_target, errno, mount, remount};
use crate::plan::{Plan, ProcessPlan};
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
    match setup(cx) {
        Ok(exe) => {
            if let Some(a) = cx.at_once {
                a.reached_exec.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            unsafe { libc::execve(exe.as_ptr(), cx.argv, cx.envp) };
            let e = errno();
            sync::send_failure(cx.sync, &Failure::new("exec", exe, e));
            unsafe { libc::_exit(127) }
        }
        Err(f) => {
            sync::send_failure(cx.sync, &f);
            unsafe { libc::_exit(1) }
        }
    }
}

/// Joining a user namespace by path while making other namespaces: those
/// must be made from inside it, so that it owns them (else the init has no
/// right to mount in its own mount namespace). This first child joins the
/// namespaces, clones the init into the new ones as a child of the runtime
/// (CLONE_PARENT: the runtime waits for it as for any init), reports its
/// pid and exits.
pub fn run_joining_user_namespace(cx: &Context<'_>, new_namespaces: u64) -> ! {
    unsafe { libc::close(cx.parent_sync) };
    reset_signals();
    for (nstype, fd) in cx.join {
        if unsafe { libc::setns(*fd, *nstype) } != 0 {
            sync::send_failure(cx.sync, &Failure::bare("join namespace (setns)", errno()));
            unsafe { libc::_exit(1) };
        }
    }
    // The kernel refuses CLONE_NEWPID with CLONE_PARENT in one clone: the
    // namespaces come from unshare (pid: for the children), the clone only
    // makes the init.
    if unsafe { libc::unshare(new_namespaces as libc::c_int) } != 0 {
        sync::send_failure(cx.sync, &Failure::bare("make namespaces inside the joined user namespace (unshare)", errno()));
        unsafe { libc::_exit(1) };
    }
    // With CLONE_PARENT the exit signal is ours (SIGCHLD); clone3 wants 0 here.
    let flags = libc::CLONE_PARENT as u64;
    let mut args = crate::spawn::CloneArgs { flags, ..Default::default() };
    let mut pid = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut _, std::mem::size_of_val(&args)) };
    if pid < 0 && errno() == libc::ENOSYS {
        pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    }
    match pid {
        0 => {
            let joined = Context { join: &[], ..*cx };
            run(&joined)
        }
        p if p > 0 => {
            sync::send_pid(cx.sync, p as i32);
            unsafe { libc::_exit(0) }
        }
        _ => {
            sync::send_failure(cx.sync, &Failure::bare("clone the init inside the joined user namespace", errno()));
            unsafe { libc::_exit(1) }
        }
    }
}

pub(crate) fn check(r: libc::c_int, step: &'static str) -> Result<(), Failure<'static>> {
    if r < 0 { Err(Failure::bare(step, errno())) } else { Ok(()) }
}

pub(crate) fn check_at<'a>(r: libc::c_int, step: &'static str, path: &'a CStr) -> Result<(), Failure<'a>> {
    if r < 0 { Err(Failure::new(step, path, errno())) } else { Ok(()) }
}

/// Set up the container; returns the executable to exec once started.
fn setup<'a>(cx: &Context<'a>) -> Result<&'a CStr, Failure<'a>> {
    let plan = cx.plan;
    let p = &plan.process;
    unsafe { libc::close(cx.parent_sync) };
    reset_signals();
    if cx.at_once.is_none() && sync::recv(cx.sync) != Some(sync::GO) {
        unsafe { libc::_exit(1) };
    }
    join_cgroups(cx.join_cgroups)?;
    for (nstype, fd) in cx.join {
        check(unsafe { libc::setns(*fd, *nstype) }, "join namespace (setns)")?;
    }
    if plan.userns() {
        // Become the root of the user namespace (made with the maps the
        // parent wrote, or joined): files made from here on are its root's.
        check(setresgid(0), "setresgid to root of the user namespace (is container gid 0 mapped?)")?;
        check(setresuid(0), "setresuid to root of the user namespace (is container uid 0 mapped?)")?;
    }
    if cx.unshare_cgroupns {
        check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) }, "unshare cgroup namespace")?;
    }
    // Nothing of the caller's goes further than this: namespace and cgroup
    // fds are used, and no container path has been resolved yet.
    let (creating, started) = cx.hook_state.unzip();
    let fifo = cx.fifo.map(|f| [f.fd, f.proc_dir]).unwrap_or([-1, -1]);
    let keep = [cx.sync, cx.console.unwrap_or(-1), fifo[0], fifo[1], creating.unwrap_or(-1), started.unwrap_or(-1)];
    crate::isolation::close_all_except(3 + cx.preserve_fds, &keep);
    check(unsafe { libc::setsid() }, "setsid")?;

    setup_rootfs(plan)?;
    before_pivot(cx)?;
    enter_rootfs(plan)?;
    if let Some(persona) = plan.personality {
        check(unsafe { libc::personality(persona) }, "set personality")?;
    }

    if let Some(h) = &plan.hostname {
        check_at(unsafe { libc::sethostname(h.as_ptr(), h.to_bytes().len()) }, "set hostname", h)?;
    }
    if let Some(d) = &plan.domainname {
        check_at(unsafe { libc::setdomainname(d.as_ptr(), d.to_bytes().len()) }, "set domainname", d)?;
    }
    let exe = prepare_process(p, plan.userns(), cx.console, cx.preserve_fds)?;

    // From here on the container outlives the runtime that made it: stop
    // dying with it before saying READY, or its exit could race our prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
    if cx.at_once.is_some() {
        before_exec(cx)?;
        return Ok(exe);
    }
    if !sync::send(cx.sync, sync::READY) {
        unsafe { libc::_exit(1) };
    }
    match cx.fifo {
        Some(fifo) => {
            // Blocks until `start` opens the fifo for reading.
            let fd = unsafe { libc::openat(fifo.proc_dir, fifo.path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            check_at(fd, "open exec fifo", fifo.path)?;
            // `start` reads "0", or the reason the container could not start.
            match before_exec(cx) {
                Ok(()) => unsafe {
                    libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1);
                },
                Err(f) => {
                    let mut text = crate::failure::StackText::new();
                    let _ = std::fmt::Write::write_char(&mut text, 'E');
                    f.render(&mut text);
                    unsafe { libc::write(fd, text.as_bytes().as_ptr() as *const libc::c_void, text.as_bytes().len()) };
                    return Err(f);
                }
            }
        }
        None => {
            if sync::recv(cx.sync) != Some(sync::START) {
                unsafe { libc::_exit(1) };
            }
            before_exec(cx)?;
        }
    }
    Ok(exe)
}

/// Move this (single-threaded) process into its cgroups: "0" to each file.
pub(crate) fn join_cgroups(files: &[RawFd]) -> Result<(), Failure<'static>> {
    for fd in files {
        let r = unsafe { libc::write(*fd, b"0".as_ptr() as *const libc::c_void, 1) };
        check(r as libc::c_int, "join cgroup")?;
    }
    Ok(())
}

/// Python's handlers, ignored signals and blocked mask must not leak into
/// the container; and the child dies with the runtime until it is set up.
pub(crate) fn reset_signals() {
    unsafe {
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
}

/// The process's own setup, shared by a container's init and by exec, once
/// inside the container's namespaces and root: console, rlimits, cwd, the
/// executable, fds, user and capabilities. Returns the executable.
pub(crate) fn prepare_process(p: &ProcessPlan, userns: bool, console_sock: Option<RawFd>, preserve_fds: u32) -> Result<&CStr, Failure<'_>> {
    if let Some(sock) = console_sock {
        console(sock, p.console_size)?;
    }
    for (resource, soft, hard) in &p.rlimits {
        let lim = libc::rlimit { rlim_cur: *soft, rlim_max: *hard };
        if unsafe { libc::setrlimit(*resource as _, &lim) } != 0 {
            return Err(Failure::new("setrlimit", rlimit_name(*resource), errno()));
        }
    }
    // In a user namespace our /proc/self files belong to the host's root
    // (we are not dumpable, see isolation.rs): the parent writes it then.
    if let (Some(adj), false) = (p.oom_score_adj, userns) {
        write_number(c"/proc/self/oom_score_adj", adj as i64)?;
    }
    if let Some(mask) = p.umask {
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    check_at(unsafe { libc::chdir(p.cwd.as_ptr()) }, "chdir to cwd", &p.cwd)?;
    if !crate::isolation::cwd_is_inside_root() {
        return Err(Failure::verdict("chdir to cwd", &p.cwd, "the directory is outside the container's root (refused)"));
    }
    let exe = find_executable(p)?;
    crate::isolation::cloexec_from(3 + preserve_fds);
    set_identity(p, userns)?;
    if p.no_new_privs {
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, "set no_new_privs")?;
    }
    Ok(exe)
}

fn setup_rootfs(plan: &Plan) -> Result<(), Failure<'_>> {
    let root = &plan.rootfs;
    mount(std::ptr::null(), c"/", std::ptr::null(), plan.root_propagation, std::ptr::null())
        .map_err(|e| Failure::new("make / a slave mount", c"/", e))?;
    if let Some(ov) = &plan.overlay {
        crate::overlay::mount_root(ov, root)?;
    }
    mount(root.as_ptr(), root, std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null())
        .map_err(|e| Failure::new("bind-mount rootfs", root, e))?;
    for m in &plan.mounts {
        m.apply()?;
    }
    let userns = plan.userns();
    // mknod obeys the umask; the config's modes are meant exactly.
    let umask = unsafe { libc::umask(0) };
    for d in &plan.devices {
        if userns {
            // mknod is refused in a user namespace: bind the host's node instead.
            create_target(&d.target, true).map_err(|e| Failure::new("create device", &d.destination, e))?;
            mount(d.host.as_ptr(), &d.target, std::ptr::null(), libc::MS_BIND, std::ptr::null())
                .map_err(|e| Failure::new("bind-mount device", &d.destination, e))?;
        } else {
            let mut made = unsafe { libc::mknod(d.target.as_ptr(), d.mode, d.dev) };
            if made != 0 && errno() == libc::EEXIST {
                // Something is there already (a node from an earlier run): replace it.
                unsafe { libc::unlink(d.target.as_ptr()) };
                made = unsafe { libc::mknod(d.target.as_ptr(), d.mode, d.dev) };
            } else if made != 0 && errno() == libc::ENOENT {
                // A nested device (/dev/net/tun, /dev/dri/card0): its directories first
                // (create_target makes them and an empty file, which gives way to the node).
                create_target(&d.target, true).map_err(|e| Failure::new("create device", &d.destination, e))?;
                unsafe { libc::unlink(d.target.as_ptr()) };
                made = unsafe { libc::mknod(d.target.as_ptr(), d.mode, d.dev) };
            }
            check_at(made, "mknod", &d.destination)?;
            check_at(unsafe { libc::chown(d.target.as_ptr(), d.uid, d.gid) }, "chown device", &d.destination)?;
        }
    }
    unsafe { libc::umask(umask) };
    for (link, to) in &plan.dev_links {
        if unsafe { libc::symlink(to.as_ptr(), link.as_ptr()) } != 0 && errno() != libc::EEXIST {
            return Err(Failure::new("symlink", link, errno()));
        }
    }

    Ok(())
}

/// pivot_root (or MS_MOVE + chroot) into the rootfs, then what needs the
/// new root: sysctls, masked and read-only paths, a read-only root.
fn enter_rootfs(plan: &Plan) -> Result<(), Failure<'_>> {
    let root = &plan.rootfs;
    check_at(unsafe { libc::chdir(root.as_ptr()) }, "chdir to rootfs", root)?;
    if plan.no_pivot {
        mount(root.as_ptr(), c"/", std::ptr::null(), libc::MS_MOVE, std::ptr::null())
            .map_err(|e| Failure::new("move rootfs to /", root, e))?;
        check_at(unsafe { libc::chroot(c".".as_ptr()) }, "chroot", root)?;
    } else {
        let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } as libc::c_int;
        check_at(r, "pivot_root", root)?;
        // The old root is stacked on "."; detach it without telling the host.
        mount(std::ptr::null(), c".", std::ptr::null(), libc::MS_SLAVE | libc::MS_REC, std::ptr::null())
            .map_err(|e| Failure::new("make old root a slave", root, e))?;
        check_at(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) }, "unmount old root", root)?;
    }
    check(unsafe { libc::chdir(c"/".as_ptr()) }, "chdir to /")?;
    // A cwd the image lacks is made here, inside the container's root, before it may become read-only.
    make_dirs(&plan.process.cwd)?;
    if plan.rootfs_propagation != 0 {
        mount(std::ptr::null(), c"/", std::ptr::null(), plan.rootfs_propagation, std::ptr::null())
            .map_err(|e| Failure::new("set rootfsPropagation on", c"/", e))?;
    }
    // Before maskedPaths and readonlyPaths, which usually cover /proc/sys.
    crate::sysctl::apply(&plan.sysctls)?;
    // Directories are masked by one empty read-only tmpfs, bound on each
    // after the first: a superblock less per directory to make and tear down.
    let mut mask_dir: Option<&CStr> = None;
    for path in &plan.masked {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
            match errno() {
                libc::ENOENT => continue,
                e => return Err(Failure::new("mask path", path, e)),
            }
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let fresh = || mount(c"tmpfs".as_ptr(), path, c"tmpfs".as_ptr(), libc::MS_RDONLY, std::ptr::null());
        let r = match (is_dir, mask_dir) {
            (true, None) => fresh(),
            // The first may be gone under a later mask of its ancestor: then a tmpfs of its own.
            (true, Some(first)) => match mount(first.as_ptr(), path, std::ptr::null(), libc::MS_BIND, std::ptr::null()) {
                Err(libc::ENOENT) => fresh().map(|()| mask_dir = None),
                r => r,
            },
            (false, _) => mount(c"/dev/null".as_ptr(), path, std::ptr::null(), libc::MS_BIND, std::ptr::null()),
        };
        match r {
            Ok(()) if is_dir => mask_dir = mask_dir.or(Some(path)),
            Ok(()) => {}
            // No /dev/null in the container (no /dev mount): as runc, left as is.
            Err(libc::ENOENT) if !is_dir => {}
            Err(e) => return Err(Failure::new("mask path", path, e)),
        }
    }
    for path in &plan.readonly {
        match mount(path.as_ptr(), path, std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) {
            Err(libc::ENOENT) => continue,
            Err(e) => return Err(Failure::new("bind readonly path", path, e)),
            Ok(()) => remount(path, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC)
                .map_err(|e| Failure::new("remount readonly path", path, e))?,
        }
    }
    if plan.readonly_root {
        remount(c"/", libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY).map_err(|e| Failure::new("remount root read-only", c"/", e))?;
    }
    Ok(())
}

/// mkdir -p of an absolute, clean path (0755, the namespace's root's), resolved
/// in this process's root, without the heap: each prefix in a stack buffer.
fn make_dirs(path: &CStr) -> Result<(), Failure<'_>> {
    let bytes = path.to_bytes();
    let mut buf = [0u8; libc::PATH_MAX as usize];
    if bytes.len() >= buf.len() {
        return Err(Failure::new("create cwd", path, libc::ENAMETOOLONG));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    for end in (1..=bytes.len()).filter(|&i| i == bytes.len() || bytes[i] == b'/') {
        let saved = buf[end];
        buf[end] = 0;
        // SAFETY: buf holds a NUL-terminated prefix of the path.
        let r = unsafe { libc::mkdir(buf.as_ptr() as *const libc::c_char, 0o755) };
        buf[end] = saved;
        if r != 0 && errno() != libc::EEXIST {
            return Err(Failure::new("create cwd", path, errno()));
        }
    }
    Ok(())
}

/// A pty whose master goes to the console socket and whose slave becomes stdio.
fn console(sock: RawFd, size: Option<(u16, u16)>) -> Result<(), Failure<'static>> {
    let master = unsafe { libc::open(c"/dev/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    check_at(master, "open", c"/dev/ptmx")?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        check(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) }, "set the console size")?;
    }
    let unlock: libc::c_int = 0;
    check(unsafe { libc::ioctl(master, libc::TIOCSPTLCK, &unlock) }, "unlock pty")?;
    let slave = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    check(slave, "open pty peer")?;
    send_fd(sock, master)?;
    unsafe { libc::close(master) };
    for fd in 0..3 {
        check(unsafe { libc::dup2(slave, fd) }, "dup pty onto stdio")?;
    }
    if slave > 2 {
        unsafe { libc::close(slave) };
    }
    check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) }, "make pty the controlling terminal")?;
    Ok(())
}

/// sendmsg with SCM_RIGHTS, as runc's console socket protocol expects.
fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), Failure<'static>> {
    let name = b"/dev/ptmx";
    let mut iov = libc::iovec { iov_base: name.as_ptr() as *mut libc::c_void, iov_len: name.len() };
    let mut cmsg_buf = [0u64; 8];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
    }
    let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if r < 0 { Err(Failure::bare("send pty master to console socket", errno())) } else { Ok(()) }
}

fn find_executable(p: &ProcessPlan) -> Result<&CStr, Failure<'_>> {
    let mut last = libc::ENOENT;
    for c in &p.candidates {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::stat(c.as_ptr(), &mut st) } == 0 {
            if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0 {
                return Ok(c);
            }
            last = libc::EACCES;
        }
    }
    if p.arg0.to_bytes().contains(&b'/') {
        return Err(Failure::new("exec", &p.arg0, last));
    }
    Err(Failure { errno: libc::ENOENT, ..Failure::verdict("exec:", &p.arg0, "executable file not found in $PATH") })
}

/// Groups, gid, uid, then the capability sets: the order that keeps the
/// capabilities we need until the last step.
fn set_identity(p: &ProcessPlan, userns: bool) -> Result<(), Failure<'_>> {
    if let Some(c) = &p.caps {
        caps::drop_bounding(c.bounding, p.last_cap).map_err(|(cap, e)| Failure::new("drop from bounding set", caps::name(cap), e))?;
    }
    // Without no_new_privs, loading a filter takes CAP_SYS_ADMIN: load it
    // while the capabilities are still there (as runc does); with it, the
    // filter goes on last, right before execve.
    if !p.no_new_privs {
        load_seccomp(p)?;
    }
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) }, "keep capabilities")?;
    // setgroups is refused in a user namespace whose setgroups file says deny; an empty list is then moot.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr()) } as libc::c_int;
    if r != 0 && !(errno() == libc::EPERM && p.groups.is_empty() && userns) {
        return Err(Failure::bare("setgroups", errno()));
    }
    check(setresgid(p.gid), "setresgid")?;
    check(setresuid(p.uid), "setresuid")?;
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) }, "stop keeping capabilities")?;
    if let Some(c) = &p.caps {
        caps::set(c).map_err(|e| Failure::bare("capset", e))?;
        // The kernel raises only what is permitted and inheritable; runc
        // runs its own default spec (ambient, no inheritable) as if the
        // others were not asked for, and so do we.
        caps::raise_ambient(c.ambient & c.permitted & c.inheritable, p.last_cap).map_err(|(cap, e)| Failure::new("raise ambient capability", caps::name(cap), e))?;
    }
    Ok(())
}


// Raw syscalls, not glibc's wrappers: in a process that had threads, glibc
// broadcasts set*id calls to every thread it knows of (SIGSETXID) and waits
// for them; in our child those threads do not exist and the wait never ends.
fn setresuid(uid: u32) -> libc::c_int {
    unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) as libc::c_int }
}

fn setresgid(gid: u32) -> libc::c_int {
    unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) as libc::c_int }
}

fn rlimit_name(resource: u32) -> &'static CStr {
    static NAMES: [&CStr; 16] = [
        c"RLIMIT_CPU", c"RLIMIT_FSIZE", c"RLIMIT_DATA", c"RLIMIT_STACK", c"RLIMIT_CORE", c"RLIMIT_RSS",
        c"RLIMIT_NPROC", c"RLIMIT_NOFILE", c"RLIMIT_MEMLOCK", c"RLIMIT_AS", c"RLIMIT_LOCKS",
        c"RLIMIT_SIGPENDING", c"RLIMIT_MSGQUEUE", c"RLIMIT_NICE", c"RLIMIT_RTPRIO", c"RLIMIT_RTTIME",
    ];
    NAMES.get(resource as usize).copied().unwrap_or(c"RLIMIT")
}

/// Write a decimal number to a /proc file without the heap.
fn write_number(path: &'static CStr, n: i64) -> Result<(), Failure<'static>> {
    let mut buf = [0u8; 24];
    let mut text = crate::failure::StackText::new();
    let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{n}"));
    let len = text.as_bytes().len().min(buf.len());
    buf[..len].copy_from_slice(&text.as_bytes()[..len]);
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check_at(fd, "open", path)?;
    let r = unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, len) };
    unsafe { libc::close(fd) };
    if r < 0 { Err(Failure::new("write", path, errno())) } else { Ok(()) }
}

/// The container's mounts exist, pivot_root has not happened: the
/// runtime's prestart/createRuntime hooks, then createContainer.
fn before_pivot<'a>(cx: &Context<'a>) -> Result<(), Failure<'a>> {
    let plan = cx.plan;
    if plan.hooks.runtime_pause && (!sync::send(cx.sync, sync::HOOKS) || sync::recv(cx.sync) != Some(sync::RESUME)) {
        unsafe { libc::_exit(1) };
    }
    if let Some((creating, _)) = cx.hook_state {
        crate::hooks::run_in_init(&plan.hooks.create_container, creating, &crate::hooks::CREATE_CONTAINER)?;
    }
    Ok(())
}

/// Once started: the startContainer hooks, then (with no_new_privs) the
/// seccomp filter, the last thing before execve.
fn before_exec<'a>(cx: &Context<'a>) -> Result<(), Failure<'a>> {
    let plan = cx.plan;
    if let Some((_, created)) = cx.hook_state {
        crate::hooks::run_in_init(&plan.hooks.start_container, created, &crate::hooks::START_CONTAINER)?;
    }
    if plan.process.no_new_privs {
        load_seccomp(&plan.process)?;
    }
    Ok(())
}

/// The process's seccomp filter, if any (exec loads it too, after no_new_privs).
pub(crate) fn load_seccomp(p: &ProcessPlan) -> Result<(), Failure<'_>> {
    match &p.seccomp {
        Some(filter) => filter.load().map_err(|e| Failure::bare("load seccomp filter", e)),
        None => Ok(()),
    }
}
