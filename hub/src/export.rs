//! Export of a test's samples in the Battery Data Format (BDF) CSV flavour.
//!
//! Column names and order are pinned: tools that read BDF match on the exact header text.
//! Units are already BDF's (SI, current positive when charging), so values are written as
//! stored, with Rust's shortest round-trip float formatting.

use std::io::{self, BufWriter, Write};

use crate::store::{HubStore, SampleRow, StoreError};

/// The BDF columns every export has, in order.
pub const BDF_COLUMNS: [&str; 10] = [
    "Test Time / s",
    "Voltage / V",
    "Current / A",
    "Unix Time / s",
    "Cycle Count / 1",
    "Step Count / 1",
    "Charging Capacity / Ah",
    "Discharging Capacity / Ah",
    "Charging Energy / Wh",
    "Discharging Energy / Wh",
];

/// Added when any sample of the test has a cell temperature (the channel's sensor on the cell).
pub const BDF_CELL_TEMPERATURE_COLUMN: &str = "Surface Temperature T1 / degC";
/// Added (last) when any sample of the test has a chamber air temperature.
pub const BDF_AMBIENT_TEMPERATURE_COLUMN: &str = "Ambient Temperature / degC";

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the test from the hub failed (or the test does not exist).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("writing the export failed")]
    Io(#[from] io::Error),
}

/// Writes every sample of `test_id` as BDF CSV to `writer` (buffered here), one row per sample in
/// `seq` order; returns the number of rows. A sample without temperature in a test that has one
/// gets an empty cell.
pub fn write_bdf_csv(
    store: &HubStore,
    test_id: &str,
    writer: impl Write,
) -> Result<u64, ExportError> {
    let (with_cell, with_ambient) = store.has_temperatures(test_id)?;
    let mut out = BufWriter::with_capacity(1 << 16, writer);

    let mut header = BDF_COLUMNS.join(",");
    for (with, column) in [
        (with_cell, BDF_CELL_TEMPERATURE_COLUMN),
        (with_ambient, BDF_AMBIENT_TEMPERATURE_COLUMN),
    ] {
        if with {
            header.push(',');
            header.push_str(column);
        }
    }
    writeln!(out, "{header}")?;

    let rows = store.for_each_sample(test_id, |s: &SampleRow| -> Result<(), ExportError> {
        write!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            s.test_time_s,
            s.voltage_v,
            s.current_a,
            s.unix_time_s,
            s.cycle,
            s.step,
            s.charge_capacity_ah,
            s.discharge_capacity_ah,
            s.charge_energy_wh,
            s.discharge_energy_wh
        )?;
        for (with, value) in [
            (with_cell, s.temperature_c),
            (with_ambient, s.ambient_temperature_c),
        ] {
            match value {
                Some(t) if with => write!(out, ",{t}")?,
                None if with => out.write_all(b",")?,
                _ => {}
            }
        }
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(rows)
}
