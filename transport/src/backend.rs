//! Every backend by name: the one place that knows them all.
//!
//! A backend is a module of this crate (its endpoint, its settings and
//! what they read from the environment) plus an entry here: its [`Kind`]
//! and name, what it reaches, how a launched rank opens it ([`open`]), how
//! `hpcomm info` probes it ([`probe`]), and what a job that died during
//! set-up may leave behind ([`cleanup`]). The runtime, the launcher and
//! `hpcomm info` ask this file; adding a backend touches it, the backend's
//! own module, its conformance test and the documentation.

use std::net::IpAddr;

use crate::exchange::Exchange;
use crate::loopback::{Loopback, LoopbackConfig};
use crate::ofi::{Ofi, OfiConfig};
use crate::shm::{Shm, ShmConfig};
use crate::tcp::{Tcp, TcpConfig};
use crate::{Backend, Capabilities, Transport, TransportError};

/// A backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Ranks as threads of one process (`hpcomm::threads`).
    Loopback,
    /// Processes of one host, through shared memory.
    Shm,
    /// Processes on any hosts, over TCP.
    Tcp,
    /// Processes on any hosts, through libfabric (EFA and other providers).
    Ofi,
}

impl Kind {
    /// Every backend, in the order `hpcomm info` shows them.
    pub const ALL: [Kind; 4] = [Kind::Loopback, Kind::Shm, Kind::Tcp, Kind::Ofi];

    /// Its name, as `--transport`, `HPCOMM_TRANSPORT` and `hpcomm info`
    /// spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Loopback => "loopback",
            Kind::Shm => "shm",
            Kind::Tcp => "tcp",
            Kind::Ofi => "ofi",
        }
    }

    /// The backend of a name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What it connects.
    pub fn reach(self) -> &'static str {
        match self {
            Kind::Loopback => "ranks as threads of one process: hpcomm::threads",
            Kind::Shm => "processes on this host",
            Kind::Tcp => "processes on any hosts",
            Kind::Ofi => "processes on any hosts, through libfabric (EFA and other providers)",
        }
    }

    /// Whether the ranks of a launched job can use it (`--transport`).
    pub fn launchable(self) -> bool {
        self != Kind::Loopback
    }

    /// The backends a launched job can be told to use.
    pub fn launchable_names() -> impl Iterator<Item = &'static str> {
        Kind::ALL.into_iter().filter(|k| k.launchable()).map(Kind::name)
    }
}

/// The settings of every backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The shm backend's.
    pub shm: ShmConfig,
    /// The tcp backend's (the secret and the address to listen on are
    /// filled in by the runtime at set-up).
    pub tcp: TcpConfig,
    /// `HPCOMM_TCP_BIND`: the address tcp listens on and publishes, if set.
    pub tcp_bind: Option<IpAddr>,
    /// The ofi backend's.
    pub ofi: OfiConfig,
    /// `HPCOMM_AUTO_NETWORK`: the backend `--transport auto` uses between
    /// nodes (`tcp` or `ofi`); `None`: ofi where every rank has a
    /// kernel-bypass provider, else tcp.
    pub auto_network: Option<Kind>,
}

impl Settings {
    /// Reads each backend's `HPCOMM_*` variables through `lookup`; an error
    /// names the variable.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let mut settings = Settings::default();
        settings.shm.read_vars(lookup)?;
        settings.tcp_bind = settings.tcp.read_vars(lookup)?;
        settings.ofi.read_vars(lookup)?;
        if let Some(v) = lookup("HPCOMM_AUTO_NETWORK") {
            settings.auto_network = match v.trim() {
                "" | "detect" => None,
                name => match Kind::from_name(name) {
                    Some(kind @ (Kind::Tcp | Kind::Ofi)) => Some(kind),
                    _ => return Err(format!("HPCOMM_AUTO_NETWORK={name:?}: use tcp or ofi")),
                },
            };
        }
        Ok(settings)
    }
}

/// Reads variable `name` as a `T`; `None` when unset.
pub(crate) fn parse<T: std::str::FromStr>(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>, String> {
    match lookup(name) {
        None => Ok(None),
        Some(raw) => raw
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={raw:?} is not a valid non-negative integer")),
    }
}

/// Raises this process's soft limit on open files towards the hard limit
/// when it is below `need` (a connection per peer and stripe: a job of
/// thousands needs more than the usual soft limit of 1,024). Best effort:
/// what cannot be raised shows later as a clear error at the connection
/// that runs out.
pub fn raise_fd_limit(need: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < need as u64) {
        let current = match limit.maximum {
            Some(max) => Some(max.min(need as u64)),
            None => Some(need as u64),
        };
        let _ = setrlimit(Resource::Nofile, Rlimit { current, maximum: limit.maximum });
    }
}

/// Opens backend `kind` as rank `me` of `ranks`, over the job's exchange.
pub fn open(
    kind: Kind,
    me: usize,
    ranks: usize,
    exchange: &mut dyn Exchange,
    settings: &Settings,
) -> Result<Backend, TransportError> {
    Ok(match kind {
        Kind::Loopback => {
            return Err(TransportError::Unsupported(
                "loopback (it joins the threads of one process: hpcomm::threads)",
            ))
        }
        Kind::Shm => Backend::Shm(Shm::open(me, ranks, exchange, &settings.shm)?),
        Kind::Tcp => Backend::Tcp(Tcp::open(me, ranks, exchange, &settings.tcp)?),
        Kind::Ofi => Backend::Ofi(Box::new(Ofi::open(me, ranks, exchange, &settings.ofi)?)),
    })
}

/// Which backend an endpoint is: one kind, or `auto`'s shm within a node
/// and a network backend between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// One backend for every peer.
    One(Kind),
    /// shm within the node, this network backend (tcp or ofi) between
    /// nodes.
    Auto(Kind),
}

impl Flavor {
    /// The flavor of `backend`.
    pub fn of(backend: &Backend) -> Flavor {
        match backend {
            Backend::Loopback(_) => Flavor::One(Kind::Loopback),
            Backend::Shm(_) => Flavor::One(Kind::Shm),
            Backend::Tcp(_) => Flavor::One(Kind::Tcp),
            Backend::Ofi(_) => Flavor::One(Kind::Ofi),
            Backend::Hybrid(h) => Flavor::Auto(h.network_kind()),
        }
    }
}

/// Opens an endpoint of `flavor` as rank `me` of `ranks`, over `exchange`,
/// with `settings` (a loopback one with `loopback`'s; an `auto` one on
/// node `node`): how a job's thread gets an endpoint of its own, like the
/// one the job started with.
pub fn open_flavor(
    flavor: Flavor,
    me: usize,
    ranks: usize,
    node: &str,
    exchange: &mut dyn Exchange,
    settings: &Settings,
    loopback: &LoopbackConfig,
) -> Result<Backend, TransportError> {
    match flavor {
        Flavor::One(Kind::Loopback) => {
            Ok(Backend::Loopback(Loopback::open(me, ranks, exchange, loopback)?))
        }
        Flavor::One(kind) => open(kind, me, ranks, exchange, settings),
        Flavor::Auto(network) => {
            let settings = Settings { auto_network: Some(network), ..settings.clone() };
            crate::hybrid::open(me, ranks, node, exchange, &settings)
        }
    }
}

/// What `hpcomm info` shows of a backend.
#[derive(Debug)]
pub struct Probe {
    /// Its limits, from a small job set up here; why it cannot be used.
    pub status: Result<Capabilities, String>,
    /// Lines about it (the library and providers it found, its settings).
    pub notes: Vec<String>,
}

/// Sets up a small job of backend `kind` in this process to see whether it
/// works here and with which limits.
pub fn probe(kind: Kind, settings: &Settings) -> Probe {
    fn caps<T: Transport>(eps: Result<Vec<T>, TransportError>) -> Result<Capabilities, String> {
        eps.map_err(|e| e.to_string()).map(|eps| eps[0].capabilities().clone())
    }
    match kind {
        Kind::Loopback => Probe {
            status: Ok(Loopback::fabric(1, LoopbackConfig::default())[0].capabilities().clone()),
            notes: Vec::new(),
        },
        Kind::Shm => Probe {
            status: caps(Shm::local_job(2, &settings.shm)),
            notes: vec![format!("ptrace scope   {}", crate::shm::ptrace_scope())],
        },
        Kind::Tcp => {
            let tcp = TcpConfig { secret: "probe".into(), ..settings.tcp.clone() };
            Probe {
                status: caps(Tcp::local_job(2, &tcp)),
                notes: vec![
                    "checked over 127.0.0.1".into(),
                    format!("stripes        {} per pair (HPCOMM_TCP_STRIPES)", tcp.stripes),
                ],
            }
        }
        Kind::Ofi => crate::ofi::probe(&settings.ofi),
    }
}

/// Removes what the ranks of job `job` on this host may have left behind
/// when they died during set-up (shm segments they could not unlink).
pub fn cleanup(job: &str) {
    crate::shm::cleanup(job);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_loopback_is_not_launchable() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("auto"), None);
        assert_eq!(Kind::launchable_names().collect::<Vec<_>>(), ["shm", "tcp", "ofi"]);
    }

    #[test]
    fn settings_come_from_each_backends_variables() {
        let vars = [
            ("HPCOMM_SHM_RING_BYTES", "65536"),
            ("HPCOMM_SHM_CMA", "0"),
            ("HPCOMM_TCP_STRIPES", "4"),
            ("HPCOMM_TCP_BIND", "10.0.0.7"),
            ("HPCOMM_TCP_TIMEOUT", "3"),
            ("HPCOMM_TCP_MAX_CONNS", "64"),
            ("HPCOMM_OFI_PROVIDER", "tcp;ofi_rxm"),
            ("HPCOMM_OFI_MR_MODE", "efa"),
            ("HPCOMM_OFI_READS", "0"),
            ("HPCOMM_OFI_FRAME", "262144"),
            ("HPCOMM_OFI_NICS", "eth0,eth1"),
            ("HPCOMM_AUTO_NETWORK", "ofi"),
        ];
        let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let s = Settings::from_lookup(&lookup).unwrap();
        assert_eq!(s.shm.ring_bytes, Some(65536));
        assert!(!s.shm.cma);
        assert_eq!(s.tcp.stripes, 4);
        assert_eq!(s.tcp_bind, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(s.tcp.peer_timeout, std::time::Duration::from_secs(3));
        assert_eq!(s.tcp.max_conns, Some(64));
        assert_eq!(s.ofi.provider.as_deref(), Some("tcp;ofi_rxm"));
        assert!(s.ofi.efa_mr_mode && !s.ofi.reads);
        assert_eq!(s.ofi.max_payload, 256 << 10);
        assert_eq!(s.ofi.nics, crate::ofi::Nics::Named(vec!["eth0".into(), "eth1".into()]));
        assert_eq!(s.auto_network, Some(Kind::Ofi));
        let peer = |name: &str| (name == "HPCOMM_PEER_TIMEOUT").then(|| "20".to_string());
        let s = Settings::from_lookup(&peer).unwrap();
        assert_eq!(s.tcp.peer_timeout, std::time::Duration::from_secs(20));
        assert_eq!(s.ofi.peer_timeout, std::time::Duration::from_secs(20));
        for (name, bad) in [
            ("HPCOMM_SHM_RING_BYTES", "100000"),
            ("HPCOMM_SHM_POOL_BYTES", "lots"),
            ("HPCOMM_TCP_STRIPES", "0"),
            ("HPCOMM_TCP_MAX_CONNS", "0"),
            ("HPCOMM_TCP_BIND", "here"),
            ("HPCOMM_OFI_MR_MODE", "all"),
            ("HPCOMM_OFI_FRAME", "1024"),
            ("HPCOMM_OFI_FRAME", "big"),
            ("HPCOMM_OFI_NICS", "0"),
            ("HPCOMM_AUTO_NETWORK", "shm"),
        ] {
            let lookup = |n: &str| (n == name).then(|| bad.to_string());
            let e = Settings::from_lookup(&lookup).unwrap_err();
            assert!(e.contains(name), "{name}={bad}: {e}");
        }
        assert_eq!(Settings::from_lookup(&|_| None).unwrap(), Settings::default());
    }
}
