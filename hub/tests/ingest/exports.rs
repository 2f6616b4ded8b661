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

#[tokio::test]
async fn exporting_through_the_cyclerhub_binary_writes_every_format_end_to_end() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    hub.shutdown().await;
    let db = hub.db.clone();
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // Without -o, BDF CSV on standard output, as before: the library's bytes exactly.
    let out = cyclerhub(&["export", "--db", &db, TEST_ID]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut expected = Vec::new();
    export::write_bdf_csv(&hub.store, TEST_ID, &mut expected).unwrap();
    assert_eq!(out.stdout, expected);

    for (format, output) in [
        ("bdf-csv", "run.csv"),
        ("bdf-parquet", "run.parquet"),
        ("battery-archive", "run"),
    ] {
        let out = cyclerhub(&[
            "export",
            "--db",
            &db,
            TEST_ID,
            "--format",
            format,
            "-o",
            &at(output),
        ]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("wrote {SAMPLES} samples of {TEST_ID}")),
            "{}",
            stderr(&out)
        );
    }
    let mut written: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "run.bdf.csv",
            "run.bdf.csv.metadata.json",
            "run.bdf.parquet",
            "run.bdf.parquet.metadata.json",
            "run.cycles.csv",
            "run.cycles.parquet",
            "run.metadata.json",
            "run_cycle_data.csv",
            "run_timeseries.csv",
        ]
    );
    // `run.csv` and `run.parquet` were named with the suffixes BDF's validator accepts.
    assert_eq!(fs::read(at("run.bdf.csv")).unwrap(), expected);
    let reader = SerializedFileReader::new(fs::File::open(at("run.bdf.parquet")).unwrap()).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), SAMPLES as i64);

    // Anonymised, with the salt from --salt and from the environment: the same pseudonyms.
    fs::write(dir.path().join("lab-secret"), SECRET).unwrap();
    let anonymised = tempfile::tempdir().unwrap();
    let a = anonymised.path().join("a.bdf.parquet");
    let b = anonymised.path().join("b.bdf.parquet");
    let out = cyclerhub(&[
        "export",
        "--db",
        &db,
        TEST_ID,
        "--format",
        "bdf-parquet",
        "-o",
        a.to_str().unwrap(),
        "--anonymise",
        "--salt",
        &at("lab-secret"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args(["export", "--db", &db, TEST_ID, "--format", "bdf-parquet"])
        .args(["-o", b.to_str().unwrap(), "--anonymise"])
        .env("CYCLERHUB_SALT_FILE", at("lab-secret"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_identifier_in(anonymised.path());
    let (ja, jb) = (
        read_json(&anonymised.path().join("a.bdf.parquet.metadata.json")),
        read_json(&anonymised.path().join("b.bdf.parquet.metadata.json")),
    );
    assert_eq!(ja, jb);
    assert!(ja["test_id"].as_str().unwrap().starts_with("test-"));
}

#[tokio::test]
async fn the_binary_refuses_unknown_tests_unwritable_outputs_and_anonymising_without_a_secret() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    hub.shutdown().await;
    let db = hub.db.clone();
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    fs::write(at("short-secret"), "too short\n").unwrap();
    fs::write(at("lab-secret"), SECRET).unwrap();
    fs::create_dir(at("a-directory")).unwrap();
    let missing_dir = at("no/such/dir/x.bdf.parquet");

    for (args, message) in [
        (
            vec!["--format", "bdf-parquet", "-o", &at("x.parquet")],
            "no test with id \"0190a0c0-0000-7000-8000-00000000dead\"",
        ),
        (
            vec!["--format", "bdf-parquet"],
            "--format bdf-parquet writes files: give -o FILE",
        ),
        (
            vec!["--format", "battery-archive"],
            "--format battery-archive writes files: give -o PREFIX",
        ),
        (
            vec!["-o", &at("x.csv"), "--anonymise"],
            "--anonymise needs the lab's secret: --salt FILE",
        ),
        (
            vec!["--anonymise", "--salt", &at("lab-secret")],
            "--anonymise applies to the metadata JSON, which is written beside an output file: \
             give -o FILE",
        ),
        (
            vec![
                "-o",
                &at("x.csv"),
                "--anonymise",
                "--salt",
                &at("short-secret"),
            ],
            "the lab secret is 9 bytes; it needs at least 16",
        ),
        (
            vec![
                "-o",
                &at("x.csv"),
                "--anonymise",
                "--salt",
                &at("no-secret"),
            ],
            "cannot read the salt file",
        ),
    ] {
        let test_id = if message.starts_with("no test") {
            "0190a0c0-0000-7000-8000-00000000dead"
        } else {
            TEST_ID
        };
        let mut all = vec!["export", "--db", &db, test_id];
        all.extend(&args);
        let out = cyclerhub(&all);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    for (output, message) in [
        (missing_dir.as_str(), format!("cannot write {missing_dir}")),
        (
            &at("a-directory"),
            format!("cannot write {}: it is a directory", at("a-directory")),
        ),
    ] {
        let out = cyclerhub(&[
            "export",
            "--db",
            &db,
            TEST_ID,
            "--format",
            "bdf-parquet",
            "-o",
            output,
        ]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(&message), "{}", stderr(&out));
    }
    // Nothing was left behind: no output, no half-written temporary file.
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["a-directory", "lab-secret", "short-secret"]);
    assert_eq!(fs::read_dir(at("a-directory")).unwrap().count(), 0);
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

#[tokio::test]
async fn every_bdf_export_format_passes_the_bdf_validator_identities() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::BdfCsv, Format::BdfParquet] {
        let exported = export::export_files(
            &hub.store,
            TEST_ID,
            format,
            &dir.path().join("cycling"),
            None,
        )
        .expect("export");
        let data = &exported.files[0];
        let name = data.file_name().unwrap().to_str().unwrap();
        let table = match format {
            Format::BdfCsv => {
                assert_eq!(name, "cycling.bdf.csv");
                BdfTable::from_csv(data)
            }
            _ => {
                assert_eq!(name, "cycling.bdf.parquet");
                BdfTable::from_parquet(data)
            }
        };
        assert_eq!(table.column("Record Index / 1").len(), SAMPLES, "{name}");
        table.check_validator_identities();
        // The test's plan names no step: charges and discharges are typed by their current.
        let types = &table.texts["Step Type"];
        assert_eq!(types[0], "CC_CHG");
        assert_eq!(types[HALF_CYCLE], "CC_DCH");
        let header: Vec<&str> = table.header.iter().map(String::as_str).collect();
        assert!(header.contains(&"Temperature T1 / degC"), "{name}");
        assert!(!header.contains(&"Surface Temperature T1 / degC"), "{name}");
    }
    hub.shutdown().await;
}

#[test]
fn the_metadata_json_says_which_parameters_the_test_ran_with() {
    const T: &str = "0190a0c0-0000-7000-8000-0000000000f2";
    let yaml = "protocol: p\nversion: 1\nparams: {capacity: 2.5 Ah, v_max: 4.2 V}\n\
                safety: {voltage: [2.5 V, 4.25 V], current: 5 A}\n\
                steps: [\"Charge at C/2 until {v_max}\"]\n";
    let given = [("capacity".to_string(), "5 Ah".to_string())].into();
    let none = |_: &str| Err("no files".to_string());
    let plan =
        cyclerd_protocols::Plan::from_yaml_with_params(yaml, "p.yaml", &none, &given).unwrap();
    let Some(Body::TestRegistered(mut test)) = registered(1, T).body else {
        unreachable!("registered builds a TestRegistered")
    };
    test.plan_json = plan.to_json();
    let db = Database::new(Backend::Sqlite);
    let store = db.connect();
    store
        .apply_batch(
            "daemon-a",
            1,
            &[entry(1, Body::TestRegistered(test)), samples(2, T, 0, 10)],
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exported =
        export::export_files(&store, T, Format::BdfCsv, &dir.path().join("p.csv"), None).unwrap();
    let json = read_json(exported.files.last().unwrap());
    let parameters = &json["protocol"]["parameters"];
    assert_eq!(parameters["capacity"], "5 Ah", "{json:#}");
    assert_eq!(parameters["v_max"], "4.2 V", "{json:#}");
}

/// A discharge to 3.2 V, then a hold at 3.0 V until 100 mA.
fn discharge_and_hold_plan() -> cyclerd_protocols::Plan {
    let yaml = r#"
protocol: Discharge and hold
version: 1
params: {capacity: 1 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Discharge at 1 A until 3.2 V", "Hold at 3.0 V until 100 mA"]
"#;
    cyclerd_protocols::Plan::from_yaml(yaml, "hold.yaml").unwrap()
}

/// `n` samples of [`discharge_and_hold_plan`] for `test_id`: ten of step 1, 1 s apart at -1 A
/// from 3.5 V down to 3.2 V; then step 2, the hold at 3.0 V, caught while the voltage still
/// falls and the current decays, so that its samples alone would make it a PROFILE.
fn discharge_and_hold_samples(test_id: &str, n: usize) -> SampleBatch {
    let mut b = batch(test_id, 0, n, false);
    let mut discharged = 0.0;
    for i in 0..n {
        let (v, a) = if i < 10 {
            (3.5 - 0.03 * i as f64, -1.0)
        } else {
            (3.2 - 0.02 * (i - 10) as f64, -1.0 + 0.09 * (i - 10) as f64)
        };
        discharged += -a / 3600.0;
        b.voltage_v[i] = v;
        b.current_a[i] = a;
        b.step[i] = if i < 10 { 1 } else { 2 };
        b.charge_capacity_ah[i] = 0.0;
        b.charge_energy_wh[i] = 0.0;
        b.discharge_capacity_ah[i] = discharged;
        b.discharge_energy_wh[i] = discharged * 3.2;
    }
    b
}

#[tokio::test]
async fn a_step_named_in_the_test_plan_takes_its_step_type_from_the_plan_step_not_the_current() {
    const T: &str = "0190a0c0-0000-7000-8000-0000000000f1";
    let plan = discharge_and_hold_plan();
    let descriptions: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            cyclerd_protocols::PlanStep::Action(a) => Some(a.description.clone()),
            _ => None,
        })
        .collect();
    let Some(Body::TestRegistered(mut test)) = registered(1, T).body else {
        unreachable!("registered builds a TestRegistered")
    };
    test.plan_json = plan.to_json();
    let n = 20;
    let b = discharge_and_hold_samples(T, n);
    let step_event = |id: u64, step: u32| {
        let mut e = event(id, T, &descriptions[step as usize - 1]);
        if let Some(Body::Event(ev)) = &mut e.body {
            ev.step = step;
        }
        e
    };
    let mut up_hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = up_hub.upload("daemon-a", 1).await;
    up.send_entries([
        entry(1, Body::TestRegistered(test)),
        step_event(2, 1),
        entry(3, Body::Samples(b)),
        step_event(4, 2),
    ])
    .await;
    up.until_ack(4).await;

    let dir = tempfile::tempdir().unwrap();
    let exported = export::export_files(
        &up_hub.store,
        T,
        Format::BdfCsv,
        &dir.path().join("hold.csv"),
        None,
    )
    .unwrap();
    let table = BdfTable::from_csv(&exported.files[0]);
    table.check_validator_identities();
    let types = &table.texts["Step Type"];
    assert!(types[..10].iter().all(|t| t == "CC_DCH"), "{types:?}");
    assert!(types[10..].iter().all(|t| t == "CV_DCH"), "{types:?}");
    // Without the plan, the same samples are typed by their current.
    let shape: Vec<(f64, f64)> = (10..n)
        .map(|i| {
            (
                table.column("Voltage / V")[i],
                table.column("Current / A")[i],
            )
        })
        .collect();
    assert_eq!(
        cyclerd_protocols::bdf::StepType::of_samples(&shape).label(),
        "PROFILE"
    );
    up_hub.shutdown().await;
}

/// The per-cycle table's header, pinned here as a reader matches on it.
const CYCLES_HEADER: &str = "Cycle Count / 1,Start Test Time / s,Duration / s,\
Charging Capacity / Ah,Discharging Capacity / Ah,Charging Energy / Wh,Discharging Energy / Wh,\
Coulombic Efficiency / 1,Energy Efficiency / 1,Mean Charge Voltage / V,\
Mean Discharge Voltage / V,Max Temperature / degC,Capacity Retention / 1,\
DC Internal Resistance / ohm,Cycle Complete / 1";

async fn a_per_cycle_table_is_written_beside_every_bdf_export_with_the_documented_columns(
    backend: Backend,
) {
    // A test stored without per-cycle results: the hub computes them from its samples.
    let mut hub = hub_with_cycling_test(backend, HALF_CYCLE).await;
    let dir = tempfile::tempdir().unwrap();
    let half_ah = HALF_CYCLE as f64 / 3600.0;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    for (format, output, data, cycles) in [
        (Format::BdfCsv, "run.csv", "run.bdf.csv", "run.cycles.csv"),
        (
            Format::BdfParquet,
            "run.parquet",
            "run.bdf.parquet",
            "run.cycles.parquet",
        ),
    ] {
        let exported =
            export::export_files(&hub.store, TEST_ID, format, &dir.path().join(output), None)
                .expect("export");
        let files: Vec<&str> = exported
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            files,
            [data, cycles, &format!("{data}.metadata.json")],
            "the per-cycle table sits beside the BDF file"
        );
        let table = if format == Format::BdfCsv {
            BdfTable::from_csv(&exported.files[1])
        } else {
            BdfTable::from_parquet(&exported.files[1])
        };
        assert_eq!(table.header.join(","), CYCLES_HEADER, "{cycles}");
        assert_eq!(table.column("Cycle Count / 1"), [1.0, 2.0, 3.0]);
        for c in 0..CYCLES as usize {
            let at = |name: &str| table.column(name)[c];
            assert!(close(at("Charging Capacity / Ah"), half_ah), "{cycles}");
            assert!(close(at("Discharging Capacity / Ah"), half_ah));
            assert!(close(at("Coulombic Efficiency / 1"), 1.0));
            assert!(close(at("Energy Efficiency / 1"), 3.6 / 3.7));
            assert!(close(at("Mean Charge Voltage / V"), 3.7));
            assert!(close(at("Mean Discharge Voltage / V"), 3.6));
            assert!(close(at("Capacity Retention / 1"), 1.0));
            assert!(close(at("Duration / s"), (2 * HALF_CYCLE - 1) as f64));
            assert!(close(
                at("Start Test Time / s"),
                (c * 2 * HALF_CYCLE) as f64
            ));
            assert!(at("Max Temperature / degC") > 25.0);
            assert!(
                at("DC Internal Resistance / ohm").is_nan(),
                "no rest to step out of: no resistance, an empty cell"
            );
            assert_eq!(at("Cycle Complete / 1"), 1.0);
        }
        let json = read_json(exported.files.last().unwrap());
        let listed = &json["export"]["files"][1];
        assert_eq!(listed["role"], "cycles");
        assert_eq!(names(&listed["columns"]).join(","), CYCLES_HEADER);
    }
    hub.shutdown().await;
}

async fn the_battery_archive_cycle_file_carries_efficiency_from_the_daemons_cycle_rows(
    backend: Backend,
) {
    let mut hub = hub_with_cycling_test(backend, HALF_CYCLE).await;
    // The daemon's summary of cycle 2 (it saw samples the hub never got): the cycle file takes
    // it; cycles 1 and 3, which it has none of, take the timeseries' values.
    let (mut up, resume) = hub.upload("daemon-a", 1).await;
    let summary = cyclerd_proto::ingest::CycleSummary {
        test_id: TEST_ID.into(),
        cycle: 2,
        complete: true,
        start_test_time_s: 1000.0,
        end_test_time_s: 1999.0,
        charge_capacity_ah: 0.2,
        discharge_capacity_ah: 0.19,
        charge_energy_wh: 0.74,
        discharge_energy_wh: 0.684,
        max_temperature_c: 25.6,
        dcir_ohm: f64::NAN,
        first_seq: 1000,
        last_seq: 1999,
    };
    let id = resume + 1;
    up.send_entries([entry(id, Body::Cycle(summary))]).await;
    assert!(up.until_ack(id).await.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let exported = export::export_files(
        &hub.store,
        TEST_ID,
        Format::BatteryArchive,
        &dir.path().join("ba"),
        None,
    )
    .expect("export");
    let cy = read_csv(&exported.files[1]);
    assert_eq!(
        cy[0][12..],
        ["Coulombic_Efficiency", "Energy_Efficiency"],
        "{:?}",
        cy[0]
    );
    let num = |s: &str| s.parse::<f64>().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert_eq!(cy.len(), 1 + CYCLES as usize);
    let stored = &cy[2];
    assert_eq!((num(&stored[8]), num(&stored[9])), (0.2, 0.19));
    assert!(close(num(&stored[12]), 0.95), "{stored:?}");
    assert!(close(num(&stored[13]), 0.684 / 0.74), "{stored:?}");
    for row in [&cy[1], &cy[3]] {
        assert!(close(num(&row[8]), HALF_CYCLE as f64 / 3600.0), "{row:?}");
        assert!(close(num(&row[12]), 1.0), "{row:?}");
        assert!(close(num(&row[13]), 3.6 / 3.7), "{row:?}");
    }
    let json = read_json(exported.files.last().unwrap());
    let columns = names(&json["export"]["files"][1]["columns"]);
    assert_eq!(columns.join(","), cy[0].join(","));
    hub.shutdown().await;
}

#[tokio::test]
async fn cyclerhub_cycles_prints_an_aligned_table_in_80_columns_or_the_export_csv() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    let db = hub.db.clone();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cyclerhub(&args)
        })
    };
    let args = |from: &[&str], more: &[&str]| -> Vec<String> {
        ["cycles"]
            .iter()
            .chain(from)
            .chain(more)
            .map(|s| s.to_string())
            .collect()
    };
    let url = format!("http://{}", hub.addr);
    let mut tables = Vec::new();
    // From the database, and from the running hub: the same table.
    for from in [["--db", db.as_str()], ["--hub", url.as_str()]] {
        let out = run(args(&from, &[TEST_ID])).await.unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        tables.push(String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(tables[0], tables[1]);
    let table = &tables[0];
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines.iter().all(|l| l.chars().count() <= 80),
        "wider than 80 columns:\n{table}"
    );
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "cycle", "duration", "charge", "dischg", "CE", "EE", "V", "chg", "V", "dch", "max",
            "T", "retent.", "DCIR"
        ]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["h", "Ah", "Ah", "%", "%", "V", "V", "°C", "%", "mΩ"]
    );
    // Cycle 1: 500 s of charge and 500 s of discharge at 1 A, sampled every second; no
    // resistance measured: its column is blank, so the row ends at the retention.
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "1", "0.28", "0.1389", "0.1389", "100.00", "97.30", "3.700", "3.600", "25.6", "100.00"
        ],
        "{table}"
    );
    // Every column is right-aligned under its title: the row ends where `retent.` does.
    let end = lines[0].find("retent.").unwrap() + "retent.".len();
    assert_eq!(lines[2].len(), end, "{table}");
    assert_eq!(lines.len(), 2 + CYCLES as usize + 2, "{table}");
    assert!(
        lines[5].contains("cycle 1's, the first full cycle"),
        "{table}"
    );
    assert!(
        lines[6].contains("computed by the hub from the samples"),
        "{table}"
    );

    let out = run(args(&["--db", &db], &[TEST_ID, "--csv"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = String::from_utf8(out.stdout).unwrap();
    let csv: Vec<&str> = csv.lines().collect();
    assert_eq!(csv[0], CYCLES_HEADER);
    assert_eq!(csv.len(), 1 + CYCLES as usize);
    assert!(csv[1].starts_with("1,0,999,"), "{}", csv[1]);

    let unknown = "0190a0c0-0000-7000-8000-00000000dead";
    for from in [["--db", db.as_str()], ["--hub", url.as_str()]] {
        let out = run(args(&from, &[unknown])).await.unwrap();
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!("no test with id \"{unknown}\"")),
            "{}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    hub.shutdown().await;
}

on_both_backends!(
    bdf_parquet_read_back_has_the_pinned_columns_and_every_sample,
    battery_archive_files_have_one_cycle_row_per_cycle_with_capacities_matching_the_timeseries,
    the_metadata_json_beside_every_export_carries_the_test_its_three_tiers_and_the_columns,
    an_anonymised_export_contains_no_identifier_anywhere_and_gives_the_same_pseudonyms_twice,
    a_per_cycle_table_is_written_beside_every_bdf_export_with_the_documented_columns,
    the_battery_archive_cycle_file_carries_efficiency_from_the_daemons_cycle_rows,
);

#[tokio::test]
async fn samples_that_name_their_plan_step_keep_it_and_take_their_step_type_from_it_without_events()
{
    const T: &str = "0190a0c0-0000-7000-8000-0000000000f2";
    const OLD: &str = "0190a0c0-0000-7000-8000-0000000000f3";
    let plan = discharge_and_hold_plan();
    let Some(Body::TestRegistered(mut test)) = registered(1, T).body else {
        unreachable!("registered builds a TestRegistered")
    };
    test.plan_json = plan.to_json();
    // The hold, caught while the voltage still falls and the current decays, would be a
    // PROFILE by its samples; no step event names it, only the samples' plan_step.
    let n = 20;
    let mut b = discharge_and_hold_samples(T, n);
    b.plan_step = (0..n).map(|i| u32::from(i >= 10)).collect();
    let Some(Body::TestRegistered(old_test)) = registered(3, OLD).body else {
        unreachable!("registered builds a TestRegistered")
    };
    let mut up_hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = up_hub.upload("daemon-a", 1).await;
    up.send_entries([
        entry(1, Body::TestRegistered(test)),
        entry(2, Body::Samples(b)),
        entry(3, Body::TestRegistered(old_test)),
        entry(4, Body::Samples(batch(OLD, 0, 3, false))),
    ])
    .await;
    up.until_ack(4).await;

    let stored: Vec<Option<u32>> = up_hub
        .store
        .samples(T)
        .unwrap()
        .iter()
        .map(|s| s.plan_step)
        .collect();
    assert_eq!(stored[..10], [Some(0); 10]);
    assert_eq!(stored[10..], [Some(1); 10]);
    let old = up_hub.store.samples(OLD).unwrap();
    assert!(
        old.iter().all(|s| s.plan_step.is_none()),
        "a batch without the column stores no plan step: {old:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let exported = export::export_files(
        &up_hub.store,
        T,
        Format::BdfCsv,
        &dir.path().join("hold.csv"),
        None,
    )
    .unwrap();
    let table = BdfTable::from_csv(&exported.files[0]);
    let types = &table.texts["Step Type"];
    assert!(types[..10].iter().all(|t| t == "CC_DCH"), "{types:?}");
    assert!(types[10..].iter().all(|t| t == "CV_DCH"), "{types:?}");
    up_hub.shutdown().await;
}
