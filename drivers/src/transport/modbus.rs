//! What every Modbus client of this crate does the same way, over TCP or RTU, what the Modbus
//! simulators answer the same way, and the 32-bit float layout that several families (Watlow,
//! Binder) share.

use crate::DriverError;
use std::time::Duration;
use tokio_modbus::ExceptionCode;
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

/// A simulator's answer to a read of `count` holding registers from `start`, each read by
/// `read`: a count outside 1 to 125 is an illegal value, a block past the last address an
/// illegal address.
pub(crate) fn read_block(
    start: u16,
    count: u16,
    read: impl FnMut(u16) -> Result<u16, ExceptionCode>,
) -> Result<Vec<u16>, ExceptionCode> {
    if count == 0 || count > 125 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let end = start
        .checked_add(count)
        .ok_or(ExceptionCode::IllegalDataAddress)?;
    (start..end).map(read).collect()
}

/// A 32-bit float from two registers, low word first ("word-swapped" against the big-endian
/// order of the Modbus specification).
pub fn f32_from_low_first(words: [u16; 2]) -> f32 {
    f32::from_bits(u32::from(words[1]) << 16 | u32::from(words[0]))
}

/// The two registers of a 32-bit float, low word first.
pub fn f32_to_low_first(value: f32) -> [u16; 2] {
    let bits = value.to_bits();
    [bits as u16, (bits >> 16) as u16]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_go_low_word_first() {
        // 25.5 is 0x41CC0000.
        assert_eq!(f32_to_low_first(25.5), [0x0000, 0x41cc]);
        assert_eq!(f32_from_low_first([0x0000, 0x41cc]), 25.5);
        assert_eq!(f32_from_low_first(f32_to_low_first(-40.25)), -40.25);
    }
}
