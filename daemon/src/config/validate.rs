//! The checks a configuration passes before the daemon touches any device: every error names
//! the file, the entry and the key.

use super::*;
use crate::control::tokens::TokenStore;

impl Config {
    pub(super) fn validate(&self, origin: &str) -> Result<(), ConfigError> {
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
        self.validate_control().map_err(|message| ConfigError {
            origin: origin.into(),
            message,
        })?;
        let channels: Vec<&str> = self.channels.iter().map(|c| c.id.as_str()).collect();
        let chambers: Vec<&str> = self.chambers.iter().map(|c| c.name.as_str()).collect();
        self.alerts
            .validate(&channels, &chambers, self.store.max_bytes)
            .map_err(|message| ConfigError {
                origin: origin.into(),
                message,
            })?;
        self.validate_web().map_err(|message| ConfigError {
            origin: origin.into(),
            message,
        })?;
        if self.control.max_connections == Some(0) {
            return fail(
                "control.max_connections = 0 would refuse every client; at least 1".into(),
            );
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
        if self.hub.address.list().is_empty() {
            return fail("hub.address is an empty list: give at least one hub address".into());
        }
        for address in self.hub.address.list() {
            if address.starts_with("https://") && self.hub.ca_file.is_none() {
                return fail(format!(
                    "hub.address {address:?} uses TLS: set hub.ca_file to the PEM file of the CA \
                     that signed the hub's certificate"
                ));
            }
            if address.starts_with("http://") && self.hub.ca_file.is_some() {
                return fail(format!(
                    "hub.ca_file is set but hub.address {address:?} is plain http://; use https://"
                ));
            }
            if !(address.starts_with("http://") || address.starts_with("https://")) {
                return fail(format!(
                    "hub.address {address:?} must start with http:// or https://"
                ));
            }
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
            let Ok(n) = n.parse::<u32>() else {
                return fail(format!("channel[{i}].id {:?}: N must be a number", c.id));
            };
            if !names.contains(device) {
                return fail(format!(
                    "channel[{i}].id {:?} names device {device:?}, which no [[device]] defines",
                    c.id
                ));
            }
            if let Some(d) = self.device(device).filter(|d| !d.family.is_native()) {
                if n == 0 {
                    return fail(format!(
                        "channel[{i}].id {:?}: outputs count from 1 ({device}/1 is the first)",
                        c.id
                    ));
                }
                if let Some((outputs, model)) = outputs_of(d)
                    && n > outputs
                {
                    return fail(format!(
                        "channel[{i}].id {:?}: device {device:?} is {model} with {outputs} \
                         output{}; channel {n} is beyond it (two channels on one output would \
                         fight over it)",
                        c.id,
                        if outputs == 1 { "" } else { "s" }
                    ));
                }
            }
            if !ids.insert(c.id.as_str()) {
                return fail(format!("channel[{i}].id {:?} is used twice", c.id));
            }
            // A load is one more output: it serves one channel, and no channel of its own.
            let shares = |o: &ChannelConfig| {
                let load = c.load.as_deref();
                (load.is_some()
                    && (o.load.as_deref() == load || load == o.id.split_once('/').map(|(d, _)| d)))
                    || o.load.as_deref() == Some(device)
            };
            if let Some(other) = self.channels[..i].iter().find(|o| shares(o)) {
                return fail(format!(
                    "channel[{i}].id {:?} shares an electronic load's output with channel \
                     {:?}; a load serves one channel",
                    c.id, other.id
                ));
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
}

impl Config {
    /// The control API's listener: TLS and tokens beyond loopback (unless `insecure`), and a
    /// token to present wherever tokens are required.
    fn validate_control(&self) -> Result<(), String> {
        let control = &self.control;
        let issue = "issue one on this machine with `cyclerd token issue --config FILE --role \
                     operator --name NAME` (as the daemon's user)";
        if control.tls_cert.is_some() != control.tls_key.is_some() {
            return Err(
                "control.tls_cert and control.tls_key go together: give both PEM files, or neither"
                    .into(),
            );
        }
        if control.beyond_loopback() && !control.insecure && control.missing_tls() {
            return Err(format!(
                "control.listen = {}: other machines could reach the control API, so it needs \
                 TLS and tokens: set control.tls_cert and control.tls_key (PEM) and {issue}; or \
                 listen on 127.0.0.1 and reach it over `ssh -L`, or set control.insecure = true \
                 on a network you trust (no TLS, no tokens: anyone reaching the port may start \
                 and stop tests)",
                control.listen
            ));
        }
        if self.control_requires_tokens() {
            let file = self.control_tokens_file();
            let why = if control.beyond_loopback() {
                format!("control.listen = {} is beyond loopback", control.listen)
            } else {
                "control.require_tokens is set".to_string()
            };
            match TokenStore::new(&file).valid_count() {
                Ok(0) => {
                    return Err(format!(
                        "{why}, so every control call needs a token, and {} holds none: {issue}",
                        file.display()
                    ));
                }
                Err(e) => return Err(format!("{why}, so control calls need tokens: {e:#}")),
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

impl Config {
    /// The web monitor's listener: beyond loopback it needs the control API's TLS files and
    /// tokens, unless `[control] insecure`.
    fn validate_web(&self) -> Result<(), String> {
        let Some(listen) = self.web.address()? else {
            return Ok(());
        };
        if !listen.ip().is_loopback() && !self.control.insecure && self.control.missing_tls() {
            return Err(format!(
                "web.listen = {listen}: other machines could reach the web monitor, so it needs \
                 TLS and tokens: set control.tls_cert and control.tls_key (PEM; the monitor \
                 serves the control API's certificate) and issue tokens with `cyclerd token \
                 issue`; or listen on 127.0.0.1 and reach it over `ssh -L`, or set \
                 control.insecure = true on a network you trust"
            ));
        }
        if self.web_requires_tokens() && !self.control_requires_tokens() {
            let file = self.control_tokens_file();
            match TokenStore::new(&file).valid_count() {
                Ok(0) => {
                    return Err(format!(
                        "web.listen = {listen} is beyond loopback, so the web monitor needs \
                         tokens, and {} holds none: issue one with `cyclerd token issue \
                         --config FILE --role operator --name NAME`",
                        file.display()
                    ));
                }
                Err(e) => return Err(format!("the web monitor needs tokens: {e:#}")),
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// How many outputs a stepped device has, and how messages name its model, where its family
/// (and dialect) alone decide; `None` when only the device can say (a Maccor tester's channel
/// count, checked when direct mode starts).
fn outputs_of(d: &DeviceConfig) -> Option<(u32, String)> {
    use cyclerd_drivers::{ea_psb, riden};
    match d.family {
        Family::EaPsb => Some((ea_psb::wire::OUTPUTS, "an EA PSB".into())),
        Family::Riden => Some((riden::wire::OUTPUTS, "a Riden RD60xx".into())),
        Family::Scpi => Some(match d.dialect.as_deref().and_then(Dialect::from_name) {
            Some(dialect) => (
                dialect.table().outputs,
                format!("a SCPI instrument in the {} dialect", dialect.table().name),
            ),
            None => (
                Dialect::most_outputs(),
                "a SCPI instrument (its dialect from *IDN?)".into(),
            ),
        }),
        _ => None,
    }
}
