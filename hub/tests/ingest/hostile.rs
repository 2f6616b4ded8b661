//! Hostile input to the hub's store: arbitrary entries, arbitrary bytes, and whole sessions of
//! someone who knows a daemon's id and epoch but not its credential.

use super::*;
use proptest::prelude::*;
use prost::Message;

/// Entries with arbitrary column lengths, values (NaN, infinities), ids and test ids.
fn arbitrary_entry() -> impl Strategy<Value = Entry> {
    let value = prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        -5.0f64..5.0
    ];
    let column = proptest::collection::vec(value, 0..6);
    let test_id = prop_oneof![Just(T1.to_string()), Just(T2.to_string()), "\\PC{0,8}"];
    let samples = (
        test_id.clone(),
        any::<u64>(),
        column.clone(),
        column.clone(),
        column,
    )
        .prop_map(|(test_id, first_seq, v, i, t)| {
            let n = v.len();
            let mut b = batch(&test_id, first_seq % 1000, n, false);
            b.voltage_v = v;
            b.current_a = i;
            b.temperature_c = t;
            Body::Samples(b)
        });
    let body = prop_oneof![
        samples,
        test_id
            .clone()
            .prop_map(|t| registered(0, &t).body.unwrap()),
        test_id
            .clone()
            .prop_map(|t| event(0, &t, "x").body.unwrap()),
        (test_id, any::<u64>()).prop_map(|(t, n)| ended(0, &t, n).body.unwrap()),
    ];
    (1u64..40, proptest::option::weighted(0.9, body)).prop_map(|(id, body)| Entry {
        id,
        body,
        skipped_before: 0,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_entries_are_applied_or_rejected_and_never_lose_stored_samples(
        entries in proptest::collection::vec(arbitrary_entry(), 0..12)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
        store.apply_batch("d", 1, &whole_test(0, T1)).unwrap();
        let before = store.samples(T1).unwrap();
        for chunk in entries.chunks(3) {
            // Ids need not increase here: the store must cope with anything it is handed.
            let _ = store.apply_batch("d", 1, chunk);
        }
        let after = store.samples(T1).unwrap();
        prop_assert!(after.len() >= before.len());
        prop_assert_eq!(&after[..before.len()], &before[..]);
    }

    #[test]
    fn arbitrary_bytes_never_decode_into_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(entry) = Entry::decode(&bytes[..]) {
            let dir = tempfile::tempdir().unwrap();
            let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
            let _ = store.apply_batch("d", 1, &[entry]);
        }
    }
}

/// Differential: whatever a peer sends, both backends answer and store the same. A runner
/// rather than `proptest!`, so that one PostgreSQL database serves every case, emptied
/// before each.
#[test]
fn arbitrary_entries_have_the_same_effect_on_postgresql_as_on_sqlite() {
    let db = Database::new(Backend::Postgres);
    let pg = db.connect();
    // In a RefCell: the runner takes an `Fn`.
    let admin =
        std::cell::RefCell::new(postgres::Client::connect(&db.location, postgres::NoTls).unwrap());
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    let entries = proptest::collection::vec(arbitrary_entry(), 0..12);
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&entries, |entries| {
        let sqlite = Database::new(Backend::Sqlite);
        let sqlite = sqlite.connect();
        admin
            .borrow_mut()
            .batch_execute(
                "TRUNCATE daemons, tests, sample_chunks, events, rejections RESTART IDENTITY",
            )
            .unwrap();
        for store in [&sqlite, &pg] {
            store.apply_batch("d", 1, &whole_test(0, T1)).unwrap();
        }
        for chunk in entries.chunks(3) {
            match (
                sqlite.apply_batch("d", 1, chunk),
                pg.apply_batch("d", 1, chunk),
            ) {
                (Ok(s), Ok(p)) => prop_assert_eq!(s, p),
                (Err(_), Err(_)) => {}
                (s, p) => prop_assert!(false, "SQLite {:?}, PostgreSQL {:?}", s, p),
            }
        }
        let tests = sqlite.list_tests().unwrap();
        prop_assert_eq!(&tests, &pg.list_tests().unwrap());
        for test in &tests {
            let id = &test.test_id;
            prop_assert_eq!(sqlite.samples(id).unwrap(), pg.samples(id).unwrap());
            prop_assert_eq!(sqlite.events(id).unwrap(), pg.events(id).unwrap());
        }
        prop_assert_eq!(sqlite.rejections().unwrap(), pg.rejections().unwrap());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions of a hostile peer: another daemon's id and epoch, huge ids, gaps, duplicates,
// oversized strings

/// The daemon whose data the hostile peer is after; its credential never leaks.
const VICTIM: &str = "victim";
/// A daemon id the hostile peer owns (binds with its own credential).
const ATTACKER: &str = "attacker";

/// Whose id a hostile session says Hello with.
#[derive(Debug, Clone)]
enum Who {
    Victim,
    Attacker,
    Named(String),
}

/// The credential it presents: never the victim's.
#[derive(Debug, Clone)]
enum Credential {
    /// The attacker's own.
    Attackers,
    Wrong,
    Empty,
    Oversized,
}

/// How an entry's id follows the previous one's in a hostile batch.
#[derive(Debug, Clone)]
enum Step {
    Next,
    Same,
    Back(u64),
    Ahead(u64),
    Huge(u64),
}

#[derive(Debug, Clone)]
struct HostileSession {
    who: Who,
    epoch: u64,
    credential: Credential,
    /// Batches of (how the id moves, skipped_before, body).
    batches: Vec<Vec<(Step, u64, Option<Body>)>>,
}

fn hostile_session() -> impl Strategy<Value = HostileSession> {
    let who = prop_oneof![
        3 => Just(Who::Victim),
        3 => Just(Who::Attacker),
        1 => "\\PC{0,12}".prop_map(Who::Named),
        1 => Just(Who::Named("v".repeat(10_000))),
    ];
    let credential = prop_oneof![
        3 => Just(Credential::Attackers),
        2 => Just(Credential::Wrong),
        1 => Just(Credential::Empty),
        1 => Just(Credential::Oversized),
    ];
    let epoch = prop_oneof![Just(1u64), Just(2u64), any::<u64>()];
    let step = prop_oneof![
        6 => Just(Step::Next),
        1 => Just(Step::Same),
        1 => (1u64..5).prop_map(Step::Back),
        1 => (2u64..6).prop_map(Step::Ahead),
        1 => prop_oneof![
            Just(u64::MAX),
            Just(i64::MAX as u64),
            Just(1u64 << 40),
            (1_000u64..1_000_000),
        ]
        .prop_map(Step::Huge),
    ];
    let skipped = prop_oneof![6 => Just(0u64), 1 => 1u64..4, 1 => Just(u64::MAX)];
    let item = (
        step,
        skipped,
        proptest::option::weighted(0.95, hostile_body()),
    );
    let batches = proptest::collection::vec(proptest::collection::vec(item, 1..6), 1..4);
    (who, epoch, credential, batches).prop_map(|(who, epoch, credential, batches)| HostileSession {
        who,
        epoch,
        credential,
        batches,
    })
}

/// Bodies aimed at the victim's test as well as new ones, some with oversized strings.
fn hostile_body() -> impl Strategy<Value = Body> {
    let test_id = prop_oneof![
        Just(T1.to_string()),
        Just(T2.to_string()),
        Just("t".repeat(5_000)),
        "\\PC{0,8}",
    ];
    let oversized_cell = test_id.clone().prop_map(|t| {
        let mut r = registered(0, &t).body.unwrap();
        if let Body::TestRegistered(r) = &mut r {
            r.metadata.insert("cell_id".into(), "c".repeat(100_000));
        }
        r
    });
    prop_oneof![
        (test_id.clone(), 0u64..400, 0usize..5)
            .prop_map(|(t, seq, n)| samples(0, &t, seq, n).body.unwrap()),
        test_id
            .clone()
            .prop_map(|t| registered(0, &t).body.unwrap()),
        oversized_cell,
        test_id
            .clone()
            .prop_map(|t| event(0, &t, &"e".repeat(3)).body.unwrap()),
        (test_id, any::<u64>()).prop_map(|(t, n)| ended(0, &t, n).body.unwrap()),
    ]
}

/// What the victim has at the hub: its test, samples, events and resume point.
fn victim_state(
    store: &HubStore,
) -> (
    Option<cyclerhub::store::TestRow>,
    Vec<cyclerhub::store::SampleRow>,
    Vec<cyclerhub::store::EventRow>,
    u64,
) {
    (
        store.test(T1).unwrap(),
        store.samples(T1).unwrap(),
        store.events(T1).unwrap(),
        store.applied_up_to(VICTIM, 1).unwrap(),
    )
}

fn hello(daemon_id: &str, epoch: u64, secret: &str) -> Hello {
    Hello {
        daemon_id: daemon_id.into(),
        store_epoch: epoch,
        daemon_name: daemon_id.into(),
        lab: String::new(),
        daemon_secret: secret.into(),
    }
}

/// Runs one hostile session as the server would (the credential first; batches only after
/// it holds) and checks every acknowledgement against what the store then holds.
fn run_hostile(store: &HubStore, s: &HostileSession) -> Result<(), TestCaseError> {
    let daemon_id = match &s.who {
        Who::Victim => VICTIM.to_string(),
        Who::Attacker => ATTACKER.to_string(),
        Who::Named(name) => name.clone(),
    };
    let secret = match s.credential {
        Credential::Attackers => secret_of(ATTACKER),
        Credential::Wrong => "w".repeat(64),
        Credential::Empty => String::new(),
        Credential::Oversized => "o".repeat(100_000),
    };
    let hello = hello(&daemon_id, s.epoch, &secret);
    if store.claim_daemon(&hello).is_err() {
        return Ok(());
    }
    prop_assert!(
        daemon_id != VICTIM,
        "the victim's id was taken with another credential"
    );
    let Ok(resume) = store.hello(&hello) else {
        return Ok(());
    };
    let mut id = resume;
    for batch in &s.batches {
        let entries: Vec<Entry> = batch
            .iter()
            .map(|(step, skipped, body)| {
                id = match step {
                    Step::Next => id.saturating_add(1),
                    Step::Same => id,
                    Step::Back(n) => id.saturating_sub(*n),
                    Step::Ahead(n) => id.saturating_add(*n),
                    Step::Huge(n) => *n,
                };
                Entry {
                    id,
                    body: body.clone(),
                    skipped_before: *skipped,
                }
            })
            .collect();
        let before = store.applied_up_to(&daemon_id, s.epoch).unwrap();
        let rejections = store.rejections().unwrap().len();
        let outcome = store.apply_batch(&daemon_id, s.epoch, &entries);
        let after = store.applied_up_to(&daemon_id, s.epoch).unwrap();
        let Ok(outcome) = outcome else {
            prop_assert_eq!(after, before, "a failed batch moved the resume point");
            continue;
        };
        // The ack is what the store holds as handled, and never more.
        prop_assert_eq!(after, before.max(outcome.up_to));
        let mut held = before;
        for e in entries
            .iter()
            .filter(|e| e.id > before && e.id <= outcome.up_to)
        {
            if e.id <= held {
                continue;
            }
            prop_assert!(
                e.id <= held.saturating_add(1).saturating_add(e.skipped_before),
                "entry {} was acknowledged past a gap after {}",
                e.id,
                held
            );
            held = e.id;
        }
        prop_assert_eq!(held, after, "acknowledged up to an entry it never handled");
        prop_assert_eq!(
            store.rejections().unwrap().len(),
            rejections + outcome.rejections.len(),
            "every rejection answered is recorded"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn hostile_sessions_never_change_what_a_daemon_stored_and_acks_never_pass_what_is_held(
        sessions in proptest::collection::vec(hostile_session(), 1..5)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
        let victim = hello(VICTIM, 1, &secret_of(VICTIM));
        store.claim_daemon(&victim).unwrap();
        store.hello(&victim).unwrap();
        store.apply_batch(VICTIM, 1, &whole_test(0, T1)).unwrap();
        let before = victim_state(&store);
        for session in &sessions {
            run_hostile(&store, session)?;
            prop_assert_eq!(&victim_state(&store), &before);
        }
        // The victim goes on as if nothing happened, and every one of its samples arrives.
        store.claim_daemon(&victim).unwrap();
        prop_assert_eq!(store.hello(&victim).unwrap(), 6);
        let out = store.apply_batch(VICTIM, 1, &whole_test(6, T3)).unwrap();
        prop_assert_eq!(out.up_to, 12);
        prop_assert_eq!(out.rejections, vec![]);
        prop_assert_eq!(store.sample_count(T3).unwrap(), 300);
        prop_assert_eq!(store.samples(T1).unwrap(), before.1);
    }
}
