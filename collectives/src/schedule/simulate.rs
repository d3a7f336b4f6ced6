//! Runs the schedules of every rank of a communicator against each other
//! in memory, without a transport: the tests' check that an algorithm's
//! rounds fit together (every receive meets a send of its length, in MPI's
//! order), finish without a deadlock, and compute what they should.
//!
//! Transfers are strictly synchronous here — a send completes only when
//! its receive is posted — so a schedule that finishes here finishes under
//! any protocol, eager or rendezvous.

use std::collections::VecDeque;

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
    // Sends from s to d waiting for their receive: data and the sender.
    let mut sends: Vec<VecDeque<Vec<T>>> = vec![VecDeque::new(); n * n];
    // Receives at d from s waiting for their send.
    let mut recvs: Vec<VecDeque<Piece>> = vec![VecDeque::new(); n * n];
    loop {
        let mut moved = false;
        for r in 0..n {
            let Some(round) = rounds[r].get(at[r]) else { continue };
            if !posted[r] {
                for step in round.transfers {
                    match step {
                        Step::Send { to, piece } => {
                            let data = ranks[r].read(piece);
                            sends[r * n + to].push_back(data);
                        }
                        Step::Recv { from, piece } => recvs[from * n + r].push_back(piece.clone()),
                        _ => unreachable!("checked"),
                    }
                }
                open[r] = round.transfers.len();
                posted[r] = true;
                moved = true;
            }
            // Match what can be matched, in order per pair.
            for s in 0..n {
                for (src, dst) in [(s, r), (r, s)] {
                    let pair = src * n + dst;
                    while !sends[pair].is_empty() && !recvs[pair].is_empty() {
                        let data = sends[pair].pop_front().expect("non-empty");
                        let piece = recvs[pair].pop_front().expect("non-empty");
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

    #[test]
    fn rabenseifner_reduce_to_every_root() {
        for n in sizes() {
            for len in LENS {
                for root in 0..n {
                    let schedules: Vec<_> =
                        (0..n).map(|me| reduce_rabenseifner::schedule(n, me, len, root)).collect();
                    let mut ranks: Vec<_> = (0..n)
                        .map(|r| {
                            Rank::new(Vec::new(), (0..len).map(|i| (r * 1000 + i) as u64).collect())
                        })
                        .collect();
                    run(&schedules, &mut ranks, &Sum)
                        .unwrap_or_else(|e| panic!("{n} ranks, {len}, root {root}: {e}"));
                    let want: Vec<u64> =
                        (0..len).map(|i| (0..n).map(|r| (r * 1000 + i) as u64).sum()).collect();
                    assert_eq!(ranks[root].work, want, "{n} ranks, {len} elements, root {root}");
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
