//! What can be done to a running container through its cgroup: pause and
//! resume (the freezer), update (new limits), and a stats sample.

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::state::{State, Status};
use oci_spec::runtime::LinuxResources;
use serde::Serialize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn running(root: &Path, id: &str, what: &str) -> Result<(State, Status)> {
    let st = State::load(root, id)?;
    let status = st.status(root);
    if status == Status::Stopped {
        return Err(Error::msg(format!("cannot {what} container {id}: it is not running")));
    }
    Ok((st, status))
}

/// Freeze every process of a created or running container.
pub fn pause(root: &Path, id: &str) -> Result<()> {
    let (st, status) = running(root, id, "pause")?;
    if status == Status::Paused {
        return Err(Error::msg(format!("cannot pause container {id}: it is already paused")));
    }
    st.cgroup.freeze()
}

pub fn resume(root: &Path, id: &str) -> Result<()> {
    let (st, status) = running(root, id, "resume")?;
    if status != Status::Paused {
        return Err(Error::msg(format!("cannot resume container {id}: it is not paused")));
    }
    st.cgroup.thaw()
}

/// runtime-spec LinuxResources from JSON text (`update --resources FILE|-`).
pub fn parse_resources(text: &str, origin: &str) -> Result<LinuxResources> {
    serde_json::from_str(text).map_err(|e| Error::msg(format!("invalid resources in {origin}: {e}")))
}

pub fn update(root: &Path, id: &str, resources: &LinuxResources) -> Result<()> {
    let (st, _) = running(root, id, "update")?;
    st.cgroup.update(resources)
}

/// One event line of `runc events`: `{"type":"stats","id":..,"data":{..}}`
/// or `{"type":"oom","id":..}`, keys in runc's order (types.Event), which
/// tests and tools match as text. `to_string()` gives the JSON line.
#[derive(Debug, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

impl Event {
    pub fn oom(id: &str) -> Event {
        Event { kind: "oom", id: id.to_string(), data: None }
    }
}

/// One `{"type":"stats","id":..,"data":{..}}` event, as runc's `events --stats` prints it.
pub fn stats(root: &Path, id: &str) -> Result<Event> {
    let (st, _) = running(root, id, "read stats of")?;
    Ok(Event { kind: "stats", id: id.to_string(), data: Some(st.cgroup.stats()) })
}

/// `runc events` without --stats: a stats event every `interval` (the first
/// at once), an oom event whenever the kernel's OOM killer acts in the
/// container's cgroup, until the container stops (or its cgroup goes).
/// Each event is handed to `emit` as one JSON line.
pub fn events(root: &Path, id: &str, interval: Duration, emit: &mut dyn FnMut(&str)) -> Result<()> {
    let (st, _) = running(root, id, "watch events of")?;
    // Without a memory controller there is nothing to watch for OOMs; stats still flow.
    let mut watch = OomWatch::new(&st.cgroup).ok();
    let interval = interval.max(Duration::from_millis(1));
    let stopped = || State::load(root, id).map_or(true, |s| s.status(root) == Status::Stopped);
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next {
            match stats(root, id) {
                Ok(e) => emit(&e.to_string()),
                Err(e) => return if stopped() { Ok(()) } else { Err(e) },
            }
            next += interval;
            if next < now {
                next = now + interval;
            }
            continue;
        }
        // Wake at the next sample, or within a second to notice a stop.
        let timeout = (next - now).min(Duration::from_secs(1));
        let wake = match watch.as_mut() {
            Some(w) => w.wait(timeout)?,
            None => {
                std::thread::sleep(timeout);
                Wake::Timeout
            }
        };
        match wake {
            Wake::Oom => emit(&Event::oom(id).to_string()),
            Wake::Gone => return Ok(()),
            Wake::Timeout => {
                if stopped() {
                    return Ok(());
                }
            }
        }
    }
}

/// What `OomWatch::wait` saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The OOM killer acted in the cgroup (once per wake, however many kills).
    Oom,
    /// The cgroup was removed (v1) or has no process left (v2).
    Gone,
    /// Nothing happened before the timeout.
    Timeout,
}

/// OOM notifications of a container's cgroup, as runc's NotifyOOM: on v1
/// an eventfd registered through cgroup.event_control on
/// memory.oom_control; on v2 inotify on memory.events (oom_kill going up)
/// and cgroup.events (populated 0).
pub struct OomWatch {
    fd: OwnedFd,
    /// v1: the memory.oom_control file, open while the eventfd is registered.
    _oom_control: Option<std::fs::File>,
    dir: PathBuf,
    v2: Option<V2Watch>,
}

struct V2Watch {
    events_wd: i32,
    cgroup_wd: i32,
    oom_kills: u64,
}

fn last_os_error(what: &str, path: &Path) -> Error {
    Error::io(what, path, std::io::Error::last_os_error())
}

fn oom_kills(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn raw_fd(fd: i32, what: &str, path: &Path) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(last_os_error(what, path));
    }
    // SAFETY: fd was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl OomWatch {
    pub fn new(cg: &Cgroup) -> Result<OomWatch> {
        let v1 = cg.dirs.iter().find(|d| d.join("memory.oom_control").exists() && d.join("cgroup.event_control").exists());
        if let Some(dir) = v1 {
            let control = dir.join("memory.oom_control");
            let file = std::fs::File::open(&control).map_err(|e| Error::io("open", &control, e))?;
            // SAFETY: eventfd takes no pointers.
            let fd = raw_fd(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }, "eventfd for", &control)?;
            let line = format!("{} {}", fd.as_raw_fd(), file.as_raw_fd());
            super_write(dir, "cgroup.event_control", &line)?;
            return Ok(OomWatch { fd, _oom_control: Some(file), dir: dir.clone(), v2: None });
        }
        let dir = cg
            .dirs
            .iter()
            .find(|d| d.join("memory.events").exists() && d.join("cgroup.events").exists())
            .ok_or_else(|| Error::msg(format!("cgroup {} has no memory controller to watch for OOM events", cg.path)))?;
        // SAFETY: inotify_init1 takes no pointers.
        let fd = raw_fd(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) }, "inotify for", dir)?;
        let add = |file: &str| -> Result<i32> {
            let path = dir.join(file);
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::msg("path with a NUL byte"))?;
            // SAFETY: c is a valid NUL-terminated path for the duration of the call.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
            if wd < 0 {
                Err(last_os_error("inotify watch", &path))
            } else {
                Ok(wd)
            }
        };
        let events_wd = add("memory.events")?;
        let cgroup_wd = add("cgroup.events")?;
        let v2 = V2Watch { events_wd, cgroup_wd, oom_kills: oom_kills(dir) };
        Ok(OomWatch { fd, _oom_control: None, dir: dir.clone(), v2: Some(v2) })
    }

    /// The descriptor that turns readable on an event, for a caller's own poll loop
    /// (then call `wait(Duration::ZERO)`).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Wait up to `timeout` for an OOM or the cgroup's end.
    pub fn wait(&mut self, timeout: Duration) -> Result<Wake> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(Wake::Timeout);
            }
            return Err(Error::io("poll", &self.dir, e));
        }
        if n == 0 {
            return Ok(Wake::Timeout);
        }
        let mut buf = [0u8; 4096];
        // SAFETY: buf is writable for its length.
        let len = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if len < 0 {
            return Ok(Wake::Timeout);
        }
        let Some(v2) = self.v2.as_mut() else {
            // v1: the eventfd also fires when the cgroup is removed.
            return Ok(if self.dir.join("cgroup.event_control").exists() { Wake::Oom } else { Wake::Gone });
        };
        let (mut events, mut cgroup) = (false, false);
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut off = 0usize;
        while off + header <= len as usize {
            // SAFETY: a whole inotify_event header lies at buf[off..]; read unaligned.
            let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
            events |= ev.wd == v2.events_wd;
            cgroup |= ev.wd == v2.cgroup_wd;
            off += header + ev.len as usize;
        }
        if events {
            let now = oom_kills(&self.dir);
            if now > v2.oom_kills {
                v2.oom_kills = now;
                return Ok(Wake::Oom);
            }
        }
        if cgroup || !self.dir.exists() {
            let populated =
                std::fs::read_to_string(self.dir.join("cgroup.events")).ok().is_some_and(|t| t.lines().any(|l| l == "populated 1"));
            if !populated {
                return Ok(Wake::Gone);
            }
        }
        Ok(Wake::Timeout)
    }
}

fn super_write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| Error::io(&format!("write {value:?} to"), &path, e))
}
