//! The protocol library (`deploy/protocols/`) end to end: every protocol runs through the daemon
//! on the simulated EA PSB (the daemon steps the supply) and on the simulated Neware, Maccor
//! and Arbin cyclers (the daemon compiles the protocol to the cycler's schedule and follows
//! it), on identical cells; the runs must agree. The PSB run is the reference: each native run
//! has as many cycles, and each cycle's discharge capacity within 1 % of the PSB's.
//!
//! The test prints a table (protocol x family) with `--nocapture`. `LIBRARY_PROTOCOLS` (comma
//! separated file stems, e.g. `demo,cccv-3-cycles`) runs a subset; `LIBRARY_SPEED` overrides
//! the clock's speed.

use cyclerd_cli::lab::{DemoChamber, DemoDevice, LabOptions, SimLab};
use cyclerhub::HubStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Simulated seconds per wall second. The longest protocols (formation ~127 h, GITT ~107 h of
/// test time) take about a minute at this speed.
const SPEED: f64 = 8000.0;

/// The daemon polls the PSB every simulated second: a termination overshoots by at most about
/// that (plus the wall latency of a poll times the speed), which at 1C is 0.03 % of capacity.
/// The 10 Hz default would be 80,000 polls a wall second at this speed.
const PSB_POLL_MS: u64 = 1000;

/// Agreement required between a native run's and the PSB run's discharge capacity per cycle.
const TOLERANCE: f64 = 0.01;

/// Capacity fade per cycle of the aged cell the end-of-life protocols run on (3 % per cycle:
/// below 80 % of the first cycle's capacity after about eight cycles).
const AGED_FADE_PER_CYCLE: f64 = 0.03;

const FAMILIES: [DemoDevice; 4] = [
    DemoDevice::EaPsb,
    DemoDevice::Neware,
    DemoDevice::Maccor,
    DemoDevice::Arbin,
];

/// What a protocol needs of its lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    /// Nothing: it shares the lab of the other plain protocols, on a channel of its own.
    Plain,
    /// A loop until the capacity fades: a lab of aged cells.
    AgedCell,
    /// Chamber steps: a lab with a chamber of its own (one test owns a chamber's set point,
    /// and a chamber's air heats every cell inside).
    Chamber,
}

struct Protocol {
    /// File stem, e.g. `formation`.
    name: String,
    yaml: String,
    needs: Needs,
}

fn library_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/protocols")
}

/// Every protocol of the library (or the subset `LIBRARY_PROTOCOLS` names), in name order.
fn library() -> Vec<Protocol> {
    let subset: Option<Vec<String>> = std::env::var("LIBRARY_PROTOCOLS")
        .ok()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let mut files: Vec<PathBuf> = std::fs::read_dir(library_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let protocols: Vec<Protocol> = files
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let yaml = std::fs::read_to_string(&path).unwrap();
            let needs = if yaml
                .lines()
                .any(|l| l.trim_start().starts_with("- chamber:"))
            {
                Needs::Chamber
            } else if yaml.contains("until: discharge_capacity") {
                Needs::AgedCell
            } else {
                Needs::Plain
            };
            Protocol { name, yaml, needs }
        })
        .filter(|p| subset.as_ref().is_none_or(|s| s.contains(&p.name)))
        .collect();
    assert!(!protocols.is_empty(), "no protocol in {:?}", library_dir());
    protocols
}

/// One lab's share of the library: its options and the protocols it runs, protocol `i` on
/// channel `i`. The same groups on every family, so a protocol runs on the same cell on each.
struct Group {
    needs: Needs,
    protocols: Vec<usize>,
}

fn groups(library: &[Protocol]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, p) in library.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| g.needs == p.needs && p.needs != Needs::Chamber)
        {
            Some(g) => g.protocols.push(i),
            None => groups.push(Group {
                needs: p.needs,
                protocols: vec![i],
            }),
        }
    }
    groups
}

/// How one protocol ran on one family.
#[derive(Debug, Clone, Default)]
struct Run {
    /// The test's outcome at the hub, or why it did not start.
    outcome: String,
    /// Each cycle's discharge capacity, Ah, in cycle order.
    discharge_ah: Vec<f64>,
    /// The cell's capacity, Ah.
    capacity_ah: f64,
    test_time_h: f64,
}

fn speed() -> f64 {
    std::env::var("LIBRARY_SPEED")
        .ok()
        .map(|s| s.parse().expect("LIBRARY_SPEED is a number"))
        .unwrap_or(SPEED)
}

/// One family's lab for `group`, with its tests started: protocol `group.protocols[k]` on
/// channel `k`, and the test id (or why it did not start).
struct Running {
    device: DemoDevice,
    lab: SimLab,
    tests: Vec<(usize, Result<String, String>)>,
}

/// Starts a lab of `device` for `group` of `library` and starts its tests.
async fn start_group(
    device: DemoDevice,
    library: &[Protocol],
    group: &Group,
    speed: f64,
) -> Running {
    let lab = SimLab::start_with(LabOptions {
        channels: group.protocols.len(),
        speed,
        device,
        extra_config: "commit_interval_ms = 200".into(),
        poll_interval_ms: (device == DemoDevice::EaPsb).then_some(PSB_POLL_MS),
        chamber: (group.needs == Needs::Chamber).then_some(DemoChamber::Espec),
        fade_per_cycle: (group.needs == Needs::AgedCell).then_some(AGED_FADE_PER_CYCLE),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let mut tests = Vec::new();
    for (k, &i) in group.protocols.iter().enumerate() {
        let p = &library[i];
        let started = lab
            .start_on(k, &p.yaml, &format!("{}.yaml", p.name))
            .await
            .map_err(|e| format!("not started: {e:#}"));
        tests.push((i, started));
    }
    Running { device, lab, tests }
}

/// Waits until every test of `running` has ended (within `bound`), stops the lab and reads
/// each test's run from its hub, by library index.
async fn finish_group(running: Running, bound: Duration) -> Vec<(usize, Run)> {
    let Running { device, lab, tests } = running;
    tokio::time::timeout(bound, lab.daemon.wait_all_done())
        .await
        .unwrap_or_else(|_| panic!("{device:?}: every test of the group ends within {bound:?}"));
    let capacities = lab.capacities();
    let (summary, dir, _temp) = lab.stop(Duration::from_secs(120)).await.unwrap();
    assert_eq!(summary.lost(), 0, "{device:?}: nothing is lost on the way");
    let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
    tests
        .into_iter()
        .enumerate()
        .map(|(k, (i, started))| {
            let run = match started {
                Err(e) => Run {
                    outcome: e,
                    capacity_ah: capacities[k],
                    ..Run::default()
                },
                Ok(test_id) => {
                    let row = hub.test(&test_id).unwrap().expect("the hub knows the test");
                    let cycles = hub.cycles(&test_id).unwrap();
                    let mut outcome = row.outcome.clone().unwrap_or_else(|| "none".into());
                    if outcome != "finished" {
                        // Why: the last event that is not a step change.
                        let events = hub.events(&test_id).unwrap();
                        if let Some(e) = events.iter().rev().find(|e| e.kind != "step") {
                            outcome = format!("{outcome}: {}", e.message);
                        }
                    }
                    Run {
                        outcome,
                        discharge_ah: cycles.iter().map(|c| c.discharge_capacity_ah).collect(),
                        capacity_ah: capacities[k],
                        test_time_h: cycles.last().map_or(0.0, |c| c.end_test_time_s / 3600.0),
                    }
                }
            };
            (i, run)
        })
        .collect()
}

/// The worst relative deviation of `native`'s per-cycle discharge capacity from `psb`'s, over
/// the cycles where the PSB run discharged at least 1 % of the cell's capacity (a cycle that
/// only charges, or the end of a test after its last discharge, has a discharge of a few
/// records' noise, whose relative deviation means nothing); `None` when no cycle counts.
fn worst_deviation(psb: &Run, native: &Run) -> Option<f64> {
    psb.discharge_ah
        .iter()
        .zip(&native.discharge_ah)
        .filter(|(p, _)| **p >= 0.01 * psb.capacity_ah)
        .map(|(p, n)| (n - p).abs() / p)
        .fold(None, |worst: Option<f64>, d| Some(worst.map_or(d, |w| w.max(d))))
}

fn family_name(device: DemoDevice) -> &'static str {
    match device {
        DemoDevice::EaPsb => "EA PSB",
        DemoDevice::Neware => "Neware",
        DemoDevice::Maccor => "Maccor",
        DemoDevice::Arbin => "Arbin",
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_library_protocol_gives_the_same_cycles_on_the_psb_and_on_each_native_cycler() {
    let library = library();
    let groups = groups(&library);
    let speed = speed();
    let started = Instant::now();
    // Every family's labs at once (each runs on its own tasks): the test takes about as long
    // as its longest protocol.
    let mut running = Vec::new();
    for device in FAMILIES {
        for group in &groups {
            running.push(start_group(device, &library, group, speed).await);
        }
    }
    // The longest protocol is ~127 h of test time: a generous bound on the wall time.
    let bound = Duration::from_secs_f64(200.0 * 3600.0 / speed + 120.0);
    let mut runs: BTreeMap<(usize, &'static str), Run> = BTreeMap::new();
    for r in running {
        let family = family_name(r.device);
        for (i, run) in finish_group(r, bound).await {
            runs.insert((i, family), run);
        }
    }
    let wall = started.elapsed();

    let mut failures = Vec::new();
    println!(
        "\nprotocol library at {speed}x, PSB polled every {PSB_POLL_MS} ms, wall {:.1} s",
        wall.as_secs_f64()
    );
    println!(
        "{:<18} {:<7} {:>6} {:>7}  {:>8}  per-cycle discharge Ah / outcome",
        "protocol", "family", "cycles", "test h", "worst %"
    );
    for (i, p) in library.iter().enumerate() {
        let psb = &runs[&(i, "EA PSB")];
        for device in FAMILIES {
            let family = family_name(device);
            let run = &runs[&(i, family)];
            let deviation = (device != DemoDevice::EaPsb)
                .then(|| worst_deviation(psb, run))
                .flatten();
            let per_cycle: Vec<String> =
                run.discharge_ah.iter().map(|a| format!("{a:.4}")).collect();
            let shown = if per_cycle.len() > 12 {
                format!(
                    "{} .. {}",
                    per_cycle[..6].join(" "),
                    per_cycle[per_cycle.len() - 3..].join(" ")
                )
            } else {
                per_cycle.join(" ")
            };
            println!(
                "{:<18} {:<7} {:>6} {:>7.2}  {:>8}  {} [{}]",
                p.name,
                family,
                run.discharge_ah.len(),
                run.test_time_h,
                deviation.map_or("-".to_string(), |d| format!("{:.3}", d * 100.0)),
                shown,
                run.outcome
            );
            if run.outcome != "finished" {
                failures.push(format!("{} on {family}: {}", p.name, run.outcome));
                continue;
            }
            if device == DemoDevice::EaPsb || psb.outcome != "finished" {
                continue;
            }
            if run.discharge_ah.len() != psb.discharge_ah.len() {
                failures.push(format!(
                    "{} on {family}: {} cycles, {} on the PSB",
                    p.name,
                    run.discharge_ah.len(),
                    psb.discharge_ah.len()
                ));
            } else if let Some(d) = deviation.filter(|d| *d > TOLERANCE) {
                failures.push(format!(
                    "{} on {family}: a cycle's discharge capacity is {:.2} % off the PSB's",
                    p.name,
                    d * 100.0
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the library's runs disagree or did not finish:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
