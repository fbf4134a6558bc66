//! One stats sample of a container's cgroup, shaped like the `data` of
//! runc's `events --stats` (libcontainer's types.Stats), which go-runc
//! decodes: cpu usage in nanoseconds, memory usage/limit/max, pids, block I/O.

use super::Cgroup;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

impl Cgroup {
    pub fn stats(&self) -> Value {
        let (cpu, memory, pids, blkio) = if self.unified {
            let dir = self.dirs.first().map(PathBuf::as_path).unwrap_or(Path::new("/nonexistent"));
            (cpu_v2(dir), memory_v2(dir), pids_of(dir, self), blkio_v2(dir))
        } else {
            let dir =
                |file: &str| self.dirs.iter().find(|d| d.join(file).exists()).cloned().unwrap_or_else(|| PathBuf::from("/nonexistent"));
            (
                cpu_v1(&dir("cpuacct.usage"), &dir("cpu.stat")),
                memory_v1(&dir("memory.usage_in_bytes")),
                pids_of(&dir("pids.current"), self),
                blkio_v1(&dir("blkio.throttle.io_service_bytes_recursive")),
            )
        };
        json!({"cpu": cpu, "memory": memory, "pids": pids, "blkio": blkio, "hugetlb": {}, "intel_rdt": {}, "network_interfaces": null})
    }
}

/// A number from a cgroup file; `max` (unlimited) and absence read as None.
fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.split_whitespace().next()?.parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events).
fn keyed(path: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

fn numbers(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path).unwrap_or_default().split_whitespace().filter_map(|n| n.parse().ok()).collect()
}

fn clock_ticks() -> u64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn cpu_v1(acct: &Path, cpu: &Path) -> Value {
    let ns_per_tick = 1_000_000_000 / clock_ticks();
    let stat = keyed(&acct.join("cpuacct.stat"));
    // cpuacct.usage_all: "cpu user system" then one row per cpu.
    let all: Vec<Vec<u64>> = std::fs::read_to_string(acct.join("cpuacct.usage_all"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .filter(|row: &Vec<u64>| row.len() == 3)
        .collect();
    let throttling = keyed(&cpu.join("cpu.stat"));
    json!({
        "usage": {
            "total": number(&acct.join("cpuacct.usage")).unwrap_or(0),
            "percpu": numbers(&acct.join("cpuacct.usage_percpu")),
            "percpu_kernel": all.iter().map(|r| r[2]).collect::<Vec<_>>(),
            "percpu_user": all.iter().map(|r| r[1]).collect::<Vec<_>>(),
            "kernel": stat.get("system").copied().unwrap_or(0) * ns_per_tick,
            "user": stat.get("user").copied().unwrap_or(0) * ns_per_tick,
        },
        "throttling": {
            "periods": throttling.get("nr_periods").copied().unwrap_or(0),
            "throttled_periods": throttling.get("nr_throttled").copied().unwrap_or(0),
            "throttled_time": throttling.get("throttled_time").copied().unwrap_or(0),
        },
    })
}

fn cpu_v2(dir: &Path) -> Value {
    // cpu.stat's usage lines are a core file: present without the cpu controller.
    let stat = keyed(&dir.join("cpu.stat"));
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    json!({
        "usage": {
            "total": get("usage_usec") * 1000,
            "percpu": [],
            "kernel": get("system_usec") * 1000,
            "user": get("user_usec") * 1000,
        },
        "throttling": {
            "periods": get("nr_periods"),
            "throttled_periods": get("nr_throttled"),
            "throttled_time": get("throttled_usec") * 1000,
        },
    })
}

fn entry(usage: Option<u64>, limit: Option<u64>, max: Option<u64>, failcnt: Option<u64>) -> Value {
    json!({"usage": usage.unwrap_or(0), "limit": limit.unwrap_or(u64::MAX), "max": max.unwrap_or(0), "failcnt": failcnt.unwrap_or(0)})
}

fn memory_v1(dir: &Path) -> Value {
    let f = |name: &str| number(&dir.join(name));
    let raw = keyed(&dir.join("memory.stat"));
    let mut m = Map::new();
    m.insert("cache".into(), json!(raw.get("cache").copied().unwrap_or(0)));
    m.insert(
        "usage".into(),
        entry(f("memory.usage_in_bytes"), f("memory.limit_in_bytes"), f("memory.max_usage_in_bytes"), f("memory.failcnt")),
    );
    for (key, prefix) in [("swap", "memory.memsw"), ("kernel", "memory.kmem"), ("kernelTCP", "memory.kmem.tcp")] {
        let g = |name: &str| f(&format!("{prefix}.{name}"));
        if g("usage_in_bytes").is_some() {
            m.insert(key.into(), entry(g("usage_in_bytes"), g("limit_in_bytes"), g("max_usage_in_bytes"), g("failcnt")));
        }
    }
    m.insert("raw".into(), json!(raw));
    Value::Object(m)
}

fn memory_v2(dir: &Path) -> Value {
    let f = |name: &str| number(&dir.join(name));
    let raw = keyed(&dir.join("memory.stat"));
    let events = keyed(&dir.join("memory.events"));
    let usage = f("memory.current");
    let limit = f("memory.max");
    let mut m = Map::new();
    m.insert("cache".into(), json!(raw.get("file").copied().unwrap_or(0)));
    m.insert("usage".into(), entry(usage, limit, f("memory.peak"), events.get("max").copied()));
    if let Some(swap) = f("memory.swap.current") {
        // runc reports swap as memory+swap, as v1's memsw is.
        let swap_limit = match (f("memory.swap.max"), limit) {
            (Some(s), Some(l)) => Some(s.saturating_add(l)),
            _ => None,
        };
        m.insert("swap".into(), entry(Some(swap + usage.unwrap_or(0)), swap_limit, f("memory.swap.peak"), None));
    }
    m.insert("raw".into(), json!(raw));
    Value::Object(m)
}

/// pids.current and pids.max; without a pids controller, the processes counted.
fn pids_of(dir: &Path, cg: &Cgroup) -> Value {
    let current = number(&dir.join("pids.current")).unwrap_or_else(|| cg.pids().len() as u64);
    json!({"current": current, "limit": number(&dir.join("pids.max")).unwrap_or(0)})
}

fn blkio_entries(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (major, minor) = f.first()?.split_once(':')?;
            Some(json!({"major": major.parse::<u64>().ok()?, "minor": minor.parse::<u64>().ok()?, "op": f.get(1)?, "value": f.get(2)?.parse::<u64>().ok()?}))
        })
        .collect()
}

fn blkio_v1(dir: &Path) -> Value {
    json!({
        "ioServiceBytesRecursive": blkio_entries(&dir.join("blkio.throttle.io_service_bytes_recursive")),
        "ioServicedRecursive": blkio_entries(&dir.join("blkio.throttle.io_serviced_recursive")),
    })
}

fn blkio_v2(dir: &Path) -> Value {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for line in std::fs::read_to_string(dir.join("io.stat")).unwrap_or_default().lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else { continue };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else { continue };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let Ok(v) = v.parse::<u64>() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(json!({"major": major, "minor": minor, "op": op, "value": v}));
        }
    }
    json!({"ioServiceBytesRecursive": bytes, "ioServicedRecursive": ios})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_files() {
        let dir = std::env::temp_dir().join(format!("capsa-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n").unwrap();
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 10\nfile 20\n").unwrap();
        std::fs::write(dir.join("io.stat"), "8:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n").unwrap();
        let cg = Cgroup { path: "/x".into(), dirs: vec![dir.clone()], unified: true, ..Default::default() };
        let s = cg.stats();
        assert_eq!(s["cpu"]["usage"]["total"], 1_500_000);
        assert_eq!(s["cpu"]["usage"]["kernel"], 500_000);
        assert_eq!(s["memory"]["usage"]["usage"], 4096);
        assert_eq!(s["memory"]["usage"]["limit"], u64::MAX);
        assert_eq!(s["memory"]["cache"], 20);
        assert_eq!(s["blkio"]["ioServiceBytesRecursive"][1]["op"], "Write");
        assert_eq!(s["pids"]["current"], 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
