//! A linear voltage sweep (Neware's voltage-scan step, aurora-unicycler's `voltage_scan`) as a
//! plan step.
//!
//! A plan has no ramp control, but it has voltage profiles: a sweep becomes a
//! [`Control::Profile`] of kind [`ProfileKind::Voltage`], a staircase from the start voltage to
//! the end voltage in steps of [`STAIR_V`] (coarser when the sweep would need more than
//! [`MAX_STAIRS`] stairs or stairs shorter than [`MIN_STAIR_S`]), each stair lasting
//! `stair / scan rate`, so the mean sweep rate is the source's. The sweep starts at its own
//! start voltage (both sources state one), not at the cell's present voltage: the first stair
//! is a voltage step to it, as on the cycler. The end voltage is held for one stair, then the
//! step ends on its duration.

use crate::compile::native::parse_number;
use crate::compile::neware::{TENTH_MV_PER_V, VOLTAGE_SCAN};
use crate::plan::{ActionStep, Condition, Control, Goto, Profile, ProfileKind, Termination};
use crate::xml::Element;

/// Voltage stair of the staircase, V (1 mV: below the noise of a cell's sweep response).
pub(crate) const STAIR_V: f64 = 0.001;
/// At most this many stairs (a 10 V sweep at 1 mV); a longer sweep takes coarser stairs.
pub(crate) const MAX_STAIRS: usize = 10_000;
/// Shortest stair, s: no cycler steps its setpoint faster than every millisecond.
pub(crate) const MIN_STAIR_S: f64 = 0.001;

/// The plan step of a sweep from `start_v` to `end_v` at `rate_v_per_s` (a magnitude; the
/// direction is from start to end), or why it has none. `path` and `description` are filled
/// in by the caller.
pub(crate) fn voltage_sweep(
    start_v: f64,
    end_v: f64,
    rate_v_per_s: f64,
) -> Result<ActionStep, String> {
    if !(start_v.is_finite() && end_v.is_finite()) {
        return Err(format!(
            "start {start_v} V and end {end_v} V: expected finite voltages"
        ));
    }
    if start_v == end_v {
        return Err(format!(
            "start and end are both {start_v} V: a sweep needs two voltages"
        ));
    }
    if !(rate_v_per_s.is_finite() && rate_v_per_s > 0.0) {
        return Err(format!(
            "scan rate {} mV/s: expected a positive rate",
            rate_v_per_s * 1000.0
        ));
    }
    let span = end_v - start_v;
    let duration = span.abs() / rate_v_per_s;
    if !duration.is_finite() || duration < MIN_STAIR_S {
        return Err(format!(
            "a sweep of {} V at {} mV/s lasts {duration} s: expected at least {MIN_STAIR_S} s",
            span.abs(),
            rate_v_per_s * 1000.0
        ));
    }
    // Less a hair, so 4.2 V - 3.0 V (1.2000000000000002 V) is 1200 stairs, not 1201.
    let by_size = (span.abs() / STAIR_V - 1e-6).ceil();
    let by_time = (duration / MIN_STAIR_S).floor();
    // Both bounds are finite and >= 1 here; the cast saturates.
    let n = (by_size.min(by_time) as usize).clamp(1, MAX_STAIRS);
    let dt = duration / n as f64;
    let points: Vec<(f64, f64)> = (0..=n)
        .map(|k| {
            let v = if k == n {
                end_v
            } else {
                start_v + span * k as f64 / n as f64
            };
            (k as f64 * dt, v)
        })
        .collect();
    let profile = Profile { points, repeat: 1 };
    let ends = Condition::StepTime(profile.pass_duration_s());
    Ok(ActionStep {
        control: Control::Profile {
            kind: ProfileKind::Voltage,
        },
        terminations: vec![Termination {
            condition: ends,
            goto: Goto::Next,
        }],
        profile: Some(profile),
        ..ActionStep::default()
    })
}

/// A voltage-scan step as aurora-unicycler writes it: `<Slope SlopeType="1" Cycle_Count="1"
/// ItemCount="1"><Slope1 StartValue="30000" EndValue="40000" Value="1"/></Slope>` (0.1 mV,
/// 0.1 mV, mV/s), with no `Limit`. Other slope types, several items or repeats, and stop fields
/// on a scan are not confirmed in public material and are refused.
pub(super) fn neware_scan(e: &Element, ignored: [&str; 1]) -> Result<ActionStep, String> {
    let what = format!("Step_Type {VOLTAGE_SCAN} (voltage scan)");
    if let Some(c) = e
        .children
        .iter()
        .find(|c| c.name != "Slope" && !ignored.contains(&c.name.as_str()))
    {
        return Err(format!(
            "unsupported <{}> in a {what} step: expected only Slope (and Record); stop fields on a scan are not confirmed",
            c.name
        ));
    }
    let slope = e
        .find("Slope")
        .ok_or_else(|| format!("a {what} step needs a <Slope> element"))?;
    for (attr, expected) in [("SlopeType", "1"), ("Cycle_Count", "1"), ("ItemCount", "1")] {
        if let Some(v) = slope.get_attr(attr)
            && v.trim() != expected
        {
            return Err(format!(
                "Slope {attr}=\"{v}\": only {attr}=\"{expected}\" (one linear sweep) is confirmed"
            ));
        }
    }
    let [item] = slope.children.as_slice() else {
        return Err(format!(
            "Slope holds {} items: expected exactly one <Slope1>",
            slope.children.len()
        ));
    };
    if item.name != "Slope1" {
        return Err(format!("<{}> in Slope: expected <Slope1>", item.name));
    }
    let attr = |name: &str| -> Result<f64, String> {
        let v = item.get_attr(name).unwrap_or("");
        parse_number(v).ok_or_else(|| format!("Slope1 {name}={v:?}: expected a number"))
    };
    let start = attr("StartValue")? / TENTH_MV_PER_V;
    let end = attr("EndValue")? / TENTH_MV_PER_V;
    let rate_mv_s = attr("Value")?;
    let step = voltage_sweep(start, end, rate_mv_s / 1000.0).map_err(|m| format!("{what}: {m}"))?;
    Ok(ActionStep {
        description: format!("{what}: {start} V to {end} V at {rate_mv_s} mV/s"),
        ..step
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{SourceKind, import};
    use crate::plan::PlanStep;

    /// Written by aurora-unicycler 0.4.6 (`CyclingProtocol.to_neware_xml()`): a rest, two
    /// single sweeps, then a 3-pass cyclic voltammetry loop of two sweeps.
    const UNICYCLER_SCAN: &str = include_str!("../../tests/fixtures/unicycler_voltage_scan.xml");

    #[test]
    fn a_neware_step_file_with_voltage_scans_from_aurora_unicycler_imports_as_voltage_staircases() {
        assert_eq!(SourceKind::detect(UNICYCLER_SCAN), Some(SourceKind::Neware));
        let plan = import(UNICYCLER_SCAN, SourceKind::Neware, "lsv.xml").expect("imports");
        let sweeps: Vec<(&str, &Profile)> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                PlanStep::Action(a) => Some((a.path.as_str(), a.profile.as_ref()?)),
                _ => None,
            })
            .collect();
        assert_eq!(
            sweeps.iter().map(|s| s.0).collect::<Vec<_>>(),
            ["Step2", "Step3", "Step4", "Step5"]
        );
        let ends = |p: &Profile| (p.points[0].1, p.points[p.points.len() - 1].1);
        assert_eq!(ends(sweeps[0].1), (3.0, 4.0));
        assert_eq!(ends(sweeps[1].1), (4.0, 3.0));
        // 1 V at 5 mV/s: 200 s in 1 mV stairs of 0.2 s.
        assert!((sweeps[1].1.points[1000].0 - 200.0).abs() < 1e-9);
        // 1.2 V at 0.5 mV/s: 2400 s.
        assert!((sweeps[2].1.points[1200].0 - 2400.0).abs() < 1e-9);
        assert!(matches!(
            plan.steps[3],
            PlanStep::LoopStart {
                count: 3,
                cycle: true,
                end: 6,
                ..
            }
        ));
        // The plan runs: the engine accepts it within the file's own limits.
        crate::Engine::new(plan, &crate::plan::Safety::default()).expect("runnable plan");
    }

    #[test]
    fn an_imported_voltage_scan_writes_yaml_that_reads_back_the_same_staircase() {
        let plan = import(UNICYCLER_SCAN, SourceKind::Neware, "lsv.xml").expect("imports");
        let yaml = plan.to_yaml();
        let back = crate::Plan::from_yaml(&yaml, "back.yaml")
            .unwrap_or_else(|e| panic!("{e}\n{}", &yaml[..yaml.len().min(2000)]));
        let profiles = |p: &crate::Plan| -> Vec<Profile> {
            p.steps
                .iter()
                .filter_map(|s| match s {
                    PlanStep::Action(a) => a.profile.clone(),
                    _ => None,
                })
                .collect()
        };
        let (a, b) = (profiles(&plan), profiles(&back));
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(&b) {
            assert_eq!(p.points.len(), q.points.len());
            for (x, y) in p.points.iter().zip(&q.points) {
                assert!(
                    (x.0 - y.0).abs() < 1e-6 && (x.1 - y.1).abs() < 1e-9,
                    "{x:?} {y:?}"
                );
            }
        }
    }

    #[test]
    fn voltage_scans_the_importer_cannot_confirm_are_errors_naming_the_step() {
        let with = |slope: &str| {
            UNICYCLER_SCAN.replace(
                r#"<Slope SlopeType="1" Cycle_Count="1" ItemCount="1">
          <Slope1 StartValue="30000.0" EndValue="40000.0" Value="1.0"/>"#,
                slope,
            )
        };
        for (text, says) in [
            (
                with(
                    r#"<Slope SlopeType="2" Cycle_Count="1" ItemCount="1"><Slope1 StartValue="30000.0" EndValue="40000.0" Value="1.0"/>"#,
                ),
                "SlopeType",
            ),
            (
                with(
                    r#"<Slope SlopeType="1" Cycle_Count="3" ItemCount="1"><Slope1 StartValue="30000.0" EndValue="40000.0" Value="1.0"/>"#,
                ),
                "Cycle_Count",
            ),
            (
                with(r#"<Slope><Slope1 StartValue="30000.0" EndValue="30000.0" Value="1.0"/>"#),
                "two voltages",
            ),
            (
                with(r#"<Slope><Slope1 StartValue="30000.0" EndValue="40000.0" Value="0"/>"#),
                "positive rate",
            ),
            (
                with(r#"<Slope><Slope1 StartValue="30000.0" EndValue="40000.0"/>"#),
                "Value",
            ),
            (
                with(
                    r#"<Slope><Slope1 StartValue="30000.0" EndValue="40000.0" Value="1"/><Slope2 StartValue="30000.0" EndValue="40000.0" Value="1"/>"#,
                ),
                "2 items",
            ),
        ] {
            let e = import(&text, SourceKind::Neware, "lsv.xml").unwrap_err();
            assert_eq!(e.location.as_deref(), Some("Step2"), "{e}");
            assert!(
                e.message.contains("Step_Type 25") || e.message.contains("Slope"),
                "{e}"
            );
            assert!(e.message.contains(says), "{e} should say {says:?}");
        }
    }

    #[test]
    fn a_one_volt_sweep_at_one_millivolt_per_second_is_a_millivolt_staircase_of_1000_s() {
        let step = voltage_sweep(3.0, 4.0, 0.001).expect("valid sweep");
        let p = step.profile.expect("a profile");
        assert_eq!(p.points.len(), 1001);
        assert_eq!(p.points[0], (0.0, 3.0));
        assert_eq!(p.points[1000], (1000.0, 4.0));
        assert!((p.value_at(500.5) - 3.5).abs() < 1e-9);
        assert_eq!(
            step.terminations[0].condition,
            Condition::StepTime(p.pass_duration_s())
        );
        assert!((p.pass_duration_s() - 1001.0).abs() < 1e-9);
    }

    #[test]
    fn a_falling_sweep_steps_down_and_a_long_one_takes_coarser_stairs() {
        let p = voltage_sweep(4.0, 3.0, 0.005)
            .expect("valid")
            .profile
            .expect("profile");
        assert!(p.points.windows(2).all(|w| w[1].1 < w[0].1));
        assert!((p.points[1].0 - 0.2).abs() < 1e-12);
        let long = voltage_sweep(0.0, 20.0, 0.001)
            .expect("valid")
            .profile
            .expect("profile");
        assert_eq!(long.points.len(), MAX_STAIRS + 1);
    }

    #[test]
    fn sweeps_without_two_voltages_or_a_positive_finite_duration_are_refused() {
        for (a, b, r) in [
            (3.0, 3.0, 0.001),
            (3.0, 4.0, 0.0),
            (3.0, 4.0, -1.0),
            (3.0, 4.0, f64::NAN),
            (f64::INFINITY, 4.0, 0.001),
            (3.0, 4.0, 1e300),
        ] {
            assert!(voltage_sweep(a, b, r).is_err(), "{a} {b} {r}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_numbers_in_a_voltage_scan_import_as_a_valid_plan_or_an_error(
            start in proptest::prelude::any::<f64>(),
            end in -1e6f64..1e6,
            rate in proptest::prop_oneof![proptest::prelude::any::<f64>(), 1e-9f64..1e4],
        ) {
            let text = UNICYCLER_SCAN.replace(
                r#"StartValue="30000.0" EndValue="40000.0" Value="1.0""#,
                &format!(r#"StartValue="{start}" EndValue="{end}" Value="{rate}""#),
            );
            match import(&text, SourceKind::Neware, "lsv.xml") {
                Ok(plan) => plan.validate().expect("imported plans are valid"),
                Err(e) => proptest::prop_assert_eq!(e.location.as_deref(), Some("Step2")),
            }
        }
    }
}
