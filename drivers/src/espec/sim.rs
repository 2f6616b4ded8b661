//! A simulated Espec P300 controller on a TCP listener or a pseudo-terminal, moving a
//! chamber's air with a [`ThermalModel`].
//!
//! It keeps what a driver depends on: `ROM?` / `TYPE?` identify it, `MON?` gives temperature,
//! humidity, mode and alarm count in one line, commands are answered `OK:` + the command (the
//! facts leave the real text open), and refusals use the controller's reasons: `CMD ERR` for
//! an unknown request, `PARA ERR` for a bad parameter, `DATA OUT OF RANGE` for a set point or
//! limit outside the chamber's range. With an RS-485 address configured it answers only
//! requests carrying it, keeps silent for other addresses (another controller on the bus) and
//! answers `ADDR ERR` to requests without one (an interpretation). Programs are not
//! simulated: `MODE,RUN n` gets `PARA ERR`.
//!
//! It answers every query Espec's own Python library (chamberconnectlibrary, its P300 class
//! driven by the `Espec` controller class) sends for a temperature chamber, in the form that
//! library parses: `ROM?`, `TEMP PTC?` (refused `CONT NOT READY-1`: no product control, which
//! is how the library learns it), `HUMI?` (likewise without humidity), `TEMP?`,
//! `CONSTANT SET?,TEMP` (`25.0,ON`) and `,HUMI`/`,REF`/`,RELAY`/`,PTC`, `MODE?` and
//! `MODE?,DETAIL`, `MON?` and `MON?,DETAIL`, `ALARM?`, `%?` (heater output) and `RELAY?`.
//! Its date, time, timers and programs are not simulated.
//!
//! The air moves to [`Clock::now`] on every request and handle call. Faults are injected
//! through the [`SimHandle`]: a cut link (on the network open connections close and new ones
//! are closed on arrival; on a serial line requests and replies are lost), an alarm (reported
//! as a code by `ALARM?` and counted by `MON?`), a runaway heater or cooler, and refused
//! requests.
//!
//! [`ThermalModel`]: crate::chamber::thermal::ThermalModel

use super::wire::{self, ConstantItem, LoopStatus, Mode, Monitor, Na, Request, TypeInfo};
use crate::Clock;
use crate::chamber::sim::{ChamberSim, ChamberState, SimCore, chamber_handle_methods};
use crate::chamber::thermal::{Air, ROOM_C, ThermalParams};
use crate::transport::Endpoint;
pub use crate::transport::SimPort;
use crate::transport::lock;
use crate::transport::network::read_until_unless_cut;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{oneshot, watch};

/// What the simulated chamber is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How the controller moves the air; its range bounds set points and limits.
    pub thermal: ThermalParams,
    /// The air inside, shared with the simulated cells placed in the chamber.
    pub air: Air,
    /// The `ROM?` reply.
    pub rom: String,
    /// The controller as `TYPE?` names it.
    pub controller: String,
    /// Relative humidity the chamber reports, %, held constant; `None` for a
    /// temperature-only chamber (empty humidity field in `MON?`, `HUMI?` refused).
    pub humidity_pct: Option<f64>,
    /// The RS-485 address the controller answers to; `None` answers every request, with an
    /// address or without.
    pub address: Option<u8>,
}

impl SimConfig {
    /// A temperature-only P300 bench-top chamber ([`ThermalParams::default`]) acting on
    /// `air`, without an address.
    pub fn new(air: Air) -> SimConfig {
        SimConfig {
            thermal: ThermalParams::default(),
            air,
            rom: "P300 VER 1.10 (simulated)".into(),
            controller: "P300".into(),
            humidity_pct: None,
            address: None,
        }
    }

    /// The same in air at the room temperature, for a chamber with nothing shared.
    pub fn standalone() -> SimConfig {
        SimConfig::new(Air::new(ROOM_C))
    }
}

/// The controller's state behind every connection.
struct Controller {
    /// The air, the alarm and refused requests (refused with a reason).
    core: SimCore<Na>,
    /// What the chamber is (its `thermal` and `air` live on in the core's model).
    config: SimConfig,
    /// What `MON?` and `MODE?` report; the model regulates while it is constant.
    mode: Mode,
    /// Upper and lower alarm limits, degC (`TEMP,H..`, `TEMP,L..`), reported by `TEMP?`.
    limits_c: (f64, f64),
}

impl ChamberState for Controller {
    type Refusal = Na;

    fn core(&mut self) -> &mut SimCore<Na> {
        &mut self.core
    }
}

impl Controller {
    /// A controller in standby, its limits at the ends of the range, at clock time now.
    fn new(config: SimConfig, clock: Clock) -> Controller {
        let (lo, hi) = config.thermal.range_c;
        Controller {
            core: SimCore::new(
                config.thermal.clone(),
                config.air.clone(),
                clock,
                Na::ProtectOn,
            ),
            config,
            mode: Mode::Standby,
            limits_c: (hi, lo),
        }
    }

    /// The alarm codes raised now, reported by `ALARM?` and counted by `MON?`: the handle's
    /// alarm with commas and line breaks as spaces, so the reply stays one line of fields.
    fn alarms(&self) -> Vec<String> {
        self.core
            .alarm()
            .map(|code| code.replace([',', '\r', '\n'], " ").trim().to_string())
            .filter(|code| !code.is_empty())
            .into_iter()
            .collect()
    }

    /// The dry heater's output, %: an interpretation (the model has no heater), proportional
    /// to how far the air is below the set point while regulating, 0 otherwise.
    fn heater_pct(&self, temperature_c: f64) -> f64 {
        if !self.mode.regulating() {
            return 0.0;
        }
        ((self.core.model.set_point_c() - temperature_c) * 10.0).clamp(0.0, 100.0)
    }

    /// Answers one request line; `None` when it is addressed to another controller.
    fn handle(&mut self, line: &str) -> Option<String> {
        self.core.advance();
        let (address, body) = match wire::split_address(line) {
            Ok(split) => split,
            Err(na) => return Some(wire::encode_refusal(&na)),
        };
        match (self.config.address, address) {
            (Some(mine), Some(theirs)) if mine != theirs => return None,
            (Some(_), None) => return Some(wire::encode_refusal(&Na::AddrErr)),
            _ => {}
        }
        if let Some(na) = self.core.refusal() {
            return Some(wire::encode_refusal(&na));
        }
        let reply = Request::parse(body).and_then(|request| self.execute(request, body.trim()));
        Some(reply.unwrap_or_else(|na| wire::encode_refusal(&na)))
    }

    fn execute(&mut self, request: Request, body: &str) -> Result<String, Na> {
        let (lo, hi) = self.core.model.params.range_c;
        let temperature_c = self.core.model.temperature_c();
        Ok(match request {
            Request::Rom => self.config.rom.clone(),
            Request::Type => wire::encode_type(&TypeInfo {
                dry_sensor: "T".into(),
                wet_sensor: self.config.humidity_pct.map(|_| "T".into()),
                controller: self.config.controller.clone(),
                max_c: hi,
            }),
            Request::Mode { .. } => wire::encode_mode(self.mode),
            Request::Monitor { .. } => wire::encode_monitor(&Monitor {
                temperature_c,
                humidity_pct: self.config.humidity_pct,
                mode: self.mode,
                alarms: self.alarms().len() as u32,
            }),
            Request::Temperature => wire::encode_loop(&LoopStatus {
                process: temperature_c,
                set_point: Some(self.core.model.set_point_c()),
                upper: self.limits_c.0,
                lower: self.limits_c.1,
            }),
            // CONT NOT READY-1 is what third-party drivers report for "no humidity".
            Request::Humidity => match self.config.humidity_pct {
                Some(h) => wire::encode_loop(&LoopStatus {
                    process: h,
                    set_point: Some(h),
                    upper: 100.0,
                    lower: 0.0,
                }),
                None => return Err(Na::ContNotReady(1)),
            },
            Request::Alarms => wire::encode_alarms(&self.alarms()),
            Request::SetMode(setting) => {
                self.mode = setting.mode();
                self.core.model.set_running(self.mode.regulating());
                wire::encode_acceptance(body)
            }
            Request::SetTemperature(t) => {
                let upper = t.upper_c.unwrap_or(self.limits_c.0);
                let lower = t.lower_c.unwrap_or(self.limits_c.1);
                let in_range = |v: f64| (lo..=hi).contains(&v);
                if !(in_range(upper) && in_range(lower) && lower < upper) {
                    return Err(Na::DataOutOfRange);
                }
                if let Some(s) = t.set_point_c {
                    self.core
                        .model
                        .set_set_point(s)
                        .map_err(|_| Na::DataOutOfRange)?;
                }
                self.limits_c = (upper, lower);
                wire::encode_acceptance(body)
            }
            Request::PowerOn => {
                if self.mode == Mode::Off {
                    self.mode = Mode::Standby;
                }
                wire::encode_acceptance(body)
            }
            // The temperature loop is always enabled (Espec's library reads it so too).
            Request::ConstantSet(ConstantItem::Temperature) => {
                wire::encode_constant_set(self.core.model.set_point_c(), true)
            }
            Request::ConstantSet(ConstantItem::Humidity) => match self.config.humidity_pct {
                Some(h) => wire::encode_constant_set(h, true),
                None => return Err(Na::ContNotReady(1)),
            },
            // No refrigeration capacity setting is simulated: the controller chooses.
            Request::ConstantSet(ConstantItem::Refrigeration) => "AUTO".into(),
            // No time-signal relays are simulated: none on.
            Request::ConstantSet(ConstantItem::Relays) | Request::Relays => "0".into(),
            // No product temperature control: CONT NOT READY-1 is Espec's "does not support
            // PTCON/Humidity".
            Request::ConstantSet(ConstantItem::Ptc) | Request::TemperaturePtc => {
                return Err(Na::ContNotReady(1));
            }
            Request::HeaterOutput => {
                let dry = self.heater_pct(temperature_c);
                match self.config.humidity_pct {
                    Some(_) => wire::encode_heater_output(&[dry, 0.0]),
                    None => wire::encode_heater_output(&[dry]),
                }
            }
        })
    }
}

/// Starts simulated Espec controllers.
pub struct EspecSim;

impl EspecSim {
    /// Serves a simulated controller on `port` until the handle drops; the chamber starts in
    /// standby. Must be called inside a tokio runtime.
    pub fn spawn(
        port: impl Into<SimPort>,
        config: SimConfig,
        clock: Clock,
    ) -> io::Result<SimHandle> {
        let state = Arc::new(Mutex::new(Controller::new(config, clock)));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let served = Arc::clone(&state);
        let port = port.into().serve(
            "espec sim",
            wire::DEFAULT_BAUD,
            stop_rx,
            move |stream, link| connection(stream, Arc::clone(&served), link),
        )?;
        Ok(SimHandle {
            endpoint: port.endpoint,
            sim: ChamberSim::new(state, port.link, stop_tx),
        })
    }
}

async fn connection(
    stream: impl AsyncRead + AsyncWrite + Send + 'static,
    state: Arc<Mutex<Controller>>,
    mut link: watch::Receiver<bool>,
) {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    // Inside an overlong line: its rest is dropped up to the next line end.
    let mut skipping = false;
    loop {
        // A cut link (or a dropped handle) ends the connection, closing the socket.
        if !read_until_unless_cut(&mut rd, b'\n', wire::MAX_LINE, &mut buf, &mut link).await {
            return;
        }
        let complete = buf.last() == Some(&b'\n');
        if std::mem::replace(&mut skipping, !complete) || !complete {
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        let Some(reply) = lock(&state).handle(line.trim_end_matches(['\r', '\n'])) else {
            continue;
        };
        let out = format!("{reply}{}", wire::TERMINATOR);
        if wr.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A running controller; dropping it stops its server.
pub struct SimHandle {
    /// Where a client reaches the controller.
    endpoint: Endpoint,
    /// The controller behind every connection, its link and its server.
    sim: ChamberSim<Controller>,
}

impl SimHandle {
    chamber_handle_methods!(Na);

    /// Where a client reaches the controller.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// Whether the controller regulates (constant mode).
    pub fn running(&self) -> bool {
        self.sim.running()
    }

    /// Raises an alarm with the controller's `code` (a number on real controllers; commas
    /// and line breaks become spaces so the reply stays one line of fields), or clears every
    /// alarm with `None`.
    pub fn set_alarm(&self, code: Option<&str>) {
        self.sim.set_alarm(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(config: SimConfig) -> Controller {
        Controller::new(config, Clock::manual())
    }

    #[test]
    fn an_addressed_controller_answers_its_address_only() {
        let mut c = controller(SimConfig {
            address: Some(2),
            ..SimConfig::standalone()
        });
        assert_eq!(c.handle("2,MODE?").as_deref(), Some("STANDBY"));
        assert_eq!(c.handle("3,MODE?"), None);
        assert_eq!(c.handle("MODE?").as_deref(), Some("NA:ADDR ERR"));
        let mut c = controller(SimConfig::standalone());
        assert_eq!(c.handle("7,MODE?").as_deref(), Some("STANDBY"));
    }

    #[test]
    fn commands_are_acknowledged_and_limits_bound_the_set_point() {
        let mut c = controller(SimConfig::standalone());
        assert_eq!(c.handle("TEMP, S45.0").as_deref(), Some("OK:TEMP, S45.0"));
        assert_eq!(c.handle("TEMP?").as_deref(), Some("23.0,45.0,150.0,-40.0"));
        assert_eq!(
            c.handle("TEMP,S200").as_deref(),
            Some("NA:DATA OUT OF RANGE")
        );
        assert_eq!(
            c.handle("TEMP,H10 L20").as_deref(),
            Some("NA:DATA OUT OF RANGE")
        );
        assert_eq!(c.handle("HUMI?").as_deref(), Some("NA:CONT NOT READY-1"));
        assert_eq!(c.handle("MODE,OFF").as_deref(), Some("OK:MODE,OFF"));
        assert_eq!(c.handle("POWER,ON").as_deref(), Some("OK:POWER,ON"));
        assert_eq!(c.handle("MON?").as_deref(), Some("23.0,,STANDBY,0"));
    }

    /// What Espec's own library (chamberconnectlibrary, P300 class) would make of a reply:
    /// `NA:` is an error, anything else a reply split on commas.
    fn library_reads(c: &mut Controller, query: &str) -> Result<Vec<String>, String> {
        let reply = c.handle(query).expect("answered");
        match reply.strip_prefix("NA:") {
            Some(reason) => Err(reason.to_string()),
            None => Ok(reply.split(',').map(str::to_string).collect()),
        }
    }

    #[test]
    fn constant_set_temp_answers_the_set_point_and_on_as_especs_library_reads_it() {
        let mut c = controller(SimConfig::standalone());
        let start = c.handle("CONSTANT SET?,TEMP").unwrap();
        assert!(start.ends_with(",ON"), "{start}");
        assert_eq!(c.handle("TEMP, S45.0").as_deref(), Some("OK:TEMP, S45.0"));
        assert_eq!(c.handle("CONSTANT SET?,TEMP").as_deref(), Some("45.0,ON"));
        assert_eq!(wire::parse_constant_set("45.0,ON"), Ok((45.0, true)));
        assert_eq!(
            c.handle("CONSTANT SET?,NOPE").as_deref(),
            Some("NA:PARA ERR")
        );
    }

    #[test]
    fn constant_set_humi_and_ptc_are_refused_by_a_temperature_only_chamber() {
        let mut c = controller(SimConfig::standalone());
        assert_eq!(
            c.handle("CONSTANT SET?,HUMI").as_deref(),
            Some("NA:CONT NOT READY-1")
        );
        assert_eq!(
            c.handle("CONSTANT SET?,PTC").as_deref(),
            Some("NA:CONT NOT READY-1")
        );
        let mut humid = controller(SimConfig {
            humidity_pct: Some(50.0),
            ..SimConfig::standalone()
        });
        assert_eq!(
            humid.handle("CONSTANT SET?,HUMI").as_deref(),
            Some("50.0,ON")
        );
    }

    #[test]
    fn constant_set_ref_answers_a_mode_word_and_constant_set_relay_no_relays() {
        let mut c = controller(SimConfig::standalone());
        assert_eq!(c.handle("CONSTANT SET?,REF").as_deref(), Some("AUTO"));
        assert_eq!(c.handle("CONSTANT SET?,RELAY").as_deref(), Some("0"));
    }

    #[test]
    fn temp_ptc_is_refused_so_especs_library_finds_no_product_control() {
        let mut c = controller(SimConfig::standalone());
        assert_eq!(
            c.handle("TEMP PTC?").as_deref(),
            Some("NA:CONT NOT READY-1")
        );
    }

    #[test]
    fn heater_output_query_answers_a_count_then_the_dry_output() {
        let mut c = controller(SimConfig::standalone());
        assert_eq!(c.handle("%?").as_deref(), Some("1,0.0"));
        c.handle("TEMP, S45.0");
        c.handle("MODE,CONSTANT");
        assert_eq!(c.handle("%?").as_deref(), Some("1,100.0"));
    }

    #[test]
    fn relay_query_answers_no_relays_on() {
        let mut c = controller(SimConfig::standalone());
        assert_eq!(c.handle("RELAY?").as_deref(), Some("0"));
    }

    #[test]
    fn mode_detail_and_monitor_detail_queries_answer_like_their_plain_forms() {
        let mut c = controller(SimConfig::standalone());
        c.handle("MODE,CONSTANT");
        assert_eq!(c.handle("MODE?,DETAIL").as_deref(), Some("CONSTANT"));
        assert_eq!(c.handle("MON?,DETAIL"), c.handle("MON?"));
    }

    /// Every query the library's `Espec` class sends for a temperature chamber (set point,
    /// reading, mode and run state, alarms, heater, events, controller discovery), checked
    /// the way the library parses each reply.
    #[test]
    fn every_query_especs_library_sends_for_a_temperature_chamber_is_answered_as_it_parses() {
        let mut c = controller(SimConfig::standalone());
        c.core.set_alarm(Some("12"));
        let f = |v: &str| v.parse::<f64>().unwrap();
        // process_controller: ROM? starts with P3 (a P300); TEMP PTC? and HUMI? refused.
        assert!(library_reads(&mut c, "ROM?").unwrap()[0].starts_with("P3"));
        assert!(library_reads(&mut c, "TEMP PTC?").is_err());
        assert!(library_reads(&mut c, "HUMI?").is_err());
        // get_loop_sp / get_loop_pv / get_loop_range: TEMP? and CONSTANT SET?,TEMP.
        let temp = library_reads(&mut c, "TEMP?").unwrap();
        assert_eq!(temp.len(), 4);
        temp.iter().for_each(|v| {
            f(v);
        });
        let constant = library_reads(&mut c, "CONSTANT SET?,TEMP").unwrap();
        assert_eq!(f(&constant[0]), f(&temp[1]));
        assert_eq!(constant[1], "ON");
        // get_loop_mode: MODE?; get_status: MON? (alarm count) and MODE?,DETAIL.
        assert_eq!(library_reads(&mut c, "MODE?").unwrap(), ["STANDBY"]);
        let mon = library_reads(&mut c, "MON?").unwrap();
        f(&mon[0]);
        assert_eq!(mon[3].parse::<u32>().unwrap(), 1);
        assert_eq!(library_reads(&mut c, "MODE?,DETAIL").unwrap(), ["STANDBY"]);
        // get_alarm_status: ALARM? -> count, then integer codes.
        let alarms = library_reads(&mut c, "ALARM?").unwrap();
        let codes: Vec<i64> = alarms[1..].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(codes, [12]);
        // get_loop_power: %? -> dry output in the second field.
        f(&library_reads(&mut c, "%?").unwrap()[1]);
        // get_refrig: CONSTANT SET?,REF; get_event: RELAY? and CONSTANT SET?,RELAY.
        assert_eq!(
            library_reads(&mut c, "CONSTANT SET?,REF").unwrap(),
            ["AUTO"]
        );
        assert_eq!(library_reads(&mut c, "RELAY?").unwrap(), ["0"]);
        assert_eq!(library_reads(&mut c, "CONSTANT SET?,RELAY").unwrap(), ["0"]);
        // Commands the library sends for the temperature loop and constant mode.
        for command in [
            "TEMP, S30.0 H100.0 L-20.0",
            "TEMP, S31.0",
            "TEMP, L-30.0",
            "TEMP, H110.0",
            "MODE,CONSTANT",
            "MODE,STANDBY",
        ] {
            assert!(library_reads(&mut c, command).is_ok(), "{command}");
        }
        assert_eq!(
            library_reads(&mut c, "TEMP?").unwrap()[1..],
            ["31.0", "110.0", "-30.0"]
        );
    }
}
