//! The I/O: [`MaccorSim`] serving both protocols on their sockets, the connections' loops,
//! and the [`SimHandle`] with its getters and fault switches.

use super::{Channel, Session, SimConfig, Tester, binary_reply, json_reply};
use crate::Clock;
use crate::maccor::client::MaccorConfig;
use crate::maccor::wire::{self, Reading, rf1, stat};
use crate::transport::faults::Faults;
use crate::transport::lock;
use crate::transport::network::{Link, accept_while_linked, delay_unless_cut, unless_cut};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

#[derive(Clone, Copy)]
pub(super) enum Protocol {
    Json,
    Binary,
}

/// Starts simulated testers.
pub struct MaccorSim;

impl MaccorSim {
    /// Serves a simulated tester, JSON on `json` and binary on `binary`, until the returned
    /// handle is dropped.
    pub fn spawn(
        json: TcpListener,
        binary: TcpListener,
        config: SimConfig,
        clock: Clock,
    ) -> io::Result<SimHandle> {
        let json_addr = json.local_addr()?;
        let binary_addr = binary.local_addr()?;
        let now = clock.now();
        let tester = Arc::new(Mutex::new(Tester {
            channels: config
                .cells
                .iter()
                .map(|c| Channel::new(c.clone(), now))
                .collect(),
            config,
            clock,
            procedures: HashMap::new(),
            names: HashSet::new(),
            random_names: 0,
            faults: Faults::none(),
            misroute: None,
        }));
        let link = Link::up();
        let mut stops = Vec::new();
        for (listener, protocol) in [(json, Protocol::Json), (binary, Protocol::Binary)] {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stops.push(stop_tx);
            tokio::spawn(serve(
                listener,
                Arc::clone(&tester),
                protocol,
                link.watch(),
                stop_rx,
            ));
        }
        Ok(SimHandle {
            json_addr,
            binary_addr,
            tester,
            link,
            _stop: stops,
        })
    }
}

pub(super) async fn serve(
    listener: TcpListener,
    tester: Arc<Mutex<Tester>>,
    protocol: Protocol,
    link: watch::Receiver<bool>,
    stop: oneshot::Receiver<()>,
) {
    accept_while_linked(listener, link, stop, "maccor sim", |stream, link| {
        let tester = Arc::clone(&tester);
        match protocol {
            Protocol::Json => tokio::spawn(json_connection(stream, tester, link)),
            Protocol::Binary => tokio::spawn(binary_connection(stream, tester, link)),
        };
    })
    .await
}

/// Waits out the injected reply delay; false when the link was cut meanwhile.
pub(super) async fn delay(tester: &Mutex<Tester>, link: &mut watch::Receiver<bool>) -> bool {
    let delay = lock(tester).faults.reply_delay();
    delay_unless_cut(delay, link).await
}

pub(super) async fn json_connection(
    stream: TcpStream,
    tester: Arc<Mutex<Tester>>,
    mut link: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    // Framed by complete object (facts): pretty-printed over lines, with or without a
    // terminator, several in one read.
    let mut objects = wire::JsonSplitter::new(wire::MAX_JSON_OBJECT);
    loop {
        loop {
            let (reply, last) = match objects.next_object() {
                Ok(None) => break,
                Ok(Some(object)) => {
                    let text = String::from_utf8_lossy(&object).into_owned();
                    (json_reply(&mut lock(&tester), &text), false)
                }
                // Bytes that start no object get one "Parse error" each run of them.
                Err(wire::SplitError::Garbage(_)) => (
                    wire::json_error_line(&serde_json::Value::Null, wire::json_error::PARSE_ERROR),
                    false,
                ),
                // An object that never closes: answer, then close (its end cannot be found).
                Err(wire::SplitError::TooLong(_)) => (
                    wire::json_error_line(&serde_json::Value::Null, wire::json_error::PARSE_ERROR),
                    true,
                ),
            };
            if !delay(&tester, &mut link).await
                || wr.write_all(reply.as_bytes()).await.is_err()
                || last
            {
                return;
            }
        }
        // A cut link (or a dropped handle) ends the connection, closing the socket.
        let mut chunk = [0u8; 4096];
        match unless_cut(&mut link, rd.read(&mut chunk)).await {
            None | Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) => objects.push(&chunk[..n]),
        }
    }
}

pub(super) async fn binary_connection(
    stream: TcpStream,
    tester: Arc<Mutex<Tester>>,
    mut link: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let mut session = Session::default();
    loop {
        while let Some((frame, used)) = wire::split_frame(&buf, wire::Direction::Request) {
            buf.drain(..used);
            let reply = binary_reply(&mut lock(&tester), &mut session, &frame);
            let Some(reply) = reply else { continue };
            if !delay(&tester, &mut link).await || wr.write_all(&reply.encode()).await.is_err() {
                return;
            }
        }
        let mut chunk = [0u8; 4096];
        match unless_cut(&mut link, rd.read(&mut chunk)).await {
            None | Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A running simulated tester; dropping it stops its servers.
pub struct SimHandle {
    pub(super) json_addr: SocketAddr,
    pub(super) binary_addr: SocketAddr,
    pub(super) tester: Arc<Mutex<Tester>>,
    /// Whether the tester is on the network; connections watch it.
    pub(super) link: Link,
    pub(super) _stop: Vec<oneshot::Sender<()>>,
}

/// One channel as the simulator sees it, for tests and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSnapshot {
    /// The MacNet codes the channel reports now.
    pub stat: u16,
    pub rf1: u8,
    pub rf2: u8,
    /// The test on the channel (or the last one), with its name on the tester.
    pub test: Option<String>,
    /// Records in the channel's log (its newest index).
    pub last_rec: u32,
    /// Terminal voltage and current (+ = into the cell), to check what the client reports.
    pub voltage_v: f64,
    pub current_a: f64,
    /// The cell's state of charge, to check that the channel really drove it.
    pub soc: f64,
    /// The cell's temperature, degC, what the channel's first aux input reads.
    pub temperature_c: f64,
    /// Why the engine faulted, when it did.
    pub fault: Option<String>,
}

impl SimHandle {
    pub fn json_addr(&self) -> SocketAddr {
        self.json_addr
    }

    pub fn binary_addr(&self) -> SocketAddr {
        self.binary_addr
    }

    /// A client configuration for this tester with `timeout`.
    pub fn client_config(&self, timeout: Duration) -> MaccorConfig {
        MaccorConfig {
            address: self.json_addr.ip(),
            binary_port: self.binary_addr.port(),
            json_port: self.json_addr.port(),
            timeout,
            ..MaccorConfig::new(self.json_addr.ip())
        }
    }

    pub fn snapshot(&self, chan: u16) -> ChannelSnapshot {
        let mut t = lock(&self.tester);
        t.advance();
        let c = &t.channels[usize::from(chan)];
        ChannelSnapshot {
            stat: c.stat,
            rf1: c.rf1,
            rf2: c.rf2,
            test: c.test.as_ref().map(|t| t.name.clone()),
            last_rec: c.log.count() as u32,
            voltage_v: c.cell.terminal_voltage(c.current_a),
            current_a: c.current_a,
            soc: c.cell.soc(),
            temperature_c: c.cell.temperature_c(),
            fault: c.fault.clone(),
        }
    }

    /// The channel's device-side record log (record `i + 1` at index `i`).
    pub fn records(&self, chan: u16) -> Vec<Reading> {
        let mut t = lock(&self.tester);
        t.advance();
        t.channels[usize::from(chan)].log.entries().to_vec()
    }

    /// Names of the procedures received (upper case, without `.000`).
    pub fn procedures(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.tester).procedures.keys().cloned().collect();
        names.sort();
        names
    }

    /// Clock times at which direct outputs on `chan` were accepted.
    pub fn direct_outputs(&self, chan: u16) -> Vec<f64> {
        lock(&self.tester).channels[usize::from(chan)]
            .outputs
            .clone()
    }

    /// How many direct outputs on `chan` were refused as sent too fast (result 3).
    pub fn refused_outputs(&self, chan: u16) -> u32 {
        lock(&self.tester).channels[usize::from(chan)].refused_outputs
    }

    /// Puts `chan` in a problem state (Stat 5, RF1 29) with `rf2` as the cause, output off,
    /// as a tripped channel safety limit does.
    pub fn set_problem(&self, chan: u16, rf2: u8) {
        let mut t = lock(&self.tester);
        t.advance();
        let clock = t.clock.clone();
        let ch = &mut t.channels[usize::from(chan)];
        ch.set_state(stat::PROBLEM, rf1::PROBLEM, rf2);
        ch.log_record(&clock, None);
    }

    /// Takes the tester off the network, as a pulled LAN cable does: open connections close
    /// and new ones are closed on arrival. The channels keep running their tests.
    pub fn cut_link(&self) {
        self.link.cut();
    }

    /// Puts the tester back on the network, on the same addresses.
    pub fn restore_link(&self) {
        self.link.restore();
    }

    /// Delays every reply by `delay` of wall time (zero for none), for timeout tests.
    pub fn set_reply_delay(&self, delay: Duration) {
        lock(&self.tester).faults.set_reply_delay(delay);
    }

    /// Answers the next `n` requests (either protocol) with an error: JSON "MacNet error",
    /// binary an empty reply.
    pub fn fail_next(&self, n: u32) {
        lock(&self.tester).faults.fail_next(n, ());
    }

    /// Answers the next (4,7) reading with channel `other`'s reading and number, as a confused
    /// server might; a client must not take it for the channel it asked for.
    pub fn misroute_next_reading(&self, other: u16) {
        lock(&self.tester).misroute = Some(other);
    }
}
