//! One TCP connection of an endpoint: its socket, the bytes queued for it,
//! and the bytes read from it not yet handed up.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{MARKER, MARKER_END, MARKER_SYNC, MAX_HEADER, PREFIX, SEND_BUFFER};

/// Bytes of a connection's first read buffer.
const FIRST_READ: usize = 32 << 10;
use crate::{Event, LossCause, PeerId};

#[derive(Debug)]
pub(super) struct Conn {
    pub stream: mio::net::TcpStream,
    /// Bytes queued for the socket, from `out_at` on.
    pub out: Vec<u8>,
    pub out_at: usize,
    /// Bytes read, not yet handed up, in `inb[in_at..in_end]`.
    pub inb: Vec<u8>,
    pub in_at: usize,
    pub in_end: usize,
    /// The kernel said readable and we have not yet read it dry.
    pub readable: bool,
    /// The poll (the endpoint's count) in which a read last found bytes.
    pub last_got: u64,
    /// End of file or an error: nothing more will arrive.
    pub closed: bool,
    /// The connection broke (an error, not an orderly end), and how.
    pub failed: Option<LossCause>,
    /// A connection this rank opened whose handshake has not yet left, and
    /// since when: the TCP connection is still being made.
    pub dialing_since: Option<Instant>,
    /// Which of the pair's connections this is.
    pub stripe: usize,
    /// This rank sent its end marker: it sends nothing more on it.
    pub sent_end: bool,
    /// The peer's end marker arrived: nothing more will.
    pub got_end: bool,
    /// This rank has sent its sync marker: the connection belongs to one
    /// of its numbered sets of connections to the peer.
    pub synced: bool,
    /// The peer closed it without an end marker (it exited): everything it
    /// sent has arrived, and nothing is sent on it any more.
    pub vanished: bool,
    /// The set the peer numbered this connection with (its sync marker),
    /// once that has arrived: frames may follow it, not precede it.
    pub set: Option<u32>,
}

/// Sets the options every connection carries: no Nagle delay, a bound on
/// how long a peer may leave data unacknowledged or probes unanswered, and
/// a bound on TCP's retransmission timeout.
fn configure(sock: socket2::SockRef<'_>, peer_timeout: Duration) -> io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_user_timeout(Some(peer_timeout))?;
    cap_retransmission_timeout(&sock);
    // A probe every tenth of the timeout: with TCP_USER_TIMEOUT set, the
    // kernel gives up only when nothing has been acknowledged for the whole
    // timeout, so a lossy link (10% of packets dropped) must lose about ten
    // probes in a row, not three, before a live peer is taken for dead.
    let probe = (peer_timeout / 10).max(Duration::from_secs(1));
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new().with_time(probe).with_interval(probe).with_retries(10),
    )
}

/// The longest TCP may wait before retransmitting (the kernel's least).
pub const MAX_RTO: Duration = Duration::from_secs(1);

/// Caps the socket's retransmission timeout at [`MAX_RTO`] (Linux 6.15 and
/// later; older kernels refuse the option and keep their own bound).
///
/// TCP doubles the timeout with every retransmission of the same segment,
/// and starts a connection whose handshake was retransmitted, or whose
/// first samples were, at a second to three. On a lossy link that is how a
/// live peer got taken for dead: four losses in a row from three seconds
/// (3 + 6 + 12 s, the next due after the user timeout) ended a job at the
/// 30-second timeout, and each loss stalled a collective for seconds. With
/// the cap, a segment is sent again at least once a second, so the user
/// timeout needs about as many losses in a row as it has seconds.
pub(super) fn cap_retransmission_timeout(sock: &socket2::SockRef<'_>) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        /// `TCP_RTO_MAX_MS` of `<linux/tcp.h>`.
        const TCP_RTO_MAX_MS: libc::c_int = 44;
        let ms = MAX_RTO.as_millis() as libc::c_int;
        // SAFETY: the descriptor is open (`sock` borrows its owner), and
        // the kernel reads exactly `size_of::<c_int>()` bytes from `ms`, a
        // live local of that size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                TCP_RTO_MAX_MS,
                (&ms as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::trace!(
                "tcp: the kernel keeps its own retransmission timeout bound: {}",
                io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = sock;
}

impl Conn {
    fn with_stream(stream: mio::net::TcpStream, stripe: usize) -> Conn {
        Conn {
            stream,
            stripe,
            sent_end: false,
            got_end: false,
            synced: false,
            vanished: false,
            set: None,
            out: Vec::new(),
            out_at: 0,
            inb: Vec::new(),
            in_at: 0,
            in_end: 0,
            readable: true,
            last_got: 0,
            closed: false,
            failed: None,
            dialing_since: None,
        }
    }

    /// A connection a peer opened and this rank accepted.
    pub fn accepted(
        stream: mio::net::TcpStream,
        stripe: usize,
        peer_timeout: Duration,
    ) -> io::Result<Conn> {
        configure(socket2::SockRef::from(&stream), peer_timeout)?;
        Ok(Conn::with_stream(stream, stripe))
    }

    /// Starts connecting to `addr` without waiting, with `handshake` queued
    /// to leave as soon as the connection is made.
    pub fn dial(
        addr: SocketAddr,
        stripe: usize,
        handshake: &[u8],
        peer_timeout: Duration,
    ) -> io::Result<Conn> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            Some(socket2::Protocol::TCP),
        )?;
        configure(socket2::SockRef::from(&sock), peer_timeout)?;
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut conn = Conn::with_stream(mio::net::TcpStream::from_std(sock.into()), stripe);
        conn.out.extend_from_slice(handshake);
        conn.dialing_since = Some(Instant::now());
        conn.flush()?;
        Ok(conn)
    }

    pub fn queued(&self) -> usize {
        self.out.len() - self.out_at
    }

    /// Writes queued bytes while the kernel takes them (nothing while the
    /// connection is still being made).
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_at += n;
                    self.dialing_since = None;
                }
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
    pub fn fill(&mut self) -> bool {
        let mut got = false;
        if self.inb.is_empty() && self.readable && !self.closed {
            // The buffer is made on first read, small, so that a connection
            // costs memory by the traffic it carries (it doubles whenever a
            // read fills it, up to whole frames).
            self.inb.resize(FIRST_READ, 0);
        }
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

    /// Queues the end marker: this rank sends nothing more on it.
    pub fn end(&mut self) {
        if !self.sent_end {
            self.sent_end = true;
            if self.vanished {
                return;
            }
            let mut prefix = [0u8; PREFIX];
            prefix[2..4].copy_from_slice(&MARKER_END.to_le_bytes());
            self.out.extend_from_slice(&prefix);
        }
    }

    /// Queues the marker that precedes this rank's first frame on it: it
    /// belongs to this rank's set of connections number `set`.
    pub fn sync(&mut self, set: u32) {
        let mut prefix = [0u8; PREFIX];
        prefix[2..4].copy_from_slice(&MARKER_SYNC.to_le_bytes());
        prefix[4..8].copy_from_slice(&set.to_le_bytes());
        self.out.extend_from_slice(&prefix);
        self.synced = true;
    }

    /// Both sides have ended it and everything queued has left: it can be
    /// closed without losing a byte.
    pub fn finished(&self) -> bool {
        self.sent_end && self.got_end && self.queued() == 0 && self.drained()
    }

    /// Hands complete frames to `sink`; returns how many. A frame longer
    /// than `max_payload` is refused before room is made for it. Stops at
    /// the peer's end marker (`got_end`); bytes after it are refused. Stops
    /// after the peer's sync marker (`set`): the caller decides whether
    /// that set's frames may be read yet.
    pub fn deliver(
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
            if self.got_end {
                return Err(format!("rank {src} sent bytes after ending a connection"));
            }
            let hlen = u16::from_le_bytes([avail[0], avail[1]]) as usize;
            let marker = u16::from_le_bytes([avail[2], avail[3]]);
            let plen = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]) as usize;
            if marker == MARKER_END && hlen == 0 && plen == 0 {
                self.got_end = true;
                self.in_at += PREFIX;
                continue;
            }
            if marker == MARKER_SYNC && hlen == 0 {
                if self.set.is_some() {
                    return Err(format!("rank {src} sent a second sync marker"));
                }
                self.set = Some(plen as u32);
                self.in_at += PREFIX;
                break;
            }
            if self.set.is_none() {
                return Err(format!("rank {src} sent a frame before its sync marker"));
            }
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

    /// Whether everything that arrived has been handed up.
    pub fn drained(&self) -> bool {
        self.in_at == self.in_end
    }
}

/// How a socket error loses its peer: a timeout (`TCP_USER_TIMEOUT`, or
/// keep-alive probes unanswered) means the peer went silent.
pub(super) fn cause_of(e: &io::Error) -> LossCause {
    match e.kind() {
        ErrorKind::TimedOut => LossCause::Silent,
        _ => LossCause::Ended,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

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
        // Four reads of a doubled buffer, and whole frames.
        let bound = 4 * (16 * FIRST_READ + PREFIX + MAX_HEADER + max_payload);
        let (mut cases, mut frames, mut refused) = (fuzz::cases(10_000), 0, 0);
        while cases > 0 {
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            let (mine, _) = listener.accept().unwrap();
            let mine = mio::net::TcpStream::from_std(mine);
            let mut conn = Conn::accepted(mine, 0, Duration::from_secs(30)).unwrap();
            // As after the peer's sync marker.
            conn.set = Some(1);
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

    /// A dial to a port nobody listens on fails when its bytes first try to
    /// leave, not with a hang.
    #[test]
    fn a_dial_to_nobody_fails() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // The listener is closed here: the port refuses.
        let result = Conn::dial(port, 0, b"hello", Duration::from_secs(5)).and_then(|mut c| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                c.flush()?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        });
        let e = result.expect_err("a refused connection");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    }

    /// Both ends of a connection carry the options: the user timeout, and
    /// the cap on the retransmission timeout where the kernel has it (Linux
    /// 6.15 and later; this test's machine does).
    #[cfg(target_os = "linux")]
    #[test]
    fn connections_bound_their_retransmission_timeout() {
        use std::os::fd::AsRawFd;
        fn tcp_opt(fd: i32, opt: libc::c_int) -> io::Result<libc::c_int> {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: the kernel writes at most `len` bytes into `v`, a live
            // local of that size, and `len` back; `fd` is open.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    opt,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if rc == 0 {
                Ok(v)
            } else {
                Err(io::Error::last_os_error())
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dialed =
            Conn::dial(listener.local_addr().unwrap(), 0, b"", Duration::from_secs(7)).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let accepted =
            Conn::accepted(mio::net::TcpStream::from_std(stream), 0, Duration::from_secs(7))
                .unwrap();
        for c in [&dialed, &accepted] {
            let fd = c.stream.as_raw_fd();
            assert_eq!(tcp_opt(fd, libc::TCP_USER_TIMEOUT).unwrap(), 7000);
            match tcp_opt(fd, 44) {
                Ok(ms) => assert_eq!(ms, MAX_RTO.as_millis() as libc::c_int),
                // A kernel before 6.15: the option does not exist there.
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT), "{e}"),
            }
        }
    }
}
