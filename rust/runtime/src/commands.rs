//! One method per runc command, each a call into capsa-core.

use crate::args::{self, usage, Opts, Table, Takes};
use crate::{out, resources, templates, Failure};
use capsa_core::container::{self, CreateOptions};
use capsa_core::control;
use capsa_core::exec::{self, ExecOptions, Overrides, ToRun};
use std::path::{Path, PathBuf};

const CREATE: Table = &[
    ("bundle", &["-b"], Takes::Value),
    ("pid-file", &[], Takes::Value),
    ("console-socket", &[], Takes::Value),
    ("no-pivot", &[], Takes::Flag),
    ("no-new-keyring", &[], Takes::Flag),
    ("preserve-fds", &[], Takes::Value),
];
/// run's options besides create's.
const RUN: Table = &[("detach", &["-d"], Takes::Flag), ("keep", &[], Takes::Flag)];
const NONE: Table = &[];
const KILL: Table = &[("all", &["-a"], Takes::Flag)];
const DELETE: Table = &[("force", &["-f"], Takes::Flag)];
const PS: Table = &[("format", &["-f"], Takes::Value)];
const LIST: Table = &[("format", &["-f"], Takes::Value), ("quiet", &["-q"], Takes::Flag)];
const SPEC: Table = &[("bundle", &["-b"], Takes::Value), ("rootless", &[], Takes::Flag)];
const EXEC: Table = &[
    ("process", &["-p"], Takes::Value),
    ("tty", &["-t"], Takes::Flag),
    ("console-socket", &[], Takes::Value),
    ("detach", &["-d"], Takes::Flag),
    ("pid-file", &[], Takes::Value),
    ("env", &["-e"], Takes::List),
    ("cwd", &[], Takes::Value),
    ("user", &["-u"], Takes::Value),
    ("additional-gids", &["-g"], Takes::List),
    ("cap", &["-c"], Takes::List),
    ("no-new-privs", &[], Takes::Flag),
    ("preserve-fds", &[], Takes::Value),
    ("ignore-paused", &[], Takes::Flag),
    ("apparmor", &[], Takes::Value),
    ("process-label", &[], Takes::Value),
    ("cgroup", &[], Takes::List),
];
const EVENTS: Table = &[("stats", &[], Takes::Flag), ("interval", &[], Takes::Value)];

pub struct Cli {
    root: PathBuf,
    systemd_cgroup: bool,
}

type Outcome = Result<i32, Failure>;

/// The one container id a command takes.
fn id(args: &[String]) -> Result<&str, Failure> {
    match args {
        [] => Err(usage("a container id is required").into()),
        [id] => Ok(id),
        [_, extra @ ..] => Err(usage(format!("unexpected arguments: {}", extra.join(" "))).into()),
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

impl Cli {
    pub fn new(globals: &Opts) -> Cli {
        let root = globals.value("root").map(String::from).or_else(|| std::env::var("CAPSA_RUNTIME_ROOT").ok());
        Cli { root: PathBuf::from(root.unwrap_or_else(|| "/run/capsa/runtime".into())), systemd_cgroup: globals.flag("systemd-cgroup") }
    }

    pub fn dispatch(&self, command: &str, argv: &[String]) -> Outcome {
        // exec and ps pass what follows the id on (the command, ps(1) options).
        let parse = |table: Table, stop: bool| args::parse(argv, &[table], stop);
        match command {
            "create" => self.create(parse(CREATE, false)?),
            "run" => self.run(args::parse(argv, &[CREATE, RUN], false)?),
            "start" => self.start(parse(NONE, false)?),
            "state" => self.state(parse(NONE, false)?),
            "kill" => self.kill(parse(KILL, false)?),
            "delete" => self.delete(parse(DELETE, false)?),
            "ps" => {
                let (mut opts, mut rest) = parse(PS, true)?;
                if rest.first().is_some_and(|a| a.starts_with('-')) {
                    (opts, rest) = args::parse(&rest, &[PS], true)?;
                }
                self.ps(opts, rest)
            }
            "list" => self.list(parse(LIST, false)?),
            "features" => {
                out(&pretty(&templates::features()));
                Ok(0)
            }
            "spec" => self.spec(parse(SPEC, false)?),
            "exec" => self.exec(parse(EXEC, true)?),
            "pause" => self.pause(parse(NONE, false)?),
            "resume" => self.resume(parse(NONE, false)?),
            "update" => self.update(parse(resources::UPDATE, false)?),
            "events" => self.events(parse(EVENTS, false)?),
            _ => Err(usage(format!("unknown command {command:?}; see capsa-runtime --help")).into()),
        }
    }

    fn create_options(&self, opts: &Opts, start_in_process: bool) -> Result<(PathBuf, CreateOptions), Failure> {
        let bundle = match opts.value("bundle") {
            Some(b) => PathBuf::from(b),
            None => std::env::current_dir().map_err(|e| Failure::Failed(format!("current directory: {e}")))?,
        };
        let create = CreateOptions {
            console_socket: opts.value("console-socket").map(PathBuf::from),
            pid_file: opts.value("pid-file").map(PathBuf::from),
            no_pivot: opts.flag("no-pivot"),
            preserve_fds: opts.number("preserve-fds")?,
            systemd_cgroup: self.systemd_cgroup,
            start_in_process,
            ..Default::default()
        };
        Ok((bundle, create))
    }

    fn create(&self, (opts, args): (Opts, Vec<String>)) -> Outcome {
        let id = id(&args)?;
        let (bundle, create) = self.create_options(&opts, false)?;
        container::create(&self.root, id, &bundle, &create)?;
        Ok(0)
    }

    fn run(&self, (opts, args): (Opts, Vec<String>)) -> Outcome {
        let id = id(&args)?;
        let (bundle, mut create) = self.create_options(&opts, true)?;
        create.keep = opts.flag("keep");
        // In the foreground, signals sent to us are meant for the container (as with runc).
        let code = container::run(&self.root, id, &bundle, create, opts.flag("detach"), container::wait_forwarding_signals)?;
        Ok(code.unwrap_or(0))
    }

    fn start(&self, (_, args): (Opts, Vec<String>)) -> Outcome {
        container::start(&self.root, id(&args)?)?;
        Ok(0)
    }

    fn state(&self, (_, args): (Opts, Vec<String>)) -> Outcome {
        let (st, status) = container::state(&self.root, id(&args)?)?;
        out(&capsa_core::state::pretty_json(&st, status));
        Ok(0)
    }

    fn kill(&self, (opts, args): (Opts, Vec<String>)) -> Outcome {
        let (cid, signal) = match args.as_slice() {
            [cid] => (cid, "SIGTERM"),
            [cid, signal] => (cid, signal.as_str()),
            [] => return Err(usage("a container id is required").into()),
            [_, _, extra @ ..] => return Err(usage(format!("unexpected arguments: {}", extra.join(" "))).into()),
        };
        let signal = container::parse_signal(signal)?;
        container::kill(&self.root, cid, signal, opts.flag("all"))?;
        Ok(0)
    }

    fn delete(&self, (opts, args): (Opts, Vec<String>)) -> Outcome {
        container::delete(&self.root, id(&args)?, opts.flag("force"))?;
        Ok(0)
    }

    fn ps(&self, opts: Opts, args: Vec<String>) -> Outcome {
        let Some((cid, ps_args)) = args.split_first() else {
            return Err(usage("a container id is required").into());
        };
        let pids = container::ps(&self.root, cid)?;
        match opts.value("format").unwrap_or("table") {
            "json" => {
                out(&serde_json::to_string(&pids).unwrap_or_default());
                Ok(0)
            }
            "table" => {
                let ps_args: Vec<&str> = if ps_args.is_empty() { vec!["-ef"] } else { ps_args.iter().map(String::as_str).collect() };
                let listing =
                    std::process::Command::new("ps").args(&ps_args).output().map_err(|e| Failure::Failed(format!("run ps: {e}")))?;
                if !listing.status.success() {
                    return Err(Failure::Failed(format!("ps {}: {}", ps_args.join(" "), String::from_utf8_lossy(&listing.stderr).trim())));
                }
                let text = String::from_utf8_lossy(&listing.stdout);
                let mut lines = text.lines();
                let header = lines.next().unwrap_or("");
                let column = header.split_whitespace().position(|c| c == "PID").unwrap_or(1);
                out(header);
                for line in lines {
                    let pid = line.split_whitespace().nth(column).and_then(|p| p.parse::<i32>().ok());
                    if pid.is_some_and(|p| pids.contains(&p)) {
                        out(line);
                    }
                }
                Ok(0)
            }
            other => Err(usage(format!("unknown format {other:?}: use table or json")).into()),
        }
    }

    fn list(&self, (opts, _): (Opts, Vec<String>)) -> Outcome {
        let all = container::list(&self.root)?;
        let format = opts.value("format").unwrap_or("table");
        if opts.flag("quiet") {
            for (st, _) in &all {
                out(&st.id);
            }
            return Ok(0);
        }
        match format {
            "json" => {
                out(&capsa_core::state::list_json(&all));
            }
            "table" => {
                let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
                for (st, status) in &all {
                    let owner = if st.owner.is_empty() { "root".to_string() } else { st.owner.clone() };
                    rows.push([
                        st.id.clone(),
                        st.pid.to_string(),
                        status.as_str().into(),
                        st.bundle.display().to_string(),
                        st.created.clone(),
                        owner,
                    ]);
                }
                let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
                for row in &rows {
                    let cells: Vec<String> = row.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
                    out(cells.join("   ").trim_end());
                }
            }
            other => return Err(usage(format!("unknown format {other:?}: use table or json")).into()),
        }
        Ok(0)
    }

    fn spec(&self, (opts, _): (Opts, Vec<String>)) -> Outcome {
        let path = Path::new(opts.value("bundle").unwrap_or(".")).join("config.json");
        let text = pretty(&templates::default_spec()) + "\n";
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path);
        match file {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(text.as_bytes()).map_err(|e| Failure::Failed(format!("write {}: {e}", path.display())))?;
                Ok(0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(usage(format!("{} already exists: remove it first", path.display())).into())
            }
            Err(e) => Err(Failure::Failed(format!("create {}: {e}", path.display()))),
        }
    }

    /// A failed exec exits 255, as runc's does (engines tell it from the process's own codes).
    fn exec(&self, parsed: (Opts, Vec<String>)) -> Outcome {
        self.exec_process(parsed).map_err(|e| match e {
            Failure::Failed(msg) => Failure::Exit(255, msg),
            other => other,
        })
    }

    fn exec_process(&self, (opts, args): (Opts, Vec<String>)) -> Outcome {
        let Some((cid, command)) = args.split_first() else {
            return Err(usage("a container id is required").into());
        };
        let additional_gids = opts
            .list("additional-gids")
            .iter()
            .map(|g| g.parse::<u32>().map_err(|_| usage(format!("--additional-gids takes numbers, not {g:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let process = opts.value("process").map(Path::new);
        if process.is_none() && command.is_empty() {
            return Err(usage("exec needs a command after the container id, or --process FILE").into());
        }
        if process.is_some() && !command.is_empty() {
            return Err(usage(format!("exec --process takes no command: unexpected {}", command.join(" "))).into());
        }
        let overrides = Overrides {
            args: command.to_vec(),
            env: opts.list("env").to_vec(),
            cwd: opts.value("cwd").map(String::from),
            user: opts.value("user").map(String::from),
            additional_gids,
            caps: opts.list("cap").to_vec(),
            no_new_privs: opts.flag("no-new-privs").then_some(true),
            tty: opts.flag("tty"),
        };
        let detach = opts.flag("detach");
        let exec_opts = ExecOptions {
            console_socket: opts.value("console-socket").map(PathBuf::from),
            pid_file: opts.value("pid-file").map(PathBuf::from),
            preserve_fds: opts.number("preserve-fds")?,
            relay_terminal: !detach,
            ignore_paused: opts.flag("ignore-paused"),
            sub_cgroups: opts.list("cgroup").to_vec(),
        };
        let to_run = ToRun::load(None, process, overrides)?;
        let started = exec::exec(&self.root, cid, &to_run, &exec_opts)?;
        if detach {
            return Ok(0);
        }
        // In the foreground, signals sent to us are meant for the process (as with runc).
        let code = match started.terminal {
            Some(master) => capsa_core::tty::relay(master, started.pid)?,
            None => container::wait_forwarding_signals(started.pid)?,
        };
        Ok(code)
    }

    fn pause(&self, (_, args): (Opts, Vec<String>)) -> Outcome {
        control::pause(&self.root, id(&args)?)?;
        Ok(0)
    }

    fn resume(&self, (_, args): (Opts, Vec<String>)) -> Outcome {
        control::resume(&self.root, id(&args)?)?;
        Ok(0)
    }

    fn update(&self, (opts, args): (Opts, Vec<String>)) -> Outcome {
        let cid = id(&args)?;
        let (text, origin) = match opts.value("resources") {
            Some("-") => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| Failure::Failed(format!("read resources from standard input: {e}")))?;
                (text, "standard input".to_string())
            }
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read resources file {path}: {e}")))?;
                (text, path.to_string())
            }
            None => (resources::from_flags(&opts)?.to_string(), "the command line".to_string()),
        };
        let r = control::parse_resources(&text, &origin)?;
        control::update(&self.root, cid, &r)?;
        Ok(0)
    }

    fn events(&self, (opts, args): (Opts, Vec<String>)) -> Outcome {
        let cid = id(&args)?;
        if opts.flag("stats") {
            out(&control::stats(&self.root, cid)?.to_string());
            return Ok(0);
        }
        let interval = resources::parse_duration(opts.value("interval").unwrap_or("5s"))?;
        // runc's stream: a stats event per interval and an oom event per OOM kill, until the container stops.
        control::events(&self.root, cid, interval, &mut |line| out(line))?;
        Ok(0)
    }
}
