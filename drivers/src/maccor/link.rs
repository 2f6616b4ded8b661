//! The two MacNet connections a client holds, JSON-RPC objects and binary frames, each exchange
//! bounded by the timeout; a failed or timed-out exchange poisons its connection until the
//! client reconnects. And the errors the whole driver words the same way.

use super::wire::{self, Frame, Function, JsonReply};
use crate::DriverError;
use crate::transport::network;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) fn timeout_error(during: &'static str, timeout: Duration) -> DriverError {
    DriverError::Timeout {
        during,
        timeout_ms: timeout.as_millis() as u64,
    }
}

pub(super) fn link_error(during: &'static str, message: impl Into<String>) -> DriverError {
    DriverError::Link {
        during,
        message: message.into(),
    }
}

pub(super) fn bad_reply(during: &'static str, message: impl Into<String>) -> DriverError {
    DriverError::BadReply {
        during,
        message: message.into(),
    }
}

/// The JSON connection. A failed or timed-out exchange poisons it (a late reply would be read
/// as the answer to the next request) until the client reconnects.
pub(super) struct JsonLink {
    stream: TcpStream,
    /// Replies are framed by complete object (pretty-printed, any or no terminator).
    objects: wire::JsonSplitter,
    next_id: u64,
    pub(super) poisoned: bool,
}

impl JsonLink {
    /// Connects to the JSON protocol at `addr`.
    pub(super) async fn open(addr: SocketAddr, timeout: Duration) -> Result<JsonLink, DriverError> {
        Ok(JsonLink {
            stream: network::connect(addr, timeout).await?,
            objects: wire::JsonSplitter::new(wire::MAX_JSON_OBJECT),
            next_id: 0,
            poisoned: false,
        })
    }

    pub(super) async fn call(
        &mut self,
        function: Function,
        chan: Option<u16>,
        params: Map<String, Value>,
        timeout: Duration,
        during: &'static str,
    ) -> Result<(Option<u16>, Map<String, Value>), DriverError> {
        if self.poisoned {
            return Err(link_error(
                during,
                "an earlier exchange failed; reconnect first",
            ));
        }
        self.poisoned = true;
        self.next_id += 1;
        let id = self.next_id;
        let line = wire::json_request(id, function, chan, params);
        let stream = &mut self.stream;
        let objects = &mut self.objects;
        let exchange = async {
            stream.write_all(line.as_bytes()).await?;
            loop {
                match objects.next_object() {
                    Ok(Some(object)) => return Ok(Ok(object)),
                    Ok(None) => {}
                    Err(e) => return Ok(Err(e)),
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        if objects.has_partial() {
                            "the tester closed the connection inside a reply"
                        } else {
                            "the tester closed the connection"
                        },
                    ));
                }
                objects.push(&chunk[..n]);
            }
        };
        let object = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| timeout_error(during, timeout))?
            .map_err(|e| link_error(during, e.to_string()))?
            .map_err(|e| bad_reply(during, e.to_string()))?;
        let reply = wire::parse_json_reply(&String::from_utf8_lossy(&object))
            .map_err(|e| bad_reply(during, e.to_string()))?;
        if reply.id() != Some(id) {
            return Err(bad_reply(
                during,
                format!("a reply to request {:?}, expected {id}", reply.id()),
            ));
        }
        self.poisoned = false;
        match reply {
            JsonReply::Error { code, message, .. } => {
                Err(json_failure(during, function, code, &message))
            }
            JsonReply::Result {
                function: f,
                chan,
                fields,
                ..
            } => {
                if f != function {
                    self.poisoned = true;
                    return Err(bad_reply(
                        during,
                        format!("a reply to {f}, expected {function}"),
                    ));
                }
                Ok((chan, fields))
            }
        }
    }
}

/// A JSON-RPC error as a driver error: unknown functions are what the tester cannot do, the
/// rest are refusals with MacNet's own text.
fn json_failure(during: &'static str, function: Function, code: i64, message: &str) -> DriverError {
    if message == wire::json_error::INVALID_FCLASS.1 || message == wire::json_error::INVALID_FNUM.1
    {
        DriverError::Unsupported(format!(
            "the tester's MacNet does not offer {function} (\"{message}\") while {during}; \
             check the MacTest version"
        ))
    } else {
        DriverError::Refused {
            during,
            message: format!("MacNet answered \"{message}\" (JSON-RPC error {code})"),
        }
    }
}

/// The binary connection, poisoned like [`JsonLink`].
pub(super) struct BinaryLink {
    stream: TcpStream,
    /// Bytes received past the last frame.
    buf: Vec<u8>,
    pub(super) poisoned: bool,
}

impl BinaryLink {
    /// Connects to the binary protocol at `addr`.
    pub(super) async fn open(
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<BinaryLink, DriverError> {
        Ok(BinaryLink {
            stream: network::connect(addr, timeout).await?,
            buf: Vec::new(),
            poisoned: false,
        })
    }

    pub(super) async fn send(
        &mut self,
        frame: &Frame,
        timeout: Duration,
        during: &'static str,
    ) -> Result<(), DriverError> {
        if self.poisoned {
            return Err(link_error(
                during,
                "an earlier exchange failed; reconnect first",
            ));
        }
        self.poisoned = true;
        tokio::time::timeout(timeout, self.stream.write_all(&frame.encode()))
            .await
            .map_err(|_| timeout_error(during, timeout))?
            .map_err(|e| link_error(during, e.to_string()))?;
        self.poisoned = false;
        Ok(())
    }

    pub(super) async fn receive(
        &mut self,
        timeout: Duration,
        during: &'static str,
    ) -> Result<Frame, DriverError> {
        self.poisoned = true;
        let read = async {
            loop {
                if let Some((frame, used)) = wire::split_frame(&self.buf, wire::Direction::Reply) {
                    self.buf.drain(..used);
                    return Ok(frame);
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the tester closed the connection",
                    ));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        let frame = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| timeout_error(during, timeout))?
            .map_err(|e| link_error(during, e.to_string()))?;
        self.poisoned = false;
        Ok(frame)
    }

    pub(super) async fn transact(
        &mut self,
        frame: &Frame,
        timeout: Duration,
        during: &'static str,
    ) -> Result<Frame, DriverError> {
        self.send(frame, timeout, during).await?;
        let reply = self.receive(timeout, during).await?;
        if reply.function != frame.function {
            self.poisoned = true;
            return Err(bad_reply(
                during,
                format!("a reply to {}, expected {}", reply.function, frame.function),
            ));
        }
        if reply.chan != frame.chan {
            return Err(bad_reply(
                during,
                format!(
                    "a reply for channel {}, to a request for channel {}",
                    reply.chan, frame.chan
                ),
            ));
        }
        Ok(reply)
    }
}
