//! cgroup v1: one directory per hierarchy, limits in the per-controller files.

use super::{Cgroup, Hierarchy};
use crate::error::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

pub(super) fn create(cg: &mut Cgroup, hierarchies: &[Hierarchy], resources: Option<&LinuxResources>) -> Result<()> {
    if hierarchies.is_empty() {
        return Err(Error::msg("no cgroup v1 hierarchy is mounted under /sys/fs/cgroup"));
    }
    for h in hierarchies {
        let made = cg.mkdir_all(&h.mountpoint)?;
        if h.controllers.iter().any(|c| c == "cpuset") {
            // A new v1 cpuset is empty and refuses tasks until cpus and mems are copied down.
            for dir in &made {
                inherit_cpuset(dir)?;
            }
        }
    }
    if let Some(r) = resources {
        apply(cg, hierarchies, r)?;
    }
    Ok(())
}

/// Write `r` to the files of an existing cgroup (at create, and on update).
pub(super) fn apply(cg: &Cgroup, hierarchies: &[Hierarchy], r: &LinuxResources) -> Result<()> {
    let dir_of = |controller: &str| -> Option<PathBuf> {
        let h = hierarchies.iter().find(|h| h.controllers.iter().any(|c| c == controller))?;
        cg.dirs.iter().find(|d| d.starts_with(&h.mountpoint)).cloned()
    };
    // An optional file is present when the directory of its controller (the prefix) has it.
    let exists = |file: &str| dir_of(file.split('.').next().unwrap_or("")).is_some_and(|d| d.join(file).exists());
    let mut writes = writes(r, exists)?;
    // runc's setMemoryAndSwap: memory.limit_in_bytes may never exceed memsw, so
    // memsw goes first when it is lifted (-1) or above the current limit.
    let limit = writes.iter().position(|w| w.1 == "memory.limit_in_bytes");
    let memsw = writes.iter().position(|w| w.1 == "memory.memsw.limit_in_bytes");
    if let (Some(l), Some(m), Some(dir)) = (limit, memsw, dir_of("memory")) {
        let current: u64 =
            std::fs::read_to_string(dir.join("memory.limit_in_bytes")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(u64::MAX);
        let swap: i64 = writes[m].2.parse().unwrap_or(0);
        if (swap == -1 || (swap >= 0 && current < swap as u64)) && m > l {
            let w = writes.remove(m);
            writes.insert(l, w);
        }
    }
    // runc's fs/cpu.go: a shorter period can be refused (EINVAL) while the old
    // quota over the new period would exceed a parent's limit; with a quota
    // to write too, the period is written again after it.
    let quota_follows = writes.iter().any(|w| w.1 == "cpu.cfs_quota_us");
    let mut period_again: Option<(PathBuf, String)> = None;
    for (controller, file, value) in writes {
        let dir = dir_of(controller)
            .ok_or_else(|| Error::msg(format!("cgroup v1 controller {controller} is not mounted, but the config sets {file}")))?;
        if file == "cpu.cfs_period_us" && quota_follows {
            match std::fs::write(dir.join(file), &value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => period_again = Some((dir, value)),
                Err(e) => return Err(Error::io(&format!("write {value:?} to"), dir.join(file), e)),
            }
            continue;
        }
        super::write(&dir, file, &value)?;
        if file == "cpu.cfs_quota_us" {
            if let Some((dir, period)) = period_again.take() {
                super::write(&dir, "cpu.cfs_period_us", &period)?;
            }
        }
    }
    Ok(())
}

fn inherit_cpuset(dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if current.trim().is_empty() {
            let value = filled_cpuset(parent, file)?;
            super::write(dir, file, &value)?;
        }
    }
    Ok(())
}

/// A cpuset value of `dir`, filled from its ancestors first when empty: a
/// parent another create made a moment ago may not have its values yet.
fn filled_cpuset(dir: &Path, file: &str) -> Result<String> {
    let value = std::fs::read_to_string(dir.join(file)).map_err(|e| Error::io("read", dir.join(file), e))?;
    let value = value.trim();
    if !value.is_empty() {
        return Ok(value.to_string());
    }
    let parent =
        dir.parent().filter(|p| p.join(file).exists()).ok_or_else(|| Error::msg(format!("{} is empty", dir.join(file).display())))?;
    let inherited = filled_cpuset(parent, file)?;
    super::write(dir, file, &inherited)?;
    Ok(inherited)
}

/// The (controller, file, value) writes that apply `r`, in a safe order.
/// `exists` says whether an optional file is present on this host.
pub fn writes(r: &LinuxResources, exists: impl Fn(&str) -> bool) -> Result<Vec<(&'static str, &'static str, String)>> {
    let mut w: Vec<(&'static str, &'static str, String)> = Vec::new();
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            w.push(("memory", "memory.limit_in_bytes", limit.to_string()));
        }
        if let Some(res) = m.reservation() {
            w.push(("memory", "memory.soft_limit_in_bytes", res.to_string()));
        }
        // As runc: lifting the memory limit without a word on swap lifts memsw too
        // (a memsw below the new limit would make the kernel refuse it).
        let swap = match m.swap() {
            None if m.limit() == Some(-1) && exists("memory.memsw.limit_in_bytes") => Some(-1),
            swap => swap,
        };
        if let Some(swap) = swap {
            // memory+swap; a host without swap accounting has no memsw file, and then
            // only "no extra swap" (swap == limit) or "unlimited" can be honoured.
            if exists("memory.memsw.limit_in_bytes") {
                w.push(("memory", "memory.memsw.limit_in_bytes", swap.to_string()));
            } else if swap != -1 && Some(swap) != m.limit() {
                return Err(Error::msg("memory swap limit requested, but this host has no swap accounting (memory.memsw.limit_in_bytes)"));
            }
        }
        if let Some(s) = m.swappiness() {
            if s <= 100 {
                w.push(("memory", "memory.swappiness", s.to_string()));
            }
        }
        if m.disable_oom_killer() == Some(true) {
            w.push(("memory", "memory.oom_control", "1".into()));
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares() {
            w.push(("cpu", "cpu.shares", s.to_string()));
        }
        if let Some(p) = c.period() {
            w.push(("cpu", "cpu.cfs_period_us", p.to_string()));
        }
        if let Some(q) = c.quota() {
            w.push(("cpu", "cpu.cfs_quota_us", q.to_string()));
        }
        // Realtime scheduling (CONFIG_RT_GROUP_SCHED): the period first, as runc.
        if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
            w.push(("cpu", "cpu.rt_period_us", p.to_string()));
        }
        if let Some(rt) = c.realtime_runtime().filter(|rt| *rt != 0) {
            w.push(("cpu", "cpu.rt_runtime_us", rt.to_string()));
        }
        if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
            w.push(("cpuset", "cpuset.cpus", cpus.clone()));
        }
        if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
            w.push(("cpuset", "cpuset.mems", mems.clone()));
        }
    }
    // As runc: a limit of 0 means "not set" (podman writes it for no limit),
    // so no write and no need for the pids controller; below 0 is unlimited.
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        let limit = p.limit();
        w.push(("pids", "pids.max", if limit < 0 { "max".into() } else { limit.to_string() }));
    }
    if let Some(b) = r.block_io() {
        if let Some(weight) = b.weight() {
            let file = if exists("blkio.weight") {
                "blkio.weight"
            } else if exists("blkio.bfq.weight") {
                "blkio.bfq.weight"
            } else {
                return Err(Error::msg(
                    "blkio weight requested, but this host has neither blkio.weight nor blkio.bfq.weight (no BFQ I/O scheduler is active)",
                ));
            };
            w.push(("blkio", file, weight.to_string()));
        }
        let throttles = [
            ("blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
            ("blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
            ("blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
            ("blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
        ];
        for (file, devices) in throttles {
            for d in devices.iter().flatten() {
                w.push(("blkio", file, format!("{}:{} {}", d.major(), d.minor(), d.rate())));
            }
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn memory_cpu_pids_translate() {
        let r = resources(
            r#"{"memory":{"limit":33554432,"reservation":1000},"cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0"},"pids":{"limit":20}}"#,
        );
        let w = writes(&r, |_| true).unwrap();
        let files: Vec<_> = w.iter().map(|(_, f, v)| format!("{f}={v}")).collect();
        assert_eq!(
            files,
            [
                "memory.limit_in_bytes=33554432",
                "memory.soft_limit_in_bytes=1000",
                "cpu.shares=512",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=50000",
                "cpuset.cpus=0",
                "pids.max=20"
            ]
        );
    }

    #[test]
    fn swap_without_accounting() {
        let same = resources(r#"{"memory":{"limit":100,"swap":100}}"#);
        assert_eq!(writes(&same, |_| false).unwrap().len(), 1);
        let more = resources(r#"{"memory":{"limit":100,"swap":200}}"#);
        assert!(writes(&more, |_| false).unwrap_err().message.contains("swap"));
        assert_eq!(writes(&more, |_| true).unwrap()[1].2, "200");
    }

    #[test]
    fn blkio_weight_needs_a_file() {
        let r = resources(r#"{"blockIO":{"weight":300}}"#);
        assert!(writes(&r, |_| false).unwrap_err().message.contains("blkio"));
        assert_eq!(writes(&r, |f| f == "blkio.bfq.weight").unwrap()[0].1, "blkio.bfq.weight");
        let t = resources(r#"{"blockIO":{"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]}}"#);
        assert_eq!(writes(&t, |_| false).unwrap()[0].2, "8:0 1048576");
    }

    #[test]
    fn unlimited_memory_lifts_memsw() {
        let r = resources(r#"{"memory":{"limit":-1}}"#);
        let files: Vec<_> = writes(&r, |_| true).unwrap().iter().map(|(_, f, v)| format!("{f}={v}")).collect();
        assert_eq!(files, ["memory.limit_in_bytes=-1", "memory.memsw.limit_in_bytes=-1"]);
        assert_eq!(writes(&r, |_| false).unwrap().len(), 1, "no memsw file: the limit alone");
    }

    #[test]
    fn realtime() {
        let r = resources(r#"{"cpu":{"realtimePeriod":800001,"realtimeRuntime":500001}}"#);
        let files: Vec<_> = writes(&r, |_| true).unwrap().iter().map(|(_, f, v)| format!("{f}={v}")).collect();
        assert_eq!(files, ["cpu.rt_period_us=800001", "cpu.rt_runtime_us=500001"]);
    }

    #[test]
    fn unlimited_pids() {
        let r = resources(r#"{"pids":{"limit":-1}}"#);
        assert_eq!(writes(&r, |_| true).unwrap()[0].2, "max");
    }
}
