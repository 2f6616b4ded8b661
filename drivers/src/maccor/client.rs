//! [`MaccorClient`], the MacNet driver of native tests: the [`Cycler`] implementation over a
//! JSON and a binary connection (`link`), with the record download.

use super::convert::{channel_name, expect_ack, procedure_name, record, refused_unless_ok};
use super::link::{BinaryLink, JsonLink, bad_reply};
use super::wire::{
    self, Frame, Function, Packet, Reading, ResultKind, StartTest, StatusBlock, SystemInfo,
    Version, stat,
};
use crate::DriverError;
use crate::cycler::{ChannelAddr, ChannelState, ChannelStatus, Cycler, Record, Schedule};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Default bound on one exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most records asked for in one download, so a transfer stays well inside the u16 block
/// counter and one timeout per block.
pub const MAX_RECORDS_PER_DOWNLOAD: usize = 10_000;

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
    /// Which (4,4) aux value is the cell temperature, degC, from 0; `None` reads none. Default
    /// 0, an assumption (MacNet does not say what an input measures): check the tester's setup.
    pub temperature_aux: Option<usize>,
}

impl MaccorConfig {
    /// The tester at `address` on the default ports (System.ini's) with the default timeout.
    pub fn new(address: IpAddr) -> MaccorConfig {
        MaccorConfig {
            address,
            binary_port: wire::DEFAULT_BINARY_PORT,
            json_port: wire::DEFAULT_JSON_PORT,
            timeout: DEFAULT_TIMEOUT,
            temperature_aux: Some(0),
        }
    }
}

/// What this client knows about a channel's test beyond what MacNet reports (MacNet's status
/// carries no test name).
#[derive(Debug, Clone)]
pub(super) struct KnownTest {
    /// The name the test has on the tester.
    pub(super) name: String,
    /// Seen completed or in a problem state, so a later "available" is a reset, not a stop.
    pub(super) ended: bool,
}

/// A connected Maccor tester.
pub struct MaccorClient {
    pub(super) config: MaccorConfig,
    json: JsonLink,
    binary: BinaryLink,
    info: SystemInfo,
    /// Tests this client started, by channel, so status can name them and tell a stop.
    pub(super) tests: HashMap<u16, KnownTest>,
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
        let json_addr = SocketAddr::new(config.address, config.json_port);
        let json = JsonLink::open(json_addr, config.timeout).await?;
        Ok((json, open_binary(config).await?))
    }

    /// What the tester reported at the last connect (or [`Cycler::channels`]).
    pub fn system_info(&self) -> &SystemInfo {
        &self.info
    }

    pub(super) async fn call(
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
    pub(super) async fn command_json(
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
    pub(super) async fn command_binary(
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

    pub(super) async fn reset(
        &mut self,
        chan: u16,
        during: &'static str,
    ) -> Result<(), DriverError> {
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

    pub(super) fn chan(&self, addr: ChannelAddr) -> Result<u16, DriverError> {
        let chan = u16::try_from(addr.channel)
            .ok()
            .filter(|&c| addr.unit == 0 && addr.sub_unit == 0 && c < self.info.test_channels);
        chan.ok_or_else(|| {
            DriverError::Identity(format!(
                "channel {addr} is not on Maccor tester {:?} (system type {}): it has {} test \
                 channels, 0-0-0 to 0-0-{} (MacNet counts channels from 0)",
                self.info.system_id,
                self.info.system_type,
                self.info.test_channels,
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

    pub(super) async fn reconnect_links(&mut self) -> Result<(), DriverError> {
        let (json, binary) = Self::open_links(&self.config).await?;
        self.json = json;
        self.binary = binary;
        self.info = self.read_system_info().await?;
        Ok(())
    }
}

async fn open_binary(config: &MaccorConfig) -> Result<BinaryLink, DriverError> {
    let addr = SocketAddr::new(config.address, config.binary_port);
    BinaryLink::open(addr, config.timeout).await
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

    /// From (4,4), tolerantly (no values, or no (4,4) on the tester: `Ok(None)`); see
    /// [`MaccorClient::temperature`].
    async fn cell_temperature(&mut self, channel: ChannelAddr) -> Result<Option<f64>, DriverError> {
        let chan = self.chan(channel)?;
        self.temperature(chan).await
    }
}
