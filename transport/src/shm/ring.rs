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
    pub(crate) fn max_frame(&self) -> usize {
        self.data.len() / 2 - RECORD_HEADER
    }

    /// Appends one frame; `false` when the ring has no room now.
    pub(crate) fn try_push(&mut self, header: &[u8], payload: &[u8]) -> bool {
        let cap = self.data.len();
        let size = record_size(header.len(), payload.len());
        debug_assert!(size <= cap / 2, "frame exceeds the ring's limit");
        let at = (self.tail % cap as u64) as usize;
        let to_end = cap - at;
        let needed = if size <= to_end { size } else { to_end + size };
        if self.tail + needed as u64 - self.cached_head > cap as u64 {
            self.cached_head = self.ctl.ctl().head.0.load(Ordering::Acquire);
            if self.tail + needed as u64 - self.cached_head > cap as u64 {
                return false;
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
        true
    }
}

impl<C: CtlRef, D: Bytes> Consumer<C, D> {
    /// The consumer of a ring whose control block starts zeroed.
    pub(crate) fn new(ctl: C, data: D) -> Self {
        Consumer { ctl, data, head: 0, cached_tail: 0 }
    }

    /// Whether a frame is waiting (one acquire load).
    pub(crate) fn has_data(&self) -> bool {
        self.ctl.ctl().tail.0.load(Ordering::Acquire) != self.head
    }

    /// Hands up to `max` waiting frames to `sink` as (header, payload)
    /// slices into the ring, then gives their space back. Returns how many.
    pub(crate) fn poll(&mut self, max: usize, mut sink: impl FnMut(&[u8], &[u8])) -> usize {
        let cap = self.data.len();
        let mut frames = 0;
        while frames < max {
            if self.head == self.cached_tail {
                self.cached_tail = self.ctl.ctl().tail.0.load(Ordering::Acquire);
                if self.head == self.cached_tail {
                    break;
                }
            }
            let at = (self.head % cap as u64) as usize;
            let (size, header_len, kind, payload_len) = self.data.read(at, RECORD_HEADER, |r| {
                (
                    u32::from_le_bytes(r[0..4].try_into().expect("4 bytes")) as usize,
                    u16::from_le_bytes(r[4..6].try_into().expect("2 bytes")) as usize,
                    u16::from_le_bytes(r[6..8].try_into().expect("2 bytes")),
                    u32::from_le_bytes(r[8..12].try_into().expect("4 bytes")) as usize,
                )
            });
            if kind == KIND_FRAME {
                self.data.read(at + RECORD_HEADER, header_len + payload_len, |bytes| {
                    let (header, payload) = bytes.split_at(header_len);
                    sink(header, payload);
                });
                frames += 1;
            }
            self.head += size as u64;
        }
        if frames == 0 {
            return 0;
        }
        self.ctl.ctl().head.0.store(self.head, Ordering::Release);
        frames
    }
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
            while !p.try_push(&header, &payload) {
                // Full: drain one frame and retry.
                let n = c.poll(1, |h, pl| {
                    let (eh, ep): (Vec<u8>, Vec<u8>) = expected.pop_front().unwrap();
                    assert_eq!((h, pl), (&eh[..], &ep[..]));
                });
                assert_eq!(n, 1, "ring full but nothing to drain");
                got += 1;
            }
            expected.push_back((header.to_vec(), payload));
        }
        got += c.poll(usize::MAX, |h, pl| {
            let (eh, ep) = expected.pop_front().unwrap();
            assert_eq!((h, pl), (&eh[..], &ep[..]));
        });
        assert_eq!(got, 500);
        assert!(!c.has_data());
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
                    while !producer.try_push(h, p) {
                        loom::thread::yield_now();
                    }
                }
            });
            let mut seen = Vec::new();
            while seen.len() < 3 {
                let n = consumer.poll(8, |h, p| seen.push((h.to_vec(), p.to_vec())));
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
