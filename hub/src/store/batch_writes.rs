//! The contract between what an ingest entry means (`ingest`, `samples`) and a backend: the
//! statements one batch runs in its transaction, and the records they write. Both the meaning
//! and the backends depend on it; it depends on neither.

use cyclerd_proto::ingest::{Event, TestEnded, TestRegistered};

use super::chunk::Encoded;
use super::{CellRow, Source, StoreError};

/// What the hub derives from a registration, stored with the test.
pub(super) struct Registration<'a> {
    /// The metadata, sorted by key, as JSON.
    pub(super) metadata_json: String,
    /// The team the metadata names.
    pub(super) team: Option<&'a str>,
    /// The metadata's problems under its lab's schemas, as a JSON array; `None` when none.
    pub(super) problems_json: Option<String>,
}

/// A validated cycle summary as the backends store it: integers that fit the columns, NULL
/// for a temperature or resistance the cycle has none of.
pub(super) struct CycleRecord {
    pub(super) cycle: i64,
    pub(super) complete: i64,
    pub(super) start_test_time_s: f64,
    pub(super) end_test_time_s: f64,
    pub(super) charge_capacity_ah: f64,
    pub(super) discharge_capacity_ah: f64,
    pub(super) charge_energy_wh: f64,
    pub(super) discharge_energy_wh: f64,
    pub(super) max_temperature_c: Option<f64>,
    pub(super) dcir_ohm: Option<f64>,
    pub(super) first_seq: i64,
    pub(super) last_seq: i64,
}

/// A validated quality finding as the backends store it.
pub(super) struct FindingRecord<'a> {
    /// Who found it: `daemon` (sent with the test) or `hub` (its own re-run).
    pub(super) source: &'static str,
    /// The check's name (`cyclerd_proto::quality::Check::name`).
    pub(super) check: &'a str,
    pub(super) first_seq: i64,
    pub(super) last_seq: i64,
    /// 1 while the run goes on.
    pub(super) open: i64,
    pub(super) first_test_time_s: f64,
    pub(super) last_test_time_s: f64,
    pub(super) missing_s: f64,
    pub(super) reason: &'a str,
}

/// One rejected entry, as the backends record it.
pub(super) struct RejectionRecord<'a> {
    /// The entry's id (checked to fit i64).
    pub(super) entry_id: i64,
    /// Entry type, from `ingest::body_kind`.
    pub(super) kind: &'static str,
    /// The test the entry named, NUL characters replaced so any database can store it.
    pub(super) test_id: Option<String>,
    /// Why it was refused.
    pub(super) reason: &'a str,
    /// The whole entry, encoded, so a person can look at exactly what was sent.
    pub(super) entry: Vec<u8>,
}

/// The statements one batch runs inside its transaction; each backend implements them with
/// conflict-ignoring inserts, so that every one of them is idempotent.
pub(super) trait BatchWrites {
    /// Creates the daemon store's row if Hello did not, and reads its resume point (the highest
    /// entry id applied) inside the transaction: another stream of the same store may have
    /// moved it. PostgreSQL also locks the row until commit.
    fn resume_point(&mut self, source: &Source<'_>) -> Result<u64, StoreError>;
    /// Moves the store's resume point forward to `up_to` (never back).
    fn set_applied(&mut self, source: &Source<'_>, up_to: i64) -> Result<(), StoreError>;
    /// `(test_key, owning daemon_id)` of a test, if the hub has it.
    fn test_owner(&mut self, test_id: &str) -> Result<Option<(i64, String)>, StoreError>;
    /// Inserts a test (ignored when its id exists).
    fn insert_test(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
        r: &Registration<'_>,
    ) -> Result<(), StoreError>;
    /// The lab the daemon is bound to, if any.
    fn daemon_lab(&mut self, daemon_id: &str) -> Result<Option<String>, StoreError>;
    /// The lab's metadata schemas as `(tier, document)`.
    fn lab_schemas(&mut self, lab: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Records that `team` of `lab` ran a test (the first time only).
    fn record_team(&mut self, lab: &str, team: &str, start_unix_s: f64) -> Result<(), StoreError>;
    /// Records the instruments of a test: the daemon's inventory and what the test used.
    fn record_equipment(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
    ) -> Result<(), StoreError>;
    /// Records the test's cell (merging what is known of it) and channel, and links the test
    /// to its cell.
    fn record_cell_and_channel(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
        cell: &CellRow,
    ) -> Result<(), StoreError>;
    /// `(first_seq, last_seq)` of the test's chunks that hold any seq in `[first, last]`, in
    /// seq order (chunks never overlap).
    fn held_chunks(
        &mut self,
        test_key: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError>;
    /// Inserts a chunk of samples from `first_seq` on and adds them to the test's
    /// `sample_count`; `false` (nothing changed) when the test has a chunk at `first_seq`.
    fn insert_chunk(
        &mut self,
        test_key: i64,
        first_seq: i64,
        c: &Encoded,
    ) -> Result<bool, StoreError>;
    /// `(first_seq, data)` of the test's chunk that ends at seq `last` if it holds at most
    /// `max_samples` samples.
    fn chunk_ending_at(
        &mut self,
        test_key: i64,
        last: i64,
        max_samples: i64,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Replaces the chunk at `first_seq` with `c` (the same first seq, `added` more samples)
    /// and adds those to the test's `sample_count`.
    fn replace_chunk(
        &mut self,
        test_key: i64,
        first_seq: i64,
        c: &Encoded,
        added: i64,
    ) -> Result<(), StoreError>;
    /// Stores the summary of the test's chunk at `first_seq` (`summary::Summary` bytes),
    /// replacing the one it had.
    fn set_summary(
        &mut self,
        test_key: i64,
        first_seq: i64,
        summary: &[u8],
    ) -> Result<(), StoreError>;
    /// Inserts an event keyed by the entry that carried it (ignored when present).
    fn insert_event(
        &mut self,
        test_key: i64,
        source: &Source<'_>,
        entry_id: i64,
        e: &Event,
    ) -> Result<(), StoreError>;
    /// Stores a cycle's summary (replacing an earlier one of the same cycle).
    fn upsert_cycle(&mut self, test_key: i64, c: &CycleRecord) -> Result<(), StoreError>;
    /// Stores a quality finding (replacing the open one of the same run).
    fn upsert_finding(&mut self, test_key: i64, f: &FindingRecord<'_>) -> Result<(), StoreError>;
    /// Marks every finding of the test closed (it ended).
    fn close_findings(&mut self, test_key: i64) -> Result<(), StoreError>;
    /// The hub's checker state of the test (JSON), if it has one.
    fn quality_state(&mut self, test_key: i64) -> Result<Option<String>, StoreError>;
    /// Stores the hub's checker state of the test; `None` forgets it (the test ended).
    fn set_quality_state(&mut self, test_key: i64, state: Option<&str>) -> Result<(), StoreError>;
    /// The plan the test ran, as JSON.
    fn test_plan(&mut self, test_key: i64) -> Result<String, StoreError>;
    /// Records the end of a test; returns the number of samples the hub holds for it.
    fn end_test(&mut self, test_key: i64, e: &TestEnded, expected: i64) -> Result<i64, StoreError>;
    /// Records a rejected entry (ignored when already recorded).
    fn insert_rejection(
        &mut self,
        source: &Source<'_>,
        r: &RejectionRecord<'_>,
    ) -> Result<(), StoreError>;
}
