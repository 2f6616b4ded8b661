//! A test's samples as a download, streamed: a blocking task reads the store a page at a time
//! ([`read_batches`], the read gRPC's `ReadSamples` uses), encodes each batch and hands the
//! bytes to the response in pieces of [`PIECE`] through a channel of [`PIECES_AHEAD`]. Memory is
//! bounded by one page of samples (a Parquet row group) and the pieces in flight, whatever the
//! test's size; a client that stops reading stops the read.

use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use cyclerd_proto::ingest::SampleBatch;
use parquet::basic::{Compression, Repetition, Type as PhysicalType};
use parquet::data_type::{DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use tokio::sync::mpsc;

use super::ApiError;
use super::arrow::ArrowSamples;
use crate::auth::{Authenticator, Recheck};
use crate::query::{Column, Columns, CsvWriter, PAGE, column, read_batches};
use crate::store::HubStore;

/// Bytes per piece of the response body.
const PIECE: usize = 64 << 10;
/// Pieces encoded ahead of the client.
const PIECES_AHEAD: usize = 4;
/// Samples per Parquet row group: one read page, so a row group never waits on two pages.
const ROW_GROUP: usize = PAGE as usize;

/// A format samples are downloaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Comma-separated text, `seq` then the columns, as `cyclerhub samples` prints.
    Csv,
    /// Apache Parquet, Snappy-compressed, a row group per 65 536 samples.
    Parquet,
    /// An Apache Arrow IPC stream, a record batch per page read.
    Arrow,
}

impl SampleFormat {
    /// The format a request asks for: `format=` wins, then the `Accept` header; CSV when
    /// neither names one.
    pub fn choose(format: Option<&str>, accept: Option<&str>) -> Result<SampleFormat, ApiError> {
        match format.map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => return Ok(SampleFormat::Csv),
            Some("parquet") => return Ok(SampleFormat::Parquet),
            Some("arrow") => return Ok(SampleFormat::Arrow),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "format {other:?} is not one the hub writes: give csv, parquet or arrow"
                )));
            }
            None => {}
        }
        let accept = accept.unwrap_or_default();
        if accept.contains("application/vnd.apache.parquet") || accept.contains("parquet") {
            Ok(SampleFormat::Parquet)
        } else if accept.contains("application/vnd.apache.arrow") {
            Ok(SampleFormat::Arrow)
        } else {
            Ok(SampleFormat::Csv)
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            SampleFormat::Csv => "text/csv; charset=utf-8",
            SampleFormat::Parquet => "application/vnd.apache.parquet",
            SampleFormat::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    /// The file name suffix of a download.
    pub fn extension(self) -> &'static str {
        match self {
            SampleFormat::Csv => "csv",
            SampleFormat::Parquet => "parquet",
            SampleFormat::Arrow => "arrows",
        }
    }
}

/// What a stream reads: a test's samples, some columns, a test-time window.
pub struct SampleRead {
    /// The test, already checked readable by the caller.
    pub test_id: String,
    /// The columns selected.
    pub columns: Columns,
    /// Test-time window in seconds (`to` 0 = to the end).
    pub window: (f64, f64),
}

/// The response body streaming `read` in `format`. Between pages the request's token is
/// checked again (every `recheck`), so a revoked token ends a long download.
pub fn body(
    store: HubStore,
    auth: Authenticator,
    credentials: tonic::metadata::MetadataMap,
    recheck: std::time::Duration,
    read: SampleRead,
    format: SampleFormat,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(PIECES_AHEAD);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut recheck = Recheck::new(auth, credentials, recheck);
        let out = Pieces {
            tx: tx.clone(),
            buffer: Vec::with_capacity(PIECE),
        };
        let result = match format {
            SampleFormat::Csv => {
                let mut csv = CsvWriter::new(&read.columns, out);
                produce(&store, &read, &handle, &mut recheck, |b| csv.batch(b))
                    .and_then(|()| csv.finish().map_err(|e| e.to_string()))
            }
            SampleFormat::Parquet => ParquetSamples::new(&read.columns, out)
                .map_err(|e| e.to_string())
                .and_then(|mut p| {
                    produce(&store, &read, &handle, &mut recheck, |b| p.batch(b))?;
                    p.finish().map_err(|e| e.to_string())
                }),
            SampleFormat::Arrow => ArrowSamples::new(&read.columns, out)
                .map_err(|e| e.to_string())
                .and_then(|mut a| {
                    produce(&store, &read, &handle, &mut recheck, |b| a.batch(b))?;
                    a.finish().map_err(|e| e.to_string())
                }),
        };
        if let Err(e) = result {
            // The status line is out: cutting the body short is how the client learns.
            tracing::debug!(test_id = %read.test_id, error = %e, "sample download ended early");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Reads `read` page by page into `encode`, checking the token between pages.
fn produce(
    store: &HubStore,
    read: &SampleRead,
    handle: &tokio::runtime::Handle,
    recheck: &mut Recheck,
    mut encode: impl FnMut(&SampleBatch) -> std::io::Result<()>,
) -> Result<(), String> {
    let mut from = 0;
    loop {
        handle
            .block_on(recheck.still_valid())
            .map_err(|s| s.message().to_string())?;
        let mut failed = None;
        let (next, more) = read_batches(
            store,
            &read.test_id,
            &read.columns,
            (from, PAGE),
            read.window,
            |b| match encode(&b) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            },
        )
        .map_err(|e| crate::store::error_chain(&e))?;
        if let Some(e) = failed {
            return Err(e.to_string());
        }
        if !more {
            return Ok(());
        }
        from = next;
    }
}

/// A `Write` that hands its bytes to the response in pieces; fails once the client is gone.
struct Pieces {
    /// The response body's side of the channel.
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    /// Bytes not yet handed over (less than a piece).
    buffer: Vec<u8>,
}

impl Write for Pieces {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= PIECE {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(PIECE),
        ));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

/// One selected column's values of the row group being filled.
enum Values {
    /// A count (`seq`, cycle, step) as `INT64`.
    Int(Vec<i64>),
    /// A measurement as required `DOUBLE`.
    Real(Vec<f64>),
    /// A temperature as optional `DOUBLE`: the readings and a definition level per row.
    Optional(Vec<f64>, Vec<i16>),
}

/// Samples as Parquet: `seq` (`INT64`), the selected columns (`DOUBLE`; cycle and step
/// `INT64`; temperatures optional, null where a sample has none), a row group per page.
struct ParquetSamples {
    /// The file being written into the response.
    writer: SerializedFileWriter<Pieces>,
    /// Column names after `seq`, in file order.
    names: Vec<&'static str>,
    /// Per column (`seq` first), its values of the row group being filled.
    values: Vec<Values>,
    /// Rows in the row group being filled.
    rows: usize,
}

fn optional(name: &str) -> bool {
    name.ends_with("temperature_c")
}

impl ParquetSamples {
    fn new(columns: &Columns, out: Pieces) -> parquet::errors::Result<ParquetSamples> {
        let names = columns.names();
        let mut fields = vec![Arc::new(
            Type::primitive_type_builder("seq", PhysicalType::INT64)
                .with_repetition(Repetition::REQUIRED)
                .build()?,
        )];
        let mut values = vec![Values::Int(Vec::new())];
        for name in &names {
            let (physical, repetition, v) = match *name {
                "cycle" | "step" => (
                    PhysicalType::INT64,
                    Repetition::REQUIRED,
                    Values::Int(Vec::new()),
                ),
                n if optional(n) => (
                    PhysicalType::DOUBLE,
                    Repetition::OPTIONAL,
                    Values::Optional(Vec::new(), Vec::new()),
                ),
                _ => (
                    PhysicalType::DOUBLE,
                    Repetition::REQUIRED,
                    Values::Real(Vec::new()),
                ),
            };
            fields.push(Arc::new(
                Type::primitive_type_builder(name, physical)
                    .with_repetition(repetition)
                    .build()?,
            ));
            values.push(v);
        }
        let schema = Arc::new(
            Type::group_type_builder("samples")
                .with_fields(fields)
                .build()?,
        );
        let properties = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                // Measurements rarely repeat: a dictionary would cost a hash per value for
                // nothing.
                .set_dictionary_enabled(false)
                .set_created_by("cyclerhub".into())
                .build(),
        );
        Ok(ParquetSamples {
            writer: SerializedFileWriter::new(out, schema, properties)?,
            names,
            values,
            rows: 0,
        })
    }

    /// Appends a batch column by column (a row group may end up a batch longer than
    /// [`ROW_GROUP`]: batches are never split).
    fn batch(&mut self, b: &SampleBatch) -> std::io::Result<()> {
        let n = self
            .names
            .first()
            .map_or(b.test_time_s.len(), |c| column(b, c).len());
        if let Values::Int(seq) = &mut self.values[0] {
            seq.extend((0..n).map(|i| b.first_seq.saturating_add(i as u64) as i64));
        }
        for (name, values) in self.names.iter().zip(&mut self.values[1..]) {
            // A short column (a broken peer's) is padded, so every column has `n` rows.
            match (column(b, name), values) {
                (Column::Count(c), Values::Int(v)) => {
                    v.extend((0..n).map(|i| c.get(i).copied().map_or(0, i64::from)))
                }
                (Column::Real(c), Values::Real(v)) => {
                    v.extend((0..n).map(|i| c.get(i).copied().unwrap_or(f64::NAN)))
                }
                (Column::Real(c), Values::Optional(v, defined)) => {
                    for i in 0..n {
                        match c.get(i).copied().filter(|x| !x.is_nan()) {
                            Some(x) => {
                                v.push(x);
                                defined.push(1);
                            }
                            None => defined.push(0),
                        }
                    }
                }
                _ => {}
            }
        }
        self.rows += n;
        if self.rows >= ROW_GROUP {
            self.row_group().map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    fn row_group(&mut self) -> parquet::errors::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut group = self.writer.next_row_group()?;
        for values in &mut self.values {
            let Some(mut col) = group.next_column()? else {
                break;
            };
            match values {
                Values::Int(v) => {
                    col.typed::<Int64Type>().write_batch(v, None, None)?;
                    v.clear();
                }
                Values::Real(v) => {
                    col.typed::<DoubleType>().write_batch(v, None, None)?;
                    v.clear();
                }
                Values::Optional(v, defined) => {
                    col.typed::<DoubleType>()
                        .write_batch(v, Some(defined), None)?;
                    v.clear();
                    defined.clear();
                }
            }
            col.close()?;
        }
        group.close()?;
        self.rows = 0;
        Ok(())
    }

    fn finish(mut self) -> parquet::errors::Result<()> {
        self.row_group()?;
        let mut out = self.writer.into_inner()?;
        out.flush()?;
        Ok(())
    }
}

/// The response body streaming export `format` of `test_id` (one of [`super::EXPORTS`]),
/// written by the export code `cyclerhub export` runs, into the body as it goes.
pub fn export(store: HubStore, test_id: String, format: String) -> Body {
    use crate::export::{self, Format};
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(PIECES_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut out = Pieces {
            tx: tx.clone(),
            buffer: Vec::with_capacity(PIECE),
        };
        let cycles = |store: &HubStore| -> Result<_, export::ExportError> {
            Ok(crate::cycles::rows(
                &crate::cycles::summaries(store, &test_id)?.0,
            ))
        };
        let sink = std::io::sink();
        let result: Result<(), export::ExportError> = match format.as_str() {
            "bdf-csv" => export::write_bdf_csv(&store, &test_id, &mut out).map(drop),
            "bdf-parquet" => export::write_bdf_parquet(&store, &test_id, &mut out).map(drop),
            "cycles-csv" => {
                cycles(&store).and_then(|rows| Ok(export::write_cycles_csv(&rows, &mut out)?))
            }
            "cycles-parquet" => {
                cycles(&store).and_then(|rows| export::write_cycles_parquet(&rows, &mut out))
            }
            "battery-archive-timeseries" => {
                export::write_battery_archive(&store, &test_id, &mut out, sink).map(drop)
            }
            "battery-archive-cycles" => {
                export::write_battery_archive(&store, &test_id, sink, &mut out).map(drop)
            }
            _ => export::bdf_metadata_json(&store, &test_id, Format::BdfParquet)
                .and_then(|json| Ok(out.write_all(json.as_bytes())?)),
        };
        let result = result.and_then(|()| Ok(out.flush()?));
        if let Err(e) = result {
            tracing::debug!(%test_id, error = %e, "export download ended early");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}
