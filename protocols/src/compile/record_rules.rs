//! Recording rules on every native target: a `record` compiles to the cycler's own logging
//! fields with its values, a protocol without one to [`Record::NATIVE_DEFAULT`], and the
//! importers read the rule back.

use super::{Target, compile};
use crate::import::{SourceKind, import};
use crate::plan::{Plan, PlanStep, Record};

const STEPS: &str = "steps:\n  - \"Rest for 10 minutes\"\n  - \"Charge at 1 A until 4.1 V\"\n  - \"Discharge at 1 A until 3.0 V\"\n";

fn protocol(record: &str) -> Plan {
    let text = format!(
        "protocol: Record\nversion: 1\nparams: {{capacity: 2.5 Ah}}\nsafety: {{voltage: [2.5 V, 4.25 V], current: 5 A}}\n{record}{STEPS}"
    );
    Plan::from_yaml(&text, "record.yaml").expect("valid protocol")
}

/// `record: {every: 5 s, dv: 5 mV}` on the whole protocol.
fn five_s_five_mv() -> Plan {
    protocol("record: {every: 5 s, dv: 5 mV}\n")
}

fn without_record() -> Plan {
    protocol("")
}

const FIVE_S_FIVE_MV: Record = Record {
    every_s: Some(5.0),
    dv_v: Some(0.005),
    di_a: None,
};

fn kind(target: Target) -> SourceKind {
    match target {
        Target::Maccor => SourceKind::Maccor,
        Target::Neware => SourceKind::Neware,
        Target::Arbin => SourceKind::Arbin,
        Target::Biologic => SourceKind::Biologic,
        t => panic!("{t} has no importer"),
    }
}

/// The record rule of every action step of `plan` compiled to `target` and imported back.
fn read_back(plan: &Plan, target: Target) -> Vec<Record> {
    let text = compile(plan, target).unwrap_or_else(|e| panic!("{e}"));
    let back = import(&text, kind(target), "record").unwrap_or_else(|e| panic!("{e}\n{text}"));
    back.steps
        .iter()
        .filter_map(|s| match s {
            PlanStep::Action(a) => Some(a.record),
            _ => None,
        })
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => false,
    }
}

fn assert_records(got: &[Record], want: Record, what: &str) {
    assert_eq!(got.len(), 3, "{what}: action steps {got:?}");
    for r in got {
        assert!(
            close(r.every_s, want.every_s) && close(r.dv_v, want.dv_v) && close(r.di_a, want.di_a),
            "{what}: {r:?} != {want:?}"
        );
    }
}

fn lines_of(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

#[test]
fn the_native_default_logs_every_10_s_and_every_10_mv() {
    assert_eq!(
        Record::NATIVE_DEFAULT,
        Record {
            every_s: Some(10.0),
            dv_v: Some(0.01),
            di_a: None
        }
    );
    assert_eq!(
        Record::default().or_native_default(),
        Record::NATIVE_DEFAULT
    );
    assert_eq!(FIVE_S_FIVE_MV.or_native_default(), FIVE_S_FIVE_MV);
}

/// The `<Reports>` entries of each action `TestStep`, as (type, value) pairs.
fn maccor_reports(text: &str) -> Vec<Vec<(String, String)>> {
    let lines = lines_of(text);
    let mut steps = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    let mut kind = String::new();
    for l in lines {
        if l == "<Reports>" {
            current = Some(Vec::new());
        } else if l == "</Reports>" {
            steps.extend(current.take());
        } else if let Some(t) = l
            .strip_prefix("<ReportType>")
            .and_then(|t| t.strip_suffix("</ReportType>"))
        {
            kind = t.trim().to_owned();
        } else if let (Some(c), Some(v)) = (
            current.as_mut(),
            l.strip_prefix("<Value>")
                .and_then(|v| v.strip_suffix("</Value>")),
        ) {
            c.push((kind.clone(), v.to_owned()));
        }
    }
    steps
}

#[test]
fn maccor_writes_a_step_time_and_a_voltage_report_on_every_action_step() {
    let text = compile(&five_s_five_mv(), Target::Maccor).unwrap();
    let want = vec![
        ("StepTime".to_owned(), "00:00:05".to_owned()),
        ("Voltage".to_owned(), "0.005".to_owned()),
    ];
    assert_eq!(maccor_reports(&text), vec![want; 3]);
}

#[test]
fn maccor_writes_the_native_default_reports_for_a_protocol_without_record() {
    let text = compile(&without_record(), Target::Maccor).unwrap();
    let want = vec![
        ("StepTime".to_owned(), "00:00:10".to_owned()),
        ("Voltage".to_owned(), "0.01".to_owned()),
    ];
    assert_eq!(maccor_reports(&text), vec![want; 3]);
}

#[test]
fn maccor_reports_read_back_as_the_record_rule() {
    assert_records(
        &read_back(&five_s_five_mv(), Target::Maccor),
        FIVE_S_FIVE_MV,
        "maccor",
    );
    assert_records(
        &read_back(&without_record(), Target::Maccor),
        Record::NATIVE_DEFAULT,
        "maccor default",
    );
}

/// The `Whole_Prt/Record/Main` fields as (name, value).
fn neware_record(text: &str) -> Vec<(String, String)> {
    let lines = lines_of(text);
    let start = lines
        .iter()
        .position(|l| *l == "<Record>")
        .expect("a Record");
    lines[start + 2..]
        .iter()
        .take_while(|l| **l != "</Main>")
        .map(|l| {
            let name = l.trim_start_matches('<').split(' ').next().unwrap();
            let value = l.split('"').nth(1).unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn neware_writes_the_record_time_in_ms_and_voltage_change_in_tenths_of_a_millivolt() {
    let text = compile(&five_s_five_mv(), Target::Neware).unwrap();
    assert_eq!(
        neware_record(&text),
        pairs(&[("Time", "5000"), ("Volt", "50")])
    );
}

#[test]
fn neware_writes_the_native_default_record_for_a_protocol_without_record() {
    let text = compile(&without_record(), Target::Neware).unwrap();
    assert_eq!(
        neware_record(&text),
        pairs(&[("Time", "10000"), ("Volt", "100")])
    );
}

#[test]
fn neware_record_reads_back_as_every_steps_record_rule() {
    assert_records(
        &read_back(&five_s_five_mv(), Target::Neware),
        FIVE_S_FIVE_MV,
        "neware",
    );
    assert_records(
        &read_back(&without_record(), Target::Neware),
        Record::NATIVE_DEFAULT,
        "neware default",
    );
}

#[test]
fn neware_logs_the_whole_file_by_the_finest_rule_any_step_asks_for() {
    // Neware's record rule is one for the whole file: step 2's finer rules win everywhere.
    let mut plan = five_s_five_mv();
    let PlanStep::Action(a) = &mut plan.steps[1] else {
        panic!("an action")
    };
    a.record = Record {
        every_s: Some(1.0),
        dv_v: None,
        di_a: Some(0.05),
    };
    let text = compile(&plan, Target::Neware).unwrap();
    assert_eq!(
        neware_record(&text),
        pairs(&[("Time", "1000"), ("Volt", "50"), ("Curr", "50")])
    );
}

#[test]
fn neware_refuses_a_record_rule_finer_than_its_units_naming_the_step() {
    let mut plan = without_record();
    let PlanStep::Action(a) = &mut plan.steps[2] else {
        panic!("an action")
    };
    a.record.dv_v = Some(0.000_01);
    let e = compile(&plan, Target::Neware).unwrap_err();
    assert_eq!(e.step, a_path(&plan, 2));
    assert!(e.message.contains("record voltage change"), "{e}");
}

fn a_path(plan: &Plan, i: usize) -> String {
    match &plan.steps[i] {
        PlanStep::Action(a) => a.path.clone(),
        s => panic!("{s:?}"),
    }
}

/// The log-only limits of the schedule as (variable, value), in file order.
fn arbin_log_limits(text: &str) -> Vec<(String, String)> {
    let lines = lines_of(text);
    let mut out = Vec::new();
    for (k, l) in lines.iter().enumerate() {
        if *l == "m_bStepLimit=0" {
            let left = lines[k + 3].strip_prefix("Equation0_szLeft=").unwrap();
            let right = lines[k + 5].strip_prefix("Equation0_szRight=").unwrap();
            out.push((left.to_owned(), right.to_owned()));
        }
    }
    out
}

#[test]
fn arbin_writes_dv_time_and_dv_voltage_log_limits_on_every_action_step() {
    let text = compile(&five_s_five_mv(), Target::Arbin).unwrap();
    assert_eq!(
        arbin_log_limits(&text),
        pairs(&[("DV_Time", "5"), ("DV_Voltage", "0.005")].repeat(3))
    );
}

#[test]
fn arbin_writes_the_native_default_log_limits_for_a_protocol_without_record() {
    let text = compile(&without_record(), Target::Arbin).unwrap();
    assert_eq!(
        arbin_log_limits(&text),
        pairs(&[("DV_Time", "10"), ("DV_Voltage", "0.01")].repeat(3))
    );
}

#[test]
fn arbin_log_limits_read_back_as_the_record_rule() {
    assert_records(
        &read_back(&five_s_five_mv(), Target::Arbin),
        FIVE_S_FIVE_MV,
        "arbin",
    );
    assert_records(
        &read_back(&without_record(), Target::Arbin),
        Record::NATIVE_DEFAULT,
        "arbin default",
    );
}

/// The cells of table row `row` (one per sequence).
fn biologic_row(text: &str, row: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.len() >= 20 && l[..20].trim_end() == row)
        .unwrap_or_else(|| panic!("row {row}"));
    line.as_bytes()[20..]
        .chunks(20)
        .map(|c| String::from_utf8_lossy(c).trim().to_owned())
        .collect()
}

#[test]
fn biologic_records_every_dt_and_de_on_every_sequence() {
    let text = compile(&five_s_five_mv(), Target::Biologic).unwrap();
    let row = |r: &str| biologic_row(&text, r);
    assert_eq!(row("rec_nb"), ["2"; 3]);
    assert_eq!(row("rec1_type"), ["Time"; 3]);
    assert_eq!(row("rec1_value"), ["5.000"; 3]);
    assert_eq!(row("rec1_value_unit"), ["s"; 3]);
    assert_eq!(row("rec2_type"), ["Ecell"; 3]);
    assert_eq!(row("rec2_value"), ["5.000"; 3]);
    assert_eq!(row("rec2_value_unit"), ["mV"; 3]);
}

#[test]
fn biologic_records_by_the_native_default_for_a_protocol_without_record_never_rec_nb_0() {
    let text = compile(&without_record(), Target::Biologic).unwrap();
    let row = |r: &str| biologic_row(&text, r);
    assert_eq!(row("rec_nb"), ["2"; 3]);
    assert_eq!(row("rec1_value"), ["10.000"; 3]);
    assert_eq!(row("rec1_value_unit"), ["s"; 3]);
    assert_eq!(row("rec2_value"), ["10.000"; 3]);
    assert_eq!(row("rec2_value_unit"), ["mV"; 3]);
}

#[test]
fn biologic_record_settings_read_back_as_the_record_rule() {
    assert_records(
        &read_back(&five_s_five_mv(), Target::Biologic),
        FIVE_S_FIVE_MV,
        "biologic",
    );
    assert_records(
        &read_back(&without_record(), Target::Biologic),
        Record::NATIVE_DEFAULT,
        "biologic default",
    );
}
