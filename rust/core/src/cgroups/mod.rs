//! cgroups: which kind of host this is (v1, v2 or hybrid), where a
//! container's cgroup lives in each hierarchy, and its life: create, limit,
//! attach, list, remove. The per-version file formats are in `v1` and `v2`.

pub mod devices;
pub mod freezer;
pub mod stats;
pub mod update;
pub mod v1;
pub mod v2;

use crate::error::{Error, Result};
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub const ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only v1 controller hierarchies.
    V1,
    /// v1 controllers plus a cgroup2 mount at `unified/` without controllers.
    Hybrid,
    /// One cgroup2 hierarchy at the root.
    V2,
}

/// What kind of cgroup host this is, from the filesystem mounted at /sys/fs/cgroup.
pub fn detect() -> Mode {
    match nix::sys::statfs::statfs(ROOT) {
        Ok(s) if s.filesystem_type().0 == CGROUP2_SUPER_MAGIC => Mode::V2,
        _ => match nix::sys::statfs::statfs(&Path::new(ROOT).join("unified")) {
            Ok(s) if s.filesystem_type().0 == CGROUP2_SUPER_MAGIC => Mode::Hybrid,
            _ => Mode::V1,
        },
    }
}

/// A v1 hierarchy: where it is mounted and which controllers it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub mountpoint: PathBuf,
    pub controllers: Vec<String>,
}

/// The v1 hierarchies from a mountinfo text (named ones such as name=systemd included).
pub fn v1_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mut r = right.split_whitespace();
        if r.next() != Some("cgroup") {
            continue;
        }
        let super_opts = r.nth(1).unwrap_or("");
        let Some(mp) = left.split_whitespace().nth(4) else { continue };
        let controllers: Vec<String> = super_opts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro" | "xattr" | "noprefix" | "clone_children") && !o.starts_with("release_agent"))
            .map(str::to_string)
            .collect();
        if controllers.is_empty() || out.iter().any(|h| h.mountpoint == Path::new(mp)) {
            continue;
        }
        out.push(Hierarchy { mountpoint: PathBuf::from(mp), controllers });
    }
    out
}

/// The cgroup path a config asks for: `linux.cgroupsPath`, or `/capsa/<id>`.
/// A relative path is taken from the root of each hierarchy, as an absolute one is.
pub fn resolve_path(cgroups_path: Option<&Path>, id: &str, systemd: bool) -> Result<String> {
    if systemd {
        return Err(Error::msg("--systemd-cgroup is not supported by capsa-runtime: use cgroupfs paths"));
    }
    let raw = match cgroups_path {
        Some(p) if !p.as_os_str().is_empty() => p.to_string_lossy().into_owned(),
        _ => format!("/capsa/{id}"),
    };
    if raw.contains(':') && !raw.starts_with('/') {
        return Err(Error::msg(format!(
            "cgroupsPath {raw} looks like a systemd slice:prefix:name path; capsa-runtime manages cgroupfs paths only"
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(Error::msg(format!("cgroupsPath {raw} names the root cgroup")));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Write one cgroup file, naming the value and the path on failure.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| Error::io(&format!("write {value:?} to"), &path, e))
}

/// A container's cgroup as it exists on disk, kept in the container state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cgroup {
    pub path: String,
    /// The leaf directory in every hierarchy the container joined.
    pub dirs: Vec<PathBuf>,
    /// The leaves this container created (not ones it found): removed on delete.
    pub created: Vec<PathBuf>,
    /// Pure v2: the one leaf, for CLONE_INTO_CGROUP.
    #[serde(default)]
    pub unified: bool,
    /// The processes create found in a cgroup that existed already (runc
    /// warns, and runs the container anyway): see `non_empty_warning`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub procs_found: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The directories under `dir` (not `dir` itself), the deepest first.
fn descendants(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let sub = e.path();
            out.extend(descendants(&sub));
            out.push(sub);
        }
    }
    out
}

fn procs_of(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs")).map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect()).unwrap_or_default()
}

impl Cgroup {
    /// Create the cgroup in every hierarchy and write the limits. On failure, nothing is left.
    pub fn create(mode: Mode, path: &str, resources: Option<&LinuxResources>) -> Result<Cgroup> {
        let mut cg = Cgroup { path: path.to_string(), unified: mode == Mode::V2, ..Default::default() };
        // runc's ErrV1NoUnified: linux.resources.unified names cgroup2 files.
        if mode != Mode::V2 && resources.and_then(|r| r.unified().as_ref()).is_some_and(|u| !u.is_empty()) {
            return Err(Error::msg("invalid configuration: cannot use unified on cgroup v1"));
        }
        let result = match mode {
            Mode::V2 => v2::create(&mut cg, Path::new(ROOT), resources),
            Mode::V1 | Mode::Hybrid => {
                let mountinfo =
                    std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
                let hierarchies = v1_hierarchies(&mountinfo);
                v1::create(&mut cg, &hierarchies, resources).and_then(|_| {
                    if mode == Mode::Hybrid {
                        // The unified hierarchy has no controllers here; joining it keeps
                        // /proc/self/cgroup's 0:: line truthful for tools that read it.
                        cg.mkdir_all(&Path::new(ROOT).join("unified")).map(drop)
                    } else {
                        Ok(())
                    }
                })
            }
        };
        let result = result.and_then(|_| devices::apply(&cg, mode, resources)).and_then(|_| {
            if cg.is_frozen() {
                return Err(Error::msg(format!(
                    "container's cgroup unexpectedly frozen: cgroup {path} is frozen, a container cannot start in it (thaw it first)"
                )));
            }
            // A cgroup that was there already may hold processes: counted for the warning.
            if cg.dirs.iter().any(|d| !cg.created.contains(d)) {
                cg.procs_found = cg.pids().len();
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove();
                Err(e)
            }
        }
    }

    /// mkdir -p of this cgroup's path under `root`; the directories it made,
    /// parents first. Only a new leaf is the container's to remove: parents
    /// stay, as with runc, for the next container (making them again would
    /// cost a mkdir and an rmdir in every hierarchy per container).
    pub(crate) fn mkdir_all(&mut self, root: &Path) -> Result<Vec<PathBuf>> {
        let leaf = root.join(self.path.trim_start_matches('/'));
        let mut made = Vec::new();
        // The leaf alone first: its parents exist but for the first container.
        match std::fs::create_dir(&leaf) {
            Ok(()) => made.push(leaf.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut dir = root.to_path_buf();
                for part in self.path.trim_start_matches('/').split('/') {
                    dir.push(part);
                    match std::fs::create_dir(&dir) {
                        Ok(()) => made.push(dir.clone()),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir != leaf => {}
                        Err(e) => return Err(Error::io("create cgroup", &dir, e)),
                    }
                }
            }
            Err(e) => return Err(Error::io("create cgroup", &leaf, e)),
        }
        if made.last() == Some(&leaf) {
            self.created.push(leaf.clone());
        }
        self.dirs.push(leaf);
        Ok(made)
    }

    /// The cgroup2 leaf a child can be cloned straight into
    /// (CLONE_INTO_CGROUP): pure v2's one leaf, or a hybrid host's leaf in
    /// the unified hierarchy.
    fn cgroup2_leaf(&self) -> Option<&PathBuf> {
        if self.unified {
            return self.dirs.first();
        }
        let unified = Path::new(ROOT).join("unified");
        self.dirs.iter().find(|d| d.starts_with(&unified))
    }

    /// An fd on the cgroup2 leaf for clone3's CLONE_INTO_CGROUP.
    pub fn clone_into_fd(&self) -> Option<OwnedFd> {
        let dir = self.cgroup2_leaf()?;
        nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
    }

    /// With `cloned_into`, CLONE_INTO_CGROUP put the child in the cgroup2 leaf already.
    fn dirs_to_join(&self, cloned_into: bool) -> impl Iterator<Item = &PathBuf> {
        let leaf = if cloned_into { self.cgroup2_leaf() } else { None };
        self.dirs.iter().filter(move |d| Some(*d) != leaf)
    }

    /// The files through which a new, single-threaded process moves itself
    /// in by writing "0", open for writing: v1's `tasks`, since a thread
    /// that moves itself there skips the global cgroup_threadgroup_rwsem,
    /// whose first writer waits for an RCU grace period (6-15 ms on this
    /// kind of host, for cgroup.procs or any other pid); cgroup.procs on v2.
    pub fn self_join_files(&self, cloned_into: bool) -> Result<Vec<OwnedFd>> {
        let open =
            |file: &Path| nix::fcntl::open(file, nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty());
        self.dirs_to_join(cloned_into)
            .map(|dir| match open(&dir.join("tasks")) {
                Err(nix::errno::Errno::ENOENT) => {
                    let procs = dir.join("cgroup.procs");
                    open(&procs).map_err(|e| Error::sys("open", &procs, e))
                }
                opened => opened.map_err(|e| Error::sys("open", dir.join("tasks"), e)),
            })
            .collect()
    }

    /// Move another process in, where CLONE_INTO_CGROUP did not put it.
    pub fn attach_after_clone(&self, pid: i32, cloned_into: bool) -> Result<()> {
        let text = pid.to_string();
        for dir in self.dirs_to_join(cloned_into) {
            let file = dir.join("cgroup.procs");
            std::fs::write(&file, &text).map_err(|e| Error::io("join cgroup", &file, e))?;
        }
        Ok(())
    }

    /// runc's warning for a container created in a cgroup that already held
    /// processes (`container's cgroup is not empty: N process(es) found`), if so.
    pub fn non_empty_warning(&self) -> Option<String> {
        (self.procs_found > 0).then(|| format!("container's cgroup is not empty: {} process(es) found", self.procs_found))
    }

    /// The pids in the cgroup now, those in sub-cgroups the container made
    /// included (runc's GetAllPids). One hierarchy tells: every process is
    /// in every hierarchy, and one moved into a sub-cgroup of another is
    /// still in this leaf or below it.
    pub fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs.first() else { return Vec::new() };
        let mut pids = procs_of(dir);
        for sub in descendants(dir) {
            pids.extend(procs_of(&sub).into_iter().filter(|p| !pids.contains(p)).collect::<Vec<_>>());
        }
        pids
    }

    /// Remove the leaves create made (and the parents that state files of
    /// earlier versions list). Directories still in use (EBUSY, ENOTEMPTY)
    /// are left: they belong to someone else too.
    /// A leaf with sub-cgroups made inside the container (it may own its
    /// cgroup namespace) refuses with EBUSY: then those go, deepest first,
    /// their processes killed, as runc's RemovePaths does.
    pub fn remove(&self) -> Vec<(PathBuf, std::io::Error)> {
        let mut failed = Vec::new();
        for dir in self.created.iter().rev() {
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // A just-killed task may still be leaving the cgroup, or
                    // the leaf has sub-cgroups (walked only then: most have none).
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 && self.dirs.contains(dir) => {
                        if tries == 0 {
                            descendants(dir).iter().for_each(|sub| remove_sub(sub));
                        }
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    Err(e) => {
                        if !matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) || self.dirs.contains(dir) {
                            failed.push((dir.clone(), e));
                        }
                        break;
                    }
                }
            }
        }
        failed
    }
}

/// Remove a sub-cgroup of a container's leaf, killing what is left in it.
fn remove_sub(dir: &Path) {
    for attempt in 0..500 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // A frozen v1 sub-cgroup would keep its killed tasks: thaw it.
                if attempt == 0 && dir.join("freezer.state").exists() {
                    let _ = write(dir, "freezer.state", "THAWED");
                }
                for pid in procs_of(dir) {
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_explicit_paths() {
        assert_eq!(resolve_path(None, "abc", false).unwrap(), "/capsa/abc");
        assert_eq!(resolve_path(Some(Path::new("/a/b/")), "x", false).unwrap(), "/a/b");
        assert_eq!(resolve_path(Some(Path::new("rel/c")), "x", false).unwrap(), "/rel/c");
        assert_eq!(resolve_path(Some(Path::new("/a/../../b")), "x", false).unwrap(), "/b");
        assert!(resolve_path(Some(Path::new("/")), "x", false).is_err());
        assert!(resolve_path(Some(Path::new("system.slice:capsa:x")), "x", false).is_err());
        assert!(resolve_path(None, "x", true).unwrap_err().message.contains("systemd"));
    }

    #[test]
    fn hierarchies_from_mountinfo() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let h = v1_hierarchies(mi);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(h[1].mountpoint, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(h[2].controllers.contains(&"name=systemd".to_string()));
    }
}
