//! Reading settings from an environment-like lookup (process environment, Worker vars
//! and secrets), collecting every missing or malformed one by name, so a start fails
//! once with the whole list. Values are never echoed: some are secrets.

use std::ops::RangeInclusive;

use crate::error::FieldError;
use crate::rate::parse_duration_ms;

/// What applies when a setting is unset: said once, read by the parser, by `--help`
/// and by the checks of the deploy template (which read `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// It must be set.
    Required,
    /// None: what it names is off (or, for credentials, taken from elsewhere: `help` says).
    Unset,
    Text(&'static str),
    Number(u64),
    /// Milliseconds.
    Duration(u64),
    Flag(bool),
    /// Derived from other settings, as said.
    Derived(&'static str),
}

impl std::fmt::Display for Default {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Default::Required => write!(f, "(required)"),
            Default::Unset => write!(f, "(none)"),
            Default::Text(t) => write!(f, "{t}"),
            Default::Number(n) => write!(f, "{n}"),
            Default::Duration(ms) if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            Default::Duration(ms) => write!(f, "{ms}ms"),
            Default::Flag(b) => write!(f, "{b}"),
            Default::Derived(how) => write!(f, "{how}"),
        }
    }
}

/// One setting: its name, its default, and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub default: Default,
    pub help: &'static str,
}

/// The setting named `name` of `table` (a name not in it is a programming error).
pub fn find<'a>(table: &'a [Setting], name: &str) -> &'a Setting {
    table.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} is not in the settings table"))
}

/// The ledger table both parts use unless told otherwise.
pub const DEFAULT_LEDGER_TABLE: &str = "onlyfans-message-ledger";

pub struct Settings<F> {
    lookup: F,
    pub problems: Vec<FieldError>,
}

impl<F: Fn(&str) -> Option<String>> Settings<F> {
    pub fn new(lookup: F) -> Self {
        Self { lookup, problems: Vec::new() }
    }

    /// The value of `name`, trimmed; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn problem(&mut self, name: &str, message: impl Into<String>) {
        self.problems.push(FieldError::new(name, message));
    }

    pub fn required(&mut self, name: &str) -> String {
        self.get(name).unwrap_or_else(|| {
            self.problem(name, "is required");
            String::new()
        })
    }

    pub fn number(&mut self, name: &str, default: u64, range: RangeInclusive<u64>) -> u64 {
        match self.get(name).map(|v| v.parse::<u64>()) {
            None => default,
            Some(Ok(v)) if range.contains(&v) => v,
            Some(_) => {
                self.problem(name, format!("must be a whole number from {} to {}", range.start(), range.end()));
                default
            }
        }
    }

    /// A positive duration (`60`, `60s`, `2000ms`, `1m`) in milliseconds.
    pub fn duration_ms(&mut self, name: &str, default_ms: u64) -> u64 {
        match self.get(name).map(|v| parse_duration_ms(&v)) {
            None => default_ms,
            Some(Some(ms)) if ms > 0 => ms,
            Some(_) => {
                self.problem(name, "must be a duration such as 60, 60s or 2000ms");
                default_ms
            }
        }
    }

    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.get(name).as_deref() {
            None => default,
            Some("true") => true,
            Some("false") => false,
            Some(_) => {
                self.problem(name, "must be true or false");
                default
            }
        }
    }

    /// A number setting of `table`, its default from the table.
    pub fn number_of(&mut self, table: &[Setting], name: &str, range: RangeInclusive<u64>) -> u64 {
        match find(table, name).default {
            Default::Number(d) => self.number(name, d, range),
            other => panic!("{name}'s default is {other:?}, not a number"),
        }
    }

    /// A duration setting of `table` (ms), its default from the table.
    pub fn duration_of(&mut self, table: &[Setting], name: &str) -> u64 {
        match find(table, name).default {
            Default::Duration(d) => self.duration_ms(name, d),
            other => panic!("{name}'s default is {other:?}, not a duration"),
        }
    }

    /// A flag setting of `table`, its default from the table.
    pub fn flag_of(&mut self, table: &[Setting], name: &str) -> bool {
        match find(table, name).default {
            Default::Flag(d) => self.flag(name, d),
            other => panic!("{name}'s default is {other:?}, not a flag"),
        }
    }

    /// A text setting of `table`, its default from the table.
    pub fn text_of(&mut self, table: &[Setting], name: &str) -> String {
        match find(table, name).default {
            Default::Text(d) => self.get(name).unwrap_or_else(|| d.to_owned()),
            other => panic!("{name}'s default is {other:?}, not a text"),
        }
    }

    /// `value` when every setting was fine, else every problem found.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.problems.is_empty() {
            Ok(value())
        } else {
            Err(self.problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_problem_by_name() {
        let env = |k: &str| match k {
            "N" => Some("11".into()),
            "D" => Some("soon".into()),
            "F" => Some("yes".into()),
            "OK" => Some(" 5 ".into()),
            _ => None,
        };
        let mut s = Settings::new(env);
        assert_eq!(s.number("OK", 1, 1..=10), 5);
        s.number("N", 1, 1..=10);
        s.duration_ms("D", 1000);
        s.flag("F", false);
        s.required("MISSING");
        let names: Vec<_> = s.finish(|| ()).unwrap_err().into_iter().map(|p| p.field).collect();
        assert_eq!(names, ["N", "D", "F", "MISSING"]);
    }
}
