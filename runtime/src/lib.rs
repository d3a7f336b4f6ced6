//! The hpcomm runtime: MPI-style point-to-point messaging over any
//! [`hpcomm_transport::Transport`].
//!
//! What lives here, from the bottom up:
//! - [`wire`]: every frame header, in one file.
//! - [`protocol`]: the choice between inline, eager and rendezvous.
//! - [`matching`]: the pure matching engine (posted and unexpected queues,
//!   sequence numbers per source).
//! - `engine`: the protocol as a state machine with no I/O (`engine/state.rs`),
//!   its requests (`engine/requests.rs`) and the driver between it and the
//!   transport (`Engine`).
//! - [`Communicator`], [`Scope`] and [`Request`]: the public API, with MPI's
//!   semantics as the reference.
//! - [`task`]: state machines the engine advances by itself (non-blocking
//!   collectives).
//! - [`Universe`], [`init`], [`threads`]: joining a job; [`Endpoint`]
//!   and [`Communicator::endpoints`]: endpoints of their own for threads
//!   that communicate at once (an endpoint serves one thread at a time).
//! - `shared`: an endpoint's engine as its communicators share it across
//!   threads.
//! - [`Config`]: every `HPCOMM_*` setting; [`bootstrap`]: joining a job
//!   started by a launcher (`hpcomm run`, PMI-1, PMI-2, PMIx, AWS Batch).
//!
//! Users normally depend on the `hpcomm` crate, which re-exports this API.
//!
//! ```
//! let sums = hpcomm_runtime::threads(4, |comm| {
//!     let right = (comm.rank() + 1) % comm.size();
//!     let left = (comm.rank() + comm.size() - 1) % comm.size();
//!     let mut got = [0u32];
//!     comm.sendrecv(&[comm.rank() as u32], right, 0, &mut got, left, 0).unwrap();
//!     got[0]
//! })
//! .unwrap();
//! assert_eq!(sums, vec![3, 0, 1, 2]);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bootstrap;
mod comm;
pub mod config;
mod contexts;
mod endpoint;
mod engine;
mod error;
mod group;
pub mod matching;
mod message;
mod nodes;
mod one_sided;
mod persistent;
pub mod protocol;
mod request;
mod shared;
pub mod task;
mod topology;
mod types;
mod universe;
pub mod wire;

pub use comm::Communicator;
pub use config::{Config, Launch, TransportChoice};
pub use endpoint::Endpoint;
pub use error::{Error, Result};
pub use group::{Group, GroupOrder};
pub use message::Message;
pub use nodes::NodeLayout;
pub use one_sided::RemoteRegion;
pub use persistent::{PersistentRecv, PersistentSend};
pub use request::{test_any, wait_all, wait_any, Request, Scope};
pub use topology::{dims_create, Cartesian};
pub use types::{ContextId, Rank, Status, Tag};
pub use universe::{
    init, job, launched, threads, threads_with, ThreadsConfig, ThreadsFabric, Universe,
};
