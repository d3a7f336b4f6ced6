//! Helpers shared by the integration tests: a watchdog, and the transport
//! settings every semantic test runs under.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use hpcomm::transport::LoopbackConfig;
use hpcomm::{Communicator, Config, ThreadsConfig, ThreadsFabric};

/// Runs `f` on another thread and fails the whole test binary if it takes
/// longer than `secs`: a hang must fail, not stall CI.
pub fn watchdog<R: Send + 'static>(
    secs: u64,
    name: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("test-{name}"))
        .spawn(move || {
            let r = f();
            let _ = tx.send(());
            r
        })
        .expect("spawn test thread");
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("watchdog: test {name} still running after {secs} s: treating it as hung");
            std::process::exit(3);
        }
    }
}

/// The settings the semantic tests run under, each reaching other paths of
/// the protocol engine:
/// - `read`: the defaults (rendezvous by reading the sender's buffer);
/// - `pipeline`: no reads (rendezvous by clear-to-send and data frames);
/// - `tight`: a small eager limit, no inline sends, and queues of 4 frames,
///   so that back-pressure and queued sends happen all the time.
pub fn settings() -> Vec<(&'static str, ThreadsConfig)> {
    let base = ThreadsConfig::default();
    vec![
        ("read", base.clone()),
        (
            "pipeline",
            ThreadsConfig {
                loopback: LoopbackConfig { rma_read: false, ..LoopbackConfig::default() },
                ..base.clone()
            },
        ),
        (
            "tight",
            ThreadsConfig {
                loopback: LoopbackConfig {
                    capacity: 4,
                    max_payload: 4096,
                    eager_limit: 4096,
                    inline_limit: 0,
                    rma_read: true,
                },
                runtime: Config { eager_limit: Some(256), ..Config::default() },
                fabric: ThreadsFabric::Loopback,
                ranks_per_node: None,
            },
        ),
    ]
}

/// Runs `f` on `n` ranks under `config`, labelling failures.
pub fn run<R: Send>(
    label: &str,
    n: usize,
    config: &ThreadsConfig,
    f: impl Fn(&Communicator) -> R + Sync,
) -> Vec<R> {
    hpcomm::threads_with(n, config, f).unwrap_or_else(|e| panic!("{label}: {e}"))
}
