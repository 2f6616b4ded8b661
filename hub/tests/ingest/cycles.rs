//! Per-cycle results as the hub keeps them: the latest summary of each cycle, on both backends.

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

on_both_backends!(a_cycles_latest_summary_replaces_the_one_before_and_bad_ones_are_rejected);
