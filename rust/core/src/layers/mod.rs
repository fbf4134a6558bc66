//! Image layers: a layer blob (gzip, zstd or plain tar) extracted safely into
//! a directory, with its diff_id computed on the way.
//!
//! - `overlay` mode makes one directory per layer for overlayfs lowerdirs:
//!   whiteouts become overlayfs whiteouts. The directory appears atomically
//!   (extracted into `<dest>.tmp-*` and renamed), or not at all.
//! - `flatten` mode applies the layer onto an existing directory that holds
//!   the layers below it, whiteouts deleting from it. It works in place: a
//!   failure leaves the directory with the layer partly applied, so callers
//!   flatten into a scratch directory they discard on error.

mod decompress;
mod extract;
pub(crate) mod root;
pub(crate) mod safe_path;
mod whiteout;

pub use decompress::Compression;

use crate::error::{Error, Result};
use nix::errno::Errno;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Overlay,
    Flatten,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "overlay" => Ok(Mode::Overlay),
            "flatten" => Ok(Mode::Flatten),
            _ => Err(Error::msg(format!("unknown layer mode {s:?} (overlay or flatten)"))),
        }
    }
}

/// What one extraction read and made.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    /// `sha256:<hex>` of the blob file itself.
    pub blob_digest: String,
    /// Tar entries applied (whiteouts included).
    pub entries: u64,
    /// Uncompressed bytes read.
    pub bytes: u64,
    pub compression: Compression,
}

/// Extracts `blob` into `dest`: a new directory in overlay mode (it must not
/// exist), an existing one in flatten mode.
pub fn extract(blob: &Path, dest: &Path, mode: Mode) -> Result<Summary> {
    match mode {
        Mode::Flatten => {
            if !dest.is_dir() {
                return Err(Error::sys("flatten layer into", dest, Errno::ENOTDIR));
            }
            extract::apply(blob, dest, mode)
        }
        Mode::Overlay => {
            if dest.symlink_metadata().is_ok() {
                return Err(Error::sys("extract layer into", dest, Errno::EEXIST));
            }
            let tmp = scratch_sibling(dest)?;
            let done = extract::apply(blob, &tmp, mode).and_then(|summary| {
                nix::fcntl::renameat2(nix::fcntl::AT_FDCWD, &tmp, nix::fcntl::AT_FDCWD, dest, nix::fcntl::RenameFlags::RENAME_NOREPLACE)
                    .map_err(|e| Error::sys("rename extracted layer to", dest, e))?;
                Ok(summary)
            });
            if done.is_err() {
                // std's remove_dir_all never follows symlinks out of the tree.
                let _ = std::fs::remove_dir_all(&tmp);
            }
            done
        }
    }
}

/// A fresh empty `<dest>.tmp-<suffix>` next to dest (same filesystem, so the rename is atomic).
fn scratch_sibling(dest: &Path) -> Result<PathBuf> {
    let name = dest.file_name().ok_or_else(|| Error::sys("extract layer into", dest, Errno::EINVAL))?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    for attempt in 0..100u32 {
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp-{}-{:x}", std::process::id(), seed.wrapping_add(attempt as u128 * 7919) & 0xffff_ffff));
        let tmp = dest.with_file_name(tmp_name);
        match nix::unistd::mkdir(&tmp, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
            Ok(()) => return Ok(tmp),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(Error::sys("create scratch directory", &tmp, e)),
        }
    }
    Err(Error::sys("create scratch directory next to", dest, Errno::EEXIST))
}

/// Several extractions on `threads` threads (0: one per CPU). Jobs with the
/// same destination (flatten mode) run one after another in list order,
/// stopping at the first failure; the others run concurrently. One result
/// per job, in job order.
pub fn extract_many(jobs: &[(PathBuf, PathBuf)], mode: Mode, threads: usize) -> Vec<Result<Summary>> {
    // Group job indices by destination, keeping first-appearance order.
    let mut groups: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    for (i, (_, dest)) in jobs.iter().enumerate() {
        match groups.iter_mut().find(|(d, _)| d == dest) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((dest.clone(), vec![i])),
        }
    }
    let threads = if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
    let threads = threads.min(groups.len()).max(1);
    let results: Vec<Mutex<Option<Result<Summary>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, idx)) = groups.get(g) else { break };
                let mut failed = false;
                for &i in idx {
                    let r = if failed {
                        Err(Error::msg(format!(
                            "extract {}: skipped, an earlier layer for {} failed",
                            jobs[i].0.display(),
                            jobs[i].1.display()
                        )))
                    } else {
                        extract(&jobs[i].0, &jobs[i].1, mode)
                    };
                    failed |= r.is_err();
                    *results[i].lock().unwrap() = Some(r);
                }
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().unwrap().expect("every job ran")).collect()
}
