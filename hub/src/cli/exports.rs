//! `cyclerhub export`: one test, or every test a filter matches into a folder, from the
//! database or from a running hub (`--hub`): the same writers read either through
//! [`crate::export::Source`], so the files are the same byte for byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use cyclerd_proto::hub::TestSummary;

use super::read::{pseudonymiser, resolve};
use super::{ReadFrom, Reader};
use crate::export::{ExportError, Format, Pseudonymiser, Source, Stored};
use crate::query::TestFilter;
use crate::remote::RemoteTest;
use crate::store::StoreError;

/// `cyclerhub export TEST`. `anonymise` is `Some(salt file, if any)` with `--anonymise`.
pub(super) fn export(
    from: &ReadFrom,
    test_id: &str,
    format: Format,
    output: Option<PathBuf>,
    anonymise: Option<Option<PathBuf>>,
) -> Result<()> {
    // Arguments first: a refused command touches neither the hub nor the output.
    let pseudonymiser = anonymise.map(pseudonymiser).transpose()?;
    match (&output, format, &pseudonymiser) {
        (Some(_), _, _) | (None, Format::BdfCsv, None) => {}
        (None, Format::BdfCsv, Some(_)) => bail!(
            "--anonymise applies to the metadata JSON, which is written beside an output file: \
             give -o FILE"
        ),
        (None, _, _) => bail!(
            "--format {} writes files: give -o {}",
            format.name(),
            if format == Format::BatteryArchive {
                "PREFIX"
            } else {
                "FILE"
            }
        ),
    }
    let mut reader = from.open()?;
    let test_id = resolve(&mut reader, test_id)?;
    let output = output.as_deref();
    match reader {
        Reader::Db(store) => {
            // Check first, so a typo does not leave an empty output file behind.
            if store.test(&test_id)?.is_none() {
                bail!(
                    "{}; `cyclerhub tests --db {}` lists the test ids",
                    StoreError::NoSuchTest(test_id),
                    store.path().display()
                );
            }
            let mut source = Stored {
                store: &store,
                test_id: &test_id,
            };
            export_one(
                &mut source,
                &test_id,
                format,
                output,
                pseudonymiser.as_ref(),
            )
        }
        Reader::Hub(mut hub) => {
            let mut source = RemoteTest::new(&mut hub, &test_id);
            // Asked first, so a test the hub does not have writes nothing.
            source.test().map_err(anyhow::Error::from)?;
            export_one(
                &mut source,
                &test_id,
                format,
                output,
                pseudonymiser.as_ref(),
            )
        }
    }
}

/// Exports the test `source` reads to `output` (standard output when `None`: BDF CSV alone).
fn export_one(
    source: &mut impl Source,
    test_id: &str,
    format: Format,
    output: Option<&Path>,
    pseudonymiser: Option<&Pseudonymiser>,
) -> Result<()> {
    let Some(output) = output else {
        return match crate::export::write_bdf_csv_from(source, std::io::stdout().lock()) {
            Ok(_) => Ok(()),
            // A closed pipe (`| head`) is not an error worth a message.
            Err(ExportError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e).with_context(|| format!("exporting test {test_id}")),
        };
    };
    if let Some(folder) = output.parent() {
        make_folder(folder)?;
    }
    let exported = crate::export::export_files_from(source, format, output, pseudonymiser)
        .with_context(|| format!("exporting test {test_id}"))?;
    let files: Vec<String> = exported
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    eprintln!(
        "wrote {} samples of {test_id}{} to {}",
        exported.samples,
        if pseudonymiser.is_some() {
            " (anonymised)"
        } else {
            ""
        },
        files.join(", ")
    );
    Ok(())
}

/// `cyclerhub export -o FOLDER` with filters and no test: every matching test into `FOLDER`,
/// named by [`bdf_names`].
pub(super) fn export_all(
    from: &ReadFrom,
    filter: &TestFilter,
    format: Format,
    output: Option<PathBuf>,
    anonymise: Option<Option<PathBuf>>,
) -> Result<()> {
    filter.check().map_err(anyhow::Error::msg)?;
    let pseudonymiser = anonymise.map(pseudonymiser).transpose()?;
    let Some(folder) = output else {
        bail!(
            "give the test to export (see `cyclerhub tests`), or -o FOLDER to export every test \
             the filters (--lab, --cell, --state, --since, ...) match into FOLDER"
        );
    };
    if folder.exists() && !folder.is_dir() {
        bail!(
            "{} is a file: without a test id, -o names the folder the tests go into",
            folder.display()
        );
    }
    let mut reader = from.open()?;
    let (mut tests, all) = list_tests(&mut reader, filter)?;
    if tests.is_empty() {
        eprintln!("no test matches the filters: nothing exported");
        return Ok(());
    }
    make_folder(&folder)?;
    let names = bdf_names(&all);
    tests.sort_by(|a, b| a.start_unix_s.total_cmp(&b.start_unix_s));
    for t in &tests {
        let name = names
            .get(&t.test_id)
            .cloned()
            .unwrap_or_else(|| t.test_id.clone());
        let output = folder.join(name);
        match &mut reader {
            Reader::Db(store) => {
                let mut source = Stored {
                    store,
                    test_id: &t.test_id,
                };
                export_one(
                    &mut source,
                    &t.test_id,
                    format,
                    Some(&output),
                    pseudonymiser.as_ref(),
                )?;
            }
            Reader::Hub(hub) => {
                let mut source = RemoteTest::new(hub, &t.test_id);
                export_one(
                    &mut source,
                    &t.test_id,
                    format,
                    Some(&output),
                    pseudonymiser.as_ref(),
                )?;
            }
        }
    }
    eprintln!(
        "exported {} test{} into {}",
        tests.len(),
        if tests.len() == 1 { "" } else { "s" },
        folder.display()
    );
    Ok(())
}

/// The tests `filter` matches, and every test: a test's number among its cell's tests of the
/// day, and so its file name ([`bdf_names`]), does not depend on the filters.
pub(super) fn list_tests(
    reader: &mut Reader,
    filter: &TestFilter,
) -> Result<(Vec<TestSummary>, Vec<TestSummary>)> {
    Ok(match reader {
        Reader::Db(store) => {
            let summaries = |f: &TestFilter| -> Result<Vec<TestSummary>> {
                Ok(f.select(store)?
                    .iter()
                    .map(|(t, lab)| crate::query::summary(t, lab))
                    .collect())
            };
            (summaries(filter)?, summaries(&TestFilter::default())?)
        }
        Reader::Hub(hub) => (
            hub.list_tests(filter)?,
            hub.list_tests(&TestFilter::default())?,
        ),
    })
}

/// The file name (without suffix) of every test in `tests`, by test id, as BDF names files:
/// `INSTITUTION__CELL__YYYYMMDD_NNN`, here the test's lab, its cell id, the UTC date it started
/// and its number among that cell's tests that day in start order (`001`, `002`, ...). Letters,
/// digits and `-` are kept, anything else becomes `-`, so `__` only ever separates the parts; a
/// test without a lab or a cell id says `nolab` or `nocell`.
pub(crate) fn bdf_names(tests: &[TestSummary]) -> HashMap<String, String> {
    let part = |text: &str, none: &str| {
        let cleaned: String = text
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let cleaned = cleaned.trim_matches('-');
        if cleaned.is_empty() {
            none.to_owned()
        } else {
            cleaned.to_owned()
        }
    };
    let mut ordered: Vec<&TestSummary> = tests.iter().collect();
    ordered.sort_by(|a, b| {
        a.start_unix_s
            .total_cmp(&b.start_unix_s)
            .then_with(|| a.test_id.cmp(&b.test_id))
    });
    let mut counts: HashMap<String, u32> = HashMap::new();
    ordered
        .into_iter()
        .map(|t| {
            let date = crate::utc::Utc::from_unix_s(t.start_unix_s)
                .map_or_else(|| "00000000".to_owned(), |u| u.date_digits());
            let stem = format!(
                "{}__{}__{date}",
                part(&t.lab, "nolab"),
                part(&t.cell_id, "nocell")
            );
            let n = counts.entry(stem.clone()).or_default();
            *n += 1;
            (t.test_id.clone(), format!("{stem}_{n:03}"))
        })
        .collect()
}

/// Creates `folder` and any missing parents, private to the user (0700 on unix: exports are
/// the lab's data).
fn make_folder(folder: &Path) -> Result<()> {
    if folder.as_os_str().is_empty() || folder.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(folder)
        .with_context(|| format!("cannot create the folder {}", folder.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(id: &str, lab: &str, cell: &str, start: f64) -> TestSummary {
        TestSummary {
            test_id: id.into(),
            lab: lab.into(),
            cell_id: cell.into(),
            start_unix_s: start,
            ..TestSummary::default()
        }
    }

    #[test]
    fn bulk_export_names_follow_bdf_lab_cell_date_and_number_of_the_day() {
        // 2026-12-01 08:00 and 09:00 UTC, and the next day.
        let (day, next) = (1_796_112_000.0, 1_796_198_400.0);
        let names = bdf_names(&[
            test("b", "Cell Lab", "NMC_0042", day + 3600.0),
            test("a", "Cell Lab", "NMC_0042", day),
            test("c", "Cell Lab", "NMC_0042", next),
            test("d", "", "", day),
            test("e", "Cell Lab", "LFP/7", day),
        ]);
        assert_eq!(names["a"], "Cell-Lab__NMC-0042__20261201_001");
        assert_eq!(names["b"], "Cell-Lab__NMC-0042__20261201_002");
        assert_eq!(names["c"], "Cell-Lab__NMC-0042__20261202_001");
        assert_eq!(names["d"], "nolab__nocell__20261201_001");
        assert_eq!(names["e"], "Cell-Lab__LFP-7__20261201_001");
    }
}
