//! The checker's unit and property tests.

use super::*;
use proptest::prelude::*;

/// A clean charge at 1 A, a sample per second: voltage rising, capacity accounted.
fn clean(n: u64) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let t = i as f64;
            Point {
                seq: i + 1,
                test_time_s: t,
                voltage_v: 3.5 + t * 1e-4,
                current_a: 1.0,
                cycle: 1,
                step: 1,
                charge_capacity_ah: t / 3600.0,
                discharge_capacity_ah: 0.0,
                charge_energy_wh: t * 3.6 / 3600.0,
                discharge_energy_wh: 0.0,
                temperature_c: Some(25.0 + t * 1e-3),
            }
        })
        .collect()
}

fn run(points: &[Point], expected: Option<Direction>, t: Thresholds) -> Vec<Finding> {
    let mut c = Checker::new(t);
    let mut out = Vec::new();
    for p in points {
        out.extend(c.observe(p, expected));
    }
    out.extend(c.finish());
    out
}

#[test]
fn a_clean_charge_has_no_finding() {
    assert_eq!(
        run(&clean(2000), Some(Direction::Charge), Thresholds::default()),
        []
    );
}

#[test]
fn a_stuck_voltage_is_one_finding_from_its_first_equal_sample_to_its_last() {
    let mut points = clean(1000);
    for p in &mut points[100..600] {
        p.voltage_v = 3.51;
    }
    let f = run(&points, None, Thresholds::default());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].check, Check::VoltageStuck);
    // Seqs are index + 1: the equal samples are seqs 101..=600, flagged from the 300th on
    // but reported from the first.
    assert_eq!((f[0].first_seq, f[0].last_seq), (101, 600));
    assert!(
        f[0].message()
            .starts_with("voltage_stuck seq 101..600: voltage 3.51 V")
    );
}

#[test]
fn a_current_of_the_wrong_sign_is_flagged_for_the_samples_it_lasts() {
    let mut points = clean(100);
    for p in &mut points[10..20] {
        p.current_a = -1.0;
    }
    let f = run(&points, Some(Direction::Charge), Thresholds::default());
    let sign: Vec<_> = f.iter().filter(|f| f.check == Check::CurrentSign).collect();
    assert_eq!(sign.len(), 1);
    assert_eq!((sign[0].first_seq, sign[0].last_seq), (11, 20));
    assert!(
        sign[0].reason.contains("in a charge step"),
        "{}",
        sign[0].reason
    );
}

#[test]
fn time_running_back_a_gap_and_broken_accounting_are_each_found() {
    let mut points = clean(50);
    points[10].test_time_s = 5.0;
    for p in &mut points[30..] {
        p.test_time_s += 120.0;
    }
    points[40].charge_capacity_ah = 0.0;
    let checks: Vec<(Check, u64)> = run(&points, None, Thresholds::default())
        .iter()
        .map(|f| (f.check, f.first_seq))
        .collect();
    assert!(
        checks.contains(&(Check::TimeNotIncreasing, 11)),
        "{checks:?}"
    );
    assert!(checks.contains(&(Check::TimeGap, 31)), "{checks:?}");
    assert!(checks.contains(&(Check::Accounting, 41)), "{checks:?}");
}

#[test]
fn out_of_range_readings_and_a_temperature_jump_are_found() {
    let mut points = clean(20);
    points[3].voltage_v = 12.0;
    points[5].current_a = f64::NAN;
    points[8].temperature_c = Some(25.1 + 30.0);
    let checks: Vec<Check> = run(&points, None, Thresholds::default())
        .iter()
        .map(|f| f.check)
        .collect();
    for c in [
        Check::VoltageRange,
        Check::CurrentRange,
        Check::TemperatureRate,
    ] {
        assert!(checks.contains(&c), "{c:?} in {checks:?}");
    }
}

#[test]
fn thresholds_that_make_no_sense_are_refused_naming_the_key() {
    let bad = Thresholds {
        voltage_min_v: 5.0,
        voltage_max_v: 4.0,
        ..Thresholds::default()
    };
    assert!(bad.validate().unwrap_err().contains("voltage_min_v"));
    let bad = Thresholds {
        max_gap_s: f64::NAN,
        ..Thresholds::default()
    };
    assert!(bad.validate().unwrap_err().contains("max_gap_s"));
    assert_eq!(Thresholds::default().validate(), Ok(()));
    for c in CHECKS {
        assert_eq!(Check::from_name(c.name()), Some(c));
    }
}

#[test]
fn a_run_still_going_is_reported_open_and_goes_on_after_the_state_is_serialised() {
    let mut points = clean(700);
    for p in &mut points[100..] {
        p.voltage_v = 3.51;
    }
    let mut c = Checker::new(Thresholds::default());
    for p in &points[..500] {
        assert_eq!(c.observe(p, None), []);
    }
    let open = c.open_findings();
    assert_eq!(open.len(), 1);
    assert!(open[0].open);
    assert_eq!((open[0].first_seq, open[0].last_seq), (101, 500));
    let json = serde_json::to_string(&c).unwrap();
    let mut c: Checker = serde_json::from_str::<Checker>(&json)
        .unwrap()
        .with_thresholds(Thresholds::default());
    assert_eq!(c.next_seq(), 501);
    for p in &points[500..] {
        assert_eq!(c.observe(p, None), []);
    }
    let f = c.finish();
    assert_eq!(
        (f[0].first_seq, f[0].last_seq, f[0].open),
        (101, 700, false)
    );
    assert_eq!(
        (f[0].first_test_time_s, f[0].last_test_time_s),
        (100.0, 699.0)
    );
}

#[test]
fn the_first_sample_of_a_step_is_not_checked_for_its_sign() {
    let mut points = clean(20);
    // Step 2 (a discharge) begins at seq 11, measured while the charge ended.
    for p in &mut points[10..] {
        p.step = 2;
        p.current_a = -1.0;
        p.charge_capacity_ah = points_charge(9);
    }
    points[10].current_a = 1.0;
    let mut c = Checker::new(Thresholds::default());
    let mut f = Vec::new();
    for p in &points {
        let d = if p.step == 1 {
            Direction::Charge
        } else {
            Direction::Discharge
        };
        f.extend(c.observe(p, Some(d)));
    }
    f.extend(c.finish());
    assert!(f.iter().all(|f| f.check != Check::CurrentSign), "{f:?}");
}

fn points_charge(i: u64) -> f64 {
    i as f64 / 3600.0
}

#[test]
fn a_voltage_held_by_its_step_is_not_stuck() {
    let mut points = clean(1000);
    for p in &mut points[100..600] {
        p.voltage_v = 4.2;
    }
    let held = Expected {
        direction: Some(Direction::Charge),
        holds_voltage: true,
        amps: None,
    };
    let mut c = Checker::new(Thresholds::default());
    let mut f = Vec::new();
    for p in &points {
        f.extend(c.observe(p, held));
    }
    f.extend(c.finish());
    assert_eq!(f, []);
}

#[test]
fn a_current_off_the_commanded_one_is_flagged_but_not_at_a_step_start_nor_twice_with_a_sign_error()
{
    let mut points = clean(100);
    // Half the commanded 1 A over seqs 31..=40; the wrong sign over 61..=65.
    for p in &mut points[30..40] {
        p.current_a = 0.5;
    }
    for p in &mut points[60..65] {
        p.current_a = -1.0;
    }
    let commanded = Expected {
        direction: Some(Direction::Charge),
        amps: Some(1.0),
        ..Expected::default()
    };
    let mut c = Checker::new(Thresholds::default());
    let mut f = Vec::new();
    for p in &points {
        f.extend(c.observe(p, commanded));
    }
    f.extend(c.finish());
    let runs: Vec<_> = f
        .iter()
        .map(|f| (f.check, f.first_seq, f.last_seq))
        .collect();
    assert!(runs.contains(&(Check::CurrentMagnitude, 31, 40)), "{f:?}");
    assert!(runs.contains(&(Check::CurrentSign, 61, 65)), "{f:?}");
    assert_eq!(
        runs.iter()
            .filter(|r| r.0 == Check::CurrentMagnitude)
            .count(),
        1,
        "{f:?}"
    );
    // 5 % off is within the default 10 %.
    let mut close = clean(50);
    for p in &mut close {
        p.current_a = 0.95;
    }
    let mut c = Checker::new(Thresholds::default());
    let mut f = Vec::new();
    for p in &close {
        f.extend(c.observe(p, commanded));
    }
    f.extend(c.finish());
    assert_eq!(f, []);
}

proptest! {
    /// Any samples at all: findings, never a panic, and every run inside the seqs seen.
    #[test]
    fn any_samples_give_findings_within_their_seqs(
        raw in proptest::collection::vec(
            (any::<f64>(), any::<f64>(), any::<f64>(), any::<f64>(), proptest::option::of(any::<f64>())),
            0..200,
        ),
    ) {
        let points: Vec<Point> = raw
            .iter()
            .enumerate()
            .map(|(i, (t, v, a, q, temp))| Point {
                seq: i as u64 + 1,
                test_time_s: *t,
                voltage_v: *v,
                current_a: *a,
                cycle: 1,
                step: 1,
                charge_capacity_ah: *q,
                discharge_capacity_ah: 0.0,
                charge_energy_wh: 0.0,
                discharge_energy_wh: 0.0,
                temperature_c: *temp,
            })
            .collect();
        for f in run(&points, Some(Direction::Discharge), Thresholds::default()) {
            prop_assert!(f.first_seq >= 1 && f.first_seq <= f.last_seq);
            prop_assert!(f.last_seq <= points.len() as u64);
        }
    }
}
