//! A many-producer, single-consumer queue of records in shared memory: each
//! rank's inbox, which every other rank of the node can write to. It is what
//! keeps a segment O(ranks): one queue per rank instead of one ring per
//! pair, with rings ([`super::ring`]) handed out from a fixed pool to the
//! pairs that talk most.
//!
//! Records have the ring's layout ([`super::ring`]): a 16-byte record header
//! whose last word is the sending rank, then header and payload, padded to
//! 64 bytes; a record that would cross the end is preceded by padding. A
//! producer reserves space by advancing `tail` with a compare-and-swap
//! (after checking it against the consumer's `head`), writes its record,
//! and then commits it by storing its size, with release, into the commit
//! word of the record's first line. The consumer reads commit words in
//! order from `head` (acquire), hands up each record in place, clears the
//! word, and gives the space back with one release store of `head` per
//! batch. A record reserved but not yet committed holds the records behind
//! it until it is: a producer stopped between the two (preempted) only
//! delays the queue; one that died there stalls it, which the endpoint
//! detects and turns into lost peers ([`QueueCtl::close`]), never a hang.
//!
//! Per sender, records arrive in the order they were reserved, so each
//! pair's frames stay in order. The protocol is model-checked with loom
//! (`ci/loom.sh`).

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::ring::{record_size, Bytes, Corrupt, Line, ALIGN, RECORD_HEADER};

/// A commit word (loom's atomic under `cfg(loom)`).
pub(crate) type Commit = AtomicU32;

/// A frame for the runtime.
pub const KIND_FRAME: u16 = 1;
/// Padding to the end of the queue.
const KIND_PAD: u16 = 2;
/// A control record of the shm endpoint (the payload says what).
pub const KIND_CONTROL: u16 = 3;

/// The control block of a queue, in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct QueueCtl {
    tail: Line<AtomicU64>,
    head: Line<AtomicU64>,
    /// Set by the consumer when it gives the queue up: producers stop.
    closed: Line<AtomicU32>,
}

impl QueueCtl {
    /// Gives the queue up: every later push fails.
    pub fn close(&self) {
        self.closed.0.store(1, Ordering::Release);
    }
}

/// The shared memory of one queue: its control block, one commit word per
/// 64-byte line, and the data.
pub(crate) trait QueueMem {
    type Data: Bytes;
    fn ctl(&self) -> &QueueCtl;
    fn commits(&self) -> &[AtomicU32];
    fn data(&self) -> &Self::Data;
}

/// Bytes of commit words a queue of `bytes` needs.
pub const fn commit_bytes(bytes: usize) -> usize {
    bytes / ALIGN * std::mem::size_of::<u32>()
}

/// Appends a record to the queue in `mem` as rank `src`: `Ok(false)` when
/// there is no room now, an error when the queue's indices cannot be true
/// (they are written by other ranks) or its consumer closed it.
pub(crate) fn push<M: QueueMem>(
    mem: &M,
    src: u32,
    kind: u16,
    header: &[u8],
    payload: &[u8],
) -> Result<bool, Corrupt> {
    let ctl = mem.ctl();
    let data = mem.data();
    let cap = data.len() as u64;
    let size = record_size(header.len(), payload.len()) as u64;
    debug_assert!(size <= cap / 2, "record exceeds the queue's limit");
    if ctl.closed.0.load(Ordering::Acquire) != 0 {
        return Err(Corrupt::from("the queue was closed".to_string()));
    }
    let (at, needed) = loop {
        // `head` first: `tail` read after it is at least every reservation
        // the consumer has passed (it saw their commits, which follow
        // them), so `head <= tail` holds unless a rank wrote nonsense.
        let head = ctl.head.0.load(Ordering::Acquire);
        let tail = ctl.tail.0.load(Ordering::Relaxed);
        if tail < head || tail - head > cap {
            return Err(Corrupt::from(format!("queue indices {head}..{tail} cannot be true")));
        }
        let at = tail % cap;
        let to_end = cap - at;
        let needed = if size <= to_end { size } else { to_end + size };
        if tail + needed - head > cap {
            return Ok(false);
        }
        if ctl
            .tail
            .0
            .compare_exchange_weak(tail, tail + needed, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            break (at as usize, needed);
        }
    };
    let mut at = at;
    let commits = mem.commits();
    if needed > size {
        // Cover the rest of the queue with padding; start at offset 0.
        let to_end = data.len() - at;
        write_record(data, at, to_end, KIND_PAD, src, &[], &[]);
        commits[at / ALIGN].store(to_end as u32, Ordering::Release);
        at = 0;
    }
    write_record(data, at, size as usize, kind, src, header, payload);
    commits[at / ALIGN].store(size as u32, Ordering::Release);
    Ok(true)
}

fn write_record(
    data: &impl Bytes,
    at: usize,
    size: usize,
    kind: u16,
    src: u32,
    header: &[u8],
    payload: &[u8],
) {
    let mut head = [0u8; RECORD_HEADER];
    head[0..4].copy_from_slice(&(size as u32).to_le_bytes());
    head[4..6].copy_from_slice(&(header.len() as u16).to_le_bytes());
    head[6..8].copy_from_slice(&kind.to_le_bytes());
    head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    head[12..16].copy_from_slice(&src.to_le_bytes());
    data.write(at, &head);
    data.write(at + RECORD_HEADER, header);
    data.write(at + RECORD_HEADER + header.len(), payload);
}

/// The receiving side of a queue.
#[derive(Debug)]
pub(crate) struct QueueConsumer<M> {
    mem: M,
    head: u64,
    closed: bool,
}

impl<M: QueueMem> QueueConsumer<M> {
    /// The consumer of a queue whose memory starts zeroed.
    pub(crate) fn new(mem: M) -> Self {
        QueueConsumer { mem, head: 0, closed: false }
    }

    /// Whether a committed record is waiting (one acquire load).
    pub(crate) fn has_data(&self) -> bool {
        !self.closed && self.commit_at_head() != 0
    }

    fn commit_at_head(&self) -> u32 {
        let at = (self.head % self.mem.data().len() as u64) as usize;
        self.mem.commits()[at / ALIGN].load(Ordering::Acquire)
    }

    /// Whether a record has been reserved at `head` but not committed: the
    /// queue waits for its producer.
    pub(crate) fn waiting(&self) -> bool {
        !self.closed
            && self.commit_at_head() == 0
            && self.mem.ctl().tail.0.load(Ordering::Acquire) != self.head
    }

    /// Where the consumer is, and where the producers are (bytes ever).
    pub(crate) fn positions(&self) -> (u64, u64) {
        (self.head, self.mem.ctl().tail.0.load(Ordering::Acquire))
    }

    /// Gives the queue up: nothing more is read, and producers are told.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.mem.ctl().close();
    }

    /// Hands up to `max` committed records to `sink` as (sending rank,
    /// kind, header, payload) slices into the queue, then gives their space
    /// back. Returns how many, or an error (after the records before it)
    /// when a record cannot be true: its producer wrote it, so every field
    /// is checked before it is used.
    pub(crate) fn poll(
        &mut self,
        max: usize,
        mut sink: impl FnMut(u32, u16, &[u8], &[u8]),
    ) -> Result<usize, Corrupt> {
        let cap = self.mem.data().len();
        let mut records = 0;
        let mut moved = false;
        let mut outcome = Ok(());
        while records < max && !self.closed {
            let at = (self.head % cap as u64) as usize;
            let commit = &self.mem.commits()[at / ALIGN];
            let size = commit.load(Ordering::Acquire) as usize;
            if size == 0 {
                break;
            }
            let fields = self.mem.data().read(at, RECORD_HEADER, |r| {
                let word = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4"));
                let half = |i: usize| u16::from_le_bytes(r[i..i + 2].try_into().expect("2"));
                (word(0) as usize, half(4) as usize, half(6), word(8) as usize, word(12))
            });
            let (own_size, header_len, kind, payload_len, src) = fields;
            let fits = size % ALIGN == 0 && size <= cap - at && own_size == size;
            let good = match kind {
                KIND_PAD => at + size == cap,
                KIND_FRAME | KIND_CONTROL => RECORD_HEADER + header_len + payload_len <= size,
                _ => false,
            };
            if !(fits && good) {
                outcome = Err(Corrupt::from(format!(
                    "a queue record that cannot be true ({size} bytes committed at {at}, \
                     {own_size} in the record, kind {kind})"
                )));
                break;
            }
            if kind != KIND_PAD {
                self.mem.data().read(at + RECORD_HEADER, header_len + payload_len, |bytes| {
                    let (header, payload) = bytes.split_at(header_len);
                    sink(src, kind, header, payload);
                });
                records += 1;
            }
            commit.store(0, Ordering::Relaxed);
            self.head += size as u64;
            moved = true;
        }
        if moved {
            self.mem.ctl().head.0.store(self.head, Ordering::Release);
        }
        outcome.map(|()| records)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::ring::Data;
    use super::*;
    use std::ptr::NonNull;

    /// A queue over heap memory.
    struct Heap {
        ctl: QueueCtl,
        commits: Vec<AtomicU32>,
        data: Data,
        _backing: Vec<u64>,
    }

    impl QueueMem for &Heap {
        type Data = Data;
        fn ctl(&self) -> &QueueCtl {
            &self.ctl
        }
        fn commits(&self) -> &[AtomicU32] {
            &self.commits
        }
        fn data(&self) -> &Data {
            &self.data
        }
    }

    fn heap(bytes: usize) -> Heap {
        let mut backing = vec![0u64; bytes / 8];
        let ptr = NonNull::new(backing.as_mut_ptr().cast::<u8>()).unwrap();
        Heap {
            ctl: QueueCtl::default(),
            commits: (0..bytes / ALIGN).map(|_| AtomicU32::new(0)).collect(),
            // SAFETY: `backing` moves into the same value and lives as long.
            data: unsafe { Data::new(ptr, bytes) },
            _backing: backing,
        }
    }

    /// Frames from three senders, interleaved, with wrap-around and a full
    /// queue: each arrives once, intact, each sender's in order.
    #[test]
    fn records_round_trip_per_sender_in_order() {
        let q = heap(2048);
        let mut c = QueueConsumer::new(&q);
        let mut next = [0u8; 3];
        let mut sent = [0u8; 3];
        for i in 0..600usize {
            let src = (i % 3) as u32;
            let payload = vec![sent[src as usize]; (i * 41) % 500];
            while !push(&&q, src, KIND_FRAME, &[src as u8; 8], &payload).unwrap() {
                let n = c
                    .poll(2, |s, kind, h, p| {
                        assert_eq!((kind, h), (KIND_FRAME, &[s as u8; 8][..]));
                        assert!(p.iter().all(|&b| b == next[s as usize]));
                        next[s as usize] = next[s as usize].wrapping_add(1);
                    })
                    .unwrap();
                assert!(n > 0, "full but nothing to take");
            }
            sent[src as usize] = sent[src as usize].wrapping_add(1);
        }
        c.poll(usize::MAX, |s, _, _, p| {
            assert!(p.iter().all(|&b| b == next[s as usize]));
            next[s as usize] = next[s as usize].wrapping_add(1);
        })
        .unwrap();
        assert_eq!(next, sent);
        assert!(!c.has_data() && !c.waiting());
    }

    /// A reservation not yet committed holds the queue (and is seen as
    /// waiting); a closed queue refuses pushes; nonsense is caught.
    #[test]
    fn reservations_closing_and_nonsense() {
        let q = heap(1024);
        let mut c = QueueConsumer::new(&q);
        // A producer that reserved 64 bytes and stopped.
        q.ctl.tail.0.store(64, Ordering::Relaxed);
        assert!(push(&&q, 1, KIND_FRAME, b"h", b"p").unwrap());
        assert!(c.waiting() && !c.has_data());
        assert_eq!(c.poll(8, |_, _, _, _| panic!("read past a reservation")), Ok(0));
        c.close();
        assert!(push(&&q, 1, KIND_FRAME, &[0; 8], &[0; 400]).is_err_and(|e| e.0.contains("closed")));

        let q = heap(1024);
        let mut c = QueueConsumer::new(&q);
        assert!(push(&&q, 1, KIND_FRAME, b"h", b"p").unwrap());
        q.commits[0].store(128, Ordering::Release);
        assert!(c.poll(8, |_, _, _, _| ()).unwrap_err().0.contains("cannot be true"));
        let q = heap(1024);
        q.ctl.head.0.store(4096, Ordering::Release);
        assert!(push(&&q, 1, KIND_FRAME, b"h", b"p").is_err());
    }

    /// Random writes over a queue's records and commit words, as a hostile
    /// producer could make them: the reader never panics or loops.
    #[test]
    fn random_queues_never_crash_the_reader() {
        use crate::fuzz::{self, Rng};
        let mut rng = Rng::new(fuzz::seed());
        let (mut clean, mut corrupt) = (0, 0);
        for _ in 0..fuzz::cases(10_000) {
            let q = heap(1024);
            let mut c = QueueConsumer::new(&q);
            for _ in 0..rng.below(6) {
                let _ = push(&&q, 2, KIND_FRAME, &rng.bytes_below(64), &rng.bytes_below(300));
            }
            for _ in 0..rng.below(3) {
                let at = rng.below(1024 - 4) as usize;
                q.data.write(at & !3, &(rng.next_u64() as u32 % 1200).to_le_bytes());
            }
            if rng.below(3) == 0 {
                let line = rng.below(16) as usize;
                q.commits[line].store(64 * rng.below(20) as u32, Ordering::Release);
            }
            for _ in 0..2 {
                match c.poll(usize::MAX, |_, _, h, p| assert!(h.len() + p.len() <= 1024)) {
                    Ok(_) => clean += 1,
                    Err(_) => corrupt += 1,
                }
            }
        }
        assert!(clean > 0 && corrupt > 0, "{clean} clean polls, {corrupt} corrupt");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::super::ring::ModelData;
    use super::*;
    use loom::sync::Arc;

    struct Model {
        ctl: QueueCtl,
        commits: Vec<AtomicU32>,
        data: ModelData,
    }

    impl QueueMem for Arc<Model> {
        type Data = ModelData;
        fn ctl(&self) -> &QueueCtl {
            &self.ctl
        }
        fn commits(&self) -> &[AtomicU32] {
            &self.commits
        }
        fn data(&self) -> &ModelData {
            &self.data
        }
    }

    /// Two producers race for a 256-byte queue (records of 64 and 128
    /// bytes, so that one must wait for space and wrap): the consumer sees
    /// every record exactly once, intact, each producer's in order, and no
    /// byte is read while it may be written.
    #[test]
    fn queue_protocol_is_race_free() {
        loom::model(|| {
            let q = Arc::new(Model {
                ctl: QueueCtl {
                    tail: Line(AtomicU64::new(0)),
                    head: Line(AtomicU64::new(0)),
                    closed: Line(AtomicU32::new(0)),
                },
                commits: (0..4).map(|_| AtomicU32::new(0)).collect(),
                data: ModelData::new(256),
            });
            let sends: [(u32, &[(&[u8], &[u8])]); 2] =
                [(1, &[(b"a", &[1; 40]), (b"b", &[2; 90])]), (2, &[(b"c", &[3; 30])])];
            let producers: Vec<_> = sends
                .iter()
                .map(|&(src, frames)| {
                    let q = q.clone();
                    loom::thread::spawn(move || {
                        for &(h, p) in frames {
                            while !push(&q, src, KIND_FRAME, h, p).unwrap() {
                                loom::thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            let mut c = QueueConsumer::new(q.clone());
            let mut seen: Vec<(u32, Vec<u8>, Vec<u8>)> = Vec::new();
            while seen.len() < 3 {
                let n = c.poll(8, |s, _, h, p| seen.push((s, h.to_vec(), p.to_vec()))).unwrap();
                if n == 0 {
                    loom::thread::yield_now();
                }
            }
            for p in producers {
                p.join().unwrap();
            }
            for (src, frames) in sends {
                let mine: Vec<_> = seen.iter().filter(|s| s.0 == src).collect();
                assert_eq!(mine.len(), frames.len());
                for (got, want) in mine.iter().zip(frames) {
                    assert_eq!((&got.1[..], &got.2[..]), (want.0, want.1));
                }
            }
        });
    }
}
