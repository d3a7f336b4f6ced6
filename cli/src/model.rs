//! `hpcomm model`: tables of what the collectives would cost at scale, from
//! `hpcomm::model`. Each cell is the algorithm hpcomm chooses for that size
//! and job, with its modelled time; where another algorithm is modelled at
//! least 10% cheaper, it follows in brackets.

use hpcomm::model::{self, Link, Machine};
use hpcomm::select::{Allgather, Allreduce, Alltoall, Barrier, Bcast, Gather, Reduce};

/// The parameters of the modelled machine.
#[derive(clap::Args, Debug)]
pub struct ModelOptions {
    /// Ranks per node (block placement).
    #[arg(long, default_value_t = 36)]
    ranks_per_node: usize,
    /// Latency between nodes, µs.
    #[arg(long, default_value_t = 15.0)]
    latency_us: f64,
    /// Bandwidth of a node's network link, GB/s.
    #[arg(long, default_value_t = 12.5)]
    bandwidth_gbs: f64,
    /// Latency between ranks of a node, µs.
    #[arg(long, default_value_t = 0.3)]
    intra_latency_us: f64,
    /// Bandwidth between two ranks of a node, GB/s.
    #[arg(long, default_value_t = 5.0)]
    intra_bandwidth_gbs: f64,
    /// Reduction speed of one rank, GB/s.
    #[arg(long, default_value_t = 10.0)]
    reduce_gbs: f64,
    /// Job sizes, in ranks.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024,4096,16384")]
    ranks: Vec<usize>,
}

/// One collective: its name, the sizes to show, and per (p, size) the
/// chosen algorithm's name and every algorithm with its cost.
struct Table {
    title: &'static str,
    size_label: &'static str,
    sizes: &'static [usize],
    #[allow(clippy::type_complexity)]
    cells: Box<dyn Fn(&Machine, usize, usize) -> (&'static str, Vec<(&'static str, f64)>)>,
}

fn tables() -> Vec<Table> {
    vec![
        Table {
            title: "all_reduce (f32 sum)",
            size_label: "vector",
            sizes: &[8, 1 << 10, 64 << 10, 1 << 20, 16 << 20],
            cells: Box::new(|m, p, n| {
                let chosen = Allreduce::choose(Some(m), p, n, n / 4, true);
                let all = Allreduce::ALL.iter().map(|&a| (a.name(), model::allreduce(m, a, p, n)));
                (chosen.name(), all.collect())
            }),
        },
        Table {
            title: "reduce (f32 sum)",
            size_label: "vector",
            sizes: &[8, 1 << 10, 64 << 10, 1 << 20, 16 << 20],
            cells: Box::new(|m, p, n| {
                let chosen = Reduce::choose(Some(m), p, n, n / 4, true);
                let all = Reduce::ALL.iter().map(|&a| (a.name(), model::reduce(m, a, p, n)));
                (chosen.name(), all.collect())
            }),
        },
        Table {
            title: "broadcast",
            size_label: "message",
            sizes: &[8, 1 << 10, 64 << 10, 1 << 20, 16 << 20],
            cells: Box::new(|m, p, n| {
                let chosen = Bcast::choose(Some(m), p, n);
                let all = Bcast::ALL.iter().map(|&a| (a.name(), model::bcast(m, a, p, n)));
                (chosen.name(), all.collect())
            }),
        },
        Table {
            title: "all_gather (size per rank)",
            size_label: "per rank",
            sizes: &[8, 1 << 10, 64 << 10],
            cells: Box::new(|m, p, n| {
                let total = n * p;
                let chosen = Allgather::choose(Some(m), p, total, true);
                let all = Allgather::ALL
                    .iter()
                    .filter(|&&a| a != Allgather::RecursiveDoubling || p.is_power_of_two())
                    .map(|&a| (a.name(), model::allgather(m, a, p, total)));
                (chosen.name(), all.collect())
            }),
        },
        Table {
            title: "gather (size per rank)",
            size_label: "per rank",
            sizes: &[8, 1 << 10, 64 << 10],
            cells: Box::new(|m, p, n| {
                let chosen = Gather::choose(Some(m), p, n);
                let all = Gather::ALL.iter().map(|&a| (a.name(), model::gather(m, a, p, n)));
                (chosen.name(), all.collect())
            }),
        },
        Table {
            title: "all_to_all (size per pair)",
            size_label: "per pair",
            sizes: &[8, 256, 4 << 10, 64 << 10],
            cells: Box::new(|m, p, n| {
                let chosen = Alltoall::choose(Some(m), p, n, true);
                let all = Alltoall::ALL.iter().map(|&a| (a.name(), model::alltoall(m, a, p, n)));
                (chosen.name(), all.collect())
            }),
        },
        Table {
            title: "barrier",
            size_label: "",
            sizes: &[0],
            cells: Box::new(|m, p, _| {
                let chosen = Barrier::choose(Some(m), p);
                let all = Barrier::ALL.iter().map(|&a| (a.name(), model::barrier(m, a, p)));
                (chosen.name(), all.collect())
            }),
        },
    ]
}

fn time(seconds: f64) -> String {
    match seconds {
        s if s >= 1.0 => format!("{s:.2} s"),
        s if s >= 1e-3 => format!("{:.2} ms", s * 1e3),
        s => format!("{:.1} µs", s * 1e6),
    }
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Prints the tables; returns the exit code.
pub fn model(o: &ModelOptions) -> i32 {
    let positive = [o.latency_us, o.bandwidth_gbs, o.intra_bandwidth_gbs, o.reduce_gbs];
    if o.ranks_per_node == 0 || o.ranks.contains(&0) || positive.iter().any(|&v| v <= 0.0) {
        eprintln!("hpcomm model: ranks, ranks per node, latencies and bandwidths must be positive");
        return 2;
    }
    let m = Machine {
        ranks_per_node: o.ranks_per_node,
        intra: Link { latency: o.intra_latency_us * 1e-6, bandwidth: o.intra_bandwidth_gbs * 1e9 },
        inter: Link { latency: o.latency_us * 1e-6, bandwidth: o.bandwidth_gbs * 1e9 },
        reduce_bandwidth: o.reduce_gbs * 1e9,
    };
    println!(
        "Model: {} ranks per node; between nodes {} µs, {} GB/s per node's link; \
         within {} µs, {} GB/s per pair; reductions {} GB/s.",
        o.ranks_per_node,
        o.latency_us,
        o.bandwidth_gbs,
        o.intra_latency_us,
        o.intra_bandwidth_gbs,
        o.reduce_gbs
    );
    println!(
        "Each cell: hpcomm's choice and its time [a cheaper algorithm, when one is ≥ 10% cheaper]."
    );
    for table in tables() {
        println!();
        println!("### {}", table.title);
        println!();
        let heads: Vec<String> = o.ranks.iter().map(|p| format!("{p} ranks")).collect();
        println!("| {} | {} |", table.size_label, heads.join(" | "));
        println!("|---|{}", "---|".repeat(o.ranks.len()));
        for &n in table.sizes {
            let mut row = Vec::new();
            for &p in &o.ranks {
                let (chosen, all) = (table.cells)(&m, p, n);
                let cost = |name| all.iter().find(|(a, _)| *a == name).map_or(f64::NAN, |c| c.1);
                let mine = cost(chosen);
                let best = all.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
                let mut cell = format!("{chosen} {}", time(mine));
                if let Some((name, t)) = best {
                    if name != chosen && t < 0.9 * mine {
                        cell += &format!(" [{name} {}]", time(t));
                    }
                }
                row.push(cell);
            }
            let label = if table.size_label.is_empty() { String::new() } else { size(n) };
            println!("| {label} | {} |", row.join(" | "));
        }
    }
    0
}
