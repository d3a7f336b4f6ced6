//! Starting and ending a job: the universe, `init` and in-process ranks.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use hpcomm_transport::backend::{self, Settings};
use hpcomm_transport::loopback::{Loopback, LoopbackConfig};
use hpcomm_transport::shm::{Shm, ShmConfig};
use hpcomm_transport::{hybrid, Backend};

use crate::bootstrap::{self, Bootstrap};
use crate::config::TransportChoice;

use crate::comm::Communicator;
use crate::config::Config;
use crate::endpoint::{Endpoint, Reopen};
use crate::error::{Error, Result};

/// This process's membership in a job: its endpoint and the world
/// communicator (`MPI_Init` to `MPI_Finalize`).
///
/// A universe and everything it made move to another thread together
/// (`Send`); its endpoint serves one thread at a time (see
/// [`Communicator`]; threads that communicate at once open endpoints of
/// their own with [`Communicator::endpoints`]).
///
/// Dropping the universe finalizes it; [`Universe::finalize`] does the same
/// and reports problems.
#[derive(Debug)]
pub struct Universe {
    endpoint: Endpoint,
    /// The launcher's connection, told when this rank ends.
    bootstrap: Option<Box<dyn Bootstrap>>,
}

impl Universe {
    /// A universe over an endpoint that is already connected to its peers.
    pub fn from_transport(transport: Backend, config: Config) -> Universe {
        Universe::of_threads(transport, config, &local_job_name(), &LoopbackConfig::default())
    }

    /// A universe of a job of threads named `job` (the same on every rank),
    /// whose further endpoints over loopback take `loopback`'s settings.
    fn of_threads(
        transport: Backend,
        config: Config,
        job: &str,
        loopback: &LoopbackConfig,
    ) -> Universe {
        let reopen = Reopen {
            settings: config.backends.clone(),
            loopback: loopback.clone(),
            job: job.to_string(),
            node: config.node.clone().unwrap_or_else(bootstrap::host_identity),
        };
        Universe {
            endpoint: Endpoint::from_transport(transport, config, reopen, None),
            bootstrap: None,
        }
    }

    /// Learns which ranks share a node (collective over the world; see
    /// [`Communicator::nodes`]).
    fn learn_nodes(mut self) -> Result<Universe> {
        self.endpoint.world_mut().learn_nodes()?;
        Ok(self)
    }

    /// The communicator of every rank of the job (`MPI_COMM_WORLD`).
    pub fn world(&self) -> &Communicator {
        self.endpoint.world()
    }

    /// The name of the transport in use.
    pub fn transport_name(&self) -> &'static str {
        self.world().transport_name()
    }

    /// Ends this rank's part in the job (`MPI_Finalize`): waits until every
    /// rank has arrived (so that nobody mistakes a normal exit for a
    /// failure) and every queued frame has left. Ranks that already failed
    /// are not waited for.
    pub fn finalize(mut self) -> Result<()> {
        self.finish()
    }

    /// Leaves at once, without the final barrier: peers see this rank as
    /// lost.
    fn abandon(mut self) {
        self.endpoint.abandon();
    }

    fn finish(&mut self) -> Result<()> {
        if !self.endpoint.is_open() {
            return Ok(());
        }
        let ended = self.endpoint.finish();
        let told = self.bootstrap.take().map_or(Ok(()), |mut boot| boot.finalize());
        ended.and(told)
    }
}

impl Drop for Universe {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Leave at once: peers see this rank as lost instead of waiting.
            return;
        }
        if let Err(e) = self.finish() {
            tracing::warn!("finalization: {e}");
        }
    }
}

/// A name for a job of this process's threads, unique on the host while it
/// runs.
fn local_job_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("threads-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Joins the job this process was started in.
///
/// The launcher is found from the environment (see [`crate::bootstrap`]):
/// `hpcomm run`, Slurm's `srun --mpi=pmi2` or `--mpi=pmix`, MPICH's
/// `mpiexec`, Open MPI's `mpirun`, or `hpcomm run --batch` on AWS Batch.
/// The rank sets up the transport the job asked for (`HPCOMM_TRANSPORT`;
/// by default shm within a node and tcp between nodes) and returns with
/// the world communicator of every rank. Without a launcher the program
/// runs as a singleton: rank 0 of a world of 1. Settings come from the
/// `HPCOMM_*` variables (see [`Config`]).
pub fn init() -> Result<Universe> {
    let mut config = Config::from_env()?;
    let kind = bootstrap::detect(&|name: &str| std::env::var(name).ok())?;
    if kind == bootstrap::Kind::Singleton {
        config.node.get_or_insert_with(bootstrap::host_identity);
        let endpoint = Loopback::fabric(1, LoopbackConfig::default()).pop().expect("one endpoint");
        return Universe::from_transport(Backend::Loopback(endpoint), config).learn_nodes();
    }
    if let Some(launcher) = config.launch.as_ref().and_then(|l| l.launcher_pid) {
        tie_to_launcher(launcher)?;
    }
    let mut boot = bootstrap::connect(kind, &config)?;
    // The node, on every transport (`Communicator::split_shared` needs it):
    // as set, as the launcher says, or this host.
    let node = config.node.take().or_else(|| boot.node()).unwrap_or_else(bootstrap::host_identity);
    config.node = Some(node);
    let settings = backend_settings(&config, boot.as_ref());
    let transport = match open_transport(&config, &settings, boot.as_mut()) {
        Ok(transport) => transport,
        Err(e) => {
            // The others may wait in a fence for this rank: end the job.
            boot.abort(1, &format!("rank {}: {e}", boot.rank()));
            return Err(e);
        }
    };
    boot.ready()?;
    let reopen = Reopen {
        settings,
        loopback: LoopbackConfig::default(),
        job: boot.exchange().job_id().to_string(),
        node: config.node.clone().unwrap_or_else(bootstrap::host_identity),
    };
    let endpoint = Endpoint::from_transport(transport, config, reopen, None);
    Universe { endpoint, bootstrap: Some(boot) }.learn_nodes()
}

/// Asks the kernel to end this rank when `hpcomm run` (pid `launcher`)
/// does.
fn tie_to_launcher(launcher: i32) -> Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| Error::Bootstrap(format!("cannot tie this rank to the launcher: {e}")))?;
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if parent != Some(launcher) {
        // Either the launcher died before the tie was made, or a tool
        // sits between it and this rank (`hpcomm run -- perf record …`,
        // valgrind, a shell). Only the first is an error; in the second
        // case the launcher still ends the whole process group.
        let alive = rustix::process::Pid::from_raw(launcher)
            .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
        if !alive {
            return Err(Error::Bootstrap("the launcher has already exited".into()));
        }
        tracing::debug!(launcher, ?parent, "started through an intermediate process");
    }
    Ok(())
}

/// The backends' settings for this job: `config`'s, with the launcher's
/// secret and the address to listen on.
fn backend_settings(config: &Config, boot: &dyn Bootstrap) -> Settings {
    let mut settings = config.backends.clone();
    settings.tcp.secret = boot.secret().to_string();
    // Listen where the launcher reached us from, unless told: on one host
    // that is 127.0.0.1, across hosts an address the others can reach too.
    // Launchers that do not say: the default route's.
    settings.tcp.bind =
        settings.tcp_bind.or_else(|| boot.local_ip()).unwrap_or_else(bootstrap::default_route_ip);
    settings
}

/// Sets up the transport `config` asks for, with `settings`, over the
/// launcher's key-value space.
fn open_transport(
    config: &Config,
    settings: &Settings,
    boot: &mut dyn Bootstrap,
) -> Result<Backend> {
    let (rank, size, name) = (boot.rank(), boot.size(), boot.name());
    let failed = |what: &str, e: hpcomm_transport::TransportError| {
        Error::Bootstrap(format!("{what} transport under {name}: {e}"))
    };
    Ok(match config.transport {
        TransportChoice::Only(kind) => backend::open(kind, rank, size, boot.exchange(), settings)
            .map_err(|e| failed(kind.name(), e))?,
        TransportChoice::Auto => {
            let node = config.node.clone().unwrap_or_else(bootstrap::host_identity);
            hybrid::open(rank, size, &node, boot.exchange(), settings)
                .map_err(|e| failed("auto", e))?
        }
    })
}

/// Whether this process was started by a launcher (so that [`init`] joins
/// a job of several processes): `hpcomm run`, or any other launcher
/// [`init`] recognises — also one that gave the process no way to join
/// (`srun` without a PMI plugin), for which [`init`] then says what to
/// type. Programs that can also run alone use it to start their own ranks
/// with [`threads`] instead.
pub fn launched() -> bool {
    bootstrap::detect(&|name: &str| std::env::var(name).ok())
        .ok()
        .is_none_or(|kind| kind != bootstrap::Kind::Singleton)
}

/// Settings for [`threads_with`].
#[derive(Clone, Debug, Default)]
pub struct ThreadsConfig {
    /// The loopback fabric's settings (queue depth, reads, limits).
    pub loopback: LoopbackConfig,
    /// The runtime's settings.
    pub runtime: Config,
    /// What connects the threads.
    pub fabric: ThreadsFabric,
    /// Pretend the ranks sit on nodes of this many ranks each (ranks
    /// `0..r` on the first, and so on), as `HPCOMM_NODE` would say for
    /// processes: for testing node-aware code on one machine. Unset, every
    /// rank is on this host (or on `runtime.node`).
    pub ranks_per_node: Option<usize>,
}

/// What connects the ranks of [`threads_with`].
#[derive(Clone, Debug, Default)]
pub enum ThreadsFabric {
    /// The in-process loopback transport: queues between threads.
    #[default]
    Loopback,
    /// The shm backend, as between processes: rings in a shared segment,
    /// the same code path a job of processes on one machine takes.
    Shm(ShmConfig),
}

/// Runs `f` on `n` ranks, each a thread of this process connected over the
/// loopback transport, and returns each rank's result in rank order.
///
/// This is how to test parallel code under plain `cargo test`. Settings come
/// from the `HPCOMM_*` variables. If a rank panics, the others see it as a
/// failed peer (their operations with it return [`Error::PeerFailed`]), and
/// the panic is re-raised here once every rank has ended.
pub fn threads<R, F>(n: usize, f: F) -> Result<Vec<R>>
where
    R: Send,
    F: Fn(&Communicator) -> R + Sync,
{
    let config = ThreadsConfig { runtime: Config::from_env()?, ..ThreadsConfig::default() };
    threads_with(n, &config, f)
}

/// Runs `f` as the ranks of a job, however the program was started: under
/// a launcher (`hpcomm run`, `srun`, `mpiexec`, `mpirun`), as this
/// process's rank of the launched job (on its transport and hosts); started
/// alone, on `ranks` ranks that are threads of this process connected by
/// the shm backend, as a job's processes on one machine would be. Returns
/// the results of the ranks that ran in this process, in rank order: one
/// under a launcher, `ranks` otherwise. This is the `main` of a program
/// that should work both ways. A launcher that started several copies of
/// the program without a way to join them (`srun` without a PMI plugin) is
/// an error, not as many separate jobs.
pub fn job<R, F>(ranks: usize, f: F) -> Result<Vec<R>>
where
    R: Send,
    F: Fn(&Communicator) -> R + Sync,
{
    if launched() {
        let universe = init()?;
        let result = f(universe.world());
        universe.finalize()?;
        return Ok(vec![result]);
    }
    let config = ThreadsConfig {
        runtime: Config::from_env()?,
        fabric: ThreadsFabric::Shm(ShmConfig::default()),
        ..ThreadsConfig::default()
    };
    threads_with(ranks, &config, f)
}

/// [`threads`] with explicit settings.
pub fn threads_with<R, F>(n: usize, config: &ThreadsConfig, f: F) -> Result<Vec<R>>
where
    R: Send,
    F: Fn(&Communicator) -> R + Sync,
{
    if n == 0 {
        return Err(Error::InvalidCount("a job needs at least one rank".into()));
    }
    let endpoints: Vec<Backend> = match &config.fabric {
        ThreadsFabric::Loopback => Loopback::fabric(n, config.loopback.clone())
            .into_iter()
            .map(Backend::Loopback)
            .collect(),
        ThreadsFabric::Shm(shm) => Shm::local_job(n, shm)?.into_iter().map(Backend::Shm).collect(),
    };
    let host = config.runtime.node.clone().unwrap_or_else(bootstrap::host_identity);
    let node_of = |rank: usize| match config.ranks_per_node {
        Some(r) => format!("{host}/threads-node-{}", rank / r.max(1)),
        None => host.clone(),
    };
    let (f, job) = (&f, &local_job_name());
    let outcomes: Vec<std::thread::Result<Result<std::thread::Result<R>>>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = endpoints
                .into_iter()
                .enumerate()
                .map(|(rank, endpoint)| {
                    let mut runtime = config.runtime.clone();
                    runtime.node = Some(node_of(rank));
                    std::thread::Builder::new()
                        .name(format!("hpcomm-rank-{rank}"))
                        .spawn_scoped(s, move || {
                            let universe =
                                Universe::of_threads(endpoint, runtime, job, &config.loopback)
                                    .learn_nodes()?;
                            let result =
                                panic::catch_unwind(AssertUnwindSafe(|| f(universe.world())));
                            Ok(match result {
                                Ok(value) => {
                                    if let Err(e) = universe.finalize() {
                                        tracing::warn!(rank, "finalization: {e}");
                                    }
                                    Ok(value)
                                }
                                Err(payload) => {
                                    universe.abandon();
                                    Err(payload)
                                }
                            })
                        })
                        .expect("spawning a rank thread")
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
    let mut results = Vec::with_capacity(n);
    let mut failed = None;
    for outcome in outcomes {
        match outcome {
            Ok(Ok(Ok(value))) => results.push(value),
            Ok(Ok(Err(payload))) | Err(payload) => panic::resume_unwind(payload),
            // A rank that could not start (the others then fail with it).
            Ok(Err(e)) => failed = failed.or(Some(e)),
        }
    }
    failed.map_or(Ok(results), Err)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A rank that leaves without the final barrier (it failed) costs the
    /// others only the rounds that depend on it: every live rank still gets
    /// every live rank's message, also after one of its own rounds failed,
    /// and live ranks leaving as soon as they pass are no failure. So no
    /// live rank waits for a message that a live rank gave up sending (as
    /// happened on the collective context, where one lost member fails
    /// every transfer). Each rank of 4 and of 5 takes its turn at leaving;
    /// a deadline stands in for a hang.
    #[test]
    fn the_final_barrier_goes_on_past_a_lost_rank() {
        for n in [4usize, 5] {
            for gone in 0..n {
                let endpoints = Loopback::fabric(n, LoopbackConfig::default());
                let outcomes: Vec<Option<Vec<crate::comm::Round>>> = std::thread::scope(|s| {
                    let ranks: Vec<_> = endpoints
                        .into_iter()
                        .enumerate()
                        .map(|(rank, endpoint)| {
                            s.spawn(move || {
                                let mut universe = Universe::from_transport(
                                    Backend::Loopback(endpoint),
                                    Config::default(),
                                );
                                if rank == gone {
                                    universe.abandon();
                                    return None;
                                }
                                let world = universe.endpoint.take_world().expect("a world");
                                let deadline = Instant::now() + std::time::Duration::from_secs(20);
                                Some(world.finalize_rounds(deadline))
                            })
                        })
                        .collect();
                    ranks.into_iter().map(|r| r.join().expect("no panic")).collect()
                });
                let want_rounds = n.next_power_of_two().trailing_zeros() as usize;
                for (rank, rounds) in outcomes.into_iter().enumerate() {
                    let Some(rounds) = rounds else { continue };
                    assert_eq!(rounds.len(), want_rounds, "{n} ranks, {gone} gone: rank {rank}");
                    for r in rounds {
                        let what = format!("{n} ranks, {gone} gone: rank {rank}, {r:?}");
                        if r.from as usize == gone {
                            let lost = r.received.as_ref().err().and_then(Error::lost_peer);
                            assert_eq!(lost, Some(gone), "{what}");
                        } else {
                            assert!(r.received.is_ok(), "{what}");
                        }
                        if r.to as usize != gone {
                            assert!(r.sent.is_ok(), "{what}");
                        }
                    }
                }
            }
        }
    }
}
