//! What the fuzz tests of every hpcomm crate share: a small seeded generator
//! and the case count. Not for users.
//!
//! The targets — header decoding and the protocol engine, the tcp
//! connection reader, the shm ring reader, the key-value protocol — run
//! 10,000 cases under `cargo test`; `ci/fuzz.sh` runs a million each with
//! `HPCOMM_FUZZ_CASES`, and `HPCOMM_FUZZ_SEED` replays a run.

/// A deterministic generator (xorshift64*): the same seed gives the same
/// cases, so a failure can be replayed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is taken as 1).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Random bytes, fewer than `n` of them.
    pub fn bytes_below(&mut self, n: u64) -> Vec<u8> {
        let len = self.below(n) as usize;
        self.bytes(len)
    }

    /// Overwrites up to `max` random bytes of `bytes` with random values.
    pub fn mutate(&mut self, bytes: &mut [u8], max: u64) {
        for _ in 0..self.below(max + 1) {
            if !bytes.is_empty() {
                let at = self.below(bytes.len() as u64) as usize;
                bytes[at] = self.next_u64() as u8;
            }
        }
    }
}

/// How many cases a target runs: `HPCOMM_FUZZ_CASES`, or `default`.
pub fn cases(default: u64) -> u64 {
    std::env::var("HPCOMM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The seed of this run: `HPCOMM_FUZZ_SEED`, or 1.
pub fn seed() -> u64 {
    std::env::var("HPCOMM_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}
