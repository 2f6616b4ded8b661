//! A test's grade: how fit its record is to be shared, as a score from 0 to 100, a letter and
//! the reasons, from three things (docs/quality.md says the same for users):
//!
//! - metadata completeness: each primary key missing or blank costs [`PRIMARY_KEY_POINTS`]
//!   (at most [`PRIMARY_MAX_POINTS`]); the secondary keys the lab's schema names and the test
//!   lacks cost up to [`SECONDARY_MAX_POINTS`] by their share; each place the metadata broke
//!   the lab's schemas costs [`SCHEMA_PROBLEM_POINTS`] (at most [`SCHEMA_MAX_POINTS`]);
//! - quality findings: per check, its [`weight`] for the first finding, half as much again for
//!   the second and the third (at most twice the weight per check);
//! - gaps: one point per percent of the test's time without a sample, at most
//!   [`GAP_MAX_POINTS`].
//!
//! The score is 100 less every deduction (never below 0); letters: A from 90, B from 75, C
//! from 60, D from 40, E below. The grade is a pure function of what the hub stores, so it is
//! computed whenever a test is read: it is live while the test runs.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::Check;

/// Points a missing primary key costs.
pub const PRIMARY_KEY_POINTS: f64 = 10.0;
/// Most the primary keys cost together.
pub const PRIMARY_MAX_POINTS: f64 = 30.0;
/// What missing every secondary key the lab's schema names costs.
pub const SECONDARY_MAX_POINTS: f64 = 10.0;
/// Points a metadata problem under the lab's schemas costs.
pub const SCHEMA_PROBLEM_POINTS: f64 = 5.0;
/// Most the schema problems cost together.
pub const SCHEMA_MAX_POINTS: f64 = 10.0;
/// Most gaps cost (at one point per percent of the test's time).
pub const GAP_MAX_POINTS: f64 = 20.0;

/// The primary metadata every test must have (the daemon refuses a start without them).
pub const PRIMARY_KEYS: [&str; 6] = [
    "cell_id",
    "operator",
    "owner",
    "objective",
    "chemistry",
    "nominal_capacity_ah",
];

/// Points the first finding of `check` costs: what makes data wrong (readings out of range,
/// a frozen sensor, a wrong sign, broken accounting, time running back) weighs most, what
/// makes it thinner or suspicious less.
pub fn weight(check: Check) -> f64 {
    match check {
        Check::TimeNotIncreasing => 10.0,
        Check::TimeGap => 3.0,
        Check::VoltageRange => 10.0,
        Check::CurrentRange => 10.0,
        Check::TemperatureRange => 5.0,
        Check::VoltageStuck => 10.0,
        Check::CurrentSign => 10.0,
        Check::CurrentMagnitude => 5.0,
        Check::Accounting => 10.0,
        Check::TemperatureRate => 5.0,
    }
}

/// What a test's metadata has of what its lab asks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completeness {
    /// Primary keys missing or blank.
    pub primary_missing: Vec<String>,
    /// How many secondary keys the lab's secondary schema names (its `properties`).
    pub secondary_named: usize,
    /// Those the metadata lacks or has blank.
    pub secondary_missing: Vec<String>,
    /// How many places the metadata broke the lab's schemas.
    pub schema_problems: usize,
}

impl Completeness {
    /// Reads `metadata` (primary keys as they are, `secondary.KEY` ...) against the lab's
    /// schemas as stored, `(tier, document)`, and the problems found when it was registered.
    /// A schema that is not JSON names no keys.
    pub fn of<'a>(
        metadata: impl Fn(&str) -> Option<&'a str>,
        schemas: &[(String, String)],
        schema_problems: usize,
    ) -> Completeness {
        let present = |k: &str| metadata(k).is_some_and(|v| !v.trim().is_empty());
        let primary_missing = PRIMARY_KEYS
            .iter()
            .filter(|k| !present(k))
            .map(|k| k.to_string())
            .collect();
        let named: Vec<String> = schemas
            .iter()
            .filter(|(tier, _)| tier == "secondary")
            .filter_map(|(_, doc)| serde_json::from_str::<Value>(doc).ok())
            .flat_map(|doc| match doc.get("properties") {
                Some(Value::Object(props)) => props.keys().cloned().collect(),
                _ => Vec::new(),
            })
            .collect();
        let secondary_missing = named
            .iter()
            .filter(|k| !present(&format!("secondary.{k}")))
            .cloned()
            .collect();
        Completeness {
            primary_missing,
            secondary_named: named.len(),
            secondary_missing,
            schema_problems,
        }
    }

    /// [`Completeness::of`] a string map.
    pub fn of_map(
        metadata: &HashMap<String, String>,
        schemas: &[(String, String)],
        schema_problems: usize,
    ) -> Completeness {
        Completeness::of(
            |k| metadata.get(k).map(String::as_str),
            schemas,
            schema_problems,
        )
    }
}

/// A test's findings as the grade counts them: per check the number of findings and the
/// missing time, of the source (daemon, hub) that found more, so that a finding both sources
/// made counts once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Per source, per check: findings and missing seconds.
    by_source: BTreeMap<String, BTreeMap<Check, (u32, f64)>>,
}

impl Tally {
    /// Counts one finding of `check` by `source` covering `missing_s` seconds without a sample.
    pub fn add(&mut self, source: &str, check: Check, missing_s: f64) {
        self.add_counted(source, check, 1, missing_s);
    }

    /// Counts `count` findings of `check` by `source` covering `missing_s` seconds without a
    /// sample together.
    pub fn add_counted(&mut self, source: &str, check: Check, count: u32, missing_s: f64) {
        let entry = self
            .by_source
            .entry(source.to_string())
            .or_default()
            .entry(check)
            .or_default();
        entry.0 = entry.0.saturating_add(count);
        if missing_s.is_finite() && missing_s > 0.0 {
            entry.1 += missing_s;
        }
    }

    /// Findings of `check`: the most any source made.
    pub fn count(&self, check: Check) -> u32 {
        self.by_source
            .values()
            .filter_map(|m| m.get(&check))
            .map(|(n, _)| *n)
            .max()
            .unwrap_or(0)
    }

    /// Seconds without a sample: the most any source found.
    pub fn missing_s(&self) -> f64 {
        self.by_source
            .values()
            .map(|m| m.values().map(|(_, s)| s).sum::<f64>())
            .fold(0.0, f64::max)
    }
}

/// A test's grade.
#[derive(Debug, Clone, PartialEq)]
pub struct Grade {
    /// 0 to 100; 100 is a complete record without findings.
    pub score: u32,
    /// `A` (from 90) to `E` (below 40).
    pub letter: char,
    /// Each deduction, in words with its points; one sentence saying so when there is none.
    pub reasons: Vec<String>,
}

/// The letter of a score.
pub fn letter(score: u32) -> char {
    match score {
        90.. => 'A',
        75..=89 => 'B',
        60..=74 => 'C',
        40..=59 => 'D',
        _ => 'E',
    }
}

/// Reads a letter given as a minimum (`--min-grade B`): A to E, either case.
pub fn parse_letter(text: &str) -> Result<char, String> {
    match text.trim().to_ascii_uppercase().as_str() {
        l @ ("A" | "B" | "C" | "D" | "E") => Ok(l.chars().next().unwrap_or('E')),
        _ => Err(format!("{text:?} is not a grade; grades are A (best) to E")),
    }
}

impl Grade {
    /// Whether the grade is `min` or better.
    pub fn at_least(&self, min: char) -> bool {
        self.letter <= min.to_ascii_uppercase()
    }
}

/// The grade of a test with metadata `m`, findings `tally`, whose samples span `duration_s`
/// of test time.
pub fn grade(m: &Completeness, tally: &Tally, duration_s: f64) -> Grade {
    let mut reasons = Vec::new();
    let mut lost = 0.0;
    let mut deduct = |points: f64, why: String| {
        if points > 0.0 {
            lost += points;
            reasons.push(format!("{why} (-{})", round1(points)));
        }
    };
    if !m.primary_missing.is_empty() {
        deduct(
            (m.primary_missing.len() as f64 * PRIMARY_KEY_POINTS).min(PRIMARY_MAX_POINTS),
            format!("primary metadata missing: {}", m.primary_missing.join(", ")),
        );
    }
    if m.secondary_named > 0 && !m.secondary_missing.is_empty() {
        let share = m.secondary_missing.len() as f64 / m.secondary_named as f64;
        deduct(
            share.min(1.0) * SECONDARY_MAX_POINTS,
            format!(
                "secondary metadata the lab's schema names missing: {}",
                m.secondary_missing.join(", ")
            ),
        );
    }
    if m.schema_problems > 0 {
        deduct(
            (m.schema_problems as f64 * SCHEMA_PROBLEM_POINTS).min(SCHEMA_MAX_POINTS),
            format!(
                "{} metadata problem(s) under the lab's schemas",
                m.schema_problems
            ),
        );
    }
    for check in super::CHECKS {
        let n = tally.count(check);
        if n > 0 {
            let w = weight(check);
            let points = w + w * 0.5 * f64::from(n.min(3) - 1);
            deduct(points, format!("{n} {} finding(s)", check.name()));
        }
    }
    let missing = tally.missing_s();
    if missing > 0.0 {
        let share = if duration_s.is_finite() && duration_s > 0.0 {
            (missing / duration_s).min(1.0)
        } else {
            1.0
        };
        deduct(
            (share * 100.0).min(GAP_MAX_POINTS),
            format!(
                "{} s of the test without samples ({} %)",
                round1(missing),
                round1(share * 100.0)
            ),
        );
    }
    let score = (100.0 - lost).clamp(0.0, 100.0).round() as u32;
    if reasons.is_empty() {
        reasons.push("metadata complete and no quality findings".into());
    }
    Grade {
        score,
        letter: letter(score),
        reasons,
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete() -> Completeness {
        Completeness::default()
    }

    #[test]
    fn a_complete_test_without_findings_is_an_a_with_a_reason_saying_so() {
        let g = grade(&complete(), &Tally::default(), 3600.0);
        assert_eq!((g.score, g.letter), (100, 'A'));
        assert_eq!(g.reasons, ["metadata complete and no quality findings"]);
    }

    #[test]
    fn a_stuck_sensor_and_a_sign_error_make_a_b_naming_both() {
        let mut t = Tally::default();
        t.add("daemon", Check::VoltageStuck, 0.0);
        t.add("daemon", Check::CurrentSign, 0.0);
        // The hub found the same: counted once.
        t.add("hub", Check::VoltageStuck, 0.0);
        let g = grade(&complete(), &t, 3600.0);
        assert_eq!((g.score, g.letter), (80, 'B'));
        assert_eq!(
            g.reasons,
            [
                "1 voltage_stuck finding(s) (-10)",
                "1 current_sign finding(s) (-10)"
            ]
        );
    }

    #[test]
    fn missing_metadata_and_gaps_are_deducted_by_their_share() {
        let schemas = vec![(
            "secondary".to_string(),
            r#"{"properties": {"manufacturer": {}, "model": {}}}"#.to_string(),
        )];
        let mut meta = HashMap::new();
        for k in PRIMARY_KEYS.iter().skip(1) {
            meta.insert(k.to_string(), "x".to_string());
        }
        meta.insert("secondary.model".into(), "18650".into());
        let m = Completeness::of_map(&meta, &schemas, 0);
        assert_eq!(m.primary_missing, ["cell_id"]);
        assert_eq!(m.secondary_missing, ["manufacturer"]);
        let mut t = Tally::default();
        t.add("hub", Check::TimeGap, 360.0);
        // -10 primary, -5 secondary, -3 gap finding, -10 for 10 % of the time without samples.
        let g = grade(&m, &t, 3600.0);
        assert_eq!((g.score, g.letter), (72, 'C'), "{:?}", g.reasons);
        assert!(g.reasons.iter().any(|r| r.contains("360 s of the test")));
    }

    #[test]
    fn letters_read_either_case_and_compare_best_first() {
        assert_eq!(parse_letter("b"), Ok('B'));
        assert!(parse_letter("F").unwrap_err().contains("A (best) to E"));
        let g = grade(&complete(), &Tally::default(), 1.0);
        assert!(g.at_least('B') && g.at_least('A'));
        assert_eq!(letter(74), 'C');
        assert_eq!(letter(39), 'E');
    }

    fn any_check() -> impl Strategy<Value = Check> {
        (0..super::super::CHECKS.len()).prop_map(|i| super::super::CHECKS[i])
    }

    proptest! {
        /// Whatever the findings: a score in 0..=100, and one more finding never raises it.
        #[test]
        fn the_score_stays_within_0_to_100_and_a_finding_never_raises_it(
            findings in proptest::collection::vec(
                (prop_oneof![Just("daemon"), Just("hub")], any_check(), 0.0..1e6f64),
                0..40,
            ),
            extra in (prop_oneof![Just("daemon"), Just("hub")], any_check(), 0.0..1e6f64),
            primary_missing in 0usize..7,
            duration in prop_oneof![Just(0.0), 1.0..1e7f64],
        ) {
            let m = Completeness {
                primary_missing: PRIMARY_KEYS[..primary_missing.min(6)]
                    .iter()
                    .map(|k| k.to_string())
                    .collect(),
                ..Completeness::default()
            };
            let mut t = Tally::default();
            for (source, check, missing) in &findings {
                t.add(source, *check, *missing);
            }
            let before = grade(&m, &t, duration);
            prop_assert!(before.score <= 100);
            t.add(extra.0, extra.1, extra.2);
            let after = grade(&m, &t, duration);
            prop_assert!(after.score <= before.score, "{before:?} then {after:?}");
        }
    }
}
