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
//! Sizes, iteration counts, warm-up and titles are `hpcomm bench`'s own:
//! its plan (`cli/src/plan.rs`) is included here as it is.

use std::time::Instant;

use clap::Parser;
use mpi::collective::SystemOperation;
use mpi::request::multiple_scope;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

const TAG: i32 = 1;
const ACK: i32 = 2;

/// The plan of `hpcomm bench` itself: benchmarks, sizes, iterations and
/// titles.
#[path = "../../../../cli/src/plan.rs"]
#[allow(dead_code)]
mod plan;

use plan::{Kind, Plan};

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
    fn plan(&self) -> Plan {
        Plan {
            kind: self.kind,
            min_size: self.min_size,
            max_size: self.max_size,
            iters: self.iters,
        }
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
            Kind::Iallreduce | Kind::Ireduce => unreachable!("refused in main"),
            Kind::PutLatency | Kind::GetLatency | Kind::PutBw | Kind::GetBw => {
                unreachable!("refused in main")
            }
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
    let plan = args.plan();
    if args.window == 0 || plan.max_size() < args.min_size {
        eprintln!("mpi-bench: need --window ≥ 1 and --min-size ≤ --max-size");
        std::process::exit(2);
    }
    let Some(universe) = mpi::initialize() else {
        eprintln!("mpi-bench: MPI was already initialized");
        std::process::exit(1);
    };
    let world = universe.world();
    if args.kind.overlap() || args.kind.one_sided() {
        if world.rank() == 0 {
            // rsmpi has no one-sided windows.
            eprintln!(
                "mpi-bench: the overlap and one-sided benchmarks run from C only \
                 (benches/c-compare/osu.c)"
            );
        }
        std::process::exit(2);
    }
    if !args.kind.collective() && (world.size() < 2 || world.size() % 2 != 0) {
        if world.rank() == 0 {
            eprintln!("mpi-bench: needs an even number of ranks, this job has {}", world.size());
        }
        std::process::exit(2);
    }
    let (title, column, _) = args.kind.titles();
    let w = args.window;
    let mut rows = Vec::new();
    for size in plan.sizes() {
        let (iters, skip) = plan.iterations(size);
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
