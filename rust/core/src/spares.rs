//! Spare namespaces, for a process that starts many containers (the Python
//! API): a background thread makes network and IPC namespaces ahead, and
//! clones join them instead of making them. A network namespace is the
//! costliest single step of a start (about 0.6 ms here, nearly all in the
//! kernel: loopback, the per-namespace sysctl tables); an IPC namespace has
//! sysctl tables and an mqueue mount of its own (about 0.1 ms).
//!
//! `run` asks for more once its container is reaped, so the thread works
//! while the caller deletes that container and creates the next. Working
//! while a container starts or exits, it would stretch the RCU grace
//! periods that the container's mount namespace setup and teardown wait
//! for (its sysctl tables are built under spinlocks, on the other CPU).
//! What it makes then is for the container after next: two of each kind
//! are kept. (`create`, then `start`, asks at once: its container runs
//! meanwhile.)
//!
//! Each spare serves one container, and they go with the process. They
//! belong to the host's user namespace: containers with a user namespace of
//! their own make theirs. A thread of its own makes them because unsharing
//! an IPC namespace detaches the calling thread from the process's SysV
//! semaphore undo list. Without the thread (or in a child forked after it
//! started), clones make their own; a forked child also closes its copies
//! of the spares (pthread_atfork), which its parent hands out.

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};

/// The kinds a spare can be made of (CLONE_NEW* flags).
pub const KINDS: [(i32, &std::ffi::CStr); 2] = [(libc::CLONE_NEWNET, c"thread-self/ns/net"), (libc::CLONE_NEWIPC, c"thread-self/ns/ipc")];

struct Worker {
    /// Requests: the CLONE_NEW* flags to make spares of.
    jobs: SyncSender<i32>,
    /// The process that started the thread: a forked child has no thread.
    pid: u32,
}

static WORKER: OnceLock<Option<Worker>> = OnceLock::new();
static SPARES: Mutex<Vec<(i32, OwnedFd)>> = Mutex::new(Vec::new());
/// Spares kept of each kind.
const KEEP: usize = 2;
/// The spares' fd numbers, for a forked child to close without the lock:
/// its copies would keep namespaces that its parent hands out alive.
static HELD: [AtomicI32; 8] = [const { AtomicI32::new(-1) }; 8];

extern "C" fn close_in_forked_child() {
    for slot in &HELD {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
    }
}

fn worker() -> Option<&'static Worker> {
    let w = WORKER.get_or_init(|| {
        unsafe { libc::pthread_atfork(None, None, Some(close_in_forked_child)) };
        let (jobs, queue) = sync_channel(2);
        let spawned = std::thread::Builder::new().name("capsa-spares".into()).stack_size(64 << 10).spawn(move || work(queue));
        spawned.ok().map(|_| Worker { jobs, pid: std::process::id() })
    });
    w.as_ref().filter(|w| w.pid == std::process::id())
}

/// A spare namespace of `kind` (CLONE_NEWNET or CLONE_NEWIPC), if one is ready.
pub fn take(kind: i32) -> Option<OwnedFd> {
    // A forked child shares its parent's spares (the same namespaces): it
    // must not use them, nor the lock, which a thread may have held at the fork.
    worker()?;
    let mut spares = SPARES.lock().ok()?;
    let i = spares.iter().position(|(k, _)| *k == kind)?;
    let fd = spares.swap_remove(i).1;
    for slot in &HELD {
        let _ = slot.compare_exchange(fd.as_raw_fd(), -1, Ordering::Relaxed, Ordering::Relaxed);
    }
    Some(fd)
}

/// Have spares of `kinds` (CLONE_NEW* flags) made in the background.
pub fn request(kinds: i32) {
    if kinds != 0 {
        if let Some(w) = worker() {
            let _ = w.jobs.try_send(kinds);
        }
    }
}

fn work(queue: Receiver<i32>) {
    // Only on a CPU nothing else wants: never ahead of the caller's starts.
    let idle = libc::sched_param { sched_priority: 0 };
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
    let Ok(proc_dir) = nix::fcntl::open("/proc", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) else { return };
    for kinds in queue {
        let full = |kind: i32, s: &Vec<(i32, OwnedFd)>| s.iter().filter(|(k, _)| *k == kind).count() >= KEEP;
        let held = SPARES.lock().map(|s| KINDS.iter().filter(|(k, _)| full(*k, &s)).fold(0, |a, (k, _)| a | k)).unwrap_or(!0);
        if !make(&proc_dir, kinds & !held) {
            return; // this thread cannot make them: the clones will
        }
    }
}

/// Unshare new namespaces of `kinds`, keep them, and return to the
/// thread's own. False when that did not work.
fn make(proc_dir: &OwnedFd, kinds: i32) -> bool {
    let wanted: Vec<_> = KINDS.iter().filter(|(k, _)| kinds & k != 0).collect();
    if wanted.is_empty() {
        return true;
    }
    let open = |path: &std::ffi::CStr| nix::fcntl::openat(proc_dir, path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).ok();
    let own: Option<Vec<OwnedFd>> = wanted.iter().map(|(_, path)| open(path)).collect();
    let Some(own) = own else { return false };
    if unsafe { libc::unshare(kinds) } != 0 {
        return false;
    }
    let made: Vec<Option<OwnedFd>> = wanted.iter().map(|(_, path)| open(path)).collect();
    // Back home, so that the thread is in no container's namespace.
    let home = wanted.iter().zip(&own).all(|((kind, _), fd)| unsafe { libc::setns(fd.as_raw_fd(), *kind) } == 0);
    if let (true, Ok(mut spares)) = (home, SPARES.lock()) {
        for ((kind, _), fd) in wanted.iter().zip(made) {
            if let Some(fd) = fd {
                // Recorded in the first free slot, for close_in_forked_child.
                HELD.iter().any(|slot| slot.compare_exchange(-1, fd.as_raw_fd(), Ordering::Relaxed, Ordering::Relaxed).is_ok());
                spares.push((*kind, fd));
            }
        }
    }
    home
}
