//! A test read from a running hub for an export (`cyclerhub export --hub`): the same
//! [`Source`] the database gives, from `GetTest`, `ListCycles` and `ReadSamples`, so that the
//! export writers produce the same files byte for byte.

use cyclerd_proto::hub::{CycleRow, ListCyclesResponse, TestDetail};
use cyclerd_proto::ingest::SampleBatch;

use super::Remote;
use crate::cycles::Source as CycleSource;
use crate::export::{ExportError, Source};
use crate::query::{Columns, NO_PLAN_STEP};
use crate::store::{Equipment, EventRow, SampleRow, TestRow};

/// One test of a running hub, what it said of it kept for the export's later questions.
pub struct RemoteTest<'a> {
    /// The hub's query service.
    hub: &'a mut Remote,
    /// The test's full id.
    test_id: String,
    /// `GetTest`'s answer, asked once.
    detail: Option<TestDetail>,
    /// `ListCycles`' answer, asked once.
    cycles: Option<ListCyclesResponse>,
}

impl<'a> RemoteTest<'a> {
    /// The test `test_id` (a full id) of the hub `hub`; nothing is asked yet.
    pub fn new(hub: &'a mut Remote, test_id: &str) -> RemoteTest<'a> {
        RemoteTest {
            hub,
            test_id: test_id.to_owned(),
            detail: None,
            cycles: None,
        }
    }

    fn detail(&mut self) -> Result<&TestDetail, ExportError> {
        if self.detail.is_none() {
            let d = self
                .hub
                .get_test(&self.test_id)
                .map_err(ExportError::Remote)?;
            self.detail = Some(d);
        }
        Ok(self.detail.as_ref().expect("just asked"))
    }

    fn cycles(&mut self) -> Result<&ListCyclesResponse, ExportError> {
        if self.cycles.is_none() {
            let c = self
                .hub
                .list_cycles(&self.test_id)
                .map_err(ExportError::Remote)?;
            self.cycles = Some(c);
        }
        Ok(self.cycles.as_ref().expect("just asked"))
    }
}

impl Source for RemoteTest<'_> {
    fn test(&mut self) -> Result<TestRow, ExportError> {
        Ok(test_row(self.detail()?))
    }

    fn protocol(&mut self) -> Result<(String, String), ExportError> {
        let d = self.detail()?;
        Ok((d.protocol_source.clone(), d.plan_json.clone()))
    }

    fn events(&mut self) -> Result<Vec<EventRow>, ExportError> {
        Ok(self
            .detail()?
            .events
            .iter()
            .map(|e| EventRow {
                unix_time_s: e.unix_time_s,
                test_time_s: e.test_time_s,
                kind: e.kind.clone(),
                message: e.message.clone(),
                step: e.step,
                cycle: e.cycle,
            })
            .collect())
    }

    fn equipment(&mut self) -> Result<Vec<Equipment>, ExportError> {
        Ok(self.detail()?.equipment.clone())
    }

    fn temperatures(&mut self) -> Result<(bool, bool), ExportError> {
        let d = self.detail()?;
        Ok((d.has_cell_temperature, d.has_ambient_temperature))
    }

    fn cycle_rows(&mut self) -> Result<Vec<CycleRow>, ExportError> {
        Ok(self.cycles()?.cycles.clone())
    }

    fn daemon_cycle_rows(&mut self) -> Result<Vec<CycleRow>, ExportError> {
        let c = self.cycles()?;
        Ok(if c.source == CycleSource::Daemon.name() {
            c.cycles.clone()
        } else {
            Vec::new()
        })
    }

    fn for_each_sample(
        &mut self,
        f: &mut dyn FnMut(&SampleRow) -> Result<(), ExportError>,
    ) -> Result<u64, ExportError> {
        let cols = Columns::parse(&[])
            .map_err(|e| ExportError::Remote(anyhow::anyhow!(e)))?
            .with_plan_step();
        let mut count = 0u64;
        // The writers' error, kept: the stream's callback can only say "stop".
        let mut failed = None;
        let read = self
            .hub
            .read_samples_with(&self.test_id, &cols, (0.0, 0.0), true, |b| {
                let n = well_formed(b)?;
                for i in 0..n {
                    if let Err(e) = f(&sample_row(b, i)) {
                        failed = Some(e);
                        return Err(std::io::Error::other("the export failed"));
                    }
                    count += 1;
                }
                Ok(())
            });
        if let Some(e) = failed {
            return Err(e);
        }
        read.map_err(ExportError::Remote)?;
        Ok(count)
    }
}

/// The test's row as the database holds it, from what `GetTest` answers.
fn test_row(d: &TestDetail) -> TestRow {
    use cyclerd_proto::quality::grade::Grade;
    let s = d.summary.clone().unwrap_or_default();
    let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    TestRow {
        test_id: s.test_id,
        daemon_id: s.daemon_id,
        channel_id: s.channel_id,
        protocol_name: s.protocol_name,
        metadata: d.metadata.clone().into_iter().collect(),
        start_unix_s: s.start_unix_s,
        // The summary says 0 for "not ended".
        end_unix_s: (s.end_unix_s != 0.0).then_some(s.end_unix_s),
        outcome: (s.state != "running").then_some(s.state),
        reason: text(&d.reason),
        sample_count: s.sample_count,
        expected_samples: (d.expected_samples > 0).then_some(d.expected_samples),
        metadata_problems: d.metadata_problems.clone(),
        shared_from: s.shared_from.map(|f| crate::store::SharedFrom {
            hub: f.hub,
            share: f.share,
            anonymised: f.anonymised,
            selection: f.selection,
            since_unix_s: f.since_unix_s,
        }),
        grade: s.grade.chars().next().map(|letter| Grade {
            score: s.grade_score,
            letter,
            reasons: d.grade_reasons.clone(),
        }),
        team: text(&s.team),
    }
}

/// The number of samples in `b`, or an error when its columns disagree on it (a batch no
/// hub sends: reading it would index past a column's end).
fn well_formed(b: &SampleBatch) -> std::io::Result<usize> {
    cyclerd_proto::chunk::batch_len(b).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the hub sent a batch of samples from seq {} whose columns differ in length",
                b.first_seq
            ),
        )
    })
}

/// Sample `i` of batch `b` as the database reads it: a missing temperature (NaN, or no column)
/// as none, likewise a missing plan step.
fn sample_row(b: &SampleBatch, i: usize) -> SampleRow {
    let temperature = |v: &[f64]| v.get(i).copied().filter(|t| t.is_finite());
    SampleRow {
        seq: b.first_seq + i as u64,
        test_time_s: b.test_time_s[i],
        unix_time_s: b.unix_time_s[i],
        voltage_v: b.voltage_v[i],
        current_a: b.current_a[i],
        cycle: b.cycle[i],
        step: b.step[i],
        charge_capacity_ah: b.charge_capacity_ah[i],
        discharge_capacity_ah: b.discharge_capacity_ah[i],
        charge_energy_wh: b.charge_energy_wh[i],
        discharge_energy_wh: b.discharge_energy_wh[i],
        temperature_c: temperature(&b.temperature_c),
        ambient_temperature_c: temperature(&b.ambient_temperature_c),
        plan_step: b.plan_step.get(i).copied().filter(|p| *p != NO_PLAN_STEP),
    }
}
