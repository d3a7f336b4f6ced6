//! The error type of every fallible hpcomm call.

use std::time::Duration;

use hpcomm_transport::TransportError;

/// What went wrong. Bad arguments are reported before anything is sent, and
/// leave the communicator usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rank outside the communicator (or a wildcard where none is allowed).
    #[error("invalid rank {rank} for a communicator of {size} ranks")]
    InvalidRank {
        /// The rank given.
        rank: i32,
        /// The communicator's size.
        size: usize,
    },
    /// A tag outside `0..=Tag::MAX` (or `Tag::ANY` where none is allowed).
    #[error("invalid tag {tag}: tags go from 0 to {max}")]
    InvalidTag {
        /// The tag given.
        tag: i32,
        /// The largest tag.
        max: i32,
    },
    /// A root outside the communicator.
    #[error("invalid root {root} for a communicator of {size} ranks")]
    InvalidRoot {
        /// The root given.
        root: i32,
        /// The communicator's size.
        size: usize,
    },
    /// A count, length or size that cannot be honoured.
    #[error("invalid count: {0}")]
    InvalidCount(String),
    /// The message is longer than the receive buffer. The message has been
    /// consumed; the buffer's contents are unspecified.
    #[error("message truncated: {needed} bytes sent, the receive buffer holds {capacity}")]
    Truncated {
        /// Bytes in the message.
        needed: usize,
        /// Bytes in the receive buffer.
        capacity: usize,
    },
    /// The message is not a whole number of the receive buffer's elements.
    #[error("a message of {bytes} bytes is not a whole number of {elem_size}-byte elements")]
    PartialElement {
        /// Bytes in the message.
        bytes: usize,
        /// Size of one element of the receive buffer.
        elem_size: usize,
    },
    /// A peer this operation depends on has failed or exited.
    #[error("rank {rank} (world) failed or exited before the operation completed")]
    PeerFailed {
        /// The peer's rank in the world communicator.
        rank: usize,
    },
    /// A peer this operation depends on stopped answering: nothing sent to
    /// it was acknowledged, and it answered no keep-alive probe, within the
    /// transport's peer timeout (`HPCOMM_TCP_TIMEOUT`) — a cut link or a
    /// dead host. Like [`Error::PeerFailed`], the peer is gone for good.
    #[error(
        "rank {rank} (world) stopped answering within the peer timeout (a cut link or a dead host)"
    )]
    PeerUnresponsive {
        /// The peer's rank in the world communicator.
        rank: usize,
    },
    /// An operation did not complete within its bound.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The bound.
        after: Duration,
        /// What was awaited.
        what: String,
    },
    /// Starting the job failed.
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    /// An `HPCOMM_*` setting or an option is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] TransportError),
    /// Ranks called a collective operation with arguments that do not fit
    /// together (a length, count or root that differs between ranks). The
    /// operation still ran to its end on every rank, so none is left
    /// waiting; the data it produced is unspecified.
    #[error("collective arguments differ between ranks: {0}")]
    CollectiveMismatch(String),
    /// A request or handle used in a way its state does not allow: starting
    /// a persistent request that is still active, or with another
    /// communicator's scope, or a message handle received on another
    /// communicator. Nothing was started; the communicator stays usable.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A group that does not fit the call: a rank outside the group or
    /// named twice, or a member outside the communicator.
    #[error("invalid group: {0}")]
    InvalidGroup(String),
    /// The endpoint is in use by another thread: an endpoint (the
    /// universe's, or one of [`Communicator::endpoints`]) serves one thread
    /// at a time, and a call made while another thread is inside a call or
    /// a scope on it is refused. Nothing was started; the endpoint stays
    /// usable, by one thread at a time.
    ///
    /// [`Communicator::endpoints`]: crate::Communicator::endpoints
    #[error(
        "the endpoint is in use by another thread (an endpoint serves one thread at a time; \
         open one per thread with Communicator::endpoints)"
    )]
    Busy,
    /// A one-sided access outside the target's window (`MPI_ERR_RMA_RANGE`):
    /// nothing was sent; the window stays usable.
    #[error(
        "window access out of range: {count} bytes at byte {offset} of rank {target}'s window \
         of {size} bytes"
    )]
    WindowRange {
        /// The target rank.
        target: usize,
        /// The first byte accessed.
        offset: usize,
        /// Bytes accessed.
        count: usize,
        /// The target window's size in bytes.
        size: usize,
    },
    /// A one-sided call the window's synchronisation state does not allow
    /// (`MPI_ERR_RMA_SYNC`): an access outside an access epoch, an unlock
    /// without a lock, a fence while locks are held. Nothing was sent; the
    /// window stays usable.
    #[error("window synchronisation: {0}")]
    WindowSync(String),
    /// A peer sent something this version cannot understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The world rank of the lost peer, when the error is a peer's loss
    /// ([`Error::PeerFailed`] or [`Error::PeerUnresponsive`]).
    pub fn lost_peer(&self) -> Option<usize> {
        match self {
            Error::PeerFailed { rank } | Error::PeerUnresponsive { rank } => Some(*rank),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
