//! Battery Archive (batteryarchive.org) CSV: a timeseries file and a cycle file per test.
//!
//! # Sources
//!
//! Column names are the ones Battery Archive serves its data in (`CELL_timeseries.csv` and
//! `CELL_cycle_data.csv` under `https://www.batteryarchive.org/data/`) and the ones its upload
//! service requires before it accepts a file (`battery-lcf/batteryarchive-service`, and the same
//! headers in `battery-lcf/batteryarchive-agent`'s CSV export queries): [`BA_TIMESERIES_COLUMNS`]
//! and [`BA_CYCLE_COLUMNS`], in that order.
//!
//! # Sign
//!
//! Battery Archive's current is positive when charging, like BDF and the hub: its converter
//! (`calc_cycle_quantities` in the service and the agent) integrates `Charge_Capacity` from
//! samples with current ≥ 0 and `Discharge_Capacity` from those with current ≤ 0, negated. So
//! current is written as stored, and capacities and energies are positive magnitudes in both.
//!
//! # Interpretation
//!
//! - Capacities and energies count from zero in every cycle in Battery Archive (its converter
//!   restarts the integration per cycle, and a cycle row holds the cycle's totals), while the
//!   hub's count from the start of the test. The timeseries file therefore holds the hub's values
//!   minus their value at the last sample of the previous cycle (zero before the first), and a
//!   cycle row holds the cycle's throughputs: the per-cycle results every export shares
//!   ([`crate::cycles`], the summaries the daemon sent, computed with the same definition), so
//!   they equal the timeseries' values at the cycle's last sample. A test stored before daemons
//!   sent summaries (or a cycle they miss) takes the timeseries' values at the cycle's last
//!   sample, which is what computing its summary from the samples gives. Charge that flowed before the first exported
//!   sample (a test whose first samples never reached the hub) is counted in the first
//!   exported cycle.
//! - The cycle file ends with `Coulombic_Efficiency` and `Energy_Efficiency`, Battery Archive's
//!   per-cycle efficiency statistics (discharge over charge capacity, and energy), as ratios
//!   (1 = 100 %), from the same per-cycle results; an empty cell for a cycle without a charge.
//!   Battery Archive's importer reads the twelve columns before them and ignores these two.
//! - A cycle is a run of consecutive samples with the same cycle number (the engine's counter
//!   only grows). Battery Archive's importer drops cycle 0; the engine counts from 1.
//! - `Date_Time`, `Start_Time` and `End_Time` are UTC, `YYYY-MM-DD HH:MM:SS.fff`.
//!   `Test_Time (s)` of a cycle row is the test time of the cycle's last sample, as Battery
//!   Archive computes it (the largest test time of the cycle).
//! - `Environment_Temperature (C)` is the chamber air temperature and `Cell_Temperature (C)` the
//!   cell's; a missing reading is an empty cell. Battery Archive's upload service reads empty
//!   cells as 0, so a test without a sensor shows 0 °C there: read it as "not measured".

use std::io::{BufWriter, Write};

use std::collections::HashMap;

use cyclerd_proto::hub::CycleRow;
use cyclerd_proto::ingest::CycleSummary;

use super::{Column, ExportError, Source, Stored, ValueType};
use crate::store::{HubStore, SampleRow};
use crate::utc::Utc;

/// The timeseries file's columns, in order: one row per sample.
pub const BA_TIMESERIES_COLUMNS: [Column; 11] = [
    Column::unitless("Date_Time", ValueType::DateTime),
    Column::float("Test_Time (s)", "s"),
    Column::unitless("Cycle_Index", ValueType::Int64),
    Column::float("Current (A)", "A"),
    Column::float("Voltage (V)", "V"),
    Column::float("Charge_Capacity (Ah)", "Ah"),
    Column::float("Discharge_Capacity (Ah)", "Ah"),
    Column::float("Charge_Energy (Wh)", "Wh"),
    Column::float("Discharge_Energy (Wh)", "Wh"),
    Column::temperature("Environment_Temperature (C)", "degC"),
    Column::temperature("Cell_Temperature (C)", "degC"),
];

/// The cycle file's columns, in order: one row per cycle.
pub const BA_CYCLE_COLUMNS: [Column; 14] = [
    Column::unitless("Cycle_Index", ValueType::Int64),
    Column::unitless("Start_Time", ValueType::DateTime),
    Column::unitless("End_Time", ValueType::DateTime),
    Column::float("Test_Time (s)", "s"),
    Column::float("Min_Current (A)", "A"),
    Column::float("Max_Current (A)", "A"),
    Column::float("Min_Voltage (V)", "V"),
    Column::float("Max_Voltage (V)", "V"),
    Column::float("Charge_Capacity (Ah)", "Ah"),
    Column::float("Discharge_Capacity (Ah)", "Ah"),
    Column::float("Charge_Energy (Wh)", "Wh"),
    Column::float("Discharge_Energy (Wh)", "Wh"),
    Column::nullable("Coulombic_Efficiency", "1"),
    Column::nullable("Energy_Efficiency", "1"),
];

/// Charge capacity, discharge capacity, charge energy, discharge energy: the four counters that
/// restart every cycle.
type Counters = [f64; 4];

fn counters(s: &SampleRow) -> Counters {
    [
        s.charge_capacity_ah,
        s.discharge_capacity_ah,
        s.charge_energy_wh,
        s.discharge_energy_wh,
    ]
}

/// One cycle's row, accumulated sample by sample.
struct Cycle {
    /// The samples' cycle number.
    index: u32,
    /// Unix time of the first sample.
    start_unix_s: f64,
    /// Unix time of the last sample so far.
    end_unix_s: f64,
    /// Test time of the last sample so far.
    test_time_s: f64,
    /// Smallest current so far (most negative: the strongest discharge).
    min_current_a: f64,
    /// Largest current so far.
    max_current_a: f64,
    /// Lowest voltage so far.
    min_voltage_v: f64,
    /// Highest voltage so far.
    max_voltage_v: f64,
    /// The counters since the cycle began, at the last sample so far.
    counters: Counters,
}

impl Cycle {
    fn start(s: &SampleRow) -> Cycle {
        Cycle {
            index: s.cycle,
            start_unix_s: s.unix_time_s,
            end_unix_s: s.unix_time_s,
            test_time_s: s.test_time_s,
            min_current_a: s.current_a,
            max_current_a: s.current_a,
            min_voltage_v: s.voltage_v,
            max_voltage_v: s.voltage_v,
            counters: [0.0; 4],
        }
    }

    fn add(&mut self, s: &SampleRow, counters: Counters) {
        self.end_unix_s = s.unix_time_s;
        self.test_time_s = s.test_time_s;
        self.min_current_a = self.min_current_a.min(s.current_a);
        self.max_current_a = self.max_current_a.max(s.current_a);
        self.min_voltage_v = self.min_voltage_v.min(s.voltage_v);
        self.max_voltage_v = self.max_voltage_v.max(s.voltage_v);
        self.counters = counters;
    }

    /// Writes the row; throughputs and efficiencies from `stored`, the cycle's per-cycle
    /// result, when there is one.
    fn write(&self, out: &mut impl Write, stored: Option<&CycleRow>) -> std::io::Result<()> {
        let (counters, efficiency) = match stored {
            Some(r) => (
                [
                    r.charge_capacity_ah,
                    r.discharge_capacity_ah,
                    r.charge_energy_wh,
                    r.discharge_energy_wh,
                ],
                [r.coulombic_efficiency, r.energy_efficiency],
            ),
            None => {
                let [qc, qd, ec, ed] = self.counters;
                // The same definitions, applied to the timeseries' counters.
                let c = CycleSummary {
                    charge_capacity_ah: qc,
                    discharge_capacity_ah: qd,
                    charge_energy_wh: ec,
                    discharge_energy_wh: ed,
                    ..CycleSummary::default()
                };
                (
                    self.counters,
                    [c.coulombic_efficiency(), c.energy_efficiency()],
                )
            }
        };
        let [qc, qd, ec, ed] = counters;
        let [ce, ee] = efficiency.map(|x| x.map_or_else(String::new, |x| x.to_string()));
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{qc},{qd},{ec},{ed},{ce},{ee}",
            self.index,
            date_time(self.start_unix_s),
            date_time(self.end_unix_s),
            self.test_time_s,
            self.min_current_a,
            self.max_current_a,
            self.min_voltage_v,
            self.max_voltage_v,
        )
    }
}

fn date_time(unix_s: f64) -> String {
    Utc::from_unix_s(unix_s)
        .map(|t| t.millis())
        .unwrap_or_default()
}

fn header(columns: &[Column]) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    names.join(",")
}

/// Writes every sample of `test_id` to `timeseries` and one row per cycle to `cycles`, as Battery
/// Archive CSV (both buffered here); returns the number of samples. A cycle row's throughputs
/// and efficiencies are the test's per-cycle results ([`crate::cycles`]).
pub fn write_battery_archive(
    store: &HubStore,
    test_id: &str,
    timeseries: impl Write,
    cycles: impl Write,
) -> Result<u64, ExportError> {
    battery_archive(&mut Stored { store, test_id }, timeseries, cycles)
}

/// [`write_battery_archive`] of the test `source` reads.
pub(super) fn battery_archive(
    source: &mut impl Source,
    timeseries: impl Write,
    cycles: impl Write,
) -> Result<u64, ExportError> {
    let mut ts = BufWriter::with_capacity(1 << 16, timeseries);
    let mut cy = BufWriter::new(cycles);
    writeln!(ts, "{}", header(&BA_TIMESERIES_COLUMNS))?;
    writeln!(cy, "{}", header(&BA_CYCLE_COLUMNS))?;
    // The daemon's summaries; a test without (stored before daemons sent them) has its cycle
    // rows from the timeseries' counters, which is how they would be computed from the samples.
    let stored: HashMap<u32, CycleRow> = source
        .daemon_cycle_rows()?
        .into_iter()
        .map(|r| (r.cycle, r))
        .collect();

    let mut current: Option<Cycle> = None;
    // The hub's counters at the last sample of the previous cycle.
    let mut baseline: Counters = [0.0; 4];
    let mut last: Counters = [0.0; 4];
    let samples = source.for_each_sample(&mut |s: &SampleRow| -> Result<(), ExportError> {
        let cycle = match &mut current {
            Some(c) if c.index == s.cycle => c,
            _ => {
                if let Some(done) = current.take() {
                    done.write(&mut cy, stored.get(&done.index))?;
                    baseline = last;
                }
                current.insert(Cycle::start(s))
            }
        };
        last = counters(s);
        let per_cycle: Counters = std::array::from_fn(|i| last[i] - baseline[i]);
        cycle.add(s, per_cycle);

        let [qc, qd, ec, ed] = per_cycle;
        write!(
            ts,
            "{},{},{},{},{},{qc},{qd},{ec},{ed},",
            date_time(s.unix_time_s),
            s.test_time_s,
            s.cycle,
            s.current_a,
            s.voltage_v,
        )?;
        if let Some(t) = s.ambient_temperature_c {
            write!(ts, "{t}")?;
        }
        ts.write_all(b",")?;
        if let Some(t) = s.temperature_c {
            write!(ts, "{t}")?;
        }
        ts.write_all(b"\n")?;
        Ok(())
    })?;
    if let Some(done) = current {
        done.write(&mut cy, stored.get(&done.index))?;
    }
    ts.flush()?;
    cy.flush()?;
    Ok(samples)
}
