//! The hub's side of the sample chunk codec ([`cyclerd_proto::chunk`], shared with the
//! daemon's outbox): a chunk's samples as rows, numbered from the seq its row keeps.

use cyclerd_proto::chunk::OptVec;
pub(crate) use cyclerd_proto::chunk::{Columns, Encoded, MAX_CHUNK, Opt, OwnedColumns, encode};

use super::SampleRow;

/// Owned columns of `rows`, for input that comes as rows (the migration, merges, tests).
pub(crate) fn from_rows(rows: &[SampleRow]) -> OwnedColumns {
    let mut c = OwnedColumns::default();
    let (mut temperature, mut ambient, mut plan) = (Vec::new(), Vec::new(), Vec::new());
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
        temperature.push(s.temperature_c);
        ambient.push(s.ambient_temperature_c);
        plan.push(s.plan_step);
    }
    c.temperature_c = OptVec::Mixed(temperature);
    c.ambient_temperature_c = OptVec::Mixed(ambient);
    c.plan_step = OptVec::Mixed(plan);
    c
}

/// Sample `i` of `c`, numbered `seq`.
pub(crate) fn row(c: &Columns<'_>, i: usize, seq: u64) -> SampleRow {
    SampleRow {
        seq,
        test_time_s: c.head[0][i],
        unix_time_s: c.head[1][i],
        voltage_v: c.head[2][i],
        current_a: c.head[3][i],
        cycle: c.cycle[i],
        step: c.step[i],
        charge_capacity_ah: c.tail[0][i],
        discharge_capacity_ah: c.tail[1][i],
        charge_energy_wh: c.tail[2][i],
        discharge_energy_wh: c.tail[3][i],
        temperature_c: c.temperature_c.get(i),
        ambient_temperature_c: c.ambient_temperature_c.get(i),
        plan_step: c.plan_step.get(i),
    }
}

/// Decodes a chunk whose first sample is `first_seq`, appending its samples to `out`.
pub(crate) fn decode(data: &[u8], first_seq: u64, out: &mut Vec<SampleRow>) -> Result<(), String> {
    let owned = cyclerd_proto::chunk::decode(data).map_err(|e| e.0)?;
    let n = owned.len();
    if first_seq
        .checked_add(n as u64 - 1)
        .is_none_or(|l| l > i64::MAX as u64)
    {
        return Err("chunk seqs out of range".into());
    }
    let c = owned.columns();
    out.reserve(n);
    out.extend((0..n).map(|i| row(&c, i, first_seq + i as u64)));
    Ok(())
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
