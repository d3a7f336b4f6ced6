//! Node-aware (hierarchical) algorithms: the ranks of each node combine or
//! spread data among themselves over shared memory, and one rank per node
//! — its *leader* — talks to the other nodes' leaders over the network.
//!
//! On a cluster where a node's 36–192 ranks share one network link, a flat
//! algorithm sends most bytes across that link several times (or puts
//! every rank of the node on it at once); here each byte crosses it once
//! per direction, and the network phase has as many steps as there are
//! nodes, not ranks. Cost, for `r` ranks per node on `m` nodes: a
//! within-node phase of `log₂ r` shared-memory steps, the network phase of
//! the chosen algorithm on `m` ranks, and (for the all-reduce and the
//! broadcast) a within-node broadcast.
//!
//! Each phase is a schedule of an ordinary algorithm among a subset of the
//! ranks, appended to this rank's schedule under the communicator's rank
//! numbers ([`Schedule::append`]). The layout is the communicator's
//! ([`NodeLayout`]), the same on every rank, so every rank builds matching
//! phases. The within-node reductions combine in any order: commutative
//! operations only. Any layout (a node's ranks need not be consecutive),
//! but for the all-gather, whose nodes' blocks must each be one piece:
//! equal blocks packed in rank order, each node's ranks consecutive.

use std::ops::Range;

use hpcomm_runtime::NodeLayout;

use crate::schedule::{Piece, Schedule};

/// A rank's place in the two tiers.
#[derive(Clone, Debug)]
pub(crate) struct Tiers {
    /// The communicator ranks on this rank's node, in rank order.
    local: Vec<usize>,
    /// This rank's index in `local`.
    me_local: usize,
    /// The index in `local` of the node's leader.
    leader_local: usize,
    /// Each node's leader, by node number.
    leaders: Vec<usize>,
    /// This rank's node.
    node: usize,
}

impl Tiers {
    /// Rank `me`'s tiers; `root`'s node is led by `root`, every other node
    /// by its lowest rank.
    pub(crate) fn new(layout: &NodeLayout, me: usize, root: usize) -> Tiers {
        let node = layout.node_of(me);
        let local: Vec<usize> = layout.ranks_of(node).collect();
        let root_node = layout.node_of(root);
        let leaders: Vec<usize> = (0..layout.count())
            .map(|n| if n == root_node { root } else { layout.ranks_of(n).next().unwrap_or(0) })
            .collect();
        let me_local = local.iter().position(|&r| r == me).unwrap_or(0);
        let leader_local = local.iter().position(|&r| r == leaders[node]).unwrap_or(0);
        Tiers { local, me_local, leader_local, leaders, node }
    }

    /// The number of nodes.
    pub(crate) fn nodes(&self) -> usize {
        self.leaders.len()
    }

    /// The number of ranks on this rank's node.
    pub(crate) fn local_size(&self) -> usize {
        self.local.len()
    }

    /// Starts a reduction whose contribution is `input` elements of the
    /// input: a rank alone on its node has no within-node phase to read
    /// it, so it copies it to the work buffer for the leaders' phase.
    fn read_input(&self, s: &mut Schedule, input: Option<usize>) {
        if let (1, Some(len)) = (self.local.len(), input) {
            s.copy(Piece::input(0..len), Piece::work(0..len)).end_round();
        }
    }

    fn leads(&self) -> bool {
        self.me_local == self.leader_local
    }

    /// Appends a within-node phase: `build(ranks, me, leader)`.
    fn within(&self, s: &mut Schedule, build: impl FnOnce(usize, usize, usize) -> Schedule) {
        if self.local.len() > 1 {
            s.append(build(self.local.len(), self.me_local, self.leader_local), &self.local);
        }
    }

    /// Appends a phase among the leaders, on leaders only:
    /// `build(nodes, node)`.
    fn across(&self, s: &mut Schedule, build: impl FnOnce(usize, usize) -> Schedule) {
        if self.leads() && self.leaders.len() > 1 {
            s.append(build(self.leaders.len(), self.node), &self.leaders);
        }
    }
}

/// An empty binomial fan-in to `root`, rank `me` of `n`'s rounds: a rank
/// hears from its subtree, then tells its parent (a reduction without
/// data, for a barrier, which has no operation to combine with).
pub(crate) fn fan_in(n: usize, me: usize, root: usize) -> Schedule {
    let mut s = Schedule::with_capacity(2 * crate::util::log2_ceil(n) + 2);
    let rel = (me + n - root) % n;
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            s.send((rel - mask + root) % n, Piece::work(0..0)).end_round();
            break;
        }
        if rel + mask < n {
            s.recv((rel + mask + root) % n, Piece::work(0..0)).end_round();
        }
        mask <<= 1;
    }
    s.build()
}

/// A broadcast from the root (which leads its node; see [`Tiers::new`]):
/// among the leaders (`across(m, node, root_node)`), then within each
/// node from its leader (`within(r, me, leader)`).
pub(crate) fn bcast(
    t: &Tiers,
    root_node: usize,
    across: impl FnOnce(usize, usize, usize) -> Schedule,
    within: impl FnOnce(usize, usize, usize) -> Schedule,
) -> Schedule {
    let mut s = Schedule::with_capacity(64);
    t.across(&mut s, |m, node| across(m, node, root_node));
    t.within(&mut s, within);
    s.build()
}

/// A reduction to the root (which leads its node): within each node to its
/// leader (`within(r, me, leader)`, reading the input if the call has one:
/// `input` elements), then among the leaders to the root (`across(m, node,
/// root_node)`, on the work buffers).
pub(crate) fn reduce(
    t: &Tiers,
    input: Option<usize>,
    root_node: usize,
    within: impl FnOnce(usize, usize, usize) -> Schedule,
    across: impl FnOnce(usize, usize, usize) -> Schedule,
) -> Schedule {
    let mut s = Schedule::with_capacity(64);
    t.read_input(&mut s, input);
    t.within(&mut s, within);
    t.across(&mut s, |m, node| across(m, node, root_node));
    s.build()
}

/// An all-reduce: within each node to its leader (`reduce(r, me, leader)`,
/// reading `input` elements of the input if the call has one), an
/// all-reduce among the leaders (`across(m, node)`), and a broadcast within
/// each node (`bcast(r, me, leader)`). With no input and empty phases it is
/// the barrier: every node gathers at its leader ([`fan_in`]), the leaders
/// meet, and every leader releases its node.
pub(crate) fn allreduce(
    t: &Tiers,
    input: Option<usize>,
    reduce: impl FnOnce(usize, usize, usize) -> Schedule,
    across: impl FnOnce(usize, usize) -> Schedule,
    bcast: impl FnOnce(usize, usize, usize) -> Schedule,
) -> Schedule {
    let mut s = Schedule::with_capacity(64);
    t.read_input(&mut s, input);
    t.within(&mut s, reduce);
    t.across(&mut s, across);
    t.within(&mut s, bcast);
    s.build()
}

/// A node's blocks gathered at its leader, rank `me` of `n`'s rounds: the
/// leader receives local rank `i`'s block into `landing[i]`; every rank's
/// own block is `mine` (the leader copies its own into place unless it is
/// there already).
pub(crate) fn gather_within(
    n: usize,
    me: usize,
    leader: usize,
    landing: &[Piece],
    mine: Piece,
) -> Schedule {
    let mut s = Schedule::with_capacity(n + 2);
    if me != leader {
        s.send(leader, mine);
        return s.build();
    }
    for (i, piece) in landing.iter().enumerate().filter(|&(i, _)| i != me) {
        s.recv(i, piece.clone());
    }
    if mine != landing[me] {
        s.copy(mine, landing[me].clone());
    }
    s.build()
}

/// A gather of `len` elements per rank to `root` (which leads its node;
/// see [`Tiers::new`]), into equal blocks packed in rank order at the root,
/// each node's ranks consecutive: each node gathers at its leader — the
/// root's node straight into the root's blocks, the others into the
/// leader's scratch — and every other leader sends its node's blocks to the
/// root in one message, which lands them in their place (`pieces[node]`).
/// This rank's block is read from the input when `input`, else from its
/// place in the work buffer (the root's) or its start (the others').
pub(crate) fn gather(
    t: &Tiers,
    root: usize,
    len: usize,
    pieces: &[Range<usize>],
    input: bool,
) -> Schedule {
    let mut s = Schedule::with_capacity(t.leaders.len() + t.local.len() + 4);
    let me = t.local[t.me_local];
    let at_root = me == root;
    let mine = match (input, at_root) {
        (true, _) => Piece::input(0..len),
        (false, true) => Piece::work(me * len..(me + 1) * len),
        (false, false) => Piece::work(0..len),
    };
    let landing: Vec<Piece> = if t.leaders[t.node] == root {
        t.local.iter().map(|&r| Piece::work(r * len..(r + 1) * len)).collect()
    } else {
        s.need_scratch(t.local.len() * len);
        (0..t.local.len()).map(|i| Piece::scratch(i * len..(i + 1) * len)).collect()
    };
    if t.local.len() == 1 {
        if mine != landing[0] && (at_root || t.leaders.len() > 1) {
            s.copy(mine, landing[0].clone()).end_round();
        }
    } else {
        s.append(
            gather_within(t.local.len(), t.me_local, t.leader_local, &landing, mine),
            &t.local,
        );
    }
    if at_root {
        for (node, &leader) in t.leaders.iter().enumerate().filter(|&(_, &l)| l != root) {
            s.recv(leader, Piece::work(pieces[node].clone()));
        }
    } else if t.leads() {
        s.send(root, Piece::scratch(0..t.local.len() * len));
    }
    s.build()
}

/// An all-gather of `blocks` (rank `r`'s block in `blocks[r]` of the work
/// buffer; this rank's read from the input when `input`): each node
/// gathers at its leader (`gather(r, me, leader, local_blocks)`), the
/// leaders all-gather their nodes' pieces (`across(m, node, pieces)`, each
/// node's blocks one piece: the caller checks the layout is blocked), and
/// each leader broadcasts the whole to its node (`bcast(r, me, leader)`).
pub(crate) fn allgather(
    t: &Tiers,
    blocks: &[Range<usize>],
    pieces: &[Range<usize>],
    gather: impl FnOnce(usize, usize, usize, &[Piece]) -> Schedule,
    across: impl FnOnce(usize, usize, &[Range<usize>]) -> Schedule,
    bcast: impl FnOnce(usize, usize, usize) -> Schedule,
    input: bool,
) -> Schedule {
    let mut s = Schedule::with_capacity(64);
    let me = t.local[t.me_local];
    if t.local.len() == 1 && input {
        s.copy(Piece::input(0..blocks[me].len()), Piece::work(blocks[me].clone())).end_round();
    }
    let landing: Vec<Piece> = t.local.iter().map(|&r| Piece::work(blocks[r].clone())).collect();
    t.within(&mut s, |r, me, leader| gather(r, me, leader, &landing));
    t.across(&mut s, |m, node| across(m, node, pieces));
    t.within(&mut s, bcast);
    s.build()
}
