//! Sample chunks: many contiguous samples of one test encoded column by column into one blob.
//! One codec for both peers: the hub keeps its samples in chunks, the daemon's outbox keeps its
//! sample batches in them until the hub has them.
//!
//! A chunk covers `count` contiguous samples (whoever stores it keeps the first seq; seqs are
//! implicit). Its blob is
//!
//! ```text
//! byte     version (1), | 0x80 when the body is snappy-compressed (raw format)
//! varint   count (1 ..= MAX_CHUNK)
//! body     the columns, in SampleBatch order:
//!            test_time_s unix_time_s voltage_v current_a   float columns
//!            cycle step                                     integer columns
//!            charge/discharge capacity, charge/discharge energy  float columns
//!            temperature_c ambient_temperature_c plan_step  optional columns
//! ```
//!
//! - an integer column is a byte `order` and zigzag LEB128 varints: order 0 = one value
//!   (all equal), 1 = the first value then deltas, 2 = the first value, the first delta, then
//!   deltas of deltas (all wrapping i64 arithmetic, so any input is exact);
//! - a float column is a byte `mode` and an integer column (see `floats`): its IEEE bit
//!   patterns, decimal or binary fixed point, or residuals of a prediction;
//! - an optional column is a byte: 0 = absent in every sample, 1 = present in every sample
//!   (then its values), 2 = a bitmap of presence (LSB first) then the present values.
//!
//! Floats round-trip bit-exactly (NaN payloads and -0.0 too), None and Some stay apart. Any
//! bytes decode to columns or to an error, never a panic.
//!
//! # Layout
//! - `ints`: varints, integer columns, the reader.
//! - `floats`: the float columns' representations.
//! - `batch`: a [`SampleBatch`](crate::ingest::SampleBatch) to chunk and back, bit-exactly.

use std::ops::Range;

mod batch;
mod floats;
mod ints;

pub use batch::{batch_columns, batch_len, decode_sample_batch, encode_sample_batch};
use floats::{Predict, Refs};
use ints::{Reader, put_ints, put_varint};

/// Most samples in one chunk; a longer run is stored as several chunks.
pub const MAX_CHUNK: usize = 1 << 16;
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

/// Why bytes are not a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(pub String);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChunkError {}

impl From<&str> for ChunkError {
    fn from(s: &str) -> ChunkError {
        ChunkError(s.into())
    }
}

impl From<String> for ChunkError {
    fn from(s: String) -> ChunkError {
        ChunkError(s)
    }
}

/// An optional column of a chunk's input.
#[derive(Debug, Clone, Copy)]
pub enum Opt<'a, T> {
    /// No sample has it.
    Absent,
    /// Every sample has it.
    All(&'a [T]),
    /// Some samples have it.
    Mixed(&'a [Option<T>]),
}

/// The columns of the samples a chunk encodes, all of the same length.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// test_time_s, unix_time_s, voltage_v, current_a.
    pub head: [&'a [f64]; 4],
    pub cycle: &'a [u32],
    pub step: &'a [u32],
    /// charge/discharge capacity, charge/discharge energy.
    pub tail: [&'a [f64]; 4],
    pub temperature_c: Opt<'a, f64>,
    pub ambient_temperature_c: Opt<'a, f64>,
    pub plan_step: Opt<'a, u32>,
}

/// An encoded chunk with what a hub row keeps beside the blob.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub count: usize,
    /// Smallest and largest test time in the chunk (NaN-free input: validation).
    pub t_min: f64,
    pub t_max: f64,
    /// Bit 1: some sample has a cell temperature; bit 2: some has an ambient one.
    pub temps: i64,
    pub data: Vec<u8>,
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
    /// The value of sample `i`, if it has one.
    pub fn get(&self, i: usize) -> Option<T> {
        match self {
            Opt::Absent => None,
            Opt::All(v) => Some(v[i]),
            Opt::Mixed(v) => v[i],
        }
    }
}

impl<'a> Columns<'a> {
    pub fn len(&self) -> usize {
        self.head[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples `r` of these columns.
    pub fn slice(&self, r: Range<usize>) -> Columns<'a> {
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

/// An owned optional column.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OptVec<T> {
    #[default]
    Absent,
    All(Vec<T>),
    Mixed(Vec<Option<T>>),
}

impl<T: Copy> OptVec<T> {
    pub fn as_opt(&self) -> Opt<'_, T> {
        match self {
            OptVec::Absent => Opt::Absent,
            OptVec::All(v) => Opt::All(v),
            OptVec::Mixed(v) => Opt::Mixed(v),
        }
    }
}

/// Owned columns: what [`decode`] gives, and input that comes as rows.
#[derive(Debug, Clone, Default)]
pub struct OwnedColumns {
    pub head: [Vec<f64>; 4],
    pub cycle: Vec<u32>,
    pub step: Vec<u32>,
    pub tail: [Vec<f64>; 4],
    pub temperature_c: OptVec<f64>,
    pub ambient_temperature_c: OptVec<f64>,
    pub plan_step: OptVec<u32>,
}

impl OwnedColumns {
    pub fn columns(&self) -> Columns<'_> {
        Columns {
            head: [&self.head[0], &self.head[1], &self.head[2], &self.head[3]],
            cycle: &self.cycle,
            step: &self.step,
            tail: [&self.tail[0], &self.tail[1], &self.tail[2], &self.tail[3]],
            temperature_c: self.temperature_c.as_opt(),
            ambient_temperature_c: self.ambient_temperature_c.as_opt(),
            plan_step: self.plan_step.as_opt(),
        }
    }

    pub fn len(&self) -> usize {
        self.head[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes `c` (1 ..= [`MAX_CHUNK`] samples, every column as long) as one chunk.
pub fn encode(c: &Columns<'_>) -> Encoded {
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

/// Decodes a chunk into its columns (1 ..= [`MAX_CHUNK`] samples).
pub fn decode(data: &[u8]) -> Result<OwnedColumns, ChunkError> {
    let (&head, rest) = data.split_first().ok_or("empty chunk")?;
    if head & !COMPRESSED != VERSION {
        return Err(format!("chunk format {} is unknown", head & !COMPRESSED).into());
    }
    let mut r = Reader { buf: rest };
    let n = r.varint()?;
    if n == 0 || n > MAX_CHUNK as u64 {
        return Err(format!("chunk claims {n} samples").into());
    }
    let n = n as usize;
    let unpacked;
    if head & COMPRESSED != 0 {
        let len = snap::raw::decompress_len(r.buf).map_err(|e| e.to_string())?;
        if len > n * 200 + 1024 {
            return Err(format!("compressed chunk body claims {len} bytes").into());
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
    let temperature_c = r.optional(n, |r, k, v: &mut Vec<f64>| {
        r.floats(k, v, &mut ints, Predict::None, None)
    })?;
    let mut ints2 = Vec::new();
    let ambient_temperature_c = r.optional(n, |r, k, v: &mut Vec<f64>| {
        r.floats(k, v, &mut ints2, Predict::None, None)
    })?;
    let mut plan = Vec::new();
    let plan_step = r.optional(n, |r, k, v: &mut Vec<u32>| {
        r.ints(k, &mut plan)?;
        // Wrapping as the hub always read them: any bytes decode.
        v.extend(plan.iter().map(|&p| p as u32));
        Ok(())
    })?;
    if !r.buf.is_empty() {
        return Err(format!("{} bytes after the chunk's columns", r.buf.len()).into());
    }
    let narrow = |v: Vec<i64>| v.into_iter().map(|x| x as u32).collect();
    Ok(OwnedColumns {
        head: head_cols,
        cycle: narrow(cycle),
        step: narrow(step),
        tail: tail_cols,
        temperature_c,
        ambient_temperature_c,
        plan_step,
    })
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

impl Reader<'_> {
    fn optional<T: Copy>(
        &mut self,
        n: usize,
        mut values: impl FnMut(&mut Self, usize, &mut Vec<T>) -> Result<(), ChunkError>,
    ) -> Result<OptVec<T>, ChunkError> {
        match self.byte()? {
            0 => Ok(OptVec::Absent),
            1 => {
                let mut v = Vec::with_capacity(n);
                values(self, n, &mut v)?;
                Ok(OptVec::All(v))
            }
            2 => {
                let len = n.div_ceil(8);
                if self.buf.len() < len {
                    return Err("chunk ends in a presence bitmap".into());
                }
                let (bits, rest) = self.buf.split_at(len);
                self.buf = rest;
                let present = |i: usize| bits[i / 8] >> (i % 8) & 1 == 1;
                let k = (0..n).filter(|&i| present(i)).count();
                let mut v = Vec::with_capacity(k);
                values(self, k, &mut v)?;
                let mut at = v.into_iter();
                Ok(OptVec::Mixed(
                    (0..n)
                        .map(|i| if present(i) { at.next() } else { None })
                        .collect(),
                ))
            }
            p => Err(format!("optional column presence {p} is unknown").into()),
        }
    }
}

#[cfg(test)]
mod tests;
