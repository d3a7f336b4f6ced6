//! A single-producer, single-consumer byte ring of cache-line-aligned
//! records, for frames between two processes through shared memory.
//!
//! The producer owns `tail`, the consumer owns `head`; each lives on its own
//! pair of cache lines. A record starts on a 64-byte boundary:
//!
//! ```text
//! 0      4        6      8            12        16
//! | size | hdr len | kind | payload len | reserved | header … | payload … | pad to 64 |
//! ```
//!
//! Sending is one copy of header and payload into the ring followed by one
//! release store of `tail`; receiving hands the consumer slices that point
//! into the ring (no copy), and one release store of `head` per batch gives
//! the space back. A record that would cross the end of the ring is preceded
//! by a padding record that covers the rest, so every record is contiguous.
//!
//! The memory-ordering protocol is checked with loom (`cfg(loom)`; see the
//! tests at the bottom and `ci/loom.sh`).

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Records start on this boundary: one cache line.
pub const ALIGN: usize = 64;
/// Bytes of a record's own header.
pub const RECORD_HEADER: usize = 16;

const KIND_FRAME: u16 = 1;
const KIND_PAD: u16 = 2;

/// One value alone on a pair of cache lines (adjacent-line prefetch makes
/// 64 bytes too little to avoid false sharing).
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct Line<T>(pub T);

/// The control block of a ring, in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RingCtl {
    tail: Line<AtomicU64>,
    head: Line<AtomicU64>,
}

/// The size a record of this header and payload takes in a ring.
pub fn record_size(header: usize, payload: usize) -> usize {
    (RECORD_HEADER + header + payload).div_ceil(ALIGN) * ALIGN
}

/// A ring's data area: shared memory ([`Data`]) or, under loom, tracked
/// cells.
pub(crate) trait Bytes {
    fn len(&self) -> usize;
    fn write(&self, at: usize, bytes: &[u8]);
    fn read<R>(&self, at: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R;
}

pub(crate) use data::Data;
#[cfg(loom)]
pub(crate) use model::ModelData;

mod data {
    use std::ptr::NonNull;

    /// The data area of a ring in a mapping that outlives it (the endpoint
    /// keeps the mapping alive as long as its rings).
    #[derive(Debug)]
    pub(crate) struct Data {
        ptr: NonNull<u8>,
        len: usize,
    }

    // SAFETY: a ring's data area is shared memory handed to exactly one
    // producer and one consumer; the ring protocol (tail/head with
    // release/acquire) orders their accesses, whichever thread holds them.
    unsafe impl Send for Data {}

    impl Data {
        /// # Safety
        /// `ptr` must point to `len` bytes that stay mapped and writable for
        /// the life of the value, shared only with the ring's other side.
        pub(crate) unsafe fn new(ptr: NonNull<u8>, len: usize) -> Data {
            Data { ptr, len }
        }
    }

    impl super::Bytes for Data {
        fn len(&self) -> usize {
            self.len
        }

        fn write(&self, at: usize, bytes: &[u8]) {
            assert!(at + bytes.len() <= self.len, "ring write out of bounds");
            // SAFETY: in bounds (checked); the ring protocol gives the
            // producer exclusive use of this free space until it publishes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.ptr.as_ptr().add(at),
                    bytes.len(),
                )
            }
        }

        fn read<R>(&self, at: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
            assert!(at + len <= self.len, "ring read out of bounds");
            // SAFETY: in bounds (checked); these bytes were published by the
            // producer (acquire of tail) and are not reused until the
            // consumer releases them with a later store of head, after `f`.
            f(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), len) })
        }
    }
}

#[cfg(loom)]
mod model {
    use loom::cell::UnsafeCell;
    use std::sync::Arc;

    /// Loom's model of the data area: every byte a tracked cell, so that an
    /// access not ordered by the protocol is reported as a race.
    #[derive(Debug, Clone)]
    pub(crate) struct ModelData {
        cells: Arc<Vec<UnsafeCell<u8>>>,
    }

    impl ModelData {
        pub(crate) fn new(len: usize) -> ModelData {
            ModelData { cells: Arc::new((0..len).map(|_| UnsafeCell::new(0)).collect()) }
        }
    }

    impl super::Bytes for ModelData {
        fn len(&self) -> usize {
            self.cells.len()
        }

        fn write(&self, at: usize, bytes: &[u8]) {
            for (i, &b) in bytes.iter().enumerate() {
                // SAFETY: loom checks the exclusivity this relies on.
                self.cells[at + i].with_mut(|p| unsafe { *p = b });
            }
        }

        fn read<R>(&self, at: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
            // SAFETY: loom checks the ordering this relies on.
            let copy: Vec<u8> =
                (0..len).map(|i| self.cells[at + i].with(|p| unsafe { *p })).collect();
            f(&copy)
        }
    }
}

/// Access to a ring's control block, which outlives both sides.
pub(crate) trait CtlRef {
    fn ctl(&self) -> &RingCtl;
}

/// The sending side.
#[derive(Debug)]
pub(crate) struct Producer<C, D = Data> {
    ctl: C,
    data: D,
    tail: u64,
    cached_head: u64,
}

/// The receiving side.
#[derive(Debug)]
pub(crate) struct Consumer<C, D = Data> {
    ctl: C,
    data: D,
    head: u64,
    cached_tail: u64,
    /// Closed after its producer wrote what cannot be true.
    closed: bool,
}

fn put_u32(data: &impl Bytes, at: usize, v: u32) {
    data.write(at, &v.to_le_bytes());
}

impl<C: CtlRef, D: Bytes> Producer<C, D> {
    /// The producer of a ring whose control block starts zeroed.
    pub(crate) fn new(ctl: C, data: D) -> Self {
        assert!(data.len() % ALIGN == 0 && data.len() >= 2 * ALIGN);
        Producer { ctl, data, tail: 0, cached_head: 0 }
    }

    /// The largest frame (header plus payload) that fits.
    #[cfg(test)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn max_frame(&self) -> usize {
        self.data.len() / 2 - RECORD_HEADER
    }

    /// Appends one frame; `Ok(false)` when the ring has no room now, and
    /// an error when the consumer's `head` cannot be true (it is written by
    /// the peer, so it is checked like any byte from it).
    pub(crate) fn try_push(&mut self, header: &[u8], payload: &[u8]) -> Result<bool, Corrupt> {
        let cap = self.data.len();
        let size = record_size(header.len(), payload.len());
        debug_assert!(size <= cap / 2, "frame exceeds the ring's limit");
        let at = (self.tail % cap as u64) as usize;
        let to_end = cap - at;
        let needed = if size <= to_end { size } else { to_end + size };
        if self.tail + needed as u64 - self.cached_head > cap as u64 {
            let head = self.ctl.ctl().head.0.load(Ordering::Acquire);
            if head > self.tail || head < self.cached_head {
                return Err(Corrupt::from(format!(
                    "ring head moved to {head}, outside {}..={}",
                    self.cached_head, self.tail
                )));
            }
            self.cached_head = head;
            if self.tail + needed as u64 - self.cached_head > cap as u64 {
                return Ok(false);
            }
        }
        let mut at = at;
        if size > to_end {
            // Cover the rest of the ring with padding; start at offset 0.
            put_u32(&self.data, at, to_end as u32);
            self.data.write(at + 4, &[0, 0]);
            self.data.write(at + 6, &KIND_PAD.to_le_bytes());
            self.tail += to_end as u64;
            at = 0;
        }
        put_u32(&self.data, at, size as u32);
        self.data.write(at + 4, &(header.len() as u16).to_le_bytes());
        self.data.write(at + 6, &KIND_FRAME.to_le_bytes());
        put_u32(&self.data, at + 8, payload.len() as u32);
        self.data.write(at + RECORD_HEADER, header);
        self.data.write(at + RECORD_HEADER + header.len(), payload);
        self.tail += size as u64;
        self.ctl.ctl().tail.0.store(self.tail, Ordering::Release);
        Ok(true)
    }
}

impl<C: CtlRef, D: Bytes> Consumer<C, D> {
    /// The consumer of a ring whose control block starts zeroed.
    pub(crate) fn new(ctl: C, data: D) -> Self {
        Consumer { ctl, data, head: 0, cached_tail: 0, closed: false }
    }

    /// Reads nothing more from this ring (its producer broke it).
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// Whether a frame is waiting (one acquire load).
    pub(crate) fn has_data(&self) -> bool {
        !self.closed && self.ctl.ctl().tail.0.load(Ordering::Acquire) != self.head
    }

    /// Hands up to `max` waiting frames to `sink` as (header, payload)
    /// slices into the ring, then gives their space back. Returns how many,
    /// or an error (after the frames before it) when the producer's `tail`
    /// or a record cannot be true: the peer wrote them, so every field is
    /// checked before it is used, and a bad one ends the ring.
    pub(crate) fn poll(
        &mut self,
        max: usize,
        mut sink: impl FnMut(&[u8], &[u8]),
    ) -> Result<usize, Corrupt> {
        let cap = self.data.len();
        let mut frames = 0;
        let mut outcome = Ok(());
        while frames < max {
            if self.head == self.cached_tail {
                // The common case of a poll, an empty ring, is one load and
                // one compare; a tail that moved is checked before use
                // (going back wraps to a huge distance).
                let tail = self.ctl.ctl().tail.0.load(Ordering::Acquire);
                if tail == self.head || self.closed {
                    break;
                }
                if tail.wrapping_sub(self.head) > cap as u64 {
                    outcome = Err(Corrupt::from(format!(
                        "ring tail moved to {tail}, outside {}..={}",
                        self.head,
                        self.head + cap as u64
                    )));
                    break;
                }
                self.cached_tail = tail;
            }
            let at = (self.head % cap as u64) as usize;
            let record = self.data.read(at, RECORD_HEADER, |r| {
                (
                    u32::from_le_bytes(r[0..4].try_into().expect("4 bytes")) as usize,
                    u16::from_le_bytes(r[4..6].try_into().expect("2 bytes")) as usize,
                    u16::from_le_bytes(r[6..8].try_into().expect("2 bytes")),
                    u32::from_le_bytes(r[8..12].try_into().expect("4 bytes")) as usize,
                )
            });
            let published = (self.cached_tail - self.head) as usize;
            let (size, header_len, kind, payload_len) =
                match check_record(record, at, cap, published) {
                    Ok(record) => record,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                };
            if kind == KIND_FRAME {
                self.data.read(at + RECORD_HEADER, header_len + payload_len, |bytes| {
                    let (header, payload) = bytes.split_at(header_len);
                    sink(header, payload);
                });
                frames += 1;
            }
            self.head += size as u64;
        }
        if frames > 0 {
            self.ctl.ctl().head.0.store(self.head, Ordering::Release);
        }
        outcome.map(|()| frames)
    }
}

/// A ring whose peer wrote something that cannot be true. (Boxed, so that a
/// result carrying it stays two words on the path of every frame.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corrupt(pub Box<str>);

impl From<String> for Corrupt {
    #[cold]
    fn from(why: String) -> Corrupt {
        Corrupt(why.into_boxed_str())
    }
}

/// Checks a record read at offset `at` of a ring of `cap` bytes, of which
/// `published` from `at` on are the producer's: its size is a positive
/// multiple of the alignment within what was published and within the ring
/// (a record never wraps), its kind is known, and a frame's header and
/// payload fit inside it. Returns the record's fields. The checks of a good
/// frame are a few compares; explaining a bad one is out of line.
#[inline]
fn check_record(
    record: (usize, usize, u16, usize),
    at: usize,
    cap: usize,
    published: usize,
) -> Result<(usize, usize, u16, usize), Corrupt> {
    let (size, header_len, kind, payload_len) = record;
    let fits = size.wrapping_sub(1) < published.min(cap - at) && size % ALIGN == 0;
    let good = match kind {
        KIND_FRAME => RECORD_HEADER + header_len + payload_len <= size,
        KIND_PAD => at + size == cap,
        _ => false,
    };
    if fits && good {
        return Ok(if kind == KIND_PAD { (size, 0, kind, 0) } else { record });
    }
    Err(explain_record(record, at, cap, published))
}

#[cold]
#[inline(never)]
fn explain_record(
    (size, header_len, kind, payload_len): (usize, usize, u16, usize),
    at: usize,
    cap: usize,
    published: usize,
) -> Corrupt {
    let why = if size == 0 || size % ALIGN != 0 {
        "a record size that is not a positive multiple of the line size"
    } else if size > published || size > cap - at {
        "a record beyond what was published"
    } else if kind == KIND_PAD {
        "padding that does not end the ring"
    } else if kind == KIND_FRAME && RECORD_HEADER + header_len + payload_len > size {
        "a frame longer than its record"
    } else {
        "an unknown record kind"
    };
    Corrupt::from(format!("{why} (record of {size} bytes at {at})"))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::ptr::NonNull;
    use std::sync::Arc;

    struct Owned(Arc<RingCtl>);
    impl CtlRef for Owned {
        fn ctl(&self) -> &RingCtl {
            &self.0
        }
    }

    /// A ring over heap memory, both sides in one thread.
    fn ring(bytes: usize) -> (Producer<Owned>, Consumer<Owned>, Vec<u64>) {
        let ctl = Arc::new(RingCtl::default());
        let mut backing = vec![0u64; bytes / 8];
        let ptr = NonNull::new(backing.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `backing` outlives the rings in every test below (it is
        // returned alongside them and dropped last).
        let (a, b) = unsafe { (Data::new(ptr, bytes), Data::new(ptr, bytes)) };
        (Producer::new(Owned(ctl.clone()), a), Consumer::new(Owned(ctl), b), backing)
    }

    #[test]
    fn frames_round_trip_with_wrap_around_and_back_pressure() {
        let (mut p, mut c, _mem) = ring(1024);
        assert_eq!(p.max_frame(), 512 - RECORD_HEADER);
        let mut expected = std::collections::VecDeque::new();
        let mut got = 0;
        for i in 0..500usize {
            let payload: Vec<u8> = (0..(i * 37) % 300).map(|j| (i + j) as u8).collect();
            let header = [i as u8; 24];
            while !p.try_push(&header, &payload).unwrap() {
                // Full: drain one frame and retry.
                let n = c.poll(1, |h, pl| {
                    let (eh, ep): (Vec<u8>, Vec<u8>) = expected.pop_front().unwrap();
                    assert_eq!((h, pl), (&eh[..], &ep[..]));
                });
                assert_eq!(n, Ok(1), "ring full but nothing to drain");
                got += 1;
            }
            expected.push_back((header.to_vec(), payload));
        }
        got += c
            .poll(usize::MAX, |h, pl| {
                let (eh, ep) = expected.pop_front().unwrap();
                assert_eq!((h, pl), (&eh[..], &ep[..]));
            })
            .unwrap();
        assert_eq!(got, 500);
        assert!(!c.has_data());
    }

    /// What a hostile producer can write, each caught before it is used:
    /// a zero size (which looped for ever), a size off the line size (which
    /// panicked), a size past what was published or past the ring's end, an
    /// unknown kind, a frame longer than its record, a tail that runs ahead
    /// of the ring or goes back.
    #[test]
    fn a_producer_that_writes_nonsense_is_caught() {
        type Poke = fn(&Data, &RingCtl);
        let cases: [(&str, Poke); 8] = [
            ("positive multiple", |d, _| d.write(0, &0u32.to_le_bytes())),
            ("positive multiple", |d, _| d.write(0, &65u32.to_le_bytes())),
            ("beyond what was published", |d, _| d.write(0, &128u32.to_le_bytes())),
            ("beyond what was published", |d, c| {
                d.write(0, &2048u32.to_le_bytes());
                c.tail.0.store(1024, Ordering::Release);
            }),
            ("unknown record kind", |d, _| d.write(6, &9u16.to_le_bytes())),
            ("longer than its record", |d, _| d.write(8, &100u32.to_le_bytes())),
            ("tail moved", |_, c| c.tail.0.store(4096, Ordering::Release)),
            ("does not end the ring", |d, _| d.write(6, &KIND_PAD.to_le_bytes())),
        ];
        for (why, poke) in cases {
            let (mut p, mut c, _mem) = ring(1024);
            assert!(p.try_push(&[1; 8], &[2; 8]).unwrap());
            poke(&c.data, c.ctl.ctl());
            let mut seen = 0;
            let err = c.poll(usize::MAX, |_, _| seen += 1).unwrap_err();
            assert!(err.0.contains(why), "{why}: {}", err.0);
            assert_eq!(seen, 0);
        }
        // A tail that goes back, after frames were taken.
        let (mut p, mut c, _mem) = ring(1024);
        assert!(p.try_push(&[1; 8], &[2; 8]).unwrap());
        assert_eq!(c.poll(usize::MAX, |_, _| ()), Ok(1));
        c.ctl.ctl().tail.0.store(0, Ordering::Release);
        assert!(c.poll(usize::MAX, |_, _| ()).unwrap_err().0.contains("tail moved"));
        // A consumer head that runs ahead of the producer's tail.
        let (mut p, c, _mem) = ring(1024);
        c.ctl.ctl().head.0.store(1 << 40, Ordering::Release);
        for _ in 0..16 {
            match p.try_push(&[1; 8], &[2; 400]) {
                Ok(true) => continue,
                Ok(false) => panic!("a hostile head read as a full ring"),
                Err(e) => {
                    assert!(e.0.contains("head moved"), "{}", e.0);
                    return;
                }
            }
        }
        panic!("a hostile head went unnoticed");
    }

    /// Random writes over a ring's records and indices, as a hostile
    /// producer could make them: the reader hands up only frames inside the
    /// ring, ends, and reports the ring corrupt or not; it never panics or
    /// loops.
    #[test]
    fn random_rings_never_crash_the_reader() {
        use crate::fuzz::{self, Rng};

        let mut rng = Rng::new(fuzz::seed());
        let (mut clean, mut corrupt) = (0, 0);
        for _ in 0..fuzz::cases(10_000) {
            let (mut p, mut c, _mem) = ring(1024);
            for _ in 0..rng.below(6) {
                let header = rng.bytes_below(64);
                let payload = rng.bytes_below(400);
                let _ = p.try_push(&header, &payload);
            }
            for _ in 0..rng.below(4) {
                let at = rng.below(1024 - 4) as usize;
                let value = match rng.below(3) {
                    0 => rng.next_u64() as u32,
                    1 => 64 * rng.below(20) as u32,
                    _ => rng.below(4) as u32,
                };
                c.data.write(at & !3, &value.to_le_bytes());
            }
            if rng.below(4) == 0 {
                c.ctl.ctl().tail.0.store(rng.below(4096), Ordering::Release);
            }
            for _ in 0..2 {
                match c.poll(usize::MAX, |h, pl| assert!(h.len() + pl.len() <= 1024)) {
                    Ok(_) => clean += 1,
                    Err(_) => corrupt += 1,
                }
            }
        }
        assert!(clean > 0 && corrupt > 0, "{clean} clean polls, {corrupt} corrupt");
    }

    #[test]
    fn records_are_cache_line_multiples() {
        assert_eq!(record_size(0, 0), 64);
        assert_eq!(record_size(24, 8), 64);
        assert_eq!(record_size(24, 25), 128);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    struct Shared(Arc<RingCtl>);
    impl CtlRef for Shared {
        fn ctl(&self) -> &RingCtl {
            &self.0
        }
    }

    /// Three frames of different sizes (records of 64, 128 and 128 bytes)
    /// through a 256-byte ring: the third must wait for space and wrap: the consumer sees each exactly once, intact and in order,
    /// in every interleaving loom explores, and no byte is read while it may
    /// be written.
    #[test]
    fn ring_protocol_is_race_free() {
        loom::model(|| {
            let ctl =
                Arc::new(RingCtl { tail: Line(AtomicU64::new(0)), head: Line(AtomicU64::new(0)) });
            let data = ModelData::new(256);
            let mut producer = Producer::new(Shared(ctl.clone()), data.clone());
            let mut consumer = Consumer::new(Shared(ctl), data);
            let frames: [(&[u8], &[u8]); 3] =
                [(b"a", &[1; 40]), (b"bb", &[2; 90]), (b"c", &[3; 50])];
            let sender = loom::thread::spawn(move || {
                for (h, p) in frames {
                    while !producer.try_push(h, p).unwrap() {
                        loom::thread::yield_now();
                    }
                }
            });
            let mut seen = Vec::new();
            while seen.len() < 3 {
                let n = consumer.poll(8, |h, p| seen.push((h.to_vec(), p.to_vec()))).unwrap();
                if n == 0 {
                    loom::thread::yield_now();
                }
            }
            sender.join().unwrap();
            for (i, (h, p)) in seen.iter().enumerate() {
                assert_eq!((&h[..], &p[..]), frames[i]);
            }
        });
    }
}
