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
use super::summary::{PlotChunk, PlotData, PlotWindow, Summary};
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
        .map(|(first_seq, _, data)| decode_chunk(test_id, *first_seq, data))
        .collect()
}

/// The error of a stored chunk of `test_id` at `first_seq` that does not read back.
fn corrupt(test_id: &str, first_seq: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!(
        "the sample chunk at seq {first_seq} of test {test_id}: {e}"
    ))
}

/// A stored chunk of `test_id` that starts at `first_seq`, decoded: its first seq and columns.
fn decode_chunk(
    test_id: &str,
    first_seq: i64,
    data: &[u8],
) -> Result<(u64, OwnedColumns), StoreError> {
    let first = u64::try_from(first_seq).map_err(|_| corrupt(test_id, first_seq, "seq"))?;
    let columns =
        cyclerd_proto::chunk::decode(data).map_err(|e| corrupt(test_id, first_seq, e.0))?;
    if first
        .checked_add(columns.len() as u64 - 1)
        .is_none_or(|l| l > i64::MAX as u64)
    {
        return Err(corrupt(test_id, first_seq, "chunk seqs out of range"));
    }
    Ok((first, columns))
}

impl PlotChunk {
    /// What a plot draws of this chunk of `test_id`: its samples when the store sent its data,
    /// else its summary; the store's error when either does not read back.
    pub fn decode(&self, test_id: &str) -> Result<PlotData, StoreError> {
        let corrupt = |e: String| corrupt(test_id, self.first_seq, e);
        match (&self.data, &self.summary) {
            (Some(data), _) => Ok(PlotData::Samples(
                decode_chunk(test_id, self.first_seq, data)?.1,
            )),
            (None, Some(summary)) => Summary::from_bytes(summary)
                .map(PlotData::Summary)
                .map_err(corrupt),
            (None, None) => Err(corrupt("no data and no summary".into())),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn plot_chunk(summary: Option<Vec<u8>>, data: Option<Vec<u8>>) -> PlotChunk {
        PlotChunk {
            first_seq: 7,
            last_seq: 9,
            t_min: 0.0,
            t_max: 2.0,
            summary,
            data,
        }
    }

    fn samples() -> OwnedColumns {
        let mut c = OwnedColumns::default();
        for i in 0..3 {
            for col in c.head.iter_mut() {
                col.push(i as f64);
            }
            c.cycle.push(1);
            c.step.push(1);
            for col in c.tail.iter_mut() {
                col.push(0.0);
            }
        }
        c
    }

    fn corrupt_text(r: Result<PlotData, StoreError>) -> String {
        match r {
            Err(StoreError::Corrupt(e)) => e,
            other => panic!("expected a corrupt-data error, got {other:?}"),
        }
    }

    #[test]
    fn a_plot_chunk_reads_back_as_its_samples_when_sent_with_data_else_as_its_summary() {
        let c = samples();
        let data = chunk::encode(&c.columns()).data;
        let summary = Summary::of(&c.columns());
        match plot_chunk(Some(summary.to_bytes()), Some(data))
            .decode("T")
            .unwrap()
        {
            PlotData::Samples(got) => assert_eq!(got.columns().head[0], &[0.0, 1.0, 2.0]),
            other => panic!("expected samples, got {other:?}"),
        }
        match plot_chunk(Some(summary.to_bytes()), None)
            .decode("T")
            .unwrap()
        {
            PlotData::Summary(got) => assert_eq!(got.max[0], 2.0),
            other => panic!("expected a summary, got {other:?}"),
        }
    }

    #[test]
    fn a_plot_chunk_that_does_not_read_back_is_corrupt_data_naming_its_seq_and_test() {
        for chunk in [
            plot_chunk(None, Some(vec![0xff, 1, 2])),
            plot_chunk(Some(vec![1, 2, 3]), None),
            plot_chunk(None, None),
        ] {
            let e = corrupt_text(chunk.decode("T"));
            assert!(
                e.starts_with("the sample chunk at seq 7 of test T: "),
                "{e}"
            );
        }
        let e = corrupt_text(plot_chunk(None, None).decode("T"));
        assert!(e.ends_with("no data and no summary"), "{e}");
    }
}
