//! The control API through the real binaries and over gRPC: start, watch, stop, status,
//! parameters, dead letters.

use super::*;
use tonic::Code;

const PROTOCOL: &str = r#"
protocol: Long charge
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 5 A
steps:
  - "Charge at C/10 until 4.2 V"
"#;

fn metadata() -> HashMap<String, String> {
    [
        ("cell_id", "C1"),
        ("operator", "op"),
        ("owner", "lab"),
        ("objective", "test"),
        ("chemistry", "NMC"),
        ("nominal_capacity_ah", "2.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A one-channel lab whose control API serves on a loopback port until the sender drops.
async fn lab_serving_control() -> (
    SimLab,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let lab = SimLab::start(1, 2.5, 10.0, None).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cyclerd::control::serve(
        lab.daemon.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    (lab, addr, stop)
}

async fn lab_with_control() -> (
    SimLab,
    ControlClient<tonic::transport::Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (lab, addr, stop) = lab_serving_control().await;
    let client = ControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (lab, client, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_without_primary_metadata_is_refused_naming_what_is_missing() {
    let (lab, mut client, _stop) = lab_with_control().await;
    let mut meta = metadata();
    meta.remove("operator");
    meta.remove("chemistry");
    let err = client
        .start_test(StartTestRequest {
            channel_id: "psb1/1".into(),
            protocol_yaml: PROTOCOL.into(),
            metadata: meta,
            params: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("operator") && err.message().contains("chemistry"),
        "{}",
        err.message()
    );
    let err = client
        .start_test(StartTestRequest {
            channel_id: "psb9/1".into(),
            protocol_yaml: PROTOCOL.into(),
            metadata: metadata(),
            params: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    lab.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_test_is_watched_live_and_stop_switches_the_output_off() {
    let (lab, mut client, _stop) = lab_with_control().await;
    let started = client
        .start_test(StartTestRequest {
            channel_id: "psb1/1".into(),
            protocol_yaml: PROTOCOL.into(),
            metadata: metadata(),
            params: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut watch = client.watch(WatchRequest {}).await.unwrap().into_inner();
    let running = tokio::time::timeout(WAIT, async {
        loop {
            let s = watch.message().await.unwrap().unwrap();
            if s.state == "running" && s.samples > 0 {
                return s;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(running.test_id, started.test_id);
    assert!(running.current_a > 0.2, "charging at C/10: {running:?}");
    assert!(lab.sims[0].snapshot().output_on);

    let busy = client
        .start_test(StartTestRequest {
            channel_id: "psb1/1".into(),
            protocol_yaml: PROTOCOL.into(),
            metadata: metadata(),
            params: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition);

    client
        .stop_test(StopTestRequest {
            channel_id: "psb1/1".into(),
            reason: "operator check".into(),
        })
        .await
        .unwrap();
    let stopped = tokio::time::timeout(WAIT, async {
        loop {
            let s = watch.message().await.unwrap().unwrap();
            if s.state == "stopped" {
                return s;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(stopped.reason, "operator check");
    assert!(
        !lab.sims[0].snapshot().output_on,
        "stop leaves the output off"
    );
    let status = client
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.channels.len(), 1);
    let (summary, _, _tmp) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);
}

const CYCLES: &str = r#"
protocol: Short cycles
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 5 A
steps:
  - repeat: 3
    cycle: true
    steps:
      - "Charge at 1C for 6 minutes"
      - "Discharge at 1C for 5 minutes"
"#;

/// The next snapshot from `watch` that `done` accepts.
async fn watch_for(
    watch: &mut tonic::Streaming<ChannelSnapshot>,
    what: &str,
    done: impl Fn(&ChannelSnapshot) -> bool,
) -> ChannelSnapshot {
    let mut last = None;
    tokio::time::timeout(WAIT, async {
        loop {
            let s = watch.message().await.unwrap().unwrap();
            if done(&s) {
                return s;
            }
            last = Some(s);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no snapshot with {what} in time; the last: {last:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_shows_its_cells_open_circuit_voltage_when_idle_and_its_capacities_while_cycling()
{
    let lab = SimLab::start(1, 2.5, 500.0, None).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cyclerd::control::serve(
        lab.daemon.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = ControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut watch = client.watch(WatchRequest {}).await.unwrap().into_inner();
    let idle = watch_for(&mut watch, "an open-circuit voltage", |s| {
        s.voltage_v.is_finite()
    })
    .await;
    assert_eq!(idle.state, "idle");
    assert!((3.0..4.3).contains(&idle.voltage_v), "{idle:?}");
    assert_eq!(idle.current_a, 0.0);
    assert!(
        !lab.sims[0].snapshot().output_on,
        "reading it leaves the output off"
    );

    let started = client
        .start_test(StartTestRequest {
            channel_id: "psb1/1".into(),
            protocol_yaml: CYCLES.into(),
            metadata: metadata(),
            params: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    // 1C = 2.5 A: 0.25 Ah charged and 0.2083 Ah discharged per cycle, CE 5/6.
    let discharging = watch_for(&mut watch, "cycle 2's discharge under way", |s| {
        s.cycle == 2 && s.step_discharge_ah > 0.05 && s.current_a < 0.0
    })
    .await;
    assert_eq!(discharging.test_id, started.test_id);
    assert_eq!(discharging.cell_id, "C1");
    assert_eq!(discharging.protocol_name, "Short cycles");
    assert!(
        discharging.step_description.contains("Discharge"),
        "{discharging:?}"
    );
    // Only what the poll that switched to the discharge still charged.
    assert!(discharging.step_charge_ah < 1e-3, "{discharging:?}");
    assert!(
        (discharging.cycle_charge_ah - 0.25).abs() < 0.01,
        "{discharging:?}"
    );
    assert!(
        (discharging.cycle_discharge_ah - discharging.step_discharge_ah).abs() < 1e-3,
        "{discharging:?}"
    );
    assert!(discharging.charge_capacity_ah > 0.45, "{discharging:?}");
    assert_eq!(discharging.last_full_cycle, 1, "{discharging:?}");
    assert!(
        (discharging.last_full_discharge_ah - 0.2083).abs() < 0.01,
        "{discharging:?}"
    );
    assert!(
        (discharging.last_full_coulombic_efficiency - 5.0 / 6.0).abs() < 0.02,
        "{discharging:?}"
    );

    let finished = watch_for(&mut watch, "the end", |s| s.state == "finished").await;
    assert_eq!(finished.current_a, 0.0, "an ended test shows no current");
    assert_eq!(finished.last_full_cycle, 3, "{finished:?}");
    // The cell's voltage goes on being read, with the output off.
    let later = watch_for(&mut watch, "a reading after the end", |s| {
        s.voltage_v != finished.voltage_v
    })
    .await;
    assert_eq!(later.current_a, 0.0);
    assert!(!lab.sims[0].snapshot().output_on);
    let (summary, _, _tmp) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_over_the_size_limit_is_refused_alike_by_check_and_start() {
    let (lab, control, _stop) = lab_serving_control().await;
    let dir = tempfile::tempdir().unwrap();
    let protocol = dir.path().join("big.yaml");
    // Past the gRPC message limit too: a start used to fail inside the transport.
    let padding = "# a comment line that pads the protocol\n".repeat(130_000);
    std::fs::write(&protocol, format!("{PROTOCOL}{padding}")).unwrap();
    let path = protocol.display().to_string();
    let run = |args: Vec<&str>| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
            .args(args)
            .output()
    };
    let daemon = format!("http://{control}");
    let checked = run(vec!["protocol", "check", &path]).await.unwrap();
    let started = run(vec![
        "start",
        "--daemon",
        &daemon,
        "psb1/1",
        "--protocol",
        &path,
        "--cell",
        "C1",
    ])
    .await
    .unwrap();
    for out in [&checked, &started] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("a protocol document takes at most 2097152 bytes"),
            "{err}"
        );
    }
    assert_eq!(lab.daemon.snapshot("psb1/1").unwrap().state, "idle");
    lab.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclerctl_start_takes_a_metadata_file_and_names_what_is_missing() {
    let (lab, control, _stop) = lab_serving_control().await;
    let dir = tempfile::tempdir().unwrap();
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, PROTOCOL).unwrap();
    let meta = dir.path().join("cell.toml");
    std::fs::write(
        &meta,
        "operator = \"ana\"\nowner = \"lab\"\nobjective = \"check\"\nchemistry = \"NMC\"\n\
             nominal_capacity_ah = 2.5\n[secondary]\nform_factor = \"21700\"\n",
    )
    .unwrap();
    let cyclerctl = |extra: &[&str]| {
        let mut args = vec![
            "start".to_string(),
            "--daemon".into(),
            format!("http://{control}"),
            "psb1/1".into(),
            "--protocol".into(),
            protocol.display().to_string(),
            "--meta-file".into(),
            meta.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
            .args(args)
            .output()
    };
    let missing = cyclerctl(&[]).await.unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("missing primary metadata: cell_id"), "{err}");
    let started = cyclerctl(&["--cell", "C7", "--meta", "tertiary.shelf=3"])
        .await
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let test_id = lab.daemon.snapshot("psb1/1").unwrap().test_id;
    lab.daemon.stop_test("psb1/1", "").await.unwrap();
    let (_, dir, _tmp) = lab.stop(WAIT).await.unwrap();
    let hub = cyclerhub::HubStore::open(dir.join("hub.sqlite")).unwrap();
    let row = hub.test(&test_id).unwrap().unwrap();
    assert_eq!(row.metadata["cell_id"], "C7");
    assert_eq!(row.metadata["secondary.form_factor"], "21700");
    assert_eq!(row.metadata["tertiary.shelf"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclerctl_start_param_capacity_sets_the_c_rates_and_prints_which_capacity_was_used() {
    let (lab, control, _stop) = lab_serving_control().await;
    let dir = tempfile::tempdir().unwrap();
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, PROTOCOL).unwrap();
    let mut args = vec![
        "start".to_string(),
        "--daemon".into(),
        format!("http://{control}"),
        "psb1/1".into(),
        "--protocol".into(),
        protocol.display().to_string(),
    ];
    for (k, v) in metadata() {
        args.extend(["--meta".to_string(), format!("{k}={v}")]);
    }
    args.extend(["--param".to_string(), "capacity=2Ah".to_string()]);
    let started = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
        .args(&args)
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&started.stdout);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert!(
        out.contains(
            "note: C-rates use 2 Ah (given at start), not the protocol's capacity of 2.5 Ah"
        ),
        "{out}"
    );
    let test_id = lab.daemon.snapshot("psb1/1").unwrap().test_id;
    // Some samples at C/10 before the stop.
    let mut live = lab.daemon.watchers().remove(0);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples >= 3))
        .await
        .expect("the charge records samples")
        .unwrap();
    lab.daemon.stop_test("psb1/1", "").await.unwrap();
    let (_, dir, _tmp) = lab.stop(WAIT).await.unwrap();
    let hub = cyclerhub::HubStore::open(dir.join("hub.sqlite")).unwrap();
    let (_, plan_json) = hub.protocol(&test_id).unwrap().unwrap();
    let plan: serde_json::Value = serde_json::from_str(&plan_json).unwrap();
    assert_eq!(plan["params"]["capacity"], "2Ah", "{plan_json}");
    let events = hub.events(&test_id).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("C-rates use 2 Ah")),
        "{events:?}"
    );
    // C/10 of 2 Ah.
    let samples = hub.samples(&test_id).unwrap();
    assert!(
        samples.iter().any(|s| (s.current_a - 0.2).abs() < 0.01),
        "{:?}",
        samples.iter().map(|s| s.current_a).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclerctl_protocol_check_takes_param_values() {
    let dir = tempfile::tempdir().unwrap();
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, PROTOCOL).unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec!["protocol".to_string(), "check".into()];
        args.push(protocol.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        std::process::Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
            .args(args)
            .output()
            .unwrap()
    };
    let given = check(&["--param", "capacity=5 Ah"]);
    let out = String::from_utf8_lossy(&given.stdout);
    assert!(out.contains("capacity 5 Ah"), "{out}");
    let typo = check(&["--param", "vmax=4.1V"]);
    assert!(!typo.status.success());
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(err.contains("unknown parameter \"vmax\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_hub_rejects_is_shown_as_a_dead_letter_and_can_be_retried() {
    let (lab, mut client, _stop) = lab_with_control().await;
    let outbox = lab.daemon.outbox().clone();
    outbox
        .append(Body::Event(Event {
            test_id: "no-such-test".into(),
            kind: "state".into(),
            ..Default::default()
        }))
        .unwrap();
    outbox.flush().await.unwrap();
    assert!(
        outbox.caught_up(deadline()).await,
        "the rejected entry is parked, not stuck"
    );
    let status = client
        .get_outbox(GetOutboxRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.dead_letters, 1);
    assert_eq!(status.pending_entries, 0);
    assert!(status.path.ends_with("outbox.sqlite"));
    let alarms = client
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .alarms;
    assert!(
        alarms.iter().any(|a| a.contains("dead letters")),
        "{alarms:?}"
    );
    let retried = client
        .retry_dead_letters(RetryDeadLettersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.requeued, 1);
    // The hub still does not know the test, so the entry comes back as a dead letter.
    assert!(outbox.caught_up(deadline()).await);
    let status = client
        .get_outbox(GetOutboxRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.dead_letters, 1);
    lab.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_alarm_faults_the_test_and_leaves_the_output_off() {
    let (lab, mut client, _stop) = lab_with_control().await;
    client
        .start_test(StartTestRequest {
            channel_id: "psb1/1".into(),
            protocol_yaml: PROTOCOL.into(),
            metadata: metadata(),
            params: Default::default(),
        })
        .await
        .unwrap();
    let mut watch = client.watch(WatchRequest {}).await.unwrap().into_inner();
    lab.sims[0].set_alarm(true);
    let faulted = tokio::time::timeout(WAIT, async {
        loop {
            let s = watch.message().await.unwrap().unwrap();
            if s.state == "faulted" {
                return s;
            }
        }
    })
    .await
    .unwrap();
    assert!(faulted.reason.contains("alarm"), "{}", faulted.reason);
    assert!(!lab.sims[0].snapshot().output_on);
    lab.stop(WAIT).await.unwrap();
}
