//! The genomics example's counting (`examples/genomics/kmers.rs`, the file
//! the example runs): counts on 1, 2, 3 and 4 ranks equal a serial count
//! exactly, and the exchange buffers stay bounded by the batch size however
//! large the input.

#[path = "../examples/genomics/kmers.rs"]
mod kmers;

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::watchdog;

fn synthetic(name: &str, reads: usize) -> PathBuf {
    let path = std::env::temp_dir().join(format!("hpcomm-{name}-{}.fastq", std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    kmers::generate(&mut out, 7, 20_000, reads, 100, 0.01).unwrap();
    std::io::Write::flush(&mut out).unwrap();
    path
}

/// Every rank's table, merged, and each rank's peak buffer use.
fn distributed(
    path: &Path,
    ranks: usize,
    k: usize,
    batch: usize,
) -> (HashMap<u64, u32>, Vec<usize>, usize) {
    let path = path.to_path_buf();
    let outs = hpcomm::threads(ranks, move |comm| {
        let c = kmers::count(comm, &path, k, batch).map_err(|e| e.to_string()).unwrap();
        for kmer in c.table.keys() {
            assert_eq!(kmers::owner(*kmer, comm.size()), comm.rank(), "counted by its owner");
        }
        c
    })
    .unwrap();
    let records = outs.iter().map(|c| c.records).sum();
    let peaks = outs.iter().map(|c| c.peak_buffered).collect();
    let mut all = HashMap::new();
    for c in outs {
        for (kmer, n) in c.table {
            assert!(all.insert(kmer, n).is_none(), "one owner per k-mer");
        }
    }
    (all, peaks, records)
}

#[test]
fn counts_on_1_to_4_ranks_equal_the_serial_count() {
    watchdog(120, "genomics-counts", || {
        let path = synthetic("counts", 600);
        for k in [5, 21, 31] {
            let serial = kmers::serial(&path, k);
            assert!(serial.values().any(|&c| c > 1), "repeats give repeated k-mers");
            for ranks in [1, 2, 3, 4] {
                let (counts, _, records) = distributed(&path, ranks, k, 1000);
                assert_eq!(records, 600, "each record parsed once on {ranks} ranks");
                assert!(counts == serial, "k = {k}, {ranks} ranks");
            }
        }
        let _ = std::fs::remove_file(&path);
    });
}

#[test]
fn the_bundled_reads_count_the_same_on_any_number_of_ranks() {
    watchdog(120, "genomics-bundled", || {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/genomics/data/small.fastq");
        let serial = kmers::serial(&path, 21);
        assert!(!serial.is_empty());
        for ranks in [2, 3] {
            assert!(distributed(&path, ranks, 21, 500).0 == serial, "{ranks} ranks");
        }
    });
}

#[test]
fn exchange_buffers_stay_bounded_by_the_batch() {
    watchdog(120, "genomics-bounded", || {
        let (small, large) = (synthetic("small", 200), synthetic("large", 2000));
        let batch = 256;
        for path in [&small, &large] {
            let (_, peaks, _) = distributed(path, 4, 21, batch);
            for peak in peaks {
                // At most a batch sent and, from 4 ranks, 4 batches received.
                assert!(peak <= 5 * batch, "{peak} k-mers held at once with a batch of {batch}");
            }
        }
        let _ = (std::fs::remove_file(&small), std::fs::remove_file(&large));
    });
}

#[test]
fn canonical_kmers_are_strand_independent() {
    let fwd = b"ACGTTGCAAGGCTTAN ACG";
    let rev: Vec<u8> = fwd
        .iter()
        .rev()
        .map(|&b| match b {
            b'A' => b'T',
            b'C' => b'G',
            b'G' => b'C',
            b'T' => b'A',
            other => other,
        })
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    kmers::canonical_kmers(fwd, 5, |k| a.push(k));
    kmers::canonical_kmers(&rev, 5, |k| b.push(k));
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    // 15 valid bases before N give 11 5-mers; the 3 after give none.
    assert_eq!(a.len(), 11);
    assert_eq!(kmers::decode(0b00_01_10_11, 4), "ACGT");
}
