//! The operations a window's target applies for an accumulate: MPI's
//! predefined ones (`MPI_Accumulate` takes no user operation, since the
//! target applies it) and [`Replace`].
//!
//! An operation travels as a code; the target applies it to its window's
//! element type through [`Accumulate`], which says which operations that
//! type has. The origin's call is checked at compile time as well: an
//! accumulate takes an operation that implements both [`Operation<T>`] and
//! [`WindowOp`], so `BitAnd` on `f64` does not compile.

use bytemuck::Pod;

use crate::op::{
    BitAnd, BitOr, BitXor, LogicalAnd, LogicalOr, Max, Min, Number, Operation, Prod, Sum,
};

/// An operation's number on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// [`Sum`].
    Sum = 1,
    /// [`Prod`].
    Prod,
    /// [`Min`].
    Min,
    /// [`Max`].
    Max,
    /// [`BitAnd`].
    BitAnd,
    /// [`BitOr`].
    BitOr,
    /// [`BitXor`].
    BitXor,
    /// [`LogicalAnd`].
    LogicalAnd,
    /// [`LogicalOr`].
    LogicalOr,
    /// [`Replace`].
    Replace,
}

impl OpCode {
    pub(crate) fn from_wire(code: u8) -> Option<OpCode> {
        use OpCode::*;
        [Sum, Prod, Min, Max, BitAnd, BitOr, BitXor, LogicalAnd, LogicalOr, Replace]
            .into_iter()
            .find(|op| *op as u8 == code)
    }
}

/// `MPI_REPLACE`: the target's elements become the origin's (an
/// accumulate with it is an atomic put).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replace;

impl<T: Copy> Operation<T> for Replace {
    fn apply(&self, acc: &mut [T], other: &[T], acc_left: bool) {
        if acc_left {
            acc.copy_from_slice(other);
        }
    }

    fn commutative(&self) -> bool {
        false
    }
}

/// An operation a window's target can apply: a predefined one.
pub trait WindowOp {
    /// Its number on the wire.
    const CODE: OpCode;
}

macro_rules! window_ops {
    ($($op:ident),*) => {$(
        impl WindowOp for $op {
            const CODE: OpCode = OpCode::$op;
        }
    )*};
}
window_ops!(Sum, Prod, Min, Max, BitAnd, BitOr, BitXor, LogicalAnd, LogicalOr, Replace);

/// Element types of a window: which operations an accumulate may apply
/// to them. The integers have all of them; the floats the arithmetic ones,
/// `Min`, `Max` and `Replace`; bytes-like types only `Replace`.
pub trait Accumulate: Pod {
    /// Applies `op` as the target: `target = target ∘ origin`, element by
    /// element; `false` if the type does not have `op` (nothing changed).
    fn accumulate(op: OpCode, target: &mut [Self], origin: &[Self]) -> bool;
}

fn arithmetic<T: Number>(op: OpCode, target: &mut [T], origin: &[T]) -> bool {
    match op {
        OpCode::Sum => Sum.apply(target, origin, true),
        OpCode::Prod => Prod.apply(target, origin, true),
        OpCode::Min => Min.apply(target, origin, true),
        OpCode::Max => Max.apply(target, origin, true),
        OpCode::Replace => Replace.apply(target, origin, true),
        _ => return false,
    }
    true
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl Accumulate for $t {
            fn accumulate(op: OpCode, target: &mut [Self], origin: &[Self]) -> bool {
                match op {
                    OpCode::BitAnd => BitAnd.apply(target, origin, true),
                    OpCode::BitOr => BitOr.apply(target, origin, true),
                    OpCode::BitXor => BitXor.apply(target, origin, true),
                    OpCode::LogicalAnd => LogicalAnd.apply(target, origin, true),
                    OpCode::LogicalOr => LogicalOr.apply(target, origin, true),
                    _ => return arithmetic(op, target, origin),
                }
                true
            }
        }
    )*};
}
integers!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize);

impl Accumulate for f32 {
    fn accumulate(op: OpCode, target: &mut [Self], origin: &[Self]) -> bool {
        arithmetic(op, target, origin)
    }
}

impl Accumulate for f64 {
    fn accumulate(op: OpCode, target: &mut [Self], origin: &[Self]) -> bool {
        arithmetic(op, target, origin)
    }
}

impl<const N: usize> Accumulate for [u8; N] {
    fn accumulate(op: OpCode, target: &mut [Self], origin: &[Self]) -> bool {
        op == OpCode::Replace && {
            target.copy_from_slice(origin);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_applies_the_operations_it_has_and_refuses_the_others() {
        let mut t = [6u32, 0b1100];
        assert!(u32::accumulate(OpCode::BitXor, &mut t, &[1, 0b1010]));
        assert_eq!(t, [7, 0b0110]);
        assert!(u32::accumulate(OpCode::Replace, &mut t, &[9, 9]));
        assert_eq!(t, [9, 9]);
        let mut f = [1.5f64];
        assert!(f64::accumulate(OpCode::Prod, &mut f, &[2.0]));
        assert_eq!(f, [3.0]);
        assert!(!f64::accumulate(OpCode::BitAnd, &mut f, &[2.0]));
        assert_eq!(f, [3.0]);
        let mut b = [[1u8; 3]];
        assert!(!<[u8; 3]>::accumulate(OpCode::Sum, &mut b, &[[2; 3]]));
        assert!(<[u8; 3]>::accumulate(OpCode::Replace, &mut b, &[[2; 3]]));
        assert_eq!(b, [[2; 3]]);
        for code in 0..=255u8 {
            if let Some(op) = OpCode::from_wire(code) {
                assert_eq!(op as u8, code);
            }
        }
    }
}
