//! Small helpers shared by the algorithms.

use std::ops::Range;

/// The `i`-th of `parts` nearly equal pieces of `len` elements.
pub(crate) fn piece(len: usize, parts: usize, i: usize) -> Range<usize> {
    (len * i / parts)..(len * (i + 1) / parts)
}

/// The largest power of two not above `n` (`n ≥ 1`).
pub(crate) fn pof2_below(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `⌈log₂ n⌉` (0 for `n ≤ 1`): the rounds of a tree or of recursive
/// doubling.
pub(crate) fn log2_ceil(n: usize) -> usize {
    n.next_power_of_two().trailing_zeros() as usize
}

/// Whether blocks are pairwise disjoint.
pub(crate) fn disjoint(blocks: &[Range<usize>]) -> bool {
    let mut sorted: Vec<&Range<usize>> = blocks.iter().filter(|b| !b.is_empty()).collect();
    sorted.sort_by_key(|b| b.start);
    sorted.windows(2).all(|w| w[0].end <= w[1].start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_whole() {
        for len in [0, 1, 7, 64] {
            for parts in 1..9 {
                let ends: Vec<_> = (0..parts).map(|i| piece(len, parts, i)).collect();
                assert_eq!(ends[0].start, 0);
                assert_eq!(ends[parts - 1].end, len);
                assert!(ends.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
        assert_eq!(pof2_below(1), 1);
        assert_eq!(pof2_below(7), 4);
        assert_eq!(pof2_below(8), 8);
        assert_eq!([0, 1, 2, 3, 4, 5, 8, 9].map(log2_ceil), [0, 0, 1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn disjoint_blocks() {
        assert!(disjoint(&[0..2, 2..4, 5..5, 4..6]));
        assert!(!disjoint(&[0..3, 2..4]));
    }
}
