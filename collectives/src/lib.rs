//! Collective operations for hpcomm, built on the runtime's point-to-point
//! operations in each communicator's collective context, so that their
//! messages never match a user's receive.
//!
//! This crate is the layer between `hpcomm-runtime` and the public `hpcomm`
//! crate; the algorithms (one per file, each with its cost in α-β-γ terms)
//! and their selection arrive with the collectives issue. Until then the
//! runtime's own communicator construction and finalization use a private
//! ring exchange and dissemination barrier.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use hpcomm_runtime::Communicator;
