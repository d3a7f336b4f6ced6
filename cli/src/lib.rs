//! The library half of the `hpcomm` command: the self-test suite, which the
//! command runs as `hpcomm selftest` and this package's tests run with ranks
//! as threads. It is the command's, not part of the `hpcomm` API that
//! programs link.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod selftest;
