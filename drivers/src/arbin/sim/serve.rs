//! The I/O: [`ArbinSim`] serving the control and file ports, the connection loop, and the
//! [`SimHandle`] with its getters and fault switches.

use super::{Channel, Console, EndState, Port, Reply, Session, SimConfig, SimFault, file_key};
use crate::Clock;
use crate::arbin::client::ArbinConfig;
use crate::arbin::wire::{self, DataRecord, Direction, WireError};
use crate::cycler_sim::ChannelCell;
use crate::transport::faults::Faults;
use crate::transport::lock;
use crate::transport::network::{Link, accept_while_linked, delay_unless_cut, unless_cut};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Starts simulated consoles.
pub struct ArbinSim;

impl ArbinSim {
    /// Serves a simulated console, CTI control on `control` and file operations on `files`,
    /// until the returned handle is dropped.
    pub fn spawn(
        control: TcpListener,
        files: TcpListener,
        config: SimConfig,
        clock: Clock,
    ) -> io::Result<SimHandle> {
        if !(config.record_interval_s.is_finite() && config.record_interval_s > 0.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "record interval {} s: give a positive number of seconds",
                    config.record_interval_s
                ),
            ));
        }
        let control_addr = control.local_addr()?;
        let file_addr = files.local_addr()?;
        let now = clock.now();
        let console = Arc::new(Mutex::new(Console {
            channels: config
                .cells
                .iter()
                .map(|c| Channel {
                    cell: ChannelCell::new(c.clone(), now),
                    assigned: None,
                    test: None,
                })
                .collect(),
            config,
            clock,
            files: HashMap::new(),
            faults: Faults::none(),
        }));
        let link = Link::up();
        let mut stops = Vec::new();
        for (listener, port) in [(control, Port::Control), (files, Port::Files)] {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stops.push(stop_tx);
            tokio::spawn(serve(
                listener,
                Arc::clone(&console),
                port,
                link.watch(),
                stop_rx,
            ));
        }
        Ok(SimHandle {
            control_addr,
            file_addr,
            console,
            link,
            _stop: stops,
        })
    }
}

pub(super) async fn serve(
    listener: TcpListener,
    console: Arc<Mutex<Console>>,
    port: Port,
    link: watch::Receiver<bool>,
    stop: oneshot::Receiver<()>,
) {
    accept_while_linked(listener, link, stop, "arbin sim", |stream, link| {
        tokio::spawn(connection(stream, Arc::clone(&console), port, link));
    })
    .await
}

pub(super) async fn connection(
    stream: TcpStream,
    console: Arc<Mutex<Console>>,
    port: Port,
    mut link: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let mut session = Session {
        port,
        logged_in: false,
        upload: None,
    };
    loop {
        let frame = match wire::split_frame(&buf, Direction::Request) {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                frame
            }
            Ok(None) => {
                buf.reserve(64 * 1024);
                // A cut link (or a dropped handle) ends the connection, closing the socket.
                match unless_cut(&mut link, rd.read_buf(&mut buf)).await {
                    None | Some(Ok(0) | Err(_)) => return,
                    Some(Ok(_)) => continue,
                }
            }
            Err(WireError::Checksum { frame_len, .. }) => {
                tracing::debug!("arbin sim: dropping a frame with a bad checksum");
                buf.drain(..frame_len);
                continue;
            }
            Err(e) => {
                tracing::debug!("arbin sim: closing a connection out of step: {e}");
                return;
            }
        };
        let reply = lock(&console).handle(&mut session, &frame);
        let frame = match reply {
            Reply::Send(frame) => frame,
            Reply::Silent => continue,
            Reply::Close => return,
        };
        let delay = lock(&console).faults.reply_delay();
        if !delay_unless_cut(delay, &mut link).await {
            return;
        }
        if wr
            .write_all(&frame.encode(Direction::Feedback))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A running simulated console; dropping it stops its servers and closes its connections.
pub struct SimHandle {
    pub(super) control_addr: SocketAddr,
    pub(super) file_addr: SocketAddr,
    pub(super) console: Arc<Mutex<Console>>,
    /// Whether the console is on the network; connections watch it.
    pub(super) link: Link,
    pub(super) _stop: Vec<oneshot::Sender<()>>,
}

/// One simulated channel seen from outside, for tests and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSnapshot {
    /// The status code GET_CHANNELS_INFO reports ([`status`](crate::arbin::wire::status)).
    pub status: i16,
    /// The assigned schedule and the test (running or last) on the channel.
    pub schedule: Option<String>,
    pub test: Option<String>,
    /// Records the test has logged, and its test time, s.
    pub records: u64,
    pub test_time_s: f64,
    /// The cell now: terminal voltage, current (+ = into the cell) and state of charge.
    pub voltage_v: f64,
    pub current_a: f64,
    pub soc: f64,
}

impl SimHandle {
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    pub fn file_addr(&self) -> SocketAddr {
        self.file_addr
    }

    /// A client configuration for this console, with its login and `timeout`.
    pub fn client_config(&self, timeout: Duration) -> ArbinConfig {
        let c = lock(&self.console);
        ArbinConfig {
            control_port: self.control_addr.port(),
            file_port: self.file_addr.port(),
            timeout,
            ..ArbinConfig::new(
                self.control_addr.ip(),
                &c.config.username,
                &c.config.password,
            )
        }
    }

    /// Channel `index` now, or `None` if the console has no such channel.
    pub fn channel(&self, index: u32) -> Option<ChannelSnapshot> {
        let mut c = lock(&self.console);
        c.advance();
        let ch = c.channels.get(usize::try_from(index).ok()?)?;
        let current = ch.current_a();
        Some(ChannelSnapshot {
            status: ch.status(),
            schedule: ch.assigned.clone(),
            test: ch.test.as_ref().map(|t| t.name.clone()),
            records: ch.test.as_ref().map_or(0, |t| t.run.log().count()),
            test_time_s: ch.test.as_ref().map_or(0.0, |t| t.run.test_time_s()),
            voltage_v: ch.cell.cell().terminal_voltage(current),
            current_a: current,
            soc: ch.cell.cell().soc(),
        })
    }

    /// The device-side log of the test on channel `index` (record k at index k - 1).
    pub fn records(&self, index: u32) -> Vec<DataRecord> {
        let mut c = lock(&self.console);
        c.advance();
        usize::try_from(index)
            .ok()
            .and_then(|i| c.channels.get(i))
            .and_then(|ch| ch.test.as_ref())
            .map_or_else(Vec::new, |t| {
                t.run.log().entries().iter().map(|s| t.record(s)).collect()
            })
    }

    /// The uploaded file `name` (any case), as text.
    pub fn file(&self, name: &str) -> Option<String> {
        lock(&self.console).files.get(&file_key(name)).cloned()
    }

    /// Trips channel `index` into `fault` now with `reason` as its exit condition: output
    /// off, the test's log kept up to this moment. False when it runs no test.
    pub fn set_fault(&self, index: u32, fault: SimFault, reason: &str) -> bool {
        let mut c = lock(&self.console);
        c.advance();
        let state = match fault {
            SimFault::Unsafe => EndState::Unsafe,
            SimFault::Error => EndState::Error,
        };
        usize::try_from(index)
            .ok()
            .and_then(|i| c.channels.get_mut(i))
            .is_some_and(|ch| ch.end_test(state, reason))
    }

    /// Pauses (output off, test time stands still) or resumes the test on channel `index`,
    /// as an operator at the console would. False when there is no such test.
    pub fn set_paused(&self, index: u32, paused: bool) -> bool {
        let mut c = lock(&self.console);
        c.advance();
        usize::try_from(index)
            .ok()
            .and_then(|i| c.channels.get_mut(i))
            .and_then(|ch| ch.test.as_mut())
            .is_some_and(|t| t.run.set_paused(paused))
    }

    /// Takes the console off the network, as a pulled LAN cable does: open connections close
    /// and new ones are closed on arrival. The channels keep running their tests.
    pub fn cut_link(&self) {
        self.link.cut();
    }

    /// Puts the console back on the network, on the same addresses.
    pub fn restore_link(&self) {
        self.link.restore();
    }

    /// Delays every reply by `delay` of wall time (zero for none), for timeout tests.
    pub fn set_reply_delay(&self, delay: Duration) {
        lock(&self.console).faults.set_reply_delay(delay);
    }

    /// Refuses the next `n` commands that carry a result: ASSIGN_SCHEDULE, START and STOP with
    /// 0x11 (the Monitor & Control window is busy, the usual transient refusal), UPLOAD with
    /// "failed".
    pub fn fail_next(&self, n: u32) {
        lock(&self.console).faults.fail_next(n, ());
    }
}
