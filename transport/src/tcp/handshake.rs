//! The handshake that opens every tcp connection of a job, and the acceptor
//! that checks them.
//!
//! A handshake is `HPCTCP01`, the connecting rank and its stripe (`u32`
//! each), the length of the secret (`u32`) and the secret: 20 bytes and the
//! secret, little-endian. The connecting rank's frames follow at once; the
//! accepting rank answers nothing, and reads no frame before it has
//! checked the handshake.
//!
//! The listening port is open to anyone who can reach the host, so the
//! acceptor serves every connection at once, without blocking on any: it is
//! driven by the endpoint's `poll`, each connection read as its bytes
//! arrive, refused as soon as its bytes cannot be a handshake of this job,
//! and dropped when it has not finished within [`HANDSHAKE_TIME`]; at most
//! [`MAX_PENDING`] are kept (the oldest goes first). A real rank writes its
//! whole handshake as it connects, so it is accepted on the first read;
//! strangers that trickle bytes or say nothing cost a slot each for a
//! bounded time and never hold anything up. The secret is compared in
//! constant time.

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// The handshake's first bytes.
const MAGIC: &[u8; 8] = b"HPCTCP01";
/// The fixed part: magic, rank, stripe, secret length.
const FIXED: usize = 20;
/// How long a connection may take to present its handshake: a real rank's
/// arrives with the first segment, but on a lossy link that segment may be
/// sent four or five times (200 ms, then doubling), and a refused honest
/// connection costs the frames behind its handshake. Strangers that say
/// nothing hold one of [`MAX_PENDING`] slots this long at most.
pub(crate) const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// Connections whose handshake is still arriving, at most.
pub(crate) const MAX_PENDING: usize = 256;

/// The handshake rank `rank` sends on its connection number `stripe`.
pub fn encode(rank: usize, stripe: usize, secret: &str) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&(rank as u32).to_le_bytes());
    h.extend_from_slice(&(stripe as u32).to_le_bytes());
    h.extend_from_slice(&(secret.len() as u32).to_le_bytes());
    h.extend_from_slice(secret.as_bytes());
    h
}

/// Whether two secrets are equal, in time that depends only on their
/// lengths.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// What the bytes received so far make of a handshake.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not complete yet (and nothing wrong so far).
    More,
    /// A handshake of this job: the peer's rank and stripe.
    Peer { rank: usize, stripe: usize },
    /// Not a handshake of this job, and why.
    Refused(String),
}

/// What a handshake must say to be one of this job's, seen from rank `me`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect<'a> {
    pub me: usize,
    pub ranks: usize,
    pub stripes: usize,
    pub secret: &'a str,
}

/// Judges the bytes `got` received on a connection: a handshake from
/// another rank of the job, for a stripe it has. Pure, for the tests.
pub(crate) fn judge(got: &[u8], expect: Expect<'_>) -> Verdict {
    let Expect { me, ranks, stripes, secret } = expect;
    let magic = &got[..got.len().min(MAGIC.len())];
    if magic != &MAGIC[..magic.len()] {
        return Verdict::Refused("not an hpcomm handshake".into());
    }
    if got.len() < FIXED {
        return Verdict::More;
    }
    let word = |i: usize| u32::from_le_bytes(got[i..i + 4].try_into().expect("4 bytes")) as usize;
    let (rank, stripe, len) = (word(8), word(12), word(16));
    if len != secret.len() {
        return Verdict::Refused("wrong secret".into());
    }
    if got.len() < FIXED + len {
        return Verdict::More;
    }
    if got.len() > FIXED + len {
        return Verdict::Refused("bytes after the handshake".into());
    }
    if !same_secret(&got[FIXED..], secret.as_bytes()) {
        return Verdict::Refused("wrong secret".into());
    }
    if rank >= ranks || rank == me || stripe >= stripes {
        return Verdict::Refused(format!(
            "rank {rank}, stripe {stripe} cannot connect to rank {me}"
        ));
    }
    Verdict::Peer { rank, stripe }
}

#[derive(Debug)]
struct Pending {
    stream: TcpStream,
    from: SocketAddr,
    got: Vec<u8>,
    since: Instant,
}

/// A checked handshake: the connection and who opened it.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub rank: usize,
    pub stripe: usize,
    pub stream: TcpStream,
    pub from: SocketAddr,
}

/// The listening socket and the connections whose handshakes are still
/// arriving.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: TcpListener,
    pending: Vec<Pending>,
}

impl Acceptor {
    /// Serves `listener`, made non-blocking; the connections it accepts
    /// inherit its bound on the retransmission timeout from their first
    /// round trip on, before they are accepted.
    pub fn new(listener: std::net::TcpListener) -> std::io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        super::conn::cap_retransmission_timeout(&socket2::SockRef::from(&listener));
        Ok(Acceptor { listener: TcpListener::from_std(listener), pending: Vec::new() })
    }

    /// The listening socket, to register for readiness.
    pub fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    /// Whether handshakes are still arriving (they are read on every call).
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the connections waiting on the listener, reads what has
    /// arrived on each, and pushes the complete and valid handshakes to
    /// `arrived`; refuses and logs the rest. Never blocks. Whether anything
    /// happened.
    pub fn progress(&mut self, expect: Expect<'_>, arrived: &mut Vec<Arrival>) -> bool {
        let now = Instant::now();
        let mut busy = false;
        loop {
            match self.listener.accept() {
                Ok((stream, from)) => {
                    busy = true;
                    if self.pending.len() == MAX_PENDING {
                        let oldest = self.pending.remove(0);
                        tracing::warn!("refused {}: too many handshakes at once", oldest.from);
                    }
                    self.pending.push(Pending { stream, from, got: Vec::new(), since: now });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A connection that failed before we took it (reset), or no
                // descriptor left for now: the pending ones still progress.
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    break;
                }
            }
        }
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            let mut verdict = read_some(p, expect);
            if verdict == Verdict::More && now.duration_since(p.since) > HANDSHAKE_TIME {
                verdict = Verdict::Refused("no handshake in time".into());
            }
            match verdict {
                Verdict::More => i += 1,
                Verdict::Refused(why) => {
                    tracing::warn!("refused a connection from {}: {why}", p.from);
                    self.pending.swap_remove(i);
                    busy = true;
                }
                Verdict::Peer { rank, stripe } => {
                    let Pending { stream, from, .. } = self.pending.swap_remove(i);
                    arrived.push(Arrival { rank, stripe, stream, from });
                    busy = true;
                }
            }
        }
        busy
    }
}

/// Reads what has arrived on a pending connection, never a byte past the
/// handshake (the connecting rank's frames follow it at once, and belong to
/// the connection), and judges it.
fn read_some(p: &mut Pending, expect: Expect<'_>) -> Verdict {
    let mut buf = [0u8; 512];
    loop {
        // The fixed part first; then the secret, whose length `judge` has
        // checked against ours.
        let limit = if p.got.len() < FIXED { FIXED } else { FIXED + expect.secret.len() };
        let room = (limit - p.got.len().min(limit)).min(buf.len());
        if room == 0 {
            return judge(&p.got, expect);
        }
        match p.stream.read(&mut buf[..room]) {
            Ok(0) => {
                return match judge(&p.got, expect) {
                    Verdict::More => Verdict::Refused("closed before its handshake ended".into()),
                    v => v,
                }
            }
            Ok(n) => {
                p.got.extend_from_slice(&buf[..n]);
                if let Verdict::Refused(why) = judge(&p.got, expect) {
                    return Verdict::Refused(why);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return judge(&p.got, expect),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Verdict::Refused(format!("read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_judged_byte_by_byte() {
        let expect = Expect { me: 2, ranks: 4, stripes: 1, secret: "s3cret" };
        let good = encode(1, 0, "s3cret");
        // Every prefix of a good handshake asks for more; the whole is taken.
        for n in 0..good.len() {
            assert_eq!(judge(&good[..n], expect), Verdict::More, "prefix {n}");
        }
        assert_eq!(judge(&good, expect), Verdict::Peer { rank: 1, stripe: 0 });
        // Higher ranks connect too (connections are made by whoever sends
        // first).
        assert_eq!(judge(&encode(3, 0, "s3cret"), expect), Verdict::Peer { rank: 3, stripe: 0 });
        let refused = |got: &[u8]| matches!(judge(got, expect), Verdict::Refused(_));
        // Refused as early as the bytes allow.
        assert!(refused(b"GET"));
        assert!(refused(&encode(1, 0, "s3cre")[..FIXED]), "length of another secret");
        assert!(refused(&encode(1, 0, "s3creT")));
        assert!(refused(&encode(2, 0, "s3cret")), "the rank itself");
        assert!(refused(&encode(4, 0, "s3cret")), "a rank outside the job");
        assert!(refused(&encode(0, 1, "s3cret")), "a stripe beyond the job's");
        let mut long = good.clone();
        long.push(0);
        assert!(refused(&long));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(same_secret(b"", b""));
    }
}
