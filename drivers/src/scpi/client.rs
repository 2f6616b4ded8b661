//! The SCPI driver: a line transport over any byte stream, the dialect-driven client, and the
//! supply + load pair.

use super::wire::{self, Dialect, DialectTable, Identity, MeasureForm, Ratings, Role, ScpiError};
use crate::DriverError;
use crate::stage::{PowerStage, Reading, Setpoints, Written};
use crate::transport::{Endpoint, network};
use cyclerd_protocols::Command;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest reply line accepted; a device that streams garbage without a terminator is a bad
/// reply, not an out-of-memory.
const MAX_LINE: usize = 64 * 1024;
/// Most error-queue entries drained after one batch of writes.
const MAX_ERRORS: usize = 16;

/// Any byte stream a SCPI instrument can sit behind (TCP socket, serial port, pty).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// Boxed stream, so one client type serves every transport.
pub type BoxStream = Box<dyn ByteStream>;

/// LF-terminated (configurable) request/reply lines with a per-query timeout.
///
/// A timed-out query leaves the link unusable (a late reply would be read as the answer to the
/// next query), so it poisons the transport: every later call is a lost link until the caller
/// reconnects.
pub struct LineTransport<S> {
    stream: BufReader<S>,
    /// Appended to every command; replies end at its last byte, a trailing CR is tolerated.
    terminator: String,
    timeout: Duration,
    poisoned: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> LineTransport<S> {
    pub fn new(stream: S, terminator: &str, timeout: Duration) -> LineTransport<S> {
        let terminator = if terminator.is_empty() {
            "\n".to_string()
        } else {
            terminator.to_string()
        };
        LineTransport {
            stream: BufReader::new(stream),
            terminator,
            timeout,
            poisoned: false,
        }
    }

    fn timeout_error(&mut self, during: &'static str) -> DriverError {
        self.poisoned = true;
        DriverError::Timeout {
            during,
            timeout_ms: self.timeout.as_millis() as u64,
        }
    }

    fn check(&self, during: &'static str) -> Result<(), DriverError> {
        if self.poisoned {
            Err(DriverError::Link {
                during,
                message: "an earlier reply did not arrive in time; reconnect first".into(),
            })
        } else {
            Ok(())
        }
    }

    /// Sends one command line (no reply expected).
    pub async fn write(&mut self, line: &str, during: &'static str) -> Result<(), DriverError> {
        self.check(during)?;
        let mut bytes = Vec::with_capacity(line.len() + self.terminator.len());
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(self.terminator.as_bytes());
        let stream = self.stream.get_mut();
        let sent = tokio::time::timeout(self.timeout, async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        })
        .await;
        match sent {
            Err(_) => Err(self.timeout_error(during)),
            Ok(Err(e)) => {
                self.poisoned = true;
                Err(DriverError::Link {
                    during,
                    message: e.to_string(),
                })
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends a query and returns its reply line without the terminator.
    pub async fn query(&mut self, line: &str, during: &'static str) -> Result<String, DriverError> {
        self.write(line, during).await?;
        let end = *self.terminator.as_bytes().last().unwrap_or(&b'\n');
        let mut buf = Vec::new();
        let stream = &mut self.stream;
        let read = tokio::time::timeout(self.timeout, async {
            loop {
                let chunk = stream.fill_buf().await?;
                if chunk.is_empty() {
                    return Ok::<_, std::io::Error>(false);
                }
                match chunk.iter().position(|&b| b == end) {
                    Some(i) => {
                        buf.extend_from_slice(&chunk[..i]);
                        stream.consume(i + 1);
                        return Ok(true);
                    }
                    None => {
                        let n = chunk.len();
                        buf.extend_from_slice(chunk);
                        stream.consume(n);
                        if buf.len() > MAX_LINE {
                            return Err(std::io::Error::other("reply line too long"));
                        }
                    }
                }
            }
        })
        .await;
        match read {
            Err(_) => Err(self.timeout_error(during)),
            Ok(Err(e)) => {
                self.poisoned = true;
                Err(DriverError::Link {
                    during,
                    message: e.to_string(),
                })
            }
            Ok(Ok(false)) => {
                self.poisoned = true;
                Err(DriverError::Link {
                    during,
                    message: "the device closed the connection".into(),
                })
            }
            Ok(Ok(true)) => {
                let text = String::from_utf8_lossy(&buf);
                // Tolerate CRLF (and a multi-byte terminator's leading bytes).
                let text = text.trim_end_matches(['\r', '\n']);
                let text = text
                    .strip_suffix(self.terminator.trim_end_matches(end as char))
                    .unwrap_or(text);
                Ok(text.to_string())
            }
        }
    }

    /// Reads the error queue until it reports no error (at most [`MAX_ERRORS`] entries).
    pub async fn drain_errors(
        &mut self,
        during: &'static str,
    ) -> Result<Vec<ScpiError>, DriverError> {
        let mut errors = Vec::new();
        for _ in 0..MAX_ERRORS {
            let reply = self.query(wire::ERROR_QUERY, during).await?;
            let e = wire::parse_error(&reply).ok_or_else(|| DriverError::BadReply {
                during,
                message: format!("{:?} is not an error-queue entry", reply),
            })?;
            if !e.is_error() {
                break;
            }
            errors.push(e);
        }
        Ok(errors)
    }

    /// Sends the lines, then asks `SYST:ERR?`: a refused command is a [`DriverError::Refused`]
    /// carrying the device's own messages.
    pub async fn write_checked(
        &mut self,
        lines: &[String],
        during: &'static str,
    ) -> Result<(), DriverError> {
        for line in lines {
            self.write(line, during).await?;
        }
        let errors = self.drain_errors(during).await?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DriverError::Refused {
                during,
                message: format!(
                    "{} (after sending {:?})",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                    lines
                ),
            })
        }
    }

    /// `*IDN?`.
    pub async fn identify(&mut self) -> Result<Identity, DriverError> {
        let reply = self
            .query(wire::IDN_QUERY, "identifying the device")
            .await?;
        Ok(wire::parse_idn(&reply))
    }
}

/// Opens the byte stream to an instrument (or any line device: the Espec driver shares it).
pub(crate) async fn open(endpoint: &Endpoint, timeout: Duration) -> Result<BoxStream, DriverError> {
    match endpoint {
        Endpoint::Tcp(addr) => Ok(Box::new(network::connect(*addr, timeout).await?)),
        Endpoint::Serial { path, baud } => Ok(Box::new(Endpoint::open_serial(path, *baud)?)),
    }
}

/// How to talk to one instrument.
#[derive(Debug, Clone)]
pub struct ScpiOptions {
    /// Per-query bound; past it the link counts as lost.
    pub timeout: Duration,
    /// Line terminator of commands ("\n"; some serial instruments want "\r\n").
    pub terminator: String,
    /// Forces a dialect instead of choosing it from `*IDN?`.
    pub dialect: Option<Dialect>,
    /// Replaces the ratings asked from the device or taken from the model table.
    pub ratings: Option<Ratings>,
}

impl Default for ScpiOptions {
    fn default() -> ScpiOptions {
        ScpiOptions {
            timeout: Duration::from_secs(2),
            terminator: "\n".into(),
            dialect: None,
            ratings: None,
        }
    }
}

/// A connected SCPI power stage (supply, SMU or load).
pub struct ScpiClient {
    link: LineTransport<BoxStream>,
    endpoint: Endpoint,
    options: ScpiOptions,
    identity: Identity,
    table: &'static DialectTable,
    ratings: Ratings,
    /// Whether the program applied last can only sink, to sign magnitude readings.
    sinking: bool,
    /// The setpoints the last program left on the device, where the dialect reads them back
    /// ([`wire::setpoint_queries`]); `None` before the first.
    written: Option<Setpoints>,
}

impl ScpiClient {
    /// Notes the setpoints `lines` left on the device, where the dialect reads them back.
    fn remember(&mut self, lines: &[String]) {
        if !wire::setpoint_queries(self.table.dialect).is_empty() {
            self.written = Some(wire::written_setpoints(lines));
        }
    }

    /// Connects, identifies the device, picks its dialect and sets up the session (`*CLS`,
    /// remote lock where the device needs it, ratings).
    pub async fn connect(
        endpoint: impl Into<Endpoint>,
        options: ScpiOptions,
    ) -> Result<ScpiClient, DriverError> {
        let endpoint = endpoint.into();
        let stream = open(&endpoint, options.timeout).await?;
        let mut link = LineTransport::new(stream, &options.terminator, options.timeout);
        let identity = link.identify().await?;
        let dialect = match options.dialect {
            Some(d) => d,
            None => wire::dialect_for(&identity).ok_or_else(|| {
                DriverError::Identity(format!(
                    "no SCPI dialect for {:?} {:?}; set the dialect in the config if it speaks \
                     one of EA PSB, Keithley 24xx, Keysight B2900, ITECH IT6000 or BK 8600",
                    identity.manufacturer, identity.model
                ))
            })?,
        };
        if !dialect.implemented() {
            return Err(DriverError::Unsupported(format!(
                "{} {} speaks the {dialect:?} SCPI dialect, which cyclerd does not drive yet",
                identity.manufacturer, identity.model
            )));
        }
        let mut client = ScpiClient {
            link,
            endpoint,
            table: dialect.table(),
            ratings: Ratings {
                voltage_v: 0.0,
                current_a: 0.0,
                power_w: 0.0,
            },
            identity,
            options,
            sinking: false,
            written: None,
        };
        client.start_session().await?;
        client.ratings = match client.options.ratings {
            Some(r) => r,
            None => client.read_ratings().await?,
        };
        Ok(client)
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn dialect(&self) -> Dialect {
        self.table.dialect
    }

    pub fn ratings(&self) -> Ratings {
        self.ratings
    }

    /// Whether the device can source current, or only sink it.
    pub fn role(&self) -> Role {
        self.table.role
    }

    /// The line transport, for commands outside the dialect table.
    pub fn link(&mut self) -> &mut LineTransport<BoxStream> {
        &mut self.link
    }

    async fn start_session(&mut self) -> Result<(), DriverError> {
        // Stale errors from an earlier session would be blamed on our first write.
        self.link.write("*CLS", "clearing the error queue").await?;
        let session: Vec<String> = self.table.session.iter().map(|s| s.to_string()).collect();
        self.link
            .write_checked(&session, "taking remote control")
            .await?;
        if self.table.dialect == Dialect::EaPsb {
            let owner = self
                .link
                .query("SYST:LOCK:OWN?", "checking the remote lock")
                .await?;
            if owner.trim().eq_ignore_ascii_case("NONE") {
                return Err(DriverError::Refused {
                    during: "taking remote control",
                    message: "SYST:LOCK:OWN? says nobody holds the lock (is the device in \
                              local mode on its front panel?)"
                        .into(),
                });
            }
        }
        Ok(())
    }

    async fn read_ratings(&mut self) -> Result<Ratings, DriverError> {
        if let Some(queries) = self.table.nominal_queries {
            let mut values = [0.0; 3];
            for (v, q) in values.iter_mut().zip(queries) {
                let reply = self.link.query(q, "reading the nominal ratings").await?;
                *v = wire::parse_number(&reply)
                    .filter(|x| *x > 0.0)
                    .ok_or_else(|| DriverError::BadReply {
                        during: "reading the nominal ratings",
                        message: format!("{q} answered {reply:?}"),
                    })?;
            }
            return Ok(Ratings {
                voltage_v: values[0],
                current_a: values[1],
                power_w: values[2],
            });
        }
        wire::ratings_for_model(&self.identity.model).ok_or_else(|| {
            DriverError::Identity(format!(
                "no ratings known for model {:?}; set them for this device in the config",
                self.identity.model
            ))
        })
    }

    async fn query_number(&mut self, q: &str, during: &'static str) -> Result<f64, DriverError> {
        let reply = self.link.query(q, during).await?;
        wire::parse_number(&reply).ok_or_else(|| DriverError::BadReply {
            during,
            message: format!("{q} answered {reply:?}"),
        })
    }
}

impl PowerStage for ScpiClient {
    fn written(&self) -> Option<Written> {
        Some(Written {
            setpoints: self.written?,
            resolution: wire::READBACK_RESOLUTION,
        })
    }

    async fn read(&mut self) -> Result<Reading, DriverError> {
        let during = "reading actual values";
        let t = self.table;
        let (voltage_v, current) = match t.measure {
            MeasureForm::Array(q) => {
                let reply = self.link.query(q, during).await?;
                let v = wire::parse_numbers(&reply, 2).ok_or_else(|| DriverError::BadReply {
                    during,
                    message: format!("{q} answered {reply:?}"),
                })?;
                (v[0], v[1])
            }
            MeasureForm::Separate { voltage, current } => (
                self.query_number(voltage, during).await?,
                self.query_number(current, during).await?,
            ),
        };
        // A load reports the magnitude it sinks; a supply may report magnitudes too
        // (uncertain for EA over SCPI), so a non-negative value under a sinking program is
        // taken as sunk.
        let current_a = if t.current_is_magnitude || (self.sinking && current > 0.0) {
            -current.abs()
        } else {
            current
        };
        // The output and, where the dialect reports them, the setpoints: one line, one reply.
        let readback = wire::setpoint_queries(t.dialect);
        let query = std::iter::once(t.output_query)
            .chain(readback.iter().copied())
            .collect::<Vec<_>>()
            .join(";");
        let reply = self.link.query(&query, during).await?;
        let bad = || DriverError::BadReply {
            during,
            message: format!("{query} answered {reply:?}"),
        };
        let mut parts = reply.split(';').map(str::trim);
        let output_on = parts.next().and_then(wire::parse_bool).ok_or_else(bad)?;
        let setpoints = if readback.is_empty() {
            None
        } else {
            let replies: Vec<&str> = parts.collect();
            Some(wire::read_setpoints(&replies).ok_or_else(bad)?)
        };
        let alarm = match t.alarm_query {
            Some(q) => self.query_number(q, during).await? != 0.0,
            None => false,
        };
        Ok(Reading {
            voltage_v,
            current_a: if output_on { current_a } else { 0.0 },
            temperature_c: None,
            output_on,
            alarm,
            setpoints,
        })
    }

    /// Writes the setpoints and checks the error queue before switching the output on; when
    /// the device refuses a setpoint the output is switched off (best effort) and the device's
    /// message returned, so a half-applied command never runs.
    async fn apply(&mut self, command: &Command) -> Result<(), DriverError> {
        let program = wire::program(self.table.dialect, self.ratings, command)
            .map_err(|wire::Unsupported(m)| DriverError::Unsupported(m))?;
        if !program.output {
            // Off first, then the rest's setpoints.
            self.output_off().await?;
            if program.setpoints.is_empty() {
                return Ok(());
            }
            self.link
                .write_checked(&program.setpoints, "zeroing the setpoints")
                .await?;
            self.remember(&program.setpoints);
            return Ok(());
        }
        if let Err(e) = self
            .link
            .write_checked(&program.setpoints, "writing setpoints")
            .await
        {
            if !e.is_link_lost() {
                let _ = self.output_off().await;
            }
            return Err(e);
        }
        self.sinking = program.sinking;
        self.remember(&program.setpoints);
        self.link
            .write_checked(
                &[self.table.output_on.to_string()],
                "switching the output on",
            )
            .await
    }

    async fn output_off(&mut self) -> Result<(), DriverError> {
        self.link
            .write_checked(
                &[self.table.output_off.to_string()],
                "switching the output off",
            )
            .await
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        // Close the old stream first: a serial port opens exclusively. A detached stand-in
        // keeps the transport valid (and failing) if the reopen fails.
        let (detached, _) = tokio::io::duplex(1);
        self.link = LineTransport::new(
            Box::new(detached),
            &self.options.terminator,
            self.options.timeout,
        );
        let stream = open(&self.endpoint, self.options.timeout).await?;
        self.link = LineTransport::new(stream, &self.options.terminator, self.options.timeout);
        let identity = self.link.identify().await?;
        if identity.serial != self.identity.serial || identity.model != self.identity.model {
            return Err(DriverError::Identity(format!(
                "after reconnecting, {:?} answers as {} {} (serial {:?}), not {} (serial {:?})",
                self.endpoint,
                identity.manufacturer,
                identity.model,
                identity.serial,
                self.identity.model,
                self.identity.serial
            )));
        }
        self.start_session().await
    }
}

/// A supply (source) and an electronic load (sink) on one cell, driven as one bidirectional
/// channel: charging goes through the supply, discharging through the load, and the one not in
/// use is switched off first, so both are never on at once. A read that finds both on reports
/// an alarm.
pub struct PairStage<S, L> {
    pub supply: S,
    pub load: L,
}

impl<S: PowerStage, L: PowerStage> PairStage<S, L> {
    pub fn new(supply: S, load: L) -> PairStage<S, L> {
        PairStage { supply, load }
    }
}

/// Whether a command charges (goes to the supply) or discharges (goes to the load).
fn charges(command: &Command) -> bool {
    match *command {
        Command::Current { amps, .. } => amps >= 0.0,
        Command::Power { watts, .. } => watts >= 0.0,
        // A CV hold belongs to the supply: a load cannot hold a voltage with a current limit
        // in the BK 8600 dialect, and holds follow charges in every standard protocol.
        Command::Voltage { .. } => true,
        _ => true,
    }
}

impl<S: PowerStage, L: PowerStage> PowerStage for PairStage<S, L> {
    async fn read(&mut self) -> Result<Reading, DriverError> {
        let s = self.supply.read().await?;
        let l = self.load.read().await?;
        let active = if l.output_on && !s.output_on { l } else { s };
        Ok(Reading {
            voltage_v: active.voltage_v,
            current_a: s.current_a + l.current_a,
            temperature_c: s.temperature_c.or(l.temperature_c),
            output_on: s.output_on || l.output_on,
            alarm: s.alarm || l.alarm || (s.output_on && l.output_on),
            setpoints: None,
        })
    }

    async fn apply(&mut self, command: &Command) -> Result<(), DriverError> {
        if !command.output_on() {
            return self.output_off().await;
        }
        // The idle side goes off first; if that fails, the other one is not switched on.
        if charges(command) {
            self.load.output_off().await?;
            self.supply.apply(command).await
        } else {
            self.supply.output_off().await?;
            self.load.apply(command).await
        }
    }

    /// Switches both off, even when the first fails; returns the first error.
    async fn output_off(&mut self) -> Result<(), DriverError> {
        let s = self.supply.output_off().await;
        let l = self.load.output_off().await;
        s.and(l)
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        let s = self.supply.reconnect().await;
        let l = self.load.reconnect().await;
        s.and(l)
    }
}
