//! The `hpcomm` command: start jobs (`run`), describe this machine's
//! transports (`info`) and measure them (`bench`).
#![forbid(unsafe_code)]

mod bench;
mod info;
mod kvs;
mod model;
mod plan;
mod remote;
mod run;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// An MPI-style communication runtime: launcher and tools.
#[derive(Parser)]
#[command(name = "hpcomm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start N ranks of PROGRAM on this machine, or on several hosts, and
    /// supervise them.
    Run {
        /// Number of ranks.
        #[arg(short = 'n', long = "np", value_name = "N")]
        ranks: usize,
        /// Hosts to start ranks on, comma-separated; ranks go to them in
        /// turn (rank r on host r mod H). Without: this machine.
        #[arg(long, value_delimiter = ',', conflicts_with = "hostfile")]
        hosts: Vec<String>,
        /// A file naming the hosts, one per line (`#` starts a comment).
        #[arg(long, value_name = "FILE")]
        hostfile: Option<std::path::PathBuf>,
        /// How to run a command on a host: `{host}` is replaced by the
        /// host's name, and the rank's command follows.
        #[arg(long, value_name = "TEMPLATE", default_value = "ssh {host}")]
        exec: String,
        /// The address the key-value server listens on and gives the ranks
        /// (default: 127.0.0.1 on one host; across hosts, the address that
        /// routes to the first host).
        #[arg(long, value_name = "ADDR")]
        bind: Option<std::net::IpAddr>,
        /// Transport between the ranks.
        #[arg(long, default_value = "auto", value_parser = ["auto", "shm", "tcp", "ofi"])]
        transport: String,
        /// End the job if it runs longer than this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
        /// Once a rank has failed, how long the others may take to notice
        /// it and end by themselves (reporting their errors) before they
        /// are ended.
        #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
        grace: f64,
        /// Prefix every line of output with its rank.
        #[arg(long)]
        tag_output: bool,
        /// Say what the launcher does.
        #[arg(short, long)]
        verbose: bool,
        /// The program and its arguments.
        #[arg(last = true, required = true, value_name = "PROGRAM")]
        program: Vec<String>,
    },
    /// Show which transports work here, with their limits.
    Info,
    /// Run the semantic self-test suite on this job's ranks (under
    /// `hpcomm run`; alone, as a single rank).
    Selftest {
        /// Cases to run (default: all that fit the job's size).
        cases: Vec<String>,
        /// List the cases and exit.
        #[arg(long)]
        list: bool,
        /// For testing failure handling: every rank runs all_reduce calls
        /// on 1 MiB, and this rank kills itself with SIGKILL before the
        /// fourth; the others report the error their all_reduce returns
        /// (`rank R: all_reduce N failed: …`) and exit with code 3.
        #[arg(long, value_name = "RANK")]
        crash: Option<usize>,
    },
    /// Point-to-point (run under `hpcomm run -n 2`) and collective (any
    /// number of ranks) benchmarks in the OSU format.
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        kind: bench::Kind,
        /// Smallest message size in bytes.
        #[arg(long, default_value_t = 0)]
        min_size: usize,
        /// Largest message size in bytes (default: 4 MiB point-to-point,
        /// 1 MiB collective).
        #[arg(long)]
        max_size: Option<usize>,
        /// Timed iterations per size (default point-to-point: 10000, or
        /// 1000 above 8 KiB; collective: 1000, or 100 above 8 KiB).
        #[arg(long)]
        iters: Option<usize>,
        /// Messages in flight per window (bw, bibw, mr).
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What the collective algorithms would cost at 64 to 16,384 ranks on
    /// EFA-like nodes: the cost model of `hpcomm::model`, the algorithm
    /// hpcomm chooses and the one the model finds cheapest.
    Model(model::ModelOptions),
}

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
fn selftest(names: &[String], list: bool, crash: Option<usize>) -> i32 {
    use hpcomm_cli::selftest::{case, CASES};
    if list {
        for c in CASES {
            println!("{:<16} (at least {} ranks)", c.name, c.min_ranks);
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

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            hpcomm_runtime::config::log_filter()
                .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
                .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match Cli::parse().command {
        Command::Run {
            ranks,
            hosts,
            hostfile,
            exec,
            bind,
            transport,
            timeout,
            grace,
            tag_output,
            verbose,
            program,
        } => {
            let Ok(grace) = Duration::try_from_secs_f64(grace) else {
                eprintln!("hpcomm run: --grace must be a non-negative number of seconds");
                std::process::exit(2);
            };
            let timeout = match timeout.map(Duration::try_from_secs_f64) {
                Some(Err(_)) => {
                    eprintln!("hpcomm run: --timeout must be a non-negative number of seconds");
                    std::process::exit(2);
                }
                Some(Ok(d)) => Some(d),
                None => None,
            };
            let hosts = match hostfile {
                None => hosts,
                Some(path) => match std::fs::read_to_string(&path) {
                    Ok(text) => text
                        .lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect(),
                    Err(e) => {
                        eprintln!("hpcomm run: cannot read {}: {e}", path.display());
                        std::process::exit(2);
                    }
                },
            };
            run::run(run::RunOptions {
                ranks,
                hosts,
                exec,
                bind,
                transport,
                timeout,
                grace,
                tag_output,
                verbose,
                program,
            })
        }
        Command::Info => info::info(),
        Command::Selftest { cases, list, crash } => selftest(&cases, list, crash),
        Command::Bench { kind, min_size, max_size, iters, window, json } => {
            bench::bench(bench::BenchOptions { kind, min_size, max_size, iters, window, json })
        }
        Command::Model(options) => model::model(&options),
    };
    std::process::exit(code);
}
