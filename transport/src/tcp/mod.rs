//! The TCP backend: ranks on any hosts that reach each other over IP —
//! ENA-class Ethernet in the cloud, or the loopback interface.
//!
//! # Wire
//!
//! Each pair of ranks that talks shares `stripes` TCP connections. A frame
//! is an 8-byte prefix (header length as `u16`, a `u16` marker, payload
//! length as `u32`, little-endian) followed by the header and the payload.
//! Frames with a payload of at least [`STRIPE_MIN`] bytes go round-robin
//! over the stripes, so that one pair of ranks can use more than one flow
//! (ENA caps a single flow at 5 Gbps, 10 Gbps in a placement group);
//! smaller frames use the first stripe. Frames on different stripes may
//! overtake each other, so with more than one stripe the backend says it is
//! not `ordered` and the runtime's sequence numbers restore MPI's order.
//!
//! # Connections on first use
//!
//! At set-up every rank only listens on an ephemeral port and publishes
//! `address:port` through the job's [`Exchange`]: start-up costs one
//! all-gather, whatever the size of the job. A pair of ranks is connected
//! when one of them first sends to the other (`peer.rs` holds the rules).
//! The sender dials without waiting; the connection opens with a handshake
//! — a magic string, the connecting rank, the stripe, and the job's secret
//! — and the sender's frames follow it at once, queued until the kernel
//! has made the connection. The accepting rank checks the handshake
//! ([`handshake`]: every connection is served as its bytes arrive, inside
//! `poll`, so a stranger that trickles bytes holds nothing up) before it
//! reads a frame. A rank that has accepted a peer's set of connections
//! sends on it and never dials that peer; one that has part of the set
//! waits a moment for the rest (`peer::SET_GRACE`), so that both
//! directions share one set.
//!
//! When two ranks dial each other at once, each keeps sending on the
//! connection it made and reads from both: each rank's choice is fixed by
//! what it did, not by timing, and no frame ever changes connection, so
//! each direction stays in order.
//!
//! Anything that is not a handshake of this job (a port scanner, a half
//! handshake, random bytes, a wrong secret) is refused and logged. A
//! peer's frame whose payload length exceeds the largest payload makes
//! that peer lost, before anything is allocated for it. The secret travels
//! in the clear, as it does to the launcher's key-value server: it keeps
//! strangers out, it is not encryption.
//!
//! # Data path
//!
//! `try_send` writes the prefix, header and payload with one `write` when
//! nothing is queued for that connection (gathered into one buffer up to
//! 1 KiB, vectored above); what the kernel does
//! not take is kept in the connection's send buffer (reused, not allocated
//! per message), and once that holds [`SEND_BUFFER`] bytes `try_send`
//! returns `WouldBlock`. `poll` flushes queued bytes, asks the kernel which
//! sockets are readable (`epoll` through mio, without waiting), reads them
//! in large batches and hands the runtime slices of complete frames straight
//! from the receive buffer. `wait` sleeps in `epoll` until a socket (or the
//! listener) is readable or the timeout passes.
//!
//! # Lost peers
//!
//! A connection that fails (an error, a reset) makes its peer lost at once.
//! One the peer closes without an end marker (it exited) ends its set of
//! connections, and the peer is lost once everything it sent has been
//! handed up. A peer that refuses a connection is lost at once (it has
//! gone); one whose connection the kernel cannot make within the peer
//! timeout is lost as silent.
//!
//! # Closing connections
//!
//! With a cap on open connections ([`TcpConfig::max_conns`]) the peer used
//! least recently has its connections ended with an end marker behind
//! what is queued, and made again on demand; `peer.rs` describes how the
//! sets of connections keep every frame and its order.

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::exchange::Exchange;

mod conn;
pub mod handshake;
mod peer;

use crate::{
    Capabilities, Event, LossCause, PeerId, RegionId, Regions, RemoteKey, Transport, TransportError,
};
pub use conn::MAX_RTO;
use conn::{cause_of, Conn};
use handshake::{Acceptor, Arrival, Expect};
use peer::{Peer, Route};

/// Bounds the retransmission timeout of a TCP socket (or of the
/// connections a listener accepts) at [`MAX_RTO`], as the backend does for
/// its own: for the other connections of a job (to the launcher), which
/// cross the same networks and have their own deadlines. Where the kernel
/// lacks the option (before Linux 6.15), its own bound stays.
pub fn bound_retransmission_timeout(sock: &impl std::os::fd::AsFd) {
    conn::cap_retransmission_timeout(&socket2::SockRef::from(sock));
}

/// Frames with at least this much payload are spread over the stripes.
pub const STRIPE_MIN: usize = 64 << 10;
/// Bytes a connection may queue before `try_send` pushes back.
pub const SEND_BUFFER: usize = 4 << 20;
/// The largest header.
const MAX_HEADER: usize = 64;
/// Frames up to this size leave with one contiguous `send`.
const SMALL_FRAME: usize = 1024;
/// The frame prefix.
const PREFIX: usize = 8;
const MARKER: u16 = 0x7c9e;
/// The marker of a connection's end: a prefix with no header or payload,
/// after which its sender sends nothing more on that connection.
const MARKER_END: u16 = 0x7c9f;
/// The marker that precedes a rank's first frame on a connection: its
/// payload length field holds how many connections to the peer the rank
/// had ended before (so that the peer reads those to their end first).
const MARKER_SYNC: u16 = 0x7ca0;
/// Up to this many connections per stripe (about as many peers), `poll`
/// tries the sockets instead of asking epoll which are readable (and asks
/// epoll about new connections once in [`LISTEN_EVERY`] polls).
const DIRECT_READS: usize = 4;
/// With few connections, polls between looks at the listener (and at the
/// sockets of stripes other than the first, through epoll).
const LISTEN_EVERY: u32 = 16;
/// With few connections, a stripe other than the first is read on every
/// poll only for this many polls after a read last found bytes on it: the
/// first stripe carries every small frame and is always tried, the others
/// carry only large frames and are otherwise found through epoll once in
/// [`LISTEN_EVERY`] polls, so that a second stripe costs small messages no
/// extra system call per poll.
const HOT_POLLS: u64 = 256;
/// The listener's token; connections use their peer's rank.
const LISTENER: Token = Token(usize::MAX);

/// Settings of the TCP backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// The address to listen on and publish: one the other ranks can reach.
    pub bind: IpAddr,
    /// Connections per pair of ranks (at least 1; 2 by default).
    pub stripes: usize,
    /// The job's secret, presented in every handshake.
    pub secret: String,
    /// Largest message sent eagerly.
    pub eager_limit: usize,
    /// Largest frame payload (the chunk of a pipelined rendezvous).
    pub max_payload: usize,
    /// How long set-up waits for every peer.
    pub setup_timeout: Duration,
    /// A peer that leaves data unacknowledged, or answers no keep-alive
    /// probe, this long is lost (`TCP_USER_TIMEOUT` and keep-alive): a cut
    /// link becomes an error within this bound instead of a hang.
    pub peer_timeout: Duration,
    /// Open connections kept at most (at least `stripes`): past it, the
    /// peer used least recently has its connections closed — without
    /// losing a frame — and they are made again when next needed. `None`:
    /// no cap.
    pub max_conns: Option<usize>,
}

impl TcpConfig {
    /// Applies the `HPCOMM_TCP_*` variables found through `lookup`;
    /// returns `HPCOMM_TCP_BIND` when set (the runtime decides the address
    /// otherwise, from the launcher).
    pub fn read_vars(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<IpAddr>, String> {
        use crate::backend::parse;
        if let Some(v) = parse::<usize>(lookup, "HPCOMM_TCP_STRIPES")? {
            if !(1..=64).contains(&v) {
                return Err(format!("HPCOMM_TCP_STRIPES={v} must be 1 to 64"));
            }
            self.stripes = v;
        }
        if let Some(v) = parse::<usize>(lookup, "HPCOMM_TCP_MAX_CONNS")? {
            if v == 0 {
                return Err("HPCOMM_TCP_MAX_CONNS=0: at least 1".into());
            }
            self.max_conns = Some(v);
        }
        // The general peer timeout, which tcp's own overrides.
        for name in ["HPCOMM_PEER_TIMEOUT", "HPCOMM_TCP_TIMEOUT"] {
            if let Some(v) = parse::<u64>(lookup, name)? {
                self.peer_timeout = Duration::from_secs(v.max(1));
            }
        }
        match lookup("HPCOMM_TCP_BIND") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("HPCOMM_TCP_BIND={v:?} is not an IP address")),
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            stripes: 2,
            secret: String::new(),
            eager_limit: 64 << 10,
            max_payload: 1 << 20,
            setup_timeout: Duration::from_secs(60),
            peer_timeout: Duration::from_secs(30),
            max_conns: None,
        }
    }
}

/// An endpoint of the TCP backend.
#[derive(Debug)]
pub struct Tcp {
    me: PeerId,
    ranks: usize,
    stripes: usize,
    caps: Capabilities,
    secret: String,
    peer_timeout: Duration,
    max_conns: Option<usize>,
    poll: Poll,
    events: Events,
    acceptor: Acceptor,
    /// The listener has connections waiting (epoll said so).
    listen_ready: bool,
    /// Where each rank listens.
    addrs: Vec<SocketAddr>,
    /// The ranks this endpoint may reach (the others another way).
    reach: Vec<bool>,
    /// The peers this rank has talked to; `None` for the others.
    peers: Vec<Option<Box<Peer>>>,
    /// The ranks with an entry in `peers`, in the order they came.
    active: Vec<u32>,
    /// Connections whose handshake has not yet left (the kernel is still
    /// making them).
    dialing: usize,
    /// Connections open.
    conn_count: usize,
    /// Frames to this rank itself, framed as on the wire.
    own: Vec<u8>,
    next_stripe: usize,
    polls: u64,
    /// Handshakes checked by the acceptor, not yet taken.
    arrivals: Vec<Arrival>,
}

fn setup(what: impl Into<String>) -> TransportError {
    TransportError::Setup(what.into())
}

impl Tcp {
    /// Joins the job as rank `me` of `ranks`: listens and publishes its
    /// address. Connections are made when ranks first send to each other.
    pub fn open(
        me: usize,
        ranks: usize,
        exchange: &mut dyn Exchange,
        config: &TcpConfig,
    ) -> Result<Tcp, TransportError> {
        Tcp::open_among(me, ranks, &vec![true; ranks], exchange, config)
    }

    /// [`open`](Tcp::open), reaching only the peers `p` with `reach[p]`
    /// (the others are reached another way: [`crate::hybrid`]). Every rank
    /// must pass a `reach` that agrees with the others'.
    pub fn open_among(
        me: usize,
        ranks: usize,
        reach: &[bool],
        exchange: &mut dyn Exchange,
        config: &TcpConfig,
    ) -> Result<Tcp, TransportError> {
        if reach.len() != ranks || me >= ranks {
            return Err(setup("the reach mask must have one entry per rank"));
        }
        let stripes = config.stripes.clamp(1, 64);
        // A set each way with every peer it reaches, at worst (both ranks
        // of a pair may dial at once), and room for the rest of the process.
        let peers = reach.iter().filter(|&&r| r).count();
        let need = config.max_conns.unwrap_or(2 * peers * stripes).min(2 * peers * stripes);
        crate::backend::raise_fd_limit(need + 256);
        if config.eager_limit > config.max_payload {
            return Err(setup("the eager limit exceeds the largest frame payload"));
        }
        if u32::try_from(config.max_payload).is_err() {
            return Err(setup("the largest frame payload must fit the 32-bit length on the wire"));
        }
        let listener = TcpListener::bind(SocketAddr::new(config.bind, 0))
            .map_err(|e| setup(format!("cannot listen on {}: {e}", config.bind)))?;
        let addr = listener.local_addr().map_err(|e| setup(e.to_string()))?;
        let mut acceptor = Acceptor::new(listener).map_err(|e| setup(format!("listen: {e}")))?;
        let poll = Poll::new().map_err(|e| setup(format!("epoll: {e}")))?;
        poll.registry()
            .register(acceptor.listener(), LISTENER, Interest::READABLE)
            .map_err(|e| setup(format!("epoll: {e}")))?;
        // Every rank listens before any learns an address: once the
        // all-gather returns, any rank may dial any other.
        let published =
            exchange.allgather(me, ranks, "tcp", addr.to_string().as_bytes()).map_err(setup)?;
        let mut addrs = Vec::with_capacity(ranks);
        for (r, raw) in published.iter().enumerate() {
            let text = String::from_utf8_lossy(raw);
            addrs.push(
                text.parse::<SocketAddr>()
                    .map_err(|_| setup(format!("rank {r} published a bad address {text:?}")))?,
            );
        }
        let caps = Capabilities {
            name: "tcp",
            max_header: MAX_HEADER,
            max_payload: config.max_payload,
            inline_limit: 4096.min(config.eager_limit),
            eager_limit: config.eager_limit,
            rma_read: false,
            max_read: 0,
            revocable: false,
            reads_from_outside: false,
            rma_write: false,
            ordered: stripes == 1,
            latency_hint: Duration::from_micros(10),
            spin_pause: false,
            yield_hint: Duration::from_micros(300),
            bandwidth_hint: 1_000_000_000,
        };
        caps.validate().map_err(setup)?;
        let mut reach = reach.to_vec();
        reach[me] = false;
        Ok(Tcp {
            me: PeerId(me as u32),
            ranks,
            stripes,
            caps,
            secret: config.secret.clone(),
            peer_timeout: config.peer_timeout,
            max_conns: config.max_conns.map(|m| m.max(stripes)),
            poll,
            events: Events::with_capacity(256),
            acceptor,
            listen_ready: true,
            addrs,
            reach,
            peers: (0..ranks).map(|_| None).collect(),
            active: Vec::new(),
            dialing: 0,
            conn_count: 0,
            own: Vec::new(),
            next_stripe: 0,
            polls: 0,
            arrivals: Vec::new(),
        })
    }

    /// A job of `ranks` endpoints in this process, over the loopback
    /// interface (for tests).
    pub fn local_job(ranks: usize, config: &TcpConfig) -> Result<Vec<Tcp>, TransportError> {
        crate::exchange::local_job(ranks, |me, exchange| Tcp::open(me, ranks, exchange, config))
    }

    /// How many connections this rank holds now (every stripe, both
    /// directions, those being closed included).
    pub fn connections(&self) -> usize {
        self.conn_count
    }

    /// How many connections are open for frames (not being closed).
    pub fn open_connections(&self) -> usize {
        self.active.iter().filter_map(|&p| self.peers[p as usize].as_deref()).map(Peer::open).sum()
    }

    /// Closes the connections of the peers used least recently until at
    /// most the cap are open, sparing `keep` (the peer just connected).
    fn enforce_cap(&mut self, keep: usize) {
        let Some(cap) = self.max_conns else { return };
        let mut open = self.open_connections();
        while open > cap {
            let victim = self
                .active
                .iter()
                .map(|&p| p as usize)
                .filter(|&p| p != keep)
                .filter_map(|p| self.peers[p].as_deref().map(|peer| (p, peer)))
                .filter(|(_, peer)| peer.lost.is_none() && peer.open() > 0)
                .min_by_key(|(_, peer)| peer.last_used)
                .map(|(p, _)| p);
            let Some(victim) = victim else { return };
            let peer = self.peers[victim].as_deref_mut().expect("active");
            open -= peer.open();
            tracing::debug!("tcp: closing the connections to rank {victim} (cap of {cap})");
            peer.retire_all();
        }
    }

    /// The peer entry of `p`, made on first use.
    fn peer(&mut self, p: usize) -> &mut Peer {
        if self.peers[p].is_none() {
            self.peers[p] = Some(Box::new(Peer::new()));
            self.active.push(p as u32);
        }
        self.peers[p].as_mut().expect("just made")
    }

    /// Makes this rank's connections to `p`, the handshake queued on each;
    /// on failure the peer is lost.
    fn dial(&mut self, p: usize) {
        let addr = self.addrs[p];
        let mut made = Vec::with_capacity(self.stripes);
        for stripe in 0..self.stripes {
            let hello = handshake::encode(self.me.index(), stripe, &self.secret);
            let mut c = match Conn::dial(addr, stripe, &hello, self.peer_timeout) {
                Ok(c) => c,
                Err(e) => {
                    let hint = match e.raw_os_error() {
                        Some(libc::EMFILE | libc::ENFILE) => {
                            " (out of file descriptors: raise the limit, or cap connections \
                             with HPCOMM_TCP_MAX_CONNS)"
                        }
                        _ => "",
                    };
                    tracing::warn!("tcp: cannot connect to rank {p} at {addr}: {e}{hint}");
                    self.lose(p, cause_of(&e));
                    return;
                }
            };
            let watched = self.poll.registry().register(
                &mut c.stream,
                Token(p),
                Interest::READABLE | Interest::WRITABLE,
            );
            if let Err(e) = watched {
                tracing::warn!("tcp: epoll cannot watch a connection to rank {p}: {e}");
                self.lose(p, LossCause::Ended);
                return;
            }
            made.push(c);
        }
        self.conn_count += made.len();
        self.dialing += made.iter().filter(|c| c.dialing_since.is_some()).count();
        self.peer(p).dialed = made;
        self.enforce_cap(p);
    }

    /// Accepts what waits at the listener, serves handshakes as far as
    /// their bytes have come, and takes the connections that passed.
    fn take_arrivals(&mut self) {
        let expect = Expect {
            me: self.me.index(),
            ranks: self.ranks,
            stripes: self.stripes,
            secret: &self.secret,
        };
        self.acceptor.progress(expect, &mut self.arrivals);
        self.admit_arrivals();
    }

    /// Takes the connections whose handshakes the acceptor has checked.
    fn admit_arrivals(&mut self) {
        let mut arrivals = std::mem::take(&mut self.arrivals);
        for Arrival { rank, stripe, stream, from } in arrivals.drain(..) {
            if !self.reach[rank] {
                tracing::warn!("tcp: refused {from}: rank {rank} is reached another way");
                continue;
            }
            let replaces = match peer::admit(stripe, self.peer(rank)) {
                Ok(replaces) => replaces,
                Err(why) => {
                    tracing::warn!("tcp: refused {from} (rank {rank}, stripe {stripe}): {why}");
                    continue;
                }
            };
            let mut conn = match Conn::accepted(stream, stripe, self.peer_timeout) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("tcp: connection from rank {rank} failed: {e}");
                    continue;
                }
            };
            if let Err(e) =
                self.poll.registry().register(&mut conn.stream, Token(rank), Interest::READABLE)
            {
                tracing::warn!("tcp: epoll cannot watch rank {rank}'s connection: {e}");
                continue;
            }
            self.conn_count += 1;
            let (polls, stripes, now) = (self.polls, self.stripes, Instant::now());
            let peer = self.peer(rank);
            tracing::trace!(rank, stripe, replaces, "tcp: a connection admitted");
            if replaces {
                peer.retire_accepted();
            }
            peer.take_accepted(conn, stripes, now);
            peer.last_used = polls;
            self.enforce_cap(rank);
        }
        self.arrivals = arrivals;
    }

    fn lose(&mut self, p: usize, cause: LossCause) {
        let peer = self.peer(p);
        if peer.lost.is_some() {
            return;
        }
        peer.lost = Some(cause);
        tracing::debug!(rank = p, "tcp: peer lost: {cause:?}");
        let mut dialing = 0;
        for c in peer.conns_mut() {
            c.out = Vec::new();
            c.out_at = 0;
            dialing += usize::from(c.dialing_since.take().is_some());
        }
        self.dialing -= dialing;
    }

    /// Whether `poll` would find something now (frames to itself, a socket
    /// with data, a connection arriving), without waiting.
    pub fn has_work(&mut self) -> bool {
        if !self.own.is_empty() || self.acceptor.busy() {
            return true;
        }
        self.readiness(Some(Duration::ZERO));
        self.listen_ready || self.any_readable()
    }

    /// Whether `poll` reads the sockets without asking epoll first.
    fn reads_direct(&self) -> bool {
        self.conn_count <= DIRECT_READS * self.stripes
    }

    fn any_readable(&self) -> bool {
        self.active
            .iter()
            .filter_map(|&p| self.peers[p as usize].as_deref())
            .any(|peer| peer.lost.is_none() && peer.conns().any(|c| c.readable && !c.closed))
    }

    /// Marks the sockets the kernel reports readable, waiting up to
    /// `timeout`.
    fn readiness(&mut self, timeout: Option<Duration>) {
        if self.poll.poll(&mut self.events, timeout).is_err() {
            return;
        }
        for ev in self.events.iter() {
            if ev.token() == LISTENER {
                self.listen_ready = true;
                continue;
            }
            // A peer has a few connections at most: all are tried.
            let Some(peer) = self.peers.get_mut(ev.token().0).and_then(|e| e.as_deref_mut()) else {
                continue;
            };
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                peer.conns_mut().for_each(|c| c.readable = true);
            }
        }
    }

    /// Moves one peer's connections on: flushes, reads frames, times out
    /// connections the kernel cannot make; the events handed up.
    fn progress_peer(&mut self, p: usize, now: Instant, sink: &mut dyn FnMut(Event<'_>)) -> usize {
        let max_payload = self.caps.max_payload;
        let peer_timeout = self.peer_timeout;
        let polls = self.polls;
        let Some(peer) = self.peers[p].as_deref_mut() else { return 0 };
        if peer.lost.is_some() {
            return 0;
        }
        let src = PeerId(p as u32);
        let mut events = 0;
        let mut loss = None;
        let mut connected = 0;
        // Only the set the peer is sending on now is read; a later set
        // waits until every connection of this one has ended.
        let stripes = self.stripes;
        let (mut read_set, mut ended_in_set) = (peer.read_set, peer.read_set_ended);
        for c in peer.conns_mut() {
            if c.queued() > 0 {
                let was_dialing = c.dialing_since.is_some();
                if let Err(e) = c.flush() {
                    loss = Some(cause_of(&e));
                    break;
                }
                connected += usize::from(was_dialing && c.dialing_since.is_none());
            }
            if c.dialing_since.is_some_and(|t| now.duration_since(t) > peer_timeout) {
                tracing::warn!("tcp: no connection to rank {p} within {peer_timeout:?}");
                loss = Some(LossCause::Silent);
                break;
            }
            if !c.got_end && c.set.is_some_and(|s| s < read_set) {
                tracing::warn!("tcp: rank {p} sent on a set of connections it had ended");
                loss = Some(LossCause::Protocol);
                break;
            }
            if c.set.is_some_and(|s| s > read_set) {
                // A later set: not even read from the socket, so that TCP
                // holds its sender back.
                continue;
            }
            if c.readable && !c.closed && c.fill() {
                c.last_got = polls;
            }
            // Up to twice: the sync marker, then the set's frames.
            for _ in 0..2 {
                if c.set.is_some_and(|s| s != read_set) {
                    break;
                }
                let ended = c.got_end;
                let had_set = c.set.is_some();
                match c.deliver(src, max_payload, sink) {
                    Ok(n) => events += n,
                    Err(why) => {
                        tracing::warn!("tcp: {why}; treating rank {p} as lost");
                        loss = Some(LossCause::Protocol);
                        break;
                    }
                }
                if !had_set && c.set.is_some() {
                    tracing::trace!(rank = p, set = c.set, read_set, "tcp: a set begins");
                }
                if c.got_end && !ended {
                    tracing::trace!(rank = p, set = c.set, read_set, "tcp: a connection ends");
                }
                if c.got_end && !ended && c.set == Some(read_set) {
                    ended_in_set += 1;
                    if ended_in_set == stripes {
                        read_set += 1;
                        ended_in_set = 0;
                    }
                }
                if c.got_end || c.drained() {
                    break;
                }
            }
            if loss.is_some() {
                break;
            }
            if c.closed && c.drained() && !c.got_end {
                if let Some(cause) = c.failed {
                    tracing::debug!(rank = p, set = c.set, "tcp: a connection broke: {cause:?}");
                    loss = Some(cause);
                    break;
                }
                tracing::debug!(
                    rank = p,
                    set = c.set,
                    read_set,
                    "tcp: closed without an end marker"
                );
                // An orderly close without an end marker: the peer exited.
                // What it sent here has all arrived; its later sets, if
                // any, are read before it is reported lost.
                c.got_end = true;
                c.vanished = true;
                if c.set == Some(read_set) {
                    ended_in_set += 1;
                    if ended_in_set == stripes {
                        read_set += 1;
                        ended_in_set = 0;
                    }
                }
            }
        }
        (peer.read_set, peer.read_set_ended) = (read_set, ended_in_set);
        if loss.is_none()
            && peer.conns().any(|c| c.vanished)
            && peer.conns().all(|c| c.got_end && c.drained())
        {
            loss = Some(LossCause::Ended);
        }
        peer.retire_ended();
        let finished = peer.drop_finished();
        self.conn_count -= finished;
        if events > 0 {
            peer.last_used = polls;
        }
        self.dialing -= connected;
        if let Some(cause) = loss {
            self.lose(p, cause);
        }
        events
    }
}

fn frame_prefix(header: &[u8], payload: &[u8]) -> [u8; PREFIX] {
    let mut p = [0u8; PREFIX];
    p[0..2].copy_from_slice(&(header.len() as u16).to_le_bytes());
    p[2..4].copy_from_slice(&MARKER.to_le_bytes());
    p[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    p
}

impl Transport for Tcp {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn peer_id(&self) -> PeerId {
        self.me
    }

    fn peer_count(&self) -> usize {
        self.ranks
    }

    fn try_send(
        &mut self,
        dst: PeerId,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), TransportError> {
        let d = self.caps.check_send(dst, self.ranks, header, payload)?;
        let prefix = frame_prefix(header, payload);
        if dst == self.me {
            self.own.extend_from_slice(&prefix);
            self.own.extend_from_slice(header);
            self.own.extend_from_slice(payload);
            return Ok(());
        }
        if !self.reach[d] {
            return Err(TransportError::Unsupported("tcp (this peer is reached another way)"));
        }
        let stripes = self.stripes;
        let must_dial = |p: Option<&Peer>| {
            p.is_none_or(|p| p.route(stripes) == Route::Dial && p.lost.is_none())
        };
        if must_dial(self.peers[d].as_deref()) {
            if self.peers[d].as_deref().is_some_and(|p| !p.accepted.is_empty()) {
                // Part of the peer's set is in: the rest may be at the
                // listener already, or on the way (see `peer`).
                self.take_arrivals();
                let now = Instant::now();
                let peer = self.peers[d].as_deref().expect("accepted");
                if peer.lost.is_none() && peer.route_at(stripes, now) == Route::Wait {
                    return Err(TransportError::WouldBlock);
                }
            }
            if must_dial(self.peers[d].as_deref()) {
                self.dial(d);
            }
        }
        let polls = self.polls;
        let peer = self.peers[d].as_deref_mut().expect("dialed");
        if peer.lost.is_some() {
            return Err(TransportError::PeerLost(dst));
        }
        peer.last_used = polls;
        let conns = peer.send_conns(stripes);
        let stripe = if conns.len() > 1 && payload.len() >= STRIPE_MIN {
            self.next_stripe = (self.next_stripe + 1) % conns.len();
            self.next_stripe
        } else {
            0
        };
        let c = &mut conns[stripe];
        let total = PREFIX + header.len() + payload.len();
        if c.queued() > 0 {
            if let Err(e) = c.flush() {
                self.lose(d, cause_of(&e));
                return Err(TransportError::PeerLost(dst));
            }
            if c.queued() > 0 {
                if c.queued() + total > SEND_BUFFER {
                    return Err(TransportError::WouldBlock);
                }
                c.out.extend_from_slice(&prefix);
                c.out.extend_from_slice(header);
                c.out.extend_from_slice(payload);
                return Ok(());
            }
        }
        // A small frame is gathered into one buffer first: the kernel
        // copies one piece for `send` faster than three for `writev`.
        let result = if total <= SMALL_FRAME {
            let mut small = [0u8; SMALL_FRAME];
            small[..PREFIX].copy_from_slice(&prefix);
            small[PREFIX..PREFIX + header.len()].copy_from_slice(header);
            small[PREFIX + header.len()..total].copy_from_slice(payload);
            c.stream.write(&small[..total])
        } else {
            let parts = [IoSlice::new(&prefix), IoSlice::new(header), IoSlice::new(payload)];
            c.stream.write_vectored(&parts)
        };
        let written = match result {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => 0,
            Err(e) => {
                self.lose(d, cause_of(&e));
                return Err(TransportError::PeerLost(dst));
            }
        };
        if written < total {
            // Keep the rest, in order.
            let mut skip = written;
            for part in [&prefix[..], header, payload] {
                if skip >= part.len() {
                    skip -= part.len();
                } else {
                    c.out.extend_from_slice(&part[skip..]);
                    skip = 0;
                }
            }
        }
        Ok(())
    }

    fn poll(
        &mut self,
        _regions: &Regions,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, TransportError> {
        let mut events = 0;
        // Frames to ourselves.
        if !self.own.is_empty() {
            let own = std::mem::take(&mut self.own);
            let mut at = 0;
            while at < own.len() {
                let hlen = u16::from_le_bytes([own[at], own[at + 1]]) as usize;
                let plen = u32::from_le_bytes(own[at + 4..at + 8].try_into().expect("4")) as usize;
                let h = &own[at + PREFIX..at + PREFIX + hlen];
                let p = &own[at + PREFIX + hlen..at + PREFIX + hlen + plen];
                sink(Event::Frame { src: self.me, header: h, payload: p });
                at += PREFIX + hlen + plen;
                events += 1;
            }
            let mut own = own;
            own.clear();
            if self.own.is_empty() {
                self.own = own;
            }
        }
        self.polls += 1;
        let direct = self.reads_direct();
        if !direct
            || self.dialing > 0
            || self.acceptor.busy()
            || self.polls % u64::from(LISTEN_EVERY) == 0
        {
            self.readiness(Some(Duration::ZERO));
        }
        if direct {
            // Few sockets: a read that finds nothing costs less than asking
            // epoll first.
            let polls = self.polls;
            for &p in &self.active {
                if let Some(peer) = self.peers[p as usize].as_deref_mut() {
                    for c in peer.conns_mut() {
                        if c.stripe == 0 || polls.saturating_sub(c.last_got) <= HOT_POLLS {
                            c.readable = true;
                        }
                    }
                }
            }
        }
        if std::mem::take(&mut self.listen_ready) || self.acceptor.busy() {
            self.take_arrivals();
        }
        let now = Instant::now();
        for i in 0..self.active.len() {
            events += self.progress_peer(self.active[i] as usize, now, sink);
        }
        for i in 0..self.active.len() {
            let p = self.active[i] as usize;
            let peer = self.peers[p].as_deref_mut().expect("active");
            if let (Some(cause), false) = (peer.lost, peer.reported) {
                peer.reported = true;
                self.conn_count -= peer.drop_conns();
                sink(Event::PeerLost { peer: PeerId(p as u32), cause });
                events += 1;
            }
        }
        Ok(events)
    }

    /// Done once no live peer has bytes waiting to leave, connections
    /// still being made included: `poll`, which the runtime calls between
    /// steps, moves them (under a connection cap, closing other connections
    /// first). The drop then only shuts and drains; without this step it
    /// gives the bytes 2 s, which a loaded machine can exceed.
    fn close(&mut self) -> bool {
        !self.unsent()
    }

    fn wait(&mut self, timeout: Duration) {
        if !self.own.is_empty() || self.listen_ready {
            return;
        }
        if !self.reads_direct() && self.any_readable() {
            return;
        }
        let timeout = if self.acceptor.busy() || self.dialing > 0 {
            timeout.min(Duration::from_millis(1))
        } else {
            timeout
        };
        self.readiness(Some(timeout));
    }

    fn expose(
        &mut self,
        _regions: &Regions,
        _region: RegionId,
    ) -> Result<RemoteKey, TransportError> {
        Err(TransportError::Unsupported("tcp (no remote reads)"))
    }

    fn start_read(
        &mut self,
        _regions: &Regions,
        _src: PeerId,
        _key: RemoteKey,
        _src_offset: usize,
        _dst: RegionId,
        _dst_offset: usize,
        _len: usize,
        _token: u64,
    ) -> Result<(), TransportError> {
        Err(TransportError::Unsupported("tcp (no remote reads)"))
    }
}

impl Tcp {
    /// Whether a live peer has bytes waiting to leave.
    fn unsent(&self) -> bool {
        self.active
            .iter()
            .filter_map(|&p| self.peers[p as usize].as_deref())
            .any(|peer| peer.lost.is_none() && peer.queued() > 0)
    }
}

impl Drop for Tcp {
    /// Gives queued bytes a short while to leave (connections still being
    /// made included), so that what a rank sent just before it ended still
    /// arrives; then closes its side of every connection and reads until
    /// the peers close theirs (or a moment passes), so that nothing they
    /// sent meanwhile turns the close into a reset that could destroy this
    /// rank's last frames in flight.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let queued = |tcp: &Tcp| tcp.unsent();
        let mut shut = false;
        let mut quiet_since = Instant::now();
        let mut buf = vec![0u8; 64 << 10];
        while Instant::now() < deadline {
            let now = Instant::now();
            let mut busy = false;
            for i in 0..self.active.len() {
                let p = self.active[i] as usize;
                let Some(peer) = self.peers[p].as_deref_mut() else { continue };
                for c in peer.conns_mut() {
                    if c.queued() > 0 {
                        let late = c
                            .dialing_since
                            .is_some_and(|t| now.duration_since(t) > self.peer_timeout);
                        if c.flush().is_err() || late {
                            c.out.clear();
                            c.out_at = 0;
                        }
                    }
                    if shut && !c.closed {
                        // What arrives now has nobody to go to.
                        match c.stream.read(&mut buf) {
                            Ok(0) => c.closed = true,
                            Ok(_) => busy = true,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(_) => c.closed = true,
                        }
                    }
                }
            }
            if !shut && !queued(self) {
                shut = true;
                quiet_since = Instant::now();
                for &p in &self.active {
                    if let Some(peer) = self.peers[p as usize].as_deref() {
                        for c in peer.conns() {
                            let _ = c.stream.shutdown(std::net::Shutdown::Write);
                        }
                    }
                }
                continue;
            }
            let open = self
                .active
                .iter()
                .filter_map(|&p| self.peers[p as usize].as_deref())
                .any(|peer| peer.conns().any(|c| !c.closed));
            if busy {
                quiet_since = Instant::now();
            }
            if shut && (!open || quiet_since.elapsed() > Duration::from_millis(100)) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}
