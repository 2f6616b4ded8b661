//! The JSON protocol: a request object to a [`Request`] and the tester's [`Response`] to a
//! reply object (compact, ended by CR LF), echoing the request's `id`.

use super::{Request, Response, Tester};
use crate::maccor::wire::{
    self, DirectStart, Function, JsonRequest, Mode, Output, StartTest, json_error,
};
use serde_json::Value;

pub(super) fn json_request(req: &JsonRequest) -> Result<Request, (i64, &'static str)> {
    let p = &req.params;
    let chan = || req.chan.ok_or(json_error::INVALID_PARAMS);
    let invalid = |_| json_error::INVALID_PARAMS;
    Ok(match req.function {
        Function { class: 0, .. } => Request::Echo,
        wire::VERSION => Request::Version,
        wire::SYSTEM_INFO => Request::SystemInfo,
        wire::STATUS => Request::Status {
            first: chan()?,
            count: p
                .get("Len")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or(json_error::INVALID_PARAMS)?,
        },
        wire::READING => Request::Reading { chan: chan()? },
        wire::AUX_VALUES => Request::AuxValues { chan: chan()? },
        wire::SELECT => Request::Select { chan: chan()? },
        wire::START => Request::Start {
            chan: chan()?,
            start: StartTest::from_json(p).map_err(invalid)?,
            select: true,
        },
        wire::SUSPEND => Request::Suspend { chan: chan()? },
        wire::RESUME => Request::Resume { chan: chan()? },
        wire::RESET => Request::Reset { chan: chan()? },
        wire::DIRECT_START => Request::DirectStart {
            chan: chan()?,
            start: DirectStart::from_json(p).map_err(invalid)?,
        },
        wire::DIRECT_OUTPUT => {
            let output = Output::from_json(p).map_err(invalid)?;
            // The JSON (6,8) cannot set rest (a known MacNet limitation; the binary form can).
            if output.mode == Mode::Rest {
                return Err(json_error::ILLEGAL_VALUE);
            }
            Request::DirectOutput {
                chan: chan()?,
                output,
            }
        }
        Function {
            class: 1 | 4 | 6, ..
        } => return Err(json_error::INVALID_FNUM),
        _ => return Err(json_error::INVALID_FCLASS),
    })
}

pub(super) fn json_reply(tester: &mut Tester, object: &str) -> String {
    let req = match wire::parse_json_request(object) {
        Ok(req) => req,
        Err((id, e)) => return wire::json_error_line(&id, e),
    };
    if tester.faults.failing() {
        return wire::json_error_line(&req.id, json_error::MACNET_ERROR);
    }
    let request = match json_request(&req) {
        Ok(r) => r,
        Err(e) => return wire::json_error_line(&req.id, e),
    };
    let f = req.function;
    match tester.handle(request) {
        Response::Echo => wire::json_result(&req.id, f, req.chan, req.params.clone()),
        Response::Version(v) => wire::json_result(&req.id, f, None, v.to_json()),
        Response::SystemInfo(s) => wire::json_result(&req.id, f, None, s.to_json()),
        Response::Status(block) => wire::json_result(&req.id, f, None, block.to_json()),
        Response::Reading { chan, reading } => {
            wire::json_result(&req.id, f, None, reading.to_json(chan))
        }
        Response::AuxValues { chan, aux } => wire::json_result(&req.id, f, None, aux.to_json(chan)),
        Response::Result { chan, code } => {
            wire::json_result(&req.id, f, Some(chan), wire::json_result_field(code))
        }
        Response::Illegal => wire::json_error_line(&req.id, json_error::ILLEGAL_VALUE),
    }
}
