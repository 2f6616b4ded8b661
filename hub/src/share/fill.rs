//! Appends to a share's log what its tests gained since the last fill: a new test's
//! registration, runs of new samples, new events, newly complete cycles, the end. Each test's
//! entries and its progress are written in one transaction, so a crash between fills loses or
//! doubles nothing.

use crate::store::{HubStore, ShareRow, StoreError};

use super::Selection;

/// Most samples in one entry: a few hundred KiB on the wire, far below the receiver's limit.
pub const MAX_SAMPLES_PER_ENTRY: u64 = 4096;

/// Logs what share `share`'s tests gained since the last fill; returns how many entries it
/// added.
pub fn fill(store: &HubStore, share: &ShareRow) -> Result<u64, StoreError> {
    let selection: Selection = serde_json::from_str(&share.selection).map_err(|e| {
        StoreError::Corrupt(format!("the selection of share {:?}: {e}", share.name))
    })?;
    let labs = store.daemon_labs()?;
    let tests = store.list_tests()?;
    let mut progress = store.share_progress(&share.name)?;
    let mut added = 0;
    for t in super::selected(&selection, &tests, &labs) {
        let known = progress.remove(&t.test_id);
        // An ended test whose end is logged gains nothing more.
        if known.as_ref().is_some_and(|p| p.ended) {
            continue;
        }
        let mut p = known.clone().unwrap_or_default();
        let mut entries: Vec<(&'static str, i64, i64)> = Vec::new();
        if known.is_none() {
            entries.push(("registered", 0, 0));
        }
        for (first, end) in sample_runs(store, &t.test_id, p.next_seq)? {
            entries.push(("samples", to_i64(first), to_i64(end)));
            p.next_seq = end;
        }
        for c in store.cycles(&t.test_id)? {
            if c.complete && c.cycle > p.cycles {
                entries.push(("cycle", i64::from(c.cycle), 0));
                p.cycles = c.cycle;
            }
        }
        let events = store.events(&t.test_id)?.len() as u64;
        for i in p.events..events {
            entries.push(("event", to_i64(i), 0));
        }
        p.events = p.events.max(events);
        if t.outcome.is_some() {
            entries.push(("ended", 0, 0));
            p.ended = true;
        }
        if entries.is_empty() {
            continue;
        }
        added += entries.len() as u64;
        store.log_share_entries(&share.name, &t.test_id, &entries, &p)?;
    }
    Ok(added)
}

/// The runs of consecutive seqs of a test from `from` on, at most
/// [`MAX_SAMPLES_PER_ENTRY`] each, as `(first seq, the seq after the last)`.
fn sample_runs(store: &HubStore, test_id: &str, from: u64) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    store.for_each_chunk_from(test_id, from, |first, c| -> Result<(), StoreError> {
        let end = first + c.len() as u64;
        let mut at = first;
        while at < end {
            match runs.last_mut() {
                Some(run) if run.1 == at && run.1 - run.0 < MAX_SAMPLES_PER_ENTRY => {
                    let take = (MAX_SAMPLES_PER_ENTRY - (run.1 - run.0)).min(end - at);
                    run.1 += take;
                    at += take;
                }
                _ => {
                    let take = MAX_SAMPLES_PER_ENTRY.min(end - at);
                    runs.push((at, at + take));
                    at += take;
                }
            }
        }
        Ok(())
    })?;
    Ok(runs)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
