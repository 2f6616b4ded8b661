//! What a device or its link can do wrong.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot connect to {addr}: {source} (is the device on and the address right?)")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot open serial port {path}: {source} (is the adapter plugged in and the path right?)"
    )]
    Port {
        path: String,
        source: std::io::Error,
    },
    #[error("no reply from the device within {timeout_ms} ms while {during}")]
    Timeout {
        during: &'static str,
        timeout_ms: u64,
    },
    #[error("link to the device failed while {during}: {message}")]
    Link {
        during: &'static str,
        message: String,
    },
    #[error("the device refused {during}: Modbus exception {code}")]
    Exception { during: &'static str, code: String },
    /// A text-protocol device (SCPI) refused a command; `message` is the device's own error
    /// entry, e.g. `-222,"Data out of range"`.
    #[error("the device refused {during}: {message}")]
    Refused {
        during: &'static str,
        message: String,
    },
    #[error("the device sent a reply that does not make sense while {during}: {message}")]
    BadReply {
        during: &'static str,
        message: String,
    },
    #[error("the device is not what the configuration says: {0}")]
    Identity(String),
    #[error("the device cannot do that: {0}")]
    Unsupported(String),
    /// A file the device works from (a schedule it reads from a shared folder) could not be
    /// written or read.
    #[error(
        "cannot {action} {path}: {source} (does the folder exist, and may cyclerd write there?)"
    )]
    File {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl DriverError {
    /// Whether the link itself is gone (as opposed to the device refusing one request), so the
    /// caller should reconnect before trying again.
    pub fn is_link_lost(&self) -> bool {
        matches!(
            self,
            DriverError::Connect { .. }
                | DriverError::Port { .. }
                | DriverError::Timeout { .. }
                | DriverError::Link { .. }
        )
    }
}
