//! Jobs of many processes on this 2-core machine: 256 ranks over shm and
//! over tcp join, pass a barrier, send a token around the ring and agree on
//! an `all_reduce` (`hpcomm startup` checks both on every rank). 512 ranks
//! are `ci/scale.sh`'s.

#[path = "../../tests/common/mod.rs"]
mod common;
mod jobs;

use common::watchdog;
use jobs::text;

/// Runs `hpcomm startup` as `ranks` processes over `transport`; the line
/// rank 0 printed after its checks.
fn checked_job(ranks: usize, transport: &str) -> String {
    let exe = env!("CARGO_BIN_EXE_hpcomm");
    let n = ranks.to_string();
    let out = jobs::command(jobs::EXE)
        .args(["run", "-n", &n, "--transport", transport, "--timeout", "300", "--", exe, "startup"])
        .output()
        .expect("run hpcomm");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{ranks} ranks over {transport}: {}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    let line = stdout.lines().find(|l| l.starts_with("checked ")).unwrap_or_default().to_string();
    assert!(
        line.contains(&format!("ranks={ranks} ring=ok all_reduce=ok")),
        "{ranks} ranks over {transport}: {stdout}"
    );
    line
}

#[test]
fn two_hundred_fifty_six_ranks_over_shm() {
    watchdog(600, "256 ranks over shm", || {
        checked_job(256, "shm");
    });
}

#[test]
fn two_hundred_fifty_six_ranks_over_tcp() {
    watchdog(600, "256 ranks over tcp", || {
        checked_job(256, "tcp");
    });
}
