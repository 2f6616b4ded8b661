//! What `cyclerctl protocol check` and `compile` say about a protocol on each target: what the
//! cycler runs natively, what the daemon supervises (and how fast it reacts), what no path can
//! run — all of it at once, not the first problem.

use cyclerd_protocols::compile::{self, Target};
use cyclerd_protocols::supervise::{How, Supervision, can_supervise};
use cyclerd_protocols::{Plan, PlanStep};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The check's report: one line per target, or every step on `target` when one is given.
pub fn check(plan: &Plan, target: Option<Target>) -> String {
    let mut out = String::new();
    match target {
        None => {
            for target in Target::ALL {
                let _ = writeln!(out, "  {}", summary(plan, target));
            }
            let _ = writeln!(
                out,
                "  (--target NAME lists every step: native, supervised by the daemon, or impossible)"
            );
        }
        Some(target) => {
            let line = summary(plan, target);
            let _ = writeln!(out, "  {}", line.lines().next().unwrap_or_default());
            out.push_str(&steps(plan, target));
        }
    }
    out
}

/// One line: whether `target` runs the plan, natively or supervised, or why not.
fn summary(plan: &Plan, target: Target) -> String {
    match Supervision::new(plan, target) {
        Ok(sup) if !sup.needs_supervision() => format!("{target}: ok (one native schedule)"),
        Ok(sup) => {
            let supervised = sup
                .findings(plan)
                .iter()
                .filter(|f| matches!(f.how, How::Supervised(_)))
                .count();
            let segments = sup.segments(plan).map_or(0, |s| s.len());
            format!(
                "{target}: ok, supervised: the daemon decides {supervised} part(s) the format \
                 cannot say and runs the test as {segments} distinct segment schedule(s)"
            )
        }
        Err(errors) => {
            let mut line = format!("{target}: cannot run it ({} problem(s)):", errors.len());
            for e in errors {
                let _ = write!(line, "\n      {e}");
            }
            line
        }
    }
}

/// Every step and daemon-counted loop on `target`.
fn steps(plan: &Plan, target: Target) -> String {
    let mut out = String::new();
    let (findings, errors) = match Supervision::new(plan, target) {
        Ok(sup) => (sup.findings(plan), Vec::new()),
        Err(errors) => (Vec::new(), errors),
    };
    if findings.is_empty() {
        // Nothing runs: list the steps with the problems found for them.
        for step in &plan.steps {
            if let PlanStep::Action(a) = step {
                let problems: Vec<&str> = errors
                    .iter()
                    .filter(|e| e.step == a.path)
                    .map(|e| e.message.as_str())
                    .collect();
                let how = if problems.is_empty() {
                    "native".to_string()
                } else {
                    format!("IMPOSSIBLE: {}", problems.join("; "))
                };
                let _ = writeln!(out, "    {} ({}): {how}", a.path, a.description);
            }
        }
        for e in errors.iter().filter(|e| {
            !plan
                .steps
                .iter()
                .any(|s| matches!(s, PlanStep::Action(a) if a.path == e.step))
        }) {
            let _ = writeln!(out, "    {}: IMPOSSIBLE: {}", e.step, e.message);
        }
        if !can_supervise(target) {
            let _ = writeln!(
                out,
                "    (cyclerd has no {target} driver: the file is all there is, nothing is \
                 supervised)"
            );
        }
        return out;
    }
    for f in findings {
        let how = match f.how {
            How::Native => "native".to_string(),
            How::Supervised(what) => format!("supervised: {what}"),
            How::Impossible(why) => format!("IMPOSSIBLE: {why}"),
        };
        let _ = writeln!(out, "    {} ({}): {how}", f.path, f.description);
    }
    out
}

/// A file `compile` writes (standard output when `None`) and its text.
pub type OutputFile = (Option<PathBuf>, String);

/// The schedule files `compile` writes for `plan` on `target`: one, or one per segment
/// (`NAME.segN.EXT` beside `output`) when the daemon supervises the test. Returns the files
/// with their texts, and a note for the operator when there are segments.
pub fn compile_files(
    plan: &Plan,
    target: Target,
    output: Option<&Path>,
) -> anyhow::Result<(Vec<OutputFile>, Option<String>)> {
    let sup = match Supervision::new(plan, target) {
        Ok(sup) => sup,
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            anyhow::bail!("{}", list.join("\n"));
        }
    };
    if !sup.needs_supervision() {
        let text = compile::compile(plan, target)?;
        return Ok((vec![(output.map(Path::to_path_buf), text)], None));
    }
    let segments = sup.segments(plan)?;
    let Some(output) = output else {
        anyhow::bail!(
            "on {target} this protocol runs as {} segment schedules the daemon starts one after \
             the other (it supervises what the format cannot say; see `protocol check --target \
             {target}`): give -o FILE to write them as FILE.seg1, FILE.seg2, ...",
            segments.len()
        );
    };
    let stem = output.file_stem().map_or_else(
        || "schedule".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let ext = output.extension().map_or_else(
        || target.extension().to_string(),
        |e| e.to_string_lossy().into_owned(),
    );
    let dir = output.parent().unwrap_or(Path::new(""));
    let mut files = Vec::new();
    let mut note = format!(
        "{} segments; the daemon starts them one after the other and decides between them:\n",
        segments.len()
    );
    for (n, seg) in segments.iter().enumerate() {
        let path = dir.join(format!("{stem}.seg{}.{ext}", n + 1));
        let first = match plan.steps.get(seg.from) {
            Some(PlanStep::Action(a)) => a.path.clone(),
            _ => format!("plan index {}", seg.from),
        };
        let ended = match seg.watched {
            Some(_) => ", its last step ended by the daemon",
            None => "",
        };
        let _ = writeln!(note, "  {}: from {first}{ended}", path.display());
        files.push((Some(path), seg.compiled.text.clone()));
    }
    Ok((files, Some(note)))
}
