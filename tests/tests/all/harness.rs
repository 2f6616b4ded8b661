//! Pieces the fault tests share: child processes of the real binaries, an in-process hub that
//! can be stopped and restarted on its address, and the end-of-test check.

use cyclerd::proto::control::control_client::ControlClient;
use cyclerd::proto::control::{ChannelSnapshot, GetStatusRequest, StartTestRequest, WatchRequest};
use cyclerhub::HubStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// Longest any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(120);

/// Primary metadata every test needs.
pub fn metadata(cell: &str) -> HashMap<String, String> {
    [
        ("cell_id", cell),
        ("operator", "fault-tests"),
        ("owner", "cyclerd-tests"),
        ("objective", "fault injection"),
        ("chemistry", "NMC/graphite"),
        ("nominal_capacity_ah", "2.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The in-process hub, restartable on the same address and database.
pub struct Hub {
    pub addr: SocketAddr,
    pub db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Hub {
    pub async fn start(db: &Path) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut hub = Hub {
            addr,
            db: db.to_path_buf(),
            stop: None,
            task: None,
        };
        hub.serve(listener);
        hub
    }

    fn serve(&mut self, listener: TcpListener) {
        let store = HubStore::open(&self.db).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.task = Some(tokio::spawn(cyclerhub::server::run(
            listener,
            store,
            async {
                let _ = stopped.await;
            },
        )));
        self.stop = Some(stop);
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Waits until the hub holds sample `seq` of `test_id` (and so, the daemon's outbox being
    /// first in, first out, everything the daemon queued before it), following the test with
    /// a Tail.
    pub async fn wait_for_sample(&self, test_id: &str, seq: u64) {
        use cyclerd::proto::hub::TailRequest;
        use cyclerd::proto::hub::query_client::QueryClient;
        let mut q = QueryClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap();
        let mut tail = q
            .tail(TailRequest {
                test_id: test_id.into(),
                from_seq: seq,
            })
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(WAIT, tail.message())
            .await
            .expect("the sample reaches the hub")
            .unwrap()
            .expect("a tail of a running test stays open");
    }
}

/// A child process of one of this package's binaries, with its stderr watched for a line.
pub struct Process {
    pub child: Child,
    /// Lines of stderr, as they come.
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Process {
    pub fn spawn(binary: &str, args: &[String]) -> Process {
        let mut command = Command::new(binary);
        command.args(args);
        Process::start(command)
    }

    /// [`Process::spawn`] with `env` added to the child's environment.
    pub fn spawn_with_env(binary: &str, args: &[String], env: &[(&str, String)]) -> Process {
        let mut command = Command::new(binary);
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Process::start(command)
    }

    /// [`Process::spawn`] with both the soft and the hard limit on open files set to `limit`
    /// in the child (so the binary cannot raise it).
    #[cfg(unix)]
    pub fn spawn_with_open_files(binary: &str, args: &[String], limit: u64) -> Process {
        let mut command = Command::new(binary);
        command.args(args);
        #[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
        let limit = libc::rlimit {
            rlim_cur: limit.try_into().unwrap(),
            rlim_max: limit.try_into().unwrap(),
        };
        // SAFETY: setrlimit is async-signal-safe, and the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Process::start(command)
    }

    fn start(mut command: Command) -> Process {
        let mut child = command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // Each daemon's web monitor on a port of its own (tests run side by side).
            .env("CYCLERD__WEB__LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        Process { child, lines }
    }

    /// Waits for a stderr line containing `text`; fails the test with what was printed if the
    /// process exits first.
    pub async fn wait_for_line(&mut self, text: &str) {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                let hit = line.contains(text);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            found,
            Ok(true),
            "no line with {text:?}; stderr was:\n{}",
            seen.join("\n")
        );
    }

    /// SIGKILL: no cleanup of any kind.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, then waits for the process to exit on its own; returns whether it succeeded.
    pub async fn terminate(mut self) -> bool {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the process exits after SIGTERM")
            .unwrap()
            .success()
    }
}

/// Waits on a daemon's Watch stream until `done` holds for a snapshot; returns it.
pub async fn watch_until(
    control: &mut ControlClient<tonic::transport::Channel>,
    done: impl Fn(&ChannelSnapshot) -> bool,
) -> ChannelSnapshot {
    let mut stream = control.watch(WatchRequest {}).await.unwrap().into_inner();
    tokio::time::timeout(WAIT, async {
        loop {
            let s = stream
                .message()
                .await
                .unwrap()
                .expect("the watch stream stays open");
            if done(&s) {
                return s;
            }
        }
    })
    .await
    .expect("the awaited channel state came")
}

/// Waits until every one of `channels` has ended its test (an offline channel's test waits).
pub async fn wait_all_ended(
    control: &mut ControlClient<tonic::transport::Channel>,
    channels: &[String],
) {
    let mut stream = control.watch(WatchRequest {}).await.unwrap().into_inner();
    let mut ended: HashMap<String, String> = HashMap::new();
    tokio::time::timeout(WAIT, async {
        while ended.len() < channels.len() {
            let s = stream
                .message()
                .await
                .unwrap()
                .expect("the watch stream stays open");
            if !s.test_id.is_empty()
                && s.state != "running"
                && s.state != "paused"
                && s.state != "idle"
                && s.state != "offline"
            {
                ended.insert(s.channel_id.clone(), s.state.clone());
            } else {
                ended.remove(&s.channel_id);
            }
        }
    })
    .await
    .expect("every channel's test ends");
}

pub async fn start_on(
    control: &mut ControlClient<tonic::transport::Channel>,
    channel: &str,
    protocol: &str,
) -> String {
    control
        .start_test(StartTestRequest {
            channel_id: channel.into(),
            protocol_yaml: protocol.into(),
            metadata: metadata(&format!("cell-{channel}")),
            params: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .test_id
}

/// The check every fault test ends with: the hub holds each test's samples exactly once,
/// numbered contiguously from 0, as many as the daemon said the test produced.
pub fn assert_every_sample_once(hub_db: &Path, tests: &[String]) -> HashMap<String, u64> {
    assert_every_sample_once_in(&HubStore::open(hub_db).unwrap(), tests)
}

/// [`assert_every_sample_once`] on a hub store of any backend.
pub fn assert_every_sample_once_in(hub: &HubStore, tests: &[String]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for test_id in tests {
        let row = hub.test(test_id).unwrap().expect("the hub knows the test");
        assert!(row.outcome.is_some(), "test {test_id} ended: {row:?}");
        let samples = hub.samples(test_id).unwrap();
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(
                s.seq, i as u64,
                "test {test_id}: sequence numbers are contiguous"
            );
        }
        assert_eq!(
            Some(samples.len() as u64),
            row.expected_samples,
            "test {test_id}: the hub holds exactly the samples the daemon produced"
        );
        counts.insert(test_id.clone(), samples.len() as u64);
    }
    counts
}

/// For a test left interrupted by a clean shutdown (not ended, so the hub has no count of its
/// samples): the hub holds exactly the samples its checkpoint in the daemon's `outbox` accounts
/// for, each once, numbered contiguously from 0; and an event says the daemon stopped. Returns
/// the count.
pub fn assert_interrupted_samples_once(hub_db: &Path, outbox: &Path, test_id: &str) -> u64 {
    let hub = HubStore::open(hub_db).unwrap();
    let row = hub.test(test_id).unwrap().expect("the hub knows the test");
    assert_eq!(row.outcome, None, "test {test_id} did not end: {row:?}");
    let conn = rusqlite::Connection::open(outbox).unwrap();
    let next_seq: i64 = conn
        .query_row(
            "SELECT next_seq FROM checkpoints WHERE test_id = ?1",
            [test_id],
            |r| r.get(0),
        )
        .expect("the interrupted test keeps its checkpoint");
    let samples = hub.samples(test_id).unwrap();
    let seqs: Vec<u64> = samples.iter().map(|s| s.seq).collect();
    let expected: Vec<u64> = (0..next_seq as u64).collect();
    assert_eq!(
        seqs, expected,
        "test {test_id}: every sample its checkpoint accounts for, once"
    );
    let events = hub.events(test_id).unwrap();
    assert!(
        events.iter().any(|e| e
            .message
            .starts_with("the daemon stopped with the test running")),
        "{events:?}"
    );
    seqs.len() as u64
}

/// Entries the daemon's outbox still holds for the hub (0 once everything was acknowledged).
pub fn outbox_pending(outbox: &Path) -> i64 {
    let conn = rusqlite::Connection::open(outbox).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE acked_unix_s IS NULL",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Starts `cyclerd run --config CONFIG` on a clock at `speed` anchored at `anchor` (the
/// simulators' clock), and waits until its control API at `control` is up.
pub async fn run_daemon(
    config: &Path,
    speed: f64,
    anchor: f64,
    control: SocketAddr,
) -> (Process, ControlClient<tonic::transport::Channel>) {
    let args = daemon_args(config, speed, anchor);
    let mut process = Process::spawn(env!("CARGO_BIN_EXE_cyclerd-under-test"), &args);
    process.wait_for_line("cyclerd running").await;
    let control = ControlClient::connect(format!("http://{control}"))
        .await
        .unwrap();
    (process, control)
}

/// The arguments of `cyclerd run --config CONFIG` on a clock at `speed` anchored at `anchor`.
pub fn daemon_args(config: &Path, speed: f64, anchor: f64) -> Vec<String> {
    vec![
        "run".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--speed".into(),
        speed.to_string(),
        "--clock-anchor".into(),
        anchor.to_string(),
    ]
}

/// A free loopback port (bound, then released for a child process to take).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Fails the test unless the daemon's status lists an alarm starting with `prefix`.
pub async fn assert_alarm(control: &mut ControlClient<tonic::transport::Channel>, prefix: &str) {
    let status = control
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.alarms.iter().any(|a| a.starts_with(prefix)),
        "{:?}",
        status.alarms
    );
}

/// A Maccor tester simulator with two channels on `clock` (its direct-mode watchdog set to
/// `watchdog_s`, if any) and a daemon stepping its channel 2 (`mdirect/2`, the tester's
/// channel 1) in MacNet direct mode, polled every second, uploading to `hub`; its outbox in
/// `dir`.
pub async fn maccor_direct(
    dir: &Path,
    hub: SocketAddr,
    clock: &cyclerd_drivers::Clock,
    watchdog_s: Option<f64>,
) -> (cyclerd_drivers::maccor::SimHandle, cyclerd::Daemon) {
    use cyclerd_drivers::cell::{CellParams, Chemistry};
    use cyclerd_drivers::maccor;
    let cell = CellParams {
        initial_soc: 0.5,
        ..CellParams::new(Chemistry::Nmc, 2.5)
    };
    let mut config = maccor::SimConfig::new(2, cell);
    config.direct_watchdog_s = watchdog_s;
    let json = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let binary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = maccor::MaccorSim::spawn(json, binary, config, clock.clone()).unwrap();
    let text = format!(
        "[store]\npath = {store:?}\ncommit_interval_ms = 50\n[hub]\naddress = \"http://{hub}\"\n\
         [limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\n\
         [[device]]\nname = \"mdirect\"\nfamily = \"maccor-direct\"\naddress = \"{json}\"\n\
         binary_port = {binary}\nnominal_current = 10.0\nnominal_voltage = 5.0\n\
         [[channel]]\nid = \"mdirect/2\"\npoll_interval_ms = 1000\n",
        store = dir.join("outbox.sqlite").display().to_string(),
        json = sim.json_addr(),
        binary = sim.binary_addr().port(),
    );
    let config = cyclerd::config::Config::from_toml(&text, "direct.toml").unwrap();
    let daemon = cyclerd::Daemon::start(config, "direct.toml", clock.clone())
        .await
        .unwrap();
    (sim, daemon)
}

/// A one-channel lab of `device` at 1000x that has run `protocol` to its end, and the test's id.
pub async fn ran_to_end(
    device: cyclerd_cli::lab::DemoDevice,
    protocol: &str,
    origin: &str,
) -> (cyclerd_cli::lab::SimLab, String) {
    let lab = cyclerd_cli::lab::SimLab::start_with(cyclerd_cli::lab::LabOptions {
        channels: 1,
        speed: 1000.0,
        device,
        ..cyclerd_cli::lab::LabOptions::default()
    })
    .await
    .unwrap();
    let test = lab
        .start_everywhere(protocol, origin)
        .await
        .unwrap()
        .remove(0);
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .expect("the test ends");
    (lab, test)
}

/// One HTTP/1.1 request; the status and the body (the connection closes after it).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    http_on(stream, &addr.to_string(), method, path, headers).await
}

/// [`http`] over `stream` (plain or TLS), naming `host`.
pub async fn http_on(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = if method == "POST" { "reason=x" } else { "" };
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("a response or a close");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}
