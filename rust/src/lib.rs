//! capsa._core: the Python bindings of the capsa core. Bindings only; every
//! mechanism lives in its own module. The GIL is released while the core works.

use capsa_core::container::{self, CreateOptions};
use capsa_core::exec::{ExecOptions, Overrides, ToRun};
use capsa_core::{control, error, exec as exec_mod, state};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use std::path::PathBuf;
// layers
use capsa_core::layers;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

create_exception!(_core, ContainerError, PyException, "A container operation failed; the message says which step, path and errno.");

/// A core error becomes a ContainerError carrying its one-line message and,
/// where the core knows them, `step`, `path` and `errno` (else None), so
/// that callers choose by fields, not by the message's words.
trait OrRaise<T> {
    fn or_raise(self) -> PyResult<T>;
}

impl<T> OrRaise<T> for error::Result<T> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(container_error)
    }
}

fn container_error(e: error::Error) -> PyErr {
    let start_exit_code = e.start_exit_code();
    let err = ContainerError::new_err(e.message);
    Python::attach(|py| {
        let value = err.value(py);
        let (step, path, errno) = match e.cause {
            Some(c) => (Some(c.step), Some(c.path), (c.errno != 0).then_some(c.errno)),
            None => (None, None, None),
        };
        let set = || -> PyResult<()> {
            value.setattr("step", step)?;
            value.setattr("path", path)?;
            value.setattr("errno", errno)?;
            value.setattr("start_exit_code", start_exit_code)
        };
        set().map(|()| err.clone_ref(py)).unwrap_or_else(|e| e)
    })
}

/// `overlay=(lower_dirs_bottom_first, upper, work)`: the copy-on-write root mounted inside the container.
type OverlayArg = (Vec<PathBuf>, PathBuf, PathBuf);

fn to_overlay((lower, upper, work): OverlayArg) -> capsa_core::overlay::Overlay {
    capsa_core::overlay::Overlay { lower, upper, work }
}

fn signal_number(signal: &Bound<'_, PyAny>) -> PyResult<i32> {
    if let Ok(n) = signal.extract::<i32>() {
        return container::parse_signal(&n.to_string()).or_raise();
    }
    let s: String = signal.extract()?;
    container::parse_signal(&s).or_raise()
}

/// Create a container from a bundle; its init waits until `start`. Returns the init's pid.
#[pyfunction]
#[pyo3(signature = (root, id, bundle, console_socket=None, pid_file=None, no_pivot=false, preserve_fds=0, systemd_cgroup=false, overlay=None, spare_namespaces=false))]
#[allow(clippy::too_many_arguments)]
fn create(
    py: Python<'_>,
    root: PathBuf,
    id: String,
    bundle: PathBuf,
    console_socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    no_pivot: bool,
    preserve_fds: u32,
    systemd_cgroup: bool,
    overlay: Option<OverlayArg>,
    spare_namespaces: bool,
) -> PyResult<i32> {
    let opts = CreateOptions {
        console_socket,
        pid_file,
        no_pivot,
        preserve_fds,
        systemd_cgroup,
        rootfs_overlay: overlay.map(to_overlay),
        spare_namespaces,
        ..Default::default()
    };
    Ok(py.detach(|| container::create(&root, &id, &bundle, &opts)).or_raise()?.pid)
}

/// Start a created container.
#[pyfunction]
fn start(py: Python<'_>, root: PathBuf, id: String) -> PyResult<()> {
    py.detach(|| container::start(&root, &id)).or_raise()
}

/// Create and start a container, then (unless detached) wait for it, delete
/// it and return its exit code. While waiting, signals either reach Python's
/// handlers or, with forward_signals (the CLI), go on to the container.
/// With spare_namespaces (callers that start many), network and IPC
/// namespaces are made ahead on a background thread (capsa_core::spares).
#[pyfunction]
#[pyo3(signature = (root, id, bundle, console_socket=None, pid_file=None, no_pivot=false, preserve_fds=0, systemd_cgroup=false, detach=false, forward_signals=false, overlay=None, spare_namespaces=false))]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    root: PathBuf,
    id: String,
    bundle: PathBuf,
    console_socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    no_pivot: bool,
    preserve_fds: u32,
    systemd_cgroup: bool,
    detach: bool,
    forward_signals: bool,
    overlay: Option<OverlayArg>,
    spare_namespaces: bool,
) -> PyResult<Option<i32>> {
    let opts = CreateOptions {
        console_socket,
        pid_file,
        no_pivot,
        preserve_fds,
        systemd_cgroup,
        rootfs_overlay: overlay.map(to_overlay),
        spare_namespaces,
        ..Default::default()
    };
    let mut interrupted: Option<PyErr> = None;
    let result = py.detach(|| container::run(&root, &id, &bundle, opts, detach, |pid| wait_for(pid, forward_signals, &mut interrupted)));
    if let Some(e) = interrupted {
        return Err(e);
    }
    result.or_raise()
}

/// The runtime-spec state of a container, as JSON text.
#[pyfunction(name = "state")]
fn state_json(py: Python<'_>, root: PathBuf, id: String) -> PyResult<String> {
    let (st, status) = py.detach(|| container::state(&root, &id)).or_raise()?;
    Ok(st.oci_state(status).to_string())
}

/// Wait for our child `pid`: passing signals on to it (the CLI), or
/// running Python's handlers (in-process callers).
fn wait_for(pid: i32, forward_signals: bool, interrupted: &mut Option<PyErr>) -> error::Result<i32> {
    if forward_signals {
        container::wait_forwarding_signals(pid)
    } else {
        wait_running_python_handlers(pid, interrupted)
    }
}

/// Wait for our child `pid` with the GIL released; a signal runs Python's
/// handlers, and an exception from one (KeyboardInterrupt) ends the wait.
fn wait_running_python_handlers(pid: i32, interrupted: &mut Option<PyErr>) -> error::Result<i32> {
    container::wait_pid(pid, || {
        Python::attach(|py| py.check_signals()).map_err(|e| {
            *interrupted = Some(e);
            error::Error::msg("interrupted")
        })
    })
}

/// The states of all containers under root, as a JSON array.
#[pyfunction]
fn list(py: Python<'_>, root: PathBuf) -> PyResult<String> {
    let all = py.detach(|| container::list(&root)).or_raise()?;
    Ok(capsa_core::state::list_json(&all))
}

/// Send a signal (name or number) to a container's init, or with all=True to every process in it.
#[pyfunction]
#[pyo3(signature = (root, id, signal, all=false))]
fn kill(py: Python<'_>, root: PathBuf, id: String, signal: &Bound<'_, PyAny>, all: bool) -> PyResult<()> {
    let sig = signal_number(signal)?;
    py.detach(|| container::kill(&root, &id, sig, all)).or_raise()
}

/// Delete a stopped (or, with force, any) container: processes, cgroup and state.
#[pyfunction]
#[pyo3(signature = (root, id, force=false))]
fn delete(py: Python<'_>, root: PathBuf, id: String, force: bool) -> PyResult<()> {
    py.detach(|| container::delete(&root, &id, force)).or_raise()
}

/// The host pids of the processes in a container.
#[pyfunction]
fn ps(py: Python<'_>, root: PathBuf, id: String) -> PyResult<Vec<i32>> {
    py.detach(|| container::ps(&root, &id)).or_raise()
}

/// Wait for a container that this process created; its exit code (128+signal when killed).
#[pyfunction]
fn wait(py: Python<'_>, root: PathBuf, id: String) -> PyResult<i32> {
    let st = py.detach(|| state::State::load(&root, &id)).or_raise()?;
    let mut interrupted: Option<PyErr> = None;
    let code = py.detach(|| wait_running_python_handlers(st.pid, &mut interrupted));
    if let Some(e) = interrupted {
        return Err(e);
    }
    code.map_err(|e| {
        let message = format!("{e} (only a container created by this process can be waited for)");
        container_error(e.context(message))
    })
}

/// Start a process in a running container: a runtime-spec process (JSON
/// text or file), or the container's own process with args and overrides.
/// Returns the exit code, or the pid when detached.
#[pyfunction]
#[pyo3(signature = (root, id, process_json=None, process_file=None, args=Vec::new(), env=Vec::new(), cwd=None, user=None, additional_gids=Vec::new(), caps=Vec::new(), no_new_privs=None, tty=false, console_socket=None, pid_file=None, preserve_fds=0, detach=false, forward_signals=false))]
#[allow(clippy::too_many_arguments)]
fn exec(
    py: Python<'_>,
    root: PathBuf,
    id: String,
    process_json: Option<String>,
    process_file: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<String>,
    cwd: Option<String>,
    user: Option<String>,
    additional_gids: Vec<u32>,
    caps: Vec<String>,
    no_new_privs: Option<bool>,
    tty: bool,
    console_socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    preserve_fds: u32,
    detach: bool,
    forward_signals: bool,
) -> PyResult<i32> {
    let opts =
        ExecOptions { console_socket, pid_file, preserve_fds, relay_terminal: !detach, ignore_paused: false, sub_cgroups: Vec::new() };
    let mut interrupted: Option<PyErr> = None;
    let result = py.detach(|| -> error::Result<i32> {
        let overrides = Overrides { args, env, cwd, user, additional_gids, caps, no_new_privs, tty };
        let to_run = ToRun::load(process_json.as_deref(), process_file.as_deref(), overrides)?;
        let started = exec_mod::exec(&root, &id, &to_run, &opts)?;
        let pid = started.pid;
        if detach {
            return Ok(pid);
        }
        match started.terminal {
            Some(master) => capsa_core::tty::relay(master, pid),
            None => wait_for(pid, forward_signals, &mut interrupted),
        }
    });
    if let Some(e) = interrupted {
        return Err(e);
    }
    result.or_raise()
}

/// Freeze every process in a container.
#[pyfunction]
fn pause(py: Python<'_>, root: PathBuf, id: String) -> PyResult<()> {
    py.detach(|| control::pause(&root, &id)).or_raise()
}

/// Thaw a paused container.
#[pyfunction]
fn resume(py: Python<'_>, root: PathBuf, id: String) -> PyResult<()> {
    py.detach(|| control::resume(&root, &id)).or_raise()
}

/// Apply runtime-spec LinuxResources (JSON text) to a running container's cgroup.
#[pyfunction]
#[pyo3(signature = (root, id, resources_json, origin="resources"))]
fn update(py: Python<'_>, root: PathBuf, id: String, resources_json: String, origin: &str) -> PyResult<()> {
    py.detach(|| {
        let r = control::parse_resources(&resources_json, origin)?;
        control::update(&root, &id, &r)
    })
    .or_raise()
}

/// One stats event, as runc's `events --stats` prints it (JSON text).
#[pyfunction]
fn stats(py: Python<'_>, root: PathBuf, id: String) -> PyResult<String> {
    py.detach(|| control::stats(&root, &id)).or_raise().map(|v| v.to_string())
}

/// A regular file of an image as its merged layers (bottom first) show it,
/// resolved inside them (the image's symlinks never lead to the host), at
/// most `limit` bytes; None if there is no regular file there.
#[pyfunction]
fn read_image_file(py: Python<'_>, layers: Vec<PathBuf>, path: PathBuf, limit: u64) -> PyResult<Option<Vec<u8>>> {
    let top_first: Vec<&std::path::Path> = layers.iter().rev().map(PathBuf::as_path).collect();
    let Some(top) = top_first.first().copied() else { return Ok(None) };
    py.detach(|| {
        let mut r =
            capsa_core::rootpath::RootResolver::layered(top, &top_first).map_err(|e| error::Error::sys("open image layers at", top, e))?;
        r.read_file(&path, limit).map_err(|e| error::Error::sys("read image file", &path, e))
    })
    .or_raise()
}

/// The signal number of a name such as TERM, SIGKILL or 9.
#[pyfunction]
fn parse_signal(signal: &Bound<'_, PyAny>) -> PyResult<i32> {
    signal_number(signal)
}

// ---- layers -----------------------------------------------------------------

/// An exception class under `capsa.errors.CapsaError` (the CLI prints its
/// one line), made once into `cell`.
fn capsa_error_type<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &'static std::ffi::CStr,
    doc: &'static std::ffi::CStr,
) -> PyResult<&'py Bound<'py, PyType>> {
    let ty = cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let base = py.import("capsa.errors")?.getattr("CapsaError")?.cast_into::<PyType>()?;
        PyErr::new_type(py, name, Some(doc), Some(&base), None)
    })?;
    Ok(ty.bind(py))
}

/// A core error as an exception of `ty` (or the error of making it).
fn raise_as(ty: PyResult<&Bound<'_, PyType>>, e: error::Error) -> PyErr {
    match ty {
        Ok(ty) => PyErr::from_type(ty.clone(), e.message),
        Err(err) => err,
    }
}

static LAYER_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `capsa._core.LayerError`.
fn layer_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    let doc = c"A layer could not be extracted; the message names the blob, the entry, the step and the errno.";
    capsa_error_type(py, &LAYER_ERROR, c"capsa._core.LayerError", doc)
}

fn layer_error(py: Python<'_>, e: error::Error) -> PyErr {
    raise_as(layer_error_type(py), e)
}

fn layer_mode(mode: &str) -> PyResult<layers::Mode> {
    layers::Mode::parse(mode).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.message))
}

fn layer_summary<'py>(py: Python<'py>, s: &layers::Summary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("diff_id", &s.diff_id)?;
    d.set_item("digest", &s.blob_digest)?;
    d.set_item("entries", s.entries)?;
    d.set_item("bytes", s.bytes)?;
    d.set_item("compression", s.compression.name())?;
    Ok(d)
}

/// Extract a layer blob (gzip, zstd or tar) into dest. overlay: dest must not
/// exist and appears complete or not at all; flatten: applied onto the
/// existing dest. Returns {diff_id, digest, entries, bytes, compression}.
#[pyfunction]
#[pyo3(signature = (blob, dest, mode="overlay"))]
fn extract_layer<'py>(py: Python<'py>, blob: PathBuf, dest: PathBuf, mode: &str) -> PyResult<Bound<'py, PyDict>> {
    let mode = layer_mode(mode)?;
    let summary = py.detach(|| layers::extract(&blob, &dest, mode)).map_err(|e| layer_error(py, e))?;
    layer_summary(py, &summary)
}

/// Extract several (blob, dest) jobs concurrently on `threads` threads (0: one
/// per CPU); flatten jobs sharing a dest run in list order. Raises the first
/// failure (in job order) once all jobs have finished.
#[pyfunction]
#[pyo3(signature = (jobs, mode="overlay", threads=0))]
fn extract_layers<'py>(py: Python<'py>, jobs: Vec<(PathBuf, PathBuf)>, mode: &str, threads: usize) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let mode = layer_mode(mode)?;
    let results = py.detach(|| layers::extract_many(&jobs, mode, threads));
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let summary = r.map_err(|e| layer_error(py, e))?;
        out.push(layer_summary(py, &summary)?);
    }
    Ok(out)
}

// ---- cp: files between the host and a container's root ---------------------
//
// Descriptors cross as ints: the caller owns them (the two root functions
// hand theirs over) and keeps them open during each call.

static COPY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `capsa._core.CopyError`.
fn copy_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    let doc = c"A copy between the host and a container failed; the message names the path, the step and the errno.";
    capsa_error_type(py, &COPY_ERROR, c"capsa._core.CopyError", doc)
}

fn copy_error(py: Python<'_>, e: error::Error) -> PyErr {
    raise_as(copy_error_type(py), e)
}

fn borrowed_fd(fd: i32) -> PyResult<std::os::fd::BorrowedFd<'static>> {
    if fd < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!("bad file descriptor {fd}")));
    }
    // SAFETY: the caller keeps fd open for the duration of the call it is passed to.
    Ok(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
}

fn copy_policy(to_container: bool, uid: u32, gid: u32) -> capsa_core::copy::Policy {
    if to_container {
        capsa_core::copy::Policy::Container { uid, gid }
    } else {
        capsa_core::copy::Policy::Host
    }
}

/// The root of a running (or paused) container, opened through its init
/// (pinned by a pidfd): (fd, uid, gid), the ids being the host ids of the
/// container's root user. The caller closes fd.
#[pyfunction]
fn copy_root_of_running(py: Python<'_>, run_root: PathBuf, id: String) -> PyResult<(i32, u32, u32)> {
    use std::os::fd::IntoRawFd;
    let r = py.detach(|| capsa_core::copy::roots::running(&run_root, &id)).map_err(|e| copy_error(py, e))?;
    Ok((r.fd.into_raw_fd(), r.uid, r.gid))
}

/// The overlay root of a container that is not running, as a detached
/// mount attached nowhere (it goes when fd is closed); read-only unless
/// writable. The caller closes fd.
#[pyfunction]
#[pyo3(signature = (overlay, writable=false))]
fn copy_root_of_overlay(py: Python<'_>, overlay: OverlayArg, writable: bool) -> PyResult<i32> {
    use std::os::fd::IntoRawFd;
    let ov = to_overlay(overlay);
    let fd = py.detach(|| capsa_core::copy::roots::overlay(&ov, writable)).map_err(|e| copy_error(py, e))?;
    Ok(fd.into_raw_fd())
}

/// What is at path in the root dir_fd ("dir", "file", "symlink", "other"), or None; resolved in that root.
#[pyfunction]
#[pyo3(signature = (dir_fd, path, follow=true))]
fn copy_lookup(py: Python<'_>, dir_fd: i32, path: PathBuf, follow: bool) -> PyResult<Option<&'static str>> {
    let root = borrowed_fd(dir_fd)?;
    py.detach(|| capsa_core::copy::lookup(root, &path, follow)).map_err(|e| copy_error(py, e))
}

/// Write a tar of path (resolved in the root dir_fd, its last component not
/// followed), named name, to out_fd. Returns the warnings.
#[pyfunction]
fn copy_tar_out(py: Python<'_>, dir_fd: i32, path: PathBuf, name: std::ffi::OsString, out_fd: i32) -> PyResult<Vec<String>> {
    let (root, out) = (borrowed_fd(dir_fd)?, borrowed_fd(out_fd)?);
    let src = capsa_core::copy::Source { root, path: &path, name: &name };
    py.detach(|| capsa_core::copy::write_to(&src, out)).map_err(|e| copy_error(py, e))
}

/// Python's signal handlers, run while a copy is under way (the GIL taken
/// for a moment); an exception from one (KeyboardInterrupt) stops the copy.
fn copy_interrupted(raised: &mut Option<PyErr>) -> impl FnMut() -> bool + '_ {
    move || {
        if raised.is_none() {
            *raised = Python::attach(|py| py.check_signals()).err();
        }
        raised.is_some()
    }
}

fn copy_result<T>(py: Python<'_>, result: error::Result<T>, raised: Option<PyErr>) -> PyResult<T> {
    match (result, raised) {
        (_, Some(e)) => Err(e),
        (r, None) => r.map_err(|e| copy_error(py, e)),
    }
}

/// Extract the tar read from in_fd into the directory path of the root
/// dir_fd: into a container (owned by uid:gid) or onto the host. Returns the warnings.
#[pyfunction]
fn copy_tar_in(py: Python<'_>, in_fd: i32, dir_fd: i32, path: PathBuf, to_container: bool, uid: u32, gid: u32) -> PyResult<Vec<String>> {
    let (input, root) = (borrowed_fd(in_fd)?, borrowed_fd(dir_fd)?);
    let dest = capsa_core::copy::Dest { root, path: &path, policy: copy_policy(to_container, uid, gid) };
    let mut raised = None;
    let result = py.detach(|| capsa_core::copy::read_from(input, &dest, &mut copy_interrupted(&mut raised)));
    copy_result(py, result, raised).map(|(_, w)| w)
}

/// copy_tar_out piped into copy_tar_in: returns (warnings, first_skipped),
/// first_skipped saying that what was named was not copied (see the warnings).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn copy_between(
    py: Python<'_>,
    src_dir_fd: i32,
    src_path: PathBuf,
    name: std::ffi::OsString,
    dest_dir_fd: i32,
    dest_path: PathBuf,
    to_container: bool,
    uid: u32,
    gid: u32,
) -> PyResult<(Vec<String>, bool)> {
    let (src_root, dest_root) = (borrowed_fd(src_dir_fd)?, borrowed_fd(dest_dir_fd)?);
    let src = capsa_core::copy::Source { root: src_root, path: &src_path, name: &name };
    let dest = capsa_core::copy::Dest { root: dest_root, path: &dest_path, policy: copy_policy(to_container, uid, gid) };
    let mut raised = None;
    let result = py.detach(|| capsa_core::copy::copy(&src, &dest, &mut copy_interrupted(&mut raised)));
    let (done, warnings) = copy_result(py, result, raised)?;
    Ok((warnings, done.first_skipped))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ContainerError", m.py().get_type::<ContainerError>())?;
    m.add("OCI_VERSION", state::OCI_VERSION)?;
    m.add_function(wrap_pyfunction!(create, m)?)?;
    m.add_function(wrap_pyfunction!(start, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(state_json, m)?)?;
    m.add_function(wrap_pyfunction!(list, m)?)?;
    m.add_function(wrap_pyfunction!(kill, m)?)?;
    m.add_function(wrap_pyfunction!(delete, m)?)?;
    m.add_function(wrap_pyfunction!(ps, m)?)?;
    m.add_function(wrap_pyfunction!(wait, m)?)?;
    m.add_function(wrap_pyfunction!(parse_signal, m)?)?;
    m.add_function(wrap_pyfunction!(exec, m)?)?;
    m.add_function(wrap_pyfunction!(pause, m)?)?;
    m.add_function(wrap_pyfunction!(resume, m)?)?;
    m.add_function(wrap_pyfunction!(update, m)?)?;
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    m.add_function(wrap_pyfunction!(read_image_file, m)?)?;
    m.add("LayerError", layer_error_type(m.py())?)?;
    m.add_function(wrap_pyfunction!(extract_layer, m)?)?;
    m.add_function(wrap_pyfunction!(extract_layers, m)?)?;
    m.add("CopyError", copy_error_type(m.py())?)?;
    m.add_function(wrap_pyfunction!(copy_root_of_running, m)?)?;
    m.add_function(wrap_pyfunction!(copy_root_of_overlay, m)?)?;
    m.add_function(wrap_pyfunction!(copy_lookup, m)?)?;
    m.add_function(wrap_pyfunction!(copy_tar_out, m)?)?;
    m.add_function(wrap_pyfunction!(copy_tar_in, m)?)?;
    m.add_function(wrap_pyfunction!(copy_between, m)?)?;
    Ok(())
}
