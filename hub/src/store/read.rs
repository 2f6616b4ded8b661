//! Reading a test's samples out: chunk by chunk as columns ([`HubStore::for_each_chunk_from`],
//! what the read API, downloads and plots use), or sample by sample as rows.
//!
//! A page of chunks is read at a time and the reader connection is held only while reading a
//! page, never while the caller's function runs: a slow consumer (a client that stopped reading
//! its stream) must not stall the queries and token checks that share the connection. A longer
//! read fetches on one thread and decodes on another, each a page ahead of the caller, so the
//! database's round trips, the decoding and the caller's work overlap.

use cyclerd_proto::chunk::Columns;

use super::chunk::{self, OwnedColumns};
use super::summary::{PlotChunk, PlotWindow};
use super::{HubStore, SampleRow, StoreError, u64_from_sql};

/// Chunks read per page when streaming a test out (a daemon's batch is up to 2048 samples).
const CHUNK_PAGE: i64 = 16;

/// Chunks read per page for a plot (most come without their data).
const PLOT_PAGE: i64 = 512;

/// Where the page after a full page of chunks starts; `None` after the last page.
fn page_after(page: &[(i64, i64, Vec<u8>)]) -> Option<i64> {
    let (_, last_seq, _) = page.last()?;
    (page.len() as i64 == CHUNK_PAGE)
        .then(|| last_seq.checked_add(1))
        .flatten()
}

/// A page of chunks, decoded: each chunk's first seq and columns.
type Decoded = Vec<(u64, OwnedColumns)>;

fn decode_page(test_id: &str, page: &[(i64, i64, Vec<u8>)]) -> Result<Decoded, StoreError> {
    page.iter()
        .map(|(first_seq, _, data)| {
            let corrupt = |e: String| {
                StoreError::Corrupt(format!(
                    "the sample chunk at seq {first_seq} of test {test_id}: {e}"
                ))
            };
            let first = u64::try_from(*first_seq).map_err(|_| corrupt("seq".into()))?;
            let columns = cyclerd_proto::chunk::decode(data).map_err(|e| corrupt(e.0))?;
            if first
                .checked_add(columns.len() as u64 - 1)
                .is_none_or(|l| l > i64::MAX as u64)
            {
                return Err(corrupt("chunk seqs out of range".into()));
            }
            Ok((first, columns))
        })
        .collect()
}

impl HubStore {
    /// Streams the samples of a test in `seq` order through `f`, without loading them all;
    /// returns how many were visited. Stops at the first error `f` returns.
    pub fn for_each_sample<E: From<StoreError>>(
        &self,
        test_id: &str,
        f: impl FnMut(&SampleRow) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.for_each_sample_from(test_id, 0, f)
    }

    /// [`HubStore::for_each_sample`] from sequence number `from_seq` on (an index seek to the
    /// chunk that holds it, so following a long test costs only its new samples).
    pub fn for_each_sample_from<E: From<StoreError>>(
        &self,
        test_id: &str,
        from_seq: u64,
        mut f: impl FnMut(&SampleRow) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.for_each_chunk_from(test_id, from_seq, |first, c| {
            for i in 0..c.len() {
                f(&chunk::row(&c, i, first + i as u64))?;
            }
            Ok(())
        })
    }

    /// The chunks of a test from `from_seq` on as a plot of window `w` reads them (a summary,
    /// and the data only where the plot must decode it), in seq order, while `f` returns
    /// `true`.
    pub fn for_each_plot_chunk<E: From<StoreError>>(
        &self,
        test_id: &str,
        from_seq: u64,
        w: &PlotWindow,
        mut f: impl FnMut(PlotChunk) -> Result<bool, E>,
    ) -> Result<(), E> {
        let key = self.backend.test_key(test_id)?;
        let Ok(mut next) = i64::try_from(from_seq) else {
            return Ok(());
        };
        loop {
            let page = self.backend.plot_page(key, next, PLOT_PAGE, w)?;
            let full = page.len() as i64 == PLOT_PAGE;
            let Some(last) = page.last().map(|c| c.first_seq) else {
                return Ok(());
            };
            for c in page {
                if !f(c)? {
                    return Ok(());
                }
            }
            match last.checked_add(1) {
                Some(after) if full => next = after,
                _ => return Ok(()),
            }
        }
    }

    /// The samples of a test from `from_seq` on, a run of consecutive seqs at a time as
    /// columns: `f(first_seq, columns)`, every run starting at or after `from_seq`, in seq
    /// order. Returns how many samples were visited; stops at the first error `f` returns.
    pub fn for_each_chunk_from<E: From<StoreError>>(
        &self,
        test_id: &str,
        from_seq: u64,
        mut f: impl FnMut(u64, Columns<'_>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let key = self.backend.test_key(test_id)?;
        // Beyond any seq the hub stores (at most i64::MAX): nothing to read.
        let Ok(start) = i64::try_from(from_seq) else {
            return Ok(0);
        };
        let mut visit = |from: u64, page: Decoded| -> Result<u64, E> {
            let mut n = 0;
            // The page's first chunk may start before `from`: the one that holds it (or one
            // that grew since the page before, when a small batch was merged into it).
            for (first, columns) in &page {
                let skip = from.saturating_sub(*first) as usize;
                if skip >= columns.len() {
                    continue;
                }
                let c = columns.columns();
                let c = c.slice(skip..c.len());
                n += c.len() as u64;
                f(first + skip as u64, c)?;
            }
            Ok(n)
        };
        let first = self.backend.chunk_page(key, start, CHUNK_PAGE)?;
        let next = page_after(&first);
        let mut n = visit(from_seq, decode_page(test_id, &first)?)?;
        let Some(next) = next else {
            return Ok(n);
        };
        // A longer read: the next pages are read on one thread and decoded on another while
        // the caller works on this one, each stage one page ahead at most, so the database's
        // round trips overlap the decoding (PostgreSQL's are most of a page's time otherwise).
        let backend = &*self.backend;
        std::thread::scope(|s| {
            let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel(1);
            s.spawn(move || {
                let mut next = next;
                loop {
                    let page = backend.chunk_page(key, next, CHUNK_PAGE);
                    let after = page.as_ref().ok().and_then(|p| page_after(p));
                    if raw_tx.send(page.map(|p| (next, p))).is_err() {
                        return;
                    }
                    match after {
                        Some(a) => next = a,
                        None => return,
                    }
                }
            });
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            s.spawn(move || {
                for page in raw_rx {
                    let decoded = page.and_then(|(next, p)| Ok((next, decode_page(test_id, &p)?)));
                    if tx.send(decoded).is_err() {
                        return;
                    }
                }
            });
            for page in rx {
                let (from, page) = page?;
                n += visit(u64_from_sql(from), page)?;
            }
            Ok(n)
        })
    }
}
