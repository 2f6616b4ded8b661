//! What the integration tests share: the standard protocol library in `deploy/protocols`.

use std::path::{Path, PathBuf};

/// The library's folder.
pub fn library_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/protocols")
}

/// Every protocol file of the library (`.yaml`, `.yml`) with its text, in directory order.
pub fn library() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(library_dir()).expect("deploy/protocols exists") {
        let path = entry.expect("readable directory entry").path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("readable protocol file");
        files.push((path, source));
    }
    files
}
