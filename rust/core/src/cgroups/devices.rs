//! Device access rules (`linux.resources.devices`): the config's rules, then
//! the devices every container needs (runc's list). The last rule that
//! matches an access decides; nothing matches: denied.
//!
//! v1: `deny a`, then each rule to devices.allow / devices.deny in order.
//! v2: the same rules as an eBPF program of type CGROUP_DEVICE, assembled
//! here (no library does this small job) and attached to the cgroup.

use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    /// b'a' (all), b'b' or b'c'.
    pub kind: u8,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// BPF_DEVCG_ACC_* bits: mknod 1, read 2, write 4.
    pub access: u32,
}

const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = 7;

/// The rules for a config, its own first.
pub fn rules(resources: Option<&LinuxResources>) -> Result<Vec<Rule>> {
    let mut out = Vec::new();
    for d in resources.and_then(|r| r.devices().as_ref()).into_iter().flatten() {
        // A rule left with no access (all its letters ignored) says nothing.
        out.extend(Some(rule(d)?).filter(|r| r.access != 0));
    }
    let default = |kind, major, minor: Option<i64>, access| Rule { allow: true, kind, major, minor, access };
    out.extend([
        default(b'c', None, None, ACC_MKNOD),
        default(b'b', None, None, ACC_MKNOD),
        default(b'c', Some(1), Some(3), ACC_ALL),    // null
        default(b'c', Some(1), Some(8), ACC_ALL),    // random
        default(b'c', Some(1), Some(7), ACC_ALL),    // full
        default(b'c', Some(5), Some(0), ACC_ALL),    // tty
        default(b'c', Some(1), Some(5), ACC_ALL),    // zero
        default(b'c', Some(1), Some(9), ACC_ALL),    // urandom
        default(b'c', Some(136), None, ACC_ALL),     // pts/*
        default(b'c', Some(5), Some(2), ACC_ALL),    // ptmx
        default(b'c', Some(10), Some(200), ACC_ALL), // net/tun
    ]);
    Ok(out)
}

fn rule(d: &LinuxDeviceCgroup) -> Result<Rule> {
    let kind = match d.typ() {
        None | Some(LinuxDeviceType::A) => b'a',
        Some(LinuxDeviceType::B) => b'b',
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => b'c',
        Some(LinuxDeviceType::P) => return Err(Error::msg("device cgroup rule of type p: only a, b and c can be allowed or denied")),
    };
    // As runc: r, w and m count, any other letter ("rwa" in its tests) is ignored.
    let mut access = 0;
    for c in d.access().as_deref().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        };
    }
    let wild = |n: Option<i64>| n.filter(|n| *n >= 0);
    Ok(Rule { allow: d.allow(), kind, major: wild(d.major()), minor: wild(d.minor()), access })
}

impl Rule {
    /// The v1 line: `c 1:3 rwm`, `a`.
    fn v1_line(&self) -> String {
        if self.kind == b'a' {
            return "a".into();
        }
        let n = |v: Option<i64>| v.map_or("*".to_string(), |v| v.to_string());
        let mut access = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(c);
            }
        }
        format!("{} {}:{} {access}", self.kind as char, n(self.major), n(self.minor))
    }
}

/// The writes for a v1 devices cgroup, in order.
pub fn v1_writes(rules: &[Rule]) -> Vec<(&'static str, String)> {
    let mut w = vec![("devices.deny", "a".to_string())];
    for r in rules {
        w.push((if r.allow { "devices.allow" } else { "devices.deny" }, r.v1_line()));
    }
    w
}

/// Limit device access in a new cgroup: v2 by BPF on the leaf, v1 through
/// the devices hierarchy (when mounted). Hybrid hosts use v1's controller.
pub fn apply(cg: &super::Cgroup, mode: super::Mode, resources: Option<&LinuxResources>) -> Result<()> {
    let rules = rules(resources)?;
    if mode == super::Mode::V2 {
        return match cg.dirs.first() {
            Some(leaf) => apply_v2(leaf, &rules),
            None => Ok(()),
        };
    }
    match cg.dirs.iter().find(|d| d.join("devices.allow").exists()) {
        Some(dir) => apply_v1(dir, &rules),
        None => Ok(()),
    }
}

pub fn apply_v1(dir: &Path, rules: &[Rule]) -> Result<()> {
    for (file, line) in v1_writes(rules) {
        super::write(dir, file, &line)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// cgroup v2: BPF_PROG_TYPE_CGROUP_DEVICE
// ---------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const AND64_K: u8 = 0x57;
const RSH64_K: u8 = 0x77;
const JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;

/// The program: r3 = device type, r4 = access, r5 = major, r6 = minor from
/// struct bpf_cgroup_dev_ctx; then the rules last to first, the first that
/// matches returns its verdict; none matches: 0 (denied).
/// The access check: (access & !rule_access) must be 0.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(MOV64_X, 3, 2, 0, 0),
        insn(AND64_K, 3, 0, 0, 0xffff),
        insn(MOV64_X, 4, 2, 0, 0),
        insn(RSH64_K, 4, 0, 0, 16),
        insn(LDX_W, 5, 1, 4, 0),
        insn(LDX_W, 6, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Each check jumps past this rule's end when it does not match; the
        // offsets are patched once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        if r.kind != b'a' {
            block.push(insn(JNE_K, 3, 0, 0, if r.kind == b'b' { 1 } else { 2 }));
            if r.access != ACC_ALL {
                block.push(insn(MOV64_X, 7, 4, 0, 0));
                block.push(insn(AND64_K, 7, 0, 0, (!r.access & ACC_ALL) as i32));
                block.push(insn(JNE_K, 7, 0, 0, 0));
            }
            if let Some(major) = r.major {
                block.push(insn(JNE_K, 5, 0, 0, major as i32));
            }
            if let Some(minor) = r.minor {
                block.push(insn(JNE_K, 6, 0, 0, minor as i32));
            }
        }
        block.push(insn(MOV64_K, 0, 0, 0, r.allow as i32));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K {
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
        if r.kind == b'a' {
            // Matches everything: the rules before it can never decide (and
            // the verifier refuses unreachable code).
            return p;
        }
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Programs this process has loaded, newest last: the verifier costs about
/// half a millisecond per load, and most containers share one rule set.
static LOADED: std::sync::Mutex<Vec<(Vec<Insn>, std::os::fd::OwnedFd)>> = std::sync::Mutex::new(Vec::new());
const LOADED_MAX: usize = 8;

/// Attach the program to the cgroup directory, loaded once per rule set
/// and process. The attachment keeps it alive; it goes with the cgroup.
pub fn apply_v2(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = program(rules);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let i = match loaded.iter().position(|(p, _)| *p == prog) {
        Some(i) => i,
        None => {
            let fd = load_program(dir, &prog)?;
            if loaded.len() == LOADED_MAX {
                loaded.remove(0);
            }
            loaded.push((prog, fd));
            loaded.len() - 1
        }
    };
    attach_program(dir, &loaded[i].1)
}

fn load_program(dir: &Path, prog: &[Insn]) -> Result<std::os::fd::OwnedFd> {
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"capsa_device");
    let load = |log: &mut [u8]| {
        let attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: c"Apache-2.0".as_ptr() as u64,
            log_level: (!log.is_empty()) as u32,
            log_size: log.len() as u32,
            log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
            prog_name: name,
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoad, std::mem::size_of::<ProgLoad>()) }
    };
    let fd = load(&mut []);
    if fd < 0 {
        let e = nix::errno::Errno::last();
        // Once more with the verifier's log, to say why.
        let mut log = vec![0u8; 1 << 16];
        load(&mut log);
        let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).into_owned();
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
        return Err(Error::msg(format!(
            "load the device cgroup BPF program for {}: {} {last}",
            dir.display(),
            crate::error::errno_text(e)
        )));
    }
    // BPF fds are close-on-exec.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

fn attach_program(dir: &Path, prog_fd: &std::os::fd::OwnedFd) -> Result<()> {
    let cgroup = std::fs::File::open(dir).map_err(|e| Error::io("open cgroup", dir, e))?;
    let attach = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, &attach as *const ProgAttach, std::mem::size_of::<ProgAttach>()) };
    if r < 0 {
        return Err(Error::sys("attach the device cgroup BPF program to", dir, nix::errno::Errno::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn v1_lines_in_order() {
        let r = rules(Some(&parse(
            r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":11,"access":"r"}]}"#,
        )))
        .unwrap();
        let w = v1_writes(&r);
        assert_eq!(w[0], ("devices.deny", "a".to_string()));
        assert_eq!(w[1], ("devices.deny", "a".to_string()));
        assert_eq!(w[2], ("devices.allow", "c 1:11 r".to_string()));
        assert_eq!(w[3], ("devices.allow", "c *:* m".to_string()));
        assert!(w.contains(&("devices.allow", "c 136:* rwm".to_string())));
    }

    #[test]
    fn program_jumps_stay_inside() {
        let r = rules(Some(&parse(r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"b","major":7,"access":"rw"}]}"#)))
            .unwrap();
        let p = program(&r);
        for (i, ins) in p.iter().enumerate() {
            if ins.code == JNE_K {
                let target = i as i64 + 1 + ins.off as i64;
                assert!(target < p.len() as i64 && target > i as i64);
            }
        }
        assert_eq!(p.last().unwrap().code, EXIT);
        let r = rules(Some(&parse(
            r#"{"devices":[{"allow":false,"type":"c","major":1,"minor":11,"access":"rwa"},{"allow":true,"access":"x"}]}"#,
        )))
        .unwrap();
        assert_eq!(r[0].v1_line(), "c 1:11 rw", "letters other than r, w and m are ignored, as by runc");
        assert_eq!(r.len(), 1 + 11, "a rule left with no access is dropped");
    }
}
