//! The one-sided benchmarks, OSU's method (`osu_put_latency`,
//! `osu_get_latency`, `osu_put_bw`, `osu_get_bw` with their default
//! synchronisation, a lock and flushes): the even rank of each pair locks
//! its partner's window (shared) and, per iteration, puts or gets one
//! message and flushes (latency, µs per operation), or puts or gets a
//! window of messages at consecutive offsets and flushes (bandwidth) — as
//! requests in flight together (`rget`, `rput`; `put` for data that fits
//! one message), as MPI's `MPI_Get`/`MPI_Put` are until the flush. The
//! partner only waits in a barrier, serving its window meanwhile. A window
//! is created per size, over a page-aligned buffer of `size × window`
//! bytes, as the C twin's.

use std::time::Instant;

use hpcomm::window::{LockKind, Window};
use hpcomm::{Collectives, Communicator, Result};

use super::page_aligned;
use crate::plan::Kind;

/// The largest put that travels whole in one message (the window's
/// inline data).
const INLINE: usize = 4096;

/// Seconds for `iters` iterations (after `skip` untimed ones) of `kind`
/// with messages of `size` bytes, `window` per iteration for bandwidth.
pub(super) fn run(
    comm: &Communicator,
    kind: Kind,
    size: usize,
    window: usize,
    (iters, skip): (usize, usize),
) -> Result<f64> {
    let per = if matches!(kind, Kind::PutBw | Kind::GetBw) { window } else { 1 };
    let (peer, origin) = (comm.rank() ^ 1, comm.rank() % 2 == 0);
    let mut local = vec![0u8; size.max(1) * per + super::PAGE];
    let local = &mut page_aligned(&mut local)[..size.max(1) * per];
    let mut area = vec![b'a'; size.max(1) * per + super::PAGE];
    let data = page_aligned(&mut area);
    let mut seconds = 0.0;
    comm.scope(|s| {
        let win = Window::create(s, local)?;
        if origin {
            win.lock(LockKind::Shared, peer)?;
            let mut start = Instant::now();
            for i in 0..iters + skip {
                if i == skip {
                    start = Instant::now();
                }
                match kind {
                    Kind::PutLatency => win.put(&data[..size], peer, 0)?,
                    Kind::GetLatency => win.get(&mut data[..size], peer, 0)?,
                    // A window of requests in flight at once (a small put
                    // goes whole in one message and needs none), completed
                    // by the inner scope's end.
                    Kind::PutBw if size <= INLINE => {
                        for at in (0..per).map(|j| j * size) {
                            win.put(&data[at..at + size], peer, at)?;
                        }
                    }
                    Kind::PutBw => comm.scope(|t| {
                        for (j, block) in data.chunks(size).take(per).enumerate() {
                            let _ = win.rput(t, block, peer, j * size)?;
                        }
                        Ok(())
                    })?,
                    _ => comm.scope(|t| {
                        for (j, block) in data.chunks_mut(size.max(1)).take(per).enumerate() {
                            let _ = win.rget(t, &mut block[..size], peer, j * size)?;
                        }
                        Ok(())
                    })?,
                }
                win.flush(peer)?;
            }
            seconds = start.elapsed().as_secs_f64();
            win.unlock(peer)?;
        }
        comm.barrier()?;
        win.free()
    })?;
    Ok(seconds)
}
