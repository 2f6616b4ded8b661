//! No text, however malformed, makes the document compiler or its text parsers panic.

use super::*;

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC*") {
        let _ = Plan::from_yaml(&s, "fuzz.yaml");
    }

    #[test]
    fn arbitrary_conditions_and_csv_never_panic(s in "\\PC*") {
        let _ = parse_condition(&s, 1.0, &Params::new());
        let _ = parse_loop_condition(&s);
        let _ = parse_profile_csv(&s, -1.0);
        let _ = substitute(&s, &Params::new());
    }

    #[test]
    fn yaml_like_text_never_panics(parts in proptest::collection::vec(
        prop_oneof![
            Just("protocol: x\n"), Just("version: 1\n"), Just("steps:\n"), Just("  - "),
            Just("- "), Just("repeat: 2\n"), Just("repeat: -1\n"), Just("cycle: true\n"),
            Just("label: a\n"), Just("\"Rest for 1 s\"\n"), Just("\"Charge at 1C until 4.2 V\"\n"),
            Just("params: {capacity: 2.5 Ah}\n"), Just("safety:\n"), Just("  voltage: [2.5 V, 4.2 V]\n"),
            Just("  current: 5 A\n"), Just("    "), Just("["), Just("]"), Just("{"), Just("}"),
            Just(": "), Just("&a "), Just("*a "), Just("!!str "), Just("~\n"), Just("\n"),
            Just("${capacity}"), Just("'"), Just("\""), Just("#"), Just("<<: "),
            Just("cc: 1C\n"), Just("direction: charge\n"), Just("until: "), Just("\"V >= 4 V -> a\"\n"),
            Just("cccv: C/2\n"), Just("voltage: 4.2 V\n"), Just("cutoff: C/20\n"), Just("rest: 1 h\n"),
            Just("chamber: 25 degC\n"), Just("wait: {within: 1 degC, for: 1 h}\n"), Just("pulse: 1C\n"),
            Just("v_min: 2.5 V\n"), Just("gitt: C/20\n"), Just("profile: x.csv\n"), Just("record: {every: 1 s}\n"),
            Just("until: discharge_capacity < 80% first\n"), Just("end: true\n"), Just("cr: 2 Ohm\n"),
            Just("\"Run US06 (A)\"\n"), Just("\"Rest for 1 h at 25oC [a]\"\n"), Just("dV/dt <= 1 mV/min"),
        ],
        0..24,
    )) {
        let _ = Plan::from_yaml(&parts.concat(), "fuzz.yaml");
        let csv = |_: &str| -> Result<String, String> { Ok("0,1\n1,2\n".into()) };
        let _ = Plan::from_yaml_with(&parts.concat(), "fuzz.yaml", &csv);
    }
}
