//! The matching engine of one communicator context: a pure state machine.
//!
//! Inputs are posted receives ([`Matcher::post`]) and arriving message
//! envelopes ([`Matcher::arrive`]); outputs are matches. No I/O, no clock and
//! no knowledge of payloads beyond an opaque `P` kept for unexpected
//! messages, so it is tested with tables alone.
//!
//! MPI's rules, and how they are kept:
//! - *Non-overtaking*: messages from one source match in the order they were
//!   sent. Every message carries a sequence number per (context, source);
//!   one that arrives early (a transport may reorder) is held until its
//!   predecessors have arrived.
//! - A message matches the *earliest posted* receive that accepts it. Each
//!   source has its own posted queue, and any-source receives have a
//!   separate one; every posted receive gets an order number, and a message
//!   takes the older of the first candidates in its source's queue and in the
//!   any-source queue.
//! - A receive matches the *earliest arrived* message it accepts. Unexpected
//!   messages wait per source, stamped with an arrival number; a specific
//!   receive looks in one queue, an any-source receive takes the oldest first
//!   candidate across sources.

use std::collections::{BTreeMap, VecDeque};

/// What a receive accepts: a source and a tag, each possibly a wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// The source rank in the communicator, or `None` for any.
    pub src: Option<u32>,
    /// The tag, or `None` for any.
    pub tag: Option<i32>,
}

/// What matching knows of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The source rank in the communicator.
    pub src: u32,
    /// The tag.
    pub tag: i32,
    /// The message length in bytes.
    pub len: usize,
}

/// The match key test: the one place that says when a receive accepts a
/// message.
#[inline]
pub fn accepts(pattern: Pattern, env: &Envelope) -> bool {
    pattern.src.is_none_or(|s| s == env.src) && pattern.tag.is_none_or(|t| t == env.tag)
}

#[derive(Debug)]
struct Posted<R> {
    tag: Option<i32>,
    order: u64,
    req: R,
}

#[derive(Debug)]
struct Unexpected<P> {
    env: Envelope,
    arrival: u64,
    payload: P,
}

#[derive(Debug)]
struct Source<P, R> {
    /// The next sequence number to match from this source.
    expected: u32,
    /// Messages that arrived before their predecessors, by sequence number.
    early: BTreeMap<u32, (Envelope, P)>,
    posted: VecDeque<Posted<R>>,
    unexpected: VecDeque<Unexpected<P>>,
}

impl<P, R> Default for Source<P, R> {
    fn default() -> Self {
        Source {
            expected: 0,
            early: BTreeMap::new(),
            posted: VecDeque::new(),
            unexpected: VecDeque::new(),
        }
    }
}

/// Matching state of one context. `P` is what is kept of an unexpected
/// message; `R` identifies a posted receive.
#[derive(Debug)]
pub struct Matcher<P, R> {
    /// The sources heard from or posted for, densely: a job of 16,384
    /// ranks costs a source's queues only for the ranks that talk to this
    /// one.
    sources: Vec<(u32, Source<P, R>)>,
    /// Where each source is in `sources`, plus one (0: nowhere yet).
    at: Vec<u32>,
    any_source: VecDeque<Posted<R>>,
    next_order: u64,
    next_arrival: u64,
    unexpected: usize,
}

impl<P, R> Default for Matcher<P, R> {
    fn default() -> Self {
        Matcher {
            sources: Vec::new(),
            at: Vec::new(),
            any_source: VecDeque::new(),
            next_order: 0,
            next_arrival: 0,
            unexpected: 0,
        }
    }
}

impl<P, R: Copy + PartialEq> Matcher<P, R> {
    /// An empty matcher.
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn source(&mut self, src: u32) -> &mut Source<P, R> {
        let i = match self.at.get(src as usize) {
            Some(&at) if at > 0 => at as usize - 1,
            _ => self.add_source(src),
        };
        &mut self.sources[i].1
    }

    #[cold]
    #[inline(never)]
    fn add_source(&mut self, src: u32) -> usize {
        if src as usize >= self.at.len() {
            self.at.resize(src as usize + 1, 0);
        }
        self.sources.push((src, Source::default()));
        self.at[src as usize] = self.sources.len() as u32;
        self.sources.len() - 1
    }

    #[inline]
    fn get(&self, src: usize) -> Option<&Source<P, R>> {
        let at = *self.at.get(src)? as usize;
        (at > 0).then(|| &self.sources[at - 1].1)
    }

    #[inline]
    fn get_mut(&mut self, src: usize) -> Option<&mut Source<P, R>> {
        let at = *self.at.get(src)? as usize;
        (at > 0).then(|| &mut self.sources[at - 1].1)
    }

    /// Number of unexpected messages waiting.
    pub fn unexpected_len(&self) -> usize {
        self.unexpected
    }

    /// Posts a receive. If an unexpected message matches, it is removed and
    /// returned and the receive is not queued; otherwise `req` is queued.
    pub fn post(&mut self, pattern: Pattern, req: R) -> Option<(Envelope, P)> {
        if self.unexpected > 0 {
            if let Some((src, i)) = self.find_unexpected(pattern) {
                let q = self.get_mut(src).expect("source found above");
                let u = q.unexpected.remove(i).expect("index found above");
                self.unexpected -= 1;
                return Some((u.env, u.payload));
            }
        }
        let order = self.next_order;
        self.next_order += 1;
        let posted = Posted { tag: pattern.tag, order, req };
        match pattern.src {
            Some(src) => self.source(src).posted.push_back(posted),
            None => self.any_source.push_back(posted),
        }
        None
    }

    /// Removes and returns the earliest unexpected message `pattern` accepts
    /// if `take` approves of it; posts nothing.
    pub fn take_unexpected(
        &mut self,
        pattern: Pattern,
        take: impl FnOnce(&P) -> bool,
    ) -> Option<(Envelope, P)> {
        let (src, i) = self.find_unexpected(pattern)?;
        let q = self.get_mut(src).expect("source found above");
        if !take(&q.unexpected[i].payload) {
            return None;
        }
        let u = q.unexpected.remove(i).expect("index found above");
        self.unexpected -= 1;
        Some((u.env, u.payload))
    }

    /// Removes and returns the earliest unexpected message `pattern` accepts
    /// with its arrival number, for a matched probe: no receive can take it
    /// until it is received through its handle or [`restored`](Self::restore).
    pub fn take_earliest(&mut self, pattern: Pattern) -> Option<(Envelope, u64, P)> {
        let (src, i) = self.find_unexpected(pattern)?;
        let q = self.get_mut(src).expect("source found above");
        let u = q.unexpected.remove(i).expect("index found above");
        self.unexpected -= 1;
        Some((u.env, u.arrival, u.payload))
    }

    /// Puts back a message taken by [`take_earliest`](Self::take_earliest)
    /// and not received: to the earliest posted receive that accepts it,
    /// returned with the payload for the caller to deliver, or else among
    /// the unexpected messages in its arrival order.
    pub fn restore(&mut self, env: Envelope, arrival: u64, payload: P) -> Option<(R, P)> {
        if let Some(req) = self.take_posted(&env) {
            return Some((req, payload));
        }
        let q = self.source(env.src);
        let at =
            q.unexpected.iter().position(|u| u.arrival > arrival).unwrap_or(q.unexpected.len());
        q.unexpected.insert(at, Unexpected { env, arrival, payload });
        self.unexpected += 1;
        None
    }

    /// The earliest unexpected message `pattern` accepts: (source, index).
    fn find_unexpected(&self, pattern: Pattern) -> Option<(usize, usize)> {
        let first = |src: usize, q: &Source<P, R>| {
            let i = q.unexpected.iter().position(|u| accepts(pattern, &u.env))?;
            Some((src, i, q.unexpected[i].arrival))
        };
        match pattern.src {
            Some(src) => first(src as usize, self.get(src as usize)?).map(|(s, i, _)| (s, i)),
            None => self
                .sources
                .iter()
                .filter_map(|(src, q)| first(*src as usize, q))
                .min_by_key(|&(_, _, arrival)| arrival)
                .map(|(s, i, _)| (s, i)),
        }
    }

    /// The earliest unexpected message `pattern` accepts, left in place.
    pub fn probe(&self, pattern: Pattern) -> Option<(&Envelope, &P)> {
        let (src, i) = self.find_unexpected(pattern)?;
        let u = &self.get(src)?.unexpected[i];
        Some((&u.env, &u.payload))
    }

    /// A message arrives with sequence number `seq` from `env.src`.
    ///
    /// Returns the posted receive it matches, if it is in order and one does;
    /// the caller then delivers it directly. Otherwise the message is kept
    /// (made by `keep`) as early or unexpected. Early messages that this one
    /// releases, and that match posted receives, are appended to `released`.
    // Always inlined: it is on the path of every message, and as a call it
    // costs its caller a materialised `keep` closure and the envelope moves.
    #[inline(always)]
    pub fn arrive(
        &mut self,
        env: Envelope,
        seq: u32,
        keep: impl FnOnce() -> P,
        released: &mut Vec<(R, Envelope, P)>,
    ) -> Option<R> {
        let q = self.source(env.src);
        if seq != q.expected {
            q.early.insert(seq, (env, keep()));
            return None;
        }
        q.expected = q.expected.wrapping_add(1);
        let matched = self.take_posted(&env);
        if matched.is_none() {
            self.push_unexpected(env, keep());
        }
        self.release_early(env.src, released);
        matched
    }

    #[inline]
    fn release_early(&mut self, src: u32, released: &mut Vec<(R, Envelope, P)>) {
        if self.get(src as usize).is_some_and(|q| !q.early.is_empty()) {
            self.release_early_from(src, released);
        }
    }

    /// Matches or stores the early messages from `src` that are now in
    /// order (out of line: only reordering transports have any).
    #[inline(never)]
    fn release_early_from(&mut self, src: u32, released: &mut Vec<(R, Envelope, P)>) {
        loop {
            let q = self.source(src);
            let Some((env, payload)) = q.early.remove(&q.expected) else {
                return;
            };
            q.expected = q.expected.wrapping_add(1);
            match self.take_posted(&env) {
                Some(req) => released.push((req, env, payload)),
                None => self.push_unexpected(env, payload),
            }
        }
    }

    fn push_unexpected(&mut self, env: Envelope, payload: P) {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.unexpected += 1;
        self.source(env.src).unexpected.push_back(Unexpected { env, arrival, payload });
    }

    /// Removes and returns the earliest posted receive that accepts `env`.
    #[inline]
    fn take_posted(&mut self, env: &Envelope) -> Option<R> {
        let tag_ok = |p: &Posted<R>| p.tag.is_none_or(|t| t == env.tag);
        let at = *self.at.get(env.src as usize)? as usize;
        let q = &mut self.sources.get_mut(at.checked_sub(1)?)?.1;
        // The common case: no any-source receive is waiting and the oldest
        // receive for this source takes the message.
        if self.any_source.is_empty() {
            return match q.posted.front() {
                Some(p) if tag_ok(p) => q.posted.pop_front().map(|p| p.req),
                _ => {
                    q.posted.iter().position(tag_ok).and_then(|i| q.posted.remove(i)).map(|p| p.req)
                }
            };
        }
        let specific = q.posted.iter().position(tag_ok);
        let any = self.any_source.iter().position(tag_ok);
        let from_specific = match (specific, any) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(i), Some(j)) => q.posted[i].order < self.any_source[j].order,
        };
        let posted = if from_specific {
            q.posted.remove(specific.expect("checked"))
        } else {
            self.any_source.remove(any.expect("checked"))
        };
        posted.map(|p| p.req)
    }

    /// Removes posted receives for which `pred(source, req)` holds (source
    /// `None` for any-source receives) and returns them in posting order.
    pub fn cancel(&mut self, mut pred: impl FnMut(Option<u32>, R) -> bool) -> Vec<R> {
        let mut out: Vec<(u64, R)> = Vec::new();
        for (src, q) in self.sources.iter_mut() {
            let src = *src;
            q.posted.retain(|p| {
                let hit = pred(Some(src), p.req);
                if hit {
                    out.push((p.order, p.req));
                }
                !hit
            });
        }
        self.any_source.retain(|p| {
            let hit = pred(None, p.req);
            if hit {
                out.push((p.order, p.req));
            }
            !hit
        });
        out.sort_by_key(|&(order, _)| order);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Whether nothing is posted, unexpected or held early: the context
    /// can be forgotten.
    pub fn is_empty(&self) -> bool {
        self.any_source.is_empty()
            && self
                .sources
                .iter()
                .all(|(_, q)| q.posted.is_empty() && q.unexpected.is_empty() && q.early.is_empty())
    }

    /// Whether any receive is posted.
    pub fn has_posted(&self) -> bool {
        !self.any_source.is_empty() || self.sources.iter().any(|(_, q)| !q.posted.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type M = Matcher<&'static str, u32>;

    fn env(src: u32, tag: i32) -> Envelope {
        Envelope { src, tag, len: 0 }
    }

    fn pat(src: Option<u32>, tag: Option<i32>) -> Pattern {
        Pattern { src, tag }
    }

    /// Feeds in-order arrivals; returns what each matched.
    fn arrive_all(
        m: &mut M,
        seqs: &mut [u32; 8],
        msgs: &[(u32, i32, &'static str)],
    ) -> Vec<Option<u32>> {
        let mut released = Vec::new();
        msgs.iter()
            .map(|&(src, tag, name)| {
                let seq = seqs[src as usize];
                seqs[src as usize] += 1;
                let r = m.arrive(env(src, tag), seq, || name, &mut released);
                assert!(released.is_empty());
                r
            })
            .collect()
    }

    /// (posted receives, arriving messages, expected match per message)
    type Case = (
        &'static [(Option<u32>, Option<i32>)],
        &'static [(u32, i32, &'static str)],
        &'static [Option<u32>],
    );

    #[test]
    fn posted_receives_match_in_posting_order() {
        let table: &[Case] = &[
            // Same pattern twice: the first posted wins.
            (
                &[(Some(1), Some(5)), (Some(1), Some(5))],
                &[(1, 5, "a"), (1, 5, "b")],
                &[Some(0), Some(1)],
            ),
            // An older any-source receive beats a newer specific one.
            (&[(None, None), (Some(2), Some(1))], &[(2, 1, "a"), (2, 1, "b")], &[Some(0), Some(1)]),
            // A newer any-source receive loses to an older specific one.
            (
                &[(Some(2), Some(1)), (None, Some(1))],
                &[(2, 1, "a"), (3, 1, "b")],
                &[Some(0), Some(1)],
            ),
            // Tag mismatch leaves the message unexpected.
            (&[(Some(0), Some(7))], &[(0, 8, "a"), (0, 7, "b")], &[None, Some(0)]),
            // Any-tag receives take whatever comes first from their source.
            (
                &[(Some(0), None), (Some(0), None)],
                &[(1, 3, "x"), (0, 9, "a"), (0, 2, "b")],
                &[None, Some(0), Some(1)],
            ),
        ];
        for (posts, msgs, want) in table {
            let mut m = M::new();
            for (i, &(src, tag)) in posts.iter().enumerate() {
                assert!(m.post(pat(src, tag), i as u32).is_none());
            }
            let got = arrive_all(&mut m, &mut [0; 8], msgs);
            assert_eq!(&got, want, "posts {posts:?} msgs {msgs:?}");
        }
    }

    #[test]
    fn receives_take_the_earliest_unexpected_message() {
        let mut m = M::new();
        let mut seqs = [0; 8];
        arrive_all(&mut m, &mut seqs, &[(2, 1, "a"), (1, 1, "b"), (2, 2, "c"), (1, 2, "d")]);
        assert_eq!(m.unexpected_len(), 4);
        // (pattern, expected message)
        let table = [
            (pat(Some(1), Some(2)), "d"),
            (pat(None, Some(1)), "a"),
            (pat(None, None), "b"),
            (pat(Some(2), None), "c"),
        ];
        for (p, want) in table {
            assert_eq!(m.probe(p).map(|(_, n)| *n), Some(want));
            assert_eq!(m.post(p, 99).map(|(_, n)| n), Some(want), "{p:?}");
        }
        assert_eq!(m.unexpected_len(), 0);
        assert!(m.post(pat(None, None), 1).is_none());
        assert!(m.has_posted());
    }

    #[test]
    fn early_messages_wait_for_their_predecessors() {
        let mut m = M::new();
        let mut released = Vec::new();
        m.post(pat(Some(0), Some(1)), 10);
        m.post(pat(Some(0), None), 11);
        // seq 2 and 1 arrive before 0.
        assert_eq!(m.arrive(env(0, 3), 2, || "third", &mut released), None);
        assert_eq!(m.arrive(env(0, 1), 1, || "second", &mut released), None);
        assert!(released.is_empty());
        assert_eq!(m.unexpected_len(), 0, "early messages are not matchable yet");
        assert!(m.probe(pat(None, None)).is_none());
        // seq 0 (tag 9) matches the any-tag receive 11, and releases 1 and 2:
        // "second" (tag 1) matches 10, "third" stays unexpected.
        assert_eq!(m.arrive(env(0, 9), 0, || "first", &mut released), Some(11));
        assert_eq!(released, vec![(10, env(0, 1), "second")]);
        assert_eq!(m.probe(pat(None, None)).map(|(e, n)| (e.tag, *n)), Some((3, "third")));
    }

    #[test]
    fn cancel_removes_posted_receives_in_order() {
        let mut m = M::new();
        m.post(pat(Some(1), None), 1);
        m.post(pat(None, None), 2);
        m.post(pat(Some(2), None), 3);
        m.post(pat(Some(1), Some(4)), 4);
        let gone = m.cancel(|src, _| src.is_none() || src == Some(1));
        assert_eq!(gone, vec![1, 2, 4]);
        let mut released = Vec::new();
        assert_eq!(m.arrive(env(2, 0), 0, || "x", &mut released), Some(3));
        assert!(!m.has_posted());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut m = M::new();
        let mut released = Vec::new();
        m.source(0).expected = u32::MAX;
        assert_eq!(m.arrive(env(0, 0), 0, || "after", &mut released), None);
        assert_eq!(m.arrive(env(0, 0), u32::MAX, || "before", &mut released), None);
        assert_eq!(m.post(pat(Some(0), None), 1).map(|(_, n)| n), Some("before"));
        assert_eq!(m.post(pat(Some(0), None), 2).map(|(_, n)| n), Some("after"));
    }

    #[test]
    fn a_matched_probe_hides_its_message_until_restored_in_arrival_order() {
        let mut m = M::new();
        let mut seqs = [0; 8];
        arrive_all(&mut m, &mut seqs, &[(0, 1, "a"), (1, 1, "b"), (0, 1, "c")]);
        // Any source: the earliest arrival, taken out of every receive's reach.
        let (e, arrival, name) = m.take_earliest(pat(None, Some(1))).expect("a");
        assert_eq!((e.src, name), (0, "a"));
        assert_eq!(m.probe(pat(Some(0), None)).map(|(_, n)| *n), Some("c"));
        assert_eq!(m.unexpected_len(), 2);
        // Put back: ahead of the later "c" again, and found first.
        assert_eq!(m.restore(e, arrival, name), None);
        assert_eq!(m.unexpected_len(), 3);
        assert_eq!(m.post(pat(None, None), 1).map(|(_, n)| n), Some("a"));
        assert_eq!(m.post(pat(None, None), 2).map(|(_, n)| n), Some("b"));
        assert_eq!(m.post(pat(None, None), 3).map(|(_, n)| n), Some("c"));
    }

    #[test]
    fn a_restored_message_goes_to_a_receive_posted_meanwhile() {
        let mut m = M::new();
        let mut seqs = [0; 8];
        arrive_all(&mut m, &mut seqs, &[(2, 5, "x")]);
        let (e, arrival, name) = m.take_earliest(pat(Some(2), Some(5))).expect("x");
        assert_eq!(m.post(pat(Some(3), None), 7), None);
        assert_eq!(m.post(pat(Some(2), None), 8), None);
        assert_eq!(m.restore(e, arrival, name), Some((8, "x")));
        assert_eq!(m.unexpected_len(), 0);
        assert!(m.take_earliest(pat(None, None)).is_none());
    }
}
