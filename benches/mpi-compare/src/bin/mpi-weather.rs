//! The weather example through rsmpi: the same numerics
//! (`examples/weather/model.rs`, included as it is), the same
//! decomposition (balanced grid of ranks in row-major order, doubly
//! periodic) and the same communication pattern (non-blocking halo
//! exchange overlapped with the interior update, mass and energy summed
//! every `--diag-every` steps), so that time per step compares the
//! runtimes and nothing else:
//!
//! ```text
//! mpirun -n 4 mpi-weather --nx 1024 --ny 1024 --steps 400
//! ```

#[path = "../../../../examples/weather/model.rs"]
mod model;

use std::time::Instant;

use clap::Parser;
use model::{Block, Problem};
use mpi::collective::SystemOperation;
use mpi::request::multiple_scope;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

#[derive(Parser, Debug)]
#[command(about = "The weather example through rsmpi")]
struct Args {
    #[arg(long, default_value_t = 256)]
    nx: usize,
    #[arg(long, default_value_t = 256)]
    ny: usize,
    #[arg(long, default_value_t = 400)]
    steps: usize,
    #[arg(long, default_value_t = 100)]
    diag_every: usize,
}

/// Balanced 2-D dimensions, largest first (as `hpcomm::dims_create`).
fn dims(n: usize) -> [usize; 2] {
    let mut best = [n, 1];
    for a in 1..=n {
        if n % a == 0 && a >= n / a && a - n / a < best[0] - best[1] {
            best = [a, n / a];
        }
    }
    best
}

// Cells travel flattened to f64: rsmpi sends slices of its own datatypes.

fn rank_at(d: [usize; 2], r: isize, c: isize) -> i32 {
    let (r, c) = (r.rem_euclid(d[0] as isize) as usize, c.rem_euclid(d[1] as isize) as usize);
    (r * d[1] + c) as i32
}

fn diagnostics(world: &SimpleCommunicator, p: &Problem, b: &Block) -> [f64; 2] {
    let mut total = [0.0; 2];
    world.all_reduce_into(&b.diagnostics(p)[..], &mut total[..], SystemOperation::sum());
    total
}

fn main() {
    let args = Args::parse();
    let Some(universe) = mpi::initialize() else {
        eprintln!("mpi-weather: MPI was already initialized");
        std::process::exit(1);
    };
    let world = universe.world();
    let n = world.size() as usize;
    let p = Problem { nx: args.nx, ny: args.ny };
    if p.nx < n || p.ny < n {
        eprintln!("mpi-weather: the grid is too small for {n} ranks");
        std::process::exit(2);
    }
    let d = dims(n);
    let me = world.rank() as usize;
    let (cr, cc) = ((me / d[1]) as isize, (me % d[1]) as isize);
    // up, down, left, right
    let near = [
        rank_at(d, cr - 1, cc),
        rank_at(d, cr + 1, cc),
        rank_at(d, cr, cc - 1),
        rank_at(d, cr, cc + 1),
    ];
    let mut b = Block::new(&p, &d, &[cr as usize, cc as usize]);
    let (rows, cols) = (b.rows, b.cols);
    let mut send: [Vec<[f64; 3]>; 4] = Default::default();
    let mut recv: [Vec<[f64; 3]>; 4] = Default::default();
    let [mass0, _] = diagnostics(&world, &p, &b);
    world.barrier();
    let start = Instant::now();
    for step in 1..=args.steps {
        send[0].clear();
        send[0].extend_from_slice(b.row(1));
        send[1].clear();
        send[1].extend_from_slice(b.row(rows));
        b.column(1, &mut send[2]);
        b.column(cols, &mut send[3]);
        for (k, len) in [cols, cols, rows, rows].into_iter().enumerate() {
            recv[k].resize(len, [0.0; 3]);
        }
        let [from_up, from_down, from_left, from_right] = &mut recv;
        multiple_scope(8, |scope, reqs| {
            let at = |r: i32| world.process_at_rank(r);
            reqs.add(at(near[1]).immediate_receive_into_with_tag(
                scope,
                from_down.as_flattened_mut(),
                0,
            ));
            reqs.add(at(near[0]).immediate_receive_into_with_tag(
                scope,
                from_up.as_flattened_mut(),
                1,
            ));
            reqs.add(at(near[3]).immediate_receive_into_with_tag(
                scope,
                from_right.as_flattened_mut(),
                2,
            ));
            reqs.add(at(near[2]).immediate_receive_into_with_tag(
                scope,
                from_left.as_flattened_mut(),
                3,
            ));
            for (k, buf) in send.iter().enumerate() {
                reqs.add(at(near[k]).immediate_send_with_tag(scope, buf.as_flattened(), k as i32));
            }
            if rows > 2 && cols > 2 {
                b.update(&p, 2..rows, 2..cols);
            }
            let mut done = Vec::new();
            reqs.wait_all(&mut done);
        });
        b.set_row(0, from_up);
        b.set_row(rows + 1, from_down);
        b.set_column(0, from_left);
        b.set_column(cols + 1, from_right);
        b.update(&p, 1..2, 1..cols + 1);
        if rows > 1 {
            b.update(&p, rows..rows + 1, 1..cols + 1);
        }
        if rows > 2 {
            b.update(&p, 2..rows, 1..2);
            if cols > 1 {
                b.update(&p, 2..rows, cols..cols + 1);
            }
        }
        b.advance();
        if args.diag_every > 0 && (step % args.diag_every == 0 || step == args.steps) {
            diagnostics(&world, &p, &b);
        }
    }
    let per_step = start.elapsed().as_secs_f64() / args.steps.max(1) as f64;
    let [mass, _] = diagnostics(&world, &p, &b);
    if me == 0 {
        println!(
            "mpi-weather: {n} ranks ({}×{}), {}×{} cells, {} steps: {:.3} ms per step; mass drift {:+.1e}",
            d[0],
            d[1],
            p.nx,
            p.ny,
            args.steps,
            per_step * 1e3,
            (mass - mass0) / mass0
        );
    }
}
