//! The `cyclerd` command line (`run`, `demo`). A library module so that tests can run the real
//! binary's code as a child process (and kill it).

use crate::config::Config;
use crate::demo::{self, DemoOptions};
use crate::{Daemon, control};
use clap::{Parser, Subcommand};
use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::ea_psb::{PsbSim, sim::SimConfig};
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
    /// Elektro-Automatik PSB 10060-60 over Modbus TCP (unit 1).
    EaPsb {
        /// Where to listen (the device's port is 502).
        #[arg(long, default_value = "127.0.0.1:502")]
        listen: SocketAddr,
        /// Serial number the device reports.
        #[arg(long, default_value = "SIM0001")]
        serial: String,
        #[command(flatten)]
        cell: SimCell,
    },
    /// A SCPI instrument over raw TCP.
    Scpi {
        /// Which instrument to be.
        #[arg(long, value_enum, default_value = "ea-psb")]
        model: ScpiModel,
        /// Where to listen (SCPI's raw socket port is 5025).
        #[arg(long, default_value = "127.0.0.1:5025")]
        listen: SocketAddr,
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
            serial,
            cell,
        } => {
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {listen}: {e} (try --listen ADDR)")
            })?;
            let clock = Clock::scaled(cell.speed);
            let _sim = PsbSim::spawn(
                listener,
                SimConfig::psb_10060_60(&serial, cell.params()?),
                clock,
            )?;
            println!(
                "simulated EA PSB 10060-60 (serial {serial}) on {listen}, Modbus TCP unit 1, at {}x; Ctrl-C stops it",
                cell.speed
            );
            cyclerhub::cli::shutdown_signal().await;
        }
        SimDevice::Scpi {
            model,
            listen,
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
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {listen}: {e} (try --listen ADDR)")
            })?;
            let config = scpi::SimConfig::new(dialect, &serial);
            let idn = config.idn.clone();
            let _sim = ScpiSim::spawn(listener, config, cell.params()?, Clock::scaled(cell.speed))?;
            println!(
                "simulated {idn} on {listen} (SCPI, LF), at {}x; Ctrl-C stops it",
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
    let mut shown = sim.path().display().to_string();
    if let Some(link) = &link {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(sim.path(), link).map_err(|e| {
            anyhow::anyhow!("cannot link {} to the pseudo-terminal: {e}", link.display())
        })?;
        shown = format!("{} (-> {shown})", link.display());
    }
    println!(
        "simulated Riden RD{model} on {shown}, Modbus RTU 115200 8N1 unit 1, at {}x; Ctrl-C stops it",
        cell.speed
    );
    cyclerhub::cli::shutdown_signal().await;
    if let Some(link) = link {
        let _ = std::fs::remove_file(link);
    }
    Ok(())
}

#[cfg(not(unix))]
async fn riden(_: u16, _: Option<PathBuf>, _: u32, _: SimCell) -> anyhow::Result<()> {
    anyhow::bail!("the simulated Riden needs a pseudo-terminal, which this system lacks")
}
