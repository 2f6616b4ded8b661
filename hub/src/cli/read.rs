//! Reading the hub: `tests`, `show`, `cells`, `samples`, `cycles` and `export`, from the
//! database or from a running hub (`--hub URL`).

use super::{ReadFrom, Reader, utc};
use crate::export::Pseudonymiser;
use crate::query::{Columns, CsvWriter, TestFilter};
use crate::remote::Remote;
use crate::store::StoreError;
use anyhow::{Context as _, Result, anyhow, bail};
use cyclerd_proto::hub::{Cell, ListCyclesResponse, SharedFrom, TestDetail, TestSummary};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;

/// The whole id of the test `id` names: `id` itself when it is a whole id (36 characters),
/// else the one test of `reader` whose id starts with it (ids are UUIDv7: their start is the
/// time the test began, so a few characters more than the common start of a day's tests do).
pub(super) fn resolve(reader: &mut Reader, id: &str) -> Result<String> {
    let id = id.trim();
    if id.is_empty() {
        bail!("give a test id (`cyclerhub tests` lists them)");
    }
    if id.len() >= 36 {
        return Ok(id.to_owned());
    }
    let ids: Vec<String> = match reader {
        Reader::Db(store) => store.list_tests()?.into_iter().map(|t| t.test_id).collect(),
        Reader::Hub(hub) => hub
            .list_tests(&TestFilter::default())?
            .into_iter()
            .map(|t| t.test_id)
            .collect(),
    };
    let prefix = id.to_ascii_lowercase();
    let matching: Vec<&String> = ids
        .iter()
        .filter(|t| t.to_ascii_lowercase().starts_with(&prefix))
        .collect();
    match matching[..] {
        [one] => Ok(one.clone()),
        [] => bail!("no test has an id starting with {id:?}; `cyclerhub tests` lists the test ids"),
        ref many => {
            let shown: Vec<&str> = many.iter().take(5).map(|t| t.as_str()).collect();
            bail!(
                "{} tests have an id starting with {id:?} ({}{}); give more of it",
                many.len(),
                shown.join(", "),
                if many.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        }
    }
}

/// `cyclerhub labs --hub`: the labs of the tests the caller may read, with their teams and
/// daemons (from those tests) and metadata schemas; tokens are the hub administrator's to see.
pub(super) fn labs(hub: &mut Remote) -> Result<()> {
    let tests = hub.list_tests(&TestFilter::default())?;
    // Lab -> (first test's start, teams, daemons).
    let mut labs: BTreeMap<String, (f64, BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for t in tests.iter().filter(|t| !t.lab.is_empty()) {
        let lab =
            labs.entry(t.lab.clone())
                .or_insert((f64::INFINITY, BTreeSet::new(), BTreeSet::new()));
        lab.0 = lab.0.min(t.start_unix_s);
        if !t.team.is_empty() {
            lab.1.insert(t.team.clone());
        }
        lab.2.insert(t.daemon_id.clone());
    }
    if labs.is_empty() {
        eprintln!("no lab has tests you may read at hub {}", hub.url());
    }
    let mut out = std::io::stdout().lock();
    let list = |v: &BTreeSet<String>| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    for (lab, (first, teams, daemons)) in &labs {
        let schemas = hub.metadata_schemas(lab)?;
        writeln!(out, "{lab} (first test {} UTC)", utc(*first))?;
        writeln!(out, "  teams:    {}", list(teams))?;
        writeln!(out, "  daemons:  {}", list(daemons))?;
        writeln!(
            out,
            "  metadata schemas: {}",
            if schemas.is_empty() {
                "-".into()
            } else {
                schemas.join(", ")
            }
        )?;
    }
    Ok(())
}

pub(super) fn list_tests(from: &ReadFrom, filter: TestFilter) -> Result<()> {
    // Checked here too, so that --db and --hub refuse the same filters with the same words.
    filter.check().map_err(anyhow::Error::msg)?;
    let (tests, place) = match from.open()? {
        Reader::Db(store) => {
            let tests = filter.select(&store)?;
            let tests = tests
                .iter()
                .map(|(t, lab)| crate::query::summary(t, lab))
                .collect();
            (tests, store.path().display().to_string())
        }
        Reader::Hub(mut hub) => (hub.list_tests(&filter)?, format!("hub {}", hub.url())),
    };
    if tests.is_empty() {
        eprintln!("no matching tests in {place}");
        return Ok(());
    }
    print_tests(&mut std::io::stdout().lock(), &tests)
}

/// Where a test another hub shared came from, in a few words.
fn provenance(f: &SharedFrom) -> String {
    format!(
        "hub {}, share {}{}",
        f.hub,
        f.share,
        if f.anonymised { ", anonymised" } else { "" }
    )
}

pub(super) fn show(from: &ReadFrom, test_id: &str) -> Result<()> {
    let mut reader = from.open()?;
    let test_id = &resolve(&mut reader, test_id)?;
    let detail = match reader {
        Reader::Db(store) => {
            let Some(t) = store.test(test_id)? else {
                bail!(
                    "{}; `cyclerhub tests --db {}` lists the test ids",
                    StoreError::NoSuchTest(test_id.to_owned()),
                    store.path().display()
                );
            };
            let lab = store
                .daemon_labs()?
                .remove(&t.daemon_id)
                .unwrap_or_default();
            crate::query::detail(&store, &t, &lab)?
        }
        Reader::Hub(mut hub) => hub.get_test(test_id)?,
    };
    print_detail(&mut std::io::stdout().lock(), &detail)
}

/// What `cyclerhub show` prints of a test.
pub(super) fn print_detail(out: &mut impl std::io::Write, d: &TestDetail) -> Result<()> {
    let s = d.summary.clone().unwrap_or_default();
    let or_dash = |v: &str| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.to_owned()
        }
    };
    writeln!(out, "test      {}", s.test_id)?;
    if let Some(f) = &s.shared_from {
        writeln!(
            out,
            "shared    from {} ({}) since {} UTC",
            provenance(f),
            f.selection,
            utc(f.since_unix_s)
        )?;
    }
    writeln!(
        out,
        "lab       {}  team {}",
        or_dash(&s.lab),
        or_dash(&s.team)
    )?;
    writeln!(out, "daemon    {}  channel {}", s.daemon_id, s.channel_id)?;
    writeln!(out, "protocol  {}", s.protocol_name)?;
    let reason = if d.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", d.reason)
    };
    writeln!(out, "state     {}{reason}", s.state)?;
    let end = if s.end_unix_s > 0.0 {
        format!("  ended {} UTC", utc(s.end_unix_s))
    } else {
        String::new()
    };
    writeln!(out, "started   {} UTC{end}", utc(s.start_unix_s))?;
    let expected = if d.expected_samples > 0 {
        format!(" of {} the daemon counted", d.expected_samples)
    } else {
        String::new()
    };
    writeln!(out, "samples   {}{expected}", s.sample_count)?;
    if !s.grade.is_empty() {
        writeln!(out, "grade     {} ({} of 100)", s.grade, s.grade_score)?;
        for r in &d.grade_reasons {
            writeln!(out, "  {r}")?;
        }
    }
    if !d.quality_findings.is_empty() {
        writeln!(out, "quality findings (the samples are kept as measured)")?;
        for f in &d.quality_findings {
            writeln!(
                out,
                "  {:<6}  {:<19}  seq {}..{}{}: {}",
                f.source,
                f.check,
                f.first_seq,
                f.last_seq,
                if f.open { " (going on)" } else { "" },
                f.reason
            )?;
        }
    }
    writeln!(out, "metadata")?;
    let mut metadata: Vec<_> = d.metadata.iter().collect();
    metadata.sort();
    for (k, v) in metadata {
        writeln!(out, "  {k} = {v}")?;
    }
    if !d.metadata_problems.is_empty() {
        writeln!(out, "metadata problems (against the lab's schemas)")?;
        for p in &d.metadata_problems {
            writeln!(out, "  {p}")?;
        }
    }
    writeln!(out, "instruments")?;
    for e in &d.equipment {
        writeln!(
            out,
            "  {:<12}  {:<14}  {:<8}  {}",
            e.name, e.family, e.role, e.address
        )?;
    }
    writeln!(out, "events")?;
    for e in &d.events {
        writeln!(
            out,
            "  {} UTC  {:>10.1} s  {:<6}  cycle {} step {}: {}",
            utc(e.unix_time_s),
            e.test_time_s,
            e.kind,
            e.cycle,
            e.step,
            e.message
        )?;
    }
    Ok(())
}

/// The cell table `cyclerhub cells` prints, whatever it read the cells from.
pub(super) fn print_cells(out: &mut impl std::io::Write, cells: &[Cell]) -> Result<()> {
    writeln!(
        out,
        "{:<14}  {:<20}  {:<12}  {:<16}  {:<14}  {:<10}  {:>8}  {:>7}  FIRST TEST (UTC)",
        "LAB", "CELL", "MANUFACTURER", "MODEL", "CHEMISTRY", "FORM", "Q / Ah", "U / V"
    )?;
    let text = |v: &str| if v.is_empty() { "-" } else { v }.to_owned();
    let num = |v: f64| if v > 0.0 { v.to_string() } else { "-".into() };
    for c in cells {
        writeln!(
            out,
            "{:<14}  {:<20}  {:<12}  {:<16}  {:<14}  {:<10}  {:>8}  {:>7}  {}",
            text(&c.lab),
            c.cell_id,
            text(&c.manufacturer),
            text(&c.model),
            text(&c.chemistry),
            text(&c.form_factor),
            num(c.nominal_capacity_ah),
            num(c.nominal_voltage_v),
            utc(c.first_test_unix_s)
        )?;
    }
    Ok(())
}

/// The test table `cyclerhub tests` prints, whatever it read the tests from.
/// Where a test came from if another hub shared it is a last column, only when some test was.
pub(super) fn print_tests(out: &mut impl std::io::Write, tests: &[TestSummary]) -> Result<()> {
    let any_shared = tests.iter().any(|t| t.shared_from.is_some());
    writeln!(
        out,
        "{:<36}  {:<14}  {:<14}  {:<24}  {:<9}  {:>10}  {:<9}  START (UTC){}",
        "TEST ID",
        "LAB",
        "CHANNEL",
        "PROTOCOL",
        "STATE",
        "SAMPLES",
        "GRADE",
        if any_shared {
            "            SHARED FROM"
        } else {
            ""
        }
    )?;
    for t in tests {
        let grade = if t.grade.is_empty() {
            "-".to_owned()
        } else {
            format!("{} ({})", t.grade, t.grade_score)
        };
        let from = match &t.shared_from {
            Some(from) => format!("  {}", provenance(from)),
            None if any_shared => "  -".into(),
            None => String::new(),
        };
        writeln!(
            out,
            "{:<36}  {:<14}  {:<14}  {:<24}  {:<9}  {:>10}  {:<9}  {}{from}",
            t.test_id,
            if t.lab.is_empty() { "-" } else { &t.lab },
            t.channel_id,
            t.protocol_name,
            t.state,
            t.sample_count,
            grade,
            utc(t.start_unix_s)
        )?;
    }
    Ok(())
}

/// `cyclerhub samples`: the test's samples in the window as CSV on standard output.
pub(super) fn samples(
    from: &ReadFrom,
    test_id: &str,
    columns: &[String],
    window: (f64, f64),
    follow: bool,
) -> Result<()> {
    let cols = Columns::parse(columns).map_err(anyhow::Error::msg)?;
    crate::query::check_window(window.0, window.1).map_err(anyhow::Error::msg)?;
    let mut reader = from.open()?;
    let test_id = &resolve(&mut reader, test_id)?;
    if let Reader::Db(store) = &reader
        && store.test(test_id)?.is_none()
    {
        bail!(
            "{}; `cyclerhub tests --db {}` lists the test ids",
            StoreError::NoSuchTest(test_id.to_owned()),
            store.path().display()
        );
    }
    let stdout = std::io::stdout();
    let mut csv = CsvWriter::new(&cols, std::io::BufWriter::new(stdout.lock()));
    match reader {
        Reader::Db(store) => {
            let mut failed = None;
            crate::query::read_batches(
                &store,
                test_id,
                &cols,
                (0, u64::MAX),
                window,
                |b| match csv.batch(&b) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                },
            )?;
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Reader::Hub(mut hub) if follow => hub.tail(test_id, |b| {
            csv.batch(b)?;
            csv.flush()
        })?,
        Reader::Hub(mut hub) => hub.read_samples(test_id, &cols, window, |b| csv.batch(b))?,
    }
    csv.finish()?;
    Ok(())
}

/// `cyclerhub cycles`: the test's per-cycle results as a table, or as CSV with `csv`.
pub(super) fn cycles(from: &ReadFrom, test_id: &str, csv: bool) -> Result<()> {
    let mut reader = from.open()?;
    let test_id = &resolve(&mut reader, test_id)?;
    let list = match reader {
        Reader::Db(store) => {
            if store.test(test_id)?.is_none() {
                bail!(
                    "{}; `cyclerhub tests --db {}` lists the test ids",
                    StoreError::NoSuchTest(test_id.to_owned()),
                    store.path().display()
                );
            }
            crate::cycles::list(&store, test_id)?
        }
        Reader::Hub(mut hub) => hub.list_cycles(test_id)?,
    };
    let out = std::io::stdout().lock();
    if csv {
        return Ok(crate::export::write_cycles_csv(&list.cycles, out)?);
    }
    if list.cycles.is_empty() {
        eprintln!("test {test_id} has no cycles yet: the hub has none of its samples");
        return Ok(());
    }
    print_cycles(&mut std::io::BufWriter::new(out), &list)
}

/// The cycle table `cyclerhub cycles` prints (80 columns), whatever it read the cycles from,
/// and what the marks in it mean.
pub(super) fn print_cycles(out: &mut impl std::io::Write, list: &ListCyclesResponse) -> Result<()> {
    for line in cyclerd_proto::cycles::table(&list.cycles) {
        writeln!(out, "{line}")?;
    }
    if list.cycles.iter().any(|c| !c.complete) {
        writeln!(out, "* still going on")?;
    }
    match list.retention_reference_cycle {
        Some(n) => writeln!(
            out,
            "retention: discharge capacity over cycle {n}'s, the first full cycle"
        )?,
        None => writeln!(
            out,
            "retention: no full cycle yet (a charge and a discharge)"
        )?,
    }
    if list.source == crate::cycles::Source::Samples.name() {
        writeln!(
            out,
            "computed by the hub from the samples: the daemon sent no per-cycle results"
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The pseudonymiser keyed with the lab secret in `salt`; refuses to go without one.
pub(super) fn pseudonymiser(salt: Option<PathBuf>) -> Result<Pseudonymiser> {
    let Some(salt) = salt else {
        bail!(
            "--anonymise needs the lab's secret: --salt FILE (or CYCLERHUB_SALT_FILE). Without \
             one, a pseudonym would be a plain hash of the cell id that anyone can reverse by \
             hashing candidate ids. Create it once, keep it private and reuse it: \
             head -c 32 /dev/urandom | base64 > lab-secret"
        );
    };
    pseudonymiser_from(&salt)
}

/// The pseudonymiser keyed with the lab secret in the file `salt`.
pub(crate) fn pseudonymiser_from(salt: &std::path::Path) -> Result<Pseudonymiser> {
    let secret = std::fs::read(salt)
        .with_context(|| format!("cannot read the salt file {}", salt.display()))?;
    Pseudonymiser::new(&secret).map_err(|e| anyhow!("salt file {}: {e}", salt.display()))
}
