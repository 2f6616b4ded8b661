//! The daemon's configuration: a TOML file (through the `config` crate) with `CYCLERD_*`
//! environment overrides (`CYCLERD_HUB__ADDRESS=...`).
//!
//! Every struct denies unknown keys, so a typo is an error naming the key rather than a
//! silently ignored setting.

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
    /// The lab's hard limits: apply to every channel; a protocol can only narrow them.
    pub limits: Limits,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
    #[serde(default, rename = "chamber")]
    pub chambers: Vec<ChamberConfig>,
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
    /// gRPC address of the hub, e.g. "http://hub.lab:50051".
    pub address: String,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Where the control API (cyclerctl) listens.
    #[serde(default = "default_control_listen")]
    pub listen: SocketAddr,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            listen: default_control_listen(),
        }
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
        }
    }
}

impl Config {
    /// Reads `path`, applies `CYCLERD_*` overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
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
                config::Environment::with_prefix("CYCLERD")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let config: Config = built.try_deserialize().map_err(|e| fail(e.to_string()))?;
        config.validate(&origin)?;
        Ok(config)
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

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |message: String| {
            Err(ConfigError {
                origin: origin.into(),
                message,
            })
        };
        // They name the instruments and channels at the hub, whose keys are bounded.
        let names = self
            .devices
            .iter()
            .map(|d| ("device", &d.name))
            .chain(self.chambers.iter().map(|c| ("chamber", &c.name)))
            .chain(self.channels.iter().map(|c| ("channel", &c.id)));
        for (what, name) in names {
            if name.len() > cyclerd_proto::metadata::MAX_KEY_BYTES {
                return fail(format!(
                    "a {what} name is {} bytes long; at most {}",
                    name.len(),
                    cyclerd_proto::metadata::MAX_KEY_BYTES
                ));
            }
        }
        let l = &self.limits;
        if l.voltage_min.is_nan() || l.voltage_max.is_nan() || l.voltage_min >= l.voltage_max {
            return fail(format!(
                "limits.voltage_min ({}) must be below limits.voltage_max ({})",
                l.voltage_min, l.voltage_max
            ));
        }
        if l.current_max.is_nan() || l.current_max <= 0.0 {
            return fail(format!(
                "limits.current_max must be positive, not {}",
                l.current_max
            ));
        }
        if self.store.max_bytes == Some(0) {
            return fail("store.max_bytes must be at least 1 (or left out for no quota)".into());
        }
        if self
            .daemon
            .id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return fail("daemon.id must not be empty (or left out to make one)".into());
        }
        if self.store.commit_interval_ms == 0 {
            return fail("store.commit_interval_ms must be at least 1".into());
        }
        if self.hub.window == 0 {
            return fail("hub.window must be at least 1".into());
        }
        if let Some(lab) = &self.hub.lab
            && (lab.is_empty()
                || lab.len() > 100
                || lab.trim() != lab
                || lab.chars().any(char::is_control))
        {
            return fail(format!(
                "hub.lab {lab:?} must be 1 to 100 printable characters without surrounding spaces"
            ));
        }
        if self.hub.address.starts_with("https://") && self.hub.ca_file.is_none() {
            return fail(format!(
                "hub.address {:?} uses TLS: set hub.ca_file to the PEM file of the CA that signed \
                 the hub's certificate",
                self.hub.address
            ));
        }
        if self.hub.address.starts_with("http://") && self.hub.ca_file.is_some() {
            return fail(format!(
                "hub.ca_file is set but hub.address {:?} is plain http://; use https://",
                self.hub.address
            ));
        }
        if !(self.hub.address.starts_with("http://") || self.hub.address.starts_with("https://")) {
            return fail(format!(
                "hub.address {:?} must start with http:// or https://",
                self.hub.address
            ));
        }
        let mut names = HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if d.name.is_empty() || d.name.contains('/') {
                return fail(format!(
                    "device[{i}].name {:?} must be non-empty and contain no '/'",
                    d.name
                ));
            }
            if !names.insert(d.name.as_str()) {
                return fail(format!("device[{i}].name {:?} is used twice", d.name));
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            match d.family {
                Family::EaPsb | Family::Scpi if d.address.is_none() == d.port.is_none() => {
                    return fail(format!(
                        "device[{i}] {:?}: give either address = \"host:port\" (network) or \
                         port = \"/dev/ttyUSB0\" (serial), not both or neither",
                        d.name
                    ));
                }
                Family::Riden if d.port.is_none() || d.address.is_some() => {
                    return fail(format!(
                        "device[{i}] {:?}: a serial device needs port = \"/dev/ttyUSB0\" (or COM3)",
                        d.name
                    ));
                }
                Family::Neware | Family::Maccor | Family::MaccorDirect | Family::Arbin
                    if d.address.is_none() || d.port.is_some() =>
                {
                    return fail(format!(
                        "device[{i}] {:?}: a {} is reached over the network; give address = \
                         \"host:port\" (and no port)",
                        d.name,
                        d.family.name()
                    ));
                }
                Family::Neware if d.step_folder.is_none() => {
                    return fail(format!(
                        "device[{i}] {:?}: a neware needs step_folder = \"DIR\", a folder the \
                         BTS PC can read (and remote_step_folder if it names it differently)",
                        d.name
                    ));
                }
                Family::Arbin if d.username.is_none() || d.password.is_none() => {
                    return fail(format!(
                        "device[{i}] {:?}: an arbin needs username and password (the MITS Pro \
                         login CTI uses)",
                        d.name
                    ));
                }
                Family::MaccorDirect
                    if d.nominal_current.is_none() || d.nominal_voltage.is_none() =>
                {
                    return fail(format!(
                        "device[{i}] {:?}: maccor-direct needs nominal_current and \
                         nominal_voltage, the channel's output limits in direct mode",
                        d.name
                    ));
                }
                Family::Riden if d.baud.is_some() => {
                    return fail(format!(
                        "device[{i}] {:?}: a Riden is driven at 115200 baud; remove baud (set \
                         the supply's own menu to 115200)",
                        d.name
                    ));
                }
                _ => {}
            }
            use Family::*;
            let family_keys: [(&str, bool, &[Family]); 6] = [
                ("dialect", d.dialect.is_some(), &[Scpi]),
                ("step_folder", d.step_folder.is_some(), &[Neware]),
                (
                    "remote_step_folder",
                    d.remote_step_folder.is_some(),
                    &[Neware],
                ),
                (
                    "username",
                    d.username.is_some() || d.password.is_some(),
                    &[Neware, Arbin],
                ),
                (
                    "binary_port",
                    d.binary_port.is_some(),
                    &[Maccor, MaccorDirect],
                ),
                ("file_port", d.file_port.is_some(), &[Arbin]),
            ];
            for (key, given, families) in family_keys {
                if given && !families.contains(&d.family) {
                    return fail(format!(
                        "device[{i}] {:?}: {key} does not apply to a {} (only to: {})",
                        d.name,
                        d.family.name(),
                        families
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            if let Some(dialect) = &d.dialect
                && Dialect::from_name(dialect).is_none()
            {
                return fail(format!(
                    "device[{i}].dialect {dialect:?} is not one of: {}",
                    Dialect::names().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let mut ids = HashSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            let Some((device, n)) = c.id.split_once('/') else {
                return fail(format!(
                    "channel[{i}].id {:?} must look like DEVICE/N",
                    c.id
                ));
            };
            if n.parse::<u32>().is_err() {
                return fail(format!("channel[{i}].id {:?}: N must be a number", c.id));
            }
            if !names.contains(device) {
                return fail(format!(
                    "channel[{i}].id {:?} names device {device:?}, which no [[device]] defines",
                    c.id
                ));
            }
            if !ids.insert(c.id.as_str()) {
                return fail(format!("channel[{i}].id {:?} is used twice", c.id));
            }
            if let Some(load) = &c.load {
                match self.device(load) {
                    None => {
                        return fail(format!("channel[{i}].load {load:?} names no [[device]]"));
                    }
                    Some(d)
                        if d.family != Family::Scpi
                            || self
                                .device(device)
                                .is_some_and(|s| s.family != Family::Scpi) =>
                    {
                        return fail(format!(
                            "channel[{i}].load: a supply + load pair needs two scpi devices"
                        ));
                    }
                    Some(_) => {}
                }
            }
            if c.poll_interval_ms == 0 {
                return fail(format!("channel[{i}].poll_interval_ms must be at least 1"));
            }
        }
        let mut in_chamber: std::collections::HashMap<&str, &str> = Default::default();
        let mut chamber_names = HashSet::new();
        for (i, c) in self.chambers.iter().enumerate() {
            if c.name.is_empty() || !chamber_names.insert(c.name.as_str()) {
                return fail(format!(
                    "chamber[{i}].name {:?} must be non-empty and unique",
                    c.name
                ));
            }
            let serial_ok = matches!(c.family, ChamberFamily::Espec | ChamberFamily::Binder);
            match (&c.address, &c.port) {
                (Some(_), None) => {}
                (None, Some(_)) if serial_ok => {}
                _ if serial_ok => {
                    return fail(format!(
                        "chamber[{i}] {:?}: give either address = \"host:port\" or port = \
                         \"/dev/ttyUSB0\", not both or neither",
                        c.name
                    ));
                }
                _ => {
                    return fail(format!(
                        "chamber[{i}] {:?}: this family is reached over the network; give \
                         address = \"host:port\" (and no port)",
                        c.name
                    ));
                }
            }
            if c.loop_number.is_some() && c.family != ChamberFamily::Watlow {
                return fail(format!(
                    "chamber[{i}] {:?}: loop_number applies to a watlow only",
                    c.name
                ));
            }
            let (lo, hi) = c.limits(&self.limits);
            if lo.is_nan() || hi.is_nan() || lo >= hi {
                return fail(format!(
                    "chamber[{i}] {:?}: temperature_min ({lo}) must be below temperature_max ({hi})",
                    c.name
                ));
            }
            if let Some(t) = c.idle_set_point
                && !(lo..=hi).contains(&t)
            {
                return fail(format!(
                    "chamber[{i}] {:?}: idle_set_point ({t}) must be within the chamber's limits \
                     {lo} to {hi} degC",
                    c.name
                ));
            }
            if c.poll_interval_ms == 0 || c.comm_timeout_ms == 0 {
                return fail(format!(
                    "chamber[{i}] {:?}: poll_interval_ms and comm_timeout_ms must be at least 1",
                    c.name
                ));
            }
            for ch in &c.channels {
                if !ids.contains(ch.as_str()) {
                    return fail(format!(
                        "chamber[{i}] {:?} lists channel {ch:?}, which no [[channel]] defines",
                        c.name
                    ));
                }
                if let Some(other) = in_chamber.insert(ch.as_str(), c.name.as_str()) {
                    return fail(format!(
                        "channel {ch:?} is listed in two chambers, {other:?} and {:?}; a cell \
                         sits in one chamber",
                        c.name
                    ));
                }
            }
        }
        Ok(())
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

    pub fn device(&self, name: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [store]
        path = "outbox.sqlite"
        [hub]
        address = "http://127.0.0.1:50051"
        [limits]
        voltage_min = 2.5
        voltage_max = 4.25
        current_max = 10.0
        [[device]]
        name = "psb1"
        family = "ea-psb"
        address = "127.0.0.1:502"
        [[channel]]
        id = "psb1/1"
    "#;

    #[test]
    fn a_minimal_config_gets_sensible_defaults() {
        let c = Config::from_toml(GOOD, "lab.toml").unwrap();
        assert_eq!(c.store.commit_interval_ms, 250);
        assert_eq!(c.channels[0].poll_interval_ms, 100);
        assert_eq!(c.devices[0].unit, 1);
        assert_eq!(c.control.listen.port(), 50052);
    }

    #[test]
    fn unknown_key_is_an_error_naming_file_and_key() {
        let text = GOOD.replace("current_max = 10.0", "current_max = 10.0\ncurent = 3");
        let e = Config::from_toml(&text, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("lab.toml:"), "{e}");
        assert!(e.contains("curent"), "{e}");
    }

    #[test]
    fn wrong_type_is_an_error_naming_the_key() {
        let text = GOOD.replace("voltage_max = 4.25", "voltage_max = \"high\"");
        let e = Config::from_toml(&text, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("voltage_max"), "{e}");
    }

    #[test]
    fn a_device_is_either_networked_or_serial_and_a_riden_takes_no_baud() {
        let both = GOOD.replace(
            "address = \"127.0.0.1:502\"",
            "address = \"127.0.0.1:502\"\nport = \"/dev/ttyUSB0\"",
        );
        let e = Config::from_toml(&both, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both or neither"), "{e}");
        let serial = GOOD.replace(
            "address = \"127.0.0.1:502\"",
            "port = \"/dev/ttyUSB0\"\nbaud = 57600",
        );
        let c = Config::from_toml(&serial, "lab.toml").unwrap();
        assert_eq!(c.devices[0].baud, Some(57600));
        let riden = serial.replace("family = \"ea-psb\"", "family = \"riden\"");
        let e = Config::from_toml(&riden, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("115200"), "{e}");
    }

    #[test]
    fn cyclers_are_networked_and_name_what_they_need() {
        let neware = GOOD.replace("family = \"ea-psb\"", "family = \"neware\"");
        let e = Config::from_toml(&neware, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("step_folder"), "{e}");
        let with_folder = neware.replace(
            "address = \"127.0.0.1:502\"",
            "address = \"127.0.0.1:502\"\nstep_folder = \"/tmp/steps\"",
        );
        let c = Config::from_toml(&with_folder, "lab.toml").unwrap();
        assert!(c.devices[0].family.is_native());
        assert_eq!(c.devices[0].timeout().as_millis(), 5000);
        let arbin = GOOD.replace("family = \"ea-psb\"", "family = \"arbin\"");
        let e = Config::from_toml(&arbin, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("username and password"), "{e}");
        let serial = GOOD
            .replace("family = \"ea-psb\"", "family = \"maccor\"")
            .replace("address = \"127.0.0.1:502\"", "port = \"/dev/ttyUSB0\"");
        let e = Config::from_toml(&serial, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("over the network"), "{e}");
        let direct = GOOD.replace("family = \"ea-psb\"", "family = \"maccor-direct\"");
        let e = Config::from_toml(&direct, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nominal_current"), "{e}");
        let misplaced = with_folder.replace("family = \"neware\"", "family = \"ea-psb\"");
        let e = Config::from_toml(&misplaced, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("step_folder does not apply to a ea-psb"), "{e}");
    }

    #[test]
    fn a_chamber_names_existing_channels_each_in_one_chamber_and_sensible_limits() {
        let chamber = |extra: &str| {
            format!(
                "{GOOD}\n[[chamber]]\nname = \"c1\"\nfamily = \"espec\"\naddress = \"127.0.0.1:10001\"\n{extra}"
            )
        };
        let c = Config::from_toml(&chamber("channels = [\"psb1/1\"]"), "lab.toml").unwrap();
        assert_eq!(c.chamber_of("psb1/1").unwrap().name, "c1");
        assert_eq!(c.chambers[0].limits(&c.limits), (-40.0, 60.0));
        for (extra, expected) in [
            ("channels = [\"psb9/1\"]", "no [[channel]] defines"),
            (
                "channels = [\"psb1/1\"]\ntemperature_min = 50.0\ntemperature_max = 40.0",
                "must be below",
            ),
            ("channels = [\"psb1/1\"]\nloop_number = 2", "watlow only"),
            (
                "channels = [\"psb1/1\"]\nidle_set_point = 80.0",
                "idle_set_point (80) must be within the chamber's limits -40 to 60",
            ),
            (
                "channels = [\"psb1/1\"]\nport = \"/dev/ttyUSB1\"",
                "not both",
            ),
        ] {
            let e = Config::from_toml(&chamber(extra), "lab.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{extra}: {e}");
        }
        let twice = format!(
            "{}\n[[chamber]]\nname = \"c2\"\nfamily = \"weiss\"\naddress = \"127.0.0.1:2049\"\nchannels = [\"psb1/1\"]",
            chamber("channels = [\"psb1/1\"]")
        );
        let e = Config::from_toml(&twice, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("two chambers"), "{e}");
    }

    #[test]
    fn every_example_lab_configuration_shipped_in_deploy_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = Config::from_toml(&text, &path.display().to_string()) {
                    panic!("{e}");
                }
                checked += 1;
            }
        }
        assert!(
            checked >= 4,
            "{checked} example configurations in {}",
            dir.display()
        );
    }

    #[test]
    fn a_tls_hub_address_needs_the_lab_ca_and_a_ca_needs_tls() {
        let tls = GOOD.replace("http://127.0.0.1:50051", "https://hub.lab:50051");
        let e = Config::from_toml(&tls, "lab.toml").unwrap_err().to_string();
        assert!(e.contains("hub.ca_file"), "{e}");
        let with_ca = tls.replace(
            "address = \"https://hub.lab:50051\"",
            "address = \"https://hub.lab:50051\"\nca_file = \"/etc/cyclerd/lab-ca.pem\"",
        );
        Config::from_toml(&with_ca, "lab.toml").unwrap();
        let clear = with_ca.replace("https://", "http://");
        let e = Config::from_toml(&clear, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("use https://"), "{e}");
    }

    #[test]
    fn a_hub_lab_is_a_printable_name() {
        let with_lab = |lab: &str| {
            GOOD.replace(
                "address = \"http://127.0.0.1:50051\"",
                &format!("address = \"http://127.0.0.1:50051\"\nlab = {lab:?}"),
            )
        };
        Config::from_toml(&with_lab("cell-ageing"), "lab.toml").unwrap();
        for bad in ["", " cell-ageing", "cell\nageing"] {
            let e = Config::from_toml(&with_lab(bad), "lab.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains("hub.lab"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn channel_on_an_undefined_device_is_refused() {
        let text = GOOD.replace("id = \"psb1/1\"", "id = \"psb9/1\"");
        let e = Config::from_toml(&text, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("channel[0].id") && e.contains("psb9"), "{e}");
    }

    #[test]
    fn the_example_lab_configs_in_deploy_load() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let mut seen = 0;
        for entry in std::fs::read_dir(&deploy).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                Config::from_toml(&text, &path.display().to_string()).unwrap();
                seen += 1;
            }
        }
        assert!(seen > 0, "deploy/ has example configurations");
    }

    #[test]
    fn channel_limits_can_only_narrow_the_lab_limits() {
        let c = Config::from_toml(GOOD, "lab.toml").unwrap();
        let narrowed = c.limits.stricter(&ChannelLimits {
            voltage_max: Some(4.5),
            current_max: Some(2.0),
            ..ChannelLimits::default()
        });
        assert_eq!(narrowed.voltage_max, 4.25);
        assert_eq!(narrowed.current_max, 2.0);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_text_is_an_error_or_a_config_never_a_panic(text in "\\PC{0,200}") {
                let _ = Config::from_toml(&text, "fuzz.toml");
            }

            #[test]
            fn mutated_configs_never_panic(cut in 0usize..400, insert in "[a-z_=\"\\[\\]0-9. \n]{0,20}") {
                let mut text = GOOD.to_string();
                let at = cut.min(text.len());
                let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                text.insert_str(at, &insert);
                let _ = Config::from_toml(&text, "fuzz.toml");
            }
        }
    }
}
