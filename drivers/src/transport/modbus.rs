//! What every Modbus client of this crate does the same way, over TCP or RTU.

use crate::DriverError;
use std::time::Duration;
use tokio_modbus::client::{Context, Reader};

/// Folds the three layers of a timed Modbus reply (timeout, transport, exception) into one.
pub(crate) fn flatten<T>(
    reply: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
    timeout: Duration,
    during: &'static str,
) -> Result<T, DriverError> {
    match reply {
        Err(_) => Err(DriverError::Timeout {
            during,
            timeout_ms: timeout.as_millis() as u64,
        }),
        Ok(Err(e)) => Err(DriverError::Link {
            during,
            message: e.to_string(),
        }),
        Ok(Ok(Err(code))) => Err(DriverError::Exception {
            during,
            code: format!("{code:?}"),
        }),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

/// Reads `count` holding registers from `start` within `timeout`; a reply of another length is
/// a bad reply, never a panic further on.
pub(crate) async fn read_holding(
    ctx: &mut Context,
    start: u16,
    count: u16,
    timeout: Duration,
    during: &'static str,
) -> Result<Vec<u16>, DriverError> {
    let reply = tokio::time::timeout(timeout, ctx.read_holding_registers(start, count)).await;
    let regs = flatten(reply, timeout, during)?;
    if regs.len() != usize::from(count) {
        return Err(DriverError::BadReply {
            during,
            message: format!("asked for {count} registers, got {}", regs.len()),
        });
    }
    Ok(regs)
}
