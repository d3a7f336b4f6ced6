//! The numerics of the weather example: the shallow-water equations on a
//! doubly periodic grid, decomposed in blocks over a Cartesian process
//! grid. No communication here (that is `parallel.rs`): the tests
//! (`tests/weather.rs`) and the rsmpi version in `benches/mpi-compare` run
//! exactly this code.
//!
//! The state of a cell is `[h, hu, hv]`: the fluid depth and its momentum.
//! The scheme is Lax–Friedrichs in conservative form: the new value is the
//! mean of the four neighbours minus the centred flux differences. It needs
//! one halo cell on each side (no corners), conserves mass to round-off on
//! the periodic domain, and — the point for a decomposition test — every
//! cell's update is the same sequence of floating-point operations
//! whatever the decomposition, so the field is bit for bit the same on any
//! number of ranks.

#![allow(dead_code)]

/// Gravity.
pub const G: f64 = 9.81;
/// Courant number of the time step.
const CFL: f64 = 0.4;

/// The global problem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Problem {
    /// Cells along x (columns).
    pub nx: usize,
    /// Cells along y (rows).
    pub ny: usize,
}

impl Problem {
    /// Grid spacing on the unit square.
    pub fn spacing(&self) -> (f64, f64) {
        (1.0 / self.nx as f64, 1.0 / self.ny as f64)
    }

    /// The time step: fixed from the initial state's fastest wave (depth
    /// 1.5 at most, flow 0.1), so that every rank and every decomposition
    /// uses the same one.
    pub fn dt(&self) -> f64 {
        let (dx, dy) = self.spacing();
        let speed = (G * 1.5).sqrt() + 0.1;
        CFL * dx.min(dy) / speed
    }

    /// The initial state of the cell at global row `r`, column `c`: water
    /// of depth 1 flowing east at 0.1, with two raised bumps.
    pub fn initial(&self, r: usize, c: usize) -> [f64; 3] {
        let x = (c as f64 + 0.5) / self.nx as f64;
        let y = (r as f64 + 0.5) / self.ny as f64;
        let bump = |x0: f64, y0: f64, a: f64, s: f64| {
            a * (-((x - x0).powi(2) + (y - y0).powi(2)) / (s * s)).exp()
        };
        let h = 1.0 + bump(0.35, 0.4, 0.5, 0.08) + bump(0.7, 0.65, 0.3, 0.05);
        [h, 0.1 * h, 0.0]
    }
}

/// The part `index` of `n` cells split in `parts`: (start, length), the
/// first `n % parts` parts one longer.
pub fn extent(n: usize, parts: usize, index: usize) -> (usize, usize) {
    let (base, extra) = (n / parts, n % parts);
    (index * base + index.min(extra), base + usize::from(index < extra))
}

/// One rank's block of the grid, with a halo of one cell.
#[derive(Clone, Debug)]
pub struct Block {
    /// First global row and column.
    pub row0: usize,
    pub col0: usize,
    /// Rows and columns owned.
    pub rows: usize,
    pub cols: usize,
    /// `(rows + 2) × (cols + 2)` cells, row-major, halo included.
    pub cells: Vec<[f64; 3]>,
    next: Vec<[f64; 3]>,
}

impl Block {
    /// The block at `coords` of a `dims` process grid, initialised.
    pub fn new(p: &Problem, dims: &[usize], coords: &[usize]) -> Block {
        let (row0, rows) = extent(p.ny, dims[0], coords[0]);
        let (col0, cols) = extent(p.nx, dims[1], coords[1]);
        let mut cells = vec![[0.0; 3]; (rows + 2) * (cols + 2)];
        for r in 0..rows {
            for c in 0..cols {
                cells[(r + 1) * (cols + 2) + c + 1] = p.initial(row0 + r, col0 + c);
            }
        }
        let next = cells.clone();
        Block { row0, col0, rows, cols, cells, next }
    }

    fn at(&self, r: usize, c: usize) -> usize {
        r * (self.cols + 2) + c
    }

    /// Row `r` (halo rows are 0 and `rows + 1`), owned columns only.
    pub fn row(&self, r: usize) -> &[[f64; 3]] {
        let at = self.at(r, 1);
        &self.cells[at..at + self.cols]
    }

    /// Column `c`, owned rows only, copied.
    pub fn column(&self, c: usize, out: &mut Vec<[f64; 3]>) {
        out.clear();
        out.extend((1..=self.rows).map(|r| self.cells[self.at(r, c)]));
    }

    /// Writes halo row `r` or halo column `c` from received cells.
    pub fn set_row(&mut self, r: usize, cells: &[[f64; 3]]) {
        let at = self.at(r, 1);
        self.cells[at..at + self.cols].copy_from_slice(cells);
    }

    pub fn set_column(&mut self, c: usize, cells: &[[f64; 3]]) {
        for (r, &v) in (1..=self.rows).zip(cells) {
            let at = self.at(r, c);
            self.cells[at] = v;
        }
    }

    /// Fills the halo from the block itself: the whole periodic domain on
    /// one rank, without communication (the serial reference).
    pub fn wrap_halo(&mut self) {
        let mut col = Vec::new();
        let top = self.row(self.rows).to_vec();
        let bottom = self.row(1).to_vec();
        self.set_row(0, &top);
        self.set_row(self.rows + 1, &bottom);
        self.column(self.cols, &mut col);
        self.set_column(0, &col.clone());
        self.column(1, &mut col);
        self.set_column(self.cols + 1, &col.clone());
    }

    /// Updates the owned cells with rows in `rows` and columns in `cols`
    /// (1-based, halo excluded) into the next state.
    pub fn update(
        &mut self,
        p: &Problem,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        let (dx, dy) = p.spacing();
        let dt = p.dt();
        let (ax, ay) = (dt / (2.0 * dx), dt / (2.0 * dy));
        let w = self.cols + 2;
        for r in rows {
            for c in cols.clone() {
                let i = r * w + c;
                let (n, s, e, west) =
                    (self.cells[i - w], self.cells[i + w], self.cells[i + 1], self.cells[i - 1]);
                let (fe, fw) = (flux_x(e), flux_x(west));
                let (gs, gn) = (flux_y(s), flux_y(n));
                let mut out = [0.0; 3];
                for k in 0..3 {
                    let mean = 0.25 * (n[k] + s[k] + e[k] + west[k]);
                    out[k] = mean - ax * (fe[k] - fw[k]) - ay * (gs[k] - gn[k]);
                }
                self.next[i] = out;
            }
        }
    }

    /// Makes the next state current.
    pub fn advance(&mut self) {
        std::mem::swap(&mut self.cells, &mut self.next);
    }

    /// One serial step: halo from the block itself, every cell updated.
    pub fn step_serial(&mut self, p: &Problem) {
        self.wrap_halo();
        self.update(p, 1..self.rows + 1, 1..self.cols + 1);
        self.advance();
    }

    /// Local sums of mass and energy (times the cell area).
    pub fn diagnostics(&self, p: &Problem) -> [f64; 2] {
        let (dx, dy) = p.spacing();
        let (mut mass, mut energy) = (0.0, 0.0);
        for r in 1..=self.rows {
            for &[h, hu, hv] in self.row(r) {
                mass += h;
                energy += 0.5 * (hu * hu + hv * hv) / h + 0.5 * G * h * h;
            }
        }
        [mass * dx * dy, energy * dx * dy]
    }

    /// The owned depths, row by row.
    pub fn depths(&self) -> Vec<f64> {
        (1..=self.rows).flat_map(|r| self.row(r).iter().map(|v| v[0])).collect()
    }

    /// The owned cells, row by row.
    pub fn owned(&self) -> Vec<[f64; 3]> {
        (1..=self.rows).flat_map(|r| self.row(r).iter().copied()).collect()
    }
}

/// Flux in x of `[h, hu, hv]`.
fn flux_x([h, hu, hv]: [f64; 3]) -> [f64; 3] {
    let u = hu / h;
    [hu, hu * u + 0.5 * G * h * h, hv * u]
}

/// Flux in y (rows grow southwards).
fn flux_y([h, hu, hv]: [f64; 3]) -> [f64; 3] {
    let v = hv / h;
    [hv, hu * v, hv * v + 0.5 * G * h * h]
}

/// The serial reference: the whole grid on one block, `steps` steps.
pub fn serial(p: &Problem, steps: usize) -> Vec<[f64; 3]> {
    let mut b = Block::new(p, &[1, 1], &[0, 0]);
    for _ in 0..steps {
        b.step_serial(p);
    }
    b.owned()
}
