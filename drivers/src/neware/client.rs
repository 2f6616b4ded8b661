//! The Neware driver: a BTS API client over TCP, implementing [`Cycler`].
//!
//! One exchange at a time: a request frame out, its reply frame back, under a timeout. After a
//! timeout, a closed connection or a broken frame the connection is dropped (a late reply would
//! otherwise answer the next request), and every call fails as a lost link until
//! [`Cycler::reconnect`] logs in again.
//!
//! Replies are matched to channels by `(devid, chlid)`: never by position, and never by
//! `subdevid`, which real servers have been seen to report wrongly in `getchlstatus`. Where
//! one request would name two channels with the same `(devid, chlid)` (units numbering their
//! channels from 1 each), the channels are split over several requests so that every reply
//! stays unambiguous.

use super::wire::{self, ChannelRef, DownloadRequest, PathMap, StartItem, WireError, WorkStatus};
use crate::DriverError;
use crate::cycler::{ChannelAddr, ChannelState, ChannelStatus, Cycler, Record, Schedule};
use crate::transport::network;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where the BTS server is and how to deliver step files to it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewareConfig {
    /// The BTS API server: the BTS software on the cycler's PC (port [`wire::DEFAULT_PORT`]
    /// unless changed there).
    pub addr: SocketAddr,
    /// API login. Default `admin` / `neware`, the login public BTS clients default to.
    pub username: String,
    pub password: String,
    /// Folder on this machine where step files are written for the BTS PC to read (the API
    /// has no upload). Default: none, set by the caller.
    pub step_folder: PathBuf,
    /// The same folder as the BTS PC sees it, e.g. `D:\cyclerd\steps` or `\\lab-pc\steps`
    /// (Windows separators are used). Default `None`: the daemon runs on the BTS PC and both
    /// see `step_folder`.
    pub remote_step_folder: Option<String>,
    /// Folder on the BTS PC where BTS backs up each test's data file. Default
    /// `C:\cyclerd\data`.
    pub backup_dir: String,
    /// Bound on connecting and on each exchange (request out, whole reply in); past it the
    /// link counts as lost. Default 5 s: a full download page is a few hundred kB.
    pub timeout: Duration,
}

impl NewareConfig {
    /// The defaults above for a server at `addr`, writing step files to `step_folder`.
    pub fn new(addr: SocketAddr, step_folder: impl Into<PathBuf>) -> NewareConfig {
        NewareConfig {
            addr,
            username: "admin".into(),
            password: "neware".into(),
            step_folder: step_folder.into(),
            remote_step_folder: None,
            backup_dir: r"C:\cyclerd\data".into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn paths(&self) -> PathMap {
        PathMap {
            local: self.step_folder.clone(),
            remote: self.remote_step_folder.clone(),
        }
    }
}

/// A logged-in connection to a BTS server.
pub struct NewareClient {
    config: NewareConfig,
    /// `None` once the link is lost, until [`Cycler::reconnect`].
    stream: Option<TcpStream>,
    /// Received bytes of the reply being read; reused so a download page costs no new buffer.
    buf: Vec<u8>,
    /// Every channel `getdevinfo` reported, with the `ip` and `devtype` that requests must
    /// repeat for it.
    known: HashMap<ChannelAddr, ChannelRef>,
}

/// How an exchange failed below the message level.
enum Transport {
    Io(std::io::Error),
    Closed,
    Frame(WireError),
}

impl NewareClient {
    /// Connects, logs in and reads the channel list.
    pub async fn connect(config: NewareConfig) -> Result<NewareClient, DriverError> {
        let mut client = NewareClient {
            config,
            stream: None,
            buf: Vec::new(),
            known: HashMap::new(),
        };
        client.open().await?;
        Ok(client)
    }

    pub fn config(&self) -> &NewareConfig {
        &self.config
    }

    async fn open(&mut self) -> Result<(), DriverError> {
        self.stream = None;
        let (addr, timeout) = (self.config.addr, self.config.timeout);
        let stream = network::connect(addr, timeout).await?;
        // connect sets nodelay as best it can; here a socket that refuses it is a failed connect.
        stream
            .set_nodelay(true)
            .map_err(|source| DriverError::Connect { addr, source })?;
        self.stream = Some(stream);

        let during = "logging in";
        let request = wire::connect_request(&self.config.username, &self.config.password);
        let frame = self.exchange(&request, during).await?;
        if let Err(e) = wire::parse_connect_reply(frame) {
            // A session that is not logged in is no use: every later call reconnects.
            self.stream = None;
            return Err(match e {
                WireError::Refused(_) => DriverError::Refused {
                    during,
                    message: format!(
                        "the BTS server at {addr} refused user {:?}: check the username and \
                         password configured for its API (and that the API is activated in BTS)",
                        self.config.username
                    ),
                },
                e => wire_error(during)(e),
            });
        }
        self.refresh_channels().await?;
        Ok(())
    }

    /// Sends `request` and reads one reply frame; returns its document.
    async fn exchange(&mut self, request: &str, during: &'static str) -> Result<&str, DriverError> {
        let timeout = self.config.timeout;
        let Some(stream) = self.stream.as_mut() else {
            return Err(DriverError::Link {
                during,
                message: "not connected (the link was lost; reconnect first)".into(),
            });
        };
        self.buf.clear();
        let result =
            tokio::time::timeout(timeout, transact(stream, &mut self.buf, request.as_bytes()))
                .await;
        let end = match result {
            Ok(Ok(end)) => end,
            Ok(Err(e)) => {
                self.stream = None;
                return Err(match e {
                    Transport::Io(e) => DriverError::Link {
                        during,
                        message: e.to_string(),
                    },
                    Transport::Closed => DriverError::Link {
                        during,
                        message: "the server closed the connection".into(),
                    },
                    Transport::Frame(e) => DriverError::BadReply {
                        during,
                        message: e.to_string(),
                    },
                });
            }
            Err(_) => {
                self.stream = None;
                return Err(DriverError::Timeout {
                    during,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
        };
        std::str::from_utf8(&self.buf[..end.document]).map_err(|_| DriverError::BadReply {
            during,
            message: "the reply is not UTF-8".into(),
        })
    }

    /// Reads the channel list and remembers each channel's `ip` and `devtype`.
    async fn refresh_channels(&mut self) -> Result<Vec<ChannelAddr>, DriverError> {
        let during = "reading the channel list";
        let frame = self.exchange(&wire::getdevinfo_request(), during).await?;
        let channels = wire::parse_getdevinfo_reply(frame).map_err(wire_error(during))?;
        self.known = channels
            .iter()
            .map(|c| (c.channel.addr, c.channel.clone()))
            .collect();
        Ok(channels.into_iter().map(|c| c.channel.addr).collect())
    }

    /// The request address of each channel, reading the channel list again if one is unknown
    /// (a cycler added since login).
    async fn channel_refs(
        &mut self,
        channels: &[ChannelAddr],
    ) -> Result<Vec<ChannelRef>, DriverError> {
        if channels.iter().any(|c| !self.known.contains_key(c)) {
            self.refresh_channels().await?;
        }
        channels
            .iter()
            .map(|c| {
                self.known.get(c).cloned().ok_or_else(|| {
                    DriverError::Identity(format!(
                        "the BTS server at {} has no channel {c} (devid-subdevid-chlid); it \
                         reports {} channels",
                        self.config.addr,
                        self.known.len()
                    ))
                })
            })
            .collect()
    }

    async fn channel_ref(&mut self, channel: ChannelAddr) -> Result<ChannelRef, DriverError> {
        let mut refs = self.channel_refs(&[channel]).await?;
        Ok(refs.remove(0))
    }

    /// `getchlstatus`, `inquire` and `inquiredf` for channels with distinct `(devid, chlid)`,
    /// each reply matched to `refs`.
    async fn status_batch(
        &mut self,
        refs: &[ChannelRef],
    ) -> Result<Vec<ChannelStatus>, DriverError> {
        let during = "reading channel status";
        let frame = self
            .exchange(&wire::getchlstatus_request(refs), during)
            .await?;
        let statuses = wire::parse_getchlstatus_reply(frame).map_err(wire_error(during))?;
        let statuses = matched(refs, statuses, |s| s.channel.addr, during)?;

        let during = "reading channel details";
        let frame = self.exchange(&wire::inquire_request(refs), during).await?;
        let details = wire::parse_inquire_reply(frame).map_err(wire_error(during))?;
        let details = matched(refs, details, |d| d.channel.addr, during)?;

        let during = "reading record counts";
        let frame = self
            .exchange(&wire::inquiredf_request(refs), during)
            .await?;
        let logs = wire::parse_inquiredf_reply(frame).map_err(wire_error(during))?;
        let logs = matched(refs, logs, |l| l.channel.addr, during)?;

        refs.iter()
            .zip(statuses)
            .zip(details)
            .zip(logs)
            .map(|(((c, s), d), l)| {
                let has_test = l.testid != 0;
                let state = match WorkStatus::from_name(&s.status) {
                    Some(WorkStatus::Working) => ChannelState::Running,
                    Some(WorkStatus::Pause) => ChannelState::Paused,
                    Some(WorkStatus::Finish) => ChannelState::Finished,
                    Some(WorkStatus::Protect) => ChannelState::Fault {
                        reason: format!("protect (log_code {})", d.log_code),
                    },
                    // A channel that never ran a test reports `stop` too.
                    Some(WorkStatus::Stop) if has_test => ChannelState::Stopped,
                    Some(WorkStatus::Stop) => ChannelState::Idle,
                    None => {
                        return Err(DriverError::BadReply {
                            during: "reading channel status",
                            message: format!(
                                "channel {} reports status {:?}; expected working, stop, \
                                 finish, protect or pause",
                                c.addr, s.status
                            ),
                        });
                    }
                };
                Ok(ChannelStatus {
                    addr: c.addr,
                    state,
                    test: (!d.barcode.is_empty()).then(|| d.barcode.clone()),
                    last_record: if has_test { l.count } else { 0 },
                })
            })
            .collect()
    }

    /// Sends `start` or `stop` (`command`) for one channel and checks its `ok`.
    async fn command_one(
        &mut self,
        command: &'static str,
        request: &str,
        channel: &ChannelRef,
        during: &'static str,
    ) -> Result<bool, DriverError> {
        let frame = self.exchange(request, during).await?;
        let results = wire::parse_result_reply(frame, command).map_err(wire_error(during))?;
        let results = matched(
            std::slice::from_ref(channel),
            results,
            |r| r.channel.addr,
            during,
        )?;
        Ok(results[0].ok)
    }
}

/// Writes a request and reads until one whole frame is in `buf`.
async fn transact(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> Result<wire::FrameEnd, Transport> {
    stream.write_all(request).await.map_err(Transport::Io)?;
    let mut scanned = 0;
    loop {
        if let Some(end) = wire::frame_end(buf, scanned).map_err(Transport::Frame)? {
            return Ok(end);
        }
        // Resume the scan where `</bts>` could still start.
        scanned = wire::resume_scan(buf);
        buf.reserve(64 * 1024);
        if stream.read_buf(buf).await.map_err(Transport::Io)? == 0 {
            return Err(Transport::Closed);
        }
    }
}

fn wire_error(during: &'static str) -> impl Fn(WireError) -> DriverError {
    move |e| match e {
        WireError::Malformed(message) => DriverError::BadReply { during, message },
        WireError::Refused(message) => DriverError::Refused { during, message },
    }
}

/// Orders `replies` as `requested`, matching by `(devid, chlid)`; every requested channel
/// must be answered exactly once and nothing else answered.
fn matched<T>(
    requested: &[ChannelRef],
    replies: Vec<T>,
    addr: impl Fn(&T) -> ChannelAddr,
    during: &'static str,
) -> Result<Vec<T>, DriverError> {
    let bad = |message: String| DriverError::BadReply { during, message };
    let index: HashMap<(u32, u32), usize> = requested
        .iter()
        .enumerate()
        .map(|(k, c)| ((c.addr.unit, c.addr.channel), k))
        .collect();
    let mut slots: Vec<Option<T>> = requested.iter().map(|_| None).collect();
    for reply in replies {
        let a = addr(&reply);
        let Some(&k) = index.get(&(a.unit, a.channel)) else {
            return Err(bad(format!(
                "a reply for channel devid {} chlid {}, which was not asked for",
                a.unit, a.channel
            )));
        };
        if slots[k].replace(reply).is_some() {
            return Err(bad(format!(
                "two replies for channel {}",
                requested[k].addr
            )));
        }
    }
    slots
        .into_iter()
        .zip(requested)
        .map(|(s, c)| s.ok_or_else(|| bad(format!("no reply for channel {}", c.addr))))
        .collect()
}

/// Groups channel indices so that no group holds two channels with the same `(devid, chlid)`:
/// the k-th channel with a given pair goes to group k.
fn batches(channels: &[ChannelAddr]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<(u32, u32), usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, c) in channels.iter().enumerate() {
        let k = seen.entry((c.unit, c.channel)).or_insert(0);
        if *k == groups.len() {
            groups.push(Vec::new());
        }
        groups[*k].push(i);
        *k += 1;
    }
    groups
}

/// The step file's name in the shared folder: the barcode first, so starts of one schedule
/// for different tests never overwrite each other's file; characters Windows refuses in file
/// names become `_`.
fn step_file_name(barcode: &str, schedule_file: &str) -> String {
    format!("{barcode}_{schedule_file}")
        .chars()
        .map(|c| {
            if c.is_control() || r#"<>:"/\|?*"#.contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

impl Cycler for NewareClient {
    async fn channels(&mut self) -> Result<Vec<ChannelAddr>, DriverError> {
        self.refresh_channels().await
    }

    async fn status(
        &mut self,
        channels: &[ChannelAddr],
    ) -> Result<Vec<ChannelStatus>, DriverError> {
        let refs = self.channel_refs(channels).await?;
        let mut out: Vec<Option<ChannelStatus>> = vec![None; channels.len()];
        for batch in batches(channels) {
            let batch_refs: Vec<ChannelRef> = batch.iter().map(|&i| refs[i].clone()).collect();
            let statuses = self.status_batch(&batch_refs).await?;
            for (i, s) in batch.into_iter().zip(statuses) {
                out[i] = Some(s);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    async fn start(
        &mut self,
        channel: ChannelAddr,
        schedule: &Schedule,
        test: &str,
    ) -> Result<(), DriverError> {
        let during = "starting a test";
        let c = self.channel_ref(channel).await?;
        let barcode = wire::barcode(test);
        let file_name = step_file_name(&barcode, &schedule.file_name);
        let local = self.config.step_folder.join(&file_name);
        tokio::fs::write(&local, schedule.text.as_bytes())
            .await
            .map_err(|source| DriverError::File {
                action: "write the step file",
                path: local.display().to_string(),
                source,
            })?;
        let path = self.config.paths().remote_path(&file_name);
        let request = wire::start_request(
            &[StartItem {
                channel: c.clone(),
                barcode,
                path: path.clone(),
            }],
            &self.config.backup_dir,
        );
        if self
            .command_one(wire::cmd::START, &request, &c, during)
            .await?
        {
            Ok(())
        } else {
            Err(DriverError::Refused {
                during,
                message: format!(
                    "channel {channel} answered false to starting {path}: is the channel free \
                     (not working or paused), and can the BTS PC read that file?"
                ),
            })
        }
    }

    async fn stop(&mut self, channel: ChannelAddr) -> Result<(), DriverError> {
        let during = "stopping a test";
        let c = self.channel_ref(channel).await?;
        let request = wire::stop_request(std::slice::from_ref(&c));
        if self
            .command_one(wire::cmd::STOP, &request, &c, during)
            .await?
        {
            Ok(())
        } else {
            Err(DriverError::Refused {
                during,
                message: format!("channel {channel} answered false to stop"),
            })
        }
    }

    async fn records(
        &mut self,
        channel: ChannelAddr,
        from: u64,
        max: usize,
    ) -> Result<Vec<Record>, DriverError> {
        let from = from.max(1);
        let c = self.channel_ref(channel).await?;
        let during = "reading the record count";
        let frame = self
            .exchange(&wire::inquiredf_request(std::slice::from_ref(&c)), during)
            .await?;
        let logs = wire::parse_inquiredf_reply(frame).map_err(wire_error(during))?;
        let log = matched(std::slice::from_ref(&c), logs, |l| l.channel.addr, during)?.remove(0);
        if log.testid == 0 || log.count < from || max == 0 {
            return Ok(Vec::new());
        }
        let wanted = usize::try_from(log.count - from + 1).map_or(max, |n| n.min(max));

        let during = "downloading records";
        // The count is the server's word: allocate for what a few pages hold, grow past that.
        let mut out = Vec::with_capacity(wanted.min(8 * wire::PAGE_SIZE));
        let mut request = DownloadRequest {
            channel: c,
            auxid: 0,
            testid: log.testid,
            startpos: from,
            count: 0,
        };
        while out.len() < wanted {
            let page = (wanted - out.len()).min(wire::PAGE_SIZE);
            request.startpos = from + out.len() as u64;
            request.count = page as u64;
            let before = out.len();
            let frame = self
                .exchange(&wire::download_request(&request), during)
                .await?;
            let header = wire::parse_download_reply(frame, &mut out).map_err(wire_error(during))?;
            let bad = |message: String| DriverError::BadReply { during, message };
            let h = header.channel.addr;
            if (h.unit, h.channel) != (channel.unit, channel.channel) {
                return Err(bad(format!(
                    "asked for channel {channel}, the records are of devid {} chlid {}",
                    h.unit, h.channel
                )));
            }
            if header.testid != log.testid {
                return Err(bad(format!(
                    "asked for test {}, the records are of test {}",
                    log.testid, header.testid
                )));
            }
            let got = out.len() - before;
            if got > page {
                return Err(bad(format!("asked for {page} records, got {got}")));
            }
            let start = request.startpos;
            if let Some((k, r)) = out[before..]
                .iter()
                .enumerate()
                .find(|&(k, r)| r.index != start + k as u64)
            {
                return Err(bad(format!(
                    "the records from {start} are not contiguous: seqid {} where {} belongs",
                    r.index,
                    start + k as u64
                )));
            }
            if got < page {
                // The log ends sooner than the count said (it can only grow): stop here.
                break;
            }
        }
        Ok(out)
    }

    async fn reconnect(&mut self) -> Result<(), DriverError> {
        self.open().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(devid: u32, subdevid: u32, chlid: u32) -> ChannelAddr {
        ChannelAddr {
            unit: devid,
            sub_unit: subdevid,
            channel: chlid,
        }
    }

    #[test]
    fn channels_sharing_devid_and_chlid_go_to_different_requests() {
        let chans = [
            addr(1, 1, 1),
            addr(1, 2, 1),
            addr(1, 1, 2),
            addr(2, 1, 1),
            addr(1, 3, 1),
        ];
        let groups = batches(&chans);
        assert_eq!(groups, vec![vec![0, 2, 3], vec![1], vec![4]]);
    }

    #[test]
    fn replies_are_matched_by_devid_and_chlid_whatever_their_subdevid_and_order() {
        let refs: Vec<ChannelRef> = [addr(1, 2, 1), addr(1, 2, 2)]
            .into_iter()
            .map(|a| ChannelRef {
                ip: String::new(),
                devtype: 27,
                addr: a,
            })
            .collect();
        let replies = vec![(addr(1, 1, 2), "b"), (addr(1, 1, 1), "a")];
        let m = matched(&refs, replies, |r| r.0, "testing").unwrap();
        assert_eq!(m.iter().map(|r| r.1).collect::<Vec<_>>(), ["a", "b"]);
        let missing = matched(&refs, vec![(addr(1, 2, 1), "a")], |r| r.0, "testing");
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("no reply for channel 1-2-2")
        );
        let twice = vec![(addr(1, 2, 1), "a"), (addr(1, 9, 1), "a")];
        assert!(matched(&refs, twice, |r| r.0, "testing").is_err());
        let stranger = vec![(addr(3, 2, 1), "x")];
        assert!(matched(&refs, stranger, |r| r.0, "testing").is_err());
    }

    #[test]
    fn step_file_names_are_safe_on_windows() {
        assert_eq!(
            step_file_name("cell 7: a/b?", "cccv.xml"),
            "cell 7_ a_b__cccv.xml"
        );
    }
}
