//! The weather example's communication over hpcomm: the halo exchange
//! overlapped with the interior update, the global diagnostics and the
//! gather of the field.

#![allow(dead_code)]

use hpcomm::op::Sum;
use hpcomm::{Cartesian, Collectives, Rank, Result};

use crate::model::{extent, Block, Problem};

/// Send and receive buffers of a halo exchange, kept between steps.
#[derive(Default)]
pub struct Halo {
    send: [Vec<[f64; 3]>; 4],
    recv: [Vec<[f64; 3]>; 4],
}

/// The four neighbours: (up, down, left, right).
pub fn neighbours(grid: &Cartesian) -> Result<[Rank; 4]> {
    let (up, down) = grid.shift(0, 1)?;
    let (left, right) = grid.shift(1, 1)?;
    Ok([up, down, left, right])
}

/// Timings of one distributed step.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    /// Seconds spent waiting for and copying halos.
    pub communication: f64,
    /// Seconds spent updating cells.
    pub computation: f64,
}

/// One distributed step: posts the halo exchange, updates the interior
/// (which needs no halo) while it travels, then the cells along the
/// block's edges.
pub fn step(
    p: &Problem,
    grid: &Cartesian,
    near: &[Rank; 4],
    b: &mut Block,
    halo: &mut Halo,
    times: &mut StepTimes,
) -> Result<()> {
    use std::time::Instant;
    let comm = grid.comm();
    let t0 = Instant::now();
    let (rows, cols) = (b.rows, b.cols);
    // What goes up is this block's first row, down its last, and so on.
    halo.send[0].clear();
    halo.send[0].extend_from_slice(b.row(1));
    halo.send[1].clear();
    halo.send[1].extend_from_slice(b.row(rows));
    b.column(1, &mut halo.send[2]);
    b.column(cols, &mut halo.send[3]);
    for (k, n) in [cols, cols, rows, rows].into_iter().enumerate() {
        halo.recv[k].resize(n, [0.0; 3]);
    }
    let mut compute = 0.0;
    // Tag = the direction of travel: 0 up, 1 down, 2 left, 3 right. What
    // arrives from below travelled up.
    let Halo { send, recv } = halo;
    let [from_up, from_down, from_left, from_right] = recv;
    comm.scope(|s| {
        let mut reqs = vec![
            s.irecv(from_down, near[1], 0)?,
            s.irecv(from_up, near[0], 1)?,
            s.irecv(from_right, near[3], 2)?,
            s.irecv(from_left, near[2], 3)?,
        ];
        for (k, buf) in send.iter().enumerate() {
            reqs.push(s.isend(buf, near[k], k as i32)?);
        }
        let t = Instant::now();
        if rows > 2 && cols > 2 {
            b.update(p, 2..rows, 2..cols);
        }
        compute += t.elapsed().as_secs_f64();
        hpcomm::wait_all(&mut reqs)
    })?;
    // Past a non-periodic edge nothing arrives and the halo is left as it
    // is. A wall would need boundary values here (a reflecting one copies
    // the edge and flips the normal momentum). The example's grid is
    // periodic, so every side has a neighbour.
    if near[0] != Rank::NULL {
        b.set_row(0, from_up);
    }
    if near[1] != Rank::NULL {
        b.set_row(rows + 1, from_down);
    }
    if near[2] != Rank::NULL {
        b.set_column(0, from_left);
    }
    if near[3] != Rank::NULL {
        b.set_column(cols + 1, from_right);
    }
    let t = Instant::now();
    b.update(p, 1..2, 1..cols + 1);
    if rows > 1 {
        b.update(p, rows..rows + 1, 1..cols + 1);
    }
    if rows > 2 {
        b.update(p, 2..rows, 1..2);
        if cols > 1 {
            b.update(p, 2..rows, cols..cols + 1);
        }
    }
    b.advance();
    compute += t.elapsed().as_secs_f64();
    times.computation += compute;
    times.communication += t0.elapsed().as_secs_f64() - compute;
    Ok(())
}

/// Global mass and energy, summed over the grid's ranks.
pub fn global_diagnostics(p: &Problem, grid: &Cartesian, b: &Block) -> Result<[f64; 2]> {
    let mut total = [0.0; 2];
    grid.comm().all_reduce(&b.diagnostics(p), &mut total, Sum)?;
    Ok(total)
}

/// The whole field on rank 0 of the grid (rows × columns, row-major), by a
/// gather of every block; `None` elsewhere.
pub fn gather_field(p: &Problem, grid: &Cartesian, b: &Block) -> Result<Option<Vec<[f64; 3]>>> {
    let comm = grid.comm();
    let mine = b.owned();
    let counts: Vec<usize> = (0..comm.size())
        .map(|r| {
            let c = grid.coords_of(r);
            extent(p.ny, grid.dims()[0], c[0]).1 * extent(p.nx, grid.dims()[1], c[1]).1
        })
        .collect();
    let displs: Vec<usize> = counts
        .iter()
        .scan(0, |at, &n| {
            let here = *at;
            *at += n;
            Some(here)
        })
        .collect();
    let root = comm.rank() == 0;
    let mut all = vec![[0.0; 3]; if root { counts.iter().sum() } else { 0 }];
    comm.gather_v(&mine, &mut all, &counts, &displs, 0)?;
    if !root {
        return Ok(None);
    }
    let mut field = vec![[0.0; 3]; p.nx * p.ny];
    let mut at = 0;
    for r in 0..comm.size() {
        let c = grid.coords_of(r);
        let (row0, rows) = extent(p.ny, grid.dims()[0], c[0]);
        let (col0, cols) = extent(p.nx, grid.dims()[1], c[1]);
        for i in 0..rows {
            let dst = (row0 + i) * p.nx + col0;
            field[dst..dst + cols].copy_from_slice(&all[at..at + cols]);
            at += cols;
        }
    }
    Ok(Some(field))
}
