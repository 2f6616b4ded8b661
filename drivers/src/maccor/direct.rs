//! [`MaccorDirect`]: one tester channel in MacNet direct mode as a [`PowerStage`], stepped by
//! cyclerd's engine: (6,7) to enter, (6,8) outputs at least 100 ms apart, re-sent to keep the
//! tester's watchdog fed.

use super::client::{KnownTest, MaccorClient};
use super::convert::refused_unless_ok;
use super::wire::{self, DirectStart, Mode, Output, ResultKind, stat};
use crate::cycler::ChannelAddr;
use crate::stage::{self, PowerStage};
use crate::{Clock, DriverError};
use cyclerd_protocols::Command;

/// Margin added to the 100 ms output spacing, against rounding in the tester's tick clock.
const OUTPUT_SPACING_MARGIN_S: f64 = 0.001;
/// How often an output refused as "too fast" or "not ready" is tried again.
const OUTPUT_ATTEMPTS: usize = 3;

/// How a [`MaccorDirect`] stage drives its channel.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectConfig {
    /// The channel's current rating, A. Direct mode needs every limit "active" (inside the
    /// channel's range) from (6,7) on, so the ratings stand for "no limit" instead of an
    /// out-of-range value.
    pub max_current_a: f32,
    /// The channel's voltage rating, V (the (6,7) voltage limit).
    pub max_voltage_v: f32,
    /// The channel's power rating, W (the power limit of current and voltage outputs).
    pub max_power_w: f32,
    /// Current range of every output, 1 to 4 (default 4, the highest).
    pub current_range: u8,
    /// Clock seconds after which a read re-sends the last output, to keep the tester's
    /// `MacNetDirectModeWD` watchdog fed; keep it below the watchdog's setting. Default 1 s.
    pub keepalive_s: f64,
    /// Seconds between records in the tester's own data file of the direct-mode test (0 for
    /// none). Default 1 s.
    pub record_every_s: f32,
}

impl DirectConfig {
    /// A channel rated `max_current_a`, `max_voltage_v`, with the defaults above.
    pub fn new(max_current_a: f32, max_voltage_v: f32) -> DirectConfig {
        DirectConfig {
            max_current_a,
            max_voltage_v,
            max_power_w: max_current_a * max_voltage_v,
            current_range: 4,
            keepalive_s: 1.0,
            record_every_s: 1.0,
        }
    }
}

/// One tester channel in MacNet direct mode, stepped by cyclerd's engine.
pub struct MaccorDirect {
    client: MaccorClient,
    chan: u16,
    config: DirectConfig,
    clock: Clock,
    /// The command last applied and the output it became: a repeated command keeps its
    /// output (a CV step keeps the direction it started in).
    applied: Option<(Command, Output)>,
    /// The output the tester last accepted.
    sent: Option<Output>,
    /// Clock time of the last direct-mode command's reply, for the 100 ms spacing and the
    /// keep-alive.
    sent_at: Option<f64>,
    /// Latest voltage read, to choose the direction of a CV step that follows a rest.
    voltage_v: f64,
}

impl MaccorDirect {
    /// Starts a direct-mode test named `test` on `channel` (6,7), output at 0 A. The name is
    /// shortened like [`crate::cycler::Cycler::start`] does.
    pub async fn enter(
        mut client: MaccorClient,
        channel: ChannelAddr,
        test: &str,
        config: DirectConfig,
        clock: Clock,
    ) -> Result<MaccorDirect, DriverError> {
        let chan = client.chan(channel)?;
        let name = wire::short_name(test);
        // The open client could not start in rest; charge at 0 A is the same output.
        let output = Output {
            current_a: 0.0,
            voltage_v: config.max_voltage_v,
            power_w: config.max_power_w,
            resistance_ohm: 0.0,
            range: config.current_range,
            mode: Mode::Charge,
        };
        let start = DirectStart {
            test_name: name.clone(),
            output,
            record_every_s: config.record_every_s,
            record_dv: 0.0,
            record_di: 0.0,
        };
        let during = "starting direct mode (6,7)";
        let code = client
            .command_json(wire::DIRECT_START, chan, start.to_json(), during)
            .await?;
        let sent_at = clock.now();
        refused_unless_ok(
            code,
            ResultKind::Command,
            during,
            &format!(
                "direct-mode test {test:?} (named {name:?} on the tester) on channel {chan}: "
            ),
        )?;
        client.tests.insert(chan, KnownTest { name, ended: false });
        Ok(MaccorDirect {
            client,
            chan,
            config,
            clock,
            applied: None,
            sent: Some(output),
            sent_at: Some(sent_at),
            voltage_v: 0.0,
        })
    }

    /// Ends the direct-mode test (6,5), switching the channel off.
    pub async fn finish(&mut self) -> Result<(), DriverError> {
        self.client
            .reset(self.chan, "ending direct mode (6,5)")
            .await
    }

    /// The (6,8) output for `command`.
    fn output_for(&self, command: &Command) -> Output {
        let c = &self.config;
        let out = |current_a: f64, voltage_v: f64, power_w: f32, mode| Output {
            current_a: current_a as f32,
            voltage_v: voltage_v as f32,
            power_w,
            resistance_ohm: 0.0,
            range: c.current_range,
            mode,
        };
        match *command {
            Command::Off | Command::Chamber { .. } => Output::rest(c.current_range),
            Command::Current {
                amps, voltage_max, ..
            } if amps >= 0.0 => out(amps, voltage_max, c.max_power_w, Mode::Charge),
            Command::Current {
                amps, voltage_min, ..
            } => out(-amps, voltage_min, c.max_power_w, Mode::Discharge),
            // A channel regulates in one direction at a time: a hold keeps the direction of the
            // step before it (the CV phase of a charge charges); from rest, the direction
            // toward the target.
            Command::Voltage { volts, current_max } => {
                let mode = match self.applied.map(|(_, o)| o.mode) {
                    Some(m @ (Mode::Charge | Mode::Discharge)) => m,
                    _ if self.voltage_v <= volts => Mode::Charge,
                    _ => Mode::Discharge,
                };
                let amps = current_max.min(f64::from(c.max_current_a));
                out(amps, volts, c.max_power_w, mode)
            }
            Command::Power {
                watts, voltage_max, ..
            } if watts >= 0.0 => out(
                f64::from(c.max_current_a),
                voltage_max,
                watts as f32,
                Mode::Charge,
            ),
            Command::Power {
                watts, voltage_min, ..
            } => out(
                f64::from(c.max_current_a),
                voltage_min,
                -watts as f32,
                Mode::Discharge,
            ),
        }
    }

    /// Waits until 100 ms of clock time have passed since the last command's reply.
    async fn pace(&self) {
        if let Some(at) = self.sent_at {
            let wait =
                at + wire::MIN_OUTPUT_INTERVAL_S + OUTPUT_SPACING_MARGIN_S - self.clock.now();
            if wait > 0.0 {
                self.clock.sleep(wait).await;
            }
        }
    }

    /// Sends `output` over binary (6,8), never sooner than 100 ms after the last command.
    async fn send(&mut self, output: Output) -> Result<(), DriverError> {
        let during = "setting the direct-mode output (6,8)";
        for attempt in 1..=OUTPUT_ATTEMPTS {
            self.pace().await;
            let code = self
                .client
                .command_binary(&output.to_frame(self.chan), during)
                .await?;
            self.sent_at = Some(self.clock.now());
            match code {
                wire::direct_result::OK => {
                    self.sent = Some(output);
                    return Ok(());
                }
                // The tester's tick clock or its start-up may disagree with ours: try again
                // after another interval.
                wire::direct_result::TOO_FAST | wire::direct_result::NOT_READY
                    if attempt < OUTPUT_ATTEMPTS => {}
                other => {
                    return refused_unless_ok(
                        other,
                        ResultKind::DirectOutput,
                        during,
                        &format!("channel {}: ", self.chan),
                    );
                }
            }
        }
        Ok(())
    }

    fn keepalive_due(&self) -> bool {
        self.sent_at
            .is_some_and(|at| self.clock.now() - at >= self.config.keepalive_s)
    }
}

impl PowerStage for MaccorDirect {
    async fn read(&mut self) -> Result<stage::Reading, DriverError> {
        // Read before the keep-alive re-sends our output: an output another client set since
        // the last poll shows in this reading instead of being quietly overwritten.
        let r = self.client.reading(self.chan).await?;
        if self.keepalive_due()
            && let Some(output) = self.sent
        {
            self.send(output).await?;
        }
        self.voltage_v = f64::from(r.voltage_v);
        Ok(stage::Reading {
            voltage_v: f64::from(r.voltage_v),
            current_a: r.signed_current(),
            temperature_c: None,
            output_on: r.stat == stat::ACTIVE
                && matches!(r.rf1, wire::rf1::CHARGE | wire::rf1::DISCHARGE),
            alarm: r.stat == stat::PROBLEM || r.rf1 == wire::rf1::PROBLEM,
            setpoints: None,
        })
    }

    async fn apply(&mut self, command: &Command) -> Result<(), DriverError> {
        let output = match self.applied {
            Some((c, o)) if c == *command => o,
            _ => self.output_for(command),
        };
        if self.sent != Some(output) || self.keepalive_due() {
            self.send(output).await?;
        }
        self.applied = Some((*command, output));
        Ok(())
    }

    async fn output_off(&mut self) -> Result<(), DriverError> {
        let rest = Output::rest(self.config.current_range);
        self.send(rest).await?;
        self.applied = Some((Command::Off, rest));
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        self.client.reconnect_links().await
    }
}
