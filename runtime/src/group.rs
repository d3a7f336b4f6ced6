//! Process groups (`MPI_Group`) and communicators made from them.
//!
//! A [`Group`] is an ordered set of the job's processes, taken from a
//! communicator ([`Communicator::group`]) and combined with set operations
//! that keep MPI's orders: a union lists the first group then the second's
//! others, an intersection and a difference keep the first group's order,
//! `incl` and `excl` pick by rank. It is a description only; no
//! communication happens until a communicator is made from it:
//!
//! - [`Communicator::create_group`] (`MPI_Comm_create_group`): collective
//!   over the group's members only — the rest of the communicator need not
//!   take part, so a subset can make its own communicator while the others
//!   compute;
//! - [`Communicator::create`] (`MPI_Comm_create`): collective over the
//!   whole communicator, every rank passing the same group.
//!
//! The new communicator's ranks follow the group's order.
//!
//! ```
//! hpcomm_runtime::threads(6, |comm| {
//!     let world = comm.group();
//!     let evens = world.incl(&[0, 2, 4]).unwrap();
//!     let firsts = world.incl(&[0, 1, 2]).unwrap();
//!     assert_eq!(evens.union(&firsts).size(), 4);
//!     assert_eq!(evens.translate_ranks(&[1, 2], &world).unwrap(), [Some(2), Some(4)]);
//!     if comm.rank() % 2 == 0 {
//!         // Only the even ranks take part.
//!         let sub = comm.create_group(&evens, 0).unwrap().expect("a member");
//!         assert_eq!((sub.size(), sub.rank()), (3, comm.rank() / 2));
//!     }
//! })
//! .unwrap();
//! ```

use std::sync::Arc;

use hpcomm_transport::PeerId;

use crate::comm::{Communicator, GROUP_TAG};
use crate::error::{Error, Result};
use crate::types::Tag;

/// An ordered set of processes (`MPI_Group`), from
/// [`Communicator::group`] and the set operations below; a communicator of
/// its members comes from [`Communicator::create_group`]. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The members' world peers, in group order.
    members: Arc<[PeerId]>,
    /// This process's world peer.
    own: PeerId,
}

/// How two groups compare (`MPI_Group_compare`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupOrder {
    /// The same members in the same order (`MPI_IDENT`).
    Identical,
    /// The same members in another order (`MPI_SIMILAR`).
    Similar,
    /// Different members (`MPI_UNEQUAL`).
    Unequal,
}

impl Group {
    fn of(&self, members: Vec<PeerId>) -> Group {
        Group { members: members.into(), own: self.own }
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// This process's rank in the group; `None` when it is not a member
    /// (`MPI_UNDEFINED`).
    pub fn rank(&self) -> Option<usize> {
        self.position(self.own)
    }

    fn position(&self, peer: PeerId) -> Option<usize> {
        self.members.iter().position(|&m| m == peer)
    }

    fn contains(&self, peer: PeerId) -> bool {
        self.members.contains(&peer)
    }

    /// This group's members, then `other`'s that are not among them
    /// (`MPI_Group_union`).
    pub fn union(&self, other: &Group) -> Group {
        let mut members = self.members.to_vec();
        members.extend(other.members.iter().filter(|&&m| !self.contains(m)));
        self.of(members)
    }

    /// This group's members that are also in `other`, in this group's
    /// order (`MPI_Group_intersection`).
    pub fn intersection(&self, other: &Group) -> Group {
        self.of(self.members.iter().copied().filter(|&m| other.contains(m)).collect())
    }

    /// This group's members that are not in `other`, in this group's order
    /// (`MPI_Group_difference`).
    pub fn difference(&self, other: &Group) -> Group {
        self.of(self.members.iter().copied().filter(|&m| !other.contains(m)).collect())
    }

    /// Checks `ranks`: each inside the group, none twice.
    fn check(&self, what: &str, ranks: &[usize]) -> Result<()> {
        let mut seen = vec![false; self.size()];
        for &r in ranks {
            match seen.get_mut(r) {
                None => {
                    return Err(Error::InvalidGroup(format!(
                        "{what}: rank {r} is outside the group of {}",
                        self.size()
                    )))
                }
                Some(true) => {
                    return Err(Error::InvalidGroup(format!("{what}: rank {r} named twice")))
                }
                Some(s) => *s = true,
            }
        }
        Ok(())
    }

    /// The members of ranks `ranks`, in that order (`MPI_Group_incl`). A
    /// rank outside the group or named twice is an [`Error::InvalidGroup`].
    pub fn incl(&self, ranks: &[usize]) -> Result<Group> {
        self.check("incl", ranks)?;
        Ok(self.of(ranks.iter().map(|&r| self.members[r]).collect()))
    }

    /// The members but those of ranks `ranks`, in this group's order
    /// (`MPI_Group_excl`). A rank outside the group or named twice is an
    /// [`Error::InvalidGroup`].
    pub fn excl(&self, ranks: &[usize]) -> Result<Group> {
        self.check("excl", ranks)?;
        let members =
            self.members.iter().enumerate().filter(|(r, _)| !ranks.contains(r)).map(|(_, &m)| m);
        Ok(self.of(members.collect()))
    }

    /// The ranks in `other` of this group's members of ranks `ranks`;
    /// `None` for those not in `other` (`MPI_Group_translate_ranks`). A
    /// rank outside this group is an [`Error::InvalidGroup`].
    pub fn translate_ranks(&self, ranks: &[usize], other: &Group) -> Result<Vec<Option<usize>>> {
        ranks
            .iter()
            .map(|&r| match self.members.get(r) {
                Some(&m) => Ok(other.position(m)),
                None => Err(Error::InvalidGroup(format!(
                    "translate_ranks: rank {r} is outside the group of {}",
                    self.size()
                ))),
            })
            .collect()
    }

    /// How this group compares with `other` (`MPI_Group_compare`).
    pub fn compare(&self, other: &Group) -> GroupOrder {
        if self.members == other.members {
            GroupOrder::Identical
        } else if self.size() == other.size() && self.members.iter().all(|&m| other.contains(m)) {
            GroupOrder::Similar
        } else {
            GroupOrder::Unequal
        }
    }
}

impl Communicator {
    /// The communicator's processes, in rank order (`MPI_Comm_group`).
    pub fn group(&self) -> Group {
        Group { members: self.peers().into(), own: self.peers()[self.rank()] }
    }

    /// The ranks here of `group`'s members, in group order; an
    /// [`Error::InvalidGroup`] for a member outside this communicator.
    fn ranks_of(&self, group: &Group) -> Result<Vec<usize>> {
        let peers = self.peers();
        group
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                peers.iter().position(|p| p == m).ok_or_else(|| {
                    Error::InvalidGroup(format!(
                        "member {i} of the group (process {m}) is not in this communicator"
                    ))
                })
            })
            .collect()
    }

    /// A communicator of `group`'s members, ranked in group order
    /// (`MPI_Comm_create_group`). Collective over the group's members only:
    /// each calls it with the same group and `tag`; `None` at once on a
    /// process that is not a member. A member outside this communicator is
    /// an [`Error::InvalidGroup`], found before anything is sent; members
    /// that pass different tags get [`Error::CollectiveMismatch`].
    pub fn create_group(&self, group: &Group, tag: impl Into<Tag>) -> Result<Option<Communicator>> {
        let tag = Communicator::check_send_tag(tag.into())?;
        let members = self.ranks_of(group)?;
        let Some(me) = members.iter().position(|&r| r == self.rank()) else {
            return Ok(None);
        };
        let _claim = self.engine().claim()?;
        let (next, free) = self.context_offer()?;
        let mine = [u64::from(tag as u32), 0, u64::from(next), free];
        let all = self.exchange_in(members.len(), me, |i| members[i], mine, GROUP_TAG)?;
        // Every member agrees on the context from the same records; on a
        // mismatch the communicator is dropped at once, which gives the
        // context back.
        let made = self.derive(self.agree_context(&all)?, me, &members)?;
        if all.iter().any(|rec| rec[0] != mine[0]) {
            drop(made);
            return Err(Error::CollectiveMismatch(format!(
                "create_group: members passed different tags (this one {tag})"
            )));
        }
        Ok(Some(made))
    }

    /// A communicator of `group`'s members, ranked in group order
    /// (`MPI_Comm_create`). Collective over this whole communicator, every
    /// rank passing the same group; `None` on the others.
    pub fn create(&self, group: &Group) -> Result<Option<Communicator>> {
        let members = self.ranks_of(group)?;
        let me = members.iter().position(|&r| r == self.rank());
        let color = me.map(|_| 0);
        let key = me.unwrap_or(0) as i32;
        self.split(color, key)
    }
}
