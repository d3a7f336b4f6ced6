//! Reduction operations (`MPI_Op`): the built-in ones and user closures.
//!
//! An operation combines two vectors element by element. Reductions keep
//! MPI's order rule: when ranks `a < b` contribute partial results, `a`'s is
//! the left operand. Algorithms call [`Operation::apply`] with
//! `acc_left` saying which side their accumulator is on, so that an
//! operation that is not commutative still sees its operands in rank order,
//! whatever the algorithm and root.
//!
//! Integer sums and products wrap on overflow (MPI leaves overflow
//! undefined; wrapping is what hardware does and never panics).

use bytemuck::{Pod, Zeroable};

/// A reduction operation on elements of type `T`.
pub trait Operation<T> {
    /// Combines `other` into `acc`, element by element: `acc = acc ∘ other`
    /// when `acc_left`, else `acc = other ∘ acc`. Both have the same length.
    fn apply(&self, acc: &mut [T], other: &[T], acc_left: bool);

    /// Whether `a ∘ b == b ∘ a`; algorithms that reorder operands are chosen
    /// only for commutative operations.
    fn commutative(&self) -> bool {
        true
    }
}

impl<T, O: Operation<T> + ?Sized> Operation<T> for &O {
    fn apply(&self, acc: &mut [T], other: &[T], acc_left: bool) {
        (**self).apply(acc, other, acc_left)
    }
    fn commutative(&self) -> bool {
        (**self).commutative()
    }
}

/// Element types with arithmetic: the integers and the floats.
pub trait Number: Pod + PartialOrd {
    /// `a + b` (wrapping for integers).
    fn add(a: Self, b: Self) -> Self;
    /// `a × b` (wrapping for integers).
    fn mul(a: Self, b: Self) -> Self;
}

/// Integer element types, for the bitwise and logical operations.
pub trait Integer: Number + Eq + Ord {
    /// `a & b`.
    fn and(a: Self, b: Self) -> Self;
    /// `a | b`.
    fn or(a: Self, b: Self) -> Self;
    /// `a ^ b`.
    fn xor(a: Self, b: Self) -> Self;
    /// Whether the value is logically true (non-zero).
    fn truth(self) -> bool;
    /// `1` or `0`.
    fn from_truth(t: bool) -> Self;
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl Number for $t {
            #[inline]
            fn add(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            #[inline]
            fn mul(a: Self, b: Self) -> Self { a.wrapping_mul(b) }
        }
        impl Integer for $t {
            #[inline]
            fn and(a: Self, b: Self) -> Self { a & b }
            #[inline]
            fn or(a: Self, b: Self) -> Self { a | b }
            #[inline]
            fn xor(a: Self, b: Self) -> Self { a ^ b }
            #[inline]
            fn truth(self) -> bool { self != 0 }
            #[inline]
            fn from_truth(t: bool) -> Self { t as $t }
        }
    )*};
}
integers!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize);

macro_rules! floats {
    ($($t:ty),*) => {$(
        impl Number for $t {
            #[inline]
            fn add(a: Self, b: Self) -> Self { a + b }
            #[inline]
            fn mul(a: Self, b: Self) -> Self { a * b }
        }
    )*};
}
floats!(f32, f64);

#[inline]
fn zip<T: Copy>(acc: &mut [T], other: &[T], acc_left: bool, f: impl Fn(T, T) -> T) {
    debug_assert_eq!(acc.len(), other.len());
    if acc_left {
        for (a, &b) in acc.iter_mut().zip(other) {
            *a = f(*a, b);
        }
    } else {
        for (a, &b) in acc.iter_mut().zip(other) {
            *a = f(b, *a);
        }
    }
}

macro_rules! builtin {
    ($(#[$doc:meta])* $name:ident, $bound:ident, |$a:ident, $b:ident| $e:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;

        impl<T: $bound> Operation<T> for $name {
            #[inline]
            fn apply(&self, acc: &mut [T], other: &[T], acc_left: bool) {
                zip(acc, other, acc_left, |$a, $b| $e)
            }
        }
    };
}

builtin!(
    /// Sum (`MPI_SUM`).
    Sum, Number, |a, b| T::add(a, b)
);
builtin!(
    /// Product (`MPI_PROD`).
    Prod, Number, |a, b| T::mul(a, b)
);
builtin!(
    /// Minimum (`MPI_MIN`); of a NaN and a number, the number.
    Min, Number, |a, b| if b < a || a.partial_cmp(&a).is_none() { b } else { a }
);
builtin!(
    /// Maximum (`MPI_MAX`); of a NaN and a number, the number.
    Max, Number, |a, b| if b > a || a.partial_cmp(&a).is_none() { b } else { a }
);
builtin!(
    /// Bitwise and (`MPI_BAND`).
    BitAnd, Integer, |a, b| T::and(a, b)
);
builtin!(
    /// Bitwise or (`MPI_BOR`).
    BitOr, Integer, |a, b| T::or(a, b)
);
builtin!(
    /// Bitwise exclusive or (`MPI_BXOR`).
    BitXor, Integer, |a, b| T::xor(a, b)
);
builtin!(
    /// Logical and (`MPI_LAND`): non-zero is true; the result is 1 or 0.
    LogicalAnd, Integer, |a, b| T::from_truth(a.truth() && b.truth())
);
builtin!(
    /// Logical or (`MPI_LOR`): non-zero is true; the result is 1 or 0.
    LogicalOr, Integer, |a, b| T::from_truth(a.truth() || b.truth())
);

/// A value with the index (usually a rank) it belongs to, for [`MinLoc`]
/// and [`MaxLoc`] (MPI's `MPI_2INT`, `MPI_DOUBLE_INT` and friends).
pub trait Located: Pod {
    /// The value compared.
    type Value: PartialOrd + Copy;
    /// The value.
    fn value(&self) -> Self::Value;
    /// The index, which breaks ties (the lower wins).
    fn index(&self) -> i64;
}

macro_rules! located {
    ($($(#[$doc:meta])* $name:ident($v:ty, $i:ty);)*) => {$(
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
        pub struct $name {
            /// The value compared.
            pub value: $v,
            /// Its index, usually the rank that owns it.
            pub index: $i,
        }

        impl $name {
            /// A value at an index.
            pub fn new(value: $v, index: $i) -> Self {
                $name { value, index }
            }
        }

        impl Located for $name {
            type Value = $v;
            fn value(&self) -> $v { self.value }
            fn index(&self) -> i64 { self.index as i64 }
        }
    )*};
}

located! {
    /// An `f32` with an `i32` index.
    LocF32(f32, i32);
    /// An `f64` with an `i64` index (no padding, unlike C's `double_int`).
    LocF64(f64, i64);
    /// An `i32` with an `i32` index (`MPI_2INT`).
    LocI32(i32, i32);
    /// An `i64` with an `i64` index.
    LocI64(i64, i64);
}

fn pick<L: Located>(a: L, b: L, b_wins: impl Fn(L::Value, L::Value) -> bool) -> L {
    let (va, vb) = (a.value(), b.value());
    if b_wins(va, vb) || (va == vb && b.index() < a.index()) {
        b
    } else {
        a
    }
}

/// The minimum value and its index (`MPI_MINLOC`); ties go to the lower
/// index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinLoc;

impl<L: Located> Operation<L> for MinLoc {
    fn apply(&self, acc: &mut [L], other: &[L], acc_left: bool) {
        zip(acc, other, acc_left, |a, b| pick(a, b, |va, vb| vb < va))
    }
}

/// The maximum value and its index (`MPI_MAXLOC`); ties go to the lower
/// index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxLoc;

impl<L: Located> Operation<L> for MaxLoc {
    fn apply(&self, acc: &mut [L], other: &[L], acc_left: bool) {
        zip(acc, other, acc_left, |a, b| pick(a, b, |va, vb| vb > va))
    }
}

/// A user-defined operation from a closure `f(left, right)`, applied
/// element by element (`MPI_Op_create`).
///
/// ```
/// use hpcomm_collectives::op::{Operation, UserOp};
/// // 2×2 matrix product: associative, not commutative.
/// let matmul = UserOp::non_commutative(|a: &[i64; 4], b: &[i64; 4]| {
///     [a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3],
///      a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3]]
/// });
/// let mut acc = [[1, 1, 0, 1]];
/// matmul.apply(&mut acc, &[[1, 0, 1, 1]], true);
/// assert_eq!(acc, [[2, 1, 1, 1]]);
/// assert!(!matmul.commutative());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct UserOp<F> {
    f: F,
    commutative: bool,
}

impl<F> UserOp<F> {
    /// An operation that algorithms may apply in any order.
    pub fn commutative(f: F) -> Self {
        UserOp { f, commutative: true }
    }

    /// An associative operation applied strictly in rank order.
    pub fn non_commutative(f: F) -> Self {
        UserOp { f, commutative: false }
    }
}

impl<T: Copy, F: Fn(&T, &T) -> T> Operation<T> for UserOp<F> {
    fn apply(&self, acc: &mut [T], other: &[T], acc_left: bool) {
        zip(acc, other, acc_left, |a, b| (self.f)(&a, &b))
    }
    fn commutative(&self) -> bool {
        self.commutative
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_combine_elementwise() {
        let mut acc = [1i32, -5, 7];
        Sum.apply(&mut acc, &[2, 5, i32::MAX], true);
        assert_eq!(acc, [3, 0, 7i32.wrapping_add(i32::MAX)]);
        let mut acc = [3u8, 0b1100];
        BitXor.apply(&mut acc, &[1, 0b1010], false);
        assert_eq!(acc, [2, 0b0110]);
        let mut acc = [0i64, 4, 0];
        LogicalOr.apply(&mut acc, &[0, 0, -3], true);
        assert_eq!(acc, [0, 1, 1]);
        let mut acc = [2.0f64, f64::NAN, 1.0];
        Min.apply(&mut acc, &[1.0, 3.0, f64::NAN], true);
        assert_eq!(acc[..2], [1.0, 3.0]);
        assert_eq!(acc[2], 1.0);
    }

    #[test]
    fn locations_break_ties_by_index() {
        let mut acc = [LocF64::new(1.0, 3), LocF64::new(5.0, 0)];
        MinLoc.apply(&mut acc, &[LocF64::new(1.0, 1), LocF64::new(2.0, 9)], false);
        assert_eq!(acc, [LocF64::new(1.0, 1), LocF64::new(2.0, 9)]);
        let mut acc = [LocI32::new(4, 2)];
        MaxLoc.apply(&mut acc, &[LocI32::new(4, 7)], true);
        assert_eq!(acc, [LocI32::new(4, 2)]);
    }

    #[test]
    fn order_follows_the_side() {
        let concat = UserOp::non_commutative(|a: &u32, b: &u32| a * 10 + b);
        let mut acc = [1u32];
        concat.apply(&mut acc, &[2], true);
        assert_eq!(acc, [12]);
        concat.apply(&mut acc, &[3], false);
        assert_eq!(acc, [3 * 10 + 12]);
    }
}
