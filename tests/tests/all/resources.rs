//! Bounded resources, with the real binaries as child processes held to 1024 open files (soft
//! and hard, as a shell's default `ulimit -n`): 1,100 idle TCP connections (opened, nothing
//! sent) neither take the control port or the hub from real clients nor spin the process.
//! CPU time is the child's own (utime + stime from /proc), so this module is Linux only.

use super::harness::{self, Process};
use cyclerd::proto::control::GetStatusRequest;
use cyclerd::proto::control::control_client::ControlClient;
use cyclerd::proto::hub::ListTestsRequest;
use cyclerd::proto::hub::query_client::QueryClient;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// What a shell gives a process by default.
const OPEN_FILES: u64 = 1024;
/// More idle connections than the process may hold files.
const IDLE: usize = 1100;
/// How long the CPU time is measured over.
const WINDOW: Duration = Duration::from_secs(2);
/// At most this share of one core over [`WINDOW`] (a spinning accept loop takes all of it).
const MAX_CPU: f64 = 0.5;

/// Opens `n` connections to `addr` that send nothing, and keeps them open.
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    idle
}

/// The CPU time a process has used so far, user and system.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses (which may hold spaces) come fields 3 on: utime and
    // stime are fields 14 and 15, in clock ticks.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// The share of one core `pid` uses over [`WINDOW`] (a measurement, not a wait for an event).
async fn cpu_share(pid: u32) -> f64 {
    let (cpu, wall) = (cpu_time(pid), Instant::now());
    tokio::time::sleep(WINDOW).await;
    (cpu_time(pid) - cpu).as_secs_f64() / wall.elapsed().as_secs_f64()
}

async fn hub_answers(addr: SocketAddr, within: Duration) -> Duration {
    let asked = Instant::now();
    tokio::time::timeout(within, async {
        let mut query = QueryClient::connect(format!("http://{addr}")).await?;
        query.list_tests(ListTestsRequest::default()).await?;
        anyhow::Ok(())
    })
    .await
    .expect("the hub answers in time")
    .expect("the hub answers");
    asked.elapsed()
}

fn hub_args(dir: &std::path::Path, addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--db".into(),
        dir.join("hub.sqlite").display().to_string(),
        "--listen".into(),
        addr.to_string(),
        "--no-http".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_port_answers_and_the_daemon_stays_idle_under_1100_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let control = harness::free_addr();
    let config = dir.path().join("lab.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nname = \"resources\"\nid = \"resources-daemon\"\n\
             [store]\npath = {store:?}\n[hub]\naddress = \"http://{hub}\"\n\
             [control]\nlisten = \"{control}\"\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\n",
            store = dir.path().join("outbox.sqlite").display().to_string(),
            hub = harness::free_addr(),
        ),
    )
    .unwrap();
    let args = [
        "run".to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    let mut daemon =
        Process::spawn_with_open_files(env!("CARGO_BIN_EXE_cyclerd-under-test"), &args, OPEN_FILES);
    daemon.wait_for_line("cyclerd running").await;
    let pid = daemon.child.id().unwrap();

    let _idle = idle_connections(control, IDLE).await;
    let asked = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        let mut client = ControlClient::connect(format!("http://{control}")).await?;
        anyhow::Ok(client.get_status(GetStatusRequest {}).await?.into_inner())
    })
    .await
    .expect("the control port answers within 5 s")
    .expect("GetStatus succeeds");
    let answered = asked.elapsed();
    assert!(status.channels.is_empty(), "{status:?}");
    let share = cpu_share(pid).await;
    eprintln!("control port: answered in {answered:?}; the daemon used {share:.3} of a core");
    assert!(share < MAX_CPU, "the daemon used {share:.2} of a core");
    assert!(daemon.terminate().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_answers_and_stays_idle_under_1100_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let addr = harness::free_addr();
    let mut hub = Process::spawn_with_open_files(
        env!("CARGO_BIN_EXE_cyclerhub-under-test"),
        &hub_args(dir.path(), addr, &[]),
        OPEN_FILES,
    );
    hub.wait_for_line("cyclerhub serving").await;
    let pid = hub.child.id().unwrap();

    let _idle = idle_connections(addr, IDLE).await;
    let answered = hub_answers(addr, Duration::from_secs(5)).await;
    let share = cpu_share(pid).await;
    eprintln!("hub: answered in {answered:?}; it used {share:.3} of a core");
    assert!(share < MAX_CPU, "the hub used {share:.2} of a core");
    assert!(hub.terminate().await);
}

/// With the connection cap set above what the open-file limit allows, accepting runs out of
/// descriptors (EMFILE): the hub backs off instead of spinning, says so once, and answers again
/// once the silent connections' handshake timeout (10 s) has closed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_out_of_descriptors_backs_off_without_spinning_and_recovers_after_the_handshake_timeout()
 {
    let dir = tempfile::tempdir().unwrap();
    let addr = harness::free_addr();
    let mut hub = Process::spawn_with_open_files(
        env!("CARGO_BIN_EXE_cyclerhub-under-test"),
        &hub_args(dir.path(), addr, &["--max-connections", "4096"]),
        OPEN_FILES,
    );
    hub.wait_for_line("cyclerhub serving").await;
    let pid = hub.child.id().unwrap();

    let _idle = idle_connections(addr, IDLE).await;
    hub.wait_for_line("cannot accept connections").await;
    let share = cpu_share(pid).await;
    eprintln!("hub out of descriptors: it used {share:.3} of a core");
    assert!(share < MAX_CPU, "the hub used {share:.2} of a core");
    let answered = hub_answers(addr, Duration::from_secs(30)).await;
    eprintln!("hub out of descriptors: answered after {answered:?}");
    hub.wait_for_line("accepting connections again").await;
    assert!(hub.terminate().await);
}
