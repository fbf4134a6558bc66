//! cgroup v2: one tree; controllers enabled down the path through
//! cgroup.subtree_control; limits in the unified file names.

use super::Cgroup;
use crate::error::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::path::Path;

pub(super) fn create(cg: &mut Cgroup, root: &Path, resources: Option<&LinuxResources>) -> Result<()> {
    let writes = match resources {
        Some(r) => writes(r)?,
        None => Vec::new(),
    };
    let needed = controllers(&writes, root)?;
    cg.mkdir_all(root)?;
    enable(cg, root, &needed)?;
    let leaf = cg.dirs[0].clone();
    for (_, file, value) in writes {
        super::write(&leaf, file, &value)?;
    }
    Ok(())
}

/// Write `r` to an existing cgroup (update), enabling what it newly needs.
pub(super) fn apply(cg: &Cgroup, root: &Path, r: &LinuxResources) -> Result<()> {
    let writes = writes(r)?;
    let needed = controllers(&writes, root)?;
    enable(cg, root, &needed)?;
    let leaf = cg.dirs.first().ok_or_else(|| Error::msg(format!("cgroup {} has no directory", cg.path)))?;
    for (_, file, value) in writes {
        super::write(leaf, file, &value)?;
    }
    Ok(())
}

/// The controllers `writes` need, each checked against the root's cgroup.controllers.
fn controllers(writes: &[(&'static str, &'static str, String)], root: &Path) -> Result<Vec<&'static str>> {
    let mut needed: Vec<&str> = writes.iter().map(|(c, _, _)| *c).collect();
    needed.sort();
    needed.dedup();
    if needed.is_empty() {
        return Ok(needed);
    }
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    for c in &needed {
        if !available.split_whitespace().any(|a| a == *c) {
            return Err(Error::msg(format!(
                "the config sets {c} limits, but the cgroup v2 controller {c} is not available at {} (cgroup.controllers: {:?})",
                root.display(),
                available.trim()
            )));
        }
    }
    Ok(needed)
}

/// Each ancestor must hand the controllers down to its children.
fn enable(cg: &Cgroup, root: &Path, needed: &[&str]) -> Result<()> {
    if needed.is_empty() {
        return Ok(());
    }
    let enable: String = needed.iter().map(|c| format!("+{c} ")).collect();
    let mut dir = root.to_path_buf();
    let parts: Vec<&str> = cg.path.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len() - 1] {
        super::write(&dir, "cgroup.subtree_control", enable.trim_end())?;
        dir.push(part);
    }
    super::write(&dir, "cgroup.subtree_control", enable.trim_end())
}

/// cpu.weight from v1 shares: [2, 262144] onto [1, 10000].
pub fn cpu_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// cpu.max: "quota period", "max period" when unlimited.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> String {
    let period = period.unwrap_or(100_000);
    match quota {
        Some(q) if q > 0 => format!("{q} {period}"),
        _ => format!("max {period}"),
    }
}

/// io.weight from blkio weight: [10, 1000] onto [1, 10000].
pub fn io_weight(blkio: u16) -> u64 {
    1 + (blkio.clamp(10, 1000) as u64 - 10) * 9999 / 990
}

/// The (controller, file, value) writes for `r`.
pub fn writes(r: &LinuxResources) -> Result<Vec<(&'static str, &'static str, String)>> {
    let mut w: Vec<(&'static str, &'static str, String)> = Vec::new();
    let max = |v: i64| if v < 0 { "max".to_string() } else { v.to_string() };
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            w.push(("memory", "memory.max", max(limit)));
        }
        if let Some(res) = m.reservation() {
            w.push(("memory", "memory.low", max(res)));
        }
        if let Some(swap) = m.swap() {
            // OCI swap is memory+swap; v2's memory.swap.max is the swap part alone.
            let value = match (swap, m.limit()) {
                (-1, _) => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(Error::msg(format!("memory swap ({s}) must not be below the memory limit ({l})")));
                    }
                    (s - l).to_string()
                }
                (s, _) => s.to_string(),
            };
            w.push(("memory", "memory.swap.max", value));
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares() {
            w.push(("cpu", "cpu.weight", cpu_weight(s).to_string()));
        }
        if c.quota().is_some() || c.period().is_some() {
            w.push(("cpu", "cpu.max", cpu_max(c.quota(), c.period())));
        }
        if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
            w.push(("cpuset", "cpuset.cpus", cpus.clone()));
        }
        if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
            w.push(("cpuset", "cpuset.mems", mems.clone()));
        }
    }
    // 0 means "not set", as in runc (see v1.rs).
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        w.push(("pids", "pids.max", max(p.limit())));
    }
    if let Some(b) = r.block_io() {
        if let Some(weight) = b.weight() {
            w.push(("io", "io.weight", io_weight(weight).to_string()));
        }
        let throttles = [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ];
        for (key, devices) in throttles {
            for d in devices.iter().flatten() {
                w.push(("io", "io.max", format!("{}:{} {key}={}", d.major(), d.minor(), d.rate())));
            }
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_max(Some(50_000), Some(100_000)), "50000 100000");
        assert_eq!(cpu_max(None, Some(20_000)), "max 20000");
        assert_eq!(io_weight(10), 1);
        assert_eq!(io_weight(1000), 10_000);
    }

    #[test]
    fn swap_is_the_part_above_memory() {
        let r: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":100,"swap":300}}"#).unwrap();
        let w = writes(&r).unwrap();
        assert_eq!(w[1], ("memory", "memory.swap.max", "200".to_string()));
        let bad: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":300,"swap":100}}"#).unwrap();
        assert!(writes(&bad).is_err());
    }

    #[test]
    fn pids_and_io() {
        let r: LinuxResources = serde_json::from_str(r#"{"pids":{"limit":-1},"blockIO":{"weight":500}}"#).unwrap();
        let w = writes(&r).unwrap();
        assert_eq!(w[0].2, "max");
        assert_eq!(w[1], ("io", "io.weight", io_weight(500).to_string()));
        let unset: LinuxResources = serde_json::from_str(r#"{"pids":{"limit":0}}"#).unwrap();
        assert!(writes(&unset).unwrap().is_empty(), "a pids limit of 0 is not set, as with runc");
    }
}
