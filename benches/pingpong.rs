//! Ping-pong round trips through the public API, with criterion:
//!
//! ```text
//! cargo bench --bench pingpong                      # loopback and shm, ranks as threads
//! cargo bench --bench pingpong --no-run             # then, under the launcher:
//! hpcomm run -n 2 --transport tcp --hosts a,b -- target/release/deps/pingpong-<hash> --bench
//! ```
//!
//! Each iteration is one round trip (`send` then `recv` on the measuring
//! rank); one-way latency is half of it. Ranks as threads: over loopback
//! (`hpcomm::threads`) and over the shm backend (two endpoints of one
//! process, each with a thread and a universe of its own). Under `hpcomm
//! run`, on any transport and hosts (an EFA placement group too): rank 0
//! measures, rank 1 echoes, other ranks wait.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use hpcomm::{Collectives, Communicator, Result, Tag, Universe};
use hpcomm_transport::shm::{Shm, ShmConfig};
use hpcomm_transport::Backend;

const SIZES: &[usize] = &[8, 1024, 65536, 1 << 20];
const PING: Tag = Tag(1);
const STOP: Tag = Tag(2);

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

/// Rank 0: measures a round trip to rank 1 per size, then stops the echo.
fn measure(c: &mut Criterion, comm: &Communicator, what: &str) -> Result<()> {
    let mut group = c.benchmark_group(format!("pingpong/{what}"));
    let mut failure = None;
    for &size in SIZES {
        let msg = vec![1u8; size];
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(2 * size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                if failure.is_some() {
                    return;
                }
                let round = comm.send(&msg, 1, PING).and_then(|()| comm.recv(&mut buf, 1, PING));
                if let Err(e) = round {
                    failure = Some(e);
                }
            })
        });
    }
    group.finish();
    comm.send(&[0u8; 0], 1, STOP)?;
    failure.map_or(Ok(()), Err)
}

/// Rank 1: sends back every ping, with its length, until the stop.
fn echo(comm: &Communicator) -> Result<()> {
    let mut buf = vec![0u8; SIZES.iter().copied().max().unwrap_or(0)];
    loop {
        let status = comm.recv(&mut buf, 0, Tag::ANY)?;
        if status.tag == STOP {
            return Ok(());
        }
        comm.send(&buf[..status.count], 0, PING)?;
    }
}

fn pair(c: &mut Criterion, comm: &Communicator, what: &str) -> Result<()> {
    match comm.rank() {
        0 => measure(c, comm, what),
        1 => echo(comm),
        _ => Ok(()),
    }
}

/// Criterion's state stays on the thread of rank 0, which makes its own.
fn threads_over_loopback() {
    let results = hpcomm::threads(2, |comm| {
        let mut c = criterion();
        let outcome = pair(&mut c, comm, "loopback-threads");
        if comm.rank() == 0 {
            c.final_summary();
        }
        outcome
    })
    .expect("a loopback job");
    for r in results {
        r.expect("ping-pong over loopback");
    }
}

fn threads_over_shm(c: &mut Criterion) {
    let endpoints = Shm::local_job(2, &ShmConfig::default()).expect("an shm job");
    std::thread::scope(|s| {
        let mut endpoints = endpoints.into_iter();
        let (a, b) = (endpoints.next().expect("rank 0"), endpoints.next().expect("rank 1"));
        let peer = s.spawn(move || {
            let config = hpcomm::Config::from_env().expect("configuration");
            let universe = Universe::from_transport(Backend::Shm(b), config);
            echo(universe.world()).and_then(|()| universe.finalize())
        });
        let config = hpcomm::Config::from_env().expect("configuration");
        let universe = Universe::from_transport(Backend::Shm(a), config);
        measure(c, universe.world(), "shm-threads").expect("ping-pong over shm");
        universe.finalize().expect("finalize");
        peer.join().expect("the echo thread").expect("echo over shm");
    });
}

fn main() {
    let mut c = criterion();
    if hpcomm::launched() {
        let universe = hpcomm::init().expect("hpcomm::init under the launcher");
        let comm = universe.world();
        if comm.size() < 2 {
            eprintln!("pingpong: needs 2 ranks or more under hpcomm run");
            std::process::exit(2);
        }
        let what = format!("{}-{}ranks", universe.transport_name(), comm.size());
        pair(&mut c, comm, &what).expect("ping-pong");
        // Keep the other ranks until the pair is done.
        comm.barrier().expect("barrier");
        universe.finalize().expect("finalize");
    } else {
        threads_over_loopback();
        threads_over_shm(&mut c);
    }
    c.final_summary();
}
