//! `update`'s flags as runtime-spec LinuxResources, and the units runc's
//! flags take (sizes, durations).

use crate::args::{usage, Opts, Table, Takes, UsageError};
use serde_json::{json, Map, Value};
use std::time::Duration;

pub const UPDATE: Table = &[
    ("resources", &["-r"], Takes::Value),
    ("memory", &[], Takes::Value),
    ("memory-reservation", &[], Takes::Value),
    ("memory-swap", &[], Takes::Value),
    ("kernel-memory", &[], Takes::Value),
    ("kernel-memory-tcp", &[], Takes::Value),
    ("cpu-share", &[], Takes::Value),
    ("cpu-shares", &[], Takes::Value),
    ("cpu-quota", &[], Takes::Value),
    ("cpu-period", &[], Takes::Value),
    ("cpu-rt-period", &[], Takes::Value),
    ("cpu-rt-runtime", &[], Takes::Value),
    ("cpuset-cpus", &[], Takes::Value),
    ("cpuset-mems", &[], Takes::Value),
    ("pids-limit", &[], Takes::Value),
    ("blkio-weight", &[], Takes::Value),
    ("l3-cache-schema", &[], Takes::Value),
    ("mem-bw-schema", &[], Takes::Value),
];

/// runc's memory flags: bytes, or a number with k/m/g/t (binary units); -1 is unlimited.
pub fn parse_bytes(flag: &str, value: &str) -> Result<i64, UsageError> {
    let v = value.trim().to_ascii_lowercase();
    if v == "-1" {
        return Ok(-1);
    }
    let v = v.strip_suffix("ib").or_else(|| v.strip_suffix('b')).unwrap_or(&v);
    let (number, scale) = match v.chars().last() {
        Some('k') => (&v[..v.len() - 1], 1i64 << 10),
        Some('m') => (&v[..v.len() - 1], 1 << 20),
        Some('g') => (&v[..v.len() - 1], 1 << 30),
        Some('t') => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    number
        .parse::<f64>()
        .map(|n| (n * scale as f64) as i64)
        .map_err(|_| usage(format!("--{flag} takes a size such as 67108864, 64m or 1g, not {value:?}")))
}

fn parse_int(flag: &str, value: &str) -> Result<i64, UsageError> {
    value.trim().parse().map_err(|_| usage(format!("--{flag} takes a number, not {value:?}")))
}

/// --interval: 5s, 500ms, 1m or plain seconds.
pub fn parse_duration(value: &str) -> Result<Duration, UsageError> {
    let v = value.trim();
    let (number, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let seconds = number.parse::<f64>().map_err(|_| usage(format!("--interval takes a duration such as 5s, not {value:?}")))? * scale;
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(usage("--interval must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// runc update's flags as runtime-spec LinuxResources; no flags change nothing, as with runc.
pub fn from_flags(opts: &Opts) -> Result<Value, UsageError> {
    for unsupported in ["l3-cache-schema", "mem-bw-schema"] {
        if opts.value(unsupported).is_some() {
            return Err(usage(format!("--{unsupported}: Intel RDT is not supported by capsa-runtime")));
        }
    }
    let mut r = Map::new();
    let mut memory = Map::new();
    for (flag, key) in [("memory", "limit"), ("memory-reservation", "reservation"), ("memory-swap", "swap")] {
        if let Some(v) = opts.value(flag) {
            memory.insert(key.into(), parse_bytes(flag, v)?.into());
        }
    }
    if !memory.is_empty() {
        r.insert("memory".into(), memory.into());
    }
    let mut cpu = Map::new();
    for (flag, key) in [
        ("cpu-share", "shares"),
        ("cpu-shares", "shares"),
        ("cpu-quota", "quota"),
        ("cpu-period", "period"),
        ("cpu-rt-period", "realtimePeriod"),
        ("cpu-rt-runtime", "realtimeRuntime"),
    ] {
        if let Some(v) = opts.value(flag) {
            cpu.insert(key.into(), parse_int(flag, v)?.into());
        }
    }
    for (flag, key) in [("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")] {
        if let Some(v) = opts.value(flag) {
            cpu.insert(key.into(), v.into());
        }
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), cpu.into());
    }
    if let Some(v) = opts.value("pids-limit") {
        r.insert("pids".into(), json!({"limit": parse_int("pids-limit", v)?}));
    }
    if let Some(v) = opts.value("blkio-weight") {
        r.insert("blockIO".into(), json!({"weight": parse_int("blkio-weight", v)?}));
    }
    Ok(r.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("memory", "67108864").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("memory", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("memory", "1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("memory", "-1").unwrap(), -1);
        assert!(parse_bytes("memory", "lots").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
