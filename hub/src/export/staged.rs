//! Output files written under a temporary name beside their destination and renamed into place
//! once complete, so a failed export leaves nothing half-written (and a reader never sees a
//! file still being written).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::ExportError;

/// One output file being written.
pub(super) struct Staged {
    /// Where the file goes once complete.
    dest: PathBuf,
    /// Where it is written meanwhile: a hidden name in the same directory, so that the final
    /// rename stays on one file system and is atomic.
    tmp: PathBuf,
    /// The open temporary file; `None` once committed.
    file: Option<File>,
}

impl Staged {
    /// Creates the temporary file for `dest`; fails (naming `dest`) when `dest` is a directory or
    /// its directory is missing or not writable.
    pub(super) fn create(dest: &Path) -> Result<Staged, ExportError> {
        let fail = |source| ExportError::Output {
            path: dest.to_path_buf(),
            source,
        };
        if dest.is_dir() {
            return Err(fail(io::Error::new(
                io::ErrorKind::IsADirectory,
                "it is a directory; give a file name",
            )));
        }
        let Some(name) = dest.file_name() else {
            return Err(fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            )));
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.partial", std::process::id()));
        let tmp = dest.with_file_name(tmp_name);
        let file = File::create(&tmp).map_err(fail)?;
        Ok(Staged {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    /// The temporary file, to write to.
    pub(super) fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("written before commit")
    }

    /// `e` with I/O failures attributed to this file.
    pub(super) fn output_error(&self, e: ExportError) -> ExportError {
        output_error(&self.dest, e)
    }

    /// Puts the complete file in place, replacing any file of that name.
    pub(super) fn commit(mut self) -> Result<(), ExportError> {
        drop(self.file.take());
        std::fs::rename(&self.tmp, &self.dest).map_err(|source| ExportError::Output {
            path: self.dest.clone(),
            source,
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not committed: the export failed. Nothing to report if removal fails too.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `e` with I/O failures (including those the Parquet encoder wraps) attributed to `path`.
pub(super) fn output_error(path: &Path, e: ExportError) -> ExportError {
    let source = match e {
        ExportError::Io(source) => source,
        ExportError::Parquet(p) => io::Error::other(p),
        other => return other,
    };
    ExportError::Output {
        path: path.to_path_buf(),
        source,
    }
}
