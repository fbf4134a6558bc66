//! Pausing a container: the v1 freezer (freezer.state) or v2's
//! cgroup.freeze, and waiting until the kernel says every task is frozen.

use super::Cgroup;
use crate::error::{Error, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a freeze may take before it is given up (and undone).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

enum Freezer<'a> {
    /// A directory in the v1 freezer hierarchy.
    V1(&'a Path),
    /// A cgroup2 directory: cgroup.freeze is a core file, no controller needed.
    V2(&'a Path),
}

impl Cgroup {
    fn freezer(&self) -> Option<Freezer<'_>> {
        // On hybrid hosts the v1 freezer is the one runc uses too.
        let v1 = self.dirs.iter().find(|d| d.join("freezer.state").exists()).map(|d| Freezer::V1(d));
        v1.or_else(|| self.dirs.iter().find(|d| d.join("cgroup.freeze").exists()).map(|d| Freezer::V2(d)))
    }

    /// A process put in a frozen cgroup stops at once: a start would never
    /// end (the runtime waits for the init in an unkillable vfork), so
    /// create refuses such a cgroup, as runc does.
    pub fn is_frozen(&self) -> bool {
        match self.freezer() {
            Some(Freezer::V1(dir)) => read(dir, "freezer.state").is_ok_and(|s| s != "THAWED"),
            // cgroup.events says whether an ancestor's freeze holds this one too.
            Some(Freezer::V2(dir)) => {
                std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|e| e.lines().any(|l| l == "frozen 1"))
                    || read(dir, "cgroup.freeze").is_ok_and(|s| s == "1")
            }
            None => false,
        }
    }

    /// Freeze every process in the cgroup; returns once they all are.
    pub fn freeze(&self) -> Result<()> {
        match self.freezer() {
            Some(Freezer::V1(dir)) => {
                let deadline = Instant::now() + FREEZE_TIMEOUT;
                let mut tries = 0u32;
                loop {
                    // A task stuck in an uninterruptible sleep can hold a freeze in
                    // FREEZING; thawing and freezing again now and then lets it through.
                    if tries > 0 && tries.is_multiple_of(200) {
                        super::write(dir, "freezer.state", "THAWED")?;
                    }
                    super::write(dir, "freezer.state", "FROZEN")?;
                    match read(dir, "freezer.state")?.as_str() {
                        "FROZEN" => return Ok(()),
                        "FREEZING" if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                        state => {
                            let _ = super::write(dir, "freezer.state", "THAWED");
                            return Err(Error::msg(format!("freeze {}: the tasks did not freeze (freezer.state {state})", dir.display())));
                        }
                    }
                    tries += 1;
                }
            }
            Some(Freezer::V2(dir)) => {
                super::write(dir, "cgroup.freeze", "1")?;
                if wait_v2(dir, true) {
                    return Ok(());
                }
                let _ = super::write(dir, "cgroup.freeze", "0");
                Err(Error::msg(format!("freeze {}: the tasks did not freeze (cgroup.events never said frozen 1)", dir.display())))
            }
            None => Err(self.no_freezer()),
        }
    }

    /// Let the processes run again.
    pub fn thaw(&self) -> Result<()> {
        match self.freezer() {
            Some(Freezer::V1(dir)) => super::write(dir, "freezer.state", "THAWED"),
            Some(Freezer::V2(dir)) => {
                super::write(dir, "cgroup.freeze", "0")?;
                if wait_v2(dir, false) {
                    Ok(())
                } else {
                    Err(Error::msg(format!("thaw {}: cgroup.events never said frozen 0", dir.display())))
                }
            }
            None => Err(self.no_freezer()),
        }
    }

    /// Whether this cgroup itself was frozen (not merely an ancestor).
    pub fn frozen(&self) -> bool {
        match self.freezer() {
            Some(Freezer::V1(dir)) => {
                read(dir, "freezer.state").is_ok_and(|s| s != "THAWED") && read(dir, "freezer.self_freezing").is_ok_and(|s| s == "1")
            }
            Some(Freezer::V2(dir)) => read(dir, "cgroup.freeze").is_ok_and(|s| s == "1"),
            None => false,
        }
    }

    fn no_freezer(&self) -> Error {
        Error::msg(format!("cgroup {} has neither a v1 freezer nor cgroup2's cgroup.freeze", self.path))
    }
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map(|s| s.trim().to_string()).map_err(|e| Error::io("read", &path, e))
}

/// Wait until cgroup.events says `frozen 1` (or 0).
fn wait_v2(dir: &Path, frozen: bool) -> bool {
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        if read(dir, "cgroup.events").is_ok_and(|s| s.lines().any(|l| l == want)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
