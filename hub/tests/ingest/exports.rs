//! Exports of a test uploaded through the real ingest stream: BDF Parquet read back with the
//! parquet crate's own reader, Battery Archive's two files, the metadata JSON beside each, the
//! anonymised export, and the real `cyclerhub` binary end to end.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use cyclerhub::export::{self, Format, Pseudonymiser};
use parquet::basic::{Repetition, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::Value;

use super::*;

/// A cycling test: cycles of a 1 A charge then a 1 A discharge, one sample a second.
const CYCLES: u32 = 3;
/// Samples per charge and per discharge.
const HALF_CYCLE: usize = 500;
const SAMPLES: usize = CYCLES as usize * 2 * HALF_CYCLE;
/// For the Parquet test: 3 x 2 x 22 000 = 132 000 samples, just over one row group (131 072),
/// so the export writes two.
const LONG_HALF_CYCLE: usize = 22_000;
/// Samples per uploaded batch.
const BATCH: usize = 2_000;

const TEST_ID: &str = "0190a0c0-0000-7000-8000-0000000000e1";
const CELL_ID: &str = "LGM50-0042XQ";
const SERIAL: &str = "SN-998877-QW";
const OWNER: &str = "Hypatia Battery Group";
const OPERATOR: &str = "Grace Hopper";
const EMAIL: &str = "grace.hopper@example.org";

/// Strings no anonymised output may contain, in any case.
const IDENTIFYING: [&str; 6] = [TEST_ID, CELL_ID, SERIAL, OWNER, OPERATOR, EMAIL];

const SECRET: &str = "the lab's secret, 32 random bytes\n";

/// Metadata as `cyclerctl start` registers it: the primary keys and both free-form tiers, with
/// identifiers in free text as people write them.
fn metadata() -> HashMap<String, String> {
    [
        ("cell_id", CELL_ID),
        ("owner", OWNER),
        ("operator", OPERATOR),
        ("objective", "capacity fade at 1C"),
        ("chemistry", "NMC811/graphite-SiOx"),
        ("nominal_capacity_ah", "5.0"),
        ("secondary.manufacturer", "LG"),
        ("secondary.form_factor", "21700"),
        ("secondary.serial_number", SERIAL),
        ("tertiary.shelf", "3"),
        ("tertiary.contact_email", EMAIL),
        (
            "tertiary.note",
            "received from grace hopper with LGM50-0042xq",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// One sample of the cycling test.
struct Point {
    /// Cycle number, from 1.
    cycle: u32,
    /// +1 A charging, -1 A discharging.
    current: f64,
    /// Ah charged since the test started, this sample's second included.
    charged: f64,
    /// Ah discharged since the test started, this sample's second included.
    discharged: f64,
    /// Cell temperature; missing every 1000th sample.
    temperature: Option<f64>,
}

/// Sample `seq` of a test whose cycles are `half` samples of charge then `half` of discharge.
fn point(seq: usize, half: usize) -> Point {
    let cycle = seq / (2 * half);
    let seconds_in_cycle = seq % (2 * half) + 1;
    let before = (cycle * half) as f64;
    Point {
        cycle: cycle as u32 + 1,
        current: if seconds_in_cycle <= half { 1.0 } else { -1.0 },
        charged: (before + seconds_in_cycle.min(half) as f64) / 3600.0,
        discharged: (before + seconds_in_cycle.saturating_sub(half) as f64) / 3600.0,
        temperature: (seq % 1000 != 999).then_some(25.0 + (seq % 7) as f64 * 0.1),
    }
}

fn cycling_batch(first_seq: usize, n: usize, half: usize) -> SampleBatch {
    let mut b = batch(TEST_ID, first_seq as u64, n, true);
    for (i, seq) in (first_seq..first_seq + n).enumerate() {
        let p = point(seq, half);
        b.cycle[i] = p.cycle;
        b.step[i] = 2 * p.cycle - u32::from(p.current > 0.0);
        b.current_a[i] = p.current;
        b.voltage_v[i] = 3.6 + 0.5 * (p.charged - p.discharged) / (half as f64 / 3600.0);
        b.charge_capacity_ah[i] = p.charged;
        b.discharge_capacity_ah[i] = p.discharged;
        b.charge_energy_wh[i] = p.charged * 3.7;
        b.discharge_energy_wh[i] = p.discharged * 3.6;
        b.temperature_c[i] = p.temperature.unwrap_or(f64::NAN);
    }
    b.ambient_temperature_c = vec![25.0; n];
    b
}

/// A hub holding a whole cycling test of `half`-sample half cycles, ended.
async fn hub_with_cycling_test(backend: Backend, half: usize) -> Hub {
    let total = CYCLES as usize * 2 * half;
    let hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    let Some(Body::TestRegistered(mut test)) = registered(1, TEST_ID).body else {
        unreachable!("registered builds a TestRegistered")
    };
    test.metadata = metadata();
    test.protocol_name = format!("1C cycling of {CELL_ID}");
    let mut entries = vec![entry(1, Body::TestRegistered(test))];
    for first in (0..total).step_by(BATCH) {
        let id = entries.len() as u64 + 1;
        let n = BATCH.min(total - first);
        entries.push(entry(id, Body::Samples(cycling_batch(first, n, half))));
    }
    let mut end = ended(entries.len() as u64 + 1, TEST_ID, total as u64);
    if let Some(Body::TestEnded(e)) = &mut end.body {
        e.reason = format!("stopped by {OPERATOR}");
        e.outcome = "stopped".into();
    }
    let last = end.id;
    entries.push(end);
    up.send_entries(entries).await;
    assert!(up.until_ack(last).await.is_empty());
    hub
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).expect("metadata file")).expect("metadata is JSON")
}

/// Rows of a CSV file without quoting (all the exports write), the header first.
fn read_csv(path: &Path) -> Vec<Vec<String>> {
    fs::read_to_string(path)
        .expect("csv file")
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn names(columns: &Value) -> Vec<&str> {
    columns
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect()
}

async fn bdf_parquet_read_back_has_the_pinned_columns_and_every_sample(backend: Backend) {
    let mut hub = hub_with_cycling_test(backend, LONG_HALF_CYCLE).await;
    let samples = CYCLES as usize * 2 * LONG_HALF_CYCLE;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycling.bdf.parquet");
    let exported =
        export::export_files(&hub.store, TEST_ID, Format::BdfParquet, &path, None).expect("export");
    assert_eq!(exported.samples, samples as u64);

    let reader = SerializedFileReader::new(fs::File::open(&path).unwrap()).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.file_metadata().num_rows(), samples as i64);
    assert_eq!(meta.num_row_groups(), 2);
    let columns: Vec<(String, PhysicalType, Repetition)> = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| {
            (
                c.name().to_owned(),
                c.physical_type(),
                c.self_type().get_basic_info().repetition(),
            )
        })
        .collect();
    // DOUBLE for measurements, INT64 for counts, text for the step type; temperatures nullable.
    let physical = |name: &str| match name {
        "Cycle Count / 1" | "Step Count / 1" | "Record Index / 1" => PhysicalType::INT64,
        "Step Type" => PhysicalType::BYTE_ARRAY,
        _ => PhysicalType::DOUBLE,
    };
    let expected: Vec<(String, PhysicalType, Repetition)> = export::bdf_columns(true, true)
        .iter()
        .map(|c| {
            let repetition = if c.name.contains("Temperature") {
                Repetition::OPTIONAL
            } else {
                Repetition::REQUIRED
            };
            (c.name.to_owned(), physical(c.name), repetition)
        })
        .collect();
    assert_eq!(columns, expected);
    assert_eq!(
        expected[expected.len() - 2..]
            .iter()
            .map(|c| c.0.as_str())
            .collect::<Vec<_>>(),
        ["Temperature T1 / degC", "Ambient Temperature / degC"]
    );

    let stored = hub.store.samples(TEST_ID).unwrap();
    let mut rows = 0;
    let mut step_start = 0.0;
    for (row, s) in reader.get_row_iter(None).unwrap().zip(&stored) {
        let row = row.unwrap();
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
        if s.seq == 0 || stored[s.seq as usize - 1].step != s.step {
            step_start = s.test_time_s;
        }
        let step_type = if s.current_a > 0.0 {
            "CC_CHG"
        } else {
            "CC_DCH"
        };
        let (c, d) = (s.charge_capacity_ah, s.discharge_capacity_ah);
        let (ce, de) = (s.charge_energy_wh, s.discharge_energy_wh);
        let expected = [
            Field::Double(s.test_time_s),
            Field::Double(s.voltage_v),
            Field::Double(s.current_a),
            Field::Double(s.unix_time_s),
            Field::Long(s.cycle.into()),
            Field::Long(s.step.into()),
            Field::Str(step_type.into()),
            Field::Double(s.test_time_s - step_start),
            Field::Long(s.seq as i64 + 1),
            Field::Double(s.voltage_v * s.current_a),
            Field::Double(c),
            Field::Double(d),
            Field::Double(c - d),
            Field::Double(c + d),
            Field::Double(ce),
            Field::Double(de),
            Field::Double(ce - de),
            Field::Double(ce + de),
            s.temperature_c.map_or(Field::Null, Field::Double),
            s.ambient_temperature_c.map_or(Field::Null, Field::Double),
        ];
        assert_eq!(fields, expected.iter().collect::<Vec<_>>(), "seq {}", s.seq);
        rows += 1;
    }
    assert_eq!(rows, samples);
    // The missing readings came back as nulls, in place.
    assert_eq!(stored[999].temperature_c, None);
    hub.shutdown().await;
}

async fn battery_archive_files_have_one_cycle_row_per_cycle_with_capacities_matching_the_timeseries(
    backend: Backend,
) {
    let mut hub = hub_with_cycling_test(backend, HALF_CYCLE).await;
    let dir = tempfile::tempdir().unwrap();
    // A trailing .csv is dropped from the prefix.
    let prefix = dir.path().join("LGM-cell.csv");
    let exported = export::export_files(&hub.store, TEST_ID, Format::BatteryArchive, &prefix, None)
        .expect("export");
    let [timeseries, cycle_data, metadata] = &exported.files[..] else {
        panic!("three files: {:?}", exported.files)
    };
    assert_eq!(*timeseries, dir.path().join("LGM-cell_timeseries.csv"));
    assert_eq!(*cycle_data, dir.path().join("LGM-cell_cycle_data.csv"));
    assert_eq!(*metadata, dir.path().join("LGM-cell.metadata.json"));

    let ts = read_csv(timeseries);
    assert_eq!(
        ts[0].join(","),
        "Date_Time,Test_Time (s),Cycle_Index,Current (A),Voltage (V),Charge_Capacity (Ah),\
         Discharge_Capacity (Ah),Charge_Energy (Wh),Discharge_Energy (Wh),\
         Environment_Temperature (C),Cell_Temperature (C)"
    );
    assert_eq!(ts.len(), 1 + SAMPLES);
    assert_eq!(ts[1][0], "2023-11-14 22:13:20.000");
    assert_eq!(
        ts[1000][10], "",
        "a missing cell temperature is an empty cell"
    );
    let cy = read_csv(cycle_data);
    assert_eq!(
        cy[0].join(","),
        "Cycle_Index,Start_Time,End_Time,Test_Time (s),Min_Current (A),Max_Current (A),\
         Min_Voltage (V),Max_Voltage (V),Charge_Capacity (Ah),Discharge_Capacity (Ah),\
         Charge_Energy (Wh),Discharge_Energy (Wh),Coulombic_Efficiency,Energy_Efficiency"
    );
    assert_eq!(cy.len(), 1 + CYCLES as usize);

    let num = |s: &str| s.parse::<f64>().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    for (c, row) in cy[1..].iter().enumerate() {
        let cycle = (c + 1).to_string();
        assert_eq!(row[0], cycle);
        let rows: Vec<&Vec<String>> = ts[1..].iter().filter(|r| r[2] == cycle).collect();
        assert_eq!(rows.len(), 2 * HALF_CYCLE);
        assert_eq!((&row[1], &row[2]), (&rows[0][0], &rows[rows.len() - 1][0]));
        assert_eq!(row[3], rows[rows.len() - 1][1]);
        assert_eq!((num(&row[4]), num(&row[5])), (-1.0, 1.0));
        // Each counter restarts with the cycle, and the cycle row holds its largest (last) value.
        for (col, ts_col) in [(8, 5), (9, 6), (10, 7), (11, 8)] {
            let values: Vec<f64> = rows.iter().map(|r| num(&r[ts_col])).collect();
            let max = values.iter().copied().fold(f64::MIN, f64::max);
            assert_eq!(num(&row[col]), max, "cycle {cycle} column {}", cy[0][col]);
            assert_eq!(num(&row[col]), values[values.len() - 1]);
            // At most one sample's worth in: a second at 1 A and 3.7 V.
            assert!(
                values[0] <= 3.7 / 3600.0 + 1e-9,
                "cycle {cycle} starts from zero: {}",
                values[0]
            );
        }
        let one_half = HALF_CYCLE as f64 / 3600.0;
        assert!(close(num(&row[8]), one_half), "{}", row[8]);
        assert!(close(num(&row[9]), one_half), "{}", row[9]);
        // Current is positive while charging, as in Battery Archive's own converter.
        assert!(rows[..HALF_CYCLE].iter().all(|r| num(&r[3]) > 0.0));
        assert!(rows[HALF_CYCLE..].iter().all(|r| num(&r[3]) < 0.0));
    }
    hub.shutdown().await;
}

async fn the_metadata_json_beside_every_export_carries_the_test_its_three_tiers_and_the_columns(
    backend: Backend,
) {
    let mut hub = hub_with_cycling_test(backend, HALF_CYCLE).await;
    let dir = tempfile::tempdir().unwrap();
    for (format, output, files) in [
        (Format::BdfCsv, "t.csv", vec!["samples", "cycles"]),
        (Format::BdfParquet, "t.parquet", vec!["samples", "cycles"]),
        (
            Format::BatteryArchive,
            "t",
            vec!["timeseries", "cycle_data"],
        ),
    ] {
        let exported =
            export::export_files(&hub.store, TEST_ID, format, &dir.path().join(output), None)
                .expect("export");
        let path = exported.files.last().unwrap();
        assert!(
            path.to_str().unwrap().ends_with(".metadata.json"),
            "{path:?}"
        );
        let json = read_json(path);
        assert_eq!(json["test_id"], TEST_ID);
        assert_eq!(json["channel_id"], "psb1/1");
        assert_eq!(json["protocol"]["name"], format!("1C cycling of {CELL_ID}"));
        assert!(
            json["protocol"]["source"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "the protocol source is there"
        );
        assert!(!json["protocol"]["plan"].is_null(), "and the plan it ran");
        assert_eq!(json["start"]["utc"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["end"]["unix_s"], 1_700_003_600.0);
        assert_eq!(json["outcome"], "stopped");
        assert_eq!(json["reason"], format!("stopped by {OPERATOR}"));
        assert_eq!(json["samples"], SAMPLES);
        let tiers = &json["metadata"];
        assert_eq!(tiers["primary"]["cell_id"], CELL_ID);
        assert_eq!(tiers["primary"]["nominal_capacity_ah"], "5.0");
        assert_eq!(tiers["primary"].as_object().unwrap().len(), 6);
        assert_eq!(tiers["secondary"]["form_factor"], "21700");
        assert_eq!(tiers["secondary"]["serial_number"], SERIAL);
        assert_eq!(tiers["tertiary"]["shelf"], "3");
        let export = &json["export"];
        assert_eq!(export["format"], format.name());
        assert_eq!(export["current_sign"], "positive = charging");
        assert_eq!(export["anonymised"], false);
        let roles: Vec<&str> = export["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, files);
        assert_eq!(json["cyclerd_version"], env!("CARGO_PKG_VERSION"));

        // The columns listed are the ones written, with their units.
        let first_columns = &export["files"][0]["columns"];
        let header = if format == Format::BdfParquet {
            let reader =
                SerializedFileReader::new(fs::File::open(&exported.files[0]).unwrap()).unwrap();
            reader
                .metadata()
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect()
        } else {
            read_csv(&exported.files[0]).swap_remove(0)
        };
        assert_eq!(names(first_columns), header);
        let voltage = first_columns
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with("Voltage"))
            .unwrap();
        assert_eq!(voltage["unit"], "V");
        assert_eq!(voltage["type"], "float64");
    }
    hub.shutdown().await;
}

/// Every byte of every file in `dir` must be free of every identifying string, in any ASCII case.
fn assert_no_identifier_in(dir: &Path) {
    for file in fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        // Lossy UTF-8 (for the Parquet file) keeps every ASCII byte where it was, and lets the
        // search run in the optimised standard library.
        let text = String::from_utf8_lossy(&fs::read(&path).unwrap()).to_ascii_lowercase();
        for id in IDENTIFYING {
            assert!(
                !text.contains(&id.to_ascii_lowercase()),
                "{} contains {id:?}",
                path.display()
            );
        }
    }
}

async fn an_anonymised_export_contains_no_identifier_anywhere_and_gives_the_same_pseudonyms_twice(
    backend: Backend,
) {
    let mut hub = hub_with_cycling_test(backend, HALF_CYCLE).await;
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&first, &second] {
        // A fresh pseudonymiser each time, as in two runs of the command.
        let p = Pseudonymiser::new(SECRET.as_bytes()).unwrap();
        for (format, name) in [
            (Format::BdfCsv, "shared.bdf.csv"),
            (Format::BdfParquet, "shared.bdf.parquet"),
            (Format::BatteryArchive, "shared"),
        ] {
            export::export_files(
                &hub.store,
                TEST_ID,
                format,
                &dir.path().join(name),
                Some(&p),
            )
            .expect("anonymised export");
        }
        // BDF CSV and Parquet: data, per-cycle table, metadata; Battery Archive: three files.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 9);
        assert_no_identifier_in(dir.path());
    }

    let json = read_json(&first.path().join("shared.bdf.parquet.metadata.json"));
    assert_eq!(json["export"]["anonymised"], true);
    let pseudonym = |v: &Value, prefix: &str| {
        let s = v.as_str().unwrap().to_owned();
        assert!(
            s.starts_with(prefix) && s.len() == prefix.len() + 12,
            "{s:?} is not a {prefix} pseudonym"
        );
        s
    };
    let tiers = &json["metadata"];
    let cell = pseudonym(&tiers["primary"]["cell_id"], "cell-");
    pseudonym(&json["test_id"], "test-");
    pseudonym(&tiers["primary"]["owner"], "owner-");
    let operator = pseudonym(&tiers["primary"]["operator"], "operator-");
    pseudonym(&tiers["secondary"]["serial_number"], "cell-");
    pseudonym(&tiers["tertiary"]["contact_email"], "person-");
    // Free text keeps its words but names the cell and the operator by their pseudonyms.
    assert_eq!(
        tiers["tertiary"]["note"],
        format!("received from {operator} with {cell}")
    );
    assert_eq!(json["reason"], format!("stopped by {operator}"));
    assert_eq!(json["protocol"]["name"], format!("1C cycling of {cell}"));
    // What is not identifying stays.
    assert_eq!(tiers["secondary"]["form_factor"], "21700");
    assert_eq!(tiers["primary"]["chemistry"], "NMC811/graphite-SiOx");
    let mut keys: Vec<&str> = json["export"]["pseudonymised"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cell_id",
            "operator",
            "owner",
            "secondary.serial_number",
            "tertiary.contact_email",
            "test_id"
        ]
    );

    // The same secret gives the same pseudonyms, run after run: the files are identical.
    for name in [
        "shared.bdf.csv.metadata.json",
        "shared.bdf.parquet.metadata.json",
        "shared.metadata.json",
        "shared_cycle_data.csv",
    ] {
        assert_eq!(
            fs::read(first.path().join(name)).unwrap(),
            fs::read(second.path().join(name)).unwrap(),
            "{name}"
        );
    }
    // Another lab's secret gives other pseudonyms.
    let other = Pseudonymiser::new(b"another lab's secret, also long").unwrap();
    let third = tempfile::tempdir().unwrap();
    let path = third.path().join("x.bdf.csv");
    export::export_files(&hub.store, TEST_ID, Format::BdfCsv, &path, Some(&other)).unwrap();
    let other_json = read_json(&third.path().join("x.bdf.csv.metadata.json"));
    assert_ne!(other_json["metadata"]["primary"]["cell_id"], cell.as_str());
    hub.shutdown().await;
}

/// Runs the real `cyclerhub` binary, without a salt from the environment.
fn cyclerhub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args(args)
        .env_remove("CYCLERHUB_SALT_FILE")
        .output()
        .expect("run cyclerhub")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A BDF file read back: its header and, per column, the values as numbers (`NaN` for an empty
/// cell or a null) or as text.
struct BdfTable {
    header: Vec<String>,
    numbers: HashMap<String, Vec<f64>>,
    texts: HashMap<String, Vec<String>>,
}

impl BdfTable {
    fn from_csv(path: &Path) -> BdfTable {
        let mut rows = read_csv(path);
        let header = rows.remove(0);
        let mut table = BdfTable::new(header);
        for row in rows {
            assert_eq!(row.len(), table.header.len(), "{row:?}");
            for (name, cell) in table.header.clone().iter().zip(row) {
                if name == "Step Type" {
                    table.texts.entry(name.clone()).or_default().push(cell);
                } else {
                    let x = if cell.is_empty() {
                        f64::NAN
                    } else {
                        cell.parse().unwrap_or_else(|_| panic!("{name}: {cell:?}"))
                    };
                    table.numbers.entry(name.clone()).or_default().push(x);
                }
            }
        }
        table
    }

    fn from_parquet(path: &Path) -> BdfTable {
        let reader = SerializedFileReader::new(fs::File::open(path).unwrap()).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let header: Vec<String> = schema.columns().iter().map(|c| c.name().into()).collect();
        let mut table = BdfTable::new(header);
        for row in reader.get_row_iter(None).unwrap() {
            for (name, field) in row.unwrap().get_column_iter() {
                match field {
                    Field::Str(s) => table.texts.entry(name.clone()).or_default().push(s.clone()),
                    Field::Double(x) => table.numbers.entry(name.clone()).or_default().push(*x),
                    Field::Long(n) => table
                        .numbers
                        .entry(name.clone())
                        .or_default()
                        .push(*n as f64),
                    Field::Null => table
                        .numbers
                        .entry(name.clone())
                        .or_default()
                        .push(f64::NAN),
                    other => panic!("{name}: unexpected {other:?}"),
                }
            }
        }
        table
    }

    fn new(header: Vec<String>) -> BdfTable {
        BdfTable {
            header,
            numbers: HashMap::new(),
            texts: HashMap::new(),
        }
    }

    fn column(&self, name: &str) -> &[f64] {
        self.numbers
            .get(name)
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.header))
    }

    /// The identities BDF's validator warns about.
    fn check_validator_identities(&self) {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()));
        let non_decreasing = |name: &str| {
            let c = self.column(name);
            assert!(c.windows(2).all(|w| w[0] <= w[1]), "{name} decreases");
        };
        non_decreasing("Test Time / s");
        let (test, unix) = (self.column("Test Time / s"), self.column("Unix Time / s"));
        assert!(
            test.iter()
                .zip(unix)
                .all(|(t, u)| close(u - t, unix[0] - test[0])),
            "Unix Time and Test Time advance at different rates"
        );
        for (quantity, unit) in [("Capacity", "Ah"), ("Energy", "Wh")] {
            let col = |kind: &str| self.column(&format!("{kind} {quantity} / {unit}"));
            let (charging, discharging) = (col("Charging"), col("Discharging"));
            let (net, cumulative) = (col("Net"), col("Cumulative"));
            for i in 0..charging.len() {
                assert!(
                    close(cumulative[i], charging[i] + discharging[i]),
                    "row {i}"
                );
                assert!(close(net[i], charging[i] - discharging[i]), "row {i}");
            }
            non_decreasing(&format!("Cumulative {quantity} / {unit}"));
            non_decreasing(&format!("Charging {quantity} / {unit}"));
            non_decreasing(&format!("Discharging {quantity} / {unit}"));
        }
        let cycles = self.column("Cycle Count / 1");
        assert!(cycles.iter().all(|c| *c >= 0.0 && c.fract() == 0.0));
        non_decreasing("Cycle Count / 1");
        let index = self.column("Record Index / 1");
        assert!(
            index.iter().enumerate().all(|(i, x)| *x == i as f64 + 1.0),
            "Record Index is not 1, 2, 3, ..."
        );
        assert!(!index.is_empty());
        let vocabulary = [
            "CC_CHG", "CC_DCH", "CV_CHG", "CV_DCH", "CCCV_CHG", "CCCV_DCH", "CP_CHG", "CP_DCH",
            "CR_DCH", "REST", "OCV", "PROFILE",
        ];
        let types = &self.texts["Step Type"];
        assert_eq!(types.len(), index.len());
        assert!(types.iter().all(|t| vocabulary.contains(&t.as_str())));
        let (step, step_time) = (self.column("Step Count / 1"), self.column("Step Time / s"));
        for i in 0..step.len() {
            let began = (0..=i)
                .rev()
                .take_while(|&j| step[j] == step[i])
                .last()
                .unwrap();
            assert!(
                close(step_time[i], test[i] - test[began]),
                "step time, row {i}"
            );
        }
    }
}

on_both_backends!(
    bdf_parquet_read_back_has_the_pinned_columns_and_every_sample,
    battery_archive_files_have_one_cycle_row_per_cycle_with_capacities_matching_the_timeseries,
    the_metadata_json_beside_every_export_carries_the_test_its_three_tiers_and_the_columns,
    an_anonymised_export_contains_no_identifier_anywhere_and_gives_the_same_pseudonyms_twice,
);

#[path = "exports/bdf.rs"]
mod bdf;
#[path = "exports/binary.rs"]
mod binary;
#[path = "exports/cycles.rs"]
mod cycles;
#[path = "exports/publish.rs"]
mod publish;
#[path = "exports/remote.rs"]
mod remote;
