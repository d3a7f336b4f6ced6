//! The hybrid backend of `--transport auto`: shared memory between the ranks
//! of one host, a network backend between hosts — ofi where libfabric
//! offers a kernel-bypass provider (EFA) on every rank, else tcp.
//!
//! # Set-up
//!
//! Every rank publishes the name of its node (a string that is equal for
//! ranks that share memory and differs otherwise; the runtime builds it
//! from the host name, the boot id and the address the rank reached the
//! launcher from, so that network namespaces count as hosts). From the
//! names each rank derives the same layout: the ranks of each node, in rank
//! order, open an [`Shm`] endpoint of their own (keys and segment name kept
//! apart by a [`Scoped`] exchange), and every rank opens a network endpoint
//! that reaches only the ranks of other nodes ([`Tcp::open_among`],
//! [`Ofi::open_among`]). Both set-ups fence job-wide the same number of
//! times on every rank, so the nodes set up side by side. [`open`] returns
//! a plain [`Shm`] when all ranks share one node and the plain network
//! backend when no two do.
//!
//! # The network
//!
//! `HPCOMM_AUTO_NETWORK` (`tcp` or `ofi`) forces one; otherwise each rank
//! says, with its node's name, whether libfabric offers it a kernel-bypass
//! provider ([`crate::ofi::kernel_bypass_present`]), and the job uses ofi
//! only if every rank can — the same choice on every rank, also in a job
//! whose nodes differ. Reads between nodes are not used: one key cannot
//! serve both a local reader (shm) and a remote one (ofi), so a peer on
//! another node gets the pipelined rendezvous.
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

use crate::backend::{Kind, Settings};
use crate::exchange::Exchange;
use crate::ofi::Ofi;
use crate::shm::Shm;
use crate::tcp::Tcp;
use crate::{
    Backend, Capabilities, Event, PeerId, RegionId, Regions, RemoteKey, Transport, TransportError,
};

/// The route of a rank that is not on this node.
const REMOTE: u32 = u32::MAX;
/// While shared memory carries the traffic, the network is polled once in
/// this many polls: polling tcp costs system calls (about a microsecond),
/// polling shm a few loads, and a frame over the network has taken
/// microseconds anyway.
const NET_POLL_EVERY: u32 = 8;

/// An endpoint of the hybrid backend.
#[derive(Debug)]
pub struct Hybrid {
    me: PeerId,
    ranks: usize,
    /// What holds for every peer.
    caps: Capabilities,
    shm: Shm,
    /// The network backend (tcp or ofi), reaching the other nodes' ranks.
    net: Backend,
    /// Its limits towards a peer on another node (no reads).
    net_caps: Capabilities,
    /// The shm index of each world rank, or [`REMOTE`].
    route: Vec<u32>,
    /// The world rank of each shm index.
    world: Vec<PeerId>,
    /// Which backend delivered the last event: the one to sleep in, and
    /// whether the network is polled every time.
    net_last: bool,
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
    /// The backend between nodes.
    net: Kind,
}

fn layout(
    me: usize,
    ranks: usize,
    exchange: &mut dyn Exchange,
    node: &str,
    network: Option<Kind>,
) -> Result<Layout, TransportError> {
    let setup = |e: String| TransportError::Setup(format!("hybrid: {e}"));
    // Each rank publishes 9 bytes, not its node's name (some 70 bytes):
    // every rank reads every rank's, so at scale the bytes count.
    let bypass = match network {
        Some(kind) => kind == Kind::Ofi,
        None => crate::ofi::kernel_bypass_present(),
    };
    let mut mine = node_hash(node).to_le_bytes().to_vec();
    mine.push(u8::from(bypass));
    let published = exchange.allgather(me, ranks, "node", &mine).map_err(setup)?;
    if let Some(r) = published.iter().position(|p| p.len() != 9) {
        return Err(setup(format!("rank {r} published a node of {} bytes", published[r].len())));
    }
    let nodes: Vec<&[u8]> = published.iter().map(|p| &p[..8]).collect();
    let here: Vec<bool> = nodes.iter().map(|n| *n == nodes[me]).collect();
    let local = (0..ranks).filter(|&r| here[r]).collect();
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    let net = if published.iter().all(|p| p[8] == 1) { Kind::Ofi } else { Kind::Tcp };
    Ok(Layout { local, shared: distinct.len() < ranks, spread: distinct.len() > 1, here, net })
}

/// A node's name as 64 bits (FNV-1a: the same in every process and build),
/// what ranks compare to find their node neighbours.
fn node_hash(node: &str) -> u64 {
    node.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Joins the job as rank `me` of `ranks` on node `node`: shm to the ranks
/// of the same node, the network backend to the others — or a plain
/// [`Shm`] or network endpoint when the job needs only one of them.
pub fn open(
    me: usize,
    ranks: usize,
    node: &str,
    exchange: &mut dyn Exchange,
    settings: &Settings,
) -> Result<Backend, TransportError> {
    let layout = layout(me, ranks, exchange, node, settings.auto_network)?;
    if !layout.spread {
        return Ok(Backend::Shm(Shm::open(me, ranks, exchange, &settings.shm)?));
    }
    if !layout.shared {
        return crate::backend::open(layout.net, me, ranks, exchange, settings);
    }
    Ok(Backend::Hybrid(Box::new(Hybrid::open_in(me, ranks, layout, exchange, settings)?)))
}

impl Hybrid {
    /// The network backend between nodes, as a kind.
    pub fn network_kind(&self) -> Kind {
        match self.net {
            Backend::Ofi(_) => Kind::Ofi,
            _ => Kind::Tcp,
        }
    }

    /// Joins the job as rank `me` of `ranks` on node `node` as a hybrid
    /// endpoint, whatever the layout (a node of one rank gets an shm
    /// endpoint of one; a job on one node, a network endpoint that talks
    /// to nobody). [`open`] is what jobs use.
    pub fn open(
        me: usize,
        ranks: usize,
        node: &str,
        exchange: &mut dyn Exchange,
        settings: &Settings,
    ) -> Result<Hybrid, TransportError> {
        let layout = layout(me, ranks, exchange, node, settings.auto_network)?;
        Hybrid::open_in(me, ranks, layout, exchange, settings)
    }

    fn open_in(
        me: usize,
        ranks: usize,
        layout: Layout,
        exchange: &mut dyn Exchange,
        settings: &Settings,
    ) -> Result<Hybrid, TransportError> {
        let local_me = layout.local.iter().position(|&r| r == me).expect("a rank is on its node");
        let scope = format!("node{}", layout.local[0]);
        let shm = Shm::open(
            local_me,
            layout.local.len(),
            &mut Scoped::new(exchange, &scope),
            &settings.shm,
        )?;
        let remote: Vec<bool> = layout.here.iter().map(|h| !h).collect();
        let net = match layout.net {
            Kind::Ofi => Backend::Ofi(Box::new(Ofi::open_among(
                me,
                ranks,
                &remote,
                exchange,
                &settings.ofi,
            )?)),
            _ => Backend::Tcp(Tcp::open_among(me, ranks, &remote, exchange, &settings.tcp)?),
        };
        let mut route = vec![REMOTE; ranks];
        for (i, &r) in layout.local.iter().enumerate() {
            route[r] = i as u32;
        }
        let world = layout.local.iter().map(|&r| PeerId(r as u32)).collect();
        let net_caps = Capabilities {
            rma_read: false,
            max_read: 0,
            reads_from_outside: false,
            rma_write: false,
            ..net.capabilities().clone()
        };
        let name = if layout.net == Kind::Ofi { "shm+ofi" } else { "shm+tcp" };
        let caps = common(name, shm.capabilities(), &net_caps);
        caps.validate().map_err(TransportError::Setup)?;
        Ok(Hybrid {
            me: PeerId(me as u32),
            ranks,
            caps,
            shm,
            net,
            net_caps,
            route,
            world,
            net_last: false,
            polls: 0,
        })
    }

    /// The endpoints of a job whose ranks are threads of this process, with
    /// `node(rank)` naming each rank's node (for tests).
    pub fn local_job(
        ranks: usize,
        node: impl Fn(usize) -> String + Sync,
        settings: &Settings,
    ) -> Result<Vec<Hybrid>, TransportError> {
        crate::exchange::local_job(ranks, |me, exchange| {
            Hybrid::open(me, ranks, &node(me), exchange, settings)
        })
    }

    /// The backend between nodes (`tcp` or `ofi`).
    pub fn network(&self) -> &'static str {
        self.net.capabilities().name
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
fn common(name: &'static str, a: &Capabilities, b: &Capabilities) -> Capabilities {
    let eager_limit = a.eager_limit.min(b.eager_limit);
    Capabilities {
        name,
        max_header: a.max_header.min(b.max_header),
        max_payload: a.max_payload.min(b.max_payload),
        inline_limit: a.inline_limit.min(b.inline_limit).min(eager_limit),
        eager_limit,
        rma_read: false,
        max_read: 0,
        revocable: a.revocable && b.revocable,
        reads_from_outside: a.reads_from_outside && b.reads_from_outside,
        rma_write: false,
        ordered: a.ordered && b.ordered,
        latency_hint: a.latency_hint.max(b.latency_hint),
        spin_pause: a.spin_pause || b.spin_pause,
        yield_hint: a.yield_hint.max(b.yield_hint),
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
            None => &self.net_caps,
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
            None => self.net.try_send(dst, header, payload),
        }
    }

    fn poll(
        &mut self,
        regions: &Regions,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, TransportError> {
        let Hybrid { shm, net, world, polls, net_last, .. } = self;
        *polls = polls.wrapping_add(1);
        let from_shm = shm.poll(regions, &mut |ev| {
            sink(match ev {
                Event::Frame { src, header, payload } => {
                    Event::Frame { src: world[src.index()], header, payload }
                }
                Event::PeerLost { peer, cause } => {
                    Event::PeerLost { peer: world[peer.index()], cause }
                }
                Event::RmaFailed { token, error: TransportError::PeerLost(p) } => {
                    Event::RmaFailed { token, error: TransportError::PeerLost(world[p.index()]) }
                }
                other => other,
            })
        })?;
        let from_net = match *net_last || *polls % NET_POLL_EVERY == 0 {
            true => net.poll(regions, sink)?,
            false => 0,
        };
        if from_shm + from_net > 0 {
            *net_last = from_net > from_shm;
        }
        Ok(from_shm + from_net)
    }

    fn wait(&mut self, timeout: Duration) {
        // Look at the other side without sleeping, then sleep in the side
        // that was busy last.
        if self.net_last {
            if !self.shm.has_work() {
                self.net.wait(timeout);
            }
        } else if !self.net.has_work() {
            self.shm.wait(timeout);
        }
    }

    fn close(&mut self) -> bool {
        // Both sides, each until done (shm has nothing to do).
        self.shm.close() & self.net.close()
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
            None => Err(TransportError::Unsupported("hybrid (no reads between nodes)")),
        }
    }

    fn start_write(
        &mut self,
        regions: &Regions,
        src: RegionId,
        src_offset: usize,
        dst: PeerId,
        key: RemoteKey,
        dst_offset: usize,
        len: usize,
        token: u64,
    ) -> Result<(), TransportError> {
        match self.local(dst) {
            Some(l) => self
                .shm
                .start_write(regions, src, src_offset, l, key, dst_offset, len, token)
                .map_err(|e| self.shm_error(e)),
            None => Err(TransportError::Unsupported("hybrid (no writes between nodes)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The network is ofi only where every rank can use it: a rank without
    /// a kernel-bypass provider (or told tcp) makes the whole job use tcp,
    /// so that no two ranks open different backends to each other.
    #[test]
    fn every_rank_agrees_on_the_network() {
        for (wants, expect) in [
            ([Some(Kind::Ofi), Some(Kind::Ofi), Some(Kind::Ofi)], Kind::Ofi),
            ([Some(Kind::Ofi), Some(Kind::Tcp), Some(Kind::Ofi)], Kind::Tcp),
            ([Some(Kind::Tcp), Some(Kind::Tcp), Some(Kind::Tcp)], Kind::Tcp),
        ] {
            let nets = crate::exchange::local_job(3, |me, exchange| {
                layout(me, 3, exchange, &format!("n{}", me / 2), wants[me]).map(|l| l.net)
            })
            .expect("layouts");
            assert_eq!(nets, [expect; 3], "{wants:?}");
        }
    }
}
