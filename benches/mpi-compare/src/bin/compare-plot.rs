//! Plots of a side-by-side comparison: reads the medians that
//! `ci/compare.sh` writes (`case,implementation,size,value`, one row per
//! point) and draws one log-log PNG per measure, one line per
//! implementation:
//!
//! ```text
//! compare-plot --input target/compare/shm.csv --out target/compare --fabric shm
//! ```
//!
//! Text needs a TrueType font: `--font`, else DejaVu Sans or Liberation Sans
//! where Debian puts them (`apt-get install fonts-dejavu-core`).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Parser;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

#[derive(Parser, Debug)]
#[command(about = "PNG plots of ci/compare.sh's medians")]
struct Args {
    /// The medians, as `case,implementation,size,value` lines.
    #[arg(long)]
    input: PathBuf,
    /// Where the PNG files go.
    #[arg(long)]
    out: PathBuf,
    /// The fabric, for titles and file names (shm, tcp).
    #[arg(long)]
    fabric: String,
    /// A TrueType font for the text.
    #[arg(long)]
    font: Option<PathBuf>,
}

/// What to plot: the case in the medians, the title, the y axis, the file.
const PLOTS: &[(&str, &str, &str, &str)] = &[
    ("latency", "One-way latency, 2 ranks", "latency (µs)", "latency"),
    ("bw", "Bandwidth, 2 ranks, window 64", "bandwidth (MB/s)", "bandwidth"),
    ("mr", "Message rate, 2 ranks, window 64", "messages per second", "message-rate"),
    ("allreduce", "All-reduce (f32 sum), 2 ranks", "latency (µs)", "allreduce"),
    ("allreduce-4", "All-reduce (f32 sum), 4 ranks", "latency (µs)", "allreduce-4"),
];

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

type Series = BTreeMap<String, Vec<(f64, f64)>>;

fn load(path: &Path) -> Result<BTreeMap<String, Series>, Box<dyn Error>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut cases: BTreeMap<String, Series> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("case,") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let [case, implementation, size, value] = fields[..] else {
            return Err(format!("{}:{}: expected 4 fields: {line}", path.display(), n + 1).into());
        };
        let bad = |what: &str| format!("{}:{}: bad {what}: {line}", path.display(), n + 1);
        let size: f64 = size.parse().map_err(|_| bad("size"))?;
        let value: f64 = value.parse().map_err(|_| bad("value"))?;
        // Log axes: a zero-byte message has no place on them.
        if size > 0.0 && value > 0.0 {
            cases
                .entry(case.to_string())
                .or_default()
                .entry(implementation.to_string())
                .or_default()
                .push((size, value));
        }
    }
    Ok(cases)
}

fn use_font(chosen: Option<&Path>) -> Result<(), Box<dyn Error>> {
    let candidates: Vec<PathBuf> = match chosen {
        Some(p) => vec![p.to_path_buf()],
        None => FONTS.iter().map(PathBuf::from).collect(),
    };
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            // The registry keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType font", path.display()))?;
            return Ok(());
        }
    }
    Err(format!(
        "no TrueType font found (looked for {}); install fonts-dejavu-core or pass --font",
        candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )
    .into())
}

fn colour(implementation: &str) -> RGBColor {
    match implementation {
        "hpcomm" => RGBColor(0xd6, 0x27, 0x28),
        "mpich-c" => RGBColor(0x1f, 0x77, 0xb4),
        "openmpi-c" => RGBColor(0x2c, 0xa0, 0x2c),
        "mpich-rsmpi" => RGBColor(0x9e, 0xc5, 0xe8),
        "openmpi-rsmpi" => RGBColor(0x98, 0xdf, 0x8a),
        _ => RGBColor(0x55, 0x55, 0x55),
    }
}

fn label(implementation: &str) -> &str {
    match implementation {
        "mpich-c" => "MPICH (C)",
        "openmpi-c" => "Open MPI (C)",
        "mpich-rsmpi" => "MPICH (rsmpi)",
        "openmpi-rsmpi" => "Open MPI (rsmpi)",
        other => other,
    }
}

fn plot(path: &Path, title: &str, y_label: &str, series: &Series) -> Result<(), Box<dyn Error>> {
    let points = series.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 >= x1 {
        // One size only: widen the axis around it.
        (x0, x1) = (x0 / 2.0, x1 * 2.0);
    }
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((x0..x1).log_scale(), (y0 / 1.5..y1 * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes)")
        .y_desc(y_label)
        .x_label_formatter(&|x| human(*x))
        .y_label_formatter(&|y| human(*y))
        .label_style(("sans-serif", 14))
        .draw()?;
    for (implementation, points) in series {
        let mut points = points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = colour(implementation);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
            .label(label(implementation))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

/// 1, 512, 4K, 1M, 2.5G: short labels for log axes.
fn human(v: f64) -> String {
    let (scaled, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "K"),
        v => (v, ""),
    };
    if scaled >= 10.0 || scaled.fract() == 0.0 {
        format!("{scaled:.0}{unit}")
    } else {
        format!("{scaled:.1}{unit}")
    }
}

fn run(args: &Args) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let cases = load(&args.input)?;
    use_font(args.font.as_deref())?;
    std::fs::create_dir_all(&args.out)?;
    let mut written = Vec::new();
    for &(case, title, y_label, file) in PLOTS {
        let Some(series) = cases.get(case) else { continue };
        let path = args.out.join(format!("{}-{file}.png", args.fabric));
        plot(&path, &format!("{title} ({})", args.fabric), y_label, series)?;
        written.push(path);
    }
    if written.is_empty() {
        return Err(format!("{}: no case to plot", args.input.display()).into());
    }
    Ok(written)
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
        }
        Err(e) => {
            eprintln!("compare-plot: {e}");
            std::process::exit(1);
        }
    }
}
