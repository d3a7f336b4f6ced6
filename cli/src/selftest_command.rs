//! `hpcomm selftest`: the self-test suite (`hpcomm_cli::selftest`) on this
//! job's ranks, under any launcher; alone, as a single rank.

use std::time::Duration;

/// `selftest --crash VICTIM`: all_reduce calls until `victim` kills itself
/// in the middle of them; the others' calls must fail with `PeerFailed`.
fn crash_during_all_reduce(world: &hpcomm::Communicator, victim: usize) -> hpcomm::Result<()> {
    use hpcomm::Collectives;
    let send = vec![1.0f64; 1 << 17];
    let mut recv = vec![0.0f64; 1 << 17];
    for round in 0..1_000_000u64 {
        if round == 3 && world.rank() == victim {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
        if let Err(e) = world.all_reduce(&send, &mut recv, hpcomm::op::Sum) {
            // One write, so that the lines of several ranks do not mix.
            let line =
                format!("hpcomm selftest: rank {}: all_reduce {round} failed: {e}\n", world.rank());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            std::process::exit(3);
        }
    }
    Err(hpcomm::Error::Timeout { after: Duration::ZERO, what: "a failure that never came".into() })
}

/// Runs the self-test cases in this rank; rank 0 reports. Returns the exit
/// code (a failing check panics, which ends the rank and so the job).
pub fn run(names: &[String], list: bool, crash: Option<usize>) -> i32 {
    use hpcomm_cli::selftest::{case, CASES};
    if list {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A reader that went away (`| head`) ends the list, not the program.
        for c in CASES {
            if writeln!(out, "{:<17} (at least {} ranks)", c.name, c.min_ranks).is_err() {
                break;
            }
        }
        return 0;
    }
    let cases: Vec<_> = if names.is_empty() {
        CASES.iter().collect()
    } else {
        match names.iter().map(|n| case(n).ok_or(n)).collect::<Result<Vec<_>, _>>() {
            Ok(cases) => cases,
            Err(name) => {
                eprintln!("hpcomm selftest: no case {name:?} (see --list)");
                return 2;
            }
        }
    };
    let outcome = (|| -> hpcomm::Result<()> {
        let universe = hpcomm::init()?;
        let world = universe.world();
        if let Some(victim) = crash {
            return crash_during_all_reduce(world, victim);
        }
        for c in &cases {
            let ran = c.run(world)?;
            if world.rank() == 0 {
                match ran {
                    true => println!(
                        "ok   {} ({} ranks over {})",
                        c.name,
                        world.size(),
                        world.transport_name()
                    ),
                    false => println!("skip {} (needs {} ranks)", c.name, c.min_ranks),
                }
            }
        }
        universe.finalize()
    })();
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hpcomm selftest: {e}");
            1
        }
    }
}
