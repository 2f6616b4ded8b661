//! The `cyclerd` command line (`run`, `demo`). A library module so that tests can run the real
//! binary's code as a child process (and kill it).

use crate::config::Config;
use crate::demo::{self, DemoOptions};
use crate::{Daemon, control};
use clap::{Parser, Subcommand};
use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::ea_psb::{PsbSim, sim::SimConfig};
use cyclerd_drivers::transport::Endpoint;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "cyclerd: battery cycler acquisition daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with a lab configuration.
    Run {
        /// The lab configuration (TOML); see deploy/ for examples.
        #[arg(long)]
        config: PathBuf,
        /// Simulation only: run the clock this many times faster than wall time.
        #[arg(long, hide = true, default_value_t = 1.0)]
        speed: f64,
        /// Simulation only: the unix time at which the scaled clock equals wall time, so that
        /// restarted daemons agree on the time (see Clock::anchored).
        #[arg(long, hide = true)]
        clock_anchor: Option<f64>,
    },
    /// Run a simulated lab, the daemon and an embedded hub in one process, live.
    Demo {
        /// Number of simulated channels.
        #[arg(long, default_value_t = 4)]
        channels: usize,
        /// Simulated seconds per wall second.
        #[arg(long, default_value_t = 500.0)]
        speed: f64,
        /// Stop after this much wall time (e.g. 30s, 5m).
        #[arg(long = "for", value_parser = demo::parse_duration)]
        wall_limit: Option<Duration>,
        /// Protocol file (YAML); defaults to deploy/protocols/demo.yaml.
        #[arg(long)]
        protocol: Option<PathBuf>,
        /// Directory for the outbox and hub databases; a temporary one by default.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Control API address (an ephemeral port is used if this one is taken).
        #[arg(long, default_value = "127.0.0.1:50052")]
        control: SocketAddr,
        /// The simulated device family.
        #[arg(long, value_enum, default_value = "ea-psb")]
        device: demo::DemoDevice,
    },
    /// Run one simulated device standalone, on its real wire protocol, until Ctrl-C.
    Sim {
        #[command(subcommand)]
        device: SimDevice,
    },
}

/// Settings every simulated device shares.
#[derive(clap::Args)]
struct SimCell {
    /// nmc or lfp.
    #[arg(long, default_value = "nmc")]
    cell: String,
    /// Capacity of the simulated cell in Ah.
    #[arg(long, default_value_t = 2.5)]
    capacity: f64,
    /// State of charge at start, 0..1.
    #[arg(long, default_value_t = 0.5)]
    soc: f64,
    /// Simulated seconds per wall second.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
}

impl SimCell {
    fn params(&self) -> anyhow::Result<CellParams> {
        let chemistry = match self.cell.as_str() {
            "nmc" => Chemistry::Nmc,
            "lfp" => Chemistry::Lfp,
            other => anyhow::bail!("unknown cell {other:?}; use nmc or lfp"),
        };
        anyhow::ensure!(self.capacity > 0.0, "--capacity must be positive");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.soc),
            "--soc must be between 0 and 1"
        );
        Ok(CellParams {
            initial_soc: self.soc,
            ..CellParams::new(chemistry, self.capacity)
        })
    }
}

#[derive(Subcommand)]
enum SimDevice {
    /// Elektro-Automatik PSB 10060-60 over Modbus TCP, or Modbus RTU on a pseudo-terminal as
    /// its USB port presents itself (unit 1).
    EaPsb {
        /// Where to listen (the device's port is 502).
        #[arg(long, default_value = "127.0.0.1:502")]
        listen: SocketAddr,
        /// Serve Modbus RTU on a pseudo-terminal instead, linked from this path (unix).
        #[arg(long, conflicts_with = "listen")]
        pty: Option<PathBuf>,
        /// Serial number the device reports.
        #[arg(long, default_value = "SIM0001")]
        serial: String,
        #[command(flatten)]
        cell: SimCell,
    },
    /// A SCPI instrument over raw TCP, or over a serial line on a pseudo-terminal.
    Scpi {
        /// Which instrument to be.
        #[arg(long, value_enum, default_value = "ea-psb")]
        model: ScpiModel,
        /// Where to listen (SCPI's raw socket port is 5025).
        #[arg(long, default_value = "127.0.0.1:5025")]
        listen: SocketAddr,
        /// Serve on a pseudo-terminal instead (any baud rate), linked from this path (unix).
        #[arg(long, conflicts_with = "listen")]
        pty: Option<PathBuf>,
        #[arg(long, default_value = "SIM0001")]
        serial: String,
        #[command(flatten)]
        cell: SimCell,
    },
    /// A Riden RD60xx over Modbus RTU on a pseudo-terminal (unix).
    Riden {
        /// 6006, 6012, 6018 or 6024.
        #[arg(long, default_value_t = 6006)]
        model: u16,
        /// Also make this path a link to the pseudo-terminal (e.g. /tmp/riden), so the lab
        /// configuration can name a stable port.
        #[arg(long)]
        pty: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        serial: u32,
        #[command(flatten)]
        cell: SimCell,
    },
}

/// Instruments `cyclerd sim scpi` can be.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ScpiModel {
    EaPsb,
    Keithley2450,
    KeysightB2901,
    ItechIt6000,
    Bk8600,
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run_command(cli)),
        Err(e) => {
            eprintln!("cyclerd: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_command(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Run {
            config,
            speed,
            clock_anchor,
        } => {
            init_logging("info");
            let clock = match clock_anchor {
                Some(anchor) => Clock::anchored(speed, anchor),
                None => Clock::scaled(speed),
            };
            run(config, clock).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Sim { device } => {
            init_logging("info");
            sim(device).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Demo {
            channels,
            speed,
            wall_limit,
            protocol,
            data_dir,
            control,
            device,
        } => {
            init_logging("warn");
            let options = DemoOptions {
                channels,
                speed,
                wall_limit,
                protocol,
                data_dir,
                control,
                device,
                ..DemoOptions::default()
            };
            let mut stdout = std::io::stdout();
            demo::run(options, &mut stdout).await.map(|summary| {
                if summary.lost() == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("cyclerd: {e:#}");
        ExitCode::from(2)
    })
}

async fn run(path: PathBuf, clock: Clock) -> anyhow::Result<()> {
    // A write past the file-size limit (RLIMIT_FSIZE, a quota) would kill the process with
    // SIGXFSZ; handled, it becomes a failed commit, which pauses acquisition until space returns.
    #[cfg(unix)]
    let _file_size_signal =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))?;
    let config = Config::load(&path)?;
    let origin = path.display().to_string();
    let listen = config.control.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("{origin}: control.listen = {listen}: {e}"))?;
    let daemon = Daemon::start(config, &origin, clock).await?;
    tracing::info!(
        daemon_id = %daemon.outbox().identity().daemon_id,
        "cyclerd running; control API on {listen}"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(control::serve(daemon.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    cyclerhub::cli::shutdown_signal().await;
    tracing::info!("shutting down: switching outputs off and flushing the outbox");
    let summary = daemon.shutdown(Duration::from_secs(5)).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    tracing::info!(
        "stopped; {} samples not yet acknowledged by the hub stay in the outbox",
        summary.lost()
    );
    Ok(())
}

async fn sim(device: SimDevice) -> anyhow::Result<()> {
    match device {
        SimDevice::EaPsb {
            listen,
            pty,
            serial,
            cell,
        } => {
            let clock = Clock::scaled(cell.speed);
            let config = SimConfig::psb_10060_60(&serial, cell.params()?);
            let (_sim, _link, shown) = match pty {
                Some(link) => {
                    let (sim, link) = psb_on_pty(config, clock, link)?;
                    let shown = format!("{link}, Modbus RTU unit 1");
                    (sim, Some(link), shown)
                }
                None => {
                    let sim = PsbSim::spawn(bind(listen).await?, config, clock)?;
                    (sim, None, format!("{listen}, Modbus TCP unit 1"))
                }
            };
            println!(
                "simulated EA PSB 10060-60 (serial {serial}) on {shown}, at {}x; Ctrl-C stops it",
                cell.speed
            );
            cyclerhub::cli::shutdown_signal().await;
        }
        SimDevice::Scpi {
            model,
            listen,
            pty,
            serial,
            cell,
        } => {
            use cyclerd_drivers::scpi::{self, ScpiSim, SimDialect};
            let dialect = match model {
                ScpiModel::EaPsb => SimDialect::EaPsb,
                ScpiModel::Keithley2450 => SimDialect::Keithley2450,
                ScpiModel::KeysightB2901 => SimDialect::KeysightB2901,
                ScpiModel::ItechIt6000 => SimDialect::ItechIt6000,
                ScpiModel::Bk8600 => SimDialect::Bk8600,
            };
            let config = scpi::SimConfig::new(dialect, &serial);
            let idn = config.idn.clone();
            let (params, clock) = (cell.params()?, Clock::scaled(cell.speed));
            let (_sim, _link, shown) = match pty {
                Some(link) => {
                    let (sim, link) = scpi_on_pty(config, params, clock, link)?;
                    let shown = link.to_string();
                    (sim, Some(link), shown)
                }
                None => {
                    let sim = ScpiSim::spawn(bind(listen).await?, config, params, clock)?;
                    (sim, None, listen.to_string())
                }
            };
            println!(
                "simulated {idn} on {shown} (SCPI, LF), at {}x; Ctrl-C stops it",
                cell.speed
            );
            cyclerhub::cli::shutdown_signal().await;
        }
        SimDevice::Riden {
            model,
            pty,
            serial,
            cell,
        } => riden(model, pty, serial, cell).await?,
    }
    Ok(())
}

async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (try --listen ADDR)"))
}

/// A path linked to a simulator's pseudo-terminal, so a lab configuration can name a stable
/// port; the link goes when the simulator stops.
struct SimLink {
    link: PathBuf,
    target: String,
}

impl SimLink {
    #[cfg(unix)]
    fn new(endpoint: &Endpoint, link: PathBuf) -> anyhow::Result<SimLink> {
        let Endpoint::Serial { path, .. } = endpoint else {
            anyhow::bail!("{endpoint} is not a serial port");
        };
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(path, &link).map_err(|e| {
            anyhow::anyhow!("cannot link {} to the pseudo-terminal: {e}", link.display())
        })?;
        Ok(SimLink {
            link,
            target: path.clone(),
        })
    }
}

impl std::fmt::Display for SimLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (-> {})", self.link.display(), self.target)
    }
}

impl Drop for SimLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

#[cfg(unix)]
fn psb_on_pty(
    config: SimConfig,
    clock: Clock,
    link: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::ea_psb::SimHandle, SimLink)> {
    let sim = PsbSim::spawn_serial(cyclerd_drivers::transport::pty::Pty::open()?, config, clock)?;
    let link = SimLink::new(&sim.endpoint(), link)?;
    Ok((sim, link))
}

#[cfg(not(unix))]
fn psb_on_pty(
    _: SimConfig,
    _: Clock,
    _: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::ea_psb::SimHandle, SimLink)> {
    anyhow::bail!("simulated serial devices need a pseudo-terminal, which this system lacks")
}

#[cfg(unix)]
fn scpi_on_pty(
    config: cyclerd_drivers::scpi::SimConfig,
    cell: CellParams,
    clock: Clock,
    link: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::scpi::SimHandle, SimLink)> {
    let pty = cyclerd_drivers::transport::pty::Pty::open()?;
    let sim = cyclerd_drivers::scpi::ScpiSim::spawn(pty, config, cell, clock)?;
    let link = SimLink::new(&sim.endpoint(), link)?;
    Ok((sim, link))
}

#[cfg(not(unix))]
fn scpi_on_pty(
    _: cyclerd_drivers::scpi::SimConfig,
    _: CellParams,
    _: Clock,
    _: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::scpi::SimHandle, SimLink)> {
    anyhow::bail!("simulated serial devices need a pseudo-terminal, which this system lacks")
}

#[cfg(unix)]
async fn riden(
    model: u16,
    link: Option<PathBuf>,
    serial: u32,
    cell: SimCell,
) -> anyhow::Result<()> {
    use cyclerd_drivers::riden::{self, RidenSim};
    anyhow::ensure!(
        cyclerd_drivers::riden::wire::Model::from_number(model).is_some(),
        "unknown Riden model {model}; use 6006, 6012, 6018 or 6024"
    );
    let pty = cyclerd_drivers::transport::pty::Pty::open()?;
    let config = riden::sim::SimConfig::rd60xx(model, serial, cell.params()?);
    let sim = RidenSim::spawn(pty, config, Clock::scaled(cell.speed))?;
    let endpoint = Endpoint::Serial {
        path: sim.path().to_string_lossy().into_owned(),
        baud: riden::wire::BAUD_RATE,
    };
    let link = link.map(|l| SimLink::new(&endpoint, l)).transpose()?;
    let shown = match &link {
        Some(link) => link.to_string(),
        None => sim.path().display().to_string(),
    };
    println!(
        "simulated Riden RD{model} on {shown}, Modbus RTU 115200 8N1 unit 1, at {}x; Ctrl-C stops it",
        cell.speed
    );
    cyclerhub::cli::shutdown_signal().await;
    Ok(())
}

#[cfg(not(unix))]
async fn riden(_: u16, _: Option<PathBuf>, _: u32, _: SimCell) -> anyhow::Result<()> {
    anyhow::bail!("the simulated Riden needs a pseudo-terminal, which this system lacks")
}
