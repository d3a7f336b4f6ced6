//! The window's messages: a request header an origin sends to a target's
//! server (with the data of a small put or accumulate after it), and the
//! short status replies the server sends back.
//!
//! Every request travels on the window's *request* tag and is served in
//! the order its origin sent it; a large put's or accumulate's data follows
//! on the *data* tag, and a get's data and every status reply come back on
//! the *reply* tag. All three are tags of the window's communicator's
//! collective context, taken from one collective operation number, so
//! windows and collectives in flight together never match each other's
//! messages. Layout (little-endian), described in `docs/protocol.md`:
//!
//! | bytes | field                                                  |
//! |-------|--------------------------------------------------------|
//! | 0     | version (1)                                            |
//! | 1     | kind: put 1, accumulate 2, get 3, lock 4, unlock 5, flush 6, fence 7 |
//! | 2     | argument: the operation of an accumulate, the lock kind (shared 1, exclusive 2), a fence's last flag |
//! | 3     | whether the data follows in this message (1) or on the data tag (0) |
//! | 4     | then: nothing 0, flush 1, unlock 2 — what the target does after an inline put or accumulate, as if the origin had sent it next |
//! | 5..8  | zero                                                   |
//! | 8..16 | first byte in the target's window                      |
//! | 16..24| bytes                                                  |

use hpcomm_runtime::{Error, Result};

use super::accumulate::OpCode;

/// The wire format's version.
const VERSION: u8 = 2;

/// Bytes of a request header.
pub(crate) const HEADER_LEN: usize = 24;

/// The most data a request carries after its header; more goes as a
/// message of its own on the data tag. A server's request buffers hold a
/// header and this much.
pub(crate) const INLINE_MAX: usize = 4096;

/// The tags of one window, from the first of the lanes its collective
/// operation number gives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tags {
    pub(crate) request: i32,
    pub(crate) data: i32,
    pub(crate) reply: i32,
}

impl Tags {
    pub(crate) fn from_base(base: i32) -> Tags {
        Tags { request: base, data: base + 1, reply: base + 2 }
    }
}

/// How a lock shares its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Any number of origins hold it at once (`MPI_LOCK_SHARED`).
    Shared,
    /// One origin holds it alone (`MPI_LOCK_EXCLUSIVE`).
    Exclusive,
}

/// What a request asks of its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Put,
    Accumulate(OpCode),
    Get,
    Lock(LockKind),
    Unlock,
    Flush,
    /// The end of an epoch at every rank; `last` on the window's free.
    Fence {
        last: bool,
    },
}

/// What a target does after an inline put or accumulate, as if its origin
/// had sent the request next: a put and the flush or unlock right after it
/// travel as one message, answered by one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Then {
    Nothing,
    Flush,
    Unlock,
}

impl Then {
    fn to_wire(self) -> u8 {
        match self {
            Then::Nothing => 0,
            Then::Flush => 1,
            Then::Unlock => 2,
        }
    }
}

/// A request header, as sent and as checked on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) kind: Kind,
    /// Whether the data follows the header in the same message.
    pub(crate) inline: bool,
    pub(crate) then: Then,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

impl Request {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let (kind, arg) = match self.kind {
            Kind::Put => (1, 0),
            Kind::Accumulate(op) => (2, op as u8),
            Kind::Get => (3, 0),
            Kind::Lock(LockKind::Shared) => (4, 1),
            Kind::Lock(LockKind::Exclusive) => (4, 2),
            Kind::Unlock => (5, 0),
            Kind::Flush => (6, 0),
            Kind::Fence { last } => (7, u8::from(last)),
        };
        let then = self.then.to_wire();
        out.clear();
        out.extend_from_slice(&[VERSION, kind, arg, u8::from(self.inline), then, 0, 0, 0]);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    /// Reads the header at the front of `bytes`; the rest is its inline
    /// data, if it has any.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(Request, &[u8])> {
        let bad = |what: &str| Error::Protocol(format!("window request: {what}"));
        let (head, rest) =
            bytes.split_first_chunk::<HEADER_LEN>().ok_or_else(|| bad("shorter than a header"))?;
        if head[0] != VERSION {
            return Err(bad(&format!("version {} (this build speaks {VERSION})", head[0])));
        }
        let (arg, inline) = (head[2], head[3]);
        let kind = match head[1] {
            1 => Kind::Put,
            2 => Kind::Accumulate(OpCode::from_wire(arg).ok_or_else(|| bad("unknown operation"))?),
            3 => Kind::Get,
            4 => Kind::Lock(match arg {
                1 => LockKind::Shared,
                2 => LockKind::Exclusive,
                _ => return Err(bad("unknown lock kind")),
            }),
            5 => Kind::Unlock,
            6 => Kind::Flush,
            7 if arg <= 1 => Kind::Fence { last: arg == 1 },
            _ => return Err(bad("unknown kind")),
        };
        let inline = match inline {
            0 => false,
            1 => true,
            _ => return Err(bad("bad inline flag")),
        };
        let word = |at: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&head[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let then = match head[4] {
            0 => Then::Nothing,
            1 => Then::Flush,
            2 => Then::Unlock,
            _ => return Err(bad("unknown follow-up")),
        };
        if head[5..8] != [0; 3] {
            return Err(bad("reserved bytes set"));
        }
        let request = Request { kind, inline, then, offset: word(8), len: word(16) };
        let carries = matches!(request.kind, Kind::Put | Kind::Accumulate(_));
        if then != Then::Nothing && !(inline && carries) {
            return Err(bad("a follow-up on a request other than an inline put or accumulate"));
        }
        match (inline, carries) {
            (true, true) if rest.len() as u64 != request.len => {
                Err(bad("inline data of another length than the header says"))
            }
            (true, false) => Err(bad("inline data on a request that carries none")),
            (false, _) if !rest.is_empty() => Err(bad("bytes after the header")),
            _ => Ok((request, rest)),
        }
    }
}

/// Sets what the target does after the inline put or accumulate whose
/// encoded request `msg` holds.
pub(crate) fn set_then(msg: &mut [u8], then: Then) {
    if let Some(byte) = msg.get_mut(4) {
        *byte = then.to_wire();
    }
}

/// A server's answer to a lock, unlock, flush or fence, into `out`: done,
/// or why the window failed (which the origin's call returns as an error).
pub(crate) fn encode_status(status: Option<&str>, out: &mut Vec<u8>) {
    out.clear();
    match status {
        None => out.push(0),
        Some(why) => {
            out.push(1);
            let mut end = why.len().min(STATUS_MAX - 1);
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&why.as_bytes()[..end]);
        }
    }
}

/// The longest status reply.
pub(crate) const STATUS_MAX: usize = 256;

/// Reads a status reply.
pub(crate) fn decode_status(bytes: &[u8]) -> Result<()> {
    match bytes.split_first() {
        Some((0, [])) => Ok(()),
        Some((1, why)) => Err(Error::Protocol(format!(
            "the window failed at its target: {}",
            String::from_utf8_lossy(why)
        ))),
        _ => Err(Error::Protocol("window reply: malformed status".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_survive_the_round_trip_and_malformed_ones_are_refused() {
        let kinds = [
            Kind::Put,
            Kind::Accumulate(OpCode::Sum),
            Kind::Accumulate(OpCode::Replace),
            Kind::Get,
            Kind::Lock(LockKind::Shared),
            Kind::Lock(LockKind::Exclusive),
            Kind::Unlock,
            Kind::Flush,
            Kind::Fence { last: false },
            Kind::Fence { last: true },
        ];
        let mut out = Vec::new();
        for kind in kinds {
            let r =
                Request { kind, inline: false, then: Then::Nothing, offset: 1 << 40, len: 12345 };
            r.encode(&mut out);
            assert_eq!(out.len(), HEADER_LEN);
            assert_eq!(Request::decode(&out).unwrap(), (r, &[][..]));
        }
        for then in [Then::Flush, Then::Unlock, Then::Nothing] {
            let put = Request { kind: Kind::Put, inline: true, then, offset: 8, len: 3 };
            put.encode(&mut out);
            out.extend_from_slice(&[7, 8, 9]);
            assert_eq!(Request::decode(&out).unwrap(), (put, &[7u8, 8, 9][..]));
        }
        let mut flushed = out.clone();
        set_then(&mut flushed, Then::Flush);
        assert_eq!(Request::decode(&flushed).unwrap().0.then, Then::Flush);

        // Truncated, a wrong version, unknown kinds and arguments, data
        // lengths that disagree, data where none belongs.
        assert!(Request::decode(&out[..HEADER_LEN - 1]).is_err());
        assert!(Request::decode(&out[..HEADER_LEN + 2]).is_err());
        for (at, value) in [(0, 1), (1, 0), (1, 8), (3, 2), (4, 3), (5, 1), (7, 1)] {
            let mut bad = out.clone();
            bad[at] = value;
            assert!(Request::decode(&bad).is_err(), "byte {at} = {value} accepted");
        }
        let mut get = Vec::new();
        Request { kind: Kind::Get, inline: true, then: Then::Nothing, offset: 0, len: 1 }
            .encode(&mut get);
        get.push(0);
        assert!(Request::decode(&get).is_err());
        // A follow-up only after an inline put or accumulate.
        for (kind, inline) in [(Kind::Get, false), (Kind::Put, false), (Kind::Flush, false)] {
            let mut r = Vec::new();
            Request { kind, inline, then: Then::Flush, offset: 0, len: 0 }.encode(&mut r);
            assert!(Request::decode(&r).is_err(), "{kind:?} with a follow-up");
        }
        let mut acc = Vec::new();
        let sum = Kind::Accumulate(OpCode::Sum);
        Request { kind: sum, inline: false, then: Then::Nothing, offset: 0, len: 1 }
            .encode(&mut acc);
        acc[2] = 200;
        assert!(Request::decode(&acc).is_err());

        encode_status(None, &mut out);
        assert_eq!(decode_status(&out), Ok(()));
        encode_status(Some(&"é".repeat(STATUS_MAX)), &mut out);
        assert!(out.len() <= STATUS_MAX);
        assert!(decode_status(&out).is_err());
        assert!(decode_status(&[]).is_err());
        assert!(decode_status(&[0, 1]).is_err());
    }
}
