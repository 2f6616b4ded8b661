//! From a `[[device]]` entry to a connected power stage and a running channel: the one place
//! that knows every device family.

use crate::config::ResumePolicy;
use crate::config::{DeviceConfig, Family};
use crate::outbox::Checkpoint;
use crate::proto::control::ChannelSnapshot;
use crate::runner::{ChannelCmd, ChannelRunner, ChannelSpec, Shared};
use cyclerd_drivers::DriverError;
use cyclerd_drivers::ea_psb::{PsbClient, wire::Nominal};
use cyclerd_drivers::riden::RidenClient;
use cyclerd_drivers::scpi::client::{PairStage, ScpiClient, ScpiOptions};
use cyclerd_drivers::scpi::wire::Dialect;
use cyclerd_drivers::stage::PowerStage;
use cyclerd_drivers::transport::Endpoint;
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
    let timeout = Duration::from_millis(device.timeout_ms);
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
    }
    Ok(())
}

async fn connect_scpi(device: &DeviceConfig) -> Result<ScpiClient, DriverError> {
    let options = ScpiOptions {
        timeout: Duration::from_millis(device.timeout_ms),
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
