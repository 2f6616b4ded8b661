//! Device benchmarks against the simulators (run in release: `cargo bench -p cyclerd-drivers
//! --bench devices`), each next to a baseline measured in the same run.
//!
//! 1. Polls/s of the PSB's Modbus client (`PowerStage::read`, as fast as it can go), next to a
//!    raw-socket client sending the very same request bytes (captured through a proxy from
//!    one `read`) to the same simulator and reading the reply bytes, parsing nothing: the
//!    ratio is the client's own cost over the simulator's round trip.
//! 2. The same for the SCPI client (EA dialect) on its simulator.
//! 3. Stepping latency: from the poll whose measurement crosses a cutoff to the next setpoint
//!    written, p50 and p99.
//! 4. Backfill: records/s downloading a whole device-side log of a Neware, Arbin and Maccor
//!    simulator from record 1 through `Cycler::records`, next to its own raw ceiling: the same
//!    exchanges (each request's and reply's byte count, captured through a proxy) replayed
//!    over loopback TCP by a client and server that parse and compute nothing.

use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, Cycler, Schedule};
use cyclerd_drivers::ea_psb::{PsbClient, PsbSim, sim::SimConfig};
use cyclerd_drivers::scpi::{self, ScpiClient, ScpiOptions, ScpiSim, SimDialect};
use cyclerd_drivers::stage::PowerStage;
use cyclerd_drivers::transport::Endpoint;
use cyclerd_drivers::{Clock, arbin, maccor, neware};
use cyclerd_protocols::compile::{Target, compile};
use cyclerd_protocols::{Engine, Measurement, Plan, Safety};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "../../scripts/bench_table.rs"]
mod table;
use table::{Goal, Row, Stats, report};

/// Polls per measurement.
const ROUND_TRIPS: usize = 5_000;
/// Measurements per side, alternating client and raw.
const ROUNDS: usize = 5;

fn cell(soc: f64) -> CellParams {
    CellParams {
        initial_soc: soc,
        ..CellParams::new(Chemistry::Nmc, 2.5)
    }
}

async fn reads_per_second(stage: &mut impl PowerStage) -> f64 {
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        stage.read().await.unwrap();
    }
    ROUND_TRIPS as f64 / start.elapsed().as_secs_f64()
}

/// Ping-pong between two cutoffs 1 mV apart: every step change is a crossing; the latency is
/// from the reply that crossed to the acknowledged setpoint write.
async fn stepping_latency(stage: &mut impl PowerStage) -> (Duration, Duration, usize) {
    let yaml = r#"
protocol: ping-pong
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 10 A}
steps:
  - repeat: 400
    steps:
      - "Charge at 2C until 3.7050 V"
      - "Discharge at 2C until 3.7040 V"
"#;
    let plan = Plan::from_yaml(yaml, "bench").unwrap();
    let mut engine = Engine::new(plan, &Safety::default()).unwrap();
    let mut command = engine.start(0.0);
    stage.apply(&command).await.unwrap();
    let t0 = Instant::now();
    let mut latencies = Vec::new();
    loop {
        let r = stage.read().await.unwrap();
        let crossed_at = Instant::now();
        let update = engine.update(&Measurement {
            chamber_c: None,
            test_time_s: t0.elapsed().as_secs_f64(),
            voltage_v: r.voltage_v,
            current_a: r.current_a,
            temperature_c: None,
        });
        if update.outcome.is_some() {
            break;
        }
        if update.command != command {
            command = update.command;
            stage.apply(&command).await.unwrap();
            latencies.push(crossed_at.elapsed());
        }
    }
    stage.output_off().await.unwrap();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (pick(0.5), pick(0.99), latencies.len())
}

/// Stepping latency of either client behind one type (p50, p99, crossings).
trait StepLatency {
    fn latency(
        &mut self,
    ) -> std::pin::Pin<Box<dyn Future<Output = (Duration, Duration, usize)> + '_>>;
}

impl<T: PowerStage> StepLatency for T {
    fn latency(
        &mut self,
    ) -> std::pin::Pin<Box<dyn Future<Output = (Duration, Duration, usize)> + '_>> {
        Box::pin(stepping_latency(self))
    }
}

/// The protocol whose log is backfilled: about ten hours of CCCV cycling, logged every second.
const CCCV_3_CYCLES: &str = include_str!("../../deploy/protocols/cccv-3-cycles.yaml");
/// Simulated seconds per wall second while the log fills: the ten hours take well under one.
const BACKFILL_SPEED: f64 = 50_000.0;
/// Test time between logged records, s.
const BACKFILL_INTERVAL_S: f64 = 1.0;
/// Records the simulator must hold before a backfill is timed.
const BACKFILL_MIN_RECORDS: u64 = 20_000;
/// Reply timeout of the backfilling clients: generous, the bench machine may be loaded.
const BACKFILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Timed passes of each backfill and of its raw replay; the median is reported, since one pass
/// takes only milliseconds and a machine shared with others disturbs single ones.
const BACKFILL_PASSES: usize = 7;

/// [`CCCV_3_CYCLES`] compiled for `target`, as the file `name` with the target's extension.
fn schedule(target: Target, name: &str) -> Schedule {
    let plan = Plan::from_yaml(CCCV_3_CYCLES, "cccv-3-cycles.yaml").unwrap();
    Schedule {
        file_name: format!("{name}.{}", target.extension()),
        text: compile(&plan, target).unwrap(),
    }
}

/// Waits until the test on `channel` has finished (its log is complete and stays as it is)
/// and returns its last record's index.
async fn finished_log(client: &mut impl Cycler, channel: ChannelAddr) -> u64 {
    loop {
        let status = client.status(&[channel]).await.unwrap().remove(0);
        if status.state.is_terminal() {
            assert_eq!(status.state, ChannelState::Finished, "{status:?}");
            assert!(
                status.last_record >= BACKFILL_MIN_RECORDS,
                "only {} records logged",
                status.last_record
            );
            return status.last_record;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Downloads records 1 to `last` of `channel` in calls of `page` records, checking that they
/// come complete and in order; the wall time it took.
async fn backfill(
    client: &mut impl Cycler,
    channel: ChannelAddr,
    last: u64,
    page: usize,
) -> Duration {
    let start = Instant::now();
    let mut next = 1;
    while next <= last {
        let records = client.records(channel, next, page).await.unwrap();
        assert!(!records.is_empty(), "the log ended at {next} of {last}");
        for r in &records {
            assert_eq!(r.index, next, "records out of order");
            next += 1;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(next, last + 1, "more records than the status reported");
    elapsed
}

/// One direction's chunk of a conversation: from the client (true) or the server, its bytes.
type Chunk = (bool, Vec<u8>);

/// A loopback proxy to `upstream` noting every chunk it forwards while `recording` is on, in
/// the order they pass: a reply is noted before it is forwarded, so the request that answers
/// it is always noted after.
struct Proxy {
    addr: SocketAddr,
    recording: Arc<Mutex<Option<Vec<Chunk>>>>,
}

impl Proxy {
    async fn spawn(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recording: Arc<Mutex<Option<Vec<Chunk>>>> = Arc::default();
        let log = Arc::clone(&recording);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream).await.unwrap();
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c_rd, c_wr) = client.into_split();
                let (s_rd, s_wr) = server.into_split();
                tokio::spawn(pump(c_rd, s_wr, true, Arc::clone(&log)));
                tokio::spawn(pump(s_rd, c_wr, false, Arc::clone(&log)));
            }
        });
        Proxy { addr, recording }
    }

    fn record(&self) {
        *self.recording.lock().unwrap() = Some(Vec::new());
    }

    /// The conversation since [`Proxy::record`] as turns: a request's bytes and its reply's
    /// length (0 when the server answered nothing).
    fn exchanges(&self) -> Vec<(Vec<u8>, usize)> {
        let chunks = self.recording.lock().unwrap().take().unwrap_or_default();
        let mut turns: Vec<(Vec<u8>, usize)> = Vec::new();
        for (from_client, bytes) in chunks {
            match turns.last_mut() {
                Some((request, 0)) if from_client => request.extend_from_slice(&bytes),
                Some((_, reply)) if !from_client => *reply += bytes.len(),
                _ if from_client => turns.push((bytes, 0)),
                _ => panic!("a reply before any request"),
            }
        }
        turns
    }

    /// [`Proxy::exchanges`] as byte counts.
    fn turns(&self) -> Vec<(usize, usize)> {
        self.exchanges()
            .into_iter()
            .map(|(q, r)| (q.len(), r))
            .collect()
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    from_client: bool,
    log: Arc<Mutex<Option<Vec<Chunk>>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        if let Some(chunks) = log.lock().unwrap().as_mut() {
            chunks.push((from_client, buf[..n].to_vec()));
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The raw cost of `turns` on loopback TCP: a client writing each request's bytes and reading
/// its reply's, a server reading and writing them, nothing parsed or computed; the median of
/// [`BACKFILL_PASSES`] passes over one connection, each pass's time.
async fn replay(turns: &[(usize, usize)]) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let largest = turns.iter().map(|&(q, r)| q.max(r)).max().unwrap_or(0);
    let server_turns = turns.to_vec();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; largest];
        for _ in 0..BACKFILL_PASSES {
            for &(request, reply) in &server_turns {
                s.read_exact(&mut buf[..request]).await.unwrap();
                s.write_all(&buf[..reply]).await.unwrap();
            }
        }
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; largest];
    let mut times = Vec::new();
    for _ in 0..BACKFILL_PASSES {
        let start = Instant::now();
        for &(request, reply) in turns {
            c.write_all(&buf[..request]).await.unwrap();
            c.read_exact(&mut buf[..reply]).await.unwrap();
        }
        times.push(start.elapsed());
    }
    server.await.unwrap();
    times
}

/// Polls/s of a raw-socket client on `device` sending `exchanges` (one poll's requests,
/// captured) and reading each reply's bytes, [`ROUND_TRIPS`] polls.
async fn raw_polls(device: SocketAddr, exchanges: &[(Vec<u8>, usize)]) -> f64 {
    let mut c = TcpStream::connect(device).await.unwrap();
    c.set_nodelay(true).unwrap();
    let largest = exchanges.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let mut buf = vec![0u8; largest];
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        for (request, reply) in exchanges {
            c.write_all(request).await.unwrap();
            c.read_exact(&mut buf[..*reply]).await.unwrap();
        }
    }
    ROUND_TRIPS as f64 / start.elapsed().as_secs_f64()
}

/// One row: `client`'s polls/s next to the raw-socket client's on the same device, the
/// exchanges of one poll captured through `proxied` (a client of the same device behind
/// `proxy`).
async fn poll_row(
    what: &str,
    device: SocketAddr,
    client: &mut impl PowerStage,
    proxied: &mut impl PowerStage,
    proxy: &Proxy,
) {
    proxied.read().await.unwrap();
    proxy.record();
    proxied.read().await.unwrap();
    let exchanges = proxy.exchanges();
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(reads_per_second(client).await);
        raw.push(raw_polls(device, &exchanges).await);
    }
    let what = format!("{what} ({} exchange(s) per poll)", exchanges.len());
    report(Row {
        section: "poll",
        what: &what,
        unit: "polls/s",
        measured: Stats::of(&ours),
        baseline: Some(("raw socket, same bytes, same sim", Stats::of(&raw))),
        goal: Goal::None,
    });
}

/// Times the backfill of `channel`'s finished log through `client` (the median of
/// [`BACKFILL_PASSES`]), then backfills once through `proxied` (a client of the same device
/// through `proxy`) to capture its exchanges and replay them raw; prints one row.
async fn backfill_row(
    family: &str,
    client: &mut impl Cycler,
    proxied: &mut impl Cycler,
    proxy: &Proxy,
    channel: ChannelAddr,
    page: usize,
) {
    let last = finished_log(client, channel).await;
    let mut rates = Vec::new();
    for _ in 0..BACKFILL_PASSES {
        rates.push(last as f64 / backfill(client, channel, last, page).await.as_secs_f64());
    }
    proxy.record();
    backfill(proxied, channel, last, page).await;
    let turns = proxy.turns();
    let raw = replay(&turns)
        .await
        .into_iter()
        .map(|t| last as f64 / t.as_secs_f64())
        .collect::<Vec<_>>();
    let bytes: usize = turns.iter().map(|&(q, r)| q + r).sum();
    let what = format!(
        "{family} {last} records in calls of {page} ({} exchanges, {:.1} MB)",
        turns.len(),
        bytes as f64 / 1e6
    );
    report(Row {
        section: "backfill",
        what: &what,
        unit: "records/s",
        measured: Stats::of(&rates),
        baseline: Some(("same exchanges replayed raw", Stats::of(&raw))),
        goal: Goal::None,
    });
}

async fn neware_backfill() {
    let clock = Clock::scaled(BACKFILL_SPEED);
    let steps = tempfile::tempdir().unwrap();
    let mut config = neware::SimConfig::new(1, 1, 1, cell(0.3), steps.path());
    config.record_interval_s = BACKFILL_INTERVAL_S;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = neware::NewareSim::spawn(listener, config, clock).unwrap();
    let proxy = Proxy::spawn(sim.addr()).await;
    let connect = |addr| {
        neware::NewareClient::connect(neware::NewareConfig {
            timeout: BACKFILL_TIMEOUT,
            ..neware::NewareConfig::new(addr, steps.path())
        })
    };
    let mut client = connect(sim.addr()).await.unwrap();
    let mut proxied = connect(proxy.addr).await.unwrap();
    let channel = client.channels().await.unwrap()[0];
    let schedule = schedule(Target::Neware, "cccv");
    client.start(channel, &schedule, "backfill").await.unwrap();
    // A page of the BTS download is 1000 records: one inquiredf and one download per call.
    backfill_row("neware", &mut client, &mut proxied, &proxy, channel, 1000).await;
}

async fn arbin_backfill() {
    let clock = Clock::scaled(BACKFILL_SPEED);
    let mut config = arbin::SimConfig::new(1, cell(0.3));
    config.record_interval_s = BACKFILL_INTERVAL_S;
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let files = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = arbin::ArbinSim::spawn(control, files, config, clock).unwrap();
    let proxy = Proxy::spawn(sim.control_addr()).await;
    let direct = sim.client_config(BACKFILL_TIMEOUT);
    let mut client = arbin::ArbinClient::connect(direct.clone()).await.unwrap();
    let mut proxied = arbin::ArbinClient::connect(arbin::ArbinConfig {
        control_port: proxy.addr.port(),
        ..direct
    })
    .await
    .unwrap();
    let channel = client.channels().await.unwrap()[0];
    let schedule = schedule(Target::Arbin, "cccv");
    client.start(channel, &schedule, "backfill").await.unwrap();
    // The client asks GET_RECORDS for at most 1000 records at a time.
    backfill_row("arbin", &mut client, &mut proxied, &proxy, channel, 1000).await;
}

async fn maccor_backfill() {
    let clock = Clock::scaled(BACKFILL_SPEED);
    let mut config = maccor::SimConfig::new(1, cell(0.3));
    config.record_interval_s = BACKFILL_INTERVAL_S;
    let json = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let binary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = maccor::MaccorSim::spawn(json, binary, config, clock).unwrap();
    let proxy = Proxy::spawn(sim.binary_addr()).await;
    let direct = sim.client_config(BACKFILL_TIMEOUT);
    let mut client = maccor::MaccorClient::connect(direct.clone()).await.unwrap();
    let mut proxied = maccor::MaccorClient::connect(maccor::MaccorConfig {
        binary_port: proxy.addr.port(),
        ..direct
    })
    .await
    .unwrap();
    let channel = client.channels().await.unwrap()[0];
    let schedule = schedule(Target::Maccor, "CCCV");
    client.start(channel, &schedule, "backfill").await.unwrap();
    // One record-log read transfers up to the client's cap, in 500-byte blocks.
    let page = maccor::client::MAX_RECORDS_PER_DOWNLOAD;
    backfill_row("maccor", &mut client, &mut proxied, &proxy, channel, page).await;
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let clock = Clock::scaled(200.0);
        let timeout = Duration::from_secs(2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let psb = PsbSim::spawn(
            listener,
            SimConfig::psb_10060_60("B1", cell(0.55)),
            clock.clone(),
        )
        .unwrap();
        let Endpoint::Tcp(psb_addr) = psb.endpoint() else {
            unreachable!("a TCP simulator")
        };
        let mut client = PsbClient::connect(psb.endpoint(), 1, timeout, None)
            .await
            .unwrap();
        let proxy = Proxy::spawn(psb_addr).await;
        let mut proxied = PsbClient::connect(Endpoint::Tcp(proxy.addr), 1, timeout, None)
            .await
            .unwrap();
        poll_row(
            "EA PSB, Modbus TCP client",
            psb_addr,
            &mut client,
            &mut proxied,
            &proxy,
        )
        .await;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = ScpiSim::spawn(
            listener,
            scpi::SimConfig::new(SimDialect::EaPsb, "B2"),
            cell(0.55),
            clock.clone(),
        )
        .unwrap();
        let Endpoint::Tcp(scpi_addr) = sim.endpoint() else {
            unreachable!("a TCP simulator")
        };
        let mut scpi_client = ScpiClient::connect(sim.endpoint(), ScpiOptions::default())
            .await
            .unwrap();
        let proxy = Proxy::spawn(scpi_addr).await;
        let mut scpi_proxied =
            ScpiClient::connect(Endpoint::Tcp(proxy.addr), ScpiOptions::default())
                .await
                .unwrap();
        poll_row(
            "EA PSB, SCPI client",
            scpi_addr,
            &mut scpi_client,
            &mut scpi_proxied,
            &proxy,
        )
        .await;
        drop(scpi_proxied);

        for (what, stage) in [
            ("PSB Modbus", &mut client as &mut dyn StepLatency),
            ("PSB SCPI", &mut scpi_client as &mut dyn StepLatency),
        ] {
            let mut p99 = Vec::new();
            let mut crossings = 0;
            for _ in 0..3 {
                let (_, q, n) = stage.latency().await;
                p99.push(q.as_secs_f64() * 1e3);
                crossings = n;
            }
            let what =
                format!("{what}: cutoff crossed -> next setpoint written, p99 of {crossings}");
            report(Row {
                section: "stepping",
                what: &what,
                unit: "ms",
                measured: Stats::of(&p99),
                baseline: None,
                goal: Goal::AtMost(10.0),
            });
        }

        neware_backfill().await;
        arbin_backfill().await;
        maccor_backfill().await;
    });
}
