//! runc's flag syntax, read from a table per command: `--name value`,
//! `--name=value`, `-x value`, a single dash for long names (`-pid-file`, as
//! Go's flag packages accept), booleans with an optional `=false`, and `--`.
//! A table rather than a general parser because engines call runtimes with
//! exactly these forms, and some (the single-dash long names) are not what
//! general-purpose parsers accept.

use std::collections::HashMap;

/// How an option takes its value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Takes {
    Flag,
    Value,
    /// A value, repeatable: every occurrence is kept.
    List,
}

/// (name, short aliases, how it takes a value)
pub type Table = &'static [(&'static str, &'static [&'static str], Takes)];

#[derive(Debug)]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

#[derive(Default, Debug)]
pub struct Opts {
    flags: HashMap<&'static str, bool>,
    values: HashMap<&'static str, Vec<String>>,
}

impl Opts {
    pub fn flag(&self, name: &str) -> bool {
        self.flags.get(name).copied().unwrap_or(false)
    }

    /// The last value given for `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.last()).map(String::as_str)
    }

    pub fn list(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn number(&self, name: &str) -> Result<u32, UsageError> {
        match self.value(name) {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| usage(format!("--{name} takes a number, not {v:?}"))),
        }
    }
}

/// The options in `tables` and the positionals. With `stop_at_positional`,
/// everything from the first positional on is returned untouched (the
/// command line of `exec`, the ps(1) options of `ps`).
pub fn parse(argv: &[String], tables: &[Table], stop_at_positional: bool) -> Result<(Opts, Vec<String>), UsageError> {
    let mut opts = Opts::default();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        if arg == "--" {
            rest.extend_from_slice(&argv[i + 1..]);
            break;
        }
        if arg.starts_with('-') && arg != "-" {
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (arg.as_str(), None),
            };
            let bare = key.trim_start_matches('-');
            let &(name, _, takes) = tables
                .iter()
                .flat_map(|t| t.iter())
                .find(|(name, aliases, _)| *name == bare || aliases.contains(&key))
                .ok_or_else(|| usage(format!("unknown option {key}")))?;
            match takes {
                Takes::Flag => {
                    let on = value.is_none_or(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"));
                    opts.flags.insert(name, on);
                }
                Takes::Value | Takes::List => {
                    let value = match value {
                        Some(v) => v.to_string(),
                        None => {
                            i += 1;
                            argv.get(i).cloned().ok_or_else(|| usage(format!("option {key} needs a value")))?
                        }
                    };
                    let slot = opts.values.entry(name).or_default();
                    if takes == Takes::Value {
                        slot.clear();
                    }
                    slot.push(value);
                }
            }
        } else {
            if stop_at_positional {
                rest.extend_from_slice(&argv[i..]);
                break;
            }
            rest.push(arg.clone());
        }
        i += 1;
    }
    Ok((opts, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Table = &[("bundle", &["-b"], Takes::Value), ("detach", &["-d"], Takes::Flag), ("env", &["-e"], Takes::List)];

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn forms() {
        let (o, rest) = parse(&argv("--bundle /b -d id"), &[T], false).unwrap();
        assert_eq!(o.value("bundle"), Some("/b"));
        assert!(o.flag("detach"));
        assert_eq!(rest, ["id"]);
        let (o, _) = parse(&argv("-bundle=/x -b /y --detach=false"), &[T], false).unwrap();
        assert_eq!(o.value("bundle"), Some("/y"));
        assert!(!o.flag("detach"));
        let (o, _) = parse(&argv("-e A=1 --env B=2"), &[T], false).unwrap();
        assert_eq!(o.list("env"), ["A=1", "B=2"]);
    }

    #[test]
    fn positionals_and_errors() {
        let (o, rest) = parse(&argv("-d id sh -c -d"), &[T], true).unwrap();
        assert!(o.flag("detach"));
        assert_eq!(rest, ["id", "sh", "-c", "-d"]);
        let (_, rest) = parse(&argv("id -- -d"), &[T], false).unwrap();
        assert_eq!(rest, ["id", "-d"]);
        assert!(parse(&argv("--nope"), &[T], false).unwrap_err().0.contains("unknown option --nope"));
        assert!(parse(&argv("--bundle"), &[T], false).unwrap_err().0.contains("needs a value"));
    }
}
