//! The connections to one peer and how they come about: the rules of the
//! lazy wire-up, as pure functions of a peer's state, tested alone.
//!
//! A peer starts with no connection. A rank that sends to a peer sends on
//! the connections it made itself (`dialed`) if it has them, else on those
//! the peer made (`accepted`), and dials only when it has neither. Frames
//! follow the handshake at once, without waiting for an answer, so the
//! first message costs no extra round trip and what a rank sent before it
//! ended is in the peer's socket even if the peer never got to accept.
//!
//! Two ranks that dial each other at once each keep sending on their own
//! connections and read from both: every rank decides alone and the same
//! way whatever the timing, and frames never change connection, so the
//! order of each direction holds. The cost is a second set of sockets for
//! the pairs that raced.

use super::conn::Conn;
use crate::LossCause;

/// One peer's connections.
#[derive(Debug)]
pub(super) struct Peer {
    /// This rank's own connections to the peer, one per stripe (empty
    /// until it sends first).
    pub dialed: Vec<Conn>,
    /// The peer's connections to this rank, in the order they arrived.
    pub accepted: Vec<Conn>,
    /// The stripes of `accepted`, as bits.
    pub accepted_stripes: u64,
    /// The peer is lost, and how.
    pub lost: Option<LossCause>,
    /// Its loss has been reported to the runtime.
    pub reported: bool,
    /// When frames last went to or came from this peer (a poll count).
    pub last_used: u64,
}

/// Where a frame to a peer goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// On this rank's own connections.
    Dialed,
    /// On the connections the peer made.
    Accepted,
    /// Nowhere yet: dial first.
    Dial,
}

impl Peer {
    pub fn new() -> Peer {
        Peer {
            dialed: Vec::new(),
            accepted: Vec::new(),
            accepted_stripes: 0,
            lost: None,
            reported: false,
            last_used: 0,
        }
    }

    /// Where frames to this peer go now.
    pub fn route(&self) -> Route {
        if !self.dialed.is_empty() {
            Route::Dialed
        } else if !self.accepted.is_empty() {
            Route::Accepted
        } else {
            Route::Dial
        }
    }

    /// The connections frames go on (empty before any is made).
    pub fn send_conns(&mut self) -> &mut [Conn] {
        match self.route() {
            Route::Dialed => &mut self.dialed,
            _ => &mut self.accepted,
        }
    }

    /// Every connection, both directions.
    pub fn conns_mut(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.dialed.iter_mut().chain(self.accepted.iter_mut())
    }

    /// Every connection, both directions.
    pub fn conns(&self) -> impl Iterator<Item = &Conn> {
        self.dialed.iter().chain(self.accepted.iter())
    }

    /// Drops every connection; how many there were.
    pub fn drop_conns(&mut self) -> usize {
        let n = self.dialed.len() + self.accepted.len();
        self.dialed.clear();
        self.accepted.clear();
        n
    }

    /// Bytes waiting to leave for this peer.
    pub fn queued(&self) -> usize {
        self.conns().map(Conn::queued).sum()
    }
}

/// Whether a valid handshake from the peer for `stripe` is taken, given
/// the peer's state; why not otherwise (no honest rank sends it).
pub(super) fn admit(stripe: usize, peer: &Peer) -> Result<(), &'static str> {
    if peer.lost.is_some() {
        return Err("the rank is lost");
    }
    if stripe >= 64 || peer.accepted_stripes & (1 << stripe) != 0 {
        return Err("a second connection for the same stripe");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_taken_once_and_never_from_a_lost_rank() {
        let mut p = Peer::new();
        assert_eq!(p.route(), Route::Dial);
        assert_eq!(admit(0, &p), Ok(()));
        p.accepted_stripes |= 1;
        assert!(admit(0, &p).is_err(), "a second stripe 0");
        assert_eq!(admit(1, &p), Ok(()));
        assert!(admit(64, &p).is_err());
        p.lost = Some(LossCause::Ended);
        assert!(admit(1, &p).is_err());
    }
}
