//! What the share tests run on: real `cyclerhub serve` processes, the `cyclerhub` command, the
//! sending hub's daemon (the store API), and waits bounded by [`SHARE_WAIT`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cyclerd_proto::ingest::{CycleSummary, Entry, entry::Body};
use cyclerhub::HubStore;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;

/// Upper bound for a share to catch up: it includes a reconnection's backoff after a kill.
pub(super) const SHARE_WAIT: Duration = Duration::from_secs(60);
/// The lab secret of the anonymising shares.
pub(super) const SECRET: &[u8] = b"the lab secret of the sending hub, 32+ bytes";
/// The daemon the sending hub's tests come from.
pub(super) const DAEMON: &str = "daemon-a";

/// A real `cyclerhub serve` on a database, on a fixed loopback port (kept across restarts,
/// so a share's target stays valid).
pub(super) struct Serve {
    /// The process; killed when dropped.
    child: tokio::process::Child,
    /// Its gRPC address.
    pub(super) addr: SocketAddr,
    /// The lines of its log.
    log: mpsc::UnboundedReceiver<String>,
    /// Where systemd's notify socket lives: READY=1 says the hub serves.
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts a hub on `db` at `addr` (a free port when `None`) and waits until it serves.
    pub(super) async fn start(db: &str, addr: Option<SocketAddr>) -> Serve {
        Serve::start_with(db, addr, &[]).await
    }

    /// [`Serve::start`] with more arguments for `serve` (TLS, tokens).
    pub(super) async fn start_with(db: &str, addr: Option<SocketAddr>, args: &[&str]) -> Serve {
        let addr = addr.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let notify = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&notify).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
            .args(["serve", "--db", db, "--listen", &addr.to_string()])
            .args(if args.contains(&"--http") {
                &[][..]
            } else {
                &["--no-http"][..]
            })
            .args(args)
            .env("NOTIFY_SOCKET", &notify)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (tx, log) = mpsc::unbounded_channel();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut buf = vec![0u8; 4096];
        loop {
            let n = tokio::time::timeout(SHARE_WAIT, socket.recv(&mut buf))
                .await
                .expect("the hub says READY=1 in time")
                .unwrap();
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        Serve {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub(super) async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Waits for a log line containing `needle`.
    pub(super) async fn logged(&mut self, needle: &str) {
        tokio::time::timeout(SHARE_WAIT, async {
            loop {
                let line = self.log.recv().await.expect("the hub's log goes on");
                if line.contains(needle) {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the hub logs {needle:?} in time"));
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Runs `cyclerhub ARGS`; returns its stderr, failing the test when it fails.
pub(super) async fn cyclerhub(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "cyclerhub {args:?}: {stderr}");
    stderr
}

/// Polls `f` (a read of a database) every 20 ms until it answers, for at most [`SHARE_WAIT`].
pub(super) async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    tokio::time::timeout(SHARE_WAIT, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        loop {
            ticks.tick().await;
            if let Some(v) = f() {
                return v;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {SHARE_WAIT:?}"))
}

/// The sending hub's daemon, writing through the store API as an upload stream would.
pub(super) struct Daemon {
    /// The sending hub's database, as a second process opens it.
    pub(super) store: HubStore,
    /// The last entry id written.
    pub(super) id: u64,
}

impl Daemon {
    pub(super) fn apply(&mut self, bodies: impl IntoIterator<Item = Body>) {
        let entries: Vec<Entry> = bodies
            .into_iter()
            .map(|b| {
                self.id += 1;
                super::super::entry(self.id, b)
            })
            .collect();
        let out = self.store.apply_batch(DAEMON, 1, &entries).unwrap();
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    }

    /// Registers `test_id` of `cell` with `chemistry`; the protocol's name names the cell.
    pub(super) fn register(&mut self, test_id: &str, cell: &str, chemistry: &str) {
        let mut e = super::super::registered(0, test_id);
        let Some(Body::TestRegistered(t)) = &mut e.body else {
            unreachable!()
        };
        t.metadata.insert("cell_id".into(), cell.into());
        t.metadata.insert("chemistry".into(), chemistry.into());
        t.protocol_name = format!("C/3 capacity check of {cell}");
        self.apply(e.body);
    }

    /// Samples `from..to` of `test_id`, in batches of 500, and an event naming the cell.
    pub(super) fn samples(&mut self, test_id: &str, from: u64, to: u64) {
        let mut seq = from;
        while seq < to {
            let n = (to - seq).min(500);
            self.apply([Body::Samples(super::super::batch(
                test_id, seq, n as usize, false,
            ))]);
            seq += n;
        }
        let event =
            super::super::event(0, test_id, &format!("{to} samples of cell NMC-0042 by ada"));
        self.apply(event.body);
    }

    /// Cycle `n` of `test_id` over samples `first..=last`.
    pub(super) fn cycle(
        &mut self,
        test_id: &str,
        n: u32,
        (first, last): (u64, u64),
        complete: bool,
    ) {
        self.apply([Body::Cycle(CycleSummary {
            test_id: test_id.into(),
            cycle: n,
            complete,
            start_test_time_s: first as f64,
            end_test_time_s: last as f64,
            charge_capacity_ah: (last - first) as f64 / 3600.0,
            discharge_capacity_ah: 0.5,
            charge_energy_wh: 1.5,
            discharge_energy_wh: 1.25,
            max_temperature_c: f64::NAN,
            dcir_ohm: 0.02,
            first_seq: first,
            last_seq: last,
        })]);
    }

    pub(super) fn end(&mut self, test_id: &str, samples: u64) {
        self.apply(super::super::ended(0, test_id, samples).body);
    }
}

/// The tests the receiver holds, by id.
pub(super) fn received(store: &HubStore) -> Vec<String> {
    store
        .list_tests()
        .unwrap()
        .into_iter()
        .map(|t| t.test_id)
        .collect()
}

pub(super) fn samples_at(store: &HubStore, test_id: &str) -> u64 {
    store.sample_count(test_id).unwrap_or(0)
}

/// A salt file for `--anonymise`, in `dir`.
pub(super) fn salt_file(dir: &Path) -> PathBuf {
    let path = dir.join("lab-secret");
    std::fs::write(&path, SECRET).unwrap();
    path
}

/// Runs `cyclerhub ARGS`; returns its stdout, failing the test when it fails.
pub(super) async fn cyclerhub_stdout(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
