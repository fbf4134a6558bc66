//! One error type for the whole core: a message that names the step, the
//! path and the errno, the way the user should read it.

use nix::errno::Errno;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        Error(m.into())
    }

    /// `step path: ERRNO (description)`, e.g. `mount proc on /proc: EPERM (Operation not permitted)`.
    pub fn sys(step: &str, path: impl AsRef<Path>, errno: Errno) -> Self {
        Error(format!("{step} {}: {}", path.as_ref().display(), errno_text(errno)))
    }

    pub fn io(step: &str, path: impl AsRef<Path>, err: std::io::Error) -> Self {
        let errno = Errno::from_raw(err.raw_os_error().unwrap_or(0));
        Error::sys(step, path, errno)
    }
}

/// `EPERM (Operation not permitted)`: the name for people who grep, the text for the rest.
pub fn errno_text(errno: Errno) -> String {
    format!("{errno:?} ({})", errno.desc())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
