//! Everything that runs in a freshly cloned child, from the clone to the
//! execve of the container's process: the one place to audit what a
//! container's process does while it still holds the runtime's privileges.
//!
//! The child may be a clone of a multi-threaded process (a Python program,
//! the monitor) or share its memory until the execve (CLONE_VM, spawn.rs):
//! it makes syscalls on data the parent built before the clone (plan.rs)
//! and never touches the heap or takes a lock. Every syscall goes through
//! a small safe wrapper in sys.rs, or sits in an `unsafe` block that says
//! why it is sound.
//!
//! - init.rs       a container's init: namespaces, cgroups, rootfs, pivot_root, the wait for start
//! - exec.rs       a process exec'd into a running container
//! - process.rs    what both do last: console, rlimits, cwd, user, capabilities, seccomp
//! - mount.rs      the plan's mounts, the overlay root, mount points
//! - hooks.rs      createContainer / startContainer hooks, run by the init
//! - isolation.rs  what of the host the child holds (fds, the host binary) and how it lets go
//! - report.rs     the child's side of the sync channel (sync.rs: the parent's)
//! - failure.rs    failures said in a stack buffer
//! - sys.rs        the syscalls
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod exec;
pub mod failure;
pub mod hooks;
pub mod init;
pub mod isolation;
pub mod mount;
pub mod process;
pub mod report;
pub mod sys;
