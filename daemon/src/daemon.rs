//! Wiring: the outbox, the uploader, one runner per channel, and the handle the control API,
//! `cyclerd run` and `cyclerd demo` use.

use crate::alerts::{Alerts, Origin, rules::Observation};
use crate::chamber::ChamberLink;
use crate::channel::{ChannelCmd, ChannelSpec, ChannelStart, Shared, StartError, TestRequest};
use crate::config::Config;
use crate::config::DeviceConfig;
use crate::devices::{self, PendingNative};
use crate::lab_schemas::LabSchemas;
use crate::metadata::check_metadata;
use crate::outbox::{Checkpoint, Outbox};
use crate::params::plan_for_start;
use crate::proto::control::{Alert, AlertDelivery, ChannelSnapshot, OutboxStatus, Status};
use crate::uploader::{self, UploaderConfig, UploaderStatus};
use cyclerd_drivers::Clock;
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// A running daemon; cheap to clone.
/// A test the daemon started.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub test_id: String,
    /// What the operator should know of how it was set up ([`crate::params::plan_for_start`]).
    pub notes: Vec<String>,
}

#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    shared: Shared,
    /// Samples the store held (acknowledged or waiting) when the daemon started: with those
    /// acquired since, the acquired count spans the store's life, as the acknowledged one does.
    acquired_before: u64,
    /// One entry per configured channel, in the configuration's order (`psb2/1` before
    /// `psb10/1`, as the lab wrote them).
    channels: Vec<ChannelHandle>,
    /// The chambers' links, for their faults in the status.
    chambers: Vec<ChamberLink>,
    uploader: Arc<UploaderStatus>,
    /// The lab's metadata schemas, checked before every test starts.
    schemas: LabSchemas,
    /// Tells runners to switch outputs off and leave their tests interrupted, for the next start.
    stop_runners: watch::Sender<bool>,
    /// Tells the chambers to stop; sent after the runners ended, so that the chambers hear
    /// their tests end or stop (and go to their idle set points).
    stop_chambers: watch::Sender<bool>,
    /// Tells the uploader to stop; sent only after the backlog drained (or the drain timed out).
    stop_uploader: watch::Sender<bool>,
    /// The alert service, when `[alerts]` has rules.
    alerts: Option<Alerts>,
    /// Tells the alert monitor and delivery to stop; sent last, after the runners' ends were
    /// seen.
    stop_alerts: watch::Sender<bool>,
    /// Runner, chamber and uploader tasks, awaited at shutdown.
    tasks: Mutex<Option<Tasks>>,
}

impl Inner {
    fn channel(&self, id: &str) -> Option<&ChannelHandle> {
        self.channels.iter().find(|h| h.id == id)
    }
}

/// The daemon's tasks, in the order shutdown stops them.
struct Tasks {
    runners: JoinSet<()>,
    chambers: JoinSet<()>,
    uploader: tokio::task::JoinHandle<()>,
    /// The alert monitor and delivery.
    alerts: JoinSet<()>,
}

struct ChannelHandle {
    id: String,
    cmds: mpsc::Sender<ChannelCmd>,
    live: watch::Receiver<ChannelSnapshot>,
}

/// Figures at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub channels: usize,
    pub samples_acquired: u64,
    pub samples_acknowledged: u64,
}

impl Summary {
    pub fn lost(&self) -> u64 {
        self.samples_acquired
            .saturating_sub(self.samples_acknowledged)
    }
}

/// A stepped channel before its device is connected: its device's index in the
/// configuration, the device, its paired load, and what its runner needs.
type StageStart<'a> = (
    usize,
    &'a DeviceConfig,
    Option<&'a DeviceConfig>,
    ChannelStart,
);

/// How long a start that failed waits for the runners it had started to switch off.
const STOP_AFTER_FAILED_START: Duration = Duration::from_secs(30);

/// A device that could not be used, named as the configuration names it.
fn device_error(
    origin: &str,
    index: usize,
    device: &DeviceConfig,
    e: cyclerd_drivers::DriverError,
) -> anyhow::Error {
    let what = devices::describe(
        "device",
        &device.name,
        device.address,
        device.port.as_deref(),
    );
    anyhow::anyhow!("{origin}: device[{index}]: {what}: {e}")
}

/// What the daemon needs of `[hub]` before any device is reached: the CA and the token read
/// from their files, and the endpoints parsed (nothing is connected). `cyclerd check-config`
/// checks the same.
pub struct HubSettings {
    /// The CA that signed the hub's certificate (`hub.ca_file`), PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// This daemon's token (`hub.token_file`), trimmed, never empty.
    pub token: Option<String>,
    /// One per `hub.address`, in the order they are tried.
    pub endpoints: Vec<tonic::transport::Endpoint>,
}

impl HubSettings {
    /// Reads and checks `config`'s `[hub]`; errors name `origin` and the key.
    pub fn read(config: &Config, origin: &str) -> anyhow::Result<HubSettings> {
        let ca_pem =
            match &config.hub.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("{origin}: hub.ca_file {}: {e}", path.display())
                })?),
                None => None,
            };
        let token = match &config.hub.token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("{origin}: hub.token_file {}: {e}", path.display())
                })?;
                let token = token.trim().to_string();
                anyhow::ensure!(
                    !token.is_empty(),
                    "{origin}: hub.token_file {} is empty; put the token `cyclerhub token issue` printed in it",
                    path.display()
                );
                Some(token)
            }
            None => None,
        };
        if let Some(address) = config
            .hub
            .address
            .list()
            .iter()
            .find(|a| token.is_some() && crate::proto::in_clear_to_another_host(a))
        {
            tracing::warn!(
                address,
                "the hub address is plain http: the daemon's token crosses the network in clear; \
                 serve the hub over TLS and use https:// with hub.ca_file"
            );
        }
        let endpoints = config
            .hub
            .address
            .list()
            .iter()
            .map(|a| uploader::hub_endpoint(a, ca_pem.as_deref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{origin}: hub.address: {e}"))?;
        Ok(HubSettings {
            ca_pem,
            token,
            endpoints,
        })
    }
}

impl Daemon {
    /// Opens the store, connects every device, and starts the uploader and the channel runners.
    /// A device that does not answer is waited for in the background ([`crate::retry`]); one
    /// that answers but is not what the configuration says is an error naming it and where.
    pub async fn start(config: Config, origin: &str, clock: Clock) -> anyhow::Result<Daemon> {
        let outbox = Outbox::open_with(config.store.outbox_options(config.daemon.id.clone()))?;
        for alarm in outbox.startup_alarms() {
            tracing::error!("{alarm}");
        }
        // The hub's settings first: an error in them must not come after devices were reached.
        let HubSettings {
            ca_pem: hub_ca_pem,
            token: hub_token,
            endpoints,
        } = HubSettings::read(&config, origin)?;
        // The alert store and secrets, also before any device is reached.
        let alerts = Alerts::open(
            &config.alerts,
            &config.alerts_store_path(),
            Origin {
                daemon: config.daemon.name.clone(),
                lab: config.hub.lab.clone().unwrap_or_default(),
            },
        )
        .map_err(|e| anyhow::anyhow!("{origin}: {e:#}"))?;
        let schemas = LabSchemas::new(
            // One hub: a lazy connection to it; several: balanced over those that answer.
            match <[_; 1]>::try_from(endpoints) {
                Ok([one]) => one.connect_lazy(),
                Err(many) => tonic::transport::Channel::balance_list(many.into_iter()),
            },
            config.hub.lab.clone(),
            hub_token.clone(),
            outbox.clone(),
        );
        let mut interrupted: HashMap<String, Checkpoint> = outbox
            .reader()?
            .checkpoints()?
            .into_iter()
            .map(|c| (c.channel_id.clone(), c))
            .collect();
        let acquired_before = outbox.stats().samples_appended.load(Ordering::Acquire);
        let shared = Shared {
            clock,
            outbox: outbox.clone(),
            acquired: Arc::new(Default::default()),
            device_errors: Arc::new(Default::default()),
            reconnects: Arc::new(Default::default()),
            quality: Arc::new(config.quality.0.clone()),
        };
        let (stop_runners, runners_rx) = watch::channel(false);
        let (started, started_rx) = watch::channel(false);
        let (stop_chambers, chambers_rx) = watch::channel(false);
        let mut chamber_tasks = JoinSet::new();
        let (stop_uploader, uploader_rx) = watch::channel(false);
        let mut runners = JoinSet::new();
        // Every device is tried at once: a lab whose devices are all off after a power cut
        // waits one timeout at start, not one per device.
        let tried = join_all(config.chambers.iter().enumerate().map(|(i, c)| {
            let (clock, stop) = (shared.clock.clone(), chambers_rx.clone());
            async move {
                devices::chamber_task(c, &config.limits, clock, stop)
                    .await
                    .map_err(|e| {
                        let what =
                            devices::describe("chamber", &c.name, c.address, c.port.as_deref());
                        anyhow::anyhow!("{origin}: chamber[{i}]: {what}: {e}")
                    })
            }
        }))
        .await;
        let mut chambers = BTreeMap::new();
        let mut first_readings = Vec::new();
        // Refusals of every kind, reported together once every device was tried.
        let mut refusals = Vec::new();
        for (c, task) in config.chambers.iter().zip(tried) {
            match task {
                Ok(task) => {
                    chamber_tasks.spawn(task.run);
                    if task.connected {
                        first_readings.push(task.link.watch());
                    }
                    chambers.insert(c.name.clone(), task.link);
                }
                Err(e) => refusals.push(e.to_string()),
            }
        }
        // Stepped channels by device, in configuration order: the channels of one device connect
        // one after the other (an instrument may take one session at a time), devices at once.
        let mut stages: BTreeMap<&str, Vec<StageStart<'_>>> = BTreeMap::new();
        let mut channels = Vec::new();
        // Native channels by cycler: one connection and one runner per cycler.
        let mut cyclers: BTreeMap<String, (usize, Vec<PendingNative>)> = BTreeMap::new();
        for (i, ch) in config.channels.iter().enumerate() {
            let device = config
                .device(ch.device_name())
                .ok_or_else(|| anyhow::anyhow!("{origin}: channel[{i}] names an unknown device"))?;
            let index = config
                .devices
                .iter()
                .position(|d| d.name == device.name)
                .unwrap_or(0);
            let spec = ChannelSpec {
                id: ch.id.clone(),
                poll_interval_s: ch.poll_interval_ms as f64 / 1000.0,
                comm_timeout: Duration::from_millis(ch.comm_timeout_ms),
                limits: config.limits.stricter(&ch.limits).to_safety(),
                commit_interval: Duration::from_millis(config.store.commit_interval_ms),
                chamber: config
                    .chamber_of(&ch.id)
                    .and_then(|c| chambers.get(&c.name))
                    .cloned(),
                equipment: config.equipment_of(ch),
            };
            let (live_tx, live) = watch::channel(ChannelSnapshot {
                channel_id: ch.id.clone(),
                state: "idle".into(),
                // Unknown until read: a stepped channel reads it with its output off, a cycler's
                // channel once a test runs.
                voltage_v: f64::NAN,
                temperature_c: f64::NAN,
                ambient_temperature_c: f64::NAN,
                last_full_discharge_ah: f64::NAN,
                last_full_coulombic_efficiency: f64::NAN,
                ..Default::default()
            });
            let (cmds, cmd_rx) = mpsc::channel(16);
            let start = ChannelStart {
                spec,
                shared: shared.clone(),
                live: live_tx,
                resume: interrupted
                    .remove(&ch.id)
                    .map(|c| (c, config.daemon.resume)),
                cmds: cmd_rx,
                stop: runners_rx.clone(),
                started: started_rx.clone(),
            };
            channels.push(ChannelHandle {
                id: ch.id.clone(),
                cmds,
                live,
            });
            if device.family.is_native() {
                let number = ch.id.rsplit_once('/').and_then(|(_, n)| n.parse().ok());
                cyclers
                    .entry(device.name.clone())
                    .or_insert_with(|| (index, Vec::new()))
                    .1
                    .push(PendingNative {
                        start,
                        number: number.unwrap_or(0),
                    });
                continue;
            }
            let load = ch.load.as_deref().and_then(|name| config.device(name));
            stages
                .entry(device.name.as_str())
                .or_default()
                .push((index, device, load, start));
        }
        // Each runner starts as soon as its device answered (an output left on by a crash is
        // switched off at once), not when the slowest device has been tried; interrupted tests
        // resume once every device was tried (`started`).
        let (ready, mut ready_rx) = mpsc::unbounded_channel::<BoxFuture<'static, ()>>();
        let mut tries: Vec<BoxFuture<'_, Vec<anyhow::Error>>> = Vec::new();
        for (_, group) in stages {
            let ready = ready.clone();
            tries.push(
                async move {
                    // A device found down is not asked again for each of its channels.
                    let mut down: Option<String> = None;
                    for (index, device, load, start) in group {
                        match devices::channel_task(device, load, start, down.as_deref()).await {
                            Ok((run, not_answering)) => {
                                down = not_answering;
                                let _ = ready.send(run);
                            }
                            Err(e) => return vec![device_error(origin, index, device, e)],
                        }
                    }
                    Vec::new()
                }
                .boxed(),
            );
        }
        for (name, (index, pending)) in cyclers {
            let Some(device) = config.device(&name) else {
                continue;
            };
            let (ready, shared, stop) = (ready.clone(), shared.clone(), runners_rx.clone());
            tries.push(
                async move {
                    match devices::cycler_task(device, pending, shared, stop).await {
                        Ok(run) => {
                            let _ = ready.send(run);
                            Vec::new()
                        }
                        Err(e) => vec![device_error(origin, index, device, e)],
                    }
                }
                .boxed(),
            );
        }
        drop(ready);
        let (errors, ()) = futures::join!(join_all(tries), async {
            while let Some(run) = ready_rx.recv().await {
                runners.spawn(run);
            }
        });
        refusals.extend(errors.into_iter().flatten().map(|e| e.to_string()));
        if !refusals.is_empty() {
            // The runners already started switch their outputs off and end, keeping their
            // tests' checkpoints for a corrected configuration; the chambers hear the ends.
            let _ = stop_runners.send(true);
            let ended = async {
                while runners.join_next().await.is_some() {}
                let _ = stop_chambers.send(true);
                while chamber_tasks.join_next().await.is_some() {}
            };
            if tokio::time::timeout(STOP_AFTER_FAILED_START, ended)
                .await
                .is_err()
            {
                tracing::error!("some devices did not confirm their outputs off in time");
            }
            let _ = outbox.flush().await;
            anyhow::bail!("{}", refusals.join("\n"));
        }
        // Tests resume with each answering chamber's reading (or its verdict that it is unsafe,
        // at most its communication timeout away), not with one that said nothing yet.
        join_all(
            first_readings
                .iter_mut()
                .map(|state| state.wait_for(|s| s.unread.is_none() || s.fault.is_some())),
        )
        .await;
        let _ = started.send(true);
        for (channel, c) in interrupted {
            // Its channel is gone from the configuration: the test cannot continue anywhere.
            tracing::error!(
                "test {} was running on channel {channel}, which the configuration no longer has; \
                 it stays interrupted until that channel is configured again",
                c.test_id
            );
        }
        let status = Arc::new(UploaderStatus::default());
        let chambers: Vec<ChamberLink> = chambers.into_values().collect();
        let (stop_alerts, alerts_rx) = watch::channel(false);
        let mut alert_tasks = JoinSet::new();
        if let Some(alerts) = &alerts {
            let watchers: Vec<_> = channels.iter().map(|h| h.live.clone()).collect();
            let observe = observer(
                watchers.clone(),
                chambers.clone(),
                Arc::clone(&status),
                outbox.clone(),
            );
            alert_tasks.spawn(alerts.clone().monitor(observe, watchers, alerts_rx.clone()));
            alert_tasks.spawn(alerts.clone().deliver(alerts_rx));
        }
        let uploader = tokio::spawn(uploader::run(
            UploaderConfig {
                hub_addresses: config.hub.address.list().to_vec(),
                hub_ca_pem,
                hub_token,
                daemon_name: config.daemon.name.clone(),
                hub_lab: config.hub.lab.clone(),
                window: config.hub.window,
            },
            outbox,
            Arc::clone(&status),
            uploader_rx,
        ));
        Ok(Daemon {
            inner: Arc::new(Inner {
                config,
                shared,
                acquired_before,
                channels,
                chambers,
                uploader: status,
                schemas,
                stop_runners,
                stop_chambers,
                stop_uploader,
                alerts,
                stop_alerts,
                tasks: Mutex::new(Some(Tasks {
                    runners,
                    chambers: chamber_tasks,
                    uploader,
                    alerts: alert_tasks,
                })),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn outbox(&self) -> &Outbox {
        &self.inner.shared.outbox
    }

    /// Parses the protocol, checks the metadata, and starts the test on `channel_id`.
    pub async fn start_test(
        &self,
        channel_id: &str,
        protocol_yaml: &str,
        origin: &str,
        metadata: HashMap<String, String>,
    ) -> Result<String, StartError> {
        self.start_test_with(
            channel_id,
            protocol_yaml,
            origin,
            metadata,
            &BTreeMap::new(),
        )
        .await
        .map(|started| started.test_id)
    }

    /// [`Daemon::start_test`] with values for the protocol's parameters (`--param`); C-rates
    /// resolve against the cell's nominal capacity unless `params` gives one
    /// ([`crate::params`]).
    pub async fn start_test_with(
        &self,
        channel_id: &str,
        protocol_yaml: &str,
        origin: &str,
        metadata: HashMap<String, String>,
        params: &BTreeMap<String, String>,
    ) -> Result<Started, StartError> {
        let handle = self
            .inner
            .channel(channel_id)
            .ok_or_else(|| StartError::NoSuchChannel(channel_id.into()))?;
        check_metadata(&metadata)?;
        let (plan, notes) = plan_for_start(protocol_yaml, origin, &metadata, params)?;
        self.inner.schemas.check(&metadata).await?;
        let (reply, answer) = oneshot::channel();
        let test = Box::new(TestRequest {
            plan,
            source: protocol_yaml.into(),
            origin: origin.into(),
            metadata,
            notes: notes.clone(),
        });
        handle
            .cmds
            .send(ChannelCmd::Start { test, reply })
            .await
            .map_err(|_| StartError::ChannelGone(channel_id.into()))?;
        let test_id = answer
            .await
            .map_err(|_| StartError::ChannelGone(channel_id.into()))??;
        Ok(Started { test_id, notes })
    }

    /// Stops the test on `channel_id`: output off, then recorded as stopped with `reason`.
    pub async fn stop_test(&self, channel_id: &str, reason: &str) -> Result<(), StartError> {
        let handle = self
            .inner
            .channel(channel_id)
            .ok_or_else(|| StartError::NoSuchChannel(channel_id.into()))?;
        let (reply, answer) = oneshot::channel();
        handle
            .cmds
            .send(ChannelCmd::Stop {
                reason: reason.into(),
                reply,
            })
            .await
            .map_err(|_| StartError::ChannelGone(channel_id.into()))?;
        answer
            .await
            .map_err(|_| StartError::ChannelGone(channel_id.into()))?
    }

    /// The channels whose loop did not answer a ping within `within`: stuck (a device call
    /// that never returns, a runner that ended). Empty when every loop is turning; the service
    /// watchdog (systemd's WATCHDOG=1) is fed only then, so a stuck loop gets the daemon
    /// restarted, and the restart switches its output off first.
    pub async fn stuck_channels(&self, within: Duration) -> Vec<String> {
        let answers = self.inner.channels.iter().map(|h| async move {
            let (reply, answer) = oneshot::channel();
            let asked = async {
                h.cmds.send(ChannelCmd::Ping { reply }).await.is_ok() && answer.await.is_ok()
            };
            match tokio::time::timeout(within, asked).await {
                Ok(true) => None,
                _ => Some(h.id.clone()),
            }
        });
        join_all(answers).await.into_iter().flatten().collect()
    }

    /// Every channel's latest snapshot, in id order.
    pub fn snapshots(&self) -> Vec<ChannelSnapshot> {
        self.inner
            .channels
            .iter()
            .map(|h| h.live.borrow().clone())
            .collect()
    }

    pub fn snapshot(&self, channel_id: &str) -> Option<ChannelSnapshot> {
        self.inner
            .channel(channel_id)
            .map(|h| h.live.borrow().clone())
    }

    /// The chambers' links (their state and its changes), in name order.
    pub fn chambers(&self) -> &[ChamberLink] {
        &self.inner.chambers
    }

    /// Receivers that see every channel's changes, for Watch.
    pub fn watchers(&self) -> Vec<watch::Receiver<ChannelSnapshot>> {
        self.inner.channels.iter().map(|h| h.live.clone()).collect()
    }

    pub fn status(&self) -> Status {
        let outbox = self.outbox();
        let stats = outbox.stats();
        let mut alarms = Vec::new();
        let dead = stats.dead_letters.load(Ordering::Acquire);
        if dead > 0 {
            alarms.push(format!(
                "{dead} outbox entries are parked as dead letters (see cyclerctl outbox; \
                 cyclerctl outbox retry requeues them)"
            ));
        }
        if stats.failing.load(Ordering::Acquire) {
            alarms.push(
                "the outbox cannot commit (disk full or I/O error): acquisition is paused".into(),
            );
        } else if !*outbox.space().borrow() {
            alarms.push(format!(
                "the outbox reached store.max_bytes ({} bytes waiting for the hub): stepped \
                 channels are paused",
                stats.pending_bytes.load(Ordering::Acquire)
            ));
        }
        alarms.extend(outbox.startup_alarms().iter().cloned());
        alarms.extend(self.inner.chambers.iter().filter_map(|c| {
            let state = c.state();
            state.fault.clone().or_else(|| state.unread.clone())
        }));
        // Every channel of a cycler that does not answer has the same reason: one line for all.
        let mut offline: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in &self.inner.channels {
            let s = h.live.borrow();
            if s.state == "offline" {
                offline
                    .entry(s.reason.clone())
                    .or_default()
                    .push(h.id.clone());
            }
        }
        for (reason, ids) in offline {
            alarms.push(format!("offline channels {}: {reason}", ids.join(", ")));
        }
        let uploader = &self.inner.uploader;
        let connected = uploader.connected.load(Ordering::Acquire);
        if !connected {
            let last = uploader
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if !last.is_empty() {
                alarms.push(format!("hub unreachable: {last}"));
            }
        }
        Status {
            daemon_id: outbox.identity().daemon_id.clone(),
            store_epoch: outbox.identity().epoch,
            hub_address: self.inner.config.hub.address.to_string(),
            hub_connected: connected,
            backlog_entries: stats.backlog(),
            samples_acquired: self.samples_acquired(),
            samples_acknowledged: stats.samples_acked.load(Ordering::Acquire),
            channels: self.snapshots(),
            alarms,
            alerts: self.alerts_status(),
        }
    }

    /// The alert service, when `[alerts]` has rules.
    pub fn alerts(&self) -> Option<&Alerts> {
        self.inner.alerts.as_ref()
    }

    /// The newest alerts as the control API shows them.
    fn alerts_status(&self) -> Vec<Alert> {
        let Some(alerts) = &self.inner.alerts else {
            return Vec::new();
        };
        alerts
            .recent()
            .into_iter()
            .map(|v| Alert {
                kind: v.alert.kind.name().into(),
                text: v.alert.text,
                channel_id: v.alert.channel,
                test_id: v.alert.test_id,
                raised_unix_s: v.alert.raised_unix_ms as f64 / 1000.0,
                id: v.alert.uuid,
                deliveries: v
                    .deliveries
                    .into_iter()
                    .map(|d| AlertDelivery {
                        target: d.target.name().into(),
                        delivered: d.delivered_unix_ms.is_some(),
                        attempts: d.attempts,
                        last_error: d.last_error,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The outbox's backlog, ages and dead letters.
    pub async fn outbox_status(&self) -> anyhow::Result<OutboxStatus> {
        let outbox = self.outbox().clone();
        let summary = tokio::task::spawn_blocking(move || outbox.reader()?.summary()).await??;
        let outbox = self.outbox();
        Ok(OutboxStatus {
            path: outbox.options().path.display().to_string(),
            pending_entries: summary.pending_entries,
            pending_samples: summary.pending_samples,
            pending_bytes: summary.pending_bytes,
            oldest_pending_age_s: summary.oldest_pending_age_s,
            dead_letters: summary.dead_letters,
            kept_acked: summary.kept_acked,
            file_bytes: summary.file_bytes,
            max_bytes: outbox.options().max_bytes.unwrap_or(0),
            full: !*outbox.space().borrow(),
        })
    }

    /// Failed device reads and links made again, since the daemon started.
    pub fn device_link_counts(&self) -> (u64, u64) {
        let shared = &self.inner.shared;
        (
            shared.device_errors.load(Ordering::Acquire),
            shared.reconnects.load(Ordering::Acquire),
        )
    }

    /// Whether an upload stream to the hub is open now.
    pub fn hub_connected(&self) -> bool {
        self.inner.uploader.connected.load(Ordering::Acquire)
    }

    /// Samples read from devices over the store's life (those it held when this daemon started
    /// and those read since): the span the acknowledged count covers.
    pub fn samples_acquired(&self) -> u64 {
        self.inner.acquired_before + self.inner.shared.acquired.load(Ordering::Acquire)
    }

    /// Waits until no channel runs a test (a paused test still runs, and so does one waiting
    /// for its offline device).
    pub async fn wait_all_done(&self) {
        for h in self.inner.channels.iter() {
            let mut live = h.live.clone();
            let _ = live
                .wait_for(|s| match s.state.as_str() {
                    "running" | "paused" => false,
                    "offline" => s.test_id.is_empty(),
                    _ => true,
                })
                .await;
        }
    }

    /// Shuts down: every output off (stepped tests are left interrupted, their checkpoints kept
    /// for the next start; native ones go on on their cyclers), everything queued committed, then
    /// up to `drain` for the hub to acknowledge the backlog.
    pub async fn shutdown(&self, drain: Duration) -> Summary {
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut tasks) = tasks else {
            return self.summary();
        };
        let _ = self.inner.stop_runners.send(true);
        while tasks.runners.join_next().await.is_some() {}
        let _ = self.inner.stop_chambers.send(true);
        while tasks.chambers.join_next().await.is_some() {}
        let _ = self.outbox().flush().await;
        let _ = self
            .outbox()
            .caught_up(tokio::time::Instant::now() + drain)
            .await;
        let _ = self.inner.stop_uploader.send(true);
        let _ = tasks.uploader.await;
        let _ = self.inner.stop_alerts.send(true);
        while tasks.alerts.join_next().await.is_some() {}
        self.summary()
    }

    pub fn summary(&self) -> Summary {
        let stats = self.outbox().stats();
        Summary {
            channels: self.inner.channels.len(),
            samples_acquired: stats.samples_appended.load(Ordering::Acquire),
            samples_acknowledged: stats.samples_acked.load(Ordering::Acquire),
        }
    }
}

/// What the alert rules look at, read from the daemon's parts.
fn observer(
    channels: Vec<watch::Receiver<ChannelSnapshot>>,
    chambers: Vec<ChamberLink>,
    uploader: Arc<UploaderStatus>,
    outbox: Outbox,
) -> impl FnMut() -> Observation + Send + 'static {
    move || {
        let stats = outbox.stats();
        Observation {
            channels: channels.iter().map(|c| c.borrow().clone()).collect(),
            chambers: chambers
                .iter()
                .map(|c| (c.name().to_string(), c.state().fault.clone()))
                .collect(),
            hub_connected: uploader.connected.load(Ordering::Acquire),
            hub_error: uploader
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            outbox_pending_bytes: stats.pending_bytes.load(Ordering::Acquire),
            outbox_quota: outbox.options().max_bytes,
        }
    }
}
