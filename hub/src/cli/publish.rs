//! `cyclerhub publish`: the tests a filter (or a list of ids) selects, as one bundle for a
//! public archive (see [`crate::export::bundle`]), from the database or a running hub.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use cyclerd_proto::hub::TestSummary;

use super::exports::{bdf_names, list_tests};
use super::read::{pseudonymiser, resolve};
use super::{Filters, ReadFrom, Reader};
use crate::export::anonymise::Kind;
use crate::export::bundle::{self, About, Agent, BdfFormat, Bundle, License, Property};
use crate::query::TestFilter;
use crate::remote::RemoteTest;
use crate::utc::Utc;

/// The arguments of `cyclerhub publish`.
#[derive(Args)]
pub(super) struct PublishArgs {
    #[command(flatten)]
    source: ReadFrom,
    /// Tests to publish: their ids, or enough of each to name one test (see `cyclerhub tests`).
    /// Without them, every test the filters match.
    #[arg(conflicts_with = "Filters")]
    test_ids: Vec<String>,
    #[command(flatten)]
    filters: Filters,
    /// The folder the bundle goes into: new, or empty (its parent must exist). A failed publish
    /// leaves nothing there.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace --out when it holds a previous bundle (a folder with a ro-crate-metadata.json);
    /// any other non-empty folder is still refused.
    #[arg(long)]
    force: bool,
    /// Format of the BDF files (Battery Archive's are CSV).
    #[arg(long, value_enum, default_value_t = BdfFormat::Csv)]
    format: BdfFormat,
    /// The data's license: an SPDX id (CC-BY-4.0, CC0-1.0, ODbL-1.0) or a URL. Required: an
    /// archive needs one, and choosing it is the lab's decision.
    #[arg(long, value_parser = License::parse)]
    license: License,
    /// The dataset's title (default: "Battery cycling tests from LAB", or without a lab, from
    /// the hub).
    #[arg(long)]
    title: Option<String>,
    /// What the dataset holds, in a sentence or two (default: the number of tests, their
    /// cells and chemistries).
    #[arg(long)]
    description: Option<String>,
    /// A person who made the data: NAME or "NAME <URL>" (an ORCID). Repeat for each.
    #[arg(long = "creator", value_name = "NAME", value_parser = Agent::parse)]
    creators: Vec<Agent>,
    /// The organisation publishing it: NAME or "NAME <URL>" (a ROR id).
    #[arg(long, value_name = "NAME", value_parser = Agent::parse)]
    publisher: Option<Agent>,
    /// Replace the test ids and the owner, operator and cell identifiers by stable pseudonyms
    /// everywhere in the bundle, file names included (needs --salt).
    #[arg(long, alias = "anonymize")]
    anonymise: bool,
    /// File holding the lab's secret for --anonymise (as for `cyclerhub export`).
    #[arg(long, env = "CYCLERHUB_SALT_FILE", value_name = "FILE")]
    salt: Option<PathBuf>,
}

/// `cyclerhub publish`.
pub(super) fn publish(args: PublishArgs) -> Result<()> {
    // Arguments and the destination first: a refused command touches neither the hub nor --out.
    let filter = args.filters.into_filter();
    filter.check().map_err(anyhow::Error::msg)?;
    let pseudonymiser = args
        .anonymise
        .then(|| pseudonymiser(args.salt.clone()))
        .transpose()?;
    bundle::check_destination(&args.out, args.force)?;

    let mut reader = args.source.open()?;
    let (mut tests, mut all) = if args.test_ids.is_empty() {
        list_tests(&mut reader, &filter)?
    } else {
        let (_, all) = list_tests(&mut reader, &TestFilter::default())?;
        let mut chosen = Vec::new();
        for id in &args.test_ids {
            let id = resolve(&mut reader, id)?;
            let Some(t) = all.iter().find(|t| t.test_id == id) else {
                bail!("no test with id {id:?}; `cyclerhub tests` lists the test ids");
            };
            if !chosen.iter().any(|c: &TestSummary| c.test_id == id) {
                chosen.push(t.clone());
            }
        }
        (chosen, all)
    };
    if tests.is_empty() {
        bail!("no test matches the filters: nothing to publish");
    }
    if let Some(p) = &pseudonymiser {
        // File names carry the cell: its pseudonym, the one the metadata JSON gives.
        for t in tests.iter_mut().chain(all.iter_mut()) {
            if !t.cell_id.is_empty() {
                t.cell_id = p.pseudonym(Kind::Cell, &t.cell_id);
            }
        }
    }
    let names = bdf_names(&all);
    tests.sort_by(|a, b| a.start_unix_s.total_cmp(&b.start_unix_s));

    let mut bundle = Bundle::create(&args.out, args.force)?;
    for t in &tests {
        // Listed twice (the selection, then every test): one gone in between has no name.
        let Some(name) = names.get(&t.test_id) else {
            bail!("test {} is no longer listed by the hub", t.test_id);
        };
        let extra = extra_properties(t);
        let added = match &mut reader {
            Reader::Db(store) => {
                let mut source = crate::export::Stored {
                    store,
                    test_id: &t.test_id,
                };
                bundle.add_test(
                    &mut source,
                    name,
                    args.format,
                    pseudonymiser.as_ref(),
                    extra,
                )
            }
            Reader::Hub(hub) => {
                let mut source = RemoteTest::new(hub, &t.test_id);
                bundle.add_test(
                    &mut source,
                    name,
                    args.format,
                    pseudonymiser.as_ref(),
                    extra,
                )
            }
        };
        added.with_context(|| format!("publishing test {}", t.test_id))?;
    }
    let about = About {
        name: args.title.unwrap_or_else(|| default_title(&tests)),
        description: args
            .description
            .unwrap_or_else(|| default_description(&tests, pseudonymiser.is_some())),
        date_published: today(),
        license: args.license,
        creators: args.creators,
        publisher: args.publisher,
    };
    let published = bundle.finish(&about)?;
    eprintln!(
        "published {} test{}{} as {} files in {} (ro-crate-metadata.json describes them)",
        published.tests,
        if published.tests == 1 { "" } else { "s" },
        if pseudonymiser.is_some() {
            " (anonymised)"
        } else {
            ""
        },
        published.files,
        args.out.display()
    );
    Ok(())
}

/// Properties of a test the crate carries beyond its metadata JSON's: its grade as of the
/// publish (with the score, out of 100) and, for a test another hub shared with this one,
/// where it came from.
fn extra_properties(test: &TestSummary) -> Vec<Property> {
    let mut extra = Vec::new();
    if !test.grade.is_empty() {
        extra.push(Property::new("grade", test.grade.clone()));
        extra.push(Property::new("grade_score", f64::from(test.grade_score)));
    }
    if let Some(from) = &test.shared_from {
        extra.push(Property::new(
            "shared_from",
            format!("hub {}, share {}", from.hub, from.share),
        ));
    }
    extra
}

/// The distinct non-empty values of one field of the tests, sorted.
fn distinct<'a>(
    tests: &'a [TestSummary],
    field: impl Fn(&'a TestSummary) -> &'a str,
) -> Vec<&'a str> {
    let mut values: Vec<&str> = tests.iter().map(field).filter(|v| !v.is_empty()).collect();
    values.sort_unstable();
    values.dedup();
    values
}

fn default_title(tests: &[TestSummary]) -> String {
    let labs = distinct(tests, |t| t.lab.as_str());
    if labs.is_empty() {
        "Battery cycling tests".to_owned()
    } else {
        format!("Battery cycling tests from {}", labs.join(", "))
    }
}

fn default_description(tests: &[TestSummary], anonymised: bool) -> String {
    let cells = distinct(tests, |t| t.cell_id.as_str());
    let chemistries = distinct(tests, |t| t.chemistry.as_str());
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut text = format!(
        "{} of {}",
        plural(tests.len(), "cycling test"),
        plural(cells.len(), "cell")
    );
    if !chemistries.is_empty() {
        text.push_str(&format!(" ({})", chemistries.join(", ")));
    }
    text.push_str(
        ", every sample in the Battery Data Format and in Battery Archive's format, with \
         per-cycle tables and metadata",
    );
    if anonymised {
        text.push_str("; test and cell identifiers are pseudonyms");
    }
    text.push('.');
    text
}

/// Today's date in UTC, ISO 8601.
fn today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Utc::from_unix_s(now).map_or_else(String::new, |u| u.rfc3339()[..10].to_owned())
}
