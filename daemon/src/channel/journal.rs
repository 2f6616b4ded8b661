//! A test's journal: the only code that builds a test's outbox entries and checkpoints.
//!
//! Every test, stepped or native, is recorded the same way: a `TestRegistered` with the Begin
//! checkpoint; events; columnar sample batches, each with the Progress checkpoint that accounts
//! for exactly its samples (same transaction, so a restart resumes after the last committed
//! sample); and a `TestEnded` with the End checkpoint that retires it, unless the daemon stops
//! under the test: then an event with a last checkpoint, and no end. The runners say what
//! happened; the journal says how it is written, and moves the channel's live state between
//! running and ended with it.

use super::quality::Quality;
use super::{ChannelSpec, Ending, Live, Shared, TestRequest};
use crate::outbox::{Checkpoint, CheckpointOp, Outbox, Progress};
use crate::proto::control::ChannelSnapshot;
use crate::proto::cycles::{CycleTracker, Point};
use crate::proto::ingest::{
    CycleSummary, Event, SampleBatch, TestEnded, TestRegistered, entry::Body,
};
use cyclerd_drivers::Clock;
use cyclerd_protocols::Plan;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Samples per outbox entry before a batch is sent regardless of its age.
pub const BATCH_SAMPLES: usize = 2048;

/// Step and cycle an event or a sample belongs to.
pub type Place = (u32, u32);

/// What a runner needs to continue its test after the samples stored so far: its own state
/// (the engine's checkpoint, a cycler's follow state) and the test time it left out.
pub struct RunnerState {
    pub json: String,
    pub paused_s: f64,
}

/// One test's record in the outbox.
pub struct TestJournal {
    outbox: Outbox,
    /// The daemon's clock, for the time of an end that no sample dates.
    clock: Clock,
    /// Every sample read since the daemon started, counted as it is pushed.
    acquired: Arc<AtomicU64>,
    /// The channel, for messages.
    channel_id: String,
    test_id: String,
    /// The cell under test (its `cell_id` metadata), for the live view.
    cell_id: String,
    /// Unix time (of the clock) at which the test started; test time counts from it.
    start_unix_s: f64,
    batch: Batch,
    /// The test's cycles so far, from its samples; checkpointed with them.
    cycles: CycleTracker,
    /// Cycle summaries the last samples settled, sent before the batch that holds them.
    settled: Vec<CycleSummary>,
    /// The plausibility checks over the test's samples.
    quality: Quality,
    /// The checks' state from the checkpoint a reopened journal goes on from, until
    /// [`TestJournal::check_with`] takes it up.
    quality_json: String,
}

impl TestJournal {
    /// Registers a new test on the channel `spec` describes, started at `start_unix_s`, with the
    /// runner's first `state`; the channel shows it running from `place`.
    pub fn register(
        shared: &Shared,
        spec: &ChannelSpec,
        live: &Live,
        (test_id, start_unix_s): (String, f64),
        test: TestRequest,
        state: RunnerState,
        (place, description): (Place, String),
    ) -> TestJournal {
        let journal = TestJournal {
            outbox: shared.outbox.clone(),
            clock: shared.clock.clone(),
            acquired: Arc::clone(&shared.acquired),
            channel_id: spec.id.clone(),
            test_id: test_id.clone(),
            cell_id: test.metadata.get("cell_id").cloned().unwrap_or_default(),
            start_unix_s,
            batch: Batch::new(&test_id, 0),
            cycles: CycleTracker::default(),
            settled: Vec::new(),
            quality: Quality::new(shared, Some(&test.plan)),
            quality_json: String::new(),
        };
        let checkpoint = Checkpoint {
            test_id: test_id.clone(),
            channel_id: spec.id.clone(),
            protocol_source: test.source.clone(),
            origin: test.origin,
            metadata: test.metadata.clone(),
            params: test.plan.params.clone(),
            start_unix_s,
            progress: journal.progress(state, 0.0),
        };
        journal.append(
            Body::TestRegistered(TestRegistered {
                test_id: test_id.clone(),
                channel_id: spec.id.clone(),
                metadata: test.metadata,
                protocol_name: test.plan.name.clone(),
                plan_json: test.plan.to_json(),
                protocol_source: test.source,
                start_unix_s,
                equipment: spec.equipment.clone(),
            }),
            Some(CheckpointOp::Begin(Box::new(checkpoint))),
        );
        for note in test.notes {
            journal.event(0.0, "info", note, place);
        }
        journal.show_running(live, test.plan.name, (place, description));
        journal
    }

    /// Shows the test running on the channel: its protocol (`protocol_name`), where it is
    /// (`place`, described), and how many samples it has; at a start and when a runner takes an
    /// interrupted test up again.
    pub fn show_running(
        &self,
        live: &Live,
        protocol_name: String,
        (place, description): (Place, String),
    ) {
        live.send_modify(|s| {
            s.state = "running".into();
            s.test_id.clone_from(&self.test_id);
            s.cell_id.clone_from(&self.cell_id);
            s.protocol_name = protocol_name;
            s.reason.clear();
            s.samples = self.batch.next_seq;
            (s.step, s.cycle) = place;
            s.step_description = description;
            // Until the first reading: nothing of the previous test's numbers.
            s.test_time_s = 0.0;
            s.current_a = 0.0;
            s.charge_capacity_ah = 0.0;
            s.discharge_capacity_ah = 0.0;
            self.show_cycles(s, place, (0.0, 0.0));
            self.show_quality(s);
        });
    }

    /// Shows the test's quality findings so far (what was sent, runs going on included).
    fn show_quality(&self, s: &mut ChannelSnapshot) {
        self.quality.show(s);
    }

    /// Shows the test's throughput in `snapshot` for a reading in `place` with the cumulative
    /// charge and discharge capacity (Ah) of the test `total`: the test's, the step's and the
    /// cycle's so far, and the last full cycle's discharge capacity and coulombic efficiency.
    pub fn show_throughput(&self, snapshot: &mut ChannelSnapshot, place: Place, total: (f64, f64)) {
        (snapshot.charge_capacity_ah, snapshot.discharge_capacity_ah) = total;
        self.show_cycles(snapshot, place, total);
        self.show_quality(snapshot);
    }

    fn show_cycles(
        &self,
        s: &mut ChannelSnapshot,
        (step, cycle): Place,
        (charge, discharge): (f64, f64),
    ) {
        let so_far = self.cycles.so_far(cycle, step, charge, discharge);
        s.step_charge_ah = so_far.step_charge_ah;
        s.step_discharge_ah = so_far.step_discharge_ah;
        s.cycle_charge_ah = so_far.cycle_charge_ah;
        s.cycle_discharge_ah = so_far.cycle_discharge_ah;
        show_last_full(s, self.cycles.last_full(&self.test_id));
    }

    /// Takes up the test of checkpoint `cp` again, after its last committed sample.
    pub fn reopen(shared: &Shared, cp: &Checkpoint) -> TestJournal {
        TestJournal {
            outbox: shared.outbox.clone(),
            clock: shared.clock.clone(),
            acquired: Arc::clone(&shared.acquired),
            channel_id: cp.channel_id.clone(),
            test_id: cp.test_id.clone(),
            cell_id: cp.metadata.get("cell_id").cloned().unwrap_or_default(),
            start_unix_s: cp.start_unix_s,
            batch: Batch::new(&cp.test_id, cp.progress.next_seq),
            // A checkpoint from before cycles were tracked starts a tracker at the next sample.
            cycles: serde_json::from_str(&cp.progress.cycles_json).unwrap_or_default(),
            settled: Vec::new(),
            // Checks go on from the checkpoint once the plan is known (`check_with`).
            quality: Quality::new(shared, None),
            quality_json: cp.progress.quality_json.clone(),
        }
    }

    /// Checks the samples from now on with the thresholds and step directions of `plan`: for a
    /// test taken up again ([`TestJournal::reopen`]) once its plan is known.
    pub fn check_with(&mut self, shared: &Shared, plan: &Plan) {
        let saved = std::mem::take(&mut self.quality_json);
        self.quality = Quality::resume(shared, plan, &saved);
    }

    pub fn test_id(&self) -> &str {
        &self.test_id
    }

    pub fn start_unix_s(&self) -> f64 {
        self.start_unix_s
    }

    /// Samples recorded so far (the sequence number the next one gets).
    pub fn samples(&self) -> u64 {
        self.batch.next_seq
    }

    /// An event at `test_time_s` in `place`.
    pub fn event(&self, test_time_s: f64, kind: &str, message: String, place: Place) {
        let body = self.event_body(test_time_s, kind, message, place);
        self.append(body, None);
    }

    /// An event that also checkpoints the runner's `state` as of `test_time_s` (a step that
    /// began, a test resumed).
    pub fn checkpointed_event(
        &self,
        test_time_s: f64,
        (kind, message): (&str, String),
        place: Place,
        state: RunnerState,
    ) {
        let body = self.event_body(test_time_s, kind, message, place);
        let checkpoint = CheckpointOp::Progress {
            test_id: self.test_id.clone(),
            progress: self.progress(state, test_time_s),
        };
        self.append(body, Some(checkpoint));
    }

    /// Adds a sample to the batch (and to the daemon's count of samples acquired).
    pub fn push(&mut self, sample: Sample) {
        self.acquired.fetch_add(1, Ordering::Relaxed);
        let point = Point {
            seq: self.batch.next_seq,
            test_time_s: sample.test_time_s,
            voltage_v: sample.voltage_v,
            current_a: sample.current_a,
            cycle: sample.cycle,
            step: sample.step,
            charge_capacity_ah: sample.charge_ah,
            discharge_capacity_ah: sample.discharge_ah,
            charge_energy_wh: sample.charge_wh,
            discharge_energy_wh: sample.discharge_wh,
            temperature_c: sample.temperature_c,
        };
        let settled = self.cycles.observe(&self.test_id, &point);
        self.settled.extend(settled);
        self.quality.observe(&point, sample.plan_step);
        self.batch.push(sample);
    }

    /// The batch holds as many samples as one entry takes.
    pub fn is_full(&self) -> bool {
        self.batch.len() >= BATCH_SAMPLES
    }

    /// The batch is full, or a commit slot began since its oldest sample (so it waited at most
    /// `commit_interval`). Slots are the same for every channel of the daemon: their batches
    /// fall due together and meet in one commit.
    pub fn is_due(&self, commit_interval: Duration) -> bool {
        self.is_full()
            || commit_slot(self.batch.started, commit_interval)
                != commit_slot(Instant::now(), commit_interval)
    }

    /// Sends the batch, if it holds anything, with the runner's `state` as of its last sample:
    /// a checkpoint that accounts for exactly its samples.
    pub fn flush(&mut self, state: impl FnOnce() -> RunnerState) {
        // Before the samples: should the daemon stop between the two, the resumed tracker
        // settles the cycles again from the checkpoint, and the hub keeps the latest.
        self.send_settled();
        if let Some(body) = self.batch.take() {
            let last = body.test_time_s.last().copied().unwrap_or_default();
            let progress = self.progress(state(), last);
            let checkpoint = CheckpointOp::Progress {
                test_id: self.test_id.clone(),
                progress,
            };
            self.append(Body::Samples(body), Some(checkpoint));
            self.send_findings(false);
        }
    }

    /// Sends the findings of runs that ended, and the runs still open that grew since they were
    /// last sent (all of them closed, when the test `ends`). After the samples they are about,
    /// so a finding never names samples the outbox does not hold.
    fn send_findings(&mut self, ends: bool) {
        for f in self.quality.take_to_send(ends) {
            tracing::info!(channel = %self.channel_id, test_id = %self.test_id, open = f.open, "quality: {}", f.message());
            self.append(Body::Quality(f.to_entry(&self.test_id)), None);
        }
    }

    /// Records the end at `test_time_s` in `place` (the runner flushed its last samples): why,
    /// as an event, then the end marker that retires the checkpoint; the channel shows it. An
    /// [`Ending::Interrupted`] is no end: see [`TestJournal::interrupt`].
    pub fn end(self, live: &Live, test_time_s: f64, place: Place, ending: Ending) {
        if let Ending::Interrupted(reason) = &ending {
            return self.interrupted(live, (test_time_s, place), reason, None);
        }
        if !ending.reason().is_empty() {
            self.event(
                test_time_s,
                ending.event_kind(),
                ending.reason().into(),
                place,
            );
        }
        let reason = ending.reason().to_string();
        let outcome = ending.outcome();
        let unix_time_s = self.start_unix_s + test_time_s;
        // The cycle the test ends in is complete now: the last full one, if it is full.
        let last_full = (self.cycles.current(&self.test_id, true))
            .filter(CycleSummary::is_full)
            .or_else(|| self.cycles.last_full(&self.test_id));
        self.end_quietly(unix_time_s, ending);
        live.send_modify(|s| {
            s.state = outcome.into();
            s.reason = reason;
            s.current_a = 0.0;
            show_last_full(s, last_full);
        });
    }

    /// Leaves the test interrupted at `test_time_s` in `place` (the runner switched the output
    /// off and flushed its last samples): an event saying why that checkpoints the runner's
    /// `state` (nothing of its progress since the last sample is lost), and no end marker, so
    /// that the checkpoint stays and the next start takes the test up, as after a crash; the
    /// channel shows it.
    pub fn interrupt(
        self,
        live: &Live,
        (test_time_s, place): (f64, Place),
        reason: &str,
        state: RunnerState,
    ) {
        self.interrupted(live, (test_time_s, place), reason, Some(state));
    }

    fn interrupted(
        self,
        live: &Live,
        (test_time_s, place): (f64, Place),
        reason: &str,
        state: Option<RunnerState>,
    ) {
        tracing::warn!(channel = %self.channel_id, test_id = %self.test_id, "{reason}");
        match state {
            Some(state) => {
                self.checkpointed_event(test_time_s, ("state", reason.into()), place, state)
            }
            None => self.event(test_time_s, "state", reason.into(), place),
        }
        live.send_modify(|s| {
            s.state = "interrupted".into();
            s.reason = reason.into();
            s.current_a = 0.0;
        });
    }

    /// Ends a test that was interrupted and is not continued (nothing of it runs now): an
    /// interruption event saying why, then the end marker; the channel shows it.
    pub fn end_interrupted(self, live: &Live, ending: Ending) {
        tracing::warn!(channel = %self.channel_id, test_id = %self.test_id, "{}", ending.reason());
        let now = self.clock.unix_time_s();
        self.append(
            Body::Event(Event {
                test_id: self.test_id.clone(),
                unix_time_s: now,
                test_time_s: now - self.start_unix_s,
                kind: "interruption".into(),
                message: ending.reason().into(),
                ..Default::default()
            }),
            None,
        );
        let (outcome, reason) = (ending.outcome(), ending.reason().to_string());
        let test_id = self.test_id.clone();
        self.end_quietly(now, ending);
        live.send_modify(|s| {
            s.state = outcome.into();
            s.test_id = test_id;
            s.reason = reason;
            s.current_a = 0.0;
        });
    }

    /// The end marker alone, now: for a test the channel never took up again (its checkpoint
    /// is unreadable), so its live state is not the test's.
    pub fn end_unread(self, ending: Ending) {
        let now = self.clock.unix_time_s();
        self.end_quietly(now, ending);
    }

    fn send_settled(&mut self) {
        for summary in std::mem::take(&mut self.settled) {
            self.append(Body::Cycle(summary), None);
        }
    }

    fn end_quietly(mut self, unix_time_s: f64, ending: Ending) {
        // The last cycle ends with the test, and so do the runs of the quality checks.
        self.send_settled();
        self.send_findings(true);
        if let Some(last) = self.cycles.current(&self.test_id, true) {
            self.append(Body::Cycle(last), None);
        }
        self.append(
            Body::TestEnded(TestEnded {
                test_id: self.test_id.clone(),
                unix_time_s,
                outcome: ending.outcome().into(),
                reason: ending.reason().into(),
                sample_count: self.batch.next_seq,
            }),
            Some(CheckpointOp::End {
                test_id: self.test_id.clone(),
            }),
        );
    }

    fn progress(&self, state: RunnerState, test_time_s: f64) -> Progress {
        Progress {
            engine_json: state.json,
            next_seq: self.batch.next_seq,
            test_time_s,
            unix_s: self.start_unix_s + test_time_s,
            paused_s: state.paused_s,
            cycles_json: serde_json::to_string(&self.cycles).unwrap_or_default(),
            quality_json: self.quality.to_json(),
        }
    }

    fn event_body(&self, test_time_s: f64, kind: &str, message: String, place: Place) -> Body {
        Body::Event(Event {
            test_id: self.test_id.clone(),
            unix_time_s: self.start_unix_s + test_time_s,
            test_time_s,
            kind: kind.into(),
            message,
            step: place.0,
            cycle: place.1,
        })
    }

    fn append(&self, body: Body, checkpoint: Option<CheckpointOp>) {
        if let Err(e) = self.outbox.append_with(body, checkpoint) {
            // Only happens when the writer thread is gone, i.e. the daemon is going down.
            tracing::error!(channel = %self.channel_id, "cannot queue to the outbox: {e}");
        }
    }
}

/// Shows `last` as the snapshot's last full cycle (none: no such cycle yet).
fn show_last_full(s: &mut ChannelSnapshot, last: Option<CycleSummary>) {
    let ce = last.as_ref().and_then(CycleSummary::coulombic_efficiency);
    s.last_full_cycle = last.as_ref().map_or(0, |c| c.cycle);
    s.last_full_discharge_ah = last.as_ref().map_or(f64::NAN, |c| c.discharge_capacity_ah);
    s.last_full_coulombic_efficiency = ce.unwrap_or(f64::NAN);
}

/// One sample as a runner assembles it.
pub struct Sample {
    pub test_time_s: f64,
    pub unix_time_s: f64,
    pub voltage_v: f64,
    pub current_a: f64,
    pub cycle: u32,
    /// Step count of the test (one more at every step change).
    pub step: u32,
    /// Index of the plan step the sample was taken in.
    pub plan_step: u32,
    pub charge_ah: f64,
    pub discharge_ah: f64,
    pub charge_wh: f64,
    pub discharge_wh: f64,
    pub temperature_c: Option<f64>,
    /// Air temperature of the chamber the cell is in, when it is in one.
    pub ambient_c: Option<f64>,
}

/// Pushes sample `n - 1`'s value of an optional column: the column stays empty until a sample
/// has a value, and is then as long as the others, with NaN in the gaps.
fn push_optional(column: &mut Vec<f64>, n: usize, value: Option<f64>) {
    match value {
        Some(v) => {
            column.resize(n - 1, f64::NAN);
            column.push(v);
        }
        None if !column.is_empty() => column.push(f64::NAN),
        None => {}
    }
}

/// The commit slot `at` falls in: wall time cut into `interval`s from one instant of the
/// process.
fn commit_slot(at: Instant, interval: Duration) -> u128 {
    static ANCHOR: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let anchor = *ANCHOR.get_or_init(Instant::now);
    at.saturating_duration_since(anchor).as_nanos() / interval.as_nanos().max(1)
}

/// Columns being filled; sent as one outbox entry.
struct Batch {
    columns: SampleBatch,
    /// Sequence number the next sample gets; contiguous per test from 0.
    next_seq: u64,
    /// When the oldest sample in the batch was taken (wall), to bound its wait.
    started: Instant,
}

impl Batch {
    fn new(test_id: &str, next_seq: u64) -> Batch {
        Batch {
            columns: Batch::empty(test_id, next_seq, 0),
            next_seq,
            started: Instant::now(),
        }
    }

    /// Empty columns with room for `expected` samples (what the batch before held: a live
    /// channel flushes a few samples at a time, and room for a full batch in every column of
    /// every channel would keep megabytes resident for nothing).
    fn empty(test_id: &str, first_seq: u64, expected: usize) -> SampleBatch {
        let expected = expected.min(BATCH_SAMPLES);
        let col = || Vec::with_capacity(expected);
        SampleBatch {
            test_id: test_id.into(),
            first_seq,
            test_time_s: col(),
            unix_time_s: col(),
            voltage_v: col(),
            current_a: col(),
            cycle: Vec::with_capacity(expected),
            step: Vec::with_capacity(expected),
            charge_capacity_ah: col(),
            discharge_capacity_ah: col(),
            charge_energy_wh: col(),
            discharge_energy_wh: col(),
            temperature_c: Vec::new(),
            ambient_temperature_c: Vec::new(),
            plan_step: Vec::with_capacity(expected),
        }
    }

    fn len(&self) -> usize {
        self.columns.voltage_v.len()
    }

    fn push(&mut self, s: Sample) {
        if self.len() == 0 {
            self.started = Instant::now();
        }
        let c = &mut self.columns;
        c.test_time_s.push(s.test_time_s);
        c.unix_time_s.push(s.unix_time_s);
        c.voltage_v.push(s.voltage_v);
        c.current_a.push(s.current_a);
        c.cycle.push(s.cycle);
        c.step.push(s.step);
        c.plan_step.push(s.plan_step);
        c.charge_capacity_ah.push(s.charge_ah);
        c.discharge_capacity_ah.push(s.discharge_ah);
        c.charge_energy_wh.push(s.charge_wh);
        c.discharge_energy_wh.push(s.discharge_wh);
        let n = c.voltage_v.len();
        push_optional(&mut c.temperature_c, n, s.temperature_c);
        push_optional(&mut c.ambient_temperature_c, n, s.ambient_c);
        self.next_seq += 1;
    }

    /// The filled columns, leaving empty ones that continue the sequence.
    fn take(&mut self) -> Option<SampleBatch> {
        if self.len() == 0 {
            return None;
        }
        let next = Batch::empty(&self.columns.test_id, self.next_seq, self.len());
        Some(std::mem::replace(&mut self.columns, next))
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
