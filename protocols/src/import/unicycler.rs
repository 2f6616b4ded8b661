//! aurora-unicycler protocol (JSON) -> plan.
//!
//! Empa's aurora-unicycler (github.com/EmpaEconversion/aurora-unicycler) keeps a protocol as a
//! pydantic model dumped to JSON: `unicycler` (`version`), `sample` (`name`, `capacity_mAh`),
//! `record` (`time_s`, `voltage_V`, `current_mA`), `safety` (`max_voltage_V`,
//! `min_voltage_V`, `max_current_mA`, `min_current_mA`, `max_capacity_mAh`, `delay_s`) and
//! `method`, a list of steps told apart by `step`: `open_circuit_voltage`,
//! `constant_current`, `constant_voltage`, `voltage_scan`, `impedance_spectroscopy`, `tag`
//! and `loop` (`loop_to` a tag or a 1-based method index, `cycle_count` = total passes).
//!
//! Read as unicycler reads it: numbers may be JSON numbers or numeric strings, an empty string
//! is an absent value, C-rates may be fractions (`"C/10"`, `"D/2"` = -0.5, `"1/5"`), `rate_C`
//! wins over `current_mA` and `until_rate_C` over `until_current_mA`, unknown fields are
//! errors (unicycler forbids them). Signs as in the plan: positive = charge. C-rates resolve
//! against `sample.capacity_mAh`. Every loop counts cycles (`cycle: true`; unicycler's loops
//! are its cycles); loops nest, intersecting loops are refused. Steps a plan cannot run
//! (impedance spectroscopy) are errors naming the method index and step type.

use super::{ImportError, SourceKind};
use crate::plan::{
    ActionStep, Condition, Control, Goto, Plan, PlanStep, Record, Safety, Termination,
};
use serde_json::{Map, Value};

/// Step types unicycler writes, in its order.
const STEP_TYPES: [&str; 7] = [
    "open_circuit_voltage",
    "constant_current",
    "constant_voltage",
    "impedance_spectroscopy",
    "loop",
    "tag",
    "voltage_scan",
];

/// One `method` entry, before loops are placed (a few per protocol, so the size difference
/// between an action and a marker does not matter).
#[allow(clippy::large_enum_variant)]
enum Item {
    Action(ActionStep),
    Tag(String),
    Loop { to: LoopTo, count: u32 },
}

enum LoopTo {
    /// 1-based index into `method` (tags included).
    Index(usize),
    Tag(String),
}

/// A placed loop: its body is method entries `start..end`, `end` being the loop entry.
struct Span {
    start: usize,
    end: usize,
    count: u32,
}

/// Reads an aurora-unicycler protocol; `origin` (the file name) prefixes errors.
pub fn import(text: &str, origin: &str) -> Result<Plan, ImportError> {
    let err = ImportError::builder(SourceKind::Unicycler, origin);
    let root: Value = serde_json::from_str(text).map_err(|e| {
        err(
            format!("line {}, column {}", e.line(), e.column()),
            format!("not JSON: {e}"),
        )
    })?;
    let Value::Object(root) = root else {
        return Err(err(
            "document".into(),
            "expected a JSON object with sample, record, safety and method".into(),
        ));
    };
    let at = |what: &'static str| {
        let err = &err;
        move |m: String| err(what.into(), m)
    };
    known(
        &root,
        &["unicycler", "sample", "record", "safety", "method"],
    )
    .map_err(at("document"))?;
    if let Some(u) = object(&root, "unicycler").map_err(at("unicycler"))? {
        known(u, &["version"]).map_err(at("unicycler"))?;
    }

    let empty = Map::new();
    let sample = object(&root, "sample")
        .map_err(at("sample"))?
        .unwrap_or(&empty);
    known(sample, &["name", "capacity_mAh"]).map_err(at("sample"))?;
    let capacity_mah = match number(sample, "capacity_mAh").map_err(at("sample"))? {
        Some(c) if c <= 0.0 => {
            return Err(err(
                "sample".into(),
                format!("capacity_mAh {c}: expected a positive capacity"),
            ));
        }
        c => c,
    };
    let name = match sample.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n != "$NAME" => n.trim().to_owned(),
        _ => origin.to_owned(),
    };

    let record = object(&root, "record")
        .map_err(at("record"))?
        .ok_or_else(|| {
            err(
                "record".into(),
                "expected a record object with time_s".into(),
            )
        })?;
    let record = read_record(record).map_err(at("record"))?;
    let safety = match object(&root, "safety").map_err(at("safety"))? {
        Some(s) => read_safety(s).map_err(at("safety"))?,
        None => Safety::default(),
    };

    let method = match root.get("method") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => {
            return Err(err(
                "method".into(),
                "expected a non-empty list of steps".into(),
            ));
        }
    };
    let mut items = Vec::with_capacity(method.len());
    for (i, v) in method.iter().enumerate() {
        let kind = v.get("step").and_then(Value::as_str).unwrap_or("");
        let item = step(v, capacity_mah, record).map_err(|m| {
            err(
                if kind.is_empty() {
                    format!("method[{i}]")
                } else {
                    format!("method[{i}] ({kind})")
                },
                m,
            )
        })?;
        items.push(item);
    }
    let spans = place_loops(&items).map_err(|(i, m)| {
        let kind = method[i].get("step").and_then(Value::as_str).unwrap_or("");
        err(format!("method[{i}] ({kind})"), m)
    })?;
    let steps = layout(items, &spans);

    let plan = Plan {
        name,
        source_sha256: crate::plan::sha256_hex(text),
        capacity_ah: capacity_mah.map(|c| c / 1000.0),
        params: capacity_mah
            .map(|c| ("capacity".to_owned(), format!("{} Ah", c / 1000.0)))
            .into_iter()
            .collect(),
        safety,
        steps,
    };
    plan.validate()
        .map_err(|e| err("method".into(), e.to_string()))?;
    Ok(plan)
}

/// An error for a key outside `allowed` (unicycler's models forbid extra fields).
fn known(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown field {k:?}: expected {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// The object at `key`: absent or null is `None`.
fn object<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("{key}: expected an object")),
    }
}

/// A number as unicycler coerces one: a JSON number or a numeric string; absent, null and
/// `""` are `None`; never NaN or infinite.
fn number(m: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    let x = match m.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match x.filter(|x| x.is_finite()) {
        Some(x) => Ok(Some(x)),
        None => Err(format!("{key} {}: expected a finite number", m[key])),
    }
}

/// A C-rate: a number, or a fraction as unicycler writes them (`"C/3"` 1/3, `"2C/5"`,
/// `"D/2"` -1/2, `"1/5"`).
fn c_rate(m: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    let Some(Value::String(s)) = m.get(key) else {
        return number(m, key);
    };
    if let Ok(x) = number(m, key) {
        return Ok(x);
    }
    let bad = || format!("{key} {s:?}: expected a number or a fraction such as C/3 or D/2");
    let s: String = s.chars().filter(|c| *c != ' ').collect();
    let (top, bottom) = s.split_once('/').ok_or_else(bad)?;
    if top.matches(['C', 'D']).count() > 1 {
        return Err(bad());
    }
    let parse = |t: &str| t.parse::<f64>().ok().filter(|x| x.is_finite());
    let top_value = if let Some(t) = top.strip_suffix('C').or(top.strip_prefix('C')) {
        if t.is_empty() { Some(1.0) } else { parse(t) }
    } else if let Some(t) = top.strip_suffix('D').or(top.strip_prefix('D')) {
        if t.is_empty() {
            Some(-1.0)
        } else {
            parse(t).map(|x| -x)
        }
    } else {
        parse(top)
    };
    let rate = top_value.ok_or_else(bad)? / parse(bottom).ok_or_else(bad)?;
    if rate.is_finite() {
        Ok(Some(rate))
    } else {
        Err(bad())
    }
}

/// A value that, when set, must be > 0 (a duration, a threshold): zero counts as unset, as
/// unicycler's stop-condition checks count it.
fn positive(m: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match number(m, key)? {
        Some(x) if x < 0.0 => Err(format!("{key} {x}: expected a positive value")),
        x => Ok(x.filter(|x| *x != 0.0)),
    }
}

fn read_record(m: &Map<String, Value>) -> Result<Record, String> {
    known(m, &["time_s", "voltage_V", "current_mA"])?;
    let every_s = Some(
        positive(m, "time_s")?.ok_or_else(|| "time_s: expected a positive interval".to_owned())?,
    );
    Ok(Record {
        every_s,
        dv_v: positive(m, "voltage_V")?,
        di_a: positive(m, "current_mA")?.map(|ma| ma / 1000.0),
    })
}

/// Safety limits. The plan has one |I| limit: the larger magnitude of `max_current_mA` and
/// `min_current_mA` (so no step unicycler allows is faulted; the lab's own limit still
/// applies). `max_capacity_mAh` becomes the per-step throughput limit, the plan's only capacity
/// limit (unicycler does not say whether its limit is per step or per test). `delay_s` is not
/// kept: a plan faults on the first sample beyond a limit.
fn read_safety(m: &Map<String, Value>) -> Result<Safety, String> {
    known(
        m,
        &[
            "max_voltage_V",
            "min_voltage_V",
            "max_current_mA",
            "min_current_mA",
            "max_capacity_mAh",
            "delay_s",
        ],
    )?;
    let voltage_max = number(m, "max_voltage_V")?;
    let voltage_min = number(m, "min_voltage_V")?;
    if let (Some(hi), Some(lo)) = (voltage_max, voltage_min)
        && hi <= lo
    {
        return Err(format!(
            "max_voltage_V {hi} <= min_voltage_V {lo}: expected max above min"
        ));
    }
    let magnitudes = [
        number(m, "max_current_mA")?.filter(|x| *x > 0.0),
        number(m, "min_current_mA")?
            .filter(|x| *x < 0.0)
            .map(f64::abs),
    ];
    number(m, "delay_s")?;
    Ok(Safety {
        voltage_max,
        voltage_min,
        current_max: magnitudes
            .into_iter()
            .flatten()
            .reduce(f64::max)
            .map(|ma| ma / 1000.0),
        temperature_max: None,
        capacity_max: positive(m, "max_capacity_mAh")?.map(|c| c / 1000.0),
    })
}

/// Amps from a C-rate, which needs the sample's capacity.
fn c_amps(rate: f64, capacity_mah: Option<f64>, key: &str) -> Result<f64, String> {
    let cap = capacity_mah.ok_or_else(|| {
        format!("{key} {rate} is a C-rate: sample.capacity_mAh must be set to resolve it")
    })?;
    Ok(rate * cap / 1000.0)
}

fn next(condition: Condition) -> Termination {
    Termination {
        condition,
        goto: Goto::Next,
    }
}

/// One `method` entry.
fn step(v: &Value, capacity_mah: Option<f64>, record: Record) -> Result<Item, String> {
    let Value::Object(m) = v else {
        return Err("expected a step object".into());
    };
    let kind = match m.get("step") {
        Some(Value::String(s)) if STEP_TYPES.contains(&s.as_str()) => s.as_str(),
        Some(Value::String(s)) if !s.is_empty() => {
            return Err(format!(
                "step type {s:?}: expected one of {}",
                STEP_TYPES.join(", ")
            ));
        }
        _ => return Err("incomplete step: expected a \"step\" type".into()),
    };
    let fields: &[&str] = match kind {
        "open_circuit_voltage" => &["until_time_s"],
        "constant_current" => &["rate_C", "current_mA", "until_time_s", "until_voltage_V"],
        "constant_voltage" => &[
            "voltage_V",
            "until_time_s",
            "until_rate_C",
            "until_current_mA",
        ],
        "voltage_scan" => &["start_voltage_V", "end_voltage_V", "scan_rate_mV_per_s"],
        "loop" => &["loop_to", "cycle_count"],
        "tag" => &["tag"],
        _ => {
            return Err(
                "impedance spectroscopy (EIS) has no plan equivalent: a plan drives DC setpoints and terminations only; run the EIS on a potentiostat or drop the step".into(),
            );
        }
    };
    let mut allowed = vec!["step", "id"];
    allowed.extend_from_slice(fields);
    known(m, &allowed)?;
    let id = match m.get("id") {
        Some(Value::String(id)) => format!(" (id {id})"),
        _ => String::new(),
    };
    let time = positive(m, "until_time_s")?.map(|s| next(Condition::StepTime(s)));
    let action = |control: Control, mut terminations: Vec<Termination>, what: String| {
        terminations.extend(time);
        if terminations.is_empty() {
            let stops: Vec<&str> = fields
                .iter()
                .copied()
                .filter(|f| f.starts_with("until_"))
                .collect();
            return Err(format!(
                "{kind} has no stop condition: expected {}",
                stops.join(" or ")
            ));
        }
        Ok(Item::Action(ActionStep {
            description: format!("{kind}: {what}{id}"),
            control,
            terminations,
            record,
            ..ActionStep::default()
        }))
    };
    match kind {
        "open_circuit_voltage" => {
            if time.is_none() {
                return Err("until_time_s: expected a positive duration".into());
            }
            action(Control::Rest, vec![], "rest".into())
        }
        "constant_current" => {
            let amps = match c_rate(m, "rate_C")?.filter(|r| *r != 0.0) {
                Some(rate) => c_amps(rate, capacity_mah, "rate_C")?,
                None => {
                    number(m, "current_mA")?
                        .filter(|ma| *ma != 0.0)
                        .ok_or("expected rate_C or current_mA, non-zero")?
                        / 1000.0
                }
            };
            let stop = positive(m, "until_voltage_V")?.map(|v| {
                next(if amps > 0.0 {
                    Condition::VoltageAtLeast(v)
                } else {
                    Condition::VoltageAtMost(v)
                })
            });
            let what = format!("{} mA", amps * 1000.0);
            action(Control::Current { amps }, stop.into_iter().collect(), what)
        }
        "constant_voltage" => {
            let volts = number(m, "voltage_V")?.ok_or("voltage_V: expected a voltage")?;
            let cutoff = match c_rate(m, "until_rate_C")?.filter(|r| *r != 0.0) {
                Some(rate) => Some(c_amps(rate, capacity_mah, "until_rate_C")?.abs()),
                None => number(m, "until_current_mA")?
                    .filter(|ma| *ma != 0.0)
                    .map(|ma| ma.abs() / 1000.0),
            };
            let stop = cutoff.map(|a| next(Condition::CurrentMagnitudeAtMost(a)));
            action(
                Control::Voltage { volts },
                stop.into_iter().collect(),
                format!("{volts} V"),
            )
        }
        "voltage_scan" => {
            let get = |key: &str| number(m, key)?.ok_or(format!("{key}: expected a number"));
            let (start, end) = (get("start_voltage_V")?, get("end_voltage_V")?);
            let rate = get("scan_rate_mV_per_s")?;
            let sweep = super::sweep::voltage_sweep(start, end, rate / 1000.0)?;
            Ok(Item::Action(ActionStep {
                description: format!("voltage_scan: {start} V to {end} V at {rate} mV/s{id}"),
                record,
                ..sweep
            }))
        }
        "tag" => match m.get("tag") {
            Some(Value::String(t)) if !t.trim().is_empty() => Ok(Item::Tag(t.clone())),
            _ => Err("tag: expected a non-empty name".into()),
        },
        _ => {
            let to = match m.get("loop_to") {
                None => LoopTo::Index(1),
                Some(Value::String(t)) if !t.trim().is_empty() => LoopTo::Tag(t.clone()),
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(k) if k >= 1 => LoopTo::Index(usize::try_from(k).unwrap_or(usize::MAX)),
                    _ => {
                        return Err(format!(
                            "loop_to {n}: expected a step number from 1 or a tag"
                        ));
                    }
                },
                Some(v) => {
                    return Err(format!(
                        "loop_to {v}: expected a step number from 1 or a tag"
                    ));
                }
            };
            let count = match m.get("cycle_count") {
                // A whole float (3.0) is a count, as pydantic takes it.
                Some(Value::Number(n)) => n.as_u64().or(n
                    .as_f64()
                    .filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < 1e10)
                    .map(|x| x as u64)),
                Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
                _ => None,
            }
            .and_then(|c| u32::try_from(c).ok())
            .filter(|c| *c >= 1)
            .ok_or("cycle_count: expected a whole number of passes, at least 1")?;
            Ok(Item::Loop { to, count })
        }
    }
}

/// Where each loop's body starts; loops must go backwards over at least one step and nest.
fn place_loops(items: &[Item]) -> Result<Vec<Span>, (usize, String)> {
    let mut tags: Vec<(&str, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Item::Tag(t) = item {
            if tags.iter().any(|(u, _)| u == t) {
                return Err((i, format!("duplicate tag {t:?}")));
            }
            tags.push((t, i));
        }
    }
    let mut spans: Vec<Span> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Item::Loop { to, count } = item else {
            continue;
        };
        let start = match to {
            LoopTo::Index(k) => k - 1,
            LoopTo::Tag(t) => tags
                .iter()
                .find(|(u, _)| u == t)
                .map(|&(_, j)| j)
                .ok_or((i, format!("loop_to {t:?}: no such tag")))?,
        };
        if start >= i {
            return Err((
                i,
                format!(
                    "loop_to {}: a loop goes back to a step before it",
                    start + 1
                ),
            ));
        }
        if !items[start..i].iter().any(|x| matches!(x, Item::Action(_))) {
            return Err((i, "the loop repeats no step".into()));
        }
        // Earlier loops end before this one: each must lie inside it or wholly before it.
        if let Some(s) = spans.iter().find(|s| s.start < start && start <= s.end) {
            return Err((
                i,
                format!(
                    "this loop (method[{start}] to here) intersects the loop of method[{}] to method[{}]: loops must nest",
                    s.start, s.end
                ),
            ));
        }
        spans.push(Span {
            start,
            end: i,
            count: *count,
        });
    }
    Ok(spans)
}

/// The plan's step list: each loop's start before its body's first entry (outermost first),
/// its end at the loop entry, tags as the label of the next action, and the final `End`.
fn layout(items: Vec<Item>, spans: &[Span]) -> Vec<PlanStep> {
    let mut steps = Vec::with_capacity(items.len() + spans.len() + 1);
    let mut open: Vec<(usize, usize)> = Vec::new(); // (span end, LoopStart index)
    let mut labels: Vec<String> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut starting: Vec<&Span> = spans.iter().filter(|s| s.start == i).collect();
        starting.sort_by_key(|s| std::cmp::Reverse(s.end));
        for s in starting {
            open.push((s.end, steps.len()));
            steps.push(PlanStep::LoopStart {
                count: s.count,
                cycle: true,
                end: 0,
                until: Vec::new(),
            });
        }
        match item {
            Item::Tag(t) => labels.push(t),
            Item::Action(mut a) => {
                a.path = format!("method[{i}]");
                let mut pending = std::mem::take(&mut labels).into_iter();
                a.label = pending.next();
                a.tags = pending.collect();
                steps.push(PlanStep::Action(a));
            }
            Item::Loop { .. } => {
                // Spans nest, so the loop ending here is the innermost open one.
                let Some((_, start)) = open.pop() else {
                    continue;
                };
                let end = steps.len();
                if let Some(PlanStep::LoopStart { end: e, .. }) = steps.get_mut(start) {
                    *e = end;
                }
                steps.push(PlanStep::LoopEnd { start });
            }
        }
    }
    steps.push(PlanStep::End);
    steps
}

#[cfg(test)]
mod tests;
