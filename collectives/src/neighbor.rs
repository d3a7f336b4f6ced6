//! Neighbourhood collectives on Cartesian grids (MPI-3's
//! `MPI_Neighbor_allgather`, `MPI_Neighbor_alltoall(v)`): a stencil's halo
//! exchange in one call, blocking, non-blocking or persistent.
//!
//! A rank's neighbours are, along each dimension in turn, the rank before
//! and the rank after it ([`Cartesian::shift`] by one): `2d` of them on a
//! grid of `d` dimensions, block `k` of a buffer belonging to neighbour
//! `k`. Past the edge of a dimension that does not wrap there is no
//! neighbour: its send block is not sent and its receive block not
//! written. Where one rank is a neighbour twice (a periodic dimension of
//! two ranks) or a rank its own, each block still reaches the block of the
//! direction it travelled.
//!
//! ```
//! use hpcomm_collectives::Neighborhood;
//!
//! hpcomm_runtime::threads(4, |comm| {
//!     let grid = comm.cartesian(&[2, 2], &[true, true]).unwrap().unwrap();
//!     let me = grid.comm().rank() as u32;
//!     // One value to each of the four neighbours: up, down, left, right.
//!     let mut halo = [0u32; 4];
//!     grid.neighbor_all_gather(&[me], &mut halo).unwrap();
//!     let [up, down, left, right] = halo;
//!     let (above, below) = grid.shift(0, 1).unwrap();
//!     assert_eq!((up, down), (above.0 as u32, below.0 as u32));
//!     let (before, after) = grid.shift(1, 1).unwrap();
//!     assert_eq!((left, right), (before.0 as u32, after.0 as u32));
//! })
//! .unwrap();
//! ```

use bytemuck::Pod;
use hpcomm_runtime::{Cartesian, Error, Request, Result, Scope};

use crate::calls;
use crate::nonblocking::start;
use crate::persistent::Persistent;
use crate::schedule::blocking::NoReduce;
use crate::schedule::task::no_reduce;

/// The neighbourhood collectives, as methods of [`Cartesian`]. Non-blocking
/// forms start in a scope of the grid's communicator; persistent ones are
/// started like any [`Persistent`].
pub trait Neighborhood {
    /// Sends `send` to every neighbour and gathers theirs, block `k` of
    /// `recv` (`2d` blocks of `send.len()`) from neighbour `k`
    /// (`MPI_Neighbor_allgather`).
    fn neighbor_all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()>;

    /// Sends block `k` of `send` to neighbour `k` and receives block `k` of
    /// `recv` from it, `2d` equal blocks each (`MPI_Neighbor_alltoall`).
    fn neighbor_all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()>;

    /// As [`neighbor_all_to_all`](Neighborhood::neighbor_all_to_all) with a
    /// count and displacement per neighbour on both sides
    /// (`MPI_Neighbor_alltoallv`).
    #[allow(clippy::too_many_arguments)]
    fn neighbor_all_to_all_v<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<()>;

    /// Starts a [`neighbor_all_gather`](Neighborhood::neighbor_all_gather)
    /// in `scope` (`MPI_Ineighbor_allgather`).
    fn ineighbor_all_gather<'r, 's, T: Pod>(
        &self,
        scope: &'r Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'r>>;

    /// Starts a [`neighbor_all_to_all`](Neighborhood::neighbor_all_to_all)
    /// in `scope` (`MPI_Ineighbor_alltoall`).
    fn ineighbor_all_to_all<'r, 's, T: Pod>(
        &self,
        scope: &'r Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'r>>;

    /// Starts a
    /// [`neighbor_all_to_all_v`](Neighborhood::neighbor_all_to_all_v) in
    /// `scope` (`MPI_Ineighbor_alltoallv`).
    #[allow(clippy::too_many_arguments)]
    fn ineighbor_all_to_all_v<'r, 's, T: Pod>(
        &self,
        scope: &'r Scope<'s, '_>,
        send: &'s [T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &'s mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Request<'r>>;

    /// A persistent
    /// [`neighbor_all_gather`](Neighborhood::neighbor_all_gather)
    /// (`MPI_Neighbor_allgather_init`).
    fn neighbor_all_gather_init<T: Pod>(&self, send: &[T], recv: &[T]) -> Result<Persistent<T>>;

    /// A persistent
    /// [`neighbor_all_to_all_v`](Neighborhood::neighbor_all_to_all_v)
    /// (`MPI_Neighbor_alltoallv_init`): a halo exchange set up once.
    #[allow(clippy::too_many_arguments)]
    fn neighbor_all_to_all_v_init<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &[T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Persistent<T>>;
}

/// `scope`, if it is one of the grid's communicator.
fn same_grid<'r, 's, 'e>(grid: &Cartesian, scope: &'r Scope<'s, 'e>) -> Result<&'r Scope<'s, 'e>> {
    if scope.comm().context() != grid.comm().context() {
        return Err(Error::InvalidCount(
            "a neighbourhood collective started in a scope of another communicator than its grid's"
                .into(),
        ));
    }
    Ok(scope)
}

impl Neighborhood for Cartesian {
    fn neighbor_all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        calls::neighbor(self, send.len(), recv.len(), None, true)?.run(
            self.comm(),
            send,
            recv,
            &NoReduce,
        )
    }

    fn neighbor_all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        calls::neighbor(self, send.len(), recv.len(), None, false)?.run(
            self.comm(),
            send,
            recv,
            &NoReduce,
        )
    }

    fn neighbor_all_to_all_v<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<()> {
        let shape = Some([(send_counts, send_displs), (recv_counts, recv_displs)]);
        calls::neighbor(self, send.len(), recv.len(), shape, false)?.run(
            self.comm(),
            send,
            recv,
            &NoReduce,
        )
    }

    fn ineighbor_all_gather<'r, 's, T: Pod>(
        &self,
        scope: &'r Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'r>> {
        let call = calls::neighbor(self, send.len(), recv.len(), None, true)?;
        start(same_grid(self, scope)?, call, send, recv, no_reduce())
    }

    fn ineighbor_all_to_all<'r, 's, T: Pod>(
        &self,
        scope: &'r Scope<'s, '_>,
        send: &'s [T],
        recv: &'s mut [T],
    ) -> Result<Request<'r>> {
        let call = calls::neighbor(self, send.len(), recv.len(), None, false)?;
        start(same_grid(self, scope)?, call, send, recv, no_reduce())
    }

    fn ineighbor_all_to_all_v<'r, 's, T: Pod>(
        &self,
        scope: &'r Scope<'s, '_>,
        send: &'s [T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &'s mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Request<'r>> {
        let shape = Some([(send_counts, send_displs), (recv_counts, recv_displs)]);
        let call = calls::neighbor(self, send.len(), recv.len(), shape, false)?;
        start(same_grid(self, scope)?, call, send, recv, no_reduce())
    }

    fn neighbor_all_gather_init<T: Pod>(&self, send: &[T], recv: &[T]) -> Result<Persistent<T>> {
        let call = calls::neighbor(self, send.len(), recv.len(), None, true)?;
        let lens = (send.len(), recv.len());
        Ok(Persistent::new(self.comm(), "neighbor_all_gather_init", call, lens, no_reduce()))
    }

    fn neighbor_all_to_all_v_init<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &[T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<Persistent<T>> {
        let shape = Some([(send_counts, send_displs), (recv_counts, recv_displs)]);
        let call = calls::neighbor(self, send.len(), recv.len(), shape, false)?;
        let lens = (send.len(), recv.len());
        Ok(Persistent::new(self.comm(), "neighbor_all_to_all_v_init", call, lens, no_reduce()))
    }
}
