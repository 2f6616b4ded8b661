//! The quality checks of a test as its journal runs them (`cyclerd_proto::quality`): every
//! sample is observed as it is recorded, with what its plan step commands; the journal sends
//! what was found after the batch that holds its samples, and the channel shows how many.

use super::Shared;
use crate::proto::control::ChannelSnapshot;
use crate::proto::cycles::Point;
use crate::proto::quality::{Check, Checker, Expected, Finding, Thresholds};
use cyclerd_protocols::Plan;
use serde::{Deserialize, Serialize};

/// One test's checks.
pub struct Quality {
    checker: Checker,
    /// What each plan step commands (by plan step index): the current's direction and
    /// constant current, whether it holds the voltage.
    expected: Vec<Expected>,
    /// Findings of runs that ended, not sent yet.
    ended: Vec<Finding>,
    /// `(check, first_seq, last_seq)` of the open runs as last sent, so that an open run is
    /// sent again only when it grew.
    sent_open: Vec<(Check, u64, u64)>,
    /// Runs that ended, sent: with the runs going on, what the channel shows.
    ended_count: u32,
    /// The latest finding sent, as one line, for the channel's view.
    last_message: String,
}

/// What a checkpoint keeps of a test's checks, so that a daemon restarted in a run (a stuck
/// voltage going on) reports it as one run, not two.
#[derive(Serialize, Deserialize)]
struct Saved {
    checker: Checker,
    /// Findings not sent yet: sent (again) after the restart; the hub keeps the latest.
    ended: Vec<Finding>,
    sent_open: Vec<(Check, u64, u64)>,
    ended_count: u32,
    last_message: String,
}

impl Quality {
    /// The checks' state as of the last sample observed, as JSON, for the test's checkpoint.
    pub fn to_json(&self) -> String {
        let saved = Saved {
            checker: self.checker.clone(),
            ended: self.ended.clone(),
            sent_open: self.sent_open.clone(),
            ended_count: self.ended_count,
            last_message: self.last_message.clone(),
        };
        serde_json::to_string(&saved).unwrap_or_default()
    }

    /// The checks of `plan`, going on from a checkpoint's `json` ([`Quality::to_json`]); from
    /// the next sample alone when there is none (a checkpoint from before) or it does not read.
    pub fn resume(shared: &Shared, plan: &Plan, json: &str) -> Quality {
        let mut q = Quality::new(shared, Some(plan));
        if let Ok(saved) = serde_json::from_str::<Saved>(json) {
            q.checker = saved
                .checker
                .with_thresholds(q.checker.thresholds().clone());
            q.ended = saved.ended;
            q.sent_open = saved.sent_open;
            q.ended_count = saved.ended_count;
            q.last_message = saved.last_message;
        }
        q
    }

    /// Checks with the thresholds of `shared`'s `[quality]` for `plan` (the protocol's
    /// override, if any), and what its steps command; without a plan, the lab's thresholds and
    /// no sign check.
    pub fn new(shared: &Shared, plan: Option<&Plan>) -> Quality {
        let thresholds: Thresholds = match plan {
            Some(plan) => shared.quality.for_name(&plan.name).clone(),
            None => shared.quality.base.clone(),
        };
        let expected = plan.map_or_else(Vec::new, |plan| {
            Expected::per_step(
                &plan.commanded_signs(),
                &plan.holds_voltage(),
                &plan.commanded_amps(),
            )
        });
        Quality {
            checker: Checker::new(thresholds),
            expected,
            ended: Vec::new(),
            sent_open: Vec::new(),
            ended_count: 0,
            last_message: String::new(),
        }
    }

    /// Checks the next sample, taken in plan step `plan_step`.
    pub fn observe(&mut self, point: &Point, plan_step: u32) {
        let expected = self
            .expected
            .get(plan_step as usize)
            .copied()
            .unwrap_or_default();
        let ended = self.checker.observe(point, expected);
        self.ended.extend(ended);
    }

    /// What to send now: the findings of runs that ended, and the runs still open that grew
    /// since they were last sent (all of them closed, when the test `ends`).
    pub fn take_to_send(&mut self, ends: bool) -> Vec<Finding> {
        let mut out = std::mem::take(&mut self.ended);
        if ends {
            out.extend(self.checker.finish());
        } else {
            let open = self.checker.open_findings();
            let sent = &self.sent_open;
            out.extend(
                open.iter()
                    .filter(|f| !sent.contains(&(f.check, f.first_seq, f.last_seq)))
                    .cloned(),
            );
            self.sent_open = open
                .iter()
                .map(|f| (f.check, f.first_seq, f.last_seq))
                .collect();
        }
        for f in &out {
            if !f.open {
                self.ended_count += 1;
            }
            self.last_message = f.message();
        }
        out
    }

    /// Shows the findings so far in the channel's snapshot.
    pub fn show(&self, s: &mut ChannelSnapshot) {
        let open = u32::try_from(self.checker.open_runs()).unwrap_or(u32::MAX);
        s.quality_findings = self.ended_count.saturating_add(open);
        s.last_quality_finding.clone_from(&self.last_message);
    }
}
