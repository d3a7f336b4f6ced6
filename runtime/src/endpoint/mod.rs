//! Endpoints: the universe's, and more of them for threads that
//! communicate at once ([`Communicator::endpoints`]).
//!
//! An endpoint is a transport endpoint with its own progress engine —
//! its matching space, its requests, its registered memory — and a world
//! communicator over it. The universe has one; `endpoints(n)` opens `n`
//! more on every rank of a communicator, endpoint `i` of each rank
//! connected to endpoint `i` of the others (the MPI-4 sessions and UCX
//! worker idea): threads that each use their own never contend, and none
//! waits for another's lock.

mod exchange;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hpcomm_transport::backend::{self, Settings};
use hpcomm_transport::loopback::LoopbackConfig;
use hpcomm_transport::{Backend, PeerId, Transport};

use crate::comm::Communicator;
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::shared::{Family, Shared};
use crate::types::ContextId;

use exchange::CommExchange;

/// What opening another endpoint like this one takes: the backends'
/// settings as the job set them up (the tcp secret included), the loopback
/// settings of a job of threads, the job's name on this host and this
/// rank's node.
#[derive(Clone)]
pub(crate) struct Reopen {
    pub settings: Settings,
    pub loopback: LoopbackConfig,
    pub job: String,
    pub node: String,
}

impl std::fmt::Debug for Reopen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The settings hold the job's secret: never printed.
        f.debug_struct("Reopen").field("job", &self.job).field("node", &self.node).finish()
    }
}

/// An endpoint of this process in the job, with its world communicator:
/// the universe's own, or one that [`Communicator::endpoints`] opened for
/// a thread.
///
/// An endpoint, its communicators and what they made move between threads
/// together (`Send`); it serves one thread at a time (see
/// [`Communicator`]). Dropping it finalizes it as a universe's is: a final
/// barrier among its peers, then its transport closes.
#[derive(Debug)]
pub struct Endpoint {
    world: Option<Communicator>,
    config: Arc<Config>,
}

impl Endpoint {
    /// An endpoint over `transport`, already connected to its peers; one
    /// of `family`'s (a universe's first: a family of its own).
    pub(crate) fn from_transport(
        transport: Backend,
        mut config: Config,
        reopen: Reopen,
        family: Option<Arc<Family>>,
    ) -> Endpoint {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        config.choose_waiting(transport.capabilities(), transport.peer_count(), cores);
        let config = Arc::new(config);
        let size = transport.peer_count();
        let rank = transport.peer_id();
        let group: Arc<[PeerId]> = (0..size as u32).map(PeerId).collect();
        let mut engine = Engine::new(transport, config.eager_limit);
        engine.open_context(ContextId::WORLD, &group);
        let engine = Shared::new(engine, reopen, family);
        // A scope that closes while the transport still uses one of its
        // regions (a request ended early by a peer's loss, a scope that
        // unwound) makes progress here until the transport lets it go.
        let weak = Arc::downgrade(&engine);
        engine.regions().set_drain(Box::new(move || {
            let Some(engine) = weak.upgrade() else { return };
            let Ok(mut engine) = engine.lock() else { return };
            if let Err(e) = engine.progress() {
                tracing::debug!("progress while a scope waits for its regions: {e}");
            }
        }));
        let world = Communicator::world_of(engine, config.clone(), group, rank.0);
        Endpoint { world: Some(world), config }
    }

    /// The communicator of every rank over this endpoint: for the
    /// universe's, `MPI_COMM_WORLD`; for one of [`Communicator::endpoints`],
    /// the ranks of the communicator that opened it, in its order.
    pub fn world(&self) -> &Communicator {
        self.world.as_ref().expect("present until finalized")
    }

    pub(crate) fn world_mut(&mut self) -> &mut Communicator {
        self.world.as_mut().expect("present until finalized")
    }

    /// Its world, taken out: the endpoint is no longer open.
    #[cfg(test)]
    pub(crate) fn take_world(&mut self) -> Option<Communicator> {
        self.world.take()
    }

    /// Whether it is still open (not finalized nor abandoned).
    pub(crate) fn is_open(&self) -> bool {
        self.world.is_some()
    }

    /// Ends this endpoint: waits until every peer has arrived (so that
    /// nobody mistakes a normal exit for a failure) and every queued frame
    /// has left. Peers that already failed are not waited for.
    pub fn finalize(mut self) -> Result<()> {
        self.finish()
    }

    /// Leaves at once, without the final barrier: peers see this rank as
    /// lost.
    pub(crate) fn abandon(&mut self) {
        self.world = None;
    }

    pub(crate) fn finish(&mut self) -> Result<()> {
        let Some(world) = self.world.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + self.config.finalize_timeout;
        let barrier = match world.finalize_barrier(deadline) {
            Err(e) if e.lost_peer().is_some() => Ok(()),
            other => other,
        };
        let drained = world.drain(deadline);
        barrier.and(drained)
    }
}

impl Drop for Endpoint {
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

impl Communicator {
    /// The settings of `n` more endpoints: this one's, except that where
    /// their threads and this one's outnumber this node's cores, a waiting
    /// thread does not spin, and sleeps soon (as ranks that share cores do,
    /// [`Config::choose_waiting`]): a spinning thread takes the core of
    /// the one it waits for.
    fn endpoint_config(&self, n: usize) -> Config {
        let mut config = self.config().clone();
        let here = self.nodes().map_or(self.size(), |l| l.ranks_of(l.node_of(self.rank())).count());
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        if here * (n + 1) > cores {
            config.spin = Some(std::time::Duration::ZERO);
            config.yield_time = Some(crate::config::YIELD_SHARED);
        }
        config
    }
}

/// Numbers the `endpoints` calls of this process (with its id, a name no
/// other job on the host uses).
static NEXT_SET: AtomicU64 = AtomicU64::new(0);

impl Communicator {
    /// Opens `n` new endpoints on every rank of this communicator
    /// (collective; every rank passes the same `n`): endpoint `i` of each
    /// rank is connected to endpoint `i` of the others, over the transport
    /// this communicator uses (shm, tcp, ofi, `auto`'s mix, or loopback
    /// between threads of one process), each with a world communicator of
    /// this communicator's ranks in its order.
    ///
    /// Each endpoint has its own progress engine and matching space, so
    /// threads that each use their own communicate at once without
    /// contending: the way to combine hpcomm with threads (a communication
    /// thread, rayon workers). The rules:
    /// - an endpoint serves one thread at a time: a call on it while
    ///   another thread is inside a call or a scope on it fails with
    ///   [`Error::Busy`] (nothing is started; the endpoint stays usable);
    /// - an endpoint, with its communicators, moves to another thread
    ///   (`Send`), e.g. into `std::thread::scope`;
    /// - messages on one endpoint never match another's: endpoint `i` talks
    ///   to endpoint `i` of the other ranks only;
    /// - dropping an endpoint (or [`Endpoint::finalize`]) is collective
    ///   over its ranks, like the universe's end;
    /// - an endpoint no thread is using still makes progress: a thread that
    ///   waits on another endpoint of the universe with nothing to do
    ///   progresses it (so data it still owes its peers leaves, as MPI's
    ///   progress rule asks), never one another thread holds.
    ///
    /// ```
    /// let sums = hpcomm_runtime::threads(2, |comm| {
    ///     let endpoints = comm.endpoints(3).unwrap();
    ///     std::thread::scope(|s| {
    ///         let workers: Vec<_> = endpoints
    ///             .iter()
    ///             .enumerate()
    ///             .map(|(t, ep)| {
    ///                 s.spawn(move || {
    ///                     // Thread t of each rank talks to thread t of the
    ///                     // other rank, all threads at once.
    ///                     let world = ep.world();
    ///                     let mut got = [0u64];
    ///                     let peer = 1 - world.rank();
    ///                     let mine = [(world.rank() * 10 + t) as u64];
    ///                     world.sendrecv(&mine, peer, 0, &mut got, peer, 0).unwrap();
    ///                     got[0]
    ///                 })
    ///             })
    ///             .collect();
    ///         workers.into_iter().map(|w| w.join().unwrap()).sum::<u64>()
    ///     })
    /// })
    /// .unwrap();
    /// assert_eq!(sums, vec![10 + 11 + 12, 0 + 1 + 2]);
    /// ```
    pub fn endpoints(&self, n: usize) -> Result<Vec<Endpoint>> {
        let _claim = self.engine().claim()?;
        let set = NEXT_SET.fetch_add(1, Ordering::Relaxed);
        let all = self.exchange([n as u64, u64::from(std::process::id()), set, 0])?;
        if let Some(other) = all.iter().find(|rec| rec[0] != n as u64) {
            return Err(Error::CollectiveMismatch(format!(
                "endpoints: this rank asked for {n}, another for {}",
                other[0]
            )));
        }
        let reopen = self.engine().reopen().clone();
        let config = self.endpoint_config(n);
        let flavor = self.engine().lock()?.flavor();
        let mut opened = Vec::with_capacity(n);
        for i in 0..n {
            // Under the job's name, so that a launcher that cleans up after
            // a job that died while starting finds this endpoint's segments.
            let job = format!("{}-ep{}.{}.{i}", reopen.job, all[0][1], all[0][2]);
            let mut exchange = CommExchange::new(self, &job);
            let transport = backend::open_flavor(
                flavor,
                self.rank(),
                self.size(),
                &reopen.node,
                &mut exchange,
                &reopen.settings,
                &reopen.loopback,
            );
            let failed = exchange.finish(transport.as_ref().err().map(|e| e.to_string()))?;
            let transport = match (transport, failed) {
                (Ok(transport), None) => transport,
                (Err(e), _) => return Err(Error::Bootstrap(format!("endpoint {i}: {e}"))),
                (Ok(_), Some((rank, why))) => {
                    return Err(Error::Bootstrap(format!("endpoint {i}: rank {rank}: {why}")))
                }
            };
            let reopen = Reopen { job, ..reopen.clone() };
            let family = Some(self.engine().family().clone());
            let mut endpoint = Endpoint::from_transport(transport, config.clone(), reopen, family);
            endpoint.world_mut().set_nodes(self.nodes_shared());
            opened.push(endpoint);
        }
        Ok(opened)
    }
}
