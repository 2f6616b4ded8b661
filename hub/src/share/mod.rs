//! Sharing between hubs (`cyclerhub share`): this hub sends a chosen subset of its tests to
//! another hub, continuously or once, as a daemon would upload them.
//!
//! A share speaks the ingest contract to the receiving hub: it opens an Upload stream with a
//! Hello of its own (a daemon id and credential made when the share was added, a new store
//! epoch each time), learns the receiver's resume point, and sends entries from there; the
//! receiver applies them idempotently and acks after its commit, so every shared sample is
//! stored there once, across restarts of either hub. The Upload call carries the share's origin
//! (`cyclerd-share-bin`: this hub's name, the share's, whether anonymised, what it selects),
//! which the receiver keeps as the provenance of the tests of that stream.
//!
//! Entry ids must mean the same thing forever, so each share keeps a log (`share_log`): ids
//! assigned once, each naming what it carries (a test's registration, a run of its samples, an
//! event, a complete cycle, its end). [`fill`] appends to it whatever the share's tests gained
//! since (`share_progress` says how far each is logged); [`entries`] turns a logged entry into
//! the entry sent, re-reading the data then and replacing identifiers by the lab's pseudonyms
//! when the share anonymises; [`send`] runs every share of the hub while it serves.
//!
//! Shares are kept in the hub's database; `serve` notices a share added or removed within a
//! second ([`send::RESCAN`]), and a removed share's stream ends at once.

mod entries;
pub(crate) mod fill;
pub(crate) mod send;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::export::Pseudonymiser;
use crate::export::anonymise::Kind;
use crate::store::TestRow;

pub use fill::fill;

/// Which tests a share sends; every criterion given must hold, and a test matches a list when
/// it matches any item of it. Empty: every test of the hub.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The lab whose daemons ran the tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab: Option<String>,
    /// The team their metadata names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Primary metadata `cell_id`, any of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<String>,
    /// Primary metadata `chemistry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chemistry: Option<String>,
    /// Any of these among the comma-separated words of the metadata key `tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// These tests only, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<String>,
    /// Only tests that ended graded this letter or better (`A` best to `E`). A running test's
    /// grade still moves, so such a share sends a test once it has ended, whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_grade: Option<char>,
}

impl Selection {
    /// Whether test `t`, of `lab` (empty: none), is in the share.
    pub fn matches(&self, t: &TestRow, lab: &str) -> bool {
        let meta = |k: &str| t.metadata.get(k).map_or("", String::as_str);
        let tags: Vec<&str> = meta("tags")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        self.lab.as_deref().is_none_or(|l| l == lab)
            && self
                .team
                .as_deref()
                .is_none_or(|x| t.team.as_deref() == Some(x))
            && (self.cells.is_empty() || self.cells.iter().any(|c| c == meta("cell_id")))
            && self
                .chemistry
                .as_deref()
                .is_none_or(|c| c == meta("chemistry"))
            && (self.tags.is_empty() || self.tags.iter().any(|x| tags.contains(&x.as_str())))
            && (self.tests.is_empty() || self.tests.contains(&t.test_id))
            && self.min_grade.is_none_or(|min| {
                t.outcome.is_some() && t.grade.as_ref().is_some_and(|g| g.at_least(min))
            })
    }

    /// The selection in words for the receiving hub's listing; an anonymising share names
    /// cells and tests by their pseudonyms there, never by this hub's ids.
    pub fn describe(&self, pseudonyms: Option<&Pseudonymiser>) -> String {
        let mut parts = Vec::new();
        let hide = |kind: Kind, v: &str| match pseudonyms {
            Some(p) => p.pseudonym(kind, v),
            None => v.to_owned(),
        };
        if let Some(lab) = &self.lab {
            parts.push(format!("lab={lab}"));
        }
        if let Some(team) = &self.team {
            parts.push(format!("team={team}"));
        }
        if !self.cells.is_empty() {
            let cells: Vec<String> = self.cells.iter().map(|c| hide(Kind::Cell, c)).collect();
            parts.push(format!("cell={}", cells.join(",")));
        }
        if let Some(chemistry) = &self.chemistry {
            parts.push(format!("chemistry={chemistry}"));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tag={}", self.tags.join(",")));
        }
        if !self.tests.is_empty() {
            let tests: Vec<String> = self.tests.iter().map(|t| hide(Kind::Test, t)).collect();
            parts.push(format!("test={}", tests.join(",")));
        }
        if let Some(min) = self.min_grade {
            parts.push(format!("ended graded {min} or better"));
        }
        if parts.is_empty() {
            "every test".into()
        } else {
            parts.join(" ")
        }
    }
}

/// The name of a share's stream at the receiving hub and its credential, new for every share
/// added: `(daemon id, secret, store epoch)`.
pub fn new_stream_identity() -> (String, String, u64) {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let id = format!("hub-share-{:032x}", rng.random::<u128>());
    let secret: String = (0..48)
        .map(|_| {
            const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            CHARS[rng.random_range(0..CHARS.len())] as char
        })
        .collect();
    (id, secret, rng.random::<u64>())
}

/// The tests of `tests` a share selects, each with its lab.
pub(crate) fn selected<'a>(
    selection: &'a Selection,
    tests: &'a [TestRow],
    labs: &'a HashMap<String, String>,
) -> impl Iterator<Item = &'a TestRow> + 'a {
    tests.iter().filter(move |t| {
        let lab = labs.get(&t.daemon_id).map_or("", String::as_str);
        // A test another hub shared with this one is not passed on.
        t.shared_from.is_none() && selection.matches(t, lab)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(id: &str, cell: &str, chemistry: &str, tags: &str) -> TestRow {
        let metadata = [("cell_id", cell), ("chemistry", chemistry), ("tags", tags)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        TestRow {
            test_id: id.into(),
            daemon_id: "d".into(),
            channel_id: "psb1/1".into(),
            protocol_name: "p".into(),
            metadata,
            start_unix_s: 0.0,
            end_unix_s: None,
            outcome: None,
            reason: None,
            sample_count: 0,
            expected_samples: None,
            team: Some("ageing".into()),
            metadata_problems: Vec::new(),
            shared_from: None,
            grade: None,
        }
    }

    #[test]
    fn a_share_by_grade_takes_a_test_once_it_ended_graded_that_or_better() {
        use cyclerd_proto::quality::grade::Grade;
        let s = Selection {
            min_grade: Some('B'),
            ..Selection::default()
        };
        let graded = |letter: char, ended: bool| {
            let mut t = test("1", "A", "NMC", "");
            t.grade = Some(Grade {
                score: 0,
                letter,
                reasons: Vec::new(),
            });
            t.outcome = ended.then(|| "finished".to_owned());
            t
        };
        assert!(s.matches(&graded('A', true), ""));
        assert!(s.matches(&graded('B', true), ""));
        assert!(!s.matches(&graded('C', true), ""));
        assert!(
            !s.matches(&graded('A', false), ""),
            "running: its grade still moves"
        );
        assert!(!s.matches(&test("2", "A", "NMC", ""), ""), "ungraded");
        assert_eq!(s.describe(None), "ended graded B or better");
    }

    #[test]
    fn a_selection_needs_every_criterion_given_and_any_value_of_a_list() {
        let s = Selection {
            lab: Some("cells".into()),
            cells: vec!["A".into(), "B".into()],
            tags: vec!["paper".into()],
            ..Selection::default()
        };
        assert!(s.matches(&test("1", "B", "NMC", "x, paper"), "cells"));
        assert!(!s.matches(&test("2", "B", "NMC", "x, paper"), "other lab"));
        assert!(!s.matches(&test("3", "C", "NMC", "paper"), "cells"));
        assert!(!s.matches(&test("4", "A", "NMC", "papers"), "cells"));
        let every = Selection::default();
        assert!(every.matches(&test("5", "", "", ""), ""));
        let listed = Selection {
            tests: vec!["6".into()],
            team: Some("ageing".into()),
            ..Selection::default()
        };
        assert!(listed.matches(&test("6", "A", "LFP", ""), ""));
        assert!(!listed.matches(&test("7", "A", "LFP", ""), ""));
    }

    #[test]
    fn an_anonymising_share_describes_its_cells_and_tests_by_their_pseudonyms() {
        let s = Selection {
            chemistry: Some("NMC".into()),
            cells: vec!["NMC-0042".into()],
            tests: vec!["0190a0c0".into()],
            ..Selection::default()
        };
        assert_eq!(
            s.describe(None),
            "cell=NMC-0042 chemistry=NMC test=0190a0c0"
        );
        let p = Pseudonymiser::new(b"a lab secret of more than sixteen bytes").unwrap();
        let described = s.describe(Some(&p));
        assert!(!described.contains("NMC-0042") && !described.contains("0190a0c0"));
        assert!(
            described.contains(&p.pseudonym(Kind::Cell, "NMC-0042")),
            "{described}"
        );
        assert_eq!(Selection::default().describe(None), "every test");
    }
}
