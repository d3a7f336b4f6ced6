//! A cost model of the collective algorithms at scale, for choosing and
//! explaining thresholds where no machine of that size is at hand.
//!
//! The machine has nodes of `ranks_per_node` ranks, placed in blocks (ranks
//! `0..r` on the first node, and so on), as `hpcomm run` and Slurm place
//! them. A message between ranks of one node costs `intra.latency + m /
//! intra.bandwidth` (shared memory); between nodes `inter.latency + m × c /
//! inter.bandwidth`, where `c` is how many ranks of the node send across at
//! once in that step: they share the node's one network link (EFA: about
//! 15 µs through the stack, 12.5 GB/s per 100 Gb/s link). Combining
//! received data costs `m / reduce_bandwidth`.
//!
//! Every algorithm is a sequence of steps in which ranks exchange with a
//! partner at some distance; a step lasts as long as its slowest pair. This
//! is the Hockney (α–β) model with one refinement, the shared link, which
//! is what makes the distance of each step matter: recursive doubling's
//! far steps put every rank of a node on the link at once, the ring's
//! steps only one. It does not model congestion inside the network, which
//! a cluster placement group keeps low.
//!
//! The hierarchical algorithms cost their phases: within a node as on a
//! machine of one node ([`Machine::within`]) with the algorithm chosen
//! there by the measured rules, among the leaders as on a machine of one
//! rank per node ([`Machine::leaders`]) with the cheapest flat algorithm.
//!
//! [`select`](crate::select) chooses by this model for communicators that
//! span nodes.

use crate::select::{Allgather, Allreduce, Alltoall, Barrier, Bcast, Gather, Reduce};

/// One kind of link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Seconds from send to arrival of an empty message.
    pub latency: f64,
    /// Bytes per second of one stream.
    pub bandwidth: f64,
}

/// The machine being modelled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Machine {
    /// Ranks per node (block placement).
    pub ranks_per_node: usize,
    /// Between ranks of one node.
    pub intra: Link,
    /// Between nodes: the node's network link, shared by its ranks.
    pub inter: Link,
    /// Bytes per second a rank combines in a reduction.
    pub reduce_bandwidth: f64,
}

impl Machine {
    /// EFA-like nodes: 15 µs and 12.5 GB/s between nodes, shared memory
    /// within (0.3 µs and 5 GB/s per pair, hpcomm's shm on one machine),
    /// 36 ranks per node (c5n.18xlarge), reductions at 10 GB/s.
    pub fn efa(ranks_per_node: usize) -> Machine {
        Machine {
            ranks_per_node: ranks_per_node.max(1),
            intra: Link { latency: 0.3e-6, bandwidth: 5e9 },
            inter: Link { latency: 15e-6, bandwidth: 12.5e9 },
            reduce_bandwidth: 10e9,
        }
    }

    /// TCP-like nodes: [`Machine::efa`] with 50 µs and 1.25 GB/s (10 Gb/s)
    /// between nodes.
    pub fn tcp(ranks_per_node: usize) -> Machine {
        Machine {
            inter: Link { latency: 50e-6, bandwidth: 1.25e9 },
            ..Machine::efa(ranks_per_node)
        }
    }

    /// The machine the leaders of a hierarchical algorithm see: one rank
    /// per node.
    pub fn leaders(&self) -> Machine {
        Machine { ranks_per_node: 1, ..*self }
    }

    /// One node of this machine, however many ranks.
    pub fn within(&self) -> Machine {
        Machine { ranks_per_node: usize::MAX, ..*self }
    }

    /// Ranks per node and nodes, for a job of `p` ranks.
    fn tiers(&self, p: usize) -> (usize, usize) {
        let r = self.ranks_per_node.clamp(1, p.max(1));
        (r, p.div_ceil(r))
    }

    /// A step in which every rank `i` sends `m` bytes to `i + d` (mod
    /// `p`), or to `i xor d` when `xor`: seconds.
    fn step(&self, p: usize, d: usize, m: f64, xor: bool) -> f64 {
        let r = self.ranks_per_node.min(p);
        let d = d % p.max(1);
        // How many ranks of a node send to another node at once.
        let crossing = if d == 0 || p <= r {
            0
        } else if !xor || d >= r {
            // A shift by d < r takes the last d ranks of each node across.
            d.min(r)
        } else {
            // xor by d < r crosses where nodes are not aligned to powers
            // of two (36 ranks per node, say): counted on the first nodes.
            let span = (4 * r).min(p);
            let crossing = (0..span).filter(|&i| (i ^ d) / r != i / r).count();
            crossing.div_ceil(span.div_ceil(r))
        };
        if crossing == 0 {
            self.intra.latency + m / self.intra.bandwidth
        } else {
            let shared = self.inter.bandwidth / crossing as f64;
            self.inter.latency + m / shared.min(self.inter.bandwidth)
        }
    }

    fn combine(&self, m: f64) -> f64 {
        m / self.reduce_bandwidth
    }
}

fn log2_ceil(p: usize) -> u32 {
    p.max(1).next_power_of_two().trailing_zeros()
}

fn floor_pow2(p: usize) -> usize {
    if p <= 1 {
        1
    } else {
        1 << (usize::BITS - 1 - p.leading_zeros())
    }
}

/// Seconds for an all-reduce of `bytes` on `p` ranks.
pub fn allreduce(m: &Machine, a: Allreduce, p: usize, bytes: usize) -> f64 {
    if p <= 1 {
        return 0.0;
    }
    let n = bytes as f64;
    let q = floor_pow2(p);
    // Off powers of two, the first ranks fold into their neighbours first
    // and get the result back last.
    let fold = if q == p { 0.0 } else { 2.0 * m.step(p, 1, n, true) + m.combine(n) };
    match a {
        Allreduce::Hierarchical => {
            let (r, nodes) = m.tiers(p);
            let leaders = m.leaders();
            let across = allreduce(&leaders, Allreduce::flat(&leaders, nodes, bytes), nodes, bytes);
            let within = m.within();
            reduce(&within, Reduce::auto(r, bytes, usize::MAX, true), r, bytes)
                + across
                + bcast(&within, Bcast::auto(r, bytes), r, bytes)
        }
        Allreduce::RecursiveDoubling => {
            fold + (0..log2_ceil(q)).map(|k| m.step(q, 1 << k, n, true) + m.combine(n)).sum::<f64>()
        }
        Allreduce::Rabenseifner => {
            let steps = log2_ceil(q);
            fold + (1..=steps)
                .map(|k| {
                    let part = n / (1u64 << k) as f64;
                    let d = q >> k;
                    // Halving (reduce-scatter) and doubling (all-gather).
                    2.0 * m.step(q, d, part, true) + m.combine(part)
                })
                .sum::<f64>()
        }
        Allreduce::Ring => {
            let part = n / p as f64;
            (p - 1) as f64 * (2.0 * m.step(p, 1, part, false) + m.combine(part))
        }
    }
}

/// Seconds for a broadcast of `bytes` from one root to `p` ranks.
pub fn bcast(m: &Machine, a: Bcast, p: usize, bytes: usize) -> f64 {
    if p <= 1 {
        return 0.0;
    }
    let n = bytes as f64;
    let steps = log2_ceil(p);
    match a {
        Bcast::Hierarchical => {
            let (r, nodes) = m.tiers(p);
            let leaders = m.leaders();
            bcast(&leaders, Bcast::flat(&leaders, nodes, bytes), nodes, bytes)
                + bcast(&m.within(), Bcast::auto(r, bytes), r, bytes)
        }
        // Step k: ranks below 2^k send 2^k apart; the root's node sends
        // across once the distance reaches a node.
        Bcast::Binomial => (0..steps).map(|k| m.step(p, 1 << k, n, true)).sum(),
        Bcast::ScatterAllgather => {
            let scatter: f64 =
                (1..=steps).map(|k| m.step(p, p >> k, n / (1u64 << k) as f64, true)).sum();
            scatter + allgather(m, Allgather::Ring, p, bytes)
        }
    }
}

/// Seconds for an all-gather of `bytes` in all (`bytes / p` from each).
pub fn allgather(m: &Machine, a: Allgather, p: usize, bytes: usize) -> f64 {
    if p <= 1 {
        return 0.0;
    }
    let block = bytes as f64 / p as f64;
    let steps = log2_ceil(p);
    match a {
        Allgather::Hierarchical => {
            let (r, nodes) = m.tiers(p);
            let (within, leaders) = (m.within(), m.leaders());
            // The leader takes its node's r − 1 blocks at once.
            let gather = if r > 1 { within.step(r, 1, block * (r - 1) as f64, false) } else { 0.0 };
            gather
                + allgather(&leaders, Allgather::flat(&leaders, nodes, bytes), nodes, bytes)
                + bcast(&within, Bcast::auto(r, bytes), r, bytes)
        }
        Allgather::Ring => (p - 1) as f64 * m.step(p, 1, block, false),
        Allgather::RecursiveDoubling => {
            (0..steps).map(|k| m.step(p, 1 << k, block * (1u64 << k) as f64, true)).sum()
        }
        Allgather::Bruck => (0..steps)
            .map(|k| {
                let have = (1usize << k).min(p - (1 << k).min(p));
                m.step(p, 1 << k, block * have.max(1) as f64, false)
            })
            .sum(),
    }
}

/// Seconds for a gather of `block` bytes from each of `p` ranks. The root
/// takes every message itself, each costing it at least a shared-memory
/// latency of its time; the blocks from other nodes share its node's link.
pub fn gather(m: &Machine, a: Gather, p: usize, block: usize) -> f64 {
    if p <= 1 {
        return 0.0;
    }
    let (r, nodes) = m.tiers(p);
    let b = block as f64;
    let o = m.intra.latency;
    let within = (r - 1) as f64 * (o + b / m.intra.bandwidth);
    let remote = (p - r) as f64 * b / m.inter.bandwidth;
    let across = if nodes > 1 { m.inter.latency + remote } else { 0.0 };
    match a {
        Gather::Linear => within + across + (p - r) as f64 * o,
        Gather::Hierarchical => within + across + (nodes - 1) as f64 * o,
    }
}

/// Seconds for an all-to-all with `block` bytes per pair.
pub fn alltoall(m: &Machine, a: Alltoall, p: usize, block: usize) -> f64 {
    if p <= 1 {
        return 0.0;
    }
    let b = block as f64;
    match a {
        Alltoall::Pairwise => {
            // Step k puts min(k, r) ranks of a node on its link: the first
            // r − 1 steps one by one, the rest alike.
            let r = m.ranks_per_node.clamp(1, p);
            let near = (1..r.min(p)).map(|k| m.step(p, k, b, false)).sum::<f64>();
            near + (p - r.min(p)) as f64 * m.step(p, r, b, false)
        }
        Alltoall::Bruck => (0..log2_ceil(p))
            .map(|k| {
                // Blocks whose destination has bit k set: about half.
                m.step(p, 1 << k, b * (p / 2) as f64, false) + m.combine(b * (p / 2) as f64)
            })
            .sum(),
    }
}

/// Seconds for a barrier on `p` ranks.
pub fn barrier(m: &Machine, a: Barrier, p: usize) -> f64 {
    match a {
        Barrier::Dissemination => (0..log2_ceil(p)).map(|k| m.step(p, 1 << k, 0.0, false)).sum(),
        Barrier::Hierarchical => {
            let (r, nodes) = m.tiers(p);
            let within = m.within();
            // An empty reduction in, an empty broadcast out.
            2.0 * bcast(&within, Bcast::Binomial, r, 0)
                + barrier(&m.leaders(), Barrier::Dissemination, nodes)
        }
    }
}

/// Seconds for a reduction of `bytes` on `p` ranks to one root.
pub fn reduce(m: &Machine, a: Reduce, p: usize, bytes: usize) -> f64 {
    if p <= 1 {
        return 0.0;
    }
    let n = bytes as f64;
    match a {
        Reduce::Binomial => {
            (0..log2_ceil(p)).map(|k| m.step(p, 1 << k, n, true) + m.combine(n)).sum()
        }
        // Halving, then a binomial gather of the halves: the all-reduce's
        // volume and steps.
        Reduce::Rabenseifner => allreduce(m, Allreduce::Rabenseifner, p, bytes),
        Reduce::Hierarchical => {
            let (r, nodes) = m.tiers(p);
            let leaders = m.leaders();
            reduce(&m.within(), Reduce::auto(r, bytes, usize::MAX, true), r, bytes)
                + reduce(&leaders, Reduce::flat(&leaders, nodes, bytes), nodes, bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_within_a_node_costs_shared_memory_and_across_it_the_link() {
        let m = Machine::efa(4);
        let within = m.step(16, 1, 0.0, true);
        let across = m.step(16, 4, 0.0, true);
        assert!((within - 0.3e-6).abs() < 1e-12, "{within}");
        assert!((across - 15e-6).abs() < 1e-12, "{across}");
        // Four ranks share the link in an xor step across nodes: 1 MB takes
        // four times as long as one stream's.
        let one = m.step(16, 1, 1e6, false) - m.inter.latency;
        let four = m.step(16, 4, 1e6, true) - m.inter.latency;
        assert!((four / one - 4.0).abs() < 1e-9, "{one} {four}");
    }

    #[test]
    fn small_all_reduces_favour_recursive_doubling_and_large_ones_the_bandwidth_algorithms() {
        let m = Machine::efa(36);
        let p = 36 * 64;
        let rd = |n| allreduce(&m, Allreduce::RecursiveDoubling, p, n);
        let rab = |n| allreduce(&m, Allreduce::Rabenseifner, p, n);
        let ring = |n| allreduce(&m, Allreduce::Ring, p, n);
        assert!(rd(8) < rab(8) && rd(8) < ring(8));
        assert!(rab(16 << 20) < rd(16 << 20));
        // The ring pays 2(p − 1) latencies: on thousands of ranks it loses
        // to Rabenseifner until the message is very large.
        assert!(rab(1 << 20) < ring(1 << 20));
    }

    #[test]
    fn the_model_grows_with_the_job() {
        let m = Machine::efa(36);
        for p in [64usize, 1024, 16384] {
            let small = allreduce(&m, Allreduce::RecursiveDoubling, p, 8);
            let large = allreduce(&m, Allreduce::RecursiveDoubling, p * 4, 8);
            assert!(large > small, "{p}");
            assert!(barrier(&m, Barrier::Dissemination, p) > 0.0);
            assert!(bcast(&m, Bcast::Binomial, p, 8) > 0.0);
            assert!(alltoall(&m, Alltoall::Pairwise, p, 8) > alltoall(&m, Alltoall::Bruck, p, 8));
        }
    }

    #[test]
    fn one_rank_costs_nothing() {
        let m = Machine::efa(36);
        assert_eq!(allreduce(&m, Allreduce::Ring, 1, 1 << 20), 0.0);
        assert_eq!(allgather(&m, Allgather::Bruck, 1, 8), 0.0);
    }
}
