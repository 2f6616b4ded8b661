//! (1,1) version and (1,2) system info, binary and JSON.

use super::{WireError, as_u16, decode_text, encode_text, field, reader};
use serde_json::{Map, Value};

/// (1,1): the tester software's versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// MacNet API version.
    pub api: u16,
    /// MacTest32.exe major, minor, build.
    pub exe: [u16; 3],
    /// MacTest32.dll major, minor, build.
    pub dll: [u16; 3],
}

const VERSION_KEYS: [[&str; 3]; 2] = [
    [
        "MacTest32EXEversionMajor",
        "MacTest32EXEversionMinor",
        "MacTest32EXEversionBuild",
    ],
    [
        "MacTest32DLLversionMajor",
        "MacTest32DLLversionMinor",
        "MacTest32DLLversionBuild",
    ],
];

impl Version {
    pub const LEN: usize = 14;

    pub fn to_bytes(&self) -> Vec<u8> {
        std::iter::once(self.api)
            .chain(self.exe)
            .chain(self.dll)
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Version, WireError> {
        let mut r = reader("a (1,1) version reply", bytes, Self::LEN)?;
        let api = r.u16()?;
        let exe = [r.u16()?, r.u16()?, r.u16()?];
        let dll = [r.u16()?, r.u16()?, r.u16()?];
        Ok(Version { api, exe, dll })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("APIVersion".into(), self.api.into());
        for (keys, values) in VERSION_KEYS.iter().zip([self.exe, self.dll]) {
            for (k, v) in keys.iter().zip(values) {
                m.insert((*k).into(), v.into());
            }
        }
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<Version, WireError> {
        // The public example spells one key "MacTest32DLLversionMsinor"; take either spelling.
        let get = |k: &'static str| -> Result<u16, WireError> {
            let alt = k.replace("Minor", "Msinor");
            match m.get(k).or_else(|| m.get(alt.as_str())) {
                Some(v) => as_u16(v, k),
                None => Err(field(k, "missing")),
            }
        };
        let three = |keys: [&'static str; 3]| -> Result<[u16; 3], WireError> {
            Ok([get(keys[0])?, get(keys[1])?, get(keys[2])?])
        };
        Ok(Version {
            api: get("APIVersion")?,
            exe: three(VERSION_KEYS[0])?,
            dll: three(VERSION_KEYS[1])?,
        })
    }
}

/// (1,2): what the tester has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The tester's name for itself.
    pub system_id: String,
    /// Direct mode works only on type 0.
    pub system_type: u16,
    /// Hardware counts, for the operator's overview.
    pub controller_boards: u16,
    /// Number of test channels: channels are 0 to `test_channels - 1`.
    pub test_channels: u16,
    /// Auxiliary (temperature, voltage) boards and inputs.
    pub aux_boards: u16,
    pub aux_channels: u16,
}

impl SystemInfo {
    const ID_LEN: usize = 16;
    pub const LEN: usize = 10 + Self::ID_LEN;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = [
            self.system_type,
            self.controller_boards,
            self.test_channels,
            self.aux_boards,
            self.aux_channels,
        ]
        .into_iter()
        .flat_map(u16::to_le_bytes)
        .collect();
        out.extend(encode_text(&self.system_id, Self::ID_LEN));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SystemInfo, WireError> {
        let mut r = reader("a (1,2) system info reply", bytes, Self::LEN)?;
        Ok(SystemInfo {
            system_type: r.u16()?,
            controller_boards: r.u16()?,
            test_channels: r.u16()?,
            aux_boards: r.u16()?,
            aux_channels: r.u16()?,
            system_id: decode_text(r.take(Self::ID_LEN)?),
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("SystemID".into(), self.system_id.clone().into());
        m.insert("SystemType".into(), self.system_type.into());
        m.insert("ControllerBoards".into(), self.controller_boards.into());
        m.insert("TestChannels".into(), self.test_channels.into());
        m.insert("AuxBoards".into(), self.aux_boards.into());
        m.insert("AuxChannels".into(), self.aux_channels.into());
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<SystemInfo, WireError> {
        // Only the channel count is needed; the rest defaults when a firmware leaves it out.
        let opt = |k: &'static str| m.get(k).map_or(Ok(0), |v| as_u16(v, k));
        Ok(SystemInfo {
            system_id: m
                .get("SystemID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            system_type: opt("SystemType")?,
            controller_boards: opt("ControllerBoards")?,
            test_channels: as_u16(
                m.get("TestChannels")
                    .ok_or_else(|| field("TestChannels", "missing"))?,
                "TestChannels",
            )?,
            aux_boards: opt("AuxBoards")?,
            aux_channels: opt("AuxChannels")?,
        })
    }
}
