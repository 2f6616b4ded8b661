//! Any text as a protocol document: an error or a plan, never a panic; a plan that parses also
//! compiles to every target or says why not, and survives its JSON round trip.
#![no_main]

use cyclerd_protocols::Plan;
use cyclerd_protocols::compile::{Target, compile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(plan) = Plan::from_yaml(text, "fuzz.yaml") {
        for target in Target::ALL {
            let _ = compile(&plan, target);
        }
        let again = Plan::from_json(&plan.to_json()).expect("a parsed plan reads back from JSON");
        assert_eq!(again, plan);
    }
});
