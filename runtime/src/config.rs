//! Every `HPCOMM_*` setting, parsed in one place.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HPCOMM_EAGER_LIMIT` | largest message sent eagerly, in bytes (at most the transport's frame payload) | the transport's |
//! | `HPCOMM_SPIN` | empty progress rounds a waiting rank spins before it yields | 64 |
//! | `HPCOMM_YIELD` | further empty rounds in which it yields the core, before it sleeps in the transport | 256 |
//! | `HPCOMM_IDLE_WAIT_US` | longest single sleep of a waiting rank, in µs (it wakes early when a frame arrives) | 200 |
//! | `HPCOMM_FINALIZE_TIMEOUT` | seconds a finishing rank waits for its peers and its last frames | 30 |
//!
//! The same table is in `docs/configuration.md`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Runtime settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Overrides the transport's eager threshold.
    pub eager_limit: Option<usize>,
    /// Empty progress rounds spent spinning.
    pub spin: u32,
    /// Empty progress rounds spent yielding, after spinning.
    pub yields: u32,
    /// Longest sleep in the transport when idle.
    pub idle_wait: Duration,
    /// How long finalization waits for peers.
    pub finalize_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            eager_limit: None,
            spin: 64,
            yields: 256,
            idle_wait: Duration::from_micros(200),
            finalize_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut config = Config::default();
        if let Some(v) = parse::<usize>(&lookup, "HPCOMM_EAGER_LIMIT")? {
            config.eager_limit = Some(v);
        }
        if let Some(v) = parse::<u32>(&lookup, "HPCOMM_SPIN")? {
            config.spin = v;
        }
        if let Some(v) = parse::<u32>(&lookup, "HPCOMM_YIELD")? {
            config.yields = v;
        }
        if let Some(v) = parse::<u64>(&lookup, "HPCOMM_IDLE_WAIT_US")? {
            config.idle_wait = Duration::from_micros(v.max(1));
        }
        if let Some(v) = parse::<u64>(&lookup, "HPCOMM_FINALIZE_TIMEOUT")? {
            config.finalize_timeout = Duration::from_secs(v);
        }
        Ok(config)
    }
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>> {
    match lookup(name) {
        None => Ok(None),
        Some(raw) => raw.trim().parse().map(Some).map_err(|_| {
            Error::Config(format!(
                "{name}={raw:?} is not a valid non-negative integer"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_checked() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Config::from_lookup(env(&[])).unwrap(), Config::default());
        let c = Config::from_lookup(env(&[
            ("HPCOMM_EAGER_LIMIT", "4096"),
            ("HPCOMM_SPIN", " 0 "),
        ]))
        .unwrap();
        assert_eq!(c.eager_limit, Some(4096));
        assert_eq!(c.spin, 0);
        let e = Config::from_lookup(env(&[("HPCOMM_YIELD", "-3")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_YIELD"), "{e}");
    }
}
