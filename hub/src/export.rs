//! Exports of a test: its samples in the Battery Data Format (BDF) as CSV or Parquet, or as
//! Battery Archive's timeseries and cycle CSV files; each with a metadata JSON beside it, and
//! optionally anonymised for sharing.
//!
//! # BDF CSV and BDF Parquet
//!
//! Battery Data Format 1.3. One row per sample in `seq` order, the columns of
//! [`cyclerd_protocols::bdf`] (names and order pinned there, the one place the labels live, which
//! `cyclerctl protocol simulate` writes too: tools that read BDF match on the exact header
//! text):
//!
//! `Test Time / s`, `Voltage / V`, `Current / A` (positive = charging), `Unix Time / s`,
//! `Cycle Count / 1`, `Step Count / 1`, `Step Type`, `Step Time / s`, `Record Index / 1`,
//! `Power / W`, `Charging Capacity / Ah`, `Discharging Capacity / Ah`, `Net Capacity / Ah`,
//! `Cumulative Capacity / Ah`, `Charging Energy / Wh`, `Discharging Energy / Wh`,
//! `Net Energy / Wh`, `Cumulative Energy / Wh`; then `Temperature T1 / degC` (the channel's
//! sensor on the cell; BDF 1.3's preferred label, `Surface Temperature T1` being only an alias
//! now) when any sample has a cell temperature, and `Ambient Temperature / degC` (the chamber's
//! air) when any has one.
//!
//! Stored values are written as stored (SI, capacities and energies cumulative since the test
//! started). Derived: power = voltage × current; step time = test time since the first row of
//! the step (a step begins where `Step Count` changes); record index = row number from 1; net =
//! charging − discharging, cumulative = charging + discharging.
//!
//! The step type follows the rule documented on [`cyclerd_protocols::bdf::StepType`]: each step
//! count is matched to the plan step it ran (the plan JSON stored with the test, and the
//! description the step's `step` event carries) and typed by that step's control (`CC_CHG`,
//! `CC_DCH`, `CV_CHG` / `CV_DCH` by the target against the voltage the step began at,
//! `CCCV_CHG`, `REST`, `OCV` for a rest tagged `ocv`, ...); a step the plan does not name is
//! typed from the sign and shape of its current (no current: `REST`; constant: `CC_*`; held
//! voltage: `CV_*`; constant then falling at held voltage: `CCCV_*`). The samples of one step
//! are read ahead to type it, so memory grows with the longest step, not the test.
//!
//! In CSV: Rust's shortest round-trip float formatting, a missing temperature as an empty cell.
//! In Parquet: `DOUBLE` for measurements and derived values, `INT64` for the cycle and step
//! counts and the record index, UTF-8 `BYTE_ARRAY` for the step type, nullable `DOUBLE` for
//! the temperatures, Snappy-compressed, see [`write_bdf_parquet`].
//!
//! Files are named with the suffixes BDF's validator accepts, `.bdf.csv` and `.bdf.parquet`
//! (see [`bdf_file`]).
//!
//! # Per-cycle table
//!
//! Beside every BDF file, one row per cycle in the same format: `NAME.cycles.csv` beside
//! `NAME.bdf.csv`, `NAME.cycles.parquet` beside `NAME.bdf.parquet` (see [`cycles_file`]), with
//! the columns of [`CYCLE_COLUMNS`] (`Cycle Count / 1`, `Start Test Time / s`, `Duration / s`,
//! the cycle's charging and discharging capacity and energy, `Coulombic Efficiency / 1`,
//! `Energy Efficiency / 1`, `Mean Charge Voltage / V`, `Mean Discharge Voltage / V`, `Max
//! Temperature / degC`, `Capacity Retention / 1`, `DC Internal Resistance / ohm`, `Cycle
//! Complete / 1`); see [`cycles`]. BDF CSV written to standard output (no `-o`) has none.
//!
//! # Battery Archive
//!
//! Two CSV files, `PREFIX_timeseries.csv` and `PREFIX_cycle_data.csv`, the names
//! batteryarchive.org serves its own data under; see [`battery_archive`] for the columns, where
//! they come from and how the hub's data maps onto them. The cycle file's capacities, energies
//! and efficiencies are the per-cycle table's ([`crate::cycles`]), so every export agrees.
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
//! # Bundles for a public archive
//!
//! [`bundle`]: the files of both formats for several tests in one folder, with a README and an
//! RO-Crate 1.1 `ro-crate-metadata.json` (`cyclerhub publish`).
//!
//! # Writing files
//!
//! [`export_files`] writes every file under a temporary name beside its destination and renames
//! them into place only once all of them are complete, so a failed export (unknown test, full
//! disk) leaves no half-written file behind and never a data file without its metadata.

pub mod anonymise;
pub mod battery_archive;
mod bdf_parquet;
pub mod bundle;
pub mod cycles;
pub mod metadata;
pub mod source;
mod staged;

use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use cyclerd_protocols::bdf;
use cyclerd_protocols::{ActionStep, Plan, PlanStep};
use serde::Serialize;

use crate::store::{HubStore, SampleRow, StoreError};
pub use anonymise::Pseudonymiser;
pub use battery_archive::write_battery_archive;
pub use bdf_parquet::write_bdf_parquet;
pub use cycles::{CYCLE_COLUMNS, write_cycles_csv, write_cycles_parquet};
pub use source::{Source, Stored};
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
    /// A word of a vocabulary, as text (Parquet UTF-8 `BYTE_ARRAY`): BDF's `Step Type`.
    Text,
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

    pub(crate) const fn temperature(name: &'static str, unit: &'static str) -> Column {
        Column {
            name,
            unit: Some(unit),
            value_type: ValueType::Float64,
            nullable: true,
        }
    }

    /// A BDF column as the metadata JSON describes it.
    pub fn from_bdf(c: bdf::Column) -> Column {
        Column {
            name: c.label,
            unit: c.unit,
            value_type: match c.kind {
                bdf::Kind::Double => ValueType::Float64,
                bdf::Kind::Int64 => ValueType::Int64,
                bdf::Kind::Text => ValueType::Text,
            },
            nullable: c.nullable,
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

/// The BDF columns of an export: [`bdf::COLUMNS`], then `Temperature T1 / degC` when `cell` and
/// `Ambient Temperature / degC` when `ambient` (see [`bdf::columns`], where the labels live).
pub fn bdf_columns(cell: bool, ambient: bool) -> Vec<Column> {
    bdf::columns(cell, ambient)
        .into_iter()
        .map(Column::from_bdf)
        .collect()
}

/// Which optional BDF temperature columns a test's export has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Temperatures {
    /// Any sample has a cell temperature.
    cell: bool,
    /// Any sample has a chamber air temperature.
    ambient: bool,
}

impl Temperatures {
    fn of(source: &mut impl Source) -> Result<Temperatures, ExportError> {
        let (cell, ambient) = source.temperatures()?;
        Ok(Temperatures { cell, ambient })
    }

    /// The BDF columns of the export, in order.
    fn bdf_columns(self) -> Vec<Column> {
        bdf_columns(self.cell, self.ambient)
    }
}

/// What the hub knows about the steps of a test: its plan, whose step each sample names
/// (`plan_step`); for samples from daemons that did not send it, the plan steps each step count
/// ran, by the description its `step` event carries.
struct StepPlan {
    /// The test's plan steps, when its plan is readable.
    steps: Vec<PlanStep>,
    /// Per step count, the plan steps whose description its event names (usually one).
    by_step: HashMap<u32, Vec<ActionStep>>,
}

impl StepPlan {
    fn of(source: &mut impl Source) -> Result<StepPlan, ExportError> {
        // A plan the hub cannot read (another version's, a damaged one) types steps from their
        // samples alone.
        let plan = Plan::from_json(&source.protocol()?.1).ok();
        let Some(plan) = plan else {
            return Ok(StepPlan {
                steps: Vec::new(),
                by_step: HashMap::new(),
            });
        };
        let mut by_description: HashMap<&str, Vec<&ActionStep>> = HashMap::new();
        for step in &plan.steps {
            if let PlanStep::Action(a) = step {
                by_description.entry(&a.description).or_default().push(a);
            }
        }
        let by_step = source
            .events()?
            .into_iter()
            .filter(|e| e.kind == "step")
            .filter_map(|e| {
                let actions = by_description.get(e.message.as_str())?;
                Some((e.step, actions.iter().map(|a| (*a).clone()).collect()))
            })
            .collect();
        Ok(StepPlan {
            by_step,
            steps: plan.steps,
        })
    }

    /// The BDF step type of step `step`, whose samples are `rows`: from its plan step when the
    /// candidates agree, else from the samples (the rule is [`bdf::StepType`]'s).
    fn step_type(&self, step: u32, rows: &[SampleRow]) -> bdf::StepType {
        let v0 = rows.first().map(|r| r.voltage_v);
        // The plan step the samples name, when they name one.
        let named = rows.first().and_then(|r| r.plan_step).and_then(|i| {
            match self.steps.get(usize::try_from(i).ok()?) {
                Some(PlanStep::Action(a)) => Some(bdf::StepType::of_action(a, v0)),
                _ => None,
            }
        });
        let from_plan = named.or_else(|| {
            let actions = self.by_step.get(&step)?;
            let mut types = actions.iter().map(|a| bdf::StepType::of_action(a, v0));
            let first = types.next()?;
            types.all(|t| t == first).then_some(first)
        });
        from_plan.unwrap_or_else(|| {
            let samples: Vec<(f64, f64)> =
                rows.iter().map(|r| (r.voltage_v, r.current_a)).collect();
            bdf::StepType::of_samples(&samples)
        })
    }
}

/// Calls `f` with every sample of `test_id` as a BDF row, in `seq` order: the samples of one
/// step are read ahead (a step's type depends on all of them) and then handed over with their
/// step type, step time and record index. Returns the number of rows.
fn for_each_bdf_row(
    source: &mut impl Source,
    mut f: impl FnMut(&bdf::Row) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let plan = StepPlan::of(source)?;
    let mut sequence = bdf::Sequence::default();
    let mut step: Vec<SampleRow> = Vec::new();
    let mut emit = |step: &mut Vec<SampleRow>| -> Result<(), ExportError> {
        let Some(first) = step.first() else {
            return Ok(());
        };
        let step_type = plan.step_type(first.step, step);
        for s in step.drain(..) {
            let (record_index, step_time_s) = sequence.next(s.step, s.test_time_s);
            f(&bdf::Row {
                test_time_s: s.test_time_s,
                unix_time_s: s.unix_time_s,
                voltage_v: s.voltage_v,
                current_a: s.current_a,
                cycle: s.cycle,
                step: s.step,
                step_type,
                step_time_s,
                record_index,
                charge_ah: s.charge_capacity_ah,
                discharge_ah: s.discharge_capacity_ah,
                charge_wh: s.charge_energy_wh,
                discharge_wh: s.discharge_energy_wh,
                temperature_c: s.temperature_c,
                ambient_c: s.ambient_temperature_c,
            })?;
        }
        Ok(())
    };
    let rows = source.for_each_sample(&mut |s: &SampleRow| -> Result<(), ExportError> {
        if step.first().is_some_and(|first| first.step != s.step) {
            emit(&mut step)?;
        }
        step.push(s.clone());
        Ok(())
    })?;
    emit(&mut step)?;
    Ok(rows)
}

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the test from the hub failed (or the test does not exist).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the test from a running hub failed (or the test does not exist there).
    #[error(transparent)]
    Remote(anyhow::Error),
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
    write_bdf_csv_from(&mut Stored { store, test_id }, writer)
}

/// [`write_bdf_csv`] of the test `source` reads (from the database or a running hub).
pub fn write_bdf_csv_from(
    source: &mut impl Source,
    writer: impl Write,
) -> Result<u64, ExportError> {
    Ok(bdf_csv(source, writer)?.rows)
}

fn bdf_csv(source: &mut impl Source, writer: impl Write) -> Result<Written, ExportError> {
    let temperatures = Temperatures::of(source)?;
    let Temperatures { cell, ambient } = temperatures;
    let mut out = BufWriter::with_capacity(1 << 16, writer);
    writeln!(out, "{}", bdf::csv_header(cell, ambient))?;
    let rows = for_each_bdf_row(source, |row| {
        row.write_csv(&mut out, cell, ambient)?;
        Ok(())
    })?;
    out.flush()?;
    Ok(Written {
        rows,
        columns: temperatures.bdf_columns(),
    })
}

/// What [`export_files`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// Every file, the metadata JSON last.
    pub files: Vec<PathBuf>,
    /// Samples exported.
    pub samples: u64,
}

/// The files an export to `output` writes, the metadata JSON last: for BDF the data file, named
/// with the suffix BDF's validator requires ([`bdf_file`]: `.bdf.csv` or `.bdf.parquet`), the
/// per-cycle table beside it ([`cycles_file`]) and `DATAFILE.metadata.json`; for Battery Archive, `output` is a prefix (a trailing `.csv` is
/// dropped) and the files are `PREFIX_timeseries.csv`, `PREFIX_cycle_data.csv` and
/// `PREFIX.metadata.json`.
pub fn output_files(format: Format, output: &Path) -> Vec<PathBuf> {
    let with_suffix = |base: &Path, suffix: &str| {
        let mut name = OsString::from(base.as_os_str());
        name.push(suffix);
        PathBuf::from(name)
    };
    match format {
        Format::BdfCsv | Format::BdfParquet => {
            let data = bdf_file(format, output);
            let cycles = cycles_file(&data);
            let metadata = with_suffix(&data, ".metadata.json");
            vec![data, cycles, metadata]
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

/// The BDF data file for `output`: BDF's readers and validator accept only `.bdf.csv` (or plain
/// `.bdf`) for CSV and `.bdf.parquet` for Parquet, so a name that already ends so is kept, a
/// plain `.csv` / `.parquet` becomes `.bdf.csv` / `.bdf.parquet`, and any other name gets the
/// suffix appended (`run` -> `run.bdf.csv`). Other formats: `output` as given.
pub fn bdf_file(format: Format, output: &Path) -> PathBuf {
    let (accepted, plain, suffix): (&[&str], &str, &str) = match format {
        Format::BdfCsv => (&[".bdf.csv", ".bdf"], ".csv", ".bdf.csv"),
        Format::BdfParquet => (&[".bdf.parquet"], ".parquet", ".bdf.parquet"),
        Format::BatteryArchive => return output.to_path_buf(),
    };
    if output.is_dir() {
        // Kept, so that staging refuses it with "it is a directory; give a file name".
        return output.to_path_buf();
    }
    let Some(name) = output.file_name().and_then(|n| n.to_str()) else {
        // Not UTF-8 (or no file name, which staging refuses with a clear error): append.
        let mut name = OsString::from(output.as_os_str());
        name.push(suffix);
        return PathBuf::from(name);
    };
    let lower = name.to_ascii_lowercase();
    if accepted.iter().any(|a| lower.ends_with(a)) {
        return output.to_path_buf();
    }
    let stem = if lower.ends_with(plain) {
        &name[..name.len() - plain.len()]
    } else {
        name
    };
    output.with_file_name(format!("{stem}{suffix}"))
}

/// The per-cycle table beside the BDF data file `data`: `NAME.bdf.csv` (or `NAME.bdf`) ->
/// `NAME.cycles.csv`, `NAME.bdf.parquet` -> `NAME.cycles.parquet`; any other name gets
/// `.cycles.csv` appended.
pub fn cycles_file(data: &Path) -> PathBuf {
    let name = data.file_name().and_then(|n| n.to_str());
    let lower = name.map(str::to_ascii_lowercase).unwrap_or_default();
    for (suffix, cycles) in [
        (".bdf.csv", ".cycles.csv"),
        (".bdf", ".cycles.csv"),
        (".bdf.parquet", ".cycles.parquet"),
    ] {
        if let Some(name) = name
            && lower.ends_with(suffix)
        {
            let stem = &name[..name.len() - suffix.len()];
            return data.with_file_name(format!("{stem}{cycles}"));
        }
    }
    let mut name = OsString::from(data.as_os_str());
    name.push(".cycles.csv");
    PathBuf::from(name)
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
    export_files_from(
        &mut Stored { store, test_id },
        format,
        output,
        pseudonymiser,
    )
}

/// [`export_files`] of the test `source` reads (from the database or a running hub).
pub fn export_files_from(
    source: &mut impl Source,
    format: Format,
    output: &Path,
    pseudonymiser: Option<&Pseudonymiser>,
) -> Result<Exported, ExportError> {
    // Look the test up first, so a typo creates no file at all.
    let test = source.test()?;
    let paths = output_files(format, output);
    let mut staged = paths
        .iter()
        .map(|p| Staged::create(p))
        .collect::<Result<Vec<_>, _>>()?;

    let (samples, files) = match format {
        Format::BdfCsv => {
            let written =
                bdf_csv(source, staged[0].file()).map_err(|e| staged[0].output_error(e))?;
            let rows = source.cycle_rows()?;
            write_cycles_csv(&rows, staged[1].file())
                .map_err(|e| staged[1].output_error(e.into()))?;
            (
                written.rows,
                vec![
                    metadata::File::samples(written.columns),
                    metadata::File::cycles(),
                ],
            )
        }
        Format::BdfParquet => {
            let written = bdf_parquet::bdf_parquet(source, staged[0].file())
                .map_err(|e| staged[0].output_error(e))?;
            let rows = source.cycle_rows()?;
            write_cycles_parquet(&rows, staged[1].file()).map_err(|e| staged[1].output_error(e))?;
            (
                written.rows,
                vec![
                    metadata::File::samples(written.columns),
                    metadata::File::cycles(),
                ],
            )
        }
        Format::BatteryArchive => {
            let [timeseries, cycles, _] = &mut staged[..] else {
                unreachable!("output_files names three Battery Archive files")
            };
            let samples =
                battery_archive::battery_archive(source, timeseries.file(), cycles.file())
                    // Either file may have failed: name the prefix the user gave.
                    .map_err(|e| staged::output_error(output, e))?;
            (samples, metadata::File::battery_archive())
        }
    };

    let protocol = source.protocol()?;
    let equipment = source.equipment()?;
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

/// The metadata JSON a BDF export of `test_id` in `format` carries beside its data (as
/// [`export_files`] writes it, not anonymised), for a download that serves the files one by one.
pub fn bdf_metadata_json(
    store: &HubStore,
    test_id: &str,
    format: Format,
) -> Result<String, ExportError> {
    let missing = || StoreError::NoSuchTest(test_id.to_owned());
    let test = store.test(test_id)?.ok_or_else(missing)?;
    let columns = Temperatures::of(&mut Stored { store, test_id })?.bdf_columns();
    let protocol = store.protocol(test_id)?.ok_or_else(missing)?;
    let equipment = store.test_equipment(test_id)?;
    Ok(metadata::metadata_json(
        &test,
        &equipment,
        &protocol,
        format,
        test.sample_count,
        vec![metadata::File::samples(columns), metadata::File::cycles()],
        None,
    ))
}
