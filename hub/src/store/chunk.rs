//! Sample chunks: many contiguous samples of one test encoded column by column into one blob,
//! written once for both backends.
//!
//! A chunk covers the seqs `first_seq .. first_seq + count` (the row that holds it keeps
//! `first_seq`; seqs are implicit). Its blob is
//!
//! ```text
//! byte     version (1), | 0x80 when the body is snappy-compressed (raw format)
//! varint   count (1 ..= MAX_CHUNK)
//! body     the columns, in SampleRow order:
//!            test_time_s unix_time_s voltage_v current_a   float columns
//!            cycle step                                     integer columns
//!            charge/discharge capacity, charge/discharge energy  float columns
//!            temperature_c ambient_temperature_c plan_step  optional columns
//! ```
//!
//! - an integer column is a byte `order` and zigzag LEB128 varints: order 0 = one value
//!   (all equal), 1 = the first value then deltas, 2 = the first value, the first delta, then
//!   deltas of deltas (all wrapping i64 arithmetic, so any input is exact);
//! - a float column is a byte `mode`: 0 = its IEEE bit patterns as an integer column (a steady
//!   ramp, such as a coulomb count, has deltas of deltas of 0 or ±1 ulp), or `d` in 1..=19 =
//!   every value is exactly `k / 10^(d-1)` for an integer `k` (a reading a device sent as
//!   decimal text), and the `k` follow as an integer column;
//! - an optional column is a byte: 0 = absent in every sample, 1 = present in every sample
//!   (then its values), 2 = a bitmap of presence (LSB first) then the present values.
//!
//! Floats round-trip bit-exactly (NaN payloads and -0.0 too), None and Some stay apart. Any
//! bytes decode to a value or to an error, never a panic.

use std::ops::Range;

use super::SampleRow;

#[path = "chunk_floats.rs"]
mod floats;
use floats::{Predict, Refs};

/// Most samples in one chunk; a longer run is stored as several chunks.
pub(crate) const MAX_CHUNK: usize = 1 << 16;
/// Format version in the first byte.
const VERSION: u8 = 1;
const COMPRESSED: u8 = 0x80;
/// Largest decimal exponent tried; the check refuses whatever does not fit in |k| < 2^53.
const MAX_DECIMALS: u8 = 18;
/// 10^d, exact (5^18 < 2^53), the same on every machine.
const POW10: [f64; 19] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18,
];

/// An optional column of a chunk's input.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Opt<'a, T> {
    /// No sample has it.
    Absent,
    /// Every sample has it.
    All(&'a [T]),
    /// Some samples have it.
    Mixed(&'a [Option<T>]),
}

/// The columns of the samples a chunk encodes, all of the same length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Columns<'a> {
    /// test_time_s, unix_time_s, voltage_v, current_a.
    pub(crate) head: [&'a [f64]; 4],
    pub(crate) cycle: &'a [u32],
    pub(crate) step: &'a [u32],
    /// charge/discharge capacity, charge/discharge energy.
    pub(crate) tail: [&'a [f64]; 4],
    pub(crate) temperature_c: Opt<'a, f64>,
    pub(crate) ambient_temperature_c: Opt<'a, f64>,
    pub(crate) plan_step: Opt<'a, u32>,
}

/// An encoded chunk with what its row keeps beside the blob.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Encoded {
    pub(crate) count: usize,
    /// Smallest and largest test time in the chunk (NaN-free input: validation).
    pub(crate) t_min: f64,
    pub(crate) t_max: f64,
    /// Bit 1: some sample has a cell temperature; bit 2: some has an ambient one.
    pub(crate) temps: i64,
    pub(crate) data: Vec<u8>,
}

impl<'a, T: Copy> Opt<'a, T> {
    fn slice(self, r: Range<usize>) -> Opt<'a, T> {
        match self {
            Opt::Absent => Opt::Absent,
            Opt::All(v) => Opt::All(&v[r]),
            Opt::Mixed(v) => Opt::Mixed(&v[r]),
        }
    }

    fn any(&self) -> bool {
        match self {
            Opt::Absent => false,
            Opt::All(v) => !v.is_empty(),
            Opt::Mixed(v) => v.iter().any(Option::is_some),
        }
    }
}

impl<T: Copy> Opt<'_, T> {
    fn get(&self, i: usize) -> Option<T> {
        match self {
            Opt::Absent => None,
            Opt::All(v) => Some(v[i]),
            Opt::Mixed(v) => v[i],
        }
    }
}

impl<'a> Columns<'a> {
    /// Sample `i`, numbered `seq`.
    pub(crate) fn row(&self, i: usize, seq: u64) -> SampleRow {
        SampleRow {
            seq,
            test_time_s: self.head[0][i],
            unix_time_s: self.head[1][i],
            voltage_v: self.head[2][i],
            current_a: self.head[3][i],
            cycle: self.cycle[i],
            step: self.step[i],
            charge_capacity_ah: self.tail[0][i],
            discharge_capacity_ah: self.tail[1][i],
            charge_energy_wh: self.tail[2][i],
            discharge_energy_wh: self.tail[3][i],
            temperature_c: self.temperature_c.get(i),
            ambient_temperature_c: self.ambient_temperature_c.get(i),
            plan_step: self.plan_step.get(i),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.head[0].len()
    }

    /// The samples `r` of these columns.
    pub(crate) fn slice(&self, r: Range<usize>) -> Columns<'a> {
        Columns {
            head: self.head.map(|c| &c[r.clone()]),
            cycle: &self.cycle[r.clone()],
            step: &self.step[r.clone()],
            tail: self.tail.map(|c| &c[r.clone()]),
            temperature_c: self.temperature_c.slice(r.clone()),
            ambient_temperature_c: self.ambient_temperature_c.slice(r.clone()),
            plan_step: self.plan_step.slice(r),
        }
    }
}

/// Owned columns, for input that comes as rows (the migration, tests).
#[derive(Debug, Default)]
pub(crate) struct OwnedColumns {
    head: [Vec<f64>; 4],
    cycle: Vec<u32>,
    step: Vec<u32>,
    tail: [Vec<f64>; 4],
    temperature_c: Vec<Option<f64>>,
    ambient_temperature_c: Vec<Option<f64>>,
    plan_step: Vec<Option<u32>>,
}

impl OwnedColumns {
    pub(crate) fn from_rows(rows: &[SampleRow]) -> OwnedColumns {
        let mut c = OwnedColumns::default();
        for s in rows {
            let head = [s.test_time_s, s.unix_time_s, s.voltage_v, s.current_a];
            for (col, v) in c.head.iter_mut().zip(head) {
                col.push(v);
            }
            c.cycle.push(s.cycle);
            c.step.push(s.step);
            let tail = [
                s.charge_capacity_ah,
                s.discharge_capacity_ah,
                s.charge_energy_wh,
                s.discharge_energy_wh,
            ];
            for (col, v) in c.tail.iter_mut().zip(tail) {
                col.push(v);
            }
            c.temperature_c.push(s.temperature_c);
            c.ambient_temperature_c.push(s.ambient_temperature_c);
            c.plan_step.push(s.plan_step);
        }
        c
    }

    pub(crate) fn columns(&self) -> Columns<'_> {
        Columns {
            head: [&self.head[0], &self.head[1], &self.head[2], &self.head[3]],
            cycle: &self.cycle,
            step: &self.step,
            tail: [&self.tail[0], &self.tail[1], &self.tail[2], &self.tail[3]],
            temperature_c: Opt::Mixed(&self.temperature_c),
            ambient_temperature_c: Opt::Mixed(&self.ambient_temperature_c),
            plan_step: Opt::Mixed(&self.plan_step),
        }
    }
}

/// Encodes `c` (1 ..= [`MAX_CHUNK`] samples) as one chunk.
pub(crate) fn encode(c: &Columns<'_>) -> Encoded {
    let n = c.len();
    debug_assert!((1..=MAX_CHUNK).contains(&n));
    let mut body = Vec::with_capacity(n * 16 + 64);
    let (mut ints, mut alt) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let refs = Refs {
        t: c.head[0],
        v: c.head[2],
        i: c.head[3],
    };
    for (k, col) in c.head.into_iter().enumerate() {
        let predict = if k == 1 {
            Predict::FromTestTime
        } else {
            Predict::None
        };
        floats::put(&mut body, col, (&mut ints, &mut alt), predict, Some(&refs));
    }
    for col in [c.cycle, c.step] {
        ints.clear();
        ints.extend(col.iter().map(|&v| i64::from(v)));
        put_ints(&mut body, &ints);
    }
    for (k, col) in c.tail.into_iter().enumerate() {
        let predict = Predict::Integral {
            power: k >= 2,
            discharge: k % 2 == 1,
        };
        floats::put(&mut body, col, (&mut ints, &mut alt), predict, Some(&refs));
    }
    let mut scratch = (Vec::new(), Vec::new());
    for col in [c.temperature_c, c.ambient_temperature_c] {
        put_optional(&mut body, col, &mut scratch, |b, v, (s, a)| {
            floats::put(b, v, (s, a), Predict::None, None)
        });
    }
    put_optional(
        &mut body,
        c.plan_step,
        &mut scratch,
        |b, v: &[u32], (s, _)| {
            s.clear();
            s.extend(v.iter().map(|&p| i64::from(p)));
            put_ints(b, s)
        },
    );

    let mut data = Vec::with_capacity(body.len() / 2 + 16);
    let compressed = if body.len() > 64 {
        snap::raw::Encoder::new()
            .compress_vec(&body)
            .ok()
            .filter(|z| z.len() < body.len() - body.len() / 8)
    } else {
        None
    };
    data.push(VERSION | if compressed.is_some() { COMPRESSED } else { 0 });
    put_varint(&mut data, n as u64);
    data.extend_from_slice(compressed.as_deref().unwrap_or(&body));

    let times = c.head[0];
    let (t_min, t_max) = times
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| {
            (lo.min(t), hi.max(t))
        });
    let temps = i64::from(c.temperature_c.any()) | (i64::from(c.ambient_temperature_c.any()) << 1);
    Encoded {
        count: n,
        t_min,
        t_max,
        temps,
        data,
    }
}

/// Decodes a chunk whose first sample is `first_seq`, appending its samples to `out`.
pub(crate) fn decode(data: &[u8], first_seq: u64, out: &mut Vec<SampleRow>) -> Result<(), String> {
    let (&head, rest) = data.split_first().ok_or("empty chunk")?;
    if head & !COMPRESSED != VERSION {
        return Err(format!("chunk format {} is unknown", head & !COMPRESSED));
    }
    let mut r = Reader { buf: rest };
    let n = r.varint()?;
    if n == 0 || n > MAX_CHUNK as u64 {
        return Err(format!("chunk claims {n} samples"));
    }
    let n = n as usize;
    if first_seq
        .checked_add(n as u64 - 1)
        .is_none_or(|l| l > i64::MAX as u64)
    {
        return Err("chunk seqs out of range".into());
    }
    let unpacked;
    if head & COMPRESSED != 0 {
        let len = snap::raw::decompress_len(r.buf).map_err(|e| e.to_string())?;
        if len > n * 200 + 1024 {
            return Err(format!("compressed chunk body claims {len} bytes"));
        }
        unpacked = snap::raw::Decoder::new()
            .decompress_vec(r.buf)
            .map_err(|e| format!("chunk body does not decompress: {e}"))?;
        r = Reader { buf: &unpacked };
    }
    let mut ints = Vec::with_capacity(n);
    let mut head_cols: [Vec<f64>; 4] = Default::default();
    for k in 0..4 {
        let (done, rest) = head_cols.split_at_mut(k);
        let refs = Refs {
            t: done.first().map_or(&[], Vec::as_slice),
            v: &[],
            i: &[],
        };
        let predict = if k == 1 {
            Predict::FromTestTime
        } else {
            Predict::None
        };
        r.floats(n, &mut rest[0], &mut ints, predict, Some(&refs))?;
    }
    let (mut cycle, mut step) = (Vec::new(), Vec::new());
    r.ints(n, &mut cycle)?;
    r.ints(n, &mut step)?;
    let mut tail_cols: [Vec<f64>; 4] = Default::default();
    let refs = Refs {
        t: &head_cols[0],
        v: &head_cols[2],
        i: &head_cols[3],
    };
    for (k, col) in tail_cols.iter_mut().enumerate() {
        let predict = Predict::Integral {
            power: k >= 2,
            discharge: k % 2 == 1,
        };
        r.floats(n, col, &mut ints, predict, Some(&refs))?;
    }
    let temperature = r.optional(n, |r, k, v: &mut Vec<f64>| {
        r.floats(k, v, &mut ints, Predict::None, None)
    })?;
    let mut ints2 = Vec::new();
    let ambient = r.optional(n, |r, k, v: &mut Vec<f64>| {
        r.floats(k, v, &mut ints2, Predict::None, None)
    })?;
    let plan = r.optional(n, |r, k, v: &mut Vec<i64>| r.ints(k, v))?;
    if !r.buf.is_empty() {
        return Err(format!("{} bytes after the chunk's columns", r.buf.len()));
    }
    out.reserve(n);
    for i in 0..n {
        out.push(SampleRow {
            seq: first_seq + i as u64,
            test_time_s: head_cols[0][i],
            unix_time_s: head_cols[1][i],
            voltage_v: head_cols[2][i],
            current_a: head_cols[3][i],
            cycle: cycle[i] as u32,
            step: step[i] as u32,
            charge_capacity_ah: tail_cols[0][i],
            discharge_capacity_ah: tail_cols[1][i],
            charge_energy_wh: tail_cols[2][i],
            discharge_energy_wh: tail_cols[3][i],
            temperature_c: temperature.get(i),
            ambient_temperature_c: ambient.get(i),
            plan_step: plan.get(i).map(|p| p as u32),
        });
    }
    Ok(())
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of `v` as a zigzag varint.
fn varint_len(v: i64) -> usize {
    let bits = 64 - zigzag(v).leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// The order an integer column is written in (see the module doc), and its size in bytes.
fn int_plan(v: &[i64]) -> (u8, usize) {
    let (mut size1, mut size2) = (0usize, 0usize);
    let mut constant = true;
    let mut prev_d = 0i64;
    for i in 1..v.len() {
        let d = v[i].wrapping_sub(v[i - 1]);
        constant &= d == 0;
        size1 += varint_len(d);
        size2 += varint_len(if i == 1 { d } else { d.wrapping_sub(prev_d) });
        prev_d = d;
    }
    let head = 1 + v.first().map_or(0, |&f| varint_len(f));
    if constant {
        (0, head)
    } else if size2 < size1 {
        (2, head + size2)
    } else {
        (1, head + size1)
    }
}

/// An integer column (see the module doc), order chosen by size.
fn put_ints(out: &mut Vec<u8>, v: &[i64]) {
    let Some(&first) = v.first() else {
        out.push(0);
        return;
    };
    let (order, _) = int_plan(v);
    out.push(order);
    put_varint(out, zigzag(first));
    if order == 0 {
        return;
    }
    let mut prev_d = 0i64;
    for i in 1..v.len() {
        let d = v[i].wrapping_sub(v[i - 1]);
        let x = if order == 2 && i > 1 {
            d.wrapping_sub(prev_d)
        } else {
            d
        };
        put_varint(out, zigzag(x));
        prev_d = d;
    }
}

/// The smallest `d` such that every value is exactly `k / 10^d`, |k| < 2^53.
fn decimals(v: &[f64]) -> Option<u8> {
    let first = *v.first()?;
    (0..=MAX_DECIMALS).find(|&d| {
        let p = POW10[usize::from(d)];
        let exact = |x: f64| {
            let k = (x * p).round();
            // As the decoder computes it: through an integer, which has no -0.
            k.abs() < 9_007_199_254_740_992.0 && ((k as i64) as f64 / p).to_bits() == x.to_bits()
        };
        exact(first) && v.iter().all(|&x| exact(x))
    })
}

fn put_optional<T: Copy, S>(
    out: &mut Vec<u8>,
    col: Opt<'_, T>,
    scratch: &mut S,
    put: impl Fn(&mut Vec<u8>, &[T], &mut S),
) {
    match col {
        Opt::Absent => out.push(0),
        Opt::All(v) => {
            out.push(1);
            put(out, v, scratch);
        }
        Opt::Mixed(v) => {
            let present: Vec<T> = v.iter().flatten().copied().collect();
            if present.is_empty() {
                out.push(0);
            } else if present.len() == v.len() {
                out.push(1);
                put(out, &present, scratch);
            } else {
                out.push(2);
                let mut bits = vec![0u8; v.len().div_ceil(8)];
                for (i, x) in v.iter().enumerate() {
                    if x.is_some() {
                        bits[i / 8] |= 1 << (i % 8);
                    }
                }
                out.extend_from_slice(&bits);
                put(out, &present, scratch);
            }
        }
    }
}

/// A decoded optional column.
enum Decoded<T> {
    Absent,
    All(Vec<T>),
    /// Presence bitmap, and for each sample the index of its value.
    Mixed(Vec<u8>, Vec<T>, Vec<u32>),
}

impl<T: Copy> Decoded<T> {
    fn get(&self, i: usize) -> Option<T> {
        match self {
            Decoded::Absent => None,
            Decoded::All(v) => Some(v[i]),
            Decoded::Mixed(bits, v, at) => {
                (bits[i / 8] >> (i % 8) & 1 == 1).then(|| v[at[i] as usize])
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.buf.split_first().ok_or("chunk ends early")?;
        self.buf = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes in chunk".into())
    }

    /// An integer column of `n` values into `out` (cleared first).
    fn ints(&mut self, n: usize, out: &mut Vec<i64>) -> Result<(), String> {
        out.clear();
        let order = self.byte()?;
        if order > 2 {
            return Err(format!("integer column order {order} is unknown"));
        }
        if n == 0 {
            return Ok(());
        }
        let first = unzigzag(self.varint()?);
        out.reserve(n);
        out.push(first);
        if order == 0 {
            out.resize(n, first);
            return Ok(());
        }
        let (mut prev, mut d) = (first, 0i64);
        for i in 1..n {
            let x = unzigzag(self.varint()?);
            d = if order == 2 && i > 1 {
                d.wrapping_add(x)
            } else {
                x
            };
            prev = prev.wrapping_add(d);
            out.push(prev);
        }
        Ok(())
    }

    fn optional<T: Copy>(
        &mut self,
        n: usize,
        mut values: impl FnMut(&mut Self, usize, &mut Vec<T>) -> Result<(), String>,
    ) -> Result<Decoded<T>, String> {
        match self.byte()? {
            0 => Ok(Decoded::Absent),
            1 => {
                let mut v = Vec::new();
                values(self, n, &mut v)?;
                Ok(Decoded::All(v))
            }
            2 => {
                let len = n.div_ceil(8);
                if self.buf.len() < len {
                    return Err("chunk ends in a presence bitmap".into());
                }
                let (bits, rest) = self.buf.split_at(len);
                self.buf = rest;
                let mut at = Vec::with_capacity(n);
                let mut k = 0u32;
                for i in 0..n {
                    at.push(k);
                    k += u32::from(bits[i / 8] >> (i % 8) & 1);
                }
                let mut v = Vec::new();
                values(self, k as usize, &mut v)?;
                Ok(Decoded::Mixed(bits.to_vec(), v, at))
            }
            p => Err(format!("optional column presence {p} is unknown")),
        }
    }
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
