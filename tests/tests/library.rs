//! The protocol library (`deploy/protocols/`) end to end: every protocol runs through the daemon
//! on the simulated EA PSB (the daemon steps the supply) and on the simulated Neware, Maccor
//! and Arbin cyclers (the daemon compiles the protocol to the cycler's schedule and follows
//! it), on identical cells; the runs must agree. The PSB run is the reference: each native run
//! has as many cycles, and each cycle's discharge capacity within 1 % of the PSB's.
//!
//! A test binary of its own, so it runs alone: the stepped PSB's accuracy at these speeds
//! depends on how busy the machine is (every timed or voltage end overshoots by a poll's wall
//! latency times the speed), and the other end-to-end tests beside it made that vary from run
//! to run (cycle-life 0.6-0.9 %, rate capability 0.3-0.9 % off the native runs).
//!
//! The test prints a table (protocol x family) with `--nocapture`. `LIBRARY_PROTOCOLS` (comma
//! separated file stems, e.g. `demo,cccv-3-cycles`) runs a subset; `LIBRARY_WALL_S` sets the
//! wall time each protocol is given (so the clock's speed).

use cyclerd::simulate::{Recording, SimOptions, simulate};
use cyclerd_cli::lab::{DemoChamber, DemoDevice, LabOptions, SimLab};
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_protocols::{Condition, Plan, PlanStep};
use cyclerhub::HubStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wall time each protocol is given: its clock runs at its test time over this (within
/// [`MIN_SPEED`]..=[`MAX_SPEED`]). The PSB is stepped by the daemon in real time: every step
/// end overshoots by the wall latency of a poll times the speed (a few ms of wall time, more
/// on busy cores), so the speed is what bounds the PSB run's accuracy. A protocol's test time
/// is a fair measure of how fast it may go: the long protocols (formation ~127 h, GITT
/// ~107 h) have long steps at low rates, the short ones short steps (HPPC's 10 s pulses).
///
/// Measured with all 44 labs at once on 2 busy cores: at 60 s, HPPC on the PSB (935x) is
/// 2.1 % off the native runs; at 120 s (468x) 0.9 %; alone at 1000x 0.4 %.
const WALL_PER_PROTOCOL_S: f64 = 120.0;
const MIN_SPEED: f64 = 100.0;
/// The stepped PSB overshoots every timed step end by a poll's wall latency times the speed
/// (a few ms of wall on busy cores): GITT's ten-minute pulses at 3213x came out 0.1-1.4 % high
/// and HPPC's 10 s pulses at 468x 0.5-1.7 %, depending on the load beside the test.
const MAX_SPEED: f64 = 1500.0;
/// And no faster than this many times the shortest timed step (s): HPPC's 10 s pulses run at
/// 200x, so a 5 ms poll overshoots them by 1 s of test time at worst.
const TIMED_STEP_SPEED: f64 = 20.0;
/// How much faster than the PSB's the native runs go (they run after the PSB's).
const NATIVE_SPEEDUP: f64 = 2.0;
/// For a protocol the cell model cannot run alone (chamber steps wait for air that
/// `simulate` does not have): its test time is not known beforehand. The chamber protocols
/// run about 9 h of test time: 300x gives them the same wall time as the others (at 2000x the
/// PSB's 1C discharges overshot their 3.0 V end by a poll under full load, 3.7 % of capacity).
const FALLBACK_SPEED: f64 = 300.0;

/// The daemon polls the PSB every simulated second; at these speeds the poll loop runs flat
/// out anyway (1 s is 0.1-10 ms of wall time), so the wall latency of a poll sets the real
/// interval. The 10 Hz default would only add polls.
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

/// What a protocol needs of its lab (every protocol has a lab of its own on each family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    /// Nothing more than a channel.
    Plain,
    /// A loop until the capacity fades: an aged cell, so it ends in a handful of cycles.
    AgedCell,
    /// Chamber steps: a chamber (of its own: one test owns a chamber's set point, and a
    /// chamber's air heats every cell inside).
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
    /// The lowest voltage the test recorded, V: how far below its cutoff a discharge went.
    min_voltage_v: f64,
}

fn wall_per_protocol_s() -> f64 {
    std::env::var("LIBRARY_WALL_S")
        .ok()
        .map(|s| s.parse().expect("LIBRARY_WALL_S is a number of seconds"))
        .unwrap_or(WALL_PER_PROTOCOL_S)
}

/// The cell of channel 0 of a lab built with `options`, as [`SimLab`] makes it.
fn channel_0_cell(needs: Needs) -> CellParams {
    let cell = CellParams::new(Chemistry::Nmc, LabOptions::default().capacity_ah);
    CellParams {
        initial_soc: 0.15,
        fade_per_cycle: if needs == Needs::AgedCell {
            AGED_FADE_PER_CYCLE
        } else {
            cell.fade_per_cycle
        },
        ..cell
    }
}

/// The clock's speed for `protocol`, from its test time on the cell model (`cyclerctl
/// protocol simulate`), and that test time (h) when it is known.
fn speed_for(protocol: &Protocol, wall_s: f64) -> (f64, Option<f64>) {
    let plan = Plan::from_yaml(&protocol.yaml, &protocol.name).unwrap();
    let options = SimOptions {
        dt_s: 5.0,
        recording: Recording::Every(3600.0),
        ..SimOptions::default()
    };
    let report = simulate(plan, channel_0_cell(protocol.needs), &options, |_| {}).unwrap();
    if report.outcome != "finished" {
        return (FALLBACK_SPEED, None);
    }
    let speed = (report.duration_s / wall_s)
        .min(TIMED_STEP_SPEED * shortest_timed_step_s(&plan_of(protocol)))
        .clamp(MIN_SPEED, MAX_SPEED);
    (speed, Some(report.duration_s / 3600.0))
}

fn plan_of(protocol: &Protocol) -> Plan {
    Plan::from_yaml(&protocol.yaml, &protocol.name).unwrap()
}

/// The shortest step time any step of the plan ends on, s (infinite when none).
fn shortest_timed_step_s(plan: &Plan) -> f64 {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            PlanStep::Action(a) => Some(a.terminations.iter()),
            _ => None,
        })
        .flatten()
        .filter_map(|t| match t.condition {
            Condition::StepTime(d) => Some(d),
            _ => None,
        })
        .fold(f64::INFINITY, f64::min)
}

/// The wall time protocol `i` needs at `speed`: its test time over the speed, or the planned
/// wall time when its test time is not known beforehand.
fn wall_needed_s(test_h: Option<f64>, speed: f64, planned_s: f64) -> f64 {
    test_h.map_or(planned_s, |h| h * 3600.0 / speed)
}

/// One family's lab for one protocol, with its test started on channel 0: the library index,
/// and the test id (or why it did not start).
struct Running {
    device: DemoDevice,
    lab: SimLab,
    tests: Vec<(usize, Result<String, String>)>,
}

/// Starts a lab of `device` at `speed` for protocol `i` of `library` and starts its test.
/// Every protocol has a lab of its own: the chamber protocols need a chamber to themselves
/// (one test owns a chamber's set point, and a 45 degC chamber heats every cell in its air),
/// the end-of-life ones an aged cell, and each protocol its own speed. Each runs on channel 0,
/// so a protocol meets the same cell on every family.
async fn start_lab(device: DemoDevice, library: &[Protocol], i: usize, speed: f64) -> Running {
    let p = &library[i];
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        speed,
        device,
        extra_config: "commit_interval_ms = 200".into(),
        poll_interval_ms: (device == DemoDevice::EaPsb).then_some(PSB_POLL_MS),
        chamber: (p.needs == Needs::Chamber).then_some(DemoChamber::Espec),
        fade_per_cycle: (p.needs == Needs::AgedCell).then_some(AGED_FADE_PER_CYCLE),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let started = lab
        .start_on(0, &p.yaml, &format!("{}.yaml", p.name))
        .await
        .map_err(|e| format!("not started: {e:#}"));
    Running {
        device,
        lab,
        tests: vec![(i, started)],
    }
}

/// Waits until every test of `running` has ended (within `bound`), stops the lab and reads
/// each test's run from its hub, by library index.
async fn finish_lab(running: Running, bound: Duration) -> Vec<(usize, Run)> {
    let Running { device, lab, tests } = running;
    // A test still running after `bound` is reported as such (with where it is), not waited on.
    let _ = tokio::time::timeout(bound, lab.daemon.wait_all_done()).await;
    let snapshots = lab.daemon.snapshots();
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
                    let s = &snapshots[k];
                    let mut outcome = row.outcome.clone().unwrap_or_else(|| "none".into());
                    if s.state == "running" || s.state == "paused" {
                        outcome = format!(
                            "{device:?}: still {} after {bound:?}: step {} ({}), cycle {}, test time {:.1} h",
                            s.state,
                            s.step,
                            s.step_description,
                            s.cycle,
                            s.test_time_s / 3600.0
                        );
                    } else if outcome != "finished" {
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
                        min_voltage_v: hub
                            .samples(&test_id)
                            .unwrap()
                            .iter()
                            .map(|s| s.voltage_v)
                            .fold(f64::NAN, f64::min),
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
        .fold(None, |worst: Option<f64>, d| {
            Some(worst.map_or(d, |w| w.max(d)))
        })
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

/// Runs protocol `i` of `library` on `device` at `speed` in a lab on a thread and runtime of
/// its own: a lab's blocking work (its hub's and outbox's SQLite) never holds up the poll loop
/// of another lab's PSB, whose lateness would show as overshoot.
fn run_on_thread(
    device: DemoDevice,
    library: Arc<Vec<Protocol>>,
    i: usize,
    speed: f64,
    bound: Duration,
) -> std::thread::JoinHandle<Vec<(usize, Run)>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let running = start_lab(device, &library, i, speed).await;
                finish_lab(running, bound).await
            })
    })
}

#[test]
fn every_library_protocol_gives_the_same_cycles_on_the_psb_and_on_each_native_cycler() {
    let library = Arc::new(library());
    let wall_s = wall_per_protocol_s();
    let started = Instant::now();
    let speeds: Vec<(f64, Option<f64>)> = library.iter().map(|p| speed_for(p, wall_s)).collect();
    println!(
        "speeds from the cell model in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    // Every lab at once: the test takes about the longest protocol's wall time. Each is
    // waited on for twice its wall time and a minute (chamber waits, a busy machine).
    // The PSB runs first, alone: stepped by the daemon in real time, they are what the
    // machine's load makes less exact. The native simulators integrate exactly at any speed,
    // so their runs follow, twice as fast.
    let mut runs: BTreeMap<(usize, &'static str), Run> = BTreeMap::new();
    for (phase, families) in [(1.0, &FAMILIES[..1]), (NATIVE_SPEEDUP, &FAMILIES[1..])] {
        let mut running = Vec::new();
        for &device in families {
            for (i, (speed, test_h)) in speeds.iter().enumerate() {
                let speed = speed * phase;
                let needed = wall_needed_s(*test_h, speed, wall_s / phase);
                let bound = Duration::from_secs_f64(2.0 * needed.max(30.0) + 60.0);
                running.push((
                    device,
                    run_on_thread(device, library.clone(), i, speed, bound),
                ));
            }
        }
        for (device, thread) in running {
            let family = family_name(device);
            for (i, run) in thread.join().unwrap() {
                println!(
                    "{:>6.1} s: {} on {family} ended: {}",
                    started.elapsed().as_secs_f64(),
                    library[i].name,
                    run.outcome
                );
                runs.insert((i, family), run);
            }
        }
    }
    let wall = started.elapsed();

    let mut failures = Vec::new();
    println!(
        "\nprotocol library, {wall_s} s of wall time per protocol, PSB polled every {PSB_POLL_MS} ms: \
         wall {:.1} s",
        wall.as_secs_f64()
    );
    println!(
        "{:<18} {:<7} {:>6} {:>7} {:>7}  {:>8}  per-cycle discharge Ah / outcome",
        "protocol", "family", "cycles", "test h", "min V", "worst %"
    );
    for (i, p) in library.iter().enumerate() {
        let psb = &runs[&(i, "EA PSB")];
        let (speed, planned_h) = speeds[i];
        println!(
            "{} at {speed:.0}x ({})",
            p.name,
            planned_h.map_or("test time not known beforehand".into(), |h| format!(
                "{h:.1} h of test time on the cell model"
            ))
        );
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
                "{:<18} {:<7} {:>6} {:>7.2} {:>7.4}  {:>8}  {} [{}]",
                p.name,
                family,
                run.discharge_ah.len(),
                run.test_time_h,
                run.min_voltage_v,
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
