//! Running under a service manager: systemd's notify protocol as `cyclerd run` speaks it to a
//! real unix datagram socket given as NOTIFY_SOCKET (READY, then watchdog pings only while
//! every channel loop answers), and `cyclerd check-config` as a unit's operator runs it.

use super::faults::ProcessLab;
use super::harness::{Process, WAIT};
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixDatagram;

/// The next datagram on `socket`, as text; fails the test if none comes within [`WAIT`].
async fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("a notification within the wait")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn systemd_hears_ready_once_the_control_port_accepts_then_watchdog_pings_until_stopping() {
    let lab = ProcessLab::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let (args, control) = lab.run_args();
    // A short watchdog: a check of every channel loop each 100 ms.
    let daemon = Process::spawn_with_env(
        env!("CARGO_BIN_EXE_cyclerd-under-test"),
        &args,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );
    let first = next_message(&socket).await;
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "the first notification is READY=1, not {first:?}"
    );
    // Devices were tried and the control API listens before READY=1 was sent.
    tokio::net::TcpStream::connect(control)
        .await
        .expect("the control port accepts as soon as READY=1 is heard");
    let mut pings = 0;
    while pings < 5 {
        let message = next_message(&socket).await;
        assert!(
            !message.contains("READY=1"),
            "READY=1 is sent once, then {message:?}"
        );
        if message.lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    let stopped = tokio::spawn(daemon.terminate());
    loop {
        let message = next_message(&socket).await;
        if message.lines().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    assert!(stopped.await.unwrap(), "the daemon exits cleanly");
    for sim in &lab.sims {
        assert!(
            !sim.snapshot().output_on,
            "every output is off after the stop"
        );
    }
}

/// Whether a `WATCHDOG=1` comes on `socket` within `rounds` watchdog rounds of `round`.
async fn pinged_within(socket: &UnixDatagram, rounds: u32, round: Duration) -> bool {
    let mut buf = vec![0u8; 4096];
    let pinged = async {
        loop {
            let n = socket.recv(&mut buf).await.unwrap();
            if carries(&String::from_utf8_lossy(&buf[..n]), "WATCHDOG=1") {
                return;
            }
        }
    };
    tokio::time::timeout(round * rounds, pinged).await.is_ok()
}

/// Runs `work` while dropping whatever comes on `socket` meanwhile, as a service manager reads
/// its socket at once: a full one (`net.unix.max_dgram_qlen`, often 10 datagrams) would block
/// the daemon in its next notification.
async fn draining<T>(socket: &UnixDatagram, work: impl Future<Output = T>) -> T {
    let mut buf = vec![0u8; 4096];
    let drain = async {
        loop {
            socket.recv(&mut buf).await.unwrap();
        }
    };
    tokio::select! {
        out = work => out,
        never = drain => never,
    }
}

/// Whether the notification `message` carries the line `state`.
fn carries(message: &str, state: &str) -> bool {
    message.lines().any(|l| l == state)
}

/// Waits for the next notification on `socket` that carries `state`; fails the test if
/// none comes within [`WAIT`] of the one before.
async fn wait_for_state(socket: &UnixDatagram, state: &str) {
    while !carries(&next_message(socket).await, state) {}
}

#[tokio::test]
async fn a_channel_loop_stuck_in_a_device_call_stops_the_watchdog_pings_until_it_answers_again() {
    let lab = ProcessLab::start(2).await;
    // psb1's transactions may take a minute: a reply its device withholds keeps the channel
    // loop in the call for as long as the test lets it.
    let config = std::fs::read_to_string(&lab.config).unwrap();
    let patient = config.replacen(
        "name = \"psb1\"\n",
        "name = \"psb1\"\ntimeout_ms = 60000\n",
        1,
    );
    assert_ne!(config, patient);
    std::fs::write(&lab.config, patient).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let (args, _) = lab.run_args();
    // A watchdog of 1 s: every channel loop is asked each 250 ms.
    let round = Duration::from_millis(250);
    let mut daemon = Process::spawn_with_env(
        env!("CARGO_BIN_EXE_cyclerd-under-test"),
        &args,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "1000000".into()),
        ],
    );
    wait_for_state(&socket, "WATCHDOG=1").await;
    // The PSB stops answering: the loop's next idle read (one each 2 s) waits in the call.
    lab.sims[0].set_reply_delay(Duration::from_secs(3600));
    let stuck = daemon.wait_for_line("channel loops not answering within 250 ms: psb1/1;");
    draining(&socket, stuck).await;
    // Pings sent before the loop was stuck may be in the socket still; drop them.
    let mut buf = vec![0u8; 4096];
    while socket.try_recv(&mut buf).is_ok() {}
    assert!(
        !pinged_within(&socket, 8, round).await,
        "no WATCHDOG=1 while a channel loop is stuck"
    );
    // The cable is pulled: the withheld call fails at once, and the loop answers again.
    lab.sims[0].set_reply_delay(Duration::ZERO);
    lab.sims[0].cut_link();
    wait_for_state(&socket, "WATCHDOG=1").await;
    lab.sims[0].restore_link();
    wait_for_state(&socket, "WATCHDOG=1").await;
    let stopped = tokio::spawn(daemon.terminate());
    wait_for_state(&socket, "STOPPING=1").await;
    assert!(stopped.await.unwrap(), "the daemon exits cleanly");
    for sim in &lab.sims {
        assert!(
            !sim.snapshot().output_on,
            "every output is off after the stop"
        );
    }
}

/// Runs `cyclerd check-config FILE`; its exit success and standard output.
async fn check_config(file: &Path) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerd-under-test"))
        .arg("check-config")
        .arg(file)
        .output();
    let output = tokio::time::timeout(WAIT, output).await.unwrap().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn check_config_exits_non_zero_naming_the_problem_and_reaches_no_device() {
    let dir = tempfile::tempdir().unwrap();
    // A device that would see a connection if the check reached it.
    let device = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    device.set_nonblocking(true).unwrap();
    let outbox = dir.path().join("outbox.sqlite");
    let lab = |extra: &str| {
        format!(
            "[store]\npath = {outbox:?}\n[hub]\naddress = \"http://127.0.0.1:50051\"\n{extra}\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\n\
             [[device]]\nname = \"psb1\"\nfamily = \"ea-psb\"\naddress = \"{}\"\n\
             [[channel]]\nid = \"psb1/1\"\n",
            device.local_addr().unwrap()
        )
    };
    let good = dir.path().join("good.toml");
    std::fs::write(&good, lab("")).unwrap();
    let (ok, report) = check_config(&good).await;
    assert!(ok, "a good configuration passes: {report}");
    assert!(report.contains("channels (1): psb1/1"), "{report}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        lab(
            "[control]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
        ),
    )
    .unwrap();
    let (ok, report) = check_config(&bad).await;
    assert!(!ok, "a missing TLS file fails the check");
    assert!(report.contains("control.tls_cert"), "{report}");
    assert!(report.contains("NOT OK"), "{report}");
    assert!(
        matches!(device.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the check never connects to a device"
    );
    assert!(!outbox.exists(), "the check never opens the outbox");
    // A file that is not there is named.
    let none = dir.path().join("missing.toml");
    let (ok, report) = check_config(&none).await;
    assert!(!ok && report.contains("missing.toml"), "{report}");
}
