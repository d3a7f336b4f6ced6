//! The transport layer of hpcomm: how frames move between the ranks of a job.
//!
//! A transport moves *frames* — a small header and a payload — from one rank
//! to another, reliably but not necessarily in order. Everything that gives
//! the frames a meaning (message matching, MPI ordering, eager and rendezvous
//! protocols) lives above, in `hpcomm-runtime`. The contract is small so that
//! very different fabrics fit under it:
//!
//! - [`Transport::try_send`] hands one frame over, or returns
//!   [`TransportError::WouldBlock`] when the backend has no room: back-pressure
//!   is a return value, never a hidden block.
//! - [`Transport::poll`] is the only place where a backend makes progress and
//!   reports [`Event`]s (frames, finished reads, lost peers). No backend starts
//!   a thread of its own.
//! - [`Transport::expose`] and [`Transport::start_read`] are the zero-copy
//!   path: the receiver of a large message reads the sender's registered
//!   buffer directly, where [`Capabilities::rma_read`] says the backend can.
//! - [`Capabilities`] tells the runtime the limits that drive its protocol
//!   choice (inline, eager and frame sizes, whether reads work).
//!
//! Memory that a transport may read or write on the user's behalf is held in
//! a [`Regions`] table, filled only inside [`Regions::scope`], which removes
//! (and revokes) every region before the borrowed buffers can go away.
//!
//! Backends are modules of this crate and are reached through the [`Backend`]
//! enum: [`loopback`] (ranks as threads of one process: the reference every
//! other backend is tested against, with the generic [`conformance`] suite),
//! [`shm`] (processes of one host, through shared memory), [`tcp`] (processes
//! on any hosts) and [`hybrid`] (shm within each host, tcp between hosts).
//! Backends that need the job's bootstrap while they set up get it as an
//! [`Exchange`].
//!
//! ```
//! use hpcomm_transport::{loopback::Loopback, Event, PeerId, Regions, Transport};
//!
//! let mut eps = Loopback::fabric(2, Default::default());
//! let mut b = eps.pop().unwrap();
//! let mut a = eps.pop().unwrap();
//! a.try_send(PeerId(1), b"hdr", b"payload").unwrap();
//! let regions = Regions::new();
//! let mut got = Vec::new();
//! while got.is_empty() {
//!     b.poll(&regions, &mut |ev: Event<'_>| {
//!         if let Event::Frame { src, header, payload } = ev {
//!             got.push((src, header.to_vec(), payload.to_vec()));
//!         }
//!     })
//!     .unwrap();
//! }
//! assert_eq!(got[0], (PeerId(0), b"hdr".to_vec(), b"payload".to_vec()));
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod conformance;
pub mod exchange;
#[doc(hidden)]
pub mod fuzz;
pub mod hybrid;
pub mod inherited;
pub mod loopback;
pub mod ofi;
pub mod pmix;
pub mod region;
pub mod shm;
pub mod tcp;

use std::fmt;
use std::time::Duration;

pub use exchange::Exchange;
pub use region::{Buffer, RegionId, RegionScope, Regions, RemoteKey};

/// The index of an endpoint in the job: a rank of the world communicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl PeerId {
    /// The index as a `usize`, for tables indexed by peer.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a backend can do, and its limits. The runtime's protocol choice is a
/// pure function of a message's length and this value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's name, as `hpcomm info` shows it.
    pub name: &'static str,
    /// Largest frame header, in bytes.
    pub max_header: usize,
    /// Largest frame payload, in bytes. Longer data is sent in several frames.
    pub max_payload: usize,
    /// Payloads up to this size complete locally as soon as `try_send`
    /// returns (a ring cell, `fi_inject`): the runtime may keep a copy of such
    /// a small frame when the backend pushes back, instead of pinning the
    /// user's buffer.
    pub inline_limit: usize,
    /// Messages up to this size are sent eagerly (data with the envelope);
    /// longer ones use a rendezvous, so that a receiver never buffers an
    /// unbounded unexpected message. At most `max_payload`.
    pub eager_limit: usize,
    /// Whether [`Transport::start_read`] works: the receiver of a rendezvous
    /// reads the sender's exposed buffer directly (single copy). Without it
    /// the sender streams the data in frames after a clear-to-send.
    pub rma_read: bool,
    /// Largest single read; longer reads are split by the runtime.
    pub max_read: usize,
    /// Whether a peer's read of a region fails once the region has left its
    /// table (loopback windows, a closed libfabric registration). Where not
    /// (shm's `process_vm_readv` reads whatever the address holds), the
    /// runtime's own rule is what protects data: a sender keeps its buffer
    /// until the reader's `FIN`.
    pub revocable: bool,
    /// Whether peers' reads happen outside this process (the kernel's
    /// `process_vm_readv`, a NIC's RDMA read), so that a writable region
    /// may be exposed (a one-sided window): a write here while a peer reads
    /// is then no data race inside the process. Where reads are copies by
    /// another thread of the process (loopback), only read-only regions are
    /// exposed.
    pub reads_from_outside: bool,
    /// Whether [`Transport::start_write`] works: this rank writes into a
    /// writable region a peer exposed, from outside the peer's process
    /// (the kernel's `process_vm_writev`, a NIC's RDMA write), without the
    /// peer's runtime taking part. Only with `reads_from_outside` (a
    /// writable region is exposed only then) and `rma_read`.
    pub rma_write: bool,
    /// Whether frames between a pair arrive in the order they were sent. The
    /// runtime does not rely on it; it only saves the reorder buffer work.
    pub ordered: bool,
    /// A latency hint, for algorithm selection and `hpcomm info`.
    pub latency_hint: Duration,
    /// Whether a rank waiting on this backend should pause (`spin_loop`)
    /// between empty polls. Yes where a poll is a few loads of memory the
    /// peer writes (shm): the pause keeps the waiter from contending for
    /// the cache lines the sender is filling. No where a poll is a call
    /// into a library or the kernel (tcp, libfabric): it is slow enough
    /// already, and the pause only delays seeing what arrives during it.
    pub spin_pause: bool,
    /// How long a rank that has a core of its own and nothing to do yields
    /// it before sleeping in [`Transport::wait`]. Long where waking a
    /// sleeper costs its peer a system call and the sleeper tens of µs
    /// (shm's futex, loopback's channel): yielding an idle core costs no
    /// one. Short where the kernel wakes the sleeper anyway as data arrives
    /// (tcp, libfabric): there every yielding round is a poll that
    /// contends for the socket or the queue with the arriving data.
    pub yield_hint: Duration,
    /// A bandwidth hint in bytes per second, for the same purposes.
    pub bandwidth_hint: u64,
}

impl Capabilities {
    /// Checks a frame against the limits: `FrameTooLarge` when its header or
    /// payload exceeds them. Every backend's `try_send` starts with it.
    #[inline]
    pub fn check_frame(&self, header: &[u8], payload: &[u8]) -> Result<(), TransportError> {
        if header.len() > self.max_header || payload.len() > self.max_payload {
            return Err(TransportError::FrameTooLarge {
                header: header.len(),
                payload: payload.len(),
                max_header: self.max_header,
                max_payload: self.max_payload,
            });
        }
        Ok(())
    }

    /// Checks a frame's size and its destination among `ranks` endpoints;
    /// returns the destination's index. Every backend's `try_send` starts
    /// with it.
    #[inline]
    pub fn check_send(
        &self,
        dst: PeerId,
        ranks: usize,
        header: &[u8],
        payload: &[u8],
    ) -> Result<usize, TransportError> {
        self.check_frame(header, payload)?;
        if dst.index() >= ranks {
            return Err(TransportError::InvalidPeer { peer: dst, size: ranks });
        }
        Ok(dst.index())
    }

    /// Checks the relations every backend must keep between its limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.eager_limit > self.max_payload {
            return Err(format!(
                "{}: eager limit {} exceeds the frame payload limit {}",
                self.name, self.eager_limit, self.max_payload
            ));
        }
        if self.inline_limit > self.eager_limit {
            return Err(format!(
                "{}: inline limit {} exceeds the eager limit {}",
                self.name, self.inline_limit, self.eager_limit
            ));
        }
        if self.max_header < 64 {
            return Err(format!("{}: headers must allow at least 64 bytes", self.name));
        }
        if self.rma_write && !(self.rma_read && self.reads_from_outside) {
            return Err(format!("{}: writes offered without reads from outside", self.name));
        }
        if self.rma_read && self.max_read == 0 {
            return Err(format!("{}: reads offered with a zero read size", self.name));
        }
        if self.max_payload == 0 {
            return Err(format!("{}: zero frame payload", self.name));
        }
        Ok(())
    }
}

/// Something a backend reports from [`Transport::poll`].
#[derive(Debug)]
pub enum Event<'a> {
    /// A frame arrived. The slices are valid only for the call of the sink.
    Frame {
        /// Who sent it.
        src: PeerId,
        /// The header bytes, as given to `try_send`.
        header: &'a [u8],
        /// The payload bytes, as given to `try_send`.
        payload: &'a [u8],
    },
    /// A read started with [`Transport::start_read`] has landed in its
    /// region, or a write started with [`Transport::start_write`] has landed
    /// in the peer's.
    RmaDone {
        /// The token given to `start_read` or `start_write`.
        token: u64,
    },
    /// A read or write failed; its destination holds no meaningful data.
    RmaFailed {
        /// The token given to `start_read` or `start_write`.
        token: u64,
        /// Why.
        error: TransportError,
    },
    /// A peer is gone: every frame it sent before has been delivered already,
    /// and no more will come.
    PeerLost {
        /// The lost peer.
        peer: PeerId,
        /// How it was lost.
        cause: LossCause,
    },
}

/// How a backend lost a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossCause {
    /// Its endpoint closed or its process ended: it exited, crashed or was
    /// killed, and its host said so.
    Ended,
    /// It stopped answering: nothing sent to it was acknowledged, and it
    /// answered no keep-alive probe, within the backend's peer timeout — a
    /// cut link or a dead host.
    Silent,
    /// It broke the backend's own framing (a malformed tcp frame, a shm
    /// ring record or index that cannot be true): nothing more it sends is
    /// believed.
    Protocol,
}

/// Errors of the transport layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The backend has no room now; progress (`poll`) and try again.
    #[error("the transport has no room now (back-pressure); progress and retry")]
    WouldBlock,
    /// The peer is gone.
    #[error("peer {0} is gone")]
    PeerLost(PeerId),
    /// The peer index is outside the job.
    #[error("peer {peer} does not exist in a job of {size}")]
    InvalidPeer {
        /// The peer asked for.
        peer: PeerId,
        /// The number of peers.
        size: usize,
    },
    /// A frame exceeds the backend's limits.
    #[error("frame too large: header {header} B and payload {payload} B (limits {max_header} B and {max_payload} B)")]
    FrameTooLarge {
        /// Header length given.
        header: usize,
        /// Payload length given.
        payload: usize,
        /// The backend's header limit.
        max_header: usize,
        /// The backend's payload limit.
        max_payload: usize,
    },
    /// A region is not registered (or no longer), or a range falls outside it.
    #[error("memory region missing, revoked, read-only or too short")]
    InvalidRegion,
    /// The backend does not offer this operation; see [`Capabilities`].
    #[error("not supported by the {0} transport")]
    Unsupported(&'static str),
    /// Setting up the backend failed (the message says what and why).
    #[error("{0}")]
    Setup(String),
}

/// The interface every backend implements. See the crate documentation for
/// the contract, and `docs/architecture.md` for how shm, tcp and libfabric map
/// onto it.
pub trait Transport {
    /// The backend's capabilities and limits.
    fn capabilities(&self) -> &Capabilities;

    /// The capabilities that hold between this endpoint and `peer`: the
    /// same as [`capabilities`](Transport::capabilities) except in a
    /// backend that reaches different peers through different fabrics
    /// ([`hybrid`]: shm on this host, tcp to others), where `capabilities`
    /// gives what holds for every peer.
    fn peer_capabilities(&self, peer: PeerId) -> &Capabilities {
        let _ = peer;
        self.capabilities()
    }

    /// This endpoint's index.
    fn peer_id(&self) -> PeerId;

    /// The number of endpoints in the job.
    fn peer_count(&self) -> usize;

    /// Hands one frame to `dst` (which may be this endpoint itself). On
    /// success the frame will be delivered exactly once, and both slices may
    /// be reused at once. [`TransportError::WouldBlock`] means "no room now";
    /// nothing was sent.
    fn try_send(
        &mut self,
        dst: PeerId,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError>;

    /// Makes progress and reports events to `sink`; returns how many. Never
    /// blocks. `regions` is the endpoint's own table, for backends that land
    /// data in registered memory while polling.
    fn poll(
        &mut self,
        regions: &Regions,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, TransportError>;

    /// Blocks until an event may be ready or `timeout` passes. The runtime
    /// calls it only when it has nothing else to do, so that oversubscribed
    /// ranks leave the cores to each other.
    fn wait(&mut self, timeout: Duration);

    /// One step of leaving the job in order: tells the peers (so that they
    /// report this rank as ended, not failed) and lets what is in flight
    /// leave, returning at once; `true` once nothing is left to do. The
    /// caller sends nothing after the first call. The runtime calls it
    /// at finalize, between rounds of progress and waits, until it returns
    /// `true` or a deadline passes; a backend dropped without it does what
    /// it needs within a bound of its own. By default there is nothing to
    /// do.
    fn close(&mut self) -> bool {
        true
    }

    /// Makes a registered region readable by peers and returns the key they
    /// need. The exposure ends when the region leaves the table.
    fn expose(&mut self, regions: &Regions, region: RegionId) -> Result<RemoteKey, TransportError>;

    /// Starts reading `len` bytes at `src_offset` of the region `key` that
    /// `src` exposed into `dst` at `dst_offset`. Completion is reported by
    /// `poll` as [`Event::RmaDone`] or [`Event::RmaFailed`] with `token`.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<(), TransportError>;

    /// Starts writing `len` bytes at `src_offset` of the local region `src`
    /// into the region `key` that `dst` exposed, at `dst_offset`: a
    /// one-sided write, which `dst`'s runtime takes no part in. `src` is
    /// pinned until completion, which `poll` reports as
    /// [`Event::RmaDone`] (the bytes are in the peer's memory) or
    /// [`Event::RmaFailed`] with `token`. Only where
    /// [`Capabilities::rma_write`]; by default unsupported.
    #[allow(clippy::too_many_arguments)]
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
        let _ = (regions, src, src_offset, dst, key, dst_offset, len, token);
        Err(TransportError::Unsupported("one-sided writes"))
    }
}

/// The built-in backends, dispatched by `match`.
#[derive(Debug)]
pub enum Backend {
    /// Ranks as threads of one process.
    Loopback(loopback::Loopback),
    /// Processes on one host, through shared memory.
    Shm(shm::Shm),
    /// Processes on any hosts, over TCP.
    Tcp(tcp::Tcp),
    /// Shared memory within each host, TCP between hosts.
    Hybrid(Box<hybrid::Hybrid>),
    /// libfabric RDM endpoints (EFA and other providers).
    Ofi(Box<ofi::Ofi>),
}

macro_rules! dispatch {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Backend::Loopback($t) => $e,
            Backend::Shm($t) => $e,
            Backend::Tcp($t) => $e,
            Backend::Hybrid($t) => $e,
            Backend::Ofi($t) => $e,
        }
    };
}

impl Backend {
    /// Whether `poll` has something to report without waiting (the hybrid
    /// backend sleeps in one backend at a time and looks at the other
    /// first).
    pub fn has_work(&mut self) -> bool {
        match self {
            Backend::Loopback(_) | Backend::Hybrid(_) => true,
            Backend::Shm(t) => t.has_work(),
            Backend::Tcp(t) => t.has_work(),
            Backend::Ofi(t) => t.has_work(),
        }
    }
}

impl Transport for Backend {
    fn capabilities(&self) -> &Capabilities {
        dispatch!(self, t => t.capabilities())
    }
    fn peer_capabilities(&self, peer: PeerId) -> &Capabilities {
        dispatch!(self, t => t.peer_capabilities(peer))
    }
    fn peer_id(&self) -> PeerId {
        dispatch!(self, t => t.peer_id())
    }
    fn peer_count(&self) -> usize {
        dispatch!(self, t => t.peer_count())
    }
    #[inline]
    fn try_send(
        &mut self,
        dst: PeerId,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError> {
        dispatch!(self, t => t.try_send(dst, header, payload))
    }
    #[inline]
    fn poll(
        &mut self,
        regions: &Regions,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, TransportError> {
        dispatch!(self, t => t.poll(regions, sink))
    }
    fn wait(&mut self, timeout: Duration) {
        dispatch!(self, t => t.wait(timeout))
    }
    fn close(&mut self) -> bool {
        dispatch!(self, t => t.close())
    }
    fn expose(&mut self, regions: &Regions, region: RegionId) -> Result<RemoteKey, TransportError> {
        dispatch!(self, t => t.expose(regions, region))
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
        dispatch!(self, t => t.start_read(regions, src, key, src_offset, dst, dst_offset, len, token))
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
        dispatch!(self, t => t.start_write(regions, src, src_offset, dst, key, dst_offset, len, token))
    }
}
