//! `cyclerd demo`: a whole simulated lab in one process.
//!
//! N simulated EA PSB supplies (real Modbus TCP servers on loopback, each with a simulated cell),
//! the daemon stepping them through a protocol, the outbox, the uploader and an embedded hub
//! (real gRPC on loopback, SQLite storage), all on one scaled clock. It prints live progress and
//! ends with a summary line that says whether every acquired sample reached the hub.

use crate::lab::{
    CHAMBER_PROTOCOL, DEMO_CHARGE_PROTOCOL, DEMO_PROTOCOL, DemoChamber, DemoDevice, LabOptions,
    SimLab,
};
use crate::view;
use cyclerd::{Daemon, Summary};
use cyclerd_drivers::Clock;
use cyclerd_protocols::Plan;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long the hub gets to acknowledge the backlog after the protocols end.
const DRAIN: Duration = Duration::from_secs(30);

/// Demo settings (the command-line flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub channels: usize,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Stop after this much wall time even if protocols are still running.
    pub wall_limit: Option<Duration>,
    /// Protocol file; the built-in demo protocol if `None`.
    pub protocol: Option<PathBuf>,
    /// Where the outbox and hub databases go; a temporary directory if `None`.
    pub data_dir: Option<PathBuf>,
    /// Where the control API listens (for `cyclerctl watch` in another terminal).
    pub control: SocketAddr,
    /// Where the web monitor listens (an ephemeral port is used if this one is taken); `None`:
    /// no monitor.
    pub web: Option<SocketAddr>,
    /// The simulated device family.
    pub device: DemoDevice,
    /// The simulated chamber every cell sits in, if any.
    pub chamber: Option<DemoChamber>,
    /// Print progress every this much wall time.
    pub progress_every: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            channels: 4,
            speed: 500.0,
            wall_limit: None,
            protocol: None,
            data_dir: None,
            control: SocketAddr::from(([127, 0, 0, 1], 50052)),
            web: Some(SocketAddr::from(([127, 0, 0, 1], 8620))),
            device: DemoDevice::EaPsb,
            chamber: None,
            progress_every: Duration::from_secs(1),
        }
    }
}

/// Runs the demo, writing progress to `out`; returns the summary.
pub async fn run(options: DemoOptions, out: &mut (dyn Write + Send)) -> anyhow::Result<Summary> {
    // The demo's control API is open, without TLS or tokens: so on loopback only.
    anyhow::ensure!(
        options.control.ip().is_loopback(),
        "--control {}: the demo's control API is open to anyone who reaches it; give a loopback \
         address (127.0.0.1:PORT), or run a lab configuration with TLS and tokens",
        options.control
    );
    if let Some(web) = options.web {
        anyhow::ensure!(
            web.ip().is_loopback(),
            "--web {web}: the demo's monitor is open to anyone who reaches it (start and stop \
             included); give a loopback address (127.0.0.1:PORT), or run a lab configuration \
             with TLS and tokens"
        );
    }
    let (protocol, origin) = match &options.protocol {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read protocol {}: {e}", path.display()))?,
            path.display().to_string(),
        ),
        None if options.device == DemoDevice::Riden => (
            DEMO_CHARGE_PROTOCOL.to_string(),
            "deploy/protocols/demo-charge.yaml".into(),
        ),
        None => (
            DEMO_PROTOCOL.to_string(),
            "deploy/protocols/demo.yaml".into(),
        ),
    };
    let plan = Plan::from_yaml(&protocol, &origin)?;
    let capacity_ah = plan.capacity_ah.unwrap_or(2.5);
    let lab = SimLab::start_with(LabOptions {
        channels: options.channels,
        capacity_ah,
        speed: options.speed,
        data_dir: options.data_dir.clone(),
        device: options.device,
        chamber: options.chamber,
        ..LabOptions::default()
    })
    .await?;

    // Control API, so `cyclerctl watch` works from another terminal.
    let control_listener = match TcpListener::bind(options.control).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?,
    };
    let control_addr = control_listener.local_addr()?;
    let (control_stop, control_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cyclerd::control::serve(
        lab.daemon.clone(),
        control_listener,
        async {
            let _ = control_stopped.await;
        },
    ));

    // The web monitor, open like the control API (loopback only).
    let (web_stop, web_stopped) = tokio::sync::oneshot::channel::<()>();
    let web_addr = match options.web {
        Some(web) => {
            let listener = match TcpListener::bind(web).await {
                Ok(l) => l,
                Err(_) => TcpListener::bind("127.0.0.1:0").await?,
            };
            let addr = listener.local_addr()?;
            tokio::spawn(cyclerd::web::run(
                lab.daemon.clone(),
                listener,
                cyclerd::web::WebOptions::default(),
                async {
                    let _ = web_stopped.await;
                },
            ));
            Some(addr)
        }
        None => None,
    };
    if let Some(addr) = web_addr {
        writeln!(out, "monitor: http://{addr}/")?;
    }
    writeln!(
        out,
        "cyclerd demo: {n} simulated {device} channel(s) at {speed}x, protocol {name:?}\n\
         {chamber}data: {dir}{kept}\nhub: http://{hub}   control: http://{control_addr} \
         (try: cyclerctl watch --daemon http://{control_addr})",
        n = options.channels,
        device = options.device.label(),
        speed = options.speed,
        name = plan.name,
        chamber = match options.chamber {
            Some(c) if options.device.is_cycler() => format!(
                "every cell in a simulated {} chamber; its air is recorded with every record \
                 (chamber steps need stepped channels)\n",
                c.label()
            ),
            Some(c) => format!(
                "every cell in a simulated {} chamber; channel 1 runs {:?} and owns its set \
                 point\n",
                c.label(),
                "deploy/protocols/chamber-25-45-25.yaml"
            ),
            None => String::new(),
        },
        dir = lab.data_dir.display(),
        kept = if options.data_dir.is_some() {
            ""
        } else {
            " (temporary; pass --data-dir to keep it)"
        },
        hub = lab.hub_addr,
    )?;
    if let Some(app) = lab.hub_app_addr {
        writeln!(out, "hub app: http://{app}/")?;
    }
    // Chamber steps need a stepped channel (no cycler schedule format expresses them).
    let chamber_test = options.chamber.is_some() && !options.device.is_cycler();
    match options.chamber {
        // One test owns the chamber's set point; the others cycle at whatever it is.
        Some(_) if chamber_test && options.protocol.is_none() => {
            lab.start_on(
                0,
                CHAMBER_PROTOCOL,
                "deploy/protocols/chamber-25-45-25.yaml",
            )
            .await?;
            for k in 1..options.channels {
                lab.start_on(k, &protocol, &origin).await?;
            }
        }
        _ => {
            lab.start_everywhere(&protocol, &origin).await?;
        }
    }

    let wall_start = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(options.progress_every);
    let deadline = options.wall_limit.map(|d| wall_start + d);
    let daemon = lab.daemon.clone();
    let clock = lab.clock.clone();
    let done = daemon.wait_all_done();
    tokio::pin!(done);
    loop {
        tokio::select! {
            _ = &mut done => break,
            _ = ticks.tick() => print_progress(&daemon, &clock, wall_start, out)?,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                writeln!(out, "--for limit reached: stopping every channel")?;
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                writeln!(out, "interrupted: stopping every channel")?;
                break;
            }
        }
    }
    // A shutdown leaves stepped tests interrupted for the next start, and a cycler runs its
    // tests on; the demo's lab ends with it, so its tests end first (a cycler's records up to the
    // stop are downloaded).
    for channel in lab.channel_ids() {
        let _ = daemon.stop_test(&channel, "the demo was stopped").await;
    }
    let _ = tokio::time::timeout(DRAIN, daemon.wait_all_done()).await;
    let (summary, _, _temp) = lab.stop(DRAIN).await?;
    print_progress(&daemon, &clock, wall_start, out)?;
    let _ = control_stop.send(());
    let _ = web_stop.send(());
    writeln!(
        out,
        "summary: channels={} samples_acquired={} samples_acknowledged={} lost={}",
        summary.channels,
        summary.samples_acquired,
        summary.samples_acknowledged,
        summary.lost()
    )?;
    Ok(summary)
}

fn print_progress(
    daemon: &Daemon,
    clock: &Clock,
    wall_start: tokio::time::Instant,
    out: &mut (dyn Write + Send),
) -> std::io::Result<()> {
    let sim_s = clock.now();
    writeln!(
        out,
        "[{:6.1} s wall | {} simulated]",
        wall_start.elapsed().as_secs_f64(),
        format_hms(sim_s)
    )?;
    for line in view::render(&daemon.snapshots()) {
        writeln!(out, "{line}")?;
    }
    let st = daemon.status();
    let outbox = format!(
        "outbox: {} entries waiting, {} of {} samples acknowledged by the hub{}",
        st.backlog_entries,
        st.samples_acknowledged,
        daemon.summary().samples_acquired,
        if st.hub_connected {
            ""
        } else {
            " (hub not connected)"
        }
    );
    writeln!(out, "{}", view::fit(&outbox, view::WIDTH))
}

fn format_hms(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

/// Parses "90s", "5m", "2h", "1.5h" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 90s, 5m, 2h)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" | "hr" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use s, m or h)"
            ));
        }
    };
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-3s").is_err());
    }
}
