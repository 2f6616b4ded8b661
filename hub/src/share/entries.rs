//! A logged entry as the entry sent: its data re-read from the store, and with an anonymising
//! share every identifier replaced by the lab's pseudonym, as the anonymised export does
//! ([`crate::export::anonymise`]): the test id, the metadata keys that name a cell, an owner,
//! an operator or a person, and every mention of those in the free text (protocol, channel,
//! events, the reason a test ended); instrument addresses are left out.

use std::collections::HashMap;

use cyclerd_proto::ingest::{
    CycleSummary, Entry, Event, SampleBatch, TestEnded, TestRegistered, entry::Body,
};

use crate::export::Pseudonymiser;
use crate::export::anonymise::{Anonymiser, Kind};
use crate::export::metadata::{Tier, tier_of};
use crate::store::{EventRow, HubStore, SampleRow, ShareLogEntry, StoreError, TestRow};

/// Turns a share's logged entries into entries to send; keeps each test's row, whose
/// metadata (what the pseudonyms replace) never changes after registration.
pub(super) struct Materialiser {
    /// Where the data is read.
    store: HubStore,
    /// The lab secret's pseudonymiser, when the share anonymises.
    pseudonymiser: Option<Pseudonymiser>,
    /// Test rows read so far, by this hub's test id.
    tests: HashMap<String, TestRow>,
    /// Each test's events as last read: read again only for an index beyond them, so a test
    /// with many events is not read once per event.
    events: HashMap<String, Vec<EventRow>>,
    /// Each test's cycles as last read: read again for a cycle not complete in them.
    cycles: HashMap<String, Vec<CycleSummary>>,
}

impl Materialiser {
    pub(super) fn new(store: HubStore, pseudonymiser: Option<Pseudonymiser>) -> Materialiser {
        Materialiser {
            store,
            pseudonymiser,
            tests: HashMap::new(),
            events: HashMap::new(),
            cycles: HashMap::new(),
        }
    }

    /// The entry to send for `logged`. Blocking.
    pub(super) fn entry(&mut self, logged: &ShareLogEntry) -> Result<Entry, StoreError> {
        let body = self.body(logged)?;
        Ok(Entry {
            id: logged.id,
            body,
            skipped_before: 0,
        })
    }

    fn body(&mut self, logged: &ShareLogEntry) -> Result<Option<Body>, StoreError> {
        let test_id = logged.test_id.as_str();
        if !self.tests.contains_key(test_id) || logged.kind == "ended" {
            let Some(t) = self.store.test(test_id)? else {
                // A test this hub no longer has: the receiver records a rejection for it.
                return Ok(None);
            };
            self.tests.insert(test_id.to_owned(), t);
        }
        let index = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
        if logged.kind == "event"
            && self
                .events
                .get(test_id)
                .is_none_or(|e| e.len() <= index(logged.a))
        {
            let events = self.store.events(test_id)?;
            self.events.insert(test_id.to_owned(), events);
        }
        if logged.kind == "cycle"
            && self.cycles.get(test_id).is_none_or(|c| {
                !c.iter()
                    .any(|c| i64::from(c.cycle) == logged.a && c.complete)
            })
        {
            let cycles = self.store.cycles(test_id)?;
            self.cycles.insert(test_id.to_owned(), cycles);
        }
        let t = &self.tests[test_id];
        let a = Anon::new(self.pseudonymiser.as_ref(), t);
        let id = a.test_id(test_id);
        Ok(match logged.kind.as_str() {
            "registered" => Some(Body::TestRegistered(self.registered(t, &a)?)),
            "samples" => {
                let (first, end) = (
                    u64::try_from(logged.a).unwrap_or(0),
                    u64::try_from(logged.b).unwrap_or(0),
                );
                Some(Body::Samples(samples(
                    &self.store,
                    test_id,
                    id,
                    first,
                    end,
                )?))
            }
            "event" => self
                .events
                .get(test_id)
                .and_then(|events| events.get(index(logged.a)))
                .map(|e| {
                    Body::Event(Event {
                        test_id: id,
                        unix_time_s: e.unix_time_s,
                        test_time_s: e.test_time_s,
                        kind: e.kind.clone(),
                        message: a.scrub(&e.message),
                        step: e.step,
                        cycle: e.cycle,
                    })
                }),
            "cycle" => self
                .cycles
                .get(test_id)
                .and_then(|cycles| cycles.iter().find(|c| i64::from(c.cycle) == logged.a))
                .map(|c| {
                    let mut c = c.clone();
                    c.test_id = id;
                    Body::Cycle(c)
                }),
            "ended" => Some(Body::TestEnded(TestEnded {
                test_id: id,
                unix_time_s: t.end_unix_s.unwrap_or(t.start_unix_s),
                outcome: t.outcome.clone().unwrap_or_default(),
                reason: a.scrub(t.reason.as_deref().unwrap_or_default()),
                sample_count: t.expected_samples.unwrap_or(t.sample_count),
            })),
            _ => None,
        })
    }

    fn registered(&self, t: &TestRow, a: &Anon<'_>) -> Result<TestRegistered, StoreError> {
        let (source, plan) = self.store.protocol(&t.test_id)?.unwrap_or_default();
        let equipment = self.store.test_equipment(&t.test_id)?;
        Ok(TestRegistered {
            test_id: a.test_id(&t.test_id),
            channel_id: a.scrub(&t.channel_id),
            metadata: a.metadata(t),
            protocol_name: a.scrub(&t.protocol_name),
            protocol_source: a.scrub(&source),
            plan_json: a.scrub(&plan),
            start_unix_s: t.start_unix_s,
            equipment: equipment
                .into_iter()
                .map(|mut e| {
                    if a.on() {
                        e.name = a.scrub(&e.name);
                        e.address.clear();
                    }
                    e
                })
                .collect(),
        })
    }
}

/// One test's anonymisation, or none.
struct Anon<'a> {
    /// `None`: the share does not anonymise.
    inner: Option<(Anonymiser<'a>, HashMap<String, String>)>,
}

impl<'a> Anon<'a> {
    fn new(pseudonymiser: Option<&'a Pseudonymiser>, t: &TestRow) -> Anon<'a> {
        let inner = pseudonymiser.map(|p| {
            let mut a = Anonymiser::new(p);
            // The test id first, as the export does, so free text naming it is scrubbed too.
            a.replace(Kind::Test, &t.test_id);
            let mut replaced = HashMap::new();
            for (key, value) in &t.metadata {
                if let Some(kind) = Kind::of_key(tier_of(key).1) {
                    replaced.insert(key.clone(), a.replace(kind, value));
                }
            }
            (a, replaced)
        });
        Anon { inner }
    }

    fn on(&self) -> bool {
        self.inner.is_some()
    }

    fn test_id(&self, test_id: &str) -> String {
        match &self.inner {
            Some(_) => self.scrub(test_id),
            None => test_id.to_owned(),
        }
    }

    fn scrub(&self, s: &str) -> String {
        match &self.inner {
            Some((a, _)) => a.scrub(s),
            None => s.to_owned(),
        }
    }

    /// The metadata with identifying values replaced and the rest scrubbed (key names too,
    /// keeping their tier prefix).
    fn metadata(&self, t: &TestRow) -> HashMap<String, String> {
        let Some((_, replaced)) = &self.inner else {
            return t.metadata.clone().into_iter().collect();
        };
        t.metadata
            .iter()
            .map(|(key, value)| {
                let value = replaced
                    .get(key.as_str())
                    .cloned()
                    .unwrap_or_else(|| self.scrub(value));
                let (tier, name) = tier_of(key);
                let key = match tier {
                    Tier::Primary => self.scrub(name),
                    tier => format!("{}.{}", tier.name(), self.scrub(name)),
                };
                (key, value)
            })
            .collect()
    }
}

/// The samples `first..end` of a test as one batch, sent as test `id`.
fn samples(
    store: &HubStore,
    test_id: &str,
    id: String,
    first: u64,
    end: u64,
) -> Result<SampleBatch, StoreError> {
    let mut rows: Vec<SampleRow> = Vec::new();
    /// Stops the read at the end of the run.
    enum Stop {
        Done,
        Store(StoreError),
    }
    impl From<StoreError> for Stop {
        fn from(e: StoreError) -> Stop {
            Stop::Store(e)
        }
    }
    let read = store.for_each_sample_from(test_id, first, |s| {
        if s.seq >= end {
            return Err(Stop::Done);
        }
        rows.push(s.clone());
        Ok(())
    });
    if let Err(Stop::Store(e)) = read {
        return Err(e);
    }
    let col = |f: fn(&SampleRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let optional = |f: fn(&SampleRow) -> Option<f64>| {
        if rows.iter().any(|s| f(s).is_some()) {
            rows.iter().map(|s| f(s).unwrap_or(f64::NAN)).collect()
        } else {
            Vec::new()
        }
    };
    Ok(SampleBatch {
        test_id: id,
        first_seq: rows.first().map_or(first, |s| s.seq),
        test_time_s: col(|s| s.test_time_s),
        unix_time_s: col(|s| s.unix_time_s),
        voltage_v: col(|s| s.voltage_v),
        current_a: col(|s| s.current_a),
        cycle: rows.iter().map(|s| s.cycle).collect(),
        step: rows.iter().map(|s| s.step).collect(),
        charge_capacity_ah: col(|s| s.charge_capacity_ah),
        discharge_capacity_ah: col(|s| s.discharge_capacity_ah),
        charge_energy_wh: col(|s| s.charge_energy_wh),
        discharge_energy_wh: col(|s| s.discharge_energy_wh),
        temperature_c: optional(|s| s.temperature_c),
        ambient_temperature_c: optional(|s| s.ambient_temperature_c),
        plan_step: if rows.iter().all(|s| s.plan_step.is_some()) {
            rows.iter().map(|s| s.plan_step.unwrap_or(0)).collect()
        } else {
            Vec::new()
        },
    })
}
