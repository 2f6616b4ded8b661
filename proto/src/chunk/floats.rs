//! The float columns of a chunk: each as the smallest of a few exact representations, every
//! one an integer column (`put_ints`) after a mode byte:
//!
//! - 0: the IEEE bit patterns (a steady ramp has deltas of deltas near 0);
//! - 1..=19: decimal, every value exactly `k / 10^(mode-1)` (readings sent as decimal text);
//! - 32: binary fixed point, every value exactly `k * 2^e` (a varint `e` first): times that are
//!   differences of Unix times keep the Unix time's resolution;
//! - 33: predicted, then the residuals in ulps (bits of the value minus bits of the prediction,
//!   wrapping): the Unix time from the test time (plus an offset, 8 bytes first), a capacity
//!   or energy as the protocol engine integrates the current or power over test time from the
//!   sample before (the first value's bits stand for themselves).
//!
//! Predictions use only IEEE operations in a fixed order, so the decoder recomputes them
//! exactly; a prediction that misses only costs bytes, never exactness.

use super::ints::{Reader, int_plan, put_ints_as, put_varint, unzigzag, zigzag};
use super::{ChunkError, MAX_DECIMALS, POW10, decimals};

/// What a column can be predicted from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Predict {
    None,
    /// The Unix time: the test time plus a constant.
    FromTestTime,
    /// A cumulative capacity (`power` false) or energy (true), charge or `discharge`.
    Integral {
        power: bool,
        discharge: bool,
    },
}

/// The columns predictions read: test time, voltage, current (the chunk's head, which the
/// decoder has decoded before the columns that refer to it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Refs<'a> {
    pub(super) t: &'a [f64],
    pub(super) v: &'a [f64],
    pub(super) i: &'a [f64],
}

const BITS: u8 = 0;
const POW2: u8 = 32;
const PREDICTED: u8 = 33;

/// As the protocol engine splits a trapezoid of `a`..`b` over `h` hours into what lies above
/// and below zero (`cyclerd_protocols` engine, `split_trapezoid`).
fn split_trapezoid(a: f64, b: f64, h: f64) -> (f64, f64) {
    if a >= 0.0 && b >= 0.0 {
        ((a + b) / 2.0 * h, 0.0)
    } else if a <= 0.0 && b <= 0.0 {
        (0.0, -(a + b) / 2.0 * h)
    } else {
        let f = a.abs() / (a.abs() + b.abs());
        let first = a.abs() * f * h / 2.0;
        let second = b.abs() * (1.0 - f) * h / 2.0;
        if a > 0.0 {
            (first, second)
        } else {
            (second, first)
        }
    }
}

/// The prediction of value `k` (>= 1) of an integral column from value `k - 1`.
fn integral(refs: &Refs<'_>, power: bool, discharge: bool, prev: f64, k: usize) -> f64 {
    let dt = refs.t[k] - refs.t[k - 1];
    // Repeated or out-of-order timestamps carry no charge (as in the engine).
    if dt.is_nan() || dt <= 0.0 {
        return prev;
    }
    let (a, b) = if power {
        (refs.v[k - 1] * refs.i[k - 1], refs.v[k] * refs.i[k])
    } else {
        (refs.i[k - 1], refs.i[k])
    };
    let (q_in, q_out) = split_trapezoid(a, b, dt / 3600.0);
    prev + if discharge { q_out } else { q_in }
}

fn residual(x: f64, predicted: f64) -> i64 {
    (x.to_bits() as i64).wrapping_sub(predicted.to_bits() as i64)
}

fn apply(predicted: f64, r: i64) -> f64 {
    f64::from_bits((predicted.to_bits() as i64).wrapping_add(r) as u64)
}

/// `e` such that every value is `k * 2^e` with |k| < 2^53, the largest such; `None` for
/// -0.0, NaN, infinities, all zeros, or a spread too wide.
fn binary_exponent(v: &[f64]) -> Option<i32> {
    let mut e = i32::MAX;
    let mut top = i32::MIN;
    for &x in v {
        if x == 0.0 && x.is_sign_positive() {
            continue;
        }
        if !x.is_finite() || x == 0.0 {
            return None;
        }
        let bits = x.to_bits();
        let field = ((bits >> 52) & 0x7ff) as i32;
        let mant = bits & ((1 << 52) - 1);
        let (sig, exp) = if field == 0 {
            (mant, -1074)
        } else {
            (mant | 1 << 52, field - 1075)
        };
        e = e.min(exp + sig.trailing_zeros() as i32);
        top = top.max(exp + 64 - sig.leading_zeros() as i32);
    }
    (e != i32::MAX && top - e <= 53).then_some(e)
}

fn pow2(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1 << (e + 1074))
    }
}

/// Writes float column `v` in its smallest representation; `ints` and `alt` are scratch.
pub(super) fn put(
    out: &mut Vec<u8>,
    v: &[f64],
    (ints, alt): (&mut Vec<i64>, &mut Vec<i64>),
    predict: Predict,
    refs: Option<&Refs<'_>>,
) {
    // The bit patterns, always possible.
    ints.clear();
    ints.extend(v.iter().map(|&x| x.to_bits() as i64));
    let (mut mode, mut header) = (BITS, Vec::new());
    // The order each candidate's integers are written in comes with its size.
    let (mut order, mut best) = int_plan(ints);
    let mut consider = |m: u8, h: Vec<u8>, alt: &mut Vec<i64>, ints: &mut Vec<i64>| {
        let (o, s) = int_plan(alt);
        let s = s + h.len();
        if s < best {
            best = s;
            order = o;
            mode = m;
            header = h;
            std::mem::swap(ints, alt);
        }
    };
    if let Some(d) = decimals(v) {
        let p = POW10[usize::from(d)];
        alt.clear();
        alt.extend(v.iter().map(|&x| (x * p).round() as i64));
        consider(d + 1, Vec::new(), alt, ints);
    } else if let Some(e) = binary_exponent(v) {
        let p = pow2(-e.max(-1023));
        alt.clear();
        if e >= -1023 {
            alt.extend(v.iter().map(|&x| (x * p) as i64));
        } else {
            // Subnormal steps: scale in two exact moves.
            let q = pow2(-(e + 1023));
            alt.extend(v.iter().map(|&x| (x * p * q) as i64));
        }
        let mut h = Vec::new();
        put_varint(&mut h, zigzag(i64::from(e)));
        consider(POW2, h, alt, ints);
    }
    if let (Some(refs), Some(&first)) = (refs, v.first()) {
        alt.clear();
        let h = match predict {
            Predict::None => None,
            Predict::FromTestTime => {
                let off = first - refs.t[0];
                alt.extend(v.iter().zip(refs.t).map(|(&x, &t)| residual(x, t + off)));
                Some(off.to_bits().to_le_bytes().to_vec())
            }
            Predict::Integral { power, discharge } => {
                alt.push(first.to_bits() as i64);
                for k in 1..v.len() {
                    let p = integral(refs, power, discharge, v[k - 1], k);
                    alt.push(residual(v[k], p));
                }
                Some(Vec::new())
            }
        };
        if let Some(h) = h {
            consider(PREDICTED, h, alt, ints);
        }
    }
    out.push(mode);
    out.extend_from_slice(&header);
    put_ints_as(out, ints, order);
}

impl Reader<'_> {
    /// A float column of `n` values into `out` (cleared first); `ints` is scratch.
    pub(super) fn floats(
        &mut self,
        n: usize,
        out: &mut Vec<f64>,
        ints: &mut Vec<i64>,
        predict: Predict,
        refs: Option<&Refs<'_>>,
    ) -> Result<(), ChunkError> {
        let mode = self.byte()?;
        out.clear();
        match mode {
            BITS => {
                self.ints(n, ints)?;
                out.extend(ints.iter().map(|&b| f64::from_bits(b as u64)));
            }
            1..=19 if mode <= MAX_DECIMALS + 1 => {
                self.ints(n, ints)?;
                let p = POW10[usize::from(mode - 1)];
                out.extend(ints.iter().map(|&k| k as f64 / p));
            }
            POW2 => {
                let e = unzigzag(self.varint()?);
                // Every exponent the encoder can write: a finest step of 2^-1074 (subnormal)
                // up to 2^1023 (the largest power of two a double holds).
                if !(-1074..=1023).contains(&e) {
                    return Err(format!("binary exponent {e} out of range").into());
                }
                self.ints(n, ints)?;
                let p = pow2(e as i32);
                out.extend(ints.iter().map(|&k| k as f64 * p));
            }
            PREDICTED => {
                let refs = match (predict, refs) {
                    (Predict::None, _) | (_, None) => {
                        return Err("a predicted float column where none can be".into());
                    }
                    (_, Some(refs)) => refs,
                };
                if refs.t.len() != n {
                    return Err("a predicted float column of another length".into());
                }
                match predict {
                    Predict::FromTestTime => {
                        let off = f64::from_bits(u64::from_le_bytes(self.take::<8>()?));
                        self.ints(n, ints)?;
                        out.extend(ints.iter().zip(refs.t).map(|(&r, &t)| apply(t + off, r)));
                    }
                    Predict::Integral { power, discharge } => {
                        self.ints(n, ints)?;
                        for (k, &r) in ints.iter().enumerate() {
                            let x = match out.last() {
                                None => f64::from_bits(r as u64),
                                Some(&prev) => apply(integral(refs, power, discharge, prev, k), r),
                            };
                            out.push(x);
                        }
                    }
                    Predict::None => unreachable!("refused above"),
                }
            }
            _ => return Err(format!("float column mode {mode} is unknown").into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_exponent_is_the_finest_step_of_the_values() {
        assert_eq!(binary_exponent(&[0.5, 1.25, 3.0]), Some(-2));
        assert_eq!(binary_exponent(&[0.0, 2.0]), Some(1));
        assert_eq!(binary_exponent(&[-0.0, 2.0]), None);
        assert_eq!(binary_exponent(&[1e300, 1e-300]), None);
        assert_eq!(binary_exponent(&[5e-324]), Some(-1074));
    }
}
