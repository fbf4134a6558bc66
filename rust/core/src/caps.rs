//! Linux capabilities: names to bits (parent side) and the syscalls that
//! apply five capability sets (child side, allocation-free).

use crate::error::{Error, Result};
use std::ffi::CStr;

/// Index = capability number (linux/capability.h).
const NAMES: [&CStr; 41] = [
    c"CAP_CHOWN",
    c"CAP_DAC_OVERRIDE",
    c"CAP_DAC_READ_SEARCH",
    c"CAP_FOWNER",
    c"CAP_FSETID",
    c"CAP_KILL",
    c"CAP_SETGID",
    c"CAP_SETUID",
    c"CAP_SETPCAP",
    c"CAP_LINUX_IMMUTABLE",
    c"CAP_NET_BIND_SERVICE",
    c"CAP_NET_BROADCAST",
    c"CAP_NET_ADMIN",
    c"CAP_NET_RAW",
    c"CAP_IPC_LOCK",
    c"CAP_IPC_OWNER",
    c"CAP_SYS_MODULE",
    c"CAP_SYS_RAWIO",
    c"CAP_SYS_CHROOT",
    c"CAP_SYS_PTRACE",
    c"CAP_SYS_PACCT",
    c"CAP_SYS_ADMIN",
    c"CAP_SYS_BOOT",
    c"CAP_SYS_NICE",
    c"CAP_SYS_RESOURCE",
    c"CAP_SYS_TIME",
    c"CAP_SYS_TTY_CONFIG",
    c"CAP_MKNOD",
    c"CAP_LEASE",
    c"CAP_AUDIT_WRITE",
    c"CAP_AUDIT_CONTROL",
    c"CAP_SETFCAP",
    c"CAP_MAC_OVERRIDE",
    c"CAP_MAC_ADMIN",
    c"CAP_SYSLOG",
    c"CAP_WAKE_ALARM",
    c"CAP_BLOCK_SUSPEND",
    c"CAP_AUDIT_READ",
    c"CAP_PERFMON",
    c"CAP_BPF",
    c"CAP_CHECKPOINT_RESTORE",
];

/// The capability number of a name (`CAP_CHOWN` or `chown`).
pub fn number(name: &str) -> Result<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    NAMES
        .iter()
        .position(|n| n.to_bytes() == full.as_bytes())
        .map(|i| i as u32)
        .ok_or_else(|| Error::msg(format!("unknown capability {name}")))
}

/// A bit mask from capability names.
pub fn mask<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<u64> {
    let mut m = 0u64;
    for n in names {
        m |= 1u64 << number(n)?;
    }
    Ok(m)
}

/// The highest capability this kernel knows (from /proc), so we never try to drop beyond it.
pub fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// The name of a capability number (a C string: the child reports it without allocating).
pub fn name(cap: u32) -> &'static CStr {
    NAMES.get(cap as usize).copied().unwrap_or(c"CAP_UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(number("CAP_CHOWN").unwrap(), 0);
        assert_eq!(number("sys_admin").unwrap(), 21);
        assert_eq!(number("CAP_CHECKPOINT_RESTORE").unwrap(), 40);
        assert_eq!(name(24), c"CAP_SYS_RESOURCE");
        assert!(number("CAP_NOPE").is_err());
    }

    #[test]
    fn mask_of_docker_subset() {
        let m = mask(["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]).unwrap();
        assert_eq!(m, (1 << 0) | (1 << 5) | (1 << 13));
    }
}
