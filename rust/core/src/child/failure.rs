//! What went wrong in the container's init, said without allocating: the
//! child of a multi-threaded process may not touch the heap, so messages are
//! formatted into a stack buffer and sent to the parent as they are.

use std::ffi::CStr;
use std::fmt::Write;

/// A failed step in the child: `mount proc on /proc: EPERM (Operation not permitted)`.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    pub step: &'static str,
    pub detail: Option<&'a CStr>,
    pub path: Option<&'a CStr>,
    pub errno: i32,
    /// Said after the quoted path instead of an errno: `exec: "x": executable file not found in $PATH`.
    pub verdict: Option<&'static str>,
}

impl<'a> Failure<'a> {
    pub fn new(step: &'static str, path: &'a CStr, errno: i32) -> Self {
        Failure { step, detail: None, path: Some(path), errno, verdict: None }
    }

    pub fn with_detail(step: &'static str, detail: &'a CStr, path: &'a CStr, errno: i32) -> Self {
        Failure { step, detail: Some(detail), path: Some(path), errno, verdict: None }
    }

    pub fn bare(step: &'static str, errno: i32) -> Self {
        Failure { step, detail: None, path: None, errno, verdict: None }
    }

    /// `step "path": verdict`, the way runc words a missing executable (podman matches on it).
    pub fn verdict(step: &'static str, path: &'a CStr, verdict: &'static str) -> Self {
        Failure { step, detail: None, path: Some(path), errno: 0, verdict: Some(verdict) }
    }

    /// The message, in a stack buffer.
    pub fn render(&self, out: &mut StackText) {
        fn text(c: &CStr) -> &str {
            c.to_str().unwrap_or("?")
        }
        let _ = out.write_str(self.step);
        if let (Some(verdict), Some(p)) = (self.verdict, self.path) {
            let _ = write!(out, " \"{}\": {verdict}", text(p));
            return;
        }
        match (self.detail, self.path) {
            (Some(d), Some(p)) => {
                let _ = write!(out, " {} on {}", text(d), text(p));
            }
            (None, Some(p)) => {
                let _ = write!(out, " {}", text(p));
            }
            _ => {}
        }
        if self.errno != 0 {
            let e = nix::errno::Errno::from_raw(self.errno);
            let _ = write!(out, ": {e:?} ({})", e.desc());
        }
    }
}

/// A fixed-size text buffer that `write!` can fill without the heap; it truncates.
pub struct StackText {
    buf: [u8; 1024],
    len: usize,
}

impl StackText {
    pub fn new() -> Self {
        StackText { buf: [0; 1024], len: 0 }
    }

    /// Raw bytes (a NUL, a number), truncated like text.
    pub fn push_bytes(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for StackText {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// In a parent (where allocating is fine), a child-side failure as the core's error.
impl From<Failure<'_>> for crate::error::Error {
    fn from(f: Failure<'_>) -> Self {
        let mut rendered = StackText::new();
        f.render(&mut rendered);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        crate::error::Error {
            message: text(rendered.as_bytes()),
            cause: Some(crate::error::Cause {
                step: f.step.to_string(),
                path: f.path.map_or(String::new(), |p| text(p.to_bytes())),
                errno: f.errno,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_step_detail_path_errno() {
        let mut t = StackText::new();
        Failure::with_detail("mount", c"proc", c"/proc", libc::EPERM).render(&mut t);
        assert_eq!(std::str::from_utf8(t.as_bytes()).unwrap(), "mount proc on /proc: EPERM (Operation not permitted)");
        let mut t = StackText::new();
        Failure::bare("setsid", 0).render(&mut t);
        assert_eq!(t.as_bytes(), b"setsid");
        let mut t = StackText::new();
        Failure::verdict("exec:", c"nosuch", "executable file not found in $PATH").render(&mut t);
        assert_eq!(std::str::from_utf8(t.as_bytes()).unwrap(), r#"exec: "nosuch": executable file not found in $PATH"#);
    }
}
