//! The weather example's numerics (`examples/weather/model.rs`, the same
//! file the example runs): mass conserved to round-off, and the field after
//! K steps on 1, 2, 4 and 6 ranks identical, bit for bit, to the serial
//! run. The example itself runs under `hpcomm run` in `tests/examples.rs`.

#[path = "../examples/weather/model.rs"]
mod model;
#[path = "../examples/weather/parallel.rs"]
mod parallel;

mod common;

use common::watchdog;
use hpcomm::{dims_create, ThreadsConfig, ThreadsFabric};
use model::{Block, Problem};
use parallel::{Halo, StepTimes};

const STEPS: usize = 40;

/// Runs the distributed model on `ranks` threads; the gathered field.
fn distributed(p: Problem, ranks: usize, fabric: ThreadsFabric) -> Vec<[f64; 3]> {
    let config = ThreadsConfig { fabric, ..ThreadsConfig::default() };
    let fields = hpcomm::threads_with(ranks, &config, |comm| {
        let dims = dims_create(comm.size(), &[0, 0]).unwrap();
        let grid = comm.cartesian(&dims, &[true, true]).unwrap().unwrap();
        let near = parallel::neighbours(&grid).unwrap();
        let mut block = Block::new(&p, grid.dims(), &grid.coords());
        let (mut halo, mut times) = (Halo::default(), StepTimes::default());
        for _ in 0..STEPS {
            parallel::step(&p, &grid, &near, &mut block, &mut halo, &mut times).unwrap();
        }
        parallel::gather_field(&p, &grid, &block).unwrap()
    })
    .unwrap();
    fields.into_iter().next().flatten().expect("rank 0 has the field")
}

fn same_bits(a: &[[f64; 3]], b: &[[f64; 3]]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()))
}

#[test]
fn the_field_is_the_same_bit_for_bit_on_1_2_4_and_6_ranks() {
    watchdog(120, "weather-ranks", || {
        // Not divisible by 4 or 6 along either axis: uneven blocks too.
        let p = Problem { nx: 50, ny: 38 };
        let reference = model::serial(&p, STEPS);
        for ranks in [1, 2, 4, 6] {
            let field = distributed(p, ranks, ThreadsFabric::Loopback);
            assert!(same_bits(&field, &reference), "{ranks} ranks differ from the serial run");
        }
        let over_shm = distributed(p, 4, ThreadsFabric::Shm(Default::default()));
        assert!(same_bits(&over_shm, &reference), "4 ranks over shm differ");
        // The model moved: the comparison is not between two initial states.
        let initial = Block::new(&p, &[1, 1], &[0, 0]).owned();
        assert!(!same_bits(&initial, &reference));
    });
}

#[test]
fn mass_is_conserved_to_round_off() {
    let p = Problem { nx: 64, ny: 64 };
    let mut b = Block::new(&p, &[1, 1], &[0, 0]);
    let [mass0, energy0] = b.diagnostics(&p);
    for _ in 0..200 {
        b.step_serial(&p);
    }
    let [mass, energy] = b.diagnostics(&p);
    assert!(((mass - mass0) / mass0).abs() < 1e-13, "mass {mass0} -> {mass}");
    // Lax–Friedrichs is diffusive: energy decays, it never grows.
    assert!(energy < energy0 && energy > 0.9 * energy0, "energy {energy0} -> {energy}");
}

#[test]
fn blocks_cover_the_grid_once() {
    for (n, parts) in [(10, 3), (7, 7), (100, 6), (5, 1)] {
        let mut next = 0;
        for i in 0..parts {
            let (start, len) = model::extent(n, parts, i);
            assert_eq!(start, next);
            assert!(len == n / parts || len == n / parts + 1);
            next += len;
        }
        assert_eq!(next, n);
    }
}
