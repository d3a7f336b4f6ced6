//! `hpcomm bench`: point-to-point benchmarks with the OSU micro-benchmarks'
//! method and output, run as the program of a 2-rank job.
//!
//! - `latency`: ping-pong; one-way latency is half the round trip.
//! - `bw`: rank 0 sends a window of non-blocking messages, rank 1 answers
//!   the window with a 4-byte reply; bytes moved per second.
//! - `bibw`: both ranks send a window to each other at once.
//! - `mr`: as `bw`, reported in messages per second.
//!
//! Each size runs `skip` warm-up iterations before the timed ones. With
//! more than 2 ranks (an even number), ranks pair up — 0 with 1, 2 with 3,
//! … — and every pair runs at once; rank 0 reports its own pair, which shows
//! how the job behaves when ranks share cores.

use std::time::Instant;

use hpcomm::{Communicator, Error, Result};

/// The benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// One-way latency (µs).
    Latency,
    /// Unidirectional bandwidth (MB/s).
    Bw,
    /// Bidirectional bandwidth (MB/s).
    Bibw,
    /// Message rate (messages/s).
    Mr,
}

/// Settings of a run.
pub struct BenchOptions {
    pub kind: Kind,
    pub min_size: usize,
    pub max_size: usize,
    pub iters: Option<usize>,
    pub window: usize,
    pub json: bool,
}

const TAG: i32 = 1;
const ACK: i32 = 2;

fn sizes(o: &BenchOptions) -> Vec<usize> {
    let mut sizes = Vec::new();
    if o.min_size == 0 {
        sizes.push(0);
    }
    let mut s = o.min_size.max(1).next_power_of_two();
    while s <= o.max_size {
        sizes.push(s);
        s *= 2;
    }
    sizes
}

/// OSU's defaults: fewer iterations for large messages.
fn iterations(o: &BenchOptions, size: usize) -> (usize, usize) {
    let iters = o.iters.unwrap_or(if size > 8192 { 1000 } else { 10_000 });
    let skip = if o.iters.is_some() {
        iters / 10
    } else if size > 8192 {
        10
    } else {
        100
    };
    (iters, skip)
}

fn latency(comm: &Communicator, size: usize, iters: usize, skip: usize) -> Result<f64> {
    let peer = comm.rank() ^ 1;
    let sbuf = vec![b'a'; size];
    let mut rbuf = vec![0u8; size];
    let mut start = Instant::now();
    for i in 0..iters + skip {
        if i == skip {
            start = Instant::now();
        }
        if comm.rank() % 2 == 0 {
            comm.send(&sbuf, peer, TAG)?;
            comm.recv(&mut rbuf, peer, TAG)?;
        } else {
            comm.recv(&mut rbuf, peer, TAG)?;
            comm.send(&sbuf, peer, TAG)?;
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / (2 * iters) as f64)
}

/// Returns seconds for `iters` windows (after `skip` untimed ones).
fn windows(
    comm: &Communicator,
    size: usize,
    window: usize,
    iters: usize,
    skip: usize,
    both: bool,
) -> Result<f64> {
    let peer = comm.rank() ^ 1;
    let sbuf = vec![b'a'; size];
    let mut rbufs: Vec<Vec<u8>> = (0..window).map(|_| vec![0u8; size]).collect();
    let sender = comm.rank() % 2 == 0 || both;
    let receiver = comm.rank() % 2 == 1 || both;
    let mut start = Instant::now();
    for i in 0..iters + skip {
        if i == skip {
            start = Instant::now();
        }
        comm.scope(|s| {
            let mut reqs = Vec::with_capacity(2 * window);
            if receiver {
                for buf in rbufs.iter_mut() {
                    reqs.push(s.irecv(buf, peer, TAG)?);
                }
            }
            if sender {
                for _ in 0..window {
                    reqs.push(s.isend(&sbuf, peer, TAG)?);
                }
            }
            hpcomm::wait_all(&mut reqs)?;
            Ok(())
        })?;
        if comm.rank() % 2 == 0 {
            comm.recv(&mut [0u8; 4], peer, ACK)?;
        } else {
            comm.send(&[0u8; 4], peer, ACK)?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Runs the benchmark in this rank; rank 0 prints. Returns the exit code.
pub fn bench(o: BenchOptions) -> i32 {
    match run(&o) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hpcomm bench: {e}");
            1
        }
    }
}

fn run(o: &BenchOptions) -> Result<()> {
    if o.window == 0 || o.max_size < o.min_size {
        return Err(Error::InvalidCount("need --window ≥ 1 and --min-size ≤ --max-size".into()));
    }
    let universe = hpcomm::init()?;
    let comm = universe.world();
    if comm.size() < 2 || comm.size() % 2 != 0 {
        return Err(Error::InvalidCount(format!(
            "the benchmark needs an even number of ranks (exactly 2 for the classic figures), \
             this job has {}: hpcomm run -n 2 -- hpcomm bench …",
            comm.size()
        )));
    }
    let (title, column, unit) = match o.kind {
        Kind::Latency => ("Latency Test", "Latency (us)", "us"),
        Kind::Bw => ("Bandwidth Test", "Bandwidth (MB/s)", "MB/s"),
        Kind::Bibw => ("Bi-Directional Bandwidth Test", "Bandwidth (MB/s)", "MB/s"),
        Kind::Mr => ("Message Rate Test", "Messages/s", "messages/s"),
    };
    let mut rows = Vec::new();
    for size in sizes(o) {
        let (iters, skip) = iterations(o, size);
        let value = match o.kind {
            Kind::Latency => latency(comm, size, iters, skip)?,
            Kind::Bw => {
                (size * o.window * iters) as f64
                    / windows(comm, size, o.window, iters, skip, false)?
                    / 1e6
            }
            Kind::Bibw => {
                (2 * size * o.window * iters) as f64
                    / windows(comm, size, o.window, iters, skip, true)?
                    / 1e6
            }
            Kind::Mr => {
                (o.window * iters) as f64 / windows(comm, size, o.window, iters, skip, false)?
            }
        };
        rows.push((size, value));
    }
    if comm.rank() == 0 {
        if o.json {
            let results: Vec<_> = rows
                .iter()
                .map(|&(size, value)| serde_json::json!({ "size": size, "value": value }))
                .collect();
            let doc = serde_json::json!({
                "benchmark": format!("{:?}", o.kind).to_lowercase(),
                "implementation": "hpcomm",
                "transport": universe.transport_name(),
                "unit": unit,
                "window": o.window,
                "pairs": comm.size() / 2,
                "results": results,
            });
            println!("{doc}");
        } else {
            let pairs = comm.size() / 2;
            let shape = if pairs > 1 {
                format!(", {pairs} pairs at once, pair 0 shown")
            } else {
                String::new()
            };
            println!("# hpcomm {title} (transport {}{shape})", universe.transport_name());
            println!("# Size      {column}");
            for (size, value) in rows {
                println!("{size:<10}{value:>16.2}");
            }
        }
    }
    universe.finalize()
}
