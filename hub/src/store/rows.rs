//! The rows the hub's reads return, written once for both backends: the row types, the
//! conversions of their columns from SQL's signed integers, and a macro per row type from a
//! result row to the row (below).

use std::collections::BTreeMap;

use cyclerd_proto::ingest::Rejection;

use super::StoreError;

/// One test as listed by [`super::HubStore::list_tests`].
#[derive(Debug, Clone, PartialEq)]
pub struct TestRow {
    /// The daemon's UUIDv7 for the test: the id users pass to `export`.
    pub test_id: String,
    /// Which daemon ran it, to tell labs and benches apart.
    pub daemon_id: String,
    /// `DEVICE/N` channel the test ran on.
    pub channel_id: String,
    /// Name of the protocol, as the engineer called it.
    pub protocol_name: String,
    /// Primary metadata (cell id, operator, chemistry, ...), sorted by key.
    pub metadata: BTreeMap<String, String>,
    /// When the test started (Unix seconds).
    pub start_unix_s: f64,
    /// When it ended; `None` while the hub has not seen it end.
    pub end_unix_s: Option<f64>,
    /// `finished`, `stopped` or `faulted`; `None` while running.
    pub outcome: Option<String>,
    /// Why it ended, in words (e.g. the alarm that faulted it).
    pub reason: Option<String>,
    /// Samples the hub holds for the test.
    pub sample_count: u64,
    /// Samples the daemon said the test produced, once ended; compare with `sample_count`.
    pub expected_samples: Option<u64>,
    /// The team its metadata names (`team`), if any.
    pub team: Option<String>,
    /// Where its metadata did not follow its lab's schemas when it registered; empty when it
    /// did (or the lab has none).
    pub metadata_problems: Vec<String>,
    /// Where the test came from when another hub shared it with this one (`cyclerhub share`);
    /// `None` for a test of this hub's own daemons.
    pub shared_from: Option<super::SharedFrom>,
    /// Its grade as of the read (`cyclerd_proto::quality::grade`): from its metadata's
    /// completeness, its quality findings and gaps; `None` where the reader had none to give.
    pub grade: Option<cyclerd_proto::quality::grade::Grade>,
}

impl TestRow {
    /// `running` until the test ends, then its outcome.
    pub fn state(&self) -> &str {
        self.outcome.as_deref().unwrap_or("running")
    }
}

/// A team of a lab, as the hub first saw it in a test's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamRow {
    /// The lab of the daemon that ran the team's test.
    pub lab: String,
    /// The metadata's `team`.
    pub team: String,
    /// When the first test of the team the hub stored started (Unix seconds).
    pub first_test_unix_s: f64,
}

/// A lab's JSON Schema for one metadata tier.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRow {
    /// `secondary` or `tertiary`.
    pub tier: String,
    /// The schema document as registered.
    pub schema_json: String,
    /// When it was registered (Unix seconds): daemons show which version they checked against.
    pub updated_unix_s: f64,
}

/// One sample, in BDF units; current positive when charging.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// Sequence number, contiguous per test from 0: gaps mean missing data.
    pub seq: u64,
    /// Seconds since the test started.
    pub test_time_s: f64,
    /// Wall-clock time of the sample (Unix seconds).
    pub unix_time_s: f64,
    /// Cell voltage, V.
    pub voltage_v: f64,
    /// Current, A; positive = charging (BDF sign).
    pub current_a: f64,
    /// Cycle counter of the protocol.
    pub cycle: u32,
    /// Step counter of the protocol.
    pub step: u32,
    /// Cumulative charge capacity, Ah.
    pub charge_capacity_ah: f64,
    /// Cumulative discharge capacity, Ah.
    pub discharge_capacity_ah: f64,
    /// Cumulative charge energy, Wh.
    pub charge_energy_wh: f64,
    /// Cumulative discharge energy, Wh.
    pub discharge_energy_wh: f64,
    /// Cell (surface) temperature, °C; `None` when the channel has no sensor.
    pub temperature_c: Option<f64>,
    /// Air temperature of the chamber the cell sits in, °C; `None` outside a chamber.
    pub ambient_temperature_c: Option<f64>,
    /// Index of the plan step the sample was taken in (the same on every cycler); `None` for
    /// samples from daemons that did not send it.
    pub plan_step: Option<u32>,
}

/// One event of a test (step change, state change, alarm, info).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Wall-clock time (Unix seconds).
    pub unix_time_s: f64,
    /// Seconds since the test started.
    pub test_time_s: f64,
    /// `step`, `state`, `alarm` or `info`.
    pub kind: String,
    /// Human-readable text.
    pub message: String,
    /// Protocol step at the time.
    pub step: u32,
    /// Protocol cycle at the time.
    pub cycle: u32,
}

/// A quality finding of a test's samples (`cyclerd_proto::quality`): where a check held, and
/// why. The samples themselves are kept as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingRow {
    /// Who found it: `daemon` (as it recorded the samples) or `hub` (as it stored them).
    pub source: String,
    /// The check's name (`voltage_stuck`, `current_sign`, ...).
    pub check: String,
    /// The run's first and last sample.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The run still went on when it was last reported (the test runs).
    pub open: bool,
    /// Test time of the run's first and last sample.
    pub first_test_time_s: f64,
    pub last_test_time_s: f64,
    /// Test time without samples the run covers (gaps), s.
    pub missing_s: f64,
    /// Why, in words.
    pub reason: String,
}

/// One test's findings of one check by one source, counted: what a grade needs of them.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingTally {
    pub test_id: String,
    pub source: String,
    pub check: String,
    pub count: u64,
    pub missing_s: f64,
}

/// An entry the hub refused, as recorded in the `rejections` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionRow {
    /// Daemon that sent it.
    pub daemon_id: String,
    /// Store epoch the entry id belongs to.
    pub store_epoch: u64,
    /// The entry's id in the daemon's outbox, to find the parked copy there.
    pub entry_id: u64,
    /// Entry type (`test_registered`, `samples`, `event`, `test_ended`, `none`).
    pub kind: String,
    /// Test the entry was about, when it named one.
    pub test_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
}

/// What [`super::HubStore::apply_batch`] did; the server turns it into Rejections and one Ack.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// Highest entry id handled (applied, rejected or already held): the cumulative Ack to send
    /// (0 when none). The batch's last id unless an entry jumped ahead ([`Self::refused`]).
    pub up_to: u64,
    /// Entries applied now.
    pub applied: usize,
    /// Entries skipped because the hub had already handled them (id <= applied_up_to).
    pub duplicates: usize,
    /// Entries refused now; each is recorded and must be answered with a Rejection.
    pub rejections: Vec<Rejection>,
    /// Sample rows actually inserted (re-sent samples are not counted).
    pub samples_inserted: u64,
    /// Why the batch stopped before its end: an entry whose id jumps ahead of the store's
    /// sequence. Nothing from it on was looked at; the server acks `up_to` and ends the stream.
    pub refused: Option<String>,
}

/// A cell under test, as the hub knows it from the metadata of the tests that ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct CellRow {
    /// The lab whose tests ran the cell (empty for tests of a daemon not bound to a lab): each
    /// lab names its own cells, so two labs' `NMC-0042` are two cells.
    pub lab: String,
    /// The lab's identifier of the cell (primary metadata `cell_id`).
    pub cell_id: String,
    /// From secondary metadata (`secondary.manufacturer`, `.model`, `.form_factor`,
    /// `.nominal_voltage_v`) and primary (`chemistry`, `nominal_capacity_ah`); a later test
    /// fills what an earlier one left out, never overwrites.
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub chemistry: Option<String>,
    pub form_factor: Option<String>,
    pub nominal_capacity_ah: Option<f64>,
    pub nominal_voltage_v: Option<f64>,
    /// When the hub first saw a test of the cell start (Unix seconds).
    pub first_test_unix_s: f64,
}

/// A `tests` row before its metadata JSON is parsed (which can fail outside the database
/// driver).
pub(super) struct TestRowRaw {
    /// Everything but the metadata and its problems.
    pub(super) row: TestRow,
    /// The metadata as stored.
    pub(super) metadata_json: String,
    /// The metadata problems as stored (a JSON array), `None` when there are none.
    pub(super) problems_json: Option<String>,
}

impl TestRowRaw {
    pub(super) fn finish(mut self) -> Result<TestRow, StoreError> {
        let corrupt = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("{what} of test {}: {e}", self.row.test_id))
        };
        self.row.metadata = serde_json::from_str(&self.metadata_json)
            .map_err(|e| corrupt("metadata is not a JSON object of strings", e))?;
        if let Some(problems) = &self.problems_json {
            self.row.metadata_problems = serde_json::from_str(problems)
                .map_err(|e| corrupt("metadata problems are not a JSON array of strings", e))?;
        }
        Ok(self.row)
    }
}

/// Store epochs are opaque u64 tags, never compared: bit-cast to fit the databases' i64.
pub(super) fn epoch_to_sql(epoch: u64) -> i64 {
    i64::from_ne_bytes(epoch.to_ne_bytes())
}

pub(super) fn epoch_from_sql(epoch: i64) -> u64 {
    u64::from_ne_bytes(epoch.to_ne_bytes())
}

/// Counters are non-negative in the database; a negative one would be our own corruption.
pub(super) fn u64_from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn u32_from_sql(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

// From a result row to each row type: `$r.$get(i)` reads column `i` (`get` on a rusqlite row,
// `try_get` on a postgres one), and `?` turns either library's error into the caller's. The
// column order is the one the queries select.

macro_rules! test_row_raw {
    ($r:ident . $get:ident) => {
        TestRowRaw {
            row: TestRow {
                test_id: $r.$get(0)?,
                daemon_id: $r.$get(1)?,
                channel_id: $r.$get(2)?,
                protocol_name: $r.$get(3)?,
                metadata: Default::default(),
                start_unix_s: $r.$get(5)?,
                end_unix_s: $r.$get(6)?,
                outcome: $r.$get(7)?,
                reason: $r.$get(8)?,
                sample_count: u64_from_sql($r.$get(9)?),
                expected_samples: $r.$get::<_, Option<i64>>(10)?.map(u64_from_sql),
                team: $r.$get(11)?,
                metadata_problems: Vec::new(),
                shared_from: None,
                grade: None,
            },
            metadata_json: $r.$get(4)?,
            problems_json: $r.$get(12)?,
        }
    };
}

macro_rules! sample_row {
    ($r:ident . $get:ident) => {
        SampleRow {
            seq: u64_from_sql($r.$get(0)?),
            test_time_s: $r.$get(1)?,
            unix_time_s: $r.$get(2)?,
            voltage_v: $r.$get(3)?,
            current_a: $r.$get(4)?,
            cycle: u32_from_sql($r.$get(5)?),
            step: u32_from_sql($r.$get(6)?),
            charge_capacity_ah: $r.$get(7)?,
            discharge_capacity_ah: $r.$get(8)?,
            charge_energy_wh: $r.$get(9)?,
            discharge_energy_wh: $r.$get(10)?,
            temperature_c: $r.$get(11)?,
            ambient_temperature_c: $r.$get(12)?,
            plan_step: $r.$get::<_, Option<i64>>(13)?.map(u32_from_sql),
        }
    };
}

macro_rules! event_row {
    ($r:ident . $get:ident) => {
        EventRow {
            unix_time_s: $r.$get(0)?,
            test_time_s: $r.$get(1)?,
            kind: $r.$get(2)?,
            message: $r.$get(3)?,
            step: u32_from_sql($r.$get(4)?),
            cycle: u32_from_sql($r.$get(5)?),
        }
    };
}

macro_rules! cycle_row {
    ($test_id:expr, $r:ident . $get:ident) => {
        cyclerd_proto::ingest::CycleSummary {
            test_id: $test_id.to_owned(),
            cycle: u32_from_sql($r.$get(0)?),
            complete: $r.$get::<_, i64>(1)? != 0,
            start_test_time_s: $r.$get(2)?,
            end_test_time_s: $r.$get(3)?,
            charge_capacity_ah: $r.$get(4)?,
            discharge_capacity_ah: $r.$get(5)?,
            charge_energy_wh: $r.$get(6)?,
            discharge_energy_wh: $r.$get(7)?,
            max_temperature_c: $r.$get::<_, Option<f64>>(8)?.unwrap_or(f64::NAN),
            dcir_ohm: $r.$get::<_, Option<f64>>(9)?.unwrap_or(f64::NAN),
            first_seq: u64_from_sql($r.$get(10)?),
            last_seq: u64_from_sql($r.$get(11)?),
        }
    };
}

macro_rules! finding_row {
    ($r:ident . $get:ident) => {
        $crate::store::FindingRow {
            source: $r.$get(0)?,
            check: $r.$get(1)?,
            first_seq: u64_from_sql($r.$get(2)?),
            last_seq: u64_from_sql($r.$get(3)?),
            open: $r.$get::<_, i64>(4)? != 0,
            first_test_time_s: $r.$get(5)?,
            last_test_time_s: $r.$get(6)?,
            missing_s: $r.$get(7)?,
            reason: $r.$get(8)?,
        }
    };
}

macro_rules! finding_tally {
    ($r:ident . $get:ident) => {
        $crate::store::FindingTally {
            test_id: $r.$get(0)?,
            source: $r.$get(1)?,
            check: $r.$get(2)?,
            count: u64_from_sql($r.$get(3)?),
            missing_s: $r.$get::<_, Option<f64>>(4)?.unwrap_or(0.0),
        }
    };
}

macro_rules! rejection_row {
    ($r:ident . $get:ident) => {
        RejectionRow {
            daemon_id: $r.$get(0)?,
            store_epoch: epoch_from_sql($r.$get(1)?),
            entry_id: u64_from_sql($r.$get(2)?),
            kind: $r.$get(3)?,
            test_id: $r.$get(4)?,
            reason: $r.$get(5)?,
        }
    };
}

/// A token and its stored secret hash, as [`super::sql::TOKENS`] selects them.
macro_rules! token_row {
    ($r:ident . $get:ident) => {
        (
            TokenRow {
                token_id: $r.$get(0)?,
                lab: $r.$get(1)?,
                name: $r.$get(2)?,
                created_unix_s: $r.$get(3)?,
                revoked_unix_s: $r.$get(4)?,
                role: crate::token::Role::from_stored(&$r.$get::<_, String>(6)?),
            },
            $r.$get(5)?,
        )
    };
}

/// As [`super::sql::CELLS`] selects it.
macro_rules! cell_row {
    ($r:ident . $get:ident) => {
        CellRow {
            cell_id: $r.$get(0)?,
            manufacturer: $r.$get(1)?,
            model: $r.$get(2)?,
            chemistry: $r.$get(3)?,
            form_factor: $r.$get(4)?,
            nominal_capacity_ah: $r.$get(5)?,
            nominal_voltage_v: $r.$get(6)?,
            first_test_unix_s: $r.$get(7)?,
            lab: $r.$get(8)?,
        }
    };
}

/// As [`super::sql::TEAMS`] selects it.
macro_rules! team_row {
    ($r:ident . $get:ident) => {
        TeamRow {
            lab: $r.$get(0)?,
            team: $r.$get(1)?,
            first_test_unix_s: $r.$get(2)?,
        }
    };
}

/// As [`super::sql::SCHEMAS`] selects it.
macro_rules! schema_row {
    ($r:ident . $get:ident) => {
        SchemaRow {
            tier: $r.$get(0)?,
            schema_json: $r.$get(1)?,
            updated_unix_s: $r.$get(2)?,
        }
    };
}

/// As [`super::sql::TEST_EQUIPMENT`] selects it.
macro_rules! equipment_row {
    ($r:ident . $get:ident) => {
        Equipment {
            name: $r.$get(0)?,
            family: $r.$get(1)?,
            address: $r.$get(2)?,
            role: $r.$get(3)?,
        }
    };
}
