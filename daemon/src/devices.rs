//! From a `[[device]]` entry to a connected power stage or cycler and running channels: the one
//! place that knows every device family.

use crate::chamber::{ChamberLink, ChamberRunner, ChamberSpec};
use crate::config::ResumePolicy;
use crate::config::{ChamberConfig, ChamberFamily, DeviceConfig, Family, Limits};
use crate::native::{CyclerRunner, NativeChannel};
use crate::outbox::Checkpoint;
use crate::proto::control::ChannelSnapshot;
use crate::runner::{ChannelCmd, ChannelRunner, ChannelSpec, Shared};
use cyclerd_drivers::Clock;
use cyclerd_drivers::DriverError;
use cyclerd_drivers::arbin::{ArbinClient, ArbinConfig};
use cyclerd_drivers::binder::{BinderClient, BinderOptions};
use cyclerd_drivers::chamber::Chamber;
use cyclerd_drivers::cycler::{ChannelAddr, Cycler};
use cyclerd_drivers::ea_psb::{PsbClient, wire::Nominal};
use cyclerd_drivers::espec::{EspecClient, EspecOptions};
use cyclerd_drivers::maccor::{DirectConfig, MaccorClient, MaccorConfig, MaccorDirect};
use cyclerd_drivers::neware::{NewareClient, NewareConfig};
use cyclerd_drivers::riden::RidenClient;
use cyclerd_drivers::scpi::client::{PairStage, ScpiClient, ScpiOptions};
use cyclerd_drivers::scpi::wire::Dialect;
use cyclerd_drivers::stage::PowerStage;
use cyclerd_drivers::transport::Endpoint;
use cyclerd_drivers::watlow::{WatlowClient, WatlowOptions};
use cyclerd_drivers::weiss::WeissClient;
use cyclerd_protocols::compile::Target;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// SCPI dialect names accepted in `[[device]] dialect`.
pub const SCPI_DIALECTS: [(&str, Dialect); 5] = [
    ("ea-psb", Dialect::EaPsb),
    ("keithley-24xx", Dialect::Keithley24xx),
    ("keysight-b2900", Dialect::KeysightB2900),
    ("itech-it6000", Dialect::ItechIt6000),
    ("bk-8600", Dialect::Bk8600),
];

pub fn scpi_dialect(name: &str) -> Option<Dialect> {
    SCPI_DIALECTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
}

/// Everything a channel task needs besides its device.
pub struct ChannelStart {
    pub spec: ChannelSpec,
    pub shared: Shared,
    pub live: watch::Sender<ChannelSnapshot>,
    pub resume: Option<(Checkpoint, ResumePolicy)>,
    pub cmds: mpsc::Receiver<ChannelCmd>,
    pub stop: watch::Receiver<bool>,
}

/// Connects `device` and spawns the channel's runner on `tasks`.
pub async fn spawn_channel(
    device: &DeviceConfig,
    load: Option<&DeviceConfig>,
    start: ChannelStart,
    tasks: &mut JoinSet<()>,
) -> Result<(), DriverError> {
    let timeout = device.timeout();
    if let Some(load) = load {
        let supply = connect_scpi(device).await?;
        let load = connect_scpi(load).await?;
        spawn(PairStage::new(supply, load), start, tasks);
        return Ok(());
    }
    match device.family {
        Family::EaPsb => {
            let nominal = match (device.nominal_voltage, device.nominal_current) {
                (Some(v), Some(a)) => Some(Nominal {
                    voltage_v: v,
                    current_a: a,
                    power_w: device.nominal_power.unwrap_or(v * a),
                }),
                _ => None,
            };
            let client =
                PsbClient::connect(endpoint(device, 115_200)?, device.unit, timeout, nominal)
                    .await?;
            spawn(client, start, tasks);
        }
        Family::Scpi => {
            let client = connect_scpi(device).await?;
            spawn(client, start, tasks);
        }
        Family::Riden => {
            let port = device.port.as_deref().ok_or_else(|| missing("port"))?;
            let client = RidenClient::connect(port, device.unit, timeout, None).await?;
            spawn(client, start, tasks);
        }
        Family::MaccorDirect => {
            let client = MaccorClient::connect(maccor_config(device)?).await?;
            let n = channel_number(&start.spec.id);
            let (Some(amps), Some(volts)) = (device.nominal_current, device.nominal_voltage) else {
                return Err(missing("nominal_current and nominal_voltage"));
            };
            let mut direct = DirectConfig::new(amps as f32, volts as f32);
            if let Some(watts) = device.nominal_power {
                direct.max_power_w = watts as f32;
            }
            let addr = ChannelAddr {
                unit: 0,
                sub_unit: 0,
                channel: n.saturating_sub(1),
            };
            let test = format!("cyclerd-direct-{n}");
            let stage =
                MaccorDirect::enter(client, addr, &test, direct, start.shared.clock.clone())
                    .await?;
            spawn(stage, start, tasks);
        }
        Family::Neware | Family::Maccor | Family::Arbin => {
            return Err(DriverError::Identity(format!(
                "{:?} runs schedules itself; its channels are followed by one cycler runner",
                device.name
            )));
        }
    }
    Ok(())
}

/// A native channel before its cycler is connected.
pub struct PendingNative {
    pub start: ChannelStart,
    /// N of `DEVICE/N`: the channel's position in the cycler's own list, from 1.
    pub number: u32,
}

/// Connects the cycler `device`, finds each channel's address on it, re-attaches and follows
/// them all from one task on `tasks`.
pub async fn spawn_cycler(
    device: &DeviceConfig,
    channels: Vec<PendingNative>,
    shared: Shared,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(), DriverError> {
    match device.family {
        Family::Neware => {
            let addr = device.address.ok_or_else(|| missing("address"))?;
            let folder = device
                .step_folder
                .clone()
                .ok_or_else(|| missing("step_folder"))?;
            let mut config = NewareConfig::new(addr, folder);
            config.remote_step_folder = device.remote_step_folder.clone();
            if let Some(user) = &device.username {
                config.username = user.clone();
            }
            if let Some(password) = &device.password {
                config.password = password.clone();
            }
            config.timeout = device.timeout();
            let client = NewareClient::connect(config).await?;
            follow(
                device,
                client,
                Target::Neware,
                channels,
                shared,
                stop,
                tasks,
            )
            .await
        }
        Family::Maccor => {
            let client = MaccorClient::connect(maccor_config(device)?).await?;
            follow(
                device,
                client,
                Target::Maccor,
                channels,
                shared,
                stop,
                tasks,
            )
            .await
        }
        Family::Arbin => {
            let addr = device.address.ok_or_else(|| missing("address"))?;
            let (Some(user), Some(password)) = (&device.username, &device.password) else {
                return Err(missing("username and password"));
            };
            let mut config = ArbinConfig::new(addr.ip(), user, password);
            config.control_port = addr.port();
            config.file_port = device.file_port.unwrap_or(config.file_port);
            config.timeout = device.timeout();
            let client = ArbinClient::connect(config).await?;
            follow(device, client, Target::Arbin, channels, shared, stop, tasks).await
        }
        _ => Err(DriverError::Identity(format!(
            "{:?} is a power stage, not a cycler",
            device.name
        ))),
    }
}

fn maccor_config(device: &DeviceConfig) -> Result<MaccorConfig, DriverError> {
    let addr = device.address.ok_or_else(|| missing("address"))?;
    let mut config = MaccorConfig::new(addr.ip());
    config.json_port = addr.port();
    config.binary_port = device.binary_port.unwrap_or(config.binary_port);
    config.timeout = device.timeout();
    Ok(config)
}

/// N of a `DEVICE/N` channel id (validated by the configuration).
fn channel_number(id: &str) -> u32 {
    id.rsplit_once('/')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

async fn follow<C: Cycler + 'static>(
    device: &DeviceConfig,
    mut cycler: C,
    target: Target,
    pending: Vec<PendingNative>,
    shared: Shared,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<(), DriverError> {
    let listed = cycler.channels().await?;
    let mut channels = Vec::with_capacity(pending.len());
    for p in pending {
        let addr = (p.number as usize)
            .checked_sub(1)
            .and_then(|i| listed.get(i))
            .copied()
            .ok_or_else(|| {
                DriverError::Identity(format!(
                    "channel {} does not exist: the cycler lists {} channels ({}/1 to {}/{})",
                    p.start.spec.id,
                    listed.len(),
                    device.name,
                    device.name,
                    listed.len()
                ))
            })?;
        tracing::info!(channel = %p.start.spec.id, "is channel {addr} (unit-subunit-channel) on the cycler");
        channels.push(NativeChannel {
            spec: p.start.spec,
            addr,
            live: p.start.live,
            cmds: p.start.cmds,
            resume: p.start.resume.map(|(checkpoint, _)| checkpoint),
        });
    }
    let runner = CyclerRunner::new(device.name.clone(), cycler, target, shared, &channels);
    tasks.spawn(runner.run(channels, stop));
    Ok(())
}

async fn connect_scpi(device: &DeviceConfig) -> Result<ScpiClient, DriverError> {
    let options = ScpiOptions {
        timeout: device.timeout(),
        dialect: device.dialect.as_deref().and_then(scpi_dialect),
        ..ScpiOptions::default()
    };
    ScpiClient::connect(endpoint(device, 9600)?, options).await
}

/// Where a device that can be networked or serial is, from its `address` or its `port`.
fn endpoint(device: &DeviceConfig, default_baud: u32) -> Result<Endpoint, DriverError> {
    match (&device.address, &device.port) {
        (Some(addr), _) => Ok(Endpoint::Tcp(*addr)),
        (None, Some(path)) => Ok(Endpoint::Serial {
            path: path.clone(),
            baud: device.baud.unwrap_or(default_baud),
        }),
        (None, None) => Err(missing("address or port")),
    }
}

fn missing(key: &str) -> DriverError {
    DriverError::Identity(format!("the device entry has no {key}"))
}

fn spawn<D: PowerStage + 'static>(device: D, start: ChannelStart, tasks: &mut JoinSet<()>) {
    let runner = ChannelRunner::new(start.spec, device, start.shared, start.live);
    tasks.spawn(runner.run(start.resume, start.cmds, start.stop));
}

/// Connects the chamber `config` describes and spawns its task on `tasks`; returns the link its
/// channels use.
pub async fn spawn_chamber(
    config: &ChamberConfig,
    lab: &Limits,
    clock: Clock,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<ChamberLink, DriverError> {
    let (temperature_min_c, temperature_max_c) = config.limits(lab);
    let spec = ChamberSpec {
        name: config.name.clone(),
        poll_interval_s: config.poll_interval_ms as f64 / 1000.0,
        comm_timeout: Duration::from_millis(config.comm_timeout_ms),
        temperature_min_c,
        temperature_max_c,
    };
    let timeout = Duration::from_millis(config.timeout_ms);
    let chamber_endpoint = |default_baud| match (&config.address, &config.port) {
        (Some(addr), _) => Ok(Endpoint::Tcp(*addr)),
        (None, Some(path)) => Ok(Endpoint::Serial {
            path: path.clone(),
            baud: config.baud.unwrap_or(default_baud),
        }),
        (None, None) => Err(missing("address or port")),
    };
    Ok(match config.family {
        ChamberFamily::Espec => {
            let options = EspecOptions {
                timeout,
                address: config.unit,
            };
            let client = EspecClient::connect(chamber_endpoint(9600)?, options).await?;
            chamber_task(client, spec, clock, stop, tasks)
        }
        ChamberFamily::Weiss => {
            let addr = config.address.ok_or_else(|| missing("address"))?;
            let client = WeissClient::connect(addr, timeout).await?;
            chamber_task(client, spec, clock, stop, tasks)
        }
        ChamberFamily::Watlow => {
            let addr = config.address.ok_or_else(|| missing("address"))?;
            let defaults = WatlowOptions::default();
            let options = WatlowOptions {
                loop_n: config.loop_number.unwrap_or(defaults.loop_n),
                timeout,
                unit: config.unit.unwrap_or(defaults.unit),
                ..defaults
            };
            let client = WatlowClient::connect(addr, options).await?;
            chamber_task(client, spec, clock, stop, tasks)
        }
        ChamberFamily::Binder => {
            let defaults = BinderOptions::default();
            let options = BinderOptions {
                unit: config.unit.unwrap_or(defaults.unit),
                timeout,
                ..defaults
            };
            let client = BinderClient::connect(chamber_endpoint(9600)?, options).await?;
            chamber_task(client, spec, clock, stop, tasks)
        }
    })
}

fn chamber_task<C: Chamber + 'static>(
    chamber: C,
    spec: ChamberSpec,
    clock: Clock,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> ChamberLink {
    let (runner, link) = ChamberRunner::new(spec, chamber, clock);
    tasks.spawn(runner.run(stop));
    link
}
