//! The numerics of the conjugate-gradient example: the 2-D Poisson problem
//! −∇²u = f on the unit square, u = 0 on the boundary, discretised with
//! the 5-point stencil on an n × n grid of unknowns, decomposed in blocks
//! over a Cartesian grid of ranks (not periodic: past the boundary a
//! neighbour is `Rank::NULL` and the halo holds the boundary's zero).
//!
//! The matrix is stored: each rank keeps its rows in CSR form, with column
//! indices into its vector extended by a one-cell halo, so the product is
//! a sparse matrix–vector product after a halo exchange. With
//! `f = 2(x(1 − x) + y(1 − y))` the exact solution is `x(1 − x) y(1 − y)`,
//! quadratic along each axis, where the 5-point stencil has no
//! truncation error: the discrete solution is the exact one at the grid
//! points, and the error reported is the solver's alone.
//!
//! Dot products are summed over the ranks with `all_reduce`, or — with
//! `reproducible` — exactly (`hpcomm::repro`): then every product and every
//! sum is the same bits on any number of ranks, and so is the whole
//! iteration, the solution and the iteration count included.

#![allow(dead_code)]

use std::time::Instant;

use hpcomm::op::Sum;
use hpcomm::repro::{Exact, ExactSum};
use hpcomm::{Cartesian, Collectives, PersistentRecv, PersistentSend, Rank, Result};

/// The part `index` of `n` split in `parts`: (start, length).
pub fn extent(n: usize, parts: usize, index: usize) -> (usize, usize) {
    let (base, extra) = (n / parts, n % parts);
    (index * base + index.min(extra), base + usize::from(index < extra))
}

/// One rank's rows of the matrix, and its share of the vectors.
pub struct Local {
    pub n: usize,
    pub row0: usize,
    pub col0: usize,
    pub rows: usize,
    pub cols: usize,
    /// CSR: row starts, column indices into an extended vector, values.
    starts: Vec<usize>,
    columns: Vec<usize>,
    values: Vec<f64>,
}

impl Local {
    /// The block at `coords` of a `dims` grid for `n` × `n` unknowns.
    pub fn new(n: usize, dims: &[usize], coords: &[usize]) -> Local {
        let (row0, rows) = extent(n, dims[0], coords[0]);
        let (col0, cols) = extent(n, dims[1], coords[1]);
        let w = cols + 2;
        let (mut starts, mut columns, mut values) = (vec![0], Vec::new(), Vec::new());
        for r in 1..=rows {
            for c in 1..=cols {
                let i = r * w + c;
                for (j, v) in [(i - w, -1.0), (i - 1, -1.0), (i, 4.0), (i + 1, -1.0), (i + w, -1.0)]
                {
                    columns.push(j);
                    values.push(v);
                }
                starts.push(columns.len());
            }
        }
        Local { n, row0, col0, rows, cols, starts, columns, values }
    }

    /// Length of an extended vector (owned cells and halo).
    pub fn extended(&self) -> usize {
        (self.rows + 2) * (self.cols + 2)
    }

    /// Index of owned cell `k` (row-major over the block) in an extended
    /// vector.
    pub fn ext(&self, k: usize) -> usize {
        (k / self.cols + 1) * (self.cols + 2) + k % self.cols + 1
    }

    /// The right-hand side times h², owned cells.
    pub fn rhs(&self) -> Vec<f64> {
        let h = 1.0 / (self.n + 1) as f64;
        (0..self.rows * self.cols)
            .map(|k| {
                let (x, y) = self.position(k);
                h * h * 2.0 * (x * (1.0 - x) + y * (1.0 - y))
            })
            .collect()
    }

    /// The exact solution at owned cell `k`.
    pub fn exact(&self, k: usize) -> f64 {
        let (x, y) = self.position(k);
        x * (1.0 - x) * y * (1.0 - y)
    }

    fn position(&self, k: usize) -> (f64, f64) {
        let h = 1.0 / (self.n + 1) as f64;
        let (r, c) = (self.row0 + k / self.cols, self.col0 + k % self.cols);
        ((c + 1) as f64 * h, (r + 1) as f64 * h)
    }

    /// `y = A x` for owned rows; `x` extended, halo filled.
    pub fn spmv(&self, x: &[f64], y: &mut [f64]) {
        for (k, out) in y.iter_mut().enumerate() {
            let (a, b) = (self.starts[k], self.starts[k + 1]);
            *out = self.columns[a..b].iter().zip(&self.values[a..b]).map(|(&j, &v)| v * x[j]).sum();
        }
    }
}

/// How dot products are summed over the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dot {
    /// Local sum, then `all_reduce` (fast; rounding depends on the ranks).
    Plain,
    /// Exact sum of every product (`hpcomm::repro`), rounded once.
    Reproducible,
}

/// How the halo exchange starts its transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// Persistent requests (`send_init`, `recv_init`), made once per solve
    /// and started every iteration.
    Persistent,
    /// Ordinary non-blocking calls (`isend`, `irecv`) every iteration.
    NonBlocking,
}

/// Where the time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Times {
    pub communication: f64,
    pub computation: f64,
}

/// The outcome of a solve.
pub struct Solution {
    /// Owned cells of the solution, row-major over the block.
    pub x: Vec<f64>,
    pub iterations: usize,
    /// Relative residual ‖r‖/‖b‖ after each iteration.
    pub residuals: Vec<f64>,
    pub times: Times,
}

/// Where each of the four messages goes (sends: up, down, left, right) or
/// comes from (receives: from down, up, right, left — each tagged by the
/// direction the data travels): peer, tag and length.
type Routes = [(Rank, i32, usize); 4];

/// The halo exchange's buffers, routes and, when they are persistent, its
/// requests (none otherwise).
struct Halo<'c> {
    bufs: [Vec<f64>; 8],
    sends: Routes,
    recvs: Routes,
    persistent_sends: Vec<PersistentSend<'c, f64>>,
    persistent_recvs: Vec<PersistentRecv<'c, f64>>,
}

impl<'c> Halo<'c> {
    fn new(grid: &'c Cartesian, l: &Local, how: Exchange) -> Result<Halo<'c>> {
        let [up, down, left, right] = neighbours(grid)?;
        let (rows, cols) = (l.rows, l.cols);
        let sends = [(up, 0, cols), (down, 1, cols), (left, 2, rows), (right, 3, rows)];
        let recvs = [(down, 0, cols), (up, 1, cols), (right, 2, rows), (left, 3, rows)];
        let (c, made) = (grid.comm(), usize::from(how == Exchange::Persistent) * 4);
        let persistent_sends = sends[..made]
            .iter()
            .map(|&(to, tag, n)| c.send_init(n, to, tag))
            .collect::<Result<_>>()?;
        let persistent_recvs = recvs[..made]
            .iter()
            .map(|&(from, tag, n)| c.recv_init(n, from, tag))
            .collect::<Result<_>>()?;
        Ok(Halo { bufs: Default::default(), sends, recvs, persistent_sends, persistent_recvs })
    }
}

/// The halo exchange of an extended vector: each owned edge to the
/// neighbour beyond it, each halo edge from there. Past the domain's edge
/// the neighbour is `Rank::NULL` and the halo keeps its zero.
fn exchange(grid: &Cartesian, halo: &mut Halo<'_>, l: &Local, v: &mut [f64]) -> Result<()> {
    let (rows, cols, w) = (l.rows, l.cols, l.cols + 2);
    let (sends, recvs) = (halo.sends, halo.recvs);
    let [up_s, down_s, left_s, right_s, up_r, down_r, left_r, right_r] = &mut halo.bufs;
    let row = |r: usize| &v[r * w + 1..r * w + 1 + cols];
    up_s.clear();
    up_s.extend_from_slice(row(1));
    down_s.clear();
    down_s.extend_from_slice(row(rows));
    left_s.clear();
    left_s.extend((1..=rows).map(|r| v[r * w + 1]));
    right_s.clear();
    right_s.extend((1..=rows).map(|r| v[r * w + cols]));
    let incoming = [&mut *down_r, &mut *up_r, &mut *right_r, &mut *left_r];
    let outgoing = [&*up_s, &*down_s, &*left_s, &*right_s];
    grid.comm().scope(|s| {
        let mut reqs = Vec::with_capacity(8);
        for (i, b) in incoming.into_iter().enumerate() {
            let (from, tag, n) = recvs[i];
            b.clear();
            b.resize(n, 0.0);
            reqs.push(match halo.persistent_recvs.get(i) {
                Some(recv) => recv.start(s, b)?,
                None => s.irecv(b, from, tag)?,
            });
        }
        for (i, b) in outgoing.into_iter().enumerate() {
            let (to, tag, _) = sends[i];
            reqs.push(match halo.persistent_sends.get(i) {
                Some(send) => send.start(s, b)?,
                None => s.isend(b, to, tag)?,
            });
        }
        hpcomm::wait_all(&mut reqs)
    })?;
    v[1..1 + cols].copy_from_slice(up_r);
    v[(rows + 1) * w + 1..(rows + 1) * w + 1 + cols].copy_from_slice(down_r);
    for r in 1..=rows {
        v[r * w] = left_r[r - 1];
        v[r * w + cols + 1] = right_r[r - 1];
    }
    Ok(())
}

/// `Σ a·b` over every rank's cells; the local part's time goes to
/// computation, the sum over the ranks' to communication.
fn dot(
    grid: &Cartesian,
    how: Dot,
    a: impl Iterator<Item = f64>,
    b: impl Iterator<Item = f64>,
    times: &mut Times,
) -> Result<f64> {
    let t = Instant::now();
    let total = match how {
        Dot::Plain => {
            let mine: f64 = a.zip(b).map(|(x, y)| x * y).sum();
            let t1 = Instant::now();
            times.computation += (t1 - t).as_secs_f64();
            let mut total = [0.0];
            grid.comm().all_reduce(&[mine], &mut total, Sum)?;
            times.communication += t1.elapsed().as_secs_f64();
            total[0]
        }
        Dot::Reproducible => {
            let mut mine = Exact::from_f64(0.0);
            for (x, y) in a.zip(b) {
                mine.add(&Exact::from_f64(x * y));
            }
            let t1 = Instant::now();
            times.computation += (t1 - t).as_secs_f64();
            let mut total = [Exact::from_f64(0.0)];
            grid.comm().all_reduce(&[mine], &mut total, ExactSum)?;
            times.communication += t1.elapsed().as_secs_f64();
            total[0].to_f64()
        }
    };
    Ok(total)
}

/// The neighbours (up, down, left, right); `Rank::NULL` past the edge.
pub fn neighbours(grid: &Cartesian) -> Result<[Rank; 4]> {
    let (up, down) = grid.shift(0, 1)?;
    let (left, right) = grid.shift(1, 1)?;
    Ok([up, down, left, right])
}

/// Conjugate gradients from x = 0 until ‖r‖/‖b‖ < `tol` or `max_iter`,
/// the halo exchanged as `exchanged` says.
pub fn solve(
    grid: &Cartesian,
    l: &Local,
    how: Dot,
    exchanged: Exchange,
    tol: f64,
    max_iter: usize,
) -> Result<Solution> {
    let mut halo = Halo::new(grid, l, exchanged)?;
    let owned = l.rows * l.cols;
    let b = l.rhs();
    let mut x = vec![0.0; owned];
    let mut r = b.clone();
    let mut p = vec![0.0; l.extended()];
    for k in 0..owned {
        p[l.ext(k)] = r[k];
    }
    let mut q = vec![0.0; owned];
    let mut times = Times::default();
    let mut residuals = Vec::new();
    let bb = dot(grid, how, b.iter().copied(), b.iter().copied(), &mut times)?;
    let mut rr = dot(grid, how, r.iter().copied(), r.iter().copied(), &mut times)?;
    let mut iterations = 0;
    while iterations < max_iter && bb > 0.0 && (rr / bb).sqrt() >= tol {
        let t = Instant::now();
        exchange(grid, &mut halo, l, &mut p)?;
        let t1 = Instant::now();
        times.communication += (t1 - t).as_secs_f64();
        l.spmv(&p, &mut q);
        times.computation += t1.elapsed().as_secs_f64();
        let owned_p = (0..owned).map(|k| p[l.ext(k)]);
        let pq = dot(grid, how, owned_p, q.iter().copied(), &mut times)?;
        let alpha = rr / pq;
        let t2 = Instant::now();
        for k in 0..owned {
            x[k] += alpha * p[l.ext(k)];
            r[k] -= alpha * q[k];
        }
        times.computation += t2.elapsed().as_secs_f64();
        let rr_new = dot(grid, how, r.iter().copied(), r.iter().copied(), &mut times)?;
        let t3 = Instant::now();
        let beta = rr_new / rr;
        rr = rr_new;
        for (k, &rk) in r.iter().enumerate() {
            let e = l.ext(k);
            p[e] = rk + beta * p[e];
        }
        times.computation += t3.elapsed().as_secs_f64();
        iterations += 1;
        residuals.push((rr / bb).sqrt());
    }
    Ok(Solution { x, iterations, residuals, times })
}

/// The largest difference from the exact solution, over every rank.
pub fn max_error(grid: &Cartesian, l: &Local, x: &[f64]) -> Result<f64> {
    let mine = x.iter().enumerate().map(|(k, v)| (v - l.exact(k)).abs()).fold(0.0, f64::max);
    let mut worst = [0.0];
    grid.comm().all_reduce(&[mine], &mut worst, hpcomm::op::Max)?;
    Ok(worst[0])
}

/// The solution on rank 0 of the grid, row-major over the n × n unknowns.
pub fn gather(grid: &Cartesian, l: &Local, x: &[f64]) -> Result<Option<Vec<f64>>> {
    let comm = grid.comm();
    let blocks: Vec<(usize, usize, usize, usize)> = (0..comm.size())
        .map(|r| {
            let c = grid.coords_of(r);
            let (r0, rows) = extent(l.n, grid.dims()[0], c[0]);
            let (c0, cols) = extent(l.n, grid.dims()[1], c[1]);
            (r0, rows, c0, cols)
        })
        .collect();
    let counts: Vec<usize> = blocks.iter().map(|b| b.1 * b.3).collect();
    let displs: Vec<usize> = counts
        .iter()
        .scan(0, |a, &n| {
            let h = *a;
            *a += n;
            Some(h)
        })
        .collect();
    let root = comm.rank() == 0;
    let mut all = vec![0.0; if root { l.n * l.n } else { 0 }];
    comm.gather_v(x, &mut all, &counts, &displs, 0)?;
    if !root {
        return Ok(None);
    }
    let mut field = vec![0.0; l.n * l.n];
    for (b, &at) in blocks.iter().zip(&displs) {
        for i in 0..b.1 {
            let dst = (b.0 + i) * l.n + b.2;
            field[dst..dst + b.3].copy_from_slice(&all[at + i * b.3..at + (i + 1) * b.3]);
        }
    }
    Ok(Some(field))
}
