//! A token passed around a ring of ranks, with timings.
//!
//! ```text
//! cargo run --release --example ring -- [--ranks N] [--laps L]
//! hpcomm run -n N -- target/release/examples/ring [--laps L]
//! ```
//!
//! With no launcher around, the example starts its own ranks as threads of
//! this process (over the loopback transport); under `hpcomm run` each rank
//! is a process (over shared memory). Each lap, every rank
//! receives the token from its left neighbour, adds one and passes it on;
//! rank 0 checks that the token counted every hop. A second ring passes a
//! 1 MiB block, which travels by rendezvous.

use std::time::{Duration, Instant};

use hpcomm::Communicator;

struct Args {
    ranks: usize,
    laps: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { ranks: 4, laps: 1000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--ranks" => args.ranks = value("--ranks")?,
            "--laps" => args.laps = value("--laps")?,
            "-h" | "--help" => {
                println!("usage: ring [--ranks N] [--laps L]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.ranks == 0 || args.laps == 0 {
        return Err("--ranks and --laps must be at least 1".into());
    }
    Ok(args)
}

/// Passes `block` around the ring `laps` times; returns the time rank 0
/// measured and the final token value (the first element).
fn ring(comm: &Communicator, laps: usize, block_len: usize) -> hpcomm::Result<(Duration, u64)> {
    let n = comm.size();
    let me = comm.rank();
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    let mut block = vec![0u64; block_len];
    let start = Instant::now();
    for _ in 0..laps {
        if me == 0 {
            block[0] += 1;
            comm.send(&block, right, 0)?;
            comm.recv(&mut block, left, 0)?;
        } else {
            comm.recv(&mut block, left, 0)?;
            block[0] += 1;
            comm.send(&block, right, 0)?;
        }
    }
    Ok((start.elapsed(), block[0]))
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("ring: {e}");
    std::process::exit(1);
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ring: {e}");
            std::process::exit(2);
        }
    };
    let (ranks, laps) = (args.ranks, args.laps);
    let big = (1 << 20) / 8;
    let big_laps = laps.div_ceil(10);
    let job = |comm: &Communicator| -> hpcomm::Result<_> {
        let small = ring(comm, laps, 1)?;
        let large = ring(comm, big_laps, big)?;
        Ok((small, large))
    };
    let (ranks, transport, outcome) = if hpcomm::launched() {
        // One process per rank: only rank 0 reports.
        let universe = hpcomm::init().unwrap_or_else(|e| fail(&e));
        let world = universe.world();
        let outcome = job(world);
        let shape = (world.size(), world.transport_name(), outcome);
        if world.rank() != 0 {
            if let Err(e) = &shape.2 {
                fail(e);
            }
            return;
        }
        shape
    } else {
        let mut results = hpcomm::threads(ranks, job).unwrap_or_else(|e| fail(&e));
        (ranks, "loopback", results.swap_remove(0))
    };
    let ((small_time, token), (large_time, large_token)) = outcome.unwrap_or_else(|e| fail(&e));
    let hops = (laps * ranks) as u64;
    let big_hops = (big_laps * ranks) as u64;
    println!("hpcomm ring: {ranks} ranks over {transport}, {laps} laps");
    println!(
        "  8 B token    {hops:>8} hops in {:>9.3} ms = {:>8.3} µs per hop",
        small_time.as_secs_f64() * 1e3,
        small_time.as_secs_f64() * 1e6 / hops as f64
    );
    let per_hop = large_time.as_secs_f64() / big_hops as f64;
    println!(
        "  1 MiB block  {big_hops:>8} hops in {:>9.3} ms = {:>8.3} µs per hop ({:.2} GB/s)",
        large_time.as_secs_f64() * 1e3,
        per_hop * 1e6,
        (1 << 20) as f64 / per_hop / 1e9
    );
    // Rank 0 adds 1 per lap and every other rank adds 1 per lap.
    if token != hops || large_token != big_hops {
        eprintln!(
            "ring: token counted {token} and {large_token} hops, expected {hops} and {big_hops}"
        );
        std::process::exit(1);
    }
    println!("  token checked: every hop counted");
}
