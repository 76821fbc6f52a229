//! Module settings: parsed from `loadmodule` arguments and `nvm.*` lines of redis.conf.
//!
//! Arguments are `name value` pairs named like the module configs without the `nvm.`
//! prefix (`path /mnt/pmem/redis.nvm size 8gb mode emulate durability always`). Every
//! problem is one line that names the option, because the server prints nothing else
//! useful when a module refuses to load. Pure Rust: tested without a server.

#![forbid(unsafe_code)]

use crate::pmem::RequestedMode;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every write is persistent before its command returns.
    Always,
    /// Writes are made persistent by a background flush at most a second later.
    Everysec,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Everysec => "everysec",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub path: PathBuf,
    pub size: u64,
    /// Ring log size of a new pool (the backlog cap).
    pub log_size: u64,
    pub mode: RequestedMode,
    pub durability: Durability,
    pub emulate_flush_delay_ns: u64,
    /// The longest a warm-up slice inserts for (the latency a restart adds to commands,
    /// against how fast it warms up).
    pub warmup_slice_us: u64,
    /// Fill levels of the key space (percent, ascending) at which the server log warns
    /// and a message is published (`fill-warnings "80 90 95"`; empty: none).
    pub fill_warnings: Vec<u8>,
    /// `size` was given (an existing pool grows only to a size asked for).
    pub size_given: bool,
}

/// Default `fill-warnings`.
pub const DEFAULT_FILL_WARNINGS: &[u8] = &[80, 90, 95];

/// `fill-warnings` as written in a config file.
pub fn fill_warnings_text(levels: &[u8]) -> String {
    levels
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bounds of `warmup-slice-us`.
pub const WARMUP_SLICE_US: std::ops::RangeInclusive<u64> = 50..=1000;
pub const DEFAULT_WARMUP_SLICE_US: u64 = 250;

pub const DEFAULT_SIZE: u64 = 1 << 30;
pub const MIN_SIZE: u64 = 1 << 20;
pub const DEFAULT_LOG_SIZE: u64 = crate::pool::DEFAULT_LOG_SIZE;
pub const MIN_LOG_SIZE: u64 = 64 << 10;
pub const OPTION_NAMES: &[&str] = &[
    "path",
    "size",
    "log-size",
    "mode",
    "durability",
    "emulate-flush-delay-ns",
    "warmup-slice-us",
    "fill-warnings",
];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            path: PathBuf::from("redis.nvm"),
            size: DEFAULT_SIZE,
            log_size: DEFAULT_LOG_SIZE,
            mode: RequestedMode::Auto,
            durability: Durability::Always,
            emulate_flush_delay_ns: 0,
            warmup_slice_us: DEFAULT_WARMUP_SLICE_US,
            fill_warnings: DEFAULT_FILL_WARNINGS.to_vec(),
            size_given: false,
        }
    }
}

impl Settings {
    /// Parses `loadmodule` arguments over the defaults.
    pub fn from_args(args: &[&[u8]]) -> Result<Settings, String> {
        let mut settings = Settings::default();
        if !args.len().is_multiple_of(2) {
            let last = String::from_utf8_lossy(args[args.len() - 1]);
            return Err(format!(
                "module argument '{last}' has no value: arguments are name/value pairs ({})",
                OPTION_NAMES.join(", ")
            ));
        }
        let mut seen: Vec<String> = Vec::new();
        for pair in args.chunks(2) {
            let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
            let name = name.strip_prefix("nvm.").unwrap_or(&name).to_string();
            let value = std::str::from_utf8(pair[1])
                .map_err(|_| format!("module argument '{name}': value is not UTF-8"))?;
            if seen.contains(&name) {
                return Err(format!("module argument '{name}' is given twice"));
            }
            settings.set(&name, value)?;
            seen.push(name);
        }
        Ok(settings)
    }

    /// Sets one option by name (without the `nvm.` prefix).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "path" => {
                if value.is_empty() {
                    return Err("module argument 'path': must not be empty".into());
                }
                self.path = PathBuf::from(value);
            }
            "size" => {
                self.size = parse_size(value).map_err(|e| format!("module argument 'size': {e}"))?;
                self.size_given = true;
            }
            "log-size" => {
                self.log_size = parse_bytes(value)
                    .ok()
                    .filter(|n| *n >= MIN_LOG_SIZE)
                    .ok_or_else(|| {
                        format!("module argument 'log-size': '{value}' is not a size of at least 64kb (examples: 64mb, 256mb)")
                    })?
            }
            "mode" => {
                self.mode = value.parse().map_err(|_| {
                    format!("module argument 'mode': '{value}' is not one of auto, dax, emulate, msync")
                })?
            }
            "durability" => {
                self.durability = match value.to_ascii_lowercase().as_str() {
                    "always" => Durability::Always,
                    "everysec" => Durability::Everysec,
                    _ => {
                        return Err(format!(
                            "module argument 'durability': '{value}' is not one of always, everysec"
                        ))
                    }
                }
            }
            "emulate-flush-delay-ns" => {
                self.emulate_flush_delay_ns = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= 1_000_000)
                    .ok_or_else(|| {
                        format!("module argument 'emulate-flush-delay-ns': '{value}' is not a number of nanoseconds from 0 to 1000000")
                    })?
            }
            "warmup-slice-us" => {
                self.warmup_slice_us = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| WARMUP_SLICE_US.contains(n))
                    .ok_or_else(|| {
                        format!(
                            "module argument 'warmup-slice-us': '{value}' is not a number of microseconds from {} to {}",
                            WARMUP_SLICE_US.start(),
                            WARMUP_SLICE_US.end()
                        )
                    })?
            }
            "fill-warnings" => {
                let bad = || {
                    format!(
                        "module argument 'fill-warnings': '{value}' is not a list of percents from 1 to 99, \
                         ascending (example: \"80 90 95\"; empty: no warnings)"
                    )
                };
                let levels = value
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|w| !w.is_empty())
                    .map(|w| w.parse::<u8>().ok().filter(|n| (1..=99).contains(n)))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(bad)?;
                if levels.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(bad());
                }
                self.fill_warnings = levels;
            }
            other => {
                return Err(format!(
                    "unknown module argument '{other}' (valid: {})",
                    OPTION_NAMES.join(", ")
                ))
            }
        }
        Ok(())
    }
}

impl Settings {
    /// Whether the server, once running, may go from `self` to `wanted`: durability, the
    /// emulated flush delay, the warm-up slice and the fill warnings change at once (and
    /// the size grows the pool, see `set_config`); the pool's path, log size and mode are
    /// fixed while it is open, so only their current value is accepted.
    pub fn change_at_run_time(&self, wanted: &Settings) -> Result<(), String> {
        let fixed = [
            ("path", self.path != wanted.path),
            ("log-size", self.log_size != wanted.log_size),
            ("mode", self.mode != wanted.mode),
        ];
        match fixed.iter().find(|(_, changed)| *changed) {
            Some((name, _)) => Err(format!(
                "nvm.{name} cannot change while the server runs (it is read when the pool is \
                 opened): set it in the configuration and restart"
            )),
            None => Ok(()),
        }
    }
}

/// Parses a pool size (see `parse_bytes`), at least 1mb.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let size = parse_bytes(text)?;
    if size < MIN_SIZE {
        return Err(format!(
            "'{text}' is smaller than the minimum pool size of 1mb"
        ));
    }
    Ok(size)
}

/// Parses a size the way redis.conf does: a number with an optional unit
/// (k/m/g = 1000-based, kb/mb/gb = 1024-based, b = bytes).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(digits_end);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 1073741824, 512mb, 8gb)"))?;
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1000 * 1000,
        "mb" => 1 << 20,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1 << 30,
        "t" => 1000 * 1000 * 1000 * 1000,
        "tb" => 1 << 40,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit (use b, kb, mb, gb, tb)"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split_whitespace()
            .map(|a| a.as_bytes().to_vec())
            .collect()
    }

    fn parse(s: &str) -> Result<Settings, String> {
        let owned = args(s);
        let refs: Vec<&[u8]> = owned.iter().map(|a| a.as_slice()).collect();
        Settings::from_args(&refs)
    }

    #[test]
    fn parses_all_options() {
        let s = parse("path /mnt/pmem/x.nvm size 8gb mode emulate durability everysec emulate-flush-delay-ns 300").unwrap();
        assert_eq!(s.path, PathBuf::from("/mnt/pmem/x.nvm"));
        assert_eq!(s.size, 8 << 30);
        assert_eq!(s.mode, RequestedMode::Emulate);
        assert_eq!(s.durability, Durability::Everysec);
        assert_eq!(s.emulate_flush_delay_ns, 300);
        assert_eq!(parse("").unwrap(), Settings::default());
        assert_eq!(parse("nvm.size 2mb").unwrap().size, 2 << 20);
    }

    #[test]
    fn fill_warnings_are_ascending_percents() {
        assert_eq!(parse("").unwrap().fill_warnings, vec![80, 90, 95]);
        assert_eq!(
            parse("fill-warnings 70,85").unwrap().fill_warnings,
            vec![70, 85]
        );
        let mut none = Settings::default();
        none.set("fill-warnings", "").unwrap();
        assert!(none.fill_warnings.is_empty());
        assert_eq!(fill_warnings_text(&[80, 90, 95]), "80 90 95");
    }

    #[test]
    fn only_durability_and_the_delay_change_at_run_time() {
        let now = parse("size 8gb").unwrap();
        let mut same = now.clone();
        same.set("size", "8589934592").unwrap();
        assert_eq!(now.change_at_run_time(&same), Ok(()));
        same.set("durability", "everysec").unwrap();
        same.set("emulate-flush-delay-ns", "300").unwrap();
        assert_eq!(now.change_at_run_time(&same), Ok(()));
        let mut elsewhere = now.clone();
        elsewhere.set("path", "/elsewhere.nvm").unwrap();
        let err = now.change_at_run_time(&elsewhere).unwrap_err();
        assert!(err.contains("nvm.path") && err.contains("restart"), "{err}");
    }

    #[test]
    fn every_error_names_the_option() {
        for (input, name) in [
            ("size", "size"),
            ("bogus 1", "bogus"),
            ("size lots", "size"),
            ("size 1kb", "size"),
            ("mode turbo", "mode"),
            ("durability never", "durability"),
            ("emulate-flush-delay-ns -3", "emulate-flush-delay-ns"),
            ("path a path b", "path"),
            ("fill-warnings 90,80", "fill-warnings"),
            ("fill-warnings 100", "fill-warnings"),
            ("fill-warnings lots", "fill-warnings"),
        ] {
            let err = parse(input).unwrap_err();
            assert!(err.contains(&format!("'{name}'")), "{input}: {err}");
            assert!(!err.contains('\n'));
        }
    }
}
