//! Algorithm selection: one function per collective picks an algorithm by
//! message size, communicator size and the operation's commutativity.
//!
//! `HPCOMM_<COLLECTIVE>=<algorithm>` (see [`Config::algorithms`]) forces
//! one, for benchmarks and tests. A forced algorithm that cannot serve a
//! call — ring or Rabenseifner with a non-commutative operation,
//! recursive-doubling all-gather off powers of two, Bruck with per-rank
//! counts — gives way to the automatic choice for that call; an unknown
//! name is an error.
//!
//! The thresholds follow MPICH's defaults and our measurements on shared
//! memory (`docs/performance.md`).

use std::str::FromStr;

use hpcomm_runtime::{Communicator, Config, Error, Result};

macro_rules! algorithms {
    ($(#[$doc:meta])* $name:ident, $key:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every algorithm, for tests and benchmarks.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// The collective's key in [`Config::algorithms`].
            pub const COLLECTIVE: &'static str = $key;

            /// The name `HPCOMM_<COLLECTIVE>` takes.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The algorithm the configuration forces, if any.
            pub fn forced(config: &Config) -> Result<Option<$name>> {
                config.algorithms.get($key).map(|s| s.parse()).transpose()
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(Error::Config(format!(
                        "HPCOMM_{}={other:?} is not an algorithm for {}; expected one of: {}",
                        $key.to_uppercase(),
                        $key,
                        [$($text),*].join(", ")
                    ))),
                }
            }
        }
    };
}

algorithms!(
    /// Barrier algorithms.
    Barrier, "barrier" {
        /// [`barrier_dissemination`](crate::algorithms::barrier_dissemination).
        Dissemination = "dissemination",
    }
);

algorithms!(
    /// Broadcast algorithms.
    Bcast, "bcast" {
        /// Binomial tree.
        Binomial = "binomial",
        /// Binomial scatter, then ring all-gather.
        ScatterAllgather = "scatter_allgather",
    }
);

algorithms!(
    /// Reduction algorithms.
    Reduce, "reduce" {
        /// Binomial tree (any operation).
        Binomial = "binomial",
        /// Reduce-scatter by halving, then gather (commutative).
        Rabenseifner = "rabenseifner",
    }
);

algorithms!(
    /// All-reduce algorithms.
    Allreduce, "allreduce" {
        /// Recursive doubling (any operation).
        RecursiveDoubling = "recursive_doubling",
        /// Ring reduce-scatter, then ring all-gather (commutative).
        Ring = "ring",
        /// Recursive halving, then recursive doubling (commutative).
        Rabenseifner = "rabenseifner",
    }
);

algorithms!(
    /// All-gather algorithms.
    Allgather, "allgather" {
        /// Bruck's (equal blocks).
        Bruck = "bruck",
        /// Recursive doubling (equal blocks, power-of-two sizes).
        RecursiveDoubling = "recursive_doubling",
        /// Ring (any counts).
        Ring = "ring",
    }
);

algorithms!(
    /// All-to-all algorithms.
    Alltoall, "alltoall" {
        /// Pairwise exchange (any counts).
        Pairwise = "pairwise",
        /// Bruck's (equal blocks).
        Bruck = "bruck",
    }
);

/// Reads a forced choice; `None` when the configuration forces nothing.
fn forced<A: Copy>(
    comm: &Communicator,
    read: fn(&Config) -> Result<Option<A>>,
) -> Result<Option<A>> {
    read(comm.config())
}

/// The barrier algorithm.
pub fn barrier(comm: &Communicator) -> Result<Barrier> {
    Ok(forced(comm, Barrier::forced)?.unwrap_or(Barrier::Dissemination))
}

/// The broadcast algorithm for `bytes` bytes.
pub fn bcast(comm: &Communicator, bytes: usize) -> Result<Bcast> {
    if let Some(a) = forced(comm, Bcast::forced)? {
        return Ok(a);
    }
    Ok(Bcast::auto(comm.size(), bytes))
}

impl Bcast {
    /// The automatic choice on `p` ranks: the binomial tree while the
    /// message is small or the tree shallow; above, scattering first
    /// moves about 2 × `bytes` per rank instead of log2(p) × `bytes`.
    pub fn auto(p: usize, bytes: usize) -> Bcast {
        if bytes < 12 << 10 || p < 8 {
            Bcast::Binomial
        } else {
            Bcast::ScatterAllgather
        }
    }
}

/// The reduction algorithm for `count` elements of `bytes` bytes in all.
pub fn reduce(
    comm: &Communicator,
    bytes: usize,
    count: usize,
    commutative: bool,
) -> Result<Reduce> {
    let auto = Reduce::auto(comm.size(), bytes, count, commutative);
    Ok(match forced(comm, Reduce::forced)? {
        Some(Reduce::Rabenseifner) if !commutative => auto,
        Some(a) => a,
        None => auto,
    })
}

impl Reduce {
    /// The automatic choice on `p` ranks.
    pub fn auto(p: usize, bytes: usize, count: usize, commutative: bool) -> Reduce {
        if commutative && bytes > 2 << 10 && count >= p {
            Reduce::Rabenseifner
        } else {
            Reduce::Binomial
        }
    }
}

/// The all-reduce algorithm for `count` elements of `bytes` bytes in all.
pub fn allreduce(
    comm: &Communicator,
    bytes: usize,
    count: usize,
    commutative: bool,
) -> Result<Allreduce> {
    let auto = Allreduce::auto(comm.size(), bytes, count, commutative);
    Ok(match forced(comm, Allreduce::forced)? {
        Some(Allreduce::Ring | Allreduce::Rabenseifner) if !commutative => auto,
        Some(a) => a,
        None => auto,
    })
}

impl Allreduce {
    /// The automatic choice on `p` ranks: recursive doubling (log2(p)
    /// latencies) for small vectors and operations that are not
    /// commutative; Rabenseifner (2 log2(p) latencies, 2 × `bytes` moved)
    /// above 2 KiB; the ring (2(p − 1) latencies, same volume, every step
    /// between neighbours) for large vectors off powers of two, where
    /// Rabenseifner needs extra steps.
    pub fn auto(p: usize, bytes: usize, count: usize, commutative: bool) -> Allreduce {
        if !commutative || bytes <= 2 << 10 || count < p {
            Allreduce::RecursiveDoubling
        } else if p.is_power_of_two() || bytes < 512 << 10 {
            Allreduce::Rabenseifner
        } else {
            Allreduce::Ring
        }
    }
}

/// The all-gather algorithm for `bytes` bytes gathered in all; `equal`
/// when every rank gives the same count.
pub fn allgather(comm: &Communicator, bytes: usize, equal: bool) -> Result<Allgather> {
    let p = comm.size();
    let auto = Allgather::auto(p, bytes, equal);
    Ok(match forced(comm, Allgather::forced)? {
        Some(Allgather::Bruck) if !equal => auto,
        Some(Allgather::RecursiveDoubling) if !equal || !p.is_power_of_two() => auto,
        Some(a) => a,
        None => auto,
    })
}

impl Allgather {
    /// The automatic choice on `p` ranks for `bytes` gathered in all.
    pub fn auto(p: usize, bytes: usize, equal: bool) -> Allgather {
        if !equal || bytes >= 512 << 10 {
            Allgather::Ring
        } else if p.is_power_of_two() {
            Allgather::RecursiveDoubling
        } else {
            Allgather::Bruck
        }
    }
}

/// The all-to-all algorithm for blocks of `block_bytes`; `equal` when
/// every block has the same count and blocks are packed.
pub fn alltoall(comm: &Communicator, block_bytes: usize, equal: bool) -> Result<Alltoall> {
    let auto = Alltoall::auto(comm.size(), block_bytes, equal);
    Ok(match forced(comm, Alltoall::forced)? {
        Some(Alltoall::Bruck) if !equal => auto,
        Some(a) => a,
        None => auto,
    })
}

impl Alltoall {
    /// The automatic choice on `p` ranks: Bruck (log2(p) steps, each
    /// moving half the data) for small packed blocks, pairwise exchange
    /// (p − 1 steps, each block moved once) otherwise.
    pub fn auto(p: usize, block_bytes: usize, equal: bool) -> Alltoall {
        if equal && block_bytes <= 256 && p >= 8 {
            Alltoall::Bruck
        } else {
            Alltoall::Pairwise
        }
    }
}
