//! Small value types of the public API: ranks, tags, context ids, status.

use std::fmt;

/// A rank argument: a process in a communicator, or one of the special
/// values [`Rank::ANY`] (receives only) and [`Rank::NULL`] (operations with it
/// complete at once and move no data).
///
/// Plain integers convert: `comm.send(&buf, 1, 0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rank(pub i32);

impl Rank {
    /// Any source (`MPI_ANY_SOURCE`), for receives and probes.
    pub const ANY: Rank = Rank(-1);
    /// The null process (`MPI_PROC_NULL`).
    pub const NULL: Rank = Rank(-2);

    /// The rank as an index, if it names a process.
    pub fn index(self) -> Option<usize> {
        usize::try_from(self.0).ok()
    }
}

impl From<i32> for Rank {
    fn from(r: i32) -> Self {
        Rank(r)
    }
}

impl From<usize> for Rank {
    /// Indices too large for a rank become a rank that no communicator has.
    fn from(r: usize) -> Self {
        Rank(i32::try_from(r).unwrap_or(i32::MAX))
    }
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rank::ANY => f.write_str("ANY"),
            Rank::NULL => f.write_str("NULL"),
            Rank(r) => r.fmt(f),
        }
    }
}

/// A message tag: `0..=Tag::MAX`, or [`Tag::ANY`] for receives and probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub i32);

impl Tag {
    /// Any tag (`MPI_ANY_TAG`), for receives and probes.
    pub const ANY: Tag = Tag(-1);
    /// The largest valid tag (`MPI_TAG_UB`).
    pub const MAX: Tag = Tag(i32::MAX);
}

impl From<i32> for Tag {
    fn from(t: i32) -> Self {
        Tag(t)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Tag::ANY => f.write_str("ANY"),
            Tag(t) => t.fmt(f),
        }
    }
}

/// Identifies a communicator's matching space. Each communicator owns two:
/// an even one for point-to-point and the next odd one for its collectives,
/// so that their messages never match each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextId(pub u32);

impl ContextId {
    /// The world communicator's point-to-point context.
    pub const WORLD: ContextId = ContextId(0);

    /// The companion context for collective traffic.
    pub fn collective(self) -> ContextId {
        ContextId(self.0 | 1)
    }

    /// Whether this is a companion context for collective traffic.
    #[inline]
    pub fn is_collective(self) -> bool {
        self.0 & 1 == 1
    }
}

/// What a completed receive (or probe) tells about its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The sender's rank in the communicator ([`Rank::NULL`] for a receive
    /// from the null process; for a send, the sending rank).
    pub source: Rank,
    /// The message's tag.
    pub tag: Tag,
    /// Elements of the receive buffer's type in the message (for a probe,
    /// bytes: a probe has no buffer).
    pub count: usize,
}

impl Status {
    /// The status of an operation with the null process, or of a request
    /// that was already completed (MPI's "empty status").
    pub const EMPTY: Status = Status { source: Rank::NULL, tag: Tag::ANY, count: 0 };
}
