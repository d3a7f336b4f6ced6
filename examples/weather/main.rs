//! A shallow-water weather model on a doubly periodic grid, decomposed over
//! a Cartesian grid of ranks.
//!
//! ```text
//! cargo run --release --example weather                      # 4 ranks over shm, 256 × 256, writes target/weather.png
//! cargo run --release --example weather -- --ranks 6 --validate
//! hpcomm run -n 4 --transport tcp -- target/release/examples/weather --size bench
//! ```
//!
//! With no launcher around, the program starts its own ranks as threads of
//! this process connected by the shm backend (`--ranks`, default 4); under
//! `hpcomm run` each rank is a process on the job's transport and hosts
//! (`hpcomm::job` does both).
//!
//! Each step exchanges one-cell halos with the four neighbours by a
//! persistent neighbourhood all-to-all (`neighbor_all_to_all_v_init`, set
//! up on the first step and started on every one), updates the interior
//! while the halos travel, then the edges. Every `--diag-every` steps the total mass and
//! energy are summed with `all_reduce`. At the end (and every
//! `--image-every` steps) rank 0 gathers the depth field and writes a PNG
//! with axes, a colour scale of the depth and the model time.
//! `--validate` has rank 0 rerun the whole grid alone and check that the
//! distributed field is the same, bit for bit.

#[path = "../common/font.rs"]
mod font;
mod model;
mod parallel;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use hpcomm::op::Sum;
use hpcomm::{Collectives, Communicator};
use model::{Block, Problem};
use parallel::{Halo, StepTimes};

#[derive(Parser, Debug, Clone)]
#[command(about = "Shallow-water weather model over hpcomm")]
struct Args {
    /// Ranks to start when no launcher is around.
    #[arg(long, default_value_t = 4)]
    ranks: usize,
    /// Problem size: small (128², 200 steps), default (256², 400 steps),
    /// bench (1024², 400 steps). --nx, --ny and --steps override it.
    #[arg(long, value_enum, default_value_t = Size::Default)]
    size: Size,
    #[arg(long)]
    nx: Option<usize>,
    #[arg(long)]
    ny: Option<usize>,
    #[arg(long)]
    steps: Option<usize>,
    /// Steps between mass and energy reports.
    #[arg(long, default_value_t = 100)]
    diag_every: usize,
    /// Where the final depth field's image goes ("none": no image).
    #[arg(long, default_value = "target/weather.png")]
    image: PathBuf,
    /// Also write an image every K steps (NAME-STEP.png beside --image).
    #[arg(long, default_value_t = 0)]
    image_every: usize,
    /// Rerun the grid on rank 0 alone and check the field bit for bit.
    #[arg(long)]
    validate: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Size {
    Small,
    Default,
    Bench,
}

impl Args {
    fn problem(&self) -> (Problem, usize) {
        let (n, steps) = match self.size {
            Size::Small => (128, 200),
            Size::Default => (256, 400),
            Size::Bench => (1024, 400),
        };
        let p = Problem { nx: self.nx.unwrap_or(n), ny: self.ny.unwrap_or(n) };
        (p, self.steps.unwrap_or(steps))
    }
}

/// What rank 0 reports at the end.
struct Summary {
    ranks: usize,
    transport: String,
    dims: Vec<usize>,
    per_step: f64,
    comm_share: f64,
    drift: f64,
    validated: Option<bool>,
}

fn run(comm: &Communicator, args: &Args) -> Result<Option<Summary>, Box<dyn Error>> {
    let (p, steps) = args.problem();
    if p.nx < comm.size() || p.ny < comm.size() || p.nx == 0 || p.ny == 0 {
        return Err(
            format!("a {}×{} grid is too small for {} ranks", p.nx, p.ny, comm.size()).into()
        );
    }
    let dims = hpcomm::dims_create(comm.size(), &[0, 0])?;
    let grid = comm.cartesian(&dims, &[true, true])?.ok_or("every rank is in the grid")?;
    let near = parallel::neighbours(&grid)?;
    let mut block = Block::new(&p, grid.dims(), &grid.coords());
    let mut halo = Halo::default();
    let mut times = StepTimes::default();
    let root = grid.comm().rank() == 0;
    let [mass0, energy0] = parallel::global_diagnostics(&p, &grid, &block)?;
    let bar = if root {
        let bar = indicatif::ProgressBar::new(steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let start = Instant::now();
    for n in 1..=steps {
        parallel::step(&p, &grid, &near, &mut block, &mut halo, &mut times)?;
        if args.diag_every > 0 && (n % args.diag_every == 0 || n == steps) {
            let t = Instant::now();
            let [mass, energy] = parallel::global_diagnostics(&p, &grid, &block)?;
            times.communication += t.elapsed().as_secs_f64();
            if let Some(bar) = &bar {
                bar.println(format!(
                    "step {n:>5}: mass {mass:.12} ({:+.1e}), energy {energy:.6} ({:+.2}%)",
                    (mass - mass0) / mass0,
                    100.0 * (energy - energy0) / energy0
                ));
            }
        }
        if args.image_every > 0 && n % args.image_every == 0 && n != steps {
            if let Some(field) = parallel::gather_field(&p, &grid, &block)? {
                write_image(&numbered(&args.image, n), &p, &field, n)?;
            }
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let [mass, _] = parallel::global_diagnostics(&p, &grid, &block)?;
    let mut shares = [0.0];
    grid.comm().all_reduce(&[times.communication / elapsed.max(1e-9)], &mut shares, Sum)?;
    let field = parallel::gather_field(&p, &grid, &block)?;
    let Some(field) = field else { return Ok(None) };
    if args.image.as_os_str() != "none" {
        write_image(&args.image, &p, &field, steps)?;
        println!("weather: wrote {}", args.image.display());
    }
    let validated = args.validate.then(|| {
        let reference = model::serial(&p, steps);
        reference.len() == field.len()
            && reference
                .iter()
                .zip(&field)
                .all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()))
    });
    Ok(Some(Summary {
        ranks: comm.size(),
        transport: comm.transport_name().to_string(),
        dims: grid.dims().to_vec(),
        per_step: elapsed / steps.max(1) as f64,
        comm_share: shares[0] / comm.size() as f64,
        drift: (mass - mass0) / mass0,
        validated,
    }))
}

/// `weather.png` and step 100 → `weather-100.png`.
fn numbered(path: &Path, step: usize) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("weather");
    path.with_file_name(format!("{stem}-{step}.png"))
}

/// The depth field at `step` as a PNG that explains itself: the field
/// (deep blue for the shallowest water through white to dark red for the
/// deepest) on the unit square with its axes, a colour scale of the depth
/// beside it, and the model time and step above it. Small grids are drawn
/// with several pixels per cell. Without a system font the text is left
/// out and the rest drawn.
fn write_image(
    path: &Path,
    p: &Problem,
    field: &[[f64; 3]],
    step: usize,
) -> Result<(), Box<dyn Error>> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = font::register();
    let (lo, hi) =
        field.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v[0]), hi.max(v[0])));
    let span = (hi - lo).max(1e-12);
    // The field's side in pixels: at least 512, a whole number per cell.
    let scale = (512 / p.nx.max(p.ny)).max(1) as u32;
    let (fw, fh) = (p.nx as u32 * scale, p.ny as u32 * scale);
    let (axis, top, bar) = if text { (60, 50, 130) } else { (10, 10, 50) };
    let root =
        BitMapBackend::new(path, (fw + axis + 20 + bar, fh + top + axis)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(fw + axis + 20);
    let mut builder = ChartBuilder::on(&left);
    builder.margin_top(top).margin_right(20);
    if text {
        let time = step as f64 * p.dt();
        builder
            .caption(format!("water depth at t = {time:.3} (step {step})"), ("sans-serif", 22))
            .x_label_area_size(axis)
            .y_label_area_size(axis);
        builder.margin_top(10);
    }
    let mut chart = builder.build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh();
    if text {
        mesh.x_desc("x").y_desc("y").label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    // Row 0 is at y = 0, the bottom.
    let area = chart.plotting_area().strip_coord_spec();
    let (w, h) = area.dim_in_pixel();
    for py in 0..h {
        let r = ((h - 1 - py) as usize * p.ny / h as usize).min(p.ny - 1);
        for px in 0..w {
            let c = (px as usize * p.nx / w as usize).min(p.nx - 1);
            let t = (field[r * p.nx + c][0] - lo) / span;
            area.draw_pixel((px as i32, py as i32), &colour(t))?;
        }
    }
    // The colour scale: the depths from lo to hi, labelled.
    let mut builder = ChartBuilder::on(&right);
    builder.margin_top(top).margin_bottom(axis).margin_right(10);
    if text {
        builder.margin_top(10 + 22 + 10).y_label_area_size(80);
    }
    let mut scale = builder.build_cartesian_2d(0.0..1.0, lo..lo + span)?;
    let mut mesh = scale.configure_mesh();
    mesh.disable_mesh().x_labels(0);
    if text {
        mesh.y_desc("depth")
            .label_style(("sans-serif", 14))
            .y_label_formatter(&|d| format!("{d:.3}"));
    } else {
        mesh.y_labels(0);
    }
    mesh.draw()?;
    let area = scale.plotting_area().strip_coord_spec();
    let (w, h) = area.dim_in_pixel();
    for py in 0..h {
        let t = (h - 1 - py) as f64 / (h - 1).max(1) as f64;
        for px in 0..w {
            area.draw_pixel((px as i32, py as i32), &colour(t))?;
        }
    }
    root.present()?;
    Ok(())
}

fn colour(t: f64) -> plotters::style::RGBColor {
    let lerp = |a: f64, b: f64, t: f64| (a + (b - a) * t).round().clamp(0.0, 255.0) as u8;
    let (a, b, t) = if t < 0.5 {
        ((20.0, 40.0, 120.0), (245.0, 245.0, 245.0), t * 2.0)
    } else {
        ((245.0, 245.0, 245.0), (150.0, 20.0, 30.0), t * 2.0 - 1.0)
    };
    plotters::style::RGBColor(lerp(a.0, b.0, t), lerp(a.1, b.1, t), lerp(a.2, b.2, t))
}

fn main() {
    let args = Args::parse();
    let outcome = hpcomm::job(args.ranks, |comm| run(comm, &args).map_err(|e| e.to_string()))
        .map_err(|e| e.to_string())
        .and_then(|results| results.into_iter().try_fold(None, |s, r| r.map(|r| s.or(r))));
    match outcome {
        Ok(Some(s)) => {
            let (p, steps) = args.problem();
            println!(
                "weather: {} ranks ({}×{}) over {}, {}×{} cells, {steps} steps: {:.3} ms per step, \
                 {:.0}% communicating; mass drift {:+.1e}",
                s.ranks,
                s.dims[0],
                s.dims[1],
                s.transport,
                p.nx,
                p.ny,
                s.per_step * 1e3,
                100.0 * s.comm_share,
                s.drift
            );
            match s.validated {
                Some(true) => println!("weather: the field is bit for bit the single-rank field"),
                Some(false) => {
                    eprintln!("weather: the field differs from the single-rank field");
                    std::process::exit(1);
                }
                None => {}
            }
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("weather: {e}");
            std::process::exit(1);
        }
    }
}
