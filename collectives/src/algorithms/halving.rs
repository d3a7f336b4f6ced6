//! The pieces shared by the Rabenseifner algorithms and recursive
//! doubling: folding a communicator onto a power of two, reduce-scatter by
//! recursive halving, and the two ways of putting the blocks together
//! again. Each adds its rounds to a schedule.

use crate::schedule::{Piece, Schedule};
use crate::util::{piece, pof2_below};

/// A communicator folded onto `pof2` ranks: the first `2·rem` ranks pair
/// up (the even one hands its data to the odd one and sits out).
pub(crate) struct Folded {
    pub pof2: usize,
    rem: usize,
    me: usize,
    /// This rank's number among the `pof2`, if it takes part.
    pub newrank: Option<usize>,
}

impl Folded {
    /// Rank `me` of `n`, folded.
    pub(crate) fn new(n: usize, me: usize) -> Folded {
        let pof2 = pof2_below(n);
        let rem = n - pof2;
        let newrank = if me < 2 * rem { (me % 2 == 1).then_some(me / 2) } else { Some(me - rem) };
        Folded { pof2, rem, me, newrank }
    }

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

    /// Folds: afterwards the taking-part ranks hold the combined data of
    /// their pair. Cost: `α + nβ + nγ` when `p` is not a power of two.
    pub(crate) fn fold(&self, s: &mut Schedule, len: usize) {
        if self.me >= 2 * self.rem {
            return;
        }
        if self.newrank.is_none() {
            s.send(self.me + 1, Piece::work(0..len)).end_round();
        } else {
            s.need_scratch(len).recv(self.me - 1, Piece::scratch(0..len));
            s.reduce(Piece::work(0..len), Piece::scratch(0..len), false).end_round();
        }
    }

    /// Gives the result back to the ranks that sat out.
    pub(crate) fn unfold(&self, s: &mut Schedule, len: usize) {
        if self.me >= 2 * self.rem {
            return;
        }
        if self.newrank.is_none() {
            s.recv(self.me + 1, Piece::work(0..len)).end_round();
        } else {
            s.send(self.me - 1, Piece::work(0..len)).end_round();
        }
    }

    /// Reduce-scatter by recursive halving among the folded ranks:
    /// afterwards rank `newrank` holds block `newrank` (of `pof2`) fully
    /// reduced. Cost: `log₂ p · α + (p−1)/p · (nβ + nγ)`. Commutative
    /// operations only.
    ///
    /// With `input`, this rank's data is in the input rather than the work
    /// buffer (whose contents are then ignored): the first step sends from
    /// the input and receives straight into the work buffer, which saves
    /// copying the vector first.
    pub(crate) fn reduce_scatter(&self, s: &mut Schedule, len: usize, input: bool, newrank: usize) {
        let mut input = input;
        let (mut lo, mut hi) = (0, self.pof2);
        let mut mask = self.pof2 / 2;
        while mask > 0 {
            let partner = newrank ^ mask;
            let peer = self.rank_of(partner);
            let mid = lo + (hi - lo) / 2;
            let (keep, give) =
                if newrank & mask == 0 { ((lo, mid), (mid, hi)) } else { ((mid, hi), (lo, mid)) };
            let keep_range = self.blocks(len, keep.0, keep.1);
            let give_range = self.blocks(len, give.0, give.1);
            if input {
                input = false;
                s.send(peer, Piece::input(give_range)).recv(peer, Piece::work(keep_range.clone()));
                s.reduce(
                    Piece::work(keep_range.clone()),
                    Piece::input(keep_range),
                    partner < newrank,
                );
            } else {
                let tmp = Piece::scratch(0..keep_range.len());
                s.need_scratch(len.div_ceil(2));
                s.send(peer, Piece::work(give_range)).recv(peer, tmp.clone());
                s.reduce(Piece::work(keep_range), tmp, newrank < partner);
            }
            s.end_round();
            (lo, hi) = keep;
            mask >>= 1;
        }
        if input {
            // One rank: nothing was exchanged.
            s.copy(Piece::input(0..len), Piece::work(0..len)).end_round();
        }
    }

    /// All-gather of the blocks by recursive doubling among the folded
    /// ranks. Cost: `log₂ p · α + (p−1)/p · nβ`.
    pub(crate) fn all_gather(&self, s: &mut Schedule, len: usize, newrank: usize) {
        let mut mask = 1;
        while mask < self.pof2 {
            let partner = newrank ^ mask;
            let mine = newrank & !(mask - 1);
            let theirs = partner & !(mask - 1);
            let peer = self.rank_of(partner);
            s.send(peer, Piece::work(self.blocks(len, mine, mine + mask)));
            s.recv(peer, Piece::work(self.blocks(len, theirs, theirs + mask))).end_round();
            mask <<= 1;
        }
    }

    /// Binomial gather of the blocks to folded rank 0. Cost:
    /// `log₂ p · α + (p−1)/p · nβ`.
    pub(crate) fn gather(&self, s: &mut Schedule, len: usize, newrank: usize) {
        let mut mask = 1;
        while mask < self.pof2 {
            if newrank & mask != 0 {
                let parent = self.rank_of(newrank - mask);
                s.send(parent, Piece::work(self.blocks(len, newrank, newrank + mask))).end_round();
                break;
            }
            let child = newrank + mask;
            s.recv(self.rank_of(child), Piece::work(self.blocks(len, child, child + mask)));
            s.end_round();
            mask <<= 1;
        }
    }
}
