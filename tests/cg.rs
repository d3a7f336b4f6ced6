//! The conjugate-gradient example's numerics (`examples/cg/model.rs`, the
//! file the example runs): on 1 to 4 ranks the solve takes the serial
//! solver's iteration count and reaches its solution — bit for bit with
//! reproducible dot products, within round-off of the tolerance without —
//! with the halo exchanged by persistent requests and by ordinary
//! non-blocking calls alike.

#[path = "../examples/cg/model.rs"]
mod model;

mod common;

use common::watchdog;
use hpcomm::{dims_create, Collectives};
use model::{Dot, Exchange, Local};

const N: usize = 40;
const TOL: f64 = 1e-10;

/// (iterations, gathered solution, max error against the exact solution).
fn solve(ranks: usize, how: Dot) -> (usize, Vec<f64>, f64) {
    solve_exchanging(ranks, how, Exchange::Persistent)
}

fn solve_exchanging(ranks: usize, how: Dot, exchange: Exchange) -> (usize, Vec<f64>, f64) {
    let out = hpcomm::threads(ranks, |comm| {
        let dims = dims_create(comm.size(), &[0, 0]).unwrap();
        let grid = comm.cartesian(&dims, &[false, false]).unwrap().unwrap();
        let local = Local::new(N, grid.dims(), &grid.coords());
        let s = model::solve(&grid, &local, how, exchange, TOL, 10_000).unwrap();
        let error = model::max_error(&grid, &local, &s.x).unwrap();
        // Every rank agrees on the count.
        let mut counts = [0usize];
        grid.comm().all_reduce(&[s.iterations], &mut counts, hpcomm::op::Max).unwrap();
        assert_eq!(counts[0], s.iterations);
        let residual = *s.residuals.last().unwrap();
        assert!(residual < TOL, "residual {residual}");
        (s.iterations, model::gather(&grid, &local, &s.x).unwrap(), error)
    })
    .unwrap();
    let (iterations, field, error) = out.into_iter().next().unwrap();
    (iterations, field.expect("rank 0 gathers"), error)
}

#[test]
fn reproducible_solves_are_the_serial_solve_bit_for_bit() {
    watchdog(120, "cg-repro", || {
        let (iterations, serial, error) = solve(1, Dot::Reproducible);
        // No truncation error for this solution: what is left is the
        // solver's tolerance.
        assert!(error < 1e-8, "error {error}");
        assert!(iterations > 10, "{iterations}");
        for ranks in [2, 3, 4] {
            for exchange in [Exchange::Persistent, Exchange::NonBlocking] {
                let (its, x, _) = solve_exchanging(ranks, Dot::Reproducible, exchange);
                assert_eq!(its, iterations, "{ranks} ranks, {exchange:?}");
                assert!(
                    x.iter().zip(&serial).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{ranks} ranks, {exchange:?}: not bit for bit"
                );
            }
        }
    });
}

#[test]
fn plain_solves_match_the_serial_solve_within_round_off() {
    watchdog(120, "cg-plain", || {
        let (iterations, serial, _) = solve(1, Dot::Plain);
        for ranks in [2, 3, 4] {
            let (its, x, _) = solve(ranks, Dot::Plain);
            assert_eq!(its, iterations, "{ranks} ranks");
            let diff = x.iter().zip(&serial).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(diff < 10.0 * TOL, "{ranks} ranks: {diff}");
        }
    });
}
