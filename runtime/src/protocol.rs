//! Protocol choice: one pure function of a message's length and the
//! transport's limits.

use hpcomm_transport::Capabilities;

/// How a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Data with the envelope, small enough that the runtime may keep a copy
    /// when the transport pushes back: a non-blocking send completes at once.
    Inline,
    /// Data with the envelope; under back-pressure the send waits for room
    /// with the user's buffer instead of copying it.
    Eager,
    /// Envelope first; the data moves once the receiver has matched it, so no
    /// receiver ever buffers a large unexpected message.
    Rendezvous(Rendezvous),
}

/// How rendezvous data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendezvous {
    /// The receiver reads the sender's exposed buffer (single copy), then
    /// sends `FIN`.
    Read,
    /// The receiver answers `CTS`; the sender streams `DATA` frames.
    Pipeline,
}

/// The thresholds in force: the transport's, lowered by configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest inline message.
    pub inline: usize,
    /// Largest eager message.
    pub eager: usize,
    /// Whether the transport reads peers' buffers.
    pub rma_read: bool,
    /// Largest frame payload (the `DATA` chunk).
    pub max_payload: usize,
    /// Largest single read.
    pub max_read: usize,
}

impl Limits {
    /// The transport's limits, with the eager threshold set to
    /// `eager_override` when one is configured (at most the frame payload).
    pub fn new(caps: &Capabilities, eager_override: Option<usize>) -> Limits {
        let eager = eager_override.map_or(caps.eager_limit, |e| e.min(caps.max_payload));
        Limits {
            inline: caps.inline_limit.min(eager),
            eager,
            rma_read: caps.rma_read,
            max_payload: caps.max_payload,
            max_read: caps.max_read.max(1),
        }
    }
}

/// Picks the protocol for a message of `len` bytes.
pub fn select(len: usize, limits: &Limits) -> Protocol {
    if len <= limits.inline {
        Protocol::Inline
    } else if len <= limits.eager {
        Protocol::Eager
    } else if limits.rma_read {
        Protocol::Rendezvous(Rendezvous::Read)
    } else {
        Protocol::Rendezvous(Rendezvous::Pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_table() {
        let read = Limits {
            inline: 64,
            eager: 1024,
            rma_read: true,
            max_payload: 4096,
            max_read: 1 << 20,
        };
        let pipe = Limits { rma_read: false, ..read };
        let none = Limits { inline: 0, eager: 0, ..read };
        let table = [
            (read, 0, Protocol::Inline),
            (read, 64, Protocol::Inline),
            (read, 65, Protocol::Eager),
            (read, 1024, Protocol::Eager),
            (read, 1025, Protocol::Rendezvous(Rendezvous::Read)),
            (pipe, 1025, Protocol::Rendezvous(Rendezvous::Pipeline)),
            (pipe, 1 << 30, Protocol::Rendezvous(Rendezvous::Pipeline)),
            (none, 0, Protocol::Inline),
            (none, 1, Protocol::Rendezvous(Rendezvous::Read)),
        ];
        for (limits, len, want) in table {
            assert_eq!(select(len, &limits), want, "len {len} with {limits:?}");
        }
    }

    #[test]
    fn configuration_moves_the_eager_limit_within_the_frame_size() {
        let caps = Capabilities {
            name: "t",
            max_header: 64,
            max_payload: 65536,
            inline_limit: 256,
            eager_limit: 16384,
            rma_read: true,
            max_read: 1 << 20,
            revocable: true,
            reads_from_outside: false,
            rma_write: false,
            ordered: true,
            latency_hint: Default::default(),
            spin_pause: false,
            yield_hint: Default::default(),
            bandwidth_hint: 0,
        };
        assert_eq!(Limits::new(&caps, None).eager, 16384);
        assert_eq!(Limits::new(&caps, Some(100)).eager, 100);
        assert_eq!(Limits::new(&caps, Some(100)).inline, 100);
        assert_eq!(Limits::new(&caps, Some(1 << 30)).eager, 65536);
        assert_eq!(Limits::new(&caps, Some(1 << 30)).inline, 256);
    }
}
