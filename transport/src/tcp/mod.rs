//! The TCP backend: ranks on any hosts that reach each other over IP —
//! ENA-class Ethernet in the cloud, or the loopback interface.
//!
//! # Wire
//!
//! Each ordered pair of ranks shares `stripes` TCP connections. A frame is
//! an 8-byte prefix (header length as `u16`, a `u16` marker, payload length
//! as `u32`, little-endian) followed by the header and the payload. Frames
//! with a payload of at least [`STRIPE_MIN`] bytes go round-robin over the
//! stripes, so that one pair of ranks can use more than one flow (ENA caps a
//! single flow at 5 Gbps, 10 Gbps in a placement group); smaller frames use
//! the first stripe. Frames on different stripes may overtake each other,
//! so with more than one stripe the backend says it is not `ordered` and the
//! runtime's sequence numbers restore MPI's order.
//!
//! # Set-up and authentication
//!
//! Every rank listens on an ephemeral port, publishes `address:port`
//! through the job's [`Exchange`], and connects to every rank above it.
//! A connection opens with a handshake — a magic string, the connecting
//! rank, the stripe, and the job's secret — that the accepting rank checks
//! before it answers ([`handshake`]: every connection is served at once, so
//! a stranger that trickles bytes cannot hold set-up). Anything else (a
//! port scanner, a half handshake, random bytes, a wrong secret) is refused
//! and logged, and set-up goes on waiting for the real peers until its
//! deadline. A peer's frame whose payload length exceeds the largest
//! payload makes that peer lost, before anything is allocated for it. The listener is closed
//! once every peer is connected. The secret travels in the clear, as it
//! does to the launcher's key-value server: it keeps strangers out, it is
//! not encryption.
//!
//! # Data path
//!
//! `try_send` writes the prefix, header and payload with one vectored
//! `write` when nothing is queued for that connection; what the kernel does
//! not take is kept in the connection's send buffer (reused, not allocated
//! per message), and once that holds [`SEND_BUFFER`] bytes `try_send`
//! returns `WouldBlock`. `poll` flushes queued bytes, asks the kernel which
//! sockets are readable (`epoll` through mio, without waiting), reads them
//! in large batches and hands the runtime slices of complete frames straight
//! from the receive buffer. `wait` sleeps in `epoll` until a socket is
//! readable or the timeout passes. A connection that ends (end of file or an
//! error) makes its peer lost once everything it delivered has been handed
//! up.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::exchange::Exchange;

pub mod handshake;
use crate::{
    Capabilities, Event, LossCause, PeerId, RegionId, Regions, RemoteKey, Transport, TransportError,
};

/// Frames with at least this much payload are spread over the stripes.
pub const STRIPE_MIN: usize = 64 << 10;
/// Bytes a connection may queue before `try_send` pushes back.
pub const SEND_BUFFER: usize = 4 << 20;
/// The largest header.
const MAX_HEADER: usize = 64;
/// The frame prefix.
const PREFIX: usize = 8;
const MARKER: u16 = 0x7c9e;
/// Up to this many connections, `poll` tries every socket instead of
/// asking epoll which are readable.
const DIRECT_READS: usize = 4;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 256 << 10;

/// Settings of the TCP backend.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The address to listen on and publish: one the other ranks can reach.
    pub bind: IpAddr,
    /// Connections per pair of ranks (at least 1).
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
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            stripes: 1,
            secret: String::new(),
            eager_limit: 64 << 10,
            max_payload: 1 << 20,
            setup_timeout: Duration::from_secs(60),
            peer_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Conn {
    stream: mio::net::TcpStream,
    /// Bytes queued for the socket, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// Bytes read, not yet handed up, in `inb[in_at..in_end]`.
    inb: Vec<u8>,
    in_at: usize,
    in_end: usize,
    /// The kernel said readable and we have not yet read it dry.
    readable: bool,
    /// End of file or an error: nothing more will arrive.
    closed: bool,
    /// The connection broke (an error, not an orderly end), and how.
    failed: Option<LossCause>,
}

impl Conn {
    fn new(stream: TcpStream, peer_timeout: Duration) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let sock = socket2::SockRef::from(&stream);
        sock.set_tcp_user_timeout(Some(peer_timeout))?;
        let probe = (peer_timeout / 4).max(Duration::from_secs(1));
        sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new().with_time(probe).with_interval(probe).with_retries(3),
        )?;
        Ok(Conn {
            stream: mio::net::TcpStream::from_std(stream),
            out: Vec::new(),
            out_at: 0,
            inb: vec![0; READ_CHUNK],
            in_at: 0,
            in_end: 0,
            readable: true,
            closed: false,
            failed: None,
        })
    }

    fn queued(&self) -> usize {
        self.out.len() - self.out_at
    }

    /// Writes queued bytes while the kernel takes them.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        } else if self.out_at >= SEND_BUFFER {
            // Drop what has gone, so that a buffer that never quite empties
            // does not grow without end.
            self.out.drain(..self.out_at);
            self.out_at = 0;
        }
        Ok(())
    }

    /// Reads what the socket has (up to a few chunks); whether anything came.
    fn fill(&mut self) -> bool {
        let mut got = false;
        for _ in 0..4 {
            if !self.readable || self.closed {
                break;
            }
            if self.in_at > 0 && (self.in_end == self.inb.len() || self.in_at == self.in_end) {
                self.inb.copy_within(self.in_at..self.in_end, 0);
                self.in_end -= self.in_at;
                self.in_at = 0;
            }
            if self.in_end == self.inb.len() {
                let more = self.inb.len();
                self.inb.resize(self.inb.len() + more, 0);
            }
            match self.stream.read(&mut self.inb[self.in_end..]) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.in_end += n;
                    got = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.closed = true;
                    self.failed = Some(cause_of(&e));
                }
            }
        }
        got
    }

    /// Hands complete frames to `sink`; returns how many. A frame longer
    /// than `max_payload` is refused before room is made for it.
    fn deliver(
        &mut self,
        src: PeerId,
        max_payload: usize,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, String> {
        let mut frames = 0;
        loop {
            let avail = &self.inb[self.in_at..self.in_end];
            if avail.len() < PREFIX {
                break;
            }
            let hlen = u16::from_le_bytes([avail[0], avail[1]]) as usize;
            let marker = u16::from_le_bytes([avail[2], avail[3]]);
            let plen = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]) as usize;
            if marker != MARKER || hlen > MAX_HEADER {
                return Err(format!("rank {src} sent a malformed frame"));
            }
            if plen > max_payload {
                return Err(format!(
                    "rank {src} sent a {plen}-byte payload, beyond the {max_payload}-byte limit"
                ));
            }
            let total = PREFIX + hlen + plen;
            if avail.len() < total {
                if total > self.inb.len() - self.in_at {
                    // Make room for a frame larger than the buffer.
                    self.inb.copy_within(self.in_at..self.in_end, 0);
                    self.in_end -= self.in_at;
                    self.in_at = 0;
                    if total > self.inb.len() {
                        self.inb.resize(total, 0);
                    }
                }
                break;
            }
            let header = &avail[PREFIX..PREFIX + hlen];
            let payload = &avail[PREFIX + hlen..total];
            sink(Event::Frame { src, header, payload });
            self.in_at += total;
            frames += 1;
        }
        if self.in_at == self.in_end {
            self.in_at = 0;
            self.in_end = 0;
        }
        Ok(frames)
    }
}

/// An endpoint of the TCP backend.
#[derive(Debug)]
pub struct Tcp {
    me: PeerId,
    ranks: usize,
    stripes: usize,
    caps: Capabilities,
    poll: Poll,
    events: Events,
    /// `conns[peer][stripe]`; empty for this rank itself.
    conns: Vec<Vec<Conn>>,
    /// Frames to this rank itself, framed as on the wire.
    own: Vec<u8>,
    /// Peers whose connections ended or failed, and how.
    lost: Vec<Option<LossCause>>,
    /// Connections in all.
    conn_count: usize,
    /// Lost peers already reported to the runtime.
    reported: Vec<bool>,
    next_stripe: usize,
}

fn setup(what: impl Into<String>) -> TransportError {
    TransportError::Setup(what.into())
}

impl Tcp {
    /// Joins the job as rank `me` of `ranks`: listens, publishes the
    /// address, connects to every other rank and authenticates.
    pub fn open(
        me: usize,
        ranks: usize,
        exchange: &mut dyn Exchange,
        config: &TcpConfig,
    ) -> Result<Tcp, TransportError> {
        Tcp::open_among(me, ranks, &vec![true; ranks], exchange, config)
    }

    /// [`open`](Tcp::open), connecting only to the peers `p` with
    /// `reach[p]` (the others are reached another way: [`crate::hybrid`]).
    /// Every rank must pass a `reach` that agrees with the others'.
    pub fn open_among(
        me: usize,
        ranks: usize,
        reach: &[bool],
        exchange: &mut dyn Exchange,
        config: &TcpConfig,
    ) -> Result<Tcp, TransportError> {
        if reach.len() != ranks {
            return Err(setup("the reach mask must have one entry per rank"));
        }
        let reach = |p: usize| p != me && reach[p];
        let stripes = config.stripes.max(1);
        if config.eager_limit > config.max_payload {
            return Err(setup("the eager limit exceeds the largest frame payload"));
        }
        if u32::try_from(config.max_payload).is_err() {
            return Err(setup("the largest frame payload must fit the 32-bit length on the wire"));
        }
        let listener = TcpListener::bind(SocketAddr::new(config.bind, 0))
            .map_err(|e| setup(format!("cannot listen on {}: {e}", config.bind)))?;
        let addr = listener.local_addr().map_err(|e| setup(e.to_string()))?;
        let published =
            exchange.allgather(me, ranks, "tcp", addr.to_string().as_bytes()).map_err(setup)?;
        let mut addrs = Vec::with_capacity(ranks);
        for (r, raw) in published.iter().enumerate() {
            let text = String::from_utf8_lossy(raw).into_owned();
            addrs.push(
                text.parse::<SocketAddr>()
                    .map_err(|_| setup(format!("rank {r} published a bad address {text:?}")))?,
            );
        }
        let deadline = Instant::now() + config.setup_timeout;
        let mut streams: Vec<Vec<Option<TcpStream>>> =
            (0..ranks).map(|_| (0..stripes).map(|_| None).collect()).collect();

        // Connect upwards, handshakes first (they sit in kernel buffers)...
        for (peer, addr) in addrs.iter().enumerate().skip(me + 1).filter(|(p, _)| reach(*p)) {
            for (stripe, slot) in streams[peer].iter_mut().enumerate() {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut s = connect_retrying(addr, left)
                    .map_err(|e| setup(format!("cannot connect to rank {peer} at {addr}: {e}")))?;
                s.write_all(&handshake::encode(me, stripe, &config.secret))
                    .map_err(|e| setup(format!("handshake with rank {peer}: {e}")))?;
                *slot = Some(s);
            }
        }
        // ... accept everyone below, checking each ...
        let expected = (0..me).filter(|&p| reach(p)).count() * stripes;
        handshake::accept(
            &listener,
            me,
            stripes,
            &config.secret,
            expected,
            deadline,
            |peer, stripe, s| {
                if !reach(peer) {
                    return Err(format!("rank {peer} is reached another way"));
                }
                match &mut streams[peer][stripe] {
                    Some(_) => Err(format!("a second connection for rank {peer}, stripe {stripe}")),
                    slot => {
                        *slot = Some(s);
                        Ok(())
                    }
                }
            },
        )
        .map_err(setup)?;
        drop(listener);
        // ... and collect the answers of those above.
        for (peer, row) in streams.iter_mut().enumerate().skip(me + 1).filter(|(p, _)| reach(*p)) {
            for s in row.iter_mut().flatten() {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                s.set_read_timeout(Some(left)).map_err(|e| setup(e.to_string()))?;
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack)
                    .ok()
                    .filter(|_| ack == *b"K")
                    .ok_or_else(|| setup(format!("rank {peer} did not accept the handshake")))?;
                s.set_read_timeout(None).map_err(|e| setup(e.to_string()))?;
            }
        }

        let poll = Poll::new().map_err(|e| setup(format!("epoll: {e}")))?;
        let mut conns = Vec::with_capacity(ranks);
        for (peer, row) in streams.into_iter().enumerate() {
            let mut list = Vec::new();
            if reach(peer) {
                for (stripe, s) in row.into_iter().enumerate() {
                    let s = s.ok_or_else(|| setup(format!("no connection to rank {peer}")))?;
                    let mut c =
                        Conn::new(s, config.peer_timeout).map_err(|e| setup(e.to_string()))?;
                    poll.registry()
                        .register(&mut c.stream, Token(peer * stripes + stripe), Interest::READABLE)
                        .map_err(|e| setup(format!("epoll: {e}")))?;
                    list.push(c);
                }
            }
            conns.push(list);
        }
        exchange.fence().map_err(setup)?;
        let caps = Capabilities {
            name: "tcp",
            max_header: MAX_HEADER,
            max_payload: config.max_payload,
            inline_limit: 4096.min(config.eager_limit),
            eager_limit: config.eager_limit,
            rma_read: false,
            max_read: 0,
            revocable: false,
            ordered: stripes == 1,
            latency_hint: Duration::from_micros(10),
            spin_pause: false,
            bandwidth_hint: 1_000_000_000,
        };
        caps.validate().map_err(setup)?;
        Ok(Tcp {
            me: PeerId(me as u32),
            ranks,
            stripes,
            caps,
            poll,
            events: Events::with_capacity(256),
            conns,
            own: Vec::new(),
            lost: vec![None; ranks],
            conn_count: (0..ranks).filter(|&p| reach(p)).count() * stripes,
            reported: vec![false; ranks],
            next_stripe: 0,
        })
    }

    /// A job of `ranks` endpoints in this process, connected over the
    /// loopback interface (for tests).
    pub fn local_job(ranks: usize, config: &TcpConfig) -> Result<Vec<Tcp>, TransportError> {
        crate::exchange::local_job(ranks, |me, exchange| Tcp::open(me, ranks, exchange, config))
    }

    fn lose(&mut self, peer: usize, cause: LossCause) {
        self.lost[peer].get_or_insert(cause);
        for c in &mut self.conns[peer] {
            c.out.clear();
            c.out_at = 0;
        }
    }

    /// Whether `poll` would find something now (frames to itself, or a
    /// socket with data), without waiting.
    pub fn has_work(&mut self) -> bool {
        if !self.own.is_empty() {
            return true;
        }
        self.readiness(Some(Duration::ZERO));
        self.conns.iter().flatten().any(|c| c.readable && !c.closed)
    }

    /// Marks the sockets the kernel reports readable, waiting up to
    /// `timeout`.
    fn readiness(&mut self, timeout: Option<Duration>) {
        if self.poll.poll(&mut self.events, timeout).is_err() {
            return;
        }
        for ev in self.events.iter() {
            let t = ev.token().0;
            let (peer, stripe) = (t / self.stripes, t % self.stripes);
            if let Some(c) = self.conns.get_mut(peer).and_then(|row| row.get_mut(stripe)) {
                c.readable = true;
            }
        }
    }
}

fn frame_prefix(header: &[u8], payload: &[u8]) -> [u8; PREFIX] {
    let mut p = [0u8; PREFIX];
    p[0..2].copy_from_slice(&(header.len() as u16).to_le_bytes());
    p[2..4].copy_from_slice(&MARKER.to_le_bytes());
    p[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    p
}

/// How a socket error loses its peer: a timeout (`TCP_USER_TIMEOUT`, or
/// keep-alive probes unanswered) means the peer went silent.
fn cause_of(e: &io::Error) -> LossCause {
    match e.kind() {
        ErrorKind::TimedOut => LossCause::Silent,
        _ => LossCause::Ended,
    }
}

/// Connects, retrying while the listener is not there yet.
fn connect_retrying(addr: &SocketAddr, within: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + within;
    loop {
        match TcpStream::connect_timeout(addr, Duration::from_secs(5)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
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
        if self.lost[d].is_some() {
            return Err(TransportError::PeerLost(dst));
        }
        let prefix = frame_prefix(header, payload);
        if dst == self.me {
            self.own.extend_from_slice(&prefix);
            self.own.extend_from_slice(header);
            self.own.extend_from_slice(payload);
            return Ok(());
        }
        let stripe = if self.stripes > 1 && payload.len() >= STRIPE_MIN {
            self.next_stripe = (self.next_stripe + 1) % self.stripes;
            self.next_stripe
        } else {
            0
        };
        let Some(c) = self.conns[d].get_mut(stripe) else {
            return Err(TransportError::Unsupported("tcp (this peer is reached another way)"));
        };
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
        let parts = [IoSlice::new(&prefix), IoSlice::new(header), IoSlice::new(payload)];
        let written = match c.stream.write_vectored(&parts) {
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
        // Queued bytes out.
        for peer in 0..self.ranks {
            if self.lost[peer].is_some() {
                continue;
            }
            let broken = self.conns[peer]
                .iter_mut()
                .filter(|c| c.queued() > 0)
                .find_map(|c| c.flush().err());
            if let Some(e) = broken {
                self.lose(peer, cause_of(&e));
            }
        }
        if self.conn_count <= DIRECT_READS {
            // Few sockets: a read that finds nothing costs less than asking
            // epoll first.
            for c in self.conns.iter_mut().flatten() {
                c.readable = true;
            }
        } else {
            self.readiness(Some(Duration::ZERO));
        }
        for peer in 0..self.ranks {
            if self.lost[peer].is_some() || self.conns[peer].is_empty() {
                continue;
            }
            let src = PeerId(peer as u32);
            let mut ended = 0;
            let mut failed = None;
            for c in &mut self.conns[peer] {
                c.fill();
                match c.deliver(src, self.caps.max_payload, sink) {
                    Ok(n) => events += n,
                    Err(why) => {
                        tracing::warn!("tcp: {why}; treating rank {peer} as lost");
                        failed = Some(LossCause::Protocol);
                    }
                }
                if c.closed && c.in_at == c.in_end {
                    ended += 1;
                    failed = failed.or(c.failed);
                }
            }
            if let Some(cause) = failed {
                self.lose(peer, cause);
            } else if ended == self.conns[peer].len() {
                self.lose(peer, LossCause::Ended);
            }
        }
        for peer in 0..self.ranks {
            if let (Some(cause), false) = (self.lost[peer], self.reported[peer]) {
                self.reported[peer] = true;
                sink(Event::PeerLost { peer: PeerId(peer as u32), cause });
                events += 1;
            }
        }
        Ok(events)
    }

    fn wait(&mut self, timeout: Duration) {
        if !self.own.is_empty() {
            return;
        }
        let pending = self.conns.iter().flatten().any(|c| c.readable && !c.closed);
        if pending && self.conn_count > DIRECT_READS {
            return;
        }
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

impl Drop for Tcp {
    /// Gives queued bytes a short while to leave, so that what a rank sent
    /// just before it ended still arrives.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        for c in self.conns.iter_mut().flatten() {
            while c.queued() > 0 && Instant::now() < deadline {
                if c.flush().is_err() {
                    break;
                }
                if c.queued() > 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::fuzz::{self, Rng};

    /// Random and mutated byte streams from a connected peer: the reader
    /// hands up only whole frames within the limits, or refuses the stream;
    /// it never panics, and its buffer stays within a frame and a read of
    /// the limits. 100 chunks per connection.
    #[test]
    fn random_streams_never_crash_the_reader() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut rng = Rng::new(fuzz::seed());
        let max_payload = 4096;
        let bound = 4 * (READ_CHUNK + PREFIX + MAX_HEADER + max_payload);
        let (mut cases, mut frames, mut refused) = (fuzz::cases(10_000), 0, 0);
        while cases > 0 {
            let mut peer = TcpStream::connect(addr).unwrap();
            let (mine, _) = listener.accept().unwrap();
            let mut conn = Conn::new(mine, Duration::from_secs(30)).unwrap();
            for _ in 0..100.min(cases) {
                cases -= 1;
                let mut chunk = Vec::new();
                for _ in 0..rng.below(4) {
                    let hlen = rng.below(MAX_HEADER as u64 + 8) as usize;
                    let plen = match rng.below(4) {
                        0 => rng.next_u64() as u32 as usize,
                        _ => rng.below(max_payload as u64 + 64) as usize,
                    };
                    let mut prefix = [0u8; PREFIX];
                    prefix[0..2].copy_from_slice(&(hlen as u16).to_le_bytes());
                    prefix[2..4].copy_from_slice(&MARKER.to_le_bytes());
                    prefix[4..8].copy_from_slice(&(plen as u32).to_le_bytes());
                    chunk.extend_from_slice(&prefix);
                    chunk.extend(rng.bytes(hlen + plen.min(max_payload + 64)));
                }
                rng.mutate(&mut chunk, 3);
                if rng.below(8) == 0 {
                    chunk = rng.bytes_below(200);
                }
                peer.write_all(&chunk).unwrap();
                conn.readable = true;
                conn.fill();
                let delivered = conn.deliver(PeerId(1), max_payload, &mut |ev| {
                    let Event::Frame { header, payload, .. } = ev else { panic!("not a frame") };
                    assert!(header.len() <= MAX_HEADER && payload.len() <= max_payload);
                });
                assert!(conn.inb.len() <= bound, "reader buffer of {} bytes", conn.inb.len());
                match delivered {
                    Ok(n) => frames += n,
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
        }
        // Both outcomes were reached, or the cases tested little.
        assert!(frames > 0 && refused > 0, "{frames} frames, {refused} streams refused");
    }
}
