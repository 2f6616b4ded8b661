//! A simulated lab: simulated devices of one family (real servers on loopback speaking their
//! wire protocols, each with a simulated cell), optionally a simulated chamber, the daemon
//! running them, and an embedded hub, on one scaled clock. `cyclerd demo` runs one; so do the
//! end-to-end tests and the pipeline benchmark.

use cyclerd::config::Config;
use cyclerd::daemon::Started;
use cyclerd::{Daemon, Summary};
use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::chamber::thermal::Air;
use cyclerd_drivers::ea_psb::{PsbSim, SimHandle, sim::SimConfig};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

/// The demo protocol shipped in `deploy/protocols/demo.yaml`, built in so the demo runs from
/// any directory.
pub const DEMO_PROTOCOL: &str = include_str!("../../../deploy/protocols/demo.yaml");

/// The demo protocol for charge-only supplies (`deploy/protocols/demo-charge.yaml`).
pub const DEMO_CHARGE_PROTOCOL: &str = include_str!("../../../deploy/protocols/demo-charge.yaml");

/// Which simulated device family the lab is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoDevice {
    /// EA PSB 10060-60 over Modbus TCP.
    #[default]
    EaPsb,
    /// EA PSB 10060-60 over SCPI (raw TCP).
    Scpi,
    /// Riden RD6006 over Modbus RTU on a pseudo-terminal (charge-only; unix).
    Riden,
    /// One Neware BTS cycler (BTS API, XML over TCP) with a channel per cell: native.
    Neware,
    /// One Maccor tester (MacNet JSON + binary over TCP) with a channel per cell: native.
    Maccor,
    /// One Arbin MITS Pro console (CTI over TCP) with a channel per cell: native.
    Arbin,
}

impl DemoDevice {
    pub fn label(self) -> &'static str {
        match self {
            DemoDevice::EaPsb => "EA PSB 10060-60 (Modbus TCP)",
            DemoDevice::Scpi => "EA PSB 10060-60 (SCPI)",
            DemoDevice::Riden => "Riden RD6006 (Modbus RTU, pseudo-terminal)",
            DemoDevice::Neware => "Neware BTS (BTS API, native)",
            DemoDevice::Maccor => "Maccor (MacNet, native)",
            DemoDevice::Arbin => "Arbin MITS Pro (CTI, native)",
        }
    }

    /// Whether the lab is one dedicated cycler that runs the schedules itself.
    pub fn is_cycler(self) -> bool {
        matches!(
            self,
            DemoDevice::Neware | DemoDevice::Maccor | DemoDevice::Arbin
        )
    }
}

/// Test time between the simulated cyclers' logged records, s.
pub const CYCLER_RECORD_INTERVAL_S: f64 = 2.0;

/// The demo protocol with chamber steps (`deploy/protocols/chamber-25-45-25.yaml`).
pub const CHAMBER_PROTOCOL: &str = include_str!("../../../deploy/protocols/chamber-25-45-25.yaml");

/// Which simulated thermal chamber the lab's cells sit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoChamber {
    /// Espec SCP-220 controller, ASCII over TCP.
    Espec,
    /// Weiss / Voetsch chamber through SimServ over TCP.
    Weiss,
    /// Watlow F4T controller over Modbus TCP.
    Watlow,
    /// Binder MB1 controller behind a serial-to-TCP bridge.
    Binder,
}

impl DemoChamber {
    pub fn label(self) -> &'static str {
        match self {
            DemoChamber::Espec => "Espec SCP-220 (TCP)",
            DemoChamber::Weiss => "Weiss SimServ (TCP)",
            DemoChamber::Watlow => "Watlow F4T (Modbus TCP)",
            DemoChamber::Binder => "Binder MB1 (RTU over a TCP bridge)",
        }
    }
}

/// A simulator of a family other than the PSB: only held, so it stops when the lab does.
pub type KeptSim = Box<dyn std::any::Any + Send + Sync>;

/// How to build a [`SimLab`].
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub channels: usize,
    /// Nominal capacity of the simulated cells (each differs a little).
    pub capacity_ah: f64,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Where the outbox and hub databases go; a temporary directory if `None`.
    pub data_dir: Option<PathBuf>,
    /// Use this hub instead of starting an embedded one.
    pub hub_address: Option<SocketAddr>,
    /// Further hub processes (on the same database), tried after `hub_address`.
    pub more_hub_addresses: Vec<SocketAddr>,
    /// That hub serves TLS with a certificate for `localhost` signed by the CA in this PEM
    /// file: the daemon connects to `https://localhost:PORT` and checks the chain against it.
    pub hub_ca_file: Option<PathBuf>,
    /// The daemon's token for that hub (`hub.token_file`).
    pub hub_token_file: Option<PathBuf>,
    /// The lab whose metadata schemas apply (`hub.lab`).
    pub hub_lab: Option<String>,
    /// More lines for the `[store]` section (e.g. `max_bytes = 100000`).
    pub extra_config: String,
    /// The simulated device family.
    pub device: DemoDevice,
    /// Each channel's poll interval; the daemon's default (10 Hz) when `None`.
    pub poll_interval_ms: Option<u64>,
    /// The simulated chamber every cell sits in, if any.
    pub chamber: Option<DemoChamber>,
    /// More lines for its `[[chamber]]` entry (e.g. `idle_set_point = 25.0`).
    pub chamber_config: String,
    /// Every cell's capacity fade per full equivalent cycle, instead of the cell model's
    /// (2e-4): an aged cell, so end-of-life protocols (a loop until the capacity falls below
    /// a share of the first cycle's) finish in a test.
    pub fade_per_cycle: Option<f64>,
    /// The thresholds of the quality checks, for the daemon (`[quality]`) and the embedded
    /// hub alike; the documented defaults unless a test needs others.
    pub quality: cyclerd::proto::quality::config::Layered,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            channels: 4,
            capacity_ah: 2.5,
            speed: 500.0,
            data_dir: None,
            hub_address: None,
            more_hub_addresses: Vec::new(),
            hub_ca_file: None,
            hub_token_file: None,
            hub_lab: None,
            extra_config: String::new(),
            device: DemoDevice::EaPsb,
            poll_interval_ms: None,
            chamber: None,
            chamber_config: String::new(),
            fade_per_cycle: None,
            quality: Default::default(),
        }
    }
}

/// Where the simulated lab's configuration comes from, for messages.
const ORIGIN: &str = "built-in demo configuration";

/// A simulated lab: PSB simulators, the daemon stepping them, and an embedded hub, on one
/// scaled clock. Used by `cyclerd demo`, the end-to-end tests and the benchmark.
pub struct SimLab {
    pub daemon: Daemon,
    pub clock: Clock,
    /// One PSB simulator per channel, channel `psbK/1` on `sims[K-1]` (empty when the lab is
    /// built from another family).
    pub sims: Vec<SimHandle>,
    /// Simulators of the other families.
    other_sims: Vec<KeptSim>,
    /// Capacity of each channel's cell.
    capacities: Vec<f64>,
    /// The cells' nominal capacity (their datasheet's, which the cells vary around): the
    /// `nominal_capacity_ah` of every test's metadata, which C-rates resolve against.
    nominal_capacity_ah: f64,
    /// The channels' ids, in the order of `capacities`.
    channel_ids: Vec<String>,
    pub data_dir: PathBuf,
    pub hub_addr: SocketAddr,
    /// The embedded hub's web app and HTTP API; `None` when the lab uses an external hub.
    pub hub_app_addr: Option<SocketAddr>,
    /// The daemon's configuration, for [`SimLab::restart_daemon`].
    config: Config,
    hub_stop: tokio::sync::oneshot::Sender<()>,
    /// The embedded hub's task; `None` when the lab uses an external hub.
    hub: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Keeps a temporary data directory alive as long as the lab.
    _temp: Option<tempfile::TempDir>,
}

impl SimLab {
    /// Starts `channels` simulated channels whose cells have `capacity_ah` (each a little
    /// different), the hub and the daemon. `data_dir` `None` means a temporary directory.
    pub async fn start(
        channels: usize,
        capacity_ah: f64,
        speed: f64,
        data_dir: Option<PathBuf>,
    ) -> anyhow::Result<SimLab> {
        SimLab::start_with(LabOptions {
            channels,
            capacity_ah,
            speed,
            data_dir,
            ..LabOptions::default()
        })
        .await
    }

    /// Starts a lab as `options` say (for tests that need an external hub or store settings).
    pub async fn start_with(options: LabOptions) -> anyhow::Result<SimLab> {
        let LabOptions {
            channels,
            capacity_ah,
            speed,
            data_dir,
            hub_address,
            more_hub_addresses,
            hub_ca_file,
            hub_token_file,
            hub_lab,
            extra_config,
            device,
            poll_interval_ms,
            chamber,
            chamber_config,
            fade_per_cycle,
            quality,
        } = options;
        let poll = poll_interval_ms
            .map(|ms| format!("poll_interval_ms = {ms}\n"))
            .unwrap_or_default();
        anyhow::ensure!(channels >= 1, "--channels must be at least 1");
        anyhow::ensure!(
            speed.is_finite() && speed > 0.0,
            "--speed must be a positive number"
        );
        let (data_dir, temp) = match data_dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new().prefix("cyclerd-demo-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&data_dir)?;
        let clock = Clock::scaled(speed);

        let (hub_stop, hub_stopped) = tokio::sync::oneshot::channel::<()>();
        let (hub_addr, hub_app_addr, hub) = match hub_address {
            Some(addr) => (addr, None, None),
            None => {
                let hub_store = cyclerhub::HubStore::open(data_dir.join("hub.sqlite"))?
                    .with_quality(quality.clone());
                let hub_listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = hub_listener.local_addr()?;
                let app_listener = TcpListener::bind("127.0.0.1:0").await?;
                let app_addr = app_listener.local_addr()?;
                let task = tokio::spawn(cyclerhub::server::serve_all(
                    hub_listener,
                    Some(cyclerhub::server::HttpListener {
                        listener: app_listener,
                        tls: None,
                    }),
                    hub_store,
                    cyclerhub::server::ServeOptions::default(),
                    async {
                        let _ = hub_stopped.await;
                    },
                ));
                (addr, Some(app_addr), Some(task))
            }
        };

        let mut sims = Vec::with_capacity(channels);
        let mut other_sims: Vec<KeptSim> = Vec::new();
        let air = chamber.map(|_| Air::new(25.0));
        let cells: Vec<CellParams> = (0..channels)
            .map(|k| {
                let cell =
                    CellParams::new(Chemistry::Nmc, capacity_ah * (1.0 - 0.01 * (k % 5) as f64));
                CellParams {
                    initial_soc: 0.15 + 0.1 * (k % 4) as f64,
                    air: air.clone(),
                    fade_per_cycle: fade_per_cycle.unwrap_or(cell.fade_per_cycle),
                    ..cell
                }
            })
            .collect();
        let capacities = cells.iter().map(|c| c.capacity_ah).collect();
        let mut channel_ids = Vec::with_capacity(channels);
        let mut devices = String::new();
        if device.is_cycler() {
            let (name, entry) =
                cycler_sim(device, cells.clone(), &clock, &data_dir, &mut other_sims).await?;
            devices.push_str(&format!("[[device]]\nname = \"{name}\"\n{entry}\n"));
            for n in 1..=channels {
                channel_ids.push(format!("{name}/{n}"));
                devices.push_str(&format!("[[channel]]\nid = \"{name}/{n}\"\n{poll}"));
            }
        }
        let stage_cells = if device.is_cycler() {
            Vec::new()
        } else {
            cells
        };
        for (k, cell) in stage_cells.into_iter().enumerate() {
            let n = k + 1;
            let entry = match device {
                DemoDevice::EaPsb => {
                    let listener = TcpListener::bind("127.0.0.1:0").await?;
                    let sim = PsbSim::spawn(
                        listener,
                        SimConfig::psb_10060_60(&format!("SIM{k:04}"), cell),
                        clock.clone(),
                    )?;
                    let entry = format!("family = \"ea-psb\"\naddress = \"{}\"", sim.endpoint());
                    sims.push(sim);
                    entry
                }
                DemoDevice::Scpi => {
                    use cyclerd_drivers::scpi::{self, ScpiSim, SimDialect};
                    let listener = TcpListener::bind("127.0.0.1:0").await?;
                    let config = scpi::SimConfig::new(SimDialect::EaPsb, &format!("SIM{k:04}"));
                    let sim = ScpiSim::spawn(listener, config, cell, clock.clone())?;
                    let entry = format!("family = \"scpi\"\naddress = \"{}\"", sim.endpoint());
                    other_sims.push(Box::new(sim));
                    entry
                }
                DemoDevice::Riden => riden_sim(k, cell, &clock, &mut other_sims)?,
                DemoDevice::Neware | DemoDevice::Maccor | DemoDevice::Arbin => unreachable!(),
            };
            channel_ids.push(format!("psb{n}/1"));
            devices.push_str(&format!(
                "[[device]]\nname = \"psb{n}\"\n{entry}\n[[channel]]\nid = \"psb{n}/1\"\n{poll}"
            ));
        }
        if let (Some(family), Some(air)) = (chamber, air) {
            let entry = chamber_sim(family, air, &clock, &mut other_sims).await?;
            let inside: Vec<String> = channel_ids.iter().map(|id| format!("{id:?}")).collect();
            devices.push_str(&format!(
                "[[chamber]]\nname = \"chamber1\"\n{entry}\nchannels = [{}]\n{chamber_config}\n",
                inside.join(", ")
            ));
        }
        let config_text = format!(
            "[daemon]\nname = \"demo\"\n[store]\npath = {store:?}\n{extra_config}\n[hub]\n{hub}\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\ntemperature_max = 60.0\n{devices}",
            store = data_dir.join("outbox.sqlite").display().to_string(),
            hub = match &hub_ca_file {
                Some(ca) => format!(
                    "address = \"https://localhost:{}\"\nca_file = {:?}",
                    hub_addr.port(),
                    ca.display().to_string()
                ),
                None => format!(
                    "address = {:?}",
                    std::iter::once(hub_addr)
                        .chain(more_hub_addresses)
                        .map(|a| format!("http://{a}"))
                        .collect::<Vec<_>>()
                ),
            } + &hub_token_file
                .as_ref()
                .map(|f| format!("\ntoken_file = {:?}", f.display().to_string()))
                .unwrap_or_default()
                + &hub_lab
                    .as_ref()
                    .map(|lab| format!("\nlab = {lab:?}"))
                    .unwrap_or_default(),
        );
        let mut config = Config::from_toml(&config_text, ORIGIN)?;
        config.quality.0 = quality;
        let daemon = Daemon::start(config.clone(), ORIGIN, clock.clone()).await?;
        Ok(SimLab {
            daemon,
            clock,
            sims,
            other_sims,
            capacities,
            nominal_capacity_ah: capacity_ah,
            channel_ids,
            data_dir,
            hub_addr,
            hub_app_addr,
            config,
            hub_stop,
            hub,
            _temp: temp,
        })
    }

    /// Shuts the daemon down (outputs off, stepped tests left interrupted, at most `drain` for
    /// the hub) and starts
    /// it again on the same store and devices, as after a restart of the service; returns the
    /// first daemon's summary.
    pub async fn restart_daemon(&mut self, drain: Duration) -> anyhow::Result<Summary> {
        let summary = self.daemon.shutdown(drain).await;
        self.daemon = Daemon::start(self.config.clone(), ORIGIN, self.clock.clone()).await?;
        Ok(summary)
    }

    pub fn channel_ids(&self) -> Vec<String> {
        self.channel_ids.clone()
    }

    /// Each channel's cell capacity (at the start of its life), Ah, in channel order.
    pub fn capacities(&self) -> Vec<f64> {
        self.capacities.clone()
    }

    /// The simulator of another family than the PSB, e.g. the cycler of a Neware lab
    /// (`lab.sim::<neware::SimHandle>(0)`): the `index`th of that type.
    pub fn sim<T: 'static>(&self, index: usize) -> Option<&T> {
        self.other_sims
            .iter()
            .filter_map(|s| s.downcast_ref::<T>())
            .nth(index)
    }

    pub fn hub_db(&self) -> PathBuf {
        self.data_dir.join("hub.sqlite")
    }

    /// Starts `protocol` on every channel with demo metadata; returns the test ids.
    pub async fn start_everywhere(
        &self,
        protocol: &str,
        origin: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(self.capacities.len());
        for k in 0..self.channel_ids.len() {
            ids.push(self.start_on(k, protocol, origin).await?);
        }
        Ok(ids)
    }

    /// Starts `protocol` on the `k`th channel with demo metadata; returns the test id.
    pub async fn start_on(&self, k: usize, protocol: &str, origin: &str) -> anyhow::Result<String> {
        Ok(self
            .start_on_with(k, protocol, origin, &BTreeMap::new())
            .await?
            .test_id)
    }

    /// [`SimLab::start_on`] with values for the protocol's parameters; the start's answer.
    pub async fn start_on_with(
        &self,
        k: usize,
        protocol: &str,
        origin: &str,
        params: &BTreeMap<String, String>,
    ) -> anyhow::Result<Started> {
        let channel = &self.channel_ids[k];
        let capacity = self.nominal_capacity_ah;
        let metadata: HashMap<String, String> = [
            ("cell_id", format!("SIM-NMC-{:03}", k + 1)),
            ("operator", "demo".into()),
            ("owner", "cyclerd".into()),
            ("objective", "demonstration of the cyclerd data path".into()),
            ("chemistry", "NMC/graphite".into()),
            ("nominal_capacity_ah", format!("{capacity:.3}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(self
            .daemon
            .start_test_with(channel, protocol, origin, metadata, params)
            .await?)
    }

    /// Shuts the daemon down (outputs off; a stepped test still running is left interrupted, as
    /// by a clean SIGTERM), lets the hub catch up for at most `drain`, stops the hub and returns
    /// the daemon's summary.
    pub async fn stop(
        self,
        drain: Duration,
    ) -> anyhow::Result<(Summary, PathBuf, Option<tempfile::TempDir>)> {
        let summary = self.daemon.shutdown(drain).await;
        let _ = self.hub_stop.send(());
        if let Some(hub) = self.hub {
            hub.await??;
        }
        Ok((summary, self.data_dir, self._temp))
    }
}

/// Starts a simulated chamber of `family` moving `air`; returns its `[[chamber]]` keys and
/// pushes its handle (the family's `SimHandle`) onto `keep`.
pub async fn chamber_sim(
    family: DemoChamber,
    air: Air,
    clock: &Clock,
    keep: &mut Vec<KeptSim>,
) -> anyhow::Result<String> {
    use cyclerd_drivers::{binder, espec, watlow, weiss};
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let clock = clock.clone();
    let (family_name, address) = match family {
        DemoChamber::Espec => {
            let sim = espec::EspecSim::spawn(listener, espec::SimConfig::new(air), clock)?;
            let at = sim.endpoint();
            keep.push(Box::new(sim));
            ("espec", at.to_string())
        }
        DemoChamber::Weiss => {
            let sim = weiss::WeissSim::spawn(listener, weiss::SimConfig::new(air), clock)?;
            let at = sim.addr();
            keep.push(Box::new(sim));
            ("weiss", at.to_string())
        }
        DemoChamber::Watlow => {
            let sim = watlow::WatlowSim::spawn(listener, watlow::SimConfig::new(air), clock)?;
            let at = sim.addr();
            keep.push(Box::new(sim));
            ("watlow", at.to_string())
        }
        DemoChamber::Binder => {
            let sim = binder::BinderSim::spawn(listener, binder::SimConfig::new(air), clock)?;
            let at = sim.endpoint();
            keep.push(Box::new(sim));
            ("binder", at.to_string())
        }
    };
    Ok(format!(
        "family = \"{family_name}\"\naddress = \"{address}\"\ncomm_timeout_ms = 5000"
    ))
}

/// Starts one simulated cycler of `device`'s family with a channel per cell, logging a record
/// every [`CYCLER_RECORD_INTERVAL_S`]; returns the device name and its `[[device]]` keys, and
/// pushes the simulator's handle onto `keep` (its `SimHandle`: the family's `sim::SimHandle`).
pub async fn cycler_sim(
    device: DemoDevice,
    cells: Vec<CellParams>,
    clock: &Clock,
    data_dir: &std::path::Path,
    keep: &mut Vec<KeptSim>,
) -> anyhow::Result<(&'static str, String)> {
    let channels = cells.len();
    let cell = cells[0].clone();
    match device {
        DemoDevice::Neware => {
            use cyclerd_drivers::neware::{self, NewareSim};
            let steps = data_dir.join("neware-steps");
            std::fs::create_dir_all(&steps)?;
            let mut config = neware::SimConfig::new(1, 1, channels as u32, cell, &steps);
            config.cells = cells;
            config.record_interval_s = CYCLER_RECORD_INTERVAL_S;
            let sim = NewareSim::spawn(
                TcpListener::bind("127.0.0.1:0").await?,
                config,
                clock.clone(),
            )?;
            let entry = format!(
                "family = \"neware\"\naddress = \"{}\"\nstep_folder = {:?}",
                sim.addr(),
                steps.display().to_string()
            );
            keep.push(Box::new(sim));
            Ok(("neware1", entry))
        }
        DemoDevice::Maccor => {
            use cyclerd_drivers::maccor::{self, MaccorSim};
            let mut config = maccor::SimConfig::new(channels, cell);
            config.cells = cells;
            config.record_interval_s = CYCLER_RECORD_INTERVAL_S;
            let json = TcpListener::bind("127.0.0.1:0").await?;
            let binary = TcpListener::bind("127.0.0.1:0").await?;
            let sim = MaccorSim::spawn(json, binary, config, clock.clone())?;
            let entry = format!(
                "family = \"maccor\"\naddress = \"{}\"\nbinary_port = {}",
                sim.json_addr(),
                sim.binary_addr().port()
            );
            keep.push(Box::new(sim));
            Ok(("maccor1", entry))
        }
        DemoDevice::Arbin => {
            use cyclerd_drivers::arbin::{self, ArbinSim};
            let mut config = arbin::SimConfig::new(channels, cell);
            config.cells = cells;
            config.record_interval_s = CYCLER_RECORD_INTERVAL_S;
            let (user, password) = (config.username.clone(), config.password.clone());
            let control = TcpListener::bind("127.0.0.1:0").await?;
            let files = TcpListener::bind("127.0.0.1:0").await?;
            let sim = ArbinSim::spawn(control, files, config, clock.clone())?;
            let entry = format!(
                "family = \"arbin\"\naddress = \"{}\"\nfile_port = {}\nusername = {user:?}\npassword = {password:?}",
                sim.control_addr(),
                sim.file_addr().port()
            );
            keep.push(Box::new(sim));
            Ok(("arbin1", entry))
        }
        DemoDevice::EaPsb | DemoDevice::Scpi | DemoDevice::Riden => {
            anyhow::bail!("{} is not a cycler", device.label())
        }
    }
}

#[cfg(unix)]
fn riden_sim(
    k: usize,
    cell: CellParams,
    clock: &Clock,
    keep: &mut Vec<KeptSim>,
) -> anyhow::Result<String> {
    use cyclerd_drivers::riden::{self, RidenSim};
    let pty = cyclerd_drivers::transport::pty::Pty::open()?;
    let sim = RidenSim::spawn(
        pty,
        riden::sim::SimConfig::rd60xx(6006, 60060 + k as u32, cell),
        clock.clone(),
    )?;
    let entry = format!(
        "family = \"riden\"\nport = {:?}",
        sim.path().display().to_string()
    );
    keep.push(Box::new(sim));
    Ok(entry)
}

#[cfg(not(unix))]
fn riden_sim(_: usize, _: CellParams, _: &Clock, _: &mut Vec<KeptSim>) -> anyhow::Result<String> {
    anyhow::bail!("the simulated Riden needs a pseudo-terminal, which this system lacks")
}
