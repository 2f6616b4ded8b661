//! Any bytes as a native schedule of every kind (and an aurora-unicycler protocol): an error
//! naming where, or a plan that is valid; never a panic.
#![no_main]

use cyclerd_protocols::import::{SourceKind, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Arbin files are latin-1: every byte is a character.
    let text: String = match std::str::from_utf8(data) {
        Ok(t) => t.to_string(),
        Err(_) => data.iter().map(|&b| b as char).collect(),
    };
    for kind in SourceKind::ALL {
        if let Ok(plan) = import(&text, kind, "fuzz") {
            plan.validate().expect("an imported plan is valid");
        }
    }
});
