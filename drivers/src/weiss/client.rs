//! The SimServ driver: byte frames over TCP, one request and one reply at a time.

use super::wire::{self, Request, WireError};
use crate::DriverError;
use crate::chamber::{Chamber, ChamberReading};
use crate::transport::network;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A connected Weiss / Vötsch controller.
pub struct WeissClient {
    /// The protocol server's connection.
    stream: BufReader<TcpStream>,
    /// Where the controller is, for reconnecting.
    addr: SocketAddr,
    /// Bound on each exchange; past it the link counts as lost.
    timeout: Duration,
    /// Set when an exchange failed on the link: a late reply would be read as the answer to
    /// the next request, so every later one is a lost link until a reconnect.
    poisoned: bool,
    /// What 99997 says the controller is.
    info: String,
}

fn bad_reply(during: &'static str) -> impl Fn(WireError) -> DriverError {
    move |e| DriverError::BadReply {
        during,
        message: e.0,
    }
}

async fn open(addr: SocketAddr, timeout: Duration) -> Result<BufReader<TcpStream>, DriverError> {
    Ok(BufReader::new(network::connect(addr, timeout).await?))
}

/// Reads one reply frame: line ends before it are skipped (a CR LF reply leaves its LF),
/// the frame ends at CR or LF. `Ok(None)` when the controller closed the connection.
async fn read_frame(stream: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut frame = Vec::new();
    loop {
        let chunk = stream.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        let skip = if frame.is_empty() {
            chunk
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count()
        } else {
            0
        };
        let rest = &chunk[skip..];
        match rest.iter().position(|b| matches!(b, b'\r' | b'\n')) {
            Some(end) => {
                frame.extend_from_slice(&rest[..end]);
                stream.consume(skip + end + 1);
                return Ok(Some(frame));
            }
            None => {
                frame.extend_from_slice(rest);
                let n = chunk.len();
                stream.consume(n);
                if frame.len() > wire::MAX_FRAME {
                    return Err(std::io::Error::other("reply frame too long"));
                }
            }
        }
    }
}

impl WeissClient {
    /// Connects to the SimServ server at `addr` and asks what it is (99997).
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<WeissClient, DriverError> {
        let mut client = WeissClient {
            stream: open(addr, timeout).await?,
            addr,
            timeout,
            poisoned: false,
            info: String::new(),
        };
        client.info = client.identify().await?;
        Ok(client)
    }

    /// What the controller says it is (the 99997 reply).
    pub fn info(&self) -> &str {
        &self.info
    }

    async fn identify(&mut self) -> Result<String, DriverError> {
        let during = "identifying the chamber";
        let values = self.exchange(Request::Info, during).await?;
        wire::parse_info(&values).map_err(bad_reply(during))
    }

    fn lost(&mut self, during: &'static str, message: String) -> DriverError {
        self.poisoned = true;
        DriverError::Link { during, message }
    }

    /// Sends one request; the values of a successful reply, a refusal as
    /// [`DriverError::Refused`] with the controller's code.
    async fn exchange(
        &mut self,
        request: Request,
        during: &'static str,
    ) -> Result<Vec<String>, DriverError> {
        if self.poisoned {
            return Err(DriverError::Link {
                during,
                message: "an earlier exchange failed; reconnect first".into(),
            });
        }
        let frame = request.encode();
        let stream = &mut self.stream;
        let exchanged = tokio::time::timeout(self.timeout, async {
            stream.get_mut().write_all(&frame).await?;
            read_frame(stream).await
        })
        .await;
        let reply = match exchanged {
            Err(_) => {
                self.poisoned = true;
                return Err(DriverError::Timeout {
                    during,
                    timeout_ms: self.timeout.as_millis() as u64,
                });
            }
            Ok(Err(e)) => return Err(self.lost(during, e.to_string())),
            Ok(Ok(None)) => {
                return Err(self.lost(during, "the controller closed the connection".into()));
            }
            Ok(Ok(Some(reply))) => reply,
        };
        match wire::decode_reply(&reply).map_err(bad_reply(during))? {
            Ok(values) => Ok(values),
            Err(code) => Err(DriverError::Refused {
                during,
                message: format!(
                    "SimServ code {code} ({}) in reply to command {}",
                    wire::refusal_meaning(code),
                    wire::display(&frame)
                ),
            }),
        }
    }

    async fn value(&mut self, request: Request, during: &'static str) -> Result<f64, DriverError> {
        let values = self.exchange(request, during).await?;
        wire::parse_value(&values).map_err(bad_reply(during))
    }
}

impl Chamber for WeissClient {
    /// Status word, actual value and set point: three exchanges, SimServ has no combined one.
    async fn read(&mut self) -> Result<ChamberReading, DriverError> {
        let during = "reading the chamber";
        let values = self.exchange(Request::Status, during).await?;
        let status = wire::parse_status(&values).map_err(bad_reply(during))?;
        let variable = wire::TEMPERATURE;
        let temperature_c = self.value(Request::GetActual { variable }, during).await?;
        let set_point_c = self
            .value(Request::GetSetPoint { variable }, during)
            .await?;
        // Warnings (+4) are not alarms: the chamber keeps running through them.
        let alarms = if status.alarms {
            vec![format!("alarm (SimServ status {})", status.word)]
        } else {
            Vec::new()
        };
        Ok(ChamberReading {
            temperature_c,
            set_point_c,
            humidity_pct: None,
            running: status.running,
            alarms,
        })
    }

    async fn set_temperature(&mut self, temperature_c: f64) -> Result<(), DriverError> {
        if !temperature_c.is_finite() {
            return Err(DriverError::Unsupported(format!(
                "a set point of {temperature_c} degC"
            )));
        }
        let request = Request::SetSetPoint {
            variable: wire::TEMPERATURE,
            value: temperature_c,
        };
        self.exchange(request, "setting the temperature set point")
            .await
            .map(drop)
    }

    async fn start(&mut self) -> Result<(), DriverError> {
        self.exchange(Request::ManualMode { on: true }, "starting manual mode")
            .await
            .map(drop)
    }

    async fn stop(&mut self) -> Result<(), DriverError> {
        self.exchange(Request::ManualMode { on: false }, "stopping manual mode")
            .await
            .map(drop)
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        self.stream = open(self.addr, self.timeout).await?;
        self.poisoned = false;
        let info = self.identify().await?;
        if info != self.info {
            return Err(DriverError::Identity(format!(
                "after reconnecting, {} answers as {info:?}, not {:?}",
                self.addr, self.info
            )));
        }
        Ok(())
    }
}
