//! `--debug` lines and warnings of the parent side (never the child's: it
//! may not allocate): a front end that wants them sets a sink once; without
//! one a message is never even formatted. The wording of the steps follows runc's
//! debug log where the step is the same, so that people and tools that read
//! runc's find them.

use std::sync::OnceLock;

static SINK: OnceLock<fn(&str)> = OnceLock::new();
static WARNINGS: OnceLock<fn(&str)> = OnceLock::new();

/// Where warnings go (capsa-runtime: stderr); the first call wins.
pub fn set_warning_sink(sink: fn(&str)) {
    let _ = WARNINGS.set(sink);
}

/// Something the caller should know that does not stop the operation.
pub fn warn(message: impl FnOnce() -> String) {
    if let Some(sink) = WARNINGS.get() {
        sink(&message());
    }
}

/// Where debug lines go (capsa-runtime --debug); the first call wins.
pub fn set_sink(sink: fn(&str)) {
    let _ = SINK.set(sink);
}

/// Say `message()` if anyone listens.
pub fn log(message: impl FnOnce() -> String) {
    if let Some(sink) = SINK.get() {
        sink(&message());
    }
}
