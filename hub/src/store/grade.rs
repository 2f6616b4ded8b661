//! Grades on read (`cyclerd_proto::quality::grade`): from what the hub stores of a test as
//! it is read, so a running test's grade follows its findings.

use std::collections::HashMap;

use cyclerd_proto::quality::Check;
use cyclerd_proto::quality::grade::{Completeness, Tally, grade};

use super::{HubStore, StoreError, TestRow};

impl HubStore {
    /// Grades `rows`: their findings (one query for them all, or the test's own for one), the
    /// schemas of their labs, and for a test with gaps its duration.
    pub(super) fn grade_rows(&self, rows: &mut [TestRow]) -> Result<(), StoreError> {
        let mut tallies: HashMap<String, Tally> = HashMap::new();
        match rows {
            [] => return Ok(()),
            [one] => {
                let tally = tallies.entry(one.test_id.clone()).or_default();
                for f in self.quality_findings(&one.test_id)? {
                    if let Some(check) = Check::from_name(&f.check) {
                        tally.add(&f.source, check, f.missing_s);
                    }
                }
            }
            _ => {
                for t in self.finding_tallies()? {
                    if let Some(check) = Check::from_name(&t.check) {
                        let count = u32::try_from(t.count).unwrap_or(u32::MAX);
                        tallies.entry(t.test_id).or_default().add_counted(
                            &t.source,
                            check,
                            count,
                            t.missing_s,
                        );
                    }
                }
            }
        }
        let labs = self.daemon_labs()?;
        let mut schemas: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let none = Tally::default();
        for row in rows.iter_mut() {
            let lab = labs.get(&row.daemon_id).cloned().unwrap_or_default();
            if !schemas.contains_key(&lab) {
                let of_lab = if lab.is_empty() {
                    Vec::new()
                } else {
                    self.metadata_schemas(&lab)?
                        .into_iter()
                        .map(|s| (s.tier, s.schema_json))
                        .collect()
                };
                schemas.insert(lab.clone(), of_lab);
            }
            let completeness = Completeness::of(
                |k| row.metadata.get(k).map(String::as_str),
                &schemas[&lab],
                row.metadata_problems.len(),
            );
            let tally = tallies.get(&row.test_id).unwrap_or(&none);
            // Only gaps need the test's duration (an index read).
            let duration = if tally.missing_s() > 0.0 {
                self.last_test_time(&row.test_id)?.unwrap_or(0.0)
            } else {
                0.0
            };
            row.grade = Some(grade(&completeness, tally, duration));
        }
        Ok(())
    }
}
