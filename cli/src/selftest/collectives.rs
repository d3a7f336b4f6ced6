//! The collective cases of the self-test suite.
//!
//! Each case runs on four communicators built from the one it is given —
//! itself, a duplicate, a rank-reversed split and a split into halves — and
//! checks every operation against closed forms (sums of `i·n + rank`) or,
//! for operations without one, against a fold over the ranks in rank order
//! computed locally from the same inputs. Values are chosen so that float
//! results are exact, and so that a non-commutative operation (2×2 matrix
//! products) shows any change of order.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

use bytemuck::Pod;

use hpcomm::op::{
    BitAnd, BitOr, BitXor, Integer, LocF64, LogicalAnd, LogicalOr, Max, MaxLoc, Min, MinLoc,
    Number, Operation, Prod, Sum, UserOp,
};
use hpcomm::{
    wait_all, Collectives, Communicator, Error, Neighborhood, NonBlocking, PersistentCollectives,
};

/// Runs `f` on the communicator, a duplicate, a rank-reversed split and a
/// split into a lower and an upper half.
fn on_variants(comm: &Communicator, f: impl Fn(&Communicator)) {
    let (n, r) = (comm.size(), comm.rank());
    f(comm);
    f(&comm.dup().unwrap());
    let reversed = comm.split(Some(0), (n - r) as i32).unwrap().expect("one colour");
    assert_eq!(reversed.rank(), n - 1 - r);
    f(&reversed);
    let half = comm.split(Some((r >= n / 2) as u32), r as i32).unwrap().expect("one colour");
    assert_eq!(half.size(), if r >= n / 2 { n - n / 2 } else { n / 2 });
    f(&half);
}

/// Element types under test.
trait Elem: Pod + PartialEq + PartialOrd + Debug {
    /// `v`, wrapped into the type as integer arithmetic wraps.
    fn of(v: u64) -> Self;
}

macro_rules! elems {
    ($($t:ty),*) => {$(impl Elem for $t { fn of(v: u64) -> Self { v as $t } })*};
}
elems!(i8, i16, i32, i64, u8, u16, u32, u64, isize, usize, f32, f64);

/// Calls `$f::<T>($args)` for every numeric element type.
macro_rules! for_numbers {
    ($f:ident($($a:expr),*)) => {{
        $f::<i8>($($a),*); $f::<i16>($($a),*); $f::<i32>($($a),*); $f::<i64>($($a),*);
        $f::<u8>($($a),*); $f::<u16>($($a),*); $f::<u32>($($a),*); $f::<u64>($($a),*);
        $f::<isize>($($a),*); $f::<usize>($($a),*); $f::<f32>($($a),*); $f::<f64>($($a),*);
    }};
}
macro_rules! for_integers {
    ($f:ident($($a:expr),*)) => {{
        $f::<i8>($($a),*); $f::<i16>($($a),*); $f::<i32>($($a),*); $f::<i64>($($a),*);
        $f::<u8>($($a),*); $f::<u16>($($a),*); $f::<u32>($($a),*); $f::<u64>($($a),*);
        $f::<isize>($($a),*); $f::<usize>($($a),*);
    }};
}

/// Rank `r`'s element `i`: `i·n + r`.
fn linear<T: Elem>(n: usize, r: usize, len: usize) -> Vec<T> {
    (0..len).map(|i| T::of((i * n + r) as u64)).collect()
}

/// Σ_r (i·n + r) = n²·i + n(n−1)/2.
fn linear_sum<T: Elem>(n: usize, len: usize) -> Vec<T> {
    (0..len).map(|i| T::of((n * n * i + n * (n - 1) / 2) as u64)).collect()
}

/// Small factors, so that float products stay exact.
fn factors<T: Elem>(r: usize, len: usize) -> Vec<T> {
    (0..len).map(|i| T::of(1 + ((i + r) % 3) as u64)).collect()
}

/// Mixed bit patterns.
fn bits<T: Elem>(r: usize, len: usize) -> Vec<T> {
    (0..len)
        .map(|i| T::of((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (r % 7 + 1)))
        .collect()
}

/// The reference: contributions folded in rank order.
fn fold<T: Pod>(n: usize, input: impl Fn(usize) -> Vec<T>, op: &impl Operation<T>) -> Vec<T> {
    let mut acc = input(0);
    for r in 1..n {
        op.apply(&mut acc, &input(r), true);
    }
    acc
}

/// A 2×2 integer matrix product: associative, not commutative.
fn matmul(a: &[i64; 4], b: &[i64; 4]) -> [i64; 4] {
    [
        a[0].wrapping_mul(b[0]).wrapping_add(a[1].wrapping_mul(b[2])),
        a[0].wrapping_mul(b[1]).wrapping_add(a[1].wrapping_mul(b[3])),
        a[2].wrapping_mul(b[0]).wrapping_add(a[3].wrapping_mul(b[2])),
        a[2].wrapping_mul(b[1]).wrapping_add(a[3].wrapping_mul(b[3])),
    ]
}

/// Rank `r`'s matrices, which do not commute with each other's.
fn matrices(r: usize, len: usize) -> Vec<[i64; 4]> {
    (0..len).map(|i| [r as i64 + 1, i as i64 % 5 + 1, 1, 0]).collect()
}

type Matmul = fn(&[i64; 4], &[i64; 4]) -> [i64; 4];

fn ordered() -> UserOp<Matmul> {
    UserOp::non_commutative(matmul as Matmul)
}

/// Lengths that reach every algorithm the selection picks.
const LENGTHS: [usize; 5] = [0, 1, 3, 300, 20_000];

fn all_reduce_numbers<T: Elem + Number>(c: &Communicator, len: usize) {
    let (n, r) = (c.size(), c.rank());
    let mut got = vec![T::of(0); len];
    c.all_reduce(&linear::<T>(n, r, len), &mut got, Sum).unwrap();
    assert_eq!(got, linear_sum::<T>(n, len), "sum of {len}");
    c.all_reduce(&factors::<T>(r, len), &mut got, Prod).unwrap();
    assert_eq!(got, fold(n, |r| factors(r, len), &Prod), "product");
    let mut buf = bits::<T>(r, len);
    c.all_reduce_in_place(&mut buf, Min).unwrap();
    assert_eq!(buf, fold(n, |r| bits(r, len), &Min), "min");
    c.all_reduce(&bits::<T>(r, len), &mut got, Max).unwrap();
    assert_eq!(got, fold(n, |r| bits(r, len), &Max), "max");
}

fn all_reduce_integers<T: Elem + Integer>(c: &Communicator, len: usize) {
    let r = c.rank();
    let n = c.size();
    let mut got = vec![T::of(0); len];
    for (name, op) in [("and", 0), ("or", 1), ("xor", 2)] {
        let input = |r| bits::<T>(r, len);
        match op {
            0 => c.all_reduce(&input(r), &mut got, BitAnd).unwrap(),
            1 => c.all_reduce(&input(r), &mut got, BitOr).unwrap(),
            _ => c.all_reduce(&input(r), &mut got, BitXor).unwrap(),
        }
        let want = match op {
            0 => fold(n, input, &BitAnd),
            1 => fold(n, input, &BitOr),
            _ => fold(n, input, &BitXor),
        };
        assert_eq!(got, want, "bitwise {name}");
    }
    // Element i is true on rank r when bit r of i is set.
    let truth = |r: usize| (0..len).map(|i| T::of(((i >> (r % 8)) & 1) as u64 * 3)).collect();
    // With one rank nothing is combined: the input comes back as it was.
    let normal = |t: bool, i: usize| T::of(if n == 1 { ((i & 1) * 3) as u64 } else { t as u64 });
    let mut buf: Vec<T> = truth(r);
    c.all_reduce_in_place(&mut buf, LogicalAnd).unwrap();
    let all = |i: usize| (0..n).all(|r| (i >> (r % 8)) & 1 == 1);
    assert_eq!(buf, (0..len).map(|i| normal(all(i), i)).collect::<Vec<_>>(), "land");
    let mut buf: Vec<T> = truth(r);
    c.all_reduce_in_place(&mut buf, LogicalOr).unwrap();
    let any = |i: usize| (0..n).any(|r| (i >> (r % 8)) & 1 == 1);
    assert_eq!(buf, (0..len).map(|i| normal(any(i), i)).collect::<Vec<_>>(), "lor");
}

/// Each rank's copy of a float all-reduce, as bits, checked equal at rank
/// 0 (over point-to-point, not the collectives under test).
fn identical_everywhere(c: &Communicator, result: &[f64]) {
    let mine: Vec<u64> = result.iter().map(|x| x.to_bits()).collect();
    if c.rank() == 0 {
        for from in 1..c.size() {
            let mut theirs = vec![0u64; mine.len()];
            c.recv(&mut theirs, from, 77).unwrap();
            assert_eq!(theirs, mine, "rank {from}'s all-reduce result differs in its bits");
        }
    } else {
        c.send(&mine, 0, 77).unwrap();
    }
}

/// Every operation and element type; bitwise-identical float results;
/// min-loc, max-loc and user operations.
pub(super) fn all_reduce(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        for len in LENGTHS {
            for_numbers!(all_reduce_numbers(c, len));
            for_integers!(all_reduce_integers(c, len));
            // Inexact sums with mixed magnitudes: same bits on every rank.
            let messy: Vec<f64> = (0..len)
                .map(|i| (r as f64 + 0.1) * 10f64.powi(((i * 7 + r * 13) % 31) as i32 - 15))
                .collect();
            let mut got = vec![0.0; len];
            c.all_reduce(&messy, &mut got, Sum).unwrap();
            identical_everywhere(c, &got);
            // Non-commutative: the product in rank order.
            let mut m = matrices(r, len);
            c.all_reduce_in_place(&mut m, ordered()).unwrap();
            assert_eq!(m, fold(n, |r| matrices(r, len), &ordered()), "matrix product");
            // Locations: ties go to the lowest rank.
            let locs = |r: usize| -> Vec<LocF64> {
                (0..len).map(|i| LocF64::new(((i * 7 + r * 3) % 5) as f64, r as i64)).collect()
            };
            let mut got = vec![LocF64::default(); len];
            c.all_reduce(&locs(r), &mut got, MinLoc).unwrap();
            for (i, g) in got.iter().enumerate() {
                let v = (0..n).map(|r| (i * 7 + r * 3) % 5).min().unwrap();
                let at = (0..n).find(|r| (i * 7 + r * 3) % 5 == v).unwrap();
                assert_eq!(*g, LocF64::new(v as f64, at as i64), "minloc {i}");
            }
            c.all_reduce(&locs(r), &mut got, MaxLoc).unwrap();
            for (i, g) in got.iter().enumerate() {
                let v = (0..n).map(|r| (i * 7 + r * 3) % 5).max().unwrap();
                let at = (0..n).find(|r| (i * 7 + r * 3) % 5 == v).unwrap();
                assert_eq!(*g, LocF64::new(v as f64, at as i64), "maxloc {i}");
            }
            // A user closure, commutative and associative: a + b + 1, so
            // the total is Σ + (n − 1).
            let plus_one = UserOp::commutative(|a: &u32, b: &u32| a.wrapping_add(*b) + 1);
            let mut got = vec![0u32; len];
            c.all_reduce(&linear::<u32>(n, r, len), &mut got, plus_one).unwrap();
            let want: Vec<u32> =
                linear_sum::<u32>(n, len).iter().map(|s| s + n as u32 - 1).collect();
            assert_eq!(got, want, "user operation");
        }
    });
}

/// The reproducible sum equals the correctly rounded sum of all
/// contributions, on every communicator shape.
pub(super) fn reproducible_sum(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        let value = |r: usize, i: usize| {
            let sign = if (i + r) % 3 == 0 { -1.0 } else { 1.0 };
            sign * (1.0 + r as f64 / 7.0) * 10f64.powi(((i * 11 + r * 5) % 41) as i32 - 20)
        };
        let len = 200;
        let mine: Vec<f64> = (0..len).map(|i| value(r, i)).collect();
        let mut got = vec![0.0; len];
        c.all_reduce_sum_reproducible(&mine, &mut got).unwrap();
        for (i, g) in got.iter().enumerate() {
            let want = hpcomm::repro::exact_sum((0..n).map(|r| value(r, i)));
            assert_eq!(g.to_bits(), want.to_bits(), "element {i}");
        }
        identical_everywhere(c, &got);
    });
}

fn reduce_numbers<T: Elem + Number>(c: &Communicator, len: usize, root: usize) {
    let (n, r) = (c.size(), c.rank());
    let sentinel = vec![T::of(99); len];
    let mut got = sentinel.clone();
    c.reduce(&linear::<T>(n, r, len), &mut got, Sum, root).unwrap();
    if r == root {
        assert_eq!(got, linear_sum::<T>(n, len), "sum at root {root}");
    } else {
        assert_eq!(got, sentinel, "reduce wrote to a non-root's buffer");
    }
    let mut buf = bits::<T>(r, len);
    c.reduce_in_place(&mut buf, Max, root).unwrap();
    if r == root {
        assert_eq!(buf, fold(n, |r| bits(r, len), &Max), "max at root {root}");
    } else {
        assert_eq!(buf, bits::<T>(r, len), "reduce_in_place changed a non-root's input");
    }
}

/// Every root, element type and operation kind; non-commutative order at
/// every root.
pub(super) fn reduce(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        for root in 0..n {
            for len in [0, 5, 3000] {
                for_numbers!(reduce_numbers(c, len, root));
                let mut got = vec![[0i64; 4]; len];
                c.reduce(&matrices(r, len), &mut got, ordered(), root).unwrap();
                if r == root {
                    assert_eq!(got, fold(n, |r| matrices(r, len), &ordered()), "root {root}");
                }
                let mut buf = bits::<u16>(r, len);
                c.reduce_in_place(&mut buf, BitXor, root).unwrap();
                if r == root {
                    assert_eq!(buf, fold(n, |r| bits(r, len), &BitXor));
                }
            }
        }
    });
}

fn pattern(root: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + root * 31 + len) as u8).collect()
}

/// 1 B to 4 MiB from every root; other element types.
pub(super) fn broadcast(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        for root in 0..n {
            for len in [0, 1, 100, 12 << 10, 64 << 10, 4 << 20] {
                let mut buf = if r == root { pattern(root, len) } else { vec![0u8; len] };
                c.broadcast(&mut buf, root).unwrap();
                assert!(buf == pattern(root, len), "{len} bytes from root {root}");
            }
            let mut f = if r == root { vec![1.5f64, -2.25, 1e300] } else { vec![0.0; 3] };
            c.broadcast(&mut f, root).unwrap();
            assert_eq!(f, [1.5, -2.25, 1e300]);
        }
    });
}

/// Entry and exit times of every rank: nobody leaves before everybody has
/// come in.
pub(super) fn barrier(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        for round in 0..3 {
            // A different rank arrives late each round.
            if r == round % n {
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
            let entered = now();
            c.barrier().unwrap();
            let left = now();
            if r == 0 {
                let mut times = vec![(entered, left)];
                for from in 1..n {
                    let mut t = [0u64; 2];
                    c.recv(&mut t, from, 78).unwrap();
                    times.push((t[0], t[1]));
                }
                let last_in = times.iter().map(|t| t.0).max().unwrap();
                let first_out = times.iter().map(|t| t.1).min().unwrap();
                assert!(first_out >= last_in, "a rank left the barrier before all entered");
            } else {
                c.send(&[entered, left], 0, 78).unwrap();
            }
        }
    });
}

/// Counts for the skewed shapes: even, one rank with everything, half the
/// ranks with nothing, and all zero.
fn count_shapes(n: usize) -> Vec<Vec<usize>> {
    vec![
        (0..n).map(|r| r % 3 + 1).collect(),
        (0..n).map(|r| if r == n - 1 { 50 } else { 0 }).collect(),
        (0..n).map(|r| if r % 2 == 0 { 0 } else { 4 + r }).collect(),
        vec![0; n],
    ]
}

/// Displacements with gaps between the blocks, in reverse rank order.
fn gapped(counts: &[usize]) -> (Vec<usize>, usize) {
    let mut displs = vec![0; counts.len()];
    let mut at = 1;
    for r in (0..counts.len()).rev() {
        displs[r] = at;
        at += counts[r] + 2;
    }
    (displs, at)
}

/// Gather and scatter, plain, in place and with counts, from every root.
pub(super) fn gather_scatter(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        let block = |r: usize, len: usize| linear::<u32>(n, r, len);
        for root in 0..n {
            for b in [0, 1, 5, 10_000] {
                let all: Vec<u32> = (0..n).flat_map(|r| block(r, b)).collect();
                let mut got = vec![7u32; if r == root { n * b } else { 0 }];
                c.gather(&block(r, b), &mut got, root).unwrap();
                if r == root {
                    assert_eq!(got, all, "gather of {b} to {root}");
                }
                let mut buf = if r == root {
                    let mut v = vec![0u32; n * b];
                    v[root * b..(root + 1) * b].copy_from_slice(&block(root, b));
                    v
                } else {
                    block(r, b)
                };
                c.gather_in_place(&mut buf, root).unwrap();
                if r == root {
                    assert_eq!(buf, all, "gather_in_place");
                }
                let mut mine = vec![0u32; b];
                c.scatter(if r == root { &all[..] } else { &[] }, &mut mine, root).unwrap();
                assert_eq!(mine, block(r, b), "scatter of {b} from {root}");
                let mut buf = if r == root { all.clone() } else { vec![0; b] };
                c.scatter_in_place(&mut buf, root).unwrap();
                if r == root {
                    assert_eq!(buf, all, "scatter_in_place changed the root's buffer");
                } else {
                    assert_eq!(buf, block(r, b), "scatter_in_place");
                }
            }
            for counts in count_shapes(n) {
                let (displs, len) = gapped(&counts);
                let mut want = vec![9u32; len];
                for q in 0..n {
                    want[displs[q]..displs[q] + counts[q]].copy_from_slice(&block(q, counts[q]));
                }
                let mut got = vec![9u32; if r == root { len } else { 0 }];
                c.gather_v(&block(r, counts[r]), &mut got, &counts, &displs, root).unwrap();
                if r == root {
                    assert_eq!(got, want, "gather_v {counts:?}");
                }
                let mut mine = vec![0u32; counts[r]];
                c.scatter_v(&want, &counts, &displs, &mut mine, root).unwrap();
                assert_eq!(mine, block(r, counts[r]), "scatter_v {counts:?}");
                let mut buf = if r == root {
                    let mut v = vec![9u32; len];
                    v[displs[root]..displs[root] + counts[root]]
                        .copy_from_slice(&block(root, counts[root]));
                    v
                } else {
                    block(r, counts[r])
                };
                c.gather_v_in_place(&mut buf, &counts, &displs, root).unwrap();
                if r == root {
                    assert_eq!(buf, want, "gather_v_in_place {counts:?}");
                }
                let mut buf = if r == root { want.clone() } else { vec![0; counts[r]] };
                c.scatter_v_in_place(&mut buf, &counts, &displs, root).unwrap();
                assert_eq!(
                    buf,
                    if r == root { want.clone() } else { block(r, counts[r]) },
                    "scatter_v_in_place {counts:?}"
                );
            }
        }
    });
}

/// All-gather, plain, in place and with counts.
pub(super) fn all_gather(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        let block = |r: usize, len: usize| linear::<i64>(n, r, len);
        for b in [0, 1, 3, 1000, 40_000] {
            let all: Vec<i64> = (0..n).flat_map(|r| block(r, b)).collect();
            let mut got = vec![0i64; n * b];
            c.all_gather(&block(r, b), &mut got).unwrap();
            assert_eq!(got, all, "all_gather of {b}");
            let mut buf = vec![0i64; n * b];
            buf[r * b..(r + 1) * b].copy_from_slice(&block(r, b));
            c.all_gather_in_place(&mut buf).unwrap();
            assert_eq!(buf, all, "all_gather_in_place of {b}");
        }
        for counts in count_shapes(n) {
            let (displs, len) = gapped(&counts);
            let mut want = vec![5i64; len];
            for q in 0..n {
                want[displs[q]..displs[q] + counts[q]].copy_from_slice(&block(q, counts[q]));
            }
            let mut got = vec![5i64; len];
            c.all_gather_v(&block(r, counts[r]), &mut got, &counts, &displs).unwrap();
            assert_eq!(got, want, "all_gather_v {counts:?}");
            let mut buf = vec![5i64; len];
            buf[displs[r]..displs[r] + counts[r]].copy_from_slice(&block(r, counts[r]));
            c.all_gather_v_in_place(&mut buf, &counts, &displs).unwrap();
            assert_eq!(buf, want, "all_gather_v_in_place {counts:?}");
        }
    });
}

/// All-to-all, plain, in place and with counts and displacements.
pub(super) fn all_to_all(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        // What rank `from` sends rank `to`: `len` elements.
        let piece = |from: usize, to: usize, len: usize| -> Vec<u32> {
            (0..len).map(|i| (from * 1000 + to * 10 + i) as u32).collect()
        };
        for b in [0, 1, 7, 300, 20_000] {
            let send: Vec<u32> = (0..n).flat_map(|to| piece(r, to, b)).collect();
            let want: Vec<u32> = (0..n).flat_map(|from| piece(from, r, b)).collect();
            let mut got = vec![0u32; n * b];
            c.all_to_all(&send, &mut got).unwrap();
            assert_eq!(got, want, "all_to_all of {b}");
            let mut buf = send.clone();
            c.all_to_all_in_place(&mut buf).unwrap();
            assert_eq!(buf, want, "all_to_all_in_place of {b}");
        }
        // Counts: rank `from` sends `count(from, to)` elements to `to`.
        for shape in 0..3 {
            let count = |from: usize, to: usize| match shape {
                0 => (from + 2 * to) % 4,
                1 => {
                    if from == n - 1 {
                        30
                    } else {
                        0
                    }
                }
                _ => {
                    if to % 2 == 0 {
                        0
                    } else {
                        from + 1
                    }
                }
            };
            let scounts: Vec<usize> = (0..n).map(|to| count(r, to)).collect();
            let rcounts: Vec<usize> = (0..n).map(|from| count(from, r)).collect();
            let (sdispls, slen) = gapped(&scounts);
            let (rdispls, rlen) = gapped(&rcounts);
            let mut send = vec![0u32; slen];
            for to in 0..n {
                send[sdispls[to]..sdispls[to] + scounts[to]].copy_from_slice(&piece(
                    r,
                    to,
                    scounts[to],
                ));
            }
            let mut want = vec![3u32; rlen];
            for from in 0..n {
                want[rdispls[from]..rdispls[from] + rcounts[from]].copy_from_slice(&piece(
                    from,
                    r,
                    rcounts[from],
                ));
            }
            let mut got = vec![3u32; rlen];
            c.all_to_all_v(&send, &scounts, &sdispls, &mut got, &rcounts, &rdispls).unwrap();
            assert_eq!(got, want, "all_to_all_v shape {shape}");
        }
        // In place: what goes to rank j has the length of what comes back
        // from it, so the counts are symmetric.
        let count = |a: usize, b: usize| (a + b) % 3 + (a * b) % 2;
        let counts: Vec<usize> = (0..n).map(|q| count(r, q)).collect();
        let (displs, len) = gapped(&counts);
        let mut buf = vec![8u32; len];
        let mut want = vec![8u32; len];
        for q in 0..n {
            let block = displs[q]..displs[q] + counts[q];
            buf[block.clone()].copy_from_slice(&piece(r, q, counts[q]));
            want[block].copy_from_slice(&piece(q, r, counts[q]));
        }
        c.all_to_all_v_in_place(&mut buf, &counts, &displs).unwrap();
        assert_eq!(buf, want, "all_to_all_v_in_place");
    });
}

/// Reduce-scatter with equal blocks and with counts, in place, with
/// commutative and non-commutative operations.
pub(super) fn reduce_scatter(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        for b in [0, 1, 4, 5000] {
            let total = linear_sum::<u64>(n, n * b);
            let mut got = vec![0u64; b];
            c.reduce_scatter_block(&linear::<u64>(n, r, n * b), &mut got, Sum).unwrap();
            assert_eq!(got, total[r * b..(r + 1) * b], "reduce_scatter_block of {b}");
            let mut buf = linear::<u64>(n, r, n * b);
            c.reduce_scatter_block_in_place(&mut buf, Sum).unwrap();
            assert_eq!(buf[..b], total[r * b..(r + 1) * b], "in place");
            let product = fold(n, |r| matrices(r, n * b), &ordered());
            let mut got = vec![[0i64; 4]; b];
            c.reduce_scatter_block(&matrices(r, n * b), &mut got, ordered()).unwrap();
            assert_eq!(got, product[r * b..(r + 1) * b], "non-commutative, {b}");
        }
        for counts in count_shapes(n) {
            let len: usize = counts.iter().sum();
            let at: usize = counts[..r].iter().sum();
            let mine = at..at + counts[r];
            let total = linear_sum::<i32>(n, len);
            let mut got = vec![0i32; counts[r]];
            c.reduce_scatter(&linear::<i32>(n, r, len), &mut got, &counts, Sum).unwrap();
            assert_eq!(got, total[mine.clone()], "reduce_scatter {counts:?}");
            let mut buf = linear::<i32>(n, r, len);
            c.reduce_scatter_in_place(&mut buf, &counts, Sum).unwrap();
            assert_eq!(buf[..counts[r]], total[mine.clone()], "in place {counts:?}");
            let product = fold(n, |r| matrices(r, len), &ordered());
            let mut buf = matrices(r, len);
            c.reduce_scatter_in_place(&mut buf, &counts, ordered()).unwrap();
            assert_eq!(buf[..counts[r]], product[mine], "non-commutative {counts:?}");
        }
    });
}

/// Inclusive and exclusive scans, in place, non-commutative.
pub(super) fn scan(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        for len in [0, 1, 6, 5000] {
            // Σ_{q ≤ r} (i·n + q) = (r+1)·i·n + r(r+1)/2.
            let prefix = |upto: usize| -> Vec<u64> {
                (0..len).map(|i| (upto * i * n + upto * (upto - 1) / 2) as u64).collect()
            };
            let mut got = vec![0u64; len];
            c.scan(&linear::<u64>(n, r, len), &mut got, Sum).unwrap();
            assert_eq!(got, prefix(r + 1), "scan");
            let mut buf = linear::<u64>(n, r, len);
            c.scan_in_place(&mut buf, Sum).unwrap();
            assert_eq!(buf, prefix(r + 1), "scan_in_place");
            let mut got = vec![42u64; len];
            c.exscan(&linear::<u64>(n, r, len), &mut got, Sum).unwrap();
            assert_eq!(got, if r == 0 { vec![42; len] } else { prefix(r) }, "exscan");
            let mut buf = linear::<u64>(n, r, len);
            c.exscan_in_place(&mut buf, Sum).unwrap();
            let want = if r == 0 { linear::<u64>(n, 0, len) } else { prefix(r) };
            assert_eq!(buf, want, "exscan_in_place");
            let mut m = matrices(r, len);
            c.scan_in_place(&mut m, ordered()).unwrap();
            assert_eq!(m, fold(r + 1, |q| matrices(q, len), &ordered()), "ordered scan");
            let mut m = matrices(r, len);
            c.exscan_in_place(&mut m, ordered()).unwrap();
            if r > 0 {
                assert_eq!(m, fold(r, |q| matrices(q, len), &ordered()), "ordered exscan");
            }
        }
    });
}

/// Bad arguments are errors before anything is sent; lengths that differ
/// between ranks are errors after the operation ran everywhere; the
/// communicator works afterwards.
pub(super) fn errors(comm: &Communicator) {
    let (n, r) = (comm.size(), comm.rank());
    let bad_root = |e: Error| matches!(e, Error::InvalidRoot { .. });
    assert!(bad_root(comm.broadcast(&mut [0u8], n).unwrap_err()));
    assert!(bad_root(comm.reduce(&[1u8], &mut [0], Sum, n + 3).unwrap_err()));
    assert!(bad_root(comm.gather(&[1u8], &mut [], usize::MAX).unwrap_err()));
    assert!(bad_root(comm.scatter_v(&[1u8], &[1], &[0], &mut [0], n).unwrap_err()));
    let bad_count = |e: Error| matches!(e, Error::InvalidCount(_));
    let counts = vec![1; n + 1];
    assert!(bad_count(comm.all_gather_v(&[1u8], &mut [0; 8], &counts, &counts).unwrap_err()));
    assert!(bad_count(comm.reduce_scatter(&[1u8], &mut [0], &counts, Sum).unwrap_err()));
    assert!(bad_count(comm.all_reduce(&[1u8, 2], &mut [0], Sum).unwrap_err()));
    assert!(bad_count(comm.all_gather(&[1u8, 2], &mut [0; 3]).unwrap_err()));
    assert!(bad_count(comm.all_to_all(&[1u8; 3], &mut [0; 4]).unwrap_err()));
    let over = vec![1; n];
    let displs: Vec<usize> = (0..n).map(|q| q + 5).collect();
    assert!(bad_count(comm.all_gather_v(&[1u8], &mut [0; 2], &over, &displs).unwrap_err()));
    let overlapping = vec![0; n];
    if n > 1 {
        let e = comm.all_gather_v(&[1u8], &mut [0; 4], &over, &overlapping).unwrap_err();
        assert!(bad_count(e));
    }

    // Lengths that disagree between ranks: every rank returns, and a rank
    // that received a message of the wrong length reports it.
    if n > 1 {
        let len = if r == 1 { 5 } else { 3 };
        let outcome = comm.broadcast(&mut vec![0u32; len], 0);
        some_rank_saw_a_mismatch(comm, &outcome);
        let len = if r == n - 1 { 2 } else { 4 };
        let outcome = comm.all_reduce(&vec![1u64; len], &mut vec![0u64; len], Sum);
        some_rank_saw_a_mismatch(comm, &outcome);
        let len = if r == 0 { 2 * n } else { n };
        let outcome = comm.all_to_all(&vec![1u8; len], &mut vec![0u8; len]);
        some_rank_saw_a_mismatch(comm, &outcome);
    }
    // Still usable.
    comm.barrier().unwrap();
    let mut total = [0u64];
    comm.all_reduce(&[1u64], &mut total, Sum).unwrap();
    assert_eq!(total, [n as u64]);
}

/// Collects, at rank 0 over point-to-point, whether any rank's outcome was
/// a mismatch, and checks that every error is one.
fn some_rank_saw_a_mismatch(comm: &Communicator, outcome: &hpcomm::Result<()>) {
    let mine = match outcome {
        Ok(()) => 0u8,
        Err(Error::CollectiveMismatch(_)) => 1,
        Err(e) => panic!("a mismatch gave another error: {e}"),
    };
    if comm.rank() == 0 {
        let mut seen = mine;
        for from in 1..comm.size() {
            let mut theirs = [0u8];
            comm.recv(&mut theirs, from, 79).unwrap();
            seen |= theirs[0];
        }
        assert_eq!(seen, 1, "no rank reported the mismatch");
    } else {
        comm.send(&[mine], 0, 79).unwrap();
    }
}

/// Non-blocking barrier, broadcast, all-reduce and all-to-all with counts,
/// several in flight at once; and progress while the rank waits for
/// something else.
pub(super) fn non_blocking(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        for len in [0, 1, 100, 20_000] {
            let root = len % n;
            let mut bcast = if r == root { pattern(root, len) } else { vec![0u8; len] };
            let mut sum = vec![0u64; len];
            let mut product = vec![[0i64; 4]; len];
            let count = |from: usize, to: usize| (from + 2 * to + len) % 5;
            let scounts: Vec<usize> = (0..n).map(|to| count(r, to)).collect();
            let rcounts: Vec<usize> = (0..n).map(|from| count(from, r)).collect();
            let (sdispls, slen) = gapped(&scounts);
            let (rdispls, rlen) = gapped(&rcounts);
            let piece = |from: usize, to: usize, k: usize| -> Vec<u32> {
                (0..k).map(|i| (from * 1000 + to * 10 + i) as u32).collect()
            };
            let mut send = vec![0u32; slen];
            for to in 0..n {
                send[sdispls[to]..sdispls[to] + scounts[to]].copy_from_slice(&piece(
                    r,
                    to,
                    scounts[to],
                ));
            }
            let mut got = vec![3u32; rlen];
            let (numbers, mats) = (linear::<u64>(n, r, len), matrices(r, len));
            c.scope(|s| {
                let mut reqs = vec![
                    s.ibarrier()?,
                    s.ibroadcast(&mut bcast, root)?,
                    s.iall_reduce(&numbers, &mut sum, Sum)?,
                    s.iall_reduce(&mats, &mut product, ordered())?,
                    s.iall_to_all_v(&send, &scounts, &sdispls, &mut got, &rcounts, &rdispls)?,
                ];
                wait_all(&mut reqs)?;
                Ok(())
            })
            .unwrap();
            assert!(bcast == pattern(root, len), "ibroadcast of {len} from {root}");
            assert_eq!(sum, linear_sum::<u64>(n, len), "iall_reduce sum of {len}");
            assert_eq!(product, fold(n, |q| matrices(q, len), &ordered()), "ordered iall_reduce");
            let mut want = vec![3u32; rlen];
            for from in 0..n {
                want[rdispls[from]..rdispls[from] + rcounts[from]].copy_from_slice(&piece(
                    from,
                    r,
                    rcounts[from],
                ));
            }
            assert_eq!(got, want, "iall_to_all_v");
        }

        // Progress: rank 0 waits in a receive from its last all-reduce
        // partner, which sends only once its own all-reduce is done — and
        // that needs rank 0's last-round message, which only the engine's
        // own advancing of rank 0's all-reduce can send.
        if n >= 4 && n.is_power_of_two() {
            let partner = n / 2;
            let (mine, mut total) = ([r as u64], [0u64]);
            c.scope(|s| {
                let req = s.iall_reduce(&mine, &mut total, Sum)?;
                if r == 0 {
                    c.recv(&mut [0u8], partner, 80)?;
                    req.wait()?;
                } else {
                    req.wait()?;
                    if r == partner {
                        c.send(&[1u8], 0, 80)?;
                    }
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(total, [(n * (n - 1) / 2) as u64]);
        }
        // A bad root is an error at once.
        let mut buf = [0u8];
        let outcome = c.scope(|s| s.ibroadcast(&mut buf, n).map(|_| ()));
        assert!(matches!(outcome, Err(Error::InvalidRoot { .. })));
        let (one, two, mut out) = ([1u8], [1u8, 2], [0u8]);
        let outcome = c.scope(|s| s.ireduce(&one, &mut out, Sum, n).map(|_| ()));
        assert!(matches!(outcome, Err(Error::InvalidRoot { .. })));
        let outcome = c.scope(|s| s.iscan(&two, &mut out, Sum).map(|_| ()));
        assert!(matches!(outcome, Err(Error::InvalidCount(_))));
        non_blocking_reductions(c);
        non_blocking_data_movement(c);
        non_blocking_in_place(c);
    });
}

/// The in-place non-blocking forms, all in flight together, give what
/// their blocking in-place twins give.
fn non_blocking_in_place(c: &Communicator) {
    let (n, r) = (c.size(), c.rank());
    for block in [0, 1, 7, 3000] {
        let root = block % n;
        let numbers = linear::<u64>(n, r, block);
        let mats = matrices(r, block);
        let mut own = vec![0u32; n * block];
        for (i, x) in own[r * block..(r + 1) * block].iter_mut().enumerate() {
            *x = (r * 100 + i) as u32 + 1;
        }
        let whole: Vec<u32> = (0..n * block).map(|i| (i * 7 + 3) as u32).collect();
        let gather_buf = |q: usize| {
            if q == root {
                own.clone()
            } else {
                own[q * block..(q + 1) * block].to_vec()
            }
        };
        let scatter_buf = |q: usize| if q == root { whole.clone() } else { vec![9u32; block] };

        // Blocking, for reference.
        let mut want_ar = numbers.clone();
        c.all_reduce_in_place(&mut want_ar, Sum).unwrap();
        let mut want_red = mats.clone();
        c.reduce_in_place(&mut want_red, ordered(), root).unwrap();
        let mut want_g = gather_buf(r);
        c.gather_in_place(&mut want_g, root).unwrap();
        let mut want_s = scatter_buf(r);
        c.scatter_in_place(&mut want_s, root).unwrap();
        let mut want_ag = own.clone();
        c.all_gather_in_place(&mut want_ag).unwrap();
        let mut want_scan = mats.clone();
        c.scan_in_place(&mut want_scan, ordered()).unwrap();
        let mut want_ex = mats.clone();
        c.exscan_in_place(&mut want_ex, ordered()).unwrap();

        let (mut ar, mut red, mut g, mut sc) =
            (numbers.clone(), mats.clone(), gather_buf(r), scatter_buf(r));
        let (mut ag, mut scan, mut ex) = (own.clone(), mats.clone(), mats.clone());
        c.scope(|s| {
            let mut reqs = vec![
                s.iall_reduce_in_place(&mut ar, Sum)?,
                s.ireduce_in_place(&mut red, ordered(), root)?,
                s.igather_in_place(&mut g, root)?,
                s.iscatter_in_place(&mut sc, root)?,
                s.iall_gather_in_place(&mut ag)?,
                s.iscan_in_place(&mut scan, ordered())?,
                s.iexscan_in_place(&mut ex, ordered())?,
            ];
            wait_all(&mut reqs)?;
            Ok(())
        })
        .unwrap();
        let ctx = format!("blocks of {block}, root {root}");
        assert_eq!(ar, want_ar, "iall_reduce_in_place, {ctx}");
        assert_eq!(ar, linear_sum::<u64>(n, block), "iall_reduce_in_place, {ctx}");
        assert_eq!(red, want_red, "ireduce_in_place, {ctx}");
        assert_eq!(g, want_g, "igather_in_place, {ctx}");
        assert_eq!(sc, want_s, "iscatter_in_place, {ctx}");
        assert_eq!(ag, want_ag, "iall_gather_in_place, {ctx}");
        assert_eq!(scan, want_scan, "iscan_in_place, {ctx}");
        assert_eq!(ex, want_ex, "iexscan_in_place, {ctx}");
    }
}

/// Every gather, scatter, all-gather, all-to-all and reduce-scatter started
/// non-blocking, all in flight together, gives what its blocking form
/// (checked against closed forms in the other cases) gives.
fn non_blocking_data_movement(c: &Communicator) {
    let (n, r) = (c.size(), c.rank());
    for counts in count_shapes(n) {
        let root = counts.iter().sum::<usize>() % n;
        let block = counts[0];
        let (displs, len) = gapped(&counts);
        let mine: Vec<u32> = (0..counts[r]).map(|i| (r * 100 + i) as u32 + 1).collect();
        let equal: Vec<u32> = (0..block).map(|i| (r * 100 + i) as u32 + 1).collect();
        let spread: Vec<u32> = (0..len).map(|i| (i * 7 + 3) as u32).collect();
        let whole: Vec<u64> =
            (0..counts.iter().sum::<usize>()).map(|i| (r * 10 + i) as u64).collect();
        let blocks: Vec<u64> = (0..n * block).map(|i| (r + i) as u64).collect();
        let alltoall_in: Vec<u32> = (0..n * block).map(|i| (r * 1000 + i) as u32).collect();

        // Blocking, for reference.
        let at_root = |l: usize| if r == root { l } else { 0 };
        let mut want_gv = vec![0u32; at_root(len)];
        c.gather_v(&mine, &mut want_gv, &counts, &displs, root).unwrap();
        let mut want_g = vec![0u32; at_root(n * block)];
        c.gather(&equal, &mut want_g, root).unwrap();
        let mut want_sv = vec![0u32; counts[r]];
        c.scatter_v(&spread, &counts, &displs, &mut want_sv, root).unwrap();
        let mut want_s = vec![0u32; block];
        c.scatter(&spread[..n * block], &mut want_s, root).unwrap();
        let mut want_agv = vec![0u32; len];
        c.all_gather_v(&mine, &mut want_agv, &counts, &displs).unwrap();
        let mut want_ag = vec![0u32; n * block];
        c.all_gather(&equal, &mut want_ag).unwrap();
        let mut want_a2a = vec![0u32; n * block];
        c.all_to_all(&alltoall_in, &mut want_a2a).unwrap();
        let mut want_rs = vec![0u64; counts[r]];
        c.reduce_scatter(&whole, &mut want_rs, &counts, Sum).unwrap();
        let mut want_rsb = vec![0u64; block];
        c.reduce_scatter_block(&blocks, &mut want_rsb, Sum).unwrap();

        let mut got_gv = vec![0u32; at_root(len)];
        let mut got_g = vec![0u32; at_root(n * block)];
        let mut got_sv = vec![0u32; counts[r]];
        let mut got_s = vec![0u32; block];
        let mut got_agv = vec![0u32; len];
        let mut got_ag = vec![0u32; n * block];
        let mut got_a2a = vec![0u32; n * block];
        let mut got_rs = vec![0u64; counts[r]];
        let mut got_rsb = vec![0u64; block];
        c.scope(|s| {
            let mut reqs = vec![
                s.igather_v(&mine, &mut got_gv, &counts, &displs, root)?,
                s.igather(&equal, &mut got_g, root)?,
                s.iscatter_v(&spread, &counts, &displs, &mut got_sv, root)?,
                s.iscatter(&spread[..n * block], &mut got_s, root)?,
                s.iall_gather_v(&mine, &mut got_agv, &counts, &displs)?,
                s.iall_gather(&equal, &mut got_ag)?,
                s.iall_to_all(&alltoall_in, &mut got_a2a)?,
                s.ireduce_scatter(&whole, &mut got_rs, &counts, Sum)?,
                s.ireduce_scatter_block(&blocks, &mut got_rsb, Sum)?,
            ];
            wait_all(&mut reqs)?;
            Ok(())
        })
        .unwrap();
        let ctx = format!("counts {counts:?}, root {root}");
        assert_eq!(got_gv, want_gv, "igather_v, {ctx}");
        assert_eq!(got_g, want_g, "igather, {ctx}");
        assert_eq!(got_sv, want_sv, "iscatter_v, {ctx}");
        assert_eq!(got_s, want_s, "iscatter, {ctx}");
        assert_eq!(got_agv, want_agv, "iall_gather_v, {ctx}");
        assert_eq!(got_ag, want_ag, "iall_gather, {ctx}");
        assert_eq!(got_a2a, want_a2a, "iall_to_all, {ctx}");
        assert_eq!(got_rs, want_rs, "ireduce_scatter, {ctx}");
        assert_eq!(got_rsb, want_rsb, "ireduce_scatter_block, {ctx}");
    }
}

/// `ireduce` to every root and `iscan`/`iexscan`, in flight together, with
/// a sum and an operation that is not commutative (rank order).
fn non_blocking_reductions(c: &Communicator) {
    let (n, r) = (c.size(), c.rank());
    for len in [0, 1, 100, 20_000] {
        let (numbers, mats) = (linear::<u64>(n, r, len), matrices(r, len));
        let mut sums: Vec<Vec<u64>> = (0..n).map(|_| vec![0; len]).collect();
        let mut products: Vec<Vec<[i64; 4]>> = (0..n).map(|_| vec![[0; 4]; len]).collect();
        let mut scanned = vec![[0i64; 4]; len];
        let mut exscanned = vec![[7i64; 4]; len];
        c.scope(|s| {
            let mut reqs = Vec::new();
            for (root, (sum, product)) in sums.iter_mut().zip(&mut products).enumerate() {
                reqs.push(s.ireduce(&numbers, sum, Sum, root)?);
                reqs.push(s.ireduce(&mats, product, ordered(), root)?);
            }
            reqs.push(s.iscan(&mats, &mut scanned, ordered())?);
            reqs.push(s.iexscan(&mats, &mut exscanned, ordered())?);
            wait_all(&mut reqs)?;
            Ok(())
        })
        .unwrap();
        assert_eq!(sums[r], linear_sum::<u64>(n, len), "ireduce sum of {len} to {r}");
        let all = fold(n, |q| matrices(q, len), &ordered());
        assert_eq!(products[r], all, "ordered ireduce of {len} to {r}");
        assert_eq!(scanned, fold(r + 1, |q| matrices(q, len), &ordered()), "ordered iscan");
        let before =
            if r == 0 { vec![[7; 4]; len] } else { fold(r, |q| matrices(q, len), &ordered()) };
        assert_eq!(exscanned, before, "ordered iexscan");
    }
}

/// Persistent collectives: made once, started three times with new data
/// each time, all in flight together; each start gives what the blocking
/// form gives. Starts with other lengths or on another communicator are
/// errors, and the communicator stays usable.
pub(super) fn persistent(comm: &Communicator) {
    on_variants(comm, |c| {
        let (n, r) = (c.size(), c.rank());
        let counts: Vec<usize> = (0..n).map(|q| q % 3 + 1).collect();
        let (displs, len) = gapped(&counts);
        let root = n / 2;
        let total: usize = counts.iter().sum();
        let at_root = |l: usize| if r == root { l } else { 0 };
        let shape = |step: u64| -> (Vec<u64>, Vec<[i64; 4]>, Vec<u32>, Vec<u32>) {
            let numbers = (0..7).map(|i| step * 1000 + (r * 10 + i) as u64).collect();
            let mats = matrices(r + step as usize, 5);
            let mine = (0..counts[r]).map(|i| (step as usize * 100 + r * 10 + i) as u32).collect();
            let spread = (0..len).map(|i| (step as usize * 7 + i) as u32).collect();
            (numbers, mats, mine, spread)
        };
        let (numbers, mats, mine, spread) = shape(0);
        let mut bcast = vec![0u32; 9];
        let (mut sum, mut product) = (vec![0u64; at_root(7)], vec![[0i64; 4]; 5]);
        let mut gathered = vec![0u32; at_root(len)];
        let mut scattered = vec![0u32; counts[r]];
        let mut all = vec![0u32; len];
        let whole: Vec<[i64; 4]> = matrices(r, total);
        let mut part = vec![[0i64; 4]; counts[r]];
        let (mut scanned, mut exscanned) = (vec![[0i64; 4]; 5], vec![[0i64; 4]; 5]);

        let barrier = c.barrier_init().unwrap();
        let broadcast = c.broadcast_init(&bcast, root).unwrap();
        let reduce = c.reduce_init(&numbers, &sum, Sum, root).unwrap();
        let all_reduce = c.all_reduce_init(&mats, &product, ordered()).unwrap();
        let gather = c.gather_v_init(&mine, &gathered, &counts, &displs, root).unwrap();
        let scatter = c.scatter_v_init(&spread, &counts, &displs, &scattered, root).unwrap();
        let all_gather = c.all_gather_v_init(&mine, &all, &counts, &displs).unwrap();
        let reduce_scatter = c.reduce_scatter_init(&whole, &part, &counts, ordered()).unwrap();
        let scan = c.scan_init(&mats, &scanned, ordered()).unwrap();
        let exscan = c.exscan_init(&mats, &exscanned, ordered()).unwrap();
        for step in 0..3u64 {
            let (numbers, mats, mine, spread) = shape(step);
            if r == root {
                bcast = (0..9).map(|i| (step * 10 + i) as u32).collect();
            }
            c.scope(|s| {
                let mut reqs = vec![
                    barrier.start(s, &[], &mut [])?,
                    broadcast.start(s, &[], &mut bcast)?,
                    reduce.start(s, &numbers, &mut sum)?,
                    all_reduce.start(s, &mats, &mut product)?,
                    gather.start(s, &mine, &mut gathered)?,
                    scatter.start(s, &spread, &mut scattered)?,
                    all_gather.start(s, &mine, &mut all)?,
                    reduce_scatter.start(s, &whole, &mut part)?,
                    scan.start(s, &mats, &mut scanned)?,
                    exscan.start(s, &mats, &mut exscanned)?,
                ];
                wait_all(&mut reqs)?;
                Ok(())
            })
            .unwrap();
            let ctx = format!("start {step}");
            let mut want_b = vec![0u32; 9];
            if r == root {
                want_b = (0..9).map(|i| (step * 10 + i) as u32).collect();
            }
            c.broadcast(&mut want_b, root).unwrap();
            assert_eq!(bcast, want_b, "broadcast, {ctx}");
            let mut want = vec![0u64; at_root(7)];
            c.reduce(&numbers, &mut want, Sum, root).unwrap();
            assert_eq!(sum, want, "reduce, {ctx}");
            let mut want = vec![[0i64; 4]; 5];
            c.all_reduce(&mats, &mut want, ordered()).unwrap();
            assert_eq!(product, want, "all_reduce, {ctx}");
            let mut want = vec![0u32; at_root(len)];
            c.gather_v(&mine, &mut want, &counts, &displs, root).unwrap();
            assert_eq!(gathered, want, "gather_v, {ctx}");
            let mut want = vec![0u32; counts[r]];
            c.scatter_v(&spread, &counts, &displs, &mut want, root).unwrap();
            assert_eq!(scattered, want, "scatter_v, {ctx}");
            let mut want = vec![0u32; len];
            c.all_gather_v(&mine, &mut want, &counts, &displs).unwrap();
            assert_eq!(all, want, "all_gather_v, {ctx}");
            let mut want = vec![[0i64; 4]; counts[r]];
            c.reduce_scatter(&whole, &mut want, &counts, ordered()).unwrap();
            assert_eq!(part, want, "reduce_scatter, {ctx}");
            assert_eq!(scanned, fold(r + 1, |q| matrices(q + step as usize, 5), &ordered()));
            if r > 0 {
                assert_eq!(exscanned, fold(r, |q| matrices(q + step as usize, 5), &ordered()));
            }
        }

        // Bad starts are errors on this rank alone, before anything is sent.
        let short = [0u64; 3];
        let mut out = vec![[0i64; 4]; 5];
        let e = c.scope(|s| reduce.start(s, &short, &mut sum).map(|_| ())).unwrap_err();
        assert!(matches!(e, Error::InvalidCount(_)), "{e}");
        let other = c.dup().unwrap();
        let e = other.scope(|s| all_reduce.start(s, &mats, &mut out).map(|_| ())).unwrap_err();
        assert!(matches!(e, Error::InvalidCount(_)), "{e}");
        c.barrier().unwrap();
        persistent_in_place(c);
    });
}

/// The in-place persistent forms, started three times with new data, give
/// what their blocking in-place twins give; starting one the other way is
/// an error.
fn persistent_in_place(c: &Communicator) {
    let (n, r) = (c.size(), c.rank());
    let (root, block) = (n / 2, 3);
    let data = |step: usize| -> (Vec<u64>, Vec<[i64; 4]>, Vec<u32>, Vec<u32>) {
        let numbers = (0..5).map(|i| (step * 100 + r * 10 + i) as u64).collect();
        let mats = matrices(r + step, 4);
        let mut own = vec![0u32; n * block];
        for (i, x) in own[r * block..(r + 1) * block].iter_mut().enumerate() {
            *x = (step * 1000 + r * 10 + i) as u32;
        }
        let gather = if r == root { own.clone() } else { own[r * block..(r + 1) * block].to_vec() };
        (numbers, mats, own, gather)
    };
    let (numbers, mats, own, gather) = data(0);
    let scatter_buf = |step: usize| -> Vec<u32> {
        match r == root {
            true => (0..n * block).map(|i| (step * 7 + i) as u32).collect(),
            false => vec![0; block],
        }
    };
    let all_reduce = c.all_reduce_init_in_place(&numbers, Sum).unwrap();
    let reduce = c.reduce_init_in_place(&mats, ordered(), root).unwrap();
    let gathering = c.gather_init_in_place(&gather, root).unwrap();
    let scattering = c.scatter_init_in_place(&scatter_buf(0), root).unwrap();
    let all_gather = c.all_gather_init_in_place(&own).unwrap();
    let scan = c.scan_init_in_place(&mats, ordered()).unwrap();
    let exscan = c.exscan_init_in_place(&mats, ordered()).unwrap();
    for step in 0..3 {
        let (numbers, mats, own, gather) = data(step);
        let (mut ar, mut red, mut g) = (numbers.clone(), mats.clone(), gather.clone());
        let (mut sc, mut ag) = (scatter_buf(step), own.clone());
        let (mut scanned, mut exscanned) = (mats.clone(), mats.clone());
        c.scope(|s| {
            let mut reqs = vec![
                all_reduce.start_in_place(s, &mut ar)?,
                reduce.start_in_place(s, &mut red)?,
                gathering.start_in_place(s, &mut g)?,
                scattering.start_in_place(s, &mut sc)?,
                all_gather.start_in_place(s, &mut ag)?,
                scan.start_in_place(s, &mut scanned)?,
                exscan.start_in_place(s, &mut exscanned)?,
            ];
            wait_all(&mut reqs)?;
            Ok(())
        })
        .unwrap();
        let ctx = format!("in place, start {step}");
        let mut want = numbers.clone();
        c.all_reduce_in_place(&mut want, Sum).unwrap();
        assert_eq!(ar, want, "all_reduce, {ctx}");
        let mut want = mats.clone();
        c.reduce_in_place(&mut want, ordered(), root).unwrap();
        assert_eq!(red, want, "reduce, {ctx}");
        let mut want = gather.clone();
        c.gather_in_place(&mut want, root).unwrap();
        assert_eq!(g, want, "gather, {ctx}");
        let mut want = scatter_buf(step);
        c.scatter_in_place(&mut want, root).unwrap();
        assert_eq!(sc, want, "scatter, {ctx}");
        let mut want = own.clone();
        c.all_gather_in_place(&mut want).unwrap();
        assert_eq!(ag, want, "all_gather, {ctx}");
        let mut want = mats.clone();
        c.scan_in_place(&mut want, ordered()).unwrap();
        assert_eq!(scanned, want, "scan, {ctx}");
        let mut want = mats.clone();
        c.exscan_in_place(&mut want, ordered()).unwrap();
        assert_eq!(exscanned, want, "exscan, {ctx}");
    }
    // An in-place collective started with two buffers, an ordinary one in
    // place, or with a buffer of another length: errors, nothing sent.
    let mut buf = vec![0u64; 5];
    let e = c.scope(|s| all_reduce.start(s, &[], &mut buf).map(|_| ())).unwrap_err();
    assert!(e.to_string().contains("start_in_place"), "{e}");
    let plain = c.all_reduce_init(&buf, &buf, Sum).unwrap();
    let e = c.scope(|s| plain.start_in_place(s, &mut buf).map(|_| ())).unwrap_err();
    assert!(e.to_string().contains("not made in place"), "{e}");
    let mut short = vec![0u64; 4];
    let e = c.scope(|s| all_reduce.start_in_place(s, &mut short).map(|_| ())).unwrap_err();
    assert!(matches!(e, Error::InvalidCount(_)), "{e}");
    c.barrier().unwrap();
}

/// Neighbourhood collectives on grids of the communicator's ranks — 1-D
/// and 2-D, periodic or not (so with ranks that are their own or a double
/// neighbour) — blocking, non-blocking and persistent: block `k` of the
/// result is what neighbour `k` sent the other way.
pub(super) fn neighbor(comm: &Communicator) {
    let n = comm.size();
    let two = hpcomm::dims_create(n, &[0, 0]).unwrap();
    let grids: [(Vec<usize>, Vec<bool>); 4] = [
        (vec![n], vec![true]),
        (vec![n], vec![false]),
        (two.clone(), vec![true, true]),
        (two, vec![false, true]),
    ];
    for (dims, periodic) in grids {
        let grid = comm.cartesian(&dims, &periodic).unwrap().expect("every rank is in the grid");
        let ctx = format!("grid {dims:?}, periodic {periodic:?}");
        let r = grid.comm().rank();
        let k = 2 * dims.len();
        let mut near = Vec::with_capacity(k);
        for d in 0..dims.len() {
            let (before, after) = grid.shift(d, 1).unwrap();
            near.extend([before.index(), after.index()]);
        }
        let mark = |from: usize, block: usize, i: usize| (from * 1000 + block * 10 + i) as u64 + 1;

        // All-gather: the same 3 values to every neighbour.
        let mine: Vec<u64> = (0..3).map(|i| mark(r, 0, i)).collect();
        let mut got = vec![0u64; 3 * k];
        grid.neighbor_all_gather(&mine, &mut got).unwrap();
        for (j, nb) in near.iter().enumerate() {
            let want: Vec<u64> = (0..3).map(|i| nb.map_or(0, |q| mark(q, 0, i))).collect();
            assert_eq!(got[3 * j..3 * j + 3], want[..], "neighbor_all_gather, {ctx}, block {j}");
        }

        // All-to-all with counts: (from + block) % 3 + 1 elements, gapped.
        let count = |from: usize, block: usize| (from + block) % 3 + 1;
        let scounts: Vec<usize> = (0..k).map(|j| count(r, j)).collect();
        let rcounts: Vec<usize> = (0..k).map(|j| near[j].map_or(0, |q| count(q, j ^ 1))).collect();
        let (sdispls, slen) = gapped(&scounts);
        let (rdispls, rlen) = gapped(&rcounts);
        let mut send = vec![0u64; slen];
        for j in 0..k {
            for i in 0..scounts[j] {
                send[sdispls[j] + i] = mark(r, j, i);
            }
        }
        let check = |got: &[u64], how: &str| {
            for j in 0..k {
                let want: Vec<u64> =
                    (0..rcounts[j]).map(|i| mark(near[j].unwrap_or(0), j ^ 1, i)).collect();
                let block = &got[rdispls[j]..rdispls[j] + rcounts[j]];
                assert_eq!(block, &want[..], "{how}, {ctx}, block {j}");
            }
        };
        let mut got = vec![0u64; rlen];
        grid.neighbor_all_to_all_v(&send, &scounts, &sdispls, &mut got, &rcounts, &rdispls)
            .unwrap();
        check(&got, "neighbor_all_to_all_v");
        let exchange = grid
            .neighbor_all_to_all_v_init(&send, &scounts, &sdispls, &got, &rcounts, &rdispls)
            .unwrap();
        for start in 0..3 {
            let mut again = vec![0u64; rlen];
            let equal_in: Vec<u64> = (0..2 * k).map(|i| (r * 100 + i + start) as u64).collect();
            let mut equal_out = vec![0u64; 2 * k];
            grid.comm()
                .scope(|s| {
                    let mut reqs = vec![
                        exchange.start(s, &send, &mut again)?,
                        grid.ineighbor_all_to_all(s, &equal_in, &mut equal_out)?,
                    ];
                    wait_all(&mut reqs)?;
                    Ok(())
                })
                .unwrap();
            check(&again, &format!("persistent neighbor_all_to_all_v, start {start}"));
            for j in 0..k {
                if let Some(q) = near[j] {
                    let sent = (q * 100 + 2 * (j ^ 1) + start) as u64;
                    assert_eq!(
                        equal_out[2 * j..2 * j + 2],
                        [sent, sent + 1],
                        "ineighbor_all_to_all, {ctx}"
                    );
                }
            }
        }

        // Bad arguments: errors on this rank, before anything is sent.
        let e = grid.neighbor_all_gather(&mine, &mut vec![0u64; 3 * k + 1]).unwrap_err();
        assert!(matches!(e, Error::InvalidCount(_)), "{e}");
        let e = grid.neighbor_all_to_all(&[0u8; 3], &mut [0u8; 3]).unwrap_err();
        assert!(matches!(e, Error::InvalidCount(_)), "{e}");
        let (a, mut b) = (vec![0u64; 2 * k], vec![0u64; 2 * k]);
        let e = comm.scope(|s| grid.ineighbor_all_to_all(s, &a, &mut b).map(|_| ())).unwrap_err();
        assert!(matches!(e, Error::InvalidCount(_)), "{e}");
        grid.comm().barrier().unwrap();
    }
}
