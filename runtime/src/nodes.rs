//! Where a communicator's ranks are: which of them share a node.
//!
//! Node-aware collectives (reduce within the node over shared memory, one
//! rank per node on the network) need the same picture on every rank
//! before they choose an algorithm, without a collective call of their
//! own: a rank that chose differently from the others would wait for
//! messages nobody sends. So the layout is learnt when a communicator is
//! made — the world's once at start-up, by an exchange of node names every
//! rank takes part in; a `dup` or `split` derives its own from its
//! parent's — and never changes.

use std::collections::HashMap;

/// The nodes of a communicator's ranks, the same on every rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLayout {
    /// The node of each rank: nodes numbered in the order of their first
    /// rank.
    node: Box<[u32]>,
    count: usize,
    /// A fingerprint of the layout, equal for equal layouts.
    id: u64,
}

impl NodeLayout {
    /// The layout from the node key of each rank (equal keys, same node).
    pub fn from_keys(keys: &[u64]) -> NodeLayout {
        let mut index: HashMap<u64, u32> = HashMap::new();
        let node: Box<[u32]> = keys
            .iter()
            .map(|&k| {
                let next = index.len() as u32;
                *index.entry(k).or_insert(next)
            })
            .collect();
        let count = index.len();
        NodeLayout::new(node, count)
    }

    fn new(node: Box<[u32]>, count: usize) -> NodeLayout {
        // FNV-1a over the node numbers: equal layouts, equal ids.
        let id =
            node.iter().flat_map(|n| n.to_le_bytes()).fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        NodeLayout { node, count, id }
    }

    /// The layout of the ranks `members` (ranks of this layout) in their
    /// new order, as a `split` makes it.
    pub(crate) fn select(&self, members: impl IntoIterator<Item = usize>) -> NodeLayout {
        let keys: Vec<u64> = members.into_iter().map(|r| u64::from(self.node[r])).collect();
        NodeLayout::from_keys(&keys)
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.node.len()
    }

    /// The number of nodes.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The node of `rank`, `0..count()`.
    pub fn node_of(&self, rank: usize) -> usize {
        self.node[rank] as usize
    }

    /// The ranks on node `node`, in rank order.
    pub fn ranks_of(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.node.iter().enumerate().filter(move |(_, &n)| n as usize == node).map(|(r, _)| r)
    }

    /// The most ranks any node has.
    pub fn widest(&self) -> usize {
        let mut sizes = vec![0usize; self.count];
        for &n in self.node.iter() {
            sizes[n as usize] += 1;
        }
        sizes.into_iter().max().unwrap_or(0)
    }

    /// Whether each node's ranks are consecutive (block placement, as
    /// `hpcomm run` and Slurm place them by default).
    pub fn blocked(&self) -> bool {
        self.node.windows(2).all(|w| w[1] == w[0] || w[1] as usize == w[0] as usize + 1)
    }

    /// A fingerprint: equal layouts have equal ids (for keeping plans
    /// built for one layout apart from another's).
    pub fn id(&self) -> u64 {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_numbered_by_their_first_rank() {
        let l = NodeLayout::from_keys(&[9, 9, 4, 9, 4, 7]);
        assert_eq!((0..6).map(|r| l.node_of(r)).collect::<Vec<_>>(), [0, 0, 1, 0, 1, 2]);
        assert_eq!(l.count(), 3);
        assert_eq!(l.widest(), 3);
        assert_eq!(l.ranks_of(1).collect::<Vec<_>>(), [2, 4]);
        assert!(!l.blocked());
        let blocked = NodeLayout::from_keys(&[5, 5, 3, 3, 3, 8]);
        assert!(blocked.blocked());
        assert_ne!(l.id(), blocked.id());
        assert_eq!(NodeLayout::from_keys(&[1, 1, 2]).id(), NodeLayout::from_keys(&[7, 7, 3]).id());
    }

    #[test]
    fn a_split_keeps_the_nodes_of_its_members() {
        let l = NodeLayout::from_keys(&[1, 1, 2, 2, 3, 3]);
        let odd = l.select([5, 3, 1]);
        assert_eq!((0..3).map(|r| odd.node_of(r)).collect::<Vec<_>>(), [0, 1, 2]);
        let pair = l.select([2, 3]);
        assert_eq!(pair.count(), 1);
    }
}
