//! The wire format: every frame header the runtime sends, in one place.
//!
//! All integers are little-endian. Byte 0 is the format version, byte 1 the
//! kind, byte 2 flags (`RTS` only: bit 0 set when the receiver may read the
//! data directly), byte 3 reserved (zero). `docs/protocol.md` draws the layouts
//! and walks through the exchanges.
//!
//! | kind        | bytes | fields after the first 4                              |
//! |-------------|-------|-------------------------------------------------------|
//! | `EAGER`     | 24    | ctx u32, src u32, tag i32, seq u32, reserved u32      |
//! | `EAGER_SYNC`| 32    | as `EAGER`, then sender request u64                   |
//! | `RTS`       | 56    | as `EAGER`, then len u64, sender request u64, key addr u64, key u64 |
//! | `ACK`       | 16    | reserved u32, sender request u64                      |
//! | `FIN`       | 16    | reserved u32, sender request u64                      |
//! | `CTS`       | 24    | reserved u32, sender request u64, receiver request u64 |
//! | `DATA`      | 24    | reserved u32, receiver request u64, offset u64        |
//!
//! An eager frame's payload is the message; a `DATA` frame's payload is the
//! part of the message at `offset`; the others carry none.

use hpcomm_transport::RemoteKey;

use crate::types::ContextId;

/// The format version this build speaks.
pub const VERSION: u8 = 1;

/// Longest header of any kind.
pub const MAX_HEADER: usize = 56;

const EAGER: u8 = 1;
const EAGER_SYNC: u8 = 2;
const RTS: u8 = 3;
const ACK: u8 = 4;
const FIN: u8 = 5;
const CTS: u8 = 6;
const DATA: u8 = 7;

/// What a message header says about its message, for matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// The communicator context.
    pub ctx: ContextId,
    /// The sender's rank in that communicator.
    pub src: u32,
    /// The tag.
    pub tag: i32,
    /// The sender's sequence number for (context, sender → receiver).
    pub seq: u32,
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// A whole message; with `sync`, the sender's request awaits an `Ack`.
    Eager {
        /// The envelope.
        msg: MessageHeader,
        /// The sender's request, for a synchronous send.
        sync: Option<u64>,
    },
    /// Request to send `len` bytes: with `read`, the receiver reads them at
    /// `key` and answers `Fin`; without, it answers `Cts`.
    Rts {
        /// The envelope.
        msg: MessageHeader,
        /// Whether the data is exposed for reading at `key`.
        read: bool,
        /// Message length.
        len: u64,
        /// The sender's request.
        sreq: u64,
        /// Where the receiver may read the data.
        key: RemoteKey,
    },
    /// A synchronous eager message was matched.
    Ack {
        /// The sender's request.
        sreq: u64,
    },
    /// The receiver is done with a rendezvous (read, or refused by truncation).
    Fin {
        /// The sender's request.
        sreq: u64,
    },
    /// Clear to send a rendezvous message in `Data` frames.
    Cts {
        /// The sender's request.
        sreq: u64,
        /// The receiver's request, to name in the `Data` frames.
        rreq: u64,
    },
    /// Part of a rendezvous message.
    Data {
        /// The receiver's request.
        rreq: u64,
        /// Where the payload goes in the message.
        offset: u64,
    },
}

/// A header buffer large enough for any kind.
pub type HeaderBuf = [u8; MAX_HEADER];

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("length checked"))
}

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("length checked"))
}

fn put_message(b: &mut [u8], kind: u8, m: &MessageHeader) {
    b[0] = VERSION;
    b[1] = kind;
    b[2] = 0;
    b[3] = 0;
    put32(b, 4, m.ctx.0);
    put32(b, 8, m.src);
    put32(b, 12, m.tag as u32);
    put32(b, 16, m.seq);
    put32(b, 20, 0);
}

fn put_control(b: &mut [u8], kind: u8) {
    b[0] = VERSION;
    b[1] = kind;
    b[2..8].fill(0);
}

impl Header {
    /// Writes the header into `buf` and returns its length.
    pub fn encode(&self, buf: &mut HeaderBuf) -> usize {
        match *self {
            Header::Eager { msg, sync: None } => {
                put_message(buf, EAGER, &msg);
                24
            }
            Header::Eager { msg, sync: Some(sreq) } => {
                put_message(buf, EAGER_SYNC, &msg);
                put64(buf, 24, sreq);
                32
            }
            Header::Rts { msg, read, len, sreq, key } => {
                put_message(buf, RTS, &msg);
                buf[2] = u8::from(read);
                put64(buf, 24, len);
                put64(buf, 32, sreq);
                put64(buf, 40, key.addr);
                put64(buf, 48, key.key);
                56
            }
            Header::Ack { sreq } => {
                put_control(buf, ACK);
                put64(buf, 8, sreq);
                16
            }
            Header::Fin { sreq } => {
                put_control(buf, FIN);
                put64(buf, 8, sreq);
                16
            }
            Header::Cts { sreq, rreq } => {
                put_control(buf, CTS);
                put64(buf, 8, sreq);
                put64(buf, 16, rreq);
                24
            }
            Header::Data { rreq, offset } => {
                put_control(buf, DATA);
                put64(buf, 8, rreq);
                put64(buf, 16, offset);
                24
            }
        }
    }

    /// Reads a header; explains what is wrong with one it cannot read.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() < 2 {
            return Err(format!("a {}-byte frame header is too short", b.len()));
        }
        if b[0] != VERSION {
            return Err(format!(
                "wire format version {} received, this build speaks {VERSION}",
                b[0]
            ));
        }
        let need = match b[1] {
            EAGER => 24,
            EAGER_SYNC => 32,
            RTS => 56,
            ACK | FIN => 16,
            CTS | DATA => 24,
            kind => return Err(format!("unknown frame kind {kind}")),
        };
        if b.len() != need {
            return Err(format!(
                "frame kind {} has {} header bytes, expected {need}",
                b[1],
                b.len()
            ));
        }
        let msg = || MessageHeader {
            ctx: ContextId(get32(b, 4)),
            src: get32(b, 8),
            tag: get32(b, 12) as i32,
            seq: get32(b, 16),
        };
        Ok(match b[1] {
            EAGER => Header::Eager { msg: msg(), sync: None },
            EAGER_SYNC => Header::Eager { msg: msg(), sync: Some(get64(b, 24)) },
            RTS => Header::Rts {
                msg: msg(),
                read: b[2] & 1 != 0,
                len: get64(b, 24),
                sreq: get64(b, 32),
                key: RemoteKey { addr: get64(b, 40), key: get64(b, 48) },
            },
            ACK => Header::Ack { sreq: get64(b, 8) },
            FIN => Header::Fin { sreq: get64(b, 8) },
            CTS => Header::Cts { sreq: get64(b, 8), rreq: get64(b, 16) },
            _ => Header::Data { rreq: get64(b, 8), offset: get64(b, 16) },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> MessageHeader {
        MessageHeader { ctx: ContextId(6), src: 3, tag: i32::MAX, seq: u32::MAX - 1 }
    }

    #[test]
    fn every_kind_round_trips() {
        let cases = [
            Header::Eager { msg: msg(), sync: None },
            Header::Eager { msg: msg(), sync: Some(u64::MAX) },
            Header::Rts {
                msg: msg(),
                read: true,
                len: 1 << 40,
                sreq: 9,
                key: RemoteKey { addr: 1, key: 2 },
            },
            Header::Rts { msg: msg(), read: false, len: 5, sreq: 9, key: RemoteKey::default() },
            Header::Ack { sreq: 5 },
            Header::Fin { sreq: 6 },
            Header::Cts { sreq: 7, rreq: 8 },
            Header::Data { rreq: 10, offset: 1 << 33 },
        ];
        for h in cases {
            let mut buf = [0u8; MAX_HEADER];
            let n = h.encode(&mut buf);
            assert_eq!(Header::decode(&buf[..n]), Ok(h));
        }
    }

    #[test]
    fn bad_headers_are_explained() {
        let mut buf = [0u8; MAX_HEADER];
        let n = Header::Ack { sreq: 1 }.encode(&mut buf);
        assert!(Header::decode(&buf[..1]).unwrap_err().contains("too short"));
        assert!(Header::decode(&buf[..n - 1]).unwrap_err().contains("expected 16"));
        buf[0] = 99;
        assert!(Header::decode(&buf[..n]).unwrap_err().contains("version 99"));
        buf[0] = VERSION;
        buf[1] = 200;
        assert!(Header::decode(&buf[..n]).unwrap_err().contains("unknown frame kind"));
    }
}
