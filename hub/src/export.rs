//! Exports of a test: its samples in the Battery Data Format (BDF) as CSV or Parquet, or as
//! Battery Archive's timeseries and cycle CSV files; each with a metadata JSON beside it, and
//! optionally anonymised for sharing.
//!
//! # BDF CSV and BDF Parquet
//!
//! One row per sample in `seq` order, columns [`BDF_COLUMNS`] (names and order pinned: tools that
//! read BDF match on the exact header text), plus [`BDF_CELL_TEMPERATURE_COLUMN`] when any sample
//! of the test has a cell temperature and [`BDF_AMBIENT_TEMPERATURE_COLUMN`] when any has a
//! chamber air temperature. Units are already BDF's (SI, current positive when charging;
//! capacities and energies cumulative since the test started), so values are written as stored:
//! in CSV with Rust's shortest round-trip float formatting, a missing temperature as an empty
//! cell; in Parquet as `DOUBLE` (times and values), `INT64` (cycle and step counts) and nullable
//! `DOUBLE` (temperatures), Snappy-compressed, see [`write_bdf_parquet`].
//!
//! # Battery Archive
//!
//! Two CSV files, `PREFIX_timeseries.csv` and `PREFIX_cycle_data.csv`, the names
//! batteryarchive.org serves its own data under; see [`battery_archive`] for the columns, where
//! they come from and how the hub's data maps onto them.
//!
//! # Metadata JSON
//!
//! Beside every exported file set, `OUTPUT.metadata.json` (BDF) or `PREFIX.metadata.json`
//! (Battery Archive): the test (id, channel, protocol, start and end, outcome), its metadata in
//! three tiers, the export's format and columns with units, and the cyclerd version; see
//! [`metadata`].
//!
//! # Anonymised export
//!
//! With a [`Pseudonymiser`] the metadata JSON names the test, the cell, its owner and its operator
//! only by stable pseudonyms (`cell-3f9a1c2e7b04`); the sample files carry no identifiers at all.
//! See [`anonymise`].
//!
//! # Writing files
//!
//! [`export_files`] writes every file under a temporary name beside its destination and renames
//! them into place only once all of them are complete, so a failed export (unknown test, full
//! disk) leaves no half-written file behind and never a data file without its metadata.

pub mod anonymise;
pub mod battery_archive;
mod bdf_parquet;
pub mod metadata;
mod staged;

use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::store::{HubStore, SampleRow, StoreError};
pub use anonymise::Pseudonymiser;
pub use battery_archive::write_battery_archive;
pub use bdf_parquet::write_bdf_parquet;
use staged::Staged;

/// An export format, as `cyclerhub export --format` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Battery Data Format, CSV.
    BdfCsv,
    /// Battery Data Format, Parquet.
    BdfParquet,
    /// Battery Archive (batteryarchive.org): a timeseries and a cycle CSV file.
    BatteryArchive,
}

impl Format {
    /// The name on the command line and in the metadata JSON.
    pub fn name(self) -> &'static str {
        match self {
            Format::BdfCsv => "bdf-csv",
            Format::BdfParquet => "bdf-parquet",
            Format::BatteryArchive => "battery-archive",
        }
    }
}

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// A 64-bit float (Parquet `DOUBLE`; shortest round-trip text in CSV).
    Float64,
    /// A 64-bit integer (Parquet `INT64`).
    Int64,
    /// A UTC date-time as text, `YYYY-MM-DD HH:MM:SS.fff`.
    DateTime,
}

/// One column of an export, as the metadata JSON describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Column {
    /// The header text, exactly as written.
    pub name: &'static str,
    /// The values' unit (`1` for BDF's counts); `None` for indices and date-times.
    pub unit: Option<&'static str>,
    /// How the values are written.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Whether a value may be missing (an empty CSV cell, a Parquet null).
    pub nullable: bool,
}

impl Column {
    pub(crate) const fn float(name: &'static str, unit: &'static str) -> Column {
        Column {
            name,
            unit: Some(unit),
            value_type: ValueType::Float64,
            nullable: false,
        }
    }

    const fn count(name: &'static str) -> Column {
        Column {
            name,
            unit: Some("1"),
            value_type: ValueType::Int64,
            nullable: false,
        }
    }

    pub(crate) const fn temperature(name: &'static str, unit: &'static str) -> Column {
        Column {
            name,
            unit: Some(unit),
            value_type: ValueType::Float64,
            nullable: true,
        }
    }

    /// An index or a date-time: values without a unit.
    pub(crate) const fn unitless(name: &'static str, value_type: ValueType) -> Column {
        Column {
            name,
            unit: None,
            value_type,
            nullable: false,
        }
    }
}

/// The BDF columns every BDF export has, in order.
pub const BDF_COLUMNS: [Column; 10] = [
    Column::float("Test Time / s", "s"),
    Column::float("Voltage / V", "V"),
    Column::float("Current / A", "A"),
    Column::float("Unix Time / s", "s"),
    Column::count("Cycle Count / 1"),
    Column::count("Step Count / 1"),
    Column::float("Charging Capacity / Ah", "Ah"),
    Column::float("Discharging Capacity / Ah", "Ah"),
    Column::float("Charging Energy / Wh", "Wh"),
    Column::float("Discharging Energy / Wh", "Wh"),
];

/// Added when any sample of the test has a cell temperature (the channel's sensor on the cell).
pub const BDF_CELL_TEMPERATURE_COLUMN: Column =
    Column::temperature("Surface Temperature T1 / degC", "degC");
/// Added (last) when any sample of the test has a chamber air temperature.
pub const BDF_AMBIENT_TEMPERATURE_COLUMN: Column =
    Column::temperature("Ambient Temperature / degC", "degC");

/// Which optional BDF temperature columns a test's export has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Temperatures {
    /// Any sample has a cell temperature.
    cell: bool,
    /// Any sample has a chamber air temperature.
    ambient: bool,
}

impl Temperatures {
    fn of(store: &HubStore, test_id: &str) -> Result<Temperatures, StoreError> {
        let (cell, ambient) = store.has_temperatures(test_id)?;
        Ok(Temperatures { cell, ambient })
    }

    /// The BDF columns of the export, in order.
    fn bdf_columns(self) -> Vec<Column> {
        let mut columns = BDF_COLUMNS.to_vec();
        columns.extend(self.cell.then_some(BDF_CELL_TEMPERATURE_COLUMN));
        columns.extend(self.ambient.then_some(BDF_AMBIENT_TEMPERATURE_COLUMN));
        columns
    }

    /// The sample's temperatures for the columns the export has, in column order.
    fn values(self, s: &SampleRow) -> impl Iterator<Item = Option<f64>> {
        [
            (self.cell, s.temperature_c),
            (self.ambient, s.ambient_temperature_c),
        ]
        .into_iter()
        .filter_map(|(with, value)| with.then_some(value))
    }
}

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the test from the hub failed (or the test does not exist).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("writing the export failed")]
    Io(#[from] io::Error),
    /// An output file could not be created or put in place.
    #[error("cannot write {}", path.display())]
    Output {
        /// The file the user asked for (not its temporary name).
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// The Parquet encoder failed.
    #[error("encoding Parquet failed")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// What a BDF writer wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Samples written, one row each.
    pub rows: u64,
    /// The columns, in order.
    pub columns: Vec<Column>,
}

/// Writes every sample of `test_id` as BDF CSV to `writer` (buffered here), one row per sample in
/// `seq` order; returns the number of rows.
pub fn write_bdf_csv(
    store: &HubStore,
    test_id: &str,
    writer: impl Write,
) -> Result<u64, ExportError> {
    Ok(bdf_csv(store, test_id, writer)?.rows)
}

fn bdf_csv(store: &HubStore, test_id: &str, writer: impl Write) -> Result<Written, ExportError> {
    let temperatures = Temperatures::of(store, test_id)?;
    let columns = temperatures.bdf_columns();
    let mut out = BufWriter::with_capacity(1 << 16, writer);

    let header: Vec<&str> = columns.iter().map(|c| c.name).collect();
    writeln!(out, "{}", header.join(","))?;

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
        for value in temperatures.values(s) {
            match value {
                Some(t) => write!(out, ",{t}")?,
                None => out.write_all(b",")?,
            }
        }
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(Written { rows, columns })
}

/// What [`export_files`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// Every file, the metadata JSON last.
    pub files: Vec<PathBuf>,
    /// Samples exported.
    pub samples: u64,
}

/// The files an export to `output` writes, the metadata JSON last: `OUTPUT` and
/// `OUTPUT.metadata.json` for BDF; for Battery Archive, `output` is a prefix (a trailing `.csv`
/// is dropped) and the files are `PREFIX_timeseries.csv`, `PREFIX_cycle_data.csv` and
/// `PREFIX.metadata.json`.
pub fn output_files(format: Format, output: &Path) -> Vec<PathBuf> {
    let with_suffix = |base: &Path, suffix: &str| {
        let mut name = OsString::from(base.as_os_str());
        name.push(suffix);
        PathBuf::from(name)
    };
    match format {
        Format::BdfCsv | Format::BdfParquet => {
            vec![output.to_path_buf(), with_suffix(output, ".metadata.json")]
        }
        Format::BatteryArchive => {
            let prefix = match output.extension() {
                Some(ext) if ext.eq_ignore_ascii_case("csv") => output.with_extension(""),
                _ => output.to_path_buf(),
            };
            vec![
                with_suffix(&prefix, "_timeseries.csv"),
                with_suffix(&prefix, "_cycle_data.csv"),
                with_suffix(&prefix, ".metadata.json"),
            ]
        }
    }
}

/// Exports `test_id` in `format` to the files [`output_files`] names, with the metadata JSON;
/// anonymised when `pseudonymiser` is given. Nothing is put in place unless everything was
/// written.
pub fn export_files(
    store: &HubStore,
    test_id: &str,
    format: Format,
    output: &Path,
    pseudonymiser: Option<&Pseudonymiser>,
) -> Result<Exported, ExportError> {
    // Look the test up first, so a typo creates no file at all.
    let test = store
        .test(test_id)?
        .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))?;
    let paths = output_files(format, output);
    let mut staged = paths
        .iter()
        .map(|p| Staged::create(p))
        .collect::<Result<Vec<_>, _>>()?;

    let (samples, files) = match format {
        Format::BdfCsv => {
            let written =
                bdf_csv(store, test_id, staged[0].file()).map_err(|e| staged[0].output_error(e))?;
            (written.rows, vec![metadata::File::samples(written.columns)])
        }
        Format::BdfParquet => {
            let written = write_bdf_parquet(store, test_id, staged[0].file())
                .map_err(|e| staged[0].output_error(e))?;
            (written.rows, vec![metadata::File::samples(written.columns)])
        }
        Format::BatteryArchive => {
            let [timeseries, cycles, _] = &mut staged[..] else {
                unreachable!("output_files names three Battery Archive files")
            };
            let samples = write_battery_archive(store, test_id, timeseries.file(), cycles.file())
                // Either file may have failed: name the prefix the user gave.
                .map_err(|e| staged::output_error(output, e))?;
            (samples, metadata::File::battery_archive())
        }
    };

    let protocol = store
        .protocol(test_id)?
        .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))?;
    let equipment = store.test_equipment(test_id)?;
    let json = metadata::metadata_json(
        &test,
        &equipment,
        &protocol,
        format,
        samples,
        files,
        pseudonymiser,
    );
    let metadata_file = staged.last_mut().expect("the metadata file is staged");
    metadata_file
        .file()
        .write_all(json.as_bytes())
        .map_err(|e| metadata_file.output_error(e.into()))?;

    for file in staged {
        file.commit()?;
    }
    Ok(Exported {
        files: paths,
        samples,
    })
}
