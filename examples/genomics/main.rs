//! Distributed k-mer counting of sequencing reads.
//!
//! ```text
//! cargo run --release --example genomics                       # 4 ranks over shm, the bundled reads
//! cargo run --release --example genomics -- --generate reads.fq --reads 200000
//! hpcomm run -n 4 -- target/release/examples/genomics --input reads.fq --validate
//! ```
//!
//! Each rank parses its share of a FASTA or FASTQ file (the records that
//! start in its part of the bytes; parsed with needletail), turns every
//! read into canonical k-mers (k ≤ 31, 2 bits per base) and sends each to
//! the rank that owns it — chosen by a hash with a fixed seed, the same in
//! every process — in rounds of `all_to_all_v` of at most `--batch` k-mers
//! per rank, so that memory for the exchange stays bounded whatever the
//! input's size. The owners count. The k-mer spectrum (how many distinct
//! k-mers occur once, twice, …) is summed with `all_reduce`, the most
//! frequent k-mers gathered to rank 0, and the spectrum plotted to a PNG.
//!
//! Nothing can be downloaded here, so `--generate` writes a deterministic
//! synthetic genome with repeats as reads with errors; a small such file is
//! bundled (`examples/genomics/data/small.fastq`), the default input, found
//! from the crate's directory wherever the program is started.

#[path = "../common/font.rs"]
mod font;
mod kmers;

use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Parser;
use hpcomm::op::Sum;
use hpcomm::{Collectives, Communicator};

#[derive(Parser, Debug, Clone)]
#[command(about = "Distributed k-mer counting over hpcomm")]
struct Args {
    /// Ranks to start when no launcher is around.
    #[arg(long, default_value_t = 4)]
    ranks: usize,
    /// FASTA or FASTQ input (default: the bundled reads).
    #[arg(long, default_value = BUNDLED)]
    input: PathBuf,
    /// k-mer length, 1 to 31.
    #[arg(short, default_value_t = 21)]
    k: usize,
    /// Most k-mers a rank sends per exchange round.
    #[arg(long, default_value_t = 1 << 16)]
    batch: usize,
    /// How many of the most frequent k-mers to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Where the spectrum's plot goes ("none": no plot).
    #[arg(long, default_value = "target/kmer-spectrum.png")]
    plot: PathBuf,
    /// Every rank recounts the whole input alone and checks its k-mers.
    #[arg(long)]
    validate: bool,
    /// Write synthetic reads (FASTQ) to this file and exit.
    #[arg(long)]
    generate: Option<PathBuf>,
    /// For --generate: genome length.
    #[arg(long, default_value_t = 1_000_000)]
    genome_len: usize,
    /// For --generate: number of reads.
    #[arg(long, default_value_t = 100_000)]
    reads: usize,
    /// For --generate: read length.
    #[arg(long, default_value_t = 150)]
    read_len: usize,
    /// For --generate: substitution error rate.
    #[arg(long, default_value_t = 0.01)]
    error_rate: f64,
    /// For --generate: the seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const BINS: usize = 64;

/// The bundled reads, by the path the crate had when it was built: the
/// default input works from any directory (not from a copy of the program
/// taken to another machine, which names its input).
const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/genomics/data/small.fastq");

struct Summary {
    ranks: usize,
    transport: String,
    records: usize,
    kmers: u64,
    distinct: u64,
    seconds: f64,
    comm_share: f64,
    rounds: usize,
    peak_buffered: usize,
    spectrum: Vec<u64>,
    top: Vec<(u64, u32)>,
    validated: Option<bool>,
}

fn run(comm: &Communicator, args: &Args) -> Result<Option<Summary>, Box<dyn Error>> {
    if !(1..=31).contains(&args.k) || args.batch == 0 {
        return Err("need 1 ≤ k ≤ 31 and a batch of at least one k-mer".into());
    }
    if !args.input.exists() {
        return Err(
            format!("{}: no such file (make one with --generate)", args.input.display()).into()
        );
    }
    let start = std::time::Instant::now();
    let counts = kmers::count(comm, &args.input, args.k, args.batch).map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let mine = kmers::spectrum(&counts.table, BINS);
    let mut spectrum = vec![0u64; BINS];
    comm.all_reduce(&mine, &mut spectrum, Sum)?;
    let local = [
        counts.records as u64,
        counts.table.values().map(|&c| u64::from(c)).sum(),
        counts.table.len() as u64,
    ];
    let mut totals = [0u64; 3];
    comm.all_reduce(&local, &mut totals, Sum)?;
    let mut share = [0.0];
    comm.all_reduce(&[counts.communication / seconds.max(1e-9)], &mut share, Sum)?;
    // The most frequent: each rank's top, gathered, merged on rank 0.
    let mut best: Vec<(u64, u32)> = counts.table.iter().map(|(&k, &c)| (k, c)).collect();
    best.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    best.resize(args.top, (0, 0));
    let flat: Vec<u64> = best.iter().flat_map(|&(k, c)| [k, u64::from(c)]).collect();
    let root = comm.rank() == 0;
    let mut all = vec![0u64; if root { flat.len() * comm.size() } else { 0 }];
    comm.gather(&flat, &mut all, 0)?;
    let validated = if args.validate {
        let serial = kmers::serial(&args.input, args.k);
        let n = comm.size();
        let wrong = serial
            .iter()
            .filter(|(k, _)| kmers::owner(**k, n) == comm.rank())
            .filter(|(k, c)| counts.table.get(k) != Some(c))
            .count()
            + counts.table.keys().filter(|k| !serial.contains_key(k)).count();
        let mut total = [0usize];
        comm.all_reduce(&[wrong], &mut total, Sum)?;
        Some(total[0] == 0)
    } else {
        None
    };
    if !root {
        return Ok(None);
    }
    let mut top: Vec<(u64, u32)> =
        all.chunks(2).map(|p| (p[0], p[1] as u32)).filter(|p| p.1 > 0).collect();
    top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(args.top);
    Ok(Some(Summary {
        ranks: comm.size(),
        transport: comm.transport_name().to_string(),
        records: totals[0] as usize,
        kmers: totals[1],
        distinct: totals[2],
        seconds,
        comm_share: share[0] / comm.size() as f64,
        rounds: counts.rounds,
        peak_buffered: counts.peak_buffered,
        spectrum,
        top,
        validated,
    }))
}

fn plot(path: &Path, k: usize, spectrum: &[u64]) -> Result<(), Box<dyn Error>> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = font::register();
    let points: Vec<(f64, f64)> = spectrum
        .iter()
        .enumerate()
        .skip(1)
        .filter(|&(_, &n)| n > 0)
        .map(|(c, &n)| (c as f64, n as f64))
        .collect();
    let top = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if text {
        builder
            .caption(format!("{k}-mer spectrum"), ("sans-serif", 24))
            .x_label_area_size(48)
            .y_label_area_size(80);
    }
    let mut chart = builder.build_cartesian_2d(1.0..BINS as f64, (0.5..top * 2.0).log_scale())?;
    if text {
        chart
            .configure_mesh()
            .x_desc(format!("occurrences (last bin: {} or more)", BINS - 1))
            .y_desc("distinct k-mers")
            .draw()?;
    }
    chart.draw_series(LineSeries::new(points.iter().copied(), BLUE.stroke_width(2)))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    root.present()?;
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Some(path) = &args.generate {
        let written = std::fs::File::create(path).and_then(|f| {
            let mut out = std::io::BufWriter::new(f);
            kmers::generate(
                &mut out,
                args.seed,
                args.genome_len,
                args.reads,
                args.read_len,
                args.error_rate,
            )?;
            std::io::Write::flush(&mut out)
        });
        match written {
            Ok(()) => println!("genomics: wrote {} reads to {}", args.reads, path.display()),
            Err(e) => {
                eprintln!("genomics: {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        return;
    }
    let outcome = hpcomm::job(args.ranks, |comm| run(comm, &args).map_err(|e| e.to_string()))
        .map_err(|e| e.to_string())
        .and_then(|results| results.into_iter().try_fold(None, |s, r| r.map(|r| s.or(r))));
    let s = match outcome {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            eprintln!("genomics: {e}");
            std::process::exit(1);
        }
    };
    println!("genomics: spectrum (occurrences: distinct {}-mers)", args.k);
    for (c, n) in s.spectrum.iter().enumerate().skip(1).filter(|(_, &n)| n > 0).take(12) {
        println!("  {c:>3}{}: {n}", if c == BINS - 1 { "+" } else { "" });
    }
    println!("genomics: the {} most frequent", s.top.len());
    for (kmer, count) in &s.top {
        println!("  {}  {count}", kmers::decode(*kmer, args.k));
    }
    if args.plot.as_os_str() != "none" {
        match plot(&args.plot, args.k, &s.spectrum) {
            Ok(()) => println!("genomics: wrote {}", args.plot.display()),
            Err(e) => eprintln!("genomics: plot: {e}"),
        }
    }
    println!(
        "genomics: {} ranks over {}, {} records, {} {}-mers ({} distinct): {:.3} s, {:.0}% communicating, \
         {} exchange rounds of at most {} k-mers per rank (rank 0 held at most {} at once)",
        s.ranks,
        s.transport,
        s.records,
        s.kmers,
        args.k,
        s.distinct,
        s.seconds,
        100.0 * s.comm_share,
        s.rounds,
        args.batch,
        s.peak_buffered
    );
    match s.validated {
        Some(true) => println!("genomics: every count equals the serial count"),
        Some(false) => {
            eprintln!("genomics: counts differ from the serial count");
            std::process::exit(1);
        }
        None => {}
    }
}
