//! Pseudo-terminal pairs for simulated serial devices.
//!
//! A simulator serves its wire protocol on the master; the driver opens the slave path with the
//! same code it uses for a real USB-serial adapter (`/dev/ttyUSB0` and friends). Both ends are
//! raw (no echo, no line editing), so every byte passes unchanged.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio_serial::SerialStream;

/// A fresh pseudo-terminal pair. Must be opened inside a tokio runtime (the streams register
/// with its reactor).
pub struct Pty {
    master: SerialStream,
    slave: std::fs::File,
    slave_path: PathBuf,
}

/// Keeps the slave side open while no client has it open: on Linux, reads on the master of a
/// pty whose slave is closed everywhere fail (`EIO`), which would end a simulator between two
/// client connections. Drop it together with the master.
pub struct SlaveHold {
    _slave: std::fs::File,
}

impl Pty {
    /// Opens a new pair, both ends in raw mode. The slave is held open without any lock, so a
    /// client can open it by path exclusively, as serial-port libraries do by default.
    pub fn open() -> io::Result<Pty> {
        let (master, mut slave_port) = SerialStream::pair().map_err(io::Error::from)?;
        let slave_path = tokio_serial::SerialPort::name(&slave_port)
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("the pseudo-terminal slave has no path"))?;
        // Lift TIOCEXCL, then swap the port (which holds a flock) for a plain descriptor; the
        // slave stays open throughout, so the master never sees it closed.
        slave_port.set_exclusive(false).map_err(io::Error::from)?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&slave_path)?;
        drop(slave_port);
        Ok(Pty {
            master,
            slave,
            slave_path,
        })
    }

    /// Where a client opens the device side's counterpart, e.g. `/dev/pts/7`.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// The master as an async byte stream (`AsyncRead + AsyncWrite`; also a `SerialStream`, so
    /// tokio-modbus's RTU server accepts it), and the hold that keeps the slave alive.
    pub fn into_master(self) -> (SerialStream, SlaveHold) {
        (self.master, SlaveHold { _slave: self.slave })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_unchanged_both_ways_through_the_slave_path() {
        let pty = Pty::open().unwrap();
        let path = pty.slave_path().to_string_lossy().into_owned();
        let (mut master, _hold) = pty.into_master();
        let mut client = SerialStream::open(&tokio_serial::new(path, 115_200)).unwrap();
        let frame = [0x01, 0x03, 0x00, 0x0a, 0x0d, 0x11, 0xff, 0x00];
        client.write_all(&frame).await.unwrap();
        let mut got = [0; 8];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            master.read_exact(&mut got),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got, frame);
        master.write_all(b"\r\n\x00").await.unwrap();
        let mut back = [0; 3];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_exact(&mut back),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&back, b"\r\n\x00");
    }
}
