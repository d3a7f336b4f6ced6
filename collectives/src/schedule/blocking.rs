//! Runs a schedule to its end: each round's transfers posted together and
//! waited for, then its local steps.
//!
//! Rounds of one send and one receive — most rounds of most algorithms —
//! are a plain `sendrecv`, and rounds of one transfer a plain send or
//! receive, so the blocking path costs what the hand-written loops did.
//! Larger rounds post every transfer in a scope and wait for them all.

use std::ops::Range;

use bytemuck::Pod;
use hpcomm_runtime::{Error, Result};

use super::{Buf, Piece, Round, Schedule, Step};
use crate::channel::Channel;
use crate::op::Operation;

/// The operation of a schedule that combines nothing (barrier, broadcast,
/// gather, …); a schedule that does combine never meets it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoReduce;

impl<T> Operation<T> for NoReduce {
    fn apply(&self, _: &mut [T], _: &[T], _: bool) {
        debug_assert!(false, "a schedule without an operation combined pieces");
    }
}

/// Runs `s` with `input` (empty when the schedule reads none), `work` and
/// `op` for its local combinations.
pub(crate) fn run<T: Pod>(
    ch: &Channel,
    s: &Schedule,
    input: &[T],
    work: &mut [T],
    op: &impl Operation<T>,
) -> Result<()> {
    debug_assert_eq!(s.check(ch.size(), input.len(), work.len()), Ok(()), "{s:?}");
    let mut scratch = vec![T::zeroed(); s.scratch];
    let mut bufs = Bufs { input, work, scratch: &mut scratch };
    for round in s.rounds() {
        transfer(ch, &mut bufs, round)?;
        for step in round.locals {
            match step {
                Step::Reduce { into, operand, into_left } => {
                    let (operand, into) = bufs.read_write(operand, into)?;
                    op.apply(into, operand, *into_left);
                }
                Step::Copy { from, to } => {
                    let (from, to) = bufs.read_write(from, to)?;
                    to.copy_from_slice(from);
                }
                _ => return Err(broken("a transfer among the local steps")),
            }
        }
    }
    Ok(())
}

fn broken(what: &str) -> Error {
    Error::Protocol(format!("a collective schedule broke its rules: {what}"))
}

/// The three buffers a schedule names.
struct Bufs<'a, T> {
    input: &'a [T],
    work: &'a mut [T],
    scratch: &'a mut [T],
}

impl<T> Bufs<'_, T> {
    fn read(&self, p: &Piece) -> Result<&[T]> {
        let buf: &[T] = match p.buf {
            Buf::Input => self.input,
            Buf::Work => self.work,
            Buf::Scratch => self.scratch,
        };
        buf.get(p.range.clone()).ok_or_else(|| broken("a piece outside its buffer"))
    }

    fn write(&mut self, p: &Piece) -> Result<&mut [T]> {
        let buf = match p.buf {
            Buf::Input => return Err(broken("a write into the input")),
            Buf::Work => &mut *self.work,
            Buf::Scratch => &mut *self.scratch,
        };
        buf.get_mut(p.range.clone()).ok_or_else(|| broken("a piece outside its buffer"))
    }

    /// A piece to read and another, which it does not overlap, to write.
    fn read_write(&mut self, r: &Piece, w: &Piece) -> Result<(&[T], &mut [T])> {
        let Bufs { input, work, scratch } = self;
        let (read, write): (&[T], &mut [T]) = match (r.buf, w.buf) {
            (_, Buf::Input) => return Err(broken("a write into the input")),
            (Buf::Input, Buf::Work) => (input, work),
            (Buf::Input, Buf::Scratch) => (input, scratch),
            (Buf::Work, Buf::Scratch) => (work, scratch),
            (Buf::Scratch, Buf::Work) => (scratch, work),
            (Buf::Work, Buf::Work) => return split(work, &r.range, &w.range),
            (Buf::Scratch, Buf::Scratch) => return split(scratch, &r.range, &w.range),
        };
        let bad = || broken("a piece outside its buffer");
        Ok((
            read.get(r.range.clone()).ok_or_else(bad)?,
            write.get_mut(w.range.clone()).ok_or_else(bad)?,
        ))
    }
}

/// Two pieces of one buffer that do not overlap: one to read, one to write.
fn split<'a, T>(
    buf: &'a mut [T],
    r: &Range<usize>,
    w: &Range<usize>,
) -> Result<(&'a [T], &'a mut [T])> {
    let bad = || broken("overlapping or misplaced pieces");
    if r.is_empty() || w.is_empty() {
        let len = buf.len();
        if r.end > len || w.end > len || r.start > r.end || w.start > w.end {
            return Err(bad());
        }
        return Ok(if r.is_empty() {
            (&[], &mut buf[w.clone()])
        } else {
            (&buf[r.clone()], &mut [])
        });
    }
    if r.end <= w.start {
        let (lo, hi) = buf.split_at_mut(w.start);
        Ok((lo.get(r.clone()).ok_or_else(bad)?, hi.get_mut(..w.len()).ok_or_else(bad)?))
    } else if w.end <= r.start {
        let (lo, hi) = buf.split_at_mut(r.start);
        Ok((hi.get(..r.len()).ok_or_else(bad)?, lo.get_mut(w.clone()).ok_or_else(bad)?))
    } else {
        Err(bad())
    }
}

/// Posts a round's transfers and waits for them all.
fn transfer<T: Pod>(ch: &Channel, bufs: &mut Bufs<'_, T>, round: Round<'_>) -> Result<()> {
    match round.transfers {
        [] => Ok(()),
        [Step::Send { to, piece, lane }] => ch.send(bufs.read(piece)?, *to, *lane),
        [Step::Recv { from, piece, lane }] => ch.recv(bufs.write(piece)?, *from, *lane),
        [Step::Send { to, piece: out, lane: out_lane }, Step::Recv { from, piece: inc, lane: in_lane }]
        | [Step::Recv { from, piece: inc, lane: in_lane }, Step::Send { to, piece: out, lane: out_lane }] =>
        {
            let (send, recv) = bufs.read_write(out, inc)?;
            ch.sendrecv((send, *to, *out_lane), (recv, *from, *in_lane))
        }
        many => transfer_many(ch, bufs, many),
    }
}

/// A round of any shape: every receive posted, then every send, then all
/// waited for.
fn transfer_many<T: Pod>(ch: &Channel, bufs: &mut Bufs<'_, T>, steps: &[Step]) -> Result<()> {
    let Bufs { input, work, scratch } = bufs;
    let input: &[T] = input;
    let (mut recvs_w, gaps_w) = carve(work, steps, Buf::Work)?;
    let (mut recvs_s, gaps_s) = carve(scratch, steps, Buf::Scratch)?;
    let outcomes = ch.comm().scope(|s| {
        let mut reqs = Vec::with_capacity(steps.len());
        let mut expected = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            if let Step::Recv { from, piece, lane } = step {
                let pieces = if piece.buf == Buf::Work { &mut recvs_w } else { &mut recvs_s };
                let slot = pieces
                    .iter_mut()
                    .find(|(j, _)| *j == i)
                    .ok_or_else(|| broken("a lost receive"))?;
                let target = std::mem::take(&mut slot.1);
                expected.push((target.len(), *from));
                reqs.push(s.irecv(target, *from, ch.tag(*lane))?);
            }
        }
        let receives = reqs.len();
        for step in steps {
            if let Step::Send { to, piece, lane } = step {
                let data = match piece.buf {
                    _ if piece.range.is_empty() => Some(&[][..]),
                    Buf::Input => input.get(piece.range.clone()),
                    Buf::Work => within(&gaps_w, &piece.range),
                    Buf::Scratch => within(&gaps_s, &piece.range),
                };
                let data = data.ok_or_else(|| broken("a send overlapping a receive"))?;
                reqs.push(s.isend(data, *to, ch.tag(*lane))?);
            }
        }
        // Each waited for alone: a receive of the wrong length is a
        // mismatch to record, not a reason to stop waiting for the rest.
        let mut outcomes = Vec::with_capacity(receives);
        let mut failure = Ok(());
        for (i, req) in reqs.into_iter().enumerate() {
            let outcome = req.wait().map(|st| st.count);
            match (i < receives, outcome) {
                (true, outcome) => outcomes.push(outcome),
                (false, Err(e)) if failure.is_ok() => failure = Err(e),
                (false, _) => {}
            }
        }
        failure.map(|()| (outcomes, expected))
    });
    let (outcomes, expected) = outcomes?;
    for (outcome, (len, from)) in outcomes.into_iter().zip(expected) {
        ch.check(outcome, len, from)?;
    }
    Ok(())
}

/// Cuts `buf` at the receives of `steps` into it: those receives' pieces
/// (with their step's index) and the stretches between them (with their
/// offsets), which sends may read.
type Carved<'a, T> = (Vec<(usize, &'a mut [T])>, Vec<(usize, &'a [T])>);

fn carve<'a, T>(buf: &'a mut [T], steps: &[Step], which: Buf) -> Result<Carved<'a, T>> {
    let mut targets: Vec<(usize, Range<usize>)> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Step::Recv { piece, .. } if piece.buf == which => Some((i, piece.range.clone())),
            _ => None,
        })
        .collect();
    targets.sort_by_key(|(_, r)| r.start);
    let mut pieces = Vec::with_capacity(targets.len());
    let mut gaps = Vec::with_capacity(targets.len() + 1);
    let mut rest = buf;
    let mut at = 0;
    for (i, r) in targets {
        if r.start < at || r.end > at + rest.len() {
            return Err(broken("overlapping receives"));
        }
        let (gap, tail) = std::mem::take(&mut rest).split_at_mut(r.start - at);
        let (piece, tail) = tail.split_at_mut(r.len());
        gaps.push((at, &*gap));
        pieces.push((i, piece));
        rest = tail;
        at = r.end;
    }
    gaps.push((at, &*rest));
    Ok((pieces, gaps))
}

/// The piece `r` if it lies within one stretch.
fn within<'a, T>(gaps: &[(usize, &'a [T])], r: &Range<usize>) -> Option<&'a [T]> {
    gaps.iter().find_map(|&(at, gap)| {
        (r.start >= at && r.end <= at + gap.len()).then(|| &gap[r.start - at..r.end - at])
    })
}
