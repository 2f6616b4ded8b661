//! End-to-end tests live in `tests/`; what they share with other crates' tests lives here.

pub mod browser;
