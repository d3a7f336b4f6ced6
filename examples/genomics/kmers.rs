//! The numerics of the genomics example: canonical k-mers, their owners,
//! the distributed count with bounded exchange batches, and the synthetic
//! genome and reads. Kept apart from `main.rs` so that the tests
//! (`tests/genomics.rs`) run exactly this code.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use hpcomm::op::Sum;
use hpcomm::{Collectives, Communicator, Result as HpResult};

/// The seed of the owner hash: the same in every process, so every rank
/// agrees on where a k-mer is counted.
const OWNER_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The 2-bit code of a base; `None` for anything but A, C, G, T.
fn code(b: u8) -> Option<u64> {
    match b {
        b'A' | b'a' => Some(0),
        b'C' | b'c' => Some(1),
        b'G' | b'g' => Some(2),
        b'T' | b't' => Some(3),
        _ => None,
    }
}

/// Calls `f` with every canonical k-mer of `seq` (the smaller of the k-mer
/// and its reverse complement, 2 bits per base), skipping k-mers that
/// contain anything but A, C, G and T. `k` ≤ 31.
pub fn canonical_kmers(seq: &[u8], k: usize, mut f: impl FnMut(u64)) {
    debug_assert!((1..=31).contains(&k));
    let mask = (1u64 << (2 * k)) - 1;
    let shift = 2 * (k - 1);
    let (mut fwd, mut rev, mut len) = (0u64, 0u64, 0usize);
    for &b in seq {
        let Some(c) = code(b) else {
            len = 0;
            continue;
        };
        fwd = ((fwd << 2) | c) & mask;
        rev = (rev >> 2) | ((3 - c) << shift);
        len += 1;
        if len >= k {
            f(fwd.min(rev));
        }
    }
}

/// A k-mer's text.
pub fn decode(kmer: u64, k: usize) -> String {
    (0..k).rev().map(|i| b"ACGT"[((kmer >> (2 * i)) & 3) as usize] as char).collect()
}

/// The rank that counts `kmer` (splitmix64 of the k-mer and a fixed seed).
pub fn owner(kmer: u64, ranks: usize) -> usize {
    let mut z = kmer ^ OWNER_SEED;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % ranks as u64) as usize
}

/// Byte range `[start, end)` of the input that rank `r` of `n` parses:
/// the records that start in its `len / n` share of the bytes.
pub fn share(path: &Path, rank: usize, ranks: usize) -> std::io::Result<(u64, u64)> {
    let len = std::fs::metadata(path)?.len();
    let at = |i: usize| (len as u128 * i as u128 / ranks as u128) as u64;
    let mut file = std::fs::File::open(path)?;
    Ok((record_start(&mut file, at(rank), len)?, record_start(&mut file, at(rank + 1), len)?))
}

/// The first record start at or after `from`: a `>` line (FASTA), or an
/// `@` line two lines before a `+` line (FASTQ; a quality line may start
/// with `@` too, but is never followed two lines later by `+`... unless
/// it is, so the check is: `@` line, sequence line, `+` line).
fn record_start(file: &mut std::fs::File, from: u64, len: u64) -> std::io::Result<u64> {
    if from == 0 || from >= len {
        return Ok(from.min(len));
    }
    // Back up one byte, so that a record starting exactly at `from` counts.
    file.seek(SeekFrom::Start(from - 1))?;
    let mut window = Vec::new();
    file.take(1 << 20).read_to_end(&mut window)?;
    let mut starts = Vec::new();
    for (i, &b) in window.iter().enumerate() {
        if i + 1 < window.len() && b == b'\n' {
            starts.push(i + 1);
        }
    }
    let line = |s: usize| &window[s..];
    for (j, &s) in starts.iter().enumerate() {
        match window.get(s) {
            Some(b'>') => return Ok(from - 1 + s as u64),
            Some(b'@') => {
                if let Some(&plus) = starts.get(j + 2) {
                    if line(plus).first() == Some(&b'+') {
                        return Ok(from - 1 + s as u64);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(len)
}

/// Reads the records of `[start, end)` of `path` with needletail and calls
/// `f` with each sequence.
pub fn each_sequence(
    path: &Path,
    (start, end): (u64, u64),
    mut f: impl FnMut(&[u8]),
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    if start >= end {
        return Ok(0);
    }
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut reader = needletail::parse_fastx_reader(file.take(end - start))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut records = 0;
    while let Some(record) = reader.next() {
        let record = record.map_err(|e| format!("{}: {e}", path.display()))?;
        f(&record.seq());
        records += 1;
    }
    Ok(records)
}

/// What one rank ends with.
#[derive(Debug, Default)]
pub struct Counts {
    /// The k-mers this rank owns, with their counts.
    pub table: HashMap<u64, u32>,
    /// Records this rank parsed.
    pub records: usize,
    /// The most k-mers held at once in exchange buffers (sent and received).
    pub peak_buffered: usize,
    /// Exchange rounds.
    pub rounds: usize,
    /// Seconds in the exchanges (not counting what was received).
    pub communication: f64,
}

/// Counts the canonical k-mers of this rank's share of `path` across the
/// job: k-mers go to their owner in rounds of `all_to_all_v`, each rank
/// sending at most `batch` k-mers per round, so that the buffers stay
/// bounded whatever the input's size.
pub fn count(
    comm: &Communicator,
    path: &Path,
    k: usize,
    batch: usize,
) -> Result<Counts, Box<dyn std::error::Error + Send + Sync>> {
    let n = comm.size();
    let range = share(path, comm.rank(), n)?;
    let mut out = Counts::default();
    // Every k-mer of the share, by destination, produced lazily: the share
    // is parsed once into its sequences' k-mers a batch at a time.
    let mut pending: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut buffered = 0usize;
    let mut send = Vec::with_capacity(batch);
    let mut recv = Vec::new();
    let flush = |pending: &mut Vec<Vec<u64>>,
                 buffered: &mut usize,
                 send: &mut Vec<u64>,
                 recv: &mut Vec<u64>,
                 out: &mut Counts|
     -> HpResult<()> {
        let t = std::time::Instant::now();
        let counts: Vec<usize> = pending.iter().map(Vec::len).collect();
        send.clear();
        for p in pending.iter_mut() {
            send.append(p);
        }
        let mut incoming = vec![0usize; n];
        comm.all_to_all(&counts, &mut incoming)?;
        recv.clear();
        recv.resize(incoming.iter().sum(), 0);
        let displs = |c: &[usize]| -> Vec<usize> {
            c.iter()
                .scan(0, |a, &x| {
                    let h = *a;
                    *a += x;
                    Some(h)
                })
                .collect()
        };
        comm.all_to_all_v(send, &counts, &displs(&counts), recv, &incoming, &displs(&incoming))?;
        out.peak_buffered = out.peak_buffered.max(send.len() + recv.len());
        out.communication += t.elapsed().as_secs_f64();
        for &kmer in recv.iter() {
            *out.table.entry(kmer).or_insert(0) += 1;
        }
        *buffered = 0;
        out.rounds += 1;
        Ok(())
    };
    // Parse, exchanging whenever a batch is full. The parser calls back,
    // so full batches are collected as (sequence) boundaries allow: a
    // sequence longer than the batch is split across rounds.
    let mut failure: Option<hpcomm::Error> = None;
    let records = each_sequence(path, range, |seq| {
        canonical_kmers(seq, k, |kmer| {
            if failure.is_some() {
                return;
            }
            pending[owner(kmer, n)].push(kmer);
            buffered += 1;
            if buffered >= batch {
                // Everyone must join each round: a rank with a full batch
                // waits in the exchange until the others fill theirs or
                // finish (see the loop below).
                if let Err(e) = round(comm, true).and_then(|_| {
                    flush(&mut pending, &mut buffered, &mut send, &mut recv, &mut out)
                }) {
                    failure = Some(e);
                }
            }
        });
    });
    if let Some(e) = failure {
        // The job's collectives failed: the others see it too.
        return Err(e.into());
    }
    // A parse error must not leave the other ranks waiting in a round:
    // this rank keeps joining them, and all learn of it at the end.
    let (records, parse_error) = match records {
        Ok(n) => (n, None),
        Err(e) => (0, Some(e.to_string())),
    };
    // A rank that has finished joins every round of the others until all
    // have finished; then one last round sends what is left. Every rank
    // thus takes part in the same rounds.
    loop {
        let others_busy = round(comm, false)?;
        flush(&mut pending, &mut buffered, &mut send, &mut recv, &mut out)?;
        if !others_busy {
            break;
        }
    }
    let mut failed = [0u32];
    comm.all_reduce(&[u32::from(parse_error.is_some())], &mut failed, Sum)?;
    if let Some(e) = parse_error {
        return Err(e.into());
    }
    if failed[0] > 0 {
        return Err("another rank could not parse its share of the input".into());
    }
    out.records = records;
    Ok(out)
}

/// One agreement before an exchange round: whether any rank still parses
/// (`more`). A rank with a full batch says yes; a finished rank says no.
fn round(comm: &Communicator, more: bool) -> HpResult<bool> {
    let mut any = [0u32];
    comm.all_reduce(&[u32::from(more)], &mut any, Sum)?;
    Ok(any[0] > 0)
}

/// The serial count of every canonical k-mer of the file.
pub fn serial(path: &Path, k: usize) -> HashMap<u64, u32> {
    let mut table = HashMap::new();
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    each_sequence(path, (0, len), |seq| {
        canonical_kmers(seq, k, |kmer| *table.entry(kmer).or_insert(0) += 1);
    })
    .expect("the input parses");
    table
}

/// The k-mer spectrum: how many distinct k-mers occur 1, 2, … times; the
/// last bin holds every count at or above it.
pub fn spectrum(table: &HashMap<u64, u32>, bins: usize) -> Vec<u64> {
    let mut h = vec![0u64; bins];
    for &c in table.values() {
        h[(c as usize).min(bins - 1)] += 1;
    }
    h
}

/// A small deterministic random generator (xorshift64*), so that the
/// synthetic data is the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes a synthetic genome of `genome_len` bases — random, with repeats
/// (segments copied elsewhere) — as `reads` reads of `read_len` bases in
/// FASTQ, each with substitution errors at `error_rate`.
pub fn generate(
    out: &mut impl Write,
    seed: u64,
    genome_len: usize,
    reads: usize,
    read_len: usize,
    error_rate: f64,
) -> std::io::Result<()> {
    let mut rng = Rng::new(seed);
    let mut genome: Vec<u8> = (0..genome_len).map(|_| b"ACGT"[rng.below(4) as usize]).collect();
    // Repeats: 20 segments of 2% of the genome copied elsewhere.
    let seg = (genome_len / 50).max(1);
    for _ in 0..20 {
        if genome_len <= 2 * seg {
            break;
        }
        let from = rng.below((genome_len - seg) as u64) as usize;
        let to = rng.below((genome_len - seg) as u64) as usize;
        let copy = genome[from..from + seg].to_vec();
        genome[to..to + seg].copy_from_slice(&copy);
    }
    let read_len = read_len.min(genome_len);
    let quality = vec![b'I'; read_len];
    for i in 0..reads {
        let at = rng.below((genome_len - read_len + 1) as u64) as usize;
        let mut read = genome[at..at + read_len].to_vec();
        for b in read.iter_mut() {
            if (rng.next() as f64 / u64::MAX as f64) < error_rate {
                *b = b"ACGT"[rng.below(4) as usize];
            }
        }
        if rng.below(2) == 1 {
            read.reverse();
            for b in read.iter_mut() {
                *b = match *b {
                    b'A' => b'T',
                    b'C' => b'G',
                    b'G' => b'C',
                    _ => b'A',
                };
            }
        }
        writeln!(out, "@read{i}")?;
        out.write_all(&read)?;
        writeln!(out, "\n+")?;
        out.write_all(&quality)?;
        writeln!(out)?;
    }
    Ok(())
}
