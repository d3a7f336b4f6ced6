//! `hpcomm startup`: how long joining a job takes, for `ci/startup.sh`.
//! Every rank joins (`hpcomm::init`) and passes one barrier; rank 0 then
//! prints the wall-clock time (µs since the epoch, comparable with the
//! launch time the script took) and its own share: `init` and the barrier.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hpcomm::Collectives;

/// Runs this rank's part; the exit code.
pub fn run() -> i32 {
    let started = Instant::now();
    let outcome = (|| -> hpcomm::Result<()> {
        let universe = hpcomm::init()?;
        let joined = started.elapsed();
        let world = universe.world();
        world.barrier()?;
        let done = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        if world.rank() == 0 {
            println!(
                "startup ranks={} transport={} barrier_end_us={done} init_us={} first_barrier_us={}",
                world.size(),
                world.transport_name(),
                joined.as_micros(),
                (started.elapsed() - joined).as_micros()
            );
        }
        universe.finalize()
    })();
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hpcomm startup: {e}");
            1
        }
    }
}
