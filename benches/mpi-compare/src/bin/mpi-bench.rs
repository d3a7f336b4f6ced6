//! `hpcomm bench`'s benchmarks through rsmpi, so that MPICH and Open MPI
//! are measured with the same method and print the same output:
//!
//! ```text
//! mpirun -n 2 mpi-bench latency --min-size 0 --max-size 65536
//! ```
//!
//! - `latency`: ping-pong; one-way latency is half the round trip.
//! - `bw`, `bibw`, `mr`: rank 0 (both ranks for `bibw`) sends a window of
//!   non-blocking messages, the peer answers each window with 4 bytes.
//! - `allreduce`, `reduce` (sums of `f32`), `bcast`, `allgather`, `alltoall`,
//!   `barrier`: every iteration timed on its own with a barrier between
//!   iterations, the ranks' average latencies averaged (OSU's method).
//!
//! Sizes, iteration counts and warm-up are those of `hpcomm bench`
//! (`src/bin/hpcomm/bench.rs`); keep the two in step.

use std::time::Instant;

use clap::Parser;
use mpi::collective::SystemOperation;
use mpi::request::multiple_scope;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

const TAG: i32 = 1;
const ACK: i32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Latency,
    Bw,
    Bibw,
    Mr,
    Allreduce,
    Reduce,
    Bcast,
    Allgather,
    Alltoall,
    Barrier,
}

impl Kind {
    fn collective(self) -> bool {
        !matches!(self, Kind::Latency | Kind::Bw | Kind::Bibw | Kind::Mr)
    }
}

/// The options of `hpcomm bench`.
#[derive(Parser, Debug)]
#[command(about = "hpcomm's benchmarks through rsmpi (MPICH, Open MPI)")]
struct Args {
    kind: Kind,
    #[arg(long, default_value_t = 0)]
    min_size: usize,
    /// Default: 4 MiB for point-to-point, 1 MiB for collectives.
    #[arg(long)]
    max_size: Option<usize>,
    #[arg(long)]
    iters: Option<usize>,
    #[arg(long, default_value_t = 64)]
    window: usize,
}

impl Args {
    fn max_size(&self) -> usize {
        self.max_size.unwrap_or(if self.kind.collective() { 1 << 20 } else { 4 << 20 })
    }
}

fn sizes(a: &Args) -> Vec<usize> {
    if a.kind == Kind::Barrier {
        return vec![0];
    }
    let min = if matches!(a.kind, Kind::Allreduce | Kind::Reduce) {
        a.min_size.max(4)
    } else {
        a.min_size
    };
    let mut sizes = Vec::new();
    if min == 0 {
        sizes.push(0);
    }
    let mut s = min.max(1).next_power_of_two();
    while s <= a.max_size() {
        sizes.push(s);
        s *= 2;
    }
    sizes
}

fn iterations(a: &Args, size: usize) -> (usize, usize) {
    let large = size > 8192;
    let (default, default_skip) = match (a.kind.collective(), large) {
        (true, true) => (100, 10),
        (true, false) => (1000, 200),
        (false, true) => (1000, 10),
        (false, false) => (10_000, 100),
    };
    match a.iters {
        Some(iters) => (iters, iters / 10),
        None => (default, default_skip),
    }
}

fn latency(world: &SimpleCommunicator, size: usize, iters: usize, skip: usize) -> f64 {
    let peer = world.process_at_rank(world.rank() ^ 1);
    let sbuf = vec![b'a'; size];
    let mut rbuf = vec![0u8; size];
    let mut start = Instant::now();
    for i in 0..iters + skip {
        if i == skip {
            start = Instant::now();
        }
        if world.rank() % 2 == 0 {
            peer.send_with_tag(&sbuf[..], TAG);
            peer.receive_into_with_tag(&mut rbuf[..], TAG);
        } else {
            peer.receive_into_with_tag(&mut rbuf[..], TAG);
            peer.send_with_tag(&sbuf[..], TAG);
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / (2 * iters) as f64
}

/// Seconds for `iters` windows, after `skip` untimed ones.
fn windows(
    world: &SimpleCommunicator,
    size: usize,
    window: usize,
    iters: usize,
    skip: usize,
    both: bool,
) -> f64 {
    let peer = world.process_at_rank(world.rank() ^ 1);
    let sbuf = vec![b'a'; size];
    let mut rbufs: Vec<Vec<u8>> = (0..window).map(|_| vec![0u8; size]).collect();
    let sender = world.rank() % 2 == 0 || both;
    let receiver = world.rank() % 2 == 1 || both;
    let mut start = Instant::now();
    for i in 0..iters + skip {
        if i == skip {
            start = Instant::now();
        }
        multiple_scope(2 * window, |scope, requests| {
            if receiver {
                for buf in rbufs.iter_mut() {
                    requests.add(peer.immediate_receive_into_with_tag(scope, &mut buf[..], TAG));
                }
            }
            if sender {
                for _ in 0..window {
                    requests.add(peer.immediate_send_with_tag(scope, &sbuf[..], TAG));
                }
            }
            let mut done = Vec::with_capacity(2 * window);
            requests.wait_all(&mut done);
        });
        let mut ack = [0u8; 4];
        if world.rank() % 2 == 0 {
            peer.receive_into_with_tag(&mut ack[..], ACK);
        } else {
            peer.send_with_tag(&ack[..], ACK);
        }
    }
    start.elapsed().as_secs_f64()
}

/// OSU's collective method; µs.
fn collective(
    world: &SimpleCommunicator,
    kind: Kind,
    size: usize,
    iters: usize,
    skip: usize,
) -> f64 {
    let n = world.size() as usize;
    let root = world.process_at_rank(0);
    let floats = size / 4;
    let send = vec![1.0f32; floats];
    let mut recv = vec![0.0f32; floats];
    let bytes = vec![b'a'; size];
    let mut buf = vec![0u8; size];
    let all_bytes = vec![b'a'; size * n];
    let mut all = vec![0u8; size * n];
    let mut timer = 0.0;
    for i in 0..iters + skip {
        let start = Instant::now();
        match kind {
            Kind::Allreduce => {
                world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum())
            }
            Kind::Reduce if world.rank() == 0 => {
                root.reduce_into_root(&send[..], &mut recv[..], SystemOperation::sum())
            }
            Kind::Reduce => root.reduce_into(&send[..], SystemOperation::sum()),
            Kind::Bcast => root.broadcast_into(&mut buf[..]),
            Kind::Allgather => world.all_gather_into(&bytes[..], &mut all[..]),
            Kind::Alltoall => world.all_to_all_into(&all_bytes[..], &mut all[..]),
            Kind::Barrier => world.barrier(),
            Kind::Latency | Kind::Bw | Kind::Bibw | Kind::Mr => unreachable!("point-to-point"),
        }
        if i >= skip {
            timer += start.elapsed().as_secs_f64();
        }
        world.barrier();
    }
    let mine = timer * 1e6 / iters as f64;
    let mut total = 0.0f64;
    world.all_reduce_into(&mine, &mut total, SystemOperation::sum());
    total / n as f64
}

/// "MPICH 4.0.2" or "Open MPI v4.1.4": the first words of the library's
/// version string.
fn library() -> String {
    let version = mpi::environment::library_version().unwrap_or_default();
    let first = version.lines().next().unwrap_or("MPI").trim();
    match first.split_once(',') {
        Some((name, _)) => name.to_string(),
        None => first.replace("Version:", "").split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

fn main() {
    let args = Args::parse();
    if args.window == 0 || args.max_size() < args.min_size {
        eprintln!("mpi-bench: need --window ≥ 1 and --min-size ≤ --max-size");
        std::process::exit(2);
    }
    let Some(universe) = mpi::initialize() else {
        eprintln!("mpi-bench: MPI was already initialized");
        std::process::exit(1);
    };
    let world = universe.world();
    if !args.kind.collective() && (world.size() < 2 || world.size() % 2 != 0) {
        if world.rank() == 0 {
            eprintln!("mpi-bench: needs an even number of ranks, this job has {}", world.size());
        }
        std::process::exit(2);
    }
    let (title, column) = match args.kind {
        Kind::Latency => ("Latency Test", "Latency (us)"),
        Kind::Bw => ("Bandwidth Test", "Bandwidth (MB/s)"),
        Kind::Bibw => ("Bi-Directional Bandwidth Test", "Bandwidth (MB/s)"),
        Kind::Mr => ("Message Rate Test", "Messages/s"),
        Kind::Allreduce => ("Allreduce Latency Test", "Avg Latency(us)"),
        Kind::Reduce => ("Reduce Latency Test", "Avg Latency(us)"),
        Kind::Bcast => ("Broadcast Latency Test", "Avg Latency(us)"),
        Kind::Allgather => ("Allgather Latency Test", "Avg Latency(us)"),
        Kind::Alltoall => ("All-to-All Latency Test", "Avg Latency(us)"),
        Kind::Barrier => ("Barrier Latency Test", "Avg Latency(us)"),
    };
    let w = args.window;
    let mut rows = Vec::new();
    for size in sizes(&args) {
        let (iters, skip) = iterations(&args, size);
        let value = match args.kind {
            Kind::Latency => latency(&world, size, iters, skip),
            Kind::Bw => {
                (size * w * iters) as f64 / windows(&world, size, w, iters, skip, false) / 1e6
            }
            Kind::Bibw => {
                (2 * size * w * iters) as f64 / windows(&world, size, w, iters, skip, true) / 1e6
            }
            Kind::Mr => (w * iters) as f64 / windows(&world, size, w, iters, skip, false),
            kind => collective(&world, kind, size, iters, skip),
        };
        rows.push((size, value));
    }
    if world.rank() == 0 {
        let pairs = world.size() / 2;
        let shape = if args.kind.collective() {
            format!(", {} ranks", world.size())
        } else if pairs > 1 {
            format!(", {pairs} pairs at once, pair 0 shown")
        } else {
            String::new()
        };
        println!("# {} {title} (rsmpi{shape})", library());
        println!("# Size      {column}");
        for (size, value) in rows {
            println!("{size:<10}{value:>16.2}");
        }
    }
}
