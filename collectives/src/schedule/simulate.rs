//! Runs the schedules of every rank of a communicator against each other
//! in memory, without a transport: the tests' check that an algorithm's
//! rounds fit together (every receive meets a send of its length, in MPI's
//! order), finish without a deadlock, and compute what they should.
//!
//! Transfers are strictly synchronous here — a send completes only when
//! its receive is posted — so a schedule that finishes here finishes under
//! any protocol, eager or rendezvous.

use std::collections::{HashMap, VecDeque};

use bytemuck::Pod;

use super::{Buf, Piece, Schedule, Step};
use crate::op::Operation;

/// One rank's buffers.
pub(crate) struct Rank<T> {
    pub input: Vec<T>,
    pub work: Vec<T>,
    scratch: Vec<T>,
}

impl<T: Pod> Rank<T> {
    pub(crate) fn new(input: Vec<T>, work: Vec<T>) -> Rank<T> {
        Rank { input, work, scratch: Vec::new() }
    }

    fn buf(&mut self, b: Buf) -> &mut Vec<T> {
        match b {
            Buf::Input => &mut self.input,
            Buf::Work => &mut self.work,
            Buf::Scratch => &mut self.scratch,
        }
    }

    fn read(&mut self, p: &Piece) -> Vec<T> {
        self.buf(p.buf)[p.range.clone()].to_vec()
    }
}

/// Runs `schedules[r]` on `ranks[r]` for every rank; an error names a
/// deadlock or a transfer whose lengths disagree.
pub(crate) fn run<T: Pod>(
    schedules: &[Schedule],
    ranks: &mut [Rank<T>],
    op: &impl Operation<T>,
) -> Result<(), String> {
    let n = ranks.len();
    for (r, (s, rank)) in schedules.iter().zip(ranks.iter_mut()).enumerate() {
        s.check(n, rank.input.len(), rank.work.len()).map_err(|e| format!("rank {r}: {e}"))?;
        rank.scratch = vec![T::zeroed(); s.scratch];
    }
    let rounds: Vec<Vec<_>> = schedules.iter().map(|s| s.rounds().collect()).collect();
    let mut at = vec![0usize; n];
    // Transfers of each rank's current round not yet matched.
    let mut open = vec![0usize; n];
    let mut posted = vec![false; n];
    // Sends from s to d on a lane waiting for their receive, and receives
    // at d from s on a lane waiting for their send; matched in order.
    let mut sends: HashMap<(usize, usize, u16), VecDeque<Vec<T>>> = HashMap::new();
    let mut recvs: HashMap<(usize, usize, u16), VecDeque<Piece>> = HashMap::new();
    loop {
        let mut moved = false;
        for r in 0..n {
            let Some(round) = rounds[r].get(at[r]) else { continue };
            if !posted[r] {
                for step in round.transfers {
                    match step {
                        Step::Send { to, piece, lane } => {
                            let data = ranks[r].read(piece);
                            sends.entry((r, *to, *lane)).or_default().push_back(data);
                        }
                        Step::Recv { from, piece, lane } => {
                            recvs.entry((*from, r, *lane)).or_default().push_back(piece.clone())
                        }
                        _ => unreachable!("checked"),
                    }
                }
                open[r] = round.transfers.len();
                posted[r] = true;
                moved = true;
            }
        }
        // Match what can be matched, in order per pair and lane.
        for (key, waiting) in recvs.iter_mut() {
            let Some(offered) = sends.get_mut(key) else { continue };
            let &(src, dst, _) = key;
            while !offered.is_empty() && !waiting.is_empty() {
                let data = offered.pop_front().expect("non-empty");
                let piece = waiting.pop_front().expect("non-empty");
                if data.len() != piece.len() {
                    return Err(format!(
                        "rank {src} sent {} elements to rank {dst}, which expected {}",
                        data.len(),
                        piece.len()
                    ));
                }
                ranks[dst].buf(piece.buf)[piece.range].copy_from_slice(&data);
                open[src] -= 1;
                open[dst] -= 1;
                moved = true;
            }
        }
        for r in 0..n {
            let Some(round) = rounds[r].get(at[r]) else { continue };
            if !posted[r] || open[r] > 0 {
                continue;
            }
            for step in round.locals {
                let rank = &mut ranks[r];
                match step {
                    Step::Reduce { into, operand, into_left } => {
                        let other = rank.read(operand);
                        op.apply(&mut rank.buf(into.buf)[into.range.clone()], &other, *into_left);
                    }
                    Step::Copy { from, to } => {
                        let data = rank.read(from);
                        rank.buf(to.buf)[to.range.clone()].copy_from_slice(&data);
                    }
                    _ => unreachable!("checked"),
                }
            }
            at[r] += 1;
            posted[r] = false;
            moved = true;
        }
        if !moved {
            break;
        }
    }
    let stuck: Vec<_> = (0..n).filter(|&r| at[r] < rounds[r].len()).collect();
    if stuck.is_empty() {
        Ok(())
    } else {
        let at: Vec<_> = stuck.iter().map(|&r| (r, at[r])).collect();
        Err(format!("deadlock: (rank, round) {at:?} never finish"))
    }
}

/// A non-commutative operation for the tests: composition of affine maps
/// `x ↦ a·x + b` (wrapping), with the left operand applied last.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compose;

impl Operation<[u64; 2]> for Compose {
    fn apply(&self, acc: &mut [[u64; 2]], other: &[[u64; 2]], acc_left: bool) {
        for (a, b) in acc.iter_mut().zip(other) {
            let (l, r) = if acc_left { (*a, *b) } else { (*b, *a) };
            *a = [l[0].wrapping_mul(r[0]), l[0].wrapping_mul(r[1]).wrapping_add(l[1])];
        }
    }
    fn commutative(&self) -> bool {
        false
    }
}

/// Rank `r`'s `len` affine maps: distinct for every rank and element.
pub(crate) fn maps(r: usize, len: usize) -> Vec<[u64; 2]> {
    (0..len).map(|i| [2 * (r * 31 + i) as u64 + 3, (r * 7 + i * 5) as u64 + 1]).collect()
}

/// The rank-order composition of every rank's maps.
pub(crate) fn composed(n: usize, len: usize) -> Vec<[u64; 2]> {
    let mut acc = maps(0, len);
    for r in 1..n {
        Compose.apply(&mut acc, &maps(r, len), true);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::*;
    use crate::op::Sum;
    use crate::schedule::blocking::NoReduce;

    const LENS: [usize; 5] = [0, 1, 5, 64, 67];

    fn sizes() -> impl Iterator<Item = usize> {
        1..=33
    }

    /// Runs the all-reduce schedules `build(n, me, len, input)` with the
    /// data in the input or in the work buffer.
    fn all_reduce(build: fn(usize, usize, usize, bool) -> Schedule, commutative_only: bool) {
        for n in sizes() {
            for len in LENS {
                for input in [false, true] {
                    let schedules: Vec<_> = (0..n).map(|me| build(n, me, len, input)).collect();
                    let ctx = format!("{n} ranks, {len} elements, input {input}");
                    // A sum of distinct integers: any order.
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| {
                            let data: Vec<u64> = (0..len).map(|i| (r * 1000 + i) as u64).collect();
                            match input {
                                true => Rank::new(data, vec![7; len]),
                                false => Rank::new(Vec::new(), data),
                            }
                        })
                        .collect();
                    run(&schedules, &mut ranks, &Sum).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    let want: Vec<u64> =
                        (0..len).map(|i| (0..n).map(|r| (r * 1000 + i) as u64).sum()).collect();
                    for (r, rank) in ranks.iter().enumerate() {
                        assert_eq!(rank.work, want, "{ctx}: rank {r}");
                    }
                    if commutative_only {
                        continue;
                    }
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| match input {
                            true => Rank::new(maps(r, len), vec![[0; 2]; len]),
                            false => Rank::new(Vec::new(), maps(r, len)),
                        })
                        .collect();
                    run(&schedules, &mut ranks, &Compose).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    for (r, rank) in ranks.iter().enumerate() {
                        assert_eq!(rank.work, composed(n, len), "{ctx}: rank {r}, in rank order");
                    }
                }
            }
        }
    }

    #[test]
    fn recursive_doubling_all_reduce_in_rank_order() {
        all_reduce(allreduce_recursive_doubling::schedule, false);
    }

    #[test]
    fn ring_all_reduce() {
        all_reduce(allreduce_ring::schedule, true);
    }

    #[test]
    fn rabenseifner_all_reduce() {
        all_reduce(allreduce_rabenseifner::schedule, true);
    }

    /// Runs reductions to every root with the data in the input or the
    /// work buffer: sums, and (unless `commutative_only`) compositions in
    /// rank order.
    fn reduce(
        build: fn(usize, usize, usize, usize, bool, bool) -> Schedule,
        commutative_only: bool,
    ) {
        for n in sizes() {
            for len in LENS {
                // Without `input` the root's contribution is in place and
                // the others read theirs from the input, as in a call.
                for (root, input) in (0..n).flat_map(|r| [(r, false), (r, true)]) {
                    let ctx = format!("{n} ranks, {len} elements, root {root}, input {input}");
                    let reads = |me: usize| input || me != root;
                    let sums: Vec<_> =
                        (0..n).map(|me| build(n, me, len, root, true, reads(me))).collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| {
                            let data: Vec<u64> = (0..len).map(|i| (r * 1000 + i) as u64).collect();
                            match reads(r) {
                                true => Rank::new(data, vec![7; len]),
                                false => Rank::new(Vec::new(), data),
                            }
                        })
                        .collect();
                    run(&sums, &mut ranks, &Sum).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    let want: Vec<u64> =
                        (0..len).map(|i| (0..n).map(|r| (r * 1000 + i) as u64).sum()).collect();
                    assert_eq!(ranks[root].work, want, "{ctx}");
                    if commutative_only {
                        continue;
                    }
                    let ordered: Vec<_> =
                        (0..n).map(|me| build(n, me, len, root, false, reads(me))).collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| match reads(r) {
                            true => Rank::new(maps(r, len), vec![[0; 2]; len]),
                            false => Rank::new(Vec::new(), maps(r, len)),
                        })
                        .collect();
                    run(&ordered, &mut ranks, &Compose).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_eq!(ranks[root].work, composed(n, len), "{ctx}: in rank order");
                }
            }
        }
    }

    #[test]
    fn binomial_reduce_to_every_root_in_rank_order() {
        reduce(reduce_binomial::schedule, false);
    }

    #[test]
    fn rabenseifner_reduce_to_every_root() {
        reduce(
            |n, me, len, root, _, input| reduce_rabenseifner::schedule(n, me, len, root, input),
            true,
        );
    }

    #[test]
    fn scans_inclusive_and_exclusive_in_rank_order() {
        for n in sizes() {
            for len in LENS {
                for (exclusive, input) in
                    [(false, false), (false, true), (true, false), (true, true)]
                {
                    let ctx =
                        format!("{n} ranks, {len} elements, exclusive {exclusive}, input {input}");
                    let schedules: Vec<_> = (0..n)
                        .map(|me| scan_recursive_doubling::schedule(n, me, len, exclusive, input))
                        .collect();
                    let untouched = vec![[9, 9]; len];
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| match input {
                            true => Rank::new(maps(r, len), untouched.clone()),
                            false => Rank::new(Vec::new(), maps(r, len)),
                        })
                        .collect();
                    run(&schedules, &mut ranks, &Compose).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    for (r, rank) in ranks.iter().enumerate() {
                        let want = match (exclusive, r) {
                            (true, 0) if input => untouched.clone(),
                            (true, 0) => maps(0, len),
                            (true, r) => composed(r, len),
                            (false, r) => composed(r + 1, len),
                        };
                        assert_eq!(rank.work, want, "{ctx}: rank {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn broadcasts_from_every_root() {
        type Build = fn(usize, usize, usize, usize) -> Schedule;
        let algorithms: [(&str, Build); 2] = [
            ("binomial", bcast_binomial::schedule),
            ("scatter_allgather", bcast_scatter_allgather::schedule),
        ];
        for (name, build) in algorithms {
            for n in sizes() {
                for len in LENS {
                    for root in 0..n {
                        let schedules: Vec<_> = (0..n).map(|me| build(n, me, len, root)).collect();
                        let data: Vec<u32> = (0..len as u32).map(|i| i * 3 + 1).collect();
                        let mut ranks: Vec<_> = (0..n)
                            .map(|r| {
                                let work = if r == root { data.clone() } else { vec![0; len] };
                                Rank::new(Vec::new(), work)
                            })
                            .collect();
                        let ctx = format!("{name}: {n} ranks, {len} elements, root {root}");
                        run(&schedules, &mut ranks, &NoReduce)
                            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        for (r, rank) in ranks.iter().enumerate() {
                            assert_eq!(rank.work, data, "{ctx}: rank {r}");
                        }
                    }
                }
            }
        }
    }

    /// Skewed blocks with gaps: rank `r`'s is `(r + len) % 4` long.
    fn skewed(n: usize, len: usize) -> Vec<std::ops::Range<usize>> {
        let mut at = 0;
        (0..n)
            .map(|r| {
                let b = at + 1..at + 1 + (r + len) % 4;
                at = b.end;
                b
            })
            .collect()
    }

    fn mark(r: usize, i: usize) -> u32 {
        (r * 1000 + i) as u32 + 1
    }

    #[test]
    fn all_gathers_equal_and_skewed() {
        for n in sizes() {
            for block in [0, 1, 3] {
                for input in [false, true] {
                    let ctx = format!("{n} ranks, blocks of {block}, input {input}");
                    let equal: Vec<_> = (0..n).map(|r| r * block..(r + 1) * block).collect();
                    type Build = Box<dyn Fn(usize) -> Schedule>;
                    let mut builds: Vec<(&str, Build, Vec<std::ops::Range<usize>>)> = vec![
                        (
                            "bruck",
                            Box::new(move |me| allgather_bruck::schedule(n, me, block, input)),
                            equal.clone(),
                        ),
                        (
                            "ring",
                            Box::new({
                                let e = equal.clone();
                                move |me| allgather_ring::schedule(n, me, &e, input)
                            }),
                            equal.clone(),
                        ),
                        (
                            "ring, skewed",
                            Box::new(move |me| {
                                allgather_ring::schedule(n, me, &skewed(n, block), input)
                            }),
                            skewed(n, block),
                        ),
                    ];
                    if n.is_power_of_two() {
                        builds.push((
                            "recursive doubling",
                            Box::new(move |me| {
                                allgather_recursive_doubling::schedule(n, me, block, input)
                            }),
                            equal.clone(),
                        ));
                    }
                    for (name, build, blocks) in builds {
                        let total = blocks.last().map_or(0, |b| b.end);
                        let schedules: Vec<_> = (0..n).map(&build).collect();
                        let mut ranks: Vec<_> = (0..n)
                            .map(|r| {
                                let mine: Vec<u32> =
                                    blocks[r].clone().map(|i| mark(r, i)).collect();
                                let mut work = vec![0; total];
                                if !input {
                                    work[blocks[r].clone()].copy_from_slice(&mine);
                                }
                                Rank::new(if input { mine } else { Vec::new() }, work)
                            })
                            .collect();
                        run(&schedules, &mut ranks, &NoReduce)
                            .unwrap_or_else(|e| panic!("{name}, {ctx}: {e}"));
                        let mut want = vec![0; total];
                        for (r, b) in blocks.iter().enumerate() {
                            for i in b.clone() {
                                want[i] = mark(r, i);
                            }
                        }
                        for (r, rank) in ranks.iter().enumerate() {
                            assert_eq!(rank.work, want, "{name}, {ctx}: rank {r}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gathers_and_scatters_to_every_root() {
        for n in sizes().take(12) {
            for len in [0, 2] {
                let blocks = skewed(n, len);
                let total = blocks.last().map_or(0, |b| b.end);
                for (root, input) in (0..n).flat_map(|r| [(r, false), (r, true)]) {
                    let ctx = format!("{n} ranks, root {root}, input {input}");
                    let gathers: Vec<_> = (0..n)
                        .map(|me| {
                            gather_linear::schedule(n, me, root, &blocks, blocks[me].len(), input)
                        })
                        .collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| {
                            let mine: Vec<u32> = blocks[r].clone().map(|i| mark(r, i)).collect();
                            match (input, r == root) {
                                (true, true) => Rank::new(mine, vec![0; total]),
                                (true, false) => Rank::new(mine, Vec::new()),
                                (false, true) => {
                                    let mut work = vec![0; total];
                                    work[blocks[r].clone()].copy_from_slice(&mine);
                                    Rank::new(Vec::new(), work)
                                }
                                (false, false) => Rank::new(Vec::new(), mine),
                            }
                        })
                        .collect();
                    run(&gathers, &mut ranks, &NoReduce)
                        .unwrap_or_else(|e| panic!("gather, {ctx}: {e}"));
                    let mut want = vec![0; total];
                    for (r, b) in blocks.iter().enumerate() {
                        for i in b.clone() {
                            want[i] = mark(r, i);
                        }
                    }
                    assert_eq!(ranks[root].work, want, "gather, {ctx}");
                    let scatters: Vec<_> = (0..n)
                        .map(|me| {
                            scatter_linear::schedule(n, me, root, &blocks, blocks[me].len(), input)
                        })
                        .collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| match (input, r == root) {
                            (true, true) => Rank::new(want.clone(), vec![0; blocks[r].len()]),
                            (false, true) => Rank::new(Vec::new(), want.clone()),
                            (_, false) => Rank::new(Vec::new(), vec![0; blocks[r].len()]),
                        })
                        .collect();
                    run(&scatters, &mut ranks, &NoReduce)
                        .unwrap_or_else(|e| panic!("scatter, {ctx}: {e}"));
                    for (r, rank) in ranks.iter().enumerate() {
                        let got = if r == root && !input {
                            &rank.work[blocks[r].clone()]
                        } else {
                            &rank.work[..]
                        };
                        assert_eq!(got, &want[blocks[r].clone()], "scatter, {ctx}: rank {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn all_to_alls_equal_and_skewed() {
        for n in sizes() {
            for block in [0, 1, 3] {
                // From rank s to rank d: `(s + 2d + block) % 4` elements
                // (skewed), or `block`.
                for skew in [false, true] {
                    let count =
                        |s: usize, d: usize| if skew { (s + 2 * d + block) % 4 } else { block };
                    let layout = |counts: Vec<usize>| {
                        let mut at = 0;
                        counts
                            .into_iter()
                            .map(|c| {
                                let b = at..at + c;
                                at += c;
                                b
                            })
                            .collect::<Vec<_>>()
                    };
                    let sblocks: Vec<_> =
                        (0..n).map(|s| layout((0..n).map(|d| count(s, d)).collect())).collect();
                    let rblocks: Vec<_> =
                        (0..n).map(|d| layout((0..n).map(|s| count(s, d)).collect())).collect();
                    let mut builds: Vec<(&str, Vec<Schedule>)> = vec![(
                        "pairwise",
                        (0..n)
                            .map(|me| {
                                alltoall_pairwise::schedule(n, me, &sblocks[me], &rblocks[me])
                            })
                            .collect(),
                    )];
                    if !skew {
                        builds.push((
                            "bruck",
                            (0..n).map(|me| alltoall_bruck::schedule(n, me, block)).collect(),
                        ));
                    }
                    for (name, schedules) in builds {
                        let ctx = format!("{name}, {n} ranks, block {block}, skewed {skew}");
                        let mut ranks: Vec<_> = (0..n)
                            .map(|s| {
                                let mut input = Vec::new();
                                for d in 0..n {
                                    input.extend((0..count(s, d)).map(|i| mark(s, d * 10 + i)));
                                }
                                Rank::new(input, vec![0; rblocks[s].last().map_or(0, |b| b.end)])
                            })
                            .collect();
                        run(&schedules, &mut ranks, &NoReduce)
                            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        for (d, rank) in ranks.iter().enumerate() {
                            let mut want = Vec::new();
                            for s in 0..n {
                                want.extend((0..count(s, d)).map(|i| mark(s, d * 10 + i)));
                            }
                            assert_eq!(rank.work, want, "{ctx}: rank {d}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reduce_scatters_ring_and_pairwise_in_rank_order() {
        for n in sizes() {
            for len in [0, 1, 3] {
                let counts: Vec<usize> = (0..n).map(|r| (r + len) % 3).collect();
                let mut at = 0;
                let blocks: Vec<_> = counts
                    .iter()
                    .map(|&c| {
                        let b = at..at + c;
                        at += c;
                        b
                    })
                    .collect();
                let total = at;
                for input in [false, true] {
                    let ctx = format!("{n} ranks, counts {counts:?}, input {input}");
                    let setup = |r: usize| match input {
                        true => Rank::new(maps(r, total), vec![[0; 2]; counts[r]]),
                        false => Rank::new(Vec::new(), maps(r, total)),
                    };
                    let all = composed(n, total);
                    // The pairwise exchange keeps rank order; the ring
                    // only with a commutative operation (sums here).
                    let pairwise: Vec<_> = (0..n)
                        .map(|me| reduce_scatter_pairwise::schedule(n, me, &blocks, input))
                        .collect();
                    let mut ranks: Vec<_> = (0..n).map(setup).collect();
                    run(&pairwise, &mut ranks, &Compose)
                        .unwrap_or_else(|e| panic!("pairwise, {ctx}: {e}"));
                    for (r, rank) in ranks.iter().enumerate() {
                        assert_eq!(
                            rank.work[..counts[r]],
                            all[blocks[r].clone()],
                            "pairwise, {ctx}: rank {r}"
                        );
                    }
                    let ring: Vec<_> = (0..n)
                        .map(|me| reduce_scatter_ring::schedule(n, me, &blocks, input))
                        .collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| {
                            let data: Vec<u64> =
                                (0..total).map(|i| (r * 1000 + i) as u64).collect();
                            match input {
                                true => Rank::new(data, vec![0; counts[r]]),
                                false => Rank::new(Vec::new(), data),
                            }
                        })
                        .collect();
                    run(&ring, &mut ranks, &Sum).unwrap_or_else(|e| panic!("ring, {ctx}: {e}"));
                    for (r, rank) in ranks.iter().enumerate() {
                        let want: Vec<u64> = blocks[r]
                            .clone()
                            .map(|i| (0..n).map(|q| (q * 1000 + i) as u64).sum())
                            .collect();
                        assert_eq!(rank.work[..counts[r]], want[..], "ring, {ctx}: rank {r}");
                    }
                }
            }
        }
    }

    /// The neighbours of rank `r` on a grid of `dims` in row-major order
    /// (as `Cartesian::shift` gives them): before and after along each
    /// dimension, `None` past a non-periodic edge.
    fn grid_neighbors(dims: &[usize], periodic: &[bool], r: usize) -> Vec<Option<usize>> {
        let mut coords = vec![0; dims.len()];
        let mut rest = r;
        for d in (0..dims.len()).rev() {
            coords[d] = rest % dims[d];
            rest /= dims[d];
        }
        let rank = |c: &[usize]| c.iter().zip(dims).fold(0, |acc, (&x, &n)| acc * n + x);
        let mut out = Vec::new();
        for d in 0..dims.len() {
            for delta in [-1isize, 1] {
                let x = coords[d] as isize + delta;
                let n = dims[d] as isize;
                let x = if periodic[d] {
                    Some(x.rem_euclid(n))
                } else {
                    (0..n).contains(&x).then_some(x)
                };
                out.push(x.map(|x| {
                    let mut c = coords.clone();
                    c[d] = x as usize;
                    rank(&c)
                }));
            }
        }
        out
    }

    #[test]
    fn neighbor_exchanges_on_grids_with_self_and_double_neighbours() {
        let grids: [(&[usize], &[bool]); 8] = [
            (&[1], &[true]),
            (&[2], &[true]),
            (&[5], &[false]),
            (&[2, 1], &[true, true]),
            (&[2, 2], &[true, false]),
            (&[3, 4], &[true, true]),
            (&[2, 3, 2], &[false, true, true]),
            (&[4, 1, 3], &[true, true, false]),
        ];
        for (dims, periodic) in grids {
            let n: usize = dims.iter().product();
            let k = 2 * dims.len();
            // Rank s sends to its neighbour j a block of (s + j) % 3 + 1
            // elements marked with (s, j).
            let count = |s: usize, j: usize| (s + j) % 3 + 1;
            let layout = |counts: Vec<usize>| {
                let mut at = 1;
                counts
                    .into_iter()
                    .map(|c| {
                        let b = at..at + c;
                        at += c + 1;
                        b
                    })
                    .collect::<Vec<_>>()
            };
            let nbrs: Vec<_> = (0..n).map(|r| grid_neighbors(dims, periodic, r)).collect();
            let sblocks: Vec<_> =
                (0..n).map(|s| layout((0..k).map(|j| count(s, j)).collect())).collect();
            // Block j at rank r comes from neighbour j, which sent it the
            // other way (its block j ^ 1).
            let rblocks: Vec<_> = (0..n)
                .map(|r| {
                    layout((0..k).map(|j| nbrs[r][j].map_or(0, |q| count(q, j ^ 1))).collect())
                })
                .collect();
            let schedules: Vec<_> = (0..n)
                .map(|r| neighbor_exchange::schedule(&nbrs[r], &sblocks[r], &rblocks[r]))
                .collect();
            let mut ranks: Vec<_> = (0..n)
                .map(|s| {
                    let mut input = vec![0u32; sblocks[s].last().map_or(0, |b| b.end)];
                    for (j, b) in sblocks[s].iter().enumerate() {
                        input[b.clone()].fill((s * 100 + j) as u32 + 1);
                    }
                    Rank::new(input, vec![0; rblocks[s].last().map_or(0, |b| b.end)])
                })
                .collect();
            let ctx = format!("grid {dims:?}, periodic {periodic:?}");
            run(&schedules, &mut ranks, &NoReduce).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            for (r, rank) in ranks.iter().enumerate() {
                for (j, b) in rblocks[r].iter().enumerate() {
                    let want = nbrs[r][j].map_or(0, |q| (q * 100 + (j ^ 1)) as u32 + 1);
                    assert!(
                        rank.work[b.clone()].iter().all(|&x| x == want),
                        "{ctx}: rank {r}, block {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn dissemination_barrier_rounds_meet() {
        for n in sizes() {
            let schedules: Vec<_> =
                (0..n).map(|me| barrier_dissemination::schedule(n, me)).collect();
            let mut ranks: Vec<_> =
                (0..n).map(|_| Rank::<u8>::new(Vec::new(), Vec::new())).collect();
            run(&schedules, &mut ranks, &NoReduce).unwrap();
            let rounds = (n as f64).log2().ceil() as usize;
            assert!(schedules.iter().all(|s| s.round_count() == rounds), "{n} ranks");
        }
    }

    /// The hierarchical algorithms on blocked and scattered layouts, nodes
    /// of one rank and a single node, with the leaders choosing each of
    /// their algorithms (the byte counts steer the choice, not the data).
    #[test]
    fn hierarchical_algorithms_on_every_layout() {
        use crate::algorithms::hierarchical::Tiers;
        use crate::model::Machine;
        use crate::plans::{
            hier_allgather, hier_allreduce, hier_barrier, hier_bcast, hier_gather, hier_reduce,
        };
        use hpcomm_runtime::NodeLayout;

        let layouts: [&[u64]; 8] = [
            &[0, 0, 0, 1],
            &[0, 0, 1, 1, 2, 2, 3, 3],
            &[0, 0, 0, 1, 1, 1, 2],
            &[0, 1, 0, 2, 1, 0, 2, 2],
            &[0, 1, 2, 3, 4],
            &[0, 0, 0, 0, 0],
            &[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 3],
            &[5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7],
        ];
        let leaders = Machine::efa(1).leaders();
        for keys in layouts {
            let layout = NodeLayout::from_keys(keys);
            let n = keys.len();
            let tiers = |root| (0..n).map(move |me| Tiers::new(&layout_of(keys), me, root));
            let schedules: Vec<_> = tiers(0).map(|t| hier_barrier(&t)).collect();
            let mut ranks: Vec<_> =
                (0..n).map(|_| Rank::<u8>::new(Vec::new(), Vec::new())).collect();
            run(&schedules, &mut ranks, &NoReduce).unwrap_or_else(|e| panic!("{keys:?}: {e}"));
            for (len, bytes) in
                [(0, 0), (1, 8), (5, 8 << 10), (3000, 3000), (67, 1 << 20), (64, 64 << 20)]
            {
                for root in 0..n {
                    let ctx = format!("{keys:?}, {len} elements as {bytes} bytes, root {root}");
                    let root_node = layout.node_of(root);
                    let schedules: Vec<_> = tiers(root)
                        .map(|t| hier_bcast(&t, &leaders, len, bytes, root_node))
                        .collect();
                    let data: Vec<u32> = (0..len as u32).map(|i| i * 3 + 1).collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| {
                            Rank::new(
                                Vec::new(),
                                if r == root { data.clone() } else { vec![0; len] },
                            )
                        })
                        .collect();
                    run(&schedules, &mut ranks, &NoReduce).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert!(ranks.iter().all(|r| r.work == data), "{ctx}: broadcast");
                    for input in [false, true] {
                        let schedules: Vec<_> = tiers(root)
                            .map(|t| hier_reduce(&t, &leaders, len, bytes, root_node, input))
                            .collect();
                        let mut ranks = summands(n, len, input);
                        run(&schedules, &mut ranks, &Sum).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        assert_eq!(ranks[root].work, sum(n, len), "{ctx}: reduce, input {input}");
                    }
                }
                // The all-gather and the gather need each node's ranks
                // consecutive.
                let block = len % 7;
                for (root, input) in (0..n).flat_map(|r| [(r, false), (r, true)]) {
                    if !layout.blocked() {
                        break;
                    }
                    let ctx = format!("{keys:?}, gather of {block} to {root}, input {input}");
                    let schedules: Vec<_> =
                        tiers(root).map(|t| hier_gather(&t, &layout, root, block, input)).collect();
                    let want: Vec<u32> = (0..n * block).map(|i| i as u32 * 3 + 2).collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| {
                            let mine = want[r * block..(r + 1) * block].to_vec();
                            match (input, r == root) {
                                (true, true) => Rank::new(mine, vec![0; n * block]),
                                (true, false) => Rank::new(mine, Vec::new()),
                                (false, true) => {
                                    let mut work = vec![0; n * block];
                                    work[r * block..(r + 1) * block].copy_from_slice(&mine);
                                    Rank::new(Vec::new(), work)
                                }
                                (false, false) => Rank::new(Vec::new(), mine),
                            }
                        })
                        .collect();
                    run(&schedules, &mut ranks, &NoReduce).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert_eq!(ranks[root].work, want, "{ctx}");
                }
                let blocks: Vec<_> = (0..n).map(|r| r * block..(r + 1) * block).collect();
                for input in [false, true].into_iter().filter(|_| layout.blocked()) {
                    let ctx =
                        format!("{keys:?}, blocks of {block} as {bytes} bytes, input {input}");
                    let schedules: Vec<_> = tiers(0)
                        .map(|t| hier_allgather(&t, &leaders, &layout, &blocks, bytes, input))
                        .collect();
                    let want: Vec<u32> = (0..n * block).map(|i| i as u32 * 5 + 1).collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| {
                            let mine = want[blocks[r].clone()].to_vec();
                            match input {
                                true => Rank::new(mine, vec![0; n * block]),
                                false => {
                                    let mut work = vec![0; n * block];
                                    work[blocks[r].clone()].copy_from_slice(&mine);
                                    Rank::new(Vec::new(), work)
                                }
                            }
                        })
                        .collect();
                    run(&schedules, &mut ranks, &NoReduce).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    for (r, rank) in ranks.iter().enumerate() {
                        assert_eq!(rank.work, want, "{ctx}: all-gather, rank {r}");
                    }
                }
                for input in [false, true] {
                    let ctx = format!("{keys:?}, {len} elements as {bytes} bytes, input {input}");
                    let schedules: Vec<_> =
                        tiers(0).map(|t| hier_allreduce(&t, &leaders, len, bytes, input)).collect();
                    let mut ranks = summands(n, len, input);
                    run(&schedules, &mut ranks, &Sum).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    for (r, rank) in ranks.iter().enumerate() {
                        assert_eq!(rank.work, sum(n, len), "{ctx}: all-reduce, rank {r}");
                    }
                }
            }
        }

        fn layout_of(keys: &[u64]) -> NodeLayout {
            NodeLayout::from_keys(keys)
        }
        fn summands(n: usize, len: usize, input: bool) -> Vec<Rank<u64>> {
            (0..n)
                .map(|r| {
                    let data: Vec<u64> = (0..len).map(|i| (r * 1000 + i) as u64).collect();
                    match input {
                        true => Rank::new(data, vec![7; len]),
                        false => Rank::new(Vec::new(), data),
                    }
                })
                .collect()
        }
        fn sum(n: usize, len: usize) -> Vec<u64> {
            (0..len).map(|i| (0..n).map(|r| (r * 1000 + i) as u64).sum()).collect()
        }
    }

    #[test]
    fn the_simulator_finds_deadlocks_and_mismatches() {
        // Both ranks receive first, each round alone: neither ever sends.
        let mut a = Schedule::new();
        a.recv(1, Piece::work(0..1)).end_round().send(1, Piece::work(0..1));
        let mut b = Schedule::new();
        b.recv(0, Piece::work(0..1)).end_round().send(0, Piece::work(0..1));
        let mut ranks: Vec<_> = (0..2).map(|_| Rank::new(Vec::new(), vec![0u8])).collect();
        let e = run(&[a.build(), b.build()], &mut ranks, &NoReduce).unwrap_err();
        assert!(e.contains("deadlock"), "{e}");
        let mut a = Schedule::new();
        a.send(1, Piece::work(0..2));
        let mut b = Schedule::new();
        b.recv(0, Piece::work(0..1));
        let mut ranks: Vec<_> = (0..2).map(|_| Rank::new(Vec::new(), vec![0u8; 2])).collect();
        let e = run(&[a.build(), b.build()], &mut ranks, &NoReduce).unwrap_err();
        assert!(e.contains("sent 2 elements"), "{e}");
    }
}
