//! A container's state on disk: `<root>/<id>/state.json`, written
//! atomically, and the status derived from the live system (a recorded pid
//! is only trusted while its start time still matches).

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const OCI_VERSION: &str = "1.2.0";
pub const EXEC_FIFO: &str = "exec.fifo";
const STATE_FILE: &str = "state.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// /proc/<pid>/stat starttime, so a reused pid is never mistaken for ours.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroup: Cgroup,
    /// Set from the first save in create until create has finished: a
    /// runtime killed meanwhile leaves this, and `delete --force` cleans it.
    #[serde(default)]
    pub creating: bool,
    /// The config has hooks: delete reads it again for poststop (states
    /// written before this field existed say yes, to be safe).
    #[serde(default = "yes")]
    pub hooks: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// runc's rule for ids: letters, digits and `_+-.`, not `.` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::msg(format!("invalid container id {id:?}: use letters, digits and _+-.")))
    }
}

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Remove a container's state dir: state.json and the dir itself, or
/// whatever else is in it (an exec fifo, a temp file) the long way.
pub fn remove_dir(root: &Path, id: &str) -> Result<()> {
    let d = dir(root, id);
    let _ = std::fs::remove_file(d.join(STATE_FILE));
    match std::fs::remove_dir(&d) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::remove_dir_all(&d).map_err(|e| Error::io("remove state dir", &d, e)),
    }
}

impl State {
    pub fn load(root: &Path, id: &str) -> Result<State> {
        validate_id(id)?;
        let path = dir(root, id).join(STATE_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if dir(root, id).exists() {
                    return Err(Error::msg(format!("container {id} is still being created")));
                }
                return Err(Error::msg(format!("container {id} does not exist")));
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        serde_json::from_slice(&text).map_err(|e| Error::msg(format!("corrupt state file {}: {e}", path.display())))
    }

    /// Write state.json through a temp file and a rename: readers see the old or the new.
    pub fn save(&self, root: &Path) -> Result<()> {
        let d = dir(root, &self.id);
        let tmp = d.join(".state.json.tmp");
        let text = serde_json::to_vec(self).map_err(|e| Error::msg(format!("encode state: {e}")))?;
        std::fs::write(&tmp, text).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, d.join(STATE_FILE)).map_err(|e| Error::io("rename", &tmp, e))
    }

    pub fn alive(&self) -> bool {
        self.pid > 0 && process_start(self.pid) == Some(self.pid_start)
    }

    pub fn status(&self, root: &Path) -> Status {
        // A create under way, or killed half-way: "creating" while its init lives.
        if self.creating {
            return if self.alive() { Status::Creating } else { Status::Stopped };
        }
        if !self.alive() {
            Status::Stopped
        } else if self.cgroup.frozen() {
            Status::Paused
        } else if dir(root, &self.id).join(EXEC_FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// The runtime-spec state, plus runc's rootfs, created and owner, as runc's `state` and `list --format json` print it, with
    /// its keys in runc's order (a `serde_json::Value` would sort them):
    /// `serde_json::to_string(&st.oci_state(status))`.
    pub fn oci_state(&self, status: Status) -> OciState<'_> {
        OciState {
            oci_version: OCI_VERSION,
            id: &self.id,
            pid: if status == Status::Stopped { 0 } else { self.pid },
            status: status.as_str(),
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            annotations: &self.annotations,
            owner: &self.owner,
        }
    }
}

/// runc's containerState (list.go), field for field and in its order;
/// annotations are left out when there are none, as Go's omitempty does.
#[derive(Debug, Serialize)]
pub struct OciState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
    pub owner: &'a str,
}

impl std::fmt::Display for OciState<'_> {
    /// Compact JSON, keys in runc's order.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

/// `list --format json`: the states as one JSON array, keys in runc's order.
pub fn list_json(all: &[(State, Status)]) -> String {
    let items: Vec<OciState<'_>> = all.iter().map(|(st, status)| st.oci_state(*status)).collect();
    serde_json::to_string(&items).unwrap_or_else(|_| "[]".into())
}

/// `state`: the state pretty-printed (two spaces, as runc's MarshalIndent), keys in runc's order.
pub fn pretty_json(st: &State, status: Status) -> String {
    serde_json::to_string_pretty(&st.oci_state(status)).unwrap_or_default()
}

/// Now, in the unit and clock of /proc/<pid>/stat's start time: clock
/// ticks since boot (CLOCK_BOOTTIME, which a time namespace shifts alike).
pub fn boot_ticks() -> u64 {
    static NS_PER_TICK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let per_tick = *NS_PER_TICK.get_or_init(|| 1_000_000_000 / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64));
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64) / per_tick
}

/// The start time of a live (not zombie) process, from /proc/<pid>/stat.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

fn parse_start(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Now as RFC 3339 with nanoseconds, UTC, as runc writes `created`.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", tod / 3600, tod / 60 % 60, tod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stat_parsing() {
        let s = "123 (a) b) c) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start(s), Some(98765));
        let z = "123 (x) Z 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start(z), None);
        assert!(process_start(std::process::id() as i32).is_some());
        // A child's start time is read between two boot_ticks around its fork.
        let before = boot_ticks();
        let mut child = std::process::Command::new("sleep").arg("1").spawn().unwrap();
        let after = boot_ticks();
        let start = process_start(child.id() as i32).unwrap();
        assert!(before <= start && start <= after, "{before} <= {start} <= {after}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn json_keys_in_runcs_order() {
        let st = State {
            id: "c1".into(),
            pid: 42,
            pid_start: 0,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00.000000000Z".into(),
            owner: "root".into(),
            annotations: HashMap::new(),
            cgroup: Cgroup::default(),
            creating: false,
            hooks: false,
        };
        assert_eq!(
            st.oci_state(Status::Running).to_string(),
            r#"{"ociVersion":"1.2.0","id":"c1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2026-01-01T00:00:00.000000000Z","owner":"root"}"#
        );
        let mut with = st.clone();
        with.annotations.insert("k".into(), "v".into());
        let text = list_json(&[(with, Status::Stopped)]);
        assert!(text.starts_with(r#"[{"ociVersion":"1.2.0","id":"c1","pid":0,"status":"stopped","#), "{text}");
        assert!(text.ends_with(r#""annotations":{"k":"v"},"owner":"root"}]"#), "{text}");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_795_824_000, 5), "2026-11-28T00:00:00.000000005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
    }
}
