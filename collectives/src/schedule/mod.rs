//! Schedules: a collective algorithm written down as data, so that one
//! description runs blocking, non-blocking and (kept) persistent.
//!
//! An algorithm file builds a [`Schedule`] for one rank: a list of
//! *rounds*, each a set of sends and receives posted together, followed by
//! local steps (combine one piece into another, copy one) that run once
//! every transfer of the round has completed. Pieces are element ranges
//! of three buffers: the caller's input (read only), the work buffer (the
//! caller's output, where the result is built) and a scratch buffer the
//! executor allocates. This is the shape of MPICH's transport-independent
//! schedules and of libNBC's: the algorithm decides *what* moves, the
//! executor decides *how* to wait.
//!
//! - [`blocking::run`] posts a round, waits for it and applies its local
//!   steps, on the collective's [`Channel`](crate::channel::Channel); a
//!   round of one send and one receive is a plain `sendrecv`.
//! - [`task::ScheduleTask`] runs the same rounds as a progress-engine
//!   task: it posts a round, returns, and is polled again until the round
//!   is done — so a non-blocking collective advances whenever its rank
//!   communicates.
//!
//! [`Schedule::check`] states the rules every schedule keeps (pieces
//! inside their buffers, the input never written, nothing in a round both
//! sent and received, no two receives of a round into the same element),
//! which the executors rely on; every algorithm's schedules are checked,
//! and run against each other on all ranks at once by the simulator in
//! the tests, for every communicator size up to 33.

use std::ops::Range;

pub(crate) mod blocking;
#[cfg(test)]
mod simulate;
pub(crate) mod task;

/// The lanes of a collective: tags `base..base + LANES`.
pub(crate) const LANES: u16 = 64;

/// A buffer a schedule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Buf {
    /// The caller's input: read only.
    Input,
    /// The work buffer: the caller's output.
    Work,
    /// The executor's scratch buffer, [`Schedule::scratch`] elements.
    Scratch,
}

/// A piece of a buffer, in elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub buf: Buf,
    pub range: Range<usize>,
}

impl Piece {
    pub(crate) fn input(range: Range<usize>) -> Piece {
        Piece { buf: Buf::Input, range }
    }
    pub(crate) fn work(range: Range<usize>) -> Piece {
        Piece { buf: Buf::Work, range }
    }
    pub(crate) fn scratch(range: Range<usize>) -> Piece {
        Piece { buf: Buf::Scratch, range }
    }
    pub(crate) fn len(&self) -> usize {
        self.range.len()
    }
    fn overlaps(&self, other: &Piece) -> bool {
        self.buf == other.buf
            && !self.range.is_empty()
            && !other.range.is_empty()
            && self.range.start < other.range.end
            && other.range.start < self.range.end
    }
}

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send a piece to a rank, on a lane (an offset of the collective's
    /// tag, for algorithms that send a rank several messages that must not
    /// be taken for each other).
    Send { to: usize, piece: Piece, lane: u16 },
    /// Receive exactly a piece's length from a rank, on a lane.
    Recv { from: usize, piece: Piece, lane: u16 },
    /// `into = into ∘ operand` when `into_left`, else `operand ∘ into`.
    Reduce { into: Piece, operand: Piece, into_left: bool },
    /// Copy one piece onto another of the same length.
    Copy { from: Piece, to: Piece },
    /// The end of a round.
    End,
}

/// A rank's part of a collective algorithm; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Schedule {
    steps: Vec<Step>,
    /// Elements of scratch space the schedule uses.
    pub scratch: usize,
    /// Elements of the work buffer the schedule names (set by
    /// [`Schedule::build`]): a buffer of the executor's own need be no
    /// longer — none at all for a leaf of a reduction tree.
    pub work: usize,
    /// Whether a round is open (has steps after the last `End`).
    open: bool,
}

/// One round of a schedule, as the executors see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Round<'a> {
    /// Its sends and receives, in the order the algorithm gave them.
    pub transfers: &'a [Step],
    /// Its local steps, applied in order after every transfer completed.
    pub locals: &'a [Step],
}

impl<'a> Round<'a> {
    fn of(steps: &'a [Step]) -> Round<'a> {
        let split = steps
            .iter()
            .position(|s| matches!(s, Step::Reduce { .. } | Step::Copy { .. }))
            .unwrap_or(steps.len());
        Round { transfers: &steps[..split], locals: &steps[split..] }
    }
}

impl Schedule {
    /// An empty schedule.
    #[cfg(test)]
    pub(crate) fn new() -> Schedule {
        Schedule::default()
    }

    /// An empty schedule with room for `steps` steps.
    pub(crate) fn with_capacity(steps: usize) -> Schedule {
        Schedule { steps: Vec::with_capacity(steps), ..Schedule::default() }
    }

    /// Adds a send to the current round; transfers added after a local
    /// step open a new round.
    pub(crate) fn send(&mut self, to: usize, piece: Piece) -> &mut Self {
        self.send_on(to, piece, 0)
    }

    /// Adds a receive to the current round.
    pub(crate) fn recv(&mut self, from: usize, piece: Piece) -> &mut Self {
        self.recv_on(from, piece, 0)
    }

    /// Adds a send on a lane (below [`LANES`]).
    pub(crate) fn send_on(&mut self, to: usize, piece: Piece, lane: u16) -> &mut Self {
        self.transfer(Step::Send { to, piece, lane })
    }

    /// Adds a receive on a lane (below [`LANES`]).
    pub(crate) fn recv_on(&mut self, from: usize, piece: Piece, lane: u16) -> &mut Self {
        self.transfer(Step::Recv { from, piece, lane })
    }

    fn transfer(&mut self, step: Step) -> &mut Self {
        if matches!(self.steps.last(), Some(Step::Reduce { .. } | Step::Copy { .. })) {
            self.end_round();
        }
        self.steps.push(step);
        self.open = true;
        self
    }

    /// Adds a local combination, run after the round's transfers.
    pub(crate) fn reduce(&mut self, into: Piece, operand: Piece, into_left: bool) -> &mut Self {
        self.steps.push(Step::Reduce { into, operand, into_left });
        self.open = true;
        self
    }

    /// Adds a local copy, run after the round's transfers.
    pub(crate) fn copy(&mut self, from: Piece, to: Piece) -> &mut Self {
        self.steps.push(Step::Copy { from, to });
        self.open = true;
        self
    }

    /// Ends the current round (nothing if none is open).
    pub(crate) fn end_round(&mut self) -> &mut Self {
        if self.open {
            self.steps.push(Step::End);
            self.open = false;
        }
        self
    }

    /// Uses at least `len` elements of scratch space.
    pub(crate) fn need_scratch(&mut self, len: usize) -> &mut Self {
        self.scratch = self.scratch.max(len);
        self
    }

    /// Appends the rounds of `part`, a schedule among a subset of the
    /// ranks, after this one's: its rank `i` is rank `ranks[i]` here. The
    /// two never share a round, so messages of one part cannot be taken for
    /// the other's (between two ranks they match in order).
    pub(crate) fn append(&mut self, part: Schedule, ranks: &[usize]) -> &mut Self {
        self.end_round();
        self.scratch = self.scratch.max(part.scratch);
        self.steps.extend(part.steps.into_iter().map(|step| match step {
            Step::Send { to, piece, lane } => Step::Send { to: ranks[to], piece, lane },
            Step::Recv { from, piece, lane } => Step::Recv { from: ranks[from], piece, lane },
            other => other,
        }));
        self.open = !matches!(self.steps.last(), None | Some(Step::End));
        self.end_round()
    }

    /// The finished schedule (its last round closed).
    pub(crate) fn build(mut self) -> Schedule {
        self.end_round();
        self.work = self
            .steps
            .iter()
            .flat_map(|s| match s {
                Step::Send { piece, .. } | Step::Recv { piece, .. } => [Some(piece), None],
                Step::Reduce { into, operand, .. } => [Some(into), Some(operand)],
                Step::Copy { from, to } => [Some(from), Some(to)],
                Step::End => [None, None],
            })
            .flatten()
            .filter(|p| p.buf == Buf::Work)
            .map(|p| p.range.end)
            .max()
            .unwrap_or(0);
        self
    }

    /// The rounds, in order.
    pub(crate) fn rounds(&self) -> impl Iterator<Item = Round<'_>> {
        self.steps.split(|s| *s == Step::End).filter(|r| !r.is_empty()).map(Round::of)
    }

    /// The rounds as ranges of steps, for an executor that keeps its place
    /// between calls.
    pub(crate) fn round_ranges(&self) -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        for (i, step) in self.steps.iter().enumerate() {
            if *step == Step::End {
                if i > start {
                    ranges.push(start..i);
                }
                start = i + 1;
            }
        }
        if start < self.steps.len() {
            ranges.push(start..self.steps.len());
        }
        ranges
    }

    /// Checks the rules of the module documentation for a rank of `size`
    /// with buffers of `input` and `work` elements; the first broken one.
    pub(crate) fn check(&self, size: usize, input: usize, work: usize) -> Result<(), String> {
        let fits = |p: &Piece| {
            let len = match p.buf {
                Buf::Input => input,
                Buf::Work => work,
                Buf::Scratch => self.scratch,
            };
            if p.range.start <= p.range.end && p.range.end <= len {
                Ok(())
            } else {
                Err(format!("{p:?} lies outside its buffer of {len} elements"))
            }
        };
        let writable = |p: &Piece| match p.buf {
            Buf::Input => Err(format!("{p:?} writes the input")),
            _ => fits(p),
        };
        for (i, round) in self.rounds().enumerate() {
            let mut written: Vec<&Piece> = Vec::new();
            let mut read: Vec<&Piece> = Vec::new();
            for step in round.transfers {
                match step {
                    Step::Send { lane, .. } | Step::Recv { lane, .. } if *lane >= LANES => {
                        return Err(format!("round {i}: {step:?} is on no lane"));
                    }
                    Step::Send { to, piece, .. } if *to < size => {
                        fits(piece)?;
                        read.push(piece);
                    }
                    Step::Recv { from, piece, .. } if *from < size => {
                        writable(piece)?;
                        written.push(piece);
                    }
                    other => return Err(format!("round {i}: {other:?} names no rank of {size}")),
                }
            }
            for (j, w) in written.iter().enumerate() {
                if let Some(o) = written[j + 1..].iter().chain(&read).find(|o| w.overlaps(o)) {
                    return Err(format!("round {i}: the receive into {w:?} overlaps {o:?}"));
                }
            }
            for step in round.locals {
                match step {
                    Step::Reduce { into, operand, .. } | Step::Copy { from: operand, to: into } => {
                        writable(into)?;
                        fits(operand)?;
                        if into.len() != operand.len() || into.overlaps(operand) {
                            return Err(format!(
                                "round {i}: {step:?} mixes unequal or overlapping pieces"
                            ));
                        }
                    }
                    other => return Err(format!("round {i}: {other:?} among the local steps")),
                }
            }
        }
        Ok(())
    }

    /// The number of rounds.
    #[cfg(test)]
    pub(crate) fn round_count(&self) -> usize {
        self.rounds().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_at_ends_and_before_transfers_after_locals() {
        let mut s = Schedule::new();
        s.send(1, Piece::work(0..4)).recv(1, Piece::scratch(0..4));
        s.reduce(Piece::work(0..4), Piece::scratch(0..4), true);
        // A transfer after a local step starts the next round by itself.
        s.send(1, Piece::work(0..4));
        s.end_round().end_round();
        s.copy(Piece::input(0..2), Piece::work(0..2));
        let s = s.need_scratch(4).clone().build();
        let rounds: Vec<_> = s.rounds().map(|r| (r.transfers.len(), r.locals.len())).collect();
        assert_eq!(rounds, [(2, 1), (1, 0), (0, 1)]);
        assert_eq!(s.check(2, 2, 4), Ok(()));
    }

    #[test]
    fn check_names_each_broken_rule() {
        let broken = |build: fn(&mut Schedule)| {
            let mut s = Schedule::new();
            s.need_scratch(4);
            build(&mut s);
            s.build().check(2, 4, 4).unwrap_err()
        };
        assert!(broken(|s| {
            s.send(1, Piece::work(2..6));
        })
        .contains("outside"));
        assert!(broken(|s| {
            s.recv(1, Piece::input(0..1));
        })
        .contains("writes the input"));
        assert!(broken(|s| {
            s.send(2, Piece::work(0..1));
        })
        .contains("names no rank"));
        assert!(broken(|s| {
            s.send(1, Piece::work(0..2)).recv(1, Piece::work(1..3));
        })
        .contains("overlaps"));
        assert!(broken(|s| {
            s.recv(0, Piece::scratch(0..2)).recv(1, Piece::scratch(1..2));
        })
        .contains("overlaps"));
        assert!(broken(|s| {
            s.reduce(Piece::work(0..2), Piece::scratch(0..3), false);
        })
        .contains("unequal"));
        // Two sends of one piece, and a receive beside them, are fine.
        let mut s = Schedule::new();
        s.send(0, Piece::work(0..2)).send(1, Piece::work(0..2)).recv(1, Piece::work(2..4));
        assert_eq!(s.clone().build().check(2, 0, 4), Ok(()));
    }
}
