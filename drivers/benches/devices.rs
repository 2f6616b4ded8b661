//! Device benchmarks against the simulators (run in release: `cargo bench -p cyclerd-drivers
//! --bench devices`), each next to a baseline measured in the same run: a bare TCP echo round
//! trip on loopback, the floor under any request/reply protocol.
//!
//! 1. Modbus TCP transactions/s (one PSB state + actual-values read each).
//! 2. SCPI query round trips/s (one `MEAS:ARR?` read each).
//! 3. Stepping latency: from the poll whose measurement crosses a cutoff to the next setpoint
//!    written, p50 and p99.

use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::ea_psb::{PsbClient, PsbSim, sim::SimConfig};
use cyclerd_drivers::scpi::{self, ScpiClient, ScpiOptions, ScpiSim, SimDialect};
use cyclerd_drivers::stage::PowerStage;
use cyclerd_protocols::{Engine, Measurement, Plan, Safety};
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
    });
}
