//! Stopping and starting the daemon around running tests: a clean SIGTERM leaves stepped tests
//! interrupted for the next start; a start that fails after the configuration was read switches
//! off the outputs a killed daemon left on; a device answering garbage at start is waited for.

use super::faults::{PROTOCOL, ProcessLab};
use super::harness;
use cyclerd::proto::control::StopTestRequest;
use cyclerhub::HubStore;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_sigterm_leaves_the_test_interrupted_and_the_next_start_resumes_it() {
    let lab = ProcessLab::start(1).await;
    let (daemon, mut control) = lab.daemon().await;
    let test = harness::start_on(&mut control, "psb1/1", PROTOCOL).await;
    let before =
        harness::watch_until(&mut control, |s| s.samples >= 500 && s.current_a > 1.0).await;
    assert!(lab.sims[0].snapshot().output_on, "charging");
    assert!(daemon.terminate().await, "the daemon stops cleanly");
    assert!(
        !lab.sims[0].snapshot().output_on,
        "a clean shutdown switches the output off"
    );
    assert_eq!(
        harness::outbox_pending(&lab.outbox()),
        0,
        "the last samples and the event reached the hub"
    );
    let kept = harness::assert_interrupted_samples_once(&lab.hub.db, &lab.outbox(), &test);
    assert!(kept >= before.samples, "{kept} < {}", before.samples);

    let (daemon, mut control) = lab.daemon().await;
    let resumed = harness::watch_until(&mut control, |s| s.state == "running").await;
    assert_eq!(resumed.test_id, test, "the next start resumes the test");
    harness::wait_all_ended(&mut control, &lab.channels).await;
    assert!(daemon.terminate().await);
    harness::assert_every_sample_once(&lab.hub.db, std::slice::from_ref(&test));
    let hub = HubStore::open(&lab.hub.db).unwrap();
    let row = hub.test(&test).unwrap().unwrap();
    assert_eq!(row.outcome.as_deref(), Some("finished"), "{row:?}");
    let interruptions: Vec<String> = hub
        .events(&test)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "interruption")
        .map(|e| e.message)
        .collect();
    assert_eq!(interruptions.len(), 1, "{interruptions:?}");
    assert!(
        interruptions[0].contains("continuing step"),
        "{interruptions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_refused_by_a_corrupt_outbox_switches_off_the_output_a_killed_daemon_left_on() {
    let lab = ProcessLab::start(1).await;
    lab.killed_mid_charge(500).await;
    // Garbage over the outbox: not SQLite any more.
    let outbox = lab.outbox();
    std::fs::write(&outbox, vec![0xa5u8; 64 * 1024]).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", outbox.display()));
    }
    lab.refused_start_switches_the_output_off().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_refused_by_a_taken_control_port_switches_off_the_output_a_killed_daemon_left_on() {
    let lab = ProcessLab::start(1).await;
    lab.killed_mid_charge(500).await;
    let _taken = std::net::TcpListener::bind(lab.control).unwrap();
    lab.refused_start_switches_the_output_off().await;
}

/// Serves SCPI on `listener` with garbage for every answer: a device that answers, but
/// nothing that makes sense.
async fn garbage_scpi(listener: TcpListener) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains('?') && write.write_all(b"#~*garbage~#\n").await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_answering_garbage_at_start_is_offline_with_the_reason_while_the_others_run() {
    let lab = ProcessLab::start(1).await;
    let noisy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let noisy_addr = noisy.local_addr().unwrap();
    tokio::spawn(garbage_scpi(noisy));
    let good = std::fs::read_to_string(&lab.config).unwrap();
    std::fs::write(
        &lab.config,
        format!(
            "{good}[[device]]\nname = \"noisy\"\nfamily = \"scpi\"\ndialect = \"keithley-24xx\"\n\
             address = \"{noisy_addr}\"\n[[channel]]\nid = \"noisy/1\"\n"
        ),
    )
    .unwrap();
    let (daemon, mut control) = lab.daemon().await;
    let offline = harness::watch_until(&mut control, |s| {
        s.channel_id == "noisy/1" && s.state == "offline"
    })
    .await;
    assert!(
        offline.reason.contains("device \"noisy\" at")
            && offline.reason.contains("answers, but")
            && offline.reason.contains("does not make sense"),
        "{}",
        offline.reason
    );
    harness::assert_alarm(&mut control, "offline channels noisy/1:").await;
    let test = harness::start_on(&mut control, "psb1/1", PROTOCOL).await;
    harness::watch_until(&mut control, |s| {
        s.channel_id == "psb1/1" && s.state == "running" && s.samples > 0
    })
    .await;
    control
        .stop_test(StopTestRequest {
            channel_id: "psb1/1".into(),
            reason: "enough".into(),
        })
        .await
        .unwrap();
    harness::wait_all_ended(&mut control, &lab.channels).await;
    assert!(daemon.terminate().await);
    harness::assert_every_sample_once(&lab.hub.db, &[test]);
}
