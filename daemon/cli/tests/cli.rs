//! The binaries and the simulated lab: the daemon in process with its control API, `cyclerctl`
//! and `cyclerd` as child processes, over real sockets, files and pseudo-terminals; the control
//! API's tokens and TLS in `cli/control_auth.rs`.

use cyclerd::proto::control::control_client::ControlClient;
use cyclerd::proto::control::*;
use cyclerd::proto::ingest::{Event, entry::Body};
use cyclerd_cli::lab::SimLab;
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + WAIT
}

mod control {
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
            "--daemon",
            &daemon,
            "start",
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
                "--daemon".to_string(),
                format!("http://{control}"),
                "start".into(),
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
            "--daemon".to_string(),
            format!("http://{control}"),
            "start".into(),
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
}

#[path = "cli/control_auth.rs"]
mod control_auth;

mod pair {
    use super::*;
    use cyclerd::Daemon;
    use cyclerd::config::Config;
    use cyclerd_drivers::Clock;
    use cyclerd_drivers::cell::{CellParams, Chemistry};
    use cyclerd_drivers::scpi::{ScpiSim, SimConfig, SimDialect};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_supply_and_a_load_form_one_bidirectional_channel() {
        let clock = Clock::scaled(1000.0);
        let cell = CellParams {
            initial_soc: 0.5,
            ..CellParams::new(Chemistry::Nmc, 2.5)
        };
        let supply = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let load = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sims = ScpiSim::spawn_bench(
            vec![
                (supply.into(), SimConfig::new(SimDialect::EaPsb, "S1")),
                (load.into(), SimConfig::new(SimDialect::Bk8600, "L1")),
            ],
            cell,
            clock.clone(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[store]\npath = {store:?}\n[hub]\naddress = \"http://127.0.0.1:9\"\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.25\ncurrent_max = 5.0\n\
             [[device]]\nname = \"psu\"\nfamily = \"scpi\"\naddress = \"{s}\"\n\
             [[device]]\nname = \"load\"\nfamily = \"scpi\"\naddress = \"{l}\"\n\
             [[channel]]\nid = \"psu/1\"\nload = \"load\"\n",
            store = dir.path().join("o.sqlite").display().to_string(),
            s = sims[0].endpoint(),
            l = sims[1].endpoint(),
        );
        let config = Config::from_toml(&text, "pair.toml").unwrap();
        let daemon = Daemon::start(config, "pair.toml", clock).await.unwrap();
        let protocol = r#"
protocol: Up and down
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Charge at C/2 until 4.0 V", "Discharge at 1C until 3.5 V"]
"#;
        let meta: HashMap<String, String> = [
            ("cell_id", "P1"),
            ("operator", "op"),
            ("owner", "lab"),
            ("objective", "pair"),
            ("chemistry", "NMC"),
            ("nominal_capacity_ah", "2.5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        daemon
            .start_test("psu/1", protocol, "p.yaml", meta)
            .await
            .unwrap();
        tokio::time::timeout(WAIT, daemon.wait_all_done())
            .await
            .unwrap();
        let end = daemon.snapshot("psu/1").unwrap();
        assert_eq!(end.state, "finished", "{}", end.reason);
        assert!(
            end.charge_capacity_ah > 0.1 && end.discharge_capacity_ah > 0.1,
            "{end:?}"
        );
        assert!(!sims[0].snapshot().output_on && !sims[1].snapshot().output_on);
        daemon.shutdown(Duration::from_millis(10)).await;
    }
}

mod recording {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_restart_acquired_and_acknowledged_samples_count_over_the_same_span() {
        let mut lab = SimLab::start(1, 2.5, 500.0, None).await.unwrap();
        let protocol = r#"
protocol: Short rest
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Rest for 2 minutes"]
"#;
        lab.start_everywhere(protocol, "rest.yaml").await.unwrap();
        tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
            .await
            .unwrap();
        let first = lab.restart_daemon(WAIT).await.unwrap();
        assert_eq!(first.lost(), 0);
        assert!(first.samples_acknowledged > 0);
        let status = lab.daemon.status();
        assert_eq!(status.samples_acquired, first.samples_acquired);
        assert_eq!(status.samples_acknowledged, first.samples_acknowledged);
        lab.stop(WAIT).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recording_rules_keep_the_step_ends_and_one_sample_a_minute() {
        // 100x: a 60 ms stall of a loaded machine is 6 s of test time, well inside the margin.
        let lab = SimLab::start(1, 2.5, 100.0, None).await.unwrap();
        let protocol = r#"
protocol: Sparse rest
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
record: {every: 60 s}
steps: ["Rest for 10 minutes"]
"#;
        let tests = lab.start_everywhere(protocol, "sparse.yaml").await.unwrap();
        tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
            .await
            .unwrap();
        let (summary, dir, _keep) = lab.stop(WAIT).await.unwrap();
        assert_eq!(summary.lost(), 0);
        let hub = cyclerhub::HubStore::open(dir.join("hub.sqlite")).unwrap();
        let samples = hub.samples(&tests[0]).unwrap();
        // The first sample, one a minute, and the one that ended the rest.
        assert!(
            (8..=13).contains(&samples.len()),
            "{} samples kept",
            samples.len()
        );
        assert!(samples.last().unwrap().test_time_s >= 600.0);
        // A minute apart, give or take one poll (which a loaded machine stretches).
        for pair in samples.windows(2) {
            let gap = pair[1].test_time_s - pair[0].test_time_s;
            assert!(gap <= 90.0, "{gap} s between kept samples");
        }
    }
}

mod command_line {
    use std::process::Command;

    fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("lab.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn config(store: &std::path::Path, listen: &str, extra: &str) -> String {
        format!(
            "[store]\npath = {store:?}\n[hub]\naddress = \"http://127.0.0.1:9\"\n[control]\nlisten = \"{listen}\"\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.2\ncurrent_max = 5.0\n{extra}"
        )
    }

    fn run(path: &std::path::Path) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_cyclerd"))
            .args(["run", "--config"])
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[tokio::test]
    async fn cyclerd_sim_serves_a_psb_that_the_driver_identifies() {
        use cyclerd_drivers::ea_psb::PsbClient;
        let args = [
            "sim",
            "ea-psb",
            "--listen",
            "127.0.0.1:0",
            "--serial",
            "T42",
        ];
        let mut sim = announced(&args, &[]).await;
        assert!(sim.first.starts_with("simulated EA PSB"), "{}", sim.first);
        let timeout = std::time::Duration::from_secs(5);
        let client = PsbClient::connect(sim.first_addr(), 1, timeout, None)
            .await
            .unwrap();
        assert_eq!(client.identity().serial, "T42");
        sim.child.kill().await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn cyclerd_sim_serves_a_serial_scpi_instrument_on_the_linked_path() {
        use cyclerd_drivers::scpi::{Dialect, ScpiClient, ScpiOptions};
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("itech");
        let args = ["sim", "scpi", "--model", "itech-it6000", "--pty"];
        let (mut sim, endpoint) = announced_on_pty(&args, &link, 9600).await;
        let client = ScpiClient::connect(endpoint, ScpiOptions::default())
            .await
            .unwrap();
        assert_eq!(client.dialect(), Dialect::ItechIt6000);
        sim.child.kill().await.unwrap();
    }

    #[tokio::test]
    async fn cyclerd_sim_watlow_serves_a_chamber_whose_temperature_the_driver_reads() {
        use cyclerd_drivers::chamber::{Chamber, thermal::ROOM_C};
        use cyclerd_drivers::watlow::{WatlowClient, WatlowOptions};
        let mut sim = announced(&["sim", "watlow", "--listen", "127.0.0.1:0"], &[]).await;
        assert!(
            sim.first.starts_with("simulated Watlow F4T"),
            "{}",
            sim.first
        );
        let mut client = WatlowClient::connect(sim.first_addr(), WatlowOptions::default())
            .await
            .unwrap();
        let r = client.read().await.unwrap();
        assert!((r.temperature_c - ROOM_C).abs() < 1.0, "{r:?}");
        sim.child.kill().await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn cyclerd_sim_binder_serves_a_chamber_on_the_linked_path_whose_temperature_the_driver_reads()
     {
        use cyclerd_drivers::binder::{BinderClient, BinderOptions, wire};
        use cyclerd_drivers::chamber::{Chamber, thermal::ROOM_C};
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("binder");
        let args = ["sim", "binder", "--pty"];
        let (mut sim, endpoint) = announced_on_pty(&args, &link, wire::BAUD_RATE).await;
        let mut client = BinderClient::connect(endpoint, BinderOptions::default())
            .await
            .unwrap();
        let r = client.read().await.unwrap();
        assert!((r.temperature_c - ROOM_C).abs() < 1.0, "{r:?}");
        sim.child.kill().await.unwrap();
    }

    /// A `cyclerd sim ...` child and what it announced on stdout.
    struct Announced {
        /// The simulator, killed when dropped.
        child: tokio::process::Child,
        /// Kept open: the child may still print, and a closed pipe would make it fail.
        _lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
        /// The first line: what is simulated (and where, for a one-line announcement).
        first: String,
        /// The first word after each `  key: ` line asked for.
        values: std::collections::HashMap<String, String>,
    }

    impl Announced {
        /// Where a one-line announcement (`simulated ... on ADDR, ...`) says it listens.
        fn first_addr(&self) -> std::net::SocketAddr {
            self.first
                .split_once(" on ")
                .and_then(|(_, rest)| rest.split(',').next())
                .and_then(|addr| addr.parse().ok())
                .unwrap_or_else(|| panic!("no address in {:?}", self.first))
        }

        fn value(&self, key: &str) -> &str {
            &self.values[key]
        }

        fn addr(&self, key: &str) -> std::net::SocketAddr {
            self.value(key)
                .parse()
                .unwrap_or_else(|e| panic!("{key}: {:?}: {e}", self.value(key)))
        }
    }

    /// Starts `cyclerd ARGS` and reads its stdout until its first line and every `key` have been
    /// announced.
    async fn announced(args: &[&str], keys: &[&str]) -> Announced {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerd"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut values = std::collections::HashMap::new();
        let mut seen = Vec::new();
        while seen.is_empty() || !keys.iter().all(|k| values.contains_key(*k)) {
            let line = tokio::time::timeout_at(super::deadline(), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {keys:?} announced in time; got {seen:?}"))
                .unwrap()
                .unwrap_or_else(|| panic!("cyclerd {args:?} ended after {seen:?}"));
            if let Some((key, rest)) = line.trim_start().split_once(": ")
                && let Some(word) = rest.split_whitespace().next()
            {
                values.insert(key.to_string(), word.to_string());
            }
            seen.push(line);
        }
        assert!(seen[0].starts_with("simulated "), "{seen:?}");
        Announced {
            child,
            _lines: lines,
            first: seen.remove(0),
            values,
        }
    }

    /// Starts `cyclerd ARGS --pty LINK` and waits for its announcement naming `link`; returns
    /// the child and the line's endpoint at `baud`.
    #[cfg(unix)]
    async fn announced_on_pty(
        args: &[&str],
        link: &std::path::Path,
        baud: u32,
    ) -> (Announced, cyclerd_drivers::transport::Endpoint) {
        let path = link.to_str().expect("a UTF-8 temporary path");
        let sim = announced(&[args, &[path]].concat(), &[]).await;
        assert!(sim.first.contains(path), "{}", sim.first);
        let endpoint = cyclerd_drivers::transport::Endpoint::Serial {
            path: path.to_string(),
            baud,
        };
        (sim, endpoint)
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn cyclerd_sim_neware_serves_its_units_channels_runs_a_step_file_from_its_folder_and_removes_the_folder_on_exit()
     {
        use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, Cycler, Schedule};
        use cyclerd_drivers::neware::{NewareClient, NewareConfig};
        use cyclerd_protocols::Plan;
        use cyclerd_protocols::compile::{Target, compile};
        let mut sim = announced(
            &[
                "sim",
                "neware",
                "--channels",
                "3",
                "--units",
                "2",
                "--listen",
                "127.0.0.1:0",
            ],
            &["api", "step folder", "login"],
        )
        .await;
        assert_eq!(sim.value("login"), "admin");
        let folder = std::path::PathBuf::from(sim.value("step folder"));
        assert!(folder.is_dir(), "{}", folder.display());
        let mut client = NewareClient::connect(NewareConfig::new(sim.addr("api"), &folder))
            .await
            .unwrap();
        let chl = |subdevid, chlid| ChannelAddr {
            unit: 1,
            sub_unit: subdevid,
            channel: chlid,
        };
        assert_eq!(
            client.channels().await.unwrap(),
            vec![
                chl(1, 1),
                chl(1, 2),
                chl(1, 3),
                chl(2, 1),
                chl(2, 2),
                chl(2, 3)
            ]
        );

        let protocol = r#"
protocol: Long rest
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Rest for 1 hour"]
"#;
        let plan = Plan::from_yaml(protocol, "rest.yaml").unwrap();
        let schedule = Schedule {
            file_name: "rest.xml".into(),
            text: compile(&plan, Target::Neware).unwrap(),
        };
        client
            .start(chl(2, 3), &schedule, "cli rest")
            .await
            .unwrap();
        let status = client.status(&[chl(2, 3)]).await.unwrap().remove(0);
        assert_eq!(status.state, ChannelState::Running);

        let pid = sim.child.id().unwrap() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let exit = tokio::time::timeout_at(super::deadline(), sim.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(exit.success(), "{exit}");
        assert!(!folder.exists(), "{} is left behind", folder.display());
    }

    #[tokio::test]
    async fn cyclerd_sim_maccor_serves_the_channels_asked_for_on_its_json_and_binary_ports() {
        use cyclerd_drivers::cycler::Cycler;
        use cyclerd_drivers::maccor::{MaccorClient, MaccorConfig};
        let mut sim = announced(
            &[
                "sim",
                "maccor",
                "--channels",
                "5",
                "--listen",
                "127.0.0.1:0",
                "--binary-port",
                "0",
            ],
            &["json", "binary"],
        )
        .await;
        let (json, binary) = (sim.addr("json"), sim.addr("binary"));
        assert_eq!(json.ip(), binary.ip());
        assert_ne!(json.port(), binary.port());
        let config = MaccorConfig {
            json_port: json.port(),
            binary_port: binary.port(),
            ..MaccorConfig::new(json.ip())
        };
        let mut client = MaccorClient::connect(config).await.unwrap();
        let channels = client.channels().await.unwrap();
        assert_eq!(
            channels.iter().map(|c| c.channel).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        sim.child.kill().await.unwrap();
    }

    #[tokio::test]
    async fn cyclerd_sim_arbin_serves_the_channels_asked_for_to_a_client_with_the_announced_login()
    {
        use cyclerd_drivers::arbin::{ArbinClient, ArbinConfig};
        use cyclerd_drivers::cycler::Cycler;
        let mut sim = announced(
            &[
                "sim",
                "arbin",
                "--channels",
                "6",
                "--listen",
                "127.0.0.1:0",
                "--file-port",
                "0",
                "--user",
                "lab",
            ],
            &["control", "file", "login"],
        )
        .await;
        let (control, file) = (sim.addr("control"), sim.addr("file"));
        assert_eq!(sim.value("login"), "lab");
        let config = ArbinConfig {
            control_port: control.port(),
            file_port: file.port(),
            ..ArbinConfig::new(control.ip(), "lab", "arbin")
        };
        let mut client = ArbinClient::connect(config).await.unwrap();
        let channels = client.channels().await.unwrap();
        assert_eq!(
            channels.iter().map(|c| c.channel).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        sim.child.kill().await.unwrap();
    }

    #[tokio::test]
    async fn cyclerd_sim_espec_serves_a_chamber_whose_temperature_the_driver_reads() {
        use cyclerd_drivers::chamber::Chamber;
        use cyclerd_drivers::espec::{EspecClient, EspecOptions};
        let mut sim = announced(&["sim", "espec", "--listen", "127.0.0.1:0"], &["lan"]).await;
        let mut client = EspecClient::connect(sim.addr("lan"), EspecOptions::default())
            .await
            .unwrap();
        let reading = client.read().await.unwrap();
        assert!((reading.temperature_c - 23.0).abs() < 0.5, "{reading:?}");
        sim.child.kill().await.unwrap();
    }

    #[tokio::test]
    async fn cyclerd_sim_weiss_serves_a_chamber_whose_temperature_the_driver_reads() {
        use cyclerd_drivers::chamber::Chamber;
        use cyclerd_drivers::weiss::WeissClient;
        let mut sim = announced(&["sim", "weiss", "--listen", "127.0.0.1:0"], &["simserv"]).await;
        let mut client =
            WeissClient::connect(sim.addr("simserv"), std::time::Duration::from_secs(5))
                .await
                .unwrap();
        let reading = client.read().await.unwrap();
        assert!((reading.temperature_c - 23.0).abs() < 0.5, "{reading:?}");
        sim.child.kill().await.unwrap();
    }

    #[test]
    fn a_port_in_use_is_an_error_naming_file_key_and_address() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let path = write(dir.path(), &config(&dir.path().join("o.sqlite"), &addr, ""));
        let (ok, err) = run(&path);
        assert!(!ok);
        assert!(
            err.contains("lab.toml") && err.contains("control.listen") && err.contains(&addr),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_device_does_not_keep_the_daemon_down_and_is_named_with_its_address() {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on port 1.
        let gone = "127.0.0.1:1";
        let extra = format!(
            "[[device]]\nname = \"psb1\"\nfamily = \"ea-psb\"\naddress = \"{gone}\"\ntimeout_ms = 500\n[[channel]]\nid = \"psb1/1\"\n"
        );
        let path = write(
            dir.path(),
            &config(&dir.path().join("o.sqlite"), "127.0.0.1:0", &extra),
        );
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerd"))
            .args(["run", "--config"])
            .arg(&path)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let waiting = loop {
            let line = tokio::time::timeout_at(super::deadline(), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no line about the device in time; got {seen:?}"))
                .unwrap()
                .unwrap_or_else(|| panic!("cyclerd run ended after {seen:?}"));
            if line.contains("does not answer") {
                break line;
            }
            seen.push(line);
        };
        assert!(
            waiting.contains("psb1") && waiting.contains(gone) && waiting.contains("waiting"),
            "{waiting}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon keeps running"
        );
    }

    #[tokio::test]
    async fn cyclerctl_watch_shows_the_demos_channels_in_80_columns_and_ends_with_one_line_when_the_daemon_dies()
     {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        use tokio::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut demo = Command::new(env!("CARGO_BIN_EXE_cyclerd"))
            .args(["demo", "--channels", "2", "--speed", "20", "--control"])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut demo_out = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
        let mut next_demo_line = async || {
            tokio::time::timeout_at(super::deadline(), demo_out.next_line())
                .await
                .expect("a demo line in time")
                .unwrap()
                .expect("the demo goes on")
        };
        let control = loop {
            let line = next_demo_line().await;
            if let Some((_, rest)) = line.split_once("control: ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // The demo's own progress: the same lines, both channels, within 80 columns.
        let mut progress = Vec::new();
        while !progress.iter().any(|l: &String| l.contains("SIM-NMC-002")) {
            let line = next_demo_line().await;
            if line.starts_with('[') || !progress.is_empty() {
                progress.push(line);
            }
        }
        for line in &progress {
            assert!(line.chars().count() <= 80, "{line}");
            assert!(
                !line.contains("NaN"),
                "no air NaN without a chamber: {line}"
            );
        }
        assert!(
            progress
                .iter()
                .any(|l| l.starts_with("psb1/1 ") && l.contains("running")),
            "{progress:#?}"
        );

        let mut watch = Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
            .args(["--daemon", &control, "watch"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        while !seen.iter().any(|l: &String| l.contains("SIM-NMC-001")) {
            let line = tokio::time::timeout_at(super::deadline(), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no test line from watch in time: {seen:#?}"))
                .unwrap()
                .unwrap_or_else(|| panic!("watch ended early: {seen:#?}"));
            seen.push(line);
        }
        demo.kill().await.unwrap();
        let status = tokio::time::timeout(super::WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                seen.push(line);
            }
            watch.wait().await.unwrap()
        })
        .await
        .expect("watch ends when the daemon dies");
        let mut err = String::new();
        watch
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        assert_eq!(
            err,
            format!("cyclerctl: cyclerd stopped: the control API at {control} closed the stream\n")
        );
        assert_eq!(status.code(), Some(1), "the daemon going away is an error");
        for line in &seen {
            assert!(line.chars().count() <= 80, "{line}");
            assert!(!line.contains("NaN") && !line.contains('\x1b'), "{line}");
        }
    }

    #[test]
    fn an_unknown_key_or_wrong_type_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            &config(
                &dir.path().join("o.sqlite"),
                "127.0.0.1:0",
                "[[device]]\nname = \"d\"\nfamily = \"ea-psb\"\naddress = \"127.0.0.1:1\"\nbauds = 9600\n",
            ),
        );
        let (ok, err) = run(&path);
        assert!(!ok);
        assert!(err.contains("lab.toml") && err.contains("bauds"), "{err}");
        let path = write(
            dir.path(),
            &config(&dir.path().join("o.sqlite"), "127.0.0.1:0", "")
                .replace("current_max = 5.0", "current_max = \"lots\""),
        );
        let (ok, err) = run(&path);
        assert!(!ok);
        assert!(err.contains("current_max"), "{err}");
    }
}

mod protocol_simulate {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The standard cycle-life protocol: a 1 h rest, then up to 1000 cycles of 1C CCCV charge
    /// and 1C discharge with rests, recorded every 60 s or on 10 mV or 100 mA.
    fn cycle_life() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/protocols/cycle-life-1c.yaml")
    }

    /// Runs `cyclerctl protocol simulate PROTOCOL ARGS`: success, standard output, error.
    fn simulate(args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
            .args(["protocol", "simulate"])
            .arg(cycle_life())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The CSV's header and its rows split into cells.
    fn read_csv(path: &Path) -> (String, Vec<Vec<String>>) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap().to_owned();
        let rows = lines
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect();
        (header, rows)
    }

    fn column<'a>(header: &str, rows: &'a [Vec<String>], name: &str) -> Vec<&'a str> {
        let i = header.split(',').position(|h| h == name).unwrap();
        rows.iter().map(|r| r[i].as_str()).collect()
    }

    /// The number of measurements simulated, from the summary's duration line.
    fn measurements(stdout: &str) -> usize {
        let line = stdout.lines().find(|l| l.starts_with("duration")).unwrap();
        let (_, after) = line.split_once('(').unwrap();
        after.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    fn simulate_records_rows_by_the_protocols_recording_rules_unless_told_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("rules.csv");
        let (ok, out, err) = simulate(&["--cycles", "2", "--csv", csv.to_str().unwrap()]);
        assert!(ok, "{err}");
        let ticks = measurements(&out);
        let (_, rows) = read_csv(&csv);
        // About 7 h at 1 s: 25 000 measurements; one row a minute plus the voltage and current
        // changes and each step's ends is well under a tenth of them.
        assert!(ticks > 20_000, "{out}");
        assert!(rows.len() < ticks / 10, "{} rows of {ticks}", rows.len());
        assert!(
            out.contains(&format!("{} rows recorded", rows.len())),
            "{out}"
        );

        let every = dir.path().join("every.csv");
        let (ok, _, err) = simulate(&[
            "--cycles",
            "2",
            "--every",
            "600",
            "--csv",
            every.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let (_, sparse) = read_csv(&every);
        assert!(
            sparse.len() < rows.len() / 2,
            "{} vs {}",
            sparse.len(),
            rows.len()
        );
        // Every step still has its first and last row: 1 + 2 x 4 steps, two rows each at least.
        assert!(sparse.len() >= 18, "{}", sparse.len());

        let all = dir.path().join("all.csv");
        let (ok, out, err) = simulate(&[
            "--cycles",
            "2",
            "--all-samples",
            "--csv",
            all.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let (_, every_tick) = read_csv(&all);
        assert_eq!(every_tick.len(), measurements(&out));
    }

    #[test]
    fn simulate_stops_after_the_cycles_asked_for_and_prints_a_summary_and_a_per_cycle_table() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("three.csv");
        let (ok, out, err) = simulate(&["--cycles", "3", "--csv", csv.to_str().unwrap()]);
        assert!(ok, "{err}");
        let (header, rows) = read_csv(&csv);
        let mut cycles: Vec<&str> = column(&header, &rows, "Cycle Count / 1");
        cycles.dedup();
        assert_eq!(cycles.len(), 3, "{cycles:?}");
        assert!(out.contains("stopped after 3 cycles"), "{out}");
        assert!(out.contains("cycles     3"), "{out}");
        // Six summary lines, a blank one, the table's two header lines and a row per cycle.
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6 + 1 + 2 + 3, "{out}");
        assert!(
            lines[7].starts_with("cycle") && lines[7].contains("CE"),
            "{out}"
        );
        for (k, row) in lines[9..].iter().enumerate() {
            assert!(row.trim_start().starts_with(&(k + 1).to_string()), "{out}");
        }
        assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");

        for (args, message) in [
            (["--cycles", "0"], "--cycles must be at least 1"),
            (
                ["--every", "0"],
                "--every must be a positive number of seconds",
            ),
        ] {
            let (ok, _, err) = simulate(&args);
            assert!(!ok);
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn simulate_writes_the_columns_of_the_hubs_bdf_export() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("one.csv");
        let (ok, _, err) = simulate(&["--cycles", "1", "--csv", csv.to_str().unwrap()]);
        assert!(ok, "{err}");
        let (header, rows) = read_csv(&csv);
        // A simulated cell has a temperature sensor and sits in no chamber.
        let export: Vec<&str> = cyclerhub::export::bdf_columns(true, false)
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(header, export.join(","));
        assert!(header.contains("Temperature T1 / degC") && !header.contains("Surface"));
        let index = column(&header, &rows, "Record Index / 1");
        assert!(
            index
                .iter()
                .enumerate()
                .all(|(i, x)| *x == (i + 1).to_string())
        );
        let mut types = column(&header, &rows, "Step Type");
        types.dedup();
        // The rest, then the cycle: CCCV charge, rest, CC discharge (and its closing rest).
        assert_eq!(
            types[..4],
            ["REST", "CCCV_CHG", "REST", "CC_DCH"],
            "{types:?}"
        );
    }
}
