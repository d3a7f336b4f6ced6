//! Every `HPCOMM_*` setting, parsed in one place.
//!
//! Set by users:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HPCOMM_EAGER_LIMIT` | largest message sent eagerly, in bytes (at most the transport's frame payload) | the transport's |
//! | `HPCOMM_SPIN_US` | how long a waiting rank spins on progress before it yields, in µs | 50 when the job's ranks on this host fit its cores, else 0 (at 0 it spins only a few rounds before it yields) |
//! | `HPCOMM_YIELD_US` | how long it then yields the core, before it sleeps in the transport, in µs | where the job's ranks on this host fit its cores, the transport's hint (shm 10000, tcp and ofi 300), else 1000 |
//! | `HPCOMM_IDLE_WAIT_US` | longest single sleep of a waiting rank, in µs (it wakes early when a frame arrives) | 200 |
//! | `HPCOMM_FINALIZE_TIMEOUT` | seconds a finishing rank waits for its peers and its last frames | 30 |
//! | `HPCOMM_SHM_RING_BYTES` | bytes of each rank's queue and of each pair ring in the shm segment (power of two, ≥ 16 KiB) | 256 KiB up to 16 ranks, 64 KiB beyond |
//! | `HPCOMM_SHM_POOL_BYTES` | bytes of pair rings the shm segment may hand out (the pairs that talk most take one; the others use the receiver's queue); rings take memory only once taken | 64 MiB |
//! | `HPCOMM_SHM_CMA` | `0` disables single-copy reads (`process_vm_readv`) between shm ranks | `1` |
//! | `HPCOMM_TCP_STRIPES` | TCP connections per pair of ranks; frames of 64 KiB and more are spread over them | 1 |
//! | `HPCOMM_TCP_BIND` | the IP address a rank listens on and publishes for TCP (one the other ranks reach) | the address its connection to `hpcomm run` comes from; under other launchers, the source address of the default route |
//! | `HPCOMM_TCP_MAX_CONNS` | TCP connections a rank keeps open at most (at least the stripes); past it, the peer used least recently has its connections closed without losing a frame, and they are made again when next needed | no cap |
//! | `HPCOMM_AUTO_NETWORK` | the backend `--transport auto` uses between nodes: `tcp` or `ofi` | ofi when every rank has a kernel-bypass provider, else tcp |
//! | `HPCOMM_PEER_TIMEOUT` | seconds after which a silent peer (a dead host or process, a cut link) is lost on every network backend (ofi: keep-alives every tenth of it) | 30 |
//! | `HPCOMM_TCP_TIMEOUT` | seconds after which a TCP peer that acknowledges nothing (a cut link, a dead host) is lost, and operations with it fail | 30 |
//! | `HPCOMM_TRANSPORT` | the transport of a launched job: `auto` (shm within a node, ofi or tcp between nodes), `shm`, `tcp` or `ofi`; `hpcomm run --transport` sets it, and under other launchers the user does | `auto` |
//! | `HPCOMM_BOOTSTRAP` | forces the bootstrap: `hpcomm`, `pmix`, `pmi2`, `pmi1` or `singleton` (see `bootstrap`) | found from the environment |
//! | `HPCOMM_BOOTSTRAP_TIMEOUT` | seconds a rank waits for one answer from its launcher (a fence waits for the slowest rank to start) | 300 |
//! | `HPCOMM_PMIX_LIBRARY` | the PMIx client library to load | `libpmix.so.2` |
//! | `HPCOMM_LOG` | log filter of the `hpcomm` command (tracing's `EnvFilter` syntax) | `info` |
//! | `HPCOMM_BARRIER`, `HPCOMM_BCAST`, `HPCOMM_REDUCE`, `HPCOMM_ALLREDUCE`, `HPCOMM_ALLGATHER`, `HPCOMM_GATHER`, `HPCOMM_ALLTOALL` | forces that collective's algorithm by name (see `hpcomm-collectives`; for benchmarks and tests); empty or `auto`: the automatic choice | chosen by message and communicator size |
//! | `HPCOMM_NET_LATENCY_US`, `HPCOMM_NET_BANDWIDTH_GBS` | the network between nodes as the collectives' cost model sees it, when a communicator spans nodes: one-way latency (µs) and a node's link bandwidth (GB/s), to correct the model with a site's measured figures | EFA's (15 µs, 12.5 GB/s) over ofi, 50 µs and 1.25 GB/s over tcp |
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

use hpcomm_transport::backend::{Kind, Settings};
use hpcomm_transport::Capabilities;

use crate::bootstrap::vars::hpcomm as var;
use crate::error::{Error, Result};

/// Which transport a launched job uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// The best available: shm between ranks of one host, tcp between hosts.
    Auto,
    /// One backend for every peer.
    Only(Kind),
}

impl TransportChoice {
    /// The name as the launcher and `HPCOMM_TRANSPORT` spell it.
    pub fn name(self) -> &'static str {
        match self {
            TransportChoice::Auto => "auto",
            TransportChoice::Only(kind) => kind.name(),
        }
    }

    /// Every name a launched job accepts: `auto` and the launchable
    /// backends'.
    pub fn names() -> Vec<&'static str> {
        std::iter::once("auto").chain(Kind::launchable_names()).collect()
    }
}

impl std::str::FromStr for TransportChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(TransportChoice::Auto),
            name => match Kind::from_name(name).filter(|k| k.launchable()) {
                Some(kind) => Ok(TransportChoice::Only(kind)),
                None => Err(format!(
                    "unknown transport {name:?}: expected {}",
                    TransportChoice::names().join(", ")
                )),
            },
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
    /// How long a waiting rank yields, after spinning, before it sleeps;
    /// `None`: decided like `spin`.
    pub yield_time: Option<Duration>,
    /// Longest sleep in the transport when idle.
    pub idle_wait: Duration,
    /// How long finalization waits for peers.
    pub finalize_timeout: Duration,
    /// The backends' settings (`HPCOMM_SHM_*`, `HPCOMM_TCP_*`,
    /// `HPCOMM_OFI_*`).
    pub backends: Settings,
    /// This rank's node, if set: ranks that name the same node share
    /// memory (`--transport auto` uses shm between them, tcp between the
    /// others; `Communicator::split_shared` groups them). By default the
    /// node is the host (host name, boot id, network namespace); once a
    /// universe is made, it is always set.
    pub node: Option<String>,
    /// Collective algorithms forced by name, keyed by collective
    /// (`"allreduce"` → `"ring"`); the collectives layer checks the names.
    pub algorithms: BTreeMap<String, String>,
    /// The network between nodes for the collectives' cost model
    /// (`HPCOMM_NET_LATENCY_US`, `HPCOMM_NET_BANDWIDTH_GBS`): seconds of
    /// latency and bytes per second of a node's link; `None` each: the
    /// transport's default figures.
    pub network: (Option<Duration>, Option<u64>),
    /// The transport of a launched job (`HPCOMM_TRANSPORT`).
    pub transport: TransportChoice,
    /// How long a rank waits for one answer from its launcher.
    pub bootstrap_timeout: Duration,
    /// Present when the process was started by `hpcomm run`.
    pub launch: Option<Launch>,
}

/// How long a waiting rank yields before it sleeps when ranks outnumber the
/// cores.
pub const YIELD_SHARED: Duration = Duration::from_millis(1);

/// The collectives whose algorithm a `HPCOMM_<NAME>` variable can force.
pub const FORCEABLE_COLLECTIVES: [&str; 7] =
    ["barrier", "bcast", "reduce", "allreduce", "allgather", "gather", "alltoall"];

impl Default for Config {
    fn default() -> Self {
        Config {
            eager_limit: None,
            spin: None,
            yield_time: None,
            idle_wait: Duration::from_micros(200),
            finalize_timeout: Duration::from_secs(30),
            backends: Settings::default(),
            node: None,
            algorithms: BTreeMap::new(),
            network: (None, None),
            transport: TransportChoice::Auto,
            bootstrap_timeout: crate::bootstrap::DEFAULT_TIMEOUT,
            launch: None,
        }
    }
}

impl Config {
    /// Fills in how a waiting rank spins and yields (`spin`, `yield_time`)
    /// where the user left them open, for `ranks` ranks on `cores` cores
    /// over a backend with `caps`.
    pub fn choose_waiting(&mut self, caps: &Capabilities, ranks: usize, cores: usize) {
        // Spin before yielding only when every rank can have a core: with
        // more ranks than cores, a spinning rank steals the time of the one
        // it waits for. How long: a hundred times the transport's latency,
        // at least 50 µs — over TCP a peer that went to sleep costs tens of
        // µs to wake, and a spin shorter than a round trip makes both sides
        // take turns sleeping (8-byte latency on loopback: 60 µs with 50 µs
        // of spin, 4 µs with 1 ms).
        let fits = ranks <= cores;
        let spin =
            (caps.latency_hint * 100).clamp(Duration::from_micros(50), Duration::from_millis(2));
        self.spin.get_or_insert(if fits { spin } else { Duration::ZERO });
        // Then yield, and only after that sleep. Where ranks fit their
        // cores, for as long as the transport says (`yield_hint`: over shm
        // a sender waiting for a window of 64 KiB rendezvous messages slept
        // in every window after 256 yielding rounds, and each wake cost
        // tens of µs — 14.0 GB/s against 16.7 yielding 10 ms,
        // docs/performance.md); where they do not, yielding keeps the core
        // from the others, so sleep sooner. In time, not rounds: a round
        // costs 0.3 µs on an idle core and far more on a busy one.
        self.yield_time.get_or_insert(if fits { caps.yield_hint } else { YIELD_SHARED });
    }

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
        if lookup("HPCOMM_YIELD").is_some() {
            return Err(Error::Config(
                "HPCOMM_YIELD (rounds) is replaced by HPCOMM_YIELD_US (how long to yield, in µs)"
                    .into(),
            ));
        }
        if let Some(v) = parse::<u64>(&lookup, "HPCOMM_YIELD_US")? {
            config.yield_time = Some(Duration::from_micros(v));
        }
        if let Some(v) = parse::<u64>(&lookup, "HPCOMM_IDLE_WAIT_US")? {
            config.idle_wait = Duration::from_micros(v.max(1));
        }
        if let Some(v) = parse::<u64>(&lookup, "HPCOMM_FINALIZE_TIMEOUT")? {
            config.finalize_timeout = Duration::from_secs(v);
        }
        config.backends = Settings::from_lookup(&lookup).map_err(Error::Config)?;
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
        let figure = |name: &str, scale: f64| -> Result<Option<f64>> {
            let Some(raw) = lookup(name) else { return Ok(None) };
            match raw.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 && v * scale < 1e18 => Ok(Some(v * scale)),
                _ => Err(Error::Config(format!("{name}={raw:?} is not a positive number"))),
            }
        };
        config.network = (
            figure("HPCOMM_NET_LATENCY_US", 1e3)?.map(|ns| Duration::from_nanos(ns.ceil() as u64)),
            figure("HPCOMM_NET_BANDWIDTH_GBS", 1e9)?.map(|b| b.ceil() as u64),
        );
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

    /// Ranks that fit the cores spin and then yield for the backend's
    /// time; ranks that share them barely spin and sleep sooner; what the
    /// user set stays.
    #[test]
    fn waiting_follows_the_backend_and_the_cores() {
        let caps = |latency_us, yield_ms| Capabilities {
            name: "test",
            max_header: 64,
            max_payload: 1 << 16,
            inline_limit: 0,
            eager_limit: 1 << 12,
            rma_read: false,
            max_read: 0,
            revocable: true,
            reads_from_outside: false,
            rma_write: false,
            ordered: true,
            latency_hint: Duration::from_micros(latency_us),
            spin_pause: false,
            yield_hint: Duration::from_millis(yield_ms),
            bandwidth_hint: 0,
        };
        let mut c = Config::default();
        c.choose_waiting(&caps(10, 10), 2, 2);
        assert_eq!(c.spin, Some(Duration::from_millis(1)));
        assert_eq!(c.yield_time, Some(Duration::from_millis(10)));
        let mut c = Config::default();
        c.choose_waiting(&caps(10, 10), 4, 2);
        assert_eq!(c.spin, Some(Duration::ZERO));
        assert_eq!(c.yield_time, Some(YIELD_SHARED));
        let mut c = Config::from_lookup(env(&[("HPCOMM_YIELD_US", "7")])).unwrap();
        c.choose_waiting(&caps(0, 10), 2, 2);
        assert_eq!(c.spin, Some(Duration::from_micros(50)), "at least 50 µs");
        assert_eq!(c.yield_time, Some(Duration::from_micros(7)));
    }

    #[test]
    fn settings_are_read_and_checked() {
        assert_eq!(Config::from_lookup(env(&[])).unwrap(), Config::default());
        let c =
            Config::from_lookup(env(&[("HPCOMM_EAGER_LIMIT", "4096"), ("HPCOMM_SPIN_US", " 0 ")]))
                .unwrap();
        assert_eq!(c.eager_limit, Some(4096));
        assert_eq!(c.spin, Some(Duration::ZERO));
        let e = Config::from_lookup(env(&[("HPCOMM_YIELD_US", "-3")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_YIELD_US"), "{e}");
        let c = Config::from_lookup(env(&[("HPCOMM_YIELD_US", "250")])).unwrap();
        assert_eq!(c.yield_time, Some(Duration::from_micros(250)));
        // The old variable counted rounds: refused, not silently ignored.
        let e = Config::from_lookup(env(&[("HPCOMM_YIELD", "256")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_YIELD_US"), "{e}");
        let e = Config::from_lookup(env(&[("HPCOMM_SHM_RING_BYTES", "100000")])).unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
        let c = Config::from_lookup(env(&[("HPCOMM_SHM_POOL_BYTES", "1048576")])).unwrap();
        assert_eq!(c.backends.shm.pool_bytes, 1 << 20);
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
    fn network_figures_are_read_and_checked() {
        let c = Config::from_lookup(env(&[
            ("HPCOMM_NET_LATENCY_US", " 7.5 "),
            ("HPCOMM_NET_BANDWIDTH_GBS", "3"),
        ]))
        .unwrap();
        assert_eq!(c.network, (Some(Duration::from_nanos(7500)), Some(3_000_000_000)));
        assert_eq!(Config::from_lookup(env(&[])).unwrap().network, (None, None));
        for name in ["HPCOMM_NET_LATENCY_US", "HPCOMM_NET_BANDWIDTH_GBS"] {
            for bad in ["0", "-1", "fast", "inf", "1e300"] {
                let pairs: &'static [(&str, &str)] = Box::leak(Box::new([(name, bad)]));
                let e = Config::from_lookup(env(pairs)).unwrap_err();
                assert!(e.to_string().contains(name), "{e}");
            }
        }
    }

    /// Each backend's variables are its own (`hpcomm_transport::backend`
    /// tests them all); the runtime carries them and their errors.
    #[test]
    fn node_and_backend_settings_are_read() {
        let c = Config::from_lookup(env(&[
            ("HPCOMM_TCP_BIND", "10.0.0.7"),
            ("HPCOMM_NODE", " rack1-a "),
            ("HPCOMM_OFI_READS", "0"),
        ]))
        .unwrap();
        assert_eq!(c.node.as_deref(), Some("rack1-a"));
        assert_eq!(c.backends.tcp_bind, Some("10.0.0.7".parse().unwrap()));
        assert!(!c.backends.ofi.reads);
        let e = Config::from_lookup(env(&[("HPCOMM_TCP_STRIPES", "0")])).unwrap_err();
        assert!(matches!(e, Error::Config(ref m) if m.contains("HPCOMM_TCP_STRIPES")), "{e}");
        let e = Config::from_lookup(env(&[("HPCOMM_NODE", " ")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_NODE"), "{e}");
        let e = Config::from_lookup(env(&[("HPCOMM_TRANSPORT", "loopback")])).unwrap_err();
        assert!(e.to_string().contains("auto, shm, tcp, ofi"), "{e}");
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
        assert_eq!(config.transport, TransportChoice::Only(Kind::Shm));
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
