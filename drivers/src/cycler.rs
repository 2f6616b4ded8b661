//! The dedicated-cycler trait: what a native channel runner needs from a cycler that runs
//! schedules itself (Neware BTS, Maccor MacNet, Arbin CTI).
//!
//! The cycler owns the test: it executes the schedule, logs records with its own index, and
//! keeps them. The daemon delivers the schedule, starts it, follows the channel, and downloads
//! records from the index after the last one it stored, so a gap of any length (a cut link, a
//! daemon restart) is filled from the device's own log with nothing twice.

use crate::DriverError;
use std::future::Future;

/// Where a channel sits on a cycler: vendors address channels with several numbers (Neware:
/// device id, sub-device id and channel id), kept here as the vendor gives them so replies can
/// be matched by their own index fields and never by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelAddr {
    /// Unit or device number on the server (Neware `devid`; 0 where the vendor has none).
    pub unit: u32,
    /// Sub-unit (Neware `subdevid`; 0 where the vendor has none).
    pub sub_unit: u32,
    /// Channel number as the vendor counts it (Neware `chlid` from 1, MacNet and CTI from 0).
    pub channel: u32,
}

impl std::fmt::Display for ChannelAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.unit, self.sub_unit, self.channel)
    }
}

/// What a cycler channel is doing, in the vendor-neutral terms the runner acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelState {
    /// No test on the channel (or a finished one cleared away).
    Idle,
    /// A test is executing.
    Running,
    /// Paused or suspended by an operator or the schedule; may be resumed.
    Paused,
    /// The schedule ran to its end.
    Finished,
    /// Stopped by an operator or a stop command before its end.
    Stopped,
    /// The cycler's protection tripped or it reports a problem; `reason` is the vendor's own
    /// code or text, for the event record.
    Fault { reason: String },
}

impl ChannelState {
    /// Whether the test is over and no more records will come.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ChannelState::Finished | ChannelState::Stopped | ChannelState::Fault { .. }
        )
    }
}

/// One channel as the cycler reports it now.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStatus {
    pub addr: ChannelAddr,
    pub state: ChannelState,
    /// The cycler's name for the test on the channel (test id, test name or barcode), so a
    /// restarted daemon recognises its own test before re-attaching.
    pub test: Option<String>,
    /// Index of the newest record the cycler has logged for this test (records count from 1),
    /// 0 when none yet.
    pub last_record: u64,
}

/// One logged record, in cyclerd's units and sign (A positive into the cell, V, s, Ah, Wh).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    /// The cycler's own record index for this test, from 1, without gaps: the sequence number
    /// the daemon stores the sample under, so a re-download can never duplicate it.
    pub index: u64,
    /// Seconds since the test started, as the cycler counts them.
    pub test_time_s: f64,
    pub voltage_v: f64,
    pub current_a: f64,
    /// Cell temperature from the channel's auxiliary input, when one is wired.
    pub temperature_c: Option<f64>,
    /// The cycler's step number (as in its schedule, from 1) and cycle number (from 1).
    pub step: u32,
    pub cycle: u32,
    /// Charge and energy counters as the cycler logs them (of the step or the test, as the
    /// vendor does).
    pub capacity_ah: f64,
    pub energy_wh: f64,
}

/// A schedule compiled for the cycler, ready to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// File name the cycler will know it by, with the vendor's extension (e.g. `cccv.xml`,
    /// `CCCV.000`, `cccv.sdu`).
    pub file_name: String,
    /// The schedule text in the vendor's format.
    pub text: String,
}

/// A dedicated cycler the daemon follows. Small required core, then optional capabilities
/// with defaults that a vendor overrides where it can do more; futures are `Send` so a runner
/// can live on any worker.
pub trait Cycler: Send {
    /// The channels the cycler has, as it numbers them.
    fn channels(&mut self) -> impl Future<Output = Result<Vec<ChannelAddr>, DriverError>> + Send;
    /// The status of each channel in `channels`, in the same order, each matched to its
    /// request by the reply's own index fields (a reply for another channel is an error).
    fn status(
        &mut self,
        channels: &[ChannelAddr],
    ) -> impl Future<Output = Result<Vec<ChannelStatus>, DriverError>> + Send;
    /// Delivers `schedule` the way this vendor needs it and starts it on `channel` as a test
    /// named `test` (unique per start; the client shortens it to what the vendor allows).
    fn start(
        &mut self,
        channel: ChannelAddr,
        schedule: &Schedule,
        test: &str,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops the test on `channel` (the cycler switches the output off).
    fn stop(
        &mut self,
        channel: ChannelAddr,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Up to `max` records of the current test on `channel`, from record index `from`
    /// (inclusive, counting from 1), oldest first. Fewer (or none) when the log ends sooner.
    fn records(
        &mut self,
        channel: ChannelAddr,
        from: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Record>, DriverError>> + Send;
    /// Re-establishes a lost link, logging in again where the vendor needs it.
    fn reconnect(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Optional: the cell temperature on `channel` now, degC, read from the channel's
    /// auxiliary input, so the daemon can supervise temperature terminations on cyclers whose
    /// records carry none ([`Record::temperature_c`] is `None`). `Ok(None)` when there is no
    /// reading: no input wired, or the cycler cannot tell. The default is `Ok(None)`; cyclers
    /// whose records already carry the temperature keep it.
    fn cell_temperature(
        &mut self,
        channel: ChannelAddr,
    ) -> impl Future<Output = Result<Option<f64>, DriverError>> + Send {
        let _ = channel;
        std::future::ready(Ok(None))
    }
}
