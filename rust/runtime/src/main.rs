//! capsa-runtime: the runc command contract over capsa-core, for podman
//! (conmon), containerd (go-runc) and people who benchmark runtimes.
//!
//! Native, so that a container start costs no interpreter start: every
//! command is a call into the same core the Python API uses.

mod args;
mod commands;
mod resources;
mod templates;

use args::{usage, Table, Takes, UsageError};
use std::io::Write;

const USAGE: &str = "usage: capsa-runtime [global options] COMMAND [options] [ID]

global options:
  --root DIR              state directory (default /run/capsa/runtime)
  --log FILE              also write errors to FILE
  --log-format text|json  format of --log lines (default text)
  --debug                 debug lines of each step (stderr, or --log)
  --systemd-cgroup        cgroups through systemd (not supported: fails on create)
  -v, --version           print the version

commands:
  create ID --bundle DIR [--pid-file F] [--console-socket S] [--no-pivot] [--no-new-keyring] [--preserve-fds N]
  start ID
  run ID --bundle DIR [--detach] [create options]   exits with the container's exit code
  state ID
  kill [--all] ID [SIGNAL]
  delete [--force] ID
  ps [--format table|json] ID [ps options]
  list [--format table|json] [--quiet]
  features
  spec [--bundle DIR]
  exec [options] ID COMMAND [ARG...] | exec [options] --process FILE ID
       -t/--tty --console-socket S -d/--detach --pid-file F -e/--env K=V --cwd DIR
       -u/--user UID[:GID] -g/--additional-gids GID --cap CAP --no-new-privs --preserve-fds N
       exits with the process's exit code (128+N if killed by signal N) unless detached
  pause ID | resume ID
  update [--resources FILE|-] [--memory N --memory-reservation N --memory-swap N --cpu-shares N
         --cpu-quota N --cpu-period N --cpuset-cpus L --cpuset-mems L --pids-limit N --blkio-weight N] ID
  events [--stats] [--interval SECONDS] ID   one stats JSON line with --stats, else one per interval
";

const GLOBALS: Table = &[
    ("root", &[], Takes::Value),
    ("log", &[], Takes::Value),
    ("log-format", &[], Takes::Value),
    ("debug", &[], Takes::Flag),
    ("systemd-cgroup", &[], Takes::Flag),
    ("version", &["-v"], Takes::Flag),
    ("help", &["-h"], Takes::Flag),
    ("rootless", &[], Takes::Value),
    ("criu", &[], Takes::Value),
];

/// Commands runc has that capsa-runtime does not do yet.
/// The commands capsa-runtime has (commands.rs dispatches them).
const COMMANDS: &[&str] =
    &["create", "run", "start", "state", "kill", "delete", "ps", "list", "features", "spec", "exec", "pause", "resume", "update", "events"];

const NOT_YET: &[&str] = &["checkpoint", "restore"];

/// A failure: a usage error (exit 2), a failed operation (exit 1), or one
/// with an exit code of its own (exec's 255, as runc).
pub enum Failure {
    Usage(String),
    Failed(String),
    Exit(i32, String),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Failure::Usage(e.0)
    }
}

impl From<capsa_core::error::Error> for Failure {
    fn from(e: capsa_core::error::Error) -> Self {
        Failure::Failed(e.message)
    }
}

/// A line on stdout; a closed stdout is not worth dying over.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// Where --debug lines go: (the --log file, JSON) or stderr.
static DEBUG_LOG: std::sync::OnceLock<(Option<String>, bool)> = std::sync::OnceLock::new();

/// A --debug line from the core: in --log when given, else on stderr, logrus-style as runc's.
fn log_debug(msg: &str) {
    let Some((log, json)) = DEBUG_LOG.get() else { return };
    match log {
        Some(path) => append_log(path, &log_line("debug", *json, msg)),
        None => eprintln!("{}", log_line("debug", false, msg)),
    }
}

fn log_line(level: &str, json: bool, msg: &str) -> String {
    let now = capsa_core::state::rfc3339_now();
    if json {
        serde_json::json!({"level": level, "msg": msg, "time": now}).to_string()
    } else {
        format!("time={now:?} level={level} msg={msg:?}")
    }
}

/// The error on stderr, and in --log as text or JSON (what containerd reads).
fn log_error(log: Option<&str>, json: bool, msg: &str) {
    eprintln!("capsa-runtime: {msg}");
    let Some(path) = log else { return };
    append_log(path, &log_line("error", json, msg));
}

fn append_log(path: &str, line: &str) {
    let appended = std::fs::OpenOptions::new().append(true).create(true).open(path).and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = appended {
        eprintln!("capsa-runtime: cannot write log {path}: {e}");
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (globals, rest) = match args::parse(&argv, &[GLOBALS], true) {
        Ok(parsed) => parsed,
        Err(e) => {
            log_error(None, false, &e.0);
            std::process::exit(2);
        }
    };
    let log = globals.value("log").map(str::to_string);
    let json_log = globals.value("log-format") == Some("json");
    capsa_core::debug::set_warning_sink(|w| eprintln!("capsa-runtime: warning: {w}"));
    if globals.flag("debug") {
        let _ = DEBUG_LOG.set((log.clone(), json_log));
        capsa_core::debug::set_sink(log_debug);
    }
    let code = match dispatch(&globals, &rest) {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            log_error(log.as_deref(), json_log, &msg);
            2
        }
        Err(Failure::Failed(msg)) => {
            log_error(log.as_deref(), json_log, &msg);
            1
        }
        Err(Failure::Exit(code, msg)) => {
            log_error(log.as_deref(), json_log, &msg);
            code
        }
    };
    std::process::exit(code);
}

fn dispatch(globals: &args::Opts, rest: &[String]) -> Result<i32, Failure> {
    if globals.flag("version") {
        out(&format!("capsa-runtime version {}\nspec: {}", env!("CARGO_PKG_VERSION"), capsa_core::state::OCI_VERSION));
        return Ok(0);
    }
    let Some((command, cmd_args)) = rest.split_first() else {
        print!("{USAGE}");
        return Ok(0);
    };
    if globals.flag("help") || matches!(command.as_str(), "help" | "--help" | "-h") {
        print!("{USAGE}");
        return Ok(0);
    }
    if !matches!(globals.value("log-format"), None | Some("text") | Some("json")) {
        return Err(usage("--log-format takes text or json").into());
    }
    if matches!(cmd_args.first().map(String::as_str), Some("-h" | "--help")) {
        // As runc: help for a command it has, "No help topic" (an error) for one it has not.
        if !COMMANDS.contains(&command.as_str()) {
            return Err(usage(format!("No help topic for '{command}'")).into());
        }
        print!("{USAGE}");
        return Ok(0);
    }
    if NOT_YET.contains(&command.as_str()) {
        return Err(usage(format!("{command} is not implemented yet in capsa-runtime")).into());
    }
    let cli = commands::Cli::new(globals);
    cli.dispatch(command, cmd_args)
}
