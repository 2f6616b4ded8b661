//! A bundle for a public archive (`cyclerhub publish`): one folder holding, per test, the
//! files `cyclerhub export` writes in BDF (CSV or Parquet, with the per-cycle table) and in
//! Battery Archive's format, each set with its metadata JSON; a `README.txt`; and
//! `ro-crate-metadata.json`, the RO-Crate 1.1 description of it all (see [`ro_crate`]).
//!
//! The bundle is written into a hidden folder beside the destination and renamed into place
//! only once complete, so a failed publish (an unknown test, a hub that went away, a full disk)
//! leaves no folder, and an archive is never handed half a bundle.

pub mod ro_crate;

use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{ExportError, Format, Pseudonymiser, Source, export_files_from};
pub use ro_crate::{About, Agent, FileEntity, Instrument, License, Property, TestEntity};

/// The crate's file name, fixed by RO-Crate.
pub const CRATE_FILE: &str = "ro-crate-metadata.json";
/// The plain-text guide for people who open the folder.
pub const README_FILE: &str = "README.txt";
/// Where the BDF specification lives: what the BDF files `conformsTo`.
const BDF_SPEC: &str = "https://github.com/battery-data-alliance/battery-data-format";

/// The format of a bundle's BDF files (Battery Archive's are CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BdfFormat {
    /// `NAME.bdf.csv` and `NAME.cycles.csv`.
    Csv,
    /// `NAME.bdf.parquet` and `NAME.cycles.parquet`.
    Parquet,
}

impl BdfFormat {
    fn format(self) -> Format {
        match self {
            BdfFormat::Csv => Format::BdfCsv,
            BdfFormat::Parquet => Format::BdfParquet,
        }
    }
}

/// Errors of a publish.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Exporting a test failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The destination cannot take a bundle.
    #[error("{}: {reason}", path.display())]
    Refused {
        /// The destination.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// A file or folder of the bundle could not be written, read back or put in place.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `out` can take a bundle: absent, an empty folder, or (with `force`) a folder
/// holding a previous bundle (it has a `ro-crate-metadata.json`), which is replaced. Anything
/// else is refused: `--force` never deletes a folder that is not a bundle. Returns whether `out`
/// exists.
pub fn check_destination(out: &Path, force: bool) -> Result<bool, BundleError> {
    let refuse = |reason: &str| BundleError::Refused {
        path: out.to_path_buf(),
        reason: reason.to_owned(),
    };
    if out.file_name().is_none() {
        return Err(refuse("not a folder name"));
    }
    let parent = parent_of(out);
    if !parent.is_dir() {
        return Err(refuse(
            "its parent folder does not exist; create it first (a failed publish leaves nothing \
             behind, not even folders)",
        ));
    }
    let Ok(meta) = fs::symlink_metadata(out) else {
        return Ok(false);
    };
    if !meta.is_dir() {
        return Err(refuse(
            "it is a file (or a link); give a folder for the bundle",
        ));
    }
    let empty = fs::read_dir(out).map_err(io_error(out))?.next().is_none();
    if empty {
        return Ok(true);
    }
    if !force {
        return Err(refuse(
            "the folder is not empty; give a new folder, or --force to replace a previous bundle",
        ));
    }
    if !out.join(CRATE_FILE).is_file() {
        return Err(refuse(
            "the folder is not empty and holds no ro-crate-metadata.json: --force only replaces \
             a previous bundle, never another folder",
        ));
    }
    Ok(true)
}

fn parent_of(out: &Path) -> &Path {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A bundle being written, in a hidden folder beside its destination; removed when dropped
/// unfinished.
pub struct Bundle {
    /// Where the bundle goes.
    out: PathBuf,
    /// Where it is written meanwhile: beside `out`, so the final rename stays on one file
    /// system; `None` once in place.
    tmp: Option<PathBuf>,
    /// Whether `out` exists (empty, or a previous bundle) and is to be replaced.
    replace: bool,
    /// The tests added so far.
    tests: Vec<TestEntity>,
    /// Their files, in the order written.
    files: Vec<FileEntity>,
}

impl Bundle {
    /// Starts a bundle for `out` after [`check_destination`]; its folder is private to the user
    /// (0700 on unix), as `cyclerhub export` makes its folders.
    pub fn create(out: &Path, force: bool) -> Result<Bundle, BundleError> {
        let replace = check_destination(out, force)?;
        let name = out.file_name().expect("checked").to_string_lossy();
        let tmp = parent_of(out).join(format!(".{name}.{}.partial", std::process::id()));
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&tmp).map_err(io_error(&tmp))?;
        Ok(Bundle {
            out: out.to_path_buf(),
            tmp: Some(tmp),
            replace,
            tests: Vec::new(),
            files: Vec::new(),
        })
    }

    fn dir(&self) -> &Path {
        self.tmp.as_deref().expect("not yet in place")
    }

    /// Adds the test `source` reads, its files named `name` (`name.bdf.csv`,
    /// `name_timeseries.csv`, ...): BDF in `bdf` (CSV or Parquet) and Battery Archive's files,
    /// each set with its metadata JSON, anonymised with `pseudonymiser`. `extra` are further
    /// properties of the test for the crate (after those from its metadata).
    pub fn add_test(
        &mut self,
        source: &mut impl Source,
        name: &str,
        bdf: BdfFormat,
        pseudonymiser: Option<&Pseudonymiser>,
        extra: Vec<Property>,
    ) -> Result<(), BundleError> {
        let bdf = bdf.format();
        let base = self.dir().join(name);
        if super::output_files(bdf, &base)[0].exists() {
            return Err(BundleError::Refused {
                path: base,
                reason: "two tests have this name".into(),
            });
        }
        let written = export_files_from(source, bdf, &base, pseudonymiser)?;
        let bdf_files = written.files;
        let ba_files =
            export_files_from(source, Format::BatteryArchive, &base, pseudonymiser)?.files;

        // The crate says what the metadata JSON says, pseudonyms included.
        let metadata_path = ba_files.last().expect("a metadata JSON");
        let text = fs::read(metadata_path).map_err(io_error(metadata_path))?;
        let metadata: Value = serde_json::from_slice(&text).map_err(|e| BundleError::Io {
            path: metadata_path.clone(),
            source: io::Error::other(e),
        })?;
        let mut test = test_entity(&metadata);
        test.properties.extend(extra);

        let parquet = bdf == Format::BdfParquet;
        let data_type = if parquet {
            "application/vnd.apache.parquet"
        } else {
            "text/csv"
        };
        let described = [
            (
                "Battery Data Format (BDF) samples",
                data_type,
                Some(BDF_SPEC),
            ),
            ("per-cycle table, BDF column names", data_type, None),
            ("metadata of the BDF files (JSON)", "application/json", None),
            ("Battery Archive timeseries", "text/csv", None),
            ("Battery Archive cycle data", "text/csv", None),
            (
                "metadata of the Battery Archive files (JSON)",
                "application/json",
                None,
            ),
        ];
        for (path, (description, format, spec)) in bdf_files.iter().chain(&ba_files).zip(described)
        {
            let mut file = self.describe(path, description, format)?;
            file.conforms_to = spec;
            file.about = Some(test.id.clone());
            self.files.push(file);
        }
        self.tests.push(test);
        Ok(())
    }

    /// A [`FileEntity`] of the file at `path` in the bundle: size and hash read back.
    fn describe(
        &self,
        path: &Path,
        description: &str,
        encoding_format: &'static str,
    ) -> Result<FileEntity, BundleError> {
        let (size, sha256) = hash_file(path).map_err(io_error(path))?;
        let relative = path.strip_prefix(self.dir()).unwrap_or(path);
        Ok(FileEntity {
            path: relative.to_string_lossy().replace('\\', "/"),
            description: description.to_owned(),
            encoding_format,
            conforms_to: None,
            size,
            sha256,
            about: None,
        })
    }

    /// Writes the README and the crate, and puts the bundle in place (replacing the previous
    /// one at its destination, if any). Returns the tests and files it holds.
    pub fn finish(mut self, about: &About) -> Result<Published, BundleError> {
        let readme = self.dir().join(README_FILE);
        fs::write(&readme, readme_text(about, &self.tests, &self.files))
            .map_err(io_error(&readme))?;
        let file = self.describe(
            &readme,
            "what this folder holds, in plain text",
            "text/plain",
        )?;
        self.files.push(file);
        let crate_path = self.dir().join(CRATE_FILE);
        fs::write(
            &crate_path,
            ro_crate::crate_json(about, &self.tests, &self.files),
        )
        .map_err(io_error(&crate_path))?;

        let tmp = self.tmp.clone().expect("not yet in place");
        // A previous bundle (or an empty folder) is moved aside first: a folder cannot be
        // renamed onto a non-empty one, nor onto any on Windows.
        let old = self.replace.then(|| tmp.with_extension("old"));
        if let Some(old) = &old {
            fs::rename(&self.out, old).map_err(io_error(&self.out))?;
        }
        if let Err(e) = fs::rename(&tmp, &self.out) {
            if let Some(old) = &old {
                // Put the previous bundle back; nothing more to do if that fails too.
                let _ = fs::rename(old, &self.out);
            }
            return Err(io_error(&self.out)(e));
        }
        self.tmp = None;
        if let Some(old) = &old {
            fs::remove_dir_all(old).map_err(io_error(old))?;
        }
        Ok(Published {
            tests: self.tests.len(),
            files: self.files.len() + 1,
        })
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            // Unfinished: the publish failed. Nothing to report if removal fails too.
            let _ = fs::remove_dir_all(tmp);
        }
    }
}

/// What [`Bundle::finish`] put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Tests in the bundle.
    pub tests: usize,
    /// Files in the bundle, the crate included.
    pub files: usize,
}

/// Size and SHA-256 (lowercase hex) of the file at `path`.
fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((size, hex))
}

/// The crate's entity of the test a metadata JSON describes (see [`super::metadata`]).
fn test_entity(m: &Value) -> TestEntity {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let identifier = text(&m["test_id"]).unwrap_or_default();
    let primary = &m["metadata"]["primary"];
    let secondary = &m["metadata"]["secondary"];
    let cell = text(&primary["cell_id"]);
    let protocol = text(&m["protocol"]["name"]);
    let mut properties = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            properties.push(Property::new(name, v));
        }
    };
    add("cell_id", cell.clone());
    add("chemistry", text(&primary["chemistry"]));
    add("manufacturer", text(&secondary["manufacturer"]));
    add("model", text(&secondary["model"]));
    add("form_factor", text(&secondary["form_factor"]));
    add("protocol", protocol.clone());
    add("channel", text(&m["channel_id"]));
    add("outcome", text(&m["outcome"]));
    if let Some(capacity) = text(&primary["nominal_capacity_ah"]) {
        properties.push(Property {
            name: "nominal_capacity".into(),
            // A number when it is one, else the text as written.
            value: capacity
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|c| serde_json::Number::from_f64(c).map(Value::Number))
                .unwrap_or(Value::String(capacity)),
            unit: Some("Ah".into()),
        });
    }
    if let Some(samples) = m["samples"].as_u64() {
        properties.push(Property::new("samples", samples));
    }
    let instruments = m["equipment"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|e| Instrument {
                    name: text(&e["name"]).unwrap_or_default(),
                    family: text(&e["family"]).unwrap_or_default(),
                    role: text(&e["role"]).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    // A pseudonym already reads `test-...`.
    let id = if identifier.starts_with("test-") {
        format!("#{identifier}")
    } else {
        format!("#test-{identifier}")
    };
    TestEntity {
        id,
        name: format!(
            "Cell {}: {}",
            cell.as_deref().unwrap_or("unknown"),
            protocol.as_deref().unwrap_or("test")
        ),
        identifier,
        description: text(&primary["objective"]),
        start: text(&m["start"]["utc"]),
        end: text(&m["end"]["utc"]),
        outcome: text(&m["outcome"]),
        instruments,
        properties,
    }
}

/// `README.txt`: what the folder holds, for someone who opens it without RO-Crate tools.
fn readme_text(about: &About, tests: &[TestEntity], files: &[FileEntity]) -> String {
    let mut out = format!(
        "{}\n{}\n\n{}\n\nPublished {} under {}.\n",
        about.name,
        "=".repeat(about.name.chars().count().max(1)),
        about.description,
        about.date_published,
        about.license.spdx.as_deref().unwrap_or(&about.license.url),
    );
    if !about.creators.is_empty() {
        let names: Vec<&str> = about.creators.iter().map(|c| c.name.as_str()).collect();
        out.push_str(&format!("Created by {}.\n", names.join(", ")));
    }
    if let Some(p) = &about.publisher {
        out.push_str(&format!("Published by {}.\n", p.name));
    }
    out.push_str(&format!(
        "\n{} test{}, each as a set of files named after it (LAB__CELL__YYYYMMDD_NNN):\n\
         - NAME.bdf.csv or NAME.bdf.parquet: every sample in the Battery Data Format (BDF 1.3);\n\
         \x20 current positive when charging, capacities and energies cumulative since the start.\n\
         - NAME.cycles.csv or NAME.cycles.parquet: one row per cycle, BDF column names.\n\
         - NAME_timeseries.csv and NAME_cycle_data.csv: the same test in Battery Archive's\n\
         \x20 format (batteryarchive.org), capacities and energies restarting every cycle.\n\
         - NAME.bdf.csv.metadata.json (or .bdf.parquet.metadata.json) and NAME.metadata.json:\n\
         \x20 the test, its cell, protocol and instruments, and every file's columns with units.\n\
         \nro-crate-metadata.json describes the whole folder in RO-Crate 1.1 (JSON-LD): every\n\
         file with its size and SHA-256, and per test its cell, chemistry, nominal capacity,\n\
         protocol, instruments, start and end.\n\nTests:\n",
        tests.len(),
        if tests.len() == 1 { "" } else { "s" },
    ));
    for t in tests {
        let data = files
            .iter()
            .find(|f| f.about.as_deref() == Some(t.id.as_str()))
            .map_or("", |f| f.path.as_str());
        let stem = data
            .strip_suffix(".bdf.csv")
            .or_else(|| data.strip_suffix(".bdf.parquet"))
            .unwrap_or(data);
        out.push_str(&format!(
            "- {stem}: {} ({} to {})\n",
            t.name,
            t.start.as_deref().unwrap_or("?"),
            t.end.as_deref().unwrap_or("still running"),
        ));
    }
    out.push_str(&format!(
        "\nWritten by cyclerhub {}.\n",
        env!("CARGO_PKG_VERSION")
    ));
    out
}
