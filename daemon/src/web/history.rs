//! What a channel's plots and cycle table start from: the points and finished cycles of its
//! running test, recorded from the channel's live snapshots while the monitor runs.
//!
//! The outbox deletes what the hub acknowledged, so the monitor keeps its own bounded copy:
//! at most [`MAX_POINTS`] points per channel (when full, every other point is dropped, so the
//! whole test stays drawn at half the density). A test that started before the monitor did
//! is drawn from when the monitor first saw it; the hub's app has every sample.

use crate::daemon::Daemon;
use crate::proto::control::ChannelSnapshot;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// Points kept per channel before the record is thinned to half: one or two per pixel column
/// of a wide plot. With the readings as `f32` (plenty for a plot) a channel's record takes
/// 40 kB, 64 channels 2.6 MB, from the test's start (see [`column`]).
pub const MAX_POINTS: usize = 2048;

/// One channel's running test as recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TestRecord {
    /// The test the points belong to; empty when the channel has run none yet.
    pub test_id: String,
    /// Test time (s) of each point.
    pub t: Vec<f64>,
    /// Cell voltage (V) at each point.
    pub v: Vec<f32>,
    /// Current (A, positive charging) at each point.
    pub i: Vec<f32>,
    /// Cell temperature (°C) at each point; NaN (null in JSON) without a sensor.
    pub temp: Vec<f32>,
    /// Each finished cycle with a charge and a discharge, in order.
    pub cycles: Vec<CycleRow>,
    /// The sample count of the last point, so a snapshot without a new sample adds none.
    #[serde(skip)]
    samples: u64,
}

/// One finished cycle, as the channel's snapshot reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CycleRow {
    /// The cycle number.
    pub cycle: u32,
    /// Its discharge capacity (Ah).
    pub discharge_ah: f64,
    /// Discharge over charge capacity (a fraction).
    pub coulombic_efficiency: f64,
}

impl TestRecord {
    /// Takes in a snapshot: a new test starts a new record, a new sample adds a point, a new
    /// finished cycle adds a row.
    fn observe(&mut self, s: &ChannelSnapshot) {
        if s.test_id.is_empty() {
            return;
        }
        if s.test_id != self.test_id {
            *self = TestRecord {
                test_id: s.test_id.clone(),
                t: column(f64::NAN),
                v: column(f32::NAN),
                i: column(f32::NAN),
                temp: column(f32::NAN),
                ..TestRecord::default()
            };
        }
        if s.samples > self.samples && s.voltage_v.is_finite() {
            self.samples = s.samples;
            self.t.push(s.test_time_s);
            self.v.push(s.voltage_v as f32);
            self.i.push(s.current_a as f32);
            self.temp.push(s.temperature_c as f32);
            if self.t.len() > MAX_POINTS {
                thin(&mut self.t);
                for column in [&mut self.v, &mut self.i, &mut self.temp] {
                    thin(column);
                }
            }
        }
        if s.last_full_cycle > 0
            && self
                .cycles
                .last()
                .is_none_or(|c| c.cycle < s.last_full_cycle)
        {
            self.cycles.push(CycleRow {
                cycle: s.last_full_cycle,
                discharge_ah: s.last_full_discharge_ah,
                coulombic_efficiency: s.last_full_coulombic_efficiency,
            });
        }
    }
}

/// An empty column with room for every point a record holds, its memory written once now: a
/// record never reallocates (growing by doubling would leave it twice the size it needs after
/// the first thinning) and the monitor's memory is as large in a test's first minute as after
/// a week, so a short measurement tells the long-run footprint.
fn column<T: Copy>(fill: T) -> Vec<T> {
    let mut c = vec![fill; MAX_POINTS + 1];
    c.clear();
    c
}

/// Drops every other point (the first stays).
fn thin<T>(column: &mut Vec<T>) {
    let mut k = 0;
    column.retain(|_| {
        k += 1;
        k % 2 == 1
    });
}

/// Every channel's record, kept up to date by one task per channel.
#[derive(Clone)]
pub struct History {
    /// Channel id to its running test's record.
    records: Arc<Mutex<HashMap<String, TestRecord>>>,
    /// The recording tasks, ended by [`History::stop`].
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl History {
    /// Starts recording every channel of `daemon`.
    pub fn record(daemon: &Daemon) -> History {
        let records: Arc<Mutex<HashMap<String, TestRecord>>> = Arc::default();
        let mut tasks = JoinSet::new();
        for mut rx in daemon.watchers() {
            let records = records.clone();
            tasks.spawn(async move {
                loop {
                    {
                        let s = rx.borrow_and_update();
                        if let Ok(mut records) = records.lock() {
                            records.entry(s.channel_id.clone()).or_default().observe(&s);
                        }
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        History {
            records,
            tasks: Arc::new(Mutex::new(tasks)),
        }
    }

    /// A copy of the record of `channel_id` (empty when it has run no test).
    pub fn of(&self, channel_id: &str) -> TestRecord {
        self.records
            .lock()
            .ok()
            .and_then(|r| r.get(channel_id).cloned())
            .unwrap_or_default()
    }

    /// Ends the recording.
    pub fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(test: &str, samples: u64, t: f64) -> ChannelSnapshot {
        ChannelSnapshot {
            channel_id: "psb1/1".into(),
            test_id: test.into(),
            samples,
            test_time_s: t,
            voltage_v: 3.7,
            ..ChannelSnapshot::default()
        }
    }

    #[test]
    fn a_records_memory_is_taken_at_its_tests_start_and_never_grows() {
        let mut r = TestRecord::default();
        r.observe(&snapshot("a", 1, 0.0));
        let capacity = [
            r.t.capacity(),
            r.v.capacity(),
            r.i.capacity(),
            r.temp.capacity(),
        ];
        assert_eq!(capacity, [MAX_POINTS + 1; 4]);
        for n in 2..=(3 * MAX_POINTS as u64) {
            r.observe(&snapshot("a", n, n as f64));
        }
        let after = [
            r.t.capacity(),
            r.v.capacity(),
            r.i.capacity(),
            r.temp.capacity(),
        ];
        assert_eq!(after, capacity);
    }

    #[test]
    fn a_point_per_new_sample_and_a_new_record_per_test() {
        let mut r = TestRecord::default();
        r.observe(&snapshot("a", 1, 0.0));
        r.observe(&snapshot("a", 1, 0.0));
        r.observe(&snapshot("a", 2, 1.0));
        assert_eq!(r.t, [0.0, 1.0]);
        r.observe(&snapshot("b", 1, 0.0));
        assert_eq!((r.test_id.as_str(), r.t.len()), ("b", 1));
    }

    #[test]
    fn a_full_record_is_thinned_to_half_and_keeps_the_whole_test() {
        let mut r = TestRecord::default();
        for n in 1..=(MAX_POINTS as u64 + 1) {
            r.observe(&snapshot("a", n, n as f64));
        }
        assert_eq!(r.t.len(), MAX_POINTS / 2 + 1);
        assert_eq!(r.t[0], 1.0);
        assert_eq!(*r.t.last().unwrap(), MAX_POINTS as f64 + 1.0);
    }

    #[test]
    fn each_finished_cycle_is_a_row_once() {
        let mut r = TestRecord::default();
        let mut s = snapshot("a", 1, 0.0);
        s.last_full_cycle = 1;
        s.last_full_discharge_ah = 2.4;
        s.last_full_coulombic_efficiency = 0.99;
        r.observe(&s);
        s.samples = 2;
        r.observe(&s);
        assert_eq!(r.cycles.len(), 1);
        assert_eq!(r.cycles[0].cycle, 1);
    }
}
