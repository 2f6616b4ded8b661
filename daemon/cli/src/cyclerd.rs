//! The `cyclerd` command line: `run`, `check-config` ([`crate::check_config`]), `demo`, `sim
//! FAMILY` ([`crate::sim`]), `token` ([`crate::token`]) and, on Windows, `service run`
//! ([`crate::windows`]). A library module so that tests can run the real binary's code as a
//! child process (and kill it).

use crate::demo::{self, DemoOptions};
use crate::lab;
use crate::run::{DEFAULT_CONFIG, run};
use crate::signal::StopSignal;
use crate::sim::{self, SimDevice};
use crate::token;
use clap::{Parser, Subcommand};
use cyclerd::proto::logs::{LogFormat, init as init_logging};
use cyclerd_drivers::Clock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cyclerd",
    version,
    about = "cyclerd: battery cycler acquisition daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the log is written to stderr: `text` (coloured only on a terminal) or `json` (one
    /// object per line). Under journald each line starts with its syslog priority.
    #[arg(long, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with a lab configuration.
    Run {
        /// The lab configuration (TOML); see deploy/ for examples.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Simulation only: run the clock this many times faster than wall time.
        #[arg(long, hide = true, default_value_t = 1.0)]
        speed: f64,
        /// Simulation only: the unix time at which the scaled clock equals wall time, so that
        /// restarted daemons agree on the time (see Clock::anchored).
        #[arg(long, hide = true)]
        clock_anchor: Option<f64>,
    },
    /// Check a lab configuration as `run` would before it reaches a device, without reaching
    /// any (devices, outbox and hub are left alone); exits non-zero on a problem.
    CheckConfig {
        /// The lab configuration (TOML).
        #[arg(default_value = DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Run as a Windows service (what `sc create` starts; see docs/windows.md).
    #[cfg(windows)]
    Service {
        #[command(subcommand)]
        action: crate::windows::ServiceAction,
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
        /// Web monitor address (an ephemeral port is used if this one is taken), or "off".
        #[arg(long, default_value = "127.0.0.1:8620", value_parser = parse_web)]
        web: WebAddress,
        /// The simulated device family.
        #[arg(long, value_enum, default_value = "ea-psb")]
        device: lab::DemoDevice,
        /// Put every cell in one simulated thermal chamber of this family; the first channel
        /// then runs deploy/protocols/chamber-25-45-25.yaml (unless --protocol is given).
        #[arg(long, value_enum)]
        chamber: Option<lab::DemoChamber>,
    },
    /// Run one simulated device standalone, on its real wire protocol, until Ctrl-C.
    Sim {
        #[command(subcommand)]
        device: SimDevice,
    },
    /// Issue, list and revoke the control API's tokens (for cyclerctl --token).
    Token {
        #[command(subcommand)]
        action: token::TokenAction,
    },
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // A lab's daemon is I/O-bound: 64 channels at 10 Hz take about 1 % of a core, and SQLite
    // and the serial ports have threads of their own. One worker is ample and a second costs
    // about 7 MB of resident memory; TOKIO_WORKER_THREADS still sets it (tokio reads it).
    if matches!(cli.command, Command::Run { .. })
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none()
    {
        runtime.worker_threads(1);
    }
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(run_command(cli)),
        Err(e) => {
            eprintln!("cyclerd: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_command(cli: Cli) -> ExitCode {
    // The unit's LimitNOFILE (the hard limit) is what counts, as for a Go program.
    let open_files = cyclerd::proto::incoming::raise_open_file_limit();
    let log = cli.log_format;
    let result = match cli.command {
        Command::Run {
            config,
            speed,
            clock_anchor,
        } => {
            init_logging("info", log);
            let clock = match clock_anchor {
                Some(anchor) => Clock::anchored(speed, anchor),
                None => Clock::scaled(speed),
            };
            // First of all: a SIGTERM from here on (systemd stopping a unit that is still
            // starting) waits for the start to end and then switches every output off; with the
            // default action it would kill the process with an interrupted test's output on.
            match StopSignal::new() {
                Ok(stop) => run(&config, clock, open_files, stop.wait(), || {})
                    .await
                    .map(|()| ExitCode::SUCCESS),
                Err(e) => Err(e),
            }
        }
        Command::CheckConfig { file } => {
            init_logging("warn", log);
            match crate::check_config::check(&file, &mut std::io::stdout()) {
                Ok(true) => Ok(ExitCode::SUCCESS),
                Ok(false) => Ok(ExitCode::FAILURE),
                Err(e) => Err(e.into()),
            }
        }
        #[cfg(windows)]
        Command::Service { action } => crate::windows::run(action).map(|()| ExitCode::SUCCESS),
        Command::Token { action } => {
            token::run(action, &mut std::io::stdout()).map(|()| ExitCode::SUCCESS)
        }
        Command::Sim { device } => {
            init_logging("info", log);
            sim::sim(device).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Demo {
            channels,
            speed,
            wall_limit,
            protocol,
            data_dir,
            control,
            web,
            device,
            chamber,
        } => {
            init_logging("warn", log);
            let options = DemoOptions {
                channels,
                speed,
                wall_limit,
                protocol,
                data_dir,
                control,
                web: web.0,
                device,
                chamber,
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

/// `--web ADDR`, or `--web off` (`None`).
#[derive(Debug, Clone, Copy)]
pub struct WebAddress(Option<SocketAddr>);

fn parse_web(text: &str) -> Result<WebAddress, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(WebAddress(None));
    }
    text.parse()
        .map(|a| WebAddress(Some(a)))
        .map_err(|_| format!("{text:?} is not host:port (e.g. 127.0.0.1:8620) or \"off\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use cyclerd_drivers::cell::{CellParams, Chemistry};

    fn sim(args: &[&str]) -> SimDevice {
        let cli = Cli::try_parse_from([&["cyclerd", "sim"], args].concat()).unwrap();
        match cli.command {
            Command::Sim { device } => device,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every argument of `command` and its subcommands, with the path of subcommands to it.
    fn arguments(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in command.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_is_described_in_help_and_the_version_names_cyclerd() {
        let mut all = Vec::new();
        arguments(&Cli::command(), "cyclerd", &mut all);
        for (path, arg) in all {
            let id = arg.get_id().as_str();
            if ["help", "version"].contains(&id) {
                continue;
            }
            assert!(arg.get_help().is_some(), "{path}: {id} has no help");
        }
        let version = Cli::command().render_version();
        assert!(version.starts_with("cyclerd "), "{version}");
    }

    #[test]
    fn simulated_cyclers_listen_on_their_vendors_ports_by_default() {
        use cyclerd_drivers::{arbin, maccor, neware};
        let SimDevice::Neware { listen, .. } = sim(&["neware"]) else {
            unreachable!()
        };
        assert_eq!(listen.port(), neware::wire::DEFAULT_PORT);
        let SimDevice::Maccor {
            listen,
            binary_port,
            ..
        } = sim(&["maccor"])
        else {
            unreachable!()
        };
        assert_eq!(listen.port(), maccor::wire::DEFAULT_JSON_PORT);
        assert_eq!(binary_port, maccor::wire::DEFAULT_BINARY_PORT);
        let SimDevice::Arbin {
            listen,
            file_port,
            user,
            password,
            ..
        } = sim(&["arbin"])
        else {
            unreachable!()
        };
        assert_eq!(listen.port(), arbin::wire::DEFAULT_CONTROL_PORT);
        assert_eq!(file_port, arbin::wire::DEFAULT_FILE_PORT);
        let defaults = arbin::SimConfig::new(1, CellParams::new(Chemistry::Nmc, 1.0));
        assert_eq!((user, password), (defaults.username, defaults.password));
    }

    #[test]
    fn simulated_chambers_listen_on_their_vendors_ports_by_default() {
        use cyclerd_drivers::{binder, espec, watlow, weiss};
        let SimDevice::Espec { listen, .. } = sim(&["espec"]) else {
            unreachable!()
        };
        assert_eq!(listen.port(), espec::wire::DEFAULT_PORT);
        let SimDevice::Weiss { listen, .. } = sim(&["weiss"]) else {
            unreachable!()
        };
        assert_eq!(listen.port(), weiss::wire::DEFAULT_PORT);
        assert!(listen.ip().is_loopback());
        let SimDevice::Watlow { listen, .. } = sim(&["watlow"]) else {
            unreachable!()
        };
        assert_eq!(listen, ([127, 0, 0, 1], watlow::wire::DEFAULT_PORT).into());
        let SimDevice::Binder { listen, .. } = sim(&["binder"]) else {
            unreachable!()
        };
        assert_eq!(listen, ([127, 0, 0, 1], binder::wire::BRIDGE_PORT).into());
    }
}
