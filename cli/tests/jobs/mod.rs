//! What the tests that run whole jobs share: a clean command, output as
//! text, and the check that a self-test job passed.
#![allow(dead_code)]

use std::process::{Command, Output};

/// The `hpcomm` command under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_hpcomm");

/// `program` with none of the caller's `HPCOMM_*` settings (tests set what
/// they need), nor another launcher's variables.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars() {
        let foreign = ["PMI_", "PMIX_", "SLURM_", "OMPI_", "AWS_BATCH_"];
        if key.starts_with("HPCOMM_") || foreign.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The self-test cases that fit `n` ranks.
pub fn fitting_cases(n: usize) -> usize {
    hpcomm_cli::selftest::CASES.iter().filter(|c| c.min_ranks <= n).count()
}

/// Checks a `selftest` job of `n` ranks: it succeeded, every case that fits
/// `n` ranks passed, and each passed case names the transport (`over`).
/// The problem, with the job's output, otherwise.
pub fn suite_passed(out: &Output, n: usize, over: &str) -> Result<(), String> {
    let stdout = text(&out.stdout);
    let passed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ok ")).collect();
    let fitting = fitting_cases(n);
    let problem = if !out.status.success() {
        format!("the job failed ({}): {}", out.status, text(&out.stderr))
    } else if passed.len() != fitting {
        format!("{} of {fitting} cases passed", passed.len())
    } else if let Some(line) = passed.iter().find(|l| !l.contains(over)) {
        format!("not {over}: {line}")
    } else {
        return Ok(());
    };
    Err(format!("{problem}\n{stdout}"))
}
