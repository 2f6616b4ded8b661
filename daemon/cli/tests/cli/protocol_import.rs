//! `cyclerctl protocol import`: formats guessed from the content or named with `--from`.

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../protocols/tests/fixtures")
        .join(name)
}

/// Runs `cyclerctl protocol import ARGS`: success, standard output, error.
fn import(args: &[&str]) -> (bool, String, String) {
    super::cyclerctl_protocol(["import"].iter().chain(args))
}

#[test]
fn an_aurora_unicycler_protocol_imports_to_a_protocol_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("cycling.yaml");
    let json = fixture("unicycler_cycling.json");
    let (ok, _, err) = import(&[json.to_str().unwrap(), "-o", yaml.to_str().unwrap()]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert!(text.contains("repeat: 100"), "{text}");
    let (ok, _, err) = super::cyclerctl_protocol([std::ffi::OsStr::new("check"), yaml.as_os_str()]);
    assert!(ok, "{err}");
}
#[test]
fn an_unknown_import_format_lists_unicycler_and_an_eis_step_is_named() {
    let json = fixture("unicycler_cycling.json");
    let (ok, _, err) = import(&["--from", "csv", json.to_str().unwrap()]);
    assert!(!ok && err.contains("unicycler"), "{err}");
    let eis = fixture("unicycler_eis.json");
    let (ok, _, err) = import(&["--from", "unicycler", eis.to_str().unwrap()]);
    assert!(
        !ok && err.contains("method[1] (impedance_spectroscopy)"),
        "{err}"
    );
}
