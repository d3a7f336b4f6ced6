//! Binomial-tree broadcast.
//!
//! Ranks are numbered relative to the root; rank `r` receives from `r`
//! minus its lowest set bit and forwards to `r + 2^j` for each smaller
//! power of two. Cost: `⌈log₂ p⌉ (α + nβ)`. Best for short messages and
//! small communicators. Any `p`.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;

pub(crate) fn bcast<T: Pod>(ch: &Channel, buf: &mut [T], root: usize) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let rel = (me + n - root) % n;
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            ch.recv(buf, (rel - mask + root) % n)?;
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if rel + mask < n {
            ch.send(buf, (rel + mask + root) % n)?;
        }
        mask >>= 1;
    }
    Ok(())
}
