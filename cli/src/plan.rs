//! The plan of `hpcomm bench`: which benchmarks, which sizes, how many
//! iterations, and how each is titled. `benches/mpi-compare`'s `mpi-bench`
//! includes this file as it is, so that the MPI side runs exactly the same
//! plan.

/// The benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// One-way latency (µs).
    Latency,
    /// Unidirectional bandwidth (MB/s).
    Bw,
    /// Bidirectional bandwidth (MB/s).
    Bibw,
    /// Message rate (messages/s).
    Mr,
    /// All-reduce of `f32` sums, average latency (µs).
    Allreduce,
    /// Reduce of `f32` sums to rank 0, average latency (µs).
    Reduce,
    /// Broadcast from rank 0, average latency (µs).
    Bcast,
    /// All-gather of a block per rank, average latency (µs).
    Allgather,
    /// All-to-all of a block per pair, average latency (µs).
    Alltoall,
    /// Barrier, average latency (µs).
    Barrier,
    /// Non-blocking all-reduce of `f32` sums: pure communication time (µs)
    /// and its overlap with computation (OSU's `osu_iallreduce`).
    Iallreduce,
    /// Non-blocking reduce of `f32` sums to rank 0: as `iallreduce`.
    Ireduce,
    /// One-sided put and flush inside a lock, latency (µs; OSU's
    /// `osu_put_latency`).
    PutLatency,
    /// One-sided get and flush inside a lock, latency (µs; OSU's
    /// `osu_get_latency`).
    GetLatency,
    /// A window of one-sided puts, then a flush, inside a lock (MB/s;
    /// OSU's `osu_put_bw`).
    PutBw,
    /// A window of one-sided gets, then a flush, inside a lock (MB/s;
    /// OSU's `osu_get_bw`).
    GetBw,
}

impl Kind {
    /// The title, the value column's heading and the unit of its output.
    pub fn titles(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Latency => ("Latency Test", "Latency (us)", "us"),
            Kind::Bw => ("Bandwidth Test", "Bandwidth (MB/s)", "MB/s"),
            Kind::Bibw => ("Bi-Directional Bandwidth Test", "Bandwidth (MB/s)", "MB/s"),
            Kind::Mr => ("Message Rate Test", "Messages/s", "messages/s"),
            Kind::Allreduce => ("Allreduce Latency Test", "Avg Latency(us)", "us"),
            Kind::Reduce => ("Reduce Latency Test", "Avg Latency(us)", "us"),
            Kind::Bcast => ("Broadcast Latency Test", "Avg Latency(us)", "us"),
            Kind::Allgather => ("Allgather Latency Test", "Avg Latency(us)", "us"),
            Kind::Alltoall => ("All-to-All Latency Test", "Avg Latency(us)", "us"),
            Kind::Barrier => ("Barrier Latency Test", "Avg Latency(us)", "us"),
            Kind::Iallreduce => ("Non-blocking Allreduce Overlap Test", OVERLAP_COLUMNS, "us"),
            Kind::Ireduce => ("Non-blocking Reduce Overlap Test", OVERLAP_COLUMNS, "us"),
            Kind::PutLatency => ("Put Latency Test", "Latency (us)", "us"),
            Kind::GetLatency => ("Get Latency Test", "Latency (us)", "us"),
            Kind::PutBw => ("Put Bandwidth Test", "Bandwidth (MB/s)", "MB/s"),
            Kind::GetBw => ("Get Bandwidth Test", "Bandwidth (MB/s)", "MB/s"),
        }
    }

    /// Whether this is an overlap benchmark: four columns (overall,
    /// compute, pure communication in µs, overlap in per cent).
    pub fn overlap(self) -> bool {
        matches!(self, Kind::Iallreduce | Kind::Ireduce)
    }

    /// Whether this is a one-sided benchmark (a window per pair).
    pub fn one_sided(self) -> bool {
        matches!(self, Kind::PutLatency | Kind::GetLatency | Kind::PutBw | Kind::GetBw)
    }

    /// Whether this is a collective benchmark (any number of ranks).
    pub fn collective(self) -> bool {
        !matches!(self, Kind::Latency | Kind::Bw | Kind::Bibw | Kind::Mr) && !self.one_sided()
    }
}

/// The headings of an overlap benchmark's columns after the size.
pub const OVERLAP_COLUMNS: &str = "Overall(us)  Compute(us)  Pure Comm.(us)  Overlap(%)";

/// What a run measures: the benchmark, the size range, the iterations.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub kind: Kind,
    pub min_size: usize,
    /// Default: 4 MiB for point-to-point, 1 MiB for collectives.
    pub max_size: Option<usize>,
    /// Default: OSU's (see [`Plan::iterations`]).
    pub iters: Option<usize>,
}

impl Plan {
    /// The largest size.
    pub fn max_size(&self) -> usize {
        self.max_size.unwrap_or(if self.kind.collective() { 1 << 20 } else { 4 << 20 })
    }

    /// The sizes: 0 if asked for, then powers of two.
    pub fn sizes(&self) -> Vec<usize> {
        if self.kind == Kind::Barrier {
            return vec![0];
        }
        // Reductions work on 4-byte floats.
        let min = if matches!(
            self.kind,
            Kind::Allreduce | Kind::Reduce | Kind::Iallreduce | Kind::Ireduce
        ) {
            self.min_size.max(4)
        } else {
            self.min_size
        };
        let mut sizes = Vec::new();
        if min == 0 {
            sizes.push(0);
        }
        let mut s = min.max(1).next_power_of_two();
        while s <= self.max_size() {
            sizes.push(s);
            s *= 2;
        }
        sizes
    }

    /// OSU's defaults: (timed iterations, warm-up iterations), fewer for
    /// large messages.
    pub fn iterations(&self, size: usize) -> (usize, usize) {
        if self.kind.collective() {
            let iters = self.iters.unwrap_or(if size > 8192 { 100 } else { 1000 });
            let skip = if self.iters.is_some() {
                iters / 10
            } else if size > 8192 {
                10
            } else {
                200
            };
            return (iters, skip);
        }
        let iters = self.iters.unwrap_or(if size > 8192 { 1000 } else { 10_000 });
        let skip = if self.iters.is_some() {
            iters / 10
        } else if size > 8192 {
            10
        } else {
            100
        };
        (iters, skip)
    }
}
