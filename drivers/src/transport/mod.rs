//! Transports shared by several device families.
//!
//! - [`Endpoint`]: where a device is, on the network or on a serial port; [`SimPort`]: where a
//!   simulator serves, for the families that come both ways.
//! - `faults`: the reply faults a simulator's handle injects (reply delay, refusing the next
//!   requests).
//! - `modbus`: the timed, checked transaction helpers every Modbus client uses.
//! - `network`: the link a simulator's handle cuts, and the accept loops every network
//!   simulator shares (cut links close connections); [`SimPort`] serves a simulator's sessions
//!   on either kind of port. Also the connect with a timeout every network client uses.
//! - [`pty`] (unix): pseudo-terminal pairs, so a simulator can serve a serial protocol on the
//!   master while a driver opens the slave path as if it were a USB-serial adapter.
//! - `lock`: the simulators' lock on their shared state, which a panic does not poison.
//! - [`line`] (unix): a simulated serial line on a pseudo-terminal, with cable pulls and
//!   corrupted replies, shared by every serial simulator.

pub(crate) mod faults;
#[cfg(unix)]
pub mod line;
pub(crate) mod modbus;
pub(crate) mod network;
#[cfg(unix)]
pub mod pty;

use network::Link;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};

/// Locks a simulated device's state, shared by its handle and its connections. A panic while
/// holding the lock cannot leave the state half-written in a way that matters for a simulator;
/// keep serving.
pub(crate) fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a device is: a network address, or a serial port (USB-serial adapter, RS-232/485).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Serial {
        /// The port, e.g. `/dev/ttyUSB0` or `COM3`.
        path: String,
        /// Line speed; the frame is 8N1 everywhere cyclerd has met.
        baud: u32,
    },
}

impl Endpoint {
    /// The network address, for a networked device.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Tcp(addr) => Some(*addr),
            Endpoint::Serial { .. } => None,
        }
    }

    /// Opens a serial port 8N1 without flow control, and drops whatever an earlier session
    /// left in its buffers (a stale reply would be read as the answer to the next request).
    pub(crate) fn open_serial(
        path: &str,
        baud: u32,
    ) -> Result<tokio_serial::SerialStream, crate::DriverError> {
        use tokio_serial::{ClearBuffer, SerialPort};
        let port_error = |source: std::io::Error| crate::DriverError::Port {
            path: path.to_string(),
            source,
        };
        let builder = tokio_serial::new(path, baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None);
        let port = tokio_serial::SerialStream::open(&builder).map_err(|e| port_error(e.into()))?;
        port.clear(ClearBuffer::All)
            .map_err(|e| port_error(e.into()))?;
        Ok(port)
    }
}

/// Where a simulated device serves, for families reached over the network or a serial line.
pub enum SimPort {
    /// Raw socket, as on a LAN device (or a serial-to-TCP bridge).
    Tcp(tokio::net::TcpListener),
    /// A serial line on a pseudo-terminal (the client opens its slave path at any baud rate).
    #[cfg(unix)]
    Pty(pty::Pty),
}

/// A simulator's connection or serial line, as its session reads and writes it.
pub(crate) trait SimStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> SimStream for T {}

/// A simulator served on a [`SimPort`].
pub(crate) struct Served {
    /// Where a client reaches it.
    pub endpoint: Endpoint,
    /// Its cable: the network link, or the serial line's.
    pub link: Link,
    /// The serial line's fault switches, when it is served on one.
    #[cfg(unix)]
    pub line: Option<line::LineControl>,
}

impl SimPort {
    /// Serves `session` on this port until `stop` fires (or its sender drops); a serial line
    /// runs at `baud`. On the network each connection gets a session that ends when the link
    /// is cut, closing the socket. A serial line has no connection to close: its one session
    /// gets a link that is never cut and goes on, while the line loses bytes. Must be called
    /// inside a tokio runtime.
    pub(crate) fn serve<S, F>(
        self,
        what: &'static str,
        baud: u32,
        stop: oneshot::Receiver<()>,
        session: S,
    ) -> io::Result<Served>
    where
        S: Fn(Box<dyn SimStream>, watch::Receiver<bool>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            SimPort::Tcp(listener) => {
                let endpoint = Endpoint::Tcp(listener.local_addr()?);
                let link = Link::up();
                tokio::spawn(network::accept_while_linked(
                    listener,
                    link.watch(),
                    stop,
                    what,
                    move |stream, link| {
                        tokio::spawn(session(Box::new(stream), link));
                    },
                ));
                Ok(Served {
                    endpoint,
                    link,
                    #[cfg(unix)]
                    line: None,
                })
            }
            #[cfg(unix)]
            SimPort::Pty(pty) => {
                let line::Line {
                    path,
                    device,
                    control,
                    relay,
                } = line::Line::open(pty)?;
                tokio::spawn(async move {
                    let (_up, never_cut) = watch::channel(true);
                    tokio::select! {
                        _ = stop => {}
                        r = relay => if let Err(e) = r {
                            tracing::warn!("{what} line stopped: {e}");
                        },
                        () = session(Box::new(device), never_cut) => {}
                    }
                });
                Ok(Served {
                    endpoint: Endpoint::Serial {
                        path: path.to_string_lossy().into_owned(),
                        baud,
                    },
                    link: control.link().clone(),
                    line: Some(control),
                })
            }
        }
    }
}

impl From<tokio::net::TcpListener> for SimPort {
    fn from(listener: tokio::net::TcpListener) -> SimPort {
        SimPort::Tcp(listener)
    }
}

#[cfg(unix)]
impl From<pty::Pty> for SimPort {
    fn from(pty: pty::Pty) -> SimPort {
        SimPort::Pty(pty)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint::Tcp(addr)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Serial { path, baud } => write!(f, "{path} at {baud} baud"),
        }
    }
}
