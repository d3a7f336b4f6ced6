//! One rail: an endpoint on one NIC, with the bookkeeping the protocol
//! keeps for it — peers' addresses on that NIC, which send buffers are
//! free, filled or in flight, and which receive buffers wait to be handed
//! up or posted again.
//!
//! An endpoint has one rail per NIC it uses ([`super::nics`]). Rail `k` of
//! one rank talks to rail `k` of another, when both have it; small frames,
//! keep-alives, goodbyes and reads go over rail 0, and frames of
//! [`STRIPE_AT`] bytes and more take the rails in turn.

use std::collections::VecDeque;

use super::api::Info;
use super::ep::Endpoint;
use super::sys::fi_addr_t;

/// Frames of this many bytes and more are spread over the rails a pair
/// shares; smaller ones keep to rail 0, so that a stream of small messages
/// is not reordered (the runtime restores order, at a cost).
pub const STRIPE_AT: usize = 16 << 10;

/// An address vector entry for a peer without this rail.
pub const NO_ADDR: fi_addr_t = u64::MAX;

/// An endpoint on one NIC and the protocol's state of it.
pub(super) struct Rail {
    /// Present from set-up until `Drop` (which may park it).
    ep: Option<Endpoint>,
    /// The NIC's libfabric domain (`rdmap16s27-rdm`, `eth0`).
    pub domain: String,
    /// Each rank's address on this rail ([`NO_ADDR`]: it has none).
    pub addrs: Vec<fi_addr_t>,
    /// Largest frame sent with `fi_inject` (0: none).
    pub inject_size: usize,
    /// Send buffers in all.
    pub ntx: usize,
    /// Receives completed while sending, not yet handed up: (buffer,
    /// length).
    pub ready: VecDeque<(usize, usize)>,
    /// Receive buffers handed up, to post again.
    pub to_repost: Vec<usize>,
    /// Send buffers free to fill.
    pub tx_free: Vec<usize>,
    /// The rank each send buffer goes to, and how many bytes it holds.
    pub tx_peer: Vec<u32>,
    pub tx_len: Vec<usize>,
    /// The keep-alive interval in which each unfinished keep-alive was
    /// sent (`None`: free, or a frame of data; see `Ofi::probe_peers`).
    pub tx_since: Vec<Option<u32>>,
    /// Send buffers filled but not yet taken by the provider, in order.
    pub unposted: VecDeque<usize>,
    /// Frames sent on this rail (injected or from a buffer).
    pub frames: u64,
    /// The entry the endpoint was opened from.
    _info: Info<'static>,
}

impl Rail {
    /// A rail over `ep`, opened from `info` with `ntx` send buffers.
    pub(super) fn new(
        ep: Endpoint,
        info: Info<'static>,
        domain: String,
        inject_size: usize,
        ntx: usize,
    ) -> Rail {
        Rail {
            ep: Some(ep),
            domain,
            addrs: Vec::new(),
            inject_size,
            ntx,
            ready: VecDeque::new(),
            to_repost: Vec::new(),
            tx_free: (0..ntx).rev().collect(),
            tx_peer: vec![0; ntx],
            tx_len: vec![0; ntx],
            tx_since: vec![None; ntx],
            unposted: VecDeque::new(),
            frames: 0,
            _info: info,
        }
    }

    /// The endpoint.
    pub(super) fn ep(&mut self) -> &mut Endpoint {
        self.ep.as_mut().expect("the endpoint is present until dropped")
    }

    /// The endpoint, read-only.
    pub(super) fn ep_ref(&self) -> &Endpoint {
        self.ep.as_ref().expect("the endpoint is present until dropped")
    }

    /// Takes the endpoint out, for `Drop`.
    pub(super) fn take_endpoint(&mut self) -> Option<Endpoint> {
        self.ep.take()
    }

    /// Copies `parts` into a free send buffer for `dst` and queues it to
    /// be posted; its slot, or `None` when every buffer is taken.
    pub(super) fn fill(&mut self, dst: usize, parts: [&[u8]; 3]) -> Option<usize> {
        let slot = self.tx_free.pop()?;
        let buf = self.ep().tx_buf(slot).expect("a free send buffer is not in flight");
        let mut end = 0;
        for p in parts {
            buf[end..end + p.len()].copy_from_slice(p);
            end += p.len();
        }
        self.tx_peer[slot] = dst as u32;
        self.tx_len[slot] = end;
        self.unposted.push_back(slot);
        Some(slot)
    }

    /// Gives send buffer `slot` back.
    pub(super) fn free_tx(&mut self, slot: usize) {
        self.tx_since[slot] = None;
        self.tx_free.push(slot);
    }

    /// Whether a keep-alive to `peer` is still unfinished.
    pub(super) fn keepalive_pending(&self, peer: usize) -> bool {
        (0..self.ntx).any(|s| self.tx_since[s].is_some() && self.tx_peer[s] as usize == peer)
    }

    /// Whether every send buffer is back.
    pub(super) fn flushed(&self) -> bool {
        self.unposted.is_empty() && self.tx_free.len() == self.ntx
    }
}
