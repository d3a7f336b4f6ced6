//! The hybrid backend of `--transport auto`: shared memory between the ranks
//! of one host, TCP between hosts.
//!
//! # Set-up
//!
//! Every rank publishes the name of its node (a string that is equal for
//! ranks that share memory and differs otherwise; the runtime builds it
//! from the host name, the boot id and the address the rank reached the
//! launcher from, so that network namespaces count as hosts). From the
//! names each rank derives the same layout: the ranks of each node, in rank
//! order, open an [`Shm`] endpoint of their own (keys and segment name kept
//! apart by a [`Scoped`] exchange), and every rank opens a [`Tcp`] endpoint
//! that reaches only the ranks of other nodes ([`Tcp::open_among`]). Both
//! set-ups fence job-wide the same number of times on every rank, so the
//! nodes set up side by side. [`open`] returns a plain [`Shm`] when all
//! ranks share one node and a plain [`Tcp`] when no two do.
//!
//! # Routing
//!
//! A table maps each world rank to its shm index, or marks it remote.
//! `try_send` takes one branch on it. `poll` polls shm every time, and tcp
//! every time while tcp carried the last traffic, else once in
//! `TCP_POLL_EVERY` polls (polling tcp costs system calls, polling shm a
//! few loads); it turns the shm indices of events back into world ranks.
//! Each peer's
//! [`Capabilities`] are its backend's
//! ([`Transport::peer_capabilities`]), so the runtime picks single-copy
//! reads for peers on this host and the pipelined rendezvous for the
//! others; [`Transport::capabilities`] gives what holds for every peer.
//!
//! # Waiting
//!
//! Neither backend can wake the other's sleep (a futex in the segment, an
//! epoll set), and no backend starts a thread. `wait` therefore checks the
//! other backend without blocking and then sleeps in the one that
//! delivered the last event, for at most the runtime's idle wait; a frame
//! that arrives through the other one is seen when that sleep ends. This
//! costs latency only when ranks are oversubscribed and have stopped
//! spinning.

use std::time::Duration;

use crate::exchange::Exchange;
use crate::shm::{Shm, ShmConfig};
use crate::tcp::{Tcp, TcpConfig};
use crate::{
    Backend, Capabilities, Event, PeerId, RegionId, Regions, RemoteKey, Transport, TransportError,
};

/// The route of a rank that is not on this node.
const REMOTE: u32 = u32::MAX;
/// While shared memory carries the traffic, tcp is polled once in this many
/// polls: polling it costs system calls (about a microsecond), polling shm
/// a few loads, and a frame over tcp has taken tens of microseconds anyway.
const TCP_POLL_EVERY: u32 = 8;

/// An endpoint of the hybrid backend.
#[derive(Debug)]
pub struct Hybrid {
    me: PeerId,
    ranks: usize,
    /// What holds for every peer.
    caps: Capabilities,
    shm: Shm,
    tcp: Tcp,
    /// The shm index of each world rank, or [`REMOTE`].
    route: Vec<u32>,
    /// The world rank of each shm index.
    world: Vec<PeerId>,
    /// Which backend delivered the last event: the one to sleep in, and
    /// whether tcp is polled every time.
    tcp_last: bool,
    polls: u32,
}

/// An [`Exchange`] that keeps the keys of one subset of the ranks (one
/// node's) apart from the others', and gives it a job id of its own for
/// names such as shm segments. Fences stay job-wide.
pub struct Scoped<'a> {
    inner: &'a mut dyn Exchange,
    scope: String,
    job: String,
}

impl<'a> Scoped<'a> {
    /// Keys under `scope/`, and the job id `job-scope`.
    pub fn new(inner: &'a mut dyn Exchange, scope: &str) -> Scoped<'a> {
        let job = format!("{}-{scope}", inner.job_id());
        Scoped { inner, scope: scope.to_string(), job }
    }
}

impl Exchange for Scoped<'_> {
    fn job_id(&self) -> &str {
        &self.job
    }
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.inner.put(&format!("{}/{key}", self.scope), value)
    }
    fn get(&mut self, key: &str) -> Result<Vec<u8>, String> {
        self.inner.get(&format!("{}/{key}", self.scope))
    }
    fn fence(&mut self) -> Result<(), String> {
        self.inner.fence()
    }
}

/// Where the ranks are: each node's ranks, as every rank derives it from
/// the published node names.
struct Layout {
    /// The ranks on this rank's node, in rank order.
    local: Vec<usize>,
    /// Whether some node has two ranks or more (shm is used).
    shared: bool,
    /// Whether there are two nodes or more (tcp is used).
    spread: bool,
    /// Whether each rank is on this rank's node.
    here: Vec<bool>,
}

fn layout(
    me: usize,
    ranks: usize,
    exchange: &mut dyn Exchange,
    node: &str,
) -> Result<Layout, TransportError> {
    let setup = |e: String| TransportError::Setup(format!("hybrid: {e}"));
    // Each rank publishes 8 bytes, not its node's name (some 70 bytes):
    // every rank reads every rank's, so at scale the bytes count.
    let mine = node_hash(node).to_le_bytes();
    let nodes = exchange.allgather(me, ranks, "node", &mine).map_err(setup)?;
    let here: Vec<bool> = nodes.iter().map(|n| *n == nodes[me]).collect();
    let local = (0..ranks).filter(|&r| here[r]).collect();
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    Ok(Layout { local, shared: distinct.len() < ranks, spread: distinct.len() > 1, here })
}

/// A node's name as 64 bits (FNV-1a: the same in every process and build),
/// what ranks compare to find their node neighbours.
fn node_hash(node: &str) -> u64 {
    node.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Joins the job as rank `me` of `ranks` on node `node`: shm to the ranks
/// of the same node, tcp to the others — or a plain [`Shm`] or [`Tcp`]
/// endpoint when the job needs only one of them.
pub fn open(
    me: usize,
    ranks: usize,
    node: &str,
    exchange: &mut dyn Exchange,
    shm: &ShmConfig,
    tcp: &TcpConfig,
) -> Result<Backend, TransportError> {
    let layout = layout(me, ranks, exchange, node)?;
    if !layout.spread {
        return Ok(Backend::Shm(Shm::open(me, ranks, exchange, shm)?));
    }
    if !layout.shared {
        return Ok(Backend::Tcp(Tcp::open(me, ranks, exchange, tcp)?));
    }
    Ok(Backend::Hybrid(Box::new(Hybrid::open_in(me, ranks, layout, exchange, shm, tcp)?)))
}

impl Hybrid {
    /// Joins the job as rank `me` of `ranks` on node `node` as a hybrid
    /// endpoint, whatever the layout (a node of one rank gets an shm
    /// endpoint of one; a job on one node, a tcp endpoint with no
    /// connections). [`open`] is what jobs use.
    pub fn open(
        me: usize,
        ranks: usize,
        node: &str,
        exchange: &mut dyn Exchange,
        shm: &ShmConfig,
        tcp: &TcpConfig,
    ) -> Result<Hybrid, TransportError> {
        let layout = layout(me, ranks, exchange, node)?;
        Hybrid::open_in(me, ranks, layout, exchange, shm, tcp)
    }

    fn open_in(
        me: usize,
        ranks: usize,
        layout: Layout,
        exchange: &mut dyn Exchange,
        shm_config: &ShmConfig,
        tcp_config: &TcpConfig,
    ) -> Result<Hybrid, TransportError> {
        let local_me = layout.local.iter().position(|&r| r == me).expect("a rank is on its node");
        let scope = format!("node{}", layout.local[0]);
        let shm = Shm::open(
            local_me,
            layout.local.len(),
            &mut Scoped::new(exchange, &scope),
            shm_config,
        )?;
        let remote: Vec<bool> = layout.here.iter().map(|h| !h).collect();
        let tcp = Tcp::open_among(me, ranks, &remote, exchange, tcp_config)?;
        let mut route = vec![REMOTE; ranks];
        for (i, &r) in layout.local.iter().enumerate() {
            route[r] = i as u32;
        }
        let world = layout.local.iter().map(|&r| PeerId(r as u32)).collect();
        let caps = common(shm.capabilities(), tcp.capabilities());
        caps.validate().map_err(TransportError::Setup)?;
        Ok(Hybrid {
            me: PeerId(me as u32),
            ranks,
            caps,
            shm,
            tcp,
            route,
            world,
            tcp_last: false,
            polls: 0,
        })
    }

    /// The endpoints of a job whose ranks are threads of this process, with
    /// `node(rank)` naming each rank's node (for tests).
    pub fn local_job(
        ranks: usize,
        node: impl Fn(usize) -> String + Sync,
        shm: &ShmConfig,
        tcp: &TcpConfig,
    ) -> Result<Vec<Hybrid>, TransportError> {
        crate::exchange::local_job(ranks, |me, exchange| {
            Hybrid::open(me, ranks, &node(me), exchange, shm, tcp)
        })
    }

    /// How many ranks share this rank's node (itself included).
    pub fn local_ranks(&self) -> usize {
        self.world.len()
    }

    /// The shm index of `peer`, if it is on this node.
    #[inline]
    fn local(&self, peer: PeerId) -> Option<PeerId> {
        match self.route.get(peer.index()) {
            Some(&l) if l != REMOTE => Some(PeerId(l)),
            _ => None,
        }
    }

    /// A transport error from the shm endpoint, with world ranks.
    fn shm_error(&self, e: TransportError) -> TransportError {
        match e {
            TransportError::PeerLost(p) => TransportError::PeerLost(self.world[p.index()]),
            e => e,
        }
    }
}

/// What holds for every peer when some are reached through `a` and the
/// others through `b`.
fn common(a: &Capabilities, b: &Capabilities) -> Capabilities {
    let eager_limit = a.eager_limit.min(b.eager_limit);
    Capabilities {
        name: "shm+tcp",
        max_header: a.max_header.min(b.max_header),
        max_payload: a.max_payload.min(b.max_payload),
        inline_limit: a.inline_limit.min(b.inline_limit).min(eager_limit),
        eager_limit,
        rma_read: false,
        max_read: 0,
        revocable: a.revocable && b.revocable,
        ordered: a.ordered && b.ordered,
        latency_hint: a.latency_hint.max(b.latency_hint),
        spin_pause: a.spin_pause || b.spin_pause,
        bandwidth_hint: a.bandwidth_hint.min(b.bandwidth_hint),
    }
}

impl Transport for Hybrid {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn peer_capabilities(&self, peer: PeerId) -> &Capabilities {
        match self.local(peer) {
            Some(_) => self.shm.capabilities(),
            None => self.tcp.capabilities(),
        }
    }

    fn peer_id(&self) -> PeerId {
        self.me
    }

    fn peer_count(&self) -> usize {
        self.ranks
    }

    #[inline]
    fn try_send(
        &mut self,
        dst: PeerId,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError> {
        if dst.index() >= self.ranks {
            return Err(TransportError::InvalidPeer { peer: dst, size: self.ranks });
        }
        match self.local(dst) {
            Some(l) => self.shm.try_send(l, header, payload).map_err(|e| self.shm_error(e)),
            None => self.tcp.try_send(dst, header, payload),
        }
    }

    fn poll(
        &mut self,
        regions: &Regions,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, TransportError> {
        let Hybrid { shm, tcp, world, polls, tcp_last, .. } = self;
        *polls = polls.wrapping_add(1);
        let from_shm = shm.poll(regions, &mut |ev| {
            sink(match ev {
                Event::Frame { src, header, payload } => {
                    Event::Frame { src: world[src.index()], header, payload }
                }
                Event::PeerLost { peer, cause } => {
                    Event::PeerLost { peer: world[peer.index()], cause }
                }
                Event::ReadFailed { token, error: TransportError::PeerLost(p) } => {
                    Event::ReadFailed { token, error: TransportError::PeerLost(world[p.index()]) }
                }
                other => other,
            })
        })?;
        let from_tcp = match *tcp_last || *polls % TCP_POLL_EVERY == 0 {
            true => tcp.poll(regions, sink)?,
            false => 0,
        };
        if from_shm + from_tcp > 0 {
            *tcp_last = from_tcp > from_shm;
        }
        Ok(from_shm + from_tcp)
    }

    fn wait(&mut self, timeout: Duration) {
        // Look at the other side without sleeping, then sleep in the side
        // that was busy last.
        if self.tcp_last {
            if !self.shm.has_work() {
                self.tcp.wait(timeout);
            }
        } else if !self.tcp.has_work() {
            self.shm.wait(timeout);
        }
    }

    fn expose(&mut self, regions: &Regions, region: RegionId) -> Result<RemoteKey, TransportError> {
        // Only peers on this node read (the runtime asks for reads where
        // `peer_capabilities` offers them).
        self.shm.expose(regions, region)
    }

    fn start_read(
        &mut self,
        regions: &Regions,
        src: PeerId,
        key: RemoteKey,
        src_offset: usize,
        dst: RegionId,
        dst_offset: usize,
        len: usize,
        token: u64,
    ) -> Result<(), TransportError> {
        match self.local(src) {
            Some(l) => self
                .shm
                .start_read(regions, l, key, src_offset, dst, dst_offset, len, token)
                .map_err(|e| self.shm_error(e)),
            None => Err(TransportError::Unsupported("tcp (no remote reads)")),
        }
    }
}
