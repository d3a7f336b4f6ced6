//! A conjugate-gradient solve of the 2-D Poisson problem, with the matrix
//! distributed in blocks of rows over a Cartesian grid of ranks.
//!
//! ```text
//! cargo run --release --example cg                          # 4 ranks over shm, 128 × 128 unknowns
//! cargo run --release --example cg -- --reproducible --validate
//! hpcomm run -n 4 --transport tcp -- target/release/examples/cg --size bench
//! ```
//!
//! With no launcher around, the program starts its own ranks as threads
//! over the shm backend (`--ranks`, default 4); under `hpcomm run` each rank
//! is a process. Every iteration exchanges a halo of the search direction
//! (by persistent requests, made once per solve and started every
//! iteration; `--exchange nonblocking`: by `isend`/`irecv` each time),
//! multiplies by the local rows (CSR), and sums two dot products with
//! `all_reduce` — exactly, with `--reproducible`. It reports the
//! iterations, the residual history, the error against the exact solution
//! and the time spent communicating. `--validate` has every rank also
//! solve the whole problem alone on rank 0 and compares: the same iteration
//! count, and the same solution within round-off (bit for bit with
//! `--reproducible`).

mod model;

use std::error::Error;

use clap::Parser;
use hpcomm::op::Sum;
use hpcomm::{Collectives, Communicator};
use model::{Dot, Exchange, Local};

#[derive(Parser, Debug, Clone)]
#[command(about = "Conjugate gradients on the 2-D Poisson problem over hpcomm")]
struct Args {
    /// Ranks to start when no launcher is around.
    #[arg(long, default_value_t = 4)]
    ranks: usize,
    /// small (64²), default (128²), bench (512²); --n overrides.
    #[arg(long, value_enum, default_value_t = Size::Default)]
    size: Size,
    /// Unknowns per side.
    #[arg(long)]
    n: Option<usize>,
    /// Relative residual to reach.
    #[arg(long, default_value_t = 1e-10)]
    tol: f64,
    #[arg(long, default_value_t = 10_000)]
    max_iter: usize,
    /// Sum dot products exactly: the same bits on any number of ranks.
    #[arg(long)]
    reproducible: bool,
    /// Solve again on rank 0 alone and compare.
    #[arg(long)]
    validate: bool,
    /// How the halo exchange starts its transfers.
    #[arg(long, value_enum, default_value_t = ExchangeArg::Persistent)]
    exchange: ExchangeArg,
    /// Print the residual every K iterations (0: only the last).
    #[arg(long, default_value_t = 0)]
    history: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ExchangeArg {
    Persistent,
    Nonblocking,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Size {
    Small,
    Default,
    Bench,
}

impl Args {
    fn n(&self) -> usize {
        self.n.unwrap_or(match self.size {
            Size::Small => 64,
            Size::Default => 128,
            Size::Bench => 512,
        })
    }
}

struct Summary {
    ranks: usize,
    transport: String,
    iterations: usize,
    residual: f64,
    per_iteration: f64,
    comm_share: f64,
    error: f64,
    /// (same iteration count, largest difference, bit for bit)
    validated: Option<(bool, f64, bool)>,
}

fn run(comm: &Communicator, args: &Args) -> Result<Option<Summary>, Box<dyn Error>> {
    let n = args.n();
    if n < comm.size() {
        return Err(format!("{n} × {n} unknowns are too few for {} ranks", comm.size()).into());
    }
    let how = if args.reproducible { Dot::Reproducible } else { Dot::Plain };
    let exchange = match args.exchange {
        ExchangeArg::Persistent => Exchange::Persistent,
        ExchangeArg::Nonblocking => Exchange::NonBlocking,
    };
    let dims = hpcomm::dims_create(comm.size(), &[0, 0])?;
    let grid = comm.cartesian(&dims, &[false, false])?.ok_or("every rank is in the grid")?;
    let local = Local::new(n, grid.dims(), &grid.coords());
    let start = std::time::Instant::now();
    let solution = model::solve(&grid, &local, how, exchange, args.tol, args.max_iter)?;
    let elapsed = start.elapsed().as_secs_f64();
    let error = model::max_error(&grid, &local, &solution.x)?;
    let mut share = [0.0];
    grid.comm().all_reduce(&[solution.times.communication / elapsed.max(1e-9)], &mut share, Sum)?;
    let field = model::gather(&grid, &local, &solution.x)?;
    // The serial solve: rank 0 alone, on a communicator of its own.
    let alone = comm.split(Some(comm.rank() as u32), 0)?.ok_or("a communicator of one")?;
    let Some(field) = field else { return Ok(None) };
    if args.history > 0 {
        for (i, r) in solution.residuals.iter().enumerate() {
            if (i + 1) % args.history == 0 {
                println!("cg: iteration {:>5}: residual {r:.3e}", i + 1);
            }
        }
    }
    let validated = if args.validate {
        let one = alone.cartesian(&[1, 1], &[false, false])?.ok_or("a grid of one")?;
        let whole = Local::new(n, &[1, 1], &[0, 0]);
        let serial = model::solve(&one, &whole, how, exchange, args.tol, args.max_iter)?;
        let diff = serial.x.iter().zip(&field).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let bits = serial.x.iter().zip(&field).all(|(a, b)| a.to_bits() == b.to_bits());
        Some((serial.iterations == solution.iterations, diff, bits))
    } else {
        None
    };
    Ok(Some(Summary {
        ranks: comm.size(),
        transport: comm.transport_name().to_string(),
        iterations: solution.iterations,
        residual: solution.residuals.last().copied().unwrap_or(0.0),
        per_iteration: elapsed / solution.iterations.max(1) as f64,
        comm_share: share[0] / comm.size() as f64,
        error,
        validated,
    }))
}

fn main() {
    let args = Args::parse();
    let outcome = hpcomm::job(args.ranks, |comm| run(comm, &args).map_err(|e| e.to_string()))
        .map_err(|e| e.to_string())
        .and_then(|results| results.into_iter().try_fold(None, |s, r| r.map(|r| s.or(r))));
    let s = match outcome {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            eprintln!("cg: {e}");
            std::process::exit(1);
        }
    };
    let n = args.n();
    println!(
        "cg: {} ranks over {}, {n}×{n} unknowns{}: {} iterations to residual {:.2e}, \
         {:.1} µs per iteration, {:.0}% communicating; max error against the exact solution {:.2e}",
        s.ranks,
        s.transport,
        if args.reproducible { ", reproducible dot products" } else { "" },
        s.iterations,
        s.residual,
        s.per_iteration * 1e6,
        100.0 * s.comm_share,
        s.error
    );
    if let Some((same_count, diff, bits)) = s.validated {
        println!(
            "cg: against the serial solve: {} iterations, largest difference {diff:.2e}{}",
            if same_count { "the same" } else { "different" },
            if bits { ", bit for bit" } else { "" }
        );
        let within = diff <= 10.0 * args.tol;
        if !same_count || !within || (args.reproducible && !bits) {
            eprintln!("cg: the distributed solve does not match the serial one");
            std::process::exit(1);
        }
    }
}
