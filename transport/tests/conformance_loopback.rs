//! The transport conformance suite over the loopback backend, with reads on
//! (single-copy rendezvous) and off (as a backend without RMA).

use hpcomm_transport::conformance;
use hpcomm_transport::loopback::{Loopback, LoopbackConfig};

#[test]
fn loopback_with_reads() {
    conformance::run_all(|n| Loopback::fabric(n, LoopbackConfig::default()));
}

#[test]
fn loopback_without_reads() {
    conformance::run_all(|n| {
        Loopback::fabric(n, LoopbackConfig { rma_read: false, ..LoopbackConfig::default() })
    });
}

#[test]
fn loopback_with_tiny_queues() {
    conformance::run_all(|n| {
        Loopback::fabric(
            n,
            LoopbackConfig {
                capacity: 1,
                max_payload: 4096,
                eager_limit: 1024,
                ..LoopbackConfig::default()
            },
        )
    });
}
