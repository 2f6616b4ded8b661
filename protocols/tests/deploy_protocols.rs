//! The standard protocol library shipped in `deploy/protocols` must always compile and be
//! runnable with the limits it declares.

use std::path::Path;

use cyclerd_protocols::{Engine, Plan, Safety};

#[test]
fn every_deployed_protocol_parses_and_is_runnable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/protocols");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/protocols exists") {
        let path = entry.expect("readable directory entry").path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("readable protocol file");
        let origin = path.display().to_string();
        let plan = Plan::from_yaml(&source, &origin).unwrap_or_else(|e| panic!("{e}"));
        Engine::new(plan, &Safety::default()).unwrap_or_else(|e| panic!("{origin}: {e}"));
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the demo protocols in {}",
        dir.display()
    );
}

#[test]
fn cccv_library_protocol_has_three_cycles_of_three_steps() {
    let source = include_str!("../../deploy/protocols/cccv-3-cycles.yaml");
    let plan = Plan::from_yaml(source, "cccv-3-cycles.yaml").unwrap();
    assert_eq!(plan.name, "CCCV, 3 cycles");
    assert_eq!(plan.capacity_ah, Some(2.5));
    // LoopStart, three actions, LoopEnd, End.
    assert_eq!(plan.steps.len(), 6);
    assert!(matches!(
        plan.steps[0],
        cyclerd_protocols::PlanStep::LoopStart {
            count: 3,
            cycle: true,
            end: 4
        }
    ));
}
