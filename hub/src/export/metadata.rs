//! The metadata JSON written beside every export, so a file that travels (to a colleague, to
//! Battery Archive, into a paper's supplementary data) keeps what it is data *of*:
//!
//! ```json
//! {
//!   "test_id": "0190a0c0-0000-7000-8000-000000000001",
//!   "channel_id": "psb1/1",
//!   "protocol": { "name": "C/3 capacity check", "source": "...", "parameters": { "capacity": "5 Ah" }, "plan": { "...": "..." } },
//!   "start": { "unix_s": 1700000000.0, "utc": "2023-11-14T22:13:20.000Z" },
//!   "end": { "unix_s": 1700003600.0, "utc": "2023-11-14T23:13:20.000Z" },
//!   "outcome": "finished",
//!   "reason": "protocol done",
//!   "samples": 300,
//!   "grade": { "letter": "B", "score": 80, "reasons": [ "1 voltage_stuck finding(s) (-10)", "..." ] },
//!   "metadata": {
//!     "primary": { "cell_id": "NMC-0042", "chemistry": "NMC811/graphite", "...": "..." },
//!     "secondary": { "form_factor": "21700" },
//!     "tertiary": { "shelf": "3" }
//!   },
//!   "export": {
//!     "format": "bdf-parquet",
//!     "current_sign": "positive = charging",
//!     "anonymised": false,
//!     "pseudonymised": [],
//!     "files": [
//!       { "role": "samples",
//!         "columns": [ { "name": "Test Time / s", "unit": "s", "type": "float64", "nullable": false }, "..." ] }
//!     ]
//!   },
//!   "cyclerd_version": "0.1.0"
//! }
//! ```
//!
//! `end`, `outcome` and `reason` are `null` while the test runs. `grade` is the test's grade
//! when it was exported (docs/quality.md), `null` when the reader gave none. The tiers are the test's
//! metadata map split on its `secondary.` and `tertiary.` key prefixes. The protocol carries its
//! name, source, the parameters it ran with and its plan. An anonymised export lists the keys
//! it replaced by pseudonyms in `pseudonymised` (see [`super::anonymise`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::anonymise::{Anonymiser, Kind, Pseudonymiser};
use super::battery_archive::{BA_CYCLE_COLUMNS, BA_TIMESERIES_COLUMNS};
use super::cycles::CYCLE_COLUMNS;
use super::{Column, Format};
use crate::store::{Equipment, TestRow};
use crate::utc::Utc;

/// One exported file, as the metadata JSON lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct File {
    /// What the file holds: `samples` or `cycles` (BDF and its per-cycle table), `timeseries`
    /// or `cycle_data` (Battery Archive).
    pub role: &'static str,
    /// Its columns, in order.
    pub columns: Vec<Column>,
}

impl File {
    /// A BDF file of samples with these columns.
    pub fn samples(columns: Vec<Column>) -> File {
        File {
            role: "samples",
            columns,
        }
    }

    /// The per-cycle table beside a BDF file.
    pub fn cycles() -> File {
        File {
            role: "cycles",
            columns: CYCLE_COLUMNS.to_vec(),
        }
    }

    /// The two files of a Battery Archive export.
    pub fn battery_archive() -> Vec<File> {
        vec![
            File {
                role: "timeseries",
                columns: BA_TIMESERIES_COLUMNS.to_vec(),
            },
            File {
                role: "cycle_data",
                columns: BA_CYCLE_COLUMNS.to_vec(),
            },
        ]
    }
}

/// The whole document; field order is the JSON's. When anonymising, every string in it that
/// came from the test is a pseudonym or scrubbed (see [`metadata_json`]).
#[derive(Serialize)]
struct Metadata {
    /// The hub's test id, or its pseudonym.
    test_id: String,
    /// `DEVICE/N` channel the test ran on.
    channel_id: String,
    /// The protocol the test ran.
    protocol: Protocol,
    /// When the test started.
    start: Instant,
    /// When it ended; `None` while running.
    end: Option<Instant>,
    /// `finished`, `stopped` or `faulted`; `None` while running.
    outcome: Option<String>,
    /// Why it ended, in words.
    reason: Option<String>,
    /// Samples in the export.
    samples: u64,
    /// The test's grade as of the export: how fit its record is to share.
    grade: Option<GradeJson>,
    /// The test's metadata in its three tiers.
    metadata: Tiers,
    /// Where the metadata does not follow the lab's schemas (absent when it does).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metadata_problems: Vec<String>,
    /// The instruments the test ran on.
    equipment: Vec<Instrument>,
    /// What this export is.
    export: Export,
    /// The version of cyclerd (the workspace's, which cyclerhub shares) that wrote the export.
    cyclerd_version: &'static str,
}

/// A test's grade (`cyclerd_proto::quality::grade`).
#[derive(Serialize)]
struct GradeJson {
    /// `A` (best) to `E`.
    letter: String,
    /// 0 to 100.
    score: u32,
    /// Each deduction with its points.
    reasons: Vec<String>,
}

/// One instrument of a test; an anonymised export leaves out where it is reached (a lab's
/// network addresses are not for sharing).
#[derive(Serialize)]
struct Instrument {
    /// Its name in the daemon's configuration.
    name: String,
    /// Its device family (`ea-psb`, `neware`, `espec`, ...).
    family: String,
    /// Where the daemon reached it; left out when anonymised.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// `cycler`, `source`, `load` or `chamber`.
    role: String,
}

/// The protocol of a test.
#[derive(Serialize)]
struct Protocol {
    /// Its name, as the engineer called it.
    name: String,
    /// The protocol document as started (YAML).
    source: String,
    /// The parameter values the test ran with (the protocol's own, with those given at start
    /// and the cell's nominal capacity over them): what its C-rates and thresholds meant.
    parameters: serde_json::Value,
    /// The plan the daemon compiled from it and ran, step by step.
    plan: serde_json::Value,
}

/// A point in time, machine- and human-readable.
#[derive(Serialize)]
struct Instant {
    /// Unix seconds.
    unix_s: f64,
    /// The same in UTC, RFC 3339; `None` if the time is not finite.
    utc: Option<String>,
}

impl Instant {
    fn new(unix_s: f64) -> Instant {
        Instant {
            unix_s,
            utc: Utc::from_unix_s(unix_s).map(|t| t.rfc3339()),
        }
    }
}

/// A test's metadata, split into tiers; keys without their tier prefix.
#[derive(Serialize, Default)]
struct Tiers {
    /// Required before a test starts: cell_id, operator, owner, objective, chemistry,
    /// nominal_capacity_ah.
    primary: BTreeMap<String, String>,
    /// `secondary.KEY` entries (cell manufacturer, form factor, test standard, ...).
    secondary: BTreeMap<String, String>,
    /// `tertiary.KEY` entries (anything else).
    tertiary: BTreeMap<String, String>,
}

/// What an export is.
#[derive(Serialize)]
struct Export {
    /// The format's name, as `cyclerhub export --format` takes it.
    format: &'static str,
    /// The current sign convention of every file.
    current_sign: &'static str,
    /// Whether identifiers were replaced by pseudonyms.
    anonymised: bool,
    /// The keys whose values are pseudonyms (`test_id`, `cell_id`, `secondary.serial`, ...).
    pseudonymised: Vec<String>,
    /// The files, in the order they are named in [`super::output_files`].
    files: Vec<File>,
}

/// The metadata JSON (pretty-printed, newline-terminated) of an export of `test`, which ran
/// `protocol` (source and plan JSON), with `samples` samples in `files`; identifiers replaced by pseudonyms when `pseudonymiser` is given.
pub fn metadata_json(
    test: &TestRow,
    equipment: &[Equipment],
    protocol: &(String, String),
    format: Format,
    samples: u64,
    files: Vec<File>,
    pseudonymiser: Option<&Pseudonymiser>,
) -> String {
    // Replace the identifiers first, so that the free text can then be scrubbed of all of them.
    let mut anonymiser = pseudonymiser.map(Anonymiser::new);
    let mut test_id = test.test_id.clone();
    let mut pseudonymised = Vec::new();
    // Metadata key -> the pseudonym of its value.
    let mut replaced = BTreeMap::new();
    if let Some(a) = &mut anonymiser {
        test_id = a.replace(Kind::Test, &test.test_id);
        pseudonymised.push("test_id".to_owned());
        for (key, value) in &test.metadata {
            if let Some(kind) = Kind::of_key(tier_of(key).1) {
                pseudonymised.push(key.clone());
                replaced.insert(key.as_str(), a.replace(kind, value));
            }
        }
    }
    // Every other string that came from the test goes through here.
    let scrub = |s: &str| match &anonymiser {
        Some(a) => a.scrub(s),
        None => s.to_owned(),
    };

    let mut tiers = Tiers::default();
    for (key, value) in &test.metadata {
        let (tier, name) = tier_of(key);
        let tier = match tier {
            Tier::Primary => &mut tiers.primary,
            Tier::Secondary => &mut tiers.secondary,
            Tier::Tertiary => &mut tiers.tertiary,
        };
        let value = replaced
            .get(key.as_str())
            .cloned()
            .unwrap_or_else(|| scrub(value));
        tier.insert(scrub(name), value);
    }
    let metadata = Metadata {
        test_id,
        channel_id: scrub(&test.channel_id),
        protocol: {
            // Scrubbed as text: pseudonyms are plain words, so the JSON stays valid.
            let plan: serde_json::Value =
                serde_json::from_str(&scrub(&protocol.1)).unwrap_or(serde_json::Value::Null);
            Protocol {
                name: scrub(&test.protocol_name),
                source: scrub(&protocol.0),
                parameters: plan
                    .get("params")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({})),
                plan,
            }
        },
        start: Instant::new(test.start_unix_s),
        end: test.end_unix_s.map(Instant::new),
        outcome: test.outcome.as_deref().map(scrub),
        reason: test.reason.as_deref().map(scrub),
        samples,
        grade: test.grade.as_ref().map(|g| GradeJson {
            letter: g.letter.to_string(),
            score: g.score,
            reasons: g.reasons.iter().map(|r| scrub(r)).collect(),
        }),
        metadata: tiers,
        metadata_problems: test.metadata_problems.iter().map(|p| scrub(p)).collect(),
        equipment: equipment
            .iter()
            .map(|e| Instrument {
                name: scrub(&e.name),
                family: e.family.clone(),
                address: anonymiser.is_none().then(|| e.address.clone()),
                role: e.role.clone(),
            })
            .collect(),
        export: Export {
            format: format.name(),
            current_sign: "positive = charging",
            anonymised: anonymiser.is_some(),
            pseudonymised,
            files,
        },
        cyclerd_version: env!("CARGO_PKG_VERSION"),
    };
    let mut json =
        serde_json::to_string_pretty(&metadata).expect("strings, numbers and maps serialise");
    json.push('\n');
    json
}

/// The metadata tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// Keys without a tier prefix.
    Primary,
    /// `secondary.KEY`.
    Secondary,
    /// `tertiary.KEY`.
    Tertiary,
}

impl Tier {
    /// The tier's name, as the metadata JSON and the HTTP API call it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Primary => "primary",
            Tier::Secondary => "secondary",
            Tier::Tertiary => "tertiary",
        }
    }
}

/// A metadata key's tier and its name within the tier.
pub(crate) fn tier_of(key: &str) -> (Tier, &str) {
    if let Some(name) = key.strip_prefix("secondary.") {
        (Tier::Secondary, name)
    } else if let Some(name) = key.strip_prefix("tertiary.") {
        (Tier::Tertiary, name)
    } else {
        (Tier::Primary, key)
    }
}
