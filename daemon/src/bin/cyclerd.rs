//! `cyclerd`: the acquisition daemon.

use clap::{Parser, Subcommand};
use cyclerd::config::Config;
use cyclerd::demo::{self, DemoOptions};
use cyclerd::{Daemon, control};
use cyclerd_drivers::Clock;
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
    },
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => {
            init_logging("info");
            run(config).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Demo {
            channels,
            speed,
            wall_limit,
            protocol,
            data_dir,
            control,
        } => {
            init_logging("warn");
            let options = DemoOptions {
                channels,
                speed,
                wall_limit,
                protocol,
                data_dir,
                control,
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

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let origin = path.display().to_string();
    let listen = config.control.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("{origin}: control.listen = {listen}: {e}"))?;
    let daemon = Daemon::start(config, &origin, Clock::real()).await?;
    tracing::info!(
        daemon_id = %daemon.outbox().identity().daemon_id,
        "cyclerd running; control API on {listen}"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(control::serve(daemon.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    shutdown_signal().await;
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

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
