//! Joining a job: the seam between the runtime and whatever started the
//! process.
//!
//! A [`Bootstrap`] tells a rank who it is (rank, size, node) and gives the
//! transports a key-value space with a fence ([`Exchange`]) to publish their
//! addresses in. There is one per launcher, each in a file of its own:
//!
//! | file | launcher | found by |
//! |---|---|---|
//! | [`kvs`] | `hpcomm run` (and `hpcomm run --batch` on AWS Batch) | `HPCOMM_RANK` |
//! | [`pmix`] | Open MPI's `mpirun`/`prterun`, `srun --mpi=pmix` | `PMIX_NAMESPACE` and `PMIX_RANK` |
//! | [`pmi2`] | Slurm's `srun --mpi=pmi2` | `PMI_FD` with `SLURM_STEP_ID` |
//! | [`pmi1`] | MPICH's Hydra `mpiexec` (and any PMI-1 server) | `PMI_FD` or `PMI_PORT` |
//! | [`batch`] | AWS Batch multi-node parallel jobs: the environment `hpcomm run --batch` reads | `AWS_BATCH_JOB_NODE_INDEX` |
//!
//! [`detect`] picks one in the order of that table; `HPCOMM_BOOTSTRAP`
//! (`hpcomm`, `pmix`, `pmi2`, `pmi1` or `singleton`) forces one. With none
//! of them the program is a singleton, unless the environment shows a
//! launcher that gave it no way in — `srun` without a PMI plugin, `mpirun`
//! without PMIx, an AWS Batch node without `hpcomm run --batch` — which is
//! an error that says what to type instead. Every variable's name is in
//! [`vars`].

pub mod batch;
pub mod kvs;
pub mod kvs_protocol;
pub mod kvs_server;
mod line;
pub mod mapping;
pub mod pmi1;
pub mod pmi2;
pub mod pmix;
#[cfg(test)]
mod replay_tests;
pub mod vars;

use std::net::IpAddr;
use std::time::Duration;

pub use hpcomm_transport::Exchange;
pub use kvs::KvsClient;
pub use kvs_protocol::{hex_decode, hex_encode};

use crate::config::Config;
use crate::error::{Error, Result};

/// A rank's connection to the launcher that started it.
pub trait Bootstrap: std::fmt::Debug + Send {
    /// The launcher, as errors and `hpcomm info` name it.
    fn name(&self) -> &'static str;
    /// This rank.
    fn rank(&self) -> usize;
    /// Ranks in the job.
    fn size(&self) -> usize;
    /// This rank's node, when the launcher says (ranks of one node share
    /// memory); `None`: find it from the host.
    fn node(&self) -> Option<String>;
    /// An address of this host that the other hosts reach, when the
    /// connection to the launcher shows one.
    fn local_ip(&self) -> Option<IpAddr> {
        None
    }
    /// A secret every rank of the job, and nobody else, knows: what the
    /// tcp transport's handshake presents.
    fn secret(&self) -> &str;
    /// The key-value space and fence the transports set up with.
    fn exchange(&mut self) -> &mut dyn Exchange;
    /// The transports are set up: the key-value space is no longer needed
    /// (`hpcomm run`'s client then only watches the launcher).
    fn ready(&mut self) -> Result<()> {
        Ok(())
    }
    /// Asks the launcher to end the whole job with `code`, saying why.
    fn abort(&mut self, code: i32, message: &str);
    /// Tells the launcher that this rank has ended normally.
    fn finalize(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The bootstraps, as `HPCOMM_BOOTSTRAP` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `hpcomm run`'s key-value server.
    Hpcomm,
    /// PMIx, through the PMIx client library.
    Pmix,
    /// The PMI-2 wire protocol.
    Pmi2,
    /// The PMI-1 wire protocol.
    Pmi1,
    /// No launcher: rank 0 of 1.
    Singleton,
}

impl Kind {
    /// The name `HPCOMM_BOOTSTRAP` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hpcomm => "hpcomm",
            Kind::Pmix => "pmix",
            Kind::Pmi2 => "pmi2",
            Kind::Pmi1 => "pmi1",
            Kind::Singleton => "singleton",
        }
    }

    /// The launcher it serves, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Hpcomm => "hpcomm run",
            Kind::Pmix => "PMIx (mpirun, prterun, srun --mpi=pmix)",
            Kind::Pmi2 => "PMI-2 (srun --mpi=pmi2)",
            Kind::Pmi1 => "PMI-1 (mpiexec)",
            Kind::Singleton => "none (a singleton: rank 0 of 1)",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        [Kind::Hpcomm, Kind::Pmix, Kind::Pmi2, Kind::Pmi1, Kind::Singleton]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// Which bootstrap the environment `lookup` describes, in the documented
/// order; an error naming the launcher when it started this process with
/// no way to join the job.
pub fn detect(lookup: &impl Fn(&str) -> Option<String>) -> Result<Kind> {
    let set = |name: &str| lookup(name).is_some_and(|v| !v.trim().is_empty());
    let number = |name: &str| lookup(name).and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(forced) = lookup(vars::hpcomm::BOOTSTRAP).filter(|v| !v.trim().is_empty()) {
        return Kind::from_name(forced.trim()).ok_or_else(|| {
            Error::Config(format!(
                "{}={forced:?}: use hpcomm, pmix, pmi2, pmi1 or singleton",
                vars::hpcomm::BOOTSTRAP
            ))
        });
    }
    if set(vars::hpcomm::RANK) {
        return Ok(Kind::Hpcomm);
    }
    if set(vars::pmix::NAMESPACE) && set(vars::pmix::RANK) {
        return Ok(Kind::Pmix);
    }
    if set(vars::pmi::FD) || set(vars::pmi::PORT) {
        // Slurm's pmi2 plugin serves PMI-2, which says where every rank
        // runs; Hydra serves PMI-1 (and PMI-2, but PMI-1 is what every
        // PMI server speaks).
        let slurm = set(vars::slurm::STEP_ID);
        return Ok(if slurm && set(vars::pmi::FD) { Kind::Pmi2 } else { Kind::Pmi1 });
    }
    if set(vars::slurm::STEP_ID) && number(vars::slurm::STEP_NUM_TASKS).unwrap_or(1) > 1 {
        return Err(Error::Bootstrap(
            "started by srun without a PMI plugin (MpiDefault=none, the ParallelCluster \
             default): run it with `srun --mpi=pmi2` (or `srun --mpi=pmix`)"
                .into(),
        ));
    }
    if number(vars::ompi::WORLD_SIZE).unwrap_or(1) > 1 {
        return Err(Error::Bootstrap(
            "started by Open MPI's mpirun, which set no PMIx variables: use an mpirun built \
             with PMIx (Open MPI 4 or later), or `hpcomm run`"
                .into(),
        ));
    }
    if set(vars::pmi::RANK) && number(vars::pmi::SIZE).unwrap_or(1) > 1 {
        return Err(Error::Bootstrap(format!(
            "{} is set but neither {} nor {}: the launcher gave this process no PMI connection",
            vars::pmi::RANK,
            vars::pmi::FD,
            vars::pmi::PORT
        )));
    }
    if set(vars::batch::NODE_INDEX) && number(vars::batch::NUM_NODES).unwrap_or(1) > 1 {
        return Err(Error::Bootstrap(format!(
            "an AWS Batch multi-node job ({} nodes): start the program with \
             `hpcomm run --batch -- PROGRAM` as the container's command",
            number(vars::batch::NUM_NODES).unwrap_or(0)
        )));
    }
    Ok(Kind::Singleton)
}

/// Connects to the launcher that `kind` names.
pub fn connect(kind: Kind, config: &Config) -> Result<Box<dyn Bootstrap>> {
    let timeout = config.bootstrap_timeout;
    let lookup = |name: &str| std::env::var(name).ok();
    Ok(match kind {
        Kind::Hpcomm => {
            let launch = config.launch.as_ref().ok_or_else(|| {
                Error::Bootstrap(format!(
                    "{}=hpcomm, but {} is not set: start the program with `hpcomm run`",
                    vars::hpcomm::BOOTSTRAP,
                    vars::hpcomm::RANK
                ))
            })?;
            Box::new(KvsClient::connect(launch, timeout)?)
        }
        Kind::Pmix => Box::new(pmix::Pmix::connect(&lookup)?),
        Kind::Pmi2 => Box::new(pmi2::Pmi2::connect(&lookup, timeout, config.backends.tcp_bind)?),
        Kind::Pmi1 => Box::new(pmi1::Pmi1::connect(&lookup, timeout, config.backends.tcp_bind)?),
        Kind::Singleton => {
            return Err(Error::Bootstrap("a singleton has no launcher to connect to".into()))
        }
    })
}

/// This host's identity for ranks the launcher does not place: equal for
/// processes that can share memory. The host name and boot id tell hosts
/// apart; the network namespace tells apart containers (and the
/// network-namespace hosts of the tests) on one host, which share no
/// loopback; the device of the `/dev/shm` mount tells apart containers
/// that share the host's network but not its shared memory. (Not the mount
/// namespace: `ip netns exec` makes one per process.)
pub fn host_identity() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default().trim().to_string();
    let link =
        |path: &str| std::fs::read_link(path).map(|p| p.display().to_string()).unwrap_or_default();
    let shm = rustix::fs::stat("/dev/shm").map(|s| s.st_dev).unwrap_or(0);
    format!(
        "{}/{}/{}/shm-dev-{shm}",
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id"),
        link("/proc/self/ns/net"),
    )
}

/// The address this host would use to reach other hosts: the source
/// address of its default route (found by connecting a UDP socket, which
/// sends nothing), or loopback when it has none.
pub fn default_route_ip() -> IpAddr {
    let probe = || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect("192.0.2.1:9").ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    };
    probe().unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// A job id that can be part of a file name (shm segments are named after
/// it): anything but letters, digits, `.`, `_` and `-` becomes `_`, and it
/// is at most 64 bytes.
pub fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(64)
        .collect()
}

/// The secret of a job started by PMIx, which gives none: rank 0 makes
/// one and publishes it in the job's key-value space, which only the job's
/// processes reach; every rank reads it after a fence.
fn shared_secret(exchange: &mut dyn Exchange, rank: usize) -> std::result::Result<String, String> {
    const KEY: &str = "hpcomm-secret";
    if rank == 0 {
        let mut bytes = [0u8; 16];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| format!("cannot make a job secret: {e}"))?;
        exchange.put(KEY, &bytes)?;
    }
    exchange.fence()?;
    match exchange.get(KEY)? {
        bytes if bytes.len() == 16 => Ok(hex_encode(&bytes)),
        _ => Err("rank 0 published a malformed job secret".into()),
    }
}

/// The key under which rank 0 publishes its key-value server.
const RELAY_KEY: &str = "hpcomm-kvs";

/// Under a PMI launcher, whose key-value space costs a request per value
/// read: rank 0 serves the job a key-value store of its own (the server
/// `hpcomm run` runs) and publishes its address and a fresh secret through
/// the launcher, which only the job's processes reach; after a fence every
/// rank reads them and connects. The launcher then carries one put, one
/// fence and one get per rank, and every gather is one round trip to rank
/// 0. The secret also authenticates the tcp transport. The server, on rank
/// 0, lives as long as the process.
fn relay(
    pmi: &mut dyn Exchange,
    rank: usize,
    size: usize,
    timeout: Duration,
    bind: Option<IpAddr>,
) -> std::result::Result<(KvsClient, Option<kvs_server::Kvs>), String> {
    let job = pmi.job_id().to_string();
    let server = if rank == 0 {
        let mut bytes = [0u8; 16];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| format!("cannot make a job secret: {e}"))?;
        let secret = hex_encode(&bytes);
        let ip = bind.unwrap_or_else(default_route_ip);
        let info = kvs_server::JobInfo { job: job.clone(), transport: String::new(), nodes: 0 };
        let server = kvs_server::Kvs::start(
            &std::net::SocketAddr::new(ip, 0).to_string(),
            secret.clone(),
            size,
            info,
        )
        .map_err(|e| format!("rank 0 cannot serve the job's key-value store on {ip}: {e}"))?;
        pmi.put(RELAY_KEY, format!("{} {secret}", server.addr()).as_bytes())?;
        Some(server)
    } else {
        None
    };
    pmi.fence()?;
    let value = String::from_utf8(pmi.get(RELAY_KEY)?).unwrap_or_default();
    let (addr, secret) = value
        .split_once(' ')
        .and_then(|(a, s)| Some((a.parse().ok()?, s)))
        .filter(|(_, s)| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("rank 0 published a malformed key-value server")?;
    let launch = crate::config::Launch {
        rank,
        size,
        kvs: addr,
        secret: secret.to_string(),
        job,
        launcher_pid: None,
    };
    let client = KvsClient::connect(&launch, timeout).map_err(|e| e.to_string())?;
    Ok((client, server))
}

/// `message` said by `launcher`: prefixed with its name, once.
fn named(launcher: &str, message: String) -> Error {
    if message.starts_with(launcher) {
        Error::Bootstrap(message)
    } else {
        Error::Bootstrap(format!("{launcher}: {message}"))
    }
}

/// How long a bootstrap waits for one answer from its launcher.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_launcher_is_found_in_the_documented_order() {
        assert_eq!(detect(&env(&[])).unwrap(), Kind::Singleton);
        assert_eq!(detect(&env(&[("HPCOMM_RANK", "0"), ("PMI_FD", "3")])).unwrap(), Kind::Hpcomm);
        let pmix = [("PMIX_NAMESPACE", "ns"), ("PMIX_RANK", "1"), ("PMI_FD", "3")];
        assert_eq!(detect(&env(&pmix)).unwrap(), Kind::Pmix);
        let srun = [("PMI_FD", "3"), ("PMI_RANK", "0"), ("SLURM_STEP_ID", "0")];
        assert_eq!(detect(&env(&srun)).unwrap(), Kind::Pmi2);
        assert_eq!(detect(&env(&[("PMI_FD", "5"), ("PMI_RANK", "0")])).unwrap(), Kind::Pmi1);
        assert_eq!(detect(&env(&[("PMI_PORT", "h:1"), ("PMI_ID", "0")])).unwrap(), Kind::Pmi1);
        let forced = [("HPCOMM_BOOTSTRAP", "pmi1"), ("PMI_FD", "3"), ("SLURM_STEP_ID", "0")];
        assert_eq!(detect(&env(&forced)).unwrap(), Kind::Pmi1);
        let e = detect(&env(&[("HPCOMM_BOOTSTRAP", "mpi")])).unwrap_err();
        assert!(e.to_string().contains("HPCOMM_BOOTSTRAP"), "{e}");
    }

    #[test]
    fn launchers_that_give_no_way_in_are_named() {
        let plain_srun =
            [("SLURM_JOB_ID", "7"), ("SLURM_STEP_ID", "0"), ("SLURM_STEP_NUM_TASKS", "4")];
        let e = detect(&env(&plain_srun)).unwrap_err();
        assert!(matches!(&e, Error::Bootstrap(m) if m.contains("srun --mpi=pmi2")), "{e}");
        // One task of srun, or a batch script, runs as a singleton.
        let one = [("SLURM_JOB_ID", "7"), ("SLURM_STEP_ID", "0"), ("SLURM_STEP_NUM_TASKS", "1")];
        assert_eq!(detect(&env(&one)).unwrap(), Kind::Singleton);
        assert_eq!(detect(&env(&[("SLURM_JOB_ID", "7")])).unwrap(), Kind::Singleton);
        let e = detect(&env(&[("OMPI_COMM_WORLD_SIZE", "4")])).unwrap_err();
        assert!(e.to_string().contains("mpirun"), "{e}");
        let e = detect(&env(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")])).unwrap_err();
        assert!(e.to_string().contains("PMI_FD"), "{e}");
        let batch = [
            ("AWS_BATCH_JOB_NODE_INDEX", "1"),
            ("AWS_BATCH_JOB_NUM_NODES", "3"),
            ("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0"),
        ];
        let e = detect(&env(&batch)).unwrap_err();
        assert!(e.to_string().contains("hpcomm run --batch"), "{e}");
    }

    #[test]
    fn job_ids_become_file_names() {
        assert_eq!(file_safe("kvs_1234_0"), "kvs_1234_0");
        assert_eq!(file_safe("../x y;z"), ".._x_y_z");
        assert_eq!(file_safe(&"a".repeat(100)).len(), 64);
    }
}
