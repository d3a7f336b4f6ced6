//! Broadcast as a binomial scatter followed by a ring all-gather (van de
//! Geijn).
//!
//! The buffer is cut into `p` pieces, one per rank relative to the root.
//! A binomial tree scatters them (each rank gets its subtree's pieces, then
//! keeps its own), and a ring all-gather completes every rank's copy.
//! Cost: `(⌈log₂ p⌉ + p − 1) α + 2 (p−1)/p · nβ`: about half the bandwidth
//! term of the binomial tree, at the price of more messages; for long
//! messages. Any `p`.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;
use crate::util::{piece, split_pair};

pub(crate) fn bcast<T: Pod>(ch: &Channel, buf: &mut [T], root: usize) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    if n == 1 {
        return Ok(());
    }
    let len = buf.len();
    // Pieces `a..b` (relative ranks) as a range of elements.
    let span = |a: usize, b: usize| piece(len, n, a).start..piece(len, n, b.min(n) - 1).end;
    let rel = (me + n - root) % n;
    let actual = |r: usize| (r + root) % n;

    // Scatter: receive this subtree's pieces from the parent.
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            ch.recv(&mut buf[span(rel, rel + mask)], actual(rel - mask))?;
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if rel + mask < n {
            ch.send(&buf[span(rel + mask, rel + 2 * mask)], actual(rel + mask))?;
        }
        mask >>= 1;
    }

    // Ring all-gather of the pieces, in relative numbering.
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    for step in 0..n - 1 {
        let out = piece(len, n, (rel + n - step) % n);
        let inc = piece(len, n, (rel + 2 * n - step - 1) % n);
        let (send, recv) = split_pair(buf, out, inc);
        ch.sendrecv(send, right, recv, left)?;
    }
    Ok(())
}
