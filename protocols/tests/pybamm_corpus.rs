//! Pins what the `pybamm` and `pybamm-json` targets write for every string of
//! `tests/pybamm_corpus.txt` (each compiled as a one-step protocol with `capacity: 2.5 Ah`),
//! so CI, which has no PyBaMM, still guards the format `scripts/pybamm-roundtrip.py` checked
//! with PyBaMM itself. After a deliberate change, rewrite the pinned file with
//! `PYBAMM_CORPUS_UPDATE=1 cargo test -p cyclerd-protocols --test pybamm_corpus` and run the
//! script again.

use cyclerd_protocols::Plan;
use cyclerd_protocols::compile::{Target, compile};
use serde_json::{Value, json};

const CORPUS: &str = include_str!("pybamm_corpus.txt");
const PINNED: &str = "tests/pybamm_corpus.expected.jsonl";

/// The strings of a compiled Python list literal (one per line, JSON-escaped).
fn strings(python: &str) -> Vec<String> {
    python
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('"'))
        .map(|l| serde_json::from_str(l.trim_end_matches(',')).unwrap())
        .collect()
}

fn outputs() -> String {
    let mut out = String::new();
    for source in CORPUS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let yaml = format!(
            "protocol: corpus\nversion: 1\nparams:\n  capacity: 2.5 Ah\nsteps:\n  - {}\n",
            Value::String(source.into())
        );
        let plan = Plan::from_yaml(&yaml, "corpus").unwrap_or_else(|e| panic!("{source}: {e}"));
        let python = compile(&plan, Target::Pybamm).unwrap_or_else(|e| panic!("{source}: {e}"));
        let config: Value = serde_json::from_str(
            &compile(&plan, Target::PybammJson).unwrap_or_else(|e| panic!("{source}: {e}")),
        )
        .unwrap();
        let line = json!({"source": source, "pybamm": strings(&python), "pybamm_json": config});
        out += &format!("{line}\n");
    }
    out
}

#[test]
fn every_corpus_string_compiles_to_the_pinned_pybamm_and_pybamm_json_outputs() {
    let got = outputs();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PINNED);
    if std::env::var_os("PYBAMM_CORPUS_UPDATE").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let pinned = std::fs::read_to_string(&path).unwrap_or_default();
    for (g, p) in got.lines().zip(pinned.lines()) {
        assert_eq!(g, p);
    }
    assert_eq!(got.lines().count(), pinned.lines().count());
}

#[test]
fn corpus_c_rates_stay_c_rates_and_operators_stay_written() {
    let got = outputs();
    let line = |source: &str| -> Value {
        got.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["source"] == source)
            .unwrap()
    };
    let v = line("Discharge at C/3 until < 2.8 V");
    assert_eq!(v["pybamm"], json!(["Discharge at C/3 until < 2.8 V"]));
    assert_eq!(
        v["pybamm_json"]["cycles"][0][0]["terminations"],
        json!([{"type": "voltage", "value": 2.8, "operator": "<"}])
    );
    assert_eq!(v["pybamm_json"]["cycles"][0][0]["type"], "c-rate");
    let v = line("Hold at 4.2 V until C/20");
    assert_eq!(v["pybamm"], json!(["Hold at 4.2 V until C/20"]));
    assert!(v["pybamm_json"]["cycles"][0][0].get("duration").is_none());
}
