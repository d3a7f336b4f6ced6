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
//!
//! Connections are closed without losing a byte when a cap on open
//! connections asks for it (`HPCOMM_TCP_MAX_CONNS`): the closing rank ends
//! each with an end marker behind its queued frames and moves it to
//! `retiring`; the peer answers with its own end marker once it has read
//! that far. A connection is dropped once both markers have passed. Frames
//! sent after that go on new connections. A set ends whole: the first end
//! marker (or the first connection of the peer's next set) retires all of
//! its stripes, so that no set ever mixes two generations.
//!
//! A rank numbers the sets of connections it sends a peer frames on (1,
//! 2, …): when it starts sending on a set it puts a sync marker with the
//! set's number on each of its connections, ahead of any frame. The peer
//! reads only the set it expects; once every connection of that set has
//! delivered its end marker, it expects the next. So nothing sent on a
//! later set overtakes what was sent on an earlier one, whichever
//! connections the two ranks choose. A rank sends on the peer's set only
//! when every stripe of it has arrived, so every set has `stripes`
//! connections. A rank that has some of the peer's stripes and none of its
//! own waits a moment for the rest ([`SET_GRACE`]) before dialing: the peer
//! opened them together, so they are on the way, and one set carrying both
//! directions lets TCP's acknowledgements ride on the replies (two sets,
//! each direction on its own, cost small messages a third of their
//! latency over loopback).

use super::conn::Conn;
use crate::LossCause;
use std::time::{Duration, Instant};

/// How long a rank holding part of a peer's set of connections waits for
/// the rest before dialing a set of its own.
pub(super) const SET_GRACE: Duration = Duration::from_millis(50);

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
    /// When the first connection of a partly arrived `accepted` set came.
    pub accepted_since: Option<Instant>,
    /// Connections being closed: read until the peer's end marker, then
    /// dropped.
    pub retiring: Vec<Conn>,
    /// The number of the last set this rank started sending on.
    pub send_set: u32,
    /// The set whose frames this rank reads now, and how many of its
    /// connections have ended.
    pub read_set: u32,
    pub read_set_ended: usize,
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
    /// Nowhere yet, but part of the peer's set is in and the rest on the
    /// way: hold the frame back for a moment.
    Wait,
}

impl Peer {
    pub fn new() -> Peer {
        Peer {
            dialed: Vec::new(),
            accepted: Vec::new(),
            accepted_stripes: 0,
            accepted_since: None,
            retiring: Vec::new(),
            send_set: 0,
            read_set: 1,
            read_set_ended: 0,
            lost: None,
            reported: false,
            last_used: 0,
        }
    }

    /// Where frames to this peer go now (`stripes` connections make a
    /// set).
    pub fn route(&self, stripes: usize) -> Route {
        if !self.dialed.is_empty() {
            Route::Dialed
        } else if self.accepted.len() == stripes {
            Route::Accepted
        } else {
            Route::Dial
        }
    }

    /// Where a new frame to this peer goes at `now`: as [`Peer::route`],
    /// but a partly arrived set of the peer's is waited for (for
    /// [`SET_GRACE`]) instead of dialed past.
    pub fn route_at(&self, stripes: usize, now: Instant) -> Route {
        match self.route(stripes) {
            Route::Dial
                if !self.accepted.is_empty()
                    && self.accepted_since.is_some_and(|t| now < t + SET_GRACE) =>
            {
                Route::Wait
            }
            r => r,
        }
    }

    /// Takes a connection the peer made for `stripe`.
    pub fn take_accepted(&mut self, conn: Conn, stripes: usize, now: Instant) {
        if self.accepted.is_empty() {
            self.accepted_since = Some(now);
        }
        self.accepted_stripes |= 1 << conn.stripe.min(63);
        self.accepted.push(conn);
        if self.accepted.len() >= stripes {
            self.accepted_since = None;
        }
    }

    /// The connections frames go on (empty before any is made), each
    /// marked with the set's number before its first frame.
    pub fn send_conns(&mut self, stripes: usize) -> &mut [Conn] {
        let set = match self.route(stripes) {
            Route::Dialed => &mut self.dialed,
            _ => &mut self.accepted,
        };
        if set.first().is_some_and(|c| !c.synced) {
            self.send_set += 1;
            for c in set.iter_mut() {
                c.sync(self.send_set);
            }
        }
        set
    }

    /// Every connection, both directions, the retiring ones first (they
    /// hold what was sent before the others).
    pub fn conns_mut(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.retiring.iter_mut().chain(self.dialed.iter_mut()).chain(self.accepted.iter_mut())
    }

    /// Every connection, both directions.
    pub fn conns(&self) -> impl Iterator<Item = &Conn> {
        self.retiring.iter().chain(self.dialed.iter()).chain(self.accepted.iter())
    }

    /// Connections open for frames (not retiring).
    pub fn open(&self) -> usize {
        self.dialed.len() + self.accepted.len()
    }

    /// Ends every open connection (behind what is queued on it) and moves
    /// it to `retiring`.
    pub fn retire_all(&mut self) {
        Self::retire(&mut self.dialed, &mut self.retiring);
        self.retire_accepted();
    }

    /// Retires each set of open connections (this rank's, the peer's) of
    /// which the peer has ended one, answering with this rank's end marker
    /// on each. A peer ends a set as a whole, and its end markers arrive
    /// one stripe at a time: the stripes still open must not stay behind as
    /// part of a set, or a later connection could join them and make a set
    /// of two generations, which the peer would never read to its end.
    pub fn retire_ended(&mut self) {
        let ended = |set: &[Conn]| set.iter().any(|c| c.got_end);
        if ended(&self.dialed) {
            Self::retire(&mut self.dialed, &mut self.retiring);
        }
        if ended(&self.accepted) {
            self.retire_accepted();
        }
    }

    /// Ends every connection of `set` and moves it to `retiring`.
    fn retire(set: &mut Vec<Conn>, retiring: &mut Vec<Conn>) {
        for mut c in set.drain(..) {
            c.end();
            retiring.push(c);
        }
    }

    /// Drops the retiring connections both sides have finished; how many.
    pub fn drop_finished(&mut self) -> usize {
        let before = self.retiring.len();
        self.retiring.retain(|c| !c.finished());
        before - self.retiring.len()
    }

    /// Drops every connection; how many there were.
    pub fn drop_conns(&mut self) -> usize {
        let n = self.dialed.len() + self.accepted.len() + self.retiring.len();
        self.dialed.clear();
        self.accepted.clear();
        self.retiring.clear();
        self.accepted_stripes = 0;
        n
    }

    /// Bytes waiting to leave for this peer.
    pub fn queued(&self) -> usize {
        self.conns().map(Conn::queued).sum()
    }
}

/// Whether a valid handshake from the peer for `stripe` is taken, given
/// the peer's state; why not otherwise (no honest rank sends it).
/// `Ok(true)`: it replaces the peer's connection for that stripe, which
/// the peer has ended (its end marker may still be on the way): the old
/// one retires, and is read to its end before the new one is read.
pub(super) fn admit(stripe: usize, peer: &Peer) -> Result<bool, &'static str> {
    if peer.lost.is_some() {
        return Err("the rank is lost");
    }
    if stripe >= 64 {
        return Err("a stripe beyond 64");
    }
    Ok(peer.accepted_stripes & (1 << stripe) != 0)
}

impl Peer {
    /// Retires the peer's set of connections: ended by the peer, or one of
    /// them replaced by a new connection of the peer's (which dials anew
    /// only once it has ended its whole set).
    pub fn retire_accepted(&mut self) {
        Self::retire(&mut self.accepted, &mut self.retiring);
        self.accepted_stripes = 0;
        self.accepted_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_connection_replaces_the_first_and_lost_ranks_are_refused() {
        let mut p = Peer::new();
        assert_eq!(p.route(1), Route::Dial);
        assert_eq!(admit(0, &p), Ok(false));
        p.accepted_stripes |= 1;
        assert_eq!(admit(0, &p), Ok(true), "a second stripe 0 replaces the first");
        assert_eq!(admit(1, &p), Ok(false));
        assert!(admit(64, &p).is_err());
        p.lost = Some(LossCause::Ended);
        assert!(admit(1, &p).is_err());
    }

    /// A connection over loopback, as accepted for `stripe`.
    fn conn(stripe: usize) -> Conn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _dialer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let stream = mio::net::TcpStream::from_std(stream);
        Conn::accepted(stream, stripe, Duration::from_secs(30)).unwrap()
    }

    #[test]
    fn a_partly_arrived_set_is_waited_for_a_moment_then_dialed_past() {
        let t0 = Instant::now();
        let mut p = Peer::new();
        assert_eq!(p.route_at(2, t0), Route::Dial, "nothing in: dial");
        p.take_accepted(conn(0), 2, t0);
        assert_eq!(p.route(2), Route::Dial);
        assert_eq!(p.route_at(2, t0), Route::Wait, "half the set in: wait");
        assert_eq!(p.route_at(2, t0 + SET_GRACE / 2), Route::Wait);
        assert_eq!(p.route_at(2, t0 + SET_GRACE), Route::Dial, "the rest never came");
        p.take_accepted(conn(1), 2, t0 + SET_GRACE / 2);
        assert_eq!(p.route_at(2, t0 + SET_GRACE / 2), Route::Accepted, "whole: send on it");
        assert_eq!(p.accepted_stripes, 0b11);
        // A set the peer ended is not waited for: its rest is not coming.
        p.accepted[1].got_end = true;
        p.retire_ended();
        assert_eq!(p.route_at(2, t0 + SET_GRACE / 2), Route::Dial);
        // One stripe: never a wait.
        let mut q = Peer::new();
        q.take_accepted(conn(0), 1, t0);
        assert_eq!(q.route_at(1, t0), Route::Accepted);
        // This rank's own set goes first.
        let mut r = Peer::new();
        r.take_accepted(conn(0), 2, t0);
        r.dialed.push(conn(0));
        assert_eq!(r.route_at(2, t0), Route::Dialed);
    }

    /// The peer ends a set one stripe at a time (its end markers arrive
    /// apart), and may dial its next set before this rank has read them
    /// all: the old set leaves whole, so that no set mixes two generations
    /// (whose sync markers and ends the peer could never match up).
    #[test]
    fn an_ended_set_retires_whole_and_never_mixes_with_the_next() {
        let t0 = Instant::now();
        let mut p = Peer::new();
        p.take_accepted(conn(0), 2, t0);
        p.take_accepted(conn(1), 2, t0);
        p.accepted[0].got_end = true;
        p.retire_ended();
        assert!(p.accepted.is_empty(), "stripe 1 stays behind");
        assert_eq!(p.retiring.len(), 2);
        assert!(p.retiring.iter().all(|c| c.sent_end), "every end answered");
        assert_eq!(p.accepted_stripes, 0);
        assert_eq!(p.route_at(2, t0), Route::Dial);

        // The next set's first stripe comes before any end marker.
        let mut q = Peer::new();
        q.take_accepted(conn(0), 2, t0);
        q.take_accepted(conn(1), 2, t0);
        assert_eq!(admit(1, &q), Ok(true));
        q.retire_accepted();
        q.take_accepted(conn(1), 2, t0);
        assert_eq!(q.accepted.len(), 1, "the old stripe 0 joined the new set");
        assert_eq!(q.route_at(2, t0), Route::Wait);
        assert_eq!(admit(0, &q), Ok(false));
        q.take_accepted(conn(0), 2, t0);
        assert_eq!(q.route_at(2, t0), Route::Accepted);
        assert_eq!(q.retiring.len(), 2);

        // This rank's own set, ended by the peer on one stripe, too.
        let mut r = Peer::new();
        r.dialed.extend([conn(0), conn(1)]);
        r.dialed[1].got_end = true;
        r.retire_ended();
        assert!(r.dialed.is_empty());
        assert_eq!(r.route(2), Route::Dial);
    }
}
