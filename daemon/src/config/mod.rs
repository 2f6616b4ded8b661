//! The daemon's configuration: a TOML file (through the `config` crate) with `CYCLERD__*`
//! environment overrides (`CYCLERD__HUB__ADDRESS=...`, see [`ENV_PREFIX`]).
//!
//! Every struct denies unknown keys, so a typo is an error naming the key rather than a
//! silently ignored setting. The types and loading are here; `validate.rs` the checks.

/// `[alerts]`: the section the hub's alerts file shares (`cyclerd_alerts::config`).
pub use cyclerd_alerts::config as alerts;
mod validate;

use cyclerd_drivers::scpi::wire::Dialect;
use cyclerd_protocols::Safety;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration error, always naming where the problem is.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    /// The file (or "built-in demo configuration").
    pub origin: String,
    /// What is wrong, naming the key.
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonSection,
    pub store: StoreSection,
    pub hub: HubSection,
    #[serde(default)]
    pub control: ControlSection,
    /// The web monitor (`[web] listen`): the lab's channels in a browser, live.
    #[serde(default)]
    pub web: WebSection,
    /// The lab's hard limits: apply to every channel; a protocol can only narrow them.
    pub limits: Limits,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
    #[serde(default, rename = "chamber")]
    pub chambers: Vec<ChamberConfig>,
    /// `[alerts]`: who is told when a test ends or faults, a channel or the hub is lost, and so
    /// on (none by default).
    #[serde(default)]
    pub alerts: alerts::AlertsSection,
    /// `[quality]`: thresholds of the plausibility checks run over every sample recorded
    /// (documented defaults), and `[quality.protocols.NAME]` overrides for a protocol.
    #[serde(default)]
    pub quality: QualitySection,
}

/// `[quality]`: the thresholds of `cyclerd_proto::quality` (docs/quality.md), with
/// `[quality.protocols.NAME]` tables overriding some of them for the protocol named NAME
/// (`protocol:` in its document). Checked as it is read: an error names the key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct QualitySection(pub cyclerd_proto::quality::config::Layered);

impl TryFrom<serde_json::Map<String, serde_json::Value>> for QualitySection {
    type Error = String;

    fn try_from(table: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        cyclerd_proto::quality::config::Layered::from_table(table, "protocols", "quality")
            .map(QualitySection)
    }
}

/// Thermal chamber families.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum ChamberFamily {
    /// Espec P300 / SCP-220 controllers: ASCII over TCP (`address`, port 10001) or a serial
    /// port (`port`, `baud` default 9600; `unit` = RS-485 address when set).
    #[serde(rename = "espec")]
    Espec,
    /// Weiss / Voetsch chambers through SimServ over TCP (`address`, port 2049).
    #[serde(rename = "weiss")]
    Weiss,
    /// Watlow F4T controllers over Modbus TCP (`address`, port 502; `loop_number`).
    #[serde(rename = "watlow")]
    Watlow,
    /// Binder MB1 controllers: Modbus-like RTU on a serial port (`port`, `baud` default 9600)
    /// or through a serial-to-TCP bridge (`address`); `unit`.
    #[serde(rename = "binder")]
    Binder,
}

/// A thermal chamber and the channels inside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChamberConfig {
    /// Names the chamber in messages and events.
    pub name: String,
    pub family: ChamberFamily,
    /// host:port of a networked controller.
    pub address: Option<SocketAddr>,
    /// Serial port of a serial controller (espec, binder).
    pub port: Option<String>,
    pub baud: Option<u32>,
    /// Modbus unit (binder, watlow) or RS-485 address (espec).
    pub unit: Option<u8>,
    /// Watlow control loop (default 1).
    pub loop_number: Option<u8>,
    /// The channels (`DEVICE/N`) whose cells sit in the chamber: its air temperature is
    /// recorded with their samples, and its faults stop them.
    pub channels: Vec<String>,
    /// The air must stay within these, degC, or the channels inside are stopped. Default: the
    /// lab's `limits.temperature_max` (or 60) and -40.
    pub temperature_min: Option<f64>,
    pub temperature_max: Option<f64>,
    /// Clock ms between readings.
    #[serde(default = "default_chamber_poll_ms")]
    pub poll_interval_ms: u64,
    /// Wall ms without a good reading after which the chamber counts as lost and the channels
    /// inside are stopped.
    #[serde(default = "default_chamber_comm_timeout_ms")]
    pub comm_timeout_ms: u64,
    /// Wall-time bound on one exchange with the controller.
    #[serde(default = "default_chamber_timeout_ms")]
    pub timeout_ms: u64,
    /// Set point (degC) the chamber returns to when the test that owned its set point ends, in
    /// whatever way, also at a clean shutdown (a faulted test at 60 degC would otherwise leave
    /// its cells hot), and when a test in it ends while no test owns it. A chamber in alarm
    /// gets the set point but is not started. Unset: the chamber keeps the last set point.
    pub idle_set_point: Option<f64>,
}

fn default_chamber_poll_ms() -> u64 {
    1000
}

fn default_chamber_comm_timeout_ms() -> u64 {
    10_000
}

fn default_chamber_timeout_ms() -> u64 {
    2000
}

impl ChamberConfig {
    /// The air limits in force, degC.
    pub fn limits(&self, lab: &Limits) -> (f64, f64) {
        (
            self.temperature_min.unwrap_or(-40.0),
            self.temperature_max.or(lab.temperature_max).unwrap_or(60.0),
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// Shown in the hub's listings; defaults to "cyclerd".
    #[serde(default = "default_name")]
    pub name: String,
    /// The daemon's identity at the hub. Unset: a UUID made with the store. Set it to keep one
    /// identity when the store is recreated (the hub then tells the histories apart by epoch).
    pub id: Option<String>,
    /// What to do with a stepped test that was running when the daemon stopped uncleanly.
    #[serde(default)]
    pub resume: ResumePolicy,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            name: default_name(),
            id: None,
            resume: ResumePolicy::default(),
        }
    }
}

/// After a crash or power cut, every channel is first put in its safe state; then each
/// interrupted stepped test is:
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResumePolicy {
    /// continued in the same step, with its elapsed time and capacity;
    #[default]
    Continue,
    /// or ended as faulted.
    Abort,
}

fn default_name() -> String {
    "cyclerd".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The SQLite outbox file; created with its directory if missing.
    pub path: PathBuf,
    /// Longest time an acquired sample waits in memory before it is committed (wall ms).
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// "full" (default): a committed sample survives a power cut. "normal": it survives a
    /// crash of the daemon, and a power cut may lose the last second or so of commits.
    #[serde(default)]
    pub sync: crate::outbox::SyncMode,
    /// Quota on data waiting for the hub; when reached, stepped channels pause at rest with
    /// their output off until the hub has taken some of it. Unset: limited by the disk only.
    pub max_bytes: Option<u64>,
    /// Keep acknowledged entries this many seconds before deleting them (0: delete at once).
    #[serde(default)]
    pub keep_acked_s: u64,
}

fn default_commit_interval_ms() -> u64 {
    250
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// gRPC address of the hub, e.g. "http://hub.lab:50051", or a list of them: hub processes
    /// on one PostgreSQL database, tried in order; the uploader moves to the next when a connect
    /// fails or a stream breaks, and resumes there where the database says it stopped.
    pub address: HubAddresses,
    /// Entries in flight before the uploader waits for acks.
    #[serde(default = "default_window")]
    pub window: usize,
    /// PEM file of the CA that signed the hub's TLS certificate; required with an https://
    /// address (the lab's hub usually has a private CA).
    pub ca_file: Option<PathBuf>,
    /// File holding this daemon's hub token (from `cyclerhub token issue`), readable only by
    /// the daemon's user.
    pub token_file: Option<PathBuf>,
    /// The lab whose metadata schemas (`cyclerhub schema set`) the daemon's tests must follow,
    /// for a hub without tokens; with a token the hub knows the lab from it.
    pub lab: Option<String>,
}

fn default_window() -> usize {
    256
}

/// `hub.address`: one address (a string) or several (a list), in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct HubAddresses(Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for HubAddresses {
    fn from(value: OneOrMany) -> Self {
        match value {
            OneOrMany::One(a) => Self(vec![a]),
            OneOrMany::Many(list) => Self(list),
        }
    }
}

impl HubAddresses {
    /// The addresses in the order the uploader tries them (never empty once validated).
    pub fn list(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for HubAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// The control API (cyclerctl's). A listener other machines can reach needs TLS and tokens:
/// every call then presents a token (`cyclerd token issue`), an operator's to start and stop
/// tests and requeue dead letters, a reader's or an operator's for the rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Where the control API (cyclerctl) listens.
    #[serde(default = "default_control_listen")]
    pub listen: SocketAddr,
    /// The daemon's TLS certificate chain and key (PEM); with them, cyclerctl connects with
    /// https:// and `--ca` (the CA that signed the certificate). Required beyond loopback.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Where the tokens' hashes are kept (`cyclerd token issue|list|revoke`). Default:
    /// `control-tokens.toml` beside the outbox (`store.path`).
    pub tokens_file: Option<PathBuf>,
    /// Require a token on loopback too (a lab PC several people log in to). Beyond loopback
    /// tokens are always required, unless `insecure`.
    #[serde(default)]
    pub require_tokens: bool,
    /// Listen where other machines reach it without TLS and without tokens (anyone who
    /// reaches the port may start and stop tests): for a closed network you trust. Without it
    /// such an address needs `tls_cert`, `tls_key` and at least one token.
    #[serde(default)]
    pub insecure: bool,
    /// Connections open at once (default 512, at most half the open-file limit); at the cap a
    /// newcomer closes the oldest connection that has sent nothing yet, or waits for one.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            listen: default_control_listen(),
            tls_cert: None,
            tls_key: None,
            tokens_file: None,
            require_tokens: false,
            insecure: false,
            max_connections: None,
        }
    }
}

impl ControlSection {
    /// Whether other machines can reach the listener.
    pub fn beyond_loopback(&self) -> bool {
        !self.listen.ip().is_loopback()
    }

    /// Whether the listener serves without TLS (no certificate and key).
    pub fn missing_tls(&self) -> bool {
        self.tls_cert.is_none() || self.tls_key.is_none()
    }
}

/// The web monitor: every channel live in a browser, and start and stop forms. It shares the
/// control API's tokens (`[control] tokens_file`), TLS files and `insecure`/`require_tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Where the monitor listens (`host:port`); `""` or `"off"` switches it off.
    #[serde(default = "default_web_listen")]
    pub listen: String,
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection {
            listen: default_web_listen(),
        }
    }
}

/// How an environment variable names a configuration key to override: this prefix, then the
/// key's path with `__` between its parts (`CYCLERD__HUB__ADDRESS=https://hub.lab:50051`,
/// `CYCLERD__WEB__LISTEN=0.0.0.0:8620`). A double underscore, because the clients' own
/// variables (`CYCLERD_CONTROL`, `CYCLERD_TOKEN`, `CYCLERD_CA` of `cyclerctl`) have a single
/// one: a shell that sets them for `cyclerctl` can also start `cyclerd run`.
pub const ENV_PREFIX: &str = "CYCLERD__";

/// The monitor's port when `[web] listen` is not given (loopback only).
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8620";

fn default_web_listen() -> String {
    DEFAULT_WEB_LISTEN.into()
}

impl WebSection {
    /// The address to listen on; `None` when the monitor is off.
    pub fn address(&self) -> Result<Option<SocketAddr>, String> {
        let text = self.listen.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            format!(
                "web.listen = {:?} is not an address: give host:port (e.g. {DEFAULT_WEB_LISTEN}), \
                 or \"off\"",
                self.listen
            )
        })
    }
}

fn default_control_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50052))
}

/// Hard limits, SI units.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub voltage_min: f64,
    pub voltage_max: f64,
    /// |I| max.
    pub current_max: f64,
    pub temperature_max: Option<f64>,
}

impl Limits {
    pub fn to_safety(self) -> Safety {
        Safety {
            voltage_min: Some(self.voltage_min),
            voltage_max: Some(self.voltage_max),
            current_max: Some(self.current_max),
            temperature_max: self.temperature_max,
            capacity_max: None,
        }
    }

    /// Per field, the stricter of the two.
    pub fn stricter(self, other: &ChannelLimits) -> Limits {
        Limits {
            voltage_min: other
                .voltage_min
                .map_or(self.voltage_min, |v| v.max(self.voltage_min)),
            voltage_max: other
                .voltage_max
                .map_or(self.voltage_max, |v| v.min(self.voltage_max)),
            current_max: other
                .current_max
                .map_or(self.current_max, |v| v.min(self.current_max)),
            temperature_max: match (self.temperature_max, other.temperature_max) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// Optional per-channel narrowing of the lab limits.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelLimits {
    pub voltage_min: Option<f64>,
    pub voltage_max: Option<f64>,
    pub current_max: Option<f64>,
    pub temperature_max: Option<f64>,
}

/// Device families the daemon can drive.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Family {
    /// Elektro-Automatik PSB over Modbus TCP (`address`) or Modbus RTU on its USB or RS-232
    /// port (`port`, `baud`).
    #[serde(rename = "ea-psb")]
    EaPsb,
    /// A SCPI instrument over raw TCP (`address`) or a serial port (`port`, `baud`); the
    /// dialect comes from `*IDN?` unless `dialect` names it.
    #[serde(rename = "scpi")]
    Scpi,
    /// Riden RD60xx over Modbus RTU on a serial port (`port`); charge-only.
    #[serde(rename = "riden")]
    Riden,
    /// A Neware BTS server through the BTS API (`address`, port 502 as shipped): native.
    /// Step files go to `step_folder`, which the BTS PC must read as `remote_step_folder`.
    #[serde(rename = "neware")]
    Neware,
    /// A Maccor tester over MacNet (`address` = JSON port, 57570 as shipped; `binary_port`,
    /// default 57560): native, the tester runs the compiled procedure.
    #[serde(rename = "maccor")]
    Maccor,
    /// A Maccor tester's channels in MacNet direct mode: stepped, cyclerd's engine sets the
    /// output (at most every 100 ms). Same keys as `maccor`, plus `nominal_current` and
    /// `nominal_voltage` as the channel's output limits.
    #[serde(rename = "maccor-direct")]
    MaccorDirect,
    /// An Arbin MITS Pro console through CTI (`address` = control port, 9031 as shipped;
    /// `file_port`, default 9032; `username`, `password`): native.
    #[serde(rename = "arbin")]
    Arbin,
}

impl ChamberFamily {
    /// As the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            ChamberFamily::Espec => "espec",
            ChamberFamily::Weiss => "weiss",
            ChamberFamily::Watlow => "watlow",
            ChamberFamily::Binder => "binder",
        }
    }
}

impl Family {
    /// Whether the device runs schedules itself (the daemon follows it) rather than being
    /// stepped by the daemon.
    pub fn is_native(self) -> bool {
        matches!(self, Family::Neware | Family::Maccor | Family::Arbin)
    }

    /// As the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Family::EaPsb => "ea-psb",
            Family::Scpi => "scpi",
            Family::Riden => "riden",
            Family::Neware => "neware",
            Family::Maccor => "maccor",
            Family::MaccorDirect => "maccor-direct",
            Family::Arbin => "arbin",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Names the device in channel ids (`NAME/N`).
    pub name: String,
    pub family: Family,
    /// host:port of a networked device (ea-psb, scpi; the main port of a neware, maccor or
    /// arbin).
    pub address: Option<SocketAddr>,
    /// Serial port of a serial device (riden; ea-psb and scpi instead of `address`), e.g.
    /// "/dev/ttyUSB0" or "COM3".
    pub port: Option<String>,
    /// Line speed of `port` for ea-psb (default 115200) and scpi (default 9600, as ITECH's
    /// RS-232 ships); a Riden is driven at its 115200.
    pub baud: Option<u32>,
    /// SCPI dialect to use instead of the one `*IDN?` suggests: ea-psb, keithley-24xx,
    /// keysight-b2900, itech-it6000, bk-8600.
    pub dialect: Option<String>,
    /// Modbus unit id.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Wall-time bound on one transaction (default 1000 ms; 5000 ms for neware, maccor and
    /// arbin, whose record downloads are large).
    pub timeout_ms: Option<u64>,
    /// Override the nominal ratings read from the device's type designation.
    pub nominal_voltage: Option<f64>,
    pub nominal_current: Option<f64>,
    pub nominal_power: Option<f64>,
    /// Neware: the folder cyclerd writes step files to, shared with the BTS PC.
    pub step_folder: Option<PathBuf>,
    /// Neware: the same folder as the BTS PC names it (e.g. `D:\\cyclerd\\steps` when
    /// `step_folder` is the Samba mount of it); unset when both see the same path.
    pub remote_step_folder: Option<String>,
    /// Neware and Arbin login (Neware default admin/neware).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Maccor: the binary MacNet port (default 57560).
    pub binary_port: Option<u16>,
    /// Arbin: the CTI file port (default 9032).
    pub file_port: Option<u16>,
}

fn default_unit() -> u8 {
    1
}

impl DeviceConfig {
    /// The transaction timeout, defaulted by family.
    pub fn timeout(&self) -> std::time::Duration {
        let default = if self.family.is_native() || self.family == Family::MaccorDirect {
            5000
        } else {
            1000
        };
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(default))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// `DEVICE/N`.
    pub id: String,
    /// Interval between measurements, in the clock's (possibly simulated) seconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// After this long (wall ms) without a good reply, the test faults and the output is
    /// switched off as soon as the device answers again.
    #[serde(default = "default_comm_timeout_ms")]
    pub comm_timeout_ms: u64,
    #[serde(default)]
    pub limits: ChannelLimits,
    /// An electronic load (a `scpi` device) that takes the discharge steps while this
    /// channel's own device, a supply, takes the charge steps: together one bidirectional
    /// channel. Never both on at once.
    pub load: Option<String>,
}

fn default_poll_interval_ms() -> u64 {
    100
}

fn default_comm_timeout_ms() -> u64 {
    5000
}

impl ChannelConfig {
    /// The device part of `DEVICE/N`.
    pub fn device_name(&self) -> &str {
        self.id.split_once('/').map_or(self.id.as_str(), |(d, _)| d)
    }
}

impl StoreSection {
    pub fn outbox_options(&self, daemon_id: Option<String>) -> crate::outbox::OutboxOptions {
        crate::outbox::OutboxOptions {
            path: self.path.clone(),
            sync: self.sync,
            max_bytes: self.max_bytes,
            keep_acked: std::time::Duration::from_secs(self.keep_acked_s),
            daemon_id,
            ..crate::outbox::OutboxOptions::new(&self.path)
        }
    }
}

impl Config {
    /// Reads `path`, applies `CYCLERD__*` overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::read(path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Reads `path` and applies `CYCLERD__*` overrides, without the checks: for `cyclerd token`,
    /// which must work on a configuration that still waits for its first token.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        Config::read_with_env(path, None)
    }

    /// [`Config::read`] with the environment `env` (`None`: the process's).
    fn read_with_env(
        path: &Path,
        env: Option<config::Map<String, String>>,
    ) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let fail = |message: String| ConfigError {
            origin: origin.clone(),
            message,
        };
        if !path.exists() {
            return Err(fail(
                "no such file (give the lab configuration with --config FILE; examples are in \
                 deploy/)"
                    .into(),
            ));
        }
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                // ENV_PREFIX: `CYCLERD` and a double underscore.
                config::Environment::with_prefix("CYCLERD")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(env),
            )
            .build()
            .map_err(|e| fail(e.to_string()))?;
        built.try_deserialize().map_err(|e| fail(e.to_string()))
    }

    /// Parses TOML text (no environment overrides), for built-in configurations and tests.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError {
                origin: origin.into(),
                message: e.to_string(),
            })?;
        let config: Config = built.try_deserialize().map_err(|e| ConfigError {
            origin: origin.into(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The instruments a test on `channel` runs on, as the hub records them: its device, the
    /// paired load, the chamber it sits in.
    pub fn equipment_of(&self, channel: &ChannelConfig) -> Vec<crate::proto::ingest::Equipment> {
        use crate::proto::ingest::Equipment;
        let at = |address: Option<SocketAddr>, port: &Option<String>| {
            address
                .map(|a| a.to_string())
                .or_else(|| port.clone())
                .unwrap_or_default()
        };
        let device = |d: &DeviceConfig, role: &str| Equipment {
            name: d.name.clone(),
            family: d.family.name().into(),
            address: at(d.address, &d.port),
            role: role.into(),
        };
        let mut out = Vec::new();
        if let Some(d) = self.device(channel.device_name()) {
            out.push(device(
                d,
                if d.family.is_native() {
                    "cycler"
                } else {
                    "source"
                },
            ));
        }
        if let Some(load) = channel.load.as_deref().and_then(|l| self.device(l)) {
            out.push(device(load, "load"));
        }
        if let Some(c) = self.chamber_of(&channel.id) {
            out.push(Equipment {
                name: c.name.clone(),
                family: c.family.name().into(),
                address: at(c.address, &c.port),
                role: "chamber".into(),
            });
        }
        out
    }

    /// The chamber `channel_id` sits in, if any.
    pub fn chamber_of(&self, channel_id: &str) -> Option<&ChamberConfig> {
        self.chambers
            .iter()
            .find(|c| c.channels.iter().any(|ch| ch == channel_id))
    }

    /// The control tokens file: `[control] tokens_file`, or `control-tokens.toml` beside the
    /// outbox.
    pub fn control_tokens_file(&self) -> PathBuf {
        self.control
            .tokens_file
            .clone()
            .unwrap_or_else(|| self.store.path.with_file_name("control-tokens.toml"))
    }

    /// Whether every control call needs a token: beyond loopback unless `insecure`, and
    /// anywhere with `require_tokens`.
    pub fn control_requires_tokens(&self) -> bool {
        self.control.require_tokens || (self.control.beyond_loopback() && !self.control.insecure)
    }

    /// Whether the web monitor needs a token to read and an operator's to start and stop:
    /// beyond loopback unless `[control] insecure`, and anywhere with `require_tokens`.
    pub fn web_requires_tokens(&self) -> bool {
        let beyond = matches!(self.web.address(), Ok(Some(a)) if !a.ip().is_loopback());
        self.control.require_tokens || (beyond && !self.control.insecure)
    }

    /// Where alerts wait until delivered: `[alerts] store_path`, or `alerts.sqlite` beside the
    /// outbox.
    pub fn alerts_store_path(&self) -> PathBuf {
        self.alerts
            .store_path
            .clone()
            .unwrap_or_else(|| self.store.path.with_file_name("alerts.sqlite"))
    }

    pub fn device(&self, name: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests;
