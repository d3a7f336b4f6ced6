//! `hpcomm bench`: point-to-point and collective benchmarks with the OSU
//! micro-benchmarks' method and output, run as the program of a job.
//!
//! - `latency`: ping-pong; one-way latency is half the round trip.
//! - `bw`: rank 0 sends a window of non-blocking messages, rank 1 answers
//!   the window with a 4-byte reply; bytes moved per second.
//! - `bibw`: both ranks send a window to each other at once.
//! - `mr`: as `bw`, reported in messages per second.
//!
//! With `--persistent`, `bw`, `bibw` and `mr` start each window's messages
//! from persistent requests made once per size (`send_init`, `recv_init`)
//! rather than by `isend` and `irecv`. With `--threads T`, `mr` runs on `T`
//! threads per rank at once, each on an endpoint of its own
//! (`Communicator::endpoints`), thread `t` of rank 0 with thread `t` of
//! rank 1: the rate per thread (the median of rank 0's) and their sum.
//! - `allreduce`, `reduce` (sums of `f32`, sizes in bytes), `bcast` (from
//!   rank 0), `allgather` (size per rank), `alltoall` (size per pair),
//!   `barrier`: OSU's collective method — every iteration timed alone with
//!   a barrier between iterations, the ranks' average latencies averaged.
//!   Any number of ranks.
//! - `iallreduce`, `ireduce`: OSU's overlap method (`osu_iallreduce`):
//!   first the pure communication time (start, wait), then each start
//!   followed by that much computation (a busy loop, no communication
//!   calls, as OSU's default) and the wait; overlap is the share of the
//!   communication hidden behind the computation,
//!   `100 · (1 − (overall − compute) / pure)`, at least 0. The ranks'
//!   averages are averaged.
//!
//! - `put-latency`, `get-latency`, `put-bw`, `get-bw`: one-sided
//!   operations on a window, OSU's method (see `rma.rs`).
//!
//! Each size runs `skip` warm-up iterations before the timed ones. With
//! more than 2 ranks (an even number), ranks pair up — 0 with 1, 2 with 3,
//! … — and every pair runs at once; rank 0 reports its own pair, which shows
//! how the job behaves when ranks share cores.

mod rma;

use std::time::Instant;

use hpcomm::op::Sum;
use hpcomm::{Collectives, Communicator, Error, NonBlocking, Result};

pub use crate::plan::Kind;
use crate::plan::Plan;

/// Settings of a run (`hpcomm bench`'s options).
#[derive(Debug, clap::Args)]
pub struct BenchOptions {
    /// Which benchmark.
    #[arg(value_enum)]
    pub kind: Kind,
    /// Smallest message size in bytes.
    #[arg(long, default_value_t = 0)]
    pub min_size: usize,
    /// Largest message size in bytes (default: 4 MiB point-to-point,
    /// 1 MiB collective).
    #[arg(long)]
    pub max_size: Option<usize>,
    /// Timed iterations per size (default point-to-point: 10000, or
    /// 1000 above 8 KiB; collective: 1000, or 100 above 8 KiB).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Messages in flight per window (bw, bibw, mr).
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Start each window's messages from persistent requests made once
    /// (`send_init`/`recv_init`) instead of `isend`/`irecv` (bw, bibw,
    /// mr).
    #[arg(long)]
    pub persistent: bool,
    /// Threads per rank, each on an endpoint of its own
    /// (`Communicator::endpoints`), all sending at once (mr): the rate
    /// per thread (the median of rank 0's threads) and, in a last
    /// column, their sum.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Other windows alive, unused, while the one-sided benchmarks run
    /// (put-latency, get-latency, put-bw, get-bw): what serving windows
    /// that see no traffic costs the one that does.
    #[arg(long, default_value_t = 0)]
    pub idle_windows: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

const TAG: i32 = 1;
const ACK: i32 = 2;

impl BenchOptions {
    fn plan(&self) -> Plan {
        Plan {
            kind: self.kind,
            min_size: self.min_size,
            max_size: self.max_size,
            iters: self.iters,
        }
    }
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

const PAGE: usize = 4096;

/// The part of `area` that starts on a page boundary. The windows' buffers
/// are laid out as the C twin's (`benches/c-compare/osu.c`): one send
/// buffer, one receive area with message `k` of a window at `k × size`,
/// both starting on a page. The kernel's single copy over shm
/// (`process_vm_readv`) runs a few per cent slower when source and
/// destination differ in alignment, which separate `Vec`s let happen.
fn page_aligned(area: &mut [u8]) -> &mut [u8] {
    let skip = area.as_ptr().align_offset(PAGE);
    &mut area[skip..]
}

/// A window's messages: how each is started.
struct Window {
    size: usize,
    len: usize,
    both: bool,
    persistent: bool,
}

/// Returns seconds for `iters` windows (after `skip` untimed ones).
fn windows(comm: &Communicator, w: Window, iters: usize, skip: usize) -> Result<f64> {
    let Window { size, len: window, both, persistent } = w;
    let peer = comm.rank() ^ 1;
    let mut sarea = vec![b'a'; size + PAGE];
    let sbuf = &page_aligned(&mut sarea)[..size];
    let mut rarea = vec![0u8; size.max(1) * window + PAGE];
    let rarea = page_aligned(&mut rarea);
    let sender = comm.rank() % 2 == 0 || both;
    let receiver = comm.rank() % 2 == 1 || both;
    // As many persistent requests as the window has messages: each is
    // active until its message completes.
    let made = usize::from(persistent) * window;
    let sends = (0..made * usize::from(sender))
        .map(|_| comm.send_init::<u8>(size, peer, TAG))
        .collect::<Result<Vec<_>>>()?;
    let recvs = (0..made * usize::from(receiver))
        .map(|_| comm.recv_init::<u8>(size, peer, TAG))
        .collect::<Result<Vec<_>>>()?;
    let mut start = Instant::now();
    for i in 0..iters + skip {
        if i == skip {
            start = Instant::now();
        }
        comm.scope(|s| {
            let mut reqs = Vec::with_capacity(2 * window);
            if receiver {
                for (k, buf) in rarea.chunks_mut(size.max(1)).take(window).enumerate() {
                    reqs.push(match recvs.get(k) {
                        Some(r) => r.start(s, &mut buf[..size])?,
                        None => s.irecv(&mut buf[..size], peer, TAG)?,
                    });
                }
            }
            if sender {
                for k in 0..window {
                    reqs.push(match sends.get(k) {
                        Some(w) => w.start(s, sbuf)?,
                        None => s.isend(sbuf, peer, TAG)?,
                    });
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

/// OSU's collective method: each iteration timed on its own, a barrier
/// between iterations, the per-rank average latencies averaged over the
/// ranks. Returns µs.
fn collective(
    comm: &Communicator,
    kind: Kind,
    size: usize,
    iters: usize,
    skip: usize,
) -> Result<f64> {
    let n = comm.size();
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
            Kind::Allreduce => comm.all_reduce(&send, &mut recv, Sum)?,
            Kind::Reduce => comm.reduce(&send, &mut recv, Sum, 0)?,
            Kind::Bcast => comm.broadcast(&mut buf, 0)?,
            Kind::Allgather => comm.all_gather(&bytes, &mut all)?,
            Kind::Alltoall => comm.all_to_all(&all_bytes, &mut all)?,
            Kind::Barrier => comm.barrier()?,
            Kind::Latency | Kind::Bw | Kind::Bibw | Kind::Mr => unreachable!("point-to-point"),
            Kind::PutLatency | Kind::GetLatency | Kind::PutBw | Kind::GetBw => {
                unreachable!("one-sided")
            }
            Kind::Iallreduce | Kind::Ireduce => unreachable!("overlap"),
        }
        if i >= skip {
            timer += start.elapsed().as_secs_f64();
        }
        comm.barrier()?;
    }
    let mine = [timer * 1e6 / iters as f64];
    let mut total = [0.0f64];
    comm.all_reduce(&mine, &mut total, Sum)?;
    Ok(total[0] / n as f64)
}

/// Busy for `seconds` without a communication call.
fn compute(seconds: f64) -> f64 {
    let start = Instant::now();
    let mut x = 1.0f64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            x = std::hint::black_box(x * 1.000_000_1 + 1e-9);
        }
    }
    start.elapsed().as_secs_f64()
}

/// OSU's overlap method (see the module documentation): overall, compute
/// and pure communication time (µs) and overlap (%), averaged over ranks.
fn overlap(
    comm: &Communicator,
    kind: Kind,
    size: usize,
    iters: usize,
    skip: usize,
) -> Result<[f64; 4]> {
    let floats = size / 4;
    let send = vec![1.0f32; floats];
    let mut recv = vec![0.0f32; floats];
    // One operation: start, `work` seconds of computation, wait. Returns
    // (total, compute) seconds.
    let mut once = |work: f64| -> Result<(f64, f64)> {
        let start = Instant::now();
        let mut busy = 0.0;
        comm.scope(|s| {
            let req = match kind {
                Kind::Iallreduce => s.iall_reduce(&send, &mut recv, Sum)?,
                _ => s.ireduce(&send, &mut recv, Sum, 0)?,
            };
            if work > 0.0 {
                busy = compute(work);
            }
            req.wait().map(|_| ())
        })?;
        Ok((start.elapsed().as_secs_f64(), busy))
    };
    let mut pure = 0.0;
    for i in 0..iters + skip {
        let (t, _) = once(0.0)?;
        if i >= skip {
            pure += t;
        }
        comm.barrier()?;
    }
    let pure = pure / iters as f64;
    let (mut overall, mut busy) = (0.0, 0.0);
    for i in 0..iters + skip {
        let (t, c) = once(pure)?;
        if i >= skip {
            overall += t;
            busy += c;
        }
        comm.barrier()?;
    }
    let (overall, busy) = (overall / iters as f64, busy / iters as f64);
    let mine = [overall * 1e6, busy * 1e6, pure * 1e6];
    let mut sum = [0.0f64; 3];
    comm.all_reduce(&mine, &mut sum, Sum)?;
    let n = comm.size() as f64;
    let [overall, busy, pure] = sum.map(|v| v / n);
    let hidden = if pure > 0.0 { 100.0 * (1.0 - (overall - busy) / pure) } else { 0.0 };
    Ok([overall, busy, pure, hidden.clamp(0.0, 100.0)])
}

/// Prints the plan — `size iters skip` per line — for the C twin
/// (`benches/c-compare/osu.c`), which runs exactly it. Returns the exit
/// code.
pub fn print_plan(o: &BenchOptions) -> i32 {
    let plan = o.plan();
    if plan.max_size() < o.min_size {
        eprintln!("hpcomm bench: need --min-size ≤ --max-size");
        return 1;
    }
    println!("# hpcomm bench {:?} plan: size iters skip", o.kind);
    for size in plan.sizes() {
        let (iters, skip) = plan.iterations(size);
        println!("{size} {iters} {skip}");
    }
    0
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
    let plan = o.plan();
    if o.window == 0 || plan.max_size() < o.min_size {
        return Err(Error::InvalidCount("need --window ≥ 1 and --min-size ≤ --max-size".into()));
    }
    let universe = hpcomm::init()?;
    let comm = universe.world();
    if !o.kind.collective() && (comm.size() < 2 || comm.size() % 2 != 0) {
        return Err(Error::InvalidCount(format!(
            "the benchmark needs an even number of ranks (exactly 2 for the classic figures), \
             this job has {}: hpcomm run -n 2 -- hpcomm bench …",
            comm.size()
        )));
    }
    let (title, column, unit) = o.kind.titles();
    let mut rows = Vec::new();
    if o.persistent && !matches!(o.kind, Kind::Bw | Kind::Bibw | Kind::Mr) {
        return Err(Error::InvalidCount("--persistent is for bw, bibw and mr".into()));
    }
    if o.threads == 0 || (o.threads > 1 && o.kind != Kind::Mr) {
        return Err(Error::InvalidCount("--threads is for mr, and at least 1".into()));
    }
    if o.idle_windows > 0 && !o.kind.one_sided() {
        return Err(Error::InvalidCount("--idle-windows is for the one-sided benchmarks".into()));
    }
    // Freed (collectively) as the run ends.
    let _idle = (0..o.idle_windows)
        .map(|_| hpcomm::window::Window::<u64>::allocate(comm, 1))
        .collect::<Result<Vec<_>>>()?;
    let endpoints = if o.threads > 1 { comm.endpoints(o.threads)? } else { Vec::new() };
    // The sum over the threads, for each size, with `--threads`.
    let mut sums = Vec::new();
    for size in plan.sizes() {
        let (iters, skip) = plan.iterations(size);
        let window = |both| Window { size, len: o.window, both, persistent: o.persistent };
        let value = match o.kind {
            Kind::Latency => latency(comm, size, iters, skip)?,
            Kind::Bw => {
                (size * o.window * iters) as f64 / windows(comm, window(false), iters, skip)? / 1e6
            }
            Kind::Bibw => {
                (2 * size * o.window * iters) as f64
                    / windows(comm, window(true), iters, skip)?
                    / 1e6
            }
            Kind::Mr if !endpoints.is_empty() => {
                let mut rates = std::thread::scope(|s| {
                    let threads: Vec<_> = endpoints
                        .iter()
                        .map(|e| s.spawn(move || windows(e.world(), window(false), iters, skip)))
                        .collect();
                    threads
                        .into_iter()
                        .map(|t| t.join().expect("a benchmark thread panicked"))
                        .map(|secs| secs.map(|secs| (o.window * iters) as f64 / secs))
                        .collect::<Result<Vec<f64>>>()
                })?;
                rates.sort_by(f64::total_cmp);
                sums.push(rates.iter().sum::<f64>());
                rates[rates.len() / 2]
            }
            Kind::Mr => (o.window * iters) as f64 / windows(comm, window(false), iters, skip)?,
            Kind::PutLatency | Kind::GetLatency => {
                rma::run(comm, o.kind, size, 1, (iters, skip))? * 1e6 / iters as f64
            }
            Kind::PutBw | Kind::GetBw => {
                let seconds = rma::run(comm, o.kind, size, o.window, (iters, skip))?;
                (size * o.window * iters) as f64 / seconds / 1e6
            }
            kind if kind.overlap() => {
                let columns = overlap(comm, kind, size, iters, skip)?;
                rows.push((size, columns[2], Some(columns)));
                continue;
            }
            kind => collective(comm, kind, size, iters, skip)?,
        };
        rows.push((size, value, None));
    }
    if comm.rank() == 0 {
        if o.json {
            let results: Vec<_> = rows
                .iter()
                .map(|&(size, value, columns)| match columns {
                    None => serde_json::json!({ "size": size, "value": value }),
                    Some([overall, compute, pure, overlap]) => serde_json::json!({
                        "size": size, "value": pure, "overall": overall,
                        "compute": compute, "overlap": overlap,
                    }),
                })
                .collect();
            let doc = serde_json::json!({
                "benchmark": format!("{:?}", o.kind).to_lowercase(),
                "implementation": "hpcomm",
                "transport": universe.transport_name(),
                "unit": unit,
                "window": o.window,
                "ranks": comm.size(),
                "pairs": comm.size() / 2,
                "threads": o.threads,
                "sums": sums,
                "results": results,
            });
            println!("{doc}");
        } else {
            let pairs = comm.size() / 2;
            let shape = if o.kind.collective() {
                format!(", {} ranks", comm.size())
            } else if pairs > 1 {
                format!(", {pairs} pairs at once, pair 0 shown")
            } else {
                String::new()
            };
            let shape = match o.threads {
                1 => shape,
                t => format!(
                    "{shape}, {t} threads per rank on endpoints of their own: \
                     median per thread, then the sum"
                ),
            };
            println!("# hpcomm {title} (transport {}{shape})", universe.transport_name());
            match o.threads {
                1 => println!("# Size      {column}"),
                _ => println!("# Size      {column} per thread   {column} summed"),
            }
            for (i, (size, value, columns)) in rows.into_iter().enumerate() {
                match columns {
                    None if !sums.is_empty() => {
                        println!("{size:<10}{value:>16.2}{:>16.2}", sums[i])
                    }
                    None => println!("{size:<10}{value:>16.2}"),
                    Some(c) => {
                        println!(
                            "{size:<10}{:>12.2}{:>13.2}{:>16.2}{:>12.2}",
                            c[0], c[1], c[2], c[3]
                        )
                    }
                }
            }
        }
    }
    drop(endpoints);
    universe.finalize()
}
