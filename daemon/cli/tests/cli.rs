//! The binaries and the simulated lab: the daemon in process with its control API, `cyclerctl`
//! and `cyclerd` as child processes, over real sockets, files and pseudo-terminals. One file
//! per concern under `cli/`: the control API (`control.rs`), its tokens and TLS
//! (`control_auth.rs`), the command lines (`command_line.rs`), `protocol simulate`
//! (`protocol_simulate.rs`); a supply with a load and recording rules stay here.

use cyclerd::proto::control::control_client::ControlClient;
use cyclerd::proto::control::*;
use cyclerd::proto::ingest::{Event, entry::Body};
use cyclerd_cli::lab::SimLab;
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

/// Runs `cyclerctl protocol ARGS`: success, standard output, error (the protocol subcommands'
/// tests share it).
fn cyclerctl_protocol<I, S>(args: I) -> (bool, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
        .arg("protocol")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + WAIT
}

#[path = "cli/control.rs"]
mod control;

#[path = "cli/control_auth.rs"]
mod control_auth;

#[path = "cli/conventions.rs"]
mod conventions;

#[path = "cli/metrics.rs"]
mod metrics;

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

#[path = "cli/command_line.rs"]
mod command_line;

#[path = "cli/protocol_simulate.rs"]
mod protocol_simulate;

#[path = "cli/protocol_check.rs"]
mod protocol_check;
#[path = "cli/protocol_import.rs"]
mod protocol_import;
