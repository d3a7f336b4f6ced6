//! The weather example's communication over hpcomm: the halo exchange (a
//! persistent neighbourhood all-to-all, set up once) overlapped with the
//! interior update, the global diagnostics and the gather of the field.

#![allow(dead_code)]

use hpcomm::op::Sum;
use hpcomm::{Cartesian, Collectives, Neighborhood, Persistent, Rank, Result};

use crate::model::{extent, Block, Problem};

/// The halo exchange of one block: its buffers, in the grid's neighbour
/// order (up, down, left, right: the rank before and after along each
/// dimension), and the persistent exchange made for them on the first
/// step.
#[derive(Default)]
pub struct Halo {
    send: Vec<[f64; 3]>,
    recv: Vec<[f64; 3]>,
    /// Where each neighbour's block starts in both buffers.
    displs: [usize; 4],
    exchange: Option<Persistent<[f64; 3]>>,
}

impl Halo {
    /// Sets up the exchange of a block of `rows` × `cols`: rows up and
    /// down, columns left and right.
    fn prepare(&mut self, grid: &Cartesian, rows: usize, cols: usize) -> Result<()> {
        let counts = [cols, cols, rows, rows];
        self.displs = [0, cols, 2 * cols, 2 * cols + rows];
        let len = 2 * (rows + cols);
        self.send = vec![[0.0; 3]; len];
        self.recv = vec![[0.0; 3]; len];
        let (s, d) = (&counts[..], &self.displs[..]);
        self.exchange = Some(grid.neighbor_all_to_all_v_init(&self.send, s, d, &self.recv, s, d)?);
        Ok(())
    }

    /// Neighbour `k`'s block of the send or receive buffer.
    fn block<'a>(buf: &'a mut [[f64; 3]], displs: &[usize; 4], k: usize) -> &'a mut [[f64; 3]] {
        let end = displs.get(k + 1).copied().unwrap_or(buf.len());
        &mut buf[displs[k]..end]
    }
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

/// One distributed step: starts the halo exchange, updates the interior
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
    if halo.exchange.is_none() {
        halo.prepare(grid, rows, cols)?;
    }
    // What goes up is this block's first row, down its last, and so on.
    let Halo { send, recv, displs, exchange } = halo;
    Halo::block(send, displs, 0).copy_from_slice(b.row(1));
    Halo::block(send, displs, 1).copy_from_slice(b.row(rows));
    let mut column = Vec::with_capacity(rows);
    b.column(1, &mut column);
    Halo::block(send, displs, 2).copy_from_slice(&column);
    b.column(cols, &mut column);
    Halo::block(send, displs, 3).copy_from_slice(&column);
    let exchange = exchange.as_ref().expect("prepared above");
    let mut compute = 0.0;
    comm.scope(|s| {
        let pending = exchange.start(s, send, recv)?;
        let t = Instant::now();
        if rows > 2 && cols > 2 {
            b.update(p, 2..rows, 2..cols);
        }
        compute += t.elapsed().as_secs_f64();
        pending.wait().map(|_| ())
    })?;
    // Past a non-periodic edge nothing arrives and the halo is left as it
    // is. A wall would need boundary values here (a reflecting one copies
    // the edge and flips the normal momentum). The example's grid is
    // periodic, so every side has a neighbour.
    if near[0] != Rank::NULL {
        b.set_row(0, Halo::block(recv, displs, 0));
    }
    if near[1] != Rank::NULL {
        b.set_row(rows + 1, Halo::block(recv, displs, 1));
    }
    if near[2] != Rank::NULL {
        b.set_column(0, Halo::block(recv, displs, 2));
    }
    if near[3] != Rank::NULL {
        b.set_column(cols + 1, Halo::block(recv, displs, 3));
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
