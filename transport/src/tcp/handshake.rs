//! The handshake that opens every tcp connection of a job, and the acceptor
//! that checks them.
//!
//! A handshake is `HPCTCP01`, the connecting rank and its stripe (`u32`
//! each), the length of the secret (`u32`) and the secret: 20 bytes and the
//! secret, little-endian. The accepting rank answers one byte, `K`, when it
//! takes the connection.
//!
//! The listening port is open to anyone who can reach the host, so the
//! acceptor serves every connection at once, without blocking on any: each
//! is read as its bytes arrive, refused as soon as its bytes cannot be a
//! handshake of this job, and dropped when it has not finished within
//! [`HANDSHAKE_TIME`]; at most [`MAX_PENDING`] are kept (the oldest goes
//! first). A real rank writes its whole handshake as it connects, so it is
//! accepted on the first read; strangers that trickle bytes or say nothing
//! cost a slot each for a bounded time and never hold set-up past its
//! deadline. The secret is compared in constant time.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// The handshake's first bytes.
const MAGIC: &[u8; 8] = b"HPCTCP01";
/// The fixed part: magic, rank, stripe, secret length.
const FIXED: usize = 20;
/// How long a connection may take to present its handshake.
pub(crate) const HANDSHAKE_TIME: Duration = Duration::from_secs(2);
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

/// Judges the bytes `got` received on a connection to rank `me`, which
/// accepts stripes below `stripes` from lower ranks. Pure, for the tests.
pub(crate) fn judge(got: &[u8], me: usize, stripes: usize, secret: &str) -> Verdict {
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
    if rank >= me || stripe >= stripes {
        return Verdict::Refused(format!(
            "rank {rank}, stripe {stripe} cannot connect to rank {me}"
        ));
    }
    Verdict::Peer { rank, stripe }
}

struct Pending {
    stream: TcpStream,
    from: SocketAddr,
    got: Vec<u8>,
    since: Instant,
}

/// Accepts the connections of lower ranks on `listener` until `take` has
/// taken `expected` of them or `deadline` passes. `take(rank, stripe,
/// stream)` gets each checked connection and says whether it was wanted
/// (a duplicate or an unwanted rank is not); the acceptor answers `K` to
/// those taken.
pub(crate) fn accept(
    listener: &TcpListener,
    me: usize,
    stripes: usize,
    secret: &str,
    expected: usize,
    deadline: Instant,
    mut take: impl FnMut(usize, usize, TcpStream) -> Result<(), String>,
) -> Result<(), String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut pending: Vec<Pending> = Vec::new();
    let mut accepted = 0;
    while accepted < expected {
        let now = Instant::now();
        if now > deadline {
            return Err(format!(
                "only {accepted} of {expected} connections from lower ranks arrived in time"
            ));
        }
        let mut busy = false;
        loop {
            match listener.accept() {
                Ok((stream, from)) => {
                    busy = true;
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if pending.len() == MAX_PENDING {
                        let oldest = pending.remove(0);
                        tracing::warn!("refused {}: too many handshakes at once", oldest.from);
                    }
                    pending.push(Pending { stream, from, got: Vec::new(), since: now });
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
        while i < pending.len() {
            let p = &mut pending[i];
            let mut verdict = read_some(p, me, stripes, secret);
            if verdict == Verdict::More && now.duration_since(p.since) > HANDSHAKE_TIME {
                verdict = Verdict::Refused("no handshake in time".into());
            }
            match verdict {
                Verdict::More => {
                    i += 1;
                    continue;
                }
                Verdict::Refused(why) => {
                    tracing::warn!("refused a connection from {}: {why}", p.from)
                }
                Verdict::Peer { rank, stripe } => {
                    let Pending { mut stream, from, .. } = pending.swap_remove(i);
                    busy = true;
                    let answered =
                        stream.set_nonblocking(false).and_then(|()| stream.write_all(b"K"));
                    match answered
                        .map_err(|e| e.to_string())
                        .and_then(|()| take(rank, stripe, stream))
                    {
                        Ok(()) => accepted += 1,
                        Err(why) => tracing::warn!("refused {from}: {why}"),
                    }
                    continue;
                }
            }
            pending.swap_remove(i);
            busy = true;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Reads what has arrived on a pending connection, never more than a
/// handshake can hold, and judges it.
fn read_some(p: &mut Pending, me: usize, stripes: usize, secret: &str) -> Verdict {
    let limit = FIXED + secret.len() + 1;
    let mut buf = [0u8; 512];
    loop {
        let room = (limit - p.got.len().min(limit)).min(buf.len());
        if room == 0 {
            return judge(&p.got, me, stripes, secret);
        }
        match p.stream.read(&mut buf[..room]) {
            Ok(0) => {
                return match judge(&p.got, me, stripes, secret) {
                    Verdict::More => Verdict::Refused("closed before its handshake ended".into()),
                    v => v,
                }
            }
            Ok(n) => {
                p.got.extend_from_slice(&buf[..n]);
                if let Verdict::Refused(why) = judge(&p.got, me, stripes, secret) {
                    return Verdict::Refused(why);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return judge(&p.got, me, stripes, secret)
            }
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
        let good = encode(1, 0, "s3cret");
        // Every prefix of a good handshake asks for more; the whole is taken.
        for n in 0..good.len() {
            assert_eq!(judge(&good[..n], 2, 1, "s3cret"), Verdict::More, "prefix {n}");
        }
        assert_eq!(judge(&good, 2, 1, "s3cret"), Verdict::Peer { rank: 1, stripe: 0 });
        let refused = |got: &[u8]| matches!(judge(got, 2, 1, "s3cret"), Verdict::Refused(_));
        // Refused as early as the bytes allow.
        assert!(refused(b"GET"));
        assert!(refused(&encode(1, 0, "s3cre")[..FIXED]), "length of another secret");
        assert!(refused(&encode(1, 0, "s3creT")));
        assert!(refused(&encode(2, 0, "s3cret")), "a rank that must be connected to");
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
