//! The Binder driver: RTU frames (the codec in [`super::wire`]) on a serial port, or on a TCP
//! connection to the serial-to-TCP bridge of an Ethernet model.
//!
//! Reads use function 3 and writes function 0x10 only (a Binder refuses function 6, even for
//! one register). Each poll reads only documented addresses: the set point in force, the
//! temperature, the humidity, the mode and the alarm word, one transaction each (about 20 ms
//! apiece at 9600 baud). Registers a controller may lack (humidity on a chamber without
//! humidity control, the assumed alarm word) are dropped from the poll once it refuses
//! their address.
//!
//! `start` switches to manual mode, where the chamber holds the manual set point that
//! `set_temperature` writes; `stop` switches back to basic mode, where it holds the basic
//! set point configured at the chamber.

use super::wire::{self, Exception, Reply, mode, reg};
use crate::DriverError;
use crate::chamber::{Chamber, ChamberReading};
use crate::transport::{Endpoint, network};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How to talk to a Binder controller.
#[derive(Debug, Clone, PartialEq)]
pub struct BinderOptions {
    /// Unit address of the controller on its line.
    pub unit: u8,
    /// Wall-time bound on each transaction; past it the link counts as lost.
    pub timeout: Duration,
    /// Where the alarm word is read from, `None` for no alarms: [`reg::ALARM`] by default,
    /// which is an assumption (see [`super`]); a lab whose chamber reports nonsense there
    /// turns it off.
    pub alarm_register: Option<u16>,
}

impl Default for BinderOptions {
    /// Unit 1, a 2 s timeout, the assumed alarm register.
    fn default() -> Self {
        BinderOptions {
            unit: wire::DEFAULT_UNIT,
            timeout: Duration::from_secs(2),
            alarm_register: Some(reg::ALARM),
        }
    }
}

/// A byte stream to the controller: a serial port or a bridge's TCP connection.
trait Link: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Link for T {}

/// A connected Binder controller.
pub struct BinderClient {
    /// `None` after a failed reconnect: every request fails until the next one works.
    link: Option<Box<dyn Link>>,
    /// Where the controller is, for reconnecting.
    endpoint: Endpoint,
    /// Unit, timeout and the configured alarm register.
    options: BinderOptions,
    /// Whether the poll still reads humidity: false once the controller refused it.
    humidity: bool,
    /// The alarm word's register while the poll still reads it.
    alarm_register: Option<u16>,
}

impl BinderClient {
    /// Opens the serial port (or connects to the bridge) and reads the mode once, so a wrong
    /// port, address or unit fails here.
    pub async fn connect(
        endpoint: Endpoint,
        options: BinderOptions,
    ) -> Result<BinderClient, DriverError> {
        let link = open(&endpoint, options.timeout).await?;
        let mut client = BinderClient {
            link: Some(link),
            endpoint,
            humidity: true,
            alarm_register: options.alarm_register,
            options,
        };
        client.mode().await?;
        Ok(client)
    }

    /// The raw mode word ([`mode`]).
    pub async fn mode(&mut self) -> Result<u16, DriverError> {
        let words = self
            .read_registers(reg::MODE, 1, "reading the mode")
            .await?;
        Ok(words[0])
    }

    /// Sends one request frame and returns the reply, checked against the request: the same
    /// unit, and the same function (an exception to it included).
    async fn exchange(
        &mut self,
        request: &[u8],
        during: &'static str,
    ) -> Result<Reply, DriverError> {
        let timeout = self.options.timeout;
        let link = self.link.as_mut().ok_or_else(|| DriverError::Link {
            during,
            message: format!("not connected to {} (reconnect)", self.endpoint),
        })?;
        drain(link).await;
        let frame = tokio::time::timeout(timeout, send_and_receive(link, request))
            .await
            .map_err(|_| DriverError::Timeout {
                during,
                timeout_ms: timeout.as_millis() as u64,
            })?
            .map_err(|e| DriverError::Link {
                during,
                message: match e.kind() {
                    io::ErrorKind::UnexpectedEof => "the connection closed".into(),
                    _ => e.to_string(),
                },
            })?;
        let bad = |message: String| DriverError::BadReply { during, message };
        let frame = frame.map_err(|e| bad(e.to_string()))?;
        let (unit, reply) = wire::decode_reply(&frame).map_err(|e| bad(e.to_string()))?;
        if unit != self.options.unit {
            return Err(bad(format!(
                "a reply from unit {unit}, not {}",
                self.options.unit
            )));
        }
        let function = request[1];
        match &reply {
            Reply::Exception { function: f, .. } if *f == function => Ok(reply),
            Reply::Registers(_) if function == wire::function::READ => Ok(reply),
            Reply::Written { .. } if function == wire::function::WRITE => Ok(reply),
            other => Err(bad(format!(
                "{other:?} to a request of function {function:#04x}"
            ))),
        }
    }

    /// Reads `count` registers from `start`; the inner `Err` is the controller's refusal.
    async fn try_read(
        &mut self,
        start: u16,
        count: u16,
        during: &'static str,
    ) -> Result<Result<Vec<u16>, Exception>, DriverError> {
        let request = wire::encode_read(self.options.unit, start, count);
        match self.exchange(&request, during).await? {
            Reply::Registers(words) if words.len() == usize::from(count) => Ok(Ok(words)),
            Reply::Exception { exception, .. } => Ok(Err(exception)),
            other => Err(DriverError::BadReply {
                during,
                message: format!("asked for {count} registers, got {other:?}"),
            }),
        }
    }

    async fn read_registers(
        &mut self,
        start: u16,
        count: u16,
        during: &'static str,
    ) -> Result<Vec<u16>, DriverError> {
        self.try_read(start, count, during)
            .await?
            .map_err(|e| refused(during, e))
    }

    async fn read_float(&mut self, start: u16, during: &'static str) -> Result<f64, DriverError> {
        let words = self.read_registers(start, 2, during).await?;
        let value = f64::from(wire::decode_float([words[0], words[1]]));
        if !value.is_finite() {
            return Err(DriverError::BadReply {
                during,
                message: format!("{value} at register {start:#06x} (sensor failure?)"),
            });
        }
        Ok(value)
    }

    /// Reads a register the controller may not have: `None` (with a warning) when it refuses
    /// the address, so the caller stops asking.
    async fn read_optional(
        &mut self,
        start: u16,
        count: u16,
        during: &'static str,
    ) -> Result<Option<Vec<u16>>, DriverError> {
        match self.try_read(start, count, during).await? {
            Ok(words) => Ok(Some(words)),
            Err(Exception::IllegalDataAddress) => {
                tracing::warn!(
                    "the Binder at {} has no register {start:#06x} ({during}); it is not read \
                     any more",
                    self.endpoint
                );
                Ok(None)
            }
            Err(e) => Err(refused(during, e)),
        }
    }

    async fn write(
        &mut self,
        start: u16,
        words: &[u16],
        during: &'static str,
    ) -> Result<(), DriverError> {
        let request = wire::encode_write(self.options.unit, start, words);
        match self.exchange(&request, during).await? {
            Reply::Written { start: s, count }
                if s == start && usize::from(count) == words.len() =>
            {
                Ok(())
            }
            Reply::Exception { exception, .. } => Err(refused(during, exception)),
            other => Err(DriverError::BadReply {
                during,
                message: format!(
                    "{other:?} to a write of {} words at {start:#06x}",
                    words.len()
                ),
            }),
        }
    }
}

impl Chamber for BinderClient {
    async fn read(&mut self) -> Result<ChamberReading, DriverError> {
        let set_point_c = self
            .read_float(reg::SET_POINT, "reading the set point")
            .await?;
        let temperature_c = self
            .read_float(reg::TEMPERATURE, "reading the temperature")
            .await?;
        let humidity_pct = if self.humidity {
            let words = self
                .read_optional(reg::HUMIDITY, 2, "reading the humidity")
                .await?;
            self.humidity = words.is_some();
            words
                .map(|w| f64::from(wire::decode_float([w[0], w[1]])))
                .filter(|h| h.is_finite())
        } else {
            None
        };
        let mode_word = self.mode().await?;
        let mut alarms = Vec::new();
        if let Some(register) = self.alarm_register {
            match self
                .read_optional(register, 1, "reading the alarm word")
                .await?
            {
                None => self.alarm_register = None,
                Some(w) if w[0] != 0 => alarms.push(format!("alarm word {:#06x}", w[0])),
                Some(_) => {}
            }
        }
        Ok(ChamberReading {
            temperature_c,
            set_point_c,
            humidity_pct,
            running: mode::running(mode_word),
            alarms,
        })
    }

    async fn set_temperature(&mut self, temperature_c: f64) -> Result<(), DriverError> {
        if !temperature_c.is_finite() {
            return Err(DriverError::Unsupported(format!(
                "a set point of {temperature_c} degC (give a finite temperature)"
            )));
        }
        let words = wire::encode_float(temperature_c as f32);
        self.write(
            reg::MANUAL_SET_POINT,
            &words,
            "writing the manual set point",
        )
        .await
    }

    async fn start(&mut self) -> Result<(), DriverError> {
        self.write(reg::MODE, &[mode::MANUAL], "switching to manual mode")
            .await
    }

    async fn stop(&mut self) -> Result<(), DriverError> {
        self.write(reg::MODE, &[mode::BASIC], "switching to basic mode")
            .await
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        // A serial port opens exclusively: close the old one first.
        self.link = None;
        self.link = Some(open(&self.endpoint, self.options.timeout).await?);
        self.mode().await.map(|_| ())
    }
}

/// The controller's refusal as the daemon sees it, e.g. "Modbus exception 8 (write denied)".
fn refused(during: &'static str, exception: Exception) -> DriverError {
    DriverError::Exception {
        during,
        code: exception.to_string(),
    }
}

/// Opens the serial port at its baud rate (8N1), or connects to the bridge.
async fn open(endpoint: &Endpoint, timeout: Duration) -> Result<Box<dyn Link>, DriverError> {
    match endpoint {
        Endpoint::Serial { path, baud } => Ok(Box::new(Endpoint::open_serial(path, *baud)?)),
        Endpoint::Tcp(addr) => Ok(Box::new(network::connect(*addr, timeout).await?)),
    }
}

/// Drops whatever is already waiting on the link: a reply given up on, or line noise, would
/// otherwise be read as the answer to the next request.
async fn drain(link: &mut Box<dyn Link>) {
    let mut scrap = [0u8; wire::MAX_FRAME];
    // A zero timeout still polls the read once, so it takes only bytes already there.
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, link.read(&mut scrap)).await {
        if n == 0 {
            break;
        }
    }
}

/// Writes `request` and reads one reply frame: its head, then as many bytes as the head
/// says. The inner `Err` is a head that cannot start a reply.
async fn send_and_receive(
    link: &mut Box<dyn Link>,
    request: &[u8],
) -> io::Result<Result<Vec<u8>, wire::FrameError>> {
    link.write_all(request).await?;
    link.flush().await?;
    let mut head = [0u8; 3];
    link.read_exact(&mut head).await?;
    let len = match wire::reply_len(&head) {
        Ok(len) => len,
        Err(e) => return Ok(Err(e)),
    };
    let mut frame = head.to_vec();
    frame.resize(len, 0);
    link.read_exact(&mut frame[3..]).await?;
    Ok(Ok(frame))
}
