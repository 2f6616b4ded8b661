//! The per-cycle table written beside every BDF export (`NAME.cycles.csv` beside
//! `NAME.bdf.csv`, `NAME.cycles.parquet` beside `NAME.bdf.parquet`), and printed by `cyclerhub
//! cycles --csv`.
//!
//! BDF has no per-cycle schema yet, so the columns are named in BDF's own style (`Quantity /
//! unit`, its labels reused where it has one: `Cycle Count / 1`, `Charging Capacity / Ah`, `DC
//! Internal Resistance / ohm`, ...) for the quantities BEEP, battery-data-toolkit and Battery
//! Archive put in their cycle tables; see [`CYCLE_COLUMNS`]. One row per cycle, in cycle order,
//! with the values of [`crate::cycles`] (the daemon's summaries, or computed from the samples for
//! a test stored before it sent any): throughputs of the cycle alone (not cumulative),
//! efficiencies and retention as ratios (1 = 100 %), temperature in °C, resistance in Ω. A value
//! that does not exist (no charge to take an efficiency of, no sensor, no step out of rest) is
//! an empty cell in CSV and a null in Parquet. `Cycle Complete / 1` is 0 for the cycle still
//! going on when a running test is exported.
//!
//! Parquet: `INT64` for the cycle count and the completeness flag, `DOUBLE` for the rest
//! (optional where a value may be missing), Snappy-compressed.

use std::io::{BufWriter, Write};

use cyclerd_proto::hub::CycleRow;
use cyclerd_protocols::bdf::Value;

use super::{Column, ExportError, ValueType, bdf_parquet};

/// The per-cycle table's columns, in order.
pub const CYCLE_COLUMNS: [Column; 15] = [
    Column::count("Cycle Count / 1"),
    Column::float("Start Test Time / s", "s"),
    Column::float("Duration / s", "s"),
    Column::float("Charging Capacity / Ah", "Ah"),
    Column::float("Discharging Capacity / Ah", "Ah"),
    Column::float("Charging Energy / Wh", "Wh"),
    Column::float("Discharging Energy / Wh", "Wh"),
    Column::nullable("Coulombic Efficiency / 1", "1"),
    Column::nullable("Energy Efficiency / 1", "1"),
    Column::nullable("Mean Charge Voltage / V", "V"),
    Column::nullable("Mean Discharge Voltage / V", "V"),
    Column::nullable("Max Temperature / degC", "degC"),
    Column::nullable("Capacity Retention / 1", "1"),
    Column::nullable("DC Internal Resistance / ohm", "ohm"),
    Column::count("Cycle Complete / 1"),
];

/// The values of `row` for [`CYCLE_COLUMNS`], in order.
fn values(row: &CycleRow) -> [Value; 15] {
    let opt = |x: Option<f64>| x.map_or(Value::Null, Value::Double);
    [
        Value::Int64(row.cycle.into()),
        Value::Double(row.start_test_time_s),
        Value::Double(row.duration_s),
        Value::Double(row.charge_capacity_ah),
        Value::Double(row.discharge_capacity_ah),
        Value::Double(row.charge_energy_wh),
        Value::Double(row.discharge_energy_wh),
        opt(row.coulombic_efficiency),
        opt(row.energy_efficiency),
        opt(row.mean_charge_voltage_v),
        opt(row.mean_discharge_voltage_v),
        opt(row.max_temperature_c),
        opt(row.capacity_retention),
        opt(row.dcir_ohm),
        Value::Int64(row.complete.into()),
    ]
}

/// Writes `rows` as the per-cycle CSV (header first; shortest round-trip numbers, an empty
/// cell where a value does not exist) to `writer`, buffered here.
pub fn write_cycles_csv(rows: &[CycleRow], writer: impl Write) -> std::io::Result<()> {
    let mut out = BufWriter::new(writer);
    let header: Vec<&str> = CYCLE_COLUMNS.iter().map(|c| c.name).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in rows {
        for (i, value) in values(row).into_iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            match value {
                Value::Double(x) if x.is_finite() => write!(out, "{x}")?,
                Value::Int64(n) => write!(out, "{n}")?,
                Value::Text(s) => out.write_all(s.as_bytes())?,
                Value::Double(_) | Value::Null => {}
            }
        }
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes `rows` as the per-cycle Parquet file to `writer`.
pub fn write_cycles_parquet(
    rows: &[CycleRow],
    writer: impl Write + Send,
) -> Result<(), ExportError> {
    bdf_parquet::write_table(
        writer,
        "cycles",
        &CYCLE_COLUMNS,
        rows.iter().map(|r| values(r).to_vec()),
    )?;
    Ok(())
}

impl Column {
    /// A count (Parquet `INT64`) of unit `1`.
    pub(crate) const fn count(name: &'static str) -> Column {
        Column {
            name,
            unit: Some("1"),
            value_type: ValueType::Int64,
            nullable: false,
        }
    }

    /// A float that may be missing.
    pub(crate) const fn nullable(name: &'static str, unit: &'static str) -> Column {
        Column {
            name,
            unit: Some(unit),
            value_type: ValueType::Float64,
            nullable: true,
        }
    }
}
