//! The `hpcomm` command: start jobs (`run`), describe this machine's
//! transports (`info`) and measure them (`bench`).
#![forbid(unsafe_code)]

mod bench;
mod info;

mod model;
mod plan;
mod run;
mod selftest_command;
mod startup;

use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use hpcomm_runtime::TransportChoice;

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
        /// Number of ranks (required, except under --batch).
        #[arg(short = 'n', long = "np", value_name = "N", required_unless_present = "batch")]
        ranks: Option<usize>,
        /// An AWS Batch multi-node parallel job: this command runs on every
        /// node; the main node serves the job on PORT (default 47100) and
        /// the others join it (see docs/launching.md).
        #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "47100",
              conflicts_with_all = ["hosts", "hostfile", "ranks"])]
        batch: Option<u16>,
        /// Under --batch: ranks on each node (default: the main node's cores).
        #[arg(long, value_name = "K", requires = "batch")]
        ranks_per_node: Option<usize>,
        /// Under --batch: how long a node waits for the main node to answer.
        #[arg(long, value_name = "SECONDS", default_value = "600", value_parser = seconds,
              requires = "batch")]
        batch_wait: Duration,
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
        #[arg(long, default_value = "auto", value_parser = PossibleValuesParser::new(TransportChoice::names()))]
        transport: String,
        /// End the job if it runs longer than this many seconds.
        #[arg(long, value_name = "SECONDS", value_parser = seconds)]
        timeout: Option<Duration>,
        /// Once a rank has failed, how long the others may take to notice
        /// it and end by themselves (reporting their errors) before they
        /// are ended.
        #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = seconds)]
        grace: Duration,
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
        #[command(flatten)]
        options: bench::BenchOptions,
        /// Print the plan instead of running it: `size iters skip` per
        /// line, the input of the C twin (benches/c-compare/osu.c).
        #[arg(long)]
        plan: bool,
    },
    /// What the collective algorithms would cost at 64 to 16,384 ranks on
    /// EFA-like nodes: the cost model of `hpcomm::model`, the algorithm
    /// hpcomm chooses and the one the model finds cheapest.
    Model(model::ModelOptions),
    /// How long joining a job takes (for ci/startup.sh and ci/scale.sh):
    /// every rank joins and passes one barrier; rank 0 prints when it ended
    /// (µs since the epoch) and how long its init and the barrier took.
    /// Then the job checks a token ring and an all_reduce, and rank 0
    /// prints the ranks' peak resident memory.
    Startup {
        /// Instead: the key-value server's share of a start-up of N ranks,
        /// with N clients as threads of this process.
        #[arg(long, value_name = "N")]
        server_load: Option<usize>,
    },
}

/// A number of seconds (`--timeout 1.5`), for clap to parse options with.
fn seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{text:?} is not a non-negative number of seconds"))
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
            batch,
            ranks_per_node,
            batch_wait,
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
                ranks: ranks.or(ranks_per_node),
                batch,
                batch_wait,
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
        Command::Selftest { cases, list, crash } => selftest_command::run(&cases, list, crash),
        Command::Bench { options, plan } => {
            if plan {
                bench::print_plan(&options)
            } else {
                bench::bench(options)
            }
        }
        Command::Model(options) => model::model(&options),
        Command::Startup { server_load: None } => startup::run(),
        Command::Startup { server_load: Some(n) } => startup::server_load(n),
    };
    std::process::exit(code);
}
