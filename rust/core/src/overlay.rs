//! The container's copy-on-write root: an overlay of the image's layer dirs
//! (read-only lowers) under the container's own upper and work dirs, mounted
//! by the child inside its mount namespace on the bundle's rootfs dir, before
//! pivot_root. The host never sees the mount, so nothing can leak when the
//! container dies.
//!
//! overlayfs takes its options in one page (4096 bytes) of mount data. Layer
//! dirs named by 64-hex digests would allow only ~60 layers, so the child
//! chdirs to the layers' common parent and names them relatively; when even
//! that does not fit (or the lowers have no common parent), a dir of short
//! numbered symlinks (as Docker's overlay2 `l/` dir) is made and used instead.

use crate::error::{Error, Result};
use crate::mounts::cstring;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// overlayfs refuses more lower layers than this (OVL_MAX_STACK).
pub const MAX_LAYERS: usize = 500;
/// mount(2) copies at most one page of data; keep a margin for the NUL.
const MAX_DATA: usize = 4095;

/// What the caller asks for.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// The image's layer dirs, bottom layer first (the order of the image's rootfs.diff_ids).
    pub lower: Vec<PathBuf>,
    /// The container's writable layer and overlayfs's work dir (same filesystem, created if missing).
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// What the child needs: a dir to chdir to and the mount data, both built before the clone.
#[derive(Debug)]
pub struct OverlayPlan {
    pub base: CString,
    pub data: CString,
}

fn checked_text(p: &Path, what: &str) -> Result<String> {
    let s = p.to_str().ok_or_else(|| Error::msg(format!("overlay {what} {} is not UTF-8", p.display())))?;
    if s.contains([',', ':', '\\']) {
        return Err(Error::msg(format!("overlay {what} {s} contains ',', ':' or '\\', which overlayfs options cannot carry")));
    }
    Ok(s.to_string())
}

impl Overlay {
    /// One to MAX_LAYERS lower layers, each an existing absolute directory.
    pub fn check_lowers(&self) -> Result<()> {
        if self.lower.is_empty() {
            return Err(Error::msg("overlay root needs at least one lower layer dir"));
        }
        if self.lower.len() > MAX_LAYERS {
            return Err(Error::msg(format!("image has {} layers; overlayfs stacks at most {MAX_LAYERS}", self.lower.len())));
        }
        for dir in &self.lower {
            if !dir.is_absolute() || !dir.is_dir() {
                return Err(Error::msg(format!("overlay lower layer {} is not an existing absolute directory", dir.display())));
            }
        }
        Ok(())
    }

    /// Check the dirs and build the mount data. `links_dir` is where the
    /// short symlinks go if they are needed (a dir owned by the container).
    pub fn plan(&self, links_dir: &Path) -> Result<OverlayPlan> {
        self.check_lowers()?;
        for (dir, what) in [(&self.upper, "upper dir"), (&self.work, "work dir")] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(&format!("create overlay {what}"), dir, e))?;
        }
        let upper = checked_text(&std::path::absolute(&self.upper).map_err(|e| Error::io("resolve", &self.upper, e))?, "upper dir")?;
        let work = checked_text(&std::path::absolute(&self.work).map_err(|e| Error::io("resolve", &self.work, e))?, "work dir")?;
        let tail = format!(",upperdir={upper},workdir={work}");

        // First choice: the names relative to a common parent, top layer first.
        let parent = self.lower[0].parent().map(Path::to_path_buf);
        if let Some(parent) = parent.filter(|p| self.lower.iter().all(|l| l.parent() == Some(p.as_path()))) {
            let names: Option<Vec<String>> = self.lower.iter().rev().map(|l| l.file_name()?.to_str().map(str::to_string)).collect();
            if let Some(names) = names.filter(|n| n.iter().all(|s| !s.contains([',', ':', '\\']))) {
                let data = format!("lowerdir={}{tail}", names.join(":"));
                if data.len() <= MAX_DATA {
                    return Ok(OverlayPlan { base: cstring(&parent.to_string_lossy()), data: cstring(&data) });
                }
            }
        }
        // Else: numbered symlinks in links_dir ("0" is the bottom layer).
        let _ = std::fs::remove_dir_all(links_dir);
        std::fs::create_dir_all(links_dir).map_err(|e| Error::io("create overlay links dir", links_dir, e))?;
        for (i, dir) in self.lower.iter().enumerate() {
            let link = links_dir.join(i.to_string());
            std::os::unix::fs::symlink(dir, &link).map_err(|e| Error::io("symlink overlay layer", &link, e))?;
        }
        let names: Vec<String> = (0..self.lower.len()).rev().map(|i| i.to_string()).collect();
        let data = format!("lowerdir={}{tail}", names.join(":"));
        if data.len() > MAX_DATA {
            return Err(Error::msg(format!(
                "overlay mount options are {} bytes, more than a page: shorten the container dir path",
                data.len()
            )));
        }
        let base = checked_text(&std::path::absolute(links_dir).map_err(|e| Error::io("resolve", links_dir, e))?, "links dir")?;
        Ok(OverlayPlan { base: cstring(&base), data: cstring(&data) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("capsa-overlay-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn relative_names_top_first() {
        let d = tmp("rel");
        let layers: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| d.join("layers").join(n)).collect();
        for l in &layers {
            std::fs::create_dir_all(l).unwrap();
        }
        let ov = Overlay { lower: layers, upper: d.join("c1/upper"), work: d.join("c1/work") };
        let plan = ov.plan(&d.join("c1/lower")).unwrap();
        assert_eq!(plan.base.to_str().unwrap(), d.join("layers").to_str().unwrap());
        assert!(plan.data.to_str().unwrap().starts_with("lowerdir=c:b:a,upperdir="));
        assert!(d.join("c1/work").is_dir());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn many_long_layers_use_short_links() {
        let d = tmp("many");
        let layers: Vec<PathBuf> = (0..200).map(|i| d.join("layers").join(format!("{i:064x}"))).collect();
        for l in &layers {
            std::fs::create_dir_all(l).unwrap();
        }
        let ov = Overlay { lower: layers.clone(), upper: d.join("u"), work: d.join("w") };
        let plan = ov.plan(&d.join("links")).unwrap();
        assert!(plan.data.to_str().unwrap().starts_with("lowerdir=199:198:"));
        assert_eq!(std::fs::read_link(d.join("links/0")).unwrap(), layers[0]);
        let too_many = Overlay { lower: vec![layers[0].clone(); MAX_LAYERS + 1], ..ov };
        assert!(too_many.plan(&d.join("links")).unwrap_err().message.contains("at most"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn refuses_bad_dirs() {
        let d = tmp("bad");
        let ov = Overlay { lower: vec![d.join("missing")], upper: d.join("u"), work: d.join("w") };
        assert!(ov.plan(&d.join("l")).unwrap_err().message.contains("missing"));
        let ov = Overlay { lower: vec![d.clone()], upper: d.join("u,x"), work: d.join("w") };
        assert!(ov.plan(&d.join("l")).unwrap_err().message.contains("cannot carry"));
        std::fs::remove_dir_all(d).unwrap();
    }
}
