//! BDF 1.3 exports checked as a reader would: the validator identities on every format, the
//! parameters in the metadata, and step types from the plan.

use super::*;

#[tokio::test]
async fn every_bdf_export_format_passes_the_bdf_validator_identities() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::BdfCsv, Format::BdfParquet] {
        let exported = export::export_files(
            &hub.store,
            TEST_ID,
            format,
            &dir.path().join("cycling"),
            None,
        )
        .expect("export");
        let data = &exported.files[0];
        let name = data.file_name().unwrap().to_str().unwrap();
        let table = match format {
            Format::BdfCsv => {
                assert_eq!(name, "cycling.bdf.csv");
                BdfTable::from_csv(data)
            }
            _ => {
                assert_eq!(name, "cycling.bdf.parquet");
                BdfTable::from_parquet(data)
            }
        };
        assert_eq!(table.column("Record Index / 1").len(), SAMPLES, "{name}");
        table.check_validator_identities();
        // The test's plan names no step: charges and discharges are typed by their current.
        let types = &table.texts["Step Type"];
        assert_eq!(types[0], "CC_CHG");
        assert_eq!(types[HALF_CYCLE], "CC_DCH");
        let header: Vec<&str> = table.header.iter().map(String::as_str).collect();
        assert!(header.contains(&"Temperature T1 / degC"), "{name}");
        assert!(!header.contains(&"Surface Temperature T1 / degC"), "{name}");
    }
    hub.shutdown().await;
}

#[test]
fn the_metadata_json_says_which_parameters_the_test_ran_with() {
    const T: &str = "0190a0c0-0000-7000-8000-0000000000f2";
    let yaml = "protocol: p\nversion: 1\nparams: {capacity: 2.5 Ah, v_max: 4.2 V}\n\
                safety: {voltage: [2.5 V, 4.25 V], current: 5 A}\n\
                steps: [\"Charge at C/2 until {v_max}\"]\n";
    let given = [("capacity".to_string(), "5 Ah".to_string())].into();
    let none = |_: &str| Err("no files".to_string());
    let plan =
        cyclerd_protocols::Plan::from_yaml_with_params(yaml, "p.yaml", &none, &given).unwrap();
    let Some(Body::TestRegistered(mut test)) = registered(1, T).body else {
        unreachable!("registered builds a TestRegistered")
    };
    test.plan_json = plan.to_json();
    let db = Database::new(Backend::Sqlite);
    let store = db.connect();
    store
        .apply_batch(
            "daemon-a",
            1,
            &[entry(1, Body::TestRegistered(test)), samples(2, T, 0, 10)],
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exported =
        export::export_files(&store, T, Format::BdfCsv, &dir.path().join("p.csv"), None).unwrap();
    let json = read_json(exported.files.last().unwrap());
    let parameters = &json["protocol"]["parameters"];
    assert_eq!(parameters["capacity"], "5 Ah", "{json:#}");
    assert_eq!(parameters["v_max"], "4.2 V", "{json:#}");
}

/// A discharge to 3.2 V, then a hold at 3.0 V until 100 mA.
fn discharge_and_hold_plan() -> cyclerd_protocols::Plan {
    let yaml = r#"
protocol: Discharge and hold
version: 1
params: {capacity: 1 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Discharge at 1 A until 3.2 V", "Hold at 3.0 V until 100 mA"]
"#;
    cyclerd_protocols::Plan::from_yaml(yaml, "hold.yaml").unwrap()
}

/// `n` samples of [`discharge_and_hold_plan`] for `test_id`: ten of step 1, 1 s apart at -1 A
/// from 3.5 V down to 3.2 V; then step 2, the hold at 3.0 V, caught while the voltage still
/// falls and the current decays, so that its samples alone would make it a PROFILE.
fn discharge_and_hold_samples(test_id: &str, n: usize) -> SampleBatch {
    let mut b = batch(test_id, 0, n, false);
    let mut discharged = 0.0;
    for i in 0..n {
        let (v, a) = if i < 10 {
            (3.5 - 0.03 * i as f64, -1.0)
        } else {
            (3.2 - 0.02 * (i - 10) as f64, -1.0 + 0.09 * (i - 10) as f64)
        };
        discharged += -a / 3600.0;
        b.voltage_v[i] = v;
        b.current_a[i] = a;
        b.step[i] = if i < 10 { 1 } else { 2 };
        b.charge_capacity_ah[i] = 0.0;
        b.charge_energy_wh[i] = 0.0;
        b.discharge_capacity_ah[i] = discharged;
        b.discharge_energy_wh[i] = discharged * 3.2;
    }
    b
}

#[tokio::test]
async fn a_step_named_in_the_test_plan_takes_its_step_type_from_the_plan_step_not_the_current() {
    const T: &str = "0190a0c0-0000-7000-8000-0000000000f1";
    let plan = discharge_and_hold_plan();
    let descriptions: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            cyclerd_protocols::PlanStep::Action(a) => Some(a.description.clone()),
            _ => None,
        })
        .collect();
    let Some(Body::TestRegistered(mut test)) = registered(1, T).body else {
        unreachable!("registered builds a TestRegistered")
    };
    test.plan_json = plan.to_json();
    let n = 20;
    let b = discharge_and_hold_samples(T, n);
    let step_event = |id: u64, step: u32| {
        let mut e = event(id, T, &descriptions[step as usize - 1]);
        if let Some(Body::Event(ev)) = &mut e.body {
            ev.step = step;
        }
        e
    };
    let mut up_hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = up_hub.upload("daemon-a", 1).await;
    up.send_entries([
        entry(1, Body::TestRegistered(test)),
        step_event(2, 1),
        entry(3, Body::Samples(b)),
        step_event(4, 2),
    ])
    .await;
    up.until_ack(4).await;

    let dir = tempfile::tempdir().unwrap();
    let exported = export::export_files(
        &up_hub.store,
        T,
        Format::BdfCsv,
        &dir.path().join("hold.csv"),
        None,
    )
    .unwrap();
    let table = BdfTable::from_csv(&exported.files[0]);
    table.check_validator_identities();
    let types = &table.texts["Step Type"];
    assert!(types[..10].iter().all(|t| t == "CC_DCH"), "{types:?}");
    assert!(types[10..].iter().all(|t| t == "CV_DCH"), "{types:?}");
    // Without the plan, the same samples are typed by their current.
    let shape: Vec<(f64, f64)> = (10..n)
        .map(|i| {
            (
                table.column("Voltage / V")[i],
                table.column("Current / A")[i],
            )
        })
        .collect();
    assert_eq!(
        cyclerd_protocols::bdf::StepType::of_samples(&shape).label(),
        "PROFILE"
    );
    up_hub.shutdown().await;
}

#[tokio::test]
async fn samples_that_name_their_plan_step_keep_it_and_take_their_step_type_from_it_without_events()
{
    const T: &str = "0190a0c0-0000-7000-8000-0000000000f2";
    const OLD: &str = "0190a0c0-0000-7000-8000-0000000000f3";
    let plan = discharge_and_hold_plan();
    let Some(Body::TestRegistered(mut test)) = registered(1, T).body else {
        unreachable!("registered builds a TestRegistered")
    };
    test.plan_json = plan.to_json();
    // The hold, caught while the voltage still falls and the current decays, would be a
    // PROFILE by its samples; no step event names it, only the samples' plan_step.
    let n = 20;
    let mut b = discharge_and_hold_samples(T, n);
    b.plan_step = (0..n).map(|i| u32::from(i >= 10)).collect();
    let Some(Body::TestRegistered(old_test)) = registered(3, OLD).body else {
        unreachable!("registered builds a TestRegistered")
    };
    let mut up_hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = up_hub.upload("daemon-a", 1).await;
    up.send_entries([
        entry(1, Body::TestRegistered(test)),
        entry(2, Body::Samples(b)),
        entry(3, Body::TestRegistered(old_test)),
        entry(4, Body::Samples(batch(OLD, 0, 3, false))),
    ])
    .await;
    up.until_ack(4).await;

    let stored: Vec<Option<u32>> = up_hub
        .store
        .samples(T)
        .unwrap()
        .iter()
        .map(|s| s.plan_step)
        .collect();
    assert_eq!(stored[..10], [Some(0); 10]);
    assert_eq!(stored[10..], [Some(1); 10]);
    let old = up_hub.store.samples(OLD).unwrap();
    assert!(
        old.iter().all(|s| s.plan_step.is_none()),
        "a batch without the column stores no plan step: {old:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let exported = export::export_files(
        &up_hub.store,
        T,
        Format::BdfCsv,
        &dir.path().join("hold.csv"),
        None,
    )
    .unwrap();
    let table = BdfTable::from_csv(&exported.files[0]);
    let types = &table.texts["Step Type"];
    assert!(types[..10].iter().all(|t| t == "CC_DCH"), "{types:?}");
    assert!(types[10..].iter().all(|t| t == "CV_DCH"), "{types:?}");
    up_hub.shutdown().await;
}
