//! The control connection's exchanges: a request frame out, its whole feedback frame back,
//! under the timeout; and the errors the driver words the same way.

use super::wire::{self, Direction, Frame, WireError};
use crate::DriverError;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How an exchange failed below the message level.
enum Transport {
    Io(std::io::Error),
    Closed,
    Frame(WireError),
}

pub(super) fn timeout_error(during: &'static str, timeout: Duration) -> DriverError {
    DriverError::Timeout {
        during,
        timeout_ms: timeout.as_millis() as u64,
    }
}

pub(super) fn bad_reply(during: &'static str, message: impl Into<String>) -> DriverError {
    DriverError::BadReply {
        during,
        message: message.into(),
    }
}

pub(super) fn decode_error(during: &'static str) -> impl Fn(WireError) -> DriverError {
    move |e| bad_reply(during, e.to_string())
}

/// Writes `request` and reads one whole feedback frame.
async fn transact(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> Result<Frame, Transport> {
    buf.clear();
    stream.write_all(request).await.map_err(Transport::Io)?;
    loop {
        if let Some((frame, used)) =
            wire::split_frame(buf, Direction::Feedback).map_err(Transport::Frame)?
        {
            // One request, one feedback: anything after it would be out of step.
            if used != buf.len() {
                return Err(Transport::Frame(WireError::Field {
                    field: "frame",
                    problem: format!("{} bytes follow the feedback", buf.len() - used),
                }));
            }
            return Ok(frame);
        }
        buf.reserve(64 * 1024);
        if stream.read_buf(buf).await.map_err(Transport::Io)? == 0 {
            return Err(Transport::Closed);
        }
    }
}

/// One exchange on `stream` under `timeout`; on any failure the stream must be dropped.
pub(super) async fn exchange_on(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &Frame,
    timeout: Duration,
    during: &'static str,
) -> Result<Frame, DriverError> {
    let bytes = request.encode(Direction::Request);
    match tokio::time::timeout(timeout, transact(stream, buf, &bytes)).await {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(Transport::Io(e))) => Err(DriverError::Link {
            during,
            message: e.to_string(),
        }),
        Ok(Err(Transport::Closed)) => Err(DriverError::Link {
            during,
            message: "the CTI server closed the connection".into(),
        }),
        Ok(Err(Transport::Frame(e))) => Err(bad_reply(during, e.to_string())),
        Err(_) => Err(timeout_error(during, timeout)),
    }
}
