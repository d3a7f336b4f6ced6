//! Cartesian process grids: layout, neighbours, sub-grids and bad input,
//! on ranks as threads.

mod common;

use common::watchdog;
use hpcomm::op::Sum;
use hpcomm::{dims_create, Collectives, Error, Rank};

/// A 3 × 2 grid on 6 ranks: row-major coordinates, neighbours with and
/// without wrap-around, and a halo exchange that needs no case at the edge.
#[test]
fn a_grid_gives_coordinates_and_neighbours() {
    watchdog(60, "grid", || {
        let dims = dims_create(6, &[0, 0]).unwrap();
        assert_eq!(dims, [3, 2]);
        hpcomm::threads(6, |comm| {
            let grid = comm.cartesian(&dims, &[false, true]).unwrap().expect("all 6 in the grid");
            let r = grid.comm().rank();
            let c = grid.coords();
            assert_eq!(c, [r / 2, r % 2]);
            assert_eq!(grid.rank_of(&[c[0] as isize, c[1] as isize]).unwrap(), r);
            // Dimension 0 does not wrap: the first and last rows have NULL
            // neighbours beyond the edge.
            let (up, down) = grid.shift(0, 1).unwrap();
            assert_eq!(up, if c[0] == 0 { Rank::NULL } else { Rank((r - 2) as i32) });
            assert_eq!(down, if c[0] == 2 { Rank::NULL } else { Rank((r + 2) as i32) });
            // Dimension 1 wraps.
            let (left, right) = grid.shift(1, 1).unwrap();
            let other = (r ^ 1) as i32;
            assert_eq!((left, right), (Rank(other), Rank(other)));
            // A halo exchange along dimension 0: each rank sends its rank
            // down and receives from above; the top row receives nothing.
            let mut got = [-1i32];
            grid.comm().sendrecv(&[r as i32], down, 7, &mut got, up, 7).unwrap();
            let expect = if c[0] == 0 { -1 } else { (r - 2) as i32 };
            assert_eq!(got[0], expect);
        })
        .unwrap();
    });
}

/// Rows and columns as sub-grids: sizes, ranks, and a reduction along each.
#[test]
fn rows_and_columns_are_sub_grids() {
    watchdog(60, "sub", || {
        hpcomm::threads(6, |comm| {
            let grid = comm.cartesian(&[3, 2], &[false, false]).unwrap().unwrap();
            let c = grid.coords();
            let row = grid.sub(&[false, true]).unwrap();
            let col = grid.sub(&[true, false]).unwrap();
            assert_eq!(row.dims(), [2]);
            assert_eq!(col.dims(), [3]);
            assert_eq!(row.comm().size(), 2);
            assert_eq!(col.comm().size(), 3);
            assert_eq!(row.comm().rank(), c[1]);
            assert_eq!(col.comm().rank(), c[0]);
            let mut sum = [0usize];
            row.comm().all_reduce(&[grid.comm().rank()], &mut sum, Sum).unwrap();
            // A row holds ranks 2i and 2i + 1.
            assert_eq!(sum[0], 4 * c[0] + 1);
            col.comm().all_reduce(&[grid.comm().rank()], &mut sum, Sum).unwrap();
            // A column holds j, 2 + j and 4 + j.
            assert_eq!(sum[0], 6 + 3 * c[1]);
        })
        .unwrap();
    });
}

/// Ranks beyond the grid get none; its members still work together.
#[test]
fn ranks_beyond_the_grid_are_left_out() {
    watchdog(60, "partial", || {
        let sizes = hpcomm::threads(5, |comm| {
            let grid = comm.cartesian(&[2, 2], &[true, true]).unwrap();
            grid.map(|g| {
                let mut n = [0u32];
                g.comm().all_reduce(&[1u32], &mut n, Sum).unwrap();
                n[0]
            })
        })
        .unwrap();
        assert_eq!(sizes, [Some(4), Some(4), Some(4), Some(4), None]);
    });
}

/// Bad grids and bad coordinates are errors, not panics.
#[test]
fn bad_grids_are_errors() {
    watchdog(60, "bad", || {
        hpcomm::threads(4, |comm| {
            let too_big = comm.cartesian(&[3, 2], &[false, false]);
            assert!(matches!(too_big, Err(Error::InvalidCount(_))), "{too_big:?}");
            assert!(comm.cartesian(&[2, 2], &[false]).is_err());
            assert!(comm.cartesian(&[], &[]).is_err());
            assert!(comm.cartesian(&[0, 4], &[false, false]).is_err());
            let grid = comm.cartesian(&[2, 2], &[false, true]).unwrap().unwrap();
            assert!(grid.rank_of(&[2, 0]).is_err(), "past a non-periodic edge");
            assert_eq!(grid.rank_of(&[1, -1]).unwrap(), 3, "wraps");
            assert!(grid.rank_of(&[0]).is_err());
            assert!(grid.shift(2, 1).is_err());
            assert!(grid.sub(&[true]).is_err());
        })
        .unwrap();
    });
}

/// `hpcomm::job` started alone: its ranks are threads over the shm backend.
#[test]
fn a_job_started_alone_runs_its_ranks_over_shm() {
    watchdog(60, "job", || {
        let out = hpcomm::job(3, |comm| {
            let mut total = [0usize];
            comm.all_reduce(&[comm.rank()], &mut total, Sum).unwrap();
            (comm.size(), comm.transport_name(), total[0])
        })
        .unwrap();
        assert_eq!(out, vec![(3, "shm", 3); 3]);
    });
}
