//! The transport conformance suite over the shared-memory backend, with
//! single-copy reads (process_vm_readv) and with the pipelined fallback.

use hpcomm_transport::conformance;
use hpcomm_transport::shm::{Shm, ShmConfig};

#[test]
fn shm_with_single_copy_reads() {
    conformance::run_all(|n| Shm::local_job(n, &ShmConfig::default()).expect("shm job"));
}

#[test]
fn shm_without_single_copy_reads() {
    conformance::run_all(|n| {
        Shm::local_job(n, &ShmConfig { cma: false, ..ShmConfig::default() }).expect("shm job")
    });
}

#[test]
fn shm_with_small_rings() {
    conformance::run_all(|n| {
        Shm::local_job(
            n,
            &ShmConfig { ring_bytes: Some(16 << 10), eager_limit: 1024, ..ShmConfig::default() },
        )
        .expect("shm job")
    });
}
