//! Failing safe when the daemon cannot start.
//!
//! A daemon killed with an output on leaves its supply charging until the next start switches it
//! off. When that start fails after the configuration was read (an outbox that cannot open or is
//! corrupt, wrong hub settings, a control port taken, a device refused), nothing else would: the
//! supply keeps charging, and a service manager that restarts on failure turns it into a loop
//! with the output on. So before the process exits, [`outputs_off`] switches off the output of
//! every reachable stepped channel of the configuration: devices concurrently, each within
//! [`OFF_TIMEOUT`], best effort, each outcome logged. Native cyclers are left alone: their tests
//! run on the cycler and the next start re-attaches.

use crate::config::Config;
use crate::devices::{self, OnStage};
use cyclerd_drivers::stage::PowerStage;
use cyclerd_drivers::{Clock, DriverError};
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use std::collections::BTreeMap;
use std::time::Duration;

/// The longest one device may take to be reached and switched off: the exit is never held
/// longer than this by the devices.
pub const OFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether one stepped channel's output was switched off, or why not.
#[derive(Debug)]
pub struct Off {
    pub channel: String,
    pub result: Result<(), String>,
}

/// A connected stage is switched off, and dropped.
struct SwitchOff;

impl OnStage for SwitchOff {
    type Out = BoxFuture<'static, Result<(), DriverError>>;
    fn connected<D: PowerStage + 'static>(self, mut device: D) -> Self::Out {
        async move { device.output_off().await }.boxed()
    }
}

/// Switches off the output of every stepped channel of `config` that can be reached, and logs
/// which were switched off and which could not be. The channels of one device one after the
/// other (an instrument may take one session at a time), devices at once.
pub async fn outputs_off(config: &Config, clock: &Clock) -> Vec<Off> {
    let mut by_device: BTreeMap<&str, Vec<&crate::config::ChannelConfig>> = BTreeMap::new();
    for ch in &config.channels {
        if config
            .device(ch.device_name())
            .is_some_and(|d| !d.family.is_native())
        {
            by_device.entry(ch.device_name()).or_default().push(ch);
        }
    }
    let tried = join_all(by_device.into_iter().map(|(name, channels)| async move {
        let device = config.device(name)?;
        let mut done: Vec<Off> = Vec::new();
        let all = async {
            for ch in &channels {
                let load = ch.load.as_deref().and_then(|l| config.device(l));
                let result =
                    match devices::connect_stage(device, load, &ch.id, clock, SwitchOff).await {
                        Ok(off) => off.await,
                        Err(e) => Err(e),
                    };
                let link_lost = result.as_ref().is_err_and(DriverError::is_link_lost);
                done.push(Off {
                    channel: ch.id.clone(),
                    result: result.map_err(|e| e.to_string()),
                });
                // A device that does not answer is not asked again for each of its channels.
                if link_lost {
                    break;
                }
            }
        };
        let timed_out = tokio::time::timeout(OFF_TIMEOUT, all).await.is_err();
        let what = devices::describe(
            "device",
            &device.name,
            device.address,
            device.port.as_deref(),
        );
        let why = if timed_out {
            format!("{what} was not reached within {} s", OFF_TIMEOUT.as_secs())
        } else {
            done.last()
                .and_then(|o| o.result.clone().err())
                .unwrap_or_default()
        };
        for ch in channels.iter().skip(done.len()) {
            done.push(Off {
                channel: ch.id.clone(),
                result: Err(why.clone()),
            });
        }
        for off in &done {
            match &off.result {
                Ok(()) => tracing::warn!(
                    "the daemon cannot start: switched off the output of channel {} ({what})",
                    off.channel
                ),
                Err(e) => tracing::error!(
                    "the daemon cannot start, and cannot switch off the output of channel {} \
                     ({what}): {e}",
                    off.channel
                ),
            }
        }
        Some(done)
    }))
    .await;
    tried.into_iter().flatten().flatten().collect()
}
