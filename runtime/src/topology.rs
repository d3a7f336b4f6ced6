//! Cartesian process grids (`MPI_Dims_create`, `MPI_Cart_create`,
//! `MPI_Cart_coords`, `MPI_Cart_shift`, `MPI_Cart_sub`): what a stencil code
//! needs to decompose a grid over its ranks and find its neighbours.
//!
//! Ranks are laid out in row-major order: the last dimension varies
//! fastest, as in MPI, so that neighbours along it are neighbouring ranks
//! (often on the same node).

use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::types::Rank;

/// A balanced grid of `ndims` dimensions for `n` ranks
/// (`MPI_Dims_create`): the factors of `n` spread so that the dimensions
/// are as close to each other as possible, largest first. Entries of
/// `fixed` that are non-zero are kept as given; the others are chosen.
pub fn dims_create(n: usize, fixed: &[usize]) -> Result<Vec<usize>> {
    if n == 0 || fixed.is_empty() {
        return Err(Error::InvalidCount(
            "dims_create needs n ≥ 1 and at least one dimension".into(),
        ));
    }
    let given: usize = fixed.iter().filter(|&&d| d > 0).product();
    if n % given != 0 {
        return Err(Error::InvalidCount(format!(
            "{n} ranks do not divide into the fixed dimensions {fixed:?}"
        )));
    }
    let free = fixed.iter().filter(|&&d| d == 0).count();
    let mut left = n / given;
    if free == 0 {
        return if left == 1 {
            Ok(fixed.to_vec())
        } else {
            Err(Error::InvalidCount(format!("the dimensions {fixed:?} do not make {n} ranks")))
        };
    }
    // Prime factors, largest first, each to the smallest dimension so far.
    let mut factors = Vec::new();
    let mut f = 2;
    while f * f <= left {
        while left % f == 0 {
            factors.push(f);
            left /= f;
        }
        f += 1;
    }
    if left > 1 {
        factors.push(left);
    }
    factors.sort_unstable_by(|a, b| b.cmp(a));
    let mut chosen = vec![1usize; free];
    for f in factors {
        let smallest = (0..free).min_by_key(|&i| chosen[i]).expect("free ≥ 1");
        chosen[smallest] *= f;
    }
    chosen.sort_unstable_by(|a, b| b.cmp(a));
    let mut chosen = chosen.into_iter();
    Ok(fixed
        .iter()
        .map(|&d| if d > 0 { d } else { chosen.next().expect("one per free") })
        .collect())
}

/// A communicator with a Cartesian grid over its ranks
/// (`MPI_Cart_create`). Made by [`Communicator::cartesian`].
#[derive(Debug)]
pub struct Cartesian {
    comm: Communicator,
    dims: Vec<usize>,
    periodic: Vec<bool>,
}

impl Communicator {
    /// A Cartesian grid of `dims` over this communicator's ranks, each
    /// dimension wrapping around where `periodic` says so
    /// (`MPI_Cart_create` without reordering). The grid's communicator is a
    /// duplicate, so its traffic never mixes with this one's; ranks beyond
    /// the grid's size get `None`. Collective.
    pub fn cartesian(&self, dims: &[usize], periodic: &[bool]) -> Result<Option<Cartesian>> {
        if dims.is_empty() || dims.len() != periodic.len() || dims.contains(&0) {
            return Err(Error::InvalidCount(format!(
                "a grid needs one or more non-zero dimensions and a periodicity for each \
                 (dims {dims:?}, periodic {periodic:?})"
            )));
        }
        let cells = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let cells = match cells {
            Some(c) if c <= self.size() => c,
            _ => {
                return Err(Error::InvalidCount(format!(
                    "a grid of {dims:?} needs more than the communicator's {} ranks",
                    self.size()
                )))
            }
        };
        let member = self.rank() < cells;
        let comm = self.split(member.then_some(0), self.rank() as i32)?;
        Ok(comm.map(|comm| Cartesian { comm, dims: dims.to_vec(), periodic: periodic.to_vec() }))
    }
}

impl Cartesian {
    /// The grid's communicator: ranks in row-major order of the grid.
    pub fn comm(&self) -> &Communicator {
        &self.comm
    }

    /// The grid's extent in each dimension.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Whether each dimension wraps around.
    pub fn periodic(&self) -> &[bool] {
        &self.periodic
    }

    /// This rank's coordinates.
    pub fn coords(&self) -> Vec<usize> {
        self.coords_of(self.comm.rank())
    }

    /// The coordinates of `rank` (`MPI_Cart_coords`); ranks outside the
    /// grid have none.
    pub fn coords_of(&self, rank: usize) -> Vec<usize> {
        let mut rest = rank;
        let mut coords = vec![0; self.dims.len()];
        for (c, &d) in coords.iter_mut().zip(&self.dims).rev() {
            *c = rest % d;
            rest /= d;
        }
        coords
    }

    /// The rank at `coords` (`MPI_Cart_rank`). A coordinate out of range
    /// wraps in a periodic dimension and is an error in another.
    pub fn rank_of(&self, coords: &[isize]) -> Result<usize> {
        if coords.len() != self.dims.len() {
            return Err(Error::InvalidCount(format!(
                "{} coordinates for a grid of {} dimensions",
                coords.len(),
                self.dims.len()
            )));
        }
        let mut rank = 0usize;
        for ((&c, &d), &wrap) in coords.iter().zip(&self.dims).zip(&self.periodic) {
            let d = d as isize;
            let c = if wrap { c.rem_euclid(d) } else { c };
            if !(0..d).contains(&c) {
                return Err(Error::InvalidCount(format!(
                    "coordinate {c} is outside a dimension of {d} that does not wrap"
                )));
            }
            rank = rank * d as usize + c as usize;
        }
        Ok(rank)
    }

    /// The ranks `disp` steps before and after this one along `dim`
    /// (`MPI_Cart_shift`): `(source, destination)`, either
    /// [`Rank::NULL`] past the edge of a dimension that does not wrap, so
    /// that a halo exchange needs no special case at the boundary.
    pub fn shift(&self, dim: usize, disp: isize) -> Result<(Rank, Rank)> {
        if dim >= self.dims.len() {
            return Err(Error::InvalidCount(format!(
                "dimension {dim} of a grid of {} dimensions",
                self.dims.len()
            )));
        }
        let here: Vec<isize> = self.coords().iter().map(|&c| c as isize).collect();
        let at = |delta: isize| -> Rank {
            let mut c = here.clone();
            c[dim] += delta;
            self.rank_of(&c).map_or(Rank::NULL, |r| Rank(r as i32))
        };
        Ok((at(-disp), at(disp)))
    }

    /// The sub-grid that keeps the dimensions where `keep` is true
    /// (`MPI_Cart_sub`): with a 2-D grid, `[false, true]` gives this rank's
    /// row and `[true, false]` its column. Collective over the grid.
    pub fn sub(&self, keep: &[bool]) -> Result<Cartesian> {
        if keep.len() != self.dims.len() {
            return Err(Error::InvalidCount(format!(
                "{} flags for a grid of {} dimensions",
                keep.len(),
                self.dims.len()
            )));
        }
        let coords = self.coords();
        // Ranks that agree on the dropped coordinates share a sub-grid;
        // ordered by the kept ones, which row-major rank order already is.
        let mut color = 0usize;
        for ((&c, &d), &k) in coords.iter().zip(&self.dims).zip(keep) {
            if !k {
                color = color * d + c;
            }
        }
        let comm = self
            .comm
            .split(Some(color as u32), self.comm.rank() as i32)?
            .expect("every rank has a colour");
        fn pick<T: Copy>(v: &[T], keep: &[bool]) -> Vec<T> {
            v.iter().zip(keep).filter(|(_, &k)| k).map(|(x, _)| *x).collect()
        }
        let (mut dims, mut periodic) = (pick(&self.dims, keep), pick(&self.periodic, keep));
        if dims.is_empty() {
            // Nothing kept: a grid of one.
            (dims, periodic) = (vec![1], vec![false]);
        }
        Ok(Cartesian { comm, dims, periodic })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_are_balanced_largest_first() {
        assert_eq!(dims_create(6, &[0, 0]).unwrap(), [3, 2]);
        assert_eq!(dims_create(16, &[0, 0]).unwrap(), [4, 4]);
        assert_eq!(dims_create(12, &[0, 0, 0]).unwrap(), [3, 2, 2]);
        assert_eq!(dims_create(7, &[0, 0]).unwrap(), [7, 1]);
        assert_eq!(dims_create(1, &[0, 0]).unwrap(), [1, 1]);
        assert_eq!(dims_create(24, &[0, 3]).unwrap(), [8, 3]);
        assert_eq!(dims_create(4, &[2, 2]).unwrap(), [2, 2]);
    }

    #[test]
    fn impossible_dims_are_errors() {
        assert!(dims_create(10, &[3, 0]).is_err());
        assert!(dims_create(4, &[2, 3]).is_err());
        assert!(dims_create(0, &[0]).is_err());
        assert!(dims_create(4, &[]).is_err());
    }
}
