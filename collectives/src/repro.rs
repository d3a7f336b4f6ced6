//! A reproducible floating-point sum.
//!
//! Floating-point addition is not associative, so an ordinary sum depends
//! on the order in which an algorithm combines the ranks' values — on the
//! number of ranks, the algorithm chosen and the root. This sum does not:
//! every `f64` is turned into an exact fixed-point integer ([`Exact`], a
//! two's-complement number of 34 × 64 bits whose unit is 2⁻¹⁰⁷⁴, the
//! smallest subnormal), the integers are added — exactly, so in any order —
//! and the total is rounded to the nearest `f64` (ties to even) once, at
//! the end. The result is therefore the correctly rounded sum of all the
//! inputs, the same bits whatever the number of ranks or the algorithm.
//!
//! The 2176 bits cover every finite `f64` (2098 bits) with 77 bits to
//! spare for carries, enough for 2⁷⁷ terms. Infinities and NaNs are kept
//! as flags: `+∞ + −∞` and any NaN give NaN. A sum of negative zeros gives
//! `+0.0`.
//!
//! The price: each element travels and is combined as 280 bytes instead of
//! 8, so use it where reproducibility matters more than speed (checksums,
//! regression baselines, bitwise-reproducible science).

use bytemuck::{Pod, Zeroable};

use crate::op::Operation;

const LIMBS: usize = 34;
const INF_POS: u64 = 1;
const INF_NEG: u64 = 2;
const NAN: u64 = 4;

/// An `f64` value, or an exact sum of them, as a fixed-point integer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Exact {
    limbs: [u64; LIMBS],
    flags: u64,
}

impl Exact {
    /// The exact value of `x`.
    pub fn from_f64(x: f64) -> Exact {
        let mut e = Exact::zeroed();
        if x.is_nan() {
            e.flags = NAN;
            return e;
        }
        if x.is_infinite() {
            e.flags = if x > 0.0 { INF_POS } else { INF_NEG };
            return e;
        }
        let bits = x.to_bits();
        let field = ((bits >> 52) & 0x7ff) as usize;
        let frac = bits & ((1 << 52) - 1);
        let (mantissa, shift) = if field == 0 { (frac, 0) } else { (frac | 1 << 52, field - 1) };
        let (limb, offset) = (shift / 64, shift % 64);
        e.limbs[limb] = mantissa << offset;
        if offset > 11 {
            e.limbs[limb + 1] = mantissa >> (64 - offset);
        }
        if bits >> 63 == 1 {
            e.negate();
        }
        e
    }

    fn negate(&mut self) {
        let mut carry = 1u64;
        for limb in &mut self.limbs {
            let (v, c) = (!*limb).overflowing_add(carry);
            *limb = v;
            carry = c as u64;
        }
    }

    /// Adds `other` exactly.
    pub fn add(&mut self, other: &Exact) {
        let mut carry = false;
        for (a, &b) in self.limbs.iter_mut().zip(&other.limbs) {
            let (s1, c1) = a.overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            *a = s2;
            carry = c1 || c2;
        }
        self.flags |= other.flags;
    }

    /// The nearest `f64` (ties to even).
    pub fn to_f64(&self) -> f64 {
        if self.flags & NAN != 0 || self.flags & (INF_POS | INF_NEG) == INF_POS | INF_NEG {
            return f64::NAN;
        }
        if self.flags & INF_POS != 0 {
            return f64::INFINITY;
        }
        if self.flags & INF_NEG != 0 {
            return f64::NEG_INFINITY;
        }
        let negative = self.limbs[LIMBS - 1] >> 63 == 1;
        let mut mag = *self;
        if negative {
            mag.negate();
        }
        let Some(top) = (0..LIMBS).rev().find(|&i| mag.limbs[i] != 0) else {
            return 0.0;
        };
        let h = top * 64 + 63 - mag.limbs[top].leading_zeros() as usize;
        let bits = if h <= 52 {
            // Subnormal, or the smallest normal binade: the integer is the
            // representation itself.
            mag.limbs[0]
        } else {
            let mut mantissa = mag.bits(h - 52, 53);
            let round = mag.bit(h - 53);
            let sticky = (0..h - 53).any(|i| mag.bit(i));
            let mut h = h;
            if round && (sticky || mantissa & 1 == 1) {
                mantissa += 1;
                if mantissa == 1 << 53 {
                    mantissa >>= 1;
                    h += 1;
                }
            }
            let field = h - 51;
            if field >= 0x7ff {
                return if negative { f64::NEG_INFINITY } else { f64::INFINITY };
            }
            ((field as u64) << 52) | (mantissa & ((1 << 52) - 1))
        };
        let value = f64::from_bits(bits);
        if negative {
            -value
        } else {
            value
        }
    }

    fn bit(&self, i: usize) -> bool {
        self.limbs[i / 64] >> (i % 64) & 1 == 1
    }

    /// `count ≤ 64` bits from bit `lo` up.
    fn bits(&self, lo: usize, count: usize) -> u64 {
        let (limb, offset) = (lo / 64, lo % 64);
        let mut v = self.limbs[limb] >> offset;
        if offset > 0 && limb + 1 < LIMBS {
            v |= self.limbs[limb + 1] << (64 - offset);
        }
        if count < 64 {
            v &= (1 << count) - 1;
        }
        v
    }
}

/// Exact addition of [`Exact`] values: commutative and associative.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExactSum;

impl Operation<Exact> for ExactSum {
    fn apply(&self, acc: &mut [Exact], other: &[Exact], _acc_left: bool) {
        for (a, b) in acc.iter_mut().zip(other) {
            a.add(b);
        }
    }
}

/// The correctly rounded sum of `values`, whatever their order.
pub fn exact_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut acc = Exact::zeroed();
    for v in values {
        acc.add(&Exact::from_f64(v));
    }
    acc.to_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_of_value() {
        for x in [
            0.0,
            1.0,
            -1.5,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 3.0,
            5e-324,
            -5e-324,
            f64::MAX,
            -f64::MAX,
            std::f64::consts::PI,
            1e300,
            -2.5e-310,
        ] {
            assert_eq!(Exact::from_f64(x).to_f64().to_bits(), x.to_bits(), "{x:e}");
        }
        assert!(Exact::from_f64(f64::NAN).to_f64().is_nan());
        assert_eq!(Exact::from_f64(f64::NEG_INFINITY).to_f64(), f64::NEG_INFINITY);
    }

    #[test]
    fn sums_are_exact_then_rounded_once() {
        // Naive left-to-right summation loses the 1.0 entirely.
        assert_eq!(exact_sum([1e100, 1.0, -1e100]), 1.0);
        assert_eq!(exact_sum([0.1, 0.2, 0.3]), exact_sum([0.3, 0.2, 0.1]));
        // Ties round to even: 2^53 + 1 is halfway between 2^53 and 2^53 + 2.
        assert_eq!(exact_sum([9007199254740992.0, 1.0]), 9007199254740992.0);
        assert_eq!(exact_sum([9007199254740992.0, 1.0, 1e-300]), 9007199254740994.0);
        assert_eq!(exact_sum([f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(exact_sum([f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        assert!(exact_sum([f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert_eq!(exact_sum([-3.0, 1.0]), -2.0);
        assert_eq!(exact_sum([]), 0.0);
    }

    #[test]
    fn order_does_not_matter() {
        let values: Vec<f64> =
            (0..1000).map(|i| ((i * 7919) % 1000) as f64 * 10f64.powi(i % 40 - 20)).collect();
        let forward = exact_sum(values.iter().copied());
        let backward = exact_sum(values.iter().rev().copied());
        assert_eq!(forward.to_bits(), backward.to_bits());
        let naive: f64 = values.iter().sum();
        assert!((naive - forward).abs() <= forward.abs() * 1e-12);
    }
}
