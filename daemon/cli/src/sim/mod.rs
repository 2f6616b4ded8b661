//! `cyclerd sim FAMILY`: one simulated device standalone, on its real wire protocol, until
//! Ctrl-C: for trying other software against it, and for tests that run the real binary.
//!
//! - [`links`]: where a simulator is reached besides a TCP port: a pseudo-terminal linked
//!   from a path, a Neware step folder.

mod links;

use crate::signal::StopSignal;
use clap::Subcommand;
use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::chamber::thermal::{Air, ROOM_C};
use cyclerd_drivers::ea_psb::{PsbSim, sim::SimConfig};
use links::{StepFolder, binder_on_pty, espec_on_pty, psb_on_pty, riden, scpi_on_pty};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings every simulated device shares.
#[derive(clap::Args)]
pub(crate) struct SimCell {
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
        anyhow::ensure!(
            self.speed.is_finite() && self.speed > 0.0,
            "--speed must be a positive number of simulated seconds per wall second"
        );
        Ok(CellParams {
            initial_soc: self.soc,
            ..CellParams::new(chemistry, self.capacity)
        })
    }

    /// The cell as the simulators announce it.
    fn describe(&self) -> String {
        format!(
            "{} {} Ah at {} % SOC on every channel",
            self.cell,
            self.capacity,
            self.soc * 100.0
        )
    }
}

#[derive(Subcommand)]
pub(crate) enum SimDevice {
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
        /// Serial number the instrument reports (`*IDN?`).
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
        /// Serial number the supply reports.
        #[arg(long, default_value_t = 1)]
        serial: u32,
        #[command(flatten)]
        cell: SimCell,
    },
    /// A Watlow F4T chamber controller over Modbus TCP (unit 1), its chamber on loop 1.
    Watlow {
        /// Where to listen (the controller's port is 502).
        #[arg(long, default_value = "127.0.0.1:502")]
        listen: SocketAddr,
        /// Simulated seconds per wall second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// A Binder chamber (MB1 controller, unit 1): RTU frames over TCP as its serial-to-TCP
    /// bridge serves them, or on a pseudo-terminal as its serial port.
    Binder {
        /// Where the bridge listens (port 10001 on Ethernet models).
        #[arg(long, default_value = "127.0.0.1:10001")]
        listen: SocketAddr,
        /// Serve on a pseudo-terminal instead (9600 8N1), linked from this path (unix).
        #[arg(long, conflicts_with = "listen")]
        pty: Option<PathBuf>,
        /// Simulated seconds per wall second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// A Neware BTS server (the BTS API: XML over TCP) with its channels, each running the
    /// step files it is told to start.
    ///
    /// Channels are numbered as Neware does: devid-subdevid-chlid, chlid from 1 in each unit.
    /// The API has no file upload: a client writes each step file into a folder the server
    /// reads (--step-folder) and names it in the start request.
    Neware {
        /// Where the BTS API listens (BTS's default port is 502, as Modbus TCP's; ports below
        /// 1024 need privileges, so e.g. --listen 127.0.0.1:1502). Port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:502")]
        listen: SocketAddr,
        /// Channels per unit (chlid 1..N).
        #[arg(long, default_value_t = 8)]
        channels: u32,
        /// Units (subdevid 1..U), each with --channels channels.
        #[arg(long, default_value_t = 1)]
        units: u32,
        /// The cycler's device id (devid).
        #[arg(long, default_value_t = 1)]
        devid: u32,
        /// Folder the server reads step files from (created if missing); by default a
        /// temporary one, printed at start and removed on exit.
        #[arg(long)]
        step_folder: Option<PathBuf>,
        /// The step folder as clients name it in start requests when they see it under
        /// another path, e.g. 'D:\cyclerd\steps' for a share of --step-folder (the client's
        /// remote_step_folder). By default requests name files by their path in
        /// --step-folder. Files outside the folder are refused either way.
        #[arg(long)]
        remote_step_folder: Option<String>,
        /// The only login the server accepts.
        #[arg(long, default_value = "admin")]
        user: String,
        /// The password that goes with --user.
        #[arg(long, default_value = "neware")]
        password: String,
        #[command(flatten)]
        cell: SimCell,
    },
    /// A Maccor tester's MacNet server: JSON-RPC on one port, the binary protocol (file
    /// transfer, direct mode) on another, channels numbered from 0.
    Maccor {
        /// Where the JSON port listens (the tester's default is 57570). Port 0 picks a free
        /// one.
        #[arg(long, default_value = "127.0.0.1:57570")]
        listen: SocketAddr,
        /// The binary port, on --listen's address (the tester's default is 57560). 0 picks a
        /// free one.
        #[arg(long, default_value_t = cyclerd_drivers::maccor::wire::DEFAULT_BINARY_PORT)]
        binary_port: u16,
        /// Number of channels (0..N-1).
        #[arg(long, default_value_t = 8)]
        channels: u32,
        #[command(flatten)]
        cell: SimCell,
    },
    /// An Arbin MITS Pro console's CTI server: control on one port, file operations
    /// (schedule uploads) on another, channels numbered from 0.
    Arbin {
        /// Where the control port listens (CTI's default is 9031). Port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:9031")]
        listen: SocketAddr,
        /// The file-operation port, on --listen's address (CTI's default is 9032). 0 picks a
        /// free one.
        #[arg(long, default_value_t = cyclerd_drivers::arbin::wire::DEFAULT_FILE_PORT)]
        file_port: u16,
        /// Number of channels (0..N-1).
        #[arg(long, default_value_t = 8)]
        channels: u32,
        /// The only login the console accepts (ASCII, at most 32 bytes each).
        #[arg(long, default_value = "admin")]
        user: String,
        /// The password that goes with --user.
        #[arg(long, default_value = "arbin")]
        password: String,
        #[command(flatten)]
        cell: SimCell,
    },
    /// An Espec chamber's P300 controller over TCP, or over a serial line on a pseudo-terminal,
    /// moving the simulated air of an empty chamber.
    Espec {
        /// Where to listen (the controller's LAN port is 10001). Port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:10001")]
        listen: SocketAddr,
        /// Serve on a pseudo-terminal instead (any baud rate), linked from this path (unix).
        #[arg(long, conflicts_with = "listen")]
        pty: Option<PathBuf>,
        /// The RS-485 address it answers to (requests then start with `ADDR,`).
        #[arg(long)]
        address: Option<u8>,
        /// Simulated seconds per wall second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// A Weiss / Vötsch chamber's controller serving SimServ over TCP, moving the simulated air
    /// of an empty chamber.
    Weiss {
        /// Where to listen (SimServ's port is 2049). Port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:2049")]
        listen: SocketAddr,
        /// Simulated seconds per wall second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
}

/// Most channels one simulated cycler has: enough for any real one, few enough that a typo
/// does not allocate a million cells.
const MAX_SIM_CHANNELS: u32 = 1024;

/// Instruments `cyclerd sim scpi` can be.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ScpiModel {
    EaPsb,
    Keithley2450,
    KeysightB2901,
    ItechIt6000,
    Bk8600,
}

pub(crate) async fn sim(device: SimDevice) -> anyhow::Result<()> {
    // Before anything is announced: a tool that signals as soon as it has read the
    // announcement must stop the simulator cleanly, not kill it.
    let stop = StopSignal::new()?;
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
                    let listener = bind(listen, "--listen ADDR").await?;
                    let addr = listener.local_addr()?;
                    let sim = PsbSim::spawn(listener, config, clock)?;
                    (sim, None, format!("{addr}, Modbus TCP unit 1"))
                }
            };
            println!(
                "simulated EA PSB 10060-60 (serial {serial}) on {shown}, at {}x; Ctrl-C stops it",
                cell.speed
            );
            stop.wait().await;
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
                    let listener = bind(listen, "--listen ADDR").await?;
                    let addr = listener.local_addr()?;
                    let sim = ScpiSim::spawn(listener, config, params, clock)?;
                    (sim, None, addr.to_string())
                }
            };
            println!(
                "simulated {idn} on {shown} (SCPI, LF), at {}x; Ctrl-C stops it",
                cell.speed
            );
            stop.wait().await;
        }
        SimDevice::Riden {
            model,
            pty,
            serial,
            cell,
        } => riden(model, pty, serial, cell, stop).await?,
        SimDevice::Watlow { listen, speed } => {
            use cyclerd_drivers::watlow::{SimConfig, WatlowSim};
            let config = SimConfig::new(Air::new(ROOM_C));
            let listener = bind(listen, "--listen ADDR").await?;
            let sim = WatlowSim::spawn(listener, config, chamber_clock(speed)?)?;
            println!(
                "simulated Watlow F4T on {}, Modbus TCP unit 1, chamber on loop 1, at {speed}x; \
                 Ctrl-C stops it",
                sim.addr()
            );
            stop.wait().await;
        }
        SimDevice::Binder { listen, pty, speed } => {
            use cyclerd_drivers::binder::{BinderSim, SimConfig};
            let (config, clock) = (SimConfig::new(Air::new(ROOM_C)), chamber_clock(speed)?);
            let (_sim, _link, shown) = match pty {
                Some(link) => {
                    let (sim, link) = binder_on_pty(config, clock, link)?;
                    let shown = format!("{link}, 9600 8N1");
                    (sim, Some(link), shown)
                }
                None => {
                    let listener = bind(listen, "--listen ADDR").await?;
                    let addr = listener.local_addr()?;
                    let sim = BinderSim::spawn(listener, config, clock)?;
                    (
                        sim,
                        None,
                        format!("{addr}, RTU frames over TCP (its bridge)"),
                    )
                }
            };
            println!(
                "simulated Binder MB1 chamber on {shown}, unit 1, at {speed}x; Ctrl-C stops it"
            );
            stop.wait().await;
        }
        SimDevice::Neware {
            listen,
            channels,
            units,
            devid,
            step_folder,
            remote_step_folder,
            user,
            password,
            cell,
        } => {
            use cyclerd_drivers::neware::{self, NewareSim, wire::PathMap};
            anyhow::ensure!(
                channels >= 1 && units >= 1 && channels.saturating_mul(units) <= MAX_SIM_CHANNELS,
                "--channels {channels} x --units {units}: give at least one of each, and at most \
                 {MAX_SIM_CHANNELS} channels in all"
            );
            let steps = StepFolder::new(step_folder)?;
            let mut config =
                neware::SimConfig::new(devid, units, channels, cell.params()?, steps.path());
            config.username = user;
            config.password = password;
            // Start requests name files either by the server's own path or by the clients'
            // view of the folder; the server reads nothing outside it.
            let named_as = remote_step_folder
                .clone()
                .unwrap_or_else(|| steps.path().display().to_string());
            config.steps = PathMap {
                local: steps.path().to_path_buf(),
                remote: Some(named_as),
            };
            let (first, last) = (
                config.channels[0],
                config.channels[config.channels.len() - 1],
            );
            let login = format!("{} / {}", config.username, config.password);
            let listener = bind(listen, "--listen ADDR").await?;
            let addr = listener.local_addr()?;
            let sim = NewareSim::spawn(listener, config, Clock::scaled(cell.speed))?;
            let count = units * channels;
            let folder = steps.path().display();
            let mapping = match &remote_step_folder {
                Some(remote) => format!(
                    "start requests name them as {}\\FILE, read from {folder}/FILE; a client \
                     writes them to its own view of the folder and sets remote_step_folder = '{remote}'",
                    remote.trim_end_matches(['\\', '/'])
                ),
                None => format!(
                    "a client on this machine writes them in {folder} and names them by that path \
                     (step_folder = '{folder}', no remote_step_folder); elsewhere, share the folder \
                     and restart with --remote-step-folder"
                ),
            };
            println!(
                "simulated Neware BTS server, at {}x; Ctrl-C stops it",
                cell.speed
            );
            println!("  api: {addr} (BTS API, XML over TCP)");
            let split = if units == 1 {
                String::new()
            } else {
                format!("{units} units of {channels}, ")
            };
            println!("  channels: {count} ({split}devid-subdevid-chlid {first} to {last})");
            println!("  login: {login}");
            println!("  step folder: {folder}{}", steps.note());
            println!("  step files: {mapping}");
            println!("  cell: {}", cell.describe());
            stop.wait().await;
            drop(sim);
            drop(steps);
        }
        SimDevice::Maccor {
            listen,
            binary_port,
            channels,
            cell,
        } => {
            use cyclerd_drivers::maccor::{self, MaccorSim};
            check_channels(channels)?;
            let config = maccor::SimConfig::new(channels as usize, cell.params()?);
            let system_id = config.system_id.clone();
            let json = bind(listen, "--listen ADDR").await?;
            let binary = bind(
                SocketAddr::new(listen.ip(), binary_port),
                "--binary-port PORT",
            )
            .await?;
            let sim = MaccorSim::spawn(json, binary, config, Clock::scaled(cell.speed))?;
            println!(
                "simulated Maccor tester (MacNet, system id {system_id:?}), at {}x; Ctrl-C stops it",
                cell.speed
            );
            println!(
                "  json: {} (JSON-RPC, one object per line)",
                sim.json_addr()
            );
            println!(
                "  binary: {} (file transfer, direct mode)",
                sim.binary_addr()
            );
            println!("  channels: {channels} (numbered 0 to {})", channels - 1);
            println!("  login: none (MacNet has none)");
            println!("  cell: {}", cell.describe());
            stop.wait().await;
        }
        SimDevice::Arbin {
            listen,
            file_port,
            channels,
            user,
            password,
            cell,
        } => {
            use cyclerd_drivers::arbin::{self, ArbinSim, wire};
            check_channels(channels)?;
            for (option, value) in [("--user", &user), ("--password", &password)] {
                anyhow::ensure!(
                    wire::fits_ascii(value, wire::CREDENTIAL_LEN),
                    "{option} must be ASCII, at most {} bytes",
                    wire::CREDENTIAL_LEN
                );
            }
            let mut config = arbin::SimConfig::new(channels as usize, cell.params()?);
            config.username = user;
            config.password = password;
            let (serial, login) = (
                config.serial.clone(),
                format!("{} / {}", config.username, config.password),
            );
            let control = bind(listen, "--listen ADDR").await?;
            let files = bind(SocketAddr::new(listen.ip(), file_port), "--file-port PORT").await?;
            let sim = ArbinSim::spawn(control, files, config, Clock::scaled(cell.speed))?;
            println!(
                "simulated Arbin CTI console (serial {serial}), at {}x; Ctrl-C stops it",
                cell.speed
            );
            println!("  control: {} (CTI commands)", sim.control_addr());
            println!("  file: {} (schedule uploads)", sim.file_addr());
            println!("  channels: {channels} (numbered 0 to {})", channels - 1);
            println!("  login: {login}");
            println!("  cell: {}", cell.describe());
            stop.wait().await;
        }
        SimDevice::Espec {
            listen,
            pty,
            address,
            speed,
        } => {
            use cyclerd_drivers::espec::{EspecSim, SimConfig};
            let clock = chamber_clock(speed)?;
            let config = SimConfig {
                address,
                ..SimConfig::standalone()
            };
            let chamber = describe_chamber(&config.thermal);
            let (_sim, _link, shown) = match pty {
                Some(link) => {
                    let (sim, link) = espec_on_pty(config, clock, link)?;
                    let baud = cyclerd_drivers::espec::wire::DEFAULT_BAUD;
                    let shown = format!("serial: {link}, {baud} 8N1");
                    (sim, Some(link), shown)
                }
                None => {
                    let sim = EspecSim::spawn(bind(listen, "--listen ADDR").await?, config, clock)?;
                    let shown = format!("lan: {}", sim.endpoint());
                    (sim, None, shown)
                }
            };
            let address = address.map_or(String::new(), |a| format!(", RS-485 address {a}"));
            println!("simulated Espec P300 controller, at {speed}x; Ctrl-C stops it");
            println!("  {shown} (CR LF lines{address})");
            println!("  chamber: {chamber}");
            stop.wait().await;
        }
        SimDevice::Weiss { listen, speed } => {
            use cyclerd_drivers::weiss::{SimConfig, WeissSim};
            let config = SimConfig::standalone();
            let chamber = describe_chamber(&config.thermal);
            let listener = bind(listen, "--listen ADDR").await?;
            let sim = WeissSim::spawn(listener, config, chamber_clock(speed)?)?;
            println!("simulated Weiss chamber controller, at {speed}x; Ctrl-C stops it");
            println!("  simserv: {} (fields separated by 0xB6, CR)", sim.addr());
            println!("  chamber: {chamber}");
            stop.wait().await;
        }
    }
    Ok(())
}

/// The clock of a simulated chamber.
fn chamber_clock(speed: f64) -> anyhow::Result<Clock> {
    anyhow::ensure!(
        speed.is_finite() && speed > 0.0,
        "--speed must be a positive number of simulated seconds per wall second"
    );
    Ok(Clock::scaled(speed))
}

/// A simulated chamber as the simulators announce it.
fn describe_chamber(t: &cyclerd_drivers::chamber::thermal::ThermalParams) -> String {
    format!(
        "{} to {} degC, ramp {} degC/min, empty, air at {} degC",
        t.range_c.0,
        t.range_c.1,
        t.ramp_c_per_min,
        cyclerd_drivers::chamber::thermal::ROOM_C
    )
}

fn check_channels(channels: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_SIM_CHANNELS).contains(&channels),
        "--channels {channels}: give 1 to {MAX_SIM_CHANNELS}"
    );
    Ok(())
}

/// `hint` names the option that moves the port.
async fn bind(listen: SocketAddr, hint: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e} (try {hint})"))
}
