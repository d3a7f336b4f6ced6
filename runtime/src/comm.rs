//! Communicators and blocking point-to-point operations.

use std::sync::Arc;
use std::time::Instant;

use bytemuck::Pod;
use hpcomm_transport::{Buffer, PeerId, RegionId, RegionScope};

use crate::config::{Config, YIELD_SHARED};
use crate::engine::{Completed, Engine, ReqId, To};
use crate::error::{Error, Result};
use crate::matching::Pattern;
use crate::nodes::NodeLayout;
use crate::request::Scope;
use crate::shared::Shared;
use crate::task::Task;
use crate::types::{ContextId, Rank, Status, Tag};

/// A group of ranks with a private matching space (`MPI_Comm`).
///
/// A communicator moves between threads with its universe (it is `Send`
/// and `Sync`), and its endpoint serves one thread at a time: a call while
/// another thread is inside a call or a scope on the same endpoint fails
/// with [`Error::Busy`]. Threads that communicate at once each use an
/// endpoint of their own ([`Communicator::endpoints`]). Operations take
/// `&self`.
#[derive(Debug)]
pub struct Communicator {
    engine: Arc<Shared>,
    config: Arc<Config>,
    ctx: ContextId,
    rank: u32,
    /// World peer of each rank.
    group: Arc<[PeerId]>,
    /// Which ranks share a node, when known (see [`Communicator::nodes`]).
    nodes: Option<Arc<NodeLayout>>,
    /// Whether this handle owns the context (a view of it for the
    /// runtime's own traffic does not): dropping the owner gives the
    /// context id back for reuse.
    owner: bool,
}

impl Drop for Communicator {
    fn drop(&mut self) {
        if !self.owner || self.ctx == ContextId::WORLD {
            return;
        }
        match self.engine.lock() {
            Ok(mut engine) => engine.close_context(self.ctx),
            // Dropped on one thread while another holds the endpoint: the
            // context's id is not reused (nothing else is lost).
            Err(e) => {
                tracing::debug!("communicator {:?} dropped: {e}; its id stays taken", self.ctx)
            }
        }
    }
}

/// Where a receive may come from, after validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Null,
    Any,
    Rank(u32),
}

/// How a waiting rank backs off when progress finds nothing to do: a few
/// rounds of pure spinning, then spinning for up to the configured time,
/// then yielding the core, then sleeping in the transport (which wakes when
/// a frame arrives). Any progress starts it over.
struct Backoff<'a> {
    config: &'a Config,
    /// The endpoint, whose siblings a sleeping waiter progresses.
    shared: &'a Shared,
    phase: Phase,
    /// The transport's `spin_pause`.
    pause: bool,
}

#[derive(Clone, Copy)]
enum Phase {
    Spin {
        rounds: u32,
        until: Option<Instant>,
    },
    /// Yielding until then.
    Yield(Instant),
    Sleep,
}

const FRESH: Phase = Phase::Spin { rounds: 0, until: None };

/// Empty rounds always spun before looking at the clock.
const SPIN_ROUNDS: u32 = 64;

/// Empty rounds spun before yielding when ranks outnumber cores (spin time
/// zero); 1 and 16 measured no better than 4.
const SPIN_ROUNDS_SHARED: u32 = 4;

impl Backoff<'_> {
    fn idle(&mut self, engine: &mut Engine) -> IdleStep {
        match self.phase {
            Phase::Spin { rounds, until } => {
                let rounds = rounds + 1;
                let spin = self.config.spin.unwrap_or_default();
                // With more ranks than cores (no spin time) every round
                // spun is taken from the rank being waited for: only a few
                // before yielding (8-byte all-reduce, 4 ranks on 2 cores:
                // 5.7 -> 3.5 µs against 80 rounds; 8 ranks: 32 -> 19 µs;
                // docs/performance.md, "Waiting on shared cores").
                let first = if spin.is_zero() { SPIN_ROUNDS_SHARED } else { SPIN_ROUNDS };
                let until = match until {
                    None if rounds > first => Some(Instant::now() + spin),
                    other => other,
                };
                let spinning = rounds <= first
                    || (!spin.is_zero()
                        && (rounds % 16 != 0 || until.is_some_and(|u| Instant::now() < u)));
                self.phase = if spinning {
                    Phase::Spin { rounds, until }
                } else {
                    Phase::Yield(Instant::now() + self.config.yield_time.unwrap_or(YIELD_SHARED))
                };
                // The backend says whether to pause: over shm it keeps the
                // waiter off the sender's cache lines (8-byte message rate
                // 11.2 M/s with it, 10.6 M/s without); over libfabric a poll
                // is a library call, and the pause (about 140 cycles on
                // recent x86) only delays seeing what arrives during it
                // (shm provider: 0.80 µs one-way with it, 0.71 µs without).
                if self.pause {
                    std::hint::spin_loop();
                }
                IdleStep::Again
            }
            Phase::Yield(until) if Instant::now() < until => IdleStep::Yield,
            Phase::Yield(_) | Phase::Sleep => {
                self.phase = Phase::Sleep;
                // Nothing to do here for a while: the universe's other
                // endpoints that no thread holds may owe their peers data
                // (a rank waiting here can be what one of them waits for).
                self.shared.help_siblings();
                engine.wait(self.config.idle_wait);
                IdleStep::Again
            }
        }
    }
}

enum IdleStep {
    Again,
    Yield,
}

pub(crate) fn as_bytes<T: Pod>(buf: &[T]) -> Result<&[u8]> {
    if std::mem::size_of::<T>() == 0 {
        return Err(Error::InvalidCount("zero-sized element types cannot be sent".into()));
    }
    Ok(bytemuck::cast_slice(buf))
}

pub(crate) fn as_bytes_mut<T: Pod>(buf: &mut [T]) -> Result<&mut [u8]> {
    if std::mem::size_of::<T>() == 0 {
        return Err(Error::InvalidCount("zero-sized element types cannot be received".into()));
    }
    Ok(bytemuck::cast_slice_mut(buf))
}

impl Communicator {
    pub(crate) fn new(
        engine: Arc<Shared>,
        config: Arc<Config>,
        ctx: ContextId,
        rank: u32,
        group: Arc<[PeerId]>,
        nodes: Option<Arc<NodeLayout>>,
    ) -> Result<Communicator> {
        engine.lock()?.open_context(ctx, &group);
        Ok(Communicator { engine, config, ctx, rank, group, nodes, owner: true })
    }

    /// The world communicator of a new endpoint, whose engine has already
    /// opened the world's context.
    pub(crate) fn world_of(
        engine: Arc<Shared>,
        config: Arc<Config>,
        group: Arc<[PeerId]>,
        rank: u32,
    ) -> Communicator {
        let ctx = ContextId::WORLD;
        Communicator { engine, config, ctx, rank, group, nodes: None, owner: true }
    }

    /// A communicator on context `ctx` (reserved on every member) over the
    /// ranks `members` of this one, in that order, this rank being `rank`.
    pub(crate) fn derive(
        &self,
        ctx: ContextId,
        rank: usize,
        members: &[usize],
    ) -> Result<Communicator> {
        let group: Arc<[PeerId]> = members.iter().map(|&r| self.group[r]).collect();
        let nodes = self.nodes.as_ref().map(|l| Arc::new(l.select(members.iter().copied())));
        let (engine, config) = (self.engine.clone(), self.config.clone());
        Communicator::new(engine, config, ctx, rank as u32, group, nodes)
    }

    /// Whether `other` is this communicator: the same context of the same
    /// endpoint (not a like-numbered one of another universe).
    pub fn same_as(&self, other: &Communicator) -> bool {
        self.ctx == other.ctx && Arc::ptr_eq(&self.engine, &other.engine)
    }

    /// The world peer of each rank.
    pub(crate) fn peers(&self) -> &[PeerId] {
        &self.group
    }

    /// Learns which ranks share a node, from every rank's
    /// [`Config::node`]: collective, once, when the world is made.
    pub(crate) fn learn_nodes(&mut self) -> Result<()> {
        let node = self.config.node.as_deref().unwrap_or("");
        let all = self.exchange([node_key(node), 0, 0, 0])?;
        let keys: Vec<u64> = all.iter().map(|rec| rec[0]).collect();
        self.nodes = Some(Arc::new(NodeLayout::from_keys(&keys)));
        Ok(())
    }

    /// Which ranks share a node: the same on every rank, fixed for the
    /// communicator's life (node-aware collectives choose by it). Known
    /// for communicators of a job started by [`init`](crate::init),
    /// [`threads`](crate::threads) or [`job`](crate::job) and everything
    /// made from them; `None` for a universe over a transport built by
    /// hand ([`Universe::from_transport`](crate::Universe::from_transport)).
    pub fn nodes(&self) -> Option<&NodeLayout> {
        self.nodes.as_deref()
    }

    /// This process's rank in the communicator.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.group.len()
    }

    /// Messages up to this many bytes are sent eagerly; longer ones wait
    /// for the receiver (rendezvous). Set by the transport and
    /// `HPCOMM_EAGER_LIMIT`.
    pub fn eager_limit(&self) -> usize {
        self.engine.eager_limit()
    }

    /// The name of the transport in use.
    pub fn transport_name(&self) -> &'static str {
        self.engine.transport_name()
    }

    /// The point-to-point context id (for diagnostics).
    pub fn context(&self) -> ContextId {
        self.ctx
    }

    /// The world rank of each rank of this communicator.
    pub fn world_ranks(&self) -> Vec<usize> {
        self.group.iter().map(|p| p.index()).collect()
    }

    /// The settings this communicator runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The same group on the communicator's collective context: messages
    /// sent on it never match point-to-point traffic on `self`. This is the
    /// channel collective layers (`hpcomm-collectives`) build on; an
    /// application sending on it would disturb them. Tags below 16 are the
    /// runtime's own.
    pub fn collective_comm(&self) -> Communicator {
        self.collective_view()
    }

    /// Numbers the collective operations started on this communicator:
    /// 1, 2, 3, … — the same on every rank, since every rank starts the
    /// same collectives in the same order. Collective layers derive tags
    /// from it so that operations in flight together never match each
    /// other's messages.
    pub fn next_collective(&self) -> Result<u32> {
        Ok(self.engine.lock()?.next_collective(self.ctx.collective()))
    }

    /// Starts a task on this communicator's collective context.
    pub(crate) fn start_task(
        &self,
        buffers: (Option<RegionId>, Option<RegionId>),
        task: Box<dyn Task>,
        keep_output: bool,
    ) -> Result<ReqId> {
        let ctx = self.ctx.collective();
        let group = self.group.clone();
        Ok(self.engine.lock()?.start_task(ctx, self.rank, group, buffers, task, keep_output))
    }

    /// Sets which ranks share a node (an endpoint's world takes its
    /// parent's).
    pub(crate) fn set_nodes(&mut self, nodes: Option<Arc<NodeLayout>>) {
        self.nodes = nodes;
    }

    /// Which ranks share a node, shared.
    pub(crate) fn nodes_shared(&self) -> Option<Arc<NodeLayout>> {
        self.nodes.clone()
    }

    pub(crate) fn engine(&self) -> &Shared {
        &self.engine
    }

    pub(crate) fn peer(&self, rank: u32) -> PeerId {
        self.group[rank as usize]
    }

    /// The same group on the companion context, for the runtime's own
    /// collective traffic.
    pub(crate) fn collective_view(&self) -> Communicator {
        Communicator {
            engine: self.engine.clone(),
            config: self.config.clone(),
            ctx: self.ctx.collective(),
            rank: self.rank,
            group: self.group.clone(),
            nodes: self.nodes.clone(),
            owner: false,
        }
    }

    /// Validates a destination: `None` for the null process.
    pub(crate) fn check_dest(&self, dest: Rank) -> Result<Option<u32>> {
        if dest == Rank::NULL {
            return Ok(None);
        }
        match dest.index() {
            Some(r) if r < self.size() => Ok(Some(r as u32)),
            _ => Err(Error::InvalidRank { rank: dest.0, size: self.size() }),
        }
    }

    pub(crate) fn check_source(&self, src: Rank) -> Result<Source> {
        match src {
            Rank::NULL => Ok(Source::Null),
            Rank::ANY => Ok(Source::Any),
            r => match r.index() {
                Some(i) if i < self.size() => Ok(Source::Rank(i as u32)),
                _ => Err(Error::InvalidRank { rank: r.0, size: self.size() }),
            },
        }
    }

    pub(crate) fn check_send_tag(tag: Tag) -> Result<i32> {
        if tag.0 < 0 {
            return Err(Error::InvalidTag { tag: tag.0, max: Tag::MAX.0 });
        }
        Ok(tag.0)
    }

    pub(crate) fn check_recv_tag(tag: Tag) -> Result<Option<i32>> {
        match tag {
            Tag::ANY => Ok(None),
            t => Communicator::check_send_tag(t).map(Some),
        }
    }

    pub(crate) fn pattern(&self, src: Source, tag: Option<i32>) -> (Pattern, Option<PeerId>) {
        match src {
            Source::Rank(r) => (Pattern { src: Some(r), tag }, Some(self.peer(r))),
            Source::Any | Source::Null => (Pattern { src: None, tag }, None),
        }
    }

    /// Turns a completion into a status for elements of `elem` bytes.
    pub(crate) fn status(c: Completed, elem: usize) -> Result<Status> {
        if c.bytes % elem != 0 {
            return Err(Error::PartialElement { bytes: c.bytes, elem_size: elem });
        }
        Ok(Status { source: Rank(c.src as i32), tag: Tag(c.tag), count: c.bytes / elem })
    }

    /// Drives progress until `done` holds, backing off when idle.
    pub(crate) fn block_until(&self, done: impl FnMut(&mut Engine) -> bool) -> Result<()> {
        // The engine is held throughout, also while yielding: a blocking
        // call keeps the endpoint to itself (another thread's call fails
        // with `Busy` instead of slipping in between rounds).
        let mut engine = self.engine.lock()?;
        self.block_holding(&mut engine, done)
    }

    /// [`block_until`](Self::block_until) with the engine already held.
    pub(crate) fn block_holding(
        &self,
        engine: &mut Engine,
        mut done: impl FnMut(&mut Engine) -> bool,
    ) -> Result<()> {
        let pause = engine.spin_pause();
        let mut backoff =
            Backoff { config: &self.config, shared: &self.engine, phase: FRESH, pause };
        loop {
            if done(engine) {
                return Ok(());
            }
            if engine.progress()? {
                backoff.phase = FRESH;
                continue;
            }
            if done(engine) {
                return Ok(());
            }
            if let IdleStep::Yield = backoff.idle(engine) {
                std::thread::yield_now();
            }
        }
    }

    /// Waits for request `id`, with the engine held, and takes its outcome.
    pub(crate) fn wait_holding(&self, engine: &mut Engine, id: ReqId) -> Result<Completed> {
        let mut outcome = None;
        self.block_holding(engine, |e| {
            outcome = e.take(id);
            outcome.is_some()
        })?;
        outcome.expect("block_until returned after completion")
    }

    /// Waits for a request and takes its outcome.
    pub(crate) fn wait_id(&self, id: ReqId) -> Result<Completed> {
        let mut engine = self.engine.lock()?;
        self.wait_holding(&mut engine, id)
    }

    /// Where a send of `buf` to `dest` with `tag` goes, and its bytes,
    /// checked; `None` for the null process. Shared by every send.
    #[inline]
    pub(crate) fn send_target<'b, T: Pod>(
        &self,
        buf: &'b [T],
        dest: Rank,
        tag: Tag,
    ) -> Result<Option<(To, &'b [u8])>> {
        let Some(dst) = self.check_dest(dest)? else {
            return Ok(None);
        };
        let tag = Communicator::check_send_tag(tag)?;
        Ok(Some((self.to(dst, tag), as_bytes(buf)?)))
    }

    /// Sends `bytes` to `to` (checked) from `scope`: at once, without a
    /// request, for a small standard-mode message the transport takes now;
    /// else as a request on `bytes` registered in `scope`. One lock of the
    /// engine either way. Shared by `isend` and persistent starts.
    #[inline]
    pub(crate) fn send_to<'s>(
        &self,
        scope: &RegionScope<'s, '_>,
        to: To,
        bytes: &'s [u8],
        sync: bool,
    ) -> Result<Sent> {
        let mut engine = self.engine.lock()?;
        if !sync && engine.try_send_now(to, bytes)? {
            return Ok(Sent::Now);
        }
        let region = scope.register(bytes);
        let started = engine.start_send(to, region, bytes.len(), sync);
        drop(engine);
        started.inspect_err(|_| scope.regions().release(region)).map(Sent::Pending)
    }

    /// Validates and posts a receive into `buf` registered in `scope`;
    /// `None` for the null process. Shared by the blocking and scoped
    /// receives.
    pub(crate) fn start_recv_in<'s, T: Pod>(
        &self,
        scope: &RegionScope<'s, '_>,
        buf: &'s mut [T],
        src: Rank,
        tag: Tag,
    ) -> Result<Started> {
        let src = self.check_source(src)?;
        let tag = Communicator::check_recv_tag(tag)?;
        if src == Source::Null {
            return Ok(Started::Null);
        }
        let (pattern, peer) = self.pattern(src, tag);
        self.recv_in(scope, as_bytes_mut(buf)?, pattern, peer)
    }

    /// Receives into `bytes` (registered in `scope` unless an eager message
    /// is already there) what `pattern` accepts (checked; `peer` the world
    /// peer of a specific source).
    #[inline]
    pub(crate) fn recv_in<'s>(
        &self,
        scope: &RegionScope<'s, '_>,
        bytes: &'s mut [u8],
        pattern: Pattern,
        peer: Option<PeerId>,
    ) -> Result<Started> {
        let mut engine = self.engine.lock()?;
        if let Some(done) = engine.try_recv_now(self.ctx, pattern, bytes) {
            return done.map(Started::Done);
        }
        let region = scope.register_mut(bytes);
        let started = engine.start_recv(self.ctx, pattern, peer, region);
        drop(engine);
        started.inspect_err(|_| scope.regions().release(region)).map(Started::Pending)
    }

    /// Where a message to rank `dst` of this communicator with `tag` goes.
    #[inline]
    pub(crate) fn to(&self, dst: u32, tag: i32) -> To {
        To { ctx: self.ctx, me: self.rank, dst, peer: self.peer(dst), tag }
    }

    fn send_mode<T: Pod>(&self, buf: &[T], dest: Rank, tag: Tag, sync: bool) -> Result<()> {
        let Some((to, bytes)) = self.send_target(buf, dest, tag)? else {
            return Ok(());
        };
        // The engine is held from the start to the end of the call (the
        // endpoint is this thread's meanwhile), and let go before the
        // region scope closes, whose drain may need it.
        let mut engine = self.engine.lock()?;
        if !sync && engine.try_send_now(to, bytes)? {
            return Ok(());
        }
        self.engine.regions().scope_with(Buffer::Read(bytes), move |_, region| {
            let mut engine = engine;
            let id = engine.start_send(to, region, bytes.len(), sync)?;
            self.wait_holding(&mut engine, id).map(drop)
        })
    }

    /// Sends `buf` to `dest` with `tag` (`MPI_Send`). Returns when `buf` may
    /// be reused: at once for small messages, after the receiver has matched
    /// large ones.
    pub fn send<T: Pod>(
        &self,
        buf: &[T],
        dest: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<()> {
        self.send_mode(buf, dest.into(), tag.into(), false)
    }

    /// Synchronous send (`MPI_Ssend`): returns only once the receiver has
    /// matched the message.
    pub fn ssend<T: Pod>(
        &self,
        buf: &[T],
        dest: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<()> {
        self.send_mode(buf, dest.into(), tag.into(), true)
    }

    /// Receives into `buf` from `src` with `tag`, either possibly a wildcard
    /// (`MPI_Recv`). A message longer than `buf` is an [`Error::Truncated`];
    /// a shorter one leaves the rest of `buf` untouched.
    pub fn recv<T: Pod>(
        &self,
        buf: &mut [T],
        src: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<Status> {
        let elem = std::mem::size_of::<T>();
        let src = self.check_source(src.into())?;
        let tag = Communicator::check_recv_tag(tag.into())?;
        if src == Source::Null {
            return Ok(Status::EMPTY);
        }
        let (pattern, peer) = self.pattern(src, tag);
        let bytes = as_bytes_mut(buf)?;
        // As in `send_mode`: held throughout, let go before the scope ends.
        let mut engine = self.engine.lock()?;
        if let Some(done) = engine.try_recv_now(self.ctx, pattern, bytes) {
            return Communicator::status(done?, elem);
        }
        self.engine.regions().scope_with(Buffer::Write(bytes), move |_, region| {
            let mut engine = engine;
            let id = engine.start_recv(self.ctx, pattern, peer, region)?;
            Communicator::status(self.wait_holding(&mut engine, id)?, elem)
        })
    }

    /// Sends `sendbuf` to `dest` and receives into `recvbuf` from `src` at
    /// the same time (`MPI_Sendrecv`), so that exchanges cannot deadlock.
    #[allow(clippy::too_many_arguments)]
    pub fn sendrecv<S: Pod, R: Pod>(
        &self,
        sendbuf: &[S],
        dest: impl Into<Rank>,
        send_tag: impl Into<Tag>,
        recvbuf: &mut [R],
        src: impl Into<Rank>,
        recv_tag: impl Into<Tag>,
    ) -> Result<Status> {
        let (dest, send_tag, src, recv_tag) =
            (dest.into(), send_tag.into(), src.into(), recv_tag.into());
        self.check_dest(dest)?;
        Communicator::check_send_tag(send_tag)?;
        self.check_source(src)?;
        Communicator::check_recv_tag(recv_tag)?;
        self.scope(|s| {
            // Both start before either outcome is looked at: a receive that
            // fails at once (a truncated message was already waiting) must
            // not keep the send from going out, or the peer would wait
            // for it forever.
            let r = s.irecv(recvbuf, src, recv_tag);
            let w = s.isend(sendbuf, dest, send_tag);
            let status = r.and_then(|r| r.wait());
            let sent = w.and_then(|w| w.wait());
            let status = status?;
            sent?;
            Ok(status)
        })
    }

    /// Waits for a message that `src` and `tag` accept and describes it
    /// without receiving it (`MPI_Probe`). The status's `count` is in bytes.
    pub fn probe(&self, src: impl Into<Rank>, tag: impl Into<Tag>) -> Result<Status> {
        let Some((pattern, peer)) = self.probe_pattern(src.into(), tag.into())? else {
            return Ok(Status::EMPTY);
        };
        let mut found = None;
        self.block_until(|e| {
            found = e.probe(self.ctx, pattern);
            found.is_some() || peer.is_some_and(|p| e.is_lost(p))
        })?;
        match found {
            Some(env) => {
                Ok(Status { source: Rank(env.src as i32), tag: Tag(env.tag), count: env.len })
            }
            None => Err(self.probe_loss(peer)),
        }
    }

    /// A probe's pattern and the world peer of its specific source, after
    /// the argument checks; `None` for the null process.
    pub(crate) fn probe_pattern(
        &self,
        src: Rank,
        tag: Tag,
    ) -> Result<Option<(Pattern, Option<PeerId>)>> {
        let src = self.check_source(src)?;
        let tag = Communicator::check_recv_tag(tag)?;
        Ok((src != Source::Null).then(|| self.pattern(src, tag)))
    }

    /// Why a probe stopped waiting without a message: its source was lost.
    pub(crate) fn probe_loss(&self, peer: Option<PeerId>) -> Error {
        match peer {
            Some(p) => self.engine.lock().map_or_else(|e| e, |e| e.loss(p)),
            None => Error::PeerFailed { rank: 0 },
        }
    }

    /// Like [`probe`](Self::probe), but returns `None` at once when no such
    /// message has arrived (`MPI_Iprobe`).
    pub fn iprobe(&self, src: impl Into<Rank>, tag: impl Into<Tag>) -> Result<Option<Status>> {
        let Some((pattern, _)) = self.probe_pattern(src.into(), tag.into())? else {
            return Ok(Some(Status::EMPTY));
        };
        let mut engine = self.engine.lock()?;
        engine.progress()?;
        Ok(engine.probe(self.ctx, pattern).map(|env| Status {
            source: Rank(env.src as i32),
            tag: Tag(env.tag),
            count: env.len,
        }))
    }

    /// Runs `f` with a [`Scope`] for non-blocking operations. Buffers given
    /// to requests stay borrowed until the scope ends, and the scope waits
    /// for every request it started (even one dropped or forgotten) before it
    /// returns. See [`Scope`] for why this makes requests sound.
    pub fn scope<'env, R>(
        &'env self,
        f: impl for<'s> FnOnce(&Scope<'s, 'env>) -> Result<R>,
    ) -> Result<R> {
        let _claim = self.engine.claim()?;
        self.engine.regions().scope(|region_scope| {
            let scope = Scope::new(self, region_scope)?;
            let out = f(&scope);
            let rest = scope.complete_all();
            out.and_then(|v| rest.map(|()| v))
        })
    }

    /// A new communicator with the same group and a fresh context
    /// (`MPI_Comm_dup`). Collective over this communicator.
    ///
    /// Context ids are reused: dropping a communicator gives its id back
    /// once nothing is in flight on it on this rank (no posted receive, no
    /// message waiting), and a new communicator takes the lowest id free on
    /// every member. As in MPI (`MPI_Comm_free`), a message still on its way
    /// to a communicator its receiver has dropped is an error of the
    /// program: it may reach a later communicator that reuses the id.
    pub fn dup(&self) -> Result<Communicator> {
        let _claim = self.engine.claim()?;
        let (next, free) = self.context_offer()?;
        let all = self.exchange([0, 0, u64::from(next), free])?;
        let ctx = self.agree_context(&all)?;
        Communicator::new(
            self.engine.clone(),
            self.config.clone(),
            ctx,
            self.rank,
            self.group.clone(),
            self.nodes.clone(),
        )
    }

    /// Splits the communicator by `color` (`MPI_Comm_split`): ranks with the
    /// same colour form a new communicator, ordered by `key` and then by
    /// rank here. A rank with colour `None` (`MPI_UNDEFINED`) gets `None`.
    /// Collective over this communicator.
    pub fn split(&self, color: Option<u32>, key: i32) -> Result<Option<Communicator>> {
        let _claim = self.engine.claim()?;
        let (next, free) = self.context_offer()?;
        let mine =
            [color.map_or(u64::MAX, u64::from), u64::from(key as u32), u64::from(next), free];
        let all = self.exchange(mine)?;
        let ctx = self.agree_context(&all)?;
        let Some(color) = color else { return Ok(None) };
        let mut members: Vec<(i32, usize)> = all
            .iter()
            .enumerate()
            .filter(|(_, rec)| rec[0] == u64::from(color))
            .map(|(rank, rec)| (rec[1] as u32 as i32, rank))
            .collect();
        members.sort_unstable();
        let members: Vec<usize> = members.into_iter().map(|(_, r)| r).collect();
        let rank =
            members.iter().position(|&r| r == self.rank()).expect("this rank has its own colour");
        self.derive(ctx, rank, &members).map(Some)
    }

    /// The ranks of this communicator on this rank's node
    /// (`MPI_Comm_split_type` with `MPI_COMM_TYPE_SHARED`), in this
    /// communicator's order: the node the launch knows (`HPCOMM_NODE`, the
    /// launcher's word, or this host's identity; see [`Config::node`]).
    /// Node-aware code reduces within it over shared memory and talks
    /// between nodes through one rank of each. Collective.
    pub fn split_shared(&self) -> Result<Communicator> {
        let hash = node_key(self.config.node.as_deref().unwrap_or(""));
        let all = self.exchange([hash, 0, 0, 0])?;
        // The colour of a node: its lowest rank here.
        let color = all.iter().position(|rec| rec[0] == hash).unwrap_or(self.rank());
        self.split(Some(color as u32), self.rank() as i32)?
            .ok_or_else(|| Error::Protocol("split_shared left this rank out".into()))
    }

    /// What this rank offers for a new context: the lowest id it has not
    /// used, and which of the [`REUSABLE`] lowest context pairs it has no
    /// state for (never used here, or given back when their communicator
    /// was dropped), as a bit mask.
    pub(crate) fn context_offer(&self) -> Result<(u32, u64)> {
        let engine = self.engine.lock()?;
        let free = (0..REUSABLE)
            .filter(|&i| engine.context_free(ContextId(2 + 2 * i)))
            .fold(0u64, |mask, i| mask | 1 << i);
        Ok((engine.next_ctx(), free))
    }

    /// The new context every member computes from the exchanged offers:
    /// the lowest pair free on every member, so that ids are reused once
    /// communicators are dropped; above every id any member has used when
    /// none is.
    pub(crate) fn agree_context(&self, all: &[[u64; 4]]) -> Result<ContextId> {
        let free = all.iter().fold(u64::MAX, |mask, rec| mask & rec[3]);
        let ctx = if free != 0 {
            ContextId(2 + 2 * free.trailing_zeros())
        } else {
            let next = all.iter().map(|rec| rec[2]).max().expect("a communicator is never empty");
            ContextId(next as u32)
        };
        self.engine.lock()?.reserve_ctx(ctx);
        Ok(ctx)
    }

    /// All-gather of one small record per rank, on the collective
    /// context (used to build communicators before collectives exist).
    pub(crate) fn exchange(&self, mine: [u64; 4]) -> Result<Vec<[u64; 4]>> {
        self.exchange_in(self.size(), self.rank(), |i| i, mine, EXCHANGE_TAG)
    }

    /// [`exchange`](Self::exchange) among `n` of the ranks only — member
    /// `i` is rank `rank(i)`, this one is member `me` — under `tag`.
    pub(crate) fn exchange_in(
        &self,
        n: usize,
        me: usize,
        rank: impl Fn(usize) -> usize,
        mine: [u64; 4],
        tag: i32,
    ) -> Result<Vec<[u64; 4]>> {
        let coll = self.collective_view();
        // Bruck's all-gather: ⌈log₂ n⌉ rounds. `have[i]` is the record of
        // rank `me + i`; each round doubles what this rank has, from the
        // rank `dist` above, and gives what it had to the rank below.
        let mut have = Vec::with_capacity(n);
        have.push(mine);
        let mut dist = 1;
        while dist < n {
            let count = dist.min(n - dist);
            let mut incoming = vec![[0u64; 4]; count];
            let (to, from) = (rank((me + n - dist) % n), rank((me + dist) % n));
            coll.sendrecv(&have[..count], to, tag, &mut incoming, from, tag)?;
            have.extend(incoming);
            dist *= 2;
        }
        let mut all = vec![[0u64; 4]; n];
        for (i, rec) in have.into_iter().enumerate() {
            all[(me + i) % n] = rec;
        }
        Ok(all)
    }

    /// The barrier of finalization (`MPI_Finalize`'s): a dissemination
    /// barrier on the point-to-point context, under a tag no user can send
    /// with, bounded by `deadline`; the first error of its rounds.
    ///
    /// Not on the collective context: there a lost member fails every
    /// transfer, and a rank that has passed the barrier leaves at once, so
    /// a slower rank would take the first rank to leave for a failure, give
    /// up its remaining rounds, and leave the ranks waiting for its later
    /// messages waiting for ever. Here a receive fails only when its own
    /// source is lost before its message arrived, and every round's send
    /// goes out even after an earlier round failed: no live rank waits for
    /// a message that a live rank gave up sending.
    pub(crate) fn finalize_barrier(&self, deadline: Instant) -> Result<()> {
        let rounds = self.finalize_rounds(deadline);
        for r in rounds.iter().filter(|r| r.sent.is_err() || r.received.is_err()) {
            tracing::debug!(to = r.to, from = r.from, "finalize: {:?}, {:?}", r.sent, r.received);
        }
        match rounds.into_iter().flat_map(|r| [r.sent, r.received]).find_map(Result::err) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The rounds of [`finalize_barrier`](Self::finalize_barrier), each
    /// with its outcome; they stop early only at the deadline.
    pub(crate) fn finalize_rounds(&self, deadline: Instant) -> Vec<Round> {
        let (n, me) = (self.size(), self.rank());
        let mut rounds = Vec::new();
        let mut k = 1;
        while k < n {
            let (to, from) = (((me + k) % n) as u32, ((me + n - k) % n) as u32);
            let (sent, received) = self.internal_sendrecv(to, from, FINALIZE_TAG, deadline);
            let late = [&sent, &received].iter().any(|r| matches!(r, Err(Error::Timeout { .. })));
            rounds.push(Round { to, from, sent, received });
            if late {
                break;
            }
            k *= 2;
        }
        rounds
    }

    /// An empty message to `to` and one from `from`, both with `tag`
    /// (which may be one of the runtime's own, below 0), waited for until
    /// `deadline`: the send's outcome and the receive's.
    fn internal_sendrecv(
        &self,
        to: u32,
        from: u32,
        tag: i32,
        deadline: Instant,
    ) -> (Result<()>, Result<()>) {
        let claim = self.engine.claim();
        if let Err(e) = claim {
            return (Err(e.clone()), Err(e));
        }
        self.engine.regions().scope(|scope| {
            let started = {
                let mut engine = match self.engine.lock() {
                    Ok(engine) => engine,
                    Err(e) => return (Err(e.clone()), Err(e)),
                };
                let pattern = Pattern { src: Some(from), tag: Some(tag) };
                let from_peer = Some(self.peer(from));
                let empty = scope.register_mut(&mut []);
                let received = engine.start_recv(self.ctx, pattern, from_peer, empty);
                let empty = scope.register(&[]);
                let sent = engine.start_send(self.to(to, tag), empty, 0, false);
                [sent, received]
            };
            let ids: Vec<ReqId> = started.iter().filter_map(|r| r.as_ref().ok()).copied().collect();
            let waited = self
                .block_until(|e| ids.iter().all(|&id| e.is_done(id)) || Instant::now() >= deadline);
            let mut engine = match self.engine.lock() {
                Ok(engine) => engine,
                Err(e) => return (Err(e.clone()), Err(e)),
            };
            let [sent, received] = started.map(|r| {
                let id = r?;
                waited.clone()?;
                engine
                    .take(id)
                    .unwrap_or_else(|| {
                        Err(Error::Timeout {
                            after: self.config.finalize_timeout,
                            what: format!(
                                "the final barrier (rank {from}'s message or the one to {to})"
                            ),
                        })
                    })
                    .map(|_| ())
            });
            (sent, received)
        })
    }

    /// Drives progress until no frame waits for the transport, then closes
    /// the transport ([`Transport::close`]); both until `deadline`.
    pub(crate) fn drain(&self, deadline: Instant) -> Result<()> {
        self.block_until(|e| !e.has_backlog() || Instant::now() >= deadline)?;
        if self.engine.lock()?.has_backlog() {
            return Err(Error::Timeout {
                after: self.config.finalize_timeout,
                what: "the last frames to leave".into(),
            });
        }
        // The transport's own leaving (goodbyes, sends in flight), a step
        // at a time between rounds of progress.
        self.block_until(|e| e.close() || Instant::now() >= deadline)
    }
}

/// How a send started.
pub(crate) enum Sent {
    /// Handed to the transport: complete.
    Now,
    /// In flight, as this request.
    Pending(ReqId),
}

/// How a receive started.
pub(crate) enum Started {
    /// In flight, as this request.
    Pending(ReqId),
    /// Completed at once (the message was waiting).
    Done(Completed),
    /// With the null process: nothing to do.
    Null,
}

/// One round of the final barrier: the empty message to `to` and the one
/// from `from`, with their outcomes.
#[derive(Debug)]
pub(crate) struct Round {
    pub to: u32,
    pub from: u32,
    pub sent: Result<()>,
    pub received: Result<()>,
}

/// Context pairs (from id 2 on) that new communicators reuse once free on
/// every member: one bit each in the offer.
const REUSABLE: u32 = 64;

/// Tags of the runtime's own traffic on collective contexts.
const EXCHANGE_TAG: i32 = 1;
/// The tag of `create_group`'s exchange among the group's members.
pub(crate) const GROUP_TAG: i32 = 2;
/// The tag of the key-value exchange that opens endpoints.
pub(crate) const ENDPOINTS_TAG: i32 = 3;
/// A node's name as 64 bits (FNV-1a: the same on every rank, whatever the
/// build), what ranks compare to find their node's others.
fn node_key(node: &str) -> u64 {
    node.bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The tag of the final barrier, on the point-to-point context of the
/// world: below 0, so no user's message carries it.
const FINALIZE_TAG: i32 = -2;
