//! capsa-core: the mechanism of the capsa container engine, with no Python in
//! it, so that the pyo3 bindings (`capsa._core`) and native helpers such as
//! the container monitor share one implementation.

pub mod caps;
pub mod cgroups;
pub mod child;
pub mod container;
pub mod control;
pub mod copy;
pub mod debug;
pub mod error;
pub mod exec;
pub mod forward;
pub mod hooks;
pub mod layers;
pub mod mounts;
pub mod overlay;
pub mod plan;
pub mod rootpath;
pub mod seccomp;
pub mod spares;
pub mod spawn;
pub mod state;
pub mod sync;
pub mod sysctl;
pub mod tty;
