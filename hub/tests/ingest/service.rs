//! `cyclerhub serve` under a service manager: systemd's notify protocol as the real binary
//! speaks it to a unix datagram socket the test binds and names in NOTIFY_SOCKET.

use super::WAIT;
use std::process::Stdio;
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
async fn systemd_hears_ready_once_the_hub_accepts_and_stopping_at_sigterm_then_a_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let db = dir.path().join("hub.sqlite").display().to_string();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut hub = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args(["serve", "--db", &db, "--listen", &addr.to_string()])
        .args(["--no-http"])
        .env("NOTIFY_SOCKET", &path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let first = next_message(&socket).await;
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "the first notification is READY=1, not {first:?}"
    );
    // The port listens and the database is migrated before READY=1 is sent.
    tokio::net::TcpStream::connect(addr)
        .await
        .expect("the gRPC port accepts as soon as READY=1 is heard");
    assert!(
        std::path::Path::new(&db).exists(),
        "the database exists once READY=1 is heard"
    );
    let pid = hub.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let stopping = next_message(&socket).await;
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "the notification after SIGTERM is STOPPING=1, not {stopping:?}"
    );
    let status = tokio::time::timeout(WAIT, hub.wait())
        .await
        .expect("the hub exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
