//! Quality findings as the hub keeps them (the daemon's, the latest per run) and makes them
//! (its own checks of the samples it stores), and the grade they give a test, on both
//! backends.

use super::*;
use cyclerd_proto::hub::query_client::QueryClient;
use cyclerd_proto::hub::{GetTestRequest, ListTestsRequest};
use cyclerd_proto::ingest::QualityFinding;
use cyclerhub::store::FindingRow;

/// A charge at 1.25 A (plan step 0), one sample a second.
const CHARGE_PLAN: &str = r#"
protocol: Charge
version: 1
params: {capacity: 5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Charge at 1.25 A until 4.2 V"]
"#;

fn finding(id: u64, test_id: &str, check: &str, (first, last): (u64, u64), open: bool) -> Entry {
    entry(
        id,
        Body::Quality(QualityFinding {
            test_id: test_id.into(),
            check: check.into(),
            first_seq: first,
            last_seq: last,
            reason: format!("{check} from {first}"),
            open,
            first_test_time_s: first as f64,
            last_test_time_s: last as f64,
            missing_s: 0.0,
        }),
    )
}

/// Registration of `test_id` running [`CHARGE_PLAN`] with all its primary metadata.
fn registered_charge(id: u64, test_id: &str) -> Entry {
    let mut e = registered(id, test_id);
    if let Some(Body::TestRegistered(t)) = &mut e.body {
        let plan = cyclerd_protocols::Plan::from_yaml(CHARGE_PLAN, "charge.yaml").unwrap();
        t.plan_json = plan.to_json();
        t.protocol_name = plan.name.clone();
        for (k, v) in [
            ("owner", "bob"),
            ("objective", "ageing"),
            ("chemistry", "NMC811/graphite"),
            ("nominal_capacity_ah", "5"),
        ] {
            t.metadata.insert(k.into(), v.into());
        }
    }
    e
}

/// Samples `first_seq..first_seq + n` of a charge at 1.25 A in plan step 0, with the voltage
/// stuck at 3.8 V over `stuck` and the current's sign wrong over `flipped` (seqs, inclusive),
/// the capacities accounting for the current as measured.
fn charge(
    test_id: &str,
    first_seq: u64,
    n: usize,
    stuck: (u64, u64),
    flipped: (u64, u64),
) -> SampleBatch {
    let mut b = batch(test_id, first_seq, n, false);
    b.plan_step = vec![0; n];
    for i in 0..n {
        let seq = first_seq + i as u64;
        if (stuck.0..=stuck.1).contains(&seq) {
            b.voltage_v[i] = 3.8;
        }
        // Before the flip, while and after: charge stops and discharge counts while flipped.
        let flipped_before = seq.clamp(flipped.0, flipped.1 + 1) - flipped.0;
        let charged = (seq - flipped_before) as f64 / 3600.0;
        b.charge_capacity_ah[i] = charged;
        b.discharge_capacity_ah[i] = flipped_before as f64 * 1.25 / 3600.0;
        if (flipped.0..=flipped.1).contains(&seq) {
            b.current_a[i] = -1.25;
            b.charge_capacity_ah[i] = (flipped.0 - 1) as f64 / 3600.0;
            b.discharge_capacity_ah[i] = (seq - flipped.0 + 1) as f64 * 1.25 / 3600.0;
        }
    }
    b
}

/// No seqs: a clean run.
const NONE: (u64, u64) = (u64::MAX - 1, u64::MAX - 1);

/// Every finding of `source` as `(check, first, last, open)`.
fn runs(rows: &[FindingRow], source: &str) -> Vec<(String, u64, u64, bool)> {
    rows.iter()
        .filter(|f| f.source == source)
        .map(|f| (f.check.clone(), f.first_seq, f.last_seq, f.open))
        .collect()
}

async fn a_daemons_finding_is_kept_latest_per_run_closed_at_the_end_and_bad_ones_are_rejected(
    backend: Backend,
) {
    let db = Database::new(backend);
    let store = db.connect();
    let mut nan = finding(7, T1, "voltage_stuck", (5, 9), false);
    if let Some(Body::Quality(q)) = &mut nan.body {
        q.last_test_time_s = f64::NAN;
    }
    let entries = [
        registered(1, T1),
        samples(2, T1, 0, 100),
        finding(3, T1, "voltage_stuck", (10, 40), true),
        finding(4, T1, "voltage_stuck", (10, 60), true),
        finding(5, T1, "current_sign", (70, 72), false),
        finding(6, T1, "current_sign", (80, 75), false),
        nan,
        finding(8, "no-such-test", "current_sign", (1, 2), false),
    ];
    let out = store.apply_batch("daemon-a", 1, &entries).unwrap();
    assert_eq!(out.rejections.len(), 3, "{:?}", out.rejections);
    assert!(
        out.rejections[0]
            .reason
            .contains("first_seq 80 is after last_seq 75")
    );
    let rows = store.quality_findings(T1).unwrap();
    assert_eq!(
        runs(&rows, "daemon"),
        [
            ("voltage_stuck".into(), 10, 60, true),
            ("current_sign".into(), 70, 72, false)
        ]
    );
    // Sent again (a daemon that did not see the ack): nothing changes.
    let again = store.apply_batch("daemon-a", 1, &entries).unwrap();
    assert_eq!(again.duplicates, entries.len());
    assert_eq!(store.quality_findings(T1).unwrap(), rows);
    // The test ends without the run's last word: every run of it has ended.
    store
        .apply_batch("daemon-a", 1, &[ended(9, T1, 100)])
        .unwrap();
    assert_eq!(
        runs(&store.quality_findings(T1).unwrap(), "daemon"),
        [
            ("voltage_stuck".into(), 10, 60, false),
            ("current_sign".into(), 70, 72, false)
        ]
    );
}

async fn the_hub_finds_a_stuck_voltage_and_a_sign_error_across_batches_and_grades_the_test_lower(
    backend: Backend,
) {
    let db = Database::new(backend);
    let store = db.connect();
    let (stuck, flipped) = ((150, 549), (420, 429));
    let part = |id, first| entry(id, Body::Samples(charge(T1, first, 150, stuck, flipped)));
    store
        .apply_batch(
            "daemon-a",
            1,
            &[
                registered_charge(1, T1),
                part(2, 0),
                part(3, 150),
                part(4, 300),
            ],
        )
        .unwrap();
    // Live: the stuck run (300 samples so far, as many as make it stuck) goes on at the end
    // of what is stored; the sign error has ended.
    assert_eq!(
        runs(&store.quality_findings(T1).unwrap(), "hub"),
        [
            ("voltage_stuck".into(), 150, 449, true),
            ("current_sign".into(), 420, 429, false)
        ]
    );
    // The last part, a part sent again, the end.
    store
        .apply_batch(
            "daemon-a",
            1,
            &[part(5, 450), part(6, 150), ended(7, T1, 600)],
        )
        .unwrap();
    let rows = store.quality_findings(T1).unwrap();
    assert_eq!(
        runs(&rows, "hub"),
        [
            ("voltage_stuck".into(), 150, 549, false),
            ("current_sign".into(), 420, 429, false)
        ],
        "{rows:#?}"
    );
    assert!(rows[1].reason.contains("in a charge step"), "{rows:?}");
    assert_eq!(
        (rows[0].first_test_time_s, rows[0].last_test_time_s),
        (150.0, 549.0)
    );

    // The same test without the faults.
    let clean = |id, first| entry(id, Body::Samples(charge(T2, first, 200, NONE, NONE)));
    store
        .apply_batch(
            "daemon-a",
            1,
            &[
                registered_charge(8, T2),
                clean(9, 0),
                clean(10, 200),
                clean(11, 400),
            ],
        )
        .unwrap();
    assert_eq!(store.quality_findings(T2).unwrap(), []);
    let graded = |id| store.test(id).unwrap().unwrap().grade.unwrap();
    let (faulty, clean) = (graded(T1), graded(T2));
    assert_eq!((clean.letter, clean.score), ('A', 100), "{clean:?}");
    assert_eq!((faulty.letter, faulty.score), ('B', 80), "{faulty:?}");
    assert_eq!(
        faulty.reasons,
        [
            "1 voltage_stuck finding(s) (-10)",
            "1 current_sign finding(s) (-10)"
        ]
    );
    // The list grades them alike.
    let mut listed: Vec<_> = store
        .list_tests()
        .unwrap()
        .into_iter()
        .map(|t| (t.test_id, t.grade.unwrap().score))
        .collect();
    listed.sort();
    assert_eq!(listed, [(T1.to_string(), 80), (T2.to_string(), 100)]);
    // Every export's metadata JSON carries the grade.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t1.bdf.csv");
    let exported =
        cyclerhub::export::export_files(&store, T1, cyclerhub::export::Format::BdfCsv, &path, None)
            .unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exported.files.last().unwrap()).unwrap()).unwrap();
    assert_eq!(json["grade"]["letter"], "B", "{json:#}");
    assert_eq!(json["grade"]["score"], 80);
    assert_eq!(
        json["grade"]["reasons"][0],
        "1 voltage_stuck finding(s) (-10)"
    );
}

async fn list_tests_with_a_minimum_grade_keeps_only_tests_graded_that_or_better(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries([
        registered_charge(1, T1),
        finding(2, T1, "voltage_stuck", (0, 5), false),
        finding(3, T1, "current_sign", (6, 9), false),
        finding(4, T1, "accounting", (6, 9), false),
        finding(5, T1, "voltage_range", (10, 10), false),
        finding(6, T1, "current_range", (11, 11), false),
        registered_charge(7, T2),
        // Four primary keys missing: C.
        registered(8, T3),
    ])
    .await;
    assert!(up.until_ack(8).await.is_empty());
    let mut q = QueryClient::new(hub.channel().await);
    let g = |id: &str, l: &str| (id.to_string(), l.to_string());
    assert_eq!(at_least(&mut q, "A").await.unwrap(), [g(T2, "A")]);
    assert_eq!(
        at_least(&mut q, "c").await.unwrap(),
        [g(T2, "A"), g(T3, "C")]
    );
    assert_eq!(
        at_least(&mut q, "").await.unwrap(),
        [g(T1, "D"), g(T2, "A"), g(T3, "C")]
    );
    let e = at_least(&mut q, "F").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("A (best) to E"), "{e:?}");

    let detail = q
        .get_test(GetTestRequest { test_id: T1.into() })
        .await
        .unwrap()
        .into_inner();
    let summary = detail.summary.unwrap();
    assert_eq!((summary.grade.as_str(), summary.grade_score), ("D", 50));
    assert_eq!(detail.grade_reasons.len(), 5, "{:?}", detail.grade_reasons);
    assert_eq!(
        detail
            .quality_findings
            .iter()
            .map(|f| (f.source.as_str(), f.check.as_str(), f.first_seq, f.last_seq))
            .collect::<Vec<_>>(),
        [
            ("daemon", "voltage_stuck", 0, 5),
            ("daemon", "accounting", 6, 9),
            ("daemon", "current_sign", 6, 9),
            ("daemon", "voltage_range", 10, 10),
            ("daemon", "current_range", 11, 11)
        ]
    );
    // The HTTP API says the same.
    let text = super::http::client()
        .get(super::http::url(&hub, "/api/v1/tests?min_grade=B"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = body["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["test_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [T2]);
    assert_eq!(body["tests"][0]["grade"], "A");
    // And the web app: the list filtered, the test page with its grade and findings.
    let page = |path: String| {
        let url = super::http::url(&hub, &path);
        async move {
            let r = super::http::client().get(url).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.text().await.unwrap()
        }
    };
    let list = page("/?min_grade=B".into()).await;
    assert!(list.contains(T2) && !list.contains(T1), "{list}");
    assert!(list.contains("A (100)"), "{list}");
    let test = page(format!("/tests/{T1}")).await;
    assert!(test.contains("D (50)"), "{test}");
    assert!(test.contains("1 voltage_stuck finding(s) (-10)"), "{test}");
    assert!(test.contains("<td>current_range</td>"), "{test}");
    hub.shutdown().await;
}

/// The tests `ListTests` gives with `min_grade`, as `(test id, grade)` in id order.
async fn at_least(
    q: &mut QueryClient<tonic::transport::Channel>,
    min: &str,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let tests = q
        .list_tests(ListTestsRequest {
            min_grade: min.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tests;
    let mut v: Vec<_> = tests.into_iter().map(|t| (t.test_id, t.grade)).collect();
    v.sort();
    Ok(v)
}

on_both_backends!(
    a_daemons_finding_is_kept_latest_per_run_closed_at_the_end_and_bad_ones_are_rejected,
    the_hub_finds_a_stuck_voltage_and_a_sign_error_across_batches_and_grades_the_test_lower,
    list_tests_with_a_minimum_grade_keeps_only_tests_graded_that_or_better,
);
