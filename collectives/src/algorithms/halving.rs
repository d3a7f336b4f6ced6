//! The pieces shared by the Rabenseifner algorithms: folding a
//! communicator onto a power of two, reduce-scatter by recursive halving,
//! and the two ways of putting the blocks together again. Commutative
//! operations only.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;
use crate::op::Operation;
use crate::util::{piece, pof2_below, split_pair};

/// A communicator folded onto `pof2` ranks: the first `2·rem` ranks pair
/// up (the even one hands its data to the odd one and sits out).
pub(crate) struct Folded {
    pub pof2: usize,
    rem: usize,
    /// This rank's number among the `pof2`, if it takes part.
    pub newrank: Option<usize>,
}

impl Folded {
    pub(crate) fn rank_of(&self, newrank: usize) -> usize {
        if newrank < self.rem {
            2 * newrank + 1
        } else {
            newrank + self.rem
        }
    }

    /// The element range of blocks `a..b`.
    pub(crate) fn blocks(&self, len: usize, a: usize, b: usize) -> std::ops::Range<usize> {
        piece(len, self.pof2, a).start..piece(len, self.pof2, b - 1).end
    }
}

/// Folds: afterwards the taking-part ranks hold the combined data of their
/// pair. Cost: `α + nβ + nγ` when `p` is not a power of two.
pub(crate) fn fold<T: Pod>(ch: &Channel, acc: &mut [T], op: &impl Operation<T>) -> Result<Folded> {
    let (n, me) = (ch.size(), ch.rank());
    let pof2 = pof2_below(n);
    let rem = n - pof2;
    let newrank = if me < 2 * rem {
        if me % 2 == 0 {
            ch.send(acc, me + 1)?;
            None
        } else {
            let mut tmp = vec![T::zeroed(); acc.len()];
            ch.recv(&mut tmp, me - 1)?;
            op.apply(acc, &tmp, false);
            Some(me / 2)
        }
    } else {
        Some(me - rem)
    };
    Ok(Folded { pof2, rem, newrank })
}

/// Gives the result back to the ranks that sat out.
pub(crate) fn unfold<T: Pod>(ch: &Channel, acc: &mut [T], f: &Folded) -> Result<()> {
    let me = ch.rank();
    if me < 2 * f.rem {
        if me % 2 == 0 {
            ch.recv(acc, me + 1)?;
        } else {
            ch.send(acc, me - 1)?;
        }
    }
    Ok(())
}

/// Reduce-scatter by recursive halving among the folded ranks: afterwards
/// rank `newrank` holds block `newrank` (of `pof2`) fully reduced.
/// Cost: `log₂ p · α + (p−1)/p · (nβ + nγ)`.
///
/// With `input`, this rank's data is there rather than in `acc` (whose
/// contents are then ignored): the first step sends from `input` and
/// receives straight into `acc`, which saves copying the vector first.
pub(crate) fn reduce_scatter<T: Pod>(
    ch: &Channel,
    acc: &mut [T],
    mut input: Option<&[T]>,
    op: &impl Operation<T>,
    f: &Folded,
    newrank: usize,
) -> Result<()> {
    let len = acc.len();
    let mut tmp = Vec::new();
    let (mut lo, mut hi) = (0, f.pof2);
    let mut mask = f.pof2 / 2;
    while mask > 0 {
        let partner = newrank ^ mask;
        let peer = f.rank_of(partner);
        let mid = lo + (hi - lo) / 2;
        let (keep, give) =
            if newrank & mask == 0 { ((lo, mid), (mid, hi)) } else { ((mid, hi), (lo, mid)) };
        let keep_range = f.blocks(len, keep.0, keep.1);
        let give_range = f.blocks(len, give.0, give.1);
        if let Some(data) = input.take() {
            let theirs = &mut acc[keep_range.clone()];
            ch.sendrecv(&data[give_range], peer, theirs, peer)?;
            op.apply(theirs, &data[keep_range], partner < newrank);
        } else {
            if tmp.is_empty() {
                tmp = vec![T::zeroed(); len.div_ceil(2)];
            }
            let incoming = &mut tmp[..keep_range.len()];
            ch.sendrecv(&acc[give_range], peer, incoming, peer)?;
            op.apply(&mut acc[keep_range], incoming, newrank < partner);
        }
        (lo, hi) = keep;
        mask >>= 1;
    }
    if let Some(data) = input {
        // One rank: nothing was exchanged.
        acc.copy_from_slice(data);
    }
    Ok(())
}

/// All-gather of the blocks by recursive doubling among the folded ranks.
/// Cost: `log₂ p · α + (p−1)/p · nβ`.
pub(crate) fn all_gather<T: Pod>(
    ch: &Channel,
    acc: &mut [T],
    f: &Folded,
    newrank: usize,
) -> Result<()> {
    let len = acc.len();
    let mut mask = 1;
    while mask < f.pof2 {
        let partner = newrank ^ mask;
        let mine = newrank & !(mask - 1);
        let theirs = partner & !(mask - 1);
        let (send, recv) =
            split_pair(acc, f.blocks(len, mine, mine + mask), f.blocks(len, theirs, theirs + mask));
        ch.sendrecv(send, f.rank_of(partner), recv, f.rank_of(partner))?;
        mask <<= 1;
    }
    Ok(())
}

/// Binomial gather of the blocks to folded rank 0. Cost:
/// `log₂ p · α + (p−1)/p · nβ`.
pub(crate) fn gather<T: Pod>(
    ch: &Channel,
    acc: &mut [T],
    f: &Folded,
    newrank: usize,
) -> Result<()> {
    let len = acc.len();
    let mut mask = 1;
    while mask < f.pof2 {
        if newrank & mask != 0 {
            ch.send(&acc[f.blocks(len, newrank, newrank + mask)], f.rank_of(newrank - mask))?;
            break;
        }
        let child = newrank + mask;
        ch.recv(&mut acc[f.blocks(len, child, child + mask)], f.rank_of(child))?;
        mask <<= 1;
    }
    Ok(())
}
