//! Changing the limits of a running container (`runc update`): the same
//! translation as at create, written to the cgroup it already has.

use super::{v1, v1_hierarchies, v2, Cgroup, ROOT};
use crate::error::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::path::Path;

impl Cgroup {
    pub fn update(&self, r: &LinuxResources) -> Result<()> {
        if self.unified {
            return v2::apply(self, Path::new(ROOT), r);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
        v1::apply(self, &v1_hierarchies(&mountinfo), r)
    }
}
