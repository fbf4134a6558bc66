//! `linux.sysctl`: only sysctls that belong to one of the container's own
//! namespaces may be set (runc's rule); they are written by the init to
//! /proc/sys inside the container, before /proc/sys is made read-only.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::ffi::CString;

/// A sysctl to write: `/proc/sys/...` and the value.
#[derive(Debug, Clone)]
pub struct Sysctl {
    pub path: CString,
    pub value: CString,
}

/// Which namespace each sysctl needs, and whether the container has it new.
pub struct Namespaces {
    pub ipc: bool,
    pub uts: bool,
    /// A network namespace of its own (new, or joined by path: not the host's).
    pub net: bool,
}

pub fn plan(sysctls: Option<&HashMap<String, String>>, ns: &Namespaces) -> Result<Vec<Sysctl>> {
    let mut out = Vec::new();
    let mut keys: Vec<&String> = sysctls.map(|m| m.keys().collect()).unwrap_or_default();
    keys.sort();
    for key in keys {
        let value = &sysctls.unwrap()[key];
        // Both spellings are used: net.ipv4.ip_forward and net/ipv4/ip_forward.
        let dotted = key.replace('/', ".");
        let (needed, have) = namespace_of(&dotted)
            .ok_or_else(|| Error::msg(format!("sysctl {key} is not in a separate kernel namespace: capsa-runtime refuses to set it")))?;
        let have = match have {
            "ipc" => ns.ipc,
            "uts" => ns.uts,
            _ => ns.net,
        };
        if !have {
            return Err(Error::msg(format!("sysctl {key} needs a new {needed} namespace, which the config does not give the container")));
        }
        if dotted.split('.').any(|p| p.is_empty() || p == "..") || value.contains('\0') {
            return Err(Error::msg(format!("invalid sysctl {key}={value}")));
        }
        let path = format!("/proc/sys/{}", dotted.replace('.', "/"));
        out.push(Sysctl {
            path: CString::new(path).map_err(|_| Error::msg(format!("invalid sysctl {key}")))?,
            value: CString::new(value.as_str()).map_err(|_| Error::msg(format!("invalid sysctl value {value:?}")))?,
        });
    }
    Ok(out)
}

/// The namespace a sysctl is isolated by, or None when it is host-wide.
fn namespace_of(key: &str) -> Option<(&'static str, &'static str)> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        return Some(("IPC", "ipc"));
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return Some(("UTS", "uts"));
    }
    if key.starts_with("net.") {
        return Some(("network", "net"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Namespaces {
        Namespaces { ipc: true, uts: true, net: true }
    }

    #[test]
    fn namespaced_sysctls_only() {
        let m: HashMap<String, String> = [("net.ipv4.ip_forward", "1"), ("kernel/shmmax", "123"), ("fs.mqueue.msg_max", "20")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let p = plan(Some(&m), &all()).unwrap();
        let paths: Vec<_> = p.iter().map(|s| s.path.to_str().unwrap()).collect();
        assert_eq!(paths, ["/proc/sys/fs/mqueue/msg_max", "/proc/sys/kernel/shmmax", "/proc/sys/net/ipv4/ip_forward"]);

        let host: HashMap<String, String> = [("kernel.pid_max".to_string(), "100".to_string())].into();
        assert!(plan(Some(&host), &all()).unwrap_err().message.contains("not in a separate kernel namespace"));
        let net: HashMap<String, String> = [("net.ipv4.ip_forward".to_string(), "1".to_string())].into();
        let e = plan(Some(&net), &Namespaces { ipc: true, uts: true, net: false }).unwrap_err();
        assert!(e.message.contains("network namespace"), "{e}");
    }
}
