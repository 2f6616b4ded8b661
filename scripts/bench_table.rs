//! One row of the benchmark table, shared by every bench target (`#[path]`-included).
//!
//! Each measurement is repeated; a row gives its median with min and max, the baseline measured
//! in the same run doing the same work (when there is one) and the ratio of the two medians,
//! and the goal it is held to (when the issue set one). A row is printed for a human and, when
//! `BENCH_TABLE_TSV` names a file, appended to it as one tab-separated line, which
//! `scripts/bench-table.sh` gathers into one table.

#![allow(dead_code)]

use std::io::Write;

/// Median, min and max of repeated measurements.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many repetitions.
    pub n: usize,
}

impl Stats {
    /// Of `values` (at least one; NaN sorts last).
    pub fn of(values: &[f64]) -> Stats {
        assert!(!values.is_empty(), "no measurements");
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Stats {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }

    /// `f` run `n` times.
    pub fn repeat(n: usize, mut f: impl FnMut() -> f64) -> Stats {
        let v: Vec<f64> = (0..n).map(|_| f()).collect();
        Stats::of(&v)
    }
}

/// What a row is held to.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// Reported only.
    None,
    /// The measured median must be at least this.
    AtLeast(f64),
    /// The measured median must be at most this.
    AtMost(f64),
}

/// One line of the table.
pub struct Row<'a> {
    /// Which part of the system: outbox, hub, daemon, poll, compile...
    pub section: &'a str,
    pub what: &'a str,
    pub unit: &'a str,
    pub measured: Stats,
    /// The baseline's name and measurements, from the same run.
    pub baseline: Option<(&'a str, Stats)>,
    pub goal: Goal,
}

fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        format!("{x}")
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Prints `row` and appends it to the table file, if any.
pub fn report(row: Row<'_>) {
    let m = row.measured;
    let (goal, met) = match row.goal {
        Goal::None => ("-".to_string(), "-"),
        Goal::AtLeast(g) => (
            format!(">= {} {}", num(g), row.unit),
            if m.median >= g { "yes" } else { "NO" },
        ),
        Goal::AtMost(g) => (
            format!("<= {} {}", num(g), row.unit),
            if m.median <= g { "yes" } else { "NO" },
        ),
    };
    let (base_name, base, ratio) = match &row.baseline {
        Some((name, b)) => (
            name.to_string(),
            format!("{} ({}-{})", num(b.median), num(b.min), num(b.max)),
            format!("{:.2}", m.median / b.median),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let measured = format!(
        "{} ({}-{}, n={})",
        num(m.median),
        num(m.min),
        num(m.max),
        m.n
    );
    println!(
        "{:<9} {:<52} {:>28} {:<10} baseline {:<34} {:>22}  ratio {:>6}  goal {} {}",
        row.section, row.what, measured, row.unit, base_name, base, ratio, goal, met
    );
    if let Ok(path) = std::env::var("BENCH_TABLE_TSV") {
        let line = [
            row.section,
            row.what,
            &measured,
            row.unit,
            &base_name,
            &base,
            &ratio,
            &goal,
            met,
        ]
        .join("\t");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("the bench table file opens");
        writeln!(f, "{line}").expect("the bench table file is writable");
    }
}
