//! A simulated serial line: the client's pseudo-terminal on one side, the simulated device's
//! byte stream on the other, and a relay between them where line faults happen.
//!
//! A serial device has no connection to drop: a pulled USB cable or a noisy RS-485 line shows
//! as lost or broken bytes. The relay models exactly that, for every serial simulator alike.

use super::lock;
use super::network::Link;
use super::pty::{Pty, SlaveHold};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_serial::SerialStream;

/// The client's end of a simulated line, and the device's.
pub struct Line {
    /// Where the client opens the line, e.g. `/dev/pts/7`.
    pub path: PathBuf,
    /// The device's end: the simulator reads requests from it and writes replies to it.
    pub device: SerialStream,
    /// Fault switches, shared with the relay.
    pub control: LineControl,
    /// The relay between the two ends; run it alongside the device's server, and stop both
    /// together (it ends when either end fails).
    pub relay: std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>> + Send>>,
}

/// Switches for line faults, cheap to clone into a simulator's handle.
#[derive(Clone)]
pub struct LineControl {
    /// Whether bytes pass; while cut both directions are dropped.
    link: Link,
    /// How many of the next device-to-client chunks go out broken.
    corrupting: Arc<Mutex<u32>>,
}

impl LineControl {
    /// Pulls the cable: requests and replies are lost, so the client sees silence.
    pub fn cut(&self) {
        self.link.cut();
    }

    /// Plugs it back in.
    pub fn restore(&self) {
        self.link.restore();
    }

    /// Whether the line is up now.
    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// Watches the line state (a simulator abandons a delayed reply when the line is cut).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.link.watch()
    }

    /// The cable alone, for a simulator's handle that switches it as it would a network link.
    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    /// Breaks the next `n` replies (their last byte flipped: a Modbus frame fails its CRC, a
    /// SCPI reply loses its terminator).
    pub fn corrupt_next(&self, n: u32) {
        *lock(&self.corrupting) = n;
    }
}

impl Line {
    /// Opens a line on `pty`. Must be called inside a tokio runtime.
    pub fn open(pty: Pty) -> io::Result<Line> {
        let path = pty.slave_path().to_path_buf();
        let (outer, hold) = pty.into_master();
        let (device, line_end) = SerialStream::pair().map_err(io::Error::from)?;
        let control = LineControl {
            link: Link::up(),
            corrupting: Arc::new(Mutex::new(0)),
        };
        let relay_control = control.clone();
        let relay = Box::pin(async move {
            let _hold: SlaveHold = hold;
            let (outer_rx, outer_tx) = tokio::io::split(outer);
            let (line_rx, line_tx) = tokio::io::split(line_end);
            let up = relay(outer_rx, line_tx, relay_control.watch(), || false);
            let down = relay(line_rx, outer_tx, relay_control.watch(), move || {
                let mut n = lock(&relay_control.corrupting);
                let corrupt = *n > 0;
                *n = n.saturating_sub(1);
                corrupt
            });
            tokio::select! {
                r = up => r,
                r = down => r,
            }
        });
        Ok(Line {
            path,
            device,
            control,
            relay,
        })
    }

    /// Where the client opens the line.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Copies bytes from `from` to `to` while the link is up, dropping them while it is cut;
/// `corrupt` decides per chunk whether to break it.
async fn relay(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    link: watch::Receiver<bool>,
    corrupt: impl Fn() -> bool,
) -> io::Result<()> {
    let mut buf = [0u8; 512];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if !*link.borrow() {
            continue;
        }
        if corrupt() {
            buf[n - 1] ^= 0x5a;
        }
        to.write_all(&buf[..n]).await?;
    }
}
