//! What the daemon writes to its log when a device link is cut: one warning when it goes (and a
//! summary every 30 s while it stays down), not one per poll; the failed polls themselves are
//! debug lines.

use std::time::Duration;
const WAIT: Duration = Duration::from_secs(20);
use cyclerd_cli::lab::{DemoDevice, LabOptions, SimLab};
use cyclerd_drivers::scpi::sim::SimHandle;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// Every event at DEBUG and above, as (level, message and fields), with a counter to wait on.
#[derive(Clone)]
struct Capture {
    lines: Arc<Mutex<Vec<(Level, String)>>>,
    count: Arc<watch::Sender<usize>>,
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let level = *event.metadata().level();
        self.lines.lock().unwrap().push((level, text.0));
        self.count.send_modify(|n| *n += 1);
    }
}

impl Capture {
    fn new() -> Capture {
        Capture {
            lines: Arc::default(),
            count: Arc::new(watch::channel(0).0),
        }
    }

    fn matching(&self, level: Level, text: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, t)| *l == level && t.contains(text))
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Lines at `level` or more severe logged from entry `from` on.
    fn severe_since(&self, from: usize, level: Level) -> Vec<String> {
        self.lines.lock().unwrap()[from..]
            .iter()
            .filter(|(l, _)| *l <= level)
            .map(|(_, t)| t.clone())
            .collect()
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits until `n` lines at `level` contain `text`.
    async fn wait_for(&self, level: Level, text: &str, n: usize) {
        let mut count = self.count.subscribe();
        tokio::time::timeout(WAIT, async {
            while self.matching(level, text).len() < n {
                count.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| {
            let lines = self.lines.lock().unwrap();
            let tail = &lines[lines.len().saturating_sub(40)..];
            panic!("{n} {level} lines with {text:?}; the last lines: {tail:#?}")
        });
    }
}

const RESTING: &str = r#"
protocol: Long rest
version: 1
safety:
  voltage: [2.5 V, 4.25 V]
  current: 5 A
steps:
  - "Rest for 10 hours"
"#;

/// A current-thread runtime: every task of the lab runs on this thread, under the capturing
/// subscriber.
#[tokio::test]
async fn a_cut_device_link_is_one_warning_not_one_per_poll() {
    let capture = Capture::new();
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("cyclerd", Level::DEBUG)
        .with_target("cyclerd_drivers", Level::DEBUG)
        .with_default(Level::WARN);
    let _log = tracing::subscriber::set_default(tracing_subscriber::registry().with(
        tracing_subscriber::Layer::with_filter(capture.clone(), filter),
    ));
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        speed: 100.0,
        device: DemoDevice::Scpi,
        ..LabOptions::default()
    })
    .await
    .unwrap();
    lab.start_everywhere(RESTING, "rest.yaml").await.unwrap();
    // The rest applied (its setpoints are written a poll after the step shows).
    let mut live = lab.daemon.watchers().remove(0);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples >= 3))
        .await
        .expect("the rest goes on")
        .unwrap();
    let sim = lab.sim::<SimHandle>(0).expect("the SCPI simulator");

    let before = capture.len();
    sim.cut_link();
    // Twenty polls in a row fail (each a debug line after the first)...
    capture
        .wait_for(Level::DEBUG, "read failed, retrying", 20)
        .await;
    // ...and the log got one warning for them.
    let warnings = capture.severe_since(before, Level::WARN);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("no good reply"), "{warnings:#?}");

    sim.restore_link();
    let (summary, _, _keep) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);
}
