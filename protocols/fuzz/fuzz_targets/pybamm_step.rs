//! Any text as a PyBaMM step string: an error with a column, or a step; never a panic.
#![no_main]

use cyclerd_protocols::pybamm::{Params, parse_step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut params = Params::new();
        params.insert("capacity".into(), "2.5 Ah".into());
        let _ = parse_step(text, &params);
    }
});
