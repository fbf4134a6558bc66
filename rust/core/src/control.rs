//! What can be done to a running container through its cgroup: pause and
//! resume (the freezer), update (new limits), and a stats sample.

use crate::error::{Error, Result};
use crate::state::{State, Status};
use oci_spec::runtime::LinuxResources;
use std::path::Path;

fn running(root: &Path, id: &str, what: &str) -> Result<(State, Status)> {
    let st = State::load(root, id)?;
    let status = st.status(root);
    if status == Status::Stopped {
        return Err(Error::msg(format!("cannot {what} container {id}: it is not running")));
    }
    Ok((st, status))
}

/// Freeze every process of a created or running container.
pub fn pause(root: &Path, id: &str) -> Result<()> {
    let (st, status) = running(root, id, "pause")?;
    if status == Status::Paused {
        return Err(Error::msg(format!("cannot pause container {id}: it is already paused")));
    }
    st.cgroup.freeze()
}

pub fn resume(root: &Path, id: &str) -> Result<()> {
    let (st, status) = running(root, id, "resume")?;
    if status != Status::Paused {
        return Err(Error::msg(format!("cannot resume container {id}: it is not paused")));
    }
    st.cgroup.thaw()
}

/// runtime-spec LinuxResources from JSON text (`update --resources FILE|-`).
pub fn parse_resources(text: &str, origin: &str) -> Result<LinuxResources> {
    serde_json::from_str(text).map_err(|e| Error::msg(format!("invalid resources in {origin}: {e}")))
}

pub fn update(root: &Path, id: &str, resources: &LinuxResources) -> Result<()> {
    let (st, _) = running(root, id, "update")?;
    st.cgroup.update(resources)
}

/// One `{"type":"stats","id":..,"data":{..}}` event, as runc's `events --stats` prints it.
pub fn stats(root: &Path, id: &str) -> Result<serde_json::Value> {
    let (st, _) = running(root, id, "read stats of")?;
    Ok(serde_json::json!({"type": "stats", "id": id, "data": st.cgroup.stats()}))
}
