//! Per-cycle results as the hub keeps them (the latest summary of each cycle) and serves them
//! (`ListCycles`, with the derived values, to the test's lab only), on both backends.

use super::*;
use cyclerd_proto::ingest::CycleSummary;

fn cycle(id: u64, test_id: &str, n: u32, complete: bool, charged: f64) -> Entry {
    entry(
        id,
        Body::Cycle(CycleSummary {
            test_id: test_id.into(),
            cycle: n,
            complete,
            start_test_time_s: 100.0 * f64::from(n),
            end_test_time_s: 100.0 * f64::from(n) + 90.0,
            charge_capacity_ah: charged,
            discharge_capacity_ah: if complete { 0.98 * charged } else { 0.0 },
            charge_energy_wh: 3.7 * charged,
            discharge_energy_wh: if complete { 3.6 * 0.98 * charged } else { 0.0 },
            max_temperature_c: if n == 1 { 31.5 } else { f64::NAN },
            dcir_ohm: f64::NAN,
            first_seq: u64::from(n) * 10,
            last_seq: u64::from(n) * 10 + 9,
        }),
    )
}

async fn a_cycles_latest_summary_replaces_the_one_before_and_bad_ones_are_rejected(
    backend: Backend,
) {
    let db = Database::new(backend);
    let store = db.connect();
    let mut nan = cycle(6, T1, 3, true, 1.0);
    if let Some(Body::Cycle(c)) = &mut nan.body {
        c.charge_capacity_ah = f64::NAN;
    }
    let out = store
        .apply_batch(
            "daemon-a",
            1,
            &[
                registered(1, T1),
                cycle(2, T1, 1, false, 0.6),
                cycle(3, T1, 1, true, 1.0),
                cycle(4, T1, 2, false, 0.5),
                cycle(5, "no-such-test", 1, true, 1.0),
                nan,
            ],
        )
        .unwrap();
    assert_eq!(out.rejections.len(), 2, "{:?}", out.rejections);
    let rows = store.cycles(T1).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].complete);
    assert_eq!(
        rows[0].charge_capacity_ah, 1.0,
        "the complete cycle replaced its partial"
    );
    assert!((rows[0].coulombic_efficiency().unwrap() - 0.98).abs() < 1e-12);
    assert_eq!(rows[0].max_temperature(), Some(31.5));
    assert_eq!(rows[0].dcir(), None);
    assert!(!rows[1].complete);
    assert_eq!(rows[1].cycle, 2);
    assert_eq!(rows[1].max_temperature(), None);
    assert!(store.cycles("no-such-test").unwrap().is_empty());
}

/// Lab `cell-ageing`'s T1 (cycles 1 and 2 complete, 3 going on) and lab `formation`'s T2 in a
/// hub requiring tokens; the hub and a reader token of `cell-ageing`.
async fn two_labs_with_cycles(backend: Backend) -> (Hub, String) {
    use super::auth::{token_hub, upload_as};
    use cyclerhub::auth::Role;
    let hub = token_hub(backend).await;
    let issue = |lab: &str, name: &str, role| hub.store.issue_token(lab, name, role).unwrap();
    let ageing = issue("cell-ageing", "pc-1", Role::Daemon);
    let formation = issue("formation", "pc-2", Role::Daemon);
    let mut up = upload_as(&hub, &ageing, "daemon-a").await;
    let mut dcir = cycle(3, T1, 2, true, 0.9);
    if let Some(Body::Cycle(c)) = &mut dcir.body {
        c.dcir_ohm = 0.0213;
    }
    up.send_entries([
        registered(1, T1),
        cycle(2, T1, 1, true, 1.0),
        dcir,
        cycle(4, T1, 3, false, 0.4),
    ])
    .await;
    assert!(up.until_ack(4).await.is_empty());
    let mut up = upload_as(&hub, &formation, "daemon-b").await;
    up.send_entries([registered(1, T2), cycle(2, T2, 1, true, 1.0)])
        .await;
    assert!(up.until_ack(2).await.is_empty());
    let reader = issue("cell-ageing", "ana", Role::Reader);
    (hub, reader)
}

async fn list_cycles_gives_each_cycle_with_its_derived_values_to_its_own_lab_only(
    backend: Backend,
) {
    use super::auth::bearer;
    use cyclerd_proto::hub::ListCyclesRequest;
    use cyclerd_proto::hub::query_client::QueryClient;
    use tonic::Code;

    let (mut hub, reader) = two_labs_with_cycles(backend).await;
    let mut q = QueryClient::new(hub.channel().await);
    let ask = |test_id: &str| ListCyclesRequest {
        test_id: test_id.into(),
    };
    let list = q
        .list_cycles(bearer(ask(T1), Some(&reader)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.test_id, T1);
    assert_eq!(list.source, "daemon");
    assert_eq!(list.retention_reference_cycle, Some(1));
    let rows = &list.cycles;
    assert_eq!(
        rows.iter()
            .map(|r| (r.cycle, r.complete))
            .collect::<Vec<_>>(),
        [(1, true), (2, true), (3, false)]
    );
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
    for r in &rows[..2] {
        assert!(close(r.coulombic_efficiency, 0.98), "{r:?}");
        assert!(close(r.energy_efficiency, 0.98 * 3.6 / 3.7), "{r:?}");
        assert!(close(r.mean_charge_voltage_v, 3.7), "{r:?}");
        assert!(close(r.mean_discharge_voltage_v, 3.6), "{r:?}");
        assert_eq!(r.duration_s, 90.0);
    }
    assert!(close(rows[0].capacity_retention, 1.0));
    assert!(close(rows[1].capacity_retention, 0.9), "{:?}", rows[1]);
    assert_eq!(rows[0].max_temperature_c, Some(31.5));
    assert_eq!(
        rows[1].max_temperature_c, None,
        "no sensor: absent, not NaN"
    );
    assert_eq!(rows[0].dcir_ohm, None);
    assert_eq!(rows[1].dcir_ohm, Some(0.0213));
    // The cycle going on has charged but not yet discharged.
    assert!(close(rows[2].coulombic_efficiency, 0.0));
    assert_eq!(rows[2].mean_discharge_voltage_v, None);
    assert_eq!((rows[2].first_seq, rows[2].last_seq), (30, 39));

    let theirs = q
        .list_cycles(bearer(ask(T2), Some(&reader)))
        .await
        .unwrap_err();
    let unknown = q
        .list_cycles(bearer(ask(T3), Some(&reader)))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::PermissionDenied, "{theirs:?}");
    assert!(theirs.message().contains("cell-ageing"), "{theirs:?}");
    assert_eq!(
        (unknown.code(), unknown.message().replace(T3, "ID")),
        (theirs.code(), theirs.message().replace(T2, "ID")),
        "an unknown id and another lab's test are refused alike"
    );
    let anonymous = q.list_cycles(bearer(ask(T1), None)).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    hub.shutdown().await;
}

async fn a_test_whose_daemon_sent_no_cycles_gets_them_computed_from_its_samples(backend: Backend) {
    let db = Database::new(backend);
    let store = db.connect();
    // Cycle 1 throughout: 300 samples charging at 1.25 A; the test has ended.
    store
        .apply_batch("daemon-a", 1, &whole_test(0, T1))
        .unwrap();
    let list = cyclerhub::cycles::list(&store, T1).unwrap();
    assert_eq!(list.source, "samples");
    let [row] = &list.cycles[..] else {
        panic!("one cycle: {list:?}")
    };
    assert!(row.complete, "the test ended, so did its last cycle");
    assert_eq!((row.first_seq, row.last_seq), (0, 299));
    assert!((row.charge_capacity_ah - 299.0 / 3600.0).abs() < 1e-12);
    assert_eq!(row.discharge_capacity_ah, 0.0);
    assert_eq!(row.coulombic_efficiency, Some(0.0));
    assert_eq!(row.mean_discharge_voltage_v, None);
    assert_eq!(
        list.retention_reference_cycle, None,
        "no full cycle: nothing to retain"
    );
    assert_eq!(row.capacity_retention, None);
    let err = cyclerhub::cycles::list(&store, "no-such-test").unwrap_err();
    assert!(err.to_string().contains("no test with id"), "{err}");
}

on_both_backends!(
    a_cycles_latest_summary_replaces_the_one_before_and_bad_ones_are_rejected,
    list_cycles_gives_each_cycle_with_its_derived_values_to_its_own_lab_only,
    a_test_whose_daemon_sent_no_cycles_gets_them_computed_from_its_samples,
);
