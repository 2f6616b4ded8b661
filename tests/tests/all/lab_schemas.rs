//! The lab's metadata schemas reach the bench: a daemon refuses to start a test whose
//! secondary metadata breaks the JSON Schema its lab registered in the hub, naming every
//! problem, and keeps doing so from its kept copy while the hub is down, across a restart.

use super::harness::{self, WAIT};
use cyclerd_cli::lab::{LabOptions, SimLab};
use cyclerhub::HubStore;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const PROTOCOL: &str = r#"
protocol: Rest
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 5 A
steps:
  - "Rest for 10 minutes"
"#;

const SECONDARY: &str = r#"{
    "type": "object",
    "required": ["manufacturer"],
    "properties": {
        "manufacturer": {"type": "string", "minLength": 1},
        "form_factor": {"enum": ["18650", "21700", "pouch"]}
    }
}"#;

fn metadata_with(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = harness::metadata("LG-M50-0042");
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

async fn lab(data_dir: &Path, hub: std::net::SocketAddr) -> SimLab {
    SimLab::start_with(LabOptions {
        channels: 2,
        speed: 1000.0,
        data_dir: Some(data_dir.to_path_buf()),
        hub_address: Some(hub),
        hub_lab: Some("cell-ageing".into()),
        ..LabOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_whose_metadata_breaks_the_labs_schema_does_not_start_even_while_the_hub_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let hub_db = dir.path().join("hub.sqlite");
    let mut hub = harness::Hub::start(&hub_db).await;
    HubStore::open(&hub_db)
        .unwrap()
        .set_metadata_schema("cell-ageing", "secondary", SECONDARY)
        .unwrap();
    let daemon_dir = dir.path().join("daemon");
    let lab1 = lab(&daemon_dir, hub.addr).await;
    let channels = lab1.channel_ids();
    let bad = metadata_with(&[("secondary.form_factor", "AA")]);
    let refused = lab1
        .daemon
        .start_test(&channels[0], PROTOCOL, "rest.yaml", bad.clone())
        .await
        .unwrap_err()
        .to_string();
    for needle in ["cell-ageing", "secondary.form_factor", "manufacturer"] {
        assert!(refused.contains(needle), "{needle} in {refused}");
    }
    let good = metadata_with(&[
        ("secondary.manufacturer", "LG"),
        ("secondary.form_factor", "21700"),
    ]);
    lab1.daemon
        .start_test(&channels[0], PROTOCOL, "rest.yaml", good)
        .await
        .unwrap();

    hub.stop().await;
    let from_copy = lab1
        .daemon
        .start_test(&channels[1], PROTOCOL, "rest.yaml", bad.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(from_copy.contains("copy received"), "{from_copy}");
    lab1.daemon.stop_test(&channels[0], "").await.unwrap();
    lab1.stop(Duration::from_millis(100)).await.unwrap();

    let lab2 = lab(&daemon_dir, hub.addr).await;
    let after_restart = tokio::time::timeout(
        WAIT,
        lab2.daemon
            .start_test(&channels[1], PROTOCOL, "rest.yaml", bad),
    )
    .await
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(
        after_restart.contains("copy received") && after_restart.contains("manufacturer"),
        "{after_restart}"
    );
    lab2.stop(Duration::from_millis(100)).await.unwrap();
}
