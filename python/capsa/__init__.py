"""capsa: a fast, daemonless container engine with a Rust core."""

__version__ = "0.1.0"
