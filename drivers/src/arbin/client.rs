//! The Arbin driver: a CTI client over TCP, implementing [`Cycler`].
//!
//! One exchange at a time on the control connection: a request frame out, its feedback frame
//! back, under a timeout. After a timeout, a closed connection or a broken frame the connection
//! is dropped (a late feedback would otherwise answer the next request), and every call fails
//! as a lost link until [`Cycler::reconnect`] logs in again. Schedules go over a second
//! connection to the file port, opened and logged into for each upload.
//!
//! Channel info is always asked for all channels at once and every block is matched to its
//! channel by the block's own index: a MITS 10 server answered a one-channel request with all
//! sixteen channels, and the open client that took the first block reported channel 1's data
//! for channel 6.

use super::convert::{check_result, present_record, record, schedule_file_name, state_of};
use super::link::{bad_reply, decode_error, exchange_on};
use super::wire::{
    self, AssignSchedule, ChannelInfo, ChannelsInfo, ChannelsInfoRequest, CommonFeedback, Frame,
    Login, LoginFeedback, RecordsFeedback, RecordsRequest, StartTest, StopTest, Upload,
    UploadFeedback, cmd, login_result, need, result, selection, upload_result,
};
use crate::DriverError;
use crate::cycler::{ChannelAddr, ChannelStatus, Cycler, Record, Schedule};
use crate::transport::network;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;

/// Default bound on connecting and on each exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest package of an upload. The material gives no limit; compiled schedules
/// are a few kB, so they go in one package.
pub const DEFAULT_UPLOAD_PACKAGE_LEN: usize = 32 * 1024;
/// Most records asked for in one GET_RECORDS request (a feedback of about 52 kB).
pub const MAX_RECORDS_PER_REQUEST: u32 = 1000;
/// The test capacity sent with ASSIGN_SCHEDULE: cyclerd's schedules hold absolute currents,
/// so it is unused; 1 Ah is what the open client sends.
const TEST_CAPACITY_AH: f32 = 1.0;

/// Where the CTI server is and who logs in.
#[derive(Debug, Clone, PartialEq)]
pub struct ArbinConfig {
    /// The PC running MITS Pro.
    pub address: IpAddr,
    /// CTI control port; default 9031.
    pub control_port: u16,
    /// CTI file-operation port (uploads); default 9032.
    pub file_port: u16,
    /// A user registered for CTI in MITS Pro: ASCII, at most 32 bytes each. No default.
    pub username: String,
    pub password: String,
    /// Bound on connecting and on each exchange; past it the link counts as lost. Default 5 s.
    pub timeout: Duration,
    /// Largest data part of one UPLOAD package; default [`DEFAULT_UPLOAD_PACKAGE_LEN`].
    pub upload_package_len: usize,
}

impl ArbinConfig {
    /// The server at `address` on the default ports, with the defaults above.
    pub fn new(address: IpAddr, username: &str, password: &str) -> ArbinConfig {
        ArbinConfig {
            address,
            control_port: wire::DEFAULT_CONTROL_PORT,
            file_port: wire::DEFAULT_FILE_PORT,
            username: username.into(),
            password: password.into(),
            timeout: DEFAULT_TIMEOUT,
            upload_package_len: DEFAULT_UPLOAD_PACKAGE_LEN,
        }
    }

    fn control_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.control_port)
    }

    fn file_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.file_port)
    }
}

/// What the client last handed out for a channel while following present values only (the
/// fallback when the console does not serve its record log).
#[derive(Debug, Clone)]
struct Polled {
    test: String,
    index: u64,
    test_time_s: f64,
}

/// A logged-in connection to a CTI server.
pub struct ArbinClient {
    config: ArbinConfig,
    /// `None` once the link is lost, until [`Cycler::reconnect`].
    stream: Option<TcpStream>,
    /// Received bytes of the feedback being read; reused between exchanges.
    buf: Vec<u8>,
    /// What the server said at the last login.
    login: LoginFeedback,
    /// Whether the console serves the GET_RECORDS extension (`None`: not known yet).
    record_log: Option<bool>,
    /// Per channel index, the last present-value record handed out (fallback only).
    polled: HashMap<u32, Polled>,
}

/// Connects to `addr` and logs in as the configured user.
async fn session(
    config: &ArbinConfig,
    addr: SocketAddr,
    buf: &mut Vec<u8>,
) -> Result<(TcpStream, LoginFeedback), DriverError> {
    let timeout = config.timeout;
    let mut stream = network::connect(addr, timeout).await?;
    let during = "logging in";
    let login = Login {
        username: config.username.clone(),
        password: config.password.clone(),
    };
    let frame = exchange_on(&mut stream, buf, &login.to_frame(), timeout, during).await?;
    let feedback = LoginFeedback::from_frame(&frame).map_err(decode_error(during))?;
    match feedback.result {
        login_result::SUCCESS | login_result::ALREADY_LOGGED_IN => Ok((stream, feedback)),
        login_result::FAIL => Err(DriverError::Refused {
            during,
            message: format!(
                "the CTI server at {addr} refused user {:?}: check the user name and password \
                 registered for CTI in MITS Pro",
                config.username
            ),
        }),
        other => Err(bad_reply(during, format!("login result {other}"))),
    }
}

impl ArbinClient {
    /// Connects to the control port and logs in.
    pub async fn connect(config: ArbinConfig) -> Result<ArbinClient, DriverError> {
        for (what, value) in [
            ("user name", &config.username),
            ("password", &config.password),
        ] {
            if !wire::fits_ascii(value, wire::CREDENTIAL_LEN) {
                return Err(DriverError::Unsupported(format!(
                    "a CTI {what} is ASCII of at most {} bytes; change the configured one",
                    wire::CREDENTIAL_LEN
                )));
            }
        }
        let mut buf = Vec::new();
        let (stream, login) = session(&config, config.control_addr(), &mut buf).await?;
        Ok(ArbinClient {
            config,
            stream: Some(stream),
            buf,
            login,
            record_log: None,
            polled: HashMap::new(),
        })
    }

    pub fn config(&self) -> &ArbinConfig {
        &self.config
    }

    /// What the server reported at the last login (serial number, channel count, ...).
    pub fn login_feedback(&self) -> &LoginFeedback {
        &self.login
    }

    /// Whether the console serves cyclerd's GET_RECORDS extension: `None` until the first
    /// records are asked for.
    pub fn serves_record_log(&self) -> Option<bool> {
        self.record_log
    }

    async fn open(&mut self) -> Result<(), DriverError> {
        self.stream = None;
        let (stream, login) =
            session(&self.config, self.config.control_addr(), &mut self.buf).await?;
        self.stream = Some(stream);
        self.login = login;
        Ok(())
    }

    /// Sends `request` and reads one feedback frame on the control connection.
    async fn exchange(
        &mut self,
        request: &Frame,
        during: &'static str,
    ) -> Result<Frame, DriverError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(DriverError::Link {
                during,
                message: "not connected (the link was lost; reconnect first)".into(),
            });
        };
        let out = exchange_on(stream, &mut self.buf, request, self.config.timeout, during).await;
        if out.is_err() {
            self.stream = None;
        }
        out
    }

    /// Every channel block, by its own channel index.
    async fn channel_infos(
        &mut self,
        need: u32,
        during: &'static str,
    ) -> Result<HashMap<u32, ChannelInfo>, DriverError> {
        let request = ChannelsInfoRequest {
            channel: -1,
            selection: selection::ALL,
            need,
        };
        let frame = self.exchange(&request.to_frame(), during).await?;
        let info = ChannelsInfo::from_frame(&frame).map_err(decode_error(during))?;
        let mut by_index = HashMap::with_capacity(info.channels.len());
        for c in info.channels {
            let index = c.channel;
            if by_index.insert(index, c).is_some() {
                return Err(bad_reply(during, format!("two blocks for channel {index}")));
            }
        }
        Ok(by_index)
    }

    /// The block of `channel` among `infos`, or an identity error naming what the server has.
    fn pick<'a>(
        &self,
        infos: &'a HashMap<u32, ChannelInfo>,
        channel: ChannelAddr,
    ) -> Result<&'a ChannelInfo, DriverError> {
        infos.get(&channel.channel).ok_or_else(|| {
            DriverError::Identity(format!(
                "the Arbin at {} has no channel {} (CTI index {}); it reports {} channels",
                self.config.address,
                channel,
                channel.channel,
                infos.len()
            ))
        })
    }

    /// GET_RECORDS; `None` when the console does not serve the extension (decided on the
    /// first call: an unknown-command answer, or silence while a fresh login still works).
    async fn get_records(
        &mut self,
        channel: u32,
        from: u64,
        max: u32,
    ) -> Result<Option<RecordsFeedback>, DriverError> {
        if self.record_log == Some(false) {
            return Ok(None);
        }
        let during = "reading logged records (cyclerd's GET_RECORDS extension)";
        let request = RecordsRequest {
            channel: i32::try_from(channel).unwrap_or(i32::MAX),
            from,
            max,
        };
        let frame = match self.exchange(&request.to_frame(), during).await {
            Ok(frame) => frame,
            Err(DriverError::Timeout { .. }) if self.record_log.is_none() => {
                // Silence: the extension is ignored, or the link died. A fresh login tells.
                self.open().await?;
                self.no_record_log();
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if frame.command != wire::feedback_code(cmd::GET_RECORDS) {
            if self.record_log == Some(true) {
                return Err(bad_reply(during, format!("an unexpected {frame}")));
            }
            self.no_record_log();
            return Ok(None);
        }
        let fb = RecordsFeedback::from_frame(&frame).map_err(decode_error(during))?;
        self.record_log = Some(true);
        if i64::from(fb.channel) != i64::from(channel) {
            return Err(bad_reply(
                during,
                format!(
                    "asked for channel {channel}, got channel {}'s records",
                    fb.channel
                ),
            ));
        }
        match fb.result {
            result::OK => Ok(Some(fb)),
            // No test yet: nothing logged.
            result::RECORDS_NO_TEST => Ok(Some(RecordsFeedback {
                last: 0,
                records: Vec::new(),
                ..fb
            })),
            code => check_result(cmd::GET_RECORDS, code, channel, during).map(|()| None),
        }
    }

    fn no_record_log(&mut self) {
        tracing::warn!(
            "{}: the console does not serve cyclerd's GET_RECORDS extension; following present \
             values only (records between polls stay in MITS's own data)",
            self.config.address
        );
        self.record_log = Some(false);
    }

    /// The newest record index of the test on `info`'s channel.
    async fn last_record(&mut self, info: &ChannelInfo) -> Result<u64, DriverError> {
        if info.test_name.is_empty() {
            return Ok(0);
        }
        if let Some(fb) = self.get_records(info.channel, u64::MAX, 0).await? {
            return Ok(fb.last);
        }
        // Fallback: the client's own count of present-value records.
        Ok(match self.polled.get(&info.channel) {
            Some(p) if p.test == info.test_name => {
                p.index + u64::from(info.test_time_s > p.test_time_s)
            }
            _ => 1,
        })
    }

    /// Sends a command whose feedback is the common 128-byte one and checks its result.
    async fn command(
        &mut self,
        request: &Frame,
        command: u32,
        channel: u32,
        during: &'static str,
    ) -> Result<(), DriverError> {
        let frame = self.exchange(request, during).await?;
        let fb = CommonFeedback::from_frame(&frame, command).map_err(decode_error(during))?;
        if i64::from(fb.channel) != i64::from(channel) {
            return Err(bad_reply(
                during,
                format!(
                    "asked about channel {channel}, the feedback is for channel {}",
                    fb.channel
                ),
            ));
        }
        check_result(command, fb.result, channel, during)
    }

    /// Uploads `data` as `path` over a fresh logged-in file connection.
    async fn upload(&mut self, path: &str, data: &[u8]) -> Result<(), DriverError> {
        let during = "uploading the schedule";
        let mut buf = Vec::new();
        let (mut stream, _) = session(&self.config, self.config.file_addr(), &mut buf).await?;
        let packages = Upload::packages(path, data, self.config.upload_package_len);
        let count = packages.len();
        for (k, package) in packages.into_iter().enumerate() {
            let frame = exchange_on(
                &mut stream,
                &mut buf,
                &package.to_frame(),
                self.config.timeout,
                during,
            )
            .await?;
            let fb = UploadFeedback::from_frame(&frame).map_err(decode_error(during))?;
            if fb.package_index != package.package_index {
                return Err(bad_reply(
                    during,
                    format!(
                        "sent package {}, the feedback is for package {}",
                        package.package_index, fb.package_index
                    ),
                ));
            }
            let last = k + 1 == count;
            let ok = match fb.result {
                upload_result::SUCCESS | upload_result::EXISTS_SAME_MD5 => true,
                upload_result::IN_PROGRESS => !last,
                _ => false,
            };
            if !ok {
                return Err(DriverError::Refused {
                    during,
                    message: format!(
                        "{path}, package {} of {count}: {}",
                        k + 1,
                        upload_result::describe(fb.result)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The fallback of [`Cycler::records`]: the present values as one record, numbered `from`,
    /// when they are newer than what was last handed out.
    async fn present_values(
        &mut self,
        channel: ChannelAddr,
        from: u64,
    ) -> Result<Vec<Record>, DriverError> {
        let during = "reading present values";
        let infos = self.channel_infos(need::AUX, during).await?;
        let info = self.pick(&infos, channel)?;
        if info.test_name.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(p) = self
            .polled
            .get(&channel.channel)
            .filter(|p| p.test == info.test_name)
            && (info.test_time_s <= p.test_time_s || from <= p.index)
        {
            return Ok(Vec::new());
        }
        self.polled.insert(
            channel.channel,
            Polled {
                test: info.test_name.clone(),
                index: from,
                test_time_s: info.test_time_s,
            },
        );
        Ok(vec![present_record(info, from)])
    }
}

impl Cycler for ArbinClient {
    async fn channels(&mut self) -> Result<Vec<ChannelAddr>, DriverError> {
        let infos = self.channel_infos(0, "reading the channel list").await?;
        let mut indices: Vec<u32> = infos.into_keys().collect();
        indices.sort_unstable();
        Ok(indices
            .into_iter()
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
        let infos = self
            .channel_infos(need::AUX, "reading channel status")
            .await?;
        let mut out = Vec::with_capacity(channels.len());
        for &addr in channels {
            let info = self.pick(&infos, addr)?;
            let state = state_of(info)?;
            let last_record = self.last_record(info).await?;
            out.push(ChannelStatus {
                addr,
                state,
                test: (!info.test_name.is_empty()).then(|| info.test_name.clone()),
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
        let index = channel.channel;
        let Ok(start_index) = u16::try_from(index) else {
            return Err(DriverError::Identity(format!(
                "CTI starts channels 0 to 65535; {channel} is outside"
            )));
        };
        let name = wire::test_name(test);
        let file = schedule_file_name(&name, &schedule.file_name);
        // Schedules are latin-1 text; the Arbin compiler writes nothing beyond U+00FF.
        let bytes = schedule
            .text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                DriverError::Unsupported(format!(
                    "schedule {} holds characters latin-1 cannot encode; Arbin schedules are \
                     latin-1",
                    schedule.file_name
                ))
            })?;
        self.upload(&file, &bytes).await?;

        let assign = AssignSchedule {
            channel: i32::from(start_index),
            all: false,
            schedule: file,
            test_capacity_ah: TEST_CAPACITY_AH,
            barcode: String::new(),
            user_variables: [0.0; 16],
        };
        self.command(
            &assign.to_frame(),
            cmd::ASSIGN_SCHEDULE,
            index,
            "assigning the schedule",
        )
        .await?;
        let start = StartTest {
            test_name: name,
            channels: vec![start_index],
        };
        self.command(&start.to_frame(), cmd::START, index, "starting the test")
            .await
    }

    async fn stop(&mut self, channel: ChannelAddr) -> Result<(), DriverError> {
        let stop = StopTest {
            channel: channel.channel,
            all: false,
        };
        self.command(
            &stop.to_frame(),
            cmd::STOP,
            channel.channel,
            "stopping the test",
        )
        .await
    }

    /// Downloads through the GET_RECORDS extension; against a console without it, returns
    /// the present values as one record (see the `arbin` module doc).
    async fn records(
        &mut self,
        channel: ChannelAddr,
        from: u64,
        max: usize,
    ) -> Result<Vec<Record>, DriverError> {
        let from = from.max(1);
        if max == 0 {
            return Ok(Vec::new());
        }
        // Allocate for a few pages at most, whatever the caller or the console claims.
        let mut out = Vec::with_capacity(max.min(4 * MAX_RECORDS_PER_REQUEST as usize));
        let during = "reading logged records (cyclerd's GET_RECORDS extension)";
        while out.len() < max {
            let start = from + out.len() as u64;
            let page = (max - out.len()).min(MAX_RECORDS_PER_REQUEST as usize) as u32;
            let Some(fb) = self.get_records(channel.channel, start, page).await? else {
                return if out.is_empty() {
                    self.present_values(channel, from).await
                } else {
                    Ok(out)
                };
            };
            let got = fb.records.len();
            if got > page as usize {
                return Err(bad_reply(
                    during,
                    format!("asked for {page} records, got {got}"),
                ));
            }
            if let Some((k, r)) = fb
                .records
                .iter()
                .enumerate()
                .find(|&(k, r)| r.index != start + k as u64)
            {
                return Err(bad_reply(
                    during,
                    format!(
                        "the records from {start} are not contiguous: index {} where {} belongs",
                        r.index,
                        start + k as u64
                    ),
                ));
            }
            out.extend(fb.records.iter().map(record));
            if got < page as usize {
                // The log ends here for now.
                break;
            }
        }
        Ok(out)
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        self.open().await
    }
}
