//! Dissemination barrier (Hensgen, Finkel and Manber).
//!
//! In round `k` (`k = 1, 2, 4, …`) rank `r` signals `r + k` and waits for
//! `r − k` (modulo `p`). After `⌈log₂ p⌉` rounds every rank has heard,
//! directly or not, from every other. Cost: `⌈log₂ p⌉ α`. Any `p`.

use hpcomm_runtime::Result;

use crate::channel::Channel;

pub(crate) fn barrier(ch: &Channel) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    let mut k = 1;
    while k < n {
        ch.sendrecv::<u8>(&[], (me + k) % n, &mut [], (me + n - k) % n)?;
        k <<= 1;
    }
    Ok(())
}
