//! The MacNet driver: a JSON and a binary TCP connection to the tester, the
//! [`Cycler`] implementation for native tests, and [`MaccorDirect`] for direct mode.

use super::wire::{
    self, DirectStart, Frame, Function, JsonReply, Mode, Output, Packet, Reading, ResultKind,
    StartTest, StatusBlock, SystemInfo, Version, stat,
};
use crate::cycler::{ChannelAddr, ChannelState, ChannelStatus, Cycler, Record, Schedule};
use crate::stage::{self, PowerStage};
use crate::{Clock, DriverError};
use cyclerd_protocols::Command;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Default bound on one exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most records asked for in one download, so a transfer stays well inside the u16 block
/// counter and one timeout per block.
pub const MAX_RECORDS_PER_DOWNLOAD: usize = 10_000;
/// Margin added to the 100 ms output spacing, against rounding in the tester's tick clock.
const OUTPUT_SPACING_MARGIN_S: f64 = 0.001;
/// How often an output refused as "too fast" or "not ready" is tried again.
const OUTPUT_ATTEMPTS: usize = 3;

/// Where the tester is and how long to wait for it.
#[derive(Debug, Clone, PartialEq)]
pub struct MaccorConfig {
    /// The tester PC's address.
    pub address: IpAddr,
    /// Binary protocol port (file transfer, select + start, direct output); default 57560.
    pub binary_port: u16,
    /// JSON protocol port (everything else); default 57570.
    pub json_port: u16,
    /// Bound on every exchange: a request and its reply, or one file-transfer block; past it
    /// the link counts as lost. Default 5 s.
    pub timeout: Duration,
}

impl MaccorConfig {
    /// The tester at `address` on the default ports (System.ini's) with the default timeout.
    pub fn new(address: IpAddr) -> MaccorConfig {
        MaccorConfig {
            address,
            binary_port: wire::DEFAULT_BINARY_PORT,
            json_port: wire::DEFAULT_JSON_PORT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

fn timeout_error(during: &'static str, timeout: Duration) -> DriverError {
    DriverError::Timeout {
        during,
        timeout_ms: timeout.as_millis() as u64,
    }
}

fn link_error(during: &'static str, message: impl Into<String>) -> DriverError {
    DriverError::Link {
        during,
        message: message.into(),
    }
}

fn bad_reply(during: &'static str, message: impl Into<String>) -> DriverError {
    DriverError::BadReply {
        during,
        message: message.into(),
    }
}

async fn open(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, DriverError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| timeout_error("connecting", timeout))?
        .map_err(|source| DriverError::Connect { addr, source })?;
    // Small request/reply messages: waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The JSON connection. A failed or timed-out exchange poisons it (a late reply would be read
/// as the answer to the next request) until the client reconnects.
struct JsonLink {
    stream: BufReader<TcpStream>,
    next_id: u64,
    poisoned: bool,
}

impl JsonLink {
    async fn call(
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
        let exchange = async {
            stream.get_mut().write_all(line.as_bytes()).await?;
            let mut buf = Vec::new();
            let mut limited = stream.take(wire::MAX_JSON_LINE as u64);
            let n = limited.read_until(b'\n', &mut buf).await?;
            Ok::<_, std::io::Error>((n, buf))
        };
        let (n, buf) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| timeout_error(during, timeout))?
            .map_err(|e| link_error(during, e.to_string()))?;
        if n == 0 {
            return Err(link_error(during, "the tester closed the connection"));
        }
        if buf.last() != Some(&b'\n') {
            return Err(bad_reply(during, "a reply line without its terminator"));
        }
        let reply = wire::parse_json_reply(&String::from_utf8_lossy(&buf))
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
struct BinaryLink {
    stream: TcpStream,
    /// Bytes received past the last frame.
    buf: Vec<u8>,
    poisoned: bool,
}

impl BinaryLink {
    async fn send(
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

    async fn receive(
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

    async fn transact(
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

/// What this client knows about a channel's test beyond what MacNet reports (MacNet's status
/// carries no test name).
#[derive(Debug, Clone)]
struct KnownTest {
    /// The name the test has on the tester.
    name: String,
    /// Seen completed or in a problem state, so a later "available" is a reset, not a stop.
    ended: bool,
}

/// A connected Maccor tester.
pub struct MaccorClient {
    config: MaccorConfig,
    json: JsonLink,
    binary: BinaryLink,
    info: SystemInfo,
    /// Tests this client started, by channel, so status can name them and tell a stop.
    tests: HashMap<u16, KnownTest>,
    /// Whether the tester serves the record-log download; `None` until first tried.
    record_log: Option<bool>,
}

impl MaccorClient {
    /// Connects both protocols and reads the system info (number of channels).
    pub async fn connect(config: MaccorConfig) -> Result<MaccorClient, DriverError> {
        let (json, binary) = Self::open_links(&config).await?;
        let mut client = MaccorClient {
            config,
            json,
            binary,
            info: SystemInfo {
                system_id: String::new(),
                system_type: 0,
                controller_boards: 0,
                test_channels: 0,
                aux_boards: 0,
                aux_channels: 0,
            },
            tests: HashMap::new(),
            record_log: None,
        };
        client.info = client.read_system_info().await?;
        Ok(client)
    }

    async fn open_links(config: &MaccorConfig) -> Result<(JsonLink, BinaryLink), DriverError> {
        let json = open(
            SocketAddr::new(config.address, config.json_port),
            config.timeout,
        )
        .await?;
        Ok((
            JsonLink {
                stream: BufReader::new(json),
                next_id: 0,
                poisoned: false,
            },
            open_binary(config).await?,
        ))
    }

    /// What the tester reported at the last connect (or [`Cycler::channels`]).
    pub fn system_info(&self) -> &SystemInfo {
        &self.info
    }

    async fn call(
        &mut self,
        function: Function,
        chan: Option<u16>,
        params: Map<String, Value>,
        during: &'static str,
    ) -> Result<(Option<u16>, Map<String, Value>), DriverError> {
        self.json
            .call(function, chan, params, self.config.timeout, during)
            .await
    }

    async fn read_system_info(&mut self) -> Result<SystemInfo, DriverError> {
        let during = "reading the system info (1,2)";
        let (_, fields) = self
            .call(wire::SYSTEM_INFO, None, Map::new(), during)
            .await?;
        SystemInfo::from_json(&fields).map_err(|e| bad_reply(during, e.to_string()))
    }

    /// (1,1): the tester software's versions.
    pub async fn version(&mut self) -> Result<Version, DriverError> {
        let during = "reading the version (1,1)";
        let (_, fields) = self.call(wire::VERSION, None, Map::new(), during).await?;
        Version::from_json(&fields).map_err(|e| bad_reply(during, e.to_string()))
    }

    /// (4,7): one channel's status and present reading, checked to be that channel's.
    pub async fn reading(&mut self, chan: u16) -> Result<Reading, DriverError> {
        let during = "reading a channel (4,7)";
        let (got, fields) = self
            .call(wire::READING, Some(chan), Map::new(), during)
            .await?;
        if got != Some(chan) {
            return Err(bad_reply(
                during,
                format!(
                    "a reading for {}, to a request for channel {chan}",
                    channel_name(got)
                ),
            ));
        }
        Reading::from_json(&fields).map_err(|e| bad_reply(during, e.to_string()))
    }

    /// (4,1) for `count` channels from `first`, checked to cover exactly those.
    async fn status_block(&mut self, first: u16, count: u16) -> Result<StatusBlock, DriverError> {
        let during = "reading channel status (4,1)";
        let mut params = Map::new();
        params.insert("Len".into(), count.into());
        let (_, fields) = self.call(wire::STATUS, Some(first), params, during).await?;
        let block =
            StatusBlock::from_json(&fields).map_err(|e| bad_reply(during, e.to_string()))?;
        if block.first != first || block.entries.len() != usize::from(count) {
            return Err(bad_reply(
                during,
                format!(
                    "status of {} channels from {}, to a request for {count} from {first}",
                    block.entries.len(),
                    block.first
                ),
            ));
        }
        Ok(block)
    }

    /// A JSON command whose reply is a result code.
    async fn command_json(
        &mut self,
        function: Function,
        chan: u16,
        params: Map<String, Value>,
        during: &'static str,
    ) -> Result<u32, DriverError> {
        let (got, fields) = self.call(function, Some(chan), params, during).await?;
        if got.is_some_and(|g| g != chan) {
            return Err(bad_reply(
                during,
                format!(
                    "a reply for {}, to a request for channel {chan}",
                    channel_name(got)
                ),
            ));
        }
        wire::json_result_code(&fields).map_err(|e| bad_reply(during, e.to_string()))
    }

    /// A binary command whose reply is a result code.
    async fn command_binary(
        &mut self,
        frame: &Frame,
        during: &'static str,
    ) -> Result<u32, DriverError> {
        let reply = self
            .binary
            .transact(frame, self.config.timeout, during)
            .await?;
        wire::decode_result(&reply).map_err(|e| bad_reply(during, e.to_string()))
    }

    /// (6,3): suspends the test on `chan`.
    pub async fn suspend(&mut self, chan: u16) -> Result<(), DriverError> {
        let during = "suspending a test (6,3)";
        let code = self
            .command_json(wire::SUSPEND, chan, Map::new(), during)
            .await?;
        refused_unless_ok(code, ResultKind::Command, during, "")
    }

    /// (6,4): resumes a suspended test on `chan`.
    pub async fn resume(&mut self, chan: u16) -> Result<(), DriverError> {
        let during = "resuming a test (6,4)";
        let code = self
            .command_json(wire::RESUME, chan, Map::new(), during)
            .await?;
        refused_unless_ok(code, ResultKind::Command, during, "")
    }

    async fn reset(&mut self, chan: u16, during: &'static str) -> Result<(), DriverError> {
        let code = self
            .command_json(wire::RESET, chan, Map::new(), during)
            .await?;
        refused_unless_ok(code, ResultKind::Command, during, "")
    }

    /// (1,6): writes `bytes` to the tester as file `name` of `file_type`, block by block.
    pub async fn send_file(
        &mut self,
        name: &str,
        file_type: u16,
        bytes: &[u8],
    ) -> Result<(), DriverError> {
        let during = "sending a file (1,6)";
        let timeout = self.config.timeout;
        let write = Packet::Write {
            file_type,
            name: name.to_string(),
        };
        let reply = self
            .binary
            .transact(&write.to_frame(0), timeout, during)
            .await?;
        expect_ack(&reply, 0, name, during)?;
        // A last block shorter than a full one ends the file, so a file that fills its last
        // block exactly is followed by an empty one.
        let mut blocks: Vec<&[u8]> = bytes.chunks(wire::BLOCK_SIZE).collect();
        if bytes.len().is_multiple_of(wire::BLOCK_SIZE) {
            blocks.push(&[]);
        }
        for (i, chunk) in blocks.into_iter().enumerate() {
            let block = u16::try_from(i + 1).map_err(|_| {
                DriverError::Unsupported(format!(
                    "{name} is too large for a MacNet file transfer ({} bytes)",
                    bytes.len()
                ))
            })?;
            let data = Packet::Data {
                block,
                bytes: chunk.to_vec(),
            };
            let reply = self
                .binary
                .transact(&data.to_frame(0), timeout, during)
                .await?;
            expect_ack(&reply, block, name, during)?;
        }
        Ok(())
    }

    /// The record-log download (see the module doc): `Ok(None)` when the tester refuses it,
    /// or ignores it while still answering on the JSON port.
    async fn download(
        &mut self,
        chan: u16,
        from: u64,
        max: usize,
    ) -> Result<Option<Vec<Record>>, DriverError> {
        let during = "downloading records (1,6)";
        let timeout = self.config.timeout;
        let Ok(from32) = u32::try_from(from) else {
            return Ok(Some(Vec::new()));
        };
        let request = Packet::Read {
            file_type: wire::FILE_TYPE_RECORD_LOG,
            from: from32,
            max: max.min(MAX_RECORDS_PER_DOWNLOAD) as u32,
        };
        self.binary
            .send(&request.to_frame(chan), timeout, during)
            .await?;
        let mut bytes = Vec::new();
        let mut expected: u16 = 1;
        loop {
            let reply = match self.binary.receive(timeout, during).await {
                Ok(reply) => reply,
                // Silence to the request itself: a tester that does not know it may simply
                // not answer. If it still answers JSON, it is alive and ignored the request;
                // a fresh binary connection drops whatever it might still send.
                Err(DriverError::Timeout { .. }) if expected == 1 => {
                    self.reading(chan).await?;
                    self.binary = open_binary(&self.config).await?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            if reply.function != wire::FILE_TRANSFER || reply.chan != chan {
                self.binary.poisoned = true;
                return Err(bad_reply(
                    during,
                    format!(
                        "{} for channel {}, during a download for channel {chan}",
                        reply.function, reply.chan
                    ),
                ));
            }
            if reply.data.is_empty() && expected == 1 {
                return Ok(None);
            }
            match Packet::from_frame(&reply).map_err(|e| bad_reply(during, e.to_string()))? {
                Packet::Data { block, bytes: data } if block == expected => {
                    bytes.extend_from_slice(&data);
                    self.binary
                        .send(&Packet::Ack { block }.to_frame(chan), timeout, during)
                        .await?;
                    if data.len() < wire::BLOCK_SIZE {
                        break;
                    }
                    expected = expected.checked_add(1).ok_or_else(|| {
                        bad_reply(during, "more blocks than a transfer can number")
                    })?;
                }
                Packet::Error { message, .. } if expected == 1 => {
                    tracing::info!("the tester refused the record-log download: {message}");
                    return Ok(None);
                }
                Packet::Error { code, message } => {
                    return Err(DriverError::Refused {
                        during,
                        message: format!("the tester broke off the download: {message} ({code})"),
                    });
                }
                other => {
                    self.binary.poisoned = true;
                    return Err(bad_reply(
                        during,
                        format!("expected data block {expected}, got {other:?}"),
                    ));
                }
            }
        }
        if !bytes.len().is_multiple_of(wire::READING_LEN) {
            return Err(bad_reply(
                during,
                format!(
                    "{} bytes of records, not a whole number of {}-byte records",
                    bytes.len(),
                    wire::READING_LEN
                ),
            ));
        }
        let mut records = Vec::with_capacity(bytes.len() / wire::READING_LEN);
        for (i, chunk) in bytes.chunks_exact(wire::READING_LEN).enumerate() {
            let r = Reading::from_bytes(chunk).map_err(|e| bad_reply(during, e.to_string()))?;
            let want = from + i as u64;
            if u64::from(r.last_rec) != want {
                return Err(bad_reply(
                    during,
                    format!("record {} where record {want} belongs", r.last_rec),
                ));
            }
            records.push(record(&r));
        }
        Ok(Some(records))
    }

    fn chan(&self, addr: ChannelAddr) -> Result<u16, DriverError> {
        let chan = u16::try_from(addr.channel)
            .ok()
            .filter(|&c| addr.unit == 0 && addr.sub_unit == 0 && c < self.info.test_channels);
        chan.ok_or_else(|| {
            DriverError::Identity(format!(
                "channel {addr} is not on this tester: it has channels 0-0-0 to 0-0-{} \
                 (MacNet counts channels from 0)",
                self.info.test_channels.saturating_sub(1)
            ))
        })
    }

    /// The cyclerd state of a channel from its MacNet codes.
    fn state(&self, chan: u16, r: &Reading) -> ChannelState {
        let problem = || ChannelState::Fault {
            reason: format!(
                "the tester reports a problem on channel {chan}: {} after {} (Stat {}, RF1 {}, \
                 RF2 {})",
                wire::name_of(wire::rf1::NAMES, r.rf1),
                wire::name_of(wire::rf2::NAMES, r.rf2),
                r.stat,
                r.rf1,
                r.rf2
            ),
        };
        match r.stat {
            stat::AVAILABLE | stat::SELECTED => match self.tests.get(&chan) {
                Some(t) if !t.ended => ChannelState::Stopped,
                _ => ChannelState::Idle,
            },
            stat::ACTIVE => match r.rf1 {
                wire::rf1::PROBLEM => problem(),
                wire::rf1::SUSPENDED => ChannelState::Paused,
                wire::rf1::COMPLETE => ChannelState::Finished,
                _ => ChannelState::Running,
            },
            stat::SUSPENDED => ChannelState::Paused,
            stat::COMPLETED => ChannelState::Finished,
            stat::PROBLEM => problem(),
            s if s <= stat::MAINTENANCE_LAST => ChannelState::Fault {
                reason: format!("channel {chan} is in maintenance state {s}"),
            },
            s => ChannelState::Fault {
                reason: format!("channel {chan} reports the unknown state Stat {s}"),
            },
        }
    }

    async fn reconnect_links(&mut self) -> Result<(), DriverError> {
        let (json, binary) = Self::open_links(&self.config).await?;
        self.json = json;
        self.binary = binary;
        self.info = self.read_system_info().await?;
        Ok(())
    }
}

async fn open_binary(config: &MaccorConfig) -> Result<BinaryLink, DriverError> {
    let stream = open(
        SocketAddr::new(config.address, config.binary_port),
        config.timeout,
    )
    .await?;
    Ok(BinaryLink {
        stream,
        buf: Vec::new(),
        poisoned: false,
    })
}

/// A reply's channel for a message.
fn channel_name(chan: Option<u16>) -> String {
    chan.map_or_else(|| "no channel".into(), |c| format!("channel {c}"))
}

fn expect_ack(
    reply: &Frame,
    block: u16,
    name: &str,
    during: &'static str,
) -> Result<(), DriverError> {
    match Packet::from_frame(reply).map_err(|e| bad_reply(during, e.to_string()))? {
        Packet::Ack { block: b } if b == block => Ok(()),
        Packet::Error { code, message } => Err(DriverError::Refused {
            during,
            message: format!("the tester refused {name}: {message} (transfer error {code})"),
        }),
        other => Err(bad_reply(
            during,
            format!("expected the acknowledgement of block {block}, got {other:?}"),
        )),
    }
}

fn refused_unless_ok(
    code: u32,
    kind: ResultKind,
    during: &'static str,
    context: &str,
) -> Result<(), DriverError> {
    if code == wire::result::OK {
        Ok(())
    } else {
        Err(DriverError::Refused {
            during,
            message: format!("{context}{}", wire::describe_result(kind, code)),
        })
    }
}

/// A logged reading as a cyclerd record.
fn record(r: &Reading) -> Record {
    Record {
        index: u64::from(r.last_rec),
        test_time_s: f64::from(r.test_time_s),
        voltage_v: f64::from(r.voltage_v),
        current_a: r.signed_current(),
        temperature_c: None,
        step: u32::from(r.step),
        // MacNet counts cycles from 0, cyclerd from 1.
        cycle: r.cycle.saturating_add(1),
        capacity_ah: f64::from(r.capacity_ah),
        energy_wh: f64::from(r.energy_wh),
    }
}

/// The procedure name for a schedule file (`CCCV.000` -> `CCCV`), fitted to 25 bytes.
fn procedure_name(file_name: &str) -> String {
    let stem = match file_name.rsplit_once('.') {
        Some((stem, ext)) if ext.eq_ignore_ascii_case("000") => stem,
        _ => file_name,
    };
    wire::short_name(stem)
}

impl Cycler for MaccorClient {
    async fn channels(&mut self) -> Result<Vec<ChannelAddr>, DriverError> {
        self.info = self.read_system_info().await?;
        Ok((0..u32::from(self.info.test_channels))
            .map(|channel| ChannelAddr {
                unit: 0,
                sub_unit: 0,
                channel,
            })
            .collect())
    }

    async fn status(
        &mut self,
        channels: &[ChannelAddr],
    ) -> Result<Vec<ChannelStatus>, DriverError> {
        let chans = channels
            .iter()
            .map(|&a| self.chan(a))
            .collect::<Result<Vec<_>, _>>()?;
        let (Some(&lo), Some(&hi)) = (chans.iter().min(), chans.iter().max()) else {
            return Ok(Vec::new());
        };
        // One (4,1) per 128 channels tells which channels have a test at all; entries are
        // numbered from the reply's own Chan.
        let mut stats = HashMap::new();
        let mut first = lo;
        while first <= hi {
            let count = (hi - first + 1).min(wire::MAX_STATUS_CHANNELS);
            let block = self.status_block(first, count).await?;
            for (i, entry) in block.entries.iter().enumerate() {
                stats.insert(block.first + i as u16, *entry);
            }
            first = match first.checked_add(count) {
                Some(f) => f,
                None => break,
            };
        }
        let mut out = Vec::with_capacity(chans.len());
        for (&addr, &chan) in channels.iter().zip(&chans) {
            let listed = stats.get(&chan).copied().ok_or_else(|| {
                bad_reply(
                    "reading channel status (4,1)",
                    format!("no entry for channel {chan}"),
                )
            })?;
            let idle = matches!(listed.stat, stat::AVAILABLE | stat::SELECTED)
                && !self.tests.contains_key(&chan);
            let (state, last_record) = if idle {
                (ChannelState::Idle, 0)
            } else {
                // (4,7) for the record counter, and the newer state.
                let r = self.reading(chan).await?;
                if matches!(r.stat, stat::COMPLETED | stat::PROBLEM)
                    && let Some(t) = self.tests.get_mut(&chan)
                {
                    t.ended = true;
                }
                (self.state(chan, &r), u64::from(r.last_rec))
            };
            out.push(ChannelStatus {
                addr,
                state,
                test: self.tests.get(&chan).map(|t| t.name.clone()),
                last_record,
            });
        }
        Ok(out)
    }

    async fn start(
        &mut self,
        channel: ChannelAddr,
        schedule: &Schedule,
        test: &str,
    ) -> Result<(), DriverError> {
        let chan = self.chan(channel)?;
        let name = wire::short_name(test);
        let procedure = procedure_name(&schedule.file_name);
        // A completed test holds the channel until it is reset; its data file stays on the
        // tester (the open client resets a completed channel the same way before a start).
        if self.reading(chan).await?.stat == stat::COMPLETED {
            self.reset(chan, "resetting the completed channel before a start (6,5)")
                .await?;
        }
        self.send_file(
            &format!("{procedure}.000"),
            wire::FILE_TYPE_PROCEDURE,
            schedule.text.as_bytes(),
        )
        .await?;
        let during = "selecting the channel (6,1)";
        let code = self
            .command_binary(&Frame::request(wire::SELECT, chan, 1), during)
            .await?;
        refused_unless_ok(
            code,
            ResultKind::Command,
            during,
            &format!("channel {chan}: "),
        )?;
        let start = StartTest {
            test_name: name.clone(),
            procedure,
            comment: format!("cyclerd test {test}"),
            // Compiled procedures hold absolute values; 1 is MacNet's "not used".
            c_rate: 1.0,
            chamber: 0,
        };
        let during = "starting the test (6,2)";
        let code = self.command_binary(&start.to_frame(chan), during).await?;
        refused_unless_ok(
            code,
            ResultKind::Command,
            during,
            &format!("test {test:?} (named {name:?} on the tester) on channel {chan}: "),
        )?;
        self.tests.insert(chan, KnownTest { name, ended: false });
        Ok(())
    }

    async fn stop(&mut self, channel: ChannelAddr) -> Result<(), DriverError> {
        let chan = self.chan(channel)?;
        self.reset(chan, "stopping the test (6,5)").await
    }

    /// Downloads from the record log (see the module doc); against a tester that does not
    /// serve it, returns the newest record from (4,7) only, so indexes jump over what was
    /// missed.
    async fn records(
        &mut self,
        channel: ChannelAddr,
        from: u64,
        max: usize,
    ) -> Result<Vec<Record>, DriverError> {
        let chan = self.chan(channel)?;
        let from = from.max(1);
        if max == 0 {
            return Ok(Vec::new());
        }
        if self.record_log != Some(false) {
            if let Some(records) = self.download(chan, from, max).await? {
                self.record_log = Some(true);
                return Ok(records);
            }
            tracing::warn!(
                "{}: the tester does not serve its record log over MacNet; following the \
                 newest record only (gaps stay in the tester's data file)",
                self.config.address
            );
            self.record_log = Some(false);
        }
        let r = self.reading(chan).await?;
        let last = u64::from(r.last_rec);
        if last < from {
            return Ok(Vec::new());
        }
        if last > from {
            tracing::warn!(
                "channel {chan}: records {from} to {} cannot be downloaded over MacNet",
                last - 1
            );
        }
        Ok(vec![record(&r)])
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        self.reconnect_links().await
    }
}

/// How a [`MaccorDirect`] stage drives its channel.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectConfig {
    /// The channel's current rating, A. Direct mode needs every limit "active" (inside the
    /// channel's range) from (6,7) on, so the ratings stand for "no limit" instead of an
    /// out-of-range value.
    pub max_current_a: f32,
    /// The channel's voltage rating, V (the (6,7) voltage limit).
    pub max_voltage_v: f32,
    /// The channel's power rating, W (the power limit of current and voltage outputs).
    pub max_power_w: f32,
    /// Current range of every output, 1 to 4 (default 4, the highest).
    pub current_range: u8,
    /// Clock seconds after which a read re-sends the last output, to keep the tester's
    /// `MacNetDirectModeWD` watchdog fed; keep it below the watchdog's setting. Default 1 s.
    pub keepalive_s: f64,
    /// Seconds between records in the tester's own data file of the direct-mode test (0 for
    /// none). Default 1 s.
    pub record_every_s: f32,
}

impl DirectConfig {
    /// A channel rated `max_current_a`, `max_voltage_v`, with the defaults above.
    pub fn new(max_current_a: f32, max_voltage_v: f32) -> DirectConfig {
        DirectConfig {
            max_current_a,
            max_voltage_v,
            max_power_w: max_current_a * max_voltage_v,
            current_range: 4,
            keepalive_s: 1.0,
            record_every_s: 1.0,
        }
    }
}

/// One tester channel in MacNet direct mode, stepped by cyclerd's engine.
pub struct MaccorDirect {
    client: MaccorClient,
    chan: u16,
    config: DirectConfig,
    clock: Clock,
    /// The command last applied and the output it became: a repeated command keeps its
    /// output (a CV step keeps the direction it started in).
    applied: Option<(Command, Output)>,
    /// The output the tester last accepted.
    sent: Option<Output>,
    /// Clock time of the last direct-mode command's reply, for the 100 ms spacing and the
    /// keep-alive.
    sent_at: Option<f64>,
    /// Latest voltage read, to choose the direction of a CV step that follows a rest.
    voltage_v: f64,
}

impl MaccorDirect {
    /// Starts a direct-mode test named `test` on `channel` (6,7), output at 0 A. The name is
    /// shortened like [`Cycler::start`] does.
    pub async fn enter(
        mut client: MaccorClient,
        channel: ChannelAddr,
        test: &str,
        config: DirectConfig,
        clock: Clock,
    ) -> Result<MaccorDirect, DriverError> {
        let chan = client.chan(channel)?;
        let name = wire::short_name(test);
        // The open client could not start in rest; charge at 0 A is the same output.
        let output = Output {
            current_a: 0.0,
            voltage_v: config.max_voltage_v,
            power_w: config.max_power_w,
            resistance_ohm: 0.0,
            range: config.current_range,
            mode: Mode::Charge,
        };
        let start = DirectStart {
            test_name: name.clone(),
            output,
            record_every_s: config.record_every_s,
            record_dv: 0.0,
            record_di: 0.0,
        };
        let during = "starting direct mode (6,7)";
        let code = client
            .command_json(wire::DIRECT_START, chan, start.to_json(), during)
            .await?;
        let sent_at = clock.now();
        refused_unless_ok(
            code,
            ResultKind::Command,
            during,
            &format!(
                "direct-mode test {test:?} (named {name:?} on the tester) on channel {chan}: "
            ),
        )?;
        client.tests.insert(chan, KnownTest { name, ended: false });
        Ok(MaccorDirect {
            client,
            chan,
            config,
            clock,
            applied: None,
            sent: Some(output),
            sent_at: Some(sent_at),
            voltage_v: 0.0,
        })
    }

    /// Ends the direct-mode test (6,5), switching the channel off.
    pub async fn finish(&mut self) -> Result<(), DriverError> {
        self.client
            .reset(self.chan, "ending direct mode (6,5)")
            .await
    }

    /// The (6,8) output for `command`.
    fn output_for(&self, command: &Command) -> Output {
        let c = &self.config;
        let out = |current_a: f64, voltage_v: f64, power_w: f32, mode| Output {
            current_a: current_a as f32,
            voltage_v: voltage_v as f32,
            power_w,
            resistance_ohm: 0.0,
            range: c.current_range,
            mode,
        };
        match *command {
            Command::Off | Command::Chamber { .. } => Output::rest(c.current_range),
            Command::Current {
                amps, voltage_max, ..
            } if amps >= 0.0 => out(amps, voltage_max, c.max_power_w, Mode::Charge),
            Command::Current {
                amps, voltage_min, ..
            } => out(-amps, voltage_min, c.max_power_w, Mode::Discharge),
            // A channel regulates in one direction at a time: a hold keeps the direction of the
            // step before it (the CV phase of a charge charges); from rest, the direction
            // toward the target.
            Command::Voltage { volts, current_max } => {
                let mode = match self.applied.map(|(_, o)| o.mode) {
                    Some(m @ (Mode::Charge | Mode::Discharge)) => m,
                    _ if self.voltage_v <= volts => Mode::Charge,
                    _ => Mode::Discharge,
                };
                let amps = current_max.min(f64::from(c.max_current_a));
                out(amps, volts, c.max_power_w, mode)
            }
            Command::Power {
                watts, voltage_max, ..
            } if watts >= 0.0 => out(
                f64::from(c.max_current_a),
                voltage_max,
                watts as f32,
                Mode::Charge,
            ),
            Command::Power {
                watts, voltage_min, ..
            } => out(
                f64::from(c.max_current_a),
                voltage_min,
                -watts as f32,
                Mode::Discharge,
            ),
        }
    }

    /// Waits until 100 ms of clock time have passed since the last command's reply.
    async fn pace(&self) {
        if let Some(at) = self.sent_at {
            let wait =
                at + wire::MIN_OUTPUT_INTERVAL_S + OUTPUT_SPACING_MARGIN_S - self.clock.now();
            if wait > 0.0 {
                self.clock.sleep(wait).await;
            }
        }
    }

    /// Sends `output` over binary (6,8), never sooner than 100 ms after the last command.
    async fn send(&mut self, output: Output) -> Result<(), DriverError> {
        let during = "setting the direct-mode output (6,8)";
        for attempt in 1..=OUTPUT_ATTEMPTS {
            self.pace().await;
            let code = self
                .client
                .command_binary(&output.to_frame(self.chan), during)
                .await?;
            self.sent_at = Some(self.clock.now());
            match code {
                wire::direct_result::OK => {
                    self.sent = Some(output);
                    return Ok(());
                }
                // The tester's tick clock or its start-up may disagree with ours: try again
                // after another interval.
                wire::direct_result::TOO_FAST | wire::direct_result::NOT_READY
                    if attempt < OUTPUT_ATTEMPTS => {}
                other => {
                    return refused_unless_ok(
                        other,
                        ResultKind::DirectOutput,
                        during,
                        &format!("channel {}: ", self.chan),
                    );
                }
            }
        }
        Ok(())
    }

    fn keepalive_due(&self) -> bool {
        self.sent_at
            .is_some_and(|at| self.clock.now() - at >= self.config.keepalive_s)
    }
}

impl PowerStage for MaccorDirect {
    async fn read(&mut self) -> Result<stage::Reading, DriverError> {
        if self.keepalive_due()
            && let Some(output) = self.sent
        {
            self.send(output).await?;
        }
        let r = self.client.reading(self.chan).await?;
        self.voltage_v = f64::from(r.voltage_v);
        Ok(stage::Reading {
            voltage_v: f64::from(r.voltage_v),
            current_a: r.signed_current(),
            temperature_c: None,
            output_on: r.stat == stat::ACTIVE
                && matches!(r.rf1, wire::rf1::CHARGE | wire::rf1::DISCHARGE),
            alarm: r.stat == stat::PROBLEM || r.rf1 == wire::rf1::PROBLEM,
        })
    }

    async fn apply(&mut self, command: &Command) -> Result<(), DriverError> {
        let output = match self.applied {
            Some((c, o)) if c == *command => o,
            _ => self.output_for(command),
        };
        if self.sent != Some(output) || self.keepalive_due() {
            self.send(output).await?;
        }
        self.applied = Some((*command, output));
        Ok(())
    }

    async fn output_off(&mut self) -> Result<(), DriverError> {
        let rest = Output::rest(self.config.current_range);
        self.send(rest).await?;
        self.applied = Some((Command::Off, rest));
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        self.client.reconnect_links().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procedure_names_drop_the_extension_and_fit_the_field() {
        assert_eq!(procedure_name("CCCV.000"), "CCCV");
        assert_eq!(procedure_name("cccv"), "cccv");
        let long = procedure_name("a-very-long-procedure-name-for-a-cycle-life-test.000");
        assert!(long.len() <= wire::NAME_LEN);
    }

    #[test]
    fn records_take_the_sign_from_rf1_and_count_cycles_from_one() {
        let r = Reading {
            rf1: wire::rf1::DISCHARGE,
            rf2: 0,
            stat: stat::ACTIVE,
            last_rec: 12,
            cycle: 0,
            step: 3,
            test_time_s: 60.0,
            step_time_s: 30.0,
            capacity_ah: 0.5,
            energy_wh: 1.8,
            current_a: 2.5,
            voltage_v: 3.6,
            tester_time_ms: None,
        };
        let rec = record(&r);
        assert_eq!(rec.index, 12);
        assert_eq!(rec.current_a, -2.5);
        assert_eq!(rec.cycle, 1);
        assert_eq!(rec.step, 3);
    }
}
