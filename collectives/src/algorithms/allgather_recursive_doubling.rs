//! Recursive-doubling all-gather (equal blocks, `p` a power of two).
//!
//! In round `k` rank `r` exchanges with `r ⊕ 2^k` the `2^k` blocks it has
//! gathered so far, which lie next to each other in the buffer, so no
//! copies are needed. Cost: `log₂ p · α + (p−1)/p · nβ`. Only for `p` a
//! power of two; selection and forcing fall back to Bruck's otherwise.

use bytemuck::Pod;
use hpcomm_runtime::Result;

use crate::channel::Channel;
use crate::util::split_pair;

pub(crate) fn all_gather<T: Pod>(ch: &Channel, buf: &mut [T], block: usize) -> Result<()> {
    let (n, me) = (ch.size(), ch.rank());
    debug_assert!(n.is_power_of_two());
    let mut mask = 1;
    while mask < n {
        let partner = me ^ mask;
        let mine = (me & !(mask - 1)) * block;
        let theirs = (partner & !(mask - 1)) * block;
        let (send, recv) =
            split_pair(buf, mine..mine + mask * block, theirs..theirs + mask * block);
        ch.sendrecv(send, partner, recv, partner)?;
        mask <<= 1;
    }
    Ok(())
}
