//! **hpcomm**: an MPI-style communication runtime for tightly coupled HPC
//! programs, in Rust.
//!
//! Point-to-point messaging with MPI's semantics — tags, wildcards,
//! non-overtaking order, eager and rendezvous protocols, communicators
//! with private matching spaces — over a pluggable transport. The API is
//! safe: errors are values ([`Error`]), never aborts, and non-blocking
//! requests cannot outlive the buffers they use ([`Communicator::scope`]).
//!
//! Start with [`init`] in a program run by a launcher (a singleton without
//! one), or with [`threads`] to run ranks as threads of one process — the
//! way to test parallel code under `cargo test`:
//!
//! ```
//! let results = hpcomm::threads(3, |comm| {
//!     if comm.rank() == 0 {
//!         // Collect one greeting from each other rank, in any order.
//!         let mut from = Vec::new();
//!         for _ in 1..comm.size() {
//!             let mut buf = [0u64; 1];
//!             let status = comm.recv(&mut buf, hpcomm::Rank::ANY, 42).unwrap();
//!             assert_eq!(buf[0], status.source.0 as u64 * 100);
//!             from.push(status.source.0);
//!         }
//!         from.sort();
//!         from
//!     } else {
//!         comm.send(&[comm.rank() as u64 * 100], 0, 42).unwrap();
//!         Vec::new()
//!     }
//! })
//! .unwrap();
//! assert_eq!(results[0], vec![1, 2]);
//! ```
//!
//! The layers below are crates of their own: `hpcomm-transport` (the
//! [`Transport`](hpcomm_transport::Transport) trait and its backends),
//! `hpcomm-runtime` (matching, protocols, communicators) and
//! `hpcomm-collectives`. `docs/architecture.md` in the repository maps them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use hpcomm_runtime::{
    dims_create, init, job, launched, test_any, threads, threads_with, wait_all, wait_any,
    Cartesian, Communicator, Config, ContextId, Endpoint, Error, Group, GroupOrder, Message,
    NodeLayout, PersistentRecv, PersistentSend, Rank, Request, Result, Scope, Status, Tag,
    ThreadsConfig, ThreadsFabric, Universe,
};

/// Every `HPCOMM_*` setting.
pub use hpcomm_runtime::config;

/// Collective operations: bring the trait into scope to call them on a
/// [`Communicator`].
pub use hpcomm_collectives::{
    model, op, repro, select, window, Collectives, Neighborhood, NonBlocking, Persistent,
    PersistentCollectives,
};

/// The transports' settings: what a user configures. The transport layer
/// itself (raw endpoints, registered memory, the `Transport` trait) is the
/// `hpcomm-transport` crate, for those who build on it; it is not part of
/// this API:
///
/// ```compile_fail
/// use hpcomm::transport::Regions;
/// ```
pub mod transport {
    pub use hpcomm_transport::loopback::LoopbackConfig;
    pub use hpcomm_transport::ofi::OfiConfig;
    pub use hpcomm_transport::shm::ShmConfig;
    pub use hpcomm_transport::tcp::TcpConfig;
}

/// Element types that can be sent: plain old data.
pub use bytemuck::Pod;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
