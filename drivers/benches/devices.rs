//! Device benchmarks against the simulators (run in release: `cargo bench -p cyclerd-drivers
//! --bench devices`), each next to a baseline measured in the same run: a bare TCP echo round
//! trip on loopback, the floor under any request/reply protocol.
//!
//! 1. Modbus TCP transactions/s (one PSB state + actual-values read each).
//! 2. SCPI query round trips/s (one `MEAS:ARR?` read each).
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
use cyclerd_drivers::{Clock, arbin, maccor, neware};
use cyclerd_protocols::compile::{Target, compile};
use cyclerd_protocols::{Engine, Measurement, Plan, Safety};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUND_TRIPS: usize = 20_000;

fn cell(soc: f64) -> CellParams {
    CellParams {
        initial_soc: soc,
        ..CellParams::new(Chemistry::Nmc, 2.5)
    }
}

async fn echo_round_trips() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = [0u8; 12];
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        c.write_all(&[0u8; 12]).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
    }
    ROUND_TRIPS as f64 / start.elapsed().as_secs_f64()
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

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

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

/// One direction's chunk of a conversation: from the client (true) or the server, in bytes.
type Chunk = (bool, usize);

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
    /// (0 when the server answered nothing).
    fn turns(&self) -> Vec<(usize, usize)> {
        let chunks = self.recording.lock().unwrap().take().unwrap_or_default();
        let mut turns: Vec<(usize, usize)> = Vec::new();
        for (from_client, n) in chunks {
            match turns.last_mut() {
                Some((request, 0)) if from_client => *request += n,
                Some((_, reply)) if !from_client => *reply += n,
                _ if from_client => turns.push((n, 0)),
                _ => panic!("a reply before any request"),
            }
        }
        turns
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
            chunks.push((from_client, n));
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The raw cost of `turns` on loopback TCP: a client writing each request's bytes and reading
/// its reply's, a server reading and writing them, nothing parsed or computed; the median of
/// [`BACKFILL_PASSES`] passes over one connection.
async fn replay(turns: &[(usize, usize)]) -> Duration {
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
    median(times)
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
    let mut times = Vec::new();
    for _ in 0..BACKFILL_PASSES {
        times.push(backfill(client, channel, last, page).await);
    }
    let took = median(times);
    proxy.record();
    backfill(proxied, channel, last, page).await;
    let turns = proxy.turns();
    let raw = replay(&turns).await;
    let rate = last as f64 / took.as_secs_f64();
    let raw_rate = last as f64 / raw.as_secs_f64();
    let bytes: usize = turns.iter().map(|&(q, r)| q + r).sum();
    println!(
        "backfill  {family:<7} {last} records, calls of {page:<5} {rate:>10.0} /s   {:.2} of the \
         same {} exchanges ({:.1} MB) replayed raw: {raw_rate:.0} /s",
        rate / raw_rate,
        turns.len(),
        bytes as f64 / 1e6,
    );
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
        let echo = echo_round_trips().await;
        println!("baseline  TCP echo round trips        {echo:>10.0} /s");

        let clock = Clock::scaled(200.0);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let psb = PsbSim::spawn(listener, SimConfig::psb_10060_60("B1", cell(0.55)), clock.clone()).unwrap();
        let mut client = PsbClient::connect(psb.endpoint(), 1, Duration::from_secs(2), None)
            .await
            .unwrap();
        let modbus = reads_per_second(&mut client).await;
        println!(
            "modbus    PSB reads (TCP)            {modbus:>10.0} /s   {:.2} of the echo baseline",
            modbus / echo
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = ScpiSim::spawn(
            listener,
            scpi::SimConfig::new(SimDialect::EaPsb, "B2"),
            cell(0.55),
            clock.clone(),
        )
        .unwrap();
        let mut scpi_client = ScpiClient::connect(sim.endpoint(), ScpiOptions::default())
            .await
            .unwrap();
        let scpi_rate = reads_per_second(&mut scpi_client).await;
        println!(
            "scpi      MEAS:ARR? round trips      {scpi_rate:>10.0} /s   {:.2} of the echo baseline",
            scpi_rate / echo
        );

        let (p50, p99, n) = stepping_latency(&mut client).await;
        println!("stepping  PSB Modbus, {n} crossings   p50 {p50:?}   p99 {p99:?}   (poll period at 100 Hz: 10 ms)");
        let (p50, p99, n) = stepping_latency(&mut scpi_client).await;
        println!("stepping  PSB SCPI, {n} crossings     p50 {p50:?}   p99 {p99:?}");

        neware_backfill().await;
        arbin_backfill().await;
        maccor_backfill().await;
    });
}
