//! (4,4) auxiliary values of one channel, binary and JSON.
//!
//! Facts (the open client's message definitions, `pymacnet`): the JSON request is
//! `{"FClass":4,"FNum":4,"Chan":1}`, the result `{"FClass":4,"FNum":4,"Chan":93,"Len":1,
//! "AuxValues":[24.7545490264893]}`: one number per auxiliary input of the channel, `Len`
//! their count. The public example answers a request for Chan 1 with Chan 93; whether that is
//! a slip in the example or how a tester numbers aux replies is not public, so the codec keeps
//! the reply's Chan as it stands and the client decides (it refuses a reply for another
//! channel, as for (4,7)). What each input measures is configured on the tester and not
//! carried in the reply; cyclerd takes the first as the cell temperature, degC (see
//! [`MaccorConfig::temperature_aux`](crate::maccor::MaccorConfig::temperature_aux)).
//!
//! Decoding is tolerant where the meaning is still clear: a missing or `null` `AuxValues` is
//! no values (a channel without aux inputs), and a `Len` that disagrees with the array is
//! ignored (the array is what was measured). An `AuxValues` that is not a list of numbers is
//! an error.
//!
//! Binary (*inferred*, not public): the request is the header with Len 1 (one channel); the
//! reply's data one little-endian f32 per input, so its Len is four times the count.

use super::{AUX_VALUES, Frame, WireError, field};
use serde_json::{Map, Value};

/// (4,4): the present values of one channel's auxiliary inputs, in the tester's order.
#[derive(Debug, Clone, PartialEq)]
pub struct AuxValues {
    /// One value per input (temperature inputs in degC); empty when the channel has none.
    pub values: Vec<f64>,
}

impl AuxValues {
    pub fn request(chan: u16) -> Frame {
        Frame::request(AUX_VALUES, chan, 1)
    }

    /// The binary reply (values as f32, *inferred* layout).
    pub fn to_frame(&self, chan: u16) -> Frame {
        let data = self
            .values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect();
        Frame::with_data(AUX_VALUES, chan, data)
    }

    pub fn from_frame(frame: &Frame) -> Result<AuxValues, WireError> {
        frame.expect(AUX_VALUES)?;
        if !frame.data.len().is_multiple_of(4) {
            return Err(WireError::Length {
                what: "a (4,4) aux values reply (4 bytes per input)",
                need: frame.data.len().next_multiple_of(4),
                got: frame.data.len(),
            });
        }
        let values = frame
            .data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        Ok(AuxValues { values })
    }

    /// The JSON result fields, as the public example orders them.
    pub fn to_json(&self, chan: u16) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Chan".into(), chan.into());
        m.insert("Len".into(), self.values.len().into());
        let list = self
            .values
            .iter()
            .map(|&v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
            .collect();
        m.insert("AuxValues".into(), Value::Array(list));
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<AuxValues, WireError> {
        let list = match m.get("AuxValues") {
            None | Some(Value::Null) => return Ok(AuxValues { values: Vec::new() }),
            Some(Value::Array(list)) => list,
            Some(v) => return Err(field("AuxValues", format!("{v} is not a list"))),
        };
        let values = list
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| field("AuxValues", format!("{v} is not a number")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AuxValues { values })
    }
}
