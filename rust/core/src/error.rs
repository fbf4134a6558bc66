//! One error type for the whole core: a message that names the step, the
//! path and the errno, the way the user should read it.

use nix::errno::Errno;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The one line a user reads.
    pub message: String,
    /// What failed, on what path, with which errno, kept as fields so that
    /// a caller chooses by them (capsa's exit codes 126/127), never by the text.
    pub cause: Option<Cause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub step: String,
    pub path: String,
    pub errno: i32,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        Error { message: m.into(), cause: None }
    }

    /// `step path: ERRNO (description)`, e.g. `mount proc on /proc: EPERM (Operation not permitted)`.
    pub fn sys(step: &str, path: impl AsRef<Path>, errno: Errno) -> Self {
        let path = path.as_ref().display().to_string();
        Error {
            message: format!("{step} {path}: {}", errno_text(errno)),
            cause: Some(Cause { step: step.to_string(), path, errno: errno as i32 }),
        }
    }

    pub fn io(step: &str, path: impl AsRef<Path>, err: std::io::Error) -> Self {
        let errno = Errno::from_raw(err.raw_os_error().unwrap_or(0));
        Error::sys(step, path, errno)
    }

    /// Docker's exit code for a container that could not start: 127 when its
    /// command is not there, 126 when it cannot be executed, 125 for any other
    /// failure of the engine. Chosen by the cause's fields, never the text.
    pub fn start_exit_code(&self) -> i32 {
        match &self.cause {
            Some(c) if c.step == "exec" || c.step == "exec:" => match c.errno {
                libc::ENOENT => 127,
                libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR | libc::ENOTDIR | libc::ELOOP => 126,
                _ => 125,
            },
            _ => 125,
        }
    }

    /// The same cause, told with more words around it.
    pub fn context(self, message: String) -> Self {
        Error { message, ..self }
    }
}

/// `EPERM (Operation not permitted)`: the name for people who grep, the text for the rest.
pub fn errno_text(errno: Errno) -> String {
    format!("{errno:?} ({})", errno.desc())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
