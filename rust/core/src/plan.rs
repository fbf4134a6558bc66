//! config.json into a plan: every path, string, flag and number the child
//! will need, built before the clone so that the child only makes syscalls.

use crate::caps::{self, CapSets};
use crate::cgroups::{self, Cgroup, Mode};
use crate::error::{Error, Result};
use crate::mounts::{cstring, parse_options, propagation, MountOp, Options};
use crate::rootpath::RootResolver;
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, PosixRlimitType, Spec};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A device node to create (or, in a user namespace, bind from the host).
#[derive(Debug)]
pub struct DeviceOp {
    pub target: CString,
    pub destination: CString,
    pub host: CString,
    pub mode: u32,
    pub dev: u64,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug)]
pub struct ProcessPlan {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// Where args[0] may be, in PATH order; the child takes the first that exists.
    pub candidates: Vec<CString>,
    pub arg0: CString,
    pub cwd: CString,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub umask: Option<u32>,
    pub caps: Option<CapSets>,
    pub last_cap: u32,
    pub rlimits: Vec<(u32, u64, u64)>,
    pub no_new_privs: bool,
    pub terminal: bool,
    /// process.consoleSize as (rows, columns), set on the pty.
    pub console_size: Option<(u16, u16)>,
    pub oom_score_adj: Option<i32>,
    /// The container's linux.seccomp, compiled (exec'd processes get it too).
    pub seccomp: Option<crate::seccomp::Filter>,
}

#[derive(Debug)]
pub struct Plan {
    pub rootfs: CString,
    /// A copy-on-write root the child mounts on `rootfs` first.
    pub overlay: Option<crate::overlay::OverlayPlan>,
    pub rootfs_path: PathBuf,
    pub readonly_root: bool,
    pub no_pivot: bool,
    /// Propagation set on "/" right after unsharing the mount namespace.
    pub root_propagation: u64,
    /// config's rootfsPropagation, applied to the new root after pivot_root.
    pub rootfs_propagation: u64,
    /// CLONE_NEW* flags of the namespaces to create.
    pub new_namespaces: u64,
    /// Namespaces to join: (CLONE_NEW* type, path).
    pub join: Vec<(i32, PathBuf)>,
    pub uid_map: Option<String>,
    pub gid_map: Option<String>,
    pub hostname: Option<CString>,
    pub domainname: Option<CString>,
    pub mounts: Vec<MountOp>,
    /// Index into `mounts` and options of `cgroup` mounts, expanded once the cgroup exists.
    cgroup_mounts: Vec<(usize, Options)>,
    pub devices: Vec<DeviceOp>,
    pub dev_links: Vec<(CString, CString)>,
    pub masked: Vec<CString>,
    pub readonly: Vec<CString>,
    /// A procfs is mounted on the container's /proc: the init reaches its
    /// own fds through it (isolation.rs: no host /proc is kept).
    pub proc_mounted: bool,
    /// The config mounts /dev read-only: it is mounted writable, and
    /// remounted read-only with these flags once the root is set up.
    pub dev_readonly: Option<u64>,
    /// With --no-pivot: the host's full proc and sysfs mounts outside the
    /// rootfs, which the child unmounts before its MS_MOVE (runc's msMoveRoot).
    pub host_pseudo_mounts: Vec<CString>,
    pub process: ProcessPlan,
    pub sysctls: Vec<crate::sysctl::Sysctl>,
    /// personality(2) persona for linux.personality.
    pub personality: Option<libc::c_ulong>,
    pub hooks: crate::hooks::InitHooks,
}

impl Plan {
    /// `overlay`: the copy-on-write root the child mounts on the rootfs dir
    /// (`capsa run`); config paths are then resolved through its layers.
    pub fn new(spec: &Spec, bundle: &Path, no_pivot: bool, overlay: Option<&crate::overlay::Overlay>) -> Result<Plan> {
        let root = spec.root().as_ref().ok_or_else(|| Error::msg("config.json has no root"))?;
        let rootfs_path = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
        match std::fs::metadata(&rootfs_path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::msg(format!("rootfs {} is not a directory", rootfs_path.display()))),
            Err(e) => return Err(Error::io("rootfs", &rootfs_path, e)),
        }
        let rootfs_path = rootfs_path.canonicalize().map_err(|e| Error::io("resolve rootfs", &rootfs_path, e))?;
        let linux = spec.linux().clone().unwrap_or_default();

        let mut new_namespaces = 0u64;
        let mut join = Vec::new();
        for ns in linux.namespaces().iter().flatten() {
            let flag = match ns.typ() {
                LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
                LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
                LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
                LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
                LinuxNamespaceType::User => libc::CLONE_NEWUSER,
                LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
                LinuxNamespaceType::Network => libc::CLONE_NEWNET,
                LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
            };
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => join.push((flag, p.clone())),
                _ => new_namespaces |= flag as u64,
            }
        }
        if new_namespaces & libc::CLONE_NEWNS as u64 == 0 && !join.iter().any(|(t, _)| *t == libc::CLONE_NEWNS) {
            return Err(Error::msg("config.json must give the container a mount namespace"));
        }
        let userns = has(new_namespaces, &join, libc::CLONE_NEWUSER);
        let id_map = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Option<String> {
            let maps = maps.as_ref()?;
            (!maps.is_empty()).then(|| maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect())
        };
        let (uid_map, gid_map) = if new_namespaces & libc::CLONE_NEWUSER as u64 != 0 {
            let (u, g) = (id_map(linux.uid_mappings()), id_map(linux.gid_mappings()));
            if u.is_none() || g.is_none() {
                return Err(Error::msg("a new user namespace needs linux.uidMappings and linux.gidMappings"));
            }
            (u, g)
        } else {
            (None, None)
        };

        let hostname = spec.hostname().as_ref().filter(|h| !h.is_empty()).map(|h| cstring(h));
        let domainname = spec.domainname().as_ref().filter(|h| !h.is_empty()).map(|h| cstring(h));
        if (hostname.is_some() || domainname.is_some()) && !has(new_namespaces, &join, libc::CLONE_NEWUTS) {
            return Err(Error::msg("config.json sets a hostname but gives the container no UTS namespace"));
        }

        let overlay_plan = overlay.map(|ov| ov.plan(&ov.upper.parent().unwrap_or(Path::new("/")).join("lower-links"))).transpose()?;
        let resolver = match overlay {
            None => RootResolver::new(&rootfs_path).map_err(|e| Error::sys("open rootfs", &rootfs_path, e))?,
            Some(ov) => {
                let layers: Vec<&Path> = std::iter::once(ov.upper.as_path()).chain(ov.lower.iter().rev().map(PathBuf::as_path)).collect();
                RootResolver::layered(&rootfs_path, &layers).map_err(|e| Error::sys("open the overlay's layers for", &rootfs_path, e))?
            }
        };
        let resolver = std::cell::RefCell::new(resolver);
        let inside = |dest: &Path| -> Result<CString> {
            let resolved = resolver.borrow_mut().resolve(dest).map_err(|e| Error::sys("resolve in rootfs", dest, e))?;
            Ok(cstring(&resolved.to_string_lossy()))
        };
        let mut mounts = Vec::new();
        let mut cgroup_mounts = Vec::new();
        let mut dev_is_tmpfs = false;
        let mut proc_mounted = false;
        let mut dev_readonly = None;
        for m in spec.mounts().iter().flatten() {
            let dest = m.destination();
            if !dest.is_absolute() {
                return Err(Error::msg(format!("mount destination {} is not absolute", dest.display())));
            }
            let options = parse_options(m.options().as_deref().unwrap_or(&[]));
            let fstype = m.typ().as_deref().unwrap_or("none");
            let mut source = m.source().as_ref().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let bind = options.flags & libc::MS_BIND != 0 || fstype == "bind";
            let options = if fstype == "bind" && options.flags & libc::MS_BIND == 0 {
                Options { flags: options.flags | libc::MS_BIND, ..options }
            } else {
                options
            };
            if bind && !source.starts_with('/') {
                source = bundle.join(&source).to_string_lossy().into_owned();
            }
            if bind && std::fs::symlink_metadata(&source).is_err() {
                return Err(Error::msg(format!("bind mount source {source} for {} does not exist", dest.display())));
            }
            if dest == Path::new("/dev") && !bind {
                dev_is_tmpfs = true;
            }
            if lexically_clean(dest) == Path::new("/proc") {
                proc_mounted = fstype == "proc" && !bind;
            }
            // As runc: a proc or sysfs goes on a real directory, never through a
            // link the image planted (a /proc pointing elsewhere would leave the
            // masked paths and the container's own /proc behind).
            if (fstype == "proc" || fstype == "sysfs") && !bind && overlay.is_none() {
                let on = rootfs_path.join(lexically_clean(dest).strip_prefix("/").unwrap_or(Path::new("")));
                if let Ok(meta) = std::fs::symlink_metadata(&on) {
                    if !meta.is_dir() {
                        return Err(Error::msg(format!(
                            "filesystem \"{fstype}\" must be mounted on ordinary directory: {} is not one",
                            dest.display()
                        )));
                    }
                }
            }
            // A read-only /dev is made writable first (devpts, devices and links
            // go in it) and remounted read-only at the end, as runc's finalizeRootfs.
            let options = if lexically_clean(dest) == Path::new("/dev") && !bind && options.flags & libc::MS_RDONLY != 0 {
                dev_readonly = Some(options.flags & !libc::MS_RDONLY);
                Options { flags: options.flags & !libc::MS_RDONLY, ..options }
            } else {
                options
            };
            let dest_text = dest.to_string_lossy();
            let target = inside(dest)?;
            if fstype == "tmpfs" && !bind {
                let resolved = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
                resolver.borrow_mut().empty_at(dest, resolved);
            } else {
                resolver.borrow_mut().covered(dest);
            }
            let mut op = MountOp::new(&source, target, &dest_text, fstype, &options);
            if fstype == "sysfs" && userns && !has(new_namespaces, &join, libc::CLONE_NEWNET) {
                op.fallback_bind = Some(cstring("/sys"));
            }
            if fstype == "cgroup" {
                cgroup_mounts.push((mounts.len(), options));
            }
            mounts.push(op);
        }

        let mut devices = Vec::new();
        let mut dev_links = Vec::new();
        if dev_is_tmpfs {
            for (name, major, minor) in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
            {
                let dest = format!("/dev/{name}");
                devices.push(DeviceOp {
                    target: inside(Path::new(&dest))?,
                    host: cstring(&dest),
                    destination: cstring(&dest),
                    mode: libc::S_IFCHR | 0o666,
                    dev: libc::makedev(major, minor),
                    uid: 0,
                    gid: 0,
                });
            }
            for (link, to) in [
                ("/dev/fd", "/proc/self/fd"),
                ("/dev/stdin", "/proc/self/fd/0"),
                ("/dev/stdout", "/proc/self/fd/1"),
                ("/dev/stderr", "/proc/self/fd/2"),
                ("/dev/ptmx", "pts/ptmx"),
            ] {
                dev_links.push((inside(Path::new(link))?, cstring(to)));
            }
        }
        for d in linux.devices().iter().flatten() {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
                LinuxDeviceType::B => libc::S_IFBLK,
                LinuxDeviceType::P => libc::S_IFIFO,
                LinuxDeviceType::A => {
                    return Err(Error::msg(format!("device {} has type a, which is only for cgroup rules", d.path().display())))
                }
            };
            let dest = d.path().to_string_lossy().into_owned();
            devices.retain(|x| x.destination.to_bytes() != dest.as_bytes());
            devices.push(DeviceOp {
                target: inside(d.path())?,
                host: cstring(&dest),
                destination: cstring(&dest),
                mode: kind | (d.file_mode().unwrap_or(0o666) & 0o7777),
                dev: libc::makedev(d.major() as u32, d.minor() as u32),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            });
        }

        if linux.intel_rdt().is_some() {
            return Err(Error::msg("linux.intelRdt is not supported by capsa-runtime (no resctrl support)"));
        }
        let sysctl_ns = crate::sysctl::Namespaces {
            ipc: new_namespaces & libc::CLONE_NEWIPC as u64 != 0,
            uts: new_namespaces & libc::CLONE_NEWUTS as u64 != 0,
            net: has(new_namespaces, &join, libc::CLONE_NEWNET),
        };
        let sysctls = crate::sysctl::plan(linux.sysctl().as_ref(), &sysctl_ns)?;
        let personality = personality(&linux)?;
        crate::hooks::validate(spec.hooks().as_ref())?;

        let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
            None | Some("") => 0,
            Some(p) => propagation(p).ok_or_else(|| Error::msg(format!("unknown rootfsPropagation {p}")))?,
        };

        let host_pseudo_mounts = if no_pivot { host_pseudo_mounts(&rootfs_path) } else { Vec::new() };
        Ok(Plan {
            rootfs: cstring(&rootfs_path.to_string_lossy()),
            overlay: overlay_plan,
            rootfs_path,
            readonly_root: root.readonly().unwrap_or(false),
            no_pivot,
            root_propagation: libc::MS_SLAVE | libc::MS_REC,
            rootfs_propagation,
            new_namespaces,
            join,
            uid_map,
            gid_map,
            hostname,
            domainname,
            mounts,
            cgroup_mounts,
            devices,
            dev_links,
            masked: linux.masked_paths().iter().flatten().map(|p| cstring(p)).collect(),
            readonly: linux.readonly_paths().iter().flatten().map(|p| cstring(p)).collect(),
            proc_mounted,
            dev_readonly,
            host_pseudo_mounts,
            process: process_plan(spec)?,
            sysctls,
            personality,
            hooks: crate::hooks::InitHooks::new(spec.hooks().as_ref()),
        })
    }

    pub fn userns(&self) -> bool {
        has(self.new_namespaces, &self.join, libc::CLONE_NEWUSER)
    }

    /// The new namespaces a spare could be (spares.rs): network and IPC,
    /// unless a user namespace must own them.
    pub fn spare_kinds(&self) -> i32 {
        if self.userns() {
            return 0;
        }
        crate::spares::KINDS.iter().map(|(k, _)| *k).filter(|k| self.new_namespaces & *k as u64 != 0).fold(0, |a, k| a | k)
    }

    pub fn new_cgroupns(&self) -> bool {
        self.new_namespaces & libc::CLONE_NEWCGROUP as u64 != 0
    }

    /// A `cgroup` mount shows the container its own cgroup: cgroup2 itself
    /// with a cgroup namespace on v2, else a tmpfs with a read-only bind of
    /// the container's directory per hierarchy (as runc does on v1).
    pub fn expand_cgroup_mounts(&mut self, cg: &Cgroup, mode: Mode) {
        for (index, options) in std::mem::take(&mut self.cgroup_mounts).into_iter().rev() {
            let op = &self.mounts[index];
            let target = op.target.to_string_lossy().into_owned();
            let dest = op.destination.to_string_lossy().into_owned();
            let ro = options.flags & libc::MS_RDONLY;
            let mut ops = Vec::new();
            if mode == Mode::V2 && self.new_cgroupns() {
                ops.push(MountOp::new("cgroup2", op.target.clone(), &dest, "cgroup2", &options));
            } else if mode == Mode::V2 {
                let bind = Options { flags: options.flags | libc::MS_BIND, ..Default::default() };
                ops.push(MountOp::new(&cg.dirs[0].to_string_lossy(), op.target.clone(), &dest, "bind", &bind));
            } else {
                let base = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                let tmpfs = Options { flags: base, data: "mode=755".into(), ..Default::default() };
                ops.push(MountOp::new("tmpfs", op.target.clone(), &dest, "tmpfs", &tmpfs));
                for dir in &cg.dirs {
                    let Ok(rel) = dir.strip_prefix(cgroups::ROOT) else { continue };
                    let Some(name) = rel.components().next() else { continue };
                    let name = name.as_os_str().to_string_lossy();
                    let bind = Options { flags: libc::MS_BIND | base | ro, ..Default::default() };
                    ops.push(MountOp::new(
                        &dir.to_string_lossy(),
                        cstring(&format!("{target}/{name}")),
                        &format!("{dest}/{name}"),
                        "bind",
                        &bind,
                    ));
                }
                if ro != 0 {
                    let remount = Options { flags: libc::MS_REMOUNT | base | ro, data: "mode=755".into(), ..Default::default() };
                    ops.push(MountOp::new("tmpfs", op.target.clone(), &dest, "tmpfs", &remount));
                }
            }
            self.mounts.splice(index..=index, ops);
        }
    }
}

/// Full (root "/") proc and sysfs mounts of this mount namespace outside `rootfs`, from mountinfo.
fn host_pseudo_mounts(rootfs: &Path) -> Vec<CString> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let rootfs = rootfs.to_string_lossy();
    let mut found = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let fstype = right.split(' ').next().unwrap_or("");
        if fields.len() < 5 || fields[3] != "/" || (fstype != "proc" && fstype != "sysfs") {
            continue;
        }
        let mountpoint = unescape_mountinfo(fields[4]);
        if mountpoint.starts_with(&*rootfs) {
            continue;
        }
        found.push(cstring(&mountpoint));
    }
    found
}

/// mountinfo's octal escapes (`\040` for a space) undone.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn has(new: u64, join: &[(i32, PathBuf)], flag: i32) -> bool {
    new & flag as u64 != 0 || join.iter().any(|(t, _)| *t == flag)
}

/// linux.personality as a personality(2) persona (the init's and every exec'd process's).
pub fn personality(linux: &oci_spec::runtime::Linux) -> Result<Option<libc::c_ulong>> {
    let Some(p) = linux.personality() else { return Ok(None) };
    if let Some(flag) = p.flags().iter().flatten().next() {
        return Err(Error::msg(format!("linux.personality flag {flag} is not supported")));
    }
    Ok(Some(match p.domain() {
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux => 0x0000,   // PER_LINUX
        oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008, // PER_LINUX32
    }))
}

pub fn process_plan(spec: &Spec) -> Result<ProcessPlan> {
    let p = spec.process().as_ref().ok_or_else(|| Error::msg("config.json has no process"))?;
    let args: Vec<String> = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::msg("config.json process.args must not be empty"));
    }
    if !p.cwd().is_absolute() {
        return Err(Error::msg(format!("process.cwd {} must be an absolute path", p.cwd().display())));
    }
    let env: Vec<String> = p.env().clone().unwrap_or_default();
    let path = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    let candidates = exec_candidates(&args[0], path);

    let caps = match p.capabilities() {
        None => None,
        Some(c) => {
            let set = |s: &Option<oci_spec::runtime::Capabilities>| -> Result<u64> {
                let names: Vec<String> = s
                    .iter()
                    .flatten()
                    .map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
                    .collect();
                caps::mask(names.iter().map(String::as_str))
            };
            Some(CapSets {
                bounding: set(c.bounding())?,
                effective: set(c.effective())?,
                permitted: set(c.permitted())?,
                inheritable: set(c.inheritable())?,
                ambient: set(c.ambient())?,
            })
        }
    };
    let mut rlimits = Vec::new();
    for r in p.rlimits().iter().flatten() {
        rlimits.push((rlimit_resource(r.typ()), r.soft(), r.hard()));
    }
    let user = p.user();
    Ok(ProcessPlan {
        arg0: cstring(&args[0]),
        args: args.iter().map(|a| cstring(a)).collect(),
        env: env.iter().map(|e| cstring(e)).collect(),
        candidates: candidates.iter().map(|c| cstring(c)).collect(),
        cwd: cstring(&lexically_clean(p.cwd()).to_string_lossy()),
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        caps,
        last_cap: caps::last_cap(),
        rlimits,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().map(|b| (b.height().min(u16::MAX as u64) as u16, b.width().min(u16::MAX as u64) as u16)),
        oom_score_adj: p.oom_score_adj(),
        seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()).map(crate::seccomp::compile_cached).transpose()?,
    })
}

/// An absolute path with `.`, `..` and repeated slashes taken out, as if
/// resolved at "/" (where `..` stays): `/../../tmp/./x` is `/tmp/x`.
pub fn lexically_clean(path: &Path) -> PathBuf {
    let mut clean = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(part) => clean.push(part),
            std::path::Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    clean
}

/// Where `arg0` may be found: itself when it has a slash, else each PATH entry.
pub fn exec_candidates(arg0: &str, path: &str) -> Vec<String> {
    if arg0.contains('/') {
        return vec![arg0.to_string()];
    }
    path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{}/{arg0}", d.trim_end_matches('/'))).collect()
}

fn rlimit_resource(t: PosixRlimitType) -> u32 {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: &str) -> (PathBuf, Spec) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("capsa-plan-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs/etc")).unwrap();
        let spec: Spec = serde_json::from_str(config).unwrap();
        (dir, spec)
    }

    const BASE: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs","readonly":true},
        "process":{"args":["sh","-c","true"],"cwd":"/","user":{"uid":1000,"gid":1000,"additionalGids":[10]},
          "env":["PATH=/bin:/usr/bin"],"capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]},
          "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":512}]},
        "hostname":"box",
        "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                  {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]},
                  {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro","nosuid"]}],
        "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"network","path":"/proc/1/ns/net"}],
                 "maskedPaths":["/proc/kcore"],"readonlyPaths":["/proc/sys"]}}"#;

    #[test]
    fn translates_a_config() {
        let (dir, spec) = bundle(BASE);
        let plan = Plan::new(&spec, &dir, false, None).unwrap();
        assert!(plan.readonly_root);
        assert_eq!(plan.new_namespaces, (libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS) as u64);
        assert_eq!(plan.join, vec![(libc::CLONE_NEWNET, PathBuf::from("/proc/1/ns/net"))]);
        assert_eq!(plan.hostname.as_deref(), Some(c"box"));
        assert_eq!(plan.mounts.len(), 3);
        assert!(plan.mounts[1].target.to_str().unwrap().ends_with("rootfs/dev"));
        assert_eq!(plan.devices.len(), 6);
        let p = &plan.process;
        assert_eq!(p.candidates, vec![c"/bin/sh".to_owned(), c"/usr/bin/sh".to_owned()]);
        assert_eq!((p.uid, p.gid, p.groups.clone()), (1000, 1000, vec![10]));
        assert_eq!(p.caps.unwrap().bounding, 1 << 5);
        assert_eq!(p.rlimits, vec![(libc::RLIMIT_NOFILE, 512, 1024)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cgroup_mount_on_v1_binds_each_hierarchy() {
        let (dir, spec) = bundle(BASE);
        let mut plan = Plan::new(&spec, &dir, false, None).unwrap();
        let cg = Cgroup {
            path: "/capsa/x".into(),
            dirs: vec!["/sys/fs/cgroup/memory/capsa/x".into(), "/sys/fs/cgroup/pids/capsa/x".into()],
            ..Default::default()
        };
        plan.expand_cgroup_mounts(&cg, Mode::V1);
        let kinds: Vec<_> = plan.mounts.iter().map(|m| m.destination.to_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["/proc", "/dev", "/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"]);
        assert!(plan.mounts[3].remount.unwrap() & libc::MS_RDONLY != 0);
        assert!(plan.mounts[5].flags & libc::MS_REMOUNT != 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rejects_bad_configs() {
        let (dir, spec) = bundle(&BASE.replace(r#"["sh","-c","true"]"#, "[]"));
        assert!(Plan::new(&spec, &dir, false, None).unwrap_err().message.contains("args"));
        let (dir2, spec) = bundle(&BASE.replace(r#""path":"rootfs""#, r#""path":"nope""#));
        assert!(Plan::new(&spec, &dir2, false, None).unwrap_err().message.contains("nope"));
        let (dir3, spec) = bundle(&BASE.replace(r#"{"type":"uts"},"#, ""));
        assert!(Plan::new(&spec, &dir3, false, None).unwrap_err().message.contains("UTS"));
        for d in [dir, dir2, dir3] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn candidates_follow_path() {
        assert_eq!(exec_candidates("/bin/x", "/a"), vec!["/bin/x"]);
        assert_eq!(exec_candidates("x", "/a/:/b::"), vec!["/a/x", "/b/x"]);
    }
}
