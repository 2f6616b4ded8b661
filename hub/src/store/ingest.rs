//! What every ingest entry means, written once for both backends: validation, ownership of
//! tests, the registration's derived records (cell, channel, team, instruments, metadata
//! problems under the lab's schemas), samples, events, the end of a test, rejections and the
//! resume point. The backends only run the statements, through [`BatchWrites`].
//!
//! Idempotence comes from the schema: samples are kept in chunks keyed by `(test_key,
//! first_seq)` and only seqs no chunk holds are stored (`samples`), events by the
//! entry that carried them `(daemon_id, store_epoch, entry_id)`, tests by `test_id`, and every
//! insert skips the rows already held. Re-applying any entry is therefore a no-op.

use std::collections::{BTreeMap, HashMap};

use cyclerd_proto::ingest::{
    CycleSummary, Entry, Event, QualityFinding, Rejection, SampleBatch, TestEnded, TestRegistered,
    entry::Body,
};
use cyclerd_proto::metadata::MAX_KEY_BYTES;
use cyclerd_proto::quality::config::Layered;
use prost::Message as _;

use super::batch_writes::{BatchWrites, CycleRecord, FindingRecord, Registration, RejectionRecord};
use super::samples::Ahead;
use super::{BatchOutcome, CellRow, Source, StoreError};

/// Why one entry did not apply: refused (answer with a Rejection) or storage failed (abort).
enum ApplyError {
    Reject(String),
    Store(StoreError),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

fn reject<T>(reason: impl Into<String>) -> Result<T, ApplyError> {
    Err(ApplyError::Reject(reason.into()))
}

/// Applies a batch through `w`, inside the batch's transaction (which the backend opens, and
/// commits after this returns `Ok`): the entries after the store's resume point, then the new
/// resume point, the last entry handled. Only a storage failure returns `Err`.
///
/// `encoded[i]`, when there is one, is the sample batch of `entries[i]` encoded ahead as one
/// chunk ([`super::samples::encode_ahead`]), used when the hub holds none of its seqs.
/// `quality`: the thresholds of the hub's own quality checks of the samples, by lab.
pub(super) fn apply_batch(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    entries: &[Entry],
    encoded: &[Option<Ahead>],
    quality: &Layered,
) -> Result<BatchOutcome, StoreError> {
    // Normally created by Hello; created here too so a batch can never be acked without its
    // resume point being stored.
    let applied = w.resume_point(source)?;
    let out = apply_entries(w, source, applied, (entries, encoded), quality)?;
    // Ids were checked to fit i64 before the transaction began.
    let up_to = i64::try_from(out.up_to).map_err(|_| StoreError::OutOfRange("entry id"))?;
    if out.up_to > applied {
        w.set_applied(source, up_to)?;
    }
    Ok(out)
}

/// Applies the entries of a batch after the resume point `applied`, through `w`, and stops at
/// an entry whose id jumps ahead of the sequence (more than its `skipped_before` says): the
/// resume point must never pass entries the hub did not store. Only a storage failure returns
/// `Err`.
fn apply_entries(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    applied: u64,
    (entries, encoded): (&[Entry], &[Option<Ahead>]),
    quality: &Layered,
) -> Result<BatchOutcome, StoreError> {
    let mut out = BatchOutcome::default();
    let mut previous = applied;
    for (i, entry) in entries.iter().enumerate() {
        // Handled before (or earlier in this batch, should ids not increase).
        if entry.id <= previous {
            out.duplicates += 1;
            out.up_to = out.up_to.max(entry.id);
            continue;
        }
        let allowed = previous
            .saturating_add(1)
            .saturating_add(entry.skipped_before);
        if entry.id > allowed {
            tracing::warn!(
                daemon_id = source.daemon_id,
                entry_id = entry.id,
                previous,
                skipped_before = entry.skipped_before,
                "refused an entry that jumps ahead of its daemon's sequence"
            );
            out.refused = Some(format!(
                "entry {} jumps ahead of this store's sequence: the hub holds everything up to \
                 {previous}, and the entry says it skipped {} ids before it; the next entry must \
                 be {allowed} or lower",
                entry.id, entry.skipped_before
            ));
            break;
        }
        if entry.id > previous + 1 {
            tracing::warn!(
                daemon_id = source.daemon_id,
                from = previous + 1,
                to = entry.id - 1,
                "the daemon skipped entries it could not send (see its dead letters)"
            );
        }
        previous = entry.id;
        out.up_to = entry.id;
        let encoded = encoded.get(i).and_then(Option::as_ref);
        match apply_entry(w, source, entry, encoded, quality) {
            Ok(inserted) => {
                out.applied += 1;
                out.samples_inserted += inserted;
            }
            Err(ApplyError::Reject(reason)) => {
                record_rejection(w, source, entry, &reason)?;
                out.rejections.push(Rejection {
                    entry_id: entry.id,
                    reason,
                });
            }
            Err(ApplyError::Store(e)) => return Err(e),
        }
    }
    Ok(out)
}

fn body_kind(body: Option<&Body>) -> (&'static str, Option<&str>) {
    match body {
        Some(Body::TestRegistered(t)) => ("test_registered", Some(&t.test_id)),
        Some(Body::Samples(s)) => ("samples", Some(&s.test_id)),
        Some(Body::Event(e)) => ("event", Some(&e.test_id)),
        Some(Body::TestEnded(e)) => ("test_ended", Some(&e.test_id)),
        Some(Body::Cycle(c)) => ("cycle", Some(&c.test_id)),
        Some(Body::Quality(q)) => ("quality", Some(&q.test_id)),
        None => ("none", None),
    }
}

fn record_rejection(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    entry: &Entry,
    reason: &str,
) -> Result<(), StoreError> {
    let (kind, test_id) = body_kind(entry.body.as_ref());
    let entry_id = i64::try_from(entry.id).map_err(|_| StoreError::OutOfRange("entry id"))?;
    w.insert_rejection(
        source,
        &RejectionRecord {
            entry_id,
            kind,
            // PostgreSQL text cannot hold NUL; the encoded entry keeps the exact bytes.
            test_id: test_id.map(|t| t.replace('\0', "\u{FFFD}")),
            reason,
            entry: entry.encode_to_vec(),
        },
    )?;
    tracing::warn!(
        daemon_id = source.daemon_id,
        entry_id = entry.id,
        kind,
        reason,
        "rejected entry"
    );
    Ok(())
}

/// Applies one entry; returns the number of sample rows inserted. Validates everything before
/// writing anything, so a rejected entry leaves no trace but its rejection record.
fn apply_entry(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    entry: &Entry,
    encoded: Option<&Ahead>,
    quality: &Layered,
) -> Result<u64, ApplyError> {
    match &entry.body {
        None => reject("entry has no body (an entry type this hub does not know? upgrade the hub)"),
        Some(Body::TestRegistered(t)) => apply_test_registered(w, source, t).map(|()| 0),
        Some(Body::Samples(b)) => apply_samples(w, source, b, encoded, quality),
        Some(Body::Event(e)) => apply_event(w, source, entry.id, e).map(|()| 0),
        Some(Body::TestEnded(e)) => apply_test_ended(w, source, e).map(|()| 0),
        Some(Body::Cycle(c)) => apply_cycle(w, source, c).map(|()| 0),
        Some(Body::Quality(q)) => apply_quality(w, source, q).map(|()| 0),
    }
}

/// Refuses text that a database cannot store the same way everywhere: PostgreSQL's text
/// cannot hold a NUL character, so neither backend accepts one.
fn check_text(what: &str, fields: &[(&str, &str)]) -> Result<(), ApplyError> {
    match fields.iter().find(|(_, v)| v.contains('\0')) {
        Some((name, _)) => reject(format!(
            "{what}: {name} contains a NUL character, which the hub does not store"
        )),
        None => Ok(()),
    }
}

/// The test's key, if the hub knows the test and it belongs to the writing daemon.
fn owned_test_key(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    test_id: &str,
) -> Result<i64, ApplyError> {
    match w.test_owner(test_id)? {
        Some((key, owner)) if owner == source.daemon_id => Ok(key),
        // Another daemon's test is answered as an unknown one: a rejection must not tell a
        // writer which tests exist, nor name another lab's daemons.
        _ => reject(format!(
            "unknown test {test_id:?}: the hub has no TestRegistered for it from this daemon"
        )),
    }
}

fn apply_test_registered(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    t: &TestRegistered,
) -> Result<(), ApplyError> {
    if t.test_id.is_empty() {
        return reject("TestRegistered has an empty test_id");
    }
    let what = format!("TestRegistered of test {:?}", t.test_id);
    check_text(
        &what,
        &[
            ("test_id", &t.test_id),
            ("channel_id", &t.channel_id),
            ("protocol_name", &t.protocol_name),
            ("protocol_source", &t.protocol_source),
            ("plan_json", &t.plan_json),
        ],
    )?;
    for (k, v) in &t.metadata {
        check_text(&what, &[("a metadata key", k), ("metadata value", v)])?;
    }
    for e in &t.equipment {
        check_text(
            &what,
            &[
                ("equipment name", &e.name),
                ("equipment family", &e.family),
                ("equipment address", &e.address),
                ("equipment role", &e.role),
            ],
        )?;
        if e.name.is_empty() {
            return reject(format!("{what}: an equipment entry has an empty name"));
        }
    }
    if t.channel_id.is_empty() {
        return reject(format!("test {:?} has an empty channel_id", t.test_id));
    }
    let meta = |k: &str| t.metadata.get(k).map_or("", String::as_str);
    let mut keys = vec![
        ("test_id", t.test_id.as_str()),
        ("channel_id", &t.channel_id),
        ("cell_id", meta("cell_id")),
        ("team", meta("team")),
    ];
    keys.extend(
        t.equipment
            .iter()
            .map(|e| ("equipment name", e.name.as_str())),
    );
    // Refused before any write, so an oversized key is a rejection rather than a failed batch
    // that blocks the entries behind it.
    if let Some((name, value)) = keys.iter().find(|(_, v)| v.len() > MAX_KEY_BYTES) {
        return reject(format!(
            "{what}: {name} is {} bytes long; the hub keys its tables by it and takes at most \
             {MAX_KEY_BYTES}",
            value.len()
        ));
    }
    if !t.start_unix_s.is_finite() {
        return reject(format!("test {:?} has a non-finite start time", t.test_id));
    }
    match w.test_owner(&t.test_id)? {
        // Re-sent registration: already applied.
        Some((_, owner)) if owner == source.daemon_id => return Ok(()),
        // Said without the owner: a rejection must not name another lab's daemons.
        Some(_) => {
            return reject(format!(
                "test id {:?} cannot be registered by this daemon; test ids are unique (a UUID \
                 per test)",
                t.test_id
            ));
        }
        None => {}
    }
    // Sorted keys: stable, diffable JSON.
    let metadata: BTreeMap<&str, &str> = t
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let metadata_json = match serde_json::to_string(&metadata) {
        Ok(json) => json,
        Err(e) => return reject(format!("metadata cannot be stored as JSON: {e}")),
    };
    let team = t
        .metadata
        .get("team")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty());
    let lab = w.daemon_lab(source.daemon_id)?;
    let problems = match &lab {
        Some(lab) => metadata_problems(&w.lab_schemas(lab)?, &t.metadata),
        None => Vec::new(),
    };
    let registration = Registration {
        metadata_json,
        team,
        problems_json: (!problems.is_empty())
            .then(|| serde_json::to_string(&problems).ok())
            .flatten(),
    };
    w.insert_test(source, t, &registration)?;
    let cell_lab = lab.as_deref().unwrap_or_default();
    if let Some(cell) = CellRow::from_metadata(&t.metadata, t.start_unix_s, cell_lab) {
        w.record_cell_and_channel(source, t, &cell)?;
    }
    if let (Some(lab), Some(team)) = (&lab, team) {
        w.record_team(lab, team, t.start_unix_s)?;
    }
    w.record_equipment(source, t)?;
    Ok(())
}

/// The problems of `metadata` under a lab's stored schemas. The data is kept either way (the
/// daemon checked it against the schemas it had when the test started; what the hub finds when
/// it stores the registration is recorded with the test for a person to look at). A stored
/// schema that cannot be used is itself reported rather than failing the registration.
fn metadata_problems(
    schemas: &[(String, String)],
    metadata: &HashMap<String, String>,
) -> Vec<String> {
    let checked = cyclerd_proto::metadata::check(schemas, metadata);
    let mut problems = checked.problems;
    problems.extend(
        checked
            .unusable
            .into_iter()
            .map(|e| format!("the lab's schema is unusable: {e}")),
    );
    if !problems.is_empty() {
        tracing::warn!(?problems, "test metadata does not follow the lab's schemas");
    }
    problems
}

impl CellRow {
    fn from_metadata(
        metadata: &HashMap<String, String>,
        start_unix_s: f64,
        lab: &str,
    ) -> Option<CellRow> {
        let text = |k: &str| {
            metadata
                .get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let number = |k: &str| {
            text(k)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite())
        };
        Some(CellRow {
            lab: lab.into(),
            cell_id: text("cell_id")?,
            manufacturer: text("secondary.manufacturer"),
            model: text("secondary.model"),
            chemistry: text("chemistry"),
            form_factor: text("secondary.form_factor"),
            nominal_capacity_ah: number("nominal_capacity_ah"),
            nominal_voltage_v: number("secondary.nominal_voltage_v"),
            first_test_unix_s: start_unix_s,
        })
    }
}

fn apply_samples(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    b: &SampleBatch,
    encoded: Option<&Ahead>,
    quality: &Layered,
) -> Result<u64, ApplyError> {
    super::samples::validate_samples(b).map_err(ApplyError::Reject)?;
    let key = owned_test_key(w, source, &b.test_id)?;
    if b.test_time_s.is_empty() {
        return Ok(0);
    }
    let inserted = super::samples::insert_batch(w, key, b, encoded)?;
    // Only samples stored now are new to the checks (a re-sent batch checks nothing twice).
    if inserted > 0 {
        super::quality::recheck(w, quality, source, key, b)?;
    }
    Ok(inserted)
}

fn apply_event(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    entry_id: u64,
    e: &Event,
) -> Result<(), ApplyError> {
    check_text(
        &format!("event of test {:?}", e.test_id),
        &[
            ("test_id", &e.test_id),
            ("kind", &e.kind),
            ("message", &e.message),
        ],
    )?;
    if !e.unix_time_s.is_finite() || !e.test_time_s.is_finite() {
        return reject(format!(
            "event of test {:?} has a non-finite time",
            e.test_id
        ));
    }
    let key = owned_test_key(w, source, &e.test_id)?;
    let Ok(entry_id) = i64::try_from(entry_id) else {
        return reject("entry id out of range");
    };
    w.insert_event(key, source, entry_id, e)?;
    Ok(())
}

fn apply_test_ended(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    e: &TestEnded,
) -> Result<(), ApplyError> {
    check_text(
        &format!("end of test {:?}", e.test_id),
        &[
            ("test_id", &e.test_id),
            ("outcome", &e.outcome),
            ("reason", &e.reason),
        ],
    )?;
    if !e.unix_time_s.is_finite() {
        return reject(format!("end of test {:?} has a non-finite time", e.test_id));
    }
    let Ok(expected) = i64::try_from(e.sample_count) else {
        return reject(format!("sample_count {} is out of range", e.sample_count));
    };
    let key = owned_test_key(w, source, &e.test_id)?;
    let held = w.end_test(key, e, expected)?;
    super::quality::finish(w, key)?;
    // Samples precede the end in the daemon's log, so by now they should all be here.
    if held != expected {
        tracing::warn!(
            test_id = e.test_id,
            held,
            expected,
            "test ended but the hub holds a different number of samples than the daemon produced"
        );
    }
    Ok(())
}

fn apply_cycle(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    c: &CycleSummary,
) -> Result<(), ApplyError> {
    let what = format!("cycle {} of test {:?}", c.cycle, c.test_id);
    check_text(&what, &[("test_id", &c.test_id)])?;
    let required = [
        ("start_test_time_s", c.start_test_time_s),
        ("end_test_time_s", c.end_test_time_s),
        ("charge_capacity_ah", c.charge_capacity_ah),
        ("discharge_capacity_ah", c.discharge_capacity_ah),
        ("charge_energy_wh", c.charge_energy_wh),
        ("discharge_energy_wh", c.discharge_energy_wh),
    ];
    if let Some((name, v)) = required.iter().find(|(_, v)| !v.is_finite()) {
        return reject(format!(
            "{what}: {name} is {v}, not a number the hub stores"
        ));
    }
    let (Ok(first_seq), Ok(last_seq)) = (i64::try_from(c.first_seq), i64::try_from(c.last_seq))
    else {
        return reject(format!(
            "{what}: a sequence number is out of range (max 2^63-1)"
        ));
    };
    let key = owned_test_key(w, source, &c.test_id)?;
    let optional = |v: f64| v.is_finite().then_some(v);
    w.upsert_cycle(
        key,
        &CycleRecord {
            cycle: i64::from(c.cycle),
            complete: i64::from(c.complete),
            start_test_time_s: c.start_test_time_s,
            end_test_time_s: c.end_test_time_s,
            charge_capacity_ah: c.charge_capacity_ah,
            discharge_capacity_ah: c.discharge_capacity_ah,
            charge_energy_wh: c.charge_energy_wh,
            discharge_energy_wh: c.discharge_energy_wh,
            max_temperature_c: optional(c.max_temperature_c),
            dcir_ohm: optional(c.dcir_ohm),
            first_seq,
            last_seq,
        },
    )?;
    Ok(())
}

/// Longest check name the hub stores (names are short words; a longer one is not a check).
const MAX_CHECK_BYTES: usize = 64;

fn apply_quality(
    w: &mut dyn BatchWrites,
    source: &Source<'_>,
    q: &QualityFinding,
) -> Result<(), ApplyError> {
    let what = format!("quality finding of test {:?}", q.test_id);
    check_text(
        &what,
        &[
            ("test_id", &q.test_id),
            ("check", &q.check),
            ("reason", &q.reason),
        ],
    )?;
    // A check this hub does not know (from a newer daemon) is kept as it is named.
    if q.check.is_empty() || q.check.len() > MAX_CHECK_BYTES {
        return reject(format!(
            "{what}: check must be a name of 1 to {MAX_CHECK_BYTES} bytes"
        ));
    }
    let (Ok(first_seq), Ok(last_seq)) = (i64::try_from(q.first_seq), i64::try_from(q.last_seq))
    else {
        return reject(format!(
            "{what}: a sequence number is out of range (max 2^63-1)"
        ));
    };
    if first_seq > last_seq {
        return reject(format!(
            "{what}: first_seq {first_seq} is after last_seq {last_seq}"
        ));
    }
    let times = [
        ("first_test_time_s", q.first_test_time_s),
        ("last_test_time_s", q.last_test_time_s),
        ("missing_s", q.missing_s),
    ];
    if let Some((name, v)) = times.iter().find(|(_, v)| !v.is_finite()) {
        return reject(format!(
            "{what}: {name} is {v}, not a number the hub stores"
        ));
    }
    let key = owned_test_key(w, source, &q.test_id)?;
    w.upsert_finding(
        key,
        &FindingRecord {
            source: super::quality::SOURCE_DAEMON,
            check: &q.check,
            first_seq,
            last_seq,
            open: i64::from(q.open),
            first_test_time_s: q.first_test_time_s,
            last_test_time_s: q.last_test_time_s,
            missing_s: q.missing_s.max(0.0),
            reason: &q.reason,
        },
    )?;
    Ok(())
}
