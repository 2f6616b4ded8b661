//! A [`SampleBatch`] as one blob and back, bit-exactly (the daemon's outbox keeps its batches
//! so until the hub has them):
//!
//! ```text
//! varint  length of test_id, then its UTF-8 bytes
//! varint  first_seq
//! chunk   the batch's columns (an optional column: absent = empty, present = one per sample)
//! ```

use super::ints::{Reader, put_varint};
use super::{ChunkError, Columns, MAX_CHUNK, Opt, OptVec, decode, encode};
use crate::ingest::SampleBatch;

/// The number of samples of `b` when its columns agree on it: every column as long, the
/// optional ones empty or as long. `None` for a batch whose columns differ in length (reading
/// it would index past a column's end).
pub fn batch_len(b: &SampleBatch) -> Option<usize> {
    let n = b.test_time_s.len();
    let full = [
        b.unix_time_s.len(),
        b.voltage_v.len(),
        b.current_a.len(),
        b.cycle.len(),
        b.step.len(),
        b.charge_capacity_ah.len(),
        b.discharge_capacity_ah.len(),
        b.charge_energy_wh.len(),
        b.discharge_energy_wh.len(),
    ];
    let optional = [
        b.temperature_c.len(),
        b.ambient_temperature_c.len(),
        b.plan_step.len(),
    ];
    (full.iter().all(|&l| l == n) && optional.iter().all(|&l| l == 0 || l == n)).then_some(n)
}

/// The columns of `b` as they are, when its shape fits a chunk: 1 ..= [`MAX_CHUNK`] samples,
/// every column as long, the optional ones empty or as long. `None` otherwise.
pub fn batch_columns(b: &SampleBatch) -> Option<Columns<'_>> {
    if !batch_len(b).is_some_and(|n| (1..=MAX_CHUNK).contains(&n)) {
        return None;
    }
    fn opt<T>(v: &[T]) -> Opt<'_, T> {
        if v.is_empty() {
            Opt::Absent
        } else {
            Opt::All(v)
        }
    }
    Some(Columns {
        head: [&b.test_time_s, &b.unix_time_s, &b.voltage_v, &b.current_a],
        cycle: &b.cycle,
        step: &b.step,
        tail: [
            &b.charge_capacity_ah,
            &b.discharge_capacity_ah,
            &b.charge_energy_wh,
            &b.discharge_energy_wh,
        ],
        temperature_c: opt(&b.temperature_c),
        ambient_temperature_c: opt(&b.ambient_temperature_c),
        plan_step: opt(&b.plan_step),
    })
}

/// `b` as one blob; `None` when its shape does not fit a chunk ([`batch_columns`]).
pub fn encode_sample_batch(b: &SampleBatch) -> Option<Vec<u8>> {
    let cols = batch_columns(b)?;
    let chunk = encode(&cols).data;
    let mut out = Vec::with_capacity(b.test_id.len() + chunk.len() + 12);
    put_varint(&mut out, b.test_id.len() as u64);
    out.extend_from_slice(b.test_id.as_bytes());
    put_varint(&mut out, b.first_seq);
    out.extend_from_slice(&chunk);
    Some(out)
}

/// The batch [`encode_sample_batch`] made `data` from; any other bytes are an error.
pub fn decode_sample_batch(data: &[u8]) -> Result<SampleBatch, ChunkError> {
    let mut r = Reader { buf: data };
    let len = usize::try_from(r.varint()?).map_err(|_| "test id length out of range")?;
    let test_id = std::str::from_utf8(r.bytes(len)?)
        .map_err(|_| "test id is not UTF-8")?
        .to_string();
    let first_seq = r.varint()?;
    let c = decode(r.buf)?;
    let whole = |v: OptVec<f64>| match v {
        OptVec::Absent => Ok(Vec::new()),
        OptVec::All(v) => Ok(v),
        OptVec::Mixed(_) => Err(ChunkError::from(
            "a partly present column, which no sample batch has",
        )),
    };
    let [test_time_s, unix_time_s, voltage_v, current_a] = c.head;
    let [
        charge_capacity_ah,
        discharge_capacity_ah,
        charge_energy_wh,
        discharge_energy_wh,
    ] = c.tail;
    Ok(SampleBatch {
        test_id,
        first_seq,
        test_time_s,
        unix_time_s,
        voltage_v,
        current_a,
        cycle: c.cycle,
        step: c.step,
        charge_capacity_ah,
        discharge_capacity_ah,
        charge_energy_wh,
        discharge_energy_wh,
        temperature_c: whole(c.temperature_c)?,
        ambient_temperature_c: whole(c.ambient_temperature_c)?,
        plan_step: match c.plan_step {
            OptVec::Absent => Vec::new(),
            OptVec::All(v) => v,
            OptVec::Mixed(_) => {
                return Err("a partly present column, which no sample batch has".into());
            }
        },
    })
}
