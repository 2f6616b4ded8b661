//! aurora-unicycler JSON import: fixtures written by aurora-unicycler 0.4.6 itself
//! (`CyclingProtocol.to_json()` / `to_neware_xml()`), its own test protocol (MIT, Empa), errors
//! that name the step, and never a panic.

use crate::compile::plan_compare::{Compare, assert_same};
use crate::import::{SourceKind, import};
use crate::plan::{Condition, Control, Goto, Plan, PlanStep};
use proptest::prelude::*;

/// Formation (2 passes, C/10 and D/10) then 100 cycles in mA and C-rates, with safety limits.
const CYCLING_JSON: &str = include_str!("../../../tests/fixtures/unicycler_cycling.json");
/// The same protocol as aurora-unicycler's Neware step file.
const CYCLING_XML: &str = include_str!("../../../tests/fixtures/unicycler_cycling.xml");
/// A rest, then impedance spectroscopy.
const EIS_JSON: &str = include_str!("../../../tests/fixtures/unicycler_eis.json");
/// aurora-unicycler's tests/test_data/test_protocol.json: numbers as strings, loops by index,
/// two loops sharing a first step.
const TEST_PROTOCOL: &str = include_str!("../../../tests/fixtures/unicycler_test_protocol.json");

fn read(text: &str) -> Plan {
    import(text, SourceKind::Unicycler, "p.json").unwrap_or_else(|e| panic!("{e}"))
}

fn action(plan: &Plan, i: usize) -> &crate::plan::ActionStep {
    match &plan.steps[i] {
        PlanStep::Action(a) => a,
        other => panic!("step {i} is {other:?}"),
    }
}

fn loop_at(plan: &Plan, i: usize) -> (u32, bool, usize) {
    match plan.steps[i] {
        PlanStep::LoopStart {
            count, cycle, end, ..
        } => (count, cycle, end),
        ref other => panic!("step {i} is {other:?}"),
    }
}

#[test]
fn unicycler_json_is_detected_by_its_content() {
    assert_eq!(
        SourceKind::detect(CYCLING_JSON),
        Some(SourceKind::Unicycler)
    );
    assert_eq!(
        SourceKind::from_name("unicycler"),
        Some(SourceKind::Unicycler)
    );
    assert_eq!(SourceKind::detect("{\"a\": 1}"), None);
}

#[test]
fn a_unicycler_protocol_imports_with_c_rates_resolved_loops_tags_and_safety() {
    let plan = read(CYCLING_JSON);
    assert_eq!(plan.name, "nmc-coin-01");
    assert_eq!(plan.capacity_ah, Some(0.0025));
    let s = &plan.safety;
    assert_eq!((s.voltage_min, s.voltage_max), (Some(2.9), Some(4.3)));
    assert_eq!(s.current_max, Some(0.005));
    assert_eq!(s.capacity_max, Some(0.003));
    // Loop(formation, 2) around steps 1..4, Loop(longterm, 100) around 6..9.
    assert_eq!(loop_at(&plan, 0), (2, true, 5));
    assert_eq!(loop_at(&plan, 6), (100, true, 11));
    assert_eq!(plan.steps.len(), 13);
    let ocv = action(&plan, 1);
    assert_eq!(ocv.label.as_deref(), Some("formation"));
    assert_eq!(ocv.path, "method[1]");
    assert_eq!(ocv.record.every_s, Some(10.0));
    assert_eq!(ocv.record.di_a, Some(0.05 / 1000.0));
    let charge = action(&plan, 2);
    assert!(matches!(charge.control, Control::Current { amps } if (amps - 0.00025).abs() < 1e-12));
    assert_eq!(
        charge.terminations[0].condition,
        Condition::VoltageAtLeast(4.2)
    );
    assert_eq!(
        charge.terminations[1].condition,
        Condition::StepTime(43200.0)
    );
    let hold = action(&plan, 3);
    assert_eq!(hold.control, Control::Voltage { volts: 4.2 });
    assert!(
        matches!(hold.terminations[0].condition, Condition::CurrentMagnitudeAtMost(a) if (a - 0.00005).abs() < 1e-12)
    );
    // "D/10": a discharge at C/10, ending at or below 3.0 V.
    let discharge = action(&plan, 4);
    assert!(
        matches!(discharge.control, Control::Current { amps } if (amps + 0.00025).abs() < 1e-12)
    );
    assert_eq!(
        discharge.terminations[0].condition,
        Condition::VoltageAtMost(3.0)
    );
    assert_eq!(action(&plan, 7).label.as_deref(), Some("longterm"));
    assert_eq!(action(&plan, 7).control, Control::Current { amps: 0.00125 });
    crate::Engine::new(plan, &crate::plan::Safety::default()).expect("a runnable plan");
}

#[test]
fn a_unicycler_protocol_reads_the_same_from_its_json_and_from_its_neware_step_file() {
    let json = read(CYCLING_JSON);
    let xml = import(CYCLING_XML, SourceKind::Neware, "p.xml").unwrap_or_else(|e| panic!("{e}"));
    assert_same(
        &json,
        &xml,
        Compare {
            cycle: true,
            record_and_safety: false,
        },
    );
    assert_eq!(xml.name, json.name);
    assert_eq!(xml.safety.voltage_max, json.safety.voltage_max);
    assert_eq!(xml.safety.current_max, json.safety.current_max);
}

#[test]
fn unicyclers_own_test_protocol_with_numeric_strings_and_loops_sharing_a_start_imports() {
    let plan = read(TEST_PROTOCOL);
    assert_eq!(plan.capacity_ah, Some(0.123));
    // method[3..6] x3; then method[7..10] x24 inside method[7..14] x20.
    assert_eq!(loop_at(&plan, 3), (3, true, 7));
    assert_eq!(loop_at(&plan, 8), (20, true, 17));
    assert_eq!(loop_at(&plan, 9), (24, true, 13));
    assert_eq!(plan.safety.current_max, Some(0.01));
    let cv = action(&plan, 5);
    assert_eq!(cv.control, Control::Voltage { volts: 4.9 });
    assert!(
        matches!(cv.terminations[0].condition, Condition::CurrentMagnitudeAtMost(a) if (a - 0.05 * 0.123).abs() < 1e-12)
    );
    assert_eq!(cv.terminations[1].goto, Goto::Next);
}

#[test]
fn impedance_spectroscopy_is_an_error_naming_the_step_index_and_type() {
    let e = import(EIS_JSON, SourceKind::Unicycler, "eis.json").unwrap_err();
    assert_eq!(e.kind, SourceKind::Unicycler);
    assert_eq!(
        e.location.as_deref(),
        Some("method[1] (impedance_spectroscopy)")
    );
    assert!(e.message.contains("EIS"), "{e}");
    assert!(
        e.to_string().starts_with("eis.json: unicycler schedule"),
        "{e}"
    );
}

#[test]
fn malformed_protocols_are_errors_saying_where_and_what_was_expected() {
    let doc = |method: &str| {
        format!(
            r#"{{"sample": {{"capacity_mAh": 1}}, "record": {{"time_s": 1}}, "method": [{method}]}}"#
        )
    };
    let ocv = r#"{"step": "open_circuit_voltage", "until_time_s": 60}"#;
    let cases = [
        ("[1, 2]".to_owned(), "document", "JSON object"),
        ("{\"method\": [".to_owned(), "line 1", "not JSON"),
        (r#"{"record": {"time_s": 1}, "method": []}"#.to_owned(), "method", "non-empty"),
        (r#"{"method": [{"step": "tag", "tag": "a"}]}"#.to_owned(), "record", "time_s"),
        (r#"{"record": {"time_s": 1}, "method": [], "extra": 1}"#.to_owned(), "document", "unknown field \"extra\""),
        (doc(r#"{"step": "constant_current", "rate_C": "C/x", "until_time_s": 1}"#), "method[0] (constant_current)", "fraction"),
        (doc(r#"{"step": "constant_current", "current_mA": 1}"#), "method[0] (constant_current)", "stop condition"),
        (doc(r#"{"step": "constant_current", "until_time_s": 5}"#), "method[0] (constant_current)", "rate_C or current_mA"),
        (doc(r#"{"step": "constant_current", "rate_C": 1, "until_voltage_V": "4.2", "volts": 1}"#), "method[0] (constant_current)", "unknown field \"volts\""),
        (doc(r#"{"step": "pulse"}"#), "method[0]", "step type \"pulse\""),
        (doc(r#"{"until_time_s": 60}"#), "method[0]", "\"step\" type"),
        (doc(&format!(r#"{ocv}, {{"step": "loop", "loop_to": "a", "cycle_count": 2}}"#)), "method[1] (loop)", "no such tag"),
        (doc(&format!(r#"{ocv}, {{"step": "loop", "loop_to": 5, "cycle_count": 2}}"#)), "method[1] (loop)", "before it"),
        (doc(&format!(r#"{ocv}, {{"step": "loop", "loop_to": 1, "cycle_count": 0}}"#)), "method[1] (loop)", "cycle_count"),
        (doc(r#"{"step": "tag", "tag": "a"}, {"step": "loop", "loop_to": "a", "cycle_count": 2}"#), "method[1] (loop)", "repeats no step"),
        (doc(&format!(r#"{{"step": "tag", "tag": "a"}}, {ocv}, {{"step": "tag", "tag": "a"}}"#)), "method[2] (tag)", "duplicate tag"),
        (doc(&format!(r#"{ocv}, {{"step": "tag", "tag": "b"}}, {ocv}, {{"step": "loop", "loop_to": 1, "cycle_count": 2}}, {ocv}, {{"step": "loop", "loop_to": "b", "cycle_count": 2}}"#)), "method[5] (loop)", "intersects"),
        (doc(r#"{"step": "voltage_scan", "start_voltage_V": 3, "end_voltage_V": 3, "scan_rate_mV_per_s": 1}"#), "method[0] (voltage_scan)", "two voltages"),
        (r#"{"record": {"time_s": 1}, "method": [{"step": "constant_current", "rate_C": 1, "until_time_s": 5}]}"#.to_owned(), "method[0] (constant_current)", "capacity_mAh"),
        (r#"{"record": {"time_s": 1}, "safety": {"max_voltage_V": 3, "min_voltage_V": 4}, "method": []}"#.to_owned(), "safety", "max above min"),
        (doc(r#"{"step": "open_circuit_voltage", "until_time_s": "NaN"}"#), "method[0] (open_circuit_voltage)", "finite"),
    ];
    for (text, location, says) in cases {
        let e = import(&text, SourceKind::Unicycler, "p.json").unwrap_err();
        let at = e.location.clone().unwrap_or_default();
        assert!(at.starts_with(location), "{e}: expected at {location}");
        assert!(e.message.contains(says), "{e}: should say {says:?}");
    }
}

#[test]
fn a_voltage_scan_imports_as_the_same_staircase_as_its_neware_step() {
    let text = r#"{"record": {"time_s": 1}, "method": [{"step": "voltage_scan", "start_voltage_V": "3", "end_voltage_V": 4, "scan_rate_mV_per_s": 1}]}"#;
    let a = action(&read(text), 0).clone();
    assert_eq!(
        a.control,
        Control::Profile {
            kind: crate::plan::ProfileKind::Voltage
        }
    );
    let p = a.profile.expect("profile");
    assert_eq!((p.points[0].1, p.points[1000]), (3.0, (1000.0, 4.0)));
}

/// Imports; when it succeeds the plan must be valid (an importer never panics and never returns
/// a plan the engine would refuse).
fn checked(text: &str) {
    match import(text, SourceKind::Unicycler, "fuzz") {
        Ok(plan) => plan.validate().expect("imported plans are valid"),
        Err(e) => assert!(e.kind == SourceKind::Unicycler && !e.message.is_empty()),
    }
}

/// JSON values shaped like unicycler steps, with wrong types and values mixed in.
fn step_json() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        "open_circuit_voltage",
        "constant_current",
        "constant_voltage",
        "voltage_scan",
        "impedance_spectroscopy",
        "loop",
        "tag",
        "other",
    ]);
    let key = prop::sample::select(vec![
        "until_time_s",
        "rate_C",
        "current_mA",
        "until_voltage_V",
        "voltage_V",
        "until_rate_C",
        "until_current_mA",
        "start_voltage_V",
        "end_voltage_V",
        "scan_rate_mV_per_s",
        "loop_to",
        "cycle_count",
        "tag",
        "id",
    ]);
    let value = prop_oneof![
        (-1e6f64..1e6).prop_map(|x| x.to_string()),
        (0u64..20).prop_map(|x| x.to_string()),
        "\"[CD0-9/. a-z-]{0,6}\"",
        Just("null".to_owned()),
        Just("1e400".to_owned()),
        Just("[]".to_owned()),
    ];
    (kind, prop::collection::vec((key, value), 0..5)).prop_map(|(k, fields)| {
        let mut s = format!("{{\"step\": \"{k}\"");
        for (key, value) in fields {
            s += &format!(", \"{key}\": {value}");
        }
        s + "}"
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_unicycler_importer_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        checked(&text);
    }

    #[test]
    fn the_unicycler_importer_never_panics_on_unicycler_shaped_json(
        steps in prop::collection::vec(step_json(), 0..8),
        capacity in prop_oneof![Just("1".to_owned()), Just("null".to_owned()), Just("-2".to_owned())],
    ) {
        let text = format!(
            r#"{{"sample": {{"capacity_mAh": {capacity}}}, "record": {{"time_s": 1}}, "method": [{}]}}"#,
            steps.join(", ")
        );
        checked(&text);
    }

    #[test]
    fn the_unicycler_importer_never_panics_on_mutated_fixtures(
        which in 0usize..2,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..3, "[0-9A-Za-z\"{}\\[\\],:/. -]{0,6}"), 1..6)
    ) {
        let mut text = [CYCLING_JSON, TEST_PROTOCOL][which].to_owned();
        for (at, op, s) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            match op {
                0 => text.insert_str(i, &s),
                1 => {
                    let mut j = (i + s.len() + 1).min(text.len());
                    while !text.is_char_boundary(j) {
                        j -= 1;
                    }
                    text.replace_range(i..j, "");
                }
                _ => text.truncate(i),
            }
        }
        checked(&text);
    }
}

#[test]
fn an_imported_unicycler_protocol_writes_yaml_that_reads_back_the_same_plan() {
    // (Not TEST_PROTOCOL: its -0.1 V lower limit is a negative voltage, which the protocol
    // language's values cannot spell yet.)
    {
        let plan = read(CYCLING_JSON);
        let yaml = plan.to_yaml();
        let back = Plan::from_yaml(&yaml, "back.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_same(
            &plan,
            &back,
            Compare {
                cycle: true,
                record_and_safety: true,
            },
        );
    }
}
