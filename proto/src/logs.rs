//! The log both binaries write, to stderr: plain text, coloured only on a terminal (a file, a
//! pipe or journald gets no escape codes); one JSON object per line with `--log-format json`;
//! and under journald (stderr is the stream `JOURNAL_STREAM` names) each line starts with its
//! syslog priority (`<4>` for a warning), so `journalctl -p warning` finds it, and carries no
//! timestamp of its own (the journal keeps one). Secrets stay out by what is logged, not here:
//! no token, password or key is ever a field of an event.

use std::io::IsTerminal as _;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry, prelude::*};

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, ...), for log
    /// shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format: text or json")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Where the lines go, as far as their form depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Colour escape codes: only for a person at a terminal.
    pub ansi: bool,
    /// Lines start with a syslog priority and carry no time: journald reads both.
    pub journald: bool,
}

impl Target {
    /// What this process's stderr is.
    pub fn stderr() -> Target {
        let journald = stderr_is_journald();
        Target {
            ansi: !journald && std::io::stderr().is_terminal(),
            journald,
        }
    }
}

/// Logs to stderr in `format` from here on, at `default_filter` (e.g. `"info"`) unless
/// `RUST_LOG` says otherwise. A second call (a test that runs the command line twice) keeps the
/// first's.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::registry()
        .with(layer(format, Target::stderr(), std::io::stderr).with_filter(filter))
        .try_init();
}

/// The formatting layer for `format` to `target`, writing to `writer`.
pub fn layer<W>(
    format: LogFormat,
    target: Target,
    writer: W,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let base = fmt::layer().with_writer(writer).with_ansi(target.ansi);
    match (format, target.journald) {
        (LogFormat::Text, false) => base.boxed(),
        (LogFormat::Text, true) => base
            .event_format(Priority(fmt::format().without_time()))
            .boxed(),
        (LogFormat::Json, false) => base.json().boxed(),
        (LogFormat::Json, true) => base
            .fmt_fields(JsonFields::new())
            .event_format(Priority(fmt::format().json().without_time()))
            .boxed(),
    }
}

/// Writes an event as `F` does, after its syslog priority (`<3>` error to `<7>` debug), which
/// journald takes off the line and keeps as the entry's priority.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Whether stderr is the journal stream systemd gave the process (`JOURNAL_STREAM` is its
/// device and inode; a child whose stderr was redirected inherits the variable but not the
/// stream).
#[cfg(unix)]
fn stderr_is_journald() -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

#[cfg(not(unix))]
fn stderr_is_journald() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Lines written by a layer, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `format` to `target` writes for a warning and an info event.
    fn written(format: LogFormat, target: Target) -> String {
        let lines = Lines::default();
        let out = lines.clone();
        let subscriber =
            tracing_subscriber::registry().with(layer(format, target, move || out.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(channel = "psb1/1", "device does not answer");
            tracing::info!("cyclerd running");
        });
        String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_for_a_file_has_no_colour_codes_and_names_the_level() {
        let text = written(
            LogFormat::Text,
            Target {
                ansi: false,
                journald: false,
            },
        );
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.lines().next().unwrap().contains("WARN"), "{text}");
    }

    #[test]
    fn under_journald_each_line_starts_with_its_syslog_priority_and_no_time() {
        let text = written(
            LogFormat::Text,
            Target {
                ansi: false,
                journald: true,
            },
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("<4> WARN") || lines[0].starts_with("<4>WARN"),
            "{text}"
        );
        assert!(lines[1].starts_with("<6>"), "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn json_under_journald_is_one_object_after_the_priority() {
        let text = written(
            LogFormat::Json,
            Target {
                ansi: false,
                journald: true,
            },
        );
        let first = text.lines().next().unwrap();
        let json = first.strip_prefix("<4>").expect(first);
        assert!(
            json.starts_with('{') && json.contains("\"WARN\""),
            "{first}"
        );
        assert!(json.contains("\"channel\":\"psb1/1\""), "{first}");
    }

    #[test]
    fn a_log_format_is_text_or_json_and_anything_else_is_refused_naming_both() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        let err = "xml".parse::<LogFormat>().unwrap_err();
        assert!(err.contains("text or json"), "{err}");
    }
}
