//! `linux.seccomp`: the filter is compiled by libseccomp in the parent
//! (libseccomp allocates), exported as classic BPF, and loaded by the
//! container's init with one raw seccomp(2) call, which needs no heap.

/// The runtime's side of user notification (SCMP_ACT_NOTIFY): the listener
/// fd from the child to the seccomp agent.
pub mod agent;

use crate::error::{Error, Result};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;
/// seccomp(2) returns a user-notification fd (the listener) for the filter.
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 8;
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: u32 = 32;

/// A compiled filter, ready for the kernel.
#[derive(Debug, Clone)]
pub struct Filter {
    pub program: Vec<libc::sock_filter>,
    pub flags: u32,
    /// SCMP_ACT_NOTIFY is used: the seccomp agent the listener fd goes to
    /// (agent.rs). The flags then carry NEW_LISTENER.
    pub listener: Option<Listener>,
}

/// linux.seccomp's listenerPath and listenerMetadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub path: PathBuf,
    pub metadata: String,
}

impl Filter {
    /// The child gets a user-notification fd from loading this filter.
    pub fn has_listener(&self) -> bool {
        self.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0
    }
}

fn uses_notify(cfg: &LinuxSeccomp) -> bool {
    cfg.syscalls().iter().flatten().any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The agent of a profile that notifies (runc's checks and words).
fn listener(cfg: &LinuxSeccomp) -> Result<Option<Listener>> {
    if !uses_notify(cfg) {
        return Ok(None);
    }
    let path = cfg.listener_path().clone().unwrap_or_default();
    if path.as_os_str().is_empty() {
        return Err(Error::msg("linux.seccomp: SCMP_ACT_NOTIFY is used but listenerPath is not set"));
    }
    Ok(Some(Listener { path, metadata: cfg.listener_metadata().clone().unwrap_or_default() }))
}

impl Filter {
    /// Compile the config's seccomp section. Syscall names this libseccomp
    /// does not know are skipped (as runc does); anything else it cannot
    /// express is a config error.
    pub fn compile(cfg: &LinuxSeccomp) -> Result<Filter> {
        let bad = |what: String| Error::msg(format!("linux.seccomp: {what}"));
        if cfg.default_action() == LinuxSeccompAction::ScmpActNotify {
            return Err(bad("SCMP_ACT_NOTIFY cannot be used as default action".into()));
        }
        for rule in cfg.syscalls().iter().flatten() {
            // The agent's answer would be written by a syscall it must answer itself.
            if rule.action() == LinuxSeccompAction::ScmpActNotify && rule.names().iter().any(|n| n == "write") {
                return Err(bad("SCMP_ACT_NOTIFY cannot be used for the write syscall".into()));
            }
        }
        let listener = listener(cfg)?;
        let default = action(cfg.default_action(), cfg.default_errno_ret()).map_err(|e| bad(format!("defaultAction: {e}")))?;
        let mut ctx = ScmpFilterContext::new(default).map_err(|e| bad(format!("create filter: {e}")))?;
        for arch in cfg.architectures().iter().flatten() {
            let name = arch.to_string();
            let a = ScmpArch::from_str(&name).map_err(|_| bad(format!("unknown architecture {name}")))?;
            ctx.add_arch(a).map_err(|e| bad(format!("add architecture {name}: {e}")))?;
        }
        let flags = Filter::compile_flags(cfg);
        for rule in cfg.syscalls().iter().flatten() {
            let act = action(rule.action(), rule.errno_ret()).map_err(|e| bad(format!("syscalls {:?}: {e}", rule.names())))?;
            // libseccomp refuses a rule whose action is the default: it would change nothing.
            if act == default {
                continue;
            }
            let conditions: Vec<ScmpArgCompare> =
                rule.args().iter().flatten().map(|a| condition(a.index(), a.op(), a.value(), a.value_two())).collect();
            for index in rule.args().iter().flatten().map(|a| a.index()) {
                if index > 5 {
                    return Err(bad(format!("syscalls {:?}: argument index {index} is out of range 0-5", rule.names())));
                }
            }
            // Two conditions on one argument cannot be ANDed by libseccomp: like
            // runc, each then becomes its own rule (ORed).
            let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
            indexes.sort();
            let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
            for name in rule.names() {
                let Ok(nr) = ScmpSyscall::from_name(name) else { continue };
                let added = if repeated {
                    conditions.iter().try_for_each(|c| ctx.add_rule_conditional(act, nr, std::slice::from_ref(c)).map(|_| ()))
                } else {
                    ctx.add_rule_conditional(act, nr, &conditions).map(|_| ())
                };
                added.map_err(|e| bad(format!("add rule for {name}: {e}")))?;
            }
        }
        let mut program = enosys_stub(cfg);
        program.extend(export(&ctx)?);
        if program.len() > 4096 {
            return Err(bad(format!("the filter has {} BPF instructions, more than the kernel's 4096", program.len())));
        }
        Ok(Filter { program, flags, listener })
    }

    fn compile_flags(cfg: &LinuxSeccomp) -> u32 {
        let notify = uses_notify(cfg);
        let mut flags = if notify { SECCOMP_FILTER_FLAG_NEW_LISTENER } else { 0 };
        for f in cfg.flags().iter().flatten() {
            flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
                // Only meaningful with user notification.
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if notify => SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
            };
        }
        flags
    }
}

/// Compiling a profile like Docker's takes libseccomp 15-30 ms (most of it
/// the export): compiled programs are kept by the hash of what they are made
/// from, in memory and, once `set_cache_dir` named one, in files there.
static CACHE_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
static MEMORY: Mutex<Vec<(String, Filter)>> = Mutex::new(Vec::new());

/// Keep compiled filters in `dir` (made 0700; it must be root's alone, as
/// the runtime's state root is: a program read from it is loaded as is).
pub fn set_cache_dir(dir: PathBuf) {
    if let Ok(mut d) = CACHE_DIR.lock() {
        *d = Some(dir);
    }
}

/// `Filter::compile`, through the caches.
pub fn compile_cached(cfg: &LinuxSeccomp) -> Result<Filter> {
    let key = cache_key(cfg)?;
    if let Some(f) = MEMORY.lock().ok().and_then(|m| m.iter().find(|(k, _)| *k == key).map(|(_, f)| f.clone())) {
        return Ok(f);
    }
    let dir = CACHE_DIR.lock().ok().and_then(|d| d.clone());
    let from_file = dir.as_ref().and_then(|d| read_program(&d.join(&key)));
    let filter = match from_file {
        Some(program) => Filter { program, flags: Filter::compile_flags(cfg), listener: listener(cfg)? },
        None => {
            let f = Filter::compile(cfg)?;
            if let Some(d) = &dir {
                let _ = write_program(d, &key, &f.program); // a cache: failing to keep it is no error
            }
            f
        }
    };
    if let Ok(mut m) = MEMORY.lock() {
        if m.len() >= 16 {
            m.remove(0);
        }
        m.push((key, filter.clone()));
    }
    Ok(filter)
}

/// What the program depends on: the config, libseccomp's version, this machine.
fn cache_key(cfg: &LinuxSeccomp) -> Result<String> {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_vec(cfg).map_err(|e| Error::msg(format!("linux.seccomp: encode: {e}")))?;
    let v = libseccomp::ScmpVersion::current().map_err(|e| Error::msg(format!("libseccomp version: {e}")))?;
    let mut h = Sha256::new();
    h.update(format!("capsa-seccomp-2 libseccomp {}.{}.{} {}\n", v.major, v.minor, v.micro, std::env::consts::ARCH));
    h.update(&text);
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn read_program(path: &Path) -> Option<Vec<libc::sock_filter>> {
    let bytes = std::fs::read(path).ok()?;
    program_from_bytes(&bytes).ok()
}

fn write_program(dir: &Path, key: &str, program: &[libc::sock_filter]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for i in program {
        bytes.extend_from_slice(&i.code.to_ne_bytes());
        bytes.extend_from_slice(&[i.jt, i.jf]);
        bytes.extend_from_slice(&i.k.to_ne_bytes());
    }
    let tmp = dir.join(format!(".{key}.{}", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, dir.join(key))
}

fn action(a: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno_ret.unwrap_or(libc::EPERM as u32) as i32),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno_ret.unwrap_or(libc::EPERM as u32) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn audit_arch(a: ScmpArch) -> Option<u32> {
    Some(match a {
        ScmpArch::X8664 | ScmpArch::X32 => AUDIT_ARCH_X86_64,
        ScmpArch::X86 => 0x4000_0003,
        ScmpArch::Aarch64 => 0xc000_00b7,
        ScmpArch::Arm => 0x4000_0028,
        ScmpArch::Ppc64Le => 0xc000_0015,
        ScmpArch::Riscv64 => 0xc000_00f3,
        _ => return None,
    })
}

/// runc's -ENOSYS stub (libcontainer/seccomp/patchbpf), put before
/// libseccomp's program: a syscall numbered above the highest one the
/// profile names, for an architecture it lists, fails with ENOSYS rather
/// than the default action, so that a program (glibc, a static binary)
/// falls back from a syscall newer than the profile as it would on an older
/// kernel. Not for permissive defaults (allow, log, trace) or a default
/// that already is ENOSYS.
fn enosys_stub(cfg: &LinuxSeccomp) -> Vec<libc::sock_filter> {
    use LinuxSeccompAction as A;
    if matches!(cfg.default_action(), A::ScmpActAllow | A::ScmpActLog | A::ScmpActTrace)
        || cfg.default_errno_ret() == Some(libc::ENOSYS as u32)
    {
        return Vec::new();
    }
    // Per audit arch: (is x32, the highest syscall the profile names).
    let mut per_arch: Vec<(u32, Vec<(bool, u32)>)> = Vec::new();
    for name in cfg.architectures().iter().flatten().map(|a| a.to_string()) {
        let Ok(mut arch) = ScmpArch::from_str(&name) else { continue };
        if arch == ScmpArch::Native {
            arch = ScmpArch::native();
        }
        let Some(audit) = audit_arch(arch) else { continue };
        let max = cfg
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names())
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
            .map(|s| s.as_raw_syscall())
            .filter(|nr| *nr > 0)
            .max();
        let Some(max) = max else { continue };
        let entry = match per_arch.iter_mut().position(|(a, _)| *a == audit) {
            Some(i) => &mut per_arch[i].1,
            None => {
                per_arch.push((audit, Vec::new()));
                &mut per_arch.last_mut().unwrap().1
            }
        };
        let x32 = arch == ScmpArch::X32;
        if !entry.iter().any(|(x, _)| *x == x32) {
            entry.push((x32, max as u32));
        }
    }
    // Instructions with symbolic jump targets, resolved once the length is known.
    #[derive(Clone, Copy)]
    enum To {
        Skip(u8),
        Next,
        Enosys,
        Filter,
    }
    const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
    const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    let mut blocks: Vec<Vec<(u16, u32, To, To)>> = Vec::new();
    for (audit, maxes) in &per_arch {
        let mut b =
            vec![(LD_ABS, 4, To::Skip(0), To::Skip(0)), (JEQ, *audit, To::Skip(0), To::Next), (LD_ABS, 0, To::Skip(0), To::Skip(0))];
        match maxes.as_slice() {
            [(_, max)] => b.push((JGT, *max, To::Enosys, To::Filter)),
            [(x_a, max_a), (_, max_b)] => {
                let (native, x32) = if *x_a { (*max_b, *max_a) } else { (*max_a, *max_b) };
                b.push((JSET, X32_SYSCALL_BIT, To::Skip(1), To::Skip(0)));
                b.push((JGT, native, To::Enosys, To::Filter));
                b.push((JGT, x32, To::Enosys, To::Filter));
            }
            _ => continue,
        }
        blocks.push(b);
    }
    if blocks.is_empty() {
        return Vec::new();
    }
    let end: usize = blocks.iter().map(Vec::len).sum();
    // end: `ja +1` (an arch not listed goes to the filter), end+1: `ret ENOSYS`, end+2: the filter.
    let (enosys, filter) = (end + 1, end + 2);
    let mut out = Vec::with_capacity(end + 2);
    let mut start = 0;
    for b in &blocks {
        let next = start + b.len();
        for (code, k, jt, jf) in b {
            let here = out.len();
            let off = |t: To| -> u8 {
                let target = match t {
                    To::Skip(n) => return n,
                    To::Next => next,
                    To::Enosys => enosys,
                    To::Filter => filter,
                };
                (target - here - 1) as u8
            };
            out.push(libc::sock_filter { code: *code, jt: off(*jt), jf: off(*jf), k: *k });
        }
        start = next;
    }
    out.push(libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JA) as u16, jt: 0, jf: 0, k: 1 });
    out.push(libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0x0005_0000 | libc::ENOSYS as u32 });
    out
}

/// One argument condition. For SCMP_CMP_MASKED_EQ the spec's `value` is the
/// mask and `valueTwo` the value compared after masking (libseccomp's order).
fn condition(index: usize, op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> ScmpArgCompare {
    let index = index as u32;
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpArgCompare::new(index, ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => ScmpArgCompare::new(index, ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => ScmpArgCompare::new(index, ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => ScmpArgCompare::new(index, ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => ScmpArgCompare::new(index, ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => ScmpArgCompare::new(index, ScmpCompareOp::Greater, value),
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    }
}

/// The filter as BPF instructions: exported into a memfd (Debian's
/// libseccomp 2.5 has no export to memory) and read back.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let fd = memfd(c"capsa-seccomp").map_err(|e| Error::msg(format!("linux.seccomp: memfd_create: {e}")))?;
    ctx.export_bpf(&fd).map_err(|e| Error::msg(format!("linux.seccomp: export BPF: {e}")))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.rewind().and_then(|_| file.read_to_end(&mut bytes)).map_err(|e| Error::io("linux.seccomp: read exported BPF from", "memfd", e))?;
    program_from_bytes(&bytes)
}

fn program_from_bytes(bytes: &[u8]) -> Result<Vec<libc::sock_filter>> {
    let size = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || !bytes.len().is_multiple_of(size) || bytes.len() / size > u16::MAX as usize {
        return Err(Error::msg(format!("linux.seccomp: {} bytes of BPF are not a program", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// An anonymous in-memory file, close-on-exec.
pub(crate) fn memfd(name: &std::ffi::CStr) -> std::io::Result<std::os::fd::OwnedFd> {
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compiles_rules_with_conditions() {
        let f = Filter::compile(&parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"names":["mkdir","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                            {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                            {"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                            {"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        assert!(f.program.len() > 10);
        assert_eq!(f.flags, SECCOMP_FILTER_FLAG_LOG);
        // The last instruction of a libseccomp program is a return.
        assert_eq!(f.program.last().unwrap().code, (libc::BPF_RET | libc::BPF_K) as u16);
    }

    #[test]
    fn cached_program_is_the_compiled_one() {
        let cfg = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}],"flags":["SECCOMP_FILTER_FLAG_LOG"]}"#,
        );
        let dir = std::env::temp_dir().join(format!("capsa-seccomp-cache-{}", std::process::id()));
        let compiled = Filter::compile(&cfg).unwrap();
        let key = cache_key(&cfg).unwrap();
        write_program(&dir, &key, &compiled.program).unwrap();
        let back = read_program(&dir.join(&key)).unwrap();
        assert_eq!(back.len(), compiled.program.len());
        assert!(back.iter().zip(&compiled.program).all(|(a, b)| (a.code, a.jt, a.jf, a.k) == (b.code, b.jt, b.jf, b.k)));
        let other = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
        assert_ne!(cache_key(&other).unwrap(), key);
        let f = compile_cached(&cfg).unwrap();
        assert_eq!((f.program.len(), f.flags), (compiled.program.len(), SECCOMP_FILTER_FLAG_LOG));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let e = Filter::compile(&parse(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#)).unwrap_err();
        assert!(e.message.contains("SCMP_ACT_NOTIFY cannot be used as default action"), "{e}");
        let notify = r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock","listenerMetadata":"m","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#;
        let f = Filter::compile(&parse(notify)).unwrap();
        assert!(f.has_listener());
        assert_eq!(f.listener, Some(Listener { path: "/run/x.sock".into(), metadata: "m".into() }));
        let e = Filter::compile(&parse(&notify.replace("/run/x.sock", ""))).unwrap_err();
        assert!(e.message.contains("listenerPath is not set"), "{e}");
        let e = Filter::compile(&parse(&notify.replace("mkdir", "write"))).unwrap_err();
        assert!(e.message.contains("SCMP_ACT_NOTIFY cannot be used for the write syscall"), "{e}");
        // A listener path without a notifying rule: no listener, as runc.
        let f = Filter::compile(&parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock"}"#)).unwrap();
        assert!(!f.has_listener() && f.listener.is_none());
        let e = Filter::compile(&parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        ))
        .unwrap_err();
        assert!(e.message.contains("index 6"), "{e}");
        assert!(serde_json::from_str::<LinuxSeccomp>(r#"{"defaultAction":"SCMP_ACT_BOGUS"}"#).is_err());
    }
}
