//! capsa-monitor: the supervisor of one detached container, as podman's
//! conmon. `capsa run -d` starts it with the path of a JSON job and a pipe
//! on fd 3; it detaches, becomes a child subreaper, creates the container
//! through capsa-core (so the container is its child), says `ok <pid>` or
//! `error <message>` on the pipe fd given as its second argument, then:
//! - copies the container's stdout/stderr into `<id>-json.log` as Docker's
//!   json-file lines, `{"log":"...\n","stream":"stdout","time":"..."}`;
//! - forwards the signals it gets to the container;
//! - when the container exits, records exit code, finish time and OOM kill
//!   in `status.json` (written atomically; capsa's Python side reads it and
//!   checks that this monitor is alive, so a killed monitor never leaves a
//!   stale "running"), removes the container's cgroup and runtime state;
//! - applies the restart policy, and `--rm` (removes the container dir).
//!
//! No threads, no async runtime: one poll loop over two pipes and a signalfd.

use capsa_core::container::{self, CreateOptions};
use capsa_core::overlay::Overlay;
use capsa_core::state::{self, State};
use serde::Deserialize;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Job {
    id: String,
    runtime_root: PathBuf,
    bundle: PathBuf,
    /// The container's own dir: status.json, the log, the stop marker; removed with auto_remove.
    dir: PathBuf,
    lower: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    /// no | always | unless-stopped | on-failure
    restart: String,
    #[serde(default)]
    max_retries: u32,
    #[serde(default)]
    auto_remove: bool,
    #[serde(default)]
    restart_count: u32,
}

/// The ready pipe's fd, from argv[2] (set once, before anything else runs).
static READY_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
/// Docker splits log lines longer than this into partial entries.
const MAX_LINE: usize = 16 * 1024;
const FORWARDED: [i32; 6] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<i64>().ok());
    match args.first().map(String::as_str) {
        // A restart, after the back-off: create the container again.
        Some("--start") if args.len() == 4 => {
            let mut m = Monitor::new(load_job(&args[1]), num(2).unwrap_or(0) as u32, num(3).unwrap_or(100) as u64);
            std::process::exit(m.run_start(false));
        }
        // The lean phase: the container runs; copy its output, wait for its exit.
        Some("--supervise") if args.len() == 8 => {
            let mut m = Monitor::new(load_job(&args[1]), num(2).unwrap_or(0) as u32, num(3).unwrap_or(100) as u64);
            m.started_at = args[7].clone();
            let fd = |i| unsafe { OwnedFd::from_raw_fd(num(i).unwrap_or(-1) as RawFd) };
            std::process::exit(m.run_supervise(num(4).unwrap_or(0) as i32, fd(5), fd(6)));
        }
        _ => {}
    }
    let (Some(job_path), Some(fd)) = (args.first(), num(1)) else {
        eprintln!("usage: capsa-monitor JOB.json READY-FD (started by capsa run -d)");
        std::process::exit(2);
    };
    READY_FD.store(fd as RawFd, std::sync::atomic::Ordering::Relaxed);
    let job = load_job(job_path);
    // Detach: the spawner reaps our parent at once, and we live on in our own session.
    unsafe {
        libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC);
        match libc::fork() {
            -1 => {
                report("error\t125\tcapsa-monitor: fork failed");
                libc::_exit(1)
            }
            0 => {}
            _ => libc::_exit(0),
        }
        libc::setsid();
        libc::chdir(c"/".as_ptr());
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
    }
    let restart_count = job.restart_count;
    std::process::exit(Monitor::new(job, restart_count, 100).run_start(true));
}

fn load_job(path: &str) -> Job {
    match std::fs::read(path).map_err(|e| e.to_string()).and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string())) {
        Ok(j) => j,
        Err(e) => {
            report(&format!("error\t125\tcapsa-monitor: read job {path}: {e}"));
            std::process::exit(2);
        }
    }
}

/// Replace this process with a fresh image of the monitor (same pid, so the
/// container stays our child): creating a container touches far more code
/// (spec parsing, the plan) than supervising one, and a fresh image keeps only
/// what the next phase uses resident. Returns only if exec failed.
fn reexec(args: &[String], keep: &[RawFd]) {
    for fd in keep {
        unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
    }
    let c: Vec<std::ffi::CString> = std::iter::once("capsa-monitor".to_string())
        .chain(args.iter().cloned())
        .map(|a| std::ffi::CString::new(a).unwrap_or_default())
        .collect();
    let mut argv: Vec<*const libc::c_char> = c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    unsafe { libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr()) };
    for fd in keep {
        unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// One line on the ready pipe, then close it: the spawner reads to EOF.
fn report(line: &str) {
    let fd = READY_FD.swap(-1, std::sync::atomic::Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    unsafe {
        let text = format!("{line}\n");
        libc::write(fd, text.as_ptr() as *const libc::c_void, text.len());
        libc::close(fd);
    }
}

struct Monitor {
    job: Job,
    log: Option<std::fs::File>,
    signals: OwnedFd,
    restart_count: u32,
    backoff_ms: u64,
    started_at: String,
}

impl Monitor {
    fn new(job: Job, restart_count: u32, backoff_ms: u64) -> Monitor {
        // SIGCHLD and the forwarded signals are read from a signalfd; the mask
        // (and any pending SIGCHLD) survives our re-execs.
        let signals = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            for s in FORWARDED {
                libc::sigaddset(&mut set, s);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            OwnedFd::from_raw_fd(libc::signalfd(-1, &set, libc::SFD_CLOEXEC))
        };
        let log_path = job.dir.join(format!("{}-json.log", job.id));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).ok();
        Monitor { job, log, signals, restart_count, backoff_ms, started_at: String::new() }
    }

    /// Start the container, then hand over to the supervise phase.
    fn run_start(&mut self, first: bool) -> i32 {
        let (pid, out, err) = match self.start() {
            Ok(started) => started,
            Err(e) => {
                if first {
                    report(&format!("error\t{}\t{}", e.start_exit_code(), e.message));
                    return 1;
                }
                // A restart that cannot start ends the container with the reason.
                self.write_status("exited", 0, Some(e.start_exit_code()), false, &e.message);
                self.finish();
                return 0;
            }
        };
        self.write_status("running", pid, None, false, "");
        if first {
            report(&format!("ok {pid}"));
        }
        let args = [
            "--supervise".to_string(),
            self.job_path(),
            self.restart_count.to_string(),
            self.backoff_ms.to_string(),
            pid.to_string(),
            out.as_raw_fd().to_string(),
            err.as_raw_fd().to_string(),
            self.started_at.clone(),
        ];
        reexec(&args, &[out.as_raw_fd(), err.as_raw_fd()]);
        self.run_supervise(pid, out, err)
    }

    /// Supervise until the container exits; record it, then restart or finish.
    fn run_supervise(&mut self, pid: i32, out: OwnedFd, err: OwnedFd) -> i32 {
        shed_cold_pages();
        let ran = Instant::now();
        let code = self.supervise(pid, out, err);
        let oom = self.oom_killed();
        let _ = container::delete(&self.job.runtime_root, &self.job.id, true);
        if !self.should_restart(code) {
            self.write_status("exited", 0, Some(code), oom, "");
            self.finish();
            return 0;
        }
        self.write_status("restarting", 0, Some(code), oom, "");
        // Docker's back-off: doubles from 100 ms, starts over after a run of 10 s.
        if ran.elapsed() > Duration::from_secs(10) {
            self.backoff_ms = 100;
        }
        if !self.sleep_unless_stopped(Duration::from_millis(self.backoff_ms)) {
            self.write_status("exited", 0, Some(code), oom, "");
            self.finish();
            return 0;
        }
        self.restart_count += 1;
        self.backoff_ms = (self.backoff_ms * 2).min(60_000);
        reexec(&["--start".to_string(), self.job_path(), self.restart_count.to_string(), self.backoff_ms.to_string()], &[]);
        self.run_start(false)
    }

    fn job_path(&self) -> String {
        self.job.dir.join("monitor.json").to_string_lossy().into_owned()
    }

    /// --rm: the container's dir goes (capsa drops its record when it next looks).
    fn finish(&self) {
        if self.job.auto_remove {
            let _ = std::fs::remove_dir_all(&self.job.dir);
        }
    }

    /// Create and start the container with its stdout/stderr on two pipes.
    fn start(&mut self) -> capsa_core::error::Result<(i32, OwnedFd, OwnedFd)> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        unsafe {
            libc::dup2(out_w.as_raw_fd(), 1);
            libc::dup2(err_w.as_raw_fd(), 2);
        }
        drop((out_w, err_w));
        let opts = CreateOptions {
            start_in_process: true,
            start_at_once: true,
            rootfs_overlay: Some(Overlay { lower: self.job.lower.clone(), upper: self.job.upper.clone(), work: self.job.work.clone() }),
            ..Default::default()
        };
        let result = container::create(&self.job.runtime_root, &self.job.id, &self.job.bundle, &opts).and_then(|created| {
            let init = created.init.as_ref().expect("created for an in-process start");
            match init.start() {
                Ok(()) => Ok(created.pid),
                Err(e) => {
                    let _ = container::delete(&self.job.runtime_root, &self.job.id, true);
                    Err(e)
                }
            }
        });
        // Our own stdout/stderr go back to /dev/null so the pipes see EOF when the container's close.
        unsafe {
            libc::dup2(0, 1);
            libc::dup2(0, 2);
        }
        self.started_at = state::rfc3339_now();
        result.map(|pid| (pid, out_r, err_r))
    }

    /// Copy output to the log and forward signals until the container's init exits; its exit code.
    fn supervise(&mut self, pid: i32, out: OwnedFd, err: OwnedFd) -> i32 {
        let mut streams = [Stream::new(out, "stdout"), Stream::new(err, "stderr")];
        let mut code: Option<i32> = None;
        let mut exited_at: Option<Instant> = None;
        let mut buf = [0u8; 8192];
        loop {
            let open: Vec<usize> = (0..2).filter(|&i| streams[i].fd.is_some()).collect();
            if code.is_some() && (open.is_empty() || exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2))) {
                break;
            }
            let mut fds = vec![libc::pollfd { fd: self.signals.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            for &i in &open {
                fds.push(libc::pollfd { fd: streams[i].fd.as_ref().map_or(-1, |f| f.as_raw_fd()), events: libc::POLLIN, revents: 0 });
            }
            let timeout = if code.is_some() { 100 } else { -1 };
            if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) } < 0 {
                continue;
            }
            for (slot, &i) in open.iter().enumerate() {
                if fds[slot + 1].revents == 0 {
                    continue;
                }
                let fd = streams[i].fd.as_ref().map_or(-1, |f| f.as_raw_fd());
                let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
                if n > 0 {
                    streams[i].feed(&buf[..n as usize], &mut self.log);
                } else if n == 0 || fds[slot + 1].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                    streams[i].finish(&mut self.log);
                }
            }
            if fds[0].revents & libc::POLLNVAL != 0 {
                break; // cannot happen unless our signalfd was closed: stop rather than spin
            }
            if fds[0].revents & libc::POLLIN != 0 {
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                let n = unsafe {
                    libc::read(
                        self.signals.as_raw_fd(),
                        &mut info as *mut _ as *mut libc::c_void,
                        std::mem::size_of::<libc::signalfd_siginfo>(),
                    )
                };
                if n <= 0 {
                    continue;
                }
                if info.ssi_signo as i32 == libc::SIGCHLD {
                    // Reap everything: our container init, and orphans handed to us as subreaper.
                    loop {
                        let mut status = 0;
                        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                        if r <= 0 {
                            break;
                        }
                        if r == pid {
                            code = Some(capsa_core::spawn::exit_code(status));
                            exited_at = Some(Instant::now());
                        }
                    }
                } else if code.is_none() {
                    unsafe { libc::kill(pid, info.ssi_signo as i32) };
                }
            }
        }
        for s in &mut streams {
            s.finish(&mut self.log);
        }
        code.unwrap_or(255)
    }

    /// Whether the kernel's OOM killer struck in the container's cgroup (v2 memory.events or v1 memory.oom_control).
    fn oom_killed(&self) -> bool {
        let Ok(st) = State::load(&self.job.runtime_root, &self.job.id) else { return false };
        st.cgroup.dirs.iter().any(|d| {
            ["memory.events", "memory.oom_control"].iter().any(|f| {
                std::fs::read_to_string(d.join(f)).is_ok_and(|t| {
                    t.lines().any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
                })
            })
        })
    }

    fn stop_requested(&self) -> bool {
        self.job.dir.join("stop-requested").exists()
    }

    fn should_restart(&self, code: i32) -> bool {
        if self.stop_requested() {
            return false;
        }
        match self.job.restart.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => code != 0 && (self.job.max_retries == 0 || self.restart_count < self.job.max_retries),
            _ => false,
        }
    }

    /// Sleep, waking early (and saying no) when a stop is requested.
    fn sleep_unless_stopped(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop_requested() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        !self.stop_requested()
    }

    fn write_status(&self, status: &str, pid: i32, exit_code: Option<i32>, oom: bool, error: &str) {
        let me = std::process::id() as i32;
        let finished = if status == "running" { String::new() } else { state::rfc3339_now() };
        let value = serde_json::json!({
            "status": status,
            "pid": pid,
            "exit_code": exit_code,
            "oom_killed": oom,
            "started_at": self.started_at,
            "finished_at": finished,
            "restart_count": self.restart_count,
            "monitor_pid": me,
            "monitor_start": state::process_start(me).unwrap_or(0),
            "error": error,
        });
        let path = self.job.dir.join("status.json");
        let tmp = self.job.dir.join(".status.json.tmp");
        if std::fs::write(&tmp, value.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// Drop this process's page-table entries for read-only file pages (program
/// and library text, and the read-only first segment of each ELF): start-up
/// faulted in, with the kernel's fault-around, far more of them than the
/// supervise loop ever runs. They stay in the page cache; what the loop uses
/// comes back with minor faults. Written pages (data, relro) are never touched.
fn shed_cold_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[5].starts_with('/') {
            continue;
        }
        let read_only_text = f[1] == "r-xp" || (f[1] == "r--p" && u64::from_str_radix(f[2], 16) == Ok(0));
        let Some((start, end)) = f[0].split_once('-') else { continue };
        if let (true, Ok(start), Ok(end)) = (read_only_text, usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) {
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

fn pipe() -> capsa_core::error::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(capsa_core::error::Error::msg(format!("create log pipe: {}", std::io::Error::last_os_error())));
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// One output stream of the container, cut into log lines.
struct Stream {
    fd: Option<OwnedFd>,
    name: &'static str,
    pending: Vec<u8>,
}

impl Stream {
    fn new(fd: OwnedFd, name: &'static str) -> Stream {
        Stream { fd: Some(fd), name, pending: Vec::new() }
    }

    fn feed(&mut self, data: &[u8], log: &mut Option<std::fs::File>) {
        self.pending.extend_from_slice(data);
        while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            write_entry(log, &line, self.name);
        }
        while self.pending.len() >= MAX_LINE {
            let part: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            write_entry(log, &part, self.name);
        }
        if self.pending.capacity() > MAX_LINE * 2 {
            self.pending.shrink_to(MAX_LINE);
        }
    }

    fn finish(&mut self, log: &mut Option<std::fs::File>) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            write_entry(log, &rest, self.name);
        }
        self.fd = None;
    }
}

fn write_entry(log: &mut Option<std::fs::File>, bytes: &[u8], stream: &str) {
    let Some(file) = log.as_mut() else { return };
    let text = String::from_utf8_lossy(bytes);
    let entry = serde_json::json!({ "log": text, "stream": stream, "time": state::rfc3339_now() });
    let mut line = entry.to_string();
    line.push('\n');
    let _ = file.write_all(line.as_bytes());
}
