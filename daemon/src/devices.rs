//! From a `[[device]]` entry to a connected power stage or cycler and running channels: the one
//! place that knows every device family.

use crate::chamber::{ChamberLink, ChamberSpec, Unconnected};
use crate::channel::native::{CyclerRunner, NativeChannel};
use crate::channel::offline;
use crate::channel::stepped::ChannelRunner;
use crate::channel::{ChannelStart, Shared};
use crate::config::{ChamberConfig, ChamberFamily, DeviceConfig, Family, Limits};
use crate::retry;
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
use futures::FutureExt;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// A connected power stage, waiting for the channel it is to run.
type StageRun = Box<dyn FnOnce(ChannelStart) -> BoxFuture<'static, ()> + Send>;

/// Connects `device` (with `load`, the electronic load paired with it, if any); returns the
/// channel's task, its runner, and why the device does not answer if it does not: then the task
/// waits for it ([`offline`]). `down` is why another channel found the device not answering:
/// then it is not asked again now. Any other error is returned.
pub async fn channel_task(
    device: &DeviceConfig,
    load: Option<&DeviceConfig>,
    mut start: ChannelStart,
    down: Option<&str>,
) -> Result<(BoxFuture<'static, ()>, Option<String>), DriverError> {
    let clock = start.shared.clock.clone();
    let id = start.spec.id.clone();
    let tried = match down {
        Some(why) => Err(DriverError::Link {
            during: "connecting (found by another of its channels)",
            message: why.into(),
        }),
        None => connect_stage(device, load, &id, &clock, Runs).await,
    };
    let first = match tried {
        Ok(run) => return Ok((run(start), None)),
        Err(e) if retry::waits(&e) => e,
        Err(e) => return Err(e),
    };
    let not_answering = first.to_string();
    let what = describe(
        "device",
        &device.name,
        device.address,
        device.port.as_deref(),
    );
    retry::begin(&what, &first, &mut offline::Channels::stepped(&mut start));
    let (device, load) = (device.clone(), load.cloned());
    let run = async move {
        let mut stop = start.stop.clone();
        let connect = || connect_stage(&device, load.as_ref(), &id, &clock, Runs);
        if let Some(run) = retry::wait_for(
            &what,
            first,
            connect,
            &mut offline::Channels::stepped(&mut start),
            &mut stop,
        )
        .await
        {
            run(start).await;
        }
    };
    Ok((run.boxed(), Some(not_answering)))
}

/// How messages name a device: its configured name and where it is.
pub fn describe(kind: &str, name: &str, address: Option<SocketAddr>, port: Option<&str>) -> String {
    match (address, port) {
        (Some(a), _) => format!("{kind} {name:?} at {a}"),
        (None, Some(p)) => format!("{kind} {name:?} on {p}"),
        (None, None) => format!("{kind} {name:?}"),
    }
}

/// What is done with a power stage once it is connected: whatever the family, the same.
pub(crate) trait OnStage {
    type Out;
    fn connected<D: PowerStage + 'static>(self, device: D) -> Self::Out;
}

/// A connected stage runs its channel.
struct Runs;

impl OnStage for Runs {
    type Out = StageRun;
    fn connected<D: PowerStage + 'static>(self, device: D) -> StageRun {
        stage(device)
    }
}

/// Connects the power stage of channel `channel_id` on `device` (with its paired `load`) and
/// hands it to `on`.
pub(crate) async fn connect_stage<O: OnStage>(
    device: &DeviceConfig,
    load: Option<&DeviceConfig>,
    channel_id: &str,
    clock: &Clock,
    on: O,
) -> Result<O::Out, DriverError> {
    let timeout = device.timeout();
    if let Some(load) = load {
        let supply = connect_scpi(device).await?;
        let load = connect_scpi(load).await?;
        return Ok(on.connected(PairStage::new(supply, load)));
    }
    Ok(match device.family {
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
            on.connected(client)
        }
        Family::Scpi => on.connected(connect_scpi(device).await?),
        Family::Riden => {
            let port = device.port.as_deref().ok_or_else(|| missing("port"))?;
            on.connected(RidenClient::connect(port, device.unit, timeout, None).await?)
        }
        Family::MaccorDirect => {
            let n = channel_number(channel_id);
            let (Some(amps), Some(volts)) = (device.nominal_current, device.nominal_voltage) else {
                return Err(missing("nominal_current and nominal_voltage"));
            };
            let client = MaccorClient::connect(maccor_config(device)?).await?;
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
            // Only the tester knows how many channels it has: a channel beyond them is refused
            // here, naming the tester and the channel.
            let direct = MaccorDirect::enter(client, addr, &test, direct, clock.clone())
                .await
                .map_err(|e| match e {
                    DriverError::Identity(m) => {
                        DriverError::Identity(format!("channel {channel_id:?}: {m}"))
                    }
                    e => e,
                })?;
            on.connected(direct)
        }
        Family::Neware | Family::Maccor | Family::Arbin => {
            return Err(DriverError::Identity(format!(
                "{:?} runs schedules itself; its channels are followed by one cycler runner",
                device.name
            )));
        }
    })
}

/// A native channel before its cycler is connected.
pub struct PendingNative {
    pub start: ChannelStart,
    /// N of `DEVICE/N`: the channel's position in the cycler's own list, from 1.
    pub number: u32,
}

/// A connected cycler with its channels' addresses on it, waiting for those channels.
type CyclerRun = Box<
    dyn FnOnce(Vec<PendingNative>, Shared, watch::Receiver<bool>) -> BoxFuture<'static, ()> + Send,
>;

/// Connects the cycler `device` and finds each channel's address on it; returns the one task
/// that re-attaches and follows them all. A cycler that does not answer is waited for in that
/// task ([`offline`]); any other error is returned.
pub async fn cycler_task(
    device: &DeviceConfig,
    mut channels: Vec<PendingNative>,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<BoxFuture<'static, ()>, DriverError> {
    let wanted: Vec<(String, u32)> = channels
        .iter()
        .map(|p| (p.start.spec.id.clone(), p.number))
        .collect();
    let first = match connect_cycler(device, &wanted).await {
        Ok(run) => return Ok(run(channels, shared, stop)),
        Err(e) if retry::waits(&e) => e,
        Err(e) => return Err(e),
    };
    let what = describe(
        "cycler",
        &device.name,
        device.address,
        device.port.as_deref(),
    );
    retry::begin(&what, &first, &mut waiting(&mut channels));
    let device = device.clone();
    Ok(async move {
        let connect = || connect_cycler(&device, &wanted);
        let connected = retry::wait_for(
            &what,
            first,
            connect,
            &mut waiting(&mut channels),
            &mut stop,
        )
        .await;
        if let Some(run) = connected {
            run(channels, shared, stop).await;
        }
    }
    .boxed())
}

/// A cycler's channels while it does not answer.
fn waiting(channels: &mut [PendingNative]) -> offline::Channels<'_> {
    offline::Channels::native(channels.iter_mut().map(|p| &mut p.start))
}

/// Connects the cycler `device` and finds the addresses of the `wanted` channels (id and N of
/// `DEVICE/N`) on it.
async fn connect_cycler(
    device: &DeviceConfig,
    wanted: &[(String, u32)],
) -> Result<CyclerRun, DriverError> {
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
            follow(device, client, Target::Neware, wanted).await
        }
        Family::Maccor => {
            let client = MaccorClient::connect(maccor_config(device)?).await?;
            follow(device, client, Target::Maccor, wanted).await
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
            follow(device, client, Target::Arbin, wanted).await
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
    wanted: &[(String, u32)],
) -> Result<CyclerRun, DriverError> {
    let listed = cycler.channels().await?;
    let addrs = wanted
        .iter()
        .map(|(id, number)| {
            (*number as usize)
                .checked_sub(1)
                .and_then(|i| listed.get(i))
                .copied()
                .ok_or_else(|| {
                    DriverError::Identity(format!(
                        "channel {id} does not exist: the cycler lists {} channels ({}/1 to {}/{})",
                        listed.len(),
                        device.name,
                        device.name,
                        listed.len()
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let name = device.name.clone();
    Ok(Box::new(move |pending, shared, stop| {
        let started = pending.first().map(|p| p.start.started.clone());
        let channels: Vec<NativeChannel> = pending
            .into_iter()
            .zip(addrs)
            .map(|(p, addr)| {
                tracing::info!(channel = %p.start.spec.id, "is channel {addr} (unit-subunit-channel) on the cycler");
                NativeChannel {
                    spec: p.start.spec,
                    addr,
                    live: p.start.live,
                    cmds: p.start.cmds,
                    resume: p.start.resume.map(|(checkpoint, _)| checkpoint),
                }
            })
            .collect();
        let runner = CyclerRunner::new(name, cycler, target, shared, &channels);
        async move {
            // Re-attached (and recorded) only once the daemon's whole start succeeded.
            if let Some(mut started) = started {
                let mut stopping = stop.clone();
                tokio::select! {
                    _ = started.wait_for(|s| *s) => {}
                    _ = stopping.wait_for(|s| *s) => {}
                }
                if *stop.borrow() || !*started.borrow() {
                    return;
                }
            }
            runner.run(channels, stop).await;
        }
        .boxed()
    }))
}

async fn connect_scpi(device: &DeviceConfig) -> Result<ScpiClient, DriverError> {
    let options = ScpiOptions {
        timeout: device.timeout(),
        dialect: device.dialect.as_deref().and_then(Dialect::from_name),
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

fn stage<D: PowerStage + 'static>(device: D) -> StageRun {
    Box::new(move |start: ChannelStart| {
        let runner = ChannelRunner::new(start.spec, device, start.shared, start.live);
        let stop = (start.stop, start.started);
        runner.run(start.resume, start.cmds, stop).boxed()
    })
}

/// A chamber's task and the link its channels use.
pub struct ChamberTask {
    pub link: ChamberLink,
    /// Polls the chamber (or first waits for it to answer).
    pub run: BoxFuture<'static, ()>,
    /// The chamber answered the first attempt: its first reading is moments away.
    pub connected: bool,
}

/// Connects the chamber `config` describes; returns its task. A chamber that does not answer is
/// waited for in that task ([`offline`]), unread to its channels meanwhile; any other error is
/// returned.
pub async fn chamber_task(
    config: &ChamberConfig,
    lab: &Limits,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> Result<ChamberTask, DriverError> {
    let (temperature_min_c, temperature_max_c) = config.limits(lab);
    let spec = ChamberSpec {
        name: config.name.clone(),
        poll_interval_s: config.poll_interval_ms as f64 / 1000.0,
        comm_timeout: Duration::from_millis(config.comm_timeout_ms),
        temperature_min_c,
        temperature_max_c,
        idle_set_point_c: config.idle_set_point,
    };
    let (mut task, link) = Unconnected::new(spec, clock);
    let first = match connect_chamber(config).await {
        Ok(run) => {
            return Ok(ChamberTask {
                link,
                run: run(task, stop),
                connected: true,
            });
        }
        Err(e) if retry::waits(&e) => e,
        Err(e) => return Err(e),
    };
    let what = describe(
        "chamber",
        &config.name,
        config.address,
        config.port.as_deref(),
    );
    retry::begin(&what, &first, &mut task);
    let config = config.clone();
    let run = async move {
        let connect = || connect_chamber(&config);
        if let Some(run) = retry::wait_for(&what, first, connect, &mut task, &mut stop).await {
            run(task, stop).await;
        }
    };
    Ok(ChamberTask {
        link,
        run: run.boxed(),
        connected: false,
    })
}

/// A connected chamber, waiting for its task.
type ChamberRun =
    Box<dyn FnOnce(Unconnected, watch::Receiver<bool>) -> BoxFuture<'static, ()> + Send>;

async fn connect_chamber(config: &ChamberConfig) -> Result<ChamberRun, DriverError> {
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
            chamber(EspecClient::connect(chamber_endpoint(9600)?, options).await?)
        }
        ChamberFamily::Weiss => {
            let addr = config.address.ok_or_else(|| missing("address"))?;
            chamber(WeissClient::connect(addr, timeout).await?)
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
            chamber(WatlowClient::connect(addr, options).await?)
        }
        ChamberFamily::Binder => {
            let defaults = BinderOptions::default();
            let options = BinderOptions {
                unit: config.unit.unwrap_or(defaults.unit),
                timeout,
                ..defaults
            };
            chamber(BinderClient::connect(chamber_endpoint(9600)?, options).await?)
        }
    })
}

fn chamber<C: Chamber + 'static>(chamber: C) -> ChamberRun {
    Box::new(move |task: Unconnected, stop| task.connected(chamber).run(stop).boxed())
}
