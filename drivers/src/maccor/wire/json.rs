//! JSON-RPC 2.0 messages (one object each; see `split` for the framing): requests, results,
//! errors, and a command's result field.

use super::{
    Function, JSON_TERMINATOR, WireError, as_u16, as_u32, field, json_error, required, result,
};
use serde_json::{Map, Value, json};

/// A compact JSON request (ended by CR LF) for `function` on `chan` with `params`.
pub fn json_request(
    id: u64,
    function: Function,
    chan: Option<u16>,
    params: Map<String, Value>,
) -> String {
    let mut p = Map::new();
    p.insert("FClass".into(), function.class.into());
    p.insert("FNum".into(), function.num.into());
    if let Some(c) = chan {
        p.insert("Chan".into(), c.into());
    }
    p.extend(params);
    let v = json!({"jsonrpc": "2.0", "method": "MacNet", "params": p, "id": id});
    format!("{v}{JSON_TERMINATOR}")
}

/// A request as a server reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonRequest {
    /// Echoed in the reply (any JSON value; null when absent).
    pub id: Value,
    /// FClass and FNum from `params`.
    pub function: Function,
    /// Chan from `params`, when given.
    pub chan: Option<u16>,
    /// Everything in `params`, FClass/FNum/Chan included.
    pub params: Map<String, Value>,
}

/// A JSON-RPC error to answer with: the code and MacNet's text.
pub type JsonRpcError = (i64, &'static str);

/// Reads a request object (pretty or compact, any terminator); the error carries the id to answer with (null when unreadable).
pub fn parse_json_request(line: &str) -> Result<JsonRequest, (Value, JsonRpcError)> {
    let v: Value = serde_json::from_str(line.trim_end_matches(['\r', '\n']))
        .map_err(|_| (Value::Null, json_error::PARSE_ERROR))?;
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let bad = |e| (id.clone(), e);
    let obj = v.as_object().ok_or_else(|| bad(json_error::PARSE_ERROR))?;
    if obj.get("method").and_then(Value::as_str) != Some("MacNet") {
        return Err(bad(json_error::INVALID_PARAMS));
    }
    let params = obj
        .get("params")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(json_error::INVALID_PARAMS))?;
    let num = |k: &str| {
        params
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
    };
    let class = num("FClass").ok_or_else(|| bad(json_error::INVALID_PARAMS))?;
    let fnum = num("FNum").ok_or_else(|| bad(json_error::INVALID_PARAMS))?;
    let chan = match params.get("Chan") {
        None => None,
        Some(c) => Some(
            c.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| bad(json_error::INVALID_PARAMS))?,
        ),
    };
    Ok(JsonRequest {
        id,
        function: Function { class, num: fnum },
        chan,
        params: params.clone(),
    })
}

/// A result line: FClass, FNum (and Chan when given) first, then `fields`.
pub fn json_result(
    id: &Value,
    function: Function,
    chan: Option<u16>,
    fields: Map<String, Value>,
) -> String {
    let mut r = Map::new();
    r.insert("FClass".into(), function.class.into());
    r.insert("FNum".into(), function.num.into());
    if let Some(c) = chan {
        r.insert("Chan".into(), c.into());
    }
    r.extend(fields);
    let v = json!({"jsonrpc": "2.0", "result": r, "id": id});
    format!("{v}{JSON_TERMINATOR}")
}

/// An error line.
pub fn json_error_line(id: &Value, (code, message): JsonRpcError) -> String {
    let v = json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id});
    format!("{v}{JSON_TERMINATOR}")
}

/// A reply as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonReply {
    Result {
        /// The request's id, to match reply and request (`None` when not a number).
        id: Option<u64>,
        /// FClass and FNum the result says it answers.
        function: Function,
        /// The result's own Chan, to check against the request.
        chan: Option<u16>,
        /// The whole result object.
        fields: Map<String, Value>,
    },
    Error {
        /// As for results.
        id: Option<u64>,
        /// JSON-RPC error code and MacNet's text ("Invalid FClass", ...).
        code: i64,
        message: String,
    },
}

impl JsonReply {
    pub fn id(&self) -> Option<u64> {
        match self {
            JsonReply::Result { id, .. } | JsonReply::Error { id, .. } => *id,
        }
    }
}

/// Reads a reply object (pretty or compact, any terminator).
pub fn parse_json_reply(line: &str) -> Result<JsonReply, WireError> {
    let v: Value = serde_json::from_str(line.trim_end_matches(['\r', '\n']))
        .map_err(|e| WireError::Json(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| WireError::Json("the reply is not an object".into()))?;
    let id = obj.get("id").and_then(Value::as_u64);
    if let Some(e) = obj.get("error") {
        let e = e
            .as_object()
            .ok_or_else(|| WireError::Json("\"error\" is not an object".into()))?;
        return Ok(JsonReply::Error {
            id,
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_string(),
        });
    }
    let r = obj
        .get("result")
        .and_then(Value::as_object)
        .ok_or_else(|| WireError::Json("neither \"result\" nor \"error\"".into()))?;
    let class = as_u16(required(r, "FClass")?, "FClass")?;
    let num = as_u16(required(r, "FNum")?, "FNum")?;
    let chan = r.get("Chan").map(|c| as_u16(c, "Chan")).transpose()?;
    Ok(JsonReply::Result {
        id,
        function: Function { class, num },
        chan,
        fields: r.clone(),
    })
}

/// The `Result` of a command reply as a code ("OK" is 0).
pub fn json_result_code(fields: &Map<String, Value>) -> Result<u32, WireError> {
    match required(fields, "Result")? {
        Value::String(s) if s.trim().eq_ignore_ascii_case("OK") => Ok(result::OK),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| field("Result", format!("{s:?} is neither OK nor a code"))),
        v => as_u32(v, "Result"),
    }
}

/// The `Result` field for a code.
pub fn json_result_field(code: u32) -> Map<String, Value> {
    let mut m = Map::new();
    if code == result::OK {
        m.insert("Result".into(), "OK".into());
    } else {
        m.insert("Result".into(), code.into());
    }
    m
}
