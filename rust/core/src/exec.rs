//! exec: start another process inside a running container. The parent
//! opens the init's namespaces and root, and clones the child straight into
//! the container's pid namespace (and on cgroup v2 into its cgroup; on v1
//! it writes the pid into each hierarchy). The child joins the other
//! namespaces (user first, mount last), takes the init's root, and then runs
//! the same process setup as a container's init (child/process.rs).

use crate::child::exec as child_exec;
use crate::container::load_spec;
use crate::error::{Error, Result};
use crate::plan::process_plan;
use crate::spawn::{self, open_path};
use crate::state::{State, Status};
use crate::sync::{self, Heard};
use nix::fcntl::OFlag;
use oci_spec::runtime::Process;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The namespaces a process can join, user first and mount last: setns into
/// the others needs the capabilities the user namespace gives, and the
/// mount namespace changes what paths mean.
const NAMESPACES: [(&str, i32, &CStr); 8] = [
    ("user", libc::CLONE_NEWUSER, c"user"),
    ("ipc", libc::CLONE_NEWIPC, c"ipc"),
    ("uts", libc::CLONE_NEWUTS, c"uts"),
    ("net", libc::CLONE_NEWNET, c"net"),
    ("pid", libc::CLONE_NEWPID, c"pid"),
    ("cgroup", libc::CLONE_NEWCGROUP, c"cgroup"),
    ("time", libc::CLONE_NEWTIME, c"time"),
    ("mnt", libc::CLONE_NEWNS, c"mnt"),
];

#[derive(Default)]
pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    /// A terminal without a console socket: the runtime keeps the pty master
    /// (for a foreground `exec -t`, see tty.rs). Otherwise that is an error.
    pub relay_terminal: bool,
    /// Exec into a paused container too (the process starts frozen, runs once resumed).
    pub ignore_paused: bool,
    /// runc's `--cgroup [CONTROLLERS:]PATH`: sub-cgroups of the container's to
    /// join instead (all hierarchies, or those of the controllers named).
    pub sub_cgroups: Vec<String>,
}

/// A started process; `terminal` is its pty master when the runtime relays it.
pub struct Started {
    pub pid: i32,
    pub terminal: Option<OwnedFd>,
}

/// runc's `exec ID ARGS...` form: the container's own process with these changes.
#[derive(Default, Debug)]
pub struct Overrides {
    pub args: Vec<String>,
    /// NAME=VALUE, appended to the container's environment.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// UID[:GID]
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    /// Added to the bounding, effective and permitted sets.
    pub caps: Vec<String>,
    pub no_new_privs: Option<bool>,
    pub tty: bool,
}

/// A runtime-spec process from JSON text (runc's `--process` file).
/// As runc, a process without `user` runs as uid 0, gid 0.
pub fn parse_process(text: &str, origin: &str) -> Result<Process> {
    let invalid = |e: serde_json::Error| Error::msg(format!("invalid process in {origin}: {e}"));
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
    if let Some(p) = value.as_object_mut() {
        p.entry("user").or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
    }
    serde_json::from_value(value).map_err(invalid)
}

/// What to run: a whole runtime-spec process, or runc's `exec ID ARGS...`
/// form (the container's own process with overrides).
pub enum ToRun {
    Process(Box<Process>),
    Overrides(Overrides),
}

impl ToRun {
    /// A runtime-spec process from JSON text or a file (runc's `--process`),
    /// else the container's own process with `overrides`.
    pub fn load(process_json: Option<&str>, process_file: Option<&Path>, overrides: Overrides) -> Result<ToRun> {
        match (process_json, process_file) {
            (Some(text), _) => Ok(ToRun::Process(Box::new(parse_process(text, "the process argument")?))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io("read process file", path, e))?;
                Ok(ToRun::Process(Box::new(parse_process(&text, &path.display().to_string())?)))
            }
            (None, None) => Ok(ToRun::Overrides(overrides)),
        }
    }
}

/// `base` (the container's process) with the overrides applied, as runc does.
pub fn apply_overrides(base: &Process, o: &Overrides) -> Result<Process> {
    if o.args.is_empty() {
        return Err(Error::msg("exec needs a command to run (or --process FILE)"));
    }
    let mut p = serde_json::to_value(base).map_err(|e| Error::msg(format!("encode process: {e}")))?;
    p["args"] = o.args.clone().into();
    if let Some(cwd) = &o.cwd {
        p["cwd"] = cwd.clone().into();
    }
    let env = p["env"].as_array().cloned().unwrap_or_default();
    p["env"] = env.into_iter().chain(o.env.iter().map(|e| e.clone().into())).collect();
    p["terminal"] = o.tty.into();
    if let Some(nnp) = o.no_new_privs {
        p["noNewPrivileges"] = nnp.into();
    }
    if let Some(user) = &o.user {
        let (uid, gid) = user.split_once(':').map_or((user.as_str(), None), |(u, g)| (u, Some(g)));
        let number = |s: &str| s.parse::<u32>().map_err(|_| Error::msg(format!("--user takes UID[:GID] as numbers, not {user:?}")));
        p["user"]["uid"] = number(uid)?.into();
        if let Some(g) = gid {
            p["user"]["gid"] = number(g)?.into();
        }
    }
    if !o.additional_gids.is_empty() {
        let mut gids = p["user"]["additionalGids"].as_array().cloned().unwrap_or_default();
        gids.extend(o.additional_gids.iter().map(|g| (*g).into()));
        p["user"]["additionalGids"] = gids.into();
    }
    for cap in &o.caps {
        let name = if cap.to_ascii_uppercase().starts_with("CAP_") {
            cap.to_ascii_uppercase()
        } else {
            format!("CAP_{}", cap.to_ascii_uppercase())
        };
        for set in ["bounding", "effective", "permitted"] {
            let caps = &mut p["capabilities"][set];
            if !caps.is_array() {
                *caps = serde_json::Value::Array(Vec::new());
            }
            if let Some(list) = caps.as_array_mut() {
                list.push(name.clone().into());
            }
        }
    }
    serde_json::from_value(p).map_err(|e| Error::msg(format!("exec process: {e}")))
}

/// Start `process` in container `id`; returns its pid once it has exec'd
/// (or the reason it could not, e.g. `exec: "x": executable file not found in $PATH`).
pub fn exec(root: &Path, id: &str, to_run: &ToRun, opts: &ExecOptions) -> Result<Started> {
    let st = State::load(root, id)?;
    match st.status(root) {
        Status::Stopped => return Err(Error::msg(format!("cannot exec in container {id}: it is stopped"))),
        Status::Paused if !opts.ignore_paused => {
            return Err(Error::msg(format!("cannot exec in a paused container ({id}): resume it first, or --ignore-paused")))
        }
        _ => {}
    }
    // The container's config (seccomp and the like apply to exec'd processes too), with this process.
    let mut spec = load_spec(&st.bundle)?;
    let process = match to_run {
        ToRun::Process(p) => (**p).clone(),
        ToRun::Overrides(o) => apply_overrides(&spec.process().clone().unwrap_or_default(), o)?,
    };
    spec.set_process(Some(process));
    let mut plan = process_plan(&spec)?;
    let personality = match spec.linux() {
        Some(linux) => crate::plan::personality(linux)?,
        None => None,
    };

    // Namespaces that differ from ours: the init's, opened before the clone.
    let mut join: Vec<(i32, OwnedFd, &'static CStr)> = Vec::new();
    let mut pid_ns: Option<OwnedFd> = None;
    for (name, nstype, cname) in NAMESPACES {
        let theirs = PathBuf::from(format!("/proc/{}/ns/{name}", st.pid));
        let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
        let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else { continue };
        if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
            continue;
        }
        let fd = open_path(&theirs, OFlag::O_RDONLY, "namespace")?;
        if nstype == libc::CLONE_NEWPID {
            pid_ns = Some(fd);
        } else {
            join.push((nstype, fd, cname));
        }
    }
    let root_fd = open_path(Path::new(&format!("/proc/{}/root", st.pid)), OFlag::O_PATH | OFlag::O_DIRECTORY, "container root")?;
    // The pid could have been reused between the state check and the opens.
    if !st.alive() {
        return Err(Error::msg(format!("cannot exec in container {id}: it is stopped")));
    }
    let join_raw: Vec<(i32, RawFd, &'static CStr)> = join.iter().map(|(t, fd, n)| (*t, fd.as_raw_fd(), *n)).collect();

    let (console, relay_end) = match plan.terminal {
        true => crate::tty::console(opts.console_socket.as_deref(), opts.relay_terminal).map(|(c, r)| (Some(c), r))?,
        false => (None, None),
    };
    if relay_end.is_some() {
        // The pty starts at our terminal's size, before the process can ask.
        plan.console_size = crate::tty::window_size().or(plan.console_size);
    }

    let argv: Vec<*const libc::c_char> = plan.args.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp: Vec<*const libc::c_char> = plan.env.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let (parent_sock, child_sock) = sync::pair()?;
    // As for the init (spawn.rs): the cgroup2 leaf by the clone, the rest by
    // the child itself, before it joins the container's namespaces.
    let cgroup = sub_cgroup(&st.cgroup, &opts.sub_cgroups)?;
    let cgroup_fd = cgroup.clone_into_fd();
    let join_files = cgroup.self_join_files(cgroup_fd.is_some()).map_err(|e| {
        let missing = e.cause.as_ref().filter(|c| c.errno == libc::ENOENT).map(|c| c.path.clone());
        match missing {
            Some(path) => e.context(format!("adding pid to cgroups: {path}: no such file or directory")),
            None => e,
        }
    })?;
    let join_files_raw: Vec<RawFd> = join_files.iter().map(|fd| fd.as_raw_fd()).collect();
    let cx = child_exec::Context {
        join_cgroups: &join_files_raw,
        process: &plan,
        sync: child_sock.as_raw_fd(),
        parent_sync: parent_sock.as_raw_fd(),
        join: &join_raw,
        root: root_fd.as_raw_fd(),
        personality,
        userns: join.iter().any(|(t, _, _)| *t == libc::CLONE_NEWUSER),
        console: console.as_ref().map(|c| c.as_raw_fd()),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        preserve_fds: opts.preserve_fds,
    };

    // Born non-dumpable: our binary stays out of the container's reach (isolation.rs).
    crate::debug::log(|| format!("nsexec container setup: cloning into container {id}'s namespaces"));
    let non_dumpable = crate::child::isolation::NonDumpable::hold();
    let pid = spawn::with_pid_namespace(pid_ns.as_ref(), || spawn::clone(0, cgroup_fd.as_ref()), |pid| *pid == 0)?;
    if pid == 0 {
        child_exec::run(&cx);
    }
    drop(non_dumpable);
    drop(child_sock);
    crate::debug::log(|| format!("child process in init(): pid {}, joining the container", pid.unsigned_abs()));
    let (pid, attached) = spawn::pid_and_attached(pid, cgroup_fd.is_some());

    let finish = || -> Result<()> {
        if cgroup_fd.is_some() && !attached {
            // A clone3 without CLONE_INTO_CGROUP (an old kernel): all of them.
            cgroup.attach_after_clone(pid, false)?;
        }
        if let (Some(adj), true) = (plan.oom_score_adj, cx.userns) {
            let path = format!("/proc/{pid}/oom_score_adj");
            std::fs::write(&path, adj.to_string()).map_err(|e| Error::io("write", &path, e))?;
        }
        sync::tell(&parent_sock, sync::GO)?;
        loop {
            match sync::hear(&parent_sock)? {
                Heard::Kind(crate::seccomp::agent::LISTENER) => {
                    crate::seccomp::agent::forward(&parent_sock, plan.seccomp.as_ref(), pid, None)?;
                }
                Heard::Closed => return Ok(()), // close-on-exec: the process runs
                Heard::Failed(e) => return Err(e),
                other => return Err(Error::msg(format!("unexpected message {other:?} from exec child"))),
            }
        }
    };
    let finished = finish();
    if finished.is_ok() {
        crate::debug::log(|| format!("setns_init: about to exec (pid {pid} exec'd)"));
    }
    if let Err(e) = finished {
        // Not reaped yet, so the pid is still our child's.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        spawn::reap(pid);
        return Err(e);
    }
    let terminal = relay_end.as_ref().map(crate::tty::receive_master).transpose();
    let written = opts.pid_file.as_ref().map(|f| write_pid_file(f, pid)).transpose();
    match (terminal, written) {
        (Ok(terminal), Ok(_)) => Ok(Started { pid, terminal }),
        (Err(e), _) | (_, Err(e)) => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            spawn::reap(pid);
            Err(e)
        }
    }
}

/// The container's cgroup with `--cgroup` specs applied: `PATH` goes under
/// its leaf in every hierarchy, `CONTROLLERS:PATH` in those hierarchies only
/// (v1). PATH must stay below the leaf.
fn sub_cgroup(base: &crate::cgroups::Cgroup, specs: &[String]) -> Result<crate::cgroups::Cgroup> {
    let mut cg = base.clone();
    for spec in specs {
        let (controllers, path) = match spec.split_once(':') {
            Some((c, p)) => (Some(c), p),
            None => (None, spec.as_str()),
        };
        let sub = Path::new(path.trim_start_matches('/'));
        if sub.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)) {
            return Err(Error::msg(format!("exec --cgroup: {path} is not a sub cgroup path")));
        }
        let hierarchy = |dir: &Path| -> Vec<String> {
            let rel = dir.strip_prefix(crate::cgroups::ROOT).unwrap_or(dir);
            let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
            std::fs::canonicalize(Path::new(crate::cgroups::ROOT).join(&first))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or(first)
                .split(',')
                .map(str::to_string)
                .collect()
        };
        let wanted: Option<Vec<&str>> = controllers.map(|c| c.split(',').collect());
        if let Some(names) = &wanted {
            let known: Vec<String> = base.dirs.iter().flat_map(|d| hierarchy(d)).collect();
            if let Some(unknown) = names.iter().find(|n| !known.iter().any(|k| k == *n)) {
                return Err(Error::msg(format!("exec --cgroup: unknown controller {unknown}")));
            }
        }
        for (dir, original) in cg.dirs.iter_mut().zip(&base.dirs) {
            let matches = match &wanted {
                None => true,
                Some(names) => hierarchy(original).iter().any(|h| names.contains(&h.as_str())),
            };
            if matches {
                *dir = original.join(sub);
            }
        }
    }
    Ok(cg)
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("capsa-tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Process {
        parse_process(
            r#"{"args":["sleep","1"],"cwd":"/","env":["PATH=/bin","A=1"],"user":{"uid":0,"gid":0},
                "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]},
                "noNewPrivileges":true,"terminal":true}"#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn overrides_as_runc_applies_them() {
        let o = Overrides {
            args: vec!["sh".into(), "-c".into(), "id".into()],
            env: vec!["B=2".into()],
            cwd: Some("/tmp".into()),
            user: Some("1000:100".into()),
            additional_gids: vec![5],
            caps: vec!["net_admin".into()],
            no_new_privs: None,
            tty: false,
        };
        let p = apply_overrides(&base(), &o).unwrap();
        assert_eq!(p.args().as_deref().unwrap(), ["sh", "-c", "id"]);
        assert_eq!(p.env().as_deref().unwrap(), ["PATH=/bin", "A=1", "B=2"]);
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 100));
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[5][..]));
        assert_eq!(p.capabilities().as_ref().unwrap().effective().as_ref().unwrap().len(), 2);
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.terminal(), Some(false), "a terminal only when asked for");
    }

    #[test]
    fn bad_overrides() {
        let no_args = Overrides::default();
        assert!(apply_overrides(&base(), &no_args).unwrap_err().message.contains("command"));
        let bad_user = Overrides { args: vec!["x".into()], user: Some("bob".into()), ..Default::default() };
        assert!(apply_overrides(&base(), &bad_user).unwrap_err().message.contains("UID"));
        let bad_cap = Overrides { args: vec!["x".into()], caps: vec!["CAP_NOPE".into()], ..Default::default() };
        assert!(apply_overrides(&base(), &bad_cap).is_err());
    }
}
