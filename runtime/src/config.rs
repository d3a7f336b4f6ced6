//! Every `HPCOMM_*` setting, parsed in one place.
//!
//! Set by users:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HPCOMM_EAGER_LIMIT` | largest message sent eagerly, in bytes (at most the transport's frame payload) | the transport's |
//! | `HPCOMM_SPIN_US` | how long a waiting rank spins on progress before it yields, in µs | 50 when the job's ranks on this host fit its cores, else 0 |
//! | `HPCOMM_YIELD` | further empty rounds in which it yields the core, before it sleeps in the transport | 256 |
//! | `HPCOMM_IDLE_WAIT_US` | longest single sleep of a waiting rank, in µs (it wakes early when a frame arrives) | 200 |
//! | `HPCOMM_FINALIZE_TIMEOUT` | seconds a finishing rank waits for its peers and its last frames | 30 |
//! | `HPCOMM_SHM_RING_BYTES` | bytes of each rank's queue and of each pair ring in the shm segment (power of two, ≥ 16 KiB) | 256 KiB up to 16 ranks, 64 KiB beyond |
//! | `HPCOMM_SHM_POOL_BYTES` | bytes of pair rings the shm segment may hand out (the pairs that talk most take one; the others use the receiver's queue); rings take memory only once taken | 64 MiB |
//! | `HPCOMM_SHM_CMA` | `0` disables single-copy reads (`process_vm_readv`) between shm ranks | `1` |
//! | `HPCOMM_TCP_STRIPES` | TCP connections per pair of ranks; frames of 64 KiB and more are spread over them | 1 |
//! | `HPCOMM_TCP_BIND` | the IP address a rank listens on and publishes for TCP (one the other ranks reach) | the address its connection to `hpcomm run` comes from; under other launchers, the source address of the default route |
//! | `HPCOMM_TCP_MAX_CONNS` | TCP connections a rank keeps open at most (at least the stripes); past it, the peer used least recently has its connections closed without losing a frame, and they are made again when next needed | no cap |
//! | `HPCOMM_TCP_TIMEOUT` | seconds after which a TCP peer that acknowledges nothing (a cut link, a dead host) is lost, and operations with it fail | 30 |
//! | `HPCOMM_TRANSPORT` | the transport of a launched job: `auto` (shm within a node, tcp between nodes), `shm`, `tcp` or `ofi`; `hpcomm run --transport` sets it, and under other launchers the user does | `auto` |
//! | `HPCOMM_BOOTSTRAP` | forces the bootstrap: `hpcomm`, `pmix`, `pmi2`, `pmi1` or `singleton` (see `bootstrap`) | found from the environment |
//! | `HPCOMM_BOOTSTRAP_TIMEOUT` | seconds a rank waits for one answer from its launcher (a fence waits for the slowest rank to start) | 300 |
//! | `HPCOMM_PMIX_LIBRARY` | the PMIx client library to load | `libpmix.so.2` |
//! | `HPCOMM_LOG` | log filter of the `hpcomm` command (tracing's `EnvFilter` syntax) | `info` |
//! | `HPCOMM_BARRIER`, `HPCOMM_BCAST`, `HPCOMM_REDUCE`, `HPCOMM_ALLREDUCE`, `HPCOMM_ALLGATHER`, `HPCOMM_ALLTOALL` | forces that collective's algorithm by name (see `hpcomm-collectives`; for benchmarks and tests); empty or `auto`: the automatic choice | chosen by message and communicator size |
//!
//! Set by `hpcomm run` for each rank (a program finds them through
//! [`Config::launch`]; their names are in `bootstrap::vars`, which the
//! launcher writes them with):
//!
//! | variable | meaning |
//! |---|---|
//! | `HPCOMM_RANK`, `HPCOMM_SIZE` | this rank and the job's size |
//! | `HPCOMM_KVS` | the launcher's key-value server, `host:port` |
//! | `HPCOMM_SECRET` | the job's secret, presented to the key-value server (ranks on this host) |
//! | `HPCOMM_SECRET_FD` | `0`: the secret is the first line of standard input instead (ranks started on other hosts: a command line is readable by every local user, so the secret never travels in one) |
//! | `HPCOMM_JOB` | the job's identifier |
//! | `HPCOMM_TRANSPORT` | the transport asked for with `--transport` |
//! | `HPCOMM_LAUNCHER_PID` | the launcher's pid: a rank ends when the launcher does |
//!
//! The same tables are in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::bootstrap::vars::hpcomm as var;
use crate::error::{Error, Result};

/// Which transport a launched job uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// The best available: shm between ranks of one host, tcp between hosts.
    Auto,
    /// Shared memory.
    Shm,
    /// TCP sockets.
    Tcp,
    /// libfabric.
    Ofi,
}

impl TransportChoice {
    /// The name as the launcher and `HPCOMM_TRANSPORT` spell it.
    pub fn name(self) -> &'static str {
        match self {
            TransportChoice::Auto => "auto",
            TransportChoice::Shm => "shm",
            TransportChoice::Tcp => "tcp",
            TransportChoice::Ofi => "ofi",
        }
    }
}

impl std::str::FromStr for TransportChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(TransportChoice::Auto),
            "shm" => Ok(TransportChoice::Shm),
            "tcp" => Ok(TransportChoice::Tcp),
            "ofi" => Ok(TransportChoice::Ofi),
            other => Err(format!("unknown transport {other:?}: expected auto, shm, tcp or ofi")),
        }
    }
}

/// What `hpcomm run` tells each rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// This rank.
    pub rank: usize,
    /// Ranks in the job.
    pub size: usize,
    /// The key-value server.
    pub kvs: SocketAddr,
    /// The job's secret.
    pub secret: String,
    /// The job's identifier.
    pub job: String,
    /// The launcher's pid, if given.
    pub launcher_pid: Option<i32>,
}

/// Runtime settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Overrides the transport's eager threshold.
    pub eager_limit: Option<usize>,
    /// How long a waiting rank spins before yielding; `None`: decided from
    /// the number of ranks on this host and its cores.
    pub spin: Option<Duration>,
    /// Empty progress rounds spent yielding, after spinning.
    pub yields: u32,
    /// Longest sleep in the transport when idle.
    pub idle_wait: Duration,
    /// How long finalization waits for peers.
    pub finalize_timeout: Duration,
    /// Bytes of each shm ring and queue, if set.
    pub shm_ring_bytes: Option<usize>,
    /// Bytes of the shm segment's pool of pair rings, if set.
    pub shm_pool_bytes: Option<usize>,
    /// Whether shm may use single-copy reads.
    pub shm_cma: bool,
    /// TCP connections per pair of ranks.
    pub tcp_stripes: usize,
    /// The address TCP listens on, if set.
    pub tcp_bind: Option<std::net::IpAddr>,
    /// How long a silent TCP peer is waited for before it is lost.
    pub tcp_timeout: Duration,
    /// TCP connections kept open at most, if capped.
    pub tcp_max_conns: Option<usize>,
    /// The libfabric provider for `--transport ofi`, if set.
    pub ofi_provider: Option<String>,
    /// Ask the libfabric provider for EFA's `mr_mode` bits.
    pub ofi_efa_mr_mode: bool,
    /// Use the libfabric provider's RMA reads for large messages.
    pub ofi_reads: bool,
    /// This rank's node for `--transport auto`, if set: ranks that name the
    /// same node use shared memory between them, the others tcp. By
    /// default the node is the host (host name, boot id, and the address
    /// the rank reached the launcher from).
    pub node: Option<String>,
    /// Collective algorithms forced by name, keyed by collective
    /// (`"allreduce"` → `"ring"`); the collectives layer checks the names.
    pub algorithms: BTreeMap<String, String>,
    /// The transport of a launched job (`HPCOMM_TRANSPORT`).
    pub transport: TransportChoice,
    /// How long a rank waits for one answer from its launcher.
    pub bootstrap_timeout: Duration,
    /// Present when the process was started by `hpcomm run`.
    pub launch: Option<Launch>,
}

/// The collectives whose algorithm a `HPCOMM_<NAME>` variable can force.
pub const FORCEABLE_COLLECTIVES: [&str; 6] =
    ["barrier", "bcast", "reduce", "allreduce", "allgather", "alltoall"];

impl Default for Config {
    fn default() -> Self {
        Config {
            eager_limit: None,
            spin: None,
            yields: 256,
            idle_wait: Duration::from_micros(200),
            finalize_timeout: Duration::from_secs(30),
            shm_ring_bytes: None,
            shm_pool_bytes: None,
            shm_cma: true,
            tcp_stripes: 1,
            tcp_bind: None,
            tcp_timeout: Duration::from_secs(30),
            tcp_max_conns: None,
            node: None,
            ofi_provider: None,
            ofi_efa_mr_mode: false,
            ofi_reads: true,
            algorithms: BTreeMap::new(),
            transport: TransportChoice::Auto,
            bootstrap_timeout: crate::bootstrap::DEFAULT_TIMEOUT,
            launch: None,
        }
    }
}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Config> {
        let secret = match (std::env::var(var::SECRET), std::env::var(var::SECRET_FD)) {
            (Err(_), Ok(fd)) if fd == "0" => Some(secret_from_stdin()?),
            (Err(_), Ok(fd)) => {
                return Err(Error::Config(format!("{}={fd:?}: only 0 is read", var::SECRET_FD)))
            }
            _ => None,
        };
        Config::from_lookup(|name| match name {
            name if name == var::SECRET && secret.is_some() => secret.clone(),
            _ => std::env::var(name).ok(),
        })
    }

    /// Reads the settings through `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut config = Config::default();
        if let Some(v) = parse::<usize>(&lookup, "HPCOMM_EAGER_LIMIT")? {
            config.eager_limit = Some(v);
        }
        if let Some(v) = parse::<u64>(&lookup, "HPCOMM_SPIN_US")? {
            config.spin = Some(Duration::from_micros(v));
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
        if let Some(v) = parse::<usize>(&lookup, "HPCOMM_SHM_RING_BYTES")? {
            if v < 16 << 10 || !v.is_power_of_two() {
                return Err(Error::Config(format!(
                    "HPCOMM_SHM_RING_BYTES={v} must be a power of two of at least 16384"
                )));
            }
            config.shm_ring_bytes = Some(v);
        }
        config.shm_pool_bytes = parse::<usize>(&lookup, "HPCOMM_SHM_POOL_BYTES")?;
        if let Some(v) = parse::<u8>(&lookup, "HPCOMM_SHM_CMA")? {
            config.shm_cma = v != 0;
        }
        if let Some(v) = parse::<usize>(&lookup, "HPCOMM_TCP_STRIPES")? {
            if !(1..=64).contains(&v) {
                return Err(Error::Config(format!("HPCOMM_TCP_STRIPES={v} must be 1 to 64")));
            }
            config.tcp_stripes = v;
        }
        if let Some(v) = parse::<usize>(&lookup, "HPCOMM_TCP_MAX_CONNS")? {
            if v == 0 {
                return Err(Error::Config("HPCOMM_TCP_MAX_CONNS=0: at least 1".into()));
            }
            config.tcp_max_conns = Some(v);
        }
        if let Some(v) = parse::<u64>(&lookup, "HPCOMM_TCP_TIMEOUT")? {
            config.tcp_timeout = Duration::from_secs(v.max(1));
        }
        if let Some(v) = lookup("HPCOMM_TCP_BIND") {
            let ip = v.trim().parse().map_err(|_| {
                Error::Config(format!("HPCOMM_TCP_BIND={v:?} is not an IP address"))
            })?;
            config.tcp_bind = Some(ip);
        }
        if let Some(v) = lookup("HPCOMM_OFI_PROVIDER") {
            let v = v.trim();
            if !v.is_empty() {
                config.ofi_provider = Some(v.to_string());
            }
        }
        if let Some(v) = lookup("HPCOMM_OFI_MR_MODE") {
            config.ofi_efa_mr_mode = match v.trim() {
                "efa" => true,
                "" | "provider" => false,
                other => {
                    return Err(Error::Config(format!(
                        "HPCOMM_OFI_MR_MODE={other:?}: use efa (ask for EFA's mr_mode bits) or provider"
                    )))
                }
            };
        }
        if let Some(v) = parse::<u8>(&lookup, "HPCOMM_OFI_READS")? {
            config.ofi_reads = v != 0;
        }
        if let Some(v) = lookup("HPCOMM_NODE") {
            if v.trim().is_empty() {
                return Err(Error::Config("HPCOMM_NODE is empty".into()));
            }
            config.node = Some(v.trim().to_string());
        }
        for name in FORCEABLE_COLLECTIVES {
            if let Some(v) = lookup(&format!("HPCOMM_{}", name.to_uppercase())) {
                // Empty and `auto` leave the choice to the selection.
                let v = v.trim();
                if !v.is_empty() && v != "auto" {
                    config.algorithms.insert(name.to_string(), v.to_string());
                }
            }
        }
        if let Some(t) = lookup(var::TRANSPORT) {
            config.transport =
                t.trim().parse().map_err(|e| Error::Config(format!("{}: {e}", var::TRANSPORT)))?;
        }
        if let Some(v) = parse::<u64>(&lookup, "HPCOMM_BOOTSTRAP_TIMEOUT")? {
            config.bootstrap_timeout = Duration::from_secs(v.max(1));
        }
        config.launch = Config::launch_from(&lookup)?;
        Ok(config)
    }

    fn launch_from(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let Some(rank) = parse::<usize>(lookup, var::RANK)? else {
            return Ok(None);
        };
        let need = |name: &str| {
            lookup(name).ok_or_else(|| {
                Error::Bootstrap(format!(
                    "{} is set but {name} is not: start the program with `hpcomm run`",
                    var::RANK
                ))
            })
        };
        let size =
            parse::<usize>(lookup, var::SIZE)?.ok_or_else(|| need(var::SIZE).unwrap_err())?;
        if size == 0 || rank >= size {
            return Err(Error::Config(format!(
                "{}={rank} is not below {}={size}",
                var::RANK,
                var::SIZE
            )));
        }
        let kvs_text = need(var::KVS)?;
        let kvs = kvs_text.parse().map_err(|_| {
            Error::Config(format!("{}={kvs_text:?} is not a host:port address", var::KVS))
        })?;
        Ok(Some(Launch {
            rank,
            size,
            kvs,
            secret: need(var::SECRET)?,
            job: need(var::JOB)?,
            launcher_pid: parse::<i32>(lookup, var::LAUNCHER_PID)?,
        }))
    }
}

/// Reads the job's secret: the first line of standard input (a rank started
/// on another host gets it there from the launcher, never on its command
/// line). Once per process — the settings may be read more than once — and
/// byte by byte, so that nothing after the line is taken from the program's
/// own input; at most 1 KiB.
fn secret_from_stdin() -> Result<String> {
    static SECRET: std::sync::OnceLock<std::result::Result<String, String>> =
        std::sync::OnceLock::new();
    SECRET.get_or_init(read_secret_line).clone().map_err(Error::Config)
}

fn read_secret_line() -> std::result::Result<String, String> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(stdin.as_fd(), &mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < 1024 => line.push(byte[0]),
            Ok(_) => return Err("the secret's line on stdin is too long".into()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("cannot read the secret from stdin: {e}")),
        }
    }
    String::from_utf8(line)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "HPCOMM_SECRET_FD=0 but stdin holds no secret".into())
}

/// The log filter for the `hpcomm` command (`HPCOMM_LOG`, in tracing's
/// `EnvFilter` syntax), if set.
pub fn log_filter() -> Option<String> {
    std::env::var("HPCOMM_LOG").ok()
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>> {
    match lookup(name) {
        None => Ok(None),
        Some(raw) => raw.trim().parse().map(Some).map_err(|_| {
            Error::Config(format!("{name}={raw:?} is not a valid non-negative integer"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn settings_are_read_and_checked() {
        assert_eq!(Config::from_lookup(env(&[])).unwrap(), Config::default());
        let c =
            Config::from_lookup(env(&[("HPCOMM_EAGER_LIMIT", "4096"), ("HPCOMM_SPIN_US", " 0 ")]))
                .unwrap();
        assert_eq!(c.eager_limit, Some(4096));
        assert_eq!(c.spin, Some(Duration::ZERO));
        let e = Config::from_lookup(env(&[("HPCOMM_YIELD", "-3")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_YIELD"), "{e}");
        let e = Config::from_lookup(env(&[("HPCOMM_SHM_RING_BYTES", "100000")])).unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
        let c = Config::from_lookup(env(&[("HPCOMM_SHM_POOL_BYTES", "1048576")])).unwrap();
        assert_eq!(c.shm_pool_bytes, Some(1 << 20));
        let e = Config::from_lookup(env(&[("HPCOMM_SHM_POOL_BYTES", "lots")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_SHM_POOL_BYTES"), "{e}");
    }

    #[test]
    fn collective_algorithms_are_forced_by_name() {
        let c = Config::from_lookup(env(&[
            ("HPCOMM_ALLREDUCE", " ring "),
            ("HPCOMM_BCAST", "auto"),
            ("HPCOMM_ALLTOALL", ""),
            ("HPCOMM_BARRIER", "dissemination"),
        ]))
        .unwrap();
        let forced: Vec<(&str, &str)> =
            c.algorithms.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(forced, [("allreduce", "ring"), ("barrier", "dissemination")]);
    }

    #[test]
    fn tcp_settings_are_checked() {
        let c = Config::from_lookup(env(&[
            ("HPCOMM_TCP_STRIPES", "4"),
            ("HPCOMM_TCP_BIND", "10.0.0.7"),
            ("HPCOMM_TCP_TIMEOUT", "3"),
            ("HPCOMM_NODE", " rack1-a "),
            ("HPCOMM_OFI_PROVIDER", "tcp;ofi_rxm"),
            ("HPCOMM_OFI_MR_MODE", "efa"),
            ("HPCOMM_OFI_READS", "0"),
        ]))
        .unwrap();
        assert!(!c.ofi_reads);
        assert_eq!(c.ofi_provider.as_deref(), Some("tcp;ofi_rxm"));
        assert!(c.ofi_efa_mr_mode);
        let e = Config::from_lookup(env(&[("HPCOMM_OFI_MR_MODE", "all")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_OFI_MR_MODE"), "{e}");
        assert_eq!(c.node.as_deref(), Some("rack1-a"));
        assert_eq!((c.tcp_stripes, c.tcp_bind), (4, Some("10.0.0.7".parse().unwrap())));
        assert_eq!(c.tcp_timeout, Duration::from_secs(3));
        let c = Config::from_lookup(env(&[("HPCOMM_TCP_MAX_CONNS", "64")])).unwrap();
        assert_eq!(c.tcp_max_conns, Some(64));
        let e = Config::from_lookup(env(&[("HPCOMM_TCP_MAX_CONNS", "0")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_TCP_MAX_CONNS"), "{e}");
        let e = Config::from_lookup(env(&[("HPCOMM_TCP_STRIPES", "0")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_TCP_STRIPES"), "{e}");
        let e = Config::from_lookup(env(&[("HPCOMM_TCP_BIND", "eth0")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_TCP_BIND"), "{e}");
        let e = Config::from_lookup(env(&[("HPCOMM_NODE", " ")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_NODE"), "{e}");
    }

    #[test]
    fn launch_settings_are_complete_or_refused() {
        static FULL: [(&str, &str); 7] = [
            ("HPCOMM_RANK", "1"),
            ("HPCOMM_SIZE", "4"),
            ("HPCOMM_KVS", "127.0.0.1:4000"),
            ("HPCOMM_SECRET", "abc"),
            ("HPCOMM_JOB", "j1"),
            ("HPCOMM_TRANSPORT", "shm"),
            ("HPCOMM_LAUNCHER_PID", "77"),
        ];
        let config = Config::from_lookup(env(&FULL)).unwrap();
        assert_eq!(config.transport, TransportChoice::Shm);
        let launch = config.launch.unwrap();
        assert_eq!((launch.rank, launch.size), (1, 4));
        assert_eq!(launch.launcher_pid, Some(77));
        let e = Config::from_lookup(env(&FULL[..2])).unwrap_err();
        assert!(matches!(e, Error::Bootstrap(ref m) if m.contains("HPCOMM_KVS")), "{e}");
        let e =
            Config::from_lookup(env(&[("HPCOMM_RANK", "4"), ("HPCOMM_SIZE", "4")])).unwrap_err();
        assert!(e.to_string().contains("not below"), "{e}");
        static BAD: [(&str, &str); 5] = [
            ("HPCOMM_RANK", "0"),
            ("HPCOMM_SIZE", "1"),
            ("HPCOMM_KVS", "x"),
            ("HPCOMM_SECRET", "s"),
            ("HPCOMM_JOB", "j"),
        ];
        assert!(Config::from_lookup(env(&BAD)).unwrap_err().to_string().contains("HPCOMM_KVS"));
    }
}
