//! `cyclerctl protocol simulate`: recording rules, cycles, the per-cycle table, BDF columns.

use std::path::{Path, PathBuf};

/// The standard cycle-life protocol: a 1 h rest, then up to 1000 cycles of 1C CCCV charge
/// and 1C discharge with rests, recorded every 60 s or on 10 mV or 100 mA.
fn cycle_life() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/protocols/cycle-life-1c.yaml")
}

/// Runs `cyclerctl protocol simulate PROTOCOL ARGS`: success, standard output, error.
fn simulate(args: &[&str]) -> (bool, String, String) {
    let protocol = cycle_life();
    let mut all = vec!["simulate", protocol.to_str().unwrap()];
    all.extend_from_slice(args);
    super::cyclerctl_protocol(all)
}

/// The CSV's header and its rows split into cells.
fn read_csv(path: &Path) -> (String, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_owned();
    let rows = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn column<'a>(header: &str, rows: &'a [Vec<String>], name: &str) -> Vec<&'a str> {
    let i = header.split(',').position(|h| h == name).unwrap();
    rows.iter().map(|r| r[i].as_str()).collect()
}

/// The number of measurements simulated, from the summary's duration line.
fn measurements(stdout: &str) -> usize {
    let line = stdout.lines().find(|l| l.starts_with("duration")).unwrap();
    let (_, after) = line.split_once('(').unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn simulate_records_rows_by_the_protocols_recording_rules_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rules.csv");
    let (ok, out, err) = simulate(&["--cycles", "2", "--csv", csv.to_str().unwrap()]);
    assert!(ok, "{err}");
    let ticks = measurements(&out);
    let (_, rows) = read_csv(&csv);
    // About 7 h at 1 s: 25 000 measurements; one row a minute plus the voltage and current
    // changes and each step's ends is well under a tenth of them.
    assert!(ticks > 20_000, "{out}");
    assert!(rows.len() < ticks / 10, "{} rows of {ticks}", rows.len());
    assert!(
        out.contains(&format!("{} rows recorded", rows.len())),
        "{out}"
    );

    let every = dir.path().join("every.csv");
    let (ok, _, err) = simulate(&[
        "--cycles",
        "2",
        "--every",
        "600",
        "--csv",
        every.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (_, sparse) = read_csv(&every);
    assert!(
        sparse.len() < rows.len() / 2,
        "{} vs {}",
        sparse.len(),
        rows.len()
    );
    // Every step still has its first and last row: 1 + 2 x 4 steps, two rows each at least.
    assert!(sparse.len() >= 18, "{}", sparse.len());

    let all = dir.path().join("all.csv");
    let (ok, out, err) = simulate(&[
        "--cycles",
        "2",
        "--all-samples",
        "--csv",
        all.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (_, every_tick) = read_csv(&all);
    assert_eq!(every_tick.len(), measurements(&out));
}

#[test]
fn simulate_stops_after_the_cycles_asked_for_and_prints_a_summary_and_a_per_cycle_table() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("three.csv");
    let (ok, out, err) = simulate(&["--cycles", "3", "--csv", csv.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (header, rows) = read_csv(&csv);
    let mut cycles: Vec<&str> = column(&header, &rows, "Cycle Count / 1");
    cycles.dedup();
    assert_eq!(cycles.len(), 3, "{cycles:?}");
    assert!(out.contains("stopped after 3 cycles"), "{out}");
    assert!(out.contains("cycles     3"), "{out}");
    // Six summary lines, a blank one, the table's two header lines and a row per cycle.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6 + 1 + 2 + 3, "{out}");
    assert!(
        lines[7].starts_with("cycle") && lines[7].contains("CE"),
        "{out}"
    );
    for (k, row) in lines[9..].iter().enumerate() {
        assert!(row.trim_start().starts_with(&(k + 1).to_string()), "{out}");
    }
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");

    for (args, message) in [
        (["--cycles", "0"], "--cycles must be at least 1"),
        (
            ["--every", "0"],
            "--every must be a positive number of seconds",
        ),
    ] {
        let (ok, _, err) = simulate(&args);
        assert!(!ok);
        assert!(err.contains(message), "{err}");
    }
}

#[test]
fn simulate_writes_the_columns_of_the_hubs_bdf_export() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("one.csv");
    let (ok, _, err) = simulate(&["--cycles", "1", "--csv", csv.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (header, rows) = read_csv(&csv);
    // A simulated cell has a temperature sensor and sits in no chamber.
    let export: Vec<&str> = cyclerhub::export::bdf_columns(true, false)
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(header, export.join(","));
    assert!(header.contains("Temperature T1 / degC") && !header.contains("Surface"));
    let index = column(&header, &rows, "Record Index / 1");
    assert!(
        index
            .iter()
            .enumerate()
            .all(|(i, x)| *x == (i + 1).to_string())
    );
    let mut types = column(&header, &rows, "Step Type");
    types.dedup();
    // The rest, then the cycle: CCCV charge, rest, CC discharge (and its closing rest).
    assert_eq!(
        types[..4],
        ["REST", "CCCV_CHG", "REST", "CC_DCH"],
        "{types:?}"
    );
}
