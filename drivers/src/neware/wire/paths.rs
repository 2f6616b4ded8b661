//! Names and paths: the barcode a test runs under, and the step folder as the BTS PC sees it.

use std::path::{Component, Path, PathBuf};

/// Longest barcode (test name) the driver sends. The facts give no limit; a UUID (36
/// characters) fits with room to spare.
pub const BARCODE_MAX_CHARS: usize = 64;

/// The barcode a test is started under: the test name, cut to [`BARCODE_MAX_CHARS`].
pub fn barcode(test: &str) -> String {
    test.trim().chars().take(BARCODE_MAX_CHARS).collect()
}

/// How the step folder on this machine appears on the BTS PC, which reads step files itself
/// (the API has no upload): a shared folder mounted here, or the same folder when the daemon
/// runs on that PC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMap {
    /// The folder as this machine sees it.
    pub local: PathBuf,
    /// The same folder as the BTS PC sees it (`D:\cyclerd\steps`, `\\lab-pc\steps`); `None`
    /// when both see the same path.
    pub remote: Option<String>,
}

impl PathMap {
    /// The path the BTS PC opens for `file_name` in the folder.
    pub fn remote_path(&self, file_name: &str) -> String {
        match &self.remote {
            Some(prefix) => format!("{}\\{file_name}", prefix.trim_end_matches(['\\', '/'])),
            None => self.local.join(file_name).display().to_string(),
        }
    }

    /// The local file behind a path the BTS PC was given, if it lies in the folder. Windows
    /// paths compare case-insensitively and with either separator; `..` is refused.
    pub fn local_path(&self, remote: &str) -> Option<PathBuf> {
        let Some(prefix) = &self.remote else {
            return Some(PathBuf::from(remote));
        };
        let norm = |s: &str| s.replace('/', "\\");
        let prefix = norm(prefix.trim_end_matches(['\\', '/']));
        let remote = norm(remote);
        let head = remote.get(..prefix.len())?;
        let rest = remote.get(prefix.len()..)?.strip_prefix('\\')?;
        if !head.eq_ignore_ascii_case(&prefix) {
            return None;
        }
        let mut local = self.local.clone();
        for part in rest.split('\\').filter(|p| !p.is_empty()) {
            if Path::new(part)
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            {
                return None;
            }
            local.push(part);
        }
        Some(local)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barcodes_are_cut_to_the_limit() {
        assert_eq!(barcode(" t1 "), "t1");
        assert_eq!(barcode(&"é".repeat(100)).chars().count(), BARCODE_MAX_CHARS);
    }

    #[test]
    fn step_paths_map_between_this_machine_and_the_bts_pc() {
        let map = PathMap {
            local: PathBuf::from("/srv/steps"),
            remote: Some(r"D:\cyclerd\steps\".into()),
        };
        assert_eq!(map.remote_path("a.xml"), r"D:\cyclerd\steps\a.xml");
        assert_eq!(
            map.local_path(r"d:/CYCLERD\steps\a.xml"),
            Some(PathBuf::from("/srv/steps/a.xml"))
        );
        assert_eq!(map.local_path(r"D:\cyclerd\steps\..\x.xml"), None);
        assert_eq!(map.local_path(r"E:\other\a.xml"), None);
        assert_eq!(map.local_path(r"D:\cyclerd\stepsX\a.xml"), None);
        let same = PathMap {
            local: PathBuf::from("/srv/steps"),
            remote: None,
        };
        assert_eq!(
            same.local_path(&same.remote_path("a.xml")),
            Some(PathBuf::from("/srv/steps/a.xml"))
        );
    }
}
